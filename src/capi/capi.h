/* Internal to the C API (capi.c, capi_values.c). */
#ifndef SYNCHRO_CAPI_H
#define SYNCHRO_CAPI_H

#include "binding.h"

/* Calls by path: the first argument is the path (see runtime.lua). */
#define SYNCHRO_FN_BY_PATH (-1)

#endif
