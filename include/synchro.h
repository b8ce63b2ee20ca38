/* synchro: call async Lua code on a libuv loop thread from blocking code.
 *
 * This header is the public C surface. Every function says which thread may
 * call it and who owns what it returns.
 */
#ifndef SYNCHRO_H
#define SYNCHRO_H

#include <errno.h>  /* ETIMEDOUT, ECANCELED */
#include <stddef.h> /* size_t */

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
  XX(LUAERROR, -5003, "error raised by Lua code")                            \
  XX(MARSHAL, -5004, "value cannot cross between VMs")                       \
  XX(BADBUF, -5005, "truncated or corrupted marshal buffer")                 \
  XX(NOMEM, -5006, "out of memory")                                          \
  XX(THREAD, -5007, "loop thread failed")                                    \
  XX(INVAL, -5008, "invalid argument")

/* The two libuv codes the API itself returns (libuv's values on Unix). */
#define SYNCHRO_ETIMEDOUT (-ETIMEDOUT) /* UV_ETIMEDOUT: a timeout expired */
#define SYNCHRO_ECANCELED (-ECANCELED) /* UV_ECANCELED: the call was cancelled */

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

/* ---- Time values --------------------------------------------------------
 * Every time this API takes (a timeout, a grace) is in seconds, as a
 * double, by one rule: a negative value means no limit (poll()'s
 * convention; the Lua API, where negative means 0, differs here only),
 * INFINITY and anything above 1e9 s mean no limit too, and NaN is
 * SYNCHRO_EINVAL. */

/* ---- Synchronizers ---------------------------------------------------- */

/* A Synchronizer: one libuv loop on its own thread, with its own Lua VM
 * (the loop VM) where async Lua code runs. Opaque; reference counted. */
typedef struct synchro synchro_t;

typedef struct synchro_options {
  const char *name;      /* for messages; NULL: "synchro" */
  const char *lua_path;  /* prepended to the loop VM's package.path, or NULL */
  const char *lua_cpath; /* prepended to the loop VM's package.cpath, or NULL */
  double grace; /* seconds cancelled tasks get for cleanup (at close,
                   after a timeout); <= 0 or NaN: 5 */
} synchro_options_t;

/* Opens a Synchronizer and starts its loop thread. opts may be NULL. On
 * success stores it in *out (the caller owns it: synchro_close) and
 * returns 0; else returns a negative code and, if errmsg is not NULL,
 * stores a message in *errmsg (free it with synchro_free).
 * Errors: SYNCHRO_EINVAL (out is NULL), SYNCHRO_ENOMEM, SYNCHRO_ETHREAD
 * (the loop VM failed to start, e.g. synchro's Lua files not on the path).
 * Thread: any. */
SYNCHRO_API int synchro_open(synchro_t **out, const synchro_options_t *opts,
                             char **errmsg);

/* Stops s without releasing it: stops accepting calls (they fail with
 * SYNCHRO_ECLOSED from now on), cancels the running tasks, gives them
 * grace seconds (< 0: the default) to clean up, stops and joins the loop
 * thread. Idempotent. The handle stays valid until synchro_close.
 * Thread: any but s's own loop thread. Returns 0 (SYNCHRO_EINVAL for
 * NULL). */
SYNCHRO_API int synchro_shutdown(synchro_t *s, double grace);

/* Closes and releases s: stops accepting calls, cancels the running tasks,
 * gives them grace seconds (< 0: the default) to clean up, stops and joins
 * the loop thread. Calls still in flight fail with SYNCHRO_ECANCELED.
 * Futures stay valid until released. Accepts NULL. Never hangs longer than
 * the grace (unless a task runs CPU-bound Lua code that never yields).
 * Thread: any but s's own loop thread. Returns 0. */
SYNCHRO_API int synchro_close(synchro_t *s, double grace);

/* Runs require(name) in the loop VM and waits for it. Returns 0, or
 * SYNCHRO_ELUAERROR with the error text in *errmsg (if errmsg is not
 * NULL; free it with synchro_free), SYNCHRO_EINVAL, SYNCHRO_ECLOSED.
 * Thread: any. */
SYNCHRO_API int synchro_load_module(synchro_t *s, const char *name,
                                    char **errmsg);

/* Runs a chunk of Lua source in the loop VM (as a task: it may await) and
 * waits for it; globals it defines can then be called by name. chunkname
 * may be NULL. Errors as synchro_load_module. Thread: any. */
SYNCHRO_API int synchro_load_chunk(synchro_t *s, const char *code, size_t len,
                                   const char *chunkname, char **errmsg);

/* ---- Values ------------------------------------------------------------- */

typedef enum {
  SYNCHRO_TNIL,
  SYNCHRO_TBOOLEAN,
  SYNCHRO_TINTEGER,
  SYNCHRO_TNUMBER,
  SYNCHRO_TBYTES, /* a Lua string: any bytes */
  SYNCHRO_TTABLE  /* key/value pairs */
} synchro_type_t;

typedef struct synchro_pair synchro_pair_t;

/* A tagged value. Values given to synchro (arguments) are only read during
 * the call; synchro copies them. Values synchro returns (results) are
 * owned by the caller and released with synchro_values_free. On Lua 5.1,
 * 5.2 and LuaJIT an integral number comes back as SYNCHRO_TINTEGER. */
typedef struct synchro_value {
  synchro_type_t type;
  union {
    int boolean;
    long long integer;
    double number;
    struct {
      const char *data;
      size_t len;
    } bytes;
    struct {
      synchro_pair_t *pairs;
      size_t count;
    } table;
  } as;
} synchro_value_t;

struct synchro_pair {
  synchro_value_t key;
  synchro_value_t value;
};

/* Constructors for arguments (nothing is allocated; bytes and string
 * borrow their memory). Thread: any. */
SYNCHRO_API synchro_value_t synchro_nil(void);
SYNCHRO_API synchro_value_t synchro_boolean(int b);
SYNCHRO_API synchro_value_t synchro_integer(long long i);
SYNCHRO_API synchro_value_t synchro_number(double d);
SYNCHRO_API synchro_value_t synchro_bytes(const char *data, size_t len);
SYNCHRO_API synchro_value_t synchro_string(const char *nul_terminated);
SYNCHRO_API synchro_value_t synchro_table(synchro_pair_t *pairs,
                                          size_t count);

/* Releases n values returned by synchro (and everything inside them) and
 * the array itself. Accepts NULL. Thread: any. */
SYNCHRO_API void synchro_values_free(synchro_value_t *values, size_t n);

/* Releases a string synchro returned (an error message). Accepts NULL.
 * Thread: any. */
SYNCHRO_API void synchro_free(void *p);

/* ---- Calls -------------------------------------------------------------- */

/* Calls the loop VM's function at path ("mylib.fetch": module mylib, field
 * fetch; a plain name is a global) with nargs arguments, as a task, and
 * blocks until it returns or timeout seconds pass (< 0: no limit). On
 * success returns 0 and, if results is not NULL, stores a new array of
 * *nresults values in *results (free with synchro_values_free; NULL when
 * there are none). Errors: SYNCHRO_ELUAERROR (the function raised; the
 * error text and remote traceback in *errmsg), SYNCHRO_ETIMEDOUT (the task
 * was cancelled at the deadline and its cleanup has run, or did not end
 * within the grace plus 2 s: the call is then given up, whatever it returns
 * later), SYNCHRO_ECANCELED (closed or
 * cancelled meanwhile), SYNCHRO_ECLOSED, SYNCHRO_EMARSHAL (a result cannot
 * be a C value: functions, shared or cyclic tables), SYNCHRO_EINVAL.
 * *errmsg (if errmsg is not NULL) is set on every error, else NULL.
 * Thread: any but s's own loop thread. */
SYNCHRO_API int synchro_call(synchro_t *s, const char *path,
                             const synchro_value_t *args, size_t nargs,
                             synchro_value_t **results, size_t *nresults,
                             double timeout, char **errmsg);

/* ---- Futures ------------------------------------------------------------ */

typedef struct synchro_future synchro_future_t;

/* Starts a call like synchro_call without waiting; stores a future in
 * *out (the caller owns it: synchro_future_release). Returns 0,
 * SYNCHRO_EINVAL, SYNCHRO_ECLOSED or SYNCHRO_ENOMEM. Thread: any. */
SYNCHRO_API int synchro_submit(synchro_t *s, const char *path,
                               const synchro_value_t *args, size_t nargs,
                               synchro_future_t **out);

/* Waits until the call is done or timeout seconds pass (< 0: no limit).
 * Returns 0 when done, SYNCHRO_ETIMEDOUT, SYNCHRO_EINVAL. Thread: any. */
SYNCHRO_API int synchro_future_wait(synchro_future_t *f, double timeout);

/* 1 if done, 0 if not (or f is NULL). Thread: any. */
SYNCHRO_API int synchro_future_done(synchro_future_t *f);

/* A file descriptor that becomes readable when the call is done, for
 * poll/epoll or a host's own event loop. Owned by the future: do not
 * close it or read from it; it stays valid until release. Returns the fd
 * (>= 0) or a negative error code. Thread: any. */
SYNCHRO_API int synchro_future_fd(synchro_future_t *f);

/* Has cb(f, ud) called exactly once when the call is done: on the loop
 * thread, or at once on the calling thread if it already is. On the loop
 * thread it runs before the call is seen done elsewhere: before
 * synchro_future_wait returns and before the fd becomes readable; inside
 * cb, synchro_future_done is 1 and synchro_future_results works. cb never
 * runs after synchro_future_release has returned: release waits for a cb
 * that is running, and a future released before its call completed never
 * calls cb. cb must not block nor release f. One callback per future:
 * SYNCHRO_EINVAL for a second. Thread: any. */
SYNCHRO_API int synchro_future_on_done(synchro_future_t *f,
                                       void (*cb)(synchro_future_t *f,
                                                  void *ud),
                                       void *ud);

/* Asks the task to stop: it gets a cancellation error at its current wait
 * and its cleanup runs; the future then completes with SYNCHRO_ECANCELED
 * (or with the task's own outcome if it finished first). Returns 0, or
 * SYNCHRO_EINVAL. Thread: any. */
SYNCHRO_API int synchro_future_cancel(synchro_future_t *f);

/* The outcome of a done call, as synchro_call returns it (may be called
 * more than once; each call returns new copies). Returns SYNCHRO_EINVAL
 * if f is not done yet. Thread: any. */
SYNCHRO_API int synchro_future_results(synchro_future_t *f,
                                       synchro_value_t **results,
                                       size_t *nresults, char **errmsg);

/* Releases the future; the call itself goes on if not done. Waits for
 * its on_done callback if that runs now (see synchro_future_on_done).
 * Accepts NULL. Thread: any (not from inside its on_done callback). */
SYNCHRO_API void synchro_future_release(synchro_future_t *f);

/* ---- A host's own Lua state --------------------------------------------- */

struct lua_State;

/* Pushes onto L a Lua Synchronizer object (as synchro.new returns) for s,
 * holding its own reference; S:wrap and the rest work on it, and
 * collecting it does not close s. L must be a Lua state of the same Lua
 * version synchro was built for, with synchro's Lua files on its path.
 * Returns 0 or an error code with an error message pushed instead.
 * Thread: the thread owning L. */
SYNCHRO_API int synchro_lua_push(struct lua_State *L, synchro_t *s);

#ifdef __cplusplus
}
#endif
#endif /* SYNCHRO_H */
