/* synchro_test_threads: runs a Lua chunk on n OS threads at once, each in
 * a fresh lua_State, so that specs and benchmarks can call one
 * Synchronizer from many threads. Test helper only; not installed.
 *
 *   threads.run(n, source, ...) -> { {ok=, value=, values=, n=}, ... }
 *   threads.barrier()  -- inside a chunk: wait until every thread of the
 *                         run got here (or ended)
 *
 * The extra arguments of run may be nil, booleans, numbers, strings, light
 * userdata, or tables whose keys and values are such scalars (one level);
 * each thread gets its own copy. Each chunk is called as
 * chunk(thread_index, ...) and its results come back as scalars (anything
 * else as its tostring text). */
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "compat.h"

#define MAX_THREADS 256
#define WORKER_KEY  "synchro_test_threads.worker"

#if defined(__GNUC__)
#define HELPER_API __attribute__((visibility("default")))
#else
#define HELPER_API
#endif

/* A Lua value copied out of a state: a scalar, or a one-level table. */
typedef struct value {
  int type;
  int is_int;
  union {
    int b;
    lua_Integer i;
    lua_Number n;
    void *p;
  } u;
  char *s; /* strings */
  size_t len;
  struct value *items; /* tables: key, value, key, value ... */
  int nitems;
} value_t;

typedef struct run run_t;

typedef struct {
  run_t *run;
  int index;
  uv_thread_t thread;
  int arrived;
  int ok;
  value_t *results;
  int nresults;
} worker_t;

struct run {
  int n;
  const char *source;
  size_t source_len;
  const char *path;
  const char *cpath;
  value_t *args;
  int nargs;
  uv_mutex_t lock;
  uv_cond_t cond;
  int arrived;
  worker_t *workers;
};

static void value_free(value_t *v) {
  int i;
  free(v->s);
  v->s = NULL;
  for (i = 0; i < v->nitems; i++)
    value_free(&v->items[i]);
  free(v->items);
  v->items = NULL;
  v->nitems = 0;
}

static void values_free(value_t *vs, int n) {
  int i;
  if (vs == NULL)
    return;
  for (i = 0; i < n; i++)
    value_free(&vs[i]);
  free(vs);
}

static int copy_string(value_t *v, const char *s, size_t len) {
  v->type = LUA_TSTRING;
  v->s = malloc(len + 1);
  if (v->s == NULL)
    return -1;
  memcpy(v->s, s, len);
  v->s[len] = '\0';
  v->len = len;
  return 0;
}

/* Copies the scalar at idx; with lenient set, an unsupported value is
 * copied as its tostring text. Returns 0, -1 on an unsupported value or
 * -2 when out of memory. */
static int copy_scalar(lua_State *L, int idx, value_t *v, int lenient) {
  size_t len;
  const char *s;
  int rc;
  memset(v, 0, sizeof(*v));
  v->type = lua_type(L, idx);
  switch (v->type) {
  case LUA_TNIL:
    return 0;
  case LUA_TBOOLEAN:
    v->u.b = lua_toboolean(L, idx);
    return 0;
  case LUA_TNUMBER:
    v->is_int = lua_isinteger(L, idx);
    if (v->is_int)
      v->u.i = lua_tointeger(L, idx);
    else
      v->u.n = lua_tonumber(L, idx);
    return 0;
  case LUA_TLIGHTUSERDATA:
    v->u.p = lua_touserdata(L, idx);
    return 0;
  case LUA_TSTRING:
    s = lua_tolstring(L, idx, &len);
    return copy_string(v, s, len) != 0 ? -2 : 0;
  default:
    if (!lenient)
      return -1;
    /* No __tostring here: this may run unprotected. */
    s = lua_pushfstring(L, "%s: %p", luaL_typename(L, idx),
                        lua_topointer(L, idx));
    len = strlen(s);
    rc = copy_string(v, s, len);
    lua_pop(L, 1);
    return rc != 0 ? -2 : 0;
  }
}

/* Copies a table of scalars (one level). Same returns as copy_scalar. */
static int copy_table(lua_State *L, int idx, value_t *v) {
  int cap = 0, rc = 0;
  idx = lua_absindex(L, idx);
  memset(v, 0, sizeof(*v));
  v->type = LUA_TTABLE;
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    if (v->nitems + 2 > cap) {
      value_t *grown;
      cap = cap ? cap * 2 : 16;
      grown = realloc(v->items, (size_t)cap * sizeof(*grown));
      if (grown == NULL) {
        rc = -2;
        lua_pop(L, 2);
        break;
      }
      v->items = grown;
    }
    rc = copy_scalar(L, -2, &v->items[v->nitems], 0);
    if (rc == 0) {
      v->nitems++;
      rc = copy_scalar(L, -1, &v->items[v->nitems], 0);
      if (rc == 0)
        v->nitems++;
    }
    lua_pop(L, 1);
    if (rc != 0) {
      lua_pop(L, 1);
      break;
    }
  }
  if (rc != 0)
    value_free(v);
  return rc;
}

static void push_value(lua_State *L, const value_t *v) {
  int i;
  switch (v->type) {
  case LUA_TBOOLEAN:
    lua_pushboolean(L, v->u.b);
    break;
  case LUA_TNUMBER:
    if (v->is_int)
      lua_pushinteger(L, v->u.i);
    else
      lua_pushnumber(L, v->u.n);
    break;
  case LUA_TLIGHTUSERDATA:
    lua_pushlightuserdata(L, v->u.p);
    break;
  case LUA_TSTRING:
    lua_pushlstring(L, v->s, v->len);
    break;
  case LUA_TTABLE:
    lua_createtable(L, 0, v->nitems / 2);
    for (i = 0; i + 1 < v->nitems; i += 2) {
      push_value(L, &v->items[i]);
      push_value(L, &v->items[i + 1]);
      lua_rawset(L, -3);
    }
    break;
  default:
    lua_pushnil(L);
    break;
  }
}

static void arrive(worker_t *w) {
  run_t *run = w->run;
  uv_mutex_lock(&run->lock);
  if (!w->arrived) {
    w->arrived = 1;
    if (++run->arrived == run->n)
      uv_cond_broadcast(&run->cond);
  }
  uv_mutex_unlock(&run->lock);
}

/* threads.barrier(): inside a chunk run by threads.run. */
static int l_barrier(lua_State *L) {
  worker_t *w;
  run_t *run;
  lua_getfield(L, LUA_REGISTRYINDEX, WORKER_KEY);
  w = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (w == NULL)
    return luaL_error(L, "barrier() must be called from a threads.run chunk");
  if (w->arrived)
    return luaL_error(L, "barrier() may be called once per thread");
  run = w->run;
  arrive(w);
  uv_mutex_lock(&run->lock);
  while (run->arrived < run->n)
    uv_cond_wait(&run->cond, &run->lock);
  uv_mutex_unlock(&run->lock);
  return 0;
}

static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL)
    msg = luaL_tolstring(L, 1, NULL);
  luaL_traceback(L, L, msg, 1);
  return 1;
}

static void set_package_field(lua_State *L, const char *field,
                              const char *value) {
  if (value == NULL)
    return;
  lua_getglobal(L, "package");
  lua_pushstring(L, value);
  lua_setfield(L, -2, field);
  lua_pop(L, 1);
}

/* Protected part of a worker: returns the number of results. */
static int worker_body(lua_State *L) {
  worker_t *w = lua_touserdata(L, 1);
  run_t *run = w->run;
  int i, base;
  lua_settop(L, 0);
  luaL_openlibs(L);
  set_package_field(L, "path", run->path);
  set_package_field(L, "cpath", run->cpath);
  lua_pushlightuserdata(L, w);
  lua_setfield(L, LUA_REGISTRYINDEX, WORKER_KEY);
  lua_pushcfunction(L, traceback);
  base = lua_gettop(L);
  if (luaL_loadbuffer(L, run->source, run->source_len, "=(thread chunk)") != 0)
    return lua_error(L);
  lua_pushinteger(L, w->index);
  for (i = 0; i < run->nargs; i++)
    push_value(L, &run->args[i]);
  if (lua_pcall(L, 1 + run->nargs, LUA_MULTRET, base) != 0)
    return lua_error(L);
  return lua_gettop(L) - base;
}

static void worker_main(void *arg) {
  worker_t *w = arg;
  lua_State *L = luaL_newstate();
  int i, n, top;
  w->ok = 0;
  if (L == NULL) {
    w->results = calloc(1, sizeof(*w->results));
    if (w->results != NULL) {
      w->nresults = 1;
      copy_string(&w->results[0], "cannot create a lua_State", 25);
    }
    arrive(w);
    return;
  }
  lua_pushcfunction(L, worker_body);
  lua_pushlightuserdata(L, w);
  w->ok = lua_pcall(L, 1, LUA_MULTRET, 0) == 0;
  top = lua_gettop(L);
  n = top > 0 ? top : 1;
  w->results = calloc((size_t)n, sizeof(*w->results));
  if (w->results != NULL) {
    w->nresults = top;
    for (i = 0; i < top; i++)
      copy_scalar(L, i + 1, &w->results[i], 1);
  }
  arrive(w);
  lua_close(L);
}

static int copy_args(lua_State *L, int first, run_t *run) {
  int i, rc, top = lua_gettop(L);
  run->nargs = top - first + 1;
  if (run->nargs <= 0) {
    run->nargs = 0;
    return 0;
  }
  run->args = calloc((size_t)run->nargs, sizeof(*run->args));
  if (run->args == NULL)
    return luaL_error(L, "not enough memory");
  for (i = 0; i < run->nargs; i++) {
    if (lua_type(L, first + i) == LUA_TTABLE)
      rc = copy_table(L, first + i, &run->args[i]);
    else
      rc = copy_scalar(L, first + i, &run->args[i], 0);
    if (rc != 0) {
      values_free(run->args, i);
      run->args = NULL;
      if (rc == -2)
        return luaL_error(L, "not enough memory");
      return luaL_argerror(L, first + i,
                           "nil, boolean, number, string, light userdata "
                           "or a table of those expected");
    }
  }
  return 0;
}

static const char *package_field(lua_State *L, const char *field) {
  const char *s;
  lua_getglobal(L, "package");
  lua_getfield(L, -1, field);
  s = lua_tostring(L, -1); /* stays alive: package keeps it */
  lua_pop(L, 2);
  return s;
}

/* threads.run(n, source, ...) -> array of {ok=, value=, values=, n=} */
static int l_run(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  run_t run;
  int i, j, created = 0, err = 0;
  memset(&run, 0, sizeof(run));
  luaL_argcheck(L, n >= 1 && n <= MAX_THREADS, 1, "1 to 256 threads");
  run.n = (int)n;
  run.source = luaL_checklstring(L, 2, &run.source_len);
  run.path = package_field(L, "path");
  run.cpath = package_field(L, "cpath");
  copy_args(L, 3, &run);
  run.workers = calloc((size_t)run.n, sizeof(*run.workers));
  if (run.workers == NULL) {
    values_free(run.args, run.nargs);
    return luaL_error(L, "not enough memory");
  }
  uv_mutex_init(&run.lock);
  uv_cond_init(&run.cond);
  for (i = 0; i < run.n; i++) {
    worker_t *w = &run.workers[i];
    w->run = &run;
    w->index = i + 1;
    err = uv_thread_create(&w->thread, worker_main, w);
    if (err != 0)
      break;
    created++;
  }
  if (err != 0) {
    /* Release the barrier for the threads already running. */
    for (i = created; i < run.n; i++)
      arrive(&run.workers[i]);
  }
  for (i = 0; i < created; i++)
    uv_thread_join(&run.workers[i].thread);
  uv_cond_destroy(&run.cond);
  uv_mutex_destroy(&run.lock);
  values_free(run.args, run.nargs);

  lua_createtable(L, run.n, 0);
  for (i = 0; i < created; i++) {
    worker_t *w = &run.workers[i];
    lua_createtable(L, 0, 4);
    lua_pushboolean(L, w->ok);
    lua_setfield(L, -2, "ok");
    lua_pushinteger(L, w->nresults);
    lua_setfield(L, -2, "n");
    lua_createtable(L, w->nresults, 0);
    for (j = 0; j < w->nresults; j++) {
      push_value(L, &w->results[j]);
      lua_rawseti(L, -2, j + 1);
    }
    lua_rawgeti(L, -1, 1);
    lua_setfield(L, -3, "value");
    lua_setfield(L, -2, "values");
    lua_rawseti(L, -2, i + 1);
    values_free(w->results, w->nresults);
  }
  free(run.workers);
  if (err != 0)
    return luaL_error(L, "cannot create thread %d: %s", created + 1,
                      uv_strerror(err));
  return 1;
}

HELPER_API int luaopen_synchro_test_threads(lua_State *L);
HELPER_API int luaopen_synchro_test_threads(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"run", l_run}, {"barrier", l_barrier}, {NULL, NULL}};
  luaL_newlib(L, funcs);
  return 1;
}
