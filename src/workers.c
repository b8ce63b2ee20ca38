/* synchro.aio: workers (being written). */
#include "internal.h"

void synchro__workers_register(lua_State *L) { (void)L; }
