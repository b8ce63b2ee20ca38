/* One request record for every libuv request that the loop VM starts and
 * awaits (fs, getaddrinfo, getnameinfo, connect, write, udp send,
 * shutdown), and the one policy for its end (see aio.h):
 *
 * - The record is malloc'd by the module and freed by its release
 *   function, which runs exactly once: when the start failed, or after
 *   libuv completed the request. libuv owns the record until then,
 *   whatever happens on the Lua side.
 * - The Lua side holds a request object whose cancel() abandons the
 *   request: its Lua function is let go at once and is never called; a
 *   request still queued on the threadpool is uv_cancel'ed, any other
 *   runs to its end and only its resources are freed.
 * - The VM is gone once lua_close collected the per-VM list (a registry
 *   value): every request in flight is abandoned then, and uv_cancel'ed
 *   where libuv can, so that close does not wait for queued work. A
 *   request completing later finds no list and only frees memory.
 * - A Lua function that raises is reported on stderr (never exit()); one
 *   that cannot be given its results (no memory) gets nil, "ENOMEM...",
 *   "ENOMEM", so the task that waits always wakes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aio.h"

#define REQ_MT   "synchro.request"
#define LIST_KEY "synchro.requests"

struct synchro__req_list {
  lua_State *L; /* the loop VM's main state */
  synchro__req_t *head;
};

typedef struct {
  synchro__req_t *req; /* NULL once the request ended */
} req_box_t;

lua_State *synchro__live_vm(synchro_t *S) { return S->L; }

/* ---- the per-VM list ---- */

static int list_gc(lua_State *L) {
  synchro__req_list_t *list = lua_touserdata(L, 1);
  synchro__req_t *r = list->head, *next;
  list->head = NULL;
  for (; r != NULL; r = next) {
    next = r->next;
    r->list = NULL;
    r->prev = r->next = NULL;
    r->abandoned = 1;
    r->cb_ref = LUA_NOREF; /* the registry goes with the VM */
    if (r->box != NULL)
      ((req_box_t *)r->box)->req = NULL;
    r->box = NULL;
    if (r->uv != NULL)
      uv_cancel(r->uv);
  }
  return 0;
}

static synchro__req_list_t *get_list(lua_State *L) {
  synchro__req_list_t *list;
  synchro_t *S = synchro__loop_of(L);
  lua_getfield(L, LUA_REGISTRYINDEX, LIST_KEY);
  list = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (list != NULL)
    return list;
  list = lua_newuserdata(L, sizeof(*list));
  list->L = S->L;
  list->head = NULL;
  lua_newtable(L);
  lua_pushcfunction(L, list_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, LIST_KEY);
  return list;
}

static void unlink_req(synchro__req_t *r) {
  if (r->list == NULL)
    return;
  if (r->prev != NULL)
    r->prev->next = r->next;
  else
    r->list->head = r->next;
  if (r->next != NULL)
    r->next->prev = r->prev;
  r->prev = r->next = NULL;
}

/* ---- starting ---- */

void *synchro__req_alloc(lua_State *L, int cb_idx, size_t size, size_t extra,
                         synchro__req_push_t push,
                         synchro__req_release_t release) {
  synchro__req_t *r = NULL;
  luaL_checktype(L, cb_idx, LUA_TFUNCTION);
  if (extra <= (size_t)-1 - size)
    r = malloc(size + extra);
  if (r == NULL)
    luaL_error(L, "not enough memory");
  memset(r, 0, size); /* the buffer after it is the module's to fill */
  r->cb_ref = LUA_NOREF;
  r->push = push != NULL ? push : synchro__req_push_status;
  r->release = release;
  return r;
}

int synchro__req_submit(lua_State *L, synchro__req_t *r, int cb_idx,
                        uv_req_t *uv, int err) {
  synchro__req_list_t *list;
  req_box_t *box;
  if (err < 0) {
    r->status = err;
    if (r->release != NULL)
      r->release(r);
    else
      free(r);
    return synchro__push_uv_error(L, err);
  }
  /* Started: libuv owns r. Should memory run short below, r is not in
   * the list yet and so completes quietly, as after its VM closed. */
  r->uv = uv;
  list = get_list(L);
  box = lua_newuserdata(L, sizeof(*box));
  box->req = NULL;
  luaL_setmetatable(L, REQ_MT);
  lua_pushvalue(L, cb_idx);
  r->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  box->req = r;
  r->box = box;
  r->list = list;
  r->next = list->head;
  if (r->next != NULL)
    r->next->prev = r;
  list->head = r;
  return 1;
}

/* ---- completing ---- */

int synchro__req_push_status(lua_State *L, synchro__req_t *r) {
  if (r->status < 0)
    return synchro__push_uv_error(L, r->status);
  lua_pushboolean(L, 1);
  return 1;
}

static int deliver(lua_State *L) {
  synchro__req_t *r = lua_touserdata(L, 1);
  int n;
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->cb_ref);
  n = r->push(L, r);
  r->entered = 1;
  lua_call(L, n, 0);
  return 0;
}

static int deliver_enomem(lua_State *L) {
  synchro__req_t *r = lua_touserdata(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->cb_ref);
  lua_call(L, synchro__push_uv_error(L, UV_ENOMEM), 0);
  return 0;
}

static void report(lua_State *L) {
  fprintf(stderr, "synchro: error in a loop callback: %s\n",
          lua_tostring(L, -1));
  lua_pop(L, 1);
}

static void call(lua_State *L, lua_CFunction fn, synchro__req_t *r) {
  lua_pushcfunction(L, fn);
  lua_pushlightuserdata(L, r);
  if (lua_pcall(L, 1, 0, 0) != 0) {
    if (r->entered || fn == deliver_enomem) {
      report(L);
    } else {
      lua_pop(L, 1);
      call(L, deliver_enomem, r);
    }
  }
}

void synchro__req_done(synchro__req_t *r, int status) {
  lua_State *L = r->list != NULL ? r->list->L : NULL;
  r->status = status;
  unlink_req(r);
  if (r->box != NULL)
    ((req_box_t *)r->box)->req = NULL;
  r->box = NULL;
  if (L != NULL && !r->abandoned && r->cb_ref != LUA_NOREF) {
    int top = lua_gettop(L);
    call(L, deliver, r);
    lua_settop(L, top);
  }
  if (L != NULL && r->cb_ref != LUA_NOREF)
    luaL_unref(L, LUA_REGISTRYINDEX, r->cb_ref);
  r->cb_ref = LUA_NOREF;
  if (r->release != NULL)
    r->release(r);
  else
    free(r);
}

/* ---- the request object ---- */

/* req:cancel(): abandons the request (see the top); idempotent. */
static int req_cancel(lua_State *L) {
  req_box_t *box = synchro__check_udata(L, 1, REQ_MT);
  synchro__req_t *r = box->req;
  if (r == NULL || r->abandoned)
    return 0;
  r->abandoned = 1;
  luaL_unref(L, LUA_REGISTRYINDEX, r->cb_ref);
  r->cb_ref = LUA_NOREF;
  if (r->uv != NULL)
    uv_cancel(r->uv); /* only threadpool requests can be; others end */
  return 0;
}

/* Collected while in flight (at lua_close): the request goes on. */
static int req_gc(lua_State *L) {
  req_box_t *box = synchro__check_udata(L, 1, REQ_MT);
  if (box->req != NULL) {
    box->req->box = NULL;
    box->req = NULL;
  }
  return 0;
}

/* core.requests_pending() -> requests in flight (for leak checks). */
static int requests_pending(lua_State *L) {
  synchro__req_t *r;
  lua_Integer n = 0;
  for (r = get_list(L)->head; r != NULL; r = r->next)
    n++;
  lua_pushinteger(L, n);
  return 1;
}

void synchro__request_register(lua_State *L) {
  if (luaL_newmetatable(L, REQ_MT)) {
    lua_newtable(L);
    lua_pushcfunction(L, req_cancel);
    lua_setfield(L, -2, "cancel");
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, req_gc);
    lua_setfield(L, -2, "__gc");
  }
  /* core.request_mt: request.lua tells a request from a result by it */
  lua_setfield(L, -2, "request_mt");
  lua_pushcfunction(L, requests_pending);
  lua_setfield(L, -2, "requests_pending");
}
