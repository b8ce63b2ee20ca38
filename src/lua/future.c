/* Futures and notifiers for the Lua binding. A future holds a reference to
 * its call; a notifier collects completed calls for a synchro.run
 * scheduler on the calling thread. */
#include <stdlib.h>
#include <unistd.h>

#include "binding.h"

/* A future's methods and __gc have its metatable as upvalue 1
 * (synchro__future_register), a notifier's have the notifier's. */
static synchro_call_t *check_future(lua_State *L) {
  synchro_call_t **box =
      synchro__check_udata_up(L, 1, SYNCHRO_FUTURE_MT, 1);
  return *box;
}

static int f_gc(lua_State *L) {
  synchro_call_t **box = synchro__check_udata_up(L, 1, SYNCHRO_FUTURE_MT, 1);
  synchro__call_unref(*box);
  *box = NULL;
  return 0;
}

/* fut:spin() -> whether the call is done, after spinning briefly for it
 * where spinning has been paying off (never parks: for a scheduler with
 * nothing else to run, before it suspends the awaiting task). */
static int f_spin(lua_State *L) {
  synchro_call_t *call = check_future(L);
  lua_pushboolean(L, synchro__event_spin(&call->done, &call->S->call_spin));
  return 1;
}

/* fut:wait([timeout]) -> true when done, false on timeout. Ctrl-C cancels
 * the call, lets its cleanup run, then raises "interrupted!". */
static int f_wait(lua_State *L) {
  synchro_call_t *call = check_future(L);
  double timeout = synchro__opt_time(L, 2, "wait", "timeout", SYNCHRO_NO_LIMIT);
  int rc = synchro__event_wait(&call->done, timeout, synchro__interrupted, L,
                               &call->S->call_spin);
  if (rc == UV_EINTR) {
    synchro__call_cancel_wait(call);
    return synchro__raise_interrupted(L);
  }
  lua_pushboolean(L, rc == 0);
  return 1;
}

static int f_done(lua_State *L) {
  lua_pushboolean(L, synchro__event_is_set(&check_future(L)->done));
  return 1;
}

/* fut:outcome() -> results, or raises the error; only once done. */
static int f_outcome(lua_State *L) {
  synchro_call_t *call = check_future(L);
  if (!synchro__event_is_set(&call->done))
    return luaL_error(L, "future is not done");
  lua_settop(L, 0);
  return synchro__push_reply(L, call);
}

/* fut:status() -> "pending" | "ok" | "error" | "cancelled" | "closed" */
static int f_status(lua_State *L) {
  static const char *const names[] = {"ok", "error", "cancelled", "closed",
                                      "timedout", "error", "died"};
  synchro_call_t *call = check_future(L);
  if (!synchro__event_is_set(&call->done))
    lua_pushliteral(L, "pending");
  else
    lua_pushstring(L, names[call->status]);
  return 1;
}

/* fut:cancel() -> true if the cancel was sent, false if already done */
static int f_cancel(lua_State *L) {
  synchro_call_t *call = check_future(L);
  if (synchro__event_is_set(&call->done)) {
    lua_pushboolean(L, 0);
    return 1;
  }
  synchro__call_cancel(call);
  lua_pushboolean(L, 1);
  return 1;
}

/* fut:pollfd() -> a file descriptor that becomes readable when the call
 * is done (owned by the future); with fut:events() and fut:timeout() this
 * is the poll protocol cqueues and other event loops understand. */
static int f_pollfd(lua_State *L) {
  int fd = synchro__call_pollfd(check_future(L));
  if (fd < 0)
    return luaL_error(L, "cannot make a pollfd: %s", synchro_strerror(fd));
  lua_pushinteger(L, fd);
  return 1;
}

static int f_events(lua_State *L) {
  check_future(L);
  lua_pushliteral(L, "r");
  return 1;
}

static int f_timeout(lua_State *L) {
  check_future(L);
  return 0;
}

/* core.deadline(fut, seconds): the call times out seconds from now (the
 * timeout of S:wrap, for futures and awaits; seconds already normalised,
 * nil for no limit). */
static int l_deadline(lua_State *L) {
  synchro_call_t *call = check_future(L);
  double t = synchro__opt_time(L, 2, "deadline", "timeout", SYNCHRO_NO_LIMIT);
  int err = synchro__deadline_add(call, t);
  if (err != 0)
    return luaL_error(L, "cannot set the call's deadline: %s",
                      synchro_strerror(err));
  return 0;
}

/* fut:key() -> a light userdata naming the call (notifier:take gives it) */
static int f_key(lua_State *L) {
  lua_pushlightuserdata(L, check_future(L));
  return 1;
}

static synchro_notifier_t *check_notifier(lua_State *L, int idx) {
  synchro_notifier_t **box = synchro__check_udata(L, idx, SYNCHRO_NOTIFIER_MT);
  return *box;
}

/* The notifier a notifier method is called on (upvalue 1: its metatable). */
static synchro_notifier_t *self_notifier(lua_State *L) {
  synchro_notifier_t **box =
      synchro__check_udata_up(L, 1, SYNCHRO_NOTIFIER_MT, 1);
  return *box;
}

/* fut:listen(notifier) -> true, or false if another one listens */
static int f_listen(lua_State *L) {
  synchro_call_t *call = check_future(L);
  lua_pushboolean(L, synchro__call_listen(call, check_notifier(L, 2)) == 0);
  return 1;
}

void synchro__push_future(lua_State *L, synchro_call_t *call) {
  synchro_call_t **box = lua_newuserdata(L, sizeof(*box));
  *box = NULL;
  luaL_setmetatable(L, SYNCHRO_FUTURE_MT);
  synchro__call_ref(call);
  *box = call;
}

void synchro__push_notifier(lua_State *L, synchro_notifier_t *n) {
  synchro_notifier_t **box = lua_newuserdata(L, sizeof(*box));
  *box = NULL;
  luaL_setmetatable(L, SYNCHRO_NOTIFIER_MT);
  synchro__notifier_ref(n);
  *box = n;
}

/* core.notifier() -> notifier */
static int n_new(lua_State *L) {
  synchro_notifier_t **box = lua_newuserdata(L, sizeof(*box));
  *box = NULL;
  luaL_setmetatable(L, SYNCHRO_NOTIFIER_MT);
  *box = synchro__notifier_new();
  if (*box == NULL)
    return luaL_error(L, "not enough memory");
  return 1;
}

static int n_gc(lua_State *L) {
  synchro_notifier_t **box =
      synchro__check_udata_up(L, 1, SYNCHRO_NOTIFIER_MT, 1);
  synchro__notifier_unref(*box);
  *box = NULL;
  return 0;
}

/* Ends list t at index i + 1: t[i + 1], t[i + 2], ... up to the first
 * nil become nil (what an earlier take left there). */
static void end_list(lua_State *L, int t, int i) {
  for (;;) {
    lua_rawgeti(L, t, ++i);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      return;
    }
    lua_pop(L, 1);
    lua_pushnil(L);
    lua_rawseti(L, t, i);
  }
}

/* notifier:take([keys, reverse]) -> keys, reverse: the keys of completed
 * calls, and the callback calls that arrived (futures, see core.rargs),
 * oldest first (maybe empty). Given two tables, it fills those (from
 * index 1, the rest cleared) instead of making new ones: a scheduler that
 * keeps them allocates nothing per wake. */
static int n_take(lua_State *L) {
  synchro_notifier_t *n = self_notifier(L);
  synchro_call_t *call;
  int i = 0, j = 0, reuse = lua_istable(L, 2) && lua_istable(L, 3);
  synchro__event_reset(&n->ready);
  /* not readable until the next push */
  if (__atomic_load_n(&n->fd, __ATOMIC_SEQ_CST) >= 0) {
    uint64_t count;
    ssize_t r = read(n->fd, &count, sizeof(count));
    (void)r;
  }
  call = synchro__notifier_take(n);
  if (reuse) {
    lua_settop(L, 3);
  } else {
    lua_settop(L, 1);
    lua_newtable(L);
    lua_newtable(L);
  }
  while (call != NULL) {
    synchro_call_t *next = call->done_next;
    /* a callback call to serve (not one whose answer came back) */
    if (call->reverse && !synchro__event_is_set(&call->done)) {
      synchro__push_future(L, call);
      lua_rawseti(L, -2, ++j);
    } else {
      lua_pushlightuserdata(L, call);
      lua_rawseti(L, -3, ++i);
    }
    /* The future that listened still holds the call alive. */
    synchro__call_unref(call);
    call = next;
  }
  if (reuse) {
    end_list(L, 2, i);
    end_list(L, 3, j);
  }
  return 2;
}

/* notifier:pollfd() -> an fd readable after pushes (for a luv loop) */
static int n_pollfd(lua_State *L) {
  int fd = synchro__notifier_pollfd(self_notifier(L));
  if (fd < 0)
    return luaL_error(L, "cannot make a pollfd: %s", synchro_strerror(fd));
  lua_pushinteger(L, fd);
  return 1;
}

/* notifier:wait([timeout]) -> "ready" | "timeout" | "interrupted" */
static int n_wait(lua_State *L) {
  synchro_notifier_t *n = self_notifier(L);
  double timeout = luaL_optnumber(L, 2, SYNCHRO_WAIT_FOREVER);
  int rc;
  if (synchro__load(&n->completed) != NULL) {
    lua_pushliteral(L, "ready");
    return 1;
  }
  rc = synchro__event_wait(&n->ready, timeout, synchro__interrupted, L,
                           &n->spin);
  if (rc == UV_EINTR)
    synchro__clear_interrupt(L);
  lua_pushstring(L, rc == 0 ? "ready"
                            : rc == UV_EINTR ? "interrupted" : "timeout");
  return 1;
}

static void on_notify(uv_async_t *handle) {
  synchro_t *S = handle->data;
  lua_State *L = S->L;
  if (L == NULL)
    return;
  lua_getfield(L, LUA_REGISTRYINDEX, "synchro.loop_notify");
  if (lua_pcall(L, 0, 0, 0) != 0) {
    fprintf(stderr, "synchro: error in the loop's notifier: %s\n",
            lua_tostring(L, -1));
    lua_pop(L, 1);
  }
}

/* core.loop_notifier(fn) -> notifier: completed calls that this loop's
 * tasks await (futures of other synchronizers) are collected there, and
 * fn() runs on the loop to take them. Once per loop. */
static int loop_notifier(lua_State *L) {
  synchro_t *S = synchro__loop_of(L);
  synchro_notifier_t *n;
  luaL_checktype(L, 1, LUA_TFUNCTION);
  if (S->loop_notifier != NULL)
    return luaL_error(L, "this loop has its notifier already");
  n = synchro__notifier_new();
  if (n == NULL)
    return luaL_error(L, "not enough memory");
  uv_async_init(&S->loop, &S->notify_async, on_notify);
  S->notify_async.data = S;
  synchro__notifier_use_async(n, &S->notify_async);
  S->loop_notifier = n; /* holds the first reference */
  lua_pushvalue(L, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, "synchro.loop_notify");
  synchro__push_notifier(L, n);
  return 1;
}

/* Gives the new metatable on top its __index methods and __gc, each with
 * the metatable as upvalue 1 (for synchro__check_udata_up). */
static void set_methods(lua_State *L, const luaL_Reg *methods,
                        lua_CFunction gc) {
  lua_newtable(L);
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, methods, 1);
  lua_setfield(L, -2, "__index");
  lua_pushvalue(L, -1);
  lua_pushcclosure(L, gc, 1);
  lua_setfield(L, -2, "__gc");
}

void synchro__future_register(lua_State *L) {
  static const luaL_Reg fmethods[] = {
      {"wait", f_wait},     {"done", f_done},     {"outcome", f_outcome},
      {"status", f_status}, {"cancel", f_cancel}, {"key", f_key},
      {"listen", f_listen}, {"pollfd", f_pollfd},   {"events", f_events},
      {"timeout", f_timeout}, {"spin", f_spin}, {NULL, NULL}};
  static const luaL_Reg nmethods[] = {
      {"take", n_take}, {"wait", n_wait}, {"pollfd", n_pollfd}, {NULL, NULL}};
  if (luaL_newmetatable(L, SYNCHRO_FUTURE_MT))
    set_methods(L, fmethods, f_gc);
  lua_getfield(L, -1, "__index");
  lua_setfield(L, -3, "Future"); /* core.Future: methods, for Lua to extend */
  lua_pop(L, 1);
  if (luaL_newmetatable(L, SYNCHRO_NOTIFIER_MT))
    set_methods(L, nmethods, n_gc);
  lua_pop(L, 1);
  lua_pushcfunction(L, n_new);
  lua_setfield(L, -2, "notifier");
  lua_pushcfunction(L, loop_notifier);
  lua_setfield(L, -2, "loop_notifier");
  lua_pushcfunction(L, l_deadline);
  lua_setfield(L, -2, "deadline");
}
