/* The Lua binding (luaopen_synchro_core): the user side, and the module
 * that both VMs load. Checks and conversions; policy is in lua/synchro. */
#ifndef SYNCHRO_BINDING_H
#define SYNCHRO_BINDING_H

#include "aio.h"

/* The metatables' names (registry keys) of futures and notifiers. */
#define SYNCHRO_FUTURE_MT "synchro.Future"
#define SYNCHRO_NOTIFIER_MT "synchro.Notifier"

/* ---- binding.c and future.c ---- */
int synchro__lua_open(lua_State *L);
void synchro__future_register(lua_State *L);
/* Pushes a Notifier object for n (taking a reference). */
void synchro__push_notifier(lua_State *L, synchro_notifier_t *n);
/* Pushes a Future object for call (taking a reference). */
void synchro__push_future(lua_State *L, synchro_call_t *call);

/* ---- callbacks.c: functions passed to blocking calls ---- */
void synchro__callbacks_register(lua_State *L);
/* Whether callbacks were exported on this thread since the last call
 * (and resets that). */
int synchro__callbacks_exported(void);
/* Waits for call like synchro__event_wait, running the callbacks that
 * its task calls meanwhile (between synchro__inbox_enter and _leave).
 * Returns 0, SYNCHRO_ETIMEDOUT or UV_EINTR. */
int synchro__wait_servicing(lua_State *L, synchro_call_t *call,
                            double timeout);
/* This VM's caller serves callbacks from now on / no longer (the last
 * one to leave refuses those still queued). */
void synchro__inbox_enter(lua_State *L);
void synchro__inbox_leave(lua_State *L);
/* Pushes the results of a completed call, or raises its error. */
int synchro__push_reply(lua_State *L, synchro_call_t *call);
/* Non-zero when the standalone interpreter flagged Ctrl-C on L. */
int synchro__interrupted(void *L);
/* Clears the interpreter's interrupt hook and raises "interrupted!". */
int synchro__raise_interrupted(lua_State *L);
/* Clears the interpreter's interrupt hook (the caller raises later). */
void synchro__clear_interrupt(lua_State *L);

#endif
