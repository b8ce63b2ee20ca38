/* Blocking generators on worker threads (core.workers_gen, used by
 * aio.iter_in_thread): see the top of workers.c. The worker runs the
 * function as a coroutine and queues each yield as an item, waiting while
 * the queue is full; the loop takes items on demand. */
#include <stdlib.h>

#include "workers.h"

/* A generator's item: the n values on co's top, queued for the loop; then
 * waits while the queue is full. Returns 0, or -1 when the consumer is
 * gone (the item is dropped). An encoding error is pushed on L, returns
 * -2. */
static int push_item(lua_State *L, lua_State *co, job_t *job, int n) {
  pool_t *pool = job->pool;
  item_t *item = calloc(1, sizeof(*item));
  int bad = 0, closed;
  if (item == NULL)
    return luaL_error(L, "not enough memory");
  if (synchro__marshal_encode(co, lua_gettop(co) - n + 1, n,
                              SYNCHRO_MARSHAL_DATA, "item", &item->values,
                              &bad) != 0) {
    lua_pushfstring(L, "bad item value #%d (%s)", bad, lua_tostring(co, -1));
    lua_pop(co, 1);
    synchro__buf_free(&item->values);
    free(item);
    return -2;
  }
  uv_mutex_lock(&pool->lock);
  if (!job->closed) {
    if (job->items_tail != NULL)
      job->items_tail->next = item;
    else
      job->items = item;
    job->items_tail = item;
    job->nitems++;
    item = NULL;
    if (!job->orphaned)
      uv_async_send(&job->async);
    while (job->nitems >= job->capacity && !job->closed)
      uv_cond_wait(&job->space, &pool->lock);
  }
  closed = job->closed;
  uv_mutex_unlock(&pool->lock);
  if (item != NULL) {
    synchro__buf_free(&item->values);
    free(item);
  }
  return closed ? -1 : 0;
}

/* Runs a generator job: see the top of the file. */
int synchro__gen_run(lua_State *L) {
  job_t *job = lua_touserdata(L, 1);
  lua_State *co;
  int n, nres, status, closed = 0, dropped = 0;
  lua_settop(L, 0);
  /* 1: the function, or a message */
  if (synchro__job_push_function(L, job) != 0) {
    lua_pushliteral(L, "");
    goto failed;
  }
  co = lua_newthread(L); /* 2 */
  lua_pushvalue(L, 1);
  lua_xmove(L, co, 1);
  n = synchro__marshal_decode(co, job->args.data, job->args.len);
  if (n < 0) {
    lua_xmove(co, L, 1);
    lua_pushliteral(L, "");
    goto failed;
  }
  for (;;) {
    status = synchro__resume(co, L, n, &nres);
    n = 0;
    if (status == LUA_YIELD) {
      if (closed) {
        /* dropped: resume until the hook ends it; a generator that yields
         * faster than the hook counts (LuaJIT's hook count does not carry
         * over between resumes) is abandoned after a bound */
        lua_pop(co, nres);
        if (++dropped <= MAX_DROPPED_YIELDS)
          continue;
        status = LUA_OK; /* abandoned: its end */
      }
    }
    if (status == LUA_YIELD) {
      switch (push_item(L, co, job, nres)) {
      case -2:
        lua_pushliteral(L, "");
        goto failed;
      case -1:
        closed = 1;
        break;
      default:
        break;
      }
      lua_pop(co, nres);
      continue;
    }
    if (status == LUA_OK || closed) { /* the end, or a closed one's */
      job->outcome = OUTCOME_RESULTS; /* the end (no values) */
      job->reply.len = 0;
      lua_settop(L, 0);
      if (synchro__marshal_encode(L, 1, 0, SYNCHRO_MARSHAL_DATA, "results",
                                  &job->reply, NULL) != 0)
        job->outcome = OUTCOME_NONE;
      return 0;
    }
    lua_xmove(co, L, 1); /* the error */
    luaL_traceback(L, co, NULL, 0);
    goto failed;
  }
failed:
  job->reply.len = 0;
  if (synchro__marshal_encode(L, lua_gettop(L) - 1, 2, SYNCHRO_MARSHAL_LENIENT,
                              "error", &job->reply, NULL) == 0)
    job->outcome = OUTCOME_ERROR;
  return 0;
}

/* A generator's async: its queue or state changed; tells the consumer. */
void synchro__gen_changed(lua_State *L, job_t *job) {
  int top = lua_gettop(L);
  if (job->cb_ref == LUA_NOREF)
    return;
  lua_rawgeti(L, LUA_REGISTRYINDEX, job->cb_ref);
  if (lua_pcall(L, 0, 0, 0) != 0)
    fprintf(stderr, "synchro: error in a generator's notify: %s\n",
            lua_tostring(L, -1));
  lua_settop(L, top);
}

/* ---- generators ---- */

/* core.workers_gen(pool|nil, capacity, fn, notify, ...) -> gen: runs
 * fn(...) as a coroutine on a worker, its yields queued as items (at most
 * capacity waiting); notify() runs on the loop when items arrive or the
 * generator ends. Thread: loop thread. */
static int workers_gen(lua_State *L) {
  pool_t *pool = synchro__workers_opt_pool(L, 1);
  lua_Integer capacity = luaL_checkinteger(L, 2);
  gen_box_t *box;
  job_t *job;
  luaL_argcheck(L, capacity >= 1 && capacity <= 1000000, 2,
                "between 1 and 1000000 expected");
  luaL_checktype(L, 3, LUA_TFUNCTION);
  luaL_checktype(L, 4, LUA_TFUNCTION);
  job = synchro__job_new(L, pool, KIND_GEN, 3, 4, 5);
  job->capacity = (int)capacity;
  box = lua_newuserdata(L, sizeof(*box));
  box->job = NULL;
  luaL_setmetatable(L, GEN_MT);
  synchro__incr(&job->refs); /* the box's */
  box->job = job;
  synchro__job_enqueue(L, pool, job);
  return 1;
}

static job_t *check_gen(lua_State *L) {
  gen_box_t *box = synchro__check_udata(L, 1, GEN_MT);
  return box->job;
}

/* gen:take() -> "more", {items} | "end" | "error", err, traceback. Each
 * item is a table { n = count, values... }. Frees room for the worker. */
static int gen_take(lua_State *L) {
  job_t *job = check_gen(L);
  pool_t *pool;
  item_t *items, *item;
  int state, i = 0, n;
  if (job == NULL) {
    lua_pushliteral(L, "end");
    return 1;
  }
  pool = job->pool;
  uv_mutex_lock(&pool->lock);
  items = job->items;
  job->items = job->items_tail = NULL;
  job->nitems = 0;
  state = job->state;
  uv_cond_signal(&job->space);
  uv_mutex_unlock(&pool->lock);
  if (items != NULL || state != JOB_DONE) {
    lua_pushliteral(L, "more");
    lua_newtable(L);
    for (item = items; item != NULL; item = item->next) {
      int top = lua_gettop(L), k; /* top: the list of items */
      n = synchro__marshal_decode(L, item->values.data, item->values.len);
      if (n < 0) {
        synchro__job_free_items(items);
        return lua_error(L);
      }
      lua_createtable(L, n, 1);
      for (k = n; k >= 1; k--) {
        lua_pushvalue(L, top + k);
        lua_rawseti(L, -2, k);
      }
      lua_pushinteger(L, n);
      lua_setfield(L, -2, "n");
      lua_replace(L, top + 1);
      lua_settop(L, top + 1);
      lua_rawseti(L, top, ++i);
    }
    synchro__job_free_items(items);
    return 2;
  }
  if (job->outcome == OUTCOME_RESULTS) {
    lua_pushliteral(L, "end");
    return 1;
  }
  lua_pushliteral(L, "error");
  if (job->outcome == OUTCOME_ERROR) {
    n = synchro__marshal_decode(L, job->reply.data, job->reply.len);
    if (n < 0)
      lua_pushliteral(L, "");
    return 1 + (n < 0 ? 2 : n);
  }
  lua_pushliteral(L, "run_in_thread: the worker could not run the "
                     "generator (out of memory)");
  lua_pushliteral(L, "");
  return 3;
}

/* gen:stop(): the consumer is done; a queued generator is dropped, a
 * running one interrupted (its cleanup runs on the worker, then notify
 * runs and take() says "end"). Returns true if it has ended. */
static int gen_stop(lua_State *L) {
  job_t *job = check_gen(L);
  pool_t *pool;
  int ended;
  if (job == NULL) {
    lua_pushboolean(L, 1);
    return 1;
  }
  pool = job->pool;
  uv_mutex_lock(&pool->lock);
  if (job->state == JOB_QUEUED && synchro__job_drop_queued_locked(pool, job)) {
    job->state = JOB_DONE;
    job->outcome = OUTCOME_RESULTS;
  }
  ended = job->state == JOB_DONE;
  job->closed = 1;
  __atomic_store_n(&job->interrupt, 1, __ATOMIC_RELEASE);
  uv_cond_broadcast(&job->space);
  uv_mutex_unlock(&pool->lock);
  lua_pushboolean(L, ended);
  return 1;
}

/* gen:close() (and __gc): stops it and lets it go: no notify after this;
 * safe to call twice. */
static int gen_close(lua_State *L) {
  gen_box_t *box = synchro__check_udata(L, 1, GEN_MT);
  job_t *job = box->job;
  pool_t *pool;
  if (job == NULL)
    return 0;
  gen_stop(L);
  box->job = NULL;
  pool = job->pool;
  uv_mutex_lock(&pool->lock);
  if (job->state == JOB_RUNNING && !job->orphaned)
    synchro__job_list_remove(&pool->running, job);
  if (!job->orphaned) {
    job->orphaned = 1;
    uv_close((uv_handle_t *)&job->async, synchro__job_closed);
  }
  uv_mutex_unlock(&pool->lock);
  luaL_unref(L, LUA_REGISTRYINDEX, job->cb_ref);
  job->cb_ref = LUA_NOREF;
  synchro__job_unref(job); /* the box's */
  return 0;
}

void synchro__workers_gen_register(lua_State *L) {
  static const luaL_Reg methods[] = {{"take", gen_take},
                                     {"stop", gen_stop},
                                     {"close", gen_close},
                                     {NULL, NULL}};
  const luaL_Reg *m;
  if (luaL_newmetatable(L, GEN_MT)) {
    lua_newtable(L);
    for (m = methods; m->name != NULL; m++) {
      lua_pushcfunction(L, m->func);
      lua_setfield(L, -2, m->name);
    }
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, gen_close);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, workers_gen);
  lua_setfield(L, -2, "workers_gen");
}
