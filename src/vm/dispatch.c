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

void synchro__dispatch(synchro_t *S, lua_State *L, synchro_msg_t *msg) {
  runtime_refs_t *r = refs_of(L);
  int top = lua_gettop(L), n;
  switch (msg->kind) {
  case SYNCHRO_MSG_CALL: {
    synchro_call_t *call = (synchro_call_t *)msg;
    synchro__call_track(call);
    /* Calls queued before the close began still start (see
     * synchro__loop_attend); later ones are refused. */
    if (__atomic_load_n(&S->close_requested, __ATOMIC_SEQ_CST) == 2) {
      lua_pushliteral(L, "ECANCELED: the synchronizer is closing");
      fail_call(L, call, SYNCHRO_CALL_CLOSED);
      break;
    }
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
    lua_pushinteger(L, (lua_Integer)call->loop_key);
    lua_pushinteger(L, (lua_Integer)call->fn_id);
    n = synchro__marshal_decode(L, call->args.data, call->args.len);
    if (n < 0) {
      lua_replace(L, top + 1);
      lua_settop(L, top + 1);
      fail_call(L, call, SYNCHRO_CALL_ERROR);
      break;
    }
    if (lua_pcall(L, 2 + n, 0, 0) != 0) {
      if (call->loop_key != 0) /* not replied to before the error */
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
  int n = lua_gettop(L) - 2, status, bad = 0;
  if (lua_type(L, 2) == LUA_TBOOLEAN && lua_toboolean(L, 2)) {
    status = SYNCHRO_CALL_OK;
    int mode = call->plain_results ? SYNCHRO_MARSHAL_DATA
                                   : SYNCHRO_MARSHAL_PROXY;
    if (synchro__marshal_encode(L, 3, n, mode, "results", &call->reply,
                                &bad) != 0) {
      /* A result that cannot cross is the call's error. */
      lua_pushfstring(L, "bad result #%d (%s)", bad, lua_tostring(L, -1));
      lua_replace(L, 3);
      lua_settop(L, 3);
      lua_pushliteral(L, "");
      call->reply.len = 0;
      synchro__marshal_encode(L, 3, 2, SYNCHRO_MARSHAL_LENIENT, "error",
                              &call->reply, NULL);
      /* A Lua caller gets it as an error; a C caller as SYNCHRO_EMARSHAL. */
      status = call->plain_results ? SYNCHRO_CALL_BAD_RESULT
                                   : SYNCHRO_CALL_ERROR;
    }
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
  r->define = ref_field(L, t, "define");
  lua_getfield(L, t, "ops");
  if (lua_type(L, -1) != LUA_TTABLE)
    luaL_error(L, "synchro.runtime has no table 'ops'");
  r->ops = luaL_ref(L, LUA_REGISTRYINDEX);
  r->cancel = ref_field(L, t, "cancel");
  r->close = ref_field(L, t, "close");
  r->shutdown = ref_field(L, t, "shutdown");
  return 0;
}

int synchro__dispatch_open(lua_State *L, synchro_t *S) {
  lua_pushcfunction(L, open_runtime);
  lua_pushlightuserdata(L, S);
  return lua_pcall(L, 1, 0, 0);
}
