/* synchro.aio.poll: readiness of a foreign file descriptor (a socket of
 * libpq, of a C library, a pipe) on the loop, with uv_poll. C watches and
 * calls a Lua function; waiters, timeouts and cancellation are in
 * lua/synchro/aio/poll.lua, which keeps one handle per fd because libuv
 * allows only one uv_poll per fd and loop.
 *
 * The uv handle lives outside the userdata (libuv needs it until its close
 * callback); callbacks that libuv runs after the loop VM is gone
 * (synchro__live_vm gives NULL) do nothing. */
#include <limits.h>
#include <stdlib.h>

#include "aio.h"

#define POLL_MT "synchro.poll"

typedef struct {
  uv_poll_t handle;
  synchro_t *S;
  int cb_ref;
} loop_poll_t;

typedef struct {
  loop_poll_t *poll;
} poll_box_t;

static void on_closed(uv_handle_t *handle) { free(handle->data); }

static loop_poll_t *check_poll(lua_State *L) {
  poll_box_t *box = synchro__check_udata(L, 1, POLL_MT);
  if (box->poll == NULL)
    luaL_argerror(L, 1, "poll handle is closed");
  return box->poll;
}

/* "r", "w" or "rw" as UV_READABLE | UV_WRITABLE; anything else raises. */
static int check_events(lua_State *L, int idx) {
  static const char *const names[] = {"r", "w", "rw", "wr", NULL};
  static const int events[] = {UV_READABLE, UV_WRITABLE,
                               UV_READABLE | UV_WRITABLE,
                               UV_READABLE | UV_WRITABLE};
  return events[luaL_checkoption(L, idx, NULL, names)];
}

static void push_events(lua_State *L, int events) {
  if ((events & UV_READABLE) && (events & UV_WRITABLE))
    lua_pushliteral(L, "rw");
  else if (events & UV_WRITABLE)
    lua_pushliteral(L, "w");
  else
    lua_pushliteral(L, "r");
}

/* fn("r" | "w" | "rw") when ready, fn(nil, msg, code) on an error. */
static void on_poll(uv_poll_t *handle, int status, int events) {
  loop_poll_t *p = handle->data;
  lua_State *L = synchro__live_vm(p->S);
  if (L == NULL || p->cb_ref == LUA_NOREF)
    return;
  if (status < 0) {
    synchro__call_ref_fn(L, p->cb_ref, synchro__push_uv_error(L, status));
    return;
  }
  push_events(L, events);
  synchro__call_ref_fn(L, p->cb_ref, 1);
}

/* core.poll_new(fd, fn) -> handle, or nil, msg, code (EEXIST when the fd
 * is watched already, EBADF, EPERM for a regular file). The fd is made
 * non-blocking; it is never closed by the handle. */
static int poll_new(lua_State *L) {
  synchro_t *S = synchro__loop_of(L);
  lua_Integer fd = luaL_checkinteger(L, 1);
  poll_box_t *box;
  loop_poll_t *p;
  int err;
  luaL_argcheck(L, fd >= 0 && fd <= INT_MAX, 1, "fd out of range");
  luaL_checktype(L, 2, LUA_TFUNCTION);
  box = lua_newuserdata(L, sizeof(*box));
  box->poll = NULL;
  luaL_setmetatable(L, POLL_MT);
  p = malloc(sizeof(*p));
  if (p == NULL)
    return luaL_error(L, "not enough memory");
  err = uv_poll_init(&S->loop, &p->handle, (int)fd);
  if (err != 0) {
    free(p);
    return synchro__push_uv_error(L, err);
  }
  p->handle.data = p;
  p->S = S;
  lua_pushvalue(L, 2);
  p->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  box->poll = p;
  return 1;
}

/* handle:start(events) -> true, or nil, msg, code; events "r", "w", "rw".
 * Replaces the events watched before. */
static int poll_start(lua_State *L) {
  loop_poll_t *p = check_poll(L);
  int err = uv_poll_start(&p->handle, check_events(L, 2), on_poll);
  if (err != 0)
    return synchro__push_uv_error(L, err);
  lua_pushboolean(L, 1);
  return 1;
}

static int poll_stop(lua_State *L) {
  uv_poll_stop(&check_poll(L)->handle);
  return 0;
}

/* handle:close(), also __gc and __close; safe to call twice. */
static int poll_close(lua_State *L) {
  poll_box_t *box = synchro__check_udata(L, 1, POLL_MT);
  loop_poll_t *p = box->poll;
  if (p == NULL)
    return 0;
  box->poll = NULL;
  luaL_unref(L, LUA_REGISTRYINDEX, p->cb_ref);
  p->cb_ref = LUA_NOREF;
  uv_close((uv_handle_t *)&p->handle, on_closed);
  return 0;
}

void synchro__poll_register(lua_State *L) {
  static const luaL_Reg methods[] = {{"start", poll_start},
                                     {"stop", poll_stop},
                                     {"close", poll_close},
                                     {NULL, NULL}};
  if (luaL_newmetatable(L, POLL_MT)) {
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, poll_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, poll_close);
    lua_setfield(L, -2, "__close");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, poll_new);
  lua_setfield(L, -2, "poll_new");
}
