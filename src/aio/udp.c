/* synchro.aio.udp: UDP sockets for the loop VM. C sends and receives and
 * calls a Lua function on completion; waiting and queueing are in
 * lua/synchro/aio/udp.lua. The uv handle is freed in its close callback;
 * a queued send is request.c's record; Lua functions are referenced only
 * while an operation is under way. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "aio.h"
#include "netaddr.h"

#define UDP_MT "synchro.udp"

typedef struct {
  uv_udp_t handle;
  synchro_t *S;
  int recv_ref; /* while receiving */
} loop_udp_t;

typedef struct {
  loop_udp_t *udp;
} udp_box_t;

/* A queued send (request.c's record), followed by its copy of the
 * datagram. */
typedef struct {
  synchro__req_t base; /* first member */
  uv_udp_send_t req;
} udp_send_t;

static void on_closed(uv_handle_t *handle) { free(handle->data); }

static udp_box_t *check_box(lua_State *L) {
  return synchro__check_udata(L, 1, UDP_MT);
}

static loop_udp_t *check_udp(lua_State *L) {
  loop_udp_t *u = check_box(L)->udp;
  if (u == NULL)
    luaL_argerror(L, 1, "socket is closed");
  return u;
}

static int push_result(lua_State *L, int err) {
  if (err != 0)
    return synchro__push_uv_error(L, err);
  lua_pushboolean(L, 1);
  return 1;
}

/* core.udp_new() -> handle */
static int udp_new(lua_State *L) {
  synchro_t *S = synchro__loop_of(L);
  udp_box_t *box = lua_newuserdata(L, sizeof(*box));
  loop_udp_t *u;
  int err;
  box->udp = NULL;
  luaL_setmetatable(L, UDP_MT);
  u = malloc(sizeof(*u));
  if (u == NULL)
    return luaL_error(L, "not enough memory");
  err = uv_udp_init(&S->loop, &u->handle);
  if (err != 0) {
    free(u);
    return luaL_error(L, "uv_udp_init: %s", uv_strerror(err));
  }
  u->handle.data = u;
  u->S = S;
  u->recv_ref = LUA_NOREF;
  box->udp = u;
  return 1;
}

/* handle:close(), also __gc and __close; safe to call twice. Queued sends
 * complete with ECANCELED. */
static int udp_close(lua_State *L) {
  udp_box_t *box = check_box(L);
  loop_udp_t *u = box->udp;
  if (u == NULL)
    return 0;
  box->udp = NULL;
  luaL_unref(L, LUA_REGISTRYINDEX, u->recv_ref);
  u->recv_ref = LUA_NOREF;
  uv_close((uv_handle_t *)&u->handle, on_closed);
  return 0;
}

/* handle:bind(ip, port [, reuseaddr]) -> true, or nil, msg, code */
static int udp_bind(lua_State *L) {
  loop_udp_t *u = check_udp(L);
  struct sockaddr_storage ss;
  synchro__check_sockaddr(L, 2, &ss);
  return push_result(L,
                     uv_udp_bind(&u->handle, (struct sockaddr *)&ss,
                                 lua_toboolean(L, 4) ? UV_UDP_REUSEADDR : 0));
}

static void on_send(uv_udp_send_t *req, int status) {
  synchro__req_done(req->data, status);
}

/* handle:send(data, ip, port, fn) -> true when sent at once; a request
 * object when queued (fn(true) or fn(nil, msg, code) follows, unless it
 * is cancelled: the datagram is sent all the same); or nil, msg, code. */
static int udp_send(lua_State *L) {
  loop_udp_t *u = check_udp(L);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  struct sockaddr_storage ss;
  uv_buf_t buf;
  udp_send_t *s;
  int n;
  synchro__check_sockaddr(L, 3, &ss);
  luaL_checktype(L, 5, LUA_TFUNCTION);
  luaL_argcheck(L, len <= INT_MAX, 2, "datagram too large");
  buf = uv_buf_init((char *)data, (unsigned int)len);
  n = uv_udp_try_send(&u->handle, &buf, 1, (struct sockaddr *)&ss);
  if (n >= 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (n != UV_EAGAIN)
    return synchro__push_uv_error(L, n);
  s = synchro__req_alloc(L, 5, sizeof(*s), len, NULL, NULL);
  memcpy(s + 1, data, len);
  buf = uv_buf_init((char *)(s + 1), (unsigned int)len);
  s->req.data = s;
  return synchro__req_submit(L, &s->base, 5, (uv_req_t *)&s->req,
                             uv_udp_send(&s->req, &u->handle, &buf, 1,
                                         (struct sockaddr *)&ss, on_send));
}

static void on_recv(uv_udp_t *handle, ssize_t nread, const uv_buf_t *buf,
                    const struct sockaddr *addr, unsigned flags) {
  loop_udp_t *u = handle->data;
  lua_State *L = synchro__live_vm(u->S);
  (void)flags; /* a truncated datagram (UV_UDP_PARTIAL) is delivered cut */
  if (L == NULL || u->recv_ref == LUA_NOREF || (nread == 0 && addr == NULL)) {
    free(buf->base);
    return;
  }
  if (nread < 0) {
    free(buf->base);
    synchro__call_ref_fn(L, u->recv_ref, synchro__push_uv_error(L, (int)nread));
    return;
  }
  lua_pushlstring(L, buf->base, (size_t)nread);
  free(buf->base);
  synchro__push_sockaddr(L, addr);
  lua_pop(L, 1); /* the family */
  synchro__call_ref_fn(L, u->recv_ref, 3);
}

/* handle:recv_start(fn) -> true, or nil, msg, code. fn(data, addr, port)
 * for each datagram, fn(nil, msg, code) on an error. */
static int udp_recv_start(lua_State *L) {
  loop_udp_t *u = check_udp(L);
  int err;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  err = uv_udp_recv_start(&u->handle, synchro__alloc_buf, on_recv);
  if (err == 0 || err == UV_EALREADY) {
    luaL_unref(L, LUA_REGISTRYINDEX, u->recv_ref);
    lua_pushvalue(L, 2);
    u->recv_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    err = 0;
  }
  return push_result(L, err);
}

static int udp_recv_stop(lua_State *L) {
  loop_udp_t *u = check_udp(L);
  uv_udp_recv_stop(&u->handle);
  luaL_unref(L, LUA_REGISTRYINDEX, u->recv_ref);
  u->recv_ref = LUA_NOREF;
  return 0;
}

/* handle:sockname() -> addr, port, family, or nil, msg, code */
static int udp_sockname(lua_State *L) {
  loop_udp_t *u = check_udp(L);
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  int err = uv_udp_getsockname(&u->handle, (struct sockaddr *)&ss, &len);
  if (err != 0)
    return synchro__push_uv_error(L, err);
  return synchro__push_sockaddr(L, (struct sockaddr *)&ss);
}

void synchro__udp_register(lua_State *L) {
  static const luaL_Reg methods[] = {{"bind", udp_bind},
                                     {"send", udp_send},
                                     {"recv_start", udp_recv_start},
                                     {"recv_stop", udp_recv_stop},
                                     {"sockname", udp_sockname},
                                     {"close", udp_close},
                                     {NULL, NULL}};
  if (luaL_newmetatable(L, UDP_MT)) {
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, udp_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, udp_close);
    lua_setfield(L, -2, "__close");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, udp_new);
  lua_setfield(L, -2, "udp_new");
}
