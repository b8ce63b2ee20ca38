/* Calls and notifiers. A call is shared by the thread that made it and the
 * loop that runs it; it lives until both have let go. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/eventfd.h>
#endif

#include "core.h"

/* listener states besides a real notifier pointer */
#define LISTENER_DONE ((synchro_notifier_t *)(uintptr_t)1)

void *synchro__alloc_aligned(size_t size) {
  void *p = NULL;
  if (posix_memalign(&p, SYNCHRO_CACHELINE, size) != 0)
    return NULL;
  memset(p, 0, size);
  return p;
}

/* A few freed calls are kept in the synchronizer for its next calls (in
 * slots taken and filled by atomic exchange, so the thread that frees a
 * call, often the loop thread, and the one that makes the next, a
 * caller, need no lock): a caller that makes one call after another then
 * allocates nothing per call. The synchronizer frees what its slots hold
 * when it goes (synchro__call_spares_free). Off under AddressSanitizer,
 * which must see each call's memory freed to catch a use after free. */
#if defined(__SANITIZE_ADDRESS__)
#define SYNCHRO_NO_CALL_SPARES 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SYNCHRO_NO_CALL_SPARES 1
#endif
#endif

/* A spare call keeps the heap buffers its last use grew (args and reply),
 * up to SYNCHRO_CALL_KEEP_BUF bytes each, so that a caller sending large
 * values one after another does not allocate (and fault in) a fresh
 * buffer per call; bigger ones are freed, so a one-off huge value does
 * not stay pinned. */
#define SYNCHRO_CALL_KEEP_BUF ((size_t)4 << 20)

static void keep_or_free(synchro_buf_t *buf) {
  if (buf->borrowed || buf->cap > SYNCHRO_CALL_KEEP_BUF) {
    synchro__buf_free(buf);
  } else {
    buf->len = 0;
  }
}

static void free_call(synchro_call_t *call) {
  synchro__buf_free(&call->args);
  synchro__buf_free(&call->reply);
  free(call);
}

/* A call with its buffers ready (kept ones, or the inline storage). */
static synchro_call_t *call_alloc(synchro_t *S) {
  synchro_call_t *call = NULL;
#ifndef SYNCHRO_NO_CALL_SPARES
  int i;
  for (i = 0; i < SYNCHRO_CALL_SPARES && call == NULL; i++) {
    if (__atomic_load_n(&S->spare_calls[i], __ATOMIC_RELAXED) == NULL)
      continue;
    call = synchro__xchg(&S->spare_calls[i], (synchro_call_t *)NULL);
  }
  if (call != NULL) {
    synchro_buf_t args = call->args, reply = call->reply;
    memset(call, 0, sizeof(*call));
    call->args = args;
    call->reply = reply;
  }
#else
  (void)S;
#endif
  if (call == NULL) {
    call = synchro__alloc_aligned(sizeof(synchro_call_t));
    if (call == NULL)
      return NULL;
    synchro__buf_init(&call->args);
    synchro__buf_init(&call->reply);
  }
  if (call->args.data == NULL)
    synchro__buf_use(&call->args, call->args_inline, SYNCHRO_CALL_INLINE);
  if (call->reply.data == NULL)
    synchro__buf_use(&call->reply, call->reply_inline, SYNCHRO_CALL_INLINE);
  return call;
}

/* Before the call's reference to S is dropped. */
static void call_release(synchro_t *S, synchro_call_t *call) {
#ifndef SYNCHRO_NO_CALL_SPARES
  int i;
  keep_or_free(&call->args);
  keep_or_free(&call->reply);
  for (i = 0; i < SYNCHRO_CALL_SPARES; i++) {
    if (__atomic_load_n(&S->spare_calls[i], __ATOMIC_RELAXED) != NULL)
      continue;
    call = synchro__xchg(&S->spare_calls[i], call);
    if (call == NULL)
      return;
  }
#else
  (void)S;
#endif
  free_call(call);
}

void synchro__call_spares_free(synchro_t *S) {
  int i;
  for (i = 0; i < SYNCHRO_CALL_SPARES; i++) {
    synchro_call_t *call =
        synchro__xchg(&S->spare_calls[i], (synchro_call_t *)NULL);
    if (call != NULL)
      free_call(call);
  }
}

synchro_call_t *synchro__call_new(synchro_t *S, int op, int64_t fn_id) {
  synchro_call_t *call = call_alloc(S);
  if (call == NULL)
    return NULL;
  call->pollfd = call->pollfd_peer = -1;
  call->deadline_slot = -1;
  call->msg.kind = SYNCHRO_MSG_CALL;
  call->refs = 1;
  call->op = op;
  call->fn_id = fn_id;
  call->S = S;
  synchro__ref(S);
  return call;
}

void synchro__call_ref(synchro_call_t *call) { synchro__incr(&call->refs); }

void synchro__call_unref(synchro_call_t *call) {
  synchro_notifier_t *n;
  synchro_t *S;
  if (call == NULL || synchro__decr(&call->refs) != 0)
    return;
  n = call->listener;
  if (n != NULL && n != LISTENER_DONE)
    synchro__notifier_unref(n);
  if (call->pollfd >= 0)
    close(call->pollfd);
  if (call->pollfd_peer >= 0)
    close(call->pollfd_peer);
  S = call->S;
  call_release(S, call);
  synchro__unref(S);
}

/* Makes an eventfd (or a pipe's read end, through its write end) readable;
 * it stays readable if it already was. */
static void signal_fd(int fd) {
  ssize_t r;
#ifdef __linux__
  uint64_t one = 1;
  r = write(fd, &one, sizeof(one));
#else
  r = write(fd, "x", 1);
#endif
  (void)r; /* an eventfd or pipe that cannot take more is readable */
}

void synchro__notifier_push(synchro_notifier_t *n, synchro_call_t *call) {
  synchro_call_t *head = synchro__load_relaxed(&n->completed);
  synchro__call_ref(call); /* dropped by whoever takes it */
  do {
    call->done_next = head;
  } while (!__atomic_compare_exchange_n(&n->completed, &head, call, 1,
                                        __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
  if (n->loop_mode) {
    uv_mutex_lock(&n->lock);
    if (n->async != NULL)
      uv_async_send(n->async);
    uv_mutex_unlock(&n->lock);
  } else {
    int fd;
    synchro__event_set(&n->ready); /* seq_cst: Dekker with n's pollfd */
    fd = __atomic_load_n(&n->fd, __ATOMIC_SEQ_CST);
    if (fd >= 0)
      signal_fd(fd);
  }
}

int synchro__notifier_pollfd(synchro_notifier_t *n) {
#ifdef __linux__
  int fd = __atomic_load_n(&n->fd, __ATOMIC_SEQ_CST), expected = -1;
  if (fd >= 0)
    return fd;
  fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0)
    return uv_translate_sys_error(errno);
  if (!__atomic_compare_exchange_n(&n->fd, &expected, fd, 0, __ATOMIC_SEQ_CST,
                                   __ATOMIC_SEQ_CST)) {
    close(fd);
    return expected;
  }
  if (__atomic_load_n(&n->completed, __ATOMIC_SEQ_CST) != NULL)
    signal_fd(fd);
  return fd;
#else
  (void)n;
  return UV_ENOSYS;
#endif
}

static void signal_pollfd(synchro_call_t *call, int fd) {
#ifdef __linux__
  signal_fd(fd);
#else
  (void)fd;
  signal_fd(call->pollfd_peer);
#endif
}

int synchro__call_pollfd(synchro_call_t *call) {
  int fd = __atomic_load_n(&call->pollfd, __ATOMIC_SEQ_CST), expected = -1;
  if (fd >= 0)
    return fd;
#ifdef __linux__
  fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0)
    return uv_translate_sys_error(errno);
#else
  int p[2];
  if (pipe(p) != 0)
    return uv_translate_sys_error(errno);
  fd = p[0];
  call->pollfd_peer = p[1]; /* before the CAS publishes fd */
#endif
  if (!__atomic_compare_exchange_n(&call->pollfd, &expected, fd, 0,
                                   __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
    close(fd); /* another thread made one first */
    return expected;
  }
  /* Dekker with call_complete: it sets done, then reads pollfd. */
  if (__atomic_load_n(&call->done.word, __ATOMIC_SEQ_CST) == 1)
    signal_pollfd(call, fd);
  return fd;
}

static void untrack(synchro_call_t *call) {
  synchro_t *S = call->S;
  uv_mutex_lock(&S->inflight_lock);
  if (synchro__load_relaxed(&call->inflight)) {
    if (call->inflight_prev != NULL)
      call->inflight_prev->inflight_next = call->inflight_next;
    else
      S->inflight = call->inflight_next;
    if (call->inflight_next != NULL)
      call->inflight_next->inflight_prev = call->inflight_prev;
    synchro__store(&call->inflight, 0);
  }
  uv_mutex_unlock(&S->inflight_lock);
}

void synchro__call_track(synchro_call_t *call) {
  synchro_t *S = call->S;
  uv_mutex_lock(&S->inflight_lock);
  call->inflight_prev = NULL;
  call->inflight_next = S->inflight;
  if (S->inflight != NULL)
    S->inflight->inflight_prev = call;
  S->inflight = call;
  synchro__store(&call->inflight, 1);
  uv_mutex_unlock(&S->inflight_lock);
}

void synchro__complete_inflight(synchro_t *S, int status) {
  synchro_call_t *list, *call;
  uv_mutex_lock(&S->inflight_lock);
  list = S->inflight;
  S->inflight = NULL;
  for (call = list; call != NULL; call = call->inflight_next) {
    synchro__store(&call->inflight, 0);
    synchro__call_ref(call); /* the loop thread may still drop its own */
  }
  uv_mutex_unlock(&S->inflight_lock);
  while (list != NULL) {
    call = list;
    list = call->inflight_next;
    synchro__call_complete(call, status);
    synchro__call_unref(call);
  }
}

void synchro__call_complete(synchro_call_t *call, int status) {
  synchro_notifier_t *n;
  int fd;
  if (synchro__xchg(&call->completed, 1))
    return;
  if (synchro__load(&call->inflight)) /* rechecked under the lock */
    untrack(call);
  /* Past its deadline it timed out, whatever the task did after the
   * cancel: results that came too late are not results. */
  if (synchro__load(&call->timed_out))
    status = SYNCHRO_CALL_TIMEDOUT;
  call->status = status;
  synchro__call_ref(call); /* a waiter may drop the last other ref */
  /* The C API's on_done runs before anyone can see the call done: before
   * a wait returns and before the pollfd is readable. */
  if (call->done_cb != NULL)
    call->done_cb(call, call->done_ud);
  /* seq_cst: Dekker with call_pollfd, and with synchro__deadline_add */
  synchro__event_set(&call->done);
  synchro__deadline_remove(call);
  fd = __atomic_load_n(&call->pollfd, __ATOMIC_SEQ_CST);
  if (fd >= 0)
    signal_pollfd(call, fd);
  n = synchro__xchg(&call->listener, LISTENER_DONE);
  if (n != NULL && n != LISTENER_DONE) {
    synchro__notifier_push(n, call);
    synchro__notifier_unref(n);
  }
  synchro__call_unref(call);
}

int synchro__call_status_error(int status, const char **msg) {
  switch (status) {
  case SYNCHRO_CALL_OK:
  case SYNCHRO_CALL_ERROR:
    *msg = NULL;
    return 0;
  case SYNCHRO_CALL_CANCELLED:
    *msg = "the call was cancelled";
    return SYNCHRO_ECANCELED;
  case SYNCHRO_CALL_TIMEDOUT:
    *msg = "the call timed out";
    return SYNCHRO_ETIMEDOUT;
  case SYNCHRO_CALL_DIED:
    *msg = "the synchronizer's loop thread died";
    return SYNCHRO_ECANCELED;
  case SYNCHRO_CALL_BAD_RESULT:
    *msg = "a result is not plain data";
    return SYNCHRO_EMARSHAL;
  default:
    *msg = "the synchronizer closed before the call finished";
    return SYNCHRO_ECANCELED;
  }
}

int synchro__call_wait_plain(synchro_call_t *call, double timeout,
                             void *ud) {
  (void)ud;
  return synchro__event_wait(&call->done, timeout, NULL, NULL,
                             &call->S->call_spin);
}

void synchro__call_cancel_wait(synchro_call_t *call) {
  /* Within the grace period, so that a stuck cleanup cannot hang us. */
  synchro__call_cancel(call);
  synchro__event_wait(&call->done, call->S->grace + SYNCHRO_ABANDON_S,
                      NULL, NULL, NULL);
}

int synchro__call_await(synchro_call_t *call, double timeout,
                        synchro_wait_fn wait, void *ud) {
  double grace = call->S->grace, bound = SYNCHRO_NO_LIMIT;
  int rc;
  if (timeout >= 0)
    bound = timeout + grace + SYNCHRO_ABANDON_S;
  rc = wait(call, bound, ud);
  if (rc == UV_EINTR) {
    synchro__call_cancel_wait(call);
    return UV_EINTR;
  }
  if (rc != 0) {
    /* The deadline thread cancelled it long ago and it still runs: the
     * loop is stuck where cancellation cannot reach. Give it up. */
    synchro__store(&call->timed_out, 1);
    synchro__call_cancel(call);
    return SYNCHRO_ETIMEDOUT;
  }
  return 0;
}

int synchro__call_listen(synchro_call_t *call, synchro_notifier_t *n) {
  synchro_notifier_t *expected = NULL;
  synchro__notifier_ref(n);
  if (synchro__cas(&call->listener, &expected, n))
    return 0;
  synchro__notifier_unref(n);
  if (expected == LISTENER_DONE) {
    synchro__notifier_push(n, call);
    return 0;
  }
  return SYNCHRO_EINVAL;
}

int synchro__call_cancel(synchro_call_t *call) {
  synchro_cancel_t *msg;
  int err;
  if (synchro__event_is_set(&call->done))
    return 0;
  if (synchro__xchg(&call->cancel_sent, 1))
    return 0;
  msg = calloc(1, sizeof(*msg));
  if (msg == NULL)
    return SYNCHRO_ENOMEM;
  msg->msg.kind = SYNCHRO_MSG_CANCEL;
  msg->call = call;
  synchro__call_ref(call);
  err = synchro__send(call->S, &msg->msg);
  if (err != 0) {
    synchro__call_unref(call);
    free(msg);
  }
  return err;
}

synchro_notifier_t *synchro__notifier_new(void) {
  synchro_notifier_t *n = calloc(1, sizeof(*n));
  if (n == NULL)
    return NULL;
  if (uv_mutex_init(&n->lock) != 0) {
    free(n);
    return NULL;
  }
  n->refs = 1;
  n->fd = -1;
  synchro__spin_init(&n->spin);
  return n;
}

void synchro__notifier_use_async(synchro_notifier_t *n, uv_async_t *async) {
  n->async = async;
  n->loop_mode = 1;
}

void synchro__notifier_detach_loop(synchro_notifier_t *n) {
  uv_mutex_lock(&n->lock);
  n->async = NULL;
  uv_mutex_unlock(&n->lock);
}

void synchro__notifier_ref(synchro_notifier_t *n) { synchro__incr(&n->refs); }

void synchro__notifier_unref(synchro_notifier_t *n) {
  synchro_call_t *call;
  if (n == NULL || synchro__decr(&n->refs) != 0)
    return;
  synchro__handle_free(n->handle, SYNCHRO_HANDLE_INBOX);
  call = synchro__notifier_take(n);
  while (call != NULL) {
    synchro_call_t *next = call->done_next;
    synchro__call_unref(call);
    call = next;
  }
  if (n->fd >= 0)
    close(n->fd);
  uv_mutex_destroy(&n->lock);
  free(n);
}

synchro_call_t *synchro__notifier_take(synchro_notifier_t *n) {
  synchro_call_t *list, *fifo = NULL;
  if (synchro__load(&n->completed) == NULL)
    return NULL;
  list = synchro__xchg(&n->completed, NULL);
  while (list != NULL) {
    synchro_call_t *next = list->done_next;
    list->done_next = fifo;
    fifo = list;
    list = next;
  }
  return fifo;
}
