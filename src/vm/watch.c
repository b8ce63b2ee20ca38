/* Reaching a task that never yields. While a task runs, the loop thread is
 * inside lua_resume: it sees neither the mailbox nor its timers. So every
 * task's coroutine carries a count hook (core.watch, from the scheduler's
 * backend). Each WATCH_COUNT instructions it reads one atomic flag, raised
 * by whoever sends a cancel or asks for a close (synchro__send,
 * synchro__close); only then does it call into Lua, which dispatches the
 * queued messages there and then and raises the cancellation inside the
 * task if the running task is cancelled. The same tick measures how long
 * the task has held the loop (synchro.new{slow=}).
 *
 * Why a flag, not lua_sethook from the other thread: lua_sethook is meant
 * for signal handlers on the thread that runs the state; from another
 * thread it races with the VM (and LuaJIT rewrites its dispatch table).
 * Lua 5.1-5.4 keep hooks per coroutine (a new coroutine inherits its
 * creator's), LuaJIT per VM. Code that LuaJIT compiled runs no hooks:
 * there, and in C code, only the close's bound (SYNCHRO_CLOSE_BOUND)
 * helps. */
#include <string.h>

#include "vm.h"

#define WATCH_COUNT 1000

/* Calls runtime.watch(event, where, seconds) protected; raises the value
 * it returns, if any (the cancellation). */
static void call_watch(lua_State *L, const char *event, lua_Debug *ar,
                       double seconds) {
  int err;
  lua_getfield(L, LUA_REGISTRYINDEX, "synchro.watch");
  if (lua_type(L, -1) != LUA_TFUNCTION) {
    lua_pop(L, 1);
    return;
  }
  lua_pushstring(L, event);
  if (lua_getinfo(L, "Sl", ar) && ar->currentline > 0)
    lua_pushfstring(L, "%s:%d", ar->short_src, ar->currentline);
  else
    lua_pushliteral(L, "?");
  lua_pushnumber(L, seconds);
  err = lua_pcall(L, 3, 1, 0);
  if (err != 0 || !lua_toboolean(L, -1)) {
    if (err != 0)
      fprintf(stderr, "synchro: error in the watch hook: %s\n",
              lua_tostring(L, -1));
    lua_pop(L, 1);
    return;
  }
  lua_error(L);
}

/* Messages and closes are taken only where the running code is the
 * task's own, not synchro's scheduler in the middle of a change. */
static int in_synchro(lua_State *L, lua_Debug *ar) {
  if (!lua_getinfo(L, "S", ar))
    return 1;
  return strstr(ar->source, "synchro/sched.lua") != NULL ||
         strstr(ar->source, "synchro/runtime.lua") != NULL;
}

static void watch_hook(lua_State *L, lua_Debug *ar) {
  synchro_t *S = synchro__current();
  uint64_t slow, now;
  if (S == NULL || S->L == NULL)
    return;
  if (__atomic_load_n(&S->attention, __ATOMIC_ACQUIRE) && !in_synchro(L, ar))
    call_watch(L, "attend", ar, 0);
  if (__atomic_load_n(&S->close_requested, __ATOMIC_ACQUIRE) == 2 &&
      synchro__now_ns() >= S->close_deadline_ns && !in_synchro(L, ar))
    call_watch(L, "overdue", ar, 0);
  slow = __atomic_load_n(&S->slow_ns, __ATOMIC_RELAXED);
  if (slow == 0)
    return;
  now = synchro__now_ns();
  if ((void *)L != S->watch_co || uv_now(&S->loop) != S->watch_iter) {
    S->watch_co = L;
    S->watch_iter = uv_now(&S->loop);
    S->watch_start_ns = now;
    S->watch_warned = 0;
  } else if (!S->watch_warned && now - S->watch_start_ns >= slow) {
    S->watch_warned = 1;
    call_watch(L, "slow", ar, (double)(now - S->watch_start_ns) / 1e9);
  }
}

/* core.watch(co): arms the watch hook on a task's coroutine. */
static int l_watch(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  luaL_argcheck(L, co != NULL, 1, "coroutine expected");
  lua_sethook(co, watch_hook, LUA_MASKCOUNT, WATCH_COUNT);
  return 0;
}

/* core.attend(): the watch hook found attention raised; runs on the
 * task's coroutine. */
static int l_attend(lua_State *L) {
  synchro_t *S = synchro__loop_of(L);
  __atomic_store_n(&S->attention, 0, __ATOMIC_SEQ_CST);
  synchro__loop_attend(S, L);
  return 0;
}

/* core.rearm_watch(): the running task was cancelled inside a shield
 * that just ended: the watch hook calls into Lua at its next tick, where
 * the cancellation is raised (see runtime.lua's watchers.attend). */
static int l_rearm_watch(lua_State *L) {
  synchro_t *S = synchro__loop_of(L);
  __atomic_store_n(&S->attention, 1, __ATOMIC_SEQ_CST);
  return 0;
}

static void panic_soon(uv_timer_t *timer) {
  synchro_t *S = timer->data;
  lua_State *L = S->L;
  lua_getfield(L, LUA_REGISTRYINDEX, "synchro.debug_panic");
  lua_error(L); /* outside any pcall: the panic */
}

/* core.debug_panic(msg): for tests of the loop thread's death: raises msg
 * outside any pcall on the loop thread, as a bug in C code would. */
static int l_debug_panic(lua_State *L) {
  synchro_t *S = synchro__loop_of(L);
  uv_timer_t *timer = lua_newuserdata(L, sizeof(*timer));
  luaL_checkstring(L, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, "synchro.debug_panic_timer");
  lua_pushvalue(L, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, "synchro.debug_panic");
  uv_timer_init(&S->loop, timer);
  timer->data = S;
  uv_timer_start(timer, panic_soon, 0, 0);
  return 0;
}

void synchro__watch_register(lua_State *L) {
  lua_pushcfunction(L, l_watch);
  lua_setfield(L, -2, "watch");
  lua_pushcfunction(L, l_attend);
  lua_setfield(L, -2, "attend");
  lua_pushcfunction(L, l_rearm_watch);
  lua_setfield(L, -2, "rearm_watch");
  lua_pushcfunction(L, l_debug_panic);
  lua_setfield(L, -2, "debug_panic");
}
