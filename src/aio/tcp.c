/* synchro.aio.tcp: what is TCP's own on the one stream object
 * (stream.c): creating, connecting, binding, listening and accepting,
 * socket options and names. Reading, writing and closing are stream.c's;
 * the buffered API is lua/synchro/aio/stream.lua. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "netaddr.h"
#include "stream.h"

static synchro__stream_t *check_tcp(lua_State *L) {
  return synchro__stream_check(L, 1, UV_TCP);
}

/* core.tcp_new() -> handle */
static int tcp_new(lua_State *L) {
  synchro__stream_push_new(L, synchro__loop_of(L), UV_TCP, -1);
  return 1;
}

static void on_connect(uv_connect_t *req, int status) {
  synchro__stream_req_finish(req->data, status);
}

/* handle:connect(ip, port, fn) -> a request object, or nil, msg, code;
 * then fn(true) or fn(nil, msg, code) (not once cancelled: closing the
 * handle ends the connect). */
static int tcp_connect(lua_State *L) {
  synchro__stream_t *t = check_tcp(L);
  struct sockaddr_storage ss;
  synchro__stream_req_t *r;
  synchro__check_sockaddr(L, 2, &ss);
  r = synchro__stream_req_new(L, t, 4, 0);
  r->req.connect.data = r;
  return synchro__stream_req_started(L, r, 4,
                                     uv_tcp_connect(&r->req.connect, &t->u.tcp,
                                                    (struct sockaddr *)&ss,
                                                    on_connect));
}

/* handle:bind(ip, port [, ipv6only]) -> true, or nil, msg, code */
static int tcp_bind(lua_State *L) {
  synchro__stream_t *t = check_tcp(L);
  struct sockaddr_storage ss;
  synchro__check_sockaddr(L, 2, &ss);
  return synchro__stream_push_result(
      L, uv_tcp_bind(&t->u.tcp, (struct sockaddr *)&ss,
                     lua_toboolean(L, 4) ? UV_TCP_IPV6ONLY : 0));
}

static void on_connection(uv_stream_t *server, int status) {
  synchro__stream_t *t = server->data;
  lua_State *L = synchro__live_vm(t->S);
  if (L == NULL || t->listen_ref == LUA_NOREF)
    return;
  synchro__call_ref_fn(L, t->listen_ref,
                       synchro__stream_push_result(L, status));
}

/* handle:listen(backlog, fn) -> true, or nil, msg, code; fn(true) for
 * each connection waiting for accept(), fn(nil, msg, code) on errors. */
static int tcp_listen(lua_State *L) {
  synchro__stream_t *t = check_tcp(L);
  lua_Integer backlog = luaL_checkinteger(L, 2);
  int err;
  luaL_argcheck(L, backlog > 0 && backlog <= INT_MAX, 2,
                "backlog out of range");
  luaL_checktype(L, 3, LUA_TFUNCTION);
  luaL_argcheck(L, t->listen_ref == LUA_NOREF, 1, "already listening");
  err = uv_listen(&t->u.stream, (int)backlog, on_connection);
  if (err == 0) {
    lua_pushvalue(L, 3);
    t->listen_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  return synchro__stream_push_result(L, err);
}

/* handle:accept() -> new handle, or nil, msg, code */
static int tcp_accept(lua_State *L) {
  synchro__stream_t *t = check_tcp(L);
  synchro__stream_t *client = synchro__stream_push_new(L, t->S, UV_TCP, -1);
  int err = uv_accept(&t->u.stream, &client->u.stream);
  if (err != 0) {
    synchro__stream_close_at(L, -1);
    return synchro__push_uv_error(L, err);
  }
  return 1;
}

static int tcp_nodelay(lua_State *L) {
  synchro__stream_t *t = check_tcp(L);
  return synchro__stream_push_result(
      L, uv_tcp_nodelay(&t->u.tcp, lua_toboolean(L, 2)));
}

/* handle:keepalive(enable [, delay_seconds]) */
static int tcp_keepalive(lua_State *L) {
  synchro__stream_t *t = check_tcp(L);
  int enable = lua_toboolean(L, 2);
  lua_Integer delay = luaL_optinteger(L, 3, 60);
  luaL_argcheck(L, !enable || (delay >= 1 && delay <= INT_MAX), 3,
                "delay out of range");
  return synchro__stream_push_result(
      L, uv_tcp_keepalive(&t->u.tcp, enable, (unsigned)delay));
}

static int push_name(lua_State *L, int err, struct sockaddr_storage *ss) {
  if (err != 0)
    return synchro__push_uv_error(L, err);
  return synchro__push_sockaddr(L, (struct sockaddr *)ss);
}

/* handle:sockname() / handle:peername() -> addr, port, family, or nil,
 * msg, code */
static int tcp_sockname(lua_State *L) {
  synchro__stream_t *t = check_tcp(L);
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  return push_name(
      L, uv_tcp_getsockname(&t->u.tcp, (struct sockaddr *)&ss, &len), &ss);
}

static int tcp_peername(lua_State *L) {
  synchro__stream_t *t = check_tcp(L);
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  return push_name(
      L, uv_tcp_getpeername(&t->u.tcp, (struct sockaddr *)&ss, &len), &ss);
}

void synchro__tcp_register(lua_State *L) {
  static const luaL_Reg methods[] = {{"connect", tcp_connect},
                                     {"bind", tcp_bind},
                                     {"listen", tcp_listen},
                                     {"accept", tcp_accept},
                                     {"nodelay", tcp_nodelay},
                                     {"keepalive", tcp_keepalive},
                                     {"sockname", tcp_sockname},
                                     {"peername", tcp_peername},
                                     {NULL, NULL}};
  synchro__stream_register(L, methods);
  lua_pushcfunction(L, tcp_new);
  lua_setfield(L, -2, "tcp_new");
}
