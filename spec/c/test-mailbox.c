/* The mailbox: lossless multi-producer, single-consumer; per-producer FIFO;
 * close rejects later pushes and never loses a message that was accepted. */
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "test.h"

#define PRODUCERS    4
#define PER_PRODUCER 100000

typedef struct {
  synchro_msg_t msg; /* first member */
  int producer;
  int seq;
  int taken; /* times the consumer saw it */
} item_t;

typedef struct {
  synchro_mailbox_t *mb;
  item_t *items; /* this producer's PER_PRODUCER items */
  int id;
  int count;
  int *go;
  int accepted; /* close race: how many pushes returned 0 */
  int rejected;
} producer_t;

static int scale(int n) {
  /* SYNCHRO_TEST_QUICK (valgrind runs) divides the big loops by 20. */
  const char *quick = getenv("SYNCHRO_TEST_QUICK");
  return quick != NULL && *quick != '\0' && *quick != '0' ? n / 20 : n;
}

static void test_empty(void) {
  synchro_mailbox_t mb;
  synchro__mailbox_init(&mb);
  CHECK(synchro__mailbox_empty(&mb));
  CHECK(synchro__mailbox_take(&mb) == NULL);
  synchro__mailbox_close(&mb);
  CHECK(synchro__mailbox_take(&mb) == NULL);
}

static void test_order_single(void) {
  synchro_mailbox_t mb;
  item_t items[10];
  synchro_msg_t *m;
  int i;
  memset(items, 0, sizeof(items));
  synchro__mailbox_init(&mb);
  for (i = 0; i < 5; i++) {
    items[i].seq = i;
    CHECK_EQ_INT(synchro__mailbox_push(&mb, &items[i].msg), 0);
    CHECK(!synchro__mailbox_empty(&mb));
  }
  m = synchro__mailbox_take(&mb);
  CHECK(synchro__mailbox_empty(&mb));
  for (i = 0; i < 5; i++, m = m->next) {
    CHECK(m != NULL);
    CHECK_EQ_INT(((item_t *)m)->seq, i);
  }
  CHECK(m == NULL);
  /* A second batch after a take keeps its own order. */
  for (i = 5; i < 10; i++) {
    items[i].seq = i;
    CHECK_EQ_INT(synchro__mailbox_push(&mb, &items[i].msg), 0);
  }
  for (i = 5, m = synchro__mailbox_take(&mb); m != NULL; i++, m = m->next)
    CHECK_EQ_INT(((item_t *)m)->seq, i);
  CHECK_EQ_INT(i, 10);
  CHECK(synchro__mailbox_take(&mb) == NULL);
}

static void test_push_after_close(void) {
  synchro_mailbox_t mb;
  item_t a, b;
  synchro_msg_t *m;
  memset(&a, 0, sizeof(a));
  memset(&b, 0, sizeof(b));
  synchro__mailbox_init(&mb);
  CHECK_EQ_INT(synchro__mailbox_push(&mb, &a.msg), 0);
  synchro__mailbox_close(&mb);
  b.msg.next = (synchro_msg_t *)&b; /* must stay untouched */
  CHECK_EQ_INT(synchro__mailbox_push(&mb, &b.msg), SYNCHRO_ECLOSED);
  CHECK(b.msg.next == (synchro_msg_t *)&b);
  /* What was queued before the close is still there, exactly once. */
  m = synchro__mailbox_take(&mb);
  CHECK(m == &a.msg);
  CHECK(m->next == NULL);
  CHECK(synchro__mailbox_empty(&mb));
  CHECK_EQ_INT(synchro__mailbox_push(&mb, &b.msg), SYNCHRO_ECLOSED);
  CHECK(synchro__mailbox_take(&mb) == NULL);
  synchro__mailbox_close(&mb); /* twice is fine */
}

typedef struct {
  synchro_mailbox_t *mb;
  int calls;             /* then() calls */
  int entered;           /* then() is running */
  int release;           /* lets then() return */
  int finished;          /* then() returned */
  int finished_at_close; /* finished, as seen right after close returned */
} then_ctx_t;

static void count_then(void *ud) { ((then_ctx_t *)ud)->calls++; }

static void blocking_then(void *ud) {
  then_ctx_t *ctx = ud;
  __atomic_store_n(&ctx->entered, 1, __ATOMIC_RELEASE);
  while (!__atomic_load_n(&ctx->release, __ATOMIC_ACQUIRE))
    uv_sleep(1);
  __atomic_store_n(&ctx->finished, 1, __ATOMIC_RELEASE);
}

static void push_blocking(void *arg) {
  then_ctx_t *ctx = arg;
  static item_t item;
  CHECK_EQ_INT(
      synchro__mailbox_push_then(ctx->mb, &item.msg, blocking_then, ctx), 0);
}

static void close_mailbox(void *arg) {
  then_ctx_t *ctx = arg;
  synchro__mailbox_close(ctx->mb);
  ctx->finished_at_close = __atomic_load_n(&ctx->finished, __ATOMIC_ACQUIRE);
}

/* push_then runs its callback once, only for an accepted message, and a
 * close waits until a callback in progress has returned. */
static void test_push_then(void) {
  synchro_mailbox_t mb;
  then_ctx_t ctx;
  item_t a, b;
  uv_thread_t pusher, closer;
  synchro_msg_t *m;
  memset(&ctx, 0, sizeof(ctx));
  memset(&a, 0, sizeof(a));
  memset(&b, 0, sizeof(b));
  synchro__mailbox_init(&mb);
  ctx.mb = &mb;
  CHECK_EQ_INT(synchro__mailbox_push_then(&mb, &a.msg, count_then, &ctx), 0);
  CHECK_EQ_INT(ctx.calls, 1);
  CHECK(synchro__mailbox_take(&mb) == &a.msg);

  CHECK_EQ_INT(uv_thread_create(&pusher, push_blocking, &ctx), 0);
  while (!__atomic_load_n(&ctx.entered, __ATOMIC_ACQUIRE))
    uv_sleep(1);
  CHECK_EQ_INT(uv_thread_create(&closer, close_mailbox, &ctx), 0);
  uv_sleep(30); /* give the close a chance to return too early */
  __atomic_store_n(&ctx.release, 1, __ATOMIC_RELEASE);
  uv_thread_join(&closer);
  uv_thread_join(&pusher);
  CHECK_EQ_INT(ctx.finished_at_close, 1);
  m = synchro__mailbox_take(&mb); /* the blocked push was accepted */
  CHECK(m != NULL && m->next == NULL);

  CHECK_EQ_INT(synchro__mailbox_push_then(&mb, &b.msg, count_then, &ctx),
               SYNCHRO_ECLOSED);
  CHECK_EQ_INT(ctx.calls, 1);
  CHECK(synchro__mailbox_take(&mb) == NULL);
}

static void wait_go(int *go) {
  while (!__atomic_load_n(go, __ATOMIC_ACQUIRE))
    sched_yield();
}

static void produce(void *arg) {
  producer_t *p = arg;
  int i;
  wait_go(p->go);
  for (i = 0; i < p->count; i++) {
    item_t *it = &p->items[i];
    it->producer = p->id;
    it->seq = i;
    CHECK_EQ_INT(synchro__mailbox_push(p->mb, &it->msg), 0);
    if ((i & 1023) == 0)
      sched_yield(); /* let the others interleave on few cores */
  }
}

static void test_producers_consumer(void) {
  synchro_mailbox_t mb;
  producer_t prod[PRODUCERS];
  uv_thread_t threads[PRODUCERS];
  int next[PRODUCERS];
  int count = scale(PER_PRODUCER), total = 0, go = 0, i, batches = 0;
  item_t *items = calloc((size_t)PRODUCERS * (size_t)count, sizeof(*items));
  CHECK(items != NULL);
  synchro__mailbox_init(&mb);
  for (i = 0; i < PRODUCERS; i++) {
    prod[i].mb = &mb;
    prod[i].items = items + (size_t)i * (size_t)count;
    prod[i].id = i;
    prod[i].count = count;
    prod[i].go = &go;
    next[i] = 0;
    CHECK_EQ_INT(uv_thread_create(&threads[i], produce, &prod[i]), 0);
  }
  __atomic_store_n(&go, 1, __ATOMIC_RELEASE);
  /* The consumer: this thread. */
  while (total < PRODUCERS * count) {
    synchro_msg_t *m = synchro__mailbox_take(&mb);
    if (m == NULL) {
      sched_yield();
      continue;
    }
    batches++;
    for (; m != NULL; m = m->next) {
      item_t *it = (item_t *)m;
      CHECK(it->producer >= 0 && it->producer < PRODUCERS);
      CHECK_EQ_INT(it->seq, next[it->producer]); /* no loss, dup, reorder */
      next[it->producer]++;
      it->taken++;
      total++;
    }
  }
  for (i = 0; i < PRODUCERS; i++)
    uv_thread_join(&threads[i]);
  CHECK(synchro__mailbox_take(&mb) == NULL);
  for (i = 0; i < PRODUCERS; i++)
    CHECK_EQ_INT(next[i], count);
  for (i = 0; i < PRODUCERS * count; i++)
    CHECK_EQ_INT(items[i].taken, 1);
  CHECK(batches > 0);
  free(items);
}

static void produce_until_closed(void *arg) {
  producer_t *p = arg;
  int i;
  wait_go(p->go);
  for (i = 0; i < p->count; i++) {
    item_t *it = &p->items[i];
    int rc;
    it->producer = p->id;
    it->seq = i;
    rc = synchro__mailbox_push(p->mb, &it->msg);
    if (rc == 0) {
      /* Once one push failed, every later one must fail too. */
      CHECK_EQ_INT(p->rejected, 0);
      p->accepted++;
    } else {
      CHECK_EQ_INT(rc, SYNCHRO_ECLOSED);
      it->taken = -1; /* rejected: the producer still owns it */
      p->rejected++;
    }
  }
}

/* Producers push while the consumer closes: every message is either taken
 * exactly once or rejected, never both, never neither. */
static void close_race_round(int round) {
  synchro_mailbox_t mb;
  producer_t prod[PRODUCERS];
  uv_thread_t threads[PRODUCERS];
  int count = 2000, go = 0, i, taken = 0, accepted = 0, stop_after;
  item_t *items = calloc((size_t)PRODUCERS * (size_t)count, sizeof(*items));
  synchro_msg_t *m;
  CHECK(items != NULL);
  synchro__mailbox_init(&mb);
  for (i = 0; i < PRODUCERS; i++) {
    memset(&prod[i], 0, sizeof(prod[i]));
    prod[i].mb = &mb;
    prod[i].items = items + (size_t)i * (size_t)count;
    prod[i].id = i;
    prod[i].count = count;
    prod[i].go = &go;
    CHECK_EQ_INT(uv_thread_create(&threads[i], produce_until_closed, &prod[i]),
                 0);
  }
  __atomic_store_n(&go, 1, __ATOMIC_RELEASE);
  /* Close at a different point each round, sometimes before anything. */
  stop_after = (round * 997) % (PRODUCERS * count);
  while (taken < stop_after) {
    m = synchro__mailbox_take(&mb);
    if (m == NULL)
      sched_yield();
    for (; m != NULL; m = m->next, taken++)
      ((item_t *)m)->taken++;
  }
  synchro__mailbox_close(&mb);
  for (m = synchro__mailbox_take(&mb); m != NULL; m = m->next, taken++)
    ((item_t *)m)->taken++;
  CHECK(synchro__mailbox_empty(&mb));
  for (i = 0; i < PRODUCERS; i++)
    uv_thread_join(&threads[i]);
  /* Nothing arrived after the last take: the close was final. */
  CHECK(synchro__mailbox_take(&mb) == NULL);
  for (i = 0; i < PRODUCERS; i++) {
    CHECK_EQ_INT(prod[i].accepted + prod[i].rejected, count);
    accepted += prod[i].accepted;
  }
  CHECK_EQ_INT(taken, accepted);
  for (i = 0; i < PRODUCERS * count; i++)
    CHECK(items[i].taken == 1 || items[i].taken == -1);
  free(items);
}

static void test_close_race(void) {
  int round, rounds = scale(200);
  if (rounds < 5)
    rounds = 5;
  for (round = 0; round < rounds; round++)
    close_race_round(round);
}

int main(void) {
  RUN(test_empty);
  RUN(test_order_single);
  RUN(test_push_after_close);
  RUN(test_push_then);
  RUN(test_producers_consumer);
  RUN(test_close_race);
  return 0;
}
