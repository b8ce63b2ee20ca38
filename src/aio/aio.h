/* What the aio modules (one file per libuv concept, all on the loop VM)
 * share: the vm layer's helpers and each module's registration. */
#ifndef SYNCHRO_AIO_H
#define SYNCHRO_AIO_H

#include "vm.h"

/* Each adds its functions to the table on top of L (synchro.core). */
void synchro__timer_register(lua_State *L);
void synchro__fs_register(lua_State *L);
void synchro__tcp_register(lua_State *L);
void synchro__udp_register(lua_State *L);
void synchro__dns_register(lua_State *L);
void synchro__process_register(lua_State *L);
void synchro__workers_register(lua_State *L);
/* Registers nothing when built without libpq (SYNCHRO_HAVE_PQ). */
void synchro__pg_register(lua_State *L);
void synchro__poll_register(lua_State *L);
/* Registers nothing when built without libcurl. */
void synchro__http_register(lua_State *L);
void synchro__signal_register(lua_State *L);
void synchro__fswatch_register(lua_State *L);
/* Registers nothing when built without OpenSSL (SYNCHRO_HAVE_OPENSSL). */
void synchro__tls_register(lua_State *L);

#endif
