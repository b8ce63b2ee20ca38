/* synchro.aio: tcp (being written). */
#include "internal.h"

void synchro__tcp_register(lua_State *L) { (void)L; }
