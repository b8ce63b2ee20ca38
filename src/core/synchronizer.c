/* The Synchronizer object: its life cycle (start, close, the exit-time
 * close, fork) and the mailbox that feeds its loop. What runs on the loop
 * thread is given by the layer above as a synchro_vm_t (src/vm/loop.c). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

static uv_key_t current_key;
static uv_once_t current_once = UV_ONCE_INIT;

static void current_key_init(void) { uv_key_create(&current_key); }

synchro_t *synchro__current(void) {
  uv_once(&current_once, current_key_init);
  return uv_key_get(&current_key);
}

void synchro__set_current(synchro_t *S) {
  uv_once(&current_once, current_key_init);
  uv_key_set(&current_key, S);
}

char *synchro__strdup(const char *s) {
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
                        const char *cpath, const synchro_vm_t *vm,
                        lua_CFunction open_core) {
  synchro_t *S = synchro__alloc_aligned(sizeof(*S));
  if (S == NULL)
    return NULL;
  S->refs = 1;
  S->state = SYNCHRO_STATE_NEW;
  S->next_fn_id = 1;
  S->name = synchro__strdup(name != NULL ? name : "synchro");
  S->path = synchro__strdup(path);
  S->cpath = synchro__strdup(cpath);
  S->vm = vm;
  S->open_core = open_core;
  S->runtime_ref = LUA_NOREF;
  S->grace = S->close_grace = 5.0;
  synchro__spin_init(&S->loop_spin);
  synchro__spin_init(&S->call_spin);
  synchro__mailbox_init(&S->mailbox);
  if (uv_mutex_init(&S->lock) != 0) {
    free(S);
    return NULL;
  }
  if (uv_mutex_init(&S->inflight_lock) != 0) {
    uv_mutex_destroy(&S->lock);
    free(S->name);
    free(S->path);
    free(S->cpath);
    free(S);
    return NULL;
  }
  S->handle = synchro__handle_new(SYNCHRO_HANDLE_SYNCHRONIZER, S, &S->refs);
  if (S->handle == 0) {
    uv_mutex_destroy(&S->lock);
    uv_mutex_destroy(&S->inflight_lock);
    free(S->name);
    free(S->path);
    free(S->cpath);
    free(S);
    return NULL;
  }
  return S;
}

void synchro__ref(synchro_t *S) { synchro__incr(&S->refs); }

static void free_msg(synchro_t *S, synchro_msg_t *msg) {
  switch (msg->kind) {
  case SYNCHRO_MSG_CALL:
    synchro__call_complete((synchro_call_t *)msg,
                           S->death_message != NULL ? SYNCHRO_CALL_DIED
                                                    : SYNCHRO_CALL_CLOSED);
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

void synchro__drop_messages(synchro_t *S) {
  synchro_msg_t *msg = synchro__mailbox_take(&S->mailbox);
  while (msg != NULL) {
    synchro_msg_t *next = msg->next;
    free_msg(S, msg);
    msg = next;
  }
}

void synchro__unref(synchro_t *S) {
  if (S == NULL || synchro__decr(&S->refs) != 0)
    return;
  synchro__handle_free(S->handle, SYNCHRO_HANDLE_SYNCHRONIZER);
  if (S->forked)
    return; /* its lock and loop belonged to threads of the parent */
  /* The last reference: the owner closed it, or it never started. */
  synchro__close(S, 0);
  synchro__drop_messages(S);
  if (__atomic_load_n(&S->loop_abandoned, __ATOMIC_SEQ_CST))
    return; /* leaked on purpose: see thread_main */
  uv_mutex_destroy(&S->lock);
  uv_mutex_destroy(&S->inflight_lock);
  synchro__call_spares_free(S);
  free(S->death_message);
  free(S->name);
  free(S->path);
  free(S->cpath);
  free(S->start_message);
  free(S);
}

int synchro__is_loop_thread(synchro_t *S) { return synchro__current() == S; }

/* ---- life cycle ---- */

static uv_mutex_t live_lock;
static uv_once_t live_once = UV_ONCE_INIT;
static synchro_t **live;
static size_t live_count, live_cap;

static void live_remove(synchro_t *S);

static void at_exit(void) {
  /* os.exit() in async code: exit() runs on a loop thread, which cannot
   * wait for itself; its tasks end with the process. */
  synchro_t *self = synchro__current();
  if (self != NULL)
    live_remove(self);
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
    synchro__close(S, S->grace);
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
    err = S->vm->start(S);
    if (err != 0) {
      S->start_error = SYNCHRO_ETHREAD;
      synchro__store(&S->state, SYNCHRO_STATE_CLOSED);
      synchro__mailbox_close(&S->mailbox);
    } else {
      S->thread_started = 1;
      synchro__event_wait(&S->started, SYNCHRO_WAIT_FOREVER, NULL, NULL,
                          NULL);
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
  /* read before the push: once pushed, msg belongs to the loop thread */
  int cancel = msg->kind == SYNCHRO_MSG_CANCEL;
  int err = synchro__mailbox_push_then(&S->mailbox, msg, wake_if_parked, S);
  /* after the push: the watch hook that sees attention finds the message */
  if (err == 0 && cancel)
    __atomic_store_n(&S->attention, 1, __ATOMIC_SEQ_CST);
  return err;
}

/* The loop thread did not end within the grace and the bound: a task is
 * stuck where no hook reaches it. Leave the thread to the process's exit
 * (it keeps S), and end what waits on it. Called under S->lock. */
static void give_up(synchro_t *S, double waited) {
  fprintf(stderr,
          "synchro: the loop thread of '%s' did not stop within %g s of "
          "its close (a task stuck in C code, or in a loop LuaJIT "
          "compiled); leaving it to the process's exit\n",
          S->name, waited);
  __atomic_store_n(&S->loop_abandoned, 1, __ATOMIC_SEQ_CST);
  pthread_detach(S->thread);
  synchro__mailbox_close(&S->mailbox);
  synchro__drop_messages(S);
  synchro__complete_inflight(S, SYNCHRO_CALL_CLOSED);
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
    synchro__drop_messages(S);
    return;
  case SYNCHRO_STATE_RUNNING:
    synchro__store(&S->state, SYNCHRO_STATE_CLOSING);
    /* the callers normalised it; a NaN here must not hang the close */
    S->close_grace = grace >= 0 ? grace : 0;
    __atomic_store_n(&S->close_requested, 1, __ATOMIC_SEQ_CST);
    __atomic_store_n(&S->attention, 1, __ATOMIC_SEQ_CST);
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
    double bound = S->close_grace + SYNCHRO_CLOSE_BOUND;
    if (!(bound < 1e9)) /* NaN, huge: no limit */
      bound = SYNCHRO_WAIT_FOREVER;
    if (synchro__event_wait(&S->exited, bound, NULL, NULL, NULL) == 0)
      uv_thread_join(&S->thread);
    else
      give_up(S, bound);
    synchro__store(&S->state, SYNCHRO_STATE_CLOSED);
    live_remove(S);
  }
  uv_mutex_unlock(&S->lock);
}
