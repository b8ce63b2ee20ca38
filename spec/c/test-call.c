/* Calls and notifiers without a loop: reference counts, completion from
 * another thread, listening before and after completion, the notifier's
 * order, and cancelling on a Synchronizer that never started. */
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "test.h"

#define WAIT_LONG 30.0 /* a "forever" that still ends on a hang */

static int scale(int n) {
  /* SYNCHRO_TEST_QUICK (valgrind runs) divides the big loops by 20. */
  const char *quick = getenv("SYNCHRO_TEST_QUICK");
  return quick != NULL && *quick != '\0' && *quick != '0' ? n / 20 : n;
}

static int refs_of_S(synchro_t *S) {
  return __atomic_load_n(&S->refs, __ATOMIC_ACQUIRE);
}

static int refs_of(synchro_call_t *call) {
  return __atomic_load_n(&call->refs, __ATOMIC_ACQUIRE);
}

static synchro_t *new_S(void) {
  synchro_t *S = synchro__new("test", NULL, NULL, NULL, NULL);
  CHECK(S != NULL);
  CHECK_EQ_INT(refs_of_S(S), 1);
  CHECK_EQ_INT(S->state, SYNCHRO_STATE_NEW);
  return S;
}

static void test_refs(void) {
  synchro_t *S = new_S();
  synchro_call_t *call = synchro__call_new(S, SYNCHRO_OP_CALL, 7);
  CHECK(call != NULL);
  CHECK_EQ_INT(call->msg.kind, SYNCHRO_MSG_CALL);
  CHECK_EQ_INT(call->fn_id, 7);
  CHECK_EQ_INT(refs_of(call), 1);
  CHECK(call->S == S);
  CHECK_EQ_INT(refs_of_S(S), 2); /* the call holds S */
  CHECK(!synchro__event_is_set(&call->done));
  synchro__call_ref(call);
  CHECK_EQ_INT(refs_of(call), 2);
  /* Buffers are the call's: freed with it (valgrind checks). */
  CHECK_EQ_INT(synchro__buf_append(&call->args, "args", 4), 0);
  CHECK_EQ_INT(synchro__buf_append(&call->reply, "reply", 5), 0);
  synchro__call_unref(call);
  CHECK_EQ_INT(refs_of(call), 1);
  CHECK_EQ_INT(refs_of_S(S), 2);
  synchro__call_unref(call);
  CHECK_EQ_INT(refs_of_S(S), 1);
  synchro__call_unref(NULL);
  synchro__notifier_unref(NULL);
  synchro__unref(NULL);
  synchro__unref(S);
}

typedef struct {
  synchro_call_t *call;
  int status;
  unsigned delay_ms;
} completer_t;

static void complete_later(void *arg) {
  completer_t *c = arg;
  if (c->delay_ms > 0)
    uv_sleep(c->delay_ms);
  CHECK_EQ_INT(synchro__buf_append(&c->call->reply, "result", 7), 0);
  synchro__call_complete(c->call, c->status);
  synchro__call_unref(c->call); /* the "loop's" reference */
}

static void test_complete_from_thread(void) {
  static const int statuses[] = {SYNCHRO_CALL_OK, SYNCHRO_CALL_ERROR,
                                 SYNCHRO_CALL_CANCELLED, SYNCHRO_CALL_CLOSED};
  synchro_t *S = new_S();
  unsigned i;
  for (i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
    completer_t c;
    uv_thread_t t;
    c.call = synchro__call_new(S, SYNCHRO_OP_CALL, 1);
    CHECK(c.call != NULL);
    c.status = statuses[i];
    c.delay_ms = i % 2 == 0 ? 0 : 80; /* while spinning, or parked */
    synchro__call_ref(c.call);
    CHECK_EQ_INT(uv_thread_create(&t, complete_later, &c), 0);
    CHECK_EQ_INT(synchro__event_wait(&c.call->done, WAIT_LONG, NULL, NULL, NULL), 0);
    /* status and reply were written before done was set */
    CHECK_EQ_INT(c.call->status, statuses[i]);
    CHECK_EQ_INT(c.call->reply.len, 7);
    CHECK(memcmp(c.call->reply.data, "result", 7) == 0);
    uv_thread_join(&t);
    CHECK_EQ_INT(refs_of(c.call), 1);
    synchro__call_unref(c.call);
  }
  CHECK_EQ_INT(refs_of_S(S), 1);
  synchro__unref(S);
}

static void test_listen_before_complete(void) {
  synchro_t *S = new_S();
  synchro_call_t *call = synchro__call_new(S, SYNCHRO_OP_CALL, 1);
  synchro_notifier_t *n = synchro__notifier_new(), *other;
  other = synchro__notifier_new();
  CHECK(call != NULL && n != NULL && other != NULL);
  CHECK_EQ_INT(n->refs, 1);
  CHECK_EQ_INT(synchro__call_listen(call, n), 0);
  CHECK_EQ_INT(n->refs, 2); /* the call holds its listener */
  /* Only one listener at a time. */
  CHECK_EQ_INT(synchro__call_listen(call, other), SYNCHRO_EINVAL);
  CHECK_EQ_INT(other->refs, 1);
  CHECK(synchro__notifier_take(n) == NULL);
  CHECK(!synchro__event_is_set(&n->ready));

  synchro__call_complete(call, SYNCHRO_CALL_OK);
  CHECK(synchro__event_is_set(&call->done));
  CHECK(synchro__event_is_set(&n->ready));
  CHECK_EQ_INT(n->refs, 1);       /* the call let go of the listener */
  CHECK_EQ_INT(refs_of(call), 2); /* ours + the notifier's */
  CHECK(synchro__notifier_take(n) == call);
  CHECK(call->done_next == NULL);
  CHECK(synchro__notifier_take(n) == NULL);
  synchro__call_unref(call); /* the taker drops the notifier's */
  CHECK_EQ_INT(refs_of(call), 1);
  synchro__call_unref(call);
  synchro__notifier_unref(other);
  synchro__notifier_unref(n);
  CHECK_EQ_INT(refs_of_S(S), 1);
  synchro__unref(S);
}

static void test_listen_after_complete(void) {
  synchro_t *S = new_S();
  synchro_call_t *call = synchro__call_new(S, SYNCHRO_OP_CALL, 1);
  synchro_notifier_t *n = synchro__notifier_new();
  synchro_notifier_t *n2 = synchro__notifier_new();
  CHECK(call != NULL && n != NULL && n2 != NULL);
  synchro__call_complete(call, SYNCHRO_CALL_ERROR);
  CHECK_EQ_INT(refs_of(call), 1);
  /* Notified at once, and every later listener is too. */
  CHECK_EQ_INT(synchro__call_listen(call, n), 0);
  CHECK(synchro__event_is_set(&n->ready));
  CHECK_EQ_INT(synchro__call_listen(call, n2), 0);
  CHECK_EQ_INT(refs_of(call), 3);
  CHECK_EQ_INT(n->refs, 1);
  CHECK(synchro__notifier_take(n) == call);
  CHECK(synchro__notifier_take(n2) == call);
  CHECK_EQ_INT(call->status, SYNCHRO_CALL_ERROR);
  synchro__call_unref(call);
  synchro__call_unref(call);
  CHECK_EQ_INT(refs_of(call), 1);
  synchro__call_unref(call);
  synchro__notifier_unref(n);
  synchro__notifier_unref(n2);
  synchro__unref(S);
}

#define ORDER_N 5

static void test_notifier_order(void) {
  static const int order[ORDER_N] = {3, 1, 4, 0, 2};
  synchro_t *S = new_S();
  synchro_notifier_t *n = synchro__notifier_new();
  synchro_call_t *calls[ORDER_N], *got;
  int i;
  CHECK(n != NULL);
  for (i = 0; i < ORDER_N; i++) {
    calls[i] = synchro__call_new(S, SYNCHRO_OP_CALL, i);
    CHECK(calls[i] != NULL);
    CHECK_EQ_INT(synchro__call_listen(calls[i], n), 0);
  }
  CHECK_EQ_INT(n->refs, 1 + ORDER_N);
  for (i = 0; i < 3; i++)
    synchro__call_complete(calls[order[i]], SYNCHRO_CALL_OK);
  /* Oldest completion first. */
  got = synchro__notifier_take(n);
  for (i = 0; i < 3; i++, got = got->done_next) {
    CHECK(got == calls[order[i]]);
    synchro__call_unref(got);
  }
  CHECK(got == NULL);
  CHECK(synchro__notifier_take(n) == NULL);
  synchro__event_reset(&n->ready);
  for (i = 3; i < ORDER_N; i++)
    synchro__call_complete(calls[order[i]], SYNCHRO_CALL_OK);
  CHECK(synchro__event_is_set(&n->ready));
  got = synchro__notifier_take(n);
  for (i = 3; i < ORDER_N; i++, got = got->done_next) {
    CHECK(got == calls[order[i]]);
    synchro__call_unref(got);
  }
  CHECK(got == NULL);
  CHECK_EQ_INT(n->refs, 1);
  for (i = 0; i < ORDER_N; i++) {
    CHECK_EQ_INT(refs_of(calls[i]), 1);
    synchro__call_unref(calls[i]);
  }
  synchro__notifier_unref(n);
  CHECK_EQ_INT(refs_of_S(S), 1);
  synchro__unref(S);
}

/* Dropping a notifier drops what it collected; dropping a call drops the
 * listener it still holds. */
static void test_unref_releases(void) {
  synchro_t *S = new_S();
  synchro_notifier_t *n = synchro__notifier_new();
  synchro_call_t *done = synchro__call_new(S, SYNCHRO_OP_CALL, 1);
  synchro_call_t *pending = synchro__call_new(S, SYNCHRO_OP_CALL, 2);
  CHECK(n != NULL && done != NULL && pending != NULL);
  CHECK_EQ_INT(synchro__call_listen(done, n), 0);
  CHECK_EQ_INT(synchro__call_listen(pending, n), 0);
  synchro__call_complete(done, SYNCHRO_CALL_OK);
  CHECK_EQ_INT(refs_of(done), 2);
  CHECK_EQ_INT(n->refs, 2);   /* ours + pending's */
  synchro__notifier_unref(n); /* pending keeps it alive */
  CHECK_EQ_INT(refs_of(done), 2);
  synchro__call_unref(pending); /* frees pending, then n, which drops done */
  CHECK_EQ_INT(refs_of(done), 1);
  synchro__call_unref(done);
  CHECK_EQ_INT(refs_of_S(S), 1);
  synchro__unref(S);
}

static void test_cancel_never_started(void) {
  synchro_t *S = new_S();
  synchro_call_t *call = synchro__call_new(S, SYNCHRO_OP_CALL, 1);
  synchro_call_t *queued = synchro__call_new(S, SYNCHRO_OP_CALL, 2);
  synchro_call_t *late = synchro__call_new(S, SYNCHRO_OP_CALL, 3);
  synchro_call_t *done = synchro__call_new(S, SYNCHRO_OP_CALL, 4);
  CHECK(call != NULL && queued != NULL && late != NULL && done != NULL);
  /* Accepted (queued for a loop that may still start), and idempotent. */
  CHECK_EQ_INT(synchro__call_cancel(call), 0);
  CHECK_EQ_INT(refs_of(call), 2); /* the cancel message holds it */
  CHECK_EQ_INT(synchro__call_cancel(call), 0);
  CHECK_EQ_INT(refs_of(call), 2); /* no second message */
  /* A finished call needs no cancel message. */
  synchro__call_complete(done, SYNCHRO_CALL_OK);
  CHECK_EQ_INT(synchro__call_cancel(done), 0);
  CHECK_EQ_INT(refs_of(done), 1);
  /* A call queued on a Synchronizer that never runs ends as closed. */
  synchro__call_ref(queued); /* the mailbox's */
  CHECK_EQ_INT(synchro__send(S, &queued->msg), 0);
  CHECK(!synchro__event_is_set(&queued->done));
  synchro__close(S, 0);
  CHECK_EQ_INT(S->state, SYNCHRO_STATE_CLOSED);
  CHECK(synchro__event_is_set(&queued->done));
  CHECK_EQ_INT(queued->status, SYNCHRO_CALL_CLOSED);
  CHECK_EQ_INT(refs_of(queued), 1);
  CHECK_EQ_INT(refs_of(call), 1); /* the dropped cancel let go */
  /* After the close, a cancel is refused and nothing is held. */
  CHECK_EQ_INT(synchro__call_cancel(late), SYNCHRO_ECLOSED);
  CHECK_EQ_INT(refs_of(late), 1);
  CHECK_EQ_INT(synchro__send(S, &late->msg), SYNCHRO_ECLOSED);
  CHECK_EQ_INT(synchro__start(S) != 0, 1);
  synchro__close(S, 0); /* twice is fine */
  synchro__call_unref(call);
  synchro__call_unref(queued);
  synchro__call_unref(late);
  synchro__call_unref(done);
  CHECK_EQ_INT(refs_of_S(S), 1);
  synchro__unref(S);
}

/* The last reference closes a never-started Synchronizer: what its mailbox
 * held ends as closed instead of leaking. */
static void test_close_drops_queue(void) {
  synchro_t *S = new_S();
  synchro_call_t *call = synchro__call_new(S, SYNCHRO_OP_CALL, 1);
  CHECK(call != NULL);
  synchro__call_ref(call);
  CHECK_EQ_INT(synchro__send(S, &call->msg), 0);
  CHECK_EQ_INT(synchro__call_cancel(call), 0);
  CHECK_EQ_INT(refs_of(call), 3);
  synchro__close(S, 0);
  CHECK_EQ_INT(call->status, SYNCHRO_CALL_CLOSED);
  CHECK_EQ_INT(refs_of(call), 1);
  synchro__call_unref(call);
  synchro__unref(S);
}

/* A "loop" thread completes calls taken from a mailbox while this thread
 * listens to them and waits, so that listen races with complete and the
 * waiter often drops its reference while complete still runs. */
typedef struct {
  synchro_mailbox_t mb;
  int stop;
} fake_loop_t;

static void fake_loop(void *arg) {
  fake_loop_t *fl = arg;
  for (;;) {
    synchro_msg_t *m = synchro__mailbox_take(&fl->mb);
    if (m == NULL) {
      if (__atomic_load_n(&fl->stop, __ATOMIC_ACQUIRE) &&
          synchro__mailbox_empty(&fl->mb))
        return;
      sched_yield();
      continue;
    }
    while (m != NULL) {
      synchro_call_t *call = (synchro_call_t *)m;
      m = m->next;
      synchro__call_complete(call, (int)(call->fn_id % 2));
      synchro__call_unref(call);
    }
  }
}

static void test_complete_races(void) {
  synchro_t *S = new_S();
  synchro_notifier_t *n = synchro__notifier_new();
  fake_loop_t fl;
  uv_thread_t t;
  int i, rounds = scale(20000);
  CHECK(n != NULL);
  synchro__mailbox_init(&fl.mb);
  fl.stop = 0;
  CHECK_EQ_INT(uv_thread_create(&t, fake_loop, &fl), 0);
  for (i = 0; i < rounds; i++) {
    synchro_call_t *call = synchro__call_new(S, SYNCHRO_OP_CALL, i), *got;
    CHECK(call != NULL);
    synchro__call_ref(call); /* the loop's */
    CHECK_EQ_INT(synchro__mailbox_push(&fl.mb, &call->msg), 0);
    if (i % 3 == 0) {
      /* plain waiter; the loop may still be inside complete */
      CHECK_EQ_INT(synchro__event_wait(&call->done, WAIT_LONG, NULL, NULL, NULL), 0);
    } else {
      CHECK_EQ_INT(synchro__call_listen(call, n), 0);
      CHECK_EQ_INT(synchro__event_wait(&n->ready, WAIT_LONG, NULL, NULL, NULL), 0);
      synchro__event_reset(&n->ready);
      got = synchro__notifier_take(n);
      CHECK(got == call); /* exactly once, and only this one */
      CHECK(got->done_next == NULL);
      synchro__call_unref(got);
      CHECK(synchro__notifier_take(n) == NULL);
    }
    CHECK_EQ_INT(call->status, i % 2);
    synchro__call_unref(call);
  }
  __atomic_store_n(&fl.stop, 1, __ATOMIC_RELEASE);
  uv_thread_join(&t);
  CHECK_EQ_INT(n->refs, 1);
  synchro__notifier_unref(n);
  CHECK_EQ_INT(refs_of_S(S), 1);
  synchro__unref(S);
}

/* A notifier with a uv_async wakes a loop instead of its event. */
typedef struct {
  synchro_notifier_t *n;
  int taken;
  int expected;
} async_ctx_t;

static void on_async(uv_async_t *handle) {
  async_ctx_t *ctx = handle->data;
  synchro_call_t *call = synchro__notifier_take(ctx->n);
  while (call != NULL) {
    synchro_call_t *next = call->done_next;
    CHECK_EQ_INT(call->status, SYNCHRO_CALL_OK);
    ctx->taken++;
    synchro__call_unref(call);
    call = next;
  }
  /* Stop rather than close: the completer may still be in its last
   * uv_async_send. */
  if (ctx->taken == ctx->expected)
    uv_stop(handle->loop);
}

typedef struct {
  synchro_call_t **calls;
  int count;
} batch_t;

static void complete_batch(void *arg) {
  batch_t *b = arg;
  int i;
  for (i = 0; i < b->count; i++) {
    synchro__call_complete(b->calls[i], SYNCHRO_CALL_OK);
    synchro__call_unref(b->calls[i]);
  }
}

static void test_notifier_async(void) {
  synchro_t *S = new_S();
  synchro_call_t *calls[200];
  uv_loop_t loop;
  uv_async_t async;
  async_ctx_t ctx;
  batch_t batch;
  uv_thread_t t;
  int i;
  CHECK_EQ_INT(uv_loop_init(&loop), 0);
  CHECK_EQ_INT(uv_async_init(&loop, &async, on_async), 0);
  ctx.n = synchro__notifier_new();
  CHECK(ctx.n != NULL);
  synchro__notifier_use_async(ctx.n, &async);
  ctx.taken = 0;
  ctx.expected = 200;
  async.data = &ctx;
  for (i = 0; i < 200; i++) {
    calls[i] = synchro__call_new(S, SYNCHRO_OP_CALL, i);
    CHECK(calls[i] != NULL);
    synchro__call_ref(calls[i]); /* the completer's */
    CHECK_EQ_INT(synchro__call_listen(calls[i], ctx.n), 0);
  }
  batch.calls = calls;
  batch.count = 200;
  CHECK_EQ_INT(uv_thread_create(&t, complete_batch, &batch), 0);
  uv_run(&loop, UV_RUN_DEFAULT); /* stops once all came */
  uv_thread_join(&t);
  CHECK_EQ_INT(ctx.taken, 200);
  CHECK(!synchro__event_is_set(&ctx.n->ready)); /* the loop was woken */
  uv_close((uv_handle_t *)&async, NULL);
  CHECK_EQ_INT(uv_run(&loop, UV_RUN_DEFAULT), 0);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
  synchro__notifier_detach_loop(ctx.n);
  for (i = 0; i < 200; i++) {
    CHECK_EQ_INT(refs_of(calls[i]), 1);
    synchro__call_unref(calls[i]);
  }
  CHECK_EQ_INT(ctx.n->refs, 1);
  synchro__notifier_unref(ctx.n);
  synchro__unref(S);
}

/* A waiter's reset of its notifier's event, then its take, against a push
 * from another thread at that very moment (each push follows the previous
 * take at once). Without a full barrier between the reset and the take, the
 * take could miss the push while the reset wiped the push's wakeup: the
 * waiter then slept forever beside a queued call (the 16-thread callback
 * hang of protocol_spec). A wait that times out with a call queued is that
 * lost wakeup. */
typedef struct {
  synchro_t *S;
  synchro_notifier_t *n;
  int rounds, taken, stop;
} race_t;

static void race_pusher(void *arg) {
  race_t *r = arg;
  int i;
  for (i = 0; i < r->rounds; i++) {
    /* made first, so that the push follows the take at once */
    synchro_call_t *call = synchro__call_new(r->S, SYNCHRO_OP_CALL, i);
    unsigned spins = 0;
    CHECK(call != NULL);
    while (__atomic_load_n(&r->taken, __ATOMIC_ACQUIRE) < i) {
      if (__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
        synchro__call_unref(call);
        return;
      }
      if (++spins % 1024 == 0)
        sched_yield();
      synchro__cpu_relax();
    }
    synchro__notifier_push(r->n, call);
    synchro__call_unref(call); /* the notifier holds its own */
  }
}

/* After a wait that timed out: a call queued whose push never set the
 * event (given a second to finish setting it) is a lost wakeup. */
static int wakeup_lost(synchro_notifier_t *n) {
  int i;
  for (i = 0; i < 100; i++) {
    if (__atomic_load_n(&n->completed, __ATOMIC_SEQ_CST) == NULL ||
        synchro__event_is_set(&n->ready))
      return 0;
    uv_sleep(10);
  }
  return 1;
}

static void test_notifier_wake_race(void) {
  race_t r;
  uv_thread_t t;
  int got = 0, lost = 0;
  memset(&r, 0, sizeof(r));
  r.S = new_S();
  r.n = synchro__notifier_new();
  r.rounds = scale(300000);
  CHECK(r.n != NULL);
  CHECK_EQ_INT(uv_thread_create(&t, race_pusher, &r), 0);
  while (got < r.rounds && lost == 0) {
    synchro_call_t *item, *next;
    synchro__event_reset(&r.n->ready);
    item = synchro__notifier_take(r.n);
    if (item == NULL) {
      if (synchro__event_wait(&r.n->ready, 1.0, NULL, NULL, NULL) != 0)
        lost += wakeup_lost(r.n);
      continue;
    }
    for (; item != NULL; item = next) {
      next = item->done_next;
      synchro__call_unref(item);
      got++;
    }
    __atomic_store_n(&r.taken, got, __ATOMIC_RELEASE);
  }
  __atomic_store_n(&r.stop, 1, __ATOMIC_RELEASE);
  uv_thread_join(&t);
  CHECK_EQ_INT(lost, 0);
  CHECK_EQ_INT(got, r.rounds);
  synchro__notifier_unref(r.n);
  CHECK_EQ_INT(refs_of_S(r.S), 1);
  synchro__unref(r.S);
}

int main(void) {
  RUN(test_refs);
  RUN(test_complete_from_thread);
  RUN(test_listen_before_complete);
  RUN(test_listen_after_complete);
  RUN(test_notifier_order);
  RUN(test_unref_releases);
  RUN(test_close_drops_queue);
  RUN(test_cancel_never_started);
  RUN(test_complete_races);
  RUN(test_notifier_async);
  RUN(test_notifier_wake_race);
  return 0;
}
