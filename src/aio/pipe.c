/* Pipe streams for the loop VM (a child's stdin, stdout, stderr, or an
 * fd such as stdin): the one stream object of stream.c on a uv_pipe_t.
 * The buffered API is lua/synchro/aio/stream.lua. */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "pipe.h"
#include "stream.h"

uv_pipe_t *synchro__pipe_push_new(lua_State *L, synchro_t *S) {
  return &synchro__stream_push_new(L, S, UV_NAMED_PIPE, -1)->u.pipe;
}

void synchro__pipe_close_at(lua_State *L, int idx) {
  synchro__stream_close_at(L, idx);
}

/* Protected: pushes a TTY stream on the fd at 1 (an integer). */
static int push_tty(lua_State *L) {
  synchro__stream_push_new(L, synchro__loop_of(L), UV_TTY,
                           (int)lua_tointeger(L, 1));
  return 1;
}

/* A TTY stream on a copy of fd, so that fd itself stays as it was:
 * libuv reopens the terminal and puts the new file description (non
 * blocking, close-on-exec) over the fd it is given, which would leave a
 * child process run meanwhile (os.execute, aio.process) without a usable
 * stdin. Pushes the stream, or raises. */
static void push_tty_copy(lua_State *L, int fd) {
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  synchro__stream_t *s;
  uv_os_fd_t used;
  if (copy < 0) {
    synchro__push_uv_error(L, uv_translate_sys_error(errno));
    lua_error(L);
  }
  lua_pushcfunction(L, push_tty);
  lua_pushinteger(L, copy);
  if (lua_pcall(L, 1, 1, 0) != 0) {
    close(copy);
    lua_error(L);
  }
  s = synchro__stream_check(L, -1, UV_TTY);
  /* reopened: the handle has a descriptor of its own */
  if (uv_fileno(&s->u.handle, &used) == 0 && used != copy)
    close(copy);
}

/* core.stdio_stream(fd) -> stream on fd (a pipe, file or TTY, as
 * uv_guess_handle says), kind; or nil, msg, code for a file or an
 * unknown fd (which libuv cannot stream). */
static int stdio_stream(lua_State *L) {
  lua_Integer fd = luaL_checkinteger(L, 1);
  uv_handle_type type;
  luaL_argcheck(L, fd >= 0 && fd <= 2, 1, "0, 1 or 2 expected");
  type = uv_guess_handle((uv_file)fd);
  if (type != UV_TTY && type != UV_NAMED_PIPE && type != UV_TCP)
    return synchro__push_uv_error(L, UV_EINVAL);
  if (type == UV_TTY) {
    push_tty_copy(L, (int)fd);
    lua_pushliteral(L, "tty");
    return 2;
  }
  /* a socket opens as a pipe */
  synchro__stream_push_new(L, synchro__loop_of(L), UV_NAMED_PIPE, (int)fd);
  lua_pushliteral(L, "pipe");
  return 2;
}

/* h:set_mode(raw) for a TTY: true, or nil, msg, code */
static int tty_set_mode(lua_State *L) {
  synchro__stream_t *s = synchro__stream_check(L, 1, UV_TTY);
  return synchro__stream_push_result(
      L, uv_tty_set_mode(&s->u.tty, lua_toboolean(L, 2) ? UV_TTY_MODE_RAW
                                                         : UV_TTY_MODE_NORMAL));
}

/* h:winsize() for a TTY: width, height, or nil, msg, code */
static int tty_winsize(lua_State *L) {
  synchro__stream_t *s = synchro__stream_check(L, 1, UV_TTY);
  int w, h, err = uv_tty_get_winsize(&s->u.tty, &w, &h);
  if (err != 0)
    return synchro__push_uv_error(L, err);
  lua_pushinteger(L, w);
  lua_pushinteger(L, h);
  return 2;
}

void synchro__pipe_register(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"set_mode", tty_set_mode}, {"winsize", tty_winsize}, {NULL, NULL}};
  synchro__stream_register(L, methods);
  lua_pushcfunction(L, stdio_stream);
  lua_setfield(L, -2, "stdio_stream");
}
