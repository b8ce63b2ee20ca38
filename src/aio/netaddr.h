/* Socket addresses as the loop VM sees them (a numeric address string, a
 * port and a family name), shared by tcp.c, udp.c and dns.c (which defines
 * these). Thread: loop thread. */
#ifndef SYNCHRO_NETADDR_H
#define SYNCHRO_NETADDR_H

#include "aio.h"

/* Fills *out from a numeric IPv4 or IPv6 address and a port. Returns 0, or
 * UV_EINVAL when ip is not a numeric address. */
int synchro__sockaddr_parse(const char *ip, int port,
                            struct sockaddr_storage *out);
/* Pushes the address, port and family ("inet" or "inet6") of sa; returns
 * 3. An unknown family pushes the error triple of UV_EAI_FAMILY. */
int synchro__push_sockaddr(lua_State *L, const struct sockaddr *sa);
/* Argument idx as a port number, 0 to 65535; raises otherwise. */
int synchro__check_port(lua_State *L, int idx);
/* Argument idx as a numeric address with the port in argument idx + 1;
 * raises (naming the argument) when it is not one. */
void synchro__check_sockaddr(lua_State *L, int idx,
                             struct sockaddr_storage *out);
/* A libuv allocation callback: a malloc'd buffer of the suggested size
 * (len 0 when out of memory, which libuv reports as UV_ENOBUFS). */
void synchro__alloc_buf(uv_handle_t *handle, size_t suggested, uv_buf_t *buf);

#endif
