/* The loop thread: one libuv loop with its own Lua VM.
 *
 * Waking the loop costs a system call, so producers only uv_async_send
 * when the loop has said it is about to sleep ("parked"). After it handled
 * messages, the loop spins a little in its prepare phase before it parks,
 * because a blocking caller usually sends the next call within a few
 * microseconds. */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "vm.h"

#define LOOP_SPIN_NS 50000ULL /* after activity, poll the mailbox this long */

/* ---- the loop thread ---- */

static void on_grace_expired(uv_timer_t *timer);

static int drain(synchro_t *S) {
  int n = 0;
  synchro_msg_t *msg = synchro__mailbox_take(&S->mailbox);
  while (msg != NULL) {
    synchro_msg_t *next = msg->next;
    synchro__dispatch(S, msg);
    msg = next;
    n++;
  }
  return n;
}

static void on_wakeup(uv_async_t *handle) {
  synchro_t *S = handle->data;
  __atomic_store_n(&S->parked, 0, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&S->close_requested, __ATOMIC_SEQ_CST) == 1) {
    __atomic_store_n(&S->close_requested, 2, __ATOMIC_SEQ_CST);
    uv_timer_start(&S->grace_timer, on_grace_expired,
                   (uint64_t)(S->close_grace * 1000), 0);
    synchro__dispatch_close(S, S->close_grace);
  }
  if (drain(S) > 0)
    S->last_activity_ns = synchro__now_ns();
}

static void on_prepare(uv_prepare_t *handle) {
  synchro_t *S = handle->data;
  uint64_t now;
  if (drain(S) > 0)
    S->last_activity_ns = synchro__now_ns();
  /* Spin only while calls keep coming: an idle loop costs no CPU. */
  now = synchro__now_ns();
  while (now - S->last_activity_ns < LOOP_SPIN_NS &&
         synchro__load(&S->state) == SYNCHRO_STATE_RUNNING) {
    unsigned i;
    for (i = 0; i < 64 && synchro__mailbox_empty(&S->mailbox); i++)
      synchro__cpu_relax();
    if (drain(S) > 0) {
      S->last_activity_ns = synchro__now_ns();
      /* Work it started (timers, callbacks) must run: leave prepare, but
       * through the park below: uv_backend_timeout() can be 0 (new I/O
       * watchers) while uv_run still polls with an infinite timeout. */
      if (uv_loop_alive(&S->loop) && uv_backend_timeout(&S->loop) == 0)
        break;
    }
    now = synchro__now_ns();
  }
  /* Park: Dekker with synchro__send (store parked, then re-check). */
  for (;;) {
    __atomic_store_n(&S->parked, 1, __ATOMIC_SEQ_CST);
    if (synchro__mailbox_empty(&S->mailbox))
      return;
    __atomic_store_n(&S->parked, 0, __ATOMIC_SEQ_CST);
    drain(S);
  }
}

static void close_walk(uv_handle_t *handle, void *arg) {
  if (!uv_is_closing(handle))
    uv_close(handle, NULL);
}

#define FINAL_DRAIN_NS 2000000000ULL /* 2 s */

static void thread_main(void *arg) {
  synchro_t *S = arg;
  uint64_t deadline;
  sigset_t all;
  lua_State *L;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  synchro__set_current(S);

  L = luaL_newstate();
  if (L == NULL) {
    S->start_error = SYNCHRO_ENOMEM;
    synchro__event_set(&S->started);
    return;
  }
  S->L = L;
  if (synchro__dispatch_open(L, S) != 0) {
    const char *msg = lua_tostring(L, -1);
    S->start_message = synchro__strdup(msg != NULL ? msg : "loop VM failed");
    S->start_error = SYNCHRO_ETHREAD;
    lua_close(L);
    S->L = NULL;
    synchro__event_set(&S->started);
    return;
  }
  synchro__event_set(&S->started);

  uv_run(&S->loop, UV_RUN_DEFAULT);

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
    S->loop_abandoned = 1; /* a request may still land in it: keep S */
  else
    uv_loop_close(&S->loop);
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
