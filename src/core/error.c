#include <uv.h>

#include "synchro.h"

unsigned int synchro_version(void) { return SYNCHRO_VERSION_HEX; }

const char *synchro_version_string(void) { return SYNCHRO_VERSION_STRING; }

const char *synchro_strerror(int err) {
  switch (err) {
#define XX(name, code, msg)                                                  \
  case code:                                                                 \
    return msg;
    SYNCHRO_ERRNO_MAP(XX)
#undef XX
  default:
    break;
  }
  if (err < 0 && err > -4096)
    return uv_strerror(err);
  return "unknown error";
}

const char *synchro_err_name(int err) {
  switch (err) {
#define XX(name, code, msg)                                                  \
  case code:                                                                 \
    return "E" #name;
    SYNCHRO_ERRNO_MAP(XX)
#undef XX
  default:
    break;
  }
  if (err < 0 && err > -4096)
    return uv_err_name(err);
  return "UNKNOWN";
}
