/* synchro: call async Lua code on a libuv loop thread from blocking code.
 *
 * This header is the public C surface. Every function says which thread may
 * call it and who owns what it returns.
 */
#ifndef SYNCHRO_H
#define SYNCHRO_H

#ifdef __cplusplus
extern "C" {
#endif

#define SYNCHRO_VERSION_MAJOR 0
#define SYNCHRO_VERSION_MINOR 1
#define SYNCHRO_VERSION_PATCH 0
#define SYNCHRO_VERSION_HEX                                                  \
  ((SYNCHRO_VERSION_MAJOR << 16) | (SYNCHRO_VERSION_MINOR << 8) |            \
   SYNCHRO_VERSION_PATCH)
#define SYNCHRO_VERSION_STRING "0.1.0"

#if defined(_WIN32)
#define SYNCHRO_API __declspec(dllexport)
#elif defined(__GNUC__)
#define SYNCHRO_API __attribute__((visibility("default")))
#else
#define SYNCHRO_API
#endif

/* synchro's own error codes start at -5000; libuv's codes (UV_E*) pass
 * through unchanged and are named by uv_err_name()/uv_strerror().
 * XX(name, code, message) */
#define SYNCHRO_ERRNO_MAP(XX)                                                \
  XX(CLOSED, -5000, "synchronizer is closed")                                \
  XX(CANCELLED, -5001, "call was cancelled")                                 \
  XX(TIMEDOUT, -5002, "timed out")                                           \
  XX(LUAERROR, -5003, "error raised by Lua code")                            \
  XX(MARSHAL, -5004, "value cannot cross between VMs")                       \
  XX(BADBUF, -5005, "truncated or corrupted marshal buffer")                 \
  XX(NOMEM, -5006, "out of memory")                                          \
  XX(THREAD, -5007, "loop thread failed")                                    \
  XX(INVAL, -5008, "invalid argument")

typedef enum {
#define SYNCHRO_ERR_ENUM(name, code, msg) SYNCHRO_E##name = code,
  SYNCHRO_ERRNO_MAP(SYNCHRO_ERR_ENUM)
#undef SYNCHRO_ERR_ENUM
  SYNCHRO_ERRNO_MAX = -6000
} synchro_errno_t;

/* The version as SYNCHRO_VERSION_HEX.  Thread: any. */
SYNCHRO_API unsigned int synchro_version(void);

/* The version as a static string ("0.1.0"); do not free.  Thread: any. */
SYNCHRO_API const char *synchro_version_string(void);

/* A static message for an error code: synchro's own, libuv's, or
 * "unknown error" for anything else. Never NULL; do not free.
 * Thread: any. */
SYNCHRO_API const char *synchro_strerror(int err);

/* A static name for an error code ("ECLOSED", "ETIMEDOUT", "ECONNREFUSED").
 * synchro's codes are named "E" + the map's name. Never NULL; do not free.
 * Thread: any. */
SYNCHRO_API const char *synchro_err_name(int err);

#ifdef __cplusplus
}
#endif
#endif /* SYNCHRO_H */
