/* synchro.aio: dns (being written). */
#include "internal.h"

void synchro__dns_register(lua_State *L) { (void)L; }
