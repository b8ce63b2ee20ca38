/* The loop VM: the loop thread, dispatch of calls into the runtime, and
 * the helpers the aio modules share. Runs on the loop thread only, except
 * synchro__vm (given to synchro__new). */
#ifndef SYNCHRO_VM_H
#define SYNCHRO_VM_H

#include "core.h"

/* ---- loop.c: the loop thread ---- */
/* The loop thread that runs a Synchronizer's uv loop and Lua VM. */
extern const synchro_vm_t synchro__vm;
/* Called by the loop runtime (loop thread) when the close has drained. */
void synchro__loop_stop(synchro_t *S);
/* Takes what the loop was woken for: the queued messages (dispatched on
 * L), then a requested close. From the loop's wakeup, or from the watch
 * hook of a task that never yields (L is then its coroutine). */
void synchro__loop_attend(synchro_t *S, lua_State *L);

/* ---- dispatch.c: the loop VM's side of the binding ---- */
int synchro__dispatch_open(lua_State *L, synchro_t *S);
void synchro__dispatch(synchro_t *S, lua_State *L, synchro_msg_t *msg);
void synchro__dispatch_close(synchro_t *S, lua_State *L, double grace);
/* After the loop stopped: calls still running end as closed. */
void synchro__dispatch_shutdown(synchro_t *S);

/* ---- watch.c: the hook that reaches tasks that never yield ---- */
/* Adds core.watch and core.debug_panic to the table on top of L. */
void synchro__watch_register(lua_State *L);

/* ---- vmaux.c: for the loop VM's C functions (src/aio) ---- */
/* The Synchronizer whose loop runs L's VM; raises elsewhere. */
synchro_t *synchro__loop_of(lua_State *L);
/* Pushes nil, "ENAME: message", "ENAME" for a libuv (or synchro) error
 * code and returns 3. */
int synchro__push_uv_error(lua_State *L, int err);
/* Calls the function in registry ref with the nargs values on top of L
 * (popped), protected; an error is reported on stderr. Loop thread. */
void synchro__call_ref_fn(lua_State *L, int ref, int nargs);
/* Argument idx as a time in seconds, normalised by the one rule
 * (synchro__time_normalize): NaN raises, naming fname and what. Returns
 * SYNCHRO_NO_LIMIT for no limit. Thread: any (any VM). */
double synchro__check_time(lua_State *L, int idx, const char *fname,
                           const char *what);
/* The same, def when the argument is none or nil. */
double synchro__opt_time(lua_State *L, int idx, const char *fname,
                         const char *what, double def);
/* luaL_testudata and luaL_checkudata, with the metatable cached under
 * the address of tname after the first check: use the same tname
 * pointer (a macro or a static string) for a type. Thread: any. */
void *synchro__test_udata(lua_State *L, int idx, const char *tname);
void *synchro__check_udata(lua_State *L, int idx, const char *tname);
/* synchro__test_udata and synchro__check_udata for a C function whose
 * upvalue up holds tname's metatable (its module registered it so): the
 * type is known by identity, with no registry lookup; anything else takes
 * the registry's way. Use it only in functions whose upvalue up is that metatable or
 * absent: a function whose upvalue up is another type's metatable would
 * take a value of that type for this one. Thread: the state's. */
void *synchro__test_udata_up(lua_State *L, int idx, const char *tname,
                             int up);
void *synchro__check_udata_up(lua_State *L, int idx, const char *tname,
                              int up);
/* Adds core.check_time and core.loop_handles to the table on top of L. */
void synchro__vmaux_register(lua_State *L);

#endif
