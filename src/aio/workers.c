/* aio.run_in_thread: blocking Lua functions run on a pool of worker
 * threads, each with its own Lua VM, so that they do not stall the loop.
 *
 * Why our own threads rather than uv_queue_work: libuv's threadpool is one
 * per process (4 threads by default) and also serves fs and dns requests;
 * a few blocking functions would starve every loop's file I/O. Each loop
 * gets its own pool here, bounded (DEFAULT_WORKERS, core.workers_configure
 * changes it), created lazily and reused: a worker keeps its VM, and
 * caches the functions it decoded by their encoded bytes (bytecode plus
 * upvalues), so repeated calls do not reload them.
 *
 * A job: the loop thread encodes the function (SYNCHRO_MARSHAL_CODE) and
 * the arguments (DATA), queues the job and wakes or starts a worker; the
 * worker runs it and encodes the results (or the error and a traceback);
 * the job's uv_async_t brings it back to the loop thread, which calls the
 * job's Lua callback and closes the async. A queued job can be cancelled
 * (core.workers_cancel): it is dropped. A running one is interrupted: the
 * worker VM carries a count hook (as the loop's tasks do, src/vm/watch.c)
 * that reads the job's interrupt flag every WATCH_COUNT instructions and
 * raises ECANCELED inside the job, once, then again each INTERRUPT_AGAIN_NS
 * while the job goes on (its pcall cleanup runs in between). Hooks never
 * run inside C code, nor in loops LuaJIT compiled.
 *
 * A generator job (core.workers_gen) runs its function as a coroutine whose
 * yields are items: each is encoded into the job's queue, and the worker
 * waits while the queue holds `capacity` items (back pressure). The loop
 * takes them on demand (gen:take()); the async only says "something
 * changed". Closing the generator (gen:close(), its __gc, the pool's
 * shutdown) interrupts it and resumes it until it ends, so its cleanup
 * runs; items it yields after that are dropped.
 *
 * Pools: the loop's own (created on first use, in the loop VM's registry)
 * and private ones (core.workers_pool(n)), each owned by a userdata; a
 * private pool of one worker keeps one VM for an offloaded object.
 *
 * Shutdown: the pool is owned by a userdata in the loop VM's registry, so
 * closing the loop VM (S:close) collects it: queued jobs are dropped, idle
 * workers are stopped and joined (closing their VMs); a worker still busy
 * with a blocking function is not waited for: it finishes that function,
 * closes its VM and exits on its own (detached), dropping the results. */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "workers.h"

/* ---- lists and references ---- */

static void list_push(job_list_t *list, job_t *job) {
  job->next = NULL;
  job->prev = list->tail;
  if (list->tail != NULL)
    list->tail->next = job;
  else
    list->head = job;
  list->tail = job;
}

void synchro__job_list_remove(job_list_t *list, job_t *job) {
  if (job->prev != NULL)
    job->prev->next = job->next;
  else
    list->head = job->next;
  if (job->next != NULL)
    job->next->prev = job->prev;
  else
    list->tail = job->prev;
  job->prev = job->next = NULL;
}

void synchro__job_free_items(item_t *item) {
  while (item != NULL) {
    item_t *next = item->next;
    synchro__buf_free(&item->values);
    free(item);
    item = next;
  }
}

static void pool_free(pool_t *pool);

void synchro__job_unref(job_t *job) {
  pool_t *pool = job->pool;
  int last;
  if (synchro__decr(&job->refs) != 0)
    return;
  uv_mutex_lock(&pool->lock);
  last = --pool->refs == 0; /* each job holds its pool */
  uv_mutex_unlock(&pool->lock);
  if (last)
    pool_free(pool);
  synchro__buf_free(&job->code);
  synchro__buf_free(&job->args);
  synchro__buf_free(&job->reply);
  synchro__job_free_items(job->items);
  if (job->kind == KIND_GEN)
    uv_cond_destroy(&job->space);
  free(job);
}

void synchro__job_closed(uv_handle_t *handle) {
  synchro__job_unref(handle->data);
}

/* Call with the lock held; returns whether that was the last reference. */
static int pool_unref_locked(pool_t *pool) { return --pool->refs == 0; }

static void pool_free(pool_t *pool) {
  uv_cond_destroy(&pool->cond);
  uv_mutex_destroy(&pool->lock);
  free(pool->path);
  free(pool->cpath);
  free(pool);
}

/* ---- the worker threads ---- */

static int open_vm(lua_State *L) {
  pool_t *pool = lua_touserdata(L, 1);
  luaL_openlibs(L);
  lua_getglobal(L, "package");
  if (pool->path != NULL) {
    lua_pushstring(L, pool->path);
    lua_setfield(L, -2, "path");
  }
  if (pool->cpath != NULL) {
    lua_pushstring(L, pool->cpath);
    lua_setfield(L, -2, "cpath");
  }
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, pool->open_core);
  lua_setfield(L, -2, "synchro.core");
  lua_newtable(L);
  lua_setfield(L, LUA_REGISTRYINDEX, CACHE_KEY);
  return 0;
}

/* The interrupt hook: see the top of the file. */
static void interrupt_hook(lua_State *L, lua_Debug *ar) {
  worker_t *w;
  job_t *job;
  uint64_t now;
  (void)ar;
  lua_getfield(L, LUA_REGISTRYINDEX, WORKER_KEY);
  w = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (w == NULL || (job = w->current) == NULL ||
      !__atomic_load_n(&job->interrupt, __ATOMIC_ACQUIRE))
    return;
  now = synchro__now_ns();
  if (job->interrupted_ns != 0 &&
      now - job->interrupted_ns < INTERRUPT_AGAIN_NS)
    return;
  job->interrupted_ns = now;
  lua_pushliteral(L, INTERRUPTED);
  lua_error(L);
}

static lua_State *new_vm(pool_t *pool) {
  lua_State *L = luaL_newstate();
  if (L == NULL)
    return NULL;
  lua_pushcfunction(L, open_vm);
  lua_pushlightuserdata(L, pool);
  if (lua_pcall(L, 1, 0, 0) != 0) {
    lua_close(L);
    return NULL;
  }
  return L;
}

/* The message handler: keeps the traceback aside, returns the error. */
static int keep_traceback(lua_State *L) {
  luaL_traceback(L, L, NULL, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, TRACEBACK_KEY);
  return 1;
}

/* Pushes the job's function, decoded or from the cache; returns 0, or
 * pushes an error message and returns -1. */
int synchro__job_push_function(lua_State *L, job_t *job) {
  int t = lua_gettop(L), n;
  lua_getfield(L, LUA_REGISTRYINDEX, CACHE_KEY);     /* t + 1 */
  lua_pushlstring(L, job->code.data, job->code.len); /* t + 2 */
  lua_pushvalue(L, t + 2);
  lua_rawget(L, t + 1);
  if (lua_isfunction(L, -1)) {
    lua_replace(L, t + 1);
    lua_settop(L, t + 1);
    return 0;
  }
  lua_pop(L, 1);
  n = synchro__marshal_decode(L, job->code.data, job->code.len);
  if (n != 1 || !lua_isfunction(L, -1)) {
    if (n >= 0)
      lua_pushliteral(L, "run_in_thread: the function did not decode");
    lua_replace(L, t + 1);
    lua_settop(L, t + 1);
    return -1;
  }
  /* cache[code] = fn; start over when it grew too big */
  lua_getfield(L, LUA_REGISTRYINDEX, CACHE_COUNT_KEY);
  n = (int)lua_tointeger(L, -1) + 1;
  lua_pop(L, 1);
  if (n > CACHE_MAX) {
    n = 1;
    lua_newtable(L);
    lua_replace(L, t + 1);
    lua_pushvalue(L, t + 1);
    lua_setfield(L, LUA_REGISTRYINDEX, CACHE_KEY);
  }
  lua_pushinteger(L, n);
  lua_setfield(L, LUA_REGISTRYINDEX, CACHE_COUNT_KEY);
  lua_pushvalue(L, t + 2);
  lua_pushvalue(L, t + 3);
  lua_rawset(L, t + 1);
  lua_replace(L, t + 1);
  lua_settop(L, t + 1);
  return 0;
}

/* Runs the job in the worker's VM, protected against memory errors; the
 * outcome goes to job->reply. */
static int run_job(lua_State *L) {
  job_t *job = lua_touserdata(L, 1);
  int base, n, bad = 0;
  lua_settop(L, 0);
  lua_pushcfunction(L, keep_traceback);
  if (synchro__job_push_function(L, job) != 0) {
    lua_pushliteral(L, "");
    goto failed;
  }
  n = synchro__marshal_decode(L, job->args.data, job->args.len);
  if (n < 0) {
    lua_pushliteral(L, "");
    goto failed;
  }
  base = 2;
  lua_pushnil(L); /* no handler runs for memory errors */
  lua_setfield(L, LUA_REGISTRYINDEX, TRACEBACK_KEY);
  if (lua_pcall(L, n, LUA_MULTRET, 1) != 0) {
    lua_getfield(L, LUA_REGISTRYINDEX, TRACEBACK_KEY);
    if (!lua_isstring(L, -1)) {
      lua_pop(L, 1);
      lua_pushliteral(L, "");
    }
    goto failed;
  }
  n = lua_gettop(L) - base + 1;
  if (synchro__marshal_encode(L, base, n, SYNCHRO_MARSHAL_DATA, "results",
                              &job->reply, &bad) == 0) {
    job->outcome = OUTCOME_RESULTS;
    return 0;
  }
  lua_pushfstring(L, "bad result #%d (%s)", bad, lua_tostring(L, -1));
  lua_pushliteral(L, "");
failed:
  job->reply.len = 0;
  if (synchro__marshal_encode(L, lua_gettop(L) - 1, 2, SYNCHRO_MARSHAL_LENIENT,
                              "error", &job->reply, NULL) == 0)
    job->outcome = OUTCOME_ERROR;
  return 0;
}

static void execute(lua_State *L, job_t *job) {
  job->outcome = OUTCOME_NONE;
  if (L != NULL) {
    lua_pushcfunction(L, job->kind == KIND_GEN ? synchro__gen_run : run_job);
    lua_pushlightuserdata(L, job);
    if (lua_pcall(L, 1, 0, 0) != 0) {
      job->reply.len = 0;
      job->outcome = OUTCOME_NONE;
      lua_pushliteral(L, "");
      if (synchro__marshal_encode(L, lua_gettop(L) - 1, 2,
                                  SYNCHRO_MARSHAL_LENIENT, "error", &job->reply,
                                  NULL) == 0)
        job->outcome = OUTCOME_ERROR;
    }
    lua_settop(L, 0);
  }
  /* OUTCOME_NONE: the worker could not run it (no VM, no memory). The
   * code and arguments are no longer needed. */
  synchro__buf_free(&job->code);
  synchro__buf_free(&job->args);
}

static void worker_main(void *arg) {
  worker_t *w = arg;
  pool_t *pool = w->pool;
  lua_State *L;
  sigset_t all;
  int detach, last;
  /* Signals go to the program's own threads, as for the loop thread. */
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  L = new_vm(pool);
  if (L != NULL) {
    lua_pushlightuserdata(L, w);
    lua_setfield(L, LUA_REGISTRYINDEX, WORKER_KEY);
    lua_sethook(L, interrupt_hook, LUA_MASKCOUNT, WATCH_COUNT);
  }
  uv_mutex_lock(&pool->lock);
  pool->starting--;
  if (L != NULL)
    pool->vms_created++;
  for (;;) {
    job_t *job = pool->queue.head;
    if (pool->closing)
      break;
    if (job == NULL) {
      if (pool->nworkers > pool->max_workers)
        break; /* the pool was made smaller */
      pool->idle++;
      uv_cond_wait(&pool->cond, &pool->lock);
      pool->idle--;
      continue;
    }
    synchro__job_list_remove(&pool->queue, job);
    pool->queued--;
    list_push(&pool->running, job);
    job->state = JOB_RUNNING;
    synchro__incr(&job->refs); /* the worker's */
    w->busy = 1;
    w->current = job;
    uv_mutex_unlock(&pool->lock);

    execute(L, job);

    uv_mutex_lock(&pool->lock);
    w->current = NULL;
    w->busy = 0;
    job->state = JOB_DONE;
    if (job->kind == KIND_GEN && !job->orphaned)
      /* the consumer takes the end */
      synchro__job_list_remove(&pool->running, job);
    if (!job->orphaned)
      uv_async_send(&job->async); /* under the lock: see pool_shutdown */
    uv_mutex_unlock(&pool->lock);
    synchro__job_unref(job);
    uv_mutex_lock(&pool->lock);
  }
  /* Leave the pool. */
  {
    worker_t **pw = &pool->workers;
    while (*pw != w)
      pw = &(*pw)->next;
    *pw = w->next;
  }
  pool->nworkers--;
  detach = !w->joined;
  last = pool_unref_locked(pool);
  uv_mutex_unlock(&pool->lock);
  if (L != NULL)
    lua_close(L);
  if (detach)
    pthread_detach(pthread_self());
  free(w);
  if (last)
    pool_free(pool);
}

/* With the lock held: starts a worker if queued jobs outnumber the idle
 * workers and the pool may grow. Returns 0 or a libuv error. */
static int maybe_grow(pool_t *pool) {
  worker_t *w;
  int err;
  if (pool->queued <= pool->idle + pool->starting ||
      pool->nworkers >= pool->max_workers)
    return 0;
  w = calloc(1, sizeof(*w));
  if (w == NULL)
    return UV_ENOMEM;
  w->pool = pool;
  err = uv_thread_create(&w->thread, worker_main, w);
  if (err != 0) {
    free(w);
    return err;
  }
  w->next = pool->workers;
  pool->workers = w;
  pool->nworkers++;
  pool->starting++;
  pool->refs++;
  return 0;
}

/* ---- the loop side ---- */

static void on_job_done(uv_async_t *async) {
  job_t *job = async->data;
  pool_t *pool = job->pool;
  lua_State *L = pool->L;
  int ref, n, top = lua_gettop(L);
  if (job->kind == KIND_GEN) {
    synchro__gen_changed(L, job);
    return;
  }
  uv_mutex_lock(&pool->lock);
  if (job->state != JOB_DONE) {
    uv_mutex_unlock(&pool->lock);
    return;
  }
  synchro__job_list_remove(&pool->running, job);
  uv_mutex_unlock(&pool->lock);
  ref = job->cb_ref;
  job->cb_ref = LUA_NOREF;
  lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
  luaL_unref(L, LUA_REGISTRYINDEX, ref);
  lua_pushboolean(L, job->outcome == OUTCOME_RESULTS);
  if (job->outcome != OUTCOME_NONE) {
    n = synchro__marshal_decode(L, job->reply.data, job->reply.len);
  } else {
    lua_pushliteral(L, "run_in_thread: the worker could not run the "
                       "function (out of memory)");
    n = -1;
  }
  if (n < 0) {
    /* the message is on top: report it as the job's error */
    lua_pushboolean(L, 0);
    lua_replace(L, top + 2);
    lua_pushliteral(L, "");
    n = 2;
  }
  uv_close((uv_handle_t *)&job->async, synchro__job_closed);
  if (lua_pcall(L, 1 + n, 0, 0) != 0) {
    fprintf(stderr, "synchro: error in a run_in_thread callback: %s\n",
            lua_tostring(L, -1));
  }
  lua_settop(L, top);
}

/* Collects the pool with the loop VM: see the top of the file. */
static int pool_shutdown(lua_State *L) {
  pool_box_t *box = synchro__check_udata(L, 1, POOL_MT);
  pool_t *pool = box->pool;
  uv_thread_t *join;
  worker_t *w;
  job_t *job;
  int n = 0, i, last;
  if (pool == NULL)
    return 0;
  box->pool = NULL;
  uv_mutex_lock(&pool->lock);
  pool->closing = 1;
  while ((job = pool->queue.head) != NULL) {
    synchro__job_list_remove(&pool->queue, job);
    job->orphaned = 1;
    job->state = JOB_DONE; /* OUTCOME_NONE: it never ran */
    uv_close((uv_handle_t *)&job->async, synchro__job_closed);
  }
  pool->queued = 0;
  while ((job = pool->running.head) != NULL) {
    synchro__job_list_remove(&pool->running, job);
    job->orphaned = 1;
    job->closed = 1;
    __atomic_store_n(&job->interrupt, 1, __ATOMIC_RELEASE);
    if (job->kind == KIND_GEN)
      uv_cond_broadcast(&job->space);
    if (!uv_is_closing((uv_handle_t *)&job->async))
      uv_close((uv_handle_t *)&job->async, synchro__job_closed);
  }
  join = malloc((size_t)(pool->nworkers + 1) * sizeof(*join));
  for (w = pool->workers; w != NULL && join != NULL; w = w->next) {
    if (!w->busy) {
      w->joined = 1;
      join[n++] = w->thread;
    }
  }
  uv_cond_broadcast(&pool->cond);
  uv_mutex_unlock(&pool->lock);
  for (i = 0; i < n; i++)
    uv_thread_join(&join[i]);
  free(join);
  uv_mutex_lock(&pool->lock);
  last = pool_unref_locked(pool);
  uv_mutex_unlock(&pool->lock);
  if (last)
    pool_free(pool);
  return 0;
}

/* Pushes a new pool's owning userdata; the loop's (shared != 0) is kept
 * in the registry instead. */
static pool_t *new_pool(lua_State *L, synchro_t *S, int shared) {
  pool_box_t *box = lua_newuserdata(L, sizeof(*box));
  pool_t *pool;
  box->pool = NULL;
  luaL_setmetatable(L, POOL_MT);
  pool = calloc(1, sizeof(*pool));
  if (pool == NULL)
    luaL_error(L, "not enough memory");
  if (uv_mutex_init(&pool->lock) != 0) {
    free(pool);
    luaL_error(L, "cannot create a mutex");
  }
  if (uv_cond_init(&pool->cond) != 0) {
    uv_mutex_destroy(&pool->lock);
    free(pool);
    luaL_error(L, "cannot create a condition variable");
  }
  pool->refs = 1;
  pool->max_workers = DEFAULT_WORKERS;
  pool->S = S;
  pool->L = S->L;
  pool->open_core = S->open_core;
  box->pool = pool;
  lua_getglobal(L, "package");
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "path");
    if (lua_isstring(L, -1))
      pool->path = synchro__strdup(lua_tostring(L, -1));
    lua_getfield(L, -2, "cpath");
    if (lua_isstring(L, -1))
      pool->cpath = synchro__strdup(lua_tostring(L, -1));
    lua_pop(L, 2);
  }
  lua_pop(L, 1);
  if (shared)
    lua_setfield(L, LUA_REGISTRYINDEX, POOL_KEY);
  return pool;
}

/* The loop's pool, created on first use (create != 0), or NULL. */
static pool_t *get_pool(lua_State *L, int create) {
  synchro_t *S = synchro__loop_of(L);
  pool_box_t *box;
  lua_getfield(L, LUA_REGISTRYINDEX, POOL_KEY);
  box = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (box != NULL && box->pool != NULL)
    return box->pool;
  return create ? new_pool(L, S, 1) : NULL;
}

/* The pool at idx (a private pool's userdata), or the loop's if nil. */
pool_t *synchro__workers_opt_pool(lua_State *L, int idx) {
  pool_box_t *box;
  if (lua_isnoneornil(L, idx))
    return get_pool(L, 1);
  box = synchro__check_udata(L, idx, POOL_MT);
  if (box->pool == NULL)
    luaL_error(L, "this worker pool is closed");
  return box->pool;
}

/* A new job of pool: fn at fn_idx, its arguments from first to the top,
 * the callback at cb_idx (referenced). Raises on bad values. */
job_t *synchro__job_new(lua_State *L, pool_t *pool, int kind, int fn_idx,
                        int cb_idx, int first) {
  int top = lua_gettop(L), bad = 0;
  job_t *job = calloc(1, sizeof(*job));
  if (job == NULL)
    luaL_error(L, "not enough memory");
  job->refs = 1;
  job->pool = pool;
  uv_mutex_lock(&pool->lock);
  pool->refs++; /* released with the job */
  uv_mutex_unlock(&pool->lock);
  job->kind = kind;
  job->cb_ref = LUA_NOREF;
  if (kind == KIND_GEN && uv_cond_init(&job->space) != 0) {
    job->kind = KIND_CALL; /* no cond to destroy */
    synchro__job_unref(job);
    luaL_error(L, "cannot create a condition variable");
  }
  if (synchro__marshal_encode(L, fn_idx, 1, SYNCHRO_MARSHAL_CODE, "fn",
                              &job->code, NULL) != 0) {
    synchro__job_unref(job);
    luaL_error(L, "bad argument #1 to 'run_in_thread' (%s)",
               lua_tostring(L, -1));
  }
  if (synchro__marshal_encode(L, first, top - first + 1, SYNCHRO_MARSHAL_DATA,
                              "args", &job->args, &bad) != 0) {
    synchro__job_unref(job);
    luaL_error(L, "bad argument #%d to 'run_in_thread' (%s)", bad + 1,
               lua_tostring(L, -1));
  }
  lua_pushvalue(L, cb_idx);
  job->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  uv_async_init(&pool->S->loop, &job->async, on_job_done);
  job->async.data = job;
  return job;
}

/* Queues job and wakes or starts a worker; raises if none can start. */
void synchro__job_enqueue(lua_State *L, pool_t *pool, job_t *job) {
  int err;
  uv_mutex_lock(&pool->lock);
  job->id = ++pool->last_id;
  job->state = JOB_QUEUED;
  list_push(&pool->queue, job);
  pool->queued++;
  err = maybe_grow(pool);
  if (err != 0 && pool->nworkers == 0) {
    synchro__job_list_remove(&pool->queue, job);
    pool->queued--;
    uv_mutex_unlock(&pool->lock);
    luaL_unref(L, LUA_REGISTRYINDEX, job->cb_ref);
    job->cb_ref = LUA_NOREF;
    uv_close((uv_handle_t *)&job->async, synchro__job_closed);
    luaL_error(L, "run_in_thread: cannot start a worker thread (%s)",
               uv_strerror(err));
  }
  uv_cond_signal(&pool->cond);
  uv_mutex_unlock(&pool->lock);
}

/* core.workers_submit(fn, callback, ...) -> id: runs fn(...) on a worker
 * of the loop's pool; callback(true, results...) or callback(false,
 * error, traceback) follows on the loop. Thread: loop thread. */
static int workers_submit(lua_State *L) {
  pool_t *pool = get_pool(L, 1);
  job_t *job;
  luaL_checktype(L, 1, LUA_TFUNCTION);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  job = synchro__job_new(L, pool, KIND_CALL, 1, 2, 3);
  synchro__job_enqueue(L, pool, job);
  lua_pushinteger(L, (lua_Integer)job->id);
  return 1;
}

/* core.workers_submit_on(pool, fn, callback, ...) -> id: the same on a
 * private pool (core.workers_pool). */
static int workers_submit_on(lua_State *L) {
  pool_t *pool = synchro__workers_opt_pool(L, 1);
  job_t *job;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  job = synchro__job_new(L, pool, KIND_CALL, 2, 3, 4);
  synchro__job_enqueue(L, pool, job);
  lua_pushinteger(L, (lua_Integer)job->id);
  return 1;
}

/* core.workers_pool(max_workers) -> a private pool, shut down with its
 * userdata (collected, or the loop VM closed). */
static int workers_pool(lua_State *L) {
  lua_Integer max = luaL_checkinteger(L, 1);
  pool_t *pool;
  luaL_argcheck(L, max >= 1 && max <= 1024, 1, "between 1 and 1024 expected");
  pool = new_pool(L, synchro__loop_of(L), 0);
  pool->max_workers = (int)max;
  return 1;
}

/* Drops a queued job (its callback will not run): under pool's lock. */
int synchro__job_drop_queued_locked(pool_t *pool, job_t *job) {
  job_t *j;
  for (j = pool->queue.head; j != NULL && j != job; j = j->next)
    ;
  if (j == NULL)
    return 0;
  synchro__job_list_remove(&pool->queue, job);
  pool->queued--;
  return 1;
}

/* core.workers_cancel(id [, pool]) -> true if the job had not started (it
 * is dropped and its callback will not run), else false: a running job is
 * interrupted (see the top of the file) and its callback follows. */
static int workers_cancel(lua_State *L) {
  int64_t id = (int64_t)luaL_checkinteger(L, 1);
  pool_t *pool;
  job_t *job = NULL;
  int dropped = 0;
  if (lua_isnoneornil(L, 2)) {
    pool = get_pool(L, 0);
  } else { /* a private pool shut down has no job left to cancel */
    pool_box_t *box = synchro__check_udata(L, 2, POOL_MT);
    pool = box->pool;
  }
  if (pool != NULL) {
    uv_mutex_lock(&pool->lock);
    for (job = pool->queue.head; job != NULL; job = job->next)
      if (job->id == id)
        break;
    if (job != NULL) {
      dropped = synchro__job_drop_queued_locked(pool, job);
    } else {
      for (job = pool->running.head; job != NULL; job = job->next)
        if (job->id == id)
          break;
      if (job != NULL)
        __atomic_store_n(&job->interrupt, 1, __ATOMIC_RELEASE);
    }
    uv_mutex_unlock(&pool->lock);
  }
  if (dropped) {
    luaL_unref(L, LUA_REGISTRYINDEX, job->cb_ref);
    job->cb_ref = LUA_NOREF;
    uv_close((uv_handle_t *)&job->async, synchro__job_closed);
  }
  lua_pushboolean(L, dropped);
  return 1;
}

/* core.workers_configure(max_workers): the pool's bound (>= 1). Idle
 * workers beyond it exit. */
static int workers_configure(lua_State *L) {
  pool_t *pool = get_pool(L, 1);
  lua_Integer max = luaL_checkinteger(L, 1);
  luaL_argcheck(L, max >= 1 && max <= 1024, 1, "between 1 and 1024 expected");
  uv_mutex_lock(&pool->lock);
  pool->max_workers = (int)max;
  uv_cond_broadcast(&pool->cond);
  while (pool->queued > pool->idle + pool->starting &&
         pool->nworkers < pool->max_workers && maybe_grow(pool) == 0)
    ;
  uv_mutex_unlock(&pool->lock);
  return 0;
}

/* core.workers_stats() -> { workers, idle, busy, queued, max, vms } (vms:
 * worker VMs created so far, for tests). */
static int workers_stats(lua_State *L) {
  pool_t *pool = get_pool(L, 0);
  int workers = 0, idle = 0, queued = 0, max = DEFAULT_WORKERS, vms = 0;
  if (pool != NULL) {
    uv_mutex_lock(&pool->lock);
    workers = pool->nworkers;
    idle = pool->idle;
    queued = pool->queued;
    max = pool->max_workers;
    vms = pool->vms_created;
    uv_mutex_unlock(&pool->lock);
  }
  lua_createtable(L, 0, 6);
  lua_pushinteger(L, workers);
  lua_setfield(L, -2, "workers");
  lua_pushinteger(L, idle);
  lua_setfield(L, -2, "idle");
  lua_pushinteger(L, workers - idle);
  lua_setfield(L, -2, "busy");
  lua_pushinteger(L, queued);
  lua_setfield(L, -2, "queued");
  lua_pushinteger(L, max);
  lua_setfield(L, -2, "max");
  lua_pushinteger(L, vms);
  lua_setfield(L, -2, "vms");
  return 1;
}

void synchro__workers_register(lua_State *L) {
  static const luaL_Reg funcs[] = {{"workers_submit", workers_submit},
                                   {"workers_submit_on", workers_submit_on},
                                   {"workers_pool", workers_pool},
                                   {"workers_cancel", workers_cancel},
                                   {"workers_configure", workers_configure},
                                   {"workers_stats", workers_stats},
                                   {NULL, NULL}};
  const luaL_Reg *f;
  if (luaL_newmetatable(L, POOL_MT)) {
    lua_pushcfunction(L, pool_shutdown);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  synchro__workers_gen_register(L);
  for (f = funcs; f->name != NULL; f++) {
    lua_pushcfunction(L, f->func);
    lua_setfield(L, -2, f->name);
  }
}
