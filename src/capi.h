/* Internal to the C API (capi.c, capi_values.c). */
#ifndef SYNCHRO_CAPI_H
#define SYNCHRO_CAPI_H

#include "internal.h"

/* Calls by path: the first argument is the path (see runtime.lua). */
#define SYNCHRO_FN_BY_PATH (-1)

/* Encodes first (if not NULL) then args[0..nargs) as a marshal buffer.
 * Returns 0, SYNCHRO_EINVAL (a malformed value) or SYNCHRO_ENOMEM. */
int synchro__capi_encode(synchro_buf_t *b, const synchro_value_t *first,
                         const synchro_value_t *args, size_t nargs);
/* Decodes a buffer into a new array of values (NULL when empty).
 * Returns 0, SYNCHRO_EMARSHAL (not plain data), SYNCHRO_EBADBUF or
 * SYNCHRO_ENOMEM. */
int synchro__capi_decode(const char *data, size_t len,
                         synchro_value_t **out, size_t *n);

#endif
