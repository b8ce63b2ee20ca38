/* Private to the worker pools (workers.c, workers_gen.c): the job, worker
 * and pool records, and what the two files share. Every field of a pool or
 * a job is under the pool's lock unless its comment says otherwise. */
#ifndef SYNCHRO_WORKERS_H
#define SYNCHRO_WORKERS_H

#include "aio.h"

#define POOL_MT            "synchro.workers"
#define POOL_KEY           "synchro.workers.pool"
#define DEFAULT_WORKERS    4
#define CACHE_KEY          "synchro.worker.cache"
#define CACHE_COUNT_KEY    "synchro.worker.cache_count"
#define CACHE_MAX          64
#define TRACEBACK_KEY      "synchro.worker.traceback"
#define WORKER_KEY         "synchro.worker.self"
#define GEN_MT             "synchro.workers.gen"
#define WATCH_COUNT        1000
#define INTERRUPT_AGAIN_NS 1000000000u
#define INTERRUPTED        "ECANCELED: the job was cancelled"
#define MAX_DROPPED_YIELDS 100000

enum { JOB_QUEUED, JOB_RUNNING, JOB_DONE };
enum { OUTCOME_NONE, OUTCOME_RESULTS, OUTCOME_ERROR };
enum { KIND_CALL, KIND_GEN };

typedef struct item item_t;
struct item {
  item_t *next;
  synchro_buf_t values;
};

typedef struct pool pool_t;
typedef struct job job_t;
typedef struct worker worker_t;

struct job {
  job_t *prev, *next; /* in the pool's queue, then its running list */
  int64_t id;
  int state;
  int refs;     /* the async handle's, plus the worker's while it runs */
  int orphaned; /* the loop is gone: the worker must not wake it */
  int outcome;  /* OUTCOME_*: what job->reply holds */
  int cb_ref;
  int kind;      /* KIND_* */
  int interrupt; /* atomic: set by the loop thread, read by the hook */
  uint64_t interrupted_ns; /* the worker's: when the hook last raised */
  uv_async_t async;
  pool_t *pool;
  synchro_buf_t code, args, reply;
  /* generators, under the pool's lock */
  item_t *items, *items_tail;
  int nitems, capacity;
  int closed; /* the consumer is gone: stop, drop items */
  uv_cond_t space;
};

typedef struct {
  job_t *job;
} gen_box_t;

typedef struct {
  job_t *head, *tail;
} job_list_t;

struct worker {
  worker_t *next;
  pool_t *pool;
  uv_thread_t thread;
  job_t *current; /* the job it runs (the worker thread's alone) */
  int busy;
  int joined; /* the shutdown joins it; else it detaches itself */
};

struct pool {
  uv_mutex_t lock;
  uv_cond_t cond;
  job_list_t queue, running;
  worker_t *workers;
  int nworkers, idle, starting, queued, max_workers, closing;
  int refs; /* the loop's, plus one per worker and one per job */
  int vms_created;
  int64_t last_id;
  char *path, *cpath;
  lua_CFunction open_core; /* synchro.core, for the worker VMs */
  synchro_t *S;
  lua_State *L; /* the loop VM's main state */
};

typedef struct {
  pool_t *pool;
} pool_box_t;

/* Thread: any (the last reference may go on a worker). */
void synchro__job_unref(job_t *job);
void synchro__job_free_items(item_t *item);
/* uv_close callback of a job's async. Thread: loop thread. */
void synchro__job_closed(uv_handle_t *handle);
void synchro__job_list_remove(job_list_t *list, job_t *job);
/* Thread: the worker's. */
int synchro__job_push_function(lua_State *L, job_t *job);
/* Thread: loop thread (they raise on bad values). */
pool_t *synchro__workers_opt_pool(lua_State *L, int idx);
job_t *synchro__job_new(lua_State *L, pool_t *pool, int kind, int fn_idx,
                        int cb_idx, int first);
void synchro__job_enqueue(lua_State *L, pool_t *pool, job_t *job);
/* With the pool's lock held. */
int synchro__job_drop_queued_locked(pool_t *pool, job_t *job);

/* workers_gen.c */
/* Runs a generator job in a worker VM (lua_CFunction). Thread: worker. */
int synchro__gen_run(lua_State *L);
/* A generator job's async fired. Thread: loop thread. */
void synchro__gen_changed(lua_State *L, job_t *job);
/* Adds core.workers_gen and the generator's metatable. */
void synchro__workers_gen_register(lua_State *L);

#endif
