/* The loop VM's side of the binding: messages from the mailbox become calls
 * into the Lua runtime (synchro.runtime), and the runtime replies through
 * core.reply. Runs only on the loop thread. */
#include <stdlib.h>
#include <string.h>

#include "vm.h"

/* The calls the runtime holds, by key. A call reaches Lua as an integer
 * key, never as a pointer: key = generation << KEY_INDEX_BITS | (index +
 * 1), below 2^53 so that it survives a Lua 5.1 number. core.reply checks
 * the key, so a reply to a made-up key, or a second reply, is a Lua error
 * rather than a write through a stale pointer. Loop thread only: no
 * lock. */
#define KEY_INDEX_BITS 24
#define KEY_GEN_MASK ((1u << 28) - 1)

typedef struct {
  synchro_call_t **call; /* by index; NULL: free */
  uint32_t *gen;
  int *next_free;
  int cap, first_free;
} call_keys_t;

/* Registry refs of the runtime's entry points, in the loop VM; ops is
 * the table of a handler per op (SYNCHRO_OP_MAP). */
typedef struct {
  int define, ops, cancel, close, shutdown;
  call_keys_t keys;
  /* The fast path: the runtime's fns, pool (of worker coroutines) and
   * sched tables, its new_coroutine and fast_after functions, and two
   * registry slots holding the running fast call's coroutine and
   * function. */
  int fns, pool, sched, new_coroutine, fast_after, slot_co, slot_fn;
  int pool_max; /* sched.POOL_MAX: coroutines the pool keeps */
  /* the field names the fast path reads and writes in sched, held as
   * refs so that no C string is interned per call */
  int k_running, k_head, k_tail;
  const void *done; /* sched.DONE, what a worker yields when fn returns */
  synchro_call_t *fast_call; /* the call running on the fast path */
  int fast_taken;            /* its task was made (core.fast_take) */
} runtime_refs_t;

/* Names the call; 0 when out of memory. */
static int64_t key_new(call_keys_t *k, synchro_call_t *call) {
  int i;
  if (k->first_free < 0) {
    int cap = k->cap == 0 ? 64 : k->cap * 2, j;
    synchro_call_t **c;
    uint32_t *g;
    int *nf;
    if (cap > (1 << KEY_INDEX_BITS) - 1)
      return 0;
    c = realloc(k->call, (size_t)cap * sizeof(*c));
    if (c == NULL)
      return 0;
    k->call = c;
    g = realloc(k->gen, (size_t)cap * sizeof(*g));
    if (g == NULL)
      return 0;
    k->gen = g;
    nf = realloc(k->next_free, (size_t)cap * sizeof(*nf));
    if (nf == NULL)
      return 0;
    k->next_free = nf;
    for (j = cap - 1; j >= k->cap; j--) {
      c[j] = NULL;
      g[j] = 0;
      nf[j] = k->first_free;
      k->first_free = j;
    }
    k->cap = cap;
  }
  i = k->first_free;
  k->first_free = k->next_free[i];
  k->gen[i] = (k->gen[i] + 1) & KEY_GEN_MASK;
  if (k->gen[i] == 0)
    k->gen[i] = 1;
  k->call[i] = call;
  call->loop_key = (int64_t)k->gen[i] << KEY_INDEX_BITS | (int64_t)(i + 1);
  return call->loop_key;
}

/* The call that key names, or NULL. */
static synchro_call_t *key_find(call_keys_t *k, lua_Integer key) {
  lua_Integer i = (key & ((1 << KEY_INDEX_BITS) - 1)) - 1;
  if (key <= 0 || i < 0 || i >= k->cap || k->call[i] == NULL ||
      k->gen[i] != (uint32_t)(key >> KEY_INDEX_BITS))
    return NULL;
  return k->call[i];
}

static void key_free(call_keys_t *k, synchro_call_t *call) {
  int i = (int)(call->loop_key & ((1 << KEY_INDEX_BITS) - 1)) - 1;
  k->call[i] = NULL;
  k->next_free[i] = k->first_free;
  k->first_free = i;
  call->loop_key = 0;
}

static int refs_gc(lua_State *L) {
  runtime_refs_t *r = lua_touserdata(L, 1);
  free(r->keys.call);
  free(r->keys.gen);
  free(r->keys.next_free);
  memset(&r->keys, 0, sizeof(r->keys));
  return 0;
}

static runtime_refs_t *refs_of(lua_State *L) {
  runtime_refs_t *r;
  lua_getfield(L, LUA_REGISTRYINDEX, "synchro.runtime_refs");
  r = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return r;
}

static void report(lua_State *L, const char *what) {
  fprintf(stderr, "synchro: loop runtime error in %s: %s\n", what,
          lua_tostring(L, -1));
  lua_pop(L, 1);
}

static void fail_call(lua_State *L, synchro_call_t *call, int status) {
  /* The error message is on top of L; it becomes the call's error. */
  if (call->loop_key != 0)
    key_free(&refs_of(L)->keys, call);
  synchro__buf_free(&call->reply);
  lua_pushliteral(L, "");
  if (synchro__marshal_encode(L, lua_gettop(L) - 1, 2,
                              SYNCHRO_MARSHAL_LENIENT, "error", &call->reply,
                              NULL) != 0)
    lua_pop(L, 1);
  lua_pop(L, 2);
  synchro__call_complete(call, status);
  synchro__call_unref(call);
}

/* The results of call at first..first+n-1 on L: the call's reply.
 * Completes the call and drops the loop's reference. */
static void reply_results(lua_State *L, synchro_call_t *call, int first,
                          int n) {
  int status = SYNCHRO_CALL_OK, bad = 0;
  int mode = call->plain_results ? SYNCHRO_MARSHAL_DATA
                                 : SYNCHRO_MARSHAL_PROXY;
  if (synchro__marshal_encode(L, first, n, mode, "results", &call->reply,
                              &bad) != 0) {
    /* A result that cannot cross is the call's error. */
    int top = lua_gettop(L);
    lua_pushfstring(L, "bad result #%d (%s)", bad, lua_tostring(L, -1));
    lua_pushliteral(L, "");
    call->reply.len = 0;
    synchro__marshal_encode(L, top + 1, 2, SYNCHRO_MARSHAL_LENIENT, "error",
                            &call->reply, NULL);
    lua_settop(L, top - 1);
    /* A Lua caller gets it as an error; a C caller as SYNCHRO_EMARSHAL. */
    status = call->plain_results ? SYNCHRO_CALL_BAD_RESULT
                                 : SYNCHRO_CALL_ERROR;
  }
  synchro__call_complete(call, status);
  synchro__call_unref(call);
}

/* sched[key ref] on top of the stack, sched at idx (raw: sched's
 * fields are its own, its metatable only gives methods) */
static void sched_get(lua_State *L, int idx, int key) {
  idx = lua_absindex(L, idx);
  lua_rawgeti(L, LUA_REGISTRYINDEX, key);
  lua_rawget(L, idx);
}

static void set_running(lua_State *L, runtime_refs_t *r, int running) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->sched);
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->k_running);
  lua_pushboolean(L, running);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

/* Runs the tasks a fast call made ready (it ran with sched.running set,
 * as Sched:start's first run does, so they were queued). */
static void run_ready(lua_State *L, runtime_refs_t *r) {
  lua_Integer head, tail;
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->sched);
  sched_get(L, -1, r->k_head);
  sched_get(L, -2, r->k_tail);
  head = lua_tointeger(L, -2);
  tail = lua_tointeger(L, -1);
  lua_pop(L, 2);
  if (head <= tail) {
    lua_getfield(L, -1, "run_ready"); /* a method: through __index */
    lua_insert(L, -2);
    if (lua_pcall(L, 1, 0, 0) != 0)
      report(L, "run_ready");
  } else {
    lua_pop(L, 1);
  }
}

/* Gives the coroutine at top + 2 back to the pool at top + 1 (unless the
 * pool is full) and leaves the stack at top. */
static void pool_put(lua_State *L, runtime_refs_t *r, int top) {
  lua_settop(L, top + 2);
  if (lua_rawlen(L, top + 1) < (size_t)r->pool_max)
    lua_rawseti(L, top + 1, (lua_Integer)lua_rawlen(L, top + 1) + 1);
  lua_settop(L, top);
}

/* The fast path of an OP_CALL taken by the loop itself (not from inside a
 * task, through the watch hook): the defined function runs on a pooled
 * worker coroutine resumed here; if it returns without suspending and
 * without asking for its task, the results are the reply and no Lua task
 * was ever made. Otherwise runtime.fast_after makes the task and the
 * scheduler takes over. Returns 0 (nothing done) when the call must take
 * the slow path. */
static int fast_call(lua_State *L, runtime_refs_t *r, synchro_call_t *call) {
  int top = lua_gettop(L), n, nres = 0, status;
  int64_t key;
  lua_State *co;
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->fns);
  lua_rawgeti(L, -1, (lua_Integer)call->fn_id);
  if (lua_type(L, -1) != LUA_TFUNCTION || key_new(&r->keys, call) == 0) {
    lua_settop(L, top);
    return 0;
  }
  /* [fns fn] -> [pool co fn args...] */
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->pool);
  n = (int)lua_rawlen(L, -1);
  if (n > 0) {
    lua_rawgeti(L, -1, n);
    lua_pushnil(L);
    lua_rawseti(L, -3, n);
  } else {
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->new_coroutine);
    if (lua_pcall(L, 0, 1, 0) != 0) {
      fail_call(L, call, SYNCHRO_CALL_ERROR);
      lua_settop(L, top);
      return 1;
    }
  }
  co = lua_tothread(L, -1);
  lua_replace(L, top + 1);
  lua_insert(L, top + 1); /* [pool co fn] */
  lua_pushvalue(L, -1);
  lua_rawseti(L, LUA_REGISTRYINDEX, r->slot_fn);
  lua_pushvalue(L, top + 2);
  lua_rawseti(L, LUA_REGISTRYINDEX, r->slot_co);
  n = synchro__marshal_decode(L, call->args.data, call->args.len);
  if (n < 0 || !lua_checkstack(co, n + 1 + LUA_MINSTACK)) {
    if (n >= 0)
      lua_pushliteral(L, "too many arguments");
    fail_call(L, call, SYNCHRO_CALL_ERROR);
    pool_put(L, r, top);
    return 1;
  }
  lua_xmove(L, co, n + 1);
  key = call->loop_key;
  r->fast_call = call;
  r->fast_taken = 0;
  set_running(L, r, 1);
  status = synchro__resume(co, L, n + 1, &nres);
  r->fast_call = NULL;
  if (status == LUA_YIELD && !lua_checkstack(L, nres + LUA_MINSTACK)) {
    /* too many results to take: keep one, the scheduler raises it */
    lua_settop(co, 0);
    lua_pushliteral(co, "too many results");
    status = LUA_ERRRUN;
  }
  /* From here on call is read only if the key still names it: a reply
   * from inside the call (core.reply) may have completed and freed it. */
  if (status == LUA_YIELD && !r->fast_taken && nres >= 1 &&
      lua_topointer(co, -nres) == r->done) {
    /* returned: the results are the reply; the coroutine waits in the
     * pool for the next call */
    lua_xmove(co, L, nres);
    if (key_find(&r->keys, (lua_Integer)key) == call) {
      key_free(&r->keys, call);
      reply_results(L, call, top + 4, nres - 1);
    } else {
      lua_pushliteral(L, "core.reply: the call was replied to from "
                         "inside it already; its results are dropped");
      report(L, "call");
    }
    set_running(L, r, 0);
    pool_put(L, r, top);
    run_ready(L, r);
    return 1;
  }
  /* fast_after(co, fn, key, ok, values...) */
  {
    int nv = status == LUA_YIELD ? nres : 1;
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->fast_after);
    lua_pushvalue(L, top + 2);
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->slot_fn);
    lua_pushinteger(L, (lua_Integer)key);
    lua_pushboolean(L, status == LUA_YIELD);
    lua_xmove(co, L, nv);
    if (lua_pcall(L, 4 + nv, 0, 0) != 0) {
      set_running(L, r, 0);
      if (key_find(&r->keys, (lua_Integer)key) == call)
        fail_call(L, call, SYNCHRO_CALL_ERROR);
      else
        report(L, "call");
    }
  }
  lua_settop(L, top);
  return 1;
}

void synchro__dispatch(synchro_t *S, lua_State *L, synchro_msg_t *msg) {
  runtime_refs_t *r = S->vm_refs;
  int top = lua_gettop(L), n;
  switch (msg->kind) {
  case SYNCHRO_MSG_CALL: {
    synchro_call_t *call = (synchro_call_t *)msg;
    int64_t key;
    synchro__call_track(call);
    /* Calls queued before the close began still start (see
     * synchro__loop_attend); later ones are refused. */
    if (__atomic_load_n(&S->close_requested, __ATOMIC_SEQ_CST) == 2) {
      lua_pushliteral(L, "ECANCELED: the synchronizer is closing");
      fail_call(L, call, SYNCHRO_CALL_CLOSED);
      break;
    }
    if (call->op == SYNCHRO_OP_CALL && L == S->L && r->fast_call == NULL &&
        fast_call(L, r, call))
      break;
    /* ops[op](call, id, args...) */
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->ops);
    lua_rawgeti(L, -1, call->op);
    if (lua_type(L, -1) != LUA_TFUNCTION) {
      lua_settop(L, top);
      lua_pushfstring(L, "synchro: unknown op %d", call->op);
      fail_call(L, call, SYNCHRO_CALL_ERROR);
      break;
    }
    lua_replace(L, -2);
    if (key_new(&r->keys, call) == 0) {
      lua_settop(L, top);
      lua_pushliteral(L, "ENOMEM: not enough memory");
      fail_call(L, call, SYNCHRO_CALL_ERROR);
      break;
    }
    key = call->loop_key;
    lua_pushinteger(L, (lua_Integer)key);
    lua_pushinteger(L, (lua_Integer)call->fn_id);
    n = synchro__marshal_decode(L, call->args.data, call->args.len);
    if (n < 0) {
      lua_replace(L, top + 1);
      lua_settop(L, top + 1);
      fail_call(L, call, SYNCHRO_CALL_ERROR);
      break;
    }
    if (lua_pcall(L, 2 + n, 0, 0) != 0) {
      /* Not replied to before the error? A reply dropped the loop's
       * reference, so only the key table may be read, not the call. */
      if (key_find(&r->keys, (lua_Integer)key) == call)
        fail_call(L, call, SYNCHRO_CALL_ERROR);
      else
        report(L, "call");
    }
    break;
  }
  case SYNCHRO_MSG_DEFINE: {
    synchro_define_t *def = (synchro_define_t *)msg;
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->define);
    lua_pushinteger(L, (lua_Integer)def->fn_id);
    n = synchro__marshal_decode(L, def->code.data, def->code.len);
    if (n < 0) {
      /* define(id, nil, message): calls to it raise the message */
      lua_pushnil(L);
      lua_insert(L, -2);
      n = 2;
    }
    if (lua_pcall(L, 1 + n, 0, 0) != 0)
      report(L, "define");
    synchro__buf_free(&def->code);
    free(def);
    break;
  }
  case SYNCHRO_MSG_CANCEL: {
    synchro_cancel_t *c = (synchro_cancel_t *)msg;
    /* The cancel holds a reference, so c->call is readable; a call
     * already replied to (key 0) has nothing left to cancel. */
    if (c->call->loop_key != 0) {
      lua_rawgeti(L, LUA_REGISTRYINDEX, r->cancel);
      lua_pushinteger(L, (lua_Integer)c->call->loop_key);
      if (lua_pcall(L, 1, 0, 0) != 0)
        report(L, "cancel");
    }
    synchro__call_unref(c->call);
    free(c);
    break;
  }
  }
  lua_settop(L, top);
}

void synchro__dispatch_close(synchro_t *S, lua_State *L, double grace) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, refs_of(L)->close);
  lua_pushnumber(L, grace);
  if (lua_pcall(L, 1, 0, 0) != 0) {
    report(L, "close");
    synchro__loop_stop(S);
  }
}

void synchro__dispatch_shutdown(synchro_t *S) {
  lua_State *L = S->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, refs_of(L)->shutdown);
  if (lua_pcall(L, 0, 0, 0) != 0)
    report(L, "shutdown");
}

/* The call a key names; it is forgotten (a second reply fails). */
static synchro_call_t *check_call(lua_State *L, int idx) {
  call_keys_t *k = &refs_of(L)->keys;
  synchro_call_t *call = NULL;
  if (lua_type(L, idx) == LUA_TNUMBER)
    call = key_find(k, lua_tointeger(L, idx));
  if (call == NULL)
    luaL_error(L, "core.reply: no call in progress has the key %s",
               luaL_tolstring(L, idx, NULL));
  key_free(k, call);
  return call;
}

/* core.reply(call, how, ...): how is true (results follow), false (error
 * value and traceback follow), "cancelled" or "closed". Completes the call
 * and drops the loop's reference: call it exactly once per call. */
static int reply(lua_State *L) {
  synchro_call_t *call = check_call(L, 1);
  int status;
  if (lua_type(L, 2) == LUA_TBOOLEAN && lua_toboolean(L, 2)) {
    reply_results(L, call, 3, lua_gettop(L) - 2);
    return 0;
  } else if (lua_type(L, 2) == LUA_TBOOLEAN) {
    status = SYNCHRO_CALL_ERROR;
    lua_settop(L, 4);
    synchro__marshal_encode(L, 3, 2, SYNCHRO_MARSHAL_LENIENT, "error",
                            &call->reply, NULL);
  } else {
    const char *how = luaL_checkstring(L, 2);
    status = how[0] == 'c' && how[1] == 'a' ? SYNCHRO_CALL_CANCELLED
                                            : SYNCHRO_CALL_CLOSED;
  }
  synchro__call_complete(call, status);
  synchro__call_unref(call);
  return 0;
}

/* core.fast_take(): the coroutine, function and key of the call running
 * on the fast path, whose task the runtime is making now; nothing when
 * none runs or its task exists. */
static int fast_take(lua_State *L) {
  runtime_refs_t *r = refs_of(L);
  if (r == NULL || r->fast_call == NULL || r->fast_taken)
    return 0;
  r->fast_taken = 1;
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->slot_co);
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->slot_fn);
  lua_pushinteger(L, (lua_Integer)r->fast_call->loop_key);
  return 3;
}

/* core.stop(): the runtime finished closing; stop the loop. */
static int stop(lua_State *L) {
  synchro_t *S;
  lua_getfield(L, LUA_REGISTRYINDEX, "synchro.loop");
  S = lua_touserdata(L, -1);
  if (S != NULL)
    synchro__loop_stop(S);
  return 0;
}

static int ref_field(lua_State *L, int t, const char *name) {
  lua_getfield(L, t, name);
  if (lua_type(L, -1) != LUA_TFUNCTION)
    luaL_error(L, "synchro.runtime has no function '%s'", name);
  return luaL_ref(L, LUA_REGISTRYINDEX);
}

static int ref_table(lua_State *L, int t, const char *name) {
  lua_getfield(L, t, name);
  if (lua_type(L, -1) != LUA_TTABLE)
    luaL_error(L, "synchro.runtime has no table '%s'", name);
  return luaL_ref(L, LUA_REGISTRYINDEX);
}

#ifdef SYNCHRO_HAVE_CONFIG_H
#include "synchro_config.h"
#endif
#ifndef SYNCHRO_INSTALL_LUA_PATH
#define SYNCHRO_INSTALL_LUA_PATH ""
#endif
#ifndef SYNCHRO_INSTALL_LUA_CPATH
#define SYNCHRO_INSTALL_LUA_CPATH ""
#endif

/* package[field] = before;<default>;after (parts that are empty left out);
 * package is on top of the stack. */
static void set_path(lua_State *L, const char *field, const char *before,
                     const char *after) {
  int n = 1;
  if (before != NULL && before[0] != '\0') {
    lua_pushstring(L, before);
    lua_pushliteral(L, ";");
    n += 2;
  }
  lua_getfield(L, -1 - (n - 1), field);
  if (after[0] != '\0') {
    lua_pushliteral(L, ";");
    lua_pushstring(L, after);
    n += 2;
  }
  lua_concat(L, n);
  lua_setfield(L, -2, field);
}

/* Protected part of synchro__dispatch_open. */
static int open_runtime(lua_State *L) {
  synchro_t *S = lua_touserdata(L, 1);
  runtime_refs_t *r;
  int t;
  luaL_openlibs(L);
  lua_getglobal(L, "package");
  if (S->paths_prepend) {
    /* A C host: its additions, Lua's defaults, then where synchro's own
     * Lua files are installed. */
    set_path(L, "path", S->path, SYNCHRO_INSTALL_LUA_PATH);
    set_path(L, "cpath", S->cpath, SYNCHRO_INSTALL_LUA_CPATH);
  } else {
    /* A Lua creator: exactly its paths. */
    if (S->path != NULL) {
      lua_pushstring(L, S->path);
      lua_setfield(L, -2, "path");
    }
    if (S->cpath != NULL) {
      lua_pushstring(L, S->cpath);
      lua_setfield(L, -2, "cpath");
    }
  }
  /* require "synchro.core" here gets this very code, not a second copy. */
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, S->open_core);
  lua_setfield(L, -2, "synchro.core");
  lua_pop(L, 2);
  lua_pushlightuserdata(L, S);
  lua_setfield(L, LUA_REGISTRYINDEX, "synchro.loop");

  lua_getglobal(L, "require");
  lua_pushliteral(L, "synchro.core");
  lua_call(L, 1, 1);
  lua_pushcfunction(L, reply);
  lua_setfield(L, -2, "reply");
  lua_pushcfunction(L, stop);
  lua_setfield(L, -2, "stop");
  lua_pushcfunction(L, fast_take);
  lua_setfield(L, -2, "fast_take");
  lua_pop(L, 1);

  lua_getglobal(L, "require");
  lua_pushliteral(L, "synchro.runtime");
  lua_call(L, 1, 1);
  t = lua_gettop(L);
  r = lua_newuserdata(L, sizeof(*r));
  memset(r, 0, sizeof(*r));
  r->keys.first_free = -1;
  lua_newtable(L);
  lua_pushcfunction(L, refs_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, "synchro.runtime_refs");
  S->vm_refs = r; /* the registry keeps r as long as L lives */
  r->define = ref_field(L, t, "define");
  r->ops = ref_table(L, t, "ops");
  r->cancel = ref_field(L, t, "cancel");
  r->close = ref_field(L, t, "close");
  r->shutdown = ref_field(L, t, "shutdown");
  r->new_coroutine = ref_field(L, t, "new_coroutine");
  r->fast_after = ref_field(L, t, "fast_after");
  r->fns = ref_table(L, t, "fns");
  r->pool = ref_table(L, t, "pool");
  r->sched = ref_table(L, t, "sched");
  lua_getfield(L, t, "POOL_MAX");
  r->pool_max = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  lua_getfield(L, t, "DONE");
  r->done = lua_topointer(L, -1);
  if (r->done == NULL)
    luaL_error(L, "synchro.runtime has no DONE");
  luaL_ref(L, LUA_REGISTRYINDEX); /* kept: r->done stays its address */
  lua_pushliteral(L, "running");
  r->k_running = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushliteral(L, "head");
  r->k_head = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushliteral(L, "tail");
  r->k_tail = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushboolean(L, 0);
  r->slot_co = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushboolean(L, 0);
  r->slot_fn = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

int synchro__dispatch_open(lua_State *L, synchro_t *S) {
  lua_pushcfunction(L, open_runtime);
  lua_pushlightuserdata(L, S);
  return lua_pcall(L, 1, 0, 0);
}
