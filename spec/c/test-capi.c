/* The public C API: every function's success and error cases, threads,
 * futures through poll, on_done, cancel, close with calls in flight. */
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
#include <string.h>
#ifdef SYNCHRO_HAVE_VALGRIND_H
#include <valgrind/valgrind.h>
#else
#define RUNNING_ON_VALGRIND 0
#endif

#include "lauxlib.h"
#include "lualib.h"
#include "synchro.h"
#include "test.h"
#include <uv.h>

#ifndef SYNCHRO_SOURCE_LUA_DIR
#error "SYNCHRO_SOURCE_LUA_DIR must name the repository's lua/ directory"
#endif

static const char *lib_code =
    "local aio = require 'synchro.aio'\n"
    "function add(a, b) return a + b end\n"
    "function echo(...) return ... end\n"
    "function slow(s, v) aio.sleep(s) return v end\n"
    "function fail(msg) error(msg, 0) end\n"
    "function fail_table() error({ code = 7 }) end\n"
    "function give_function() return print end\n"
    "function fail_text() error(setmetatable({}, {__tostring = function() "
    "return 'custom text' end})) end\n"
    "function give_shared() local t = {} return { a = t, b = t } end\n"
    "function stuck()\n"
    "  entered = (entered or 0) + 1\n"
    "  local ok, err = pcall(aio.sleep, 10)\n"
    "  cleaned = (cleaned or 0) + 1\n"
    "  error(err, 0)\n"
    "end\n"
    "function cleaned_count() return cleaned or 0 end\n"
    "function entered_count() return entered or 0 end\n"
    "mylib = { twice = function(x) aio.sleep(0.001) return 2 * x end }\n";

static int quick(void) { return getenv("SYNCHRO_TEST_QUICK") != NULL; }

static synchro_t *open_loaded(void) {
  synchro_t *s = NULL;
  synchro_options_t opts;
  char *err = NULL;
  memset(&opts, 0, sizeof(opts));
  opts.name = "capi-test";
  opts.lua_path = SYNCHRO_SOURCE_LUA_DIR "/?.lua;" SYNCHRO_SOURCE_LUA_DIR
                                         "/?/init.lua";
  opts.grace = 2;
  CHECK_EQ_INT(synchro_open(&s, &opts, &err), 0);
  CHECK(err == NULL);
  CHECK_EQ_INT(synchro_load_chunk(s, lib_code, strlen(lib_code), "=lib", &err),
               0);
  CHECK(err == NULL);
  return s;
}

static void test_errors_and_version(void) {
  CHECK_EQ_INT(synchro_version(), SYNCHRO_VERSION_HEX);
  CHECK(strcmp(synchro_version_string(), SYNCHRO_VERSION_STRING) == 0);
  CHECK(strcmp(synchro_err_name(SYNCHRO_ECLOSED), "ECLOSED") == 0);
  CHECK(strcmp(synchro_strerror(SYNCHRO_ECLOSED), "synchronizer is closed") ==
        0);
  CHECK(strcmp(synchro_err_name(SYNCHRO_ETIMEDOUT), "ETIMEDOUT") == 0);
  CHECK(strcmp(synchro_err_name(SYNCHRO_ECANCELED), "ECANCELED") == 0);
  CHECK(strcmp(synchro_err_name(UV_ECONNREFUSED), "ECONNREFUSED") == 0);
  CHECK(strcmp(synchro_err_name(12345), "UNKNOWN") == 0);
  CHECK(strcmp(synchro_strerror(12345), "unknown error") == 0);
}

static void test_open_close(void) {
  synchro_t *s = NULL;
  char *err = NULL;
  CHECK_EQ_INT(synchro_open(NULL, NULL, &err), SYNCHRO_EINVAL);
  CHECK(err != NULL);
  synchro_free(err);
  CHECK_EQ_INT(synchro_close(NULL, 0), 0);
  synchro_free(NULL);
  synchro_values_free(NULL, 3);
  s = open_loaded();
  CHECK_EQ_INT(synchro_close(s, -1), 0);
}

static void test_calls(void) {
  synchro_t *s = open_loaded();
  synchro_value_t args[6], *res = NULL;
  synchro_pair_t pairs[3], inner[1];
  size_t n = 0, i;
  char *err = NULL;

  args[0] = synchro_integer(2);
  args[1] = synchro_integer(40);
  CHECK_EQ_INT(synchro_call(s, "add", args, 2, &res, &n, -1, &err), 0);
  CHECK_EQ_INT(n, 1);
  CHECK(err == NULL);
  CHECK_EQ_INT(res[0].as.integer, 42);
  synchro_values_free(res, n);

  /* every type, through echo */
  inner[0].key = synchro_string("deep");
  inner[0].value = synchro_boolean(1);
  pairs[0].key = synchro_integer(1);
  pairs[0].value = synchro_string("first");
  pairs[1].key = synchro_string("name");
  pairs[1].value = synchro_number(2.5);
  pairs[2].key = synchro_string("sub");
  pairs[2].value = synchro_table(inner, 1);
  args[0] = synchro_nil();
  args[1] = synchro_boolean(0);
  args[2] = synchro_number(-0.125);
  args[3] = synchro_bytes("a\0b", 3);
  args[4] = synchro_table(pairs, 3);
  args[5] = synchro_integer(-7);
  CHECK_EQ_INT(synchro_call(s, "echo", args, 6, &res, &n, 5, NULL), 0);
  CHECK_EQ_INT(n, 6);
  CHECK_EQ_INT(res[0].type, SYNCHRO_TNIL);
  CHECK(res[1].type == SYNCHRO_TBOOLEAN && res[1].as.boolean == 0);
  CHECK(res[2].type == SYNCHRO_TNUMBER && res[2].as.number == -0.125);
  CHECK(res[3].type == SYNCHRO_TBYTES && res[3].as.bytes.len == 3 &&
        memcmp(res[3].as.bytes.data, "a\0b", 3) == 0);
  CHECK_EQ_INT(res[4].type, SYNCHRO_TTABLE);
  CHECK_EQ_INT(res[4].as.table.count, 3);
  for (i = 0; i < 3; i++) {
    synchro_pair_t *p = &res[4].as.table.pairs[i];
    if (p->key.type == SYNCHRO_TINTEGER) {
      CHECK_EQ_INT(p->key.as.integer, 1);
      CHECK(strcmp(p->value.as.bytes.data, "first") == 0);
    } else if (strcmp(p->key.as.bytes.data, "name") == 0) {
      CHECK(p->value.as.number == 2.5);
    } else {
      CHECK(strcmp(p->key.as.bytes.data, "sub") == 0);
      CHECK_EQ_INT(p->value.type, SYNCHRO_TTABLE);
      CHECK_EQ_INT(p->value.as.table.count, 1);
      CHECK(p->value.as.table.pairs[0].value.as.boolean == 1);
    }
  }
  CHECK(res[5].type == SYNCHRO_TINTEGER && res[5].as.integer == -7);
  synchro_values_free(res, n);

  /* a path into a module table, results not wanted */
  args[0] = synchro_integer(21);
  CHECK_EQ_INT(synchro_call(s, "mylib.twice", args, 1, NULL, NULL, -1, NULL),
               0);
  CHECK_EQ_INT(synchro_call(s, "mylib.twice", args, 1, &res, &n, -1, NULL), 0);
  CHECK_EQ_INT(res[0].as.integer, 42);
  synchro_values_free(res, n);
  CHECK_EQ_INT(synchro_call(s, "string.rep", (synchro_value_t[]){
                                                 synchro_string("ab"),
                                                 synchro_integer(3)},
                            2, &res, &n, -1, NULL),
               0);
  CHECK(strcmp(res[0].as.bytes.data, "ababab") == 0);
  synchro_values_free(res, n);

  /* errors */
  CHECK_EQ_INT(synchro_call(s, "no.such.fn", NULL, 0, &res, &n, -1, &err),
               SYNCHRO_ELUAERROR);
  CHECK(strstr(err, "no function 'no.such.fn'") != NULL);
  synchro_free(err);
  args[0] = synchro_string("boom");
  CHECK_EQ_INT(synchro_call(s, "fail", args, 1, &res, &n, -1, &err),
               SYNCHRO_ELUAERROR);
  CHECK(strncmp(err, "boom\n[loop thread]", 18) == 0);
  CHECK(res == NULL && n == 0);
  synchro_free(err);
  CHECK_EQ_INT(synchro_call(s, "fail_table", NULL, 0, NULL, NULL, -1, &err),
               SYNCHRO_ELUAERROR);
  CHECK(strstr(err, "not a string") != NULL);
  synchro_free(err);
  /* regression: a function result gave SYNCHRO_ELUAERROR, not what
   * synchro.h says */
  CHECK_EQ_INT(synchro_call(s, "give_function", NULL, 0, &res, &n, -1, &err),
               SYNCHRO_EMARSHAL); /* the loop could not send it */
  CHECK(strstr(err, "cannot send function") != NULL);
  synchro_free(err);
  /* a table error with __tostring gives its text */
  CHECK_EQ_INT(synchro_call(s, "fail_text", NULL, 0, NULL, NULL, -1, &err),
               SYNCHRO_ELUAERROR);
  CHECK(strncmp(err, "custom text\n[loop thread]", 25) == 0);
  synchro_free(err);
  CHECK_EQ_INT(synchro_call(s, "give_shared", NULL, 0, &res, &n, -1, &err),
               SYNCHRO_EMARSHAL);
  synchro_free(err);
  CHECK_EQ_INT(synchro_call(NULL, "add", NULL, 0, NULL, NULL, -1, NULL),
               SYNCHRO_EINVAL);
  CHECK_EQ_INT(synchro_call(s, NULL, NULL, 0, NULL, NULL, -1, NULL),
               SYNCHRO_EINVAL);
  CHECK_EQ_INT(synchro_call(s, "add", NULL, 2, NULL, NULL, -1, NULL),
               SYNCHRO_EINVAL);
  args[0].type = (synchro_type_t)99;
  CHECK_EQ_INT(synchro_call(s, "echo", args, 1, NULL, NULL, -1, &err),
               SYNCHRO_EINVAL);
  synchro_free(err);
  CHECK_EQ_INT(synchro_load_module(s, "string", NULL), 0);
  CHECK_EQ_INT(synchro_load_module(s, "no_such_module_here", &err),
               SYNCHRO_ELUAERROR);
  CHECK(strstr(err, "no_such_module_here") != NULL);
  synchro_free(err);
  CHECK_EQ_INT(synchro_load_module(s, NULL, NULL), SYNCHRO_EINVAL);
  CHECK_EQ_INT(synchro_load_chunk(s, "x = = 1", 7, "=bad", &err),
               SYNCHRO_ELUAERROR);
  CHECK(strstr(err, "bad") != NULL);
  synchro_free(err);
  CHECK_EQ_INT(synchro_load_chunk(s, NULL, 0, NULL, NULL), SYNCHRO_EINVAL);

  /* a timeout cancels the task; its cleanup has run when we return */
  CHECK_EQ_INT(synchro_call(s, "stuck", NULL, 0, NULL, NULL, 0.05, &err),
               SYNCHRO_ETIMEDOUT);
  synchro_free(err);
  CHECK_EQ_INT(synchro_call(s, "cleaned_count", NULL, 0, &res, &n, -1, NULL),
               0);
  CHECK_EQ_INT(res[0].as.integer, 1);
  synchro_values_free(res, n);

  synchro_close(s, -1);
}

static void test_closed(void) {
  synchro_t *s = open_loaded();
  synchro_future_t *f = NULL;
  char *err = NULL;
  /* close with a call in flight: it ends cancelled, cleanup ran */
  CHECK_EQ_INT(synchro_submit(s, "stuck", NULL, 0, &f), 0);
  CHECK_EQ_INT(synchro_future_wait(f, 0.05), SYNCHRO_ETIMEDOUT);
  synchro_close(s, 2);
  CHECK(synchro_future_done(f));
  CHECK_EQ_INT(synchro_future_results(f, NULL, NULL, &err),
               SYNCHRO_ECANCELED);
  synchro_free(err);
  synchro_future_release(f);
}

static void test_shutdown(void) {
  synchro_t *s = open_loaded();
  synchro_future_t *f = NULL;
  char *err = NULL;
  CHECK_EQ_INT(synchro_shutdown(NULL, 0), SYNCHRO_EINVAL);
  CHECK_EQ_INT(synchro_shutdown(s, 1), 0);
  CHECK_EQ_INT(synchro_shutdown(s, 1), 0); /* again */
  CHECK_EQ_INT(synchro_call(s, "add", NULL, 0, NULL, NULL, -1, &err),
               SYNCHRO_ECLOSED);
  CHECK(strcmp(err, "synchronizer is closed") == 0);
  synchro_free(err);
  CHECK_EQ_INT(synchro_submit(s, "add", NULL, 0, &f), SYNCHRO_ECLOSED);
  CHECK(f == NULL);
  CHECK_EQ_INT(synchro_load_module(s, "string", NULL), SYNCHRO_ECLOSED);
  CHECK_EQ_INT(synchro_load_chunk(s, "x = 1", 5, NULL, NULL),
               SYNCHRO_ECLOSED);
  synchro_close(s, 0);
}

typedef struct {
  synchro_t *s;
  int id;
  int failures;
  int calls;
} worker_t;

static void worker(void *arg) {
  worker_t *w = arg;
  int i, rounds = quick() ? 500 : 10000;
  for (i = 0; i < rounds; i++) {
    synchro_value_t args[2], *res = NULL;
    size_t n = 0;
    args[0] = synchro_integer(i);
    args[1] = synchro_integer(w->id * 1000000);
    if (synchro_call(w->s, "add", args, 2, &res, &n, -1, NULL) != 0 ||
        n != 1 || res[0].as.integer != i + w->id * 1000000)
      w->failures++;
    w->calls++;
    synchro_values_free(res, n);
  }
}

static void test_threads(void) {
  enum { N = 16 };
  synchro_t *s = open_loaded();
  uv_thread_t t[N];
  worker_t w[N];
  int i, total = 0;
  for (i = 0; i < N; i++) {
    w[i].s = s;
    w[i].id = i;
    w[i].failures = w[i].calls = 0;
    CHECK_EQ_INT(uv_thread_create(&t[i], worker, &w[i]), 0);
  }
  for (i = 0; i < N; i++) {
    uv_thread_join(&t[i]);
    CHECK_EQ_INT(w[i].failures, 0);
    total += w[i].calls;
  }
  CHECK_EQ_INT(total, N * (quick() ? 500 : 10000));
  synchro_close(s, -1);
}

static int done_calls;

static void on_done(synchro_future_t *f, void *ud) {
  synchro_value_t *res = NULL;
  size_t n = 0;
  CHECK(synchro_future_done(f));
  CHECK_EQ_INT(synchro_future_results(f, &res, &n, NULL), 0);
  CHECK_EQ_INT(n, 1);
  __atomic_add_fetch((int *)ud, 1, __ATOMIC_SEQ_CST);
  synchro_values_free(res, n);
}

static void test_futures(void) {
  enum { N = 50 };
  synchro_t *s = open_loaded();
  synchro_future_t *f[N], *g = NULL;
  struct pollfd fds[N];
  synchro_value_t args[2], *res = NULL;
  size_t n = 0;
  int i, left = N;
  char *err = NULL;

  CHECK_EQ_INT(synchro_submit(s, "slow", NULL, 0, NULL), SYNCHRO_EINVAL);
  CHECK_EQ_INT(synchro_submit(NULL, "slow", NULL, 0, &g), SYNCHRO_EINVAL);
  CHECK(g == NULL);
  CHECK_EQ_INT(synchro_future_wait(NULL, 0), SYNCHRO_EINVAL);
  CHECK_EQ_INT(synchro_future_fd(NULL), SYNCHRO_EINVAL);
  CHECK_EQ_INT(synchro_future_cancel(NULL), SYNCHRO_EINVAL);
  CHECK_EQ_INT(synchro_future_on_done(NULL, on_done, NULL), SYNCHRO_EINVAL);
  CHECK(!synchro_future_done(NULL));
  synchro_future_release(NULL);

  /* N concurrent calls of 0.1 s, waited for through their fds */
  for (i = 0; i < N; i++) {
    args[0] = synchro_number(0.1);
    args[1] = synchro_integer(i);
    CHECK_EQ_INT(synchro_submit(s, "slow", args, 2, &f[i]), 0);
    CHECK_EQ_INT(synchro_future_results(f[i], &res, &n, NULL),
                 SYNCHRO_EINVAL); /* not done yet */
    fds[i].fd = synchro_future_fd(f[i]);
    CHECK(fds[i].fd >= 0);
    CHECK_EQ_INT(synchro_future_fd(f[i]), fds[i].fd); /* the same one */
    fds[i].events = POLLIN;
    fds[i].revents = 0;
  }
  while (left > 0) {
    int ready = poll(fds, N, 10000);
    CHECK(ready > 0);
    for (i = 0; i < N; i++) {
      if (fds[i].fd >= 0 && (fds[i].revents & POLLIN)) {
        CHECK(synchro_future_done(f[i]));
        CHECK_EQ_INT(synchro_future_results(f[i], &res, &n, NULL), 0);
        CHECK_EQ_INT(res[0].as.integer, i);
        synchro_values_free(res, n);
        fds[i].fd = -1;
        left--;
      }
    }
  }
  for (i = 0; i < N; i++)
    synchro_future_release(f[i]);

  /* on_done: once, before or after completion; a second is refused */
  done_calls = 0;
  args[0] = synchro_number(0.02);
  args[1] = synchro_integer(1);
  CHECK_EQ_INT(synchro_submit(s, "slow", args, 2, &g), 0);
  CHECK_EQ_INT(synchro_future_on_done(g, on_done, &done_calls), 0);
  CHECK_EQ_INT(synchro_future_on_done(g, on_done, &done_calls),
               SYNCHRO_EINVAL);
  CHECK_EQ_INT(synchro_future_wait(g, -1), 0);
  synchro_future_release(g);
  args[0] = synchro_number(0);
  CHECK_EQ_INT(synchro_submit(s, "slow", args, 2, &g), 0);
  CHECK_EQ_INT(synchro_future_wait(g, -1), 0);
  CHECK_EQ_INT(synchro_future_on_done(g, on_done, &done_calls), 0);
  synchro_future_release(g);
  /* the first one's callback runs on the loop thread: wait for it */
  for (i = 0; i < 1000 && __atomic_load_n(&done_calls, __ATOMIC_SEQ_CST) < 2;
       i++)
    uv_sleep(5);
  CHECK_EQ_INT(__atomic_load_n(&done_calls, __ATOMIC_SEQ_CST), 2);

  /* cancel a running call: cleanup runs, the result is ECANCELED */
  CHECK_EQ_INT(synchro_submit(s, "stuck", NULL, 0, &g), 0);
  CHECK_EQ_INT(synchro_future_wait(g, 0.05), SYNCHRO_ETIMEDOUT);
  CHECK_EQ_INT(synchro_future_cancel(g), 0);
  CHECK_EQ_INT(synchro_future_wait(g, 10), 0);
  CHECK_EQ_INT(synchro_future_results(g, NULL, NULL, &err),
               SYNCHRO_ECANCELED);
  synchro_free(err);
  synchro_future_release(g);
  CHECK_EQ_INT(synchro_call(s, "cleaned_count", NULL, 0, &res, &n, -1, NULL),
               0);
  CHECK_EQ_INT(res[0].as.integer, 1);
  synchro_values_free(res, n);

  /* released before done: the call finishes alone, nothing leaks */
  args[0] = synchro_number(0.02);
  CHECK_EQ_INT(synchro_submit(s, "slow", args, 2, &g), 0);
  CHECK(synchro_future_fd(g) >= 0);
  synchro_future_release(g);
  synchro_close(s, -1);
}

typedef struct {
  synchro_t *s;
  int ok, cancelled, other;
} inflight_t;

static void inflight_worker(void *arg) {
  inflight_t *w = arg;
  int rc = synchro_call(w->s, "stuck", NULL, 0, NULL, NULL, -1, NULL);
  if (rc == SYNCHRO_ECANCELED || rc == SYNCHRO_ECLOSED)
    w->cancelled++;
  else
    w->other++;
}

static void test_close_in_flight(void) {
  enum { N = 4 };
  synchro_t *s = open_loaded();
  uv_thread_t t[N];
  inflight_t w[N];
  int i;
  for (i = 0; i < N; i++) {
    memset(&w[i], 0, sizeof(w[i]));
    w[i].s = s;
    CHECK_EQ_INT(uv_thread_create(&t[i], inflight_worker, &w[i]), 0);
  }
  /* close only once every caller is inside its call (s is theirs until
   * then: a close before a caller reached synchro_call freed it under
   * that caller) */
  for (i = 0; i < 2000; i++) { /* up to 20 s: only a hang takes that */
    synchro_value_t *res = NULL;
    size_t n = 0;
    long long entered = 0;
    CHECK_EQ_INT(
        synchro_call(s, "entered_count", NULL, 0, &res, &n, -1, NULL), 0);
    entered = res[0].as.integer;
    synchro_values_free(res, n);
    if (entered == N)
      break;
    uv_sleep(10);
  }
  CHECK(i < 2000);
  synchro_close(s, 2);
  for (i = 0; i < N; i++) {
    uv_thread_join(&t[i]);
    CHECK_EQ_INT(w[i].cancelled, 1);
    CHECK_EQ_INT(w[i].other, 0);
  }
}

/* After fork(), the child's copy of a running synchronizer refuses calls
 * at once and closes without waiting for threads it does not have. */
/* The child's verdict comes through a pipe, not its exit status: under
 * valgrind a forked child exits with valgrind's error code when memory
 * that only the parent's loop thread pointed to at the fork (a call it
 * was finishing) shows as lost in a child that has no such thread. */
static void test_fork(void) {
  synchro_t *s = open_loaded();
  synchro_value_t args[2];
  pid_t pid;
  int status = -1, i, fds[2];
  char verdict = 0;
  args[0] = synchro_integer(1);
  args[1] = synchro_integer(2);
  CHECK_EQ_INT(synchro_call(s, "add", args, 2, NULL, NULL, -1, NULL), 0);
  CHECK(pipe(fds) == 0);
  pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    int rc = synchro_call(s, "add", args, 2, NULL, NULL, -1, NULL);
    if (rc != SYNCHRO_ECLOSED)
      fprintf(stderr, "forked child: the call gave %d, not ECLOSED\n", rc);
    synchro_close(s, 1);
    verdict = rc == SYNCHRO_ECLOSED ? 'y' : 'n';
    _exit(write(fds[1], &verdict, 1) == 1 ? 0 : 2);
  }
  close(fds[1]);
  for (i = 0; i < 1000; i++) { /* up to 10 s: a hang fails the test */
    if (waitpid(pid, &status, WNOHANG) == pid)
      break;
    uv_sleep(10);
  }
  if (i == 1000)
    kill(pid, SIGKILL);
  CHECK(i < 1000);
  CHECK(read(fds[0], &verdict, 1) == 1);
  close(fds[0]);
  CHECK(verdict == 'y');
  if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0))
    fprintf(stderr, "forked child: %s %d\n",
            WIFEXITED(status) ? "exit code" : "signal",
            WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
  CHECK(WIFEXITED(status) &&
        (WEXITSTATUS(status) == 0 ||
         (RUNNING_ON_VALGRIND && WEXITSTATUS(status) == 1)));
  /* the parent's synchronizer is untouched */
  CHECK_EQ_INT(synchro_call(s, "add", args, 2, NULL, NULL, -1, NULL), 0);
  synchro_close(s, -1);
}

static void test_lua_push(void) {
  synchro_t *s = open_loaded();
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  CHECK_EQ_INT(luaL_dostring(L, "package.path = '" SYNCHRO_SOURCE_LUA_DIR
                                "/?.lua;" SYNCHRO_SOURCE_LUA_DIR
                                "/?/init.lua;' .. package.path"),
               0);
  CHECK_EQ_INT(synchro_lua_push(L, s), 0);
  lua_setglobal(L, "S");
  CHECK_EQ_INT(luaL_dostring(L,
                             "local f = S:wrap(function(x)\n"
                             "  return add(x, 1) end)\n"
                             "assert(f(41) == 42)\n"
                             "assert(S:state() == 'running')\n"),
               0);
  CHECK_EQ_INT(synchro_lua_push(L, NULL), SYNCHRO_EINVAL);
  lua_pop(L, 1); /* its message */
  lua_close(L); /* collecting the object does not close s */
  CHECK_EQ_INT(synchro_call(s, "add", (synchro_value_t[]){synchro_integer(1),
                                                          synchro_integer(2)},
                            2, NULL, NULL, -1, NULL),
               0);
  synchro_close(s, -1);
}

/* The one time rule from C: NaN is EINVAL; negative, INFINITY, 1e300 and
 * 2^63 mean no limit (poll()'s convention); they once overflowed to 0
 * and timed out at once. */
static void test_times(void) {
  static const double never[] = {-1, 1e300, 9.3e18};
  synchro_t *s = open_loaded();
  synchro_value_t args[2], *res = NULL;
  synchro_future_t *g = NULL;
  size_t n = 0, i;
  args[0] = synchro_number(0.05);
  args[1] = synchro_integer(7);
  CHECK_EQ_INT(synchro_call(s, "slow", args, 2, &res, &n, NAN, NULL),
               SYNCHRO_EINVAL);
  CHECK_EQ_INT(synchro_call(s, "slow", args, 2, &res, &n, INFINITY, NULL), 0);
  CHECK_EQ_INT(res[0].as.integer, 7);
  synchro_values_free(res, n);
  for (i = 0; i < sizeof(never) / sizeof(never[0]); i++) {
    CHECK_EQ_INT(synchro_call(s, "slow", args, 2, &res, &n, never[i], NULL),
                 0);
    synchro_values_free(res, n);
  }
  /* 0 and a short timeout: ETIMEDOUT, after the task's cleanup */
  CHECK_EQ_INT(synchro_call(s, "stuck", NULL, 0, NULL, NULL, 0, NULL),
               SYNCHRO_ETIMEDOUT);
  CHECK_EQ_INT(synchro_call(s, "stuck", NULL, 0, NULL, NULL, 0.05, NULL),
               SYNCHRO_ETIMEDOUT);
  CHECK_EQ_INT(synchro_submit(s, "slow", args, 2, &g), 0);
  CHECK_EQ_INT(synchro_future_wait(g, NAN), SYNCHRO_EINVAL);
  CHECK_EQ_INT(synchro_future_wait(g, INFINITY), 0);
  synchro_future_release(g);
  CHECK_EQ_INT(synchro_shutdown(s, NAN), SYNCHRO_EINVAL);
  CHECK_EQ_INT(synchro_close(s, INFINITY), 0);
}

/* on_done runs before the future is seen done, and never after release
 * returned: a host that frees the callback's data at release once read
 * garbage 2,982 times in 3,000. */
typedef struct {
  synchro_future_t *f;
  int *alive; /* freed right after release */
  int ran;
} order_t;

static void on_done_order(synchro_future_t *f, void *ud) {
  order_t *o = ud;
  CHECK(synchro_future_done(f)); /* and its results are there */
  CHECK_EQ_INT(synchro_future_results(f, NULL, NULL, NULL), 0);
  uv_sleep(1); /* widen the window a release would race into */
  CHECK(*o->alive == 1);
  o->ran++;
}

static void test_on_done_order(void) {
  enum { N = 300 };
  synchro_t *s = open_loaded();
  synchro_value_t args[2];
  int i, ran = 0;
  for (i = 0; i < N; i++) {
    order_t *o = calloc(1, sizeof(*o));
    o->alive = malloc(sizeof(int));
    *o->alive = 1;
    args[0] = synchro_number(0);
    args[1] = synchro_integer(i);
    CHECK_EQ_INT(synchro_submit(s, "slow", args, 2, &o->f), 0);
    CHECK_EQ_INT(synchro_future_on_done(o->f, on_done_order, o), 0);
    if (i % 2 == 0) {
      CHECK_EQ_INT(synchro_future_wait(o->f, -1), 0);
      CHECK_EQ_INT(o->ran, 1); /* done is seen only after on_done ran */
    }
    synchro_future_release(o->f); /* at once for the odd ones */
    ran += o->ran;
    *o->alive = 0;
    free(o->alive);
    o->alive = NULL;
    /* after release returned, the callback has run or never will */
    CHECK(o->ran == 0 || o->ran == 1);
    free(o);
  }
  CHECK(ran >= N / 2);
  synchro_close(s, -1);
}

int main(void) {
  RUN(test_errors_and_version);
  RUN(test_open_close);
  RUN(test_calls);
  RUN(test_closed);
  RUN(test_shutdown);
  RUN(test_threads);
  RUN(test_futures);
  RUN(test_close_in_flight);
  RUN(test_fork);
  RUN(test_lua_push);
  RUN(test_times);
  RUN(test_on_done_order);
  return 0;
}
