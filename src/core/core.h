/* The core: what every layer shares and nothing of a Lua VM's policy:
 * atomics, the mailbox, waiting, calls and notifiers, the Synchronizer
 * object and its life cycle. Dependencies point down only: src/vm uses
 * this, src/aio and src/lua use src/vm; nothing here calls up. */
#ifndef SYNCHRO_CORE_H
#define SYNCHRO_CORE_H

#include <stdint.h>
#include <uv.h>

#include "compat.h"
#include "marshal.h"
#include "synchro.h"

/* Atomics: the GCC/Clang builtins (C99 has no <stdatomic.h>). */
#define synchro__load(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define synchro__load_relaxed(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define synchro__store(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define synchro__xchg(p, v) __atomic_exchange_n((p), (v), __ATOMIC_ACQ_REL)
#define synchro__incr(p) __atomic_add_fetch((p), 1, __ATOMIC_ACQ_REL)
#define synchro__decr(p) __atomic_sub_fetch((p), 1, __ATOMIC_ACQ_REL)
#define synchro__cas(p, expected, desired)                                   \
  __atomic_compare_exchange_n((p), (expected), (desired), 0,                 \
                              __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)

#if defined(__x86_64__) || defined(__i386__)
#define synchro__cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define synchro__cpu_relax() __asm__ __volatile__("yield")
#else
#define synchro__cpu_relax() ((void)0)
#endif

/* Fields written by different threads go on different cache lines. */
#define SYNCHRO_CACHELINE 64
#if defined(__GNUC__) || defined(__clang__)
#define SYNCHRO_ALIGNED __attribute__((aligned(SYNCHRO_CACHELINE)))
#else
#define SYNCHRO_ALIGNED
#endif
/* Allocates zeroed memory aligned to a cache line; release with free(). */
void *synchro__alloc_aligned(size_t size);

/* Monotonic clock in nanoseconds. */
uint64_t synchro__now_ns(void);

/* ---- mailbox.c: lossless multi-producer, single-consumer queue ---- */

typedef struct synchro_msg synchro_msg_t;
struct synchro_msg {
  synchro_msg_t *next;
  int kind;
};

enum { SYNCHRO_MSG_CALL, SYNCHRO_MSG_DEFINE, SYNCHRO_MSG_CANCEL };

typedef struct {
  synchro_msg_t *head; /* a stack; the consumer reverses what it takes */
  int closed;
  int pushers; /* producers between their closed-check and their push */
} synchro_mailbox_t;

void synchro__mailbox_init(synchro_mailbox_t *mb);
/* Returns 0, or SYNCHRO_ECLOSED once the mailbox is closed (msg not
 * queued: the caller still owns it). Thread: any. */
int synchro__mailbox_push(synchro_mailbox_t *mb, synchro_msg_t *msg);
/* The same, then calls then(ud) before close can complete (to wake the
 * consumer while it surely still exists). */
int synchro__mailbox_push_then(synchro_mailbox_t *mb, synchro_msg_t *msg,
                               void (*then)(void *ud), void *ud);
/* Takes every queued message, oldest first (per producer order is kept).
 * Thread: the consumer. */
synchro_msg_t *synchro__mailbox_take(synchro_mailbox_t *mb);
int synchro__mailbox_empty(synchro_mailbox_t *mb);
/* After this returns, every push fails and no push is in progress, so one
 * last take gets everything. Thread: the consumer. */
void synchro__mailbox_close(synchro_mailbox_t *mb);

/* ---- wait.c: a one-shot event that a thread can spin on, then park ---- */

typedef struct {
  uint32_t word; /* 0 unset, 1 set, 2 unset with sleepers */
} synchro_event_t;

/* Polled between parking slices; returns non-zero to stop waiting. */
typedef int (*synchro_interrupt_cb)(void *ud);

/* Whether spinning before parking has been paying off at one place that
 * waits (a Synchronizer's callers, its loop thread, a notifier): a score
 * that grows when a spin ends with the event set and falls faster when
 * it ends with nothing. While it is low, waits park at once, except for
 * a probe now and then that lets a place that became fast be noticed.
 * Updated with relaxed atomics by any thread: a lost update only makes
 * one wait spin, or park, when it need not. */
typedef struct {
  uint32_t score;
  uint32_t probes;
  uint32_t spinners; /* threads spinning at this place now */
} synchro_spin_t;

#define SYNCHRO_SPIN_MAX 8u
/* A new place starts trusting the spin. */
void synchro__spin_init(synchro_spin_t *spin);
/* Whether the next wait at spin should spin first. */
int synchro__spin_wanted(synchro_spin_t *spin);
/* Records how the spin went: paid (the event came during the spin). */
void synchro__spin_record(synchro_spin_t *spin, int paid);
/* The spinner was kept off its CPU (another thread ran): stop spinning
 * until probes find it paying again. Thread: any. */
void synchro__spin_crowded(synchro_spin_t *spin);

#define SYNCHRO_WAIT_FOREVER (-1.0)
/* Waits until set, timeout seconds (< 0 forever), or interrupt(ud) says so.
 * With spin (may be NULL: park at once), spins briefly first while the
 * spin has been paying off there; then parks in slices of at most 50 ms.
 * Returns 0 when set, SYNCHRO_ETIMEDOUT, or UV_EINTR when interrupted.
 * Thread: any; many threads may wait on one event. */
int synchro__event_wait(synchro_event_t *ev, double timeout,
                        synchro_interrupt_cb interrupt, void *ud,
                        synchro_spin_t *spin);
/* Only the spin of synchro__event_wait (never parks): whether ev was
 * set, or became set while spinning was paying off. Thread: any. */
int synchro__event_spin(synchro_event_t *ev, synchro_spin_t *spin);
/* Thread: any. */
void synchro__event_set(synchro_event_t *ev);
/* Only while nobody waits. A full barrier: the resetter then checks the
 * condition the event stands for (a notifier's queue, say), and that check
 * reads what any set the reset overwrote had published. (A plain release
 * store let the check run before the reset was visible: a push landing
 * between them was missed and its wakeup wiped, a waiter slept forever.)
 * Thread: the one that waits on ev. */
void synchro__event_reset(synchro_event_t *ev);
int synchro__event_is_set(synchro_event_t *ev);

/* ---- call.c: one call into a Synchronizer, also the future's state ---- */

typedef struct synchro_call synchro_call_t;
typedef struct synchro_notifier synchro_notifier_t;

enum {
  SYNCHRO_CALL_OK = 0,
  SYNCHRO_CALL_ERROR = 1,     /* reply holds (error value, traceback) */
  SYNCHRO_CALL_CANCELLED = 2, /* the task ended cancelled */
  SYNCHRO_CALL_CLOSED = 3,    /* the Synchronizer closed under the call */
  SYNCHRO_CALL_TIMEDOUT = 4,  /* its deadline passed (whatever it did then) */
  /* a C caller's call (plain_results) returned a value that is not plain
   * data; reply holds (message, "") as for ERROR */
  SYNCHRO_CALL_BAD_RESULT = 5,
  SYNCHRO_CALL_DIED = 6        /* the loop thread died (S->death_message) */
};

/* What a call asks of the loop VM (synchro_call_t.op). One list, exposed
 * to Lua as core.OP_<NAME>; lua/synchro/runtime.lua keeps a handler per op
 * (its table ops), and src/vm/dispatch.c calls the one a call names. The
 * op works on the id in fn_id: a function, a generator or an object. */
#define SYNCHRO_OP_MAP(X)                                                    \
  X(CALL)             /* the function S:wrap defined with id fn_id */        \
  X(PATH)             /* a function by path, the first argument (C API) */   \
  X(RETAIN_FN)        /* one more wrapper of function fn_id exists */        \
  X(RELEASE_FN)       /* a wrapper of function fn_id is gone */              \
  X(GEN_START)        /* a generator of function fn_id: its id */            \
  X(GEN_START_OBJECT) /* a generator of loop object fn_id */                 \
  X(GEN_NEXT)         /* a step of generator fn_id */                        \
  X(GEN_CLOSE)        /* closes generator fn_id */                           \
  X(GET_FIELD)        /* object fn_id's field */                             \
  X(SET_FIELD)                                                               \
  X(CALL_OBJECT)                                                             \
  X(CLOSE_OBJECT)     /* its exit, given the error (see synchro.with) */     \
  X(RELEASE_OBJECT)   /* proxies of object fn_id were dropped */             \
  X(REQUIRE_MODULE)   /* require(name), for S:wrap_module */                 \
  X(RETAIN_OBJECT)    /* one more proxy of object fn_id crossed */           \
  X(GEN_RETAIN)       /* one more iterator of generator fn_id crossed */     \
  X(GEN_RELEASE)      /* an iterator of generator fn_id is gone */           \
  X(ENTER_OBJECT)     /* its __enter, else its enter method */               \
  X(META_OBJECT)      /* an operator (#, .., +, <, tostring, pairs) on it */

#define SYNCHRO_OP_ENUM(name) SYNCHRO_OP_##name,
enum { SYNCHRO_OP_MAP(SYNCHRO_OP_ENUM) SYNCHRO_OP_COUNT };
#undef SYNCHRO_OP_ENUM

/* Arguments and results this small need no allocation. */
#define SYNCHRO_CALL_INLINE 112
/* How many freed calls a synchronizer keeps for its next calls. */
#define SYNCHRO_CALL_SPARES 4

struct synchro_call {
  /* Written by the caller before it sends the call. */
  synchro_msg_t msg; /* kind SYNCHRO_MSG_CALL; first member */
  int refs;
  int cancel_sent;
  int plain_results; /* a C caller: results must be plain data, no proxies */
  int reverse; /* a callback call from a loop into a caller's VM */
  int op;       /* SYNCHRO_OP_*: what the call runs */
  int64_t fn_id; /* what op works on (a callback id when reverse) */
  synchro_t *S; /* holds a reference */
  /* The deadline (deadline.c): its heap slot (-1: none) and when. */
  long deadline_slot;
  uint64_t deadline_at;
  int timed_out; /* set by the deadline thread before it cancels */
  /* Called (on the completing thread) once the call is done; set before
   * the call is sent. */
  void (*done_cb)(synchro_call_t *call, void *ud);
  void *done_ud;
  synchro_buf_t args;
  char args_inline[SYNCHRO_CALL_INLINE];
  /* Written by the loop when the call completes. */
  SYNCHRO_ALIGNED synchro_event_t done;
  int status; /* written before done is set */
  synchro_notifier_t *listener; /* see synchro__call_listen */
  int pollfd; /* -1, or an fd made readable at completion (call_pollfd) */
  int pollfd_peer; /* the pipe's write end where there is no eventfd */
  synchro_call_t *done_next;    /* link in a notifier's completed list */
  synchro_buf_t reply;
  char reply_inline[SYNCHRO_CALL_INLINE];
  int completed; /* set once, by the one who completes the call */
  /* S->inflight links, under S->inflight_lock (synchro__call_track). */
  synchro_call_t *inflight_prev, *inflight_next;
  int inflight;
  /* The integer that names the call to the loop VM's runtime (see
   * dispatch.c); 0 until dispatched and after the reply. Loop thread
   * only. */
  int64_t loop_key;
};

synchro_call_t *synchro__call_new(synchro_t *S, int op, int64_t fn_id);
/* Frees the spare calls S keeps; when S goes. */
void synchro__call_spares_free(synchro_t *S);
void synchro__call_ref(synchro_call_t *call);
/* Accepts NULL. Thread: any. */
void synchro__call_unref(synchro_call_t *call);
/* Sets status, marks done, wakes waiters and notifies the listener.
 * Only the first completion counts: a close that gave up on a stuck loop
 * thread may complete a call the loop still holds. Thread: any (the loop
 * thread normally). */
void synchro__call_complete(synchro_call_t *call, int status);
/* The loop took the call: until it completes, a close that gives up on
 * the loop thread, or the loop thread's death, completes it. Thread: the
 * loop thread. */
void synchro__call_track(synchro_call_t *call);
/* Completes every tracked call of S with status (see above). */
void synchro__complete_inflight(synchro_t *S, int status);
/* Asks that the call's task be cancelled; returns 0, or SYNCHRO_ECLOSED.
 * Idempotent. Thread: any. */
int synchro__call_cancel(synchro_call_t *call);
/* A file descriptor that becomes readable once the call is done (an
 * eventfd, or a pipe elsewhere), made on first use and closed with the
 * call. Returns the fd or a negative error code. Thread: any. */
int synchro__call_pollfd(synchro_call_t *call);

/* The error a call's final status stands for: 0 for SYNCHRO_CALL_OK and
 * SYNCHRO_CALL_ERROR (the reply says more), else SYNCHRO_ECANCELED or
 * SYNCHRO_ETIMEDOUT, with a message for it in *msg. */
int synchro__call_status_error(int status, const char **msg);

/* The caller's side of a call, the same for the Lua binding, futures
 * and the C API. Waits until the call is done or, with a deadline, until
 * it has had its time plus the grace plus SYNCHRO_ABANDON_S (the loop may
 * be stuck where nothing can reach it); an interrupt (Ctrl-C) cancels the
 * call and waits for its cleanup within the grace. wait is how to wait
 * (synchro__call_wait_plain, or one that serves callbacks meanwhile).
 * Returns 0 when the call is done (its status says how it ended),
 * SYNCHRO_ETIMEDOUT when it was given up, or UV_EINTR after an interrupt.
 * Thread: the caller. */
typedef int (*synchro_wait_fn)(synchro_call_t *call, double timeout,
                               void *ud);
int synchro__call_wait_plain(synchro_call_t *call, double timeout, void *ud);
int synchro__call_await(synchro_call_t *call, double timeout,
                        synchro_wait_fn wait, void *ud);
#define SYNCHRO_ABANDON_S 2.0
/* Cancels call (Ctrl-C in its caller) and waits for its task's cleanup,
 * within the grace plus SYNCHRO_ABANDON_S. Thread: the caller. */
void synchro__call_cancel_wait(synchro_call_t *call);

/* Makes n receive the call when it completes (at once if it already has).
 * Returns 0, or SYNCHRO_EINVAL if another listener is attached.
 * Thread: any. */
int synchro__call_listen(synchro_call_t *call, synchro_notifier_t *n);

/* A notifier collects completed calls for a scheduler: a thread running
 * synchro.run (it parks on an event), or a loop (woken by a uv_async). */
struct synchro_notifier {
  int refs;
  synchro_spin_t spin; /* for waits on ready */
  synchro_call_t *completed; /* a stack, like the mailbox */
  synchro_event_t ready;
  /* A loop's notifier wakes the loop with async instead of the event;
   * lock keeps async from being used while the loop shuts it down. */
  int loop_mode;
  uv_async_t *async;
  uv_mutex_t lock;
  /* An inbox of callbacks (a VM's, see lua/callbacks.c): how many calls
   * of that VM are waiting and running callbacks; guarded by lock. */
  int waiters;
  int fd; /* -1, or an eventfd made readable by every push (pollfd) */
  int64_t handle; /* 0, or its handle (an inbox's), freed with it */
};

synchro_notifier_t *synchro__notifier_new(void);
/* An fd readable after pushes (an eventfd; made on first use, closed with
 * n), for an owner that waits in a foreign event loop. Linux only:
 * elsewhere returns UV_ENOSYS. */
int synchro__notifier_pollfd(synchro_notifier_t *n);
/* Queues call on n (taking a reference) and wakes n's owner. */
void synchro__notifier_push(synchro_notifier_t *n, synchro_call_t *call);
/* Makes n wake a loop through async instead of setting its event. */
void synchro__notifier_use_async(synchro_notifier_t *n, uv_async_t *async);
/* The loop is going away: later completions must not touch it. */
void synchro__notifier_detach_loop(synchro_notifier_t *n);
void synchro__notifier_ref(synchro_notifier_t *n);
void synchro__notifier_unref(synchro_notifier_t *n);
/* Completed calls, oldest first, linked by done_next; each holds one
 * reference that the taker must drop. Thread: the notifier's owner. */
synchro_call_t *synchro__notifier_take(synchro_notifier_t *n);

/* ---- deadline.c: the one rule for time values, and call deadlines ---- */

/* Seconds above this mean no limit (about 31 years: far below what a
 * conversion to nanoseconds or libuv's milliseconds overflows). */
#define SYNCHRO_TIME_MAX 1e9
/* A normalised time that means no limit. */
#define SYNCHRO_NO_LIMIT (-1.0)
/* The rule: NaN gives SYNCHRO_EINVAL; negative means 0; math.huge and
 * anything above SYNCHRO_TIME_MAX give SYNCHRO_NO_LIMIT. */
int synchro__time_normalize(double seconds, double *out);
/* A normalised time in nanoseconds; UINT64_MAX for no limit. */
uint64_t synchro__time_ns(double seconds);
/* now + seconds in synchro__now_ns time; UINT64_MAX for no limit. */
uint64_t synchro__deadline_ns(double seconds);
/* Gives call a deadline seconds (normalised) from now: when it passes,
 * the call is marked timed out and cancelled. No-op for no limit or a
 * call that has a deadline. Returns 0, SYNCHRO_ENOMEM or SYNCHRO_ETHREAD.
 * Thread: any. */
int synchro__deadline_add(synchro_call_t *call, double seconds);
/* Forgets call's deadline (done at completion). Thread: any. */
void synchro__deadline_remove(synchro_call_t *call);

/* ---- synchronizer.c: the Synchronizer object and its life cycle ---- */

enum {
  SYNCHRO_STATE_NEW,
  SYNCHRO_STATE_RUNNING,
  SYNCHRO_STATE_CLOSING,
  SYNCHRO_STATE_CLOSED
};

typedef struct synchro_define {
  synchro_msg_t msg;
  int64_t fn_id;
  synchro_buf_t code;
} synchro_define_t;

typedef struct synchro_cancel {
  synchro_msg_t msg;
  synchro_call_t *call; /* holds a reference */
} synchro_cancel_t;

/* What runs on the loop thread, given by the layer above (src/vm) when a
 * Synchronizer is made, so that the core never calls up. */
typedef struct synchro_vm {
  /* Initialises S->loop and its handles and starts the loop thread, which
   * sets S->started once the loop VM is up (S->start_error says how).
   * Returns 0 or a libuv error. Called once, under S->lock. */
  int (*start)(synchro_t *S);
} synchro_vm_t;

struct synchro {
  /* Hot: producers push here, the loop polls it. */
  SYNCHRO_ALIGNED synchro_mailbox_t mailbox;
  SYNCHRO_ALIGNED int parked; /* the loop sleeps: producers uv_async_send */
  int state;
  /* Every call takes a reference: keep it off the loop's lines. */
  SYNCHRO_ALIGNED int refs;
  /* Freed calls kept for the next ones (call.c). */
  SYNCHRO_ALIGNED synchro_call_t *spare_calls[SYNCHRO_CALL_SPARES];
  /* Colder: set up once, or written rarely. */
  SYNCHRO_ALIGNED int64_t next_fn_id;
  int64_t handle; /* names it to Lua (core.identity); 0 if none */
  char *name;
  char *path;
  char *cpath;
  int paths_prepend; /* C hosts: path and cpath go before the defaults */
  int loop_abandoned; /* a threadpool request outlived the loop's close */
  int forked; /* this is a child process: the loop thread is not here */
  double grace;       /* cleanup bound for cancellations; set before start */
  double close_grace; /* the grace of the close in progress (loop thread) */
  int close_requested; /* 0, 1 asked, 2 seen by the loop */
  uv_mutex_t lock; /* start and close only */
  uv_thread_t thread;
  int thread_started;
  uv_loop_t loop;
  uv_async_t wakeup;
  uv_async_t notify_async;          /* wakes the loop for loop_notifier */
  synchro_notifier_t *loop_notifier; /* completions awaited by its tasks */
  uv_prepare_t prepare;
  uv_timer_t grace_timer;
  lua_State *L; /* the loop VM: touched only by the loop thread */
  void *vm_refs; /* the loop VM's dispatch state (src/vm/dispatch.c), in
                   * L: loop thread only */
  int runtime_ref;
  synchro_event_t started;
  int start_error;
  char *start_message;
  unsigned spin_ns; /* adaptive spin budget of the loop after activity */
  uint64_t last_activity_ns;
  synchro_spin_t loop_spin; /* the loop's spin before it parks */
  synchro_spin_t call_spin; /* callers' spin before they park */
  const synchro_vm_t *vm;
  lua_CFunction open_core; /* luaopen of synchro.core for the loop VM */
  /* No hang (src/vm/watch.c): senders of a cancel or a close raise
   * attention, which the hook of a task that never yields polls. */
  SYNCHRO_ALIGNED int attention;
  uint64_t slow_ns; /* synchro.new{slow=}: 0 is off; atomic */
  synchro_event_t exited; /* the loop thread is about to end */
  char *death_message; /* the loop thread died (a Lua panic): why */
  uv_mutex_t inflight_lock; /* guards inflight */
  synchro_call_t *inflight; /* calls the loop took and has not completed */
  /* The loop thread's own: */
  synchro_msg_t *batch; /* taken from the mailbox, not yet dispatched */
  uint64_t close_deadline_ns; /* the grace ends (0: no close yet) */
  void *watch_co; /* the coroutine the watch hook last saw, */
  uint64_t watch_iter; /* in which loop iteration, */
  uint64_t watch_start_ns; /* since when */
  int watch_warned;
  void *panic_jmp; /* a jmp_buf in thread_main while uv_run runs */
};

synchro_t *synchro__new(const char *name, const char *path,
                        const char *cpath, const synchro_vm_t *vm,
                        lua_CFunction open_core);
void synchro__ref(synchro_t *S);
void synchro__unref(synchro_t *S);
/* Starts the loop thread if needed. Returns 0, SYNCHRO_ECLOSED or
 * SYNCHRO_ETHREAD (message in S->start_message). Thread: any. */
int synchro__start(synchro_t *S);
/* Queues a message, waking the loop if it sleeps. 0 or SYNCHRO_ECLOSED. */
int synchro__send(synchro_t *S, synchro_msg_t *msg);
/* Stops accepting calls, cancels the tasks, lets them finish within grace
 * seconds, then stops and joins the loop thread. Safe to call twice and
 * from several threads; on the loop thread itself it only starts the
 * close. Thread: any. */
void synchro__close(synchro_t *S, double grace);
int synchro__is_loop_thread(synchro_t *S);
/* The Synchronizer whose loop runs on this thread, or NULL. */
synchro_t *synchro__current(void);
/* Marks this thread as S's loop thread. Thread: the loop thread. */
void synchro__set_current(synchro_t *S);
/* A malloc'd copy of s, or NULL (s NULL or out of memory). */
char *synchro__strdup(const char *s);
/* Fails and frees every queued message. */
void synchro__drop_messages(synchro_t *S);
/* How long a close waits for the loop thread beyond the grace before it
 * gives up on it (a task stuck in C code, or in a loop LuaJIT compiled):
 * the thread is left to the process's exit, its calls end ECANCELED. */
#define SYNCHRO_CLOSE_BOUND 3.0

/* ---- handles.c: integers that name C objects to Lua ---- */
/* No pointer crosses to Lua, as a number or as text: Lua code and
 * marshalled payloads hold a handle, checked at every use, so a stale or
 * made-up one is an error, never a wild pointer. Thread: any. */
enum {
  SYNCHRO_HANDLE_SYNCHRONIZER = 1, /* refs: S->refs */
  SYNCHRO_HANDLE_INBOX,            /* a VM's inbox; refs: its refs */
  SYNCHRO_HANDLE_EXPORT            /* S:export(): one reference to S */
};
/* Registers p as kind; refs is p's reference count (for acquire), or
 * NULL. Returns the handle (> 0, below 2^53), or 0 when out of memory. */
int64_t synchro__handle_new(int kind, void *p, int *refs);
/* p, with one more reference taken on it; NULL when h is not a live
 * handle of kind (or p is being destroyed). */
void *synchro__handle_acquire(int64_t h, int kind);
/* Unregisters h and returns p (what h held goes to the caller), or NULL
 * when h is not a live handle of kind: once only. */
void *synchro__handle_take(int64_t h, int kind);
/* Unregisters h (its object is being destroyed). Accepts 0. */
void synchro__handle_free(int64_t h, int kind);

/* ---- values.c: the C API's tagged values in the marshal format ---- */
/* Encodes first (if not NULL) then args[0..nargs) as a marshal buffer.
 * Returns 0, SYNCHRO_EINVAL (a malformed value) or SYNCHRO_ENOMEM. */
int synchro__capi_encode(synchro_buf_t *b, const synchro_value_t *first,
                         const synchro_value_t *args, size_t nargs);
/* Decodes a buffer into a new array of values (NULL when empty).
 * Returns 0, SYNCHRO_EMARSHAL (not plain data), SYNCHRO_EBADBUF or
 * SYNCHRO_ENOMEM. */
int synchro__capi_decode(const char *data, size_t len,
                         synchro_value_t **out, size_t *n);

#endif
