/* The compat-5.3 functions, compiled once for the whole library. */
#ifdef SYNCHRO_USE_COMPAT53
#include "compat.h"
#include "compat-5.3.c"
#else
typedef int synchro_compat_unused;
#endif
