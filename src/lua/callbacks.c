/* Callbacks: a function of the caller's VM passed to a blocking call
 * crosses as a proxy. When the loop's task calls it, a reverse call goes
 * to the caller VM's inbox, where the waiting caller runs the function
 * and replies; the task awaits the reply through its loop's notifier. */
#include <string.h>

#include "binding.h"

#define INBOX_KEY "synchro.inbox"
#define RETURNED_MSG                                                         \
  "callback called after the call that passed it returned"

/* This VM's inbox, made on first use (kept in the registry). */
static synchro_notifier_t *inbox_of(lua_State *L) {
  synchro_notifier_t *n;
  lua_getfield(L, LUA_REGISTRYINDEX, INBOX_KEY);
  if (lua_type(L, -1) == LUA_TUSERDATA) {
    n = *(synchro_notifier_t **)lua_touserdata(L, -1);
    lua_pop(L, 1);
    return n;
  }
  lua_pop(L, 1);
  n = synchro__notifier_new();
  if (n == NULL)
    luaL_error(L, "not enough memory");
  n->handle = synchro__handle_new(SYNCHRO_HANDLE_INBOX, n, &n->refs);
  if (n->handle == 0) {
    synchro__notifier_unref(n);
    luaL_error(L, "not enough memory");
  }
  synchro__push_notifier(L, n); /* the registry's reference */
  synchro__notifier_unref(n);
  lua_setfield(L, LUA_REGISTRYINDEX, INBOX_KEY);
  return n;
}

/* An inbox that core.inbox_open gave (a Notifier object: future.c). */
static synchro_notifier_t *check_inbox(lua_State *L, int idx) {
  synchro_notifier_t **box = synchro__check_udata(L, idx, SYNCHRO_NOTIFIER_MT);
  if (*box == NULL)
    luaL_argerror(L, idx, "inbox was released");
  return *box;
}

/* Callbacks exported on this thread since the last check: lets a call
 * skip looking for callbacks when there were none (the usual case). */
static uv_key_t exported_key;
static uv_once_t exported_once = UV_ONCE_INIT;

static void exported_init(void) { uv_key_create(&exported_key); }

int synchro__callbacks_exported(void) {
  void *v;
  uv_once(&exported_once, exported_init);
  v = uv_key_get(&exported_key);
  if (v != NULL)
    uv_key_set(&exported_key, NULL);
  return v != NULL;
}

/* core.inbox_handle() -> the handle of this VM's inbox, for a callback's
 * payload (the exporter of proxy.lua); notes that callbacks were exported
 * on this thread. */
static int inbox_handle(lua_State *L) {
  synchro_notifier_t *n = inbox_of(L);
  uv_once(&exported_once, exported_init);
  uv_key_set(&exported_key, n);
  lua_pushinteger(L, (lua_Integer)n->handle);
  return 1;
}

/* core.inbox_open(handle) -> the inbox (a reference to it, dropped when
 * collected), for the loop side's callback proxy; raises if the handle is
 * made up or its VM has gone. */
static int inbox_open(lua_State *L) {
  synchro_notifier_t *n = synchro__handle_acquire(luaL_checkinteger(L, 1),
                                                  SYNCHRO_HANDLE_INBOX);
  if (n == NULL)
    return luaL_argerror(L, 1, "no such inbox (made up, or its VM is gone)");
  synchro__push_notifier(L, n);
  synchro__notifier_unref(n); /* the object holds its own reference */
  return 1;
}

/* Completes a reverse call with an error message. */
static void fail_reverse(synchro_call_t *call, const char *msg) {
  synchro_value_t error[2];
  error[0] = synchro_string(msg != NULL ? msg : "callback failed");
  error[1] = synchro_string("");
  call->reply.len = 0;
  synchro__capi_encode(&call->reply, NULL, error, 2);
  synchro__call_complete(call, SYNCHRO_CALL_ERROR);
}

/* core.rcall(inbox, cbid, ...) -> future: on a loop, calls callback cbid
 * of the VM whose inbox this is. */
static int rcall(lua_State *L) {
  synchro_t *S = synchro__loop_of(L);
  synchro_notifier_t *n = check_inbox(L, 1);
  lua_Integer cbid = luaL_checkinteger(L, 2);
  int bad = 0, open;
  synchro_call_t *call = synchro__call_new(S, SYNCHRO_OP_CALL, (int64_t)cbid);
  if (call == NULL)
    return luaL_error(L, "not enough memory");
  call->reverse = 1;
  if (synchro__marshal_encode(L, 3, lua_gettop(L) - 2, SYNCHRO_MARSHAL_PROXY,
                              "args", &call->args, &bad) != 0) {
    synchro__call_unref(call);
    return luaL_error(L, "bad argument #%d to callback (%s)", bad,
                      lua_tostring(L, -1));
  }
  uv_mutex_lock(&n->lock);
  open = n->waiters > 0;
  if (open)
    synchro__notifier_push(n, call);
  uv_mutex_unlock(&n->lock);
  if (!open) {
    synchro__call_unref(call);
    lua_pushliteral(L, RETURNED_MSG);
    return lua_error(L);
  }
  synchro__push_future(L, call);
  synchro__call_unref(call);
  return 1;
}

/* Runs a reverse call in L's VM (the caller's thread) and replies. */
static void run_callback(lua_State *L, synchro_call_t *call) {
  int top = lua_gettop(L), n, status = SYNCHRO_CALL_ERROR, bad = 0;
  lua_getfield(L, LUA_REGISTRYINDEX, "synchro.run_callback");
  lua_pushinteger(L, (lua_Integer)call->fn_id);
  n = synchro__marshal_decode(L, call->args.data, call->args.len);
  if (n < 0) {
    fail_reverse(call, lua_tostring(L, -1));
    lua_settop(L, top);
    return;
  }
  if (lua_pcall(L, 1 + n, LUA_MULTRET, 0) != 0) {
    fail_reverse(call, lua_tostring(L, -1));
    lua_settop(L, top);
    return;
  }
  call->reply.len = 0;
  if (lua_toboolean(L, top + 1)) {
    if (synchro__marshal_encode(L, top + 2, lua_gettop(L) - top - 1,
                                SYNCHRO_MARSHAL_DATA, "results", &call->reply,
                                &bad) == 0)
      status = SYNCHRO_CALL_OK;
    else
      lua_replace(L, top + 2); /* the message is the error */
  }
  if (status != SYNCHRO_CALL_OK) {
    lua_settop(L, top + 3); /* ok, error, traceback */
    call->reply.len = 0;
    synchro__marshal_encode(L, top + 2, 2, SYNCHRO_MARSHAL_LENIENT, "error",
                            &call->reply, NULL);
  }
  synchro__call_complete(call, status);
  lua_settop(L, top);
}

static void enter(synchro_notifier_t *n) {
  uv_mutex_lock(&n->lock);
  n->waiters++;
  uv_mutex_unlock(&n->lock);
}

/* The last one to leave refuses the callback calls still queued. */
static void leave(synchro_notifier_t *n) {
  synchro_call_t *item, *next;
  int last;
  uv_mutex_lock(&n->lock);
  last = --n->waiters == 0;
  uv_mutex_unlock(&n->lock);
  if (!last)
    return;
  for (item = synchro__notifier_take(n); item != NULL; item = next) {
    next = item->done_next;
    if (item->reverse && !synchro__event_is_set(&item->done))
      fail_reverse(item, RETURNED_MSG);
    synchro__call_unref(item);
  }
}

/* core.inbox() -> this VM's inbox (a notifier), for synchro.run */
static int l_inbox(lua_State *L) {
  inbox_of(L);
  lua_getfield(L, LUA_REGISTRYINDEX, INBOX_KEY);
  return 1;
}

/* core.inbox_enter() / core.inbox_leave(): a scheduler of this VM runs
 * callbacks from its inbox meanwhile (synchro.run) */
static int l_inbox_enter(lua_State *L) {
  enter(inbox_of(L));
  return 0;
}

static int l_inbox_leave(lua_State *L) {
  leave(inbox_of(L));
  return 0;
}

static synchro_call_t *check_reverse(lua_State *L) {
  synchro_call_t **box = synchro__check_udata(L, 1, SYNCHRO_FUTURE_MT);
  if (*box == NULL || !(*box)->reverse)
    luaL_argerror(L, 1, "callback call expected");
  return *box;
}

/* core.rargs(rcall) -> callback id, arguments... */
static int l_rargs(lua_State *L) {
  synchro_call_t *call = check_reverse(L);
  int n;
  lua_settop(L, 1);
  lua_pushinteger(L, (lua_Integer)call->fn_id);
  n = synchro__marshal_decode(L, call->args.data, call->args.len);
  if (n < 0)
    return lua_error(L);
  return 1 + n;
}

/* core.rreply(rcall, ok, ...): true and results, or false, error and
 * traceback; completes the callback call (once). */
static int l_rreply(lua_State *L) {
  synchro_call_t *call = check_reverse(L);
  int bad = 0, status = SYNCHRO_CALL_ERROR;
  if (synchro__event_is_set(&call->done))
    return luaL_error(L, "callback call already answered");
  call->reply.len = 0;
  if (lua_toboolean(L, 2)) {
    if (synchro__marshal_encode(L, 3, lua_gettop(L) - 2, SYNCHRO_MARSHAL_DATA,
                                "results", &call->reply, &bad) == 0)
      status = SYNCHRO_CALL_OK;
    else
      lua_replace(L, 3);
  }
  if (status != SYNCHRO_CALL_OK) {
    lua_settop(L, 4);
    call->reply.len = 0;
    synchro__marshal_encode(L, 3, 2, SYNCHRO_MARSHAL_LENIENT, "error",
                            &call->reply, NULL);
  }
  synchro__call_complete(call, status);
  return 0;
}

int synchro__wait_servicing(lua_State *L, synchro_call_t *call,
                            double timeout) {
  synchro_notifier_t *n = inbox_of(L);
  uint64_t deadline = synchro__deadline_ns(timeout);
  synchro_call_t *item, *next;
  int rc = 0;
  synchro__call_listen(call, n); /* its completion wakes us too */
  while (!synchro__event_is_set(&call->done)) {
    synchro__event_reset(&n->ready);
    item = synchro__notifier_take(n);
    if (item == NULL) {
      uint64_t now = synchro__now_ns();
      if (now >= deadline) {
        rc = SYNCHRO_ETIMEDOUT;
        break;
      }
      rc = synchro__event_wait(
          &n->ready, deadline == UINT64_MAX ? -1 : (deadline - now) / 1e9,
          synchro__interrupted, L, &n->spin);
      if (rc == UV_EINTR)
        break;
      rc = 0;
      continue;
    }
    for (; item != NULL; item = next) {
      next = item->done_next;
      if (item->reverse && !synchro__event_is_set(&item->done))
        run_callback(L, item);
      synchro__call_unref(item);
    }
  }
  return rc;
}

void synchro__inbox_enter(lua_State *L) { enter(inbox_of(L)); }

void synchro__inbox_leave(lua_State *L) { leave(inbox_of(L)); }

void synchro__callbacks_register(lua_State *L) {
  lua_pushcfunction(L, inbox_handle);
  lua_setfield(L, -2, "inbox_handle");
  lua_pushcfunction(L, inbox_open);
  lua_setfield(L, -2, "inbox_open");
  lua_pushcfunction(L, rcall);
  lua_setfield(L, -2, "rcall");
  lua_pushcfunction(L, l_inbox);
  lua_setfield(L, -2, "inbox");
  lua_pushcfunction(L, l_inbox_enter);
  lua_setfield(L, -2, "inbox_enter");
  lua_pushcfunction(L, l_inbox_leave);
  lua_setfield(L, -2, "inbox_leave");
  lua_pushcfunction(L, l_rargs);
  lua_setfield(L, -2, "rargs");
  lua_pushcfunction(L, l_rreply);
  lua_setfield(L, -2, "rreply");
}
