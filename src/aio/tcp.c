/* synchro.aio.tcp: TCP handles for the loop VM. C starts libuv operations
 * and calls a Lua function when they complete; buffering, waiting and
 * cancellation are in lua/synchro/aio/tcp.lua.
 *
 * The uv handle lives outside the userdata (libuv needs it until its close
 * callback). Lua functions are referenced only while an operation is
 * under way, so an idle stream that nothing references is collected and
 * its __gc closes the handle. Callbacks that libuv runs after the loop VM
 * is gone (S->L is NULL at shutdown) only free memory. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "aio.h"
#include "netaddr.h"

#define TCP_MT "synchro.tcp"

typedef struct {
  uv_tcp_t handle;
  synchro_t *S;
  int read_ref;   /* while reading */
  int listen_ref; /* while listening */
} loop_tcp_t;

typedef struct {
  loop_tcp_t *tcp;
} tcp_box_t;

/* A request with the Lua function to call when it completes; a write
 * carries its own copy of the unwritten bytes after it. */
typedef struct {
  union {
    uv_write_t write;
    uv_connect_t connect;
    uv_shutdown_t shutdown;
  } req;
  synchro_t *S;
  int cb_ref;
} tcp_req_t;

static void on_closed(uv_handle_t *handle) { free(handle->data); }

static tcp_box_t *check_box(lua_State *L) {
  return luaL_checkudata(L, 1, TCP_MT);
}

static loop_tcp_t *check_tcp(lua_State *L) {
  loop_tcp_t *t = check_box(L)->tcp;
  if (t == NULL)
    luaL_argerror(L, 1, "stream is closed");
  return t;
}

static uv_stream_t *stream_of(loop_tcp_t *t) {
  return (uv_stream_t *)&t->handle;
}

static void unref(lua_State *L, int *ref) {
  luaL_unref(L, LUA_REGISTRYINDEX, *ref);
  *ref = LUA_NOREF;
}

/* Pushes a new box holding a fresh, initialized handle. */
static loop_tcp_t *push_new(lua_State *L, synchro_t *S) {
  tcp_box_t *box = lua_newuserdata(L, sizeof(*box));
  loop_tcp_t *t;
  int err;
  box->tcp = NULL;
  luaL_setmetatable(L, TCP_MT);
  t = malloc(sizeof(*t));
  if (t == NULL)
    luaL_error(L, "not enough memory");
  err = uv_tcp_init(&S->loop, &t->handle);
  if (err != 0) {
    free(t);
    luaL_error(L, "uv_tcp_init: %s", uv_strerror(err));
  }
  t->handle.data = t;
  t->S = S;
  t->read_ref = t->listen_ref = LUA_NOREF;
  box->tcp = t;
  return t;
}

/* core.tcp_new() -> handle */
static int tcp_new(lua_State *L) {
  push_new(L, synchro__loop_of(L));
  return 1;
}

static void release(lua_State *L, tcp_box_t *box) {
  loop_tcp_t *t = box->tcp;
  if (t == NULL)
    return;
  box->tcp = NULL;
  unref(L, &t->read_ref);
  unref(L, &t->listen_ref);
  uv_close((uv_handle_t *)&t->handle, on_closed);
}

/* handle:close(), also __gc and __close; safe to call twice. Pending
 * writes, connects and shutdowns complete with ECANCELED. */
static int tcp_close(lua_State *L) {
  release(L, check_box(L));
  return 0;
}

static int push_result(lua_State *L, int err) {
  if (err != 0)
    return synchro__push_uv_error(L, err);
  lua_pushboolean(L, 1);
  return 1;
}

/* Calls the request's function with true, or with nil, msg, code. */
static void finish_req(tcp_req_t *r, int status) {
  lua_State *L = r->S->L;
  if (L != NULL) {
    int ref = r->cb_ref;
    synchro__call_ref_fn(L, ref, push_result(L, status));
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
  }
  free(r);
}

static tcp_req_t *new_req(lua_State *L, loop_tcp_t *t, int cb_idx,
                          size_t extra) {
  tcp_req_t *r;
  luaL_checktype(L, cb_idx, LUA_TFUNCTION);
  r = malloc(sizeof(*r) + extra);
  if (r == NULL)
    luaL_error(L, "not enough memory");
  r->S = t->S;
  r->cb_ref = LUA_NOREF;
  return r;
}

/* The request started: keep its function until it completes. */
static int req_started(lua_State *L, tcp_req_t *r, int cb_idx, int err) {
  if (err != 0) {
    free(r);
    return synchro__push_uv_error(L, err);
  }
  lua_pushvalue(L, cb_idx);
  r->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushboolean(L, 1);
  return 1;
}

static void on_connect(uv_connect_t *req, int status) {
  finish_req(req->data, status);
}

/* handle:connect(ip, port, fn) -> true, or nil, msg, code; then
 * fn(true) or fn(nil, msg, code). */
static int tcp_connect(lua_State *L) {
  loop_tcp_t *t = check_tcp(L);
  struct sockaddr_storage ss;
  tcp_req_t *r;
  synchro__check_sockaddr(L, 2, &ss);
  r = new_req(L, t, 4, 0);
  r->req.connect.data = r;
  return req_started(L, r, 4,
                     uv_tcp_connect(&r->req.connect, &t->handle,
                                    (struct sockaddr *)&ss, on_connect));
}

/* handle:bind(ip, port [, ipv6only]) -> true, or nil, msg, code */
static int tcp_bind(lua_State *L) {
  loop_tcp_t *t = check_tcp(L);
  struct sockaddr_storage ss;
  synchro__check_sockaddr(L, 2, &ss);
  return push_result(L, uv_tcp_bind(&t->handle, (struct sockaddr *)&ss,
                                    lua_toboolean(L, 4) ? UV_TCP_IPV6ONLY : 0));
}

static void on_connection(uv_stream_t *server, int status) {
  loop_tcp_t *t = server->data;
  lua_State *L = t->S->L;
  if (L == NULL || t->listen_ref == LUA_NOREF)
    return;
  synchro__call_ref_fn(L, t->listen_ref, push_result(L, status));
}

/* handle:listen(backlog, fn) -> true, or nil, msg, code; fn(true) for
 * each connection waiting for accept(), fn(nil, msg, code) on errors. */
static int tcp_listen(lua_State *L) {
  loop_tcp_t *t = check_tcp(L);
  lua_Integer backlog = luaL_checkinteger(L, 2);
  int err;
  luaL_argcheck(L, backlog > 0 && backlog <= INT_MAX, 2,
                "backlog out of range");
  luaL_checktype(L, 3, LUA_TFUNCTION);
  luaL_argcheck(L, t->listen_ref == LUA_NOREF, 1, "already listening");
  err = uv_listen(stream_of(t), (int)backlog, on_connection);
  if (err == 0) {
    lua_pushvalue(L, 3);
    t->listen_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  return push_result(L, err);
}

/* handle:accept() -> new handle, or nil, msg, code */
static int tcp_accept(lua_State *L) {
  loop_tcp_t *t = check_tcp(L);
  loop_tcp_t *client = push_new(L, t->S);
  int err = uv_accept(stream_of(t), stream_of(client));
  if (err != 0) {
    release(L, lua_touserdata(L, -1));
    return synchro__push_uv_error(L, err);
  }
  return 1;
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  loop_tcp_t *t = stream->data;
  lua_State *L = t->S->L;
  if (nread == 0 || L == NULL || t->read_ref == LUA_NOREF) {
    free(buf->base);
    return;
  }
  if (nread > 0) {
    lua_pushlstring(L, buf->base, (size_t)nread);
    free(buf->base);
    synchro__call_ref_fn(L, t->read_ref, 1);
  } else {
    int ref = t->read_ref;
    free(buf->base);
    t->read_ref = LUA_NOREF;
    uv_read_stop(stream);
    synchro__call_ref_fn(L, ref, synchro__push_uv_error(L, (int)nread));
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
  }
}

/* handle:read_start(fn) -> true, or nil, msg, code. fn(data) for each
 * chunk; fn(nil, msg, code) at the end ("EOF") or on an error, after
 * which reading has stopped. */
static int tcp_read_start(lua_State *L) {
  loop_tcp_t *t = check_tcp(L);
  int err;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  err = uv_read_start(stream_of(t), synchro__alloc_buf, on_read);
  if (err == 0) {
    unref(L, &t->read_ref);
    lua_pushvalue(L, 2);
    t->read_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  return push_result(L, err);
}

static int tcp_read_stop(lua_State *L) {
  loop_tcp_t *t = check_tcp(L);
  uv_read_stop(stream_of(t));
  unref(L, &t->read_ref);
  return 0;
}

static void on_write(uv_write_t *req, int status) {
  finish_req(req->data, status);
}

/* handle:write(data, fn) -> true when the kernel took all of data at
 * once; false when the rest is queued (fn(true) or fn(nil, msg, code)
 * follows); or nil, msg, code. */
static int tcp_write(lua_State *L) {
  loop_tcp_t *t = check_tcp(L);
  size_t len, done = 0;
  const char *data = luaL_checklstring(L, 2, &len);
  uv_buf_t buf;
  tcp_req_t *r;
  int err;
  if (uv_stream_get_write_queue_size(stream_of(t)) == 0 && len <= INT_MAX) {
    int n;
    buf = uv_buf_init((char *)data, (unsigned int)len);
    n = uv_try_write(stream_of(t), &buf, 1);
    if (n == (int)len) {
      lua_pushboolean(L, 1);
      return 1;
    }
    if (n < 0 && n != UV_EAGAIN)
      return synchro__push_uv_error(L, n);
    if (n > 0)
      done = (size_t)n;
  }
  luaL_argcheck(L, (uint64_t)(len - done) <= UINT_MAX, 2, "data too large");
  r = new_req(L, t, 3, len - done);
  memcpy(r + 1, data + done, len - done);
  buf = uv_buf_init((char *)(r + 1), (unsigned int)(len - done));
  r->req.write.data = r;
  err = uv_write(&r->req.write, stream_of(t), &buf, 1, on_write);
  if (req_started(L, r, 3, err) != 1)
    return 3;
  lua_pop(L, 1);
  lua_pushboolean(L, 0);
  return 1;
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  finish_req(req->data, status);
}

/* handle:shutdown(fn) -> true, or nil, msg, code; then fn(true) or
 * fn(nil, msg, code) once queued writes are done and the write side is
 * shut. */
static int tcp_shutdown(lua_State *L) {
  loop_tcp_t *t = check_tcp(L);
  tcp_req_t *r = new_req(L, t, 2, 0);
  r->req.shutdown.data = r;
  return req_started(L, r, 2,
                     uv_shutdown(&r->req.shutdown, stream_of(t), on_shutdown));
}

static int tcp_nodelay(lua_State *L) {
  loop_tcp_t *t = check_tcp(L);
  return push_result(L, uv_tcp_nodelay(&t->handle, lua_toboolean(L, 2)));
}

/* handle:keepalive(enable [, delay_seconds]) */
static int tcp_keepalive(lua_State *L) {
  loop_tcp_t *t = check_tcp(L);
  int enable = lua_toboolean(L, 2);
  lua_Integer delay = luaL_optinteger(L, 3, 60);
  luaL_argcheck(L, !enable || (delay >= 1 && delay <= INT_MAX), 3,
                "delay out of range");
  return push_result(L, uv_tcp_keepalive(&t->handle, enable, (unsigned)delay));
}

static int push_name(lua_State *L, int err, struct sockaddr_storage *ss) {
  if (err != 0)
    return synchro__push_uv_error(L, err);
  return synchro__push_sockaddr(L, (struct sockaddr *)ss);
}

/* handle:sockname() / handle:peername() -> addr, port, family, or nil,
 * msg, code */
static int tcp_sockname(lua_State *L) {
  loop_tcp_t *t = check_tcp(L);
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  return push_name(
      L, uv_tcp_getsockname(&t->handle, (struct sockaddr *)&ss, &len), &ss);
}

static int tcp_peername(lua_State *L) {
  loop_tcp_t *t = check_tcp(L);
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  return push_name(
      L, uv_tcp_getpeername(&t->handle, (struct sockaddr *)&ss, &len), &ss);
}

/* handle:write_queue_size() -> bytes queued in libuv, not yet written */
static int tcp_write_queue_size(lua_State *L) {
  loop_tcp_t *t = check_tcp(L);
  lua_pushinteger(L, (lua_Integer)uv_stream_get_write_queue_size(stream_of(t)));
  return 1;
}

void synchro__tcp_register(lua_State *L) {
  static const luaL_Reg methods[] = {{"connect", tcp_connect},
                                     {"bind", tcp_bind},
                                     {"listen", tcp_listen},
                                     {"accept", tcp_accept},
                                     {"read_start", tcp_read_start},
                                     {"read_stop", tcp_read_stop},
                                     {"write", tcp_write},
                                     {"shutdown", tcp_shutdown},
                                     {"nodelay", tcp_nodelay},
                                     {"keepalive", tcp_keepalive},
                                     {"sockname", tcp_sockname},
                                     {"peername", tcp_peername},
                                     {"write_queue_size", tcp_write_queue_size},
                                     {"close", tcp_close},
                                     {NULL, NULL}};
  if (luaL_newmetatable(L, TCP_MT)) {
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, tcp_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, tcp_close);
    lua_setfield(L, -2, "__close");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, tcp_new);
  lua_setfield(L, -2, "tcp_new");
}
