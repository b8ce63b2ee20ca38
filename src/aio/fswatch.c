/* File watching for the loop VM: core.fs_watch(path, recursive, fn)
 * watches a file or directory with uv_fs_event; fn(name, events, err)
 * runs on the loop thread for each change (name: the file that changed,
 * relative to the watched directory, or nil; events: 1 rename, 2 change,
 * as UV_RENAME and UV_CHANGE; err: a libuv error name, or nil).
 * lua/synchro/aio/fs.lua builds aio.fs.watch on it.
 *
 * The uv handle lives outside the userdata because libuv needs it until
 * its close callback, after Lua may have freed the userdata. */
#include <stdlib.h>

#include "aio.h"

#define WATCH_MT "synchro.fs.watch"

typedef struct {
  uv_fs_event_t handle;
  synchro_t *S;
  int cb_ref;
} loop_watch_t;

typedef struct {
  loop_watch_t *watch; /* NULL once closed */
} watch_box_t;

static void on_closed(uv_handle_t *handle) { free(handle->data); }

static void on_event(uv_fs_event_t *handle, const char *name, int events,
                     int status) {
  loop_watch_t *w = handle->data;
  lua_State *L = synchro__live_vm(w->S);
  if (L == NULL)
    return;
  if (name != NULL)
    lua_pushstring(L, name);
  else
    lua_pushnil(L);
  lua_pushinteger(L, events);
  if (status < 0)
    lua_pushstring(L, uv_err_name(status));
  else
    lua_pushnil(L);
  synchro__call_ref_fn(L, w->cb_ref, 3);
}

/* core.fs_watch(path, recursive, fn) -> handle | nil, message, name */
static int watch_new(lua_State *L) {
  synchro_t *S = synchro__loop_of(L);
  const char *path = luaL_checkstring(L, 1);
  unsigned int flags = lua_toboolean(L, 2) ? UV_FS_EVENT_RECURSIVE : 0;
  watch_box_t *box;
  loop_watch_t *w;
  int err;
  luaL_checktype(L, 3, LUA_TFUNCTION);
  box = lua_newuserdata(L, sizeof(*box));
  box->watch = NULL;
  luaL_setmetatable(L, WATCH_MT);
  w = malloc(sizeof(*w));
  if (w == NULL)
    return luaL_error(L, "not enough memory");
  uv_fs_event_init(&S->loop, &w->handle);
  w->handle.data = w;
  w->S = S;
  w->cb_ref = LUA_NOREF;
  err = uv_fs_event_start(&w->handle, on_event, path, flags);
  if (err != 0) {
    uv_close((uv_handle_t *)&w->handle, on_closed);
    return synchro__push_uv_error(L, err);
  }
  lua_pushvalue(L, 3);
  w->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  box->watch = w;
  return 1;
}

/* handle:close() (and __gc, __close); safe to call twice. */
static int watch_close(lua_State *L) {
  watch_box_t *box = synchro__check_udata(L, 1, WATCH_MT);
  loop_watch_t *w = box->watch;
  if (w == NULL)
    return 0;
  box->watch = NULL;
  luaL_unref(L, LUA_REGISTRYINDEX, w->cb_ref);
  uv_close((uv_handle_t *)&w->handle, on_closed);
  return 0;
}

void synchro__fswatch_register(lua_State *L) {
  static const luaL_Reg methods[] = {{"close", watch_close}, {NULL, NULL}};
  if (luaL_newmetatable(L, WATCH_MT)) {
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, watch_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, watch_close);
    lua_setfield(L, -2, "__close");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, watch_new);
  lua_setfield(L, -2, "fs_watch");
}
