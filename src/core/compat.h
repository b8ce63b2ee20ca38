/* One Lua C API for 5.1, 5.2, 5.3, 5.4 and LuaJIT: compat-5.3 gives the
 * older ones the 5.3 API; the few remaining differences are smoothed here. */
#ifndef SYNCHRO_COMPAT_H
#define SYNCHRO_COMPAT_H

#ifdef SYNCHRO_USE_COMPAT53
#define COMPAT53_PREFIX synchro_compat53
#include "compat-5.3.h"
#else
#include "lua.h"
#include "lauxlib.h"
#include "lualib.h"
#endif

#ifdef SYNCHRO_LUAJIT
#include "luajit.h" /* LUAJIT_VERSION; LuaJIT's lua.h does not say */
#endif

#if defined(LUAJIT_VERSION) || LUA_VERSION_NUM >= 502
#define SYNCHRO_HAVE_UPVALUEJOIN 1
#endif

/* lua_resume with the 5.4 signature everywhere. */
static inline int synchro__resume(lua_State *co, lua_State *from, int nargs,
                                  int *nres) {
#if LUA_VERSION_NUM >= 504
  return lua_resume(co, from, nargs, nres);
#else
  int status = lua_resume(co, from, nargs);
  *nres = lua_gettop(co);
  return status;
#endif
}

/* lua_dump keeping debug information (for remote tracebacks). */
static inline int synchro__dump(lua_State *L, lua_Writer writer, void *ud) {
  return lua_dump(L, writer, ud, 0);
}

#endif
