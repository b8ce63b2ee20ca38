/* The floor under a blocking call: two threads handing off one coroutine
 * resume per call, with nothing else (no mailbox, no marshalling, no
 * scheduler). The caller publishes a request word and waits; the server
 * thread sees it, resumes a Lua coroutine that yields the argument back,
 * and publishes the answer. Both sides spin up to 20 µs, then park on a futex
 * (Linux) or yield (elsewhere), as synchro's own waits do.
 *
 * Prints "handoff p50_us p99_us" for bench/roundtrip.lua, which shows it
 * next to synchro's blocking round trip. Usage: bench-handoff [samples] */
#define _GNU_SOURCE
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#ifdef __linux__
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#define SPIN_NS 20000u /* as synchro's waits: spin 20 us, then park */

typedef struct {
  uint32_t word; /* sequence number of the last request or answer */
  uint32_t sleeping;
} slot_t;

static slot_t request, answer;
static lua_Integer value;
static int stop;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void publish(slot_t *s, uint32_t seq) {
  __atomic_store_n(&s->word, seq, __ATOMIC_SEQ_CST);
#ifdef __linux__
  if (__atomic_load_n(&s->sleeping, __ATOMIC_SEQ_CST))
    syscall(SYS_futex, &s->word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
#endif
}

/* Waits until s->word != old. */
static uint32_t await_change(slot_t *s, uint32_t old) {
  uint32_t w;
  unsigned i;
  uint64_t start = now_ns();
  for (i = 1;; i++) {
    if ((w = __atomic_load_n(&s->word, __ATOMIC_ACQUIRE)) != old)
      return w;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
    if ((i & 63) == 0 && now_ns() - start > SPIN_NS)
      break;
  }
  for (;;) {
#ifdef __linux__
    __atomic_store_n(&s->sleeping, 1, __ATOMIC_SEQ_CST);
    if ((w = __atomic_load_n(&s->word, __ATOMIC_SEQ_CST)) == old)
      syscall(SYS_futex, &s->word, FUTEX_WAIT_PRIVATE, old, NULL, NULL, 0);
    __atomic_store_n(&s->sleeping, 0, __ATOMIC_SEQ_CST);
#else
    sched_yield();
#endif
    if ((w = __atomic_load_n(&s->word, __ATOMIC_ACQUIRE)) != old)
      return w;
  }
}

static void *server(void *arg) {
  lua_State *L = arg, *co;
  uint32_t seq = 0;
  /* a coroutine that yields back whatever it is resumed with, for ever */
  if (luaL_dostring(L, "return coroutine.create(function(x) "
                       "while true do x = coroutine.yield(x) end end)") != 0)
    abort();
  co = lua_tothread(L, -1);
  for (;;) {
    int n = 0;
    seq = await_change(&request, seq);
    if (__atomic_load_n(&stop, __ATOMIC_ACQUIRE))
      break;
    lua_pushinteger(co, value);
#if LUA_VERSION_NUM >= 504
    if (lua_resume(co, L, 1, &n) != LUA_YIELD)
      abort();
#elif LUA_VERSION_NUM >= 502
    if (lua_resume(co, L, 1) != LUA_YIELD)
      abort();
    n = lua_gettop(co);
#else
    if (lua_resume(co, 1) != LUA_YIELD)
      abort();
    n = lua_gettop(co);
#endif
    value = lua_tointeger(co, -1);
    lua_pop(co, n);
    publish(&answer, seq);
  }
  return NULL;
}

static int cmp(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  int samples = argc > 1 ? atoi(argv[1]) : 200000, i;
  uint64_t *t;
  pthread_t th;
  lua_State *L = luaL_newstate();
  uint32_t seq = 0;
  if (samples < 100)
    samples = 100;
  t = malloc(sizeof(*t) * (size_t)samples);
  if (L == NULL || t == NULL)
    return 1;
  luaL_openlibs(L);
  if (pthread_create(&th, NULL, server, L) != 0)
    return 1;
  for (i = -5000; i < samples; i++) {
    uint64_t t0 = now_ns();
    value = i;
    publish(&request, ++seq);
    await_change(&answer, seq - 1);
    if (value != i)
      abort();
    if (i >= 0)
      t[i] = now_ns() - t0;
  }
  __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
  publish(&request, ++seq);
  pthread_join(th, NULL);
  qsort(t, (size_t)samples, sizeof(*t), cmp);
  printf("handoff %.3f %.3f\n", t[samples / 2] / 1e3,
         t[(size_t)samples * 99 / 100] / 1e3);
  lua_close(L);
  free(t);
  return 0;
}
