/* One stream object for every uv_stream_t of the loop VM (TCP, pipes,
 * TTYs): reading, writing, shutdown and close live in stream.c; tcp.c
 * and pipe.c only create handles and add what is theirs (connect,
 * listen, ...). The buffered API is lua/synchro/aio/stream.lua. */
#ifndef SYNCHRO_STREAM_H
#define SYNCHRO_STREAM_H

#include "aio.h"

/* The handle lives outside the userdata (libuv needs it until its close
 * callback). Lua functions are referenced only while an operation is
 * under way, so an idle stream that nothing references is collected and
 * its __gc closes the handle. */
typedef struct {
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
    uv_tty_t tty;
  } u;
  synchro_t *S;
  int read_ref;   /* while reading */
  int listen_ref; /* while listening */
} synchro__stream_t;

/* A request (request.c's record) with the Lua function to call when it
 * completes; a write carries its own copy of the unwritten bytes after
 * it. */
typedef struct {
  synchro__req_t base; /* first member */
  union {
    uv_write_t write;
    uv_connect_t connect;
    uv_shutdown_t shutdown;
  } req;
} synchro__stream_req_t;

/* Pushes a new stream object with a fresh handle of type UV_TCP or
 * UV_NAMED_PIPE, or UV_TTY on fd; raises on errors. Thread: loop. */
synchro__stream_t *synchro__stream_push_new(lua_State *L, synchro_t *S,
                                            uv_handle_type type, int fd);
/* The open stream at idx; raises unless it is open and (type != 0) of
 * that type. */
synchro__stream_t *synchro__stream_check(lua_State *L, int idx,
                                         uv_handle_type type);
/* Closes the stream object at idx; safe on a closed one. */
void synchro__stream_close_at(lua_State *L, int idx);
/* true, or nil, msg, code */
int synchro__stream_push_result(lua_State *L, int err);
/* A request whose function is at cb_idx, with extra bytes after it. */
synchro__stream_req_t *synchro__stream_req_new(lua_State *L,
                                               synchro__stream_t *s,
                                               int cb_idx, size_t extra);
/* After starting r with err: pushes the request object (its cancel()
 * abandons it), or frees r and pushes nil, msg, code. */
int synchro__stream_req_started(lua_State *L, synchro__stream_req_t *r,
                                int cb_idx, int err);
/* Calls the request's function with true, or nil, msg, code (unless it
 * was abandoned or its VM is gone); frees r. */
void synchro__stream_req_finish(synchro__stream_req_t *r, int status);
/* Creates the stream metatable (once) and adds methods to it. */
void synchro__stream_register(lua_State *L, const luaL_Reg *methods);

#endif
