/* synchro.aio: process (being written). */
#include "internal.h"

void synchro__process_register(lua_State *L) { (void)L; }
