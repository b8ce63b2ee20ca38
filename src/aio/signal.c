/* Signals for the loop VM: core.signal(signum, fn) watches one signal
 * with uv_signal; fn(signum) runs on the loop thread at each delivery.
 * lua/synchro/aio/signal.lua builds aio.signal on it.
 *
 * Why this works although the loop thread blocks every signal: libuv
 * installs one process-wide handler per signal and the handler only
 * writes to a pipe that the loop reads. The kernel delivers a
 * process-directed signal to any thread that does not block it (the
 * script's main thread, normally), so the handler runs there and the loop
 * still wakes. A process whose every thread blocks the signal never sees
 * it: then it stays pending, as it would without synchro.
 *
 * The uv handle lives outside the userdata because libuv needs it until
 * its close callback, after Lua may have freed the userdata. */
#include <stdlib.h>

#include "aio.h"

#define SIGNAL_MT "synchro.signal"

typedef struct {
  uv_signal_t handle;
  synchro_t *S;
  int cb_ref;
} loop_signal_t;

typedef struct {
  loop_signal_t *sig; /* NULL once closed */
} signal_box_t;

static void on_closed(uv_handle_t *handle) { free(handle->data); }

static void on_signal(uv_signal_t *handle, int signum) {
  loop_signal_t *s = handle->data;
  lua_State *L = synchro__live_vm(s->S);
  if (L == NULL)
    return;
  lua_pushinteger(L, signum);
  synchro__call_ref_fn(L, s->cb_ref, 1);
}

/* core.signal(signum, fn) -> handle | nil, message, name */
static int signal_new(lua_State *L) {
  synchro_t *S = synchro__loop_of(L);
  int signum = (int)luaL_checkinteger(L, 1);
  signal_box_t *box;
  loop_signal_t *s;
  int err;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  box = lua_newuserdata(L, sizeof(*box));
  box->sig = NULL;
  luaL_setmetatable(L, SIGNAL_MT);
  s = malloc(sizeof(*s));
  if (s == NULL)
    return luaL_error(L, "not enough memory");
  uv_signal_init(&S->loop, &s->handle);
  s->handle.data = s;
  s->S = S;
  s->cb_ref = LUA_NOREF;
  err = uv_signal_start(&s->handle, on_signal, signum);
  if (err != 0) {
    uv_close((uv_handle_t *)&s->handle, on_closed);
    return synchro__push_uv_error(L, err);
  }
  lua_pushvalue(L, 2);
  s->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  box->sig = s;
  return 1;
}

/* handle:close() (and __gc, __close); safe to call twice. */
static int signal_close(lua_State *L) {
  signal_box_t *box = synchro__check_udata(L, 1, SIGNAL_MT);
  loop_signal_t *s = box->sig;
  if (s == NULL)
    return 0;
  box->sig = NULL;
  luaL_unref(L, LUA_REGISTRYINDEX, s->cb_ref);
  uv_close((uv_handle_t *)&s->handle, on_closed);
  return 0;
}

void synchro__signal_register(lua_State *L) {
  static const luaL_Reg methods[] = {{"close", signal_close}, {NULL, NULL}};
  if (luaL_newmetatable(L, SIGNAL_MT)) {
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, signal_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, signal_close);
    lua_setfield(L, -2, "__close");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, signal_new);
  lua_setfield(L, -2, "signal");
}
