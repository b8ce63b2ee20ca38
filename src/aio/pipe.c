/* Pipe streams for the loop VM (a child's stdin, stdout, stderr): a
 * uv_pipe_t that reports what happens to it to one Lua function, the
 * stream's event function. Buffering, waiting and the read API are in
 * lua/synchro/aio/process.lua. The uv handle lives outside the userdata,
 * as in timer.c, and is freed in its close callback.
 *
 * Events: fn("data", chunk) (returning true pauses reading),
 * fn("eof"), fn("error", message, name), and fn("written", id) or
 * fn("written", id, message, name) when a write completes. Once the pipe
 * is closed, no event is reported. */
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "pipe.h"

#define PIPE_MT    "synchro.pipe"
#define READ_CHUNK 65536

typedef struct {
  uv_pipe_t handle;
  lua_State *L; /* the loop VM's main state */
  int event_ref;
  lua_Integer last_write;
  char chunk[READ_CHUNK]; /* one read at a time per stream */
} loop_pipe_t;

typedef struct {
  loop_pipe_t *pipe; /* NULL once closed */
} pipe_box_t;

typedef struct {
  uv_write_t req;
  loop_pipe_t *pipe;
  lua_Integer id;
  char data[]; /* the bytes, owned until the write completes */
} write_req_t;

static void on_closed(uv_handle_t *handle) { free(handle->data); }

/* Calls the event function with the n values on top of L; returns whether
 * it asked to pause reading. */
static int emit(loop_pipe_t *p, int n) {
  lua_State *L = p->L;
  int pause = 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, p->event_ref);
  lua_insert(L, -n - 1);
  if (lua_pcall(L, n, 1, 0) != 0)
    fprintf(stderr, "synchro: error in a pipe callback: %s\n",
            lua_tostring(L, -1));
  else
    pause = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return pause;
}

static void on_alloc(uv_handle_t *handle, size_t size, uv_buf_t *buf) {
  loop_pipe_t *p = handle->data;
  (void)size;
  *buf = uv_buf_init(p->chunk, READ_CHUNK);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  loop_pipe_t *p = stream->data;
  lua_State *L = p->L;
  (void)buf;
  if (nread == 0)
    return;
  if (nread < 0)
    uv_read_stop(stream);
  if (p->event_ref == LUA_NOREF)
    return;
  if (nread > 0) {
    lua_pushliteral(L, "data");
    lua_pushlstring(L, p->chunk, (size_t)nread);
    /* the function may have closed the pipe */
    if (emit(p, 2) && !uv_is_closing((uv_handle_t *)stream))
      uv_read_stop(stream);
  } else if (nread == UV_EOF) {
    lua_pushliteral(L, "eof");
    emit(p, 1);
  } else {
    lua_pushliteral(L, "error");
    synchro__push_uv_error(L, (int)nread);
    lua_remove(L, -3); /* the nil */
    emit(p, 3);
  }
}

static void on_written(uv_write_t *req, int status) {
  write_req_t *w = (write_req_t *)req;
  loop_pipe_t *p = w->pipe; /* alive: writes end before the close */
  if (p->event_ref != LUA_NOREF) {
    lua_State *L = p->L;
    int n = 2;
    lua_pushliteral(L, "written");
    lua_pushinteger(L, w->id);
    if (status < 0) {
      synchro__push_uv_error(L, status);
      lua_remove(L, -3);
      n = 4;
    }
    emit(p, n);
  }
  free(w);
}

uv_pipe_t *synchro__pipe_push_new(lua_State *L, synchro_t *S) {
  pipe_box_t *box = lua_newuserdata(L, sizeof(*box));
  loop_pipe_t *p;
  box->pipe = NULL;
  luaL_setmetatable(L, PIPE_MT);
  p = malloc(sizeof(*p));
  if (p == NULL)
    luaL_error(L, "not enough memory");
  uv_pipe_init(&S->loop, &p->handle, 0);
  p->handle.data = p;
  p->L = S->L;
  p->event_ref = LUA_NOREF;
  p->last_write = 0;
  box->pipe = p;
  return &p->handle;
}

static void release(lua_State *L, pipe_box_t *box) {
  loop_pipe_t *p = box->pipe;
  if (p == NULL)
    return;
  box->pipe = NULL;
  if (p->event_ref != LUA_NOREF) {
    luaL_unref(L, LUA_REGISTRYINDEX, p->event_ref);
    p->event_ref = LUA_NOREF;
  }
  /* Pending writes complete (with ECANCELED, unreported) before this
   * close callback frees p. */
  uv_close((uv_handle_t *)&p->handle, on_closed);
}

void synchro__pipe_close_at(lua_State *L, int idx) {
  release(L, luaL_checkudata(L, idx, PIPE_MT));
}

static loop_pipe_t *check_pipe(lua_State *L) {
  pipe_box_t *box = luaL_checkudata(L, 1, PIPE_MT);
  if (box->pipe == NULL)
    luaL_argerror(L, 1, "pipe is closed");
  return box->pipe;
}

/* pipe:callback(fn): sets the event function. */
static int pipe_callback(lua_State *L) {
  loop_pipe_t *p = check_pipe(L);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  if (p->event_ref != LUA_NOREF)
    luaL_unref(L, LUA_REGISTRYINDEX, p->event_ref);
  p->event_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

/* pipe:read_start() -> true | nil, message, name */
static int pipe_read_start(lua_State *L) {
  loop_pipe_t *p = check_pipe(L);
  int err = uv_read_start((uv_stream_t *)&p->handle, on_alloc, on_read);
  if (err != 0 && err != UV_EALREADY)
    return synchro__push_uv_error(L, err);
  lua_pushboolean(L, 1);
  return 1;
}

static int pipe_read_stop(lua_State *L) {
  uv_read_stop((uv_stream_t *)&check_pipe(L)->handle);
  return 0;
}

/* pipe:write(data) -> id | nil, message, name. The bytes are copied; the
 * "written" event with this id reports the end. */
static int pipe_write(lua_State *L) {
  loop_pipe_t *p = check_pipe(L);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  write_req_t *w;
  uv_buf_t buf;
  int err;
  luaL_argcheck(L, len <= UINT_MAX, 2, "string too long");
  w = malloc(offsetof(write_req_t, data) + len + 1);
  if (w == NULL)
    return luaL_error(L, "not enough memory");
  memcpy(w->data, data, len);
  w->pipe = p;
  w->id = ++p->last_write;
  buf = uv_buf_init(w->data, (unsigned int)len);
  err = uv_write(&w->req, (uv_stream_t *)&p->handle, &buf, 1, on_written);
  if (err != 0) {
    free(w);
    return synchro__push_uv_error(L, err);
  }
  lua_pushinteger(L, w->id);
  return 1;
}

/* pipe:close(): safe to call twice; also __gc and __close. */
static int pipe_close(lua_State *L) {
  release(L, luaL_checkudata(L, 1, PIPE_MT));
  return 0;
}

void synchro__pipe_register(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"callback", pipe_callback},   {"read_start", pipe_read_start},
      {"read_stop", pipe_read_stop}, {"write", pipe_write},
      {"close", pipe_close},         {NULL, NULL}};
  if (luaL_newmetatable(L, PIPE_MT)) {
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, pipe_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, pipe_close);
    lua_setfield(L, -2, "__close");
  }
  lua_pop(L, 1);
}
