/* synchro.aio.pg: PostgreSQL connections on libpq's asynchronous API, for
 * the loop VM. C wraps libpq (connect, send, consume, results) and waits
 * for the connection's socket with a uv_poll handle, calling a Lua
 * function when it is ready; the protocol (what to send, when to wait,
 * cancellation, transactions, pools) is in lua/synchro/aio/pg.lua.
 *
 * The poll handle is one-shot: it is stopped before its callback runs, so
 * that libpq may close its socket and open another with the same number
 * while connecting (several hosts) without a stale epoll registration. A
 * new socket gets a new handle. Handles live outside the userdata, since
 * libuv needs them until their close callback. (Not aio.poll's shared
 * handle: closing a connection must stop and close its handle before
 * PQfinish closes the socket, at once, whichever task is waiting; an
 * aio.poll waiter lets go of its handle only when it resumes.)
 *
 * A cancel request (PQcancel) blocks until the server has answered, so it
 * runs on a small detached thread that wakes the loop with a uv_async_t
 * when done. The request is shared by that thread and the loop; a mutex
 * and a count say who frees it, and an "orphaned" flag, set when the loop
 * VM goes away first, keeps the thread from touching the loop. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aio.h"

#ifdef SYNCHRO_HAVE_PQ
#include <libpq-fe.h>

#define PG_MT     "synchro.pg"
#define CANCEL_MT "synchro.pg_cancel"

/* Type OIDs of the built-in types that convert to Lua values. */
enum {
  OID_BOOL = 16, OID_BYTEA = 17, OID_INT8 = 20, OID_INT2 = 21,
  OID_INT4 = 23, OID_OID = 26, OID_JSON = 114, OID_FLOAT4 = 700,
  OID_FLOAT8 = 701, OID_JSONB = 3802
};

typedef struct {
  PGconn *conn;
  uv_poll_t *poll; /* for poll_fd, or NULL */
  int poll_fd;
  int wait_ref; /* the Lua function of the wait under way */
  synchro_t *S;
} pg_conn_t;

typedef struct {
  pg_conn_t *pg;
} pg_box_t;

typedef struct {
  uv_async_t async;
  uv_mutex_t lock;
  PGcancel *cancel;
  synchro_t *S;
  int refs;     /* the box's, the async handle's and the thread's */
  int orphaned; /* the loop side let go: the thread must not wake it */
  int closed;   /* the async handle is closing */
  int done, ok;
  int cb_ref;
  char err[256];
} cancel_req_t;

typedef struct {
  cancel_req_t *req;
} cancel_box_t;

static void free_handle(uv_handle_t *handle) { free(handle); }

static pg_box_t *check_box(lua_State *L) {
  return synchro__check_udata(L, 1, PG_MT);
}

static pg_conn_t *check_pg(lua_State *L) {
  pg_conn_t *pg = check_box(L)->pg;
  if (pg == NULL)
    luaL_argerror(L, 1, "connection is closed");
  return pg;
}

/* libpq's messages end with a newline. */
static void push_message(lua_State *L, const char *msg) {
  size_t n = msg != NULL ? strlen(msg) : 0;
  while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
    n--;
  if (n == 0)
    lua_pushliteral(L, "unknown libpq error");
  else
    lua_pushlstring(L, msg, n);
}

/* nil, message: the connection's last error. */
static int push_conn_error(lua_State *L, PGconn *conn) {
  lua_pushnil(L);
  push_message(L, PQerrorMessage(conn));
  return 2;
}

static void stop_poll(pg_conn_t *pg, lua_State *L) {
  if (pg->poll != NULL)
    uv_poll_stop(pg->poll);
  if (pg->wait_ref != LUA_NOREF) {
    luaL_unref(L, LUA_REGISTRYINDEX, pg->wait_ref);
    pg->wait_ref = LUA_NOREF;
  }
}

static void release(pg_conn_t *pg, lua_State *L) {
  stop_poll(pg, L);
  /* The handle goes before the socket is closed under it. */
  if (pg->poll != NULL)
    uv_close((uv_handle_t *)pg->poll, free_handle);
  PQfinish(pg->conn);
  free(pg);
}

/* __gc, __close and close(): safe to call twice. */
static int pg_close(lua_State *L) {
  pg_box_t *box = check_box(L);
  if (box->pg != NULL) {
    release(box->pg, L);
    box->pg = NULL;
  }
  return 0;
}

static void ignore_notice(void *arg, const char *message) {
  (void)arg;
  (void)message;
}

/* core.pg_connect_start(conninfo) -> conn | nil, message */
static int pg_connect_start(lua_State *L) {
  synchro_t *S = synchro__loop_of(L);
  const char *conninfo = luaL_checkstring(L, 1);
  pg_box_t *box = lua_newuserdata(L, sizeof(*box));
  pg_conn_t *pg;
  box->pg = NULL;
  luaL_setmetatable(L, PG_MT);
  pg = calloc(1, sizeof(*pg));
  if (pg == NULL)
    return luaL_error(L, "not enough memory");
  pg->S = S;
  pg->wait_ref = LUA_NOREF;
  pg->poll_fd = -1;
  pg->conn = PQconnectStart(conninfo);
  box->pg = pg;
  if (pg->conn == NULL)
    return luaL_error(L, "not enough memory");
  /* libpq prints a server's notices ("relation already exists,
   * skipping") on stderr by default; a library must not */
  PQsetNoticeProcessor(pg->conn, ignore_notice, NULL);
  if (PQstatus(pg->conn) == CONNECTION_BAD) {
    push_conn_error(L, pg->conn);
    release(pg, L);
    box->pg = NULL;
    return 2;
  }
  return 1;
}

/* conn:connect_poll() -> "r" | "w" | "ok" | nil, message */
static int pg_connect_poll(lua_State *L) {
  pg_conn_t *pg = check_pg(L);
  switch (PQconnectPoll(pg->conn)) {
  case PGRES_POLLING_READING:
    lua_pushliteral(L, "r");
    return 1;
  case PGRES_POLLING_WRITING:
    lua_pushliteral(L, "w");
    return 1;
  case PGRES_POLLING_OK:
    /* sends must never block the loop */
    if (PQsetnonblocking(pg->conn, 1) != 0)
      return push_conn_error(L, pg->conn);
    lua_pushliteral(L, "ok");
    return 1;
  default:
    return push_conn_error(L, pg->conn);
  }
}

static void on_poll(uv_poll_t *handle, int status, int events) {
  pg_conn_t *pg = handle->data;
  lua_State *L = synchro__live_vm(pg->S);
  int ref = pg->wait_ref;
  uv_poll_stop(handle);
  if (L == NULL || ref == LUA_NOREF)
    return;
  pg->wait_ref = LUA_NOREF;
  lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
  luaL_unref(L, LUA_REGISTRYINDEX, ref);
  if (status < 0) {
    /* libuv reports POLLERR (a failed connect, a reset) as an error:
     * libpq finds out what it was when it next reads or writes */
    lua_pushboolean(L, 1);
    lua_pushboolean(L, 1);
  } else {
    lua_pushboolean(L, (events & UV_READABLE) != 0);
    lua_pushboolean(L, (events & UV_WRITABLE) != 0);
  }
  if (lua_pcall(L, 2, 0, 0) != 0) {
    fprintf(stderr, "synchro: error in a pg callback: %s\n",
            lua_tostring(L, -1));
    lua_pop(L, 1);
  }
}

/* conn:wait(events, fn) -> true | nil, message, code: calls fn(readable,
 * writable) once the socket is ready for events ("r", "w" or "rw") or in
 * error. One wait at a time. */
static int pg_wait(lua_State *L) {
  pg_conn_t *pg = check_pg(L);
  const char *ev = luaL_checkstring(L, 2);
  int events = 0, fd, err;
  luaL_checktype(L, 3, LUA_TFUNCTION);
  if (strchr(ev, 'r') != NULL)
    events |= UV_READABLE;
  if (strchr(ev, 'w') != NULL)
    events |= UV_WRITABLE;
  luaL_argcheck(L, events != 0, 2, "\"r\", \"w\" or \"rw\" expected");
  luaL_argcheck(L, pg->wait_ref == LUA_NOREF, 1, "a wait is under way");
  fd = PQsocket(pg->conn);
  if (fd < 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "connection has no socket");
    return 2;
  }
  if (pg->poll != NULL && pg->poll_fd != fd) {
    uv_close((uv_handle_t *)pg->poll, free_handle);
    pg->poll = NULL;
  }
  if (pg->poll == NULL) {
    uv_poll_t *poll = malloc(sizeof(*poll));
    if (poll == NULL)
      return luaL_error(L, "not enough memory");
    if ((err = uv_poll_init_socket(&pg->S->loop, poll, fd)) != 0) {
      free(poll);
      return synchro__push_uv_error(L, err);
    }
    poll->data = pg;
    pg->poll = poll;
    pg->poll_fd = fd;
  }
  if ((err = uv_poll_start(pg->poll, events, on_poll)) != 0)
    return synchro__push_uv_error(L, err);
  lua_pushvalue(L, 3);
  pg->wait_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:wait_stop(): the wait's function will not be called. */
static int pg_wait_stop(lua_State *L) {
  stop_poll(check_pg(L), L);
  return 0;
}

/* Parameters from index first on: nil is NULL; a string is sent as text,
 * or in binary when it holds a zero byte (text cannot: libpq would cut
 * it); a table {s} is s in binary (bytea). */
typedef struct {
  int n;
  const char **values;
  int *lengths, *formats;
} params_t;

static void check_params(lua_State *L, int first, params_t *p) {
  int i, top = lua_gettop(L);
  p->n = top >= first ? top - first + 1 : 0;
  p->values = lua_newuserdata(L, (size_t)(p->n + 1) * sizeof(char *));
  p->lengths = lua_newuserdata(L, (size_t)(p->n + 1) * sizeof(int));
  p->formats = lua_newuserdata(L, (size_t)(p->n + 1) * sizeof(int));
  for (i = 0; i < p->n; i++) {
    int idx = first + i;
    size_t len = 0;
    const char *s = NULL;
    int binary = 0;
    if (lua_type(L, idx) == LUA_TTABLE) {
      lua_rawgeti(L, idx, 1);
      lua_replace(L, idx);
      binary = 1;
    }
    if (lua_type(L, idx) == LUA_TSTRING) {
      s = lua_tolstring(L, idx, &len);
      binary = binary || memchr(s, 0, len) != NULL;
    } else if (!lua_isnil(L, idx)) {
      luaL_argerror(L, idx, "string or nil expected");
    }
    if (len > (size_t)0x7fffffff)
      luaL_argerror(L, idx, "parameter too large");
    p->values[i] = s;
    p->lengths[i] = (int)len;
    p->formats[i] = binary;
  }
}

static int push_sent(lua_State *L, PGconn *conn, int ok) {
  if (!ok)
    return push_conn_error(L, conn);
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:send(sql, ...) -> true | nil, message (one statement, $n params) */
static int pg_send(lua_State *L) {
  pg_conn_t *pg = check_pg(L);
  const char *sql = luaL_checkstring(L, 2);
  params_t p;
  check_params(L, 3, &p);
  return push_sent(L, pg->conn,
                   PQsendQueryParams(pg->conn, sql, p.n, NULL, p.values,
                                     p.lengths, p.formats, 0));
}

/* conn:send_simple(sql) -> true | nil, message (several statements) */
static int pg_send_simple(lua_State *L) {
  pg_conn_t *pg = check_pg(L);
  return push_sent(L, pg->conn, PQsendQuery(pg->conn, luaL_checkstring(L, 2)));
}

/* conn:send_prepare(name, sql) -> true | nil, message */
static int pg_send_prepare(lua_State *L) {
  pg_conn_t *pg = check_pg(L);
  const char *name = luaL_checkstring(L, 2);
  const char *sql = luaL_checkstring(L, 3);
  return push_sent(L, pg->conn,
                   PQsendPrepare(pg->conn, name, sql, 0, NULL));
}

/* conn:send_prepared(name, ...) -> true | nil, message */
static int pg_send_prepared(lua_State *L) {
  pg_conn_t *pg = check_pg(L);
  const char *name = luaL_checkstring(L, 2);
  params_t p;
  check_params(L, 3, &p);
  return push_sent(L, pg->conn,
                   PQsendQueryPrepared(pg->conn, name, p.n, p.values,
                                       p.lengths, p.formats, 0));
}

/* conn:flush() -> 0 (all sent) | 1 (more to send) | nil, message */
static int pg_flush(lua_State *L) {
  pg_conn_t *pg = check_pg(L);
  int rc = PQflush(pg->conn);
  if (rc < 0)
    return push_conn_error(L, pg->conn);
  lua_pushinteger(L, rc);
  return 1;
}

/* conn:consume() -> true | nil, message */
static int pg_consume(lua_State *L) {
  pg_conn_t *pg = check_pg(L);
  return push_sent(L, pg->conn, PQconsumeInput(pg->conn));
}

static int pg_busy(lua_State *L) {
  lua_pushboolean(L, PQisBusy(check_pg(L)->conn));
  return 1;
}

/* conn:notifies() -> { {channel=, payload=, pid=}, ... } */
static int pg_notifies(lua_State *L) {
  pg_conn_t *pg = check_pg(L);
  PGnotify *n;
  int i = 0;
  lua_newtable(L);
  while ((n = PQnotifies(pg->conn)) != NULL) {
    lua_createtable(L, 0, 3);
    lua_pushstring(L, n->relname);
    lua_setfield(L, -2, "channel");
    lua_pushstring(L, n->extra);
    lua_setfield(L, -2, "payload");
    lua_pushinteger(L, n->be_pid);
    lua_setfield(L, -2, "pid");
    lua_rawseti(L, -2, ++i);
    PQfreemem(n);
  }
  return 1;
}

/* One value of a text-format result as a Lua value (null on top of the
 * stack's index null_idx for NULL). */
static void push_value(lua_State *L, PGresult *r, int row, int col,
                       int null_idx) {
  const char *s;
  int len;
  if (PQgetisnull(r, row, col)) {
    lua_pushvalue(L, null_idx);
    return;
  }
  s = PQgetvalue(r, row, col);
  len = PQgetlength(r, row, col);
  switch (PQftype(r, col)) {
  case OID_BOOL:
    lua_pushboolean(L, s[0] == 't');
    break;
  case OID_INT2:
  case OID_INT4:
  case OID_INT8:
  case OID_OID:
    lua_pushinteger(L, (lua_Integer)strtoll(s, NULL, 10));
    break;
  case OID_FLOAT4:
  case OID_FLOAT8:
    lua_pushnumber(L, (lua_Number)strtod(s, NULL));
    break;
  case OID_BYTEA: {
    size_t n;
    unsigned char *b = PQunescapeBytea((const unsigned char *)s, &n);
    if (b == NULL)
      luaL_error(L, "not enough memory");
    lua_pushlstring(L, (const char *)b, n);
    PQfreemem(b);
    break;
  }
  default:
    lua_pushlstring(L, s, (size_t)len);
  }
}

/* conn:result(null) -> nil (no more results) | a result table:
 * { status=, rows = { {name=value, ...}, ... }, fields = {names},
 *   json = {names of json columns}, command=, affected= } or, for an
 * error, { status=, error=message, sqlstate= }. */
static int pg_result(lua_State *L) {
  pg_conn_t *pg = check_pg(L);
  PGresult *r = PQgetResult(pg->conn);
  ExecStatusType st;
  int nrows, ncols, i, j, njson = 0;
  const char *affected;
  if (r == NULL)
    return 0;
  lua_settop(L, 2);
  st = PQresultStatus(r);
  lua_createtable(L, 0, 6);
  lua_pushstring(L, PQresStatus(st));
  lua_setfield(L, -2, "status");
  if (st == PGRES_FATAL_ERROR || st == PGRES_NONFATAL_ERROR ||
      st == PGRES_BAD_RESPONSE) {
    const char *code = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    const char *primary = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    const char *detail = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL);
    /* the primary message (and its detail), without "ERROR:" and the
     * position lines that PQresultErrorMessage adds */
    if (primary == NULL)
      push_message(L, PQresultErrorMessage(r));
    else if (detail == NULL)
      lua_pushstring(L, primary);
    else
      lua_pushfstring(L, "%s (%s)", primary, detail);
    lua_setfield(L, -2, "error");
    lua_pushstring(L, code != NULL ? code : "08P01");
    lua_setfield(L, -2, "sqlstate");
    PQclear(r);
    return 1;
  }
  nrows = PQntuples(r);
  ncols = PQnfields(r);
  lua_createtable(L, ncols, 0);
  lua_createtable(L, 0, 0);
  for (j = 0; j < ncols; j++) {
    lua_pushstring(L, PQfname(r, j));
    lua_rawseti(L, -3, j + 1);
    if (PQftype(r, j) == OID_JSON || PQftype(r, j) == OID_JSONB) {
      lua_pushstring(L, PQfname(r, j));
      lua_rawseti(L, -2, ++njson);
    }
  }
  lua_setfield(L, -3, "json");
  lua_setfield(L, -2, "fields");
  lua_createtable(L, nrows, 0);
  for (i = 0; i < nrows; i++) {
    lua_createtable(L, 0, ncols);
    for (j = 0; j < ncols; j++) {
      push_value(L, r, i, j, 2);
      lua_setfield(L, -2, PQfname(r, j));
    }
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "rows");
  lua_pushstring(L, PQcmdStatus(r));
  lua_setfield(L, -2, "command");
  affected = PQcmdTuples(r);
  if (affected[0] != '\0') {
    lua_pushinteger(L, (lua_Integer)strtoll(affected, NULL, 10));
    lua_setfield(L, -2, "affected");
  }
  PQclear(r);
  return 1;
}

/* conn:status() -> "ok" | "bad"; conn:transaction_status() -> "idle" |
 * "active" | "intrans" | "inerror" | "unknown" */
static int pg_status(lua_State *L) {
  lua_pushstring(L, PQstatus(check_pg(L)->conn) == CONNECTION_OK ? "ok"
                                                                 : "bad");
  return 1;
}

static int pg_transaction_status(lua_State *L) {
  static const char *const names[] = {"idle", "active", "intrans",
                                      "inerror", "unknown"};
  PGTransactionStatusType t = PQtransactionStatus(check_pg(L)->conn);
  lua_pushstring(L, names[(unsigned)t <= 4 ? (int)t : 4]);
  return 1;
}

static int pg_backend_pid(lua_State *L) {
  lua_pushinteger(L, PQbackendPID(check_pg(L)->conn));
  return 1;
}

static int pg_error_message(lua_State *L) {
  push_message(L, PQerrorMessage(check_pg(L)->conn));
  return 1;
}

/* conn:escape_identifier(s) -> "quoted" */
static int pg_escape_identifier(lua_State *L) {
  pg_conn_t *pg = check_pg(L);
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  char *q = PQescapeIdentifier(pg->conn, s, len);
  if (q == NULL)
    return push_conn_error(L, pg->conn);
  lua_pushstring(L, q);
  PQfreemem(q);
  return 1;
}

#ifdef LIBPQ_HAS_PIPELINING
/* conn:pipeline(on) -> true | nil, message: enter or leave pipeline mode;
 * conn:pipeline_sync() -> true | nil, message */
static int pg_pipeline(lua_State *L) {
  pg_conn_t *pg = check_pg(L);
  int on = lua_toboolean(L, 2);
  return push_sent(L, pg->conn, on ? PQenterPipelineMode(pg->conn)
                                   : PQexitPipelineMode(pg->conn));
}

static int pg_pipeline_sync(lua_State *L) {
  pg_conn_t *pg = check_pg(L);
  return push_sent(L, pg->conn, PQpipelineSync(pg->conn));
}
#endif

/* ---- cancel requests ---- */

static void cancel_unref(cancel_req_t *req) {
  int last;
  uv_mutex_lock(&req->lock);
  last = --req->refs == 0;
  uv_mutex_unlock(&req->lock);
  if (last) {
    uv_mutex_destroy(&req->lock);
    if (req->cancel != NULL)
      PQfreeCancel(req->cancel);
    free(req);
  }
}

static void on_async_closed(uv_handle_t *handle) {
  cancel_unref(handle->data);
}

/* The loop side lets go: no wake-up after this, then the handle closes. */
static void cancel_let_go(cancel_req_t *req, lua_State *L) {
  if (req->closed)
    return;
  req->closed = 1;
  uv_mutex_lock(&req->lock);
  req->orphaned = 1;
  uv_mutex_unlock(&req->lock);
  if (req->cb_ref != LUA_NOREF && L != NULL) {
    luaL_unref(L, LUA_REGISTRYINDEX, req->cb_ref);
    req->cb_ref = LUA_NOREF;
  }
  uv_close((uv_handle_t *)&req->async, on_async_closed);
}

static void on_cancelled(uv_async_t *handle) {
  cancel_req_t *req = handle->data;
  lua_State *L = synchro__live_vm(req->S);
  int ref = req->cb_ref;
  if (L == NULL || ref == LUA_NOREF || req->closed)
    return;
  req->cb_ref = LUA_NOREF;
  lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
  luaL_unref(L, LUA_REGISTRYINDEX, ref);
  lua_pushboolean(L, req->ok);
  lua_pushstring(L, req->err);
  cancel_let_go(req, L);
  if (lua_pcall(L, 2, 0, 0) != 0) {
    fprintf(stderr, "synchro: error in a pg callback: %s\n",
            lua_tostring(L, -1));
    lua_pop(L, 1);
  }
}

static void *cancel_main(void *arg) {
  cancel_req_t *req = arg;
  int ok = PQcancel(req->cancel, req->err, (int)sizeof(req->err));
  uv_mutex_lock(&req->lock);
  req->ok = ok;
  req->done = 1;
  if (!req->orphaned)
    uv_async_send(&req->async);
  uv_mutex_unlock(&req->lock);
  cancel_unref(req);
  return NULL;
}

static int cancel_gc(lua_State *L) {
  cancel_box_t *box = synchro__check_udata(L, 1, CANCEL_MT);
  if (box->req != NULL) {
    cancel_let_go(box->req, L);
    cancel_unref(box->req);
    box->req = NULL;
  }
  return 0;
}

/* conn:cancel(fn) -> request | nil, message: asks the server to cancel
 * the running statement, from a thread (PQcancel blocks); fn(ok, message)
 * runs on the loop once the server has answered. Dropping the request (or
 * request:close()) forgets fn. */
static int pg_cancel(lua_State *L) {
  pg_conn_t *pg = check_pg(L);
  cancel_box_t *box;
  cancel_req_t *req;
  pthread_t thread;
  pthread_attr_t attr;
  int err;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  box = lua_newuserdata(L, sizeof(*box));
  box->req = NULL;
  luaL_setmetatable(L, CANCEL_MT);
  req = calloc(1, sizeof(*req));
  if (req == NULL)
    return luaL_error(L, "not enough memory");
  req->cancel = PQgetCancel(pg->conn);
  if (req->cancel == NULL) {
    free(req);
    return push_conn_error(L, pg->conn);
  }
  uv_mutex_init(&req->lock);
  req->S = pg->S;
  req->refs = 3;
  req->cb_ref = LUA_NOREF;
  uv_async_init(&pg->S->loop, &req->async, on_cancelled);
  req->async.data = req;
  box->req = req;
  lua_pushvalue(L, 2);
  req->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  /* detached: it ends on its own, even after the loop is gone */
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  err = pthread_create(&thread, &attr, cancel_main, req);
  pthread_attr_destroy(&attr);
  if (err != 0) {
    req->refs--; /* no thread */
    lua_pushcfunction(L, cancel_gc);
    lua_pushvalue(L, -2);
    lua_call(L, 1, 0);
    return synchro__push_uv_error(L, uv_translate_sys_error(err));
  }
  return 1;
}

void synchro__pg_register(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"connect_poll", pg_connect_poll},
      {"wait", pg_wait},
      {"wait_stop", pg_wait_stop},
      {"send", pg_send},
      {"send_simple", pg_send_simple},
      {"send_prepare", pg_send_prepare},
      {"send_prepared", pg_send_prepared},
      {"flush", pg_flush},
      {"consume", pg_consume},
      {"busy", pg_busy},
      {"notifies", pg_notifies},
      {"result", pg_result},
      {"status", pg_status},
      {"transaction_status", pg_transaction_status},
      {"backend_pid", pg_backend_pid},
      {"error_message", pg_error_message},
      {"escape_identifier", pg_escape_identifier},
      {"cancel", pg_cancel},
#ifdef LIBPQ_HAS_PIPELINING
      {"pipeline", pg_pipeline},
      {"pipeline_sync", pg_pipeline_sync},
#endif
      {"close", pg_close},
      {NULL, NULL}};
  static const luaL_Reg cancel_methods[] = {{"close", cancel_gc},
                                            {NULL, NULL}};
  if (luaL_newmetatable(L, PG_MT)) {
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, pg_close);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, CANCEL_MT)) {
    luaL_newlib(L, cancel_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, cancel_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, pg_connect_start);
  lua_setfield(L, -2, "pg_connect_start");
  lua_pushinteger(L, PQlibVersion());
  lua_setfield(L, -2, "pg_lib_version");
}

#else /* built without libpq: synchro.aio.pg says so (check.built_with) */

void synchro__pg_register(lua_State *L) { (void)L; }

#endif
