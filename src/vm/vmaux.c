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

/* The metatable named tname is looked up by name once per VM; after that
 * it is found in the registry under the address of tname (a pointer key:
 * no string made or compared per check). */
void *synchro__test_udata(lua_State *L, int idx, const char *tname) {
  void *p = lua_touserdata(L, idx);
  if (p == NULL || !lua_getmetatable(L, idx))
    return NULL;
  lua_rawgetp(L, LUA_REGISTRYINDEX, tname);
  if (lua_rawequal(L, -1, -2)) {
    lua_pop(L, 2);
    return p;
  }
  if (!lua_isnil(L, -1)) {
    lua_pop(L, 2);
    return NULL;
  }
  lua_pop(L, 1);
  luaL_getmetatable(L, tname);
  if (!lua_isnil(L, -1) && lua_rawequal(L, -1, -2)) {
    lua_rawsetp(L, LUA_REGISTRYINDEX, tname);
    lua_pop(L, 1);
    return p;
  }
  lua_pop(L, 2);
  return NULL;
}

void *synchro__check_udata(lua_State *L, int idx, const char *tname) {
  void *p = synchro__test_udata(L, idx, tname);
  if (p == NULL)
    return luaL_checkudata(L, idx, tname); /* raises the usual error */
  return p;
}

/* The value at idx if its metatable is upvalue up, else NULL. */
static void *udata_by_upvalue(lua_State *L, int idx, int up) {
  void *p = lua_touserdata(L, idx);
  int same;
  if (p == NULL || !lua_getmetatable(L, idx))
    return NULL;
  same = lua_rawequal(L, -1, lua_upvalueindex(up));
  lua_pop(L, 1);
  return same ? p : NULL;
}

void *synchro__test_udata_up(lua_State *L, int idx, const char *tname,
                             int up) {
  void *p = udata_by_upvalue(L, idx, up);
  return p != NULL ? p : synchro__test_udata(L, idx, tname);
}

void *synchro__check_udata_up(lua_State *L, int idx, const char *tname,
                              int up) {
  void *p = udata_by_upvalue(L, idx, up);
  return p != NULL ? p : synchro__check_udata(L, idx, tname);
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

double synchro__check_time(lua_State *L, int idx, const char *fname,
                          const char *what) {
  double t;
  if (synchro__time_normalize(luaL_checknumber(L, idx), &t) != 0)
    luaL_error(L, "bad argument #%d to '%s' (%s is NaN)", idx, fname, what);
  return t;
}

double synchro__opt_time(lua_State *L, int idx, const char *fname,
                        const char *what, double def) {
  return lua_isnoneornil(L, idx) ? def
                                 : synchro__check_time(L, idx, fname, what);
}

/* core.check_time(v, fname, what) -> v normalised (NaN raises; negative
 * gives 0; math.huge and anything too large give nil, no limit): the C
 * rule, for the Lua modules. */
static int l_check_time(lua_State *L) {
  const char *fname = luaL_optstring(L, 2, "?");
  const char *what = luaL_optstring(L, 3, "time");
  double t;
  if (lua_type(L, 1) != LUA_TNUMBER)
    return luaL_error(L, "bad argument to '%s' (%s: number expected, got "
                         "%s)", fname, what, luaL_typename(L, 1));
  if (synchro__time_normalize(lua_tonumber(L, 1), &t) != 0)
    return luaL_error(L, "bad argument to '%s' (%s is NaN)", fname, what);
  if (t == SYNCHRO_NO_LIMIT)
    return 0;
  lua_pushnumber(L, t);
  return 1;
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
  lua_pushcfunction(L, l_check_time);
  lua_setfield(L, -2, "check_time");
  lua_pushcfunction(L, loop_handles);
  lua_setfield(L, -2, "loop_handles");
  synchro__watch_register(L);
}
