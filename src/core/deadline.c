/* Time values and call deadlines.
 *
 * One rule for every time a user gives (a timeout, a grace, a sleep, an
 * interval): NaN is a misuse, a negative value means 0, and math.huge or
 * anything above SYNCHRO_TIME_MAX means no limit. Everything that takes a
 * time goes through synchro__time_normalize, from C and from Lua.
 *
 * A call's deadline is kept here, not by its caller nor by its loop: the
 * caller may not be waiting (a future, an .aio await), and the loop may be
 * busy in a task that never yields. One thread per process keeps a heap of
 * the calls that have a deadline; when one passes, it marks the call timed
 * out and cancels it, the way future:cancel() does, so whatever reaches a
 * cancelled task reaches this one too. A call that completes first leaves
 * the heap at once (synchro__call_complete). */
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>

#include "core.h"

int synchro__time_normalize(double seconds, double *out) {
  if (seconds != seconds)
    return SYNCHRO_EINVAL; /* NaN */
  if (seconds > SYNCHRO_TIME_MAX)
    *out = SYNCHRO_NO_LIMIT;
  else
    *out = seconds < 0 ? 0 : seconds;
  return 0;
}

uint64_t synchro__time_ns(double seconds) {
  if (seconds != seconds || seconds < 0 || seconds > SYNCHRO_TIME_MAX)
    return UINT64_MAX;
  return (uint64_t)(seconds * 1e9);
}

uint64_t synchro__deadline_ns(double seconds) {
  uint64_t d = synchro__time_ns(seconds);
  return d == UINT64_MAX ? UINT64_MAX : synchro__now_ns() + d;
}

/* ---- the deadline thread ---- */

static uv_once_t once = UV_ONCE_INIT;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond;
static synchro_call_t **heap; /* min-heap on deadline_at */
static size_t count, cap;
static int running; /* the thread exists (in this process) */

/* Slots are written under the lock but read without it by
 * synchro__deadline_remove's fast path: atomic, seq_cst (see there). */
static void set_slot(synchro_call_t *call, long slot) {
  __atomic_store_n(&call->deadline_slot, slot, __ATOMIC_SEQ_CST);
}

static void swap(size_t i, size_t j) {
  synchro_call_t *t = heap[i];
  heap[i] = heap[j];
  heap[j] = t;
  set_slot(heap[i], (long)i);
  set_slot(heap[j], (long)j);
}

static void sift_up(size_t i) {
  while (i > 0 && heap[(i - 1) / 2]->deadline_at > heap[i]->deadline_at) {
    swap(i, (i - 1) / 2);
    i = (i - 1) / 2;
  }
}

static void sift_down(size_t i) {
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < count && heap[l]->deadline_at < heap[m]->deadline_at)
      m = l;
    if (r < count && heap[r]->deadline_at < heap[m]->deadline_at)
      m = r;
    if (m == i)
      return;
    swap(i, m);
    i = m;
  }
}

/* Takes heap[i] out; returns it (its heap reference goes to the caller). */
static synchro_call_t *take(size_t i) {
  synchro_call_t *call = heap[i];
  count--;
  if (i != count) {
    heap[i] = heap[count];
    set_slot(heap[i], (long)i);
    sift_down(i);
    sift_up(i);
  }
  set_slot(call, -1);
  return call;
}

static void *thread_main(void *arg) {
  sigset_t all;
  (void)arg;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  pthread_mutex_lock(&lock);
  for (;;) {
    uint64_t now = synchro__now_ns();
    if (count == 0) {
      pthread_cond_wait(&cond, &lock);
    } else if (heap[0]->deadline_at <= now) {
      synchro_call_t *call = take(0);
      pthread_mutex_unlock(&lock);
      synchro__store(&call->timed_out, 1);
      synchro__call_cancel(call);
      synchro__call_unref(call);
      pthread_mutex_lock(&lock);
    } else {
      /* CLOCK_MONOTONIC, like uv_hrtime */
      struct timespec ts;
      uint64_t wait = heap[0]->deadline_at - now;
      clock_gettime(CLOCK_MONOTONIC, &ts);
      if (wait > 3600ULL * 1000000000ULL)
        wait = 3600ULL * 1000000000ULL;
      ts.tv_sec += (time_t)(wait / 1000000000ULL);
      ts.tv_nsec += (long)(wait % 1000000000ULL);
      if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
      }
      pthread_cond_timedwait(&cond, &lock, &ts);
    }
  }
  return NULL;
}

static void atfork_child(void) {
  /* The thread is not in the child; the calls in the heap belong to
   * synchronizers that are dead there. Start afresh on first use. */
  pthread_mutex_init(&lock, NULL);
  running = 0;
  count = 0;
}

static void init_once(void) {
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(&cond, &attr);
  pthread_condattr_destroy(&attr);
  pthread_atfork(NULL, NULL, atfork_child);
}

int synchro__deadline_add(synchro_call_t *call, double seconds) {
  uint64_t at = synchro__deadline_ns(seconds);
  if (at == UINT64_MAX)
    return 0; /* no limit */
  uv_once(&once, init_once);
  pthread_mutex_lock(&lock);
  if (call->deadline_slot >= 0) {
    pthread_mutex_unlock(&lock);
    return 0; /* has one already */
  }
  if (!running) {
    pthread_t t;
    pthread_attr_t attr;
    int err;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    err = pthread_create(&t, &attr, thread_main, NULL);
    pthread_attr_destroy(&attr);
    if (err != 0) {
      pthread_mutex_unlock(&lock);
      return SYNCHRO_ETHREAD;
    }
    running = 1;
  }
  if (count == cap) {
    size_t ncap = cap ? cap * 2 : 64;
    synchro_call_t **grown = realloc(heap, ncap * sizeof(*heap));
    if (grown == NULL) {
      pthread_mutex_unlock(&lock);
      return SYNCHRO_ENOMEM;
    }
    heap = grown;
    cap = ncap;
  }
  synchro__call_ref(call);
  call->deadline_at = at;
  heap[count++] = call;
  set_slot(call, (long)(count - 1));
  sift_up(count - 1);
  if (call->deadline_slot == 0)
    pthread_cond_signal(&cond);
  pthread_mutex_unlock(&lock);
  /* Dekker with synchro__call_complete (sets done, then removes): one of
   * the two sees the other's store, so a call done meanwhile leaves. */
  if (__atomic_load_n(&call->done.word, __ATOMIC_SEQ_CST) == 1)
    synchro__deadline_remove(call);
  return 0;
}

void synchro__deadline_remove(synchro_call_t *call) {
  synchro_call_t *taken = NULL;
  if (__atomic_load_n(&call->deadline_slot, __ATOMIC_SEQ_CST) < 0)
    return; /* none: no lock on the fast path */
  pthread_mutex_lock(&lock);
  if (call->deadline_slot >= 0)
    taken = take((size_t)call->deadline_slot);
  pthread_mutex_unlock(&lock);
  synchro__call_unref(taken);
}
