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
#define CROWDED_NS 10000ULL  /* a yield this long ran someone else */

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

void synchro__event_reset(synchro_event_t *ev) {
  /* Dekker with synchro__event_set's caller, which publishes, then sets:
   * the store must be visible before any load that follows it. */
  __atomic_store_n(&ev->word, 0, __ATOMIC_SEQ_CST);
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

void synchro__event_set(synchro_event_t *ev) {
  /* seq_cst, so that a later seq_cst load by the setter is ordered after
   * it (see synchro__call_pollfd) */
  if (__atomic_exchange_n(&ev->word, 1, __ATOMIC_SEQ_CST) == 2)
    unpark_all(&ev->word);
}

#define SPIN_ON 2u      /* spin while the score is at least this */
#define PROBE_EVERY 32u /* otherwise, spin once in this many waits */

void synchro__spin_init(synchro_spin_t *spin) {
  __atomic_store_n(&spin->score, SYNCHRO_SPIN_MAX, __ATOMIC_RELAXED);
  __atomic_store_n(&spin->probes, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&spin->spinners, 0, __ATOMIC_RELAXED);
}

int synchro__spin_wanted(synchro_spin_t *spin) {
  if (spin == NULL)
    return 0;
  if (__atomic_load_n(&spin->score, __ATOMIC_RELAXED) >= SPIN_ON)
    return 1;
  return __atomic_fetch_add(&spin->probes, 1, __ATOMIC_RELAXED) %
             PROBE_EVERY ==
         0;
}

void synchro__spin_crowded(synchro_spin_t *spin) {
  if (spin != NULL)
    __atomic_store_n(&spin->score, 0, __ATOMIC_RELAXED);
}

void synchro__spin_record(synchro_spin_t *spin, int paid) {
  uint32_t score = __atomic_load_n(&spin->score, __ATOMIC_RELAXED);
  if (paid)
    score = score < SYNCHRO_SPIN_MAX ? score + 1 : SYNCHRO_SPIN_MAX;
  else
    score = score >= 2 ? score - 2 : 0;
  __atomic_store_n(&spin->score, score, __ATOMIC_RELAXED);
}

/* Spins until ev is set, deadline passes or the spin stops paying off;
 * returns whether ev was set. */
static int spin_until(synchro_event_t *ev, uint64_t start, uint64_t deadline,
                      synchro_spin_t *spin) {
  unsigned i;
  int spinning;
  /* A reply usually comes back within a few microseconds, when the
   * machine has a core for the loop. Yield now and then, so that on a
   * machine with fewer cores than busy threads the thread we wait for
   * (the loop) gets to run; and stop spinning where it has not been
   * paying off (a loaded machine, a slow call). */
  spinning = synchro__spin_wanted(spin);
  if (!spinning)
    return synchro__load(&ev->word) == 1;
  __atomic_fetch_add(&spin->spinners, 1, __ATOMIC_RELAXED);
  for (i = 0; spinning; i++) {
    uint64_t now;
    if (synchro__load(&ev->word) == 1) {
      synchro__spin_record(spin, 1);
      break;
    }
    synchro__cpu_relax();
    if ((i & 63) == 63) {
      now = synchro__now_ns();
      if (now >= deadline)
        break;
      if (now - start > SPIN_NS) {
        synchro__spin_record(spin, 0);
        break;
      }
      sched_yield();
      if (synchro__now_ns() - now > CROWDED_NS &&
          __atomic_load_n(&spin->spinners, __ATOMIC_RELAXED) == 1) {
        /* the yield ran a thread that is not one of ours: the cores
         * are taken by others, and spinning takes the CPU the thread we
         * wait for needs. (A peer waiting here explains a long yield
         * by itself: then the spin goes on as it would.) */
        synchro__spin_crowded(spin);
        break;
      }
    }
  }
  __atomic_fetch_sub(&spin->spinners, 1, __ATOMIC_RELAXED);
  return synchro__load(&ev->word) == 1;
}

int synchro__event_spin(synchro_event_t *ev, synchro_spin_t *spin) {
  if (synchro__load(&ev->word) == 1)
    return 1;
  return spin_until(ev, synchro__now_ns(), UINT64_MAX, spin);
}

int synchro__event_wait(synchro_event_t *ev, double timeout,
                        synchro_interrupt_cb interrupt, void *ud,
                        synchro_spin_t *spin) {
  uint64_t start = synchro__now_ns(), now, deadline = UINT64_MAX;
  if (synchro__load(&ev->word) == 1)
    return 0;
  if (timeout >= 0)
    deadline = start + (uint64_t)(timeout * 1e9);
  if (spin_until(ev, start, deadline, spin))
    return 0;
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
