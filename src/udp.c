/* synchro.aio: udp (being written). */
#include "internal.h"

void synchro__udp_register(lua_State *L) { (void)L; }
