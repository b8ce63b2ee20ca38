/* synchro.aio.dns: getaddrinfo and getnameinfo on libuv's thread pool, for
 * the loop VM; and the socket-address conversions (netaddr.h) that tcp.c
 * and udp.c share. Lookups are request.c's records (aio.h): C starts one
 * and calls a Lua function when it completes; waiting and cancellation
 * are lua/synchro/aio/request.lua's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aio.h"
#include "netaddr.h"

typedef struct {
  synchro__req_t base; /* first member */
  union {
    uv_getaddrinfo_t addrinfo;
    uv_getnameinfo_t nameinfo;
  } req;
  struct addrinfo *res;       /* getaddrinfo's, freed with the record */
  const char *host, *service; /* getnameinfo's, valid in its callback */
} dns_req_t;

/* ---- socket addresses (netaddr.h) ---- */

int synchro__sockaddr_parse(const char *ip, int port,
                            struct sockaddr_storage *out) {
  memset(out, 0, sizeof(*out));
  if (uv_ip4_addr(ip, port, (struct sockaddr_in *)out) == 0)
    return 0;
  if (uv_ip6_addr(ip, port, (struct sockaddr_in6 *)out) == 0)
    return 0;
  return UV_EINVAL;
}

int synchro__push_sockaddr(lua_State *L, const struct sockaddr *sa) {
  char ip[INET6_ADDRSTRLEN + 1];
  int port;
  const char *family;
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    uv_ip4_name(in, ip, sizeof(ip));
    port = ntohs(in->sin_port);
    family = "inet";
  } else if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    uv_ip6_name(in6, ip, sizeof(ip));
    port = ntohs(in6->sin6_port);
    family = "inet6";
  } else {
    return synchro__push_uv_error(L, UV_EAI_FAMILY);
  }
  lua_pushstring(L, ip);
  lua_pushinteger(L, port);
  lua_pushstring(L, family);
  return 3;
}

int synchro__check_port(lua_State *L, int idx) {
  lua_Integer port = luaL_checkinteger(L, idx);
  luaL_argcheck(L, port >= 0 && port <= 65535, idx, "port out of range");
  return (int)port;
}

void synchro__check_sockaddr(lua_State *L, int idx,
                             struct sockaddr_storage *out) {
  const char *ip = luaL_checkstring(L, idx);
  int port = synchro__check_port(L, idx + 1);
  if (synchro__sockaddr_parse(ip, port, out) != 0)
    luaL_argerror(L, idx, "numeric IPv4 or IPv6 address expected");
}

void synchro__alloc_buf(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  (void)handle;
  buf->base = malloc(suggested);
  buf->len = buf->base != NULL ? suggested : 0;
}

/* core.ip_family(s) -> "inet" | "inet6" | nil: is s a numeric address? */
static int ip_family(lua_State *L) {
  struct sockaddr_storage ss;
  if (lua_type(L, 1) != LUA_TSTRING ||
      synchro__sockaddr_parse(lua_tostring(L, 1), 0, &ss) != 0)
    lua_pushnil(L);
  else
    lua_pushstring(L, ss.ss_family == AF_INET ? "inet" : "inet6");
  return 1;
}

/* ---- requests ---- */

static void release(synchro__req_t *base) {
  dns_req_t *d = (dns_req_t *)base;
  if (d->res != NULL)
    uv_freeaddrinfo(d->res);
  free(d);
}

static const char *const families[] = {"any", "inet", "inet6", NULL};
static const int family_values[] = {AF_UNSPEC, AF_INET, AF_INET6};
static const char *const socktypes[] = {"any", "stream", "dgram", NULL};
static const int socktype_values[] = {0, SOCK_STREAM, SOCK_DGRAM};

static const char *socktype_name(int socktype) {
  return socktype == SOCK_STREAM  ? "stream"
         : socktype == SOCK_DGRAM ? "dgram"
                                  : "raw";
}

/* The list of addresses (request.c calls it protected). */
static int push_addrinfo(lua_State *L, synchro__req_t *base) {
  dns_req_t *d = (dns_req_t *)base;
  struct addrinfo *ai;
  int n = 0;
  if (base->status != 0)
    return synchro__push_uv_error(L, base->status);
  lua_newtable(L);
  for (ai = d->res; ai != NULL; ai = ai->ai_next) {
    if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
      continue;
    lua_createtable(L, 0, 4);
    synchro__push_sockaddr(L, ai->ai_addr);
    lua_setfield(L, -4, "family");
    lua_setfield(L, -3, "port");
    lua_setfield(L, -2, "addr");
    lua_pushstring(L, socktype_name(ai->ai_socktype));
    lua_setfield(L, -2, "socktype");
    lua_rawseti(L, -2, ++n);
  }
  return 1;
}

static void on_addrinfo(uv_getaddrinfo_t *req, int status,
                        struct addrinfo *res) {
  dns_req_t *d = req->data;
  d->res = res;
  synchro__req_done(&d->base, status);
}

/* core.getaddrinfo(host, service, family, socktype, fn) -> request, or
 * nil, msg, code. fn(list) or fn(nil, msg, code) runs on completion; the
 * list holds {addr=, port=, family=, socktype=} tables. */
static int getaddrinfo_start(lua_State *L) {
  synchro_t *S = synchro__loop_of(L);
  const char *host = luaL_optstring(L, 1, NULL);
  const char *service = luaL_optstring(L, 2, NULL);
  int family = family_values[luaL_checkoption(L, 3, "any", families)];
  int socktype = socktype_values[luaL_checkoption(L, 4, "any", socktypes)];
  struct addrinfo hints;
  dns_req_t *d;
  luaL_checktype(L, 5, LUA_TFUNCTION);
  luaL_argcheck(L, host != NULL || service != NULL, 1,
                "host or service expected");
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = family;
  hints.ai_socktype = socktype;
  d = synchro__req_alloc(L, 5, sizeof(*d), 0, push_addrinfo, release);
  d->req.addrinfo.data = d;
  return synchro__req_submit(L, &d->base, 5, (uv_req_t *)&d->req.addrinfo,
                             uv_getaddrinfo(&S->loop, &d->req.addrinfo,
                                            on_addrinfo, host, service,
                                            &hints));
}

static int push_nameinfo(lua_State *L, synchro__req_t *base) {
  dns_req_t *d = (dns_req_t *)base;
  if (base->status != 0)
    return synchro__push_uv_error(L, base->status);
  lua_pushstring(L, d->host);
  lua_pushstring(L, d->service);
  return 2;
}

static void on_nameinfo(uv_getnameinfo_t *req, int status, const char *host,
                        const char *service) {
  dns_req_t *d = req->data;
  d->host = host;
  d->service = service;
  synchro__req_done(&d->base, status);
}

/* core.getnameinfo(ip, port, numeric, fn) -> request, or nil, msg, code;
 * fn(host, service) or fn(nil, msg, code) on completion. */
static int getnameinfo_start(lua_State *L) {
  synchro_t *S = synchro__loop_of(L);
  struct sockaddr_storage ss;
  int flags = lua_toboolean(L, 3) ? NI_NUMERICHOST | NI_NUMERICSERV : 0;
  dns_req_t *d;
  synchro__check_sockaddr(L, 1, &ss);
  luaL_checktype(L, 4, LUA_TFUNCTION);
  d = synchro__req_alloc(L, 4, sizeof(*d), 0, push_nameinfo, release);
  d->req.nameinfo.data = d;
  return synchro__req_submit(L, &d->base, 4, (uv_req_t *)&d->req.nameinfo,
                             uv_getnameinfo(&S->loop, &d->req.nameinfo,
                                            on_nameinfo, (struct sockaddr *)&ss,
                                            flags));
}

void synchro__dns_register(lua_State *L) {
  lua_pushcfunction(L, getaddrinfo_start);
  lua_setfield(L, -2, "getaddrinfo");
  lua_pushcfunction(L, getnameinfo_start);
  lua_setfield(L, -2, "getnameinfo");
  lua_pushcfunction(L, ip_family);
  lua_setfield(L, -2, "ip_family");
}
