/* The Lua binding (module synchro.core): argument checks and conversions
 * only; the policy lives in the Lua modules under lua/synchro. */
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "binding.h"

#define S_MT "synchro.Synchronizer"
#define DEFAULT_GRACE 5.0

typedef struct {
  synchro_t *S;
  int imported; /* collecting it drops a reference but does not close */
} S_box_t;

/* For core's functions, which have the Synchronizer's metatable as
 * upvalue 1 (synchro__lua_open). */
static synchro_t *check_S(lua_State *L, int idx) {
  S_box_t *box = synchro__check_udata_up(L, idx, S_MT, 1);
  if (box->S == NULL)
    luaL_argerror(L, idx, "synchronizer was released");
  return box->S;
}

/* The state's main thread: the standalone interpreter sets its Ctrl-C hook
 * there (5.1 has no registry slot for it: luaopen noted it). */
static lua_State *main_thread(lua_State *L) {
  lua_State *main;
#if LUA_VERSION_NUM >= 502
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
#else
  lua_getfield(L, LUA_REGISTRYINDEX, "synchro.main");
#endif
  main = lua_tothread(L, -1);
  lua_pop(L, 1);
  return main != NULL ? main : L;
}

int synchro__interrupted(void *ud) {
  lua_State *main = main_thread(ud);
  int mask = lua_gethookmask(main);
  int want = LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT;
  /* lua.c's SIGINT handler sets a hook with these events and count 1. */
  return lua_gethook(main) != NULL && (mask & want) == want &&
         lua_gethookcount(main) == 1;
}

void synchro__clear_interrupt(lua_State *L) {
  /* The interpreter's hook would fire again in our caller's cleanup; we
   * raise its error ourselves once the remote cleanup has finished. */
  lua_sethook(main_thread(L), NULL, 0, 0);
}

int synchro__raise_interrupted(lua_State *L) {
  synchro__clear_interrupt(L);
  lua_pushliteral(L, "interrupted!");
  return lua_error(L);
}

/* Pushes the position of the user's frame ("file:line: " or ""): the
 * first frame outside synchro's own code, as check.lua finds it (its
 * where(), kept in the registry), since synchro's C functions are called
 * through synchro's Lua; where that is not loaded, the caller's. */
static void push_user_where(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, "synchro.user_where");
  if (lua_isfunction(L, -1)) {
    lua_call(L, 0, 1);
    if (lua_type(L, -1) == LUA_TSTRING)
      return;
  }
  lua_pop(L, 1);
  luaL_where(L, 1);
}

/* Raises the formatted message at the user's line (see push_user_where):
 * misuse and closed synchronizers, the errors about how synchro was
 * called. */
static int raise_at_user(lua_State *L, const char *fmt, ...) {
  va_list ap;
  push_user_where(L);
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_concat(L, 2);
  return lua_error(L);
}

static int raise_closed(lua_State *L, synchro_t *S) {
  if (S->forked)
    return raise_at_user(L, "ECLOSED: synchronizer '%s' belongs to the parent "
                         "process (it ran before fork())", S->name);
  if (S->start_message != NULL)
    return raise_at_user(L, "ETHREAD: synchronizer '%s' failed to start: %s",
                      S->name, S->start_message);
  if (synchro__load(&S->state) == SYNCHRO_STATE_CLOSED &&
      S->death_message != NULL)
    return raise_at_user(L, "ECLOSED: the loop thread of synchronizer '%s' "
                         "died: %s", S->name, S->death_message);
  return raise_at_user(L, "ECLOSED: synchronizer '%s' is closed", S->name);
}

/* Finds a local or upvalue of the function running at level that holds
 * the value at index self (absolute); returns its name or NULL. */
static const char *name_in_frame(lua_State *L, int level, int self) {
  lua_Debug ar;
  const char *name;
  int i;
  if (!lua_getstack(L, level, &ar))
    return NULL;
  for (i = 1; (name = lua_getlocal(L, &ar, i)) != NULL; i++) {
    int same = lua_rawequal(L, -1, self);
    lua_pop(L, 1);
    if (same && name[0] != '(' && strcmp(name, "self") != 0)
      return name;
  }
  if (!lua_getinfo(L, "f", &ar))
    return NULL;
  for (i = 1; (name = lua_getupvalue(L, -1, i)) != NULL; i++) {
    int same = lua_rawequal(L, -1, self);
    lua_pop(L, 1);
    if (same) {
      lua_pop(L, 1);
      return name;
    }
  }
  lua_pop(L, 1);
  return NULL;
}

/* The name a wrapped function was called by, for error messages (error
 * path only): the name a wrapper gave it (_argname: synchro's to_thread,
 * offload...), else the variable holding it in the calling frame, else
 * the name Lua gives the frame, else the wrapped function's own name.
 * self is the wrapped function's table, or 0. */
static const char *caller_name(lua_State *L, int self) {
  lua_Debug ar;
  const char *name = NULL;
  int level;
  if (self != 0) { /* a wrapper's own name for what it wraps */
    lua_getfield(L, self, "_argname");
    name = lua_tostring(L, -1); /* kept alive by the table */
    lua_pop(L, 1);
  }
  for (level = 1; self != 0 && level <= 2 && name == NULL; level++)
    name = name_in_frame(L, level, self);
  if (name == NULL && lua_getstack(L, 1, &ar) && lua_getinfo(L, "n", &ar) &&
      ar.name != NULL && strcmp(ar.name, "?") != 0 &&
      strcmp(ar.name, "__call") != 0)
    name = ar.name;
  if (name == NULL && self != 0) {
    lua_getfield(L, self, "_name");
    name = lua_tostring(L, -1); /* kept alive by the table */
    lua_pop(L, 1);
  }
  return name != NULL ? name : "?";
}

/* Raises "bad argument #bad to 'name' (msg at the top)" at the user's
 * line. self: see caller_name; its _argshift renumbers the argument for a
 * wrapper that adds or drops some before it. */
static int raise_bad_arg(lua_State *L, int bad, int self) {
  int msg = lua_gettop(L), shift = 0;
  const char *name;
  if (self != 0) {
    lua_getfield(L, self, "_argshift");
    shift = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
  }
  if (shift != 0) { /* the encoder's path "args[bad]..." too */
    size_t len;
    const char *text = lua_tostring(L, msg), *rest;
    lua_pushfstring(L, "args[%d]", bad);
    len = lua_rawlen(L, -1);
    rest = strncmp(text, lua_tostring(L, -1), len) == 0 ? text + len : NULL;
    lua_pop(L, 1);
    if (rest != NULL) {
      lua_pushfstring(L, "args[%d]%s", bad + shift, rest);
      lua_replace(L, msg);
    }
    bad += shift;
  }
  name = caller_name(L, self);
  return raise_at_user(L, "bad argument #%d to '%s' (%s)", bad, name,
                       lua_tostring(L, msg));
}

/* Encodes call arguments L[first..top]; raises "bad argument" on failure.
 * named: the target's table (see caller_name), or 0. */
static void encode_args(lua_State *L, int first, int named,
                        synchro_call_t *call) {
  int bad = 0, n = lua_gettop(L) - first + 1;
  /* PROXY: functions become callbacks (the exporter of init.lua) */
  if (synchro__marshal_encode(L, first, n, SYNCHRO_MARSHAL_PROXY, "args",
                              &call->args, &bad) != 0) {
    synchro__call_unref(call);
    raise_bad_arg(L, bad, named);
  }
}

/* Creates and sends a call of S's function id with the arguments from
 * stack slot first on. Raises on misuse. */
/* Callbacks exported by the last encode: moves their list to the top of
 * the stack (a table, maybe empty) and starts a new one. */
static int take_callbacks(lua_State *L) {
  int n;
  if (!synchro__callbacks_exported()) {
    lua_pushnil(L);
    return 0;
  }
  lua_getfield(L, LUA_REGISTRYINDEX, "synchro.cb_pending");
  if (lua_type(L, -1) != LUA_TTABLE)
    return 0;
  n = (int)lua_rawlen(L, -1);
  if (n > 0) {
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "synchro.cb_pending");
  }
  return n;
}

/* Forgets the callbacks in the list on top of the stack (popped). */
static void release_callbacks(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, "synchro.cb_release");
  lua_insert(L, -2);
  lua_call(L, 1, 0);
}

/* What a call runs, from the argument that selects it (at idx): a
 * function id (op CALL), or a table with _id and _op (an op of
 * SYNCHRO_OP_MAP; no _op means CALL), as wrapped functions are. */
static lua_Integer check_target(lua_State *L, int idx, int *op) {
  lua_Integer id;
  if (lua_type(L, idx) != LUA_TTABLE) {
    *op = SYNCHRO_OP_CALL;
    return luaL_checkinteger(L, idx);
  }
  lua_getfield(L, idx, "_op");
  lua_getfield(L, idx, "_id");
  *op = (int)luaL_optinteger(L, -2, SYNCHRO_OP_CALL);
  if (*op < 0 || *op >= SYNCHRO_OP_COUNT)
    luaL_argerror(L, idx, "unknown op");
  id = luaL_optinteger(L, -1, 0);
  lua_pop(L, 2);
  return id;
}

/* Makes a call of op on id with the arguments from stack slot first on,
 * not sent yet. Raises on misuse. */
static synchro_call_t *prepare(lua_State *L, synchro_t *S, int op,
                               lua_Integer id, int first, int named) {
  synchro_call_t *call;
  int err = synchro__start(S);
  if (err != 0)
    raise_closed(L, S);
  call = synchro__call_new(S, op, (int64_t)id);
  if (call == NULL)
    luaL_error(L, "not enough memory");
  encode_args(L, first, named, call);
  return call;
}

/* A submit (the target at 2, arguments from 3). cbs: whether function
 * arguments (callbacks) are allowed. */
static synchro_call_t *submit(lua_State *L, synchro_t *S, int op,
                              lua_Integer id, int cbs) {
  synchro_call_t *call =
      prepare(L, S, op, id, 3, lua_type(L, 2) == LUA_TTABLE ? 2 : 0);
  synchro_call_t *sent;
  if (!cbs && take_callbacks(L) > 0) {
    release_callbacks(L);
    synchro__call_unref(call);
    raise_at_user(L, "a function argument (a callback) can be passed to a "
                  "blocking call, or inside synchro.run, but not to "
                  ".future");
  }
  sent = call;
  synchro__call_ref(sent); /* the loop's */
  if (synchro__send(S, &sent->msg) != 0) {
    synchro__call_unref(sent);
    synchro__call_unref(sent);
    raise_closed(L, S);
  }
  return call;
}

/* core.new(name, path, cpath) -> synchronizer */
static int l_new(lua_State *L) {
  const char *name = luaL_optstring(L, 1, "synchro");
  const char *path = luaL_optstring(L, 2, NULL);
  const char *cpath = luaL_optstring(L, 3, NULL);
  double grace = synchro__opt_time(L, 4, "new", "grace", DEFAULT_GRACE);
  S_box_t *box;
  if (grace == SYNCHRO_NO_LIMIT)
    grace = SYNCHRO_TIME_MAX; /* close waits for cleanup as long as it takes */
  box = lua_newuserdata(L, sizeof(*box));
  box->S = NULL;
  luaL_setmetatable(L, S_MT);
  box->imported = 0;
  box->S = synchro__new(name, path, cpath, &synchro__vm, synchro__lua_open);
  if (box->S == NULL)
    return luaL_error(L, "not enough memory");
  box->S->grace = grace;
  return 1;
}

/* Pushes a synchronizer object that takes over a reference to S made by
 * an export: collecting it drops the reference without closing S. */
static void push_imported(lua_State *L, synchro_t *S) {
  S_box_t *box = lua_newuserdata(L, sizeof(*box));
  box->S = NULL;
  luaL_setmetatable(L, S_MT);
  box->S = S;
  box->imported = 1;
}

/* core.export(S) -> integer: a handle holding a reference to S, for
 * another Lua state (another thread's). core.import takes it over, once. */
static int l_export(lua_State *L) {
  synchro_t *S = check_S(L, 1);
  int64_t h;
  synchro__ref(S);
  h = synchro__handle_new(SYNCHRO_HANDLE_EXPORT, S, NULL);
  if (h == 0) {
    synchro__unref(S);
    return luaL_error(L, "not enough memory");
  }
  lua_pushinteger(L, (lua_Integer)h);
  return 1;
}

/* core.import(ref) -> synchronizer: takes over the reference of a handle
 * from core.export (which is then spent). */
static int l_import(lua_State *L) {
  synchro_t *S = synchro__handle_take(luaL_checkinteger(L, 1),
                                      SYNCHRO_HANDLE_EXPORT);
  if (S == NULL)
    return luaL_argerror(L, 1, "not a reference from S:export() (or "
                               "imported already: import each once)");
  push_imported(L, S);
  return 1;
}

/* core.synchronizer(identity) -> the synchronizer core.identity named (a
 * new reference), for a payload that names it; raises if it is gone. */
static int l_synchronizer(lua_State *L) {
  synchro_t *S = synchro__handle_acquire(luaL_checkinteger(L, 1),
                                         SYNCHRO_HANDLE_SYNCHRONIZER);
  if (S == NULL)
    return luaL_argerror(L, 1, "no such synchronizer (made up, or gone)");
  push_imported(L, S);
  return 1;
}

/* core.post(S, op, id, ...) -> boolean: sends an op that nobody waits
 * for (a release, say) with plain-data arguments, without starting the
 * loop; false when S is closed or released. Never raises for those, never
 * blocks, leaves the callbacks of a call being encoded alone: safe in
 * __gc. */
static int l_post(lua_State *L) {
  S_box_t *box = synchro__check_udata(L, 1, S_MT);
  int op = (int)luaL_checkinteger(L, 2);
  lua_Integer id = luaL_checkinteger(L, 3);
  synchro_call_t *call;
  int sent;
  luaL_argcheck(L, op >= 0 && op < SYNCHRO_OP_COUNT, 2, "unknown op");
  if (box->S == NULL ||
      synchro__load(&box->S->state) >= SYNCHRO_STATE_CLOSING) {
    lua_pushboolean(L, 0);
    return 1;
  }
  call = synchro__call_new(box->S, op, (int64_t)id);
  if (call == NULL)
    return luaL_error(L, "not enough memory");
  if (synchro__marshal_encode(L, 4, lua_gettop(L) - 3, SYNCHRO_MARSHAL_DATA,
                              "args", &call->args, NULL) != 0) {
    synchro__call_unref(call);
    return raise_at_user(L, "bad argument to 'post' (%s)", lua_tostring(L, -1));
  }
  synchro__call_ref(call); /* the loop's */
  sent = synchro__send(box->S, &call->msg) == 0;
  if (!sent)
    synchro__call_unref(call);
  synchro__call_unref(call);
  lua_pushboolean(L, sent);
  return 1;
}

/* S:close([grace]). The box keeps its reference until collected, so that
 * later calls can say which synchronizer is closed. */
static int l_close(lua_State *L) {
  synchro_t *S = check_S(L, 1);
  double grace = synchro__opt_time(L, 2, "close", "grace", S->grace);
  synchro__close(S, grace == SYNCHRO_NO_LIMIT ? SYNCHRO_TIME_MAX : grace);
  return 0;
}

static int l_gc(lua_State *L) {
  S_box_t *box = synchro__check_udata(L, 1, S_MT);
  if (box->S != NULL) {
    if (!box->imported)
      synchro__close(box->S, box->S->grace);
    synchro__unref(box->S);
    box->S = NULL;
  }
  return 0;
}

/* core.set_slow(S, seconds): the slow-task warning's threshold; 0 is
 * off (see src/vm/watch.c). */
static int l_set_slow(lua_State *L) {
  synchro_t *S = check_S(L, 1);
  double sec = luaL_checknumber(L, 2);
  uint64_t ns = sec > 0 ? (sec < 1e9 ? (uint64_t)(sec * 1e9) : UINT64_MAX) : 0;
  __atomic_store_n(&S->slow_ns, ns, __ATOMIC_RELAXED);
  return 0;
}

/* core.state(S) -> "new" | "running" | "closing" | "closed" */
static int l_state(lua_State *L) {
  static const char *const names[] = {"new", "running", "closing", "closed"};
  S_box_t *box = synchro__check_udata(L, 1, S_MT);
  lua_pushstring(L, box->S == NULL ? "closed"
                                   : names[synchro__load(&box->S->state)]);
  return 1;
}

/* core.identity(S) -> integer naming S uniquely in this process (its
 * handle: see core.synchronizer) */
static int l_identity(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)check_S(L, 1)->handle);
  return 1;
}

/* core.loop_identity() -> the identity of the synchronizer whose loop runs
 * this VM, or nil */
static int l_loop_identity(lua_State *L) {
  synchro_t *S = synchro__current();
  if (S == NULL || S->L == NULL)
    return 0;
  lua_pushinteger(L, (lua_Integer)S->handle);
  return 1;
}

/* core.define(S, fn) -> id: sends fn's code to the loop. */
static int l_define(lua_State *L) {
  synchro_t *S = check_S(L, 1);
  synchro_define_t *def;
  int64_t id;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (synchro__load(&S->state) >= SYNCHRO_STATE_CLOSING)
    return raise_closed(L, S);
  def = calloc(1, sizeof(*def));
  if (def == NULL)
    return luaL_error(L, "not enough memory");
  def->msg.kind = SYNCHRO_MSG_DEFINE;
  if (synchro__marshal_encode(L, 2, 1, SYNCHRO_MARSHAL_CODE, "fn", &def->code,
                              NULL) != 0) {
    synchro__buf_free(&def->code);
    free(def);
    return raise_at_user(L, "bad argument #1 to 'wrap' (%s)",
                      lua_tostring(L, -1));
  }
  id = __atomic_fetch_add(&S->next_fn_id, 1, __ATOMIC_RELAXED);
  def->fn_id = id;
  /* Once sent, def belongs to the loop thread. */
  if (synchro__send(S, &def->msg) != 0) {
    synchro__buf_free(&def->code);
    free(def);
    return raise_closed(L, S);
  }
  lua_pushinteger(L, (lua_Integer)id);
  return 1;
}

/* A cancelled call's error: an instance { message = msg } of the class
 * synchro.sched registered (core.set_cancelled_class), which is what
 * synchro.is_cancelled recognises; the bare message if there is none. */
static int push_cancelled(lua_State *L, const char *msg) {
  lua_getfield(L, LUA_REGISTRYINDEX, "synchro.Cancelled");
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    lua_pushstring(L, msg);
    return -1;
  }
  lua_createtable(L, 0, 1);
  lua_pushstring(L, msg);
  lua_setfield(L, -2, "message");
  lua_insert(L, -2);
  lua_setmetatable(L, -2);
  return -1;
}

/* core.set_cancelled_class(mt): the metatable of cancellation errors. */
static int l_set_cancelled_class(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, "synchro.Cancelled");
  return 0;
}

/* Pushes the results of a completed call and returns their count, or
 * pushes the error value and returns -1. */
static int reply_or_error(lua_State *L, synchro_call_t *call) {
  int n;
  switch (call->status) {
  case SYNCHRO_CALL_OK:
    n = synchro__marshal_decode(L, call->reply.data, call->reply.len);
    return n < 0 ? -1 : n;
  case SYNCHRO_CALL_ERROR:
    n = synchro__marshal_decode(L, call->reply.data, call->reply.len);
    if (n < 0)
      return -1;
    lua_settop(L, lua_gettop(L) - n + 2); /* exactly (error, traceback) */
    if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING &&
        lua_rawlen(L, -1) > 0) {
      lua_pushliteral(L, "\n");
      lua_insert(L, -2);
      lua_concat(L, 3);
    } else if (lua_type(L, -2) == LUA_TTABLE) {
      /* synchro.traceback(err) finds it */
      lua_getfield(L, LUA_REGISTRYINDEX, "synchro.tracebacks");
      lua_pushvalue(L, -3);
      lua_pushvalue(L, -3);
      lua_rawset(L, -3);
      lua_pop(L, 2);
    } else {
      lua_pop(L, 1);
    }
    return -1;
  case SYNCHRO_CALL_TIMEDOUT:
    /* a timeout is an outcome, as from a blocking call: nil, msg, code */
    lua_pushnil(L);
    lua_pushliteral(L, "ETIMEDOUT: the call timed out");
    lua_pushliteral(L, "ETIMEDOUT");
    return 3;
  case SYNCHRO_CALL_CANCELLED:
    return push_cancelled(L, "ECANCELED: the call was cancelled");
  case SYNCHRO_CALL_DIED:
    lua_pushfstring(L, "ECANCELED: the loop thread of synchronizer '%s' "
                       "died: %s", call->S->name, call->S->death_message);
    n = push_cancelled(L, lua_tostring(L, -1));
    lua_remove(L, -2);
    return n;
  default:
    return push_cancelled(L, "ECANCELED: the synchronizer closed before the "
                             "call finished");
  }
}

int synchro__push_reply(lua_State *L, synchro_call_t *call) {
  int n = reply_or_error(L, call);
  if (n < 0)
    return lua_error(L);
  return n;
}

/* How a blocking call waits when no callback can come: parked, polling
 * the interpreter's Ctrl-C flag. */
static int wait_interruptible(synchro_call_t *call, double timeout,
                              void *L) {
  return synchro__event_wait(&call->done, timeout, synchro__interrupted, L,
                             &call->S->call_spin);
}

static int wait_servicing(synchro_call_t *call, double timeout, void *L) {
  return synchro__wait_servicing(L, call, timeout);
}

/* l_call's upvalues: the keys it reads from its target table (own
 * fields, read raw: no string is made per call), and the Synchronizer's
 * metatable (its _ud is checked by identity). */
enum { UP_UD = 1, UP_OP, UP_ID, UP_TIMEOUT, UP_SMT, UP_COUNT = UP_SMT };

static void raw_field(lua_State *L, int t, int key) {
  lua_pushvalue(L, lua_upvalueindex(key));
  lua_rawget(L, t);
}

/* core.call(wrapped, ...) -> results: the blocking call. wrapped is the
 * wrapped function's table: _ud (the synchronizer), _op (nil: a call of
 * function _id), _id, _timeout (already normalised by S:wrap; nil for no
 * limit). */
static int l_call(lua_State *L) {
  synchro_t *S;
  S_box_t *box;
  lua_Integer id = 0;
  double timeout = SYNCHRO_NO_LIMIT;
  int n, rc, ncb, op = SYNCHRO_OP_CALL, top = lua_gettop(L);
  synchro_call_t *call;
  luaL_checktype(L, 1, LUA_TTABLE);
  raw_field(L, 1, UP_UD); /* the table keeps it alive */
  box = synchro__test_udata_up(L, top + 1, S_MT, UP_SMT);
  if (box == NULL)
    return luaL_argerror(L, 1, "a wrapped function (its synchronizer is "
                               "missing)");
  if (box->S == NULL)
    return luaL_argerror(L, 1, "synchronizer was released");
  S = box->S;
  raw_field(L, 1, UP_OP);
  raw_field(L, 1, UP_ID);
  raw_field(L, 1, UP_TIMEOUT);
  if (!lua_isnil(L, -3)) {
    op = (int)luaL_checkinteger(L, -3);
    if (op < 0 || op >= SYNCHRO_OP_COUNT)
      luaL_argerror(L, 1, "unknown op");
  }
  if (!lua_isnil(L, -2))
    id = luaL_checkinteger(L, -2);
  if (!lua_isnil(L, -1))
    timeout = synchro__opt_time(L, top + 4, "call", "timeout",
                                SYNCHRO_NO_LIMIT);
  lua_settop(L, top);
  if (synchro__is_loop_thread(S))
    return raise_at_user(L, "a blocking call cannot run on its own "
                         "synchronizer's loop thread");
  call = prepare(L, S, op, id, 2, 1);
  /* Callbacks: serve them from before the call is sent, so that a task
   * that calls one at once finds us (the list stays on the stack). */
  ncb = take_callbacks(L);
  if (ncb > 0)
    synchro__inbox_enter(L);
  synchro__call_ref(call); /* the loop's */
  if (synchro__send(S, &call->msg) != 0) {
    if (ncb > 0) {
      synchro__inbox_leave(L);
      release_callbacks(L);
    }
    synchro__call_unref(call);
    synchro__call_unref(call);
    return raise_closed(L, S);
  }
  if (timeout >= 0)
    synchro__deadline_add(call, timeout);
  rc = synchro__call_await(call, timeout,
                           ncb > 0 ? wait_servicing : wait_interruptible, L);
  if (ncb > 0) {
    synchro__inbox_leave(L);
    release_callbacks(L);
  }
  lua_settop(L, top);
  if (rc == UV_EINTR) {
    synchro__call_unref(call);
    return synchro__raise_interrupted(L);
  }
  if (rc != 0 || call->status == SYNCHRO_CALL_TIMEDOUT) {
    synchro__call_unref(call);
    lua_pushnil(L);
    lua_pushfstring(L, "ETIMEDOUT: '%s' timed out after %f s",
                    caller_name(L, 1), timeout);
    lua_pushliteral(L, "ETIMEDOUT");
    return 3;
  }
  n = reply_or_error(L, call);
  synchro__call_unref(call);
  if (n < 0)
    return lua_error(L);
  return n;
}

/* core.submit(S, id, ...) -> future */
static int l_submit(lua_State *L);

/* core.submit_cb(S, id, ...) -> future, callbacks: a submit whose
 * arguments may hold functions; the caller's scheduler runs them and
 * releases the list (a table, or nil) once the call is done. */
static int l_submit_cb(lua_State *L) {
  synchro_t *S = check_S(L, 1);
  int op;
  lua_Integer id = check_target(L, 2, &op);
  synchro_call_t *call = submit(L, S, op, id, 1);
  synchro__push_future(L, call);
  synchro__call_unref(call);
  if (take_callbacks(L) == 0) {
    lua_pop(L, 1);
    return 1;
  }
  return 2;
}

static int l_traceback(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, "synchro.tracebacks");
  lua_pushvalue(L, 1);
  lua_rawget(L, -2);
  return 1;
}

/* Loop threads and the exit handler run this module's code after the Lua
 * state that loaded it may have unloaded it (lua_close dlcloses C
 * modules): pin it in memory for the life of the process. */
static void pin_module(void) {
#ifdef RTLD_NODELETE
  static int pinned;
  Dl_info info;
  if (synchro__xchg(&pinned, 1))
    return;
  if (dladdr(&pinned, &info) && info.dli_fname != NULL)
    dlopen(info.dli_fname, RTLD_NOW | RTLD_NODELETE);
#endif
}

/* core.OP_<NAME> = op, for each op of SYNCHRO_OP_MAP */
static void register_ops(lua_State *L) {
#define SYNCHRO_OP_NAME(name) "OP_" #name,
  static const char *const names[] = {SYNCHRO_OP_MAP(SYNCHRO_OP_NAME)};
#undef SYNCHRO_OP_NAME
  int op;
  for (op = 0; op < SYNCHRO_OP_COUNT; op++) {
    lua_pushinteger(L, op);
    lua_setfield(L, -2, names[op]);
  }
}

int synchro__lua_open(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"new", l_new},           {"close", l_close},
      {"state", l_state},       {"identity", l_identity},
      {"set_slow", l_set_slow},
      {"loop_identity", l_loop_identity},
      {"define", l_define},
      {"submit", l_submit},     {"traceback", l_traceback},
      {"export", l_export},     {"import", l_import},
      {"submit_cb", l_submit_cb},
      {"set_cancelled_class", l_set_cancelled_class},
      {"synchronizer", l_synchronizer},
      {"post", l_post},
      {NULL, NULL}};
  if (luaL_newmetatable(L, S_MT)) {
    lua_pushcfunction(L, l_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushliteral(L, "Synchronizer");
    lua_setfield(L, -2, "__name");
  }
  lua_pop(L, 1);
  lua_getfield(L, LUA_REGISTRYINDEX, "synchro.tracebacks");
  if (lua_isnil(L, -1)) {
    lua_newtable(L);
    lua_newtable(L);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, "synchro.tracebacks");
  }
  lua_pop(L, 1);
#if LUA_VERSION_NUM < 502
  lua_getfield(L, LUA_REGISTRYINDEX, "synchro.main");
  if (lua_isnil(L, -1)) {
    lua_pushthread(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "synchro.main");
  }
  lua_pop(L, 1);
#endif
  pin_module();
  luaL_newlibtable(L, funcs);
  luaL_getmetatable(L, S_MT);
  luaL_setfuncs(L, funcs, 1); /* check_S's upvalue */
  lua_pushliteral(L, "_ud");
  lua_pushliteral(L, "_op");
  lua_pushliteral(L, "_id");
  lua_pushliteral(L, "_timeout");
  luaL_getmetatable(L, S_MT);
  lua_pushcclosure(L, l_call, UP_COUNT);
  lua_setfield(L, -2, "call");
  register_ops(L);
  synchro__timer_register(L);
  synchro__vmaux_register(L);
  synchro__fs_register(L);
  synchro__tcp_register(L);
  synchro__udp_register(L);
  synchro__dns_register(L);
  synchro__process_register(L);
  synchro__workers_register(L);
  synchro__pg_register(L);
  synchro__poll_register(L);
  synchro__http_register(L);
  synchro__signal_register(L);
  synchro__fswatch_register(L);
  synchro__tls_register(L);
  synchro__request_register(L);
  synchro__callbacks_register(L);
  synchro__future_register(L);
  return 1;
}

/* PUC Lua 5.1 and LuaJIT share one C API, so a module built for one loads
 * into the other and then misbehaves (upvalue identity differs): refuse
 * that here, where the interpreter first meets the module. */
static void check_interpreter(lua_State *L) {
  int jit;
  lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
  lua_getfield(L, -1, "jit");
  jit = lua_istable(L, -1);
  lua_pop(L, 2);
#ifdef SYNCHRO_LUAJIT
  if (!jit)
    luaL_error(L, "synchro.core was built for LuaJIT but is loaded into "
                  "PUC Lua; build synchro for this interpreter");
#else
  if (jit)
    luaL_error(L, "synchro.core was built for PUC " LUA_VERSION
                  " but is loaded into LuaJIT; build the LuaJIT variant "
                  "(luarocks --lua-version=5.1: LUA=/usr/bin/luajit; "
                  "cmake: -DSYNCHRO_LUA=luajit)");
#endif
}

SYNCHRO_API int luaopen_synchro_core(lua_State *L);
SYNCHRO_API int luaopen_synchro_core(lua_State *L) {
  check_interpreter(L);
  return synchro__lua_open(L);
}

static int l_submit(lua_State *L) {
  synchro_t *S = check_S(L, 1);
  int op;
  lua_Integer id = check_target(L, 2, &op);
  synchro_call_t *call = submit(L, S, op, id, 0);
  synchro_call_t **box = lua_newuserdata(L, sizeof(*box));
  *box = call;
  luaL_setmetatable(L, SYNCHRO_FUTURE_MT);
  return 1;
}
