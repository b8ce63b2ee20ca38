/* Helpers for the loop VM's C functions (timers, fs, tcp, ...): finding
 * the loop, reporting libuv errors the Lua way, running Lua callbacks. */
#include <stdio.h>

#include "vm.h"

synchro_t *synchro__loop_of(lua_State *L) {
  synchro_t *S;
  lua_getfield(L, LUA_REGISTRYINDEX, "synchro.loop");
  S = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (S == NULL)
    luaL_error(L, "this works only in async code on a synchronizer's loop");
  return S;
}

int synchro__push_uv_error(lua_State *L, int err) {
  lua_pushnil(L);
  lua_pushfstring(L, "%s: %s", synchro_err_name(err), synchro_strerror(err));
  lua_pushstring(L, synchro_err_name(err));
  return 3;
}

void synchro__call_ref_fn(lua_State *L, int ref, int nargs) {
  /* the function goes below its nargs arguments */
  lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
  lua_insert(L, -nargs - 1);
  if (lua_pcall(L, nargs, 0, 0) != 0) {
    fprintf(stderr, "synchro: error in a loop callback: %s\n",
            lua_tostring(L, -1));
    lua_pop(L, 1);
  }
}

static void count_handle(uv_handle_t *handle, void *arg) {
  if (!uv_is_closing(handle))
    (*(int *)arg)++;
}

/* core.loop_handles() -> the number of open libuv handles of this loop,
 * besides the loop's own three (for leak checks in tests). */
static int loop_handles(lua_State *L) {
  synchro_t *S = synchro__loop_of(L);
  int n = 0;
  uv_walk(&S->loop, count_handle, &n);
  lua_pushinteger(L, n - 3);
  return 1;
}

void synchro__vmaux_register(lua_State *L) {
  lua_pushcfunction(L, loop_handles);
  lua_setfield(L, -2, "loop_handles");
  synchro__watch_register(L);
}
