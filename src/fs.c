/* synchro.aio: fs (being written). */
#include "internal.h"

void synchro__fs_register(lua_State *L) { (void)L; }
