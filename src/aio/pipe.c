/* Pipe streams for the loop VM (a child's stdin, stdout, stderr, or an
 * fd such as stdin): the one stream object of stream.c on a uv_pipe_t.
 * The buffered API is lua/synchro/aio/stream.lua. */
#include "pipe.h"
#include "stream.h"

uv_pipe_t *synchro__pipe_push_new(lua_State *L, synchro_t *S) {
  return &synchro__stream_push_new(L, S, UV_NAMED_PIPE, -1)->u.pipe;
}

void synchro__pipe_close_at(lua_State *L, int idx) {
  synchro__stream_close_at(L, idx);
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
  if (type == UV_TCP)
    type = UV_NAMED_PIPE; /* a socket opens as a pipe */
  synchro__stream_push_new(L, synchro__loop_of(L), type, (int)fd);
  lua_pushstring(L, type == UV_TTY ? "tty" : "pipe");
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
