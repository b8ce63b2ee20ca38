/* The Synchronizer: one libuv loop on its own thread, with its own Lua VM.
 *
 * Waking the loop costs a system call, so producers only uv_async_send
 * when the loop has said it is about to sleep ("parked"). After it handled
 * messages, the loop spins a little in its prepare phase before it parks,
 * because a blocking caller usually sends the next call within a few
 * microseconds. */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define LOOP_SPIN_NS 50000ULL /* after activity, poll the mailbox this long */

static uv_key_t current_key;
static uv_once_t current_once = UV_ONCE_INIT;

static void current_key_init(void) { uv_key_create(&current_key); }

synchro_t *synchro__current(void) {
  uv_once(&current_once, current_key_init);
  return uv_key_get(&current_key);
}

static char *dup_or_null(const char *s) {
  size_t n;
  char *d;
  if (s == NULL)
    return NULL;
  n = strlen(s) + 1;
  d = malloc(n);
  if (d != NULL)
    memcpy(d, s, n);
  return d;
}

synchro_t *synchro__new(const char *name, const char *path,
                        const char *cpath, synchro_vm_init_cb vm_init) {
  synchro_t *S = synchro__alloc_aligned(sizeof(*S));
  if (S == NULL)
    return NULL;
  S->refs = 1;
  S->state = SYNCHRO_STATE_NEW;
  S->next_fn_id = 1;
  S->name = dup_or_null(name != NULL ? name : "synchro");
  S->path = dup_or_null(path);
  S->cpath = dup_or_null(cpath);
  S->vm_init = vm_init;
  S->runtime_ref = LUA_NOREF;
  S->close_grace = 5.0;
  synchro__mailbox_init(&S->mailbox);
  if (uv_mutex_init(&S->lock) != 0) {
    free(S);
    return NULL;
  }
  return S;
}

void synchro__ref(synchro_t *S) { synchro__incr(&S->refs); }

static void free_msg(synchro_msg_t *msg) {
  switch (msg->kind) {
  case SYNCHRO_MSG_CALL:
    synchro__call_complete((synchro_call_t *)msg, SYNCHRO_CALL_CLOSED);
    synchro__call_unref((synchro_call_t *)msg);
    break;
  case SYNCHRO_MSG_DEFINE:
    synchro__buf_free(&((synchro_define_t *)msg)->code);
    free(msg);
    break;
  case SYNCHRO_MSG_CANCEL:
    synchro__call_unref(((synchro_cancel_t *)msg)->call);
    free(msg);
    break;
  }
}

static void drop_messages(synchro_t *S) {
  synchro_msg_t *msg = synchro__mailbox_take(&S->mailbox);
  while (msg != NULL) {
    synchro_msg_t *next = msg->next;
    free_msg(msg);
    msg = next;
  }
}

void synchro__unref(synchro_t *S) {
  if (S == NULL || synchro__decr(&S->refs) != 0)
    return;
  if (S->forked)
    return; /* its lock and loop belonged to threads of the parent */
  /* The last reference: the owner closed it, or it never started. */
  synchro__close(S, 0);
  drop_messages(S);
  if (S->loop_abandoned)
    return; /* leaked on purpose: see thread_main */
  uv_mutex_destroy(&S->lock);
  free(S->name);
  free(S->path);
  free(S->cpath);
  free(S->start_message);
  free(S);
}

int synchro__is_loop_thread(synchro_t *S) { return synchro__current() == S; }

/* ---- the loop thread ---- */

static void on_grace_expired(uv_timer_t *timer);

static int drain(synchro_t *S) {
  int n = 0;
  synchro_msg_t *msg = synchro__mailbox_take(&S->mailbox);
  while (msg != NULL) {
    synchro_msg_t *next = msg->next;
    synchro__loopside_dispatch(S, msg);
    msg = next;
    n++;
  }
  return n;
}

static void on_wakeup(uv_async_t *handle) {
  synchro_t *S = handle->data;
  __atomic_store_n(&S->parked, 0, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&S->close_requested, __ATOMIC_SEQ_CST) == 1) {
    __atomic_store_n(&S->close_requested, 2, __ATOMIC_SEQ_CST);
    uv_timer_start(&S->grace_timer, on_grace_expired,
                   (uint64_t)(S->close_grace * 1000), 0);
    synchro__loopside_close(S, S->close_grace);
  }
  if (drain(S) > 0)
    S->last_activity_ns = synchro__now_ns();
}

static void on_prepare(uv_prepare_t *handle) {
  synchro_t *S = handle->data;
  uint64_t now;
  if (drain(S) > 0)
    S->last_activity_ns = synchro__now_ns();
  /* Spin only while calls keep coming: an idle loop costs no CPU. */
  now = synchro__now_ns();
  while (now - S->last_activity_ns < LOOP_SPIN_NS &&
         synchro__load(&S->state) == SYNCHRO_STATE_RUNNING) {
    unsigned i;
    for (i = 0; i < 64 && synchro__mailbox_empty(&S->mailbox); i++)
      synchro__cpu_relax();
    if (drain(S) > 0) {
      S->last_activity_ns = synchro__now_ns();
      /* Work it started (timers, callbacks) must run: leave prepare, but
       * through the park below: uv_backend_timeout() can be 0 (new I/O
       * watchers) while uv_run still polls with an infinite timeout. */
      if (uv_loop_alive(&S->loop) && uv_backend_timeout(&S->loop) == 0)
        break;
    }
    now = synchro__now_ns();
  }
  /* Park: Dekker with synchro__send (store parked, then re-check). */
  for (;;) {
    __atomic_store_n(&S->parked, 1, __ATOMIC_SEQ_CST);
    if (synchro__mailbox_empty(&S->mailbox))
      return;
    __atomic_store_n(&S->parked, 0, __ATOMIC_SEQ_CST);
    drain(S);
  }
}

static void close_walk(uv_handle_t *handle, void *arg) {
  if (!uv_is_closing(handle))
    uv_close(handle, NULL);
}

#define FINAL_DRAIN_NS 2000000000ULL /* 2 s */

static void thread_main(void *arg) {
  synchro_t *S = arg;
  uint64_t deadline;
  sigset_t all;
  lua_State *L;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  uv_once(&current_once, current_key_init);
  uv_key_set(&current_key, S);

  L = luaL_newstate();
  if (L == NULL) {
    S->start_error = SYNCHRO_ENOMEM;
    synchro__event_set(&S->started);
    return;
  }
  S->L = L;
  if (S->vm_init(L, S) != 0) {
    const char *msg = lua_tostring(L, -1);
    S->start_message = dup_or_null(msg != NULL ? msg : "loop VM failed");
    S->start_error = SYNCHRO_ETHREAD;
    lua_close(L);
    S->L = NULL;
    synchro__event_set(&S->started);
    return;
  }
  synchro__event_set(&S->started);

  uv_run(&S->loop, UV_RUN_DEFAULT);

  /* Stopped: fail what is still queued, free the VM, close the handles. */
  if (S->loop_notifier != NULL) {
    synchro__notifier_detach_loop(S->loop_notifier);
    synchro__notifier_unref(S->loop_notifier);
    S->loop_notifier = NULL;
  }
  synchro__mailbox_close(&S->mailbox);
  drop_messages(S);
  synchro__loopside_shutdown(S);
  lua_close(L);
  S->L = NULL;
  uv_walk(&S->loop, close_walk, NULL);
  /* Let close callbacks and finishing threadpool requests run (their
   * callbacks no longer touch Lua), but not forever: a request stuck in
   * the threadpool (a read of a FIFO, say) must not hang close. Then the
   * loop is left as it is rather than closed under a live request. */
  deadline = synchro__now_ns() + FINAL_DRAIN_NS;
  while (uv_run(&S->loop, UV_RUN_NOWAIT) != 0 &&
         synchro__now_ns() < deadline)
    uv_sleep(1);
  if (uv_loop_alive(&S->loop))
    S->loop_abandoned = 1; /* a request may still land in it: keep S */
  else
    uv_loop_close(&S->loop);
}

/* ---- life cycle ---- */

static uv_mutex_t live_lock;
static uv_once_t live_once = UV_ONCE_INIT;
static synchro_t **live;
static size_t live_count, live_cap;

static void at_exit(void) {
  /* Close what the program left open, so that tasks' cleanup runs. */
  for (;;) {
    synchro_t *S = NULL;
    uv_mutex_lock(&live_lock);
    if (live_count > 0) {
      S = live[live_count - 1];
      synchro__ref(S);
    }
    uv_mutex_unlock(&live_lock);
    if (S == NULL)
      break;
    synchro__close(S, S->close_grace);
    synchro__unref(S);
  }
}

/* fork(): the child has none of the loop threads. Synchronizers that were
 * running are dead there: they refuse calls, and closing them (at exit
 * too) touches nothing the threads owned. One that never started starts
 * afresh in the child on first use. No lock is held across the fork. */
static void atfork_prepare(void) { uv_mutex_lock(&live_lock); }

static void atfork_parent(void) { uv_mutex_unlock(&live_lock); }

static void atfork_child(void) {
  size_t i;
  for (i = 0; i < live_count; i++) {
    synchro_t *S = live[i];
    S->forked = 1;
    S->state = SYNCHRO_STATE_CLOSED;
    S->thread_started = 0;
    S->mailbox.closed = 1;
  }
  live_count = 0;
  uv_mutex_unlock(&live_lock);
}

static void live_init(void) {
  uv_mutex_init(&live_lock);
  atexit(at_exit);
  pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

static void live_add(synchro_t *S) {
  uv_mutex_lock(&live_lock);
  if (live_count == live_cap) {
    size_t cap = live_cap ? live_cap * 2 : 8;
    synchro_t **grown = realloc(live, cap * sizeof(*live));
    if (grown == NULL) {
      uv_mutex_unlock(&live_lock);
      return; /* only the exit-time close is lost */
    }
    live = grown;
    live_cap = cap;
  }
  live[live_count++] = S;
  uv_mutex_unlock(&live_lock);
}

static void live_remove(synchro_t *S) {
  size_t i;
  uv_mutex_lock(&live_lock);
  for (i = 0; i < live_count; i++) {
    if (live[i] == S) {
      live[i] = live[--live_count];
      break;
    }
  }
  uv_mutex_unlock(&live_lock);
}

int synchro__start(synchro_t *S) {
  int err = 0;
  if (S->forked)
    return SYNCHRO_ECLOSED;
  if (synchro__load(&S->state) == SYNCHRO_STATE_RUNNING)
    return S->start_error;
  uv_mutex_lock(&S->lock);
  if (S->state == SYNCHRO_STATE_NEW) {
    uv_once(&live_once, live_init);
    err = uv_loop_init(&S->loop);
    if (err == 0) {
      uv_async_init(&S->loop, &S->wakeup, on_wakeup);
      uv_prepare_init(&S->loop, &S->prepare);
      uv_timer_init(&S->loop, &S->grace_timer);
      uv_unref((uv_handle_t *)&S->grace_timer);
      S->wakeup.data = S->prepare.data = S->grace_timer.data = S;
      uv_prepare_start(&S->prepare, on_prepare);
      err = uv_thread_create(&S->thread, thread_main, S);
      if (err != 0)
        uv_loop_close(&S->loop);
    }
    if (err != 0) {
      S->start_error = SYNCHRO_ETHREAD;
      synchro__store(&S->state, SYNCHRO_STATE_CLOSED);
      synchro__mailbox_close(&S->mailbox);
    } else {
      S->thread_started = 1;
      synchro__event_wait(&S->started, SYNCHRO_WAIT_FOREVER, NULL, NULL);
      if (S->start_error == 0) {
        live_add(S);
        synchro__store(&S->state, SYNCHRO_STATE_RUNNING);
      } else {
        synchro__store(&S->state, SYNCHRO_STATE_CLOSED);
        synchro__mailbox_close(&S->mailbox);
        uv_thread_join(&S->thread);
        S->thread_started = 0;
      }
    }
  }
  if (S->state != SYNCHRO_STATE_RUNNING)
    err = S->start_error != 0 ? S->start_error : SYNCHRO_ECLOSED;
  uv_mutex_unlock(&S->lock);
  return err;
}

static void wake_if_parked(void *ud) {
  synchro_t *S = ud;
  /* Dekker with on_prepare: our push is visible before we read parked. */
  if (__atomic_load_n(&S->parked, __ATOMIC_SEQ_CST))
    uv_async_send(&S->wakeup);
}

int synchro__send(synchro_t *S, synchro_msg_t *msg) {
  return synchro__mailbox_push_then(&S->mailbox, msg, wake_if_parked, S);
}

static void on_grace_expired(uv_timer_t *timer) {
  synchro__loop_stop(timer->data);
}

void synchro__loop_stop(synchro_t *S) {
  uv_timer_stop(&S->grace_timer);
  uv_stop(&S->loop);
}

void synchro__close(synchro_t *S, double grace) {
  int join = 0;
  if (S->forked)
    return;
  uv_mutex_lock(&S->lock);
  switch (S->state) {
  case SYNCHRO_STATE_NEW:
    synchro__store(&S->state, SYNCHRO_STATE_CLOSED);
    synchro__mailbox_close(&S->mailbox);
    uv_mutex_unlock(&S->lock);
    drop_messages(S);
    return;
  case SYNCHRO_STATE_RUNNING:
    synchro__store(&S->state, SYNCHRO_STATE_CLOSING);
    S->close_grace = grace < 0 ? 0 : grace;
    __atomic_store_n(&S->close_requested, 1, __ATOMIC_SEQ_CST);
    uv_async_send(&S->wakeup);
    break;
  default:
    break;
  }
  if (S->thread_started && !synchro__is_loop_thread(S)) {
    join = 1;
    S->thread_started = 0;
  }
  if (join) {
    /* Others closing at the same time wait on the lock for the join. */
    uv_thread_join(&S->thread);
    synchro__store(&S->state, SYNCHRO_STATE_CLOSED);
    live_remove(S);
  }
  uv_mutex_unlock(&S->lock);
}
