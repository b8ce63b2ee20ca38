/* Events: spin briefly, then park on a futex (Linux) or a condition
 * variable from a small table keyed by address (elsewhere). Parking is done
 * in slices so that a caller can notice an interrupt (Ctrl-C) even where the
 * signal handler restarts system calls. */
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <time.h>

#include "core.h"

#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#define SLICE_NS 50000000ULL /* 50 ms */
#define SPIN_NS 20000ULL     /* 20 us */

uint64_t synchro__now_ns(void) { return uv_hrtime(); }

#ifdef __linux__
static void park(uint32_t *word, uint32_t expected, uint64_t ns) {
  struct timespec ts;
  ts.tv_sec = (time_t)(ns / 1000000000ULL);
  ts.tv_nsec = (long)(ns % 1000000000ULL);
  syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, expected, &ts, NULL, 0);
}

static void unpark_all(uint32_t *word) {
  syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}
#else
#define BUCKETS 64
static uv_once_t buckets_once = UV_ONCE_INIT;
static struct {
  uv_mutex_t lock;
  uv_cond_t cond;
} buckets[BUCKETS];

static void buckets_init(void) {
  int i;
  for (i = 0; i < BUCKETS; i++) {
    uv_mutex_init(&buckets[i].lock);
    uv_cond_init(&buckets[i].cond);
  }
}

static unsigned bucket_of(uint32_t *word) {
  return (unsigned)(((uintptr_t)word >> 3) % BUCKETS);
}

static void park(uint32_t *word, uint32_t expected, uint64_t ns) {
  unsigned b = bucket_of(word);
  uv_once(&buckets_once, buckets_init);
  uv_mutex_lock(&buckets[b].lock);
  if (__atomic_load_n(word, __ATOMIC_SEQ_CST) == expected)
    uv_cond_timedwait(&buckets[b].cond, &buckets[b].lock, ns);
  uv_mutex_unlock(&buckets[b].lock);
}

static void unpark_all(uint32_t *word) {
  unsigned b = bucket_of(word);
  uv_once(&buckets_once, buckets_init);
  uv_mutex_lock(&buckets[b].lock);
  uv_cond_broadcast(&buckets[b].cond);
  uv_mutex_unlock(&buckets[b].lock);
}
#endif

int synchro__event_is_set(synchro_event_t *ev) {
  return synchro__load(&ev->word) == 1;
}

void synchro__event_reset(synchro_event_t *ev) { synchro__store(&ev->word, 0); }

void synchro__event_set(synchro_event_t *ev) {
  /* seq_cst, so that a later seq_cst load by the setter is ordered after
   * it (see synchro__call_pollfd) */
  if (__atomic_exchange_n(&ev->word, 1, __ATOMIC_SEQ_CST) == 2)
    unpark_all(&ev->word);
}

int synchro__event_wait(synchro_event_t *ev, double timeout,
                        synchro_interrupt_cb interrupt, void *ud) {
  uint64_t start = synchro__now_ns(), now, deadline = UINT64_MAX;
  unsigned i;
  if (synchro__load(&ev->word) == 1)
    return 0;
  if (timeout >= 0)
    deadline = start + (uint64_t)(timeout * 1e9);
  /* Spin: a reply usually comes back within a few microseconds. Yield
   * now and then, so that on a machine with fewer cores than busy threads
   * the thread we wait for (the loop) gets to run. */
  for (i = 0;; i++) {
    if (synchro__load(&ev->word) == 1)
      return 0;
    synchro__cpu_relax();
    if ((i & 63) == 63) {
      now = synchro__now_ns();
      if (now - start > SPIN_NS || now >= deadline)
        break;
      sched_yield();
    }
  }
  for (;;) {
    uint32_t word = 0;
    uint64_t slice = SLICE_NS;
    if (!synchro__cas(&ev->word, &word, 2) && word == 1)
      return 0;
    now = synchro__now_ns();
    if (now >= deadline)
      return SYNCHRO_ETIMEDOUT;
    if (deadline - now < slice)
      slice = deadline - now;
    park(&ev->word, 2, slice);
    if (synchro__load(&ev->word) == 1)
      return 0;
    if (interrupt != NULL && interrupt(ud))
      return UV_EINTR;
  }
}
