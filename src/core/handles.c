/* Handles: the integers that name C objects (a Synchronizer, a VM's
 * inbox, an exported reference) to Lua code and inside marshalled
 * payloads, so that no pointer ever crosses as a number or as text. A
 * handle is an index into one process-wide table plus the generation of
 * that slot: a stale handle (its object gone, its slot reused) or a
 * made-up one fails the lookup instead of reaching freed memory. The
 * table is guarded by one mutex, held only for a lookup. */
#include <pthread.h>
#include <stdlib.h>

#include "core.h"

/* handle = generation << INDEX_BITS | (index + 1): below 2^53, so that it
 * survives a Lua 5.1 number. Generation 0 is never used. */
#define INDEX_BITS 24
#define INDEX_MASK ((1 << INDEX_BITS) - 1)
#define GEN_MASK ((1u << 28) - 1)

typedef struct {
  void *p;   /* NULL: free */
  int *refs; /* p's reference count, for acquire; or NULL */
  int kind;
  uint32_t gen;
  int next_free; /* index of the next free slot, or -1 */
} slot_t;

static uv_mutex_t lock;
static uv_once_t once = UV_ONCE_INIT;
static slot_t *slots;
static int nslots, first_free = -1;

static void atfork_prepare(void) { uv_mutex_lock(&lock); }
static void atfork_release(void) { uv_mutex_unlock(&lock); }

static void init(void) {
  if (uv_mutex_init(&lock) != 0)
    abort();
  pthread_atfork(atfork_prepare, atfork_release, atfork_release);
}

/* The slot h names if it is live and of kind, else NULL. Under lock. */
static slot_t *find(int64_t h, int kind) {
  int64_t index = (h & INDEX_MASK) - 1;
  slot_t *s;
  if (h <= 0 || index < 0 || index >= nslots)
    return NULL;
  s = &slots[index];
  if (s->p == NULL || s->kind != kind ||
      (int64_t)s->gen != (h >> INDEX_BITS))
    return NULL;
  return s;
}

int64_t synchro__handle_new(int kind, void *p, int *refs) {
  slot_t *s;
  int index;
  int64_t h;
  uv_once(&once, init);
  uv_mutex_lock(&lock);
  if (first_free < 0) {
    int cap = nslots ? nslots * 2 : 64;
    slot_t *grown;
    if (cap > INDEX_MASK ||
        (grown = realloc(slots, (size_t)cap * sizeof(*slots))) == NULL) {
      uv_mutex_unlock(&lock);
      return 0;
    }
    slots = grown;
    for (index = cap - 1; index >= nslots; index--) {
      slots[index].p = NULL;
      slots[index].gen = 0;
      slots[index].next_free = first_free;
      first_free = index;
    }
    nslots = cap;
  }
  index = first_free;
  s = &slots[index];
  first_free = s->next_free;
  s->gen = (s->gen + 1) & GEN_MASK;
  if (s->gen == 0)
    s->gen = 1;
  s->p = p;
  s->refs = refs;
  s->kind = kind;
  h = ((int64_t)s->gen << INDEX_BITS) | (index + 1);
  uv_mutex_unlock(&lock);
  return h;
}

void *synchro__handle_acquire(int64_t h, int kind) {
  slot_t *s;
  void *p = NULL;
  uv_once(&once, init);
  uv_mutex_lock(&lock);
  s = find(h, kind);
  if (s != NULL && s->refs != NULL) {
    /* Only while alive: a count already at 0 is being destroyed (its
     * owner frees the slot next, and must take this lock to do so). */
    int n = synchro__load(s->refs);
    while (n > 0 && !synchro__cas(s->refs, &n, n + 1))
      ;
    if (n > 0)
      p = s->p;
  }
  uv_mutex_unlock(&lock);
  return p;
}

static void release_slot(slot_t *s) {
  s->p = NULL;
  s->refs = NULL;
  s->next_free = first_free;
  first_free = (int)(s - slots);
}

void *synchro__handle_take(int64_t h, int kind) {
  slot_t *s;
  void *p = NULL;
  uv_once(&once, init);
  uv_mutex_lock(&lock);
  s = find(h, kind);
  if (s != NULL) {
    p = s->p;
    release_slot(s);
  }
  uv_mutex_unlock(&lock);
  return p;
}

void synchro__handle_free(int64_t h, int kind) {
  slot_t *s;
  if (h == 0)
    return;
  uv_once(&once, init);
  uv_mutex_lock(&lock);
  s = find(h, kind);
  if (s != NULL)
    release_slot(s);
  uv_mutex_unlock(&lock);
}
