/* Pipe streams of the loop VM (pipe.c), shared with process.c, which
 * creates them for a child's stdio. */
#ifndef SYNCHRO_PIPE_H
#define SYNCHRO_PIPE_H

#include "aio.h"

/* Pushes a new, unopened pipe object (a uv_pipe_t initialised on S's
 * loop) and returns its handle, for uv_spawn to open. Raises on memory
 * errors. Thread: the loop thread. */
uv_pipe_t *synchro__pipe_push_new(lua_State *L, synchro_t *S);
/* Closes the pipe object at idx (safe on a closed one). */
void synchro__pipe_close_at(lua_State *L, int idx);
/* Adds the pipe metatable. */
void synchro__pipe_register(lua_State *L);

#endif
