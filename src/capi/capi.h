/* Internal to the C API (capi.c, capi_values.c). */
#ifndef SYNCHRO_CAPI_H
#define SYNCHRO_CAPI_H

#include "binding.h"

#endif
