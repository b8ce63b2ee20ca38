/* The Lua binding (module synchro.core): argument checks and conversions
 * only; the policy lives in the Lua modules under lua/synchro. */
#include <dlfcn.h>
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

static synchro_t *check_S(lua_State *L, int idx) {
  S_box_t *box = luaL_checkudata(L, idx, S_MT);
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

static int raise_closed(lua_State *L, synchro_t *S) {
  if (S->forked)
    return luaL_error(L, "ECLOSED: synchronizer '%s' belongs to the parent "
                         "process (it ran before fork())", S->name);
  if (S->start_message != NULL)
    return luaL_error(L, "ETHREAD: synchronizer '%s' failed to start: %s",
                      S->name, S->start_message);
  return luaL_error(L, "ECLOSED: synchronizer '%s' is closed", S->name);
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
 * path only): the variable holding it in the calling frame, else the name
 * Lua gives the frame, else the wrapped function's own name. self is the
 * wrapped function's table, or 0. */
static const char *caller_name(lua_State *L, int self) {
  lua_Debug ar;
  const char *name = NULL;
  int level;
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

/* Encodes call arguments L[first..top]; raises "bad argument" on failure.
 * self: see caller_name. */
static void encode_args(lua_State *L, int first, int self,
                        synchro_call_t *call) {
  int bad = 0, n = lua_gettop(L) - first + 1;
  /* PROXY: functions become callbacks (the exporter of init.lua) */
  if (synchro__marshal_encode(L, first, n, SYNCHRO_MARSHAL_PROXY, "args",
                              &call->args, &bad) != 0) {
    synchro__call_unref(call);
    luaL_error(L, "bad argument #%d to '%s' (%s)", bad,
               caller_name(L, self), lua_tostring(L, -1));
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

/* Makes a call of S's function id with the arguments from stack slot
 * first on, not sent yet. Raises on misuse. */
static synchro_call_t *prepare(lua_State *L, synchro_t *S, lua_Integer id,
                               int first, int self) {
  synchro_call_t *call;
  int err = synchro__start(S);
  if (err != 0)
    raise_closed(L, S);
  call = synchro__call_new(S, (int64_t)id);
  if (call == NULL)
    luaL_error(L, "not enough memory");
  encode_args(L, first, self > 0 ? self : 0, call);
  return call;
}

static synchro_call_t *submit(lua_State *L, synchro_t *S, lua_Integer id,
                              int first, int self) {
  synchro_call_t *call = prepare(L, S, id, first, self);
  synchro_call_t *sent;
  if (self == 0 && take_callbacks(L) > 0) { /* (self -1 allows them) */
    release_callbacks(L);
    synchro__call_unref(call);
    luaL_error(L, "a function argument (a callback) can be passed to a "
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

/* core.export(S) -> light userdata: a reference to S for another Lua
 * state (another thread's). The receiver must core.import it exactly once,
 * which takes the reference over. */
static int l_export(lua_State *L) {
  synchro_t *S = check_S(L, 1);
  synchro__ref(S);
  lua_pushlightuserdata(L, S);
  return 1;
}

/* core.import(p) -> synchronizer: takes over the reference core.export
 * made. */
static int l_import(lua_State *L) {
  luaL_checktype(L, 1, LUA_TLIGHTUSERDATA);
  push_imported(L, lua_touserdata(L, 1));
  return 1;
}

/* core.export_string(S) -> a reference to S as text, for a marshalled
 * payload; the receiver must core.import_string it exactly once. */
static int l_export_string(lua_State *L) {
  synchro_t *S = check_S(L, 1);
  synchro__ref(S);
  lua_pushfstring(L, "%p", (void *)S);
  return 1;
}

/* core.import_string(text) -> synchronizer (see export_string) */
static int l_import_string(lua_State *L) {
  const char *text = luaL_checkstring(L, 1);
  void *p = NULL;
  if (sscanf(text, "%p", &p) != 1 || p == NULL)
    return luaL_argerror(L, 1, "not a synchronizer reference");
  push_imported(L, p);
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
  S_box_t *box = luaL_checkudata(L, 1, S_MT);
  if (box->S != NULL) {
    if (!box->imported)
      synchro__close(box->S, box->S->grace);
    synchro__unref(box->S);
    box->S = NULL;
  }
  return 0;
}

/* core.state(S) -> "new" | "running" | "closing" | "closed" */
static int l_state(lua_State *L) {
  static const char *const names[] = {"new", "running", "closing", "closed"};
  S_box_t *box = luaL_checkudata(L, 1, S_MT);
  lua_pushstring(L, box->S == NULL ? "closed"
                                   : names[synchro__load(&box->S->state)]);
  return 1;
}

/* core.identity(S) -> string naming S uniquely in this process */
static int l_identity(lua_State *L) {
  lua_pushfstring(L, "%p", (void *)check_S(L, 1));
  return 1;
}

/* core.loop_identity() -> the identity of the synchronizer whose loop runs
 * this VM, or nil */
static int l_loop_identity(lua_State *L) {
  synchro_t *S = synchro__current();
  if (S == NULL || S->L == NULL)
    return 0;
  lua_pushfstring(L, "%p", (void *)S);
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
    return luaL_error(L, "bad argument #1 to 'wrap' (%s)",
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
  default: {
    const char *msg;
    int err = synchro__call_status_error(call->status, &msg);
    lua_pushfstring(L, "%s: %s", synchro_err_name(err), msg);
    return -1;
  }
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
  return synchro__event_wait(&call->done, timeout, synchro__interrupted, L);
}

static int wait_servicing(synchro_call_t *call, double timeout, void *L) {
  return synchro__wait_servicing(L, call, timeout);
}

/* core.call(wrapped, ...) -> results: the blocking call. wrapped is the
 * wrapped function's table: _ud (the synchronizer), _id, _timeout (already
 * normalised by S:wrap; nil for no limit). */
static int l_call(lua_State *L) {
  synchro_t *S;
  lua_Integer id;
  double timeout;
  int n, rc, ncb, top = lua_gettop(L);
  synchro_call_t *call;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "_ud"); /* the table keeps it alive */
  S = check_S(L, top + 1);
  lua_getfield(L, 1, "_id");
  id = luaL_checkinteger(L, top + 2);
  lua_getfield(L, 1, "_timeout");
  timeout = synchro__opt_time(L, top + 3, "call", "timeout", SYNCHRO_NO_LIMIT);
  lua_settop(L, top);
  if (synchro__is_loop_thread(S))
    return luaL_error(L, "a blocking call cannot run on its own "
                         "synchronizer's loop thread");
  call = prepare(L, S, id, 2, 1);
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
  lua_Integer id = luaL_checkinteger(L, 2);
  synchro_call_t *call = submit(L, S, id, 3, -1);
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

int synchro__lua_open(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"new", l_new},           {"close", l_close},
      {"state", l_state},       {"identity", l_identity},
      {"loop_identity", l_loop_identity},
      {"define", l_define},     {"call", l_call},
      {"submit", l_submit},     {"traceback", l_traceback},
      {"export", l_export},     {"import", l_import},
      {"submit_cb", l_submit_cb},
      {"export_string", l_export_string},
      {"import_string", l_import_string},
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
  luaL_newlib(L, funcs);
  synchro__timer_register(L);
  synchro__vmaux_register(L);
  synchro__fs_register(L);
  synchro__tcp_register(L);
  synchro__udp_register(L);
  synchro__dns_register(L);
  synchro__process_register(L);
  synchro__workers_register(L);
  synchro__signal_register(L);
  synchro__fswatch_register(L);
  synchro__callbacks_register(L);
  synchro__future_register(L);
  return 1;
}

SYNCHRO_API int luaopen_synchro_core(lua_State *L);
SYNCHRO_API int luaopen_synchro_core(lua_State *L) {
  return synchro__lua_open(L);
}

static int l_submit(lua_State *L) {
  synchro_t *S = check_S(L, 1);
  lua_Integer id = luaL_checkinteger(L, 2);
  synchro_call_t *call = submit(L, S, id, 3, 0);
  synchro_call_t **box = lua_newuserdata(L, sizeof(*box));
  *box = call;
  luaL_setmetatable(L, "synchro.Future");
  return 1;
}
