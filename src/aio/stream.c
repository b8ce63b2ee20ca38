/* synchro.aio.stream: one stream object for TCP, pipes and TTYs (see
 * stream.h). C starts libuv operations and calls a Lua function when they
 * complete; buffering, waiting, back pressure and cancellation are in
 * lua/synchro/aio/stream.lua. Requests are request.c's records; read
 * callbacks that libuv runs after the loop VM is gone (synchro__live_vm)
 * only free memory. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "netaddr.h"
#include "stream.h"

#define STREAM_MT "synchro.stream"

typedef struct {
  synchro__stream_t *s; /* NULL once closed */
} stream_box_t;

static void on_closed(uv_handle_t *handle) { free(handle->data); }

static void unref(lua_State *L, int *ref) {
  luaL_unref(L, LUA_REGISTRYINDEX, *ref);
  *ref = LUA_NOREF;
}

synchro__stream_t *synchro__stream_push_new(lua_State *L, synchro_t *S,
                                            uv_handle_type type, int fd) {
  stream_box_t *box = lua_newuserdata(L, sizeof(*box));
  synchro__stream_t *s;
  int err;
  box->s = NULL;
  luaL_setmetatable(L, STREAM_MT);
  s = malloc(sizeof(*s));
  if (s == NULL)
    luaL_error(L, "not enough memory");
  if (type == UV_TCP)
    err = uv_tcp_init(&S->loop, &s->u.tcp);
  else if (type == UV_TTY)
    err = uv_tty_init(&S->loop, &s->u.tty, fd, 0);
  else
    err = uv_pipe_init(&S->loop, &s->u.pipe, 0);
  if (err == 0 && type == UV_NAMED_PIPE && fd >= 0) {
    err = uv_pipe_open(&s->u.pipe, fd);
    if (err != 0) {
      s->u.handle.data = s;
      uv_close(&s->u.handle, on_closed);
      luaL_error(L, "uv_pipe_open: %s", uv_strerror(err));
    }
  }
  if (err != 0) {
    free(s);
    luaL_error(L, "cannot make a stream: %s", uv_strerror(err));
  }
  s->u.handle.data = s;
  s->S = S;
  s->read_ref = s->listen_ref = LUA_NOREF;
  box->s = s;
  return s;
}

synchro__stream_t *synchro__stream_check(lua_State *L, int idx,
                                         uv_handle_type type) {
  stream_box_t *box = synchro__check_udata(L, idx, STREAM_MT);
  synchro__stream_t *s = box->s;
  if (s == NULL)
    luaL_argerror(L, idx, "stream is closed");
  if (type != UV_UNKNOWN_HANDLE && s->u.handle.type != type)
    luaL_argerror(L, idx,
                  type == UV_TCP   ? "TCP stream expected"
                  : type == UV_TTY ? "TTY stream expected"
                                   : "pipe stream expected");
  return s;
}

static void release(lua_State *L, stream_box_t *box) {
  synchro__stream_t *s = box->s;
  if (s == NULL)
    return;
  box->s = NULL;
  unref(L, &s->read_ref);
  unref(L, &s->listen_ref);
  /* a terminal left in raw mode is restored (close, __gc, VM close) */
  if (s->u.handle.type == UV_TTY)
    uv_tty_set_mode(&s->u.tty, UV_TTY_MODE_NORMAL);
  /* pending writes, connects and shutdowns complete with ECANCELED */
  uv_close(&s->u.handle, on_closed);
}

void synchro__stream_close_at(lua_State *L, int idx) {
  release(L, synchro__check_udata(L, idx, STREAM_MT));
}

/* h:close(), also __gc and __close; safe to call twice. */
static int stream_close(lua_State *L) {
  synchro__stream_close_at(L, 1);
  return 0;
}

int synchro__stream_push_result(lua_State *L, int err) {
  if (err != 0)
    return synchro__push_uv_error(L, err);
  lua_pushboolean(L, 1);
  return 1;
}

void synchro__stream_req_finish(synchro__stream_req_t *r, int status) {
  synchro__req_done(&r->base, status);
}

synchro__stream_req_t *synchro__stream_req_new(lua_State *L,
                                               synchro__stream_t *s,
                                               int cb_idx, size_t extra) {
  (void)s;
  return synchro__req_alloc(L, cb_idx, sizeof(synchro__stream_req_t), extra,
                            NULL, NULL);
}

int synchro__stream_req_started(lua_State *L, synchro__stream_req_t *r,
                                int cb_idx, int err) {
  return synchro__req_submit(L, &r->base, cb_idx, (uv_req_t *)&r->req, err);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  synchro__stream_t *s = stream->data;
  lua_State *L = synchro__live_vm(s->S);
  if (nread == 0 || L == NULL || s->read_ref == LUA_NOREF) {
    free(buf->base);
    return;
  }
  if (nread > 0) {
    lua_pushlstring(L, buf->base, (size_t)nread);
    free(buf->base);
    synchro__call_ref_fn(L, s->read_ref, 1);
  } else {
    int ref = s->read_ref;
    free(buf->base);
    s->read_ref = LUA_NOREF;
    uv_read_stop(stream);
    synchro__call_ref_fn(L, ref, synchro__push_uv_error(L, (int)nread));
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
  }
}

/* h:read_start(fn) -> true, or nil, msg, code. fn(data) for each chunk;
 * fn(nil, msg, code) at the end ("EOF") or on an error, after which
 * reading has stopped. */
static int stream_read_start(lua_State *L) {
  synchro__stream_t *s = synchro__stream_check(L, 1, UV_UNKNOWN_HANDLE);
  int err;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  err = uv_read_start(&s->u.stream, synchro__alloc_buf, on_read);
  if (err == 0) {
    unref(L, &s->read_ref);
    lua_pushvalue(L, 2);
    s->read_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  return synchro__stream_push_result(L, err);
}

static int stream_read_stop(lua_State *L) {
  synchro__stream_t *s = synchro__stream_check(L, 1, UV_UNKNOWN_HANDLE);
  uv_read_stop(&s->u.stream);
  unref(L, &s->read_ref);
  return 0;
}

static void on_write(uv_write_t *req, int status) {
  synchro__stream_req_finish(req->data, status);
}

/* h:write(data, fn) -> true when the kernel took all of data at once; a
 * request object when the rest is queued (fn(true) or fn(nil, msg, code)
 * follows unless it is cancelled: the data is written all the same); or
 * nil, msg, code. */
static int stream_write(lua_State *L) {
  synchro__stream_t *s = synchro__stream_check(L, 1, UV_UNKNOWN_HANDLE);
  size_t len, done = 0;
  const char *data = luaL_checklstring(L, 2, &len);
  uv_buf_t buf;
  synchro__stream_req_t *r;
  int err;
  luaL_checktype(L, 3, LUA_TFUNCTION);
  if (uv_stream_get_write_queue_size(&s->u.stream) == 0 && len <= INT_MAX) {
    int n;
    buf = uv_buf_init((char *)data, (unsigned int)len);
    n = uv_try_write(&s->u.stream, &buf, 1);
    if (n == (int)len) {
      lua_pushboolean(L, 1);
      return 1;
    }
    if (n < 0 && n != UV_EAGAIN && n != UV_ENOSYS)
      return synchro__push_uv_error(L, n);
    if (n > 0)
      done = (size_t)n;
  }
  luaL_argcheck(L, (uint64_t)(len - done) <= UINT_MAX, 2, "data too large");
  r = synchro__stream_req_new(L, s, 3, len - done);
  memcpy(r + 1, data + done, len - done);
  buf = uv_buf_init((char *)(r + 1), (unsigned int)(len - done));
  r->req.write.data = r;
  err = uv_write(&r->req.write, &s->u.stream, &buf, 1, on_write);
  return synchro__stream_req_started(L, r, 3, err);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  synchro__stream_req_finish(req->data, status);
}

/* h:shutdown(fn) -> a request object, or nil, msg, code; then fn(true)
 * or fn(nil, msg, code) once queued writes are done and the write side
 * is shut. */
static int stream_shutdown(lua_State *L) {
  synchro__stream_t *s = synchro__stream_check(L, 1, UV_UNKNOWN_HANDLE);
  synchro__stream_req_t *r = synchro__stream_req_new(L, s, 2, 0);
  r->req.shutdown.data = r;
  return synchro__stream_req_started(
      L, r, 2, uv_shutdown(&r->req.shutdown, &s->u.stream, on_shutdown));
}

/* h:write_queue_size() -> bytes queued in libuv, not yet written */
static int stream_write_queue_size(lua_State *L) {
  synchro__stream_t *s = synchro__stream_check(L, 1, UV_UNKNOWN_HANDLE);
  lua_pushinteger(L, (lua_Integer)uv_stream_get_write_queue_size(&s->u.stream));
  return 1;
}

/* h:kind() -> "tcp", "pipe" or "tty" */
static int stream_kind(lua_State *L) {
  synchro__stream_t *s = synchro__stream_check(L, 1, UV_UNKNOWN_HANDLE);
  uv_handle_type t = s->u.handle.type;
  lua_pushstring(L, t == UV_TCP ? "tcp" : t == UV_TTY ? "tty" : "pipe");
  return 1;
}

void synchro__stream_register(lua_State *L, const luaL_Reg *methods) {
  static const luaL_Reg common[] = {
      {"read_start", stream_read_start},
      {"read_stop", stream_read_stop},
      {"write", stream_write},
      {"shutdown", stream_shutdown},
      {"write_queue_size", stream_write_queue_size},
      {"kind", stream_kind},
      {"close", stream_close},
      {NULL, NULL}};
  if (luaL_newmetatable(L, STREAM_MT)) {
    luaL_newlib(L, common);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, stream_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, stream_close);
    lua_setfield(L, -2, "__close");
  }
  if (methods != NULL) {
    lua_getfield(L, -1, "__index");
    luaL_setfuncs(L, methods, 0);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}
