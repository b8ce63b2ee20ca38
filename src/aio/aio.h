/* What the aio modules (one file per libuv concept, all on the loop VM)
 * share: the vm layer's helpers and each module's registration. */
#ifndef SYNCHRO_AIO_H
#define SYNCHRO_AIO_H

#include "vm.h"

/* Each adds its functions to the table on top of L (synchro.core). */
void synchro__timer_register(lua_State *L);
void synchro__fs_register(lua_State *L);
void synchro__tcp_register(lua_State *L);
void synchro__udp_register(lua_State *L);
void synchro__dns_register(lua_State *L);
void synchro__process_register(lua_State *L);
void synchro__workers_register(lua_State *L);
/* Registers nothing when built without libpq (SYNCHRO_HAVE_PQ). */
void synchro__pg_register(lua_State *L);
void synchro__poll_register(lua_State *L);
/* Registers nothing when built without libcurl. */
void synchro__http_register(lua_State *L);
void synchro__signal_register(lua_State *L);
void synchro__fswatch_register(lua_State *L);
/* Registers nothing when built without OpenSSL (SYNCHRO_HAVE_OPENSSL). */
void synchro__tls_register(lua_State *L);
void synchro__request_register(lua_State *L);

/* ---- request.c: the one request record (see its top comment) ---- */

/* The loop VM that a libuv callback may call into, or NULL once it is
 * closed: the one test for "the VM is gone". A callback that gets NULL
 * only frees memory. Thread: loop thread. */
lua_State *synchro__live_vm(synchro_t *S);

typedef struct synchro__req synchro__req_t;
typedef struct synchro__req_list synchro__req_list_t;
/* Pushes a completed request's results for its Lua function and returns
 * how many; may raise (the function then gets the ENOMEM triple). */
typedef int (*synchro__req_push_t)(lua_State *L, synchro__req_t *r);
/* Frees what the module's record owns, and the record. */
typedef void (*synchro__req_release_t)(synchro__req_t *r);

/* The first member of each module's request record. */
struct synchro__req {
  uv_req_t *uv; /* the libuv request, uv_cancel'ed when abandoned */
  synchro__req_list_t *list; /* the VM's requests; NULL: the VM is gone */
  synchro__req_t *prev, *next;
  void *box; /* the Lua request object, NULL once collected */
  synchro__req_push_t push;
  synchro__req_release_t release; /* NULL: free() */
  int cb_ref;
  int status;    /* what libuv gave synchro__req_done */
  int abandoned; /* cancelled, or its VM is gone: no call to Lua */
  int entered;   /* the Lua function was called */
};

/* A record of size bytes, zeroed (the module's struct, whose first
 * member is a synchro__req_t), and extra bytes after it, not zeroed (a
 * buffer), for the Lua function at cb_idx. push NULL: true, or the error
 * triple of status. Raises (nothing allocated) when cb_idx is not a
 * function or memory is short. Thread: loop thread. */
void *synchro__req_alloc(lua_State *L, int cb_idx, size_t size, size_t extra,
                         synchro__req_push_t push,
                         synchro__req_release_t release);
/* After the module started uv (err: what libuv returned): pushes the Lua
 * request object (a synchro.request whose cancel() abandons it) and
 * returns 1; or releases r and pushes nil, msg, code (returns 3). The
 * record is libuv's from here on. Thread: loop thread. */
int synchro__req_submit(lua_State *L, synchro__req_t *r, int cb_idx,
                        uv_req_t *uv, int err);
/* From the libuv callback: calls the Lua function with the results
 * (unless abandoned or the VM is gone), then releases r. */
void synchro__req_done(synchro__req_t *r, int status);
/* The default push: true, or nil, msg, code for r->status < 0. */
int synchro__req_push_status(lua_State *L, synchro__req_t *r);

#endif
