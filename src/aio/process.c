/* Child processes for the loop VM: core.spawn() starts one with libuv and
 * reports its exit to a Lua function; lua/synchro/aio/process.lua builds
 * the API on it.
 *
 * How an exit is noticed: libuv reaps its children from a SIGCHLD handler
 * that writes to the loop's signal pipe. The loop thread blocks every
 * signal, so the kernel delivers SIGCHLD to a thread that does not block
 * it: the main thread of a Lua script, normally, even while it waits in a
 * blocking call (a futex wait is interrupted, then restarted). If every
 * thread blocks SIGCHLD (a thread inside system(), i.e. os.execute, does
 * for a while; some hosts block it everywhere), the signal stays pending.
 * So each running child also has a poll timer: every POLL_MS it asks
 * waitid(WNOWAIT) whether the child has ended unreaped, and if so reaps it
 * here and closes the handle (so libuv never waits for that pid again).
 *
 * Lifetime: the handle stays open until the child has exited and been
 * reaped, then closes itself: no zombie, no leaked handle. The Lua side
 * keeps the object alive while the child runs. If the object is collected
 * anyway (the loop VM closing, at S:close()), a child still running is
 * killed with SIGKILL; when the loop is closing it is also reaped at once
 * (waitpid), since the loop will not run again.
 *
 * Process groups: with group=true the child is spawned with
 * UV_PROCESS_DETACHED, so libuv calls setsid() in it: a new session and
 * a new process group whose id is the child's pid (libuv offers no plain
 * setpgid). Signals then go to -pid and reach every process the child
 * started (sh -c 'a & b & wait'), even after the child itself exited; a
 * pgid is not reused while any member lives. The child has no
 * controlling terminal, so Ctrl-C at the terminal reaches only this
 * process, which cancels (and so terminates) the group itself. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>

#include "pipe.h"

#define PROC_MT "synchro.process"
#define POLL_MS 1000

typedef struct proc_box proc_box_t;

typedef struct {
  uv_process_t handle;
  uv_timer_t poll;
  int open; /* handles not yet closed */
  int exited;
  int closing;
  int exit_ref;
  synchro_t *S;
  proc_box_t *box;
} loop_proc_t;

struct proc_box {
  loop_proc_t *proc;
  int pid;
  int group; /* the child leads its own process group (pgid == pid) */
};

static void on_closed(uv_handle_t *handle) {
  loop_proc_t *p = handle->data;
  if (--p->open > 0)
    return;
  if (p->box != NULL)
    p->box->proc = NULL;
  free(p);
}

static void close_handles(loop_proc_t *p) {
  if (p->closing)
    return;
  p->closing = 1;
  uv_close((uv_handle_t *)&p->handle, on_closed);
  uv_close((uv_handle_t *)&p->poll, on_closed);
}

/* The child has been reaped: report it, then close the handles. */
static void finish(loop_proc_t *p, int64_t status, int term_signal) {
  p->exited = 1;
  if (p->exit_ref != LUA_NOREF && synchro__live_vm(p->S) != NULL) {
    lua_State *L = synchro__live_vm(p->S);
    int ref = p->exit_ref;
    p->exit_ref = LUA_NOREF;
    lua_pushinteger(L, (lua_Integer)status);
    lua_pushinteger(L, term_signal);
    synchro__call_ref_fn(L, ref, 2);
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
  }
  close_handles(p);
}

static void on_process_exit(uv_process_t *handle, int64_t status,
                            int term_signal) {
  finish(handle->data, status, term_signal);
}

static void finish_with(loop_proc_t *p, int status) {
  finish(p, WIFEXITED(status) ? WEXITSTATUS(status) : 0,
         WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

/* The fallback for a SIGCHLD that no thread can receive (see the top). */
static void on_poll(uv_timer_t *timer) {
  loop_proc_t *p = timer->data;
  pid_t pid = p->handle.pid;
  siginfo_t info;
  int status;
  if (p->exited)
    return;
  memset(&info, 0, sizeof(info));
  if (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) != 0) {
    if (errno == ECHILD) /* reaped by someone else: the status is lost */
      finish(p, -1, 0);
    return;
  }
  if (info.si_pid == pid && waitpid(pid, &status, WNOHANG) == pid)
    finish_with(p, status);
}

/* Builds a NULL-terminated array of the strings in the table at idx,
 * after first (if not NULL). The array is a userdata left on the stack;
 * the strings stay anchored by the table. */
static char **string_array(lua_State *L, int idx, const char *first,
                           const char *what) {
  size_t n = lua_rawlen(L, idx), i, k = 0;
  char **a = lua_newuserdata(L, (n + 2) * sizeof(char *));
  if (first != NULL)
    a[k++] = (char *)first;
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, idx, (lua_Integer)i);
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L,
                 "bad argument #2 to 'spawn' (%s[%d] must be a string, "
                 "got %s)",
                 what, (int)i, luaL_typename(L, -1));
    a[k++] = (char *)lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  a[k] = NULL;
  return a;
}

/* core.spawn(file, args, cwd, env, stdio, on_exit, group) -> proc, pid,
 * stdin, stdout, stderr | nil, message, name. group: the child gets its
 * own process group (see the top). args and env ("NAME=value") are
 * arrays of strings, env nil to inherit; stdio holds three of "pipe",
 * "inherit", "ignore"; the pipes are returned for "pipe", else nil.
 * on_exit(status, term_signal) runs once the child is reaped. */
static int spawn(lua_State *L) {
  synchro_t *S = synchro__loop_of(L);
  const char *file = luaL_checkstring(L, 1);
  const char *cwd = luaL_optstring(L, 3, NULL);
  uv_process_options_t opts;
  uv_stdio_container_t stdio[3];
  int pipes[3] = {0, 0, 0};
  char **argv, **envp = NULL;
  proc_box_t *box;
  loop_proc_t *p;
  int i, err, exit_ref, top, group = lua_toboolean(L, 7);
  luaL_checktype(L, 2, LUA_TTABLE);
  if (!lua_isnoneornil(L, 4))
    luaL_checktype(L, 4, LUA_TTABLE);
  luaL_checktype(L, 5, LUA_TTABLE);
  luaL_checktype(L, 6, LUA_TFUNCTION);
  lua_settop(L, 6);
  argv = string_array(L, 2, file, "args");
  if (!lua_isnil(L, 4))
    envp = string_array(L, 4, NULL, "env");
  memset(stdio, 0, sizeof(stdio));
  for (i = 0; i < 3; i++) {
    const char *mode;
    lua_rawgeti(L, 5, i + 1);
    mode = lua_tostring(L, -1);
    if (mode != NULL && strcmp(mode, "pipe") == 0) {
      lua_pop(L, 1);
      stdio[i].data.stream = (uv_stream_t *)synchro__pipe_push_new(L, S);
      stdio[i].flags =
          UV_CREATE_PIPE | (i == 0 ? UV_READABLE_PIPE : UV_WRITABLE_PIPE);
      pipes[i] = lua_gettop(L);
    } else if (mode != NULL && strcmp(mode, "inherit") == 0) {
      lua_pop(L, 1);
      stdio[i].flags = UV_INHERIT_FD;
      stdio[i].data.fd = i;
    } else if (mode != NULL && strcmp(mode, "ignore") == 0) {
      lua_pop(L, 1);
      stdio[i].flags = UV_IGNORE;
    } else {
      return luaL_error(L, "bad stdio mode '%s'", mode ? mode : "?");
    }
  }
  box = lua_newuserdata(L, sizeof(*box));
  box->proc = NULL;
  box->pid = 0;
  box->group = group;
  luaL_setmetatable(L, PROC_MT);
  top = lua_gettop(L);
  lua_pushvalue(L, 6);
  exit_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  p = calloc(1, sizeof(*p));
  if (p == NULL) {
    luaL_unref(L, LUA_REGISTRYINDEX, exit_ref);
    return luaL_error(L, "not enough memory");
  }
  memset(&opts, 0, sizeof(opts));
  opts.exit_cb = on_process_exit;
  opts.file = file;
  opts.args = argv;
  opts.env = envp;
  opts.cwd = cwd;
  opts.stdio_count = 3;
  opts.stdio = stdio;
  if (group)
    opts.flags |= UV_PROCESS_DETACHED;
  p->handle.data = p;
  p->poll.data = p;
  p->S = S;
  p->exit_ref = LUA_NOREF;
  err = uv_spawn(&S->loop, &p->handle, &opts);
  if (err != 0) {
    /* libuv wants the handle closed even when the spawn failed */
    p->open = 1;
    p->closing = 1;
    uv_close((uv_handle_t *)&p->handle, on_closed);
    luaL_unref(L, LUA_REGISTRYINDEX, exit_ref);
    for (i = 0; i < 3; i++)
      if (pipes[i] != 0)
        synchro__pipe_close_at(L, pipes[i]);
    return synchro__push_uv_error(L, err);
  }
  uv_timer_init(&S->loop, &p->poll);
  uv_timer_start(&p->poll, on_poll, POLL_MS, POLL_MS);
  p->open = 2;
  p->exit_ref = exit_ref;
  p->box = box;
  box->proc = p;
  box->pid = p->handle.pid;
  lua_pushvalue(L, top);
  lua_pushinteger(L, p->handle.pid);
  for (i = 0; i < 3; i++) {
    if (pipes[i] != 0)
      lua_pushvalue(L, pipes[i]);
    else
      lua_pushnil(L);
  }
  return 5;
}

/* proc:kill(signum [, group]) -> true | nil, message, name. Without
 * group: the child alone, ESRCH once it exited (its pid may belong to
 * another process by then). With group (a child spawned with its own
 * group): every process of the group, even after the child exited (ESRCH
 * once none is left). */
static int proc_kill(lua_State *L) {
  proc_box_t *box = synchro__check_udata(L, 1, PROC_MT);
  int signum = (int)luaL_checkinteger(L, 2);
  loop_proc_t *p = box->proc;
  int err;
  if (lua_toboolean(L, 3)) {
    if (!box->group)
      return luaL_argerror(L, 3, "the child has no process group");
    err = box->pid > 0 ? uv_kill(-box->pid, signum) : UV_ESRCH;
  } else if (p == NULL || p->exited) {
    err = UV_ESRCH;
  } else {
    err = uv_process_kill(&p->handle, signum);
  }
  if (err != 0)
    return synchro__push_uv_error(L, err);
  lua_pushboolean(L, 1);
  return 1;
}

/* core.environ() -> { "NAME=value", ... }: this process's environment. */
static int environ_list(lua_State *L) {
  uv_env_item_t *items;
  int n, i, err = uv_os_environ(&items, &n);
  if (err != 0)
    return synchro__push_uv_error(L, err);
  lua_createtable(L, n, 0);
  for (i = 0; i < n; i++) {
    lua_pushfstring(L, "%s=%s", items[i].name, items[i].value);
    lua_rawseti(L, -2, i + 1);
  }
  uv_os_free_environ(items, n);
  return 1;
}

/* __gc: see the top of the file. */
static int proc_gc(lua_State *L) {
  proc_box_t *box = synchro__check_udata(L, 1, PROC_MT);
  loop_proc_t *p = box->proc;
  if (p == NULL)
    return 0;
  box->proc = NULL;
  p->box = NULL;
  if (p->exit_ref != LUA_NOREF) {
    luaL_unref(L, LUA_REGISTRYINDEX, p->exit_ref);
    p->exit_ref = LUA_NOREF;
  }
  if (!p->exited && !p->closing) {
    pid_t pid = p->handle.pid;
    int status;
    if (box->group)
      uv_kill(-pid, SIGKILL);
    uv_process_kill(&p->handle, SIGKILL);
    if (synchro__load(&p->S->state) == SYNCHRO_STATE_RUNNING)
      return 0; /* libuv reaps it; finish() closes the handles */
    while (waitpid(pid, &status, 0) == -1 && errno == EINTR)
      ;
    p->exited = 1;
  }
  close_handles(p);
  return 0;
}

void synchro__process_register(lua_State *L) {
  static const struct {
    const char *name;
    int num;
  } signals[] = {
#define SIG(name) {"SIG" #name, SIG##name}
      SIG(HUP),  SIG(INT),   SIG(QUIT), SIG(ILL),    SIG(TRAP), SIG(ABRT),
      SIG(BUS),  SIG(FPE),   SIG(KILL), SIG(USR1),   SIG(SEGV), SIG(USR2),
      SIG(PIPE), SIG(ALRM),  SIG(TERM), SIG(CHLD),   SIG(CONT), SIG(STOP),
      SIG(TSTP), SIG(TTIN),  SIG(TTOU), SIG(URG),    SIG(XCPU), SIG(XFSZ),
      SIG(PROF), SIG(WINCH), SIG(SYS),  SIG(VTALRM),
#undef SIG
  };
  static const luaL_Reg methods[] = {{"kill", proc_kill}, {NULL, NULL}};
  size_t i;
  if (luaL_newmetatable(L, PROC_MT)) {
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, proc_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  synchro__pipe_register(L);
  lua_pushcfunction(L, spawn);
  lua_setfield(L, -2, "spawn");
  lua_pushcfunction(L, environ_list);
  lua_setfield(L, -2, "environ");
  lua_newtable(L);
  for (i = 0; i < sizeof(signals) / sizeof(signals[0]); i++) {
    lua_pushinteger(L, signals[i].num);
    lua_setfield(L, -2, signals[i].name);
  }
  lua_setfield(L, -2, "signals");
}
