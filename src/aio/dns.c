/* synchro.aio.dns: getaddrinfo and getnameinfo on libuv's thread pool, for
 * the loop VM; and the socket-address conversions (netaddr.h) that tcp.c
 * and udp.c share. Waiting and cancellation are in lua/synchro/aio/dns.lua:
 * C starts a request and calls a Lua function when it completes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aio.h"
#include "netaddr.h"

#define DNS_REQ_MT "synchro.dns_request"

/* A request is owned by its Lua box and by libuv until its callback ran:
 * whichever lets go last frees it. */
typedef struct {
  union {
    uv_getaddrinfo_t addrinfo;
    uv_getnameinfo_t nameinfo;
  } req;
  synchro_t *S;
  int cb_ref;
  int owners;
  int done;
} dns_req_t;

typedef struct {
  dns_req_t *req;
} dns_box_t;

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

static void req_release(dns_req_t *d) {
  if (--d->owners == 0)
    free(d);
}

static int req_gc(lua_State *L) {
  dns_box_t *box = luaL_checkudata(L, 1, DNS_REQ_MT);
  dns_req_t *d = box->req;
  if (d != NULL) {
    box->req = NULL;
    if (!d->done)
      uv_cancel((uv_req_t *)&d->req);
    req_release(d);
  }
  return 0;
}

/* request:cancel(): the callback still runs (with EAI_CANCELED, or with
 * the result if the lookup had already started). */
static int req_cancel(lua_State *L) {
  dns_box_t *box = luaL_checkudata(L, 1, DNS_REQ_MT);
  if (box->req != NULL && !box->req->done)
    uv_cancel((uv_req_t *)&box->req->req);
  return 0;
}

static dns_req_t *new_request(lua_State *L, synchro_t *S, int cb_idx) {
  dns_box_t *box = lua_newuserdata(L, sizeof(*box));
  dns_req_t *d;
  box->req = NULL;
  luaL_setmetatable(L, DNS_REQ_MT);
  d = malloc(sizeof(*d));
  if (d == NULL)
    luaL_error(L, "not enough memory");
  memset(d, 0, sizeof(*d));
  d->S = S;
  d->owners = 1;
  d->req.addrinfo.data = d;
  lua_pushvalue(L, cb_idx);
  d->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  box->req = d;
  return d;
}

/* Started: libuv now owns the request too. Failed: drop the callback and
 * replace the box with the error triple. */
static int started(lua_State *L, dns_req_t *d, int err) {
  if (err == 0) {
    d->owners++;
    return 1;
  }
  d->done = 1;
  luaL_unref(L, LUA_REGISTRYINDEX, d->cb_ref);
  d->cb_ref = LUA_NOREF;
  return synchro__push_uv_error(L, err);
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

/* Protected: turns the result into a list and calls the callback with it
 * (or with the error triple). Stack: fn, status, res (light). */
static int deliver_addrinfo(lua_State *L) {
  int status = (int)lua_tointeger(L, 2);
  struct addrinfo *res = lua_touserdata(L, 3), *ai;
  int n = 0;
  lua_settop(L, 1);
  if (status != 0) {
    synchro__push_uv_error(L, status);
    lua_call(L, 3, 0);
    return 0;
  }
  lua_newtable(L);
  for (ai = res; ai != NULL; ai = ai->ai_next) {
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
  lua_call(L, 1, 0);
  return 0;
}

static void on_addrinfo(uv_getaddrinfo_t *req, int status,
                        struct addrinfo *res) {
  dns_req_t *d = req->data;
  lua_State *L = d->S->L;
  d->done = 1;
  if (L != NULL) { /* NULL: the loop VM is gone (shutdown) */
    lua_pushcfunction(L, deliver_addrinfo);
    lua_rawgeti(L, LUA_REGISTRYINDEX, d->cb_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, d->cb_ref);
    lua_pushinteger(L, status);
    lua_pushlightuserdata(L, res);
    if (lua_pcall(L, 3, 0, 0) != 0) {
      fprintf(stderr, "synchro: error in a getaddrinfo callback: %s\n",
              lua_tostring(L, -1));
      lua_pop(L, 1);
    }
  }
  uv_freeaddrinfo(res);
  req_release(d);
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
  d = new_request(L, S, 5);
  return started(L, d,
                 uv_getaddrinfo(&S->loop, &d->req.addrinfo, on_addrinfo, host,
                                service, &hints));
}

static void on_nameinfo(uv_getnameinfo_t *req, int status, const char *host,
                        const char *service) {
  dns_req_t *d = req->data;
  lua_State *L = d->S->L;
  d->done = 1;
  if (L != NULL) {
    int ref = d->cb_ref;
    int nargs = 2;
    if (status != 0) {
      nargs = synchro__push_uv_error(L, status);
    } else {
      lua_pushstring(L, host);
      lua_pushstring(L, service);
    }
    synchro__call_ref_fn(L, ref, nargs);
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
  }
  req_release(d);
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
  d = new_request(L, S, 4);
  return started(L, d,
                 uv_getnameinfo(&S->loop, &d->req.nameinfo, on_nameinfo,
                                (struct sockaddr *)&ss, flags));
}

void synchro__dns_register(lua_State *L) {
  static const luaL_Reg methods[] = {{"cancel", req_cancel}, {NULL, NULL}};
  if (luaL_newmetatable(L, DNS_REQ_MT)) {
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, req_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, getaddrinfo_start);
  lua_setfield(L, -2, "getaddrinfo");
  lua_pushcfunction(L, getnameinfo_start);
  lua_setfield(L, -2, "getnameinfo");
  lua_pushcfunction(L, ip_family);
  lua_setfield(L, -2, "ip_family");
}
