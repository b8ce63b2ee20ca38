/* The loop thread: one libuv loop with its own Lua VM.
 *
 * Waking the loop costs a system call, so producers only uv_async_send
 * when the loop has said it is about to sleep ("parked"). After it handled
 * messages, the loop spins a little in its prepare phase before it parks,
 * because a blocking caller usually sends the next call within a few
 * microseconds. */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vm.h"

#define LOOP_SPIN_NS 50000ULL /* after activity, poll the mailbox this long */

/* ---- the loop thread ---- */

static void on_grace_expired(uv_timer_t *timer);

/* Dispatches the queued messages on L (the loop VM's main state, or the
 * coroutine of a task whose watch hook runs this). The batch taken is
 * kept in S, so that a drain nested in a task's hook goes on with it
 * rather than overtaking it (a cancel must not pass its call). */
static int drain(synchro_t *S, lua_State *L) {
  int n = 0;
  synchro_msg_t *msg;
  if (S->batch == NULL)
    S->batch = synchro__mailbox_take(&S->mailbox);
  while ((msg = S->batch) != NULL) {
    S->batch = msg->next;
    synchro__dispatch(S, L, msg);
    n++;
  }
  return n;
}

void synchro__loop_attend(synchro_t *S, lua_State *L) {
  /* Calls sent before the close start (and are then cancelled): a
   * future submitted just before the end of a script still runs. */
  if (drain(S, L) > 0)
    S->last_activity_ns = synchro__now_ns();
  if (__atomic_load_n(&S->close_requested, __ATOMIC_SEQ_CST) == 1) {
    uint64_t ms = (uint64_t)(S->close_grace * 1000);
    __atomic_store_n(&S->close_requested, 2, __ATOMIC_SEQ_CST);
    S->close_deadline_ns = synchro__now_ns() + ms * 1000000ULL;
    uv_timer_start(&S->grace_timer, on_grace_expired, ms, 0);
    synchro__dispatch_close(S, L, S->close_grace);
  }
}

static void on_wakeup(uv_async_t *handle) {
  synchro_t *S = handle->data;
  __atomic_store_n(&S->parked, 0, __ATOMIC_SEQ_CST);
  __atomic_store_n(&S->attention, 0, __ATOMIC_SEQ_CST);
  synchro__loop_attend(S, S->L);
}

static void on_prepare(uv_prepare_t *handle) {
  synchro_t *S = handle->data;
  uint64_t now;
  int spin, spun = 0;
  if (drain(S, S->L) > 0)
    S->last_activity_ns = synchro__now_ns();
  /* Spin only while calls keep coming (an idle loop costs no CPU), and
   * only while spinning has been finding them (on a loaded machine the
   * spin takes the CPU the callers need). */
  now = synchro__now_ns();
  spin = now - S->last_activity_ns < LOOP_SPIN_NS &&
         synchro__spin_wanted(&S->loop_spin);
  while (spin && now - S->last_activity_ns < LOOP_SPIN_NS &&
         synchro__load(&S->state) == SYNCHRO_STATE_RUNNING) {
    unsigned i;
    spun = 1;
    for (i = 0; i < 64 && synchro__mailbox_empty(&S->mailbox); i++)
      synchro__cpu_relax();
    if (drain(S, S->L) > 0) {
      synchro__spin_record(&S->loop_spin, 1);
      spun = 0;
      S->last_activity_ns = synchro__now_ns();
      /* Work it started (timers, callbacks) must run: leave prepare, but
       * through the park below: uv_backend_timeout() can be 0 (new I/O
       * watchers) while uv_run still polls with an infinite timeout. */
      if (uv_loop_alive(&S->loop) && uv_backend_timeout(&S->loop) == 0)
        break;
    }
    now = synchro__now_ns();
  }
  if (spun) /* the last spin ran out with nothing */
    synchro__spin_record(&S->loop_spin, 0);
  /* Park: Dekker with synchro__send (store parked, then re-check). */
  for (;;) {
    __atomic_store_n(&S->parked, 1, __ATOMIC_SEQ_CST);
    if (synchro__mailbox_empty(&S->mailbox))
      return;
    __atomic_store_n(&S->parked, 0, __ATOMIC_SEQ_CST);
    drain(S, S->L);
  }
}

static void close_walk(uv_handle_t *handle, void *arg) {
  if (!uv_is_closing(handle))
    uv_close(handle, NULL);
}

#define FINAL_DRAIN_NS 2000000000ULL /* 2 s */

/* An error outside any pcall in the loop VM: rather than abort() the
 * process, the loop thread ends, and every call waiting on it fails. */
static int on_panic(lua_State *L) {
  synchro_t *S = synchro__current();
  const char *msg = lua_tostring(L, -1);
  if (S == NULL || S->panic_jmp == NULL)
    return 0; /* not a loop thread: Lua aborts */
  S->death_message = synchro__strdup(msg != NULL ? msg : "a Lua panic");
  longjmp(*(jmp_buf *)S->panic_jmp, 1);
}

/* The loop thread died: fail what waits on it, now and later. */
static void die(synchro_t *S) {
  fprintf(stderr, "synchro: the loop thread of '%s' died: %s\n", S->name,
          S->death_message != NULL ? S->death_message : "?");
  synchro__store(&S->state, SYNCHRO_STATE_CLOSED);
  S->L = NULL; /* inconsistent after the panic: left as it is */
  synchro__mailbox_close(&S->mailbox);
  synchro__drop_messages(S);
  /* the rest of the batch being dispatched: its calls fail too */
  for (; S->batch != NULL; S->batch = S->batch->next)
    if (S->batch->kind == SYNCHRO_MSG_CALL)
      synchro__call_track((synchro_call_t *)S->batch);
  synchro__complete_inflight(S, SYNCHRO_CALL_DIED);
}

static void thread_main(void *arg) {
  synchro_t *S = arg;
  uint64_t deadline;
  sigset_t all;
  lua_State *L;
  jmp_buf panic_jmp;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  synchro__set_current(S);

  L = luaL_newstate();
  if (L == NULL) {
    S->start_error = SYNCHRO_ENOMEM;
    synchro__event_set(&S->exited);
    synchro__event_set(&S->started);
    return;
  }
  lua_atpanic(L, on_panic);
#if LUA_VERSION_NUM >= 504
  /* As lua.c does: most of what the loop VM makes (a call's arguments, a
   * read chunk, a task that ends at once) dies young, and the incremental
   * collector traverses the old too each cycle. */
  lua_gc(L, LUA_GCGEN, 0, 0);
#endif
  S->L = L;
  if (synchro__dispatch_open(L, S) != 0) {
    const char *msg = lua_tostring(L, -1);
    S->start_message = synchro__strdup(msg != NULL ? msg : "loop VM failed");
    S->start_error = SYNCHRO_ETHREAD;
    lua_close(L);
    S->L = NULL;
    S->vm_refs = NULL;
    synchro__event_set(&S->exited);
    synchro__event_set(&S->started);
    return;
  }
  synchro__event_set(&S->started);

  S->panic_jmp = &panic_jmp;
  if (setjmp(panic_jmp) == 0) {
    uv_run(&S->loop, UV_RUN_DEFAULT);
  } else {
    /* The panic left uv_run in the middle of a callback: the loop and
     * the VM are left as they are (S is kept for them). */
    S->panic_jmp = NULL;
    die(S);
    __atomic_store_n(&S->loop_abandoned, 1, __ATOMIC_SEQ_CST);
    synchro__event_set(&S->exited);
    return;
  }
  S->panic_jmp = NULL;

  /* Stopped: fail what is still queued, free the VM, close the handles. */
  if (S->loop_notifier != NULL) {
    synchro__notifier_detach_loop(S->loop_notifier);
    synchro__notifier_unref(S->loop_notifier);
    S->loop_notifier = NULL;
  }
  synchro__mailbox_close(&S->mailbox);
  synchro__drop_messages(S);
  synchro__dispatch_shutdown(S);
  lua_close(L);
  S->L = NULL;
  S->vm_refs = NULL;
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
    /* a request may still land in it: keep S */
    __atomic_store_n(&S->loop_abandoned, 1, __ATOMIC_SEQ_CST);
  else
    uv_loop_close(&S->loop);
  synchro__event_set(&S->exited);
}

static void on_grace_expired(uv_timer_t *timer) {
  synchro__loop_stop(timer->data);
}

void synchro__loop_stop(synchro_t *S) {
  uv_timer_stop(&S->grace_timer);
  uv_stop(&S->loop);
}

static int start(synchro_t *S) {
  int err = uv_loop_init(&S->loop);
  if (err != 0)
    return err;
  uv_async_init(&S->loop, &S->wakeup, on_wakeup);
  uv_prepare_init(&S->loop, &S->prepare);
  uv_timer_init(&S->loop, &S->grace_timer);
  uv_unref((uv_handle_t *)&S->grace_timer);
  S->wakeup.data = S->prepare.data = S->grace_timer.data = S;
  uv_prepare_start(&S->prepare, on_prepare);
  err = uv_thread_create(&S->thread, thread_main, S);
  if (err != 0)
    uv_loop_close(&S->loop);
  return err;
}

const synchro_vm_t synchro__vm = {start};
