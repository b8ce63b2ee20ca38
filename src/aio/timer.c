/* Timers for the loop VM: core.timer() gives an object whose callback runs
 * on the loop thread. The uv handle lives outside the userdata because
 * libuv needs it until its close callback, after Lua may have freed it. */
#include <stdlib.h>

#include "aio.h"

#define TIMER_MT "synchro.timer"

typedef struct {
  uv_timer_t handle;
  synchro_t *S;
  int cb_ref;
} loop_timer_t;

typedef struct {
  loop_timer_t *timer;
} timer_box_t;

static void on_closed(uv_handle_t *handle) { free(handle->data); }

static void on_timer(uv_timer_t *handle) {
  loop_timer_t *t = handle->data;
  lua_State *L = synchro__live_vm(t->S);
  if (L != NULL)
    synchro__call_ref_fn(L, t->cb_ref, 0);
}

static loop_timer_t *check_timer(lua_State *L) {
  timer_box_t *box = synchro__check_udata(L, 1, TIMER_MT);
  if (box->timer == NULL)
    luaL_argerror(L, 1, "timer is closed");
  return box->timer;
}

/* core.timer(fn) -> timer */
static int timer_new(lua_State *L) {
  synchro_t *S = synchro__loop_of(L);
  timer_box_t *box;
  loop_timer_t *t;
  luaL_checktype(L, 1, LUA_TFUNCTION);
  box = lua_newuserdata(L, sizeof(*box));
  box->timer = NULL;
  luaL_setmetatable(L, TIMER_MT);
  t = malloc(sizeof(*t));
  if (t == NULL)
    return luaL_error(L, "not enough memory");
  uv_timer_init(&S->loop, &t->handle);
  t->handle.data = t;
  t->S = S;
  lua_pushvalue(L, 1);
  t->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  box->timer = t;
  return 1;
}

/* Seconds (normalised) as libuv's milliseconds, rounded up. */
static uint64_t to_ms(double seconds) {
  return (uint64_t)(seconds * 1000.0 + 0.999);
}

/* timer:start(seconds [, repeat_seconds]), by the one time rule: a time
 * with no limit never fires (a repeat with no limit fires once). */
static int timer_start(lua_State *L) {
  loop_timer_t *t = check_timer(L);
  double after = synchro__check_time(L, 2, "timer", "seconds");
  double every = synchro__opt_time(L, 3, "timer", "repeat", 0);
  uv_timer_stop(&t->handle);
  if (after == SYNCHRO_NO_LIMIT)
    return 0;
  uv_timer_start(&t->handle, on_timer, to_ms(after),
                 every == SYNCHRO_NO_LIMIT ? 0 : to_ms(every));
  return 0;
}

static int timer_stop(lua_State *L) {
  uv_timer_stop(&check_timer(L)->handle);
  return 0;
}

static int timer_close(lua_State *L) {
  timer_box_t *box = synchro__check_udata(L, 1, TIMER_MT);
  loop_timer_t *t = box->timer;
  if (t == NULL)
    return 0;
  box->timer = NULL;
  luaL_unref(L, LUA_REGISTRYINDEX, t->cb_ref);
  uv_close((uv_handle_t *)&t->handle, on_closed);
  return 0;
}

/* aio.now(): monotonic seconds. */
static int now(lua_State *L) {
  lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e9);
  return 1;
}

void synchro__timer_register(lua_State *L) {
  static const luaL_Reg methods[] = {{"start", timer_start},
                                     {"stop", timer_stop},
                                     {"close", timer_close},
                                     {NULL, NULL}};
  if (luaL_newmetatable(L, TIMER_MT)) {
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, timer_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, timer_close);
    lua_setfield(L, -2, "__close");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, timer_new);
  lua_setfield(L, -2, "timer");
  lua_pushcfunction(L, now);
  lua_setfield(L, -2, "now");
}
