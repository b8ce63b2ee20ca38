/* synchro.aio.http: HTTP(S) transfers on libcurl's multi-socket interface,
 * driven by the loop. One CURLM per loop VM; curl tells us which sockets
 * to watch (CURLMOPT_SOCKETFUNCTION: one uv_poll each) and when to call it
 * back (CURLMOPT_TIMERFUNCTION: one uv_timer). No thread per request, no
 * polling. Options, responses, streaming and waiting are in
 * lua/synchro/aio/http.lua; C buffers and converts.
 *
 * Lua never runs inside a curl callback: curl forbids calling the multi
 * interface from its callbacks, and a woken task would do just that
 * (start, cancel, unpause a transfer). The write, read and header
 * callbacks only buffer and mark the transfer; once curl has returned,
 * dispatch() calls each marked transfer's Lua function.
 *
 * Lifetimes: the multi lives in a malloc'd record that the registry's
 * userdata and every transfer count; the last one frees it, so the order
 * in which lua_close collects them does not matter. uv handles live
 * outside userdata (libuv needs them until their close callback). */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "aio.h"

#ifdef SYNCHRO_HAVE_CURL
#include <curl/curl.h>

#define MULTI_KEY   "synchro.http.multi"
#define MULTI_MT    "synchro.http.multi"
#define TRANSFER_MT "synchro.http.transfer"
/* A streamed body pauses the transfer when this much is unread. */
#define STREAM_HIGH_WATER (256 * 1024)
/* curl's receive buffer per transfer (its default is 16 KiB; the curl
 * command's 100 KiB): fewer, larger reads of big bodies. */
#define RECV_BUFFER (64 * 1024L)
/* The largest announced body allocated at once (a bigger one grows). */
#define PRESIZE_MAX (16 * 1024 * 1024)
/* Easy handles kept, reset, for the next transfers: curl_easy_init and
 * curl_easy_cleanup cost more than the rest of a small request's setup. */
#define SPARE_EASY 16

enum { EV_HEADERS = 1, EV_DATA = 2, EV_DONE = 4, EV_NEED_BODY = 8 };

typedef struct {
  char *data;
  size_t len, cap, off; /* off: bytes already consumed (upload) */
} buf_t;

typedef struct transfer transfer_t;

typedef struct socket_ctx socket_ctx_t;

typedef struct {
  CURLM *multi;
  uv_timer_t *timer;
  socket_ctx_t *sockets; /* every socket's poll, to close what curl left */
  synchro_t *S;
  transfer_t *pending; /* transfers with events to report */
  CURL *spare[SPARE_EASY]; /* reset easy handles, not in the multi */
  int nspare;
  int refs;            /* the registry's userdata + each transfer */
  int dispatching;
  int closing; /* the VM is going away: never call Lua again */
} multi_t;

struct transfer {
  CURL *easy;
  multi_t *m;
  struct curl_slist *headers;
  int cb_ref;
  buf_t body, head, upload;
  int events, queued; /* events to report; on m->pending */
  transfer_t *next_pending;
  int stream; /* report data as it comes, pause at high water */
  int follow; /* redirects followed */
  int headers_done, done, added;
  int upload_source, upload_eof; /* a body fed by Lua, its end */
  int paused;                    /* CURLPAUSE_RECV | CURLPAUSE_SEND bits */
  CURLcode result;
  char errbuf[CURL_ERROR_SIZE];
};

typedef struct {
  transfer_t *t;
} transfer_box_t;

struct socket_ctx {
  uv_poll_t poll;
  multi_t *m;
  curl_socket_t fd;
  socket_ctx_t *next, **prev;
};

static const char *curle_name(CURLcode rc) {
#define X(name)                                                                \
  case name:                                                                   \
    return #name;
  switch ((int)rc) {
    X(CURLE_UNSUPPORTED_PROTOCOL)
    X(CURLE_FAILED_INIT) X(CURLE_URL_MALFORMAT) X(CURLE_NOT_BUILT_IN) X(
        CURLE_COULDNT_RESOLVE_PROXY) X(CURLE_COULDNT_RESOLVE_HOST) X(CURLE_COULDNT_CONNECT)
        X(CURLE_WEIRD_SERVER_REPLY) X(CURLE_REMOTE_ACCESS_DENIED) X(CURLE_HTTP2) X(
            CURLE_PARTIAL_FILE) X(CURLE_HTTP_RETURNED_ERROR) X(CURLE_WRITE_ERROR)
            X(CURLE_UPLOAD_FAILED) X(CURLE_READ_ERROR) X(CURLE_OUT_OF_MEMORY) X(
                CURLE_OPERATION_TIMEDOUT) X(CURLE_RANGE_ERROR) X(CURLE_HTTP_POST_ERROR)
                X(CURLE_SSL_CONNECT_ERROR) X(CURLE_BAD_DOWNLOAD_RESUME) X(
                    CURLE_FILE_COULDNT_READ_FILE) X(CURLE_FUNCTION_NOT_FOUND)
                    X(CURLE_ABORTED_BY_CALLBACK) X(CURLE_BAD_FUNCTION_ARGUMENT) X(
                        CURLE_INTERFACE_FAILED) X(CURLE_TOO_MANY_REDIRECTS)
                        X(CURLE_UNKNOWN_OPTION) X(CURLE_SETOPT_OPTION_SYNTAX) X(
                            CURLE_GOT_NOTHING) X(CURLE_SSL_ENGINE_NOTFOUND)
                            X(CURLE_SSL_ENGINE_SETFAILED) X(CURLE_SEND_ERROR) X(
                                CURLE_RECV_ERROR) X(CURLE_SSL_CERTPROBLEM)
                                X(CURLE_SSL_CIPHER) X(CURLE_PEER_FAILED_VERIFICATION) X(
                                    CURLE_BAD_CONTENT_ENCODING) X(CURLE_FILESIZE_EXCEEDED)
                                    X(CURLE_USE_SSL_FAILED) X(CURLE_SEND_FAIL_REWIND) X(
                                        CURLE_SSL_ENGINE_INITFAILED) X(CURLE_LOGIN_DENIED)
                                        X(CURLE_SSL_CACERT_BADFILE) X(
                                            CURLE_SSL_SHUTDOWN_FAILED) X(CURLE_AGAIN)
                                            X(CURLE_SSL_CRL_BADFILE) X(
                                                CURLE_SSL_ISSUER_ERROR) X(CURLE_CHUNK_FAILED)
                                                X(CURLE_NO_CONNECTION_AVAILABLE) X(
                                                    CURLE_SSL_PINNEDPUBKEYNOTMATCH)
                                                    X(CURLE_SSL_INVALIDCERTSTATUS) X(
                                                        CURLE_HTTP2_STREAM)
                                                        X(CURLE_RECURSIVE_API_CALL) X(
                                                            CURLE_AUTH_ERROR)
                                                            X(CURLE_HTTP3) X(
                                                                CURLE_QUIC_CONNECT_ERROR)
                                                                X(CURLE_PROXY) X(
                                                                    CURLE_SSL_CLIENTCERT)
                                                                    X(CURLE_UNRECOVERABLE_POLL) default
        : return "CURLE_UNKNOWN";
  }
#undef X
}

/* ---- buffers ---- */

static int buf_add(buf_t *b, const char *data, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 16384;
    char *p;
    while (cap < b->len + n)
      cap *= 2;
    p = realloc(b->data, cap);
    if (p == NULL)
      return -1;
    b->data = p;
    b->cap = cap;
  }
  memcpy(b->data + b->len, data, n);
  b->len += n;
  return 0;
}

static void buf_free(buf_t *b) {
  free(b->data);
  memset(b, 0, sizeof(*b));
}

/* ---- the multi and its events ---- */

static void multi_unref(multi_t *m);
static void dispatch(multi_t *m);

static void mark(transfer_t *t, int events) {
  multi_t *m = t->m;
  t->events |= events;
  if (!t->queued) {
    t->queued = 1;
    t->next_pending = m->pending;
    m->pending = t;
  }
}

static void unqueue(transfer_t *t) {
  transfer_t **p;
  if (!t->queued)
    return;
  for (p = &t->m->pending; *p != NULL; p = &(*p)->next_pending)
    if (*p == t) {
      *p = t->next_pending;
      break;
    }
  t->queued = 0;
}

/* Moves finished transfers out of curl into their records. */
static void read_done(multi_t *m) {
  CURLMsg *msg;
  int left;
  while ((msg = curl_multi_info_read(m->multi, &left)) != NULL) {
    transfer_t *t;
    char *priv = NULL;
    if (msg->msg != CURLMSG_DONE)
      continue;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
    t = (transfer_t *)(void *)priv;
    t->result = msg->data.result;
    t->done = 1;
    curl_multi_remove_handle(m->multi, t->easy);
    t->added = 0;
    mark(t, EV_DONE);
  }
}

/* Reports the events of marked transfers to Lua, outside every curl
 * callback; a Lua function that makes new events (an unpause delivers
 * data at once) is served by the same loop. */
static void dispatch(multi_t *m) {
  lua_State *L = synchro__live_vm(m->S);
  if (m->dispatching)
    return;
  read_done(m);
  if (L == NULL || m->closing)
    return;
  m->dispatching = 1;
  while (m->pending != NULL) {
    transfer_t *t = m->pending;
    int events = t->events;
    m->pending = t->next_pending;
    t->queued = 0;
    t->events = 0;
    if (t->cb_ref != LUA_NOREF) {
      lua_pushinteger(L, events);
      synchro__call_ref_fn(L, t->cb_ref, 1);
    }
    read_done(m);
  }
  m->dispatching = 0;
}

static void on_timer(uv_timer_t *timer) {
  multi_t *m = timer->data;
  int running;
  curl_multi_socket_action(m->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  dispatch(m);
}

static int timer_function(CURLM *multi, long timeout_ms, void *userp) {
  multi_t *m = userp;
  if (timeout_ms < 0)
    uv_timer_stop(m->timer);
  else
    uv_timer_start(m->timer, on_timer, (uint64_t)timeout_ms, 0);
  return 0;
}

static void on_socket(uv_poll_t *poll, int status, int events) {
  socket_ctx_t *ctx = poll->data;
  multi_t *m = ctx->m;
  int flags = 0, running;
  if (status < 0)
    flags = CURL_CSELECT_ERR;
  else {
    if (events & UV_READABLE)
      flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
      flags |= CURL_CSELECT_OUT;
  }
  curl_multi_socket_action(m->multi, ctx->fd, flags, &running);
  dispatch(m);
}

static void free_data(uv_handle_t *handle) { free(handle->data); }
static void free_handle(uv_handle_t *handle) { free(handle); }

static void socket_close(socket_ctx_t *ctx) {
  *ctx->prev = ctx->next;
  if (ctx->next != NULL)
    ctx->next->prev = ctx->prev;
  uv_close((uv_handle_t *)&ctx->poll, free_data);
}

static int socket_function(CURL *easy, curl_socket_t fd, int what, void *userp,
                           void *socketp) {
  multi_t *m = userp;
  socket_ctx_t *ctx = socketp;
  int events = 0;
  if (what == CURL_POLL_REMOVE) {
    if (ctx != NULL) {
      curl_multi_assign(m->multi, fd, NULL);
      socket_close(ctx);
    }
    return 0;
  }
  if (ctx == NULL) {
    ctx = malloc(sizeof(*ctx));
    if (ctx == NULL)
      return -1;
    if (uv_poll_init_socket(&m->S->loop, &ctx->poll, fd) != 0) {
      free(ctx);
      return -1;
    }
    ctx->poll.data = ctx;
    ctx->m = m;
    ctx->fd = fd;
    ctx->next = m->sockets;
    ctx->prev = &m->sockets;
    if (m->sockets != NULL)
      m->sockets->prev = &ctx->next;
    m->sockets = ctx;
    curl_multi_assign(m->multi, fd, ctx);
  }
  if (what & CURL_POLL_IN)
    events |= UV_READABLE;
  if (what & CURL_POLL_OUT)
    events |= UV_WRITABLE;
  return uv_poll_start(&ctx->poll, events, on_socket) == 0 ? 0 : -1;
}

static void multi_unref(multi_t *m) {
  if (--m->refs > 0)
    return;
  while (m->nspare > 0)
    curl_easy_cleanup(m->spare[--m->nspare]);
  /* Closes curl's connections; their sockets' polls close through
   * socket_function. */
  curl_multi_cleanup(m->multi);
  while (m->sockets != NULL)
    socket_close(m->sockets);
  uv_close((uv_handle_t *)m->timer, free_handle);
  free(m);
}

static int multi_gc(lua_State *L) {
  multi_t **box = lua_touserdata(L, 1);
  if (*box != NULL) {
    (*box)->closing = 1;
    multi_unref(*box);
    *box = NULL;
  }
  return 0;
}

static void global_init(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

/* The loop VM's multi, made on first use. */
static multi_t *get_multi(lua_State *L) {
  static uv_once_t once = UV_ONCE_INIT;
  synchro_t *S = synchro__loop_of(L);
  multi_t **box, *m;
  lua_getfield(L, LUA_REGISTRYINDEX, MULTI_KEY);
  box = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (box != NULL && *box != NULL)
    return *box;
  uv_once(&once, global_init);
  m = calloc(1, sizeof(*m));
  if (m == NULL || (m->timer = malloc(sizeof(*m->timer))) == NULL ||
      (m->multi = curl_multi_init()) == NULL) {
    if (m != NULL)
      free(m->timer);
    free(m);
    luaL_error(L, "not enough memory for a curl multi handle");
  }
  m->S = S;
  m->refs = 1;
  uv_timer_init(&S->loop, m->timer);
  m->timer->data = m;
  curl_multi_setopt(m->multi, CURLMOPT_SOCKETFUNCTION, socket_function);
  curl_multi_setopt(m->multi, CURLMOPT_SOCKETDATA, m);
  curl_multi_setopt(m->multi, CURLMOPT_TIMERFUNCTION, timer_function);
  curl_multi_setopt(m->multi, CURLMOPT_TIMERDATA, m);
  curl_multi_setopt(m->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
  box = lua_newuserdata(L, sizeof(*box));
  *box = m;
  if (luaL_newmetatable(L, MULTI_MT)) {
    lua_pushcfunction(L, multi_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, MULTI_KEY);
  return m;
}

/* ---- curl's callbacks: buffer and mark, never Lua ---- */

/* A whole body whose size the server announced gets one allocation of
 * that size (up to PRESIZE_MAX), not a series of doublings. */
static void presize(transfer_t *t) {
  curl_off_t size = -1;
  char *p;
  if (curl_easy_getinfo(t->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T,
                        &size) != CURLE_OK ||
      size <= 0 || size > PRESIZE_MAX)
    return;
  if ((p = malloc((size_t)size)) != NULL) {
    t->body.data = p;
    t->body.cap = (size_t)size;
  }
}

static size_t on_write(char *data, size_t size, size_t n, void *ud) {
  transfer_t *t = ud;
  size_t len = size * n;
  if (t->stream && t->body.len >= STREAM_HIGH_WATER) {
    t->paused |= CURLPAUSE_RECV; /* curl keeps this chunk for later */
    return CURL_WRITEFUNC_PAUSE;
  }
  if (t->body.cap == 0 && !t->stream)
    presize(t);
  if (buf_add(&t->body, data, len) != 0)
    return 0; /* CURLE_WRITE_ERROR */
  if (t->stream)
    mark(t, EV_DATA | (t->headers_done ? 0 : EV_HEADERS));
  t->headers_done = 1;
  return len;
}

static int is_status_line(const char *line, size_t len) {
  return len > 5 && memcmp(line, "HTTP/", 5) == 0;
}

/* Is "location:" among the header lines in b? */
static int has_location(const buf_t *b) {
  size_t i;
  for (i = 0; i + 9 <= b->len; i++)
    if ((i == 0 || b->data[i - 1] == '\n') &&
        strncasecmp(b->data + i, "location:", 9) == 0)
      return 1;
  return 0;
}

static size_t on_header(char *line, size_t size, size_t n, void *ud) {
  transfer_t *t = ud;
  size_t len = size * n;
  if (is_status_line(line, len))
    t->head.len = 0; /* a new response: after a redirect, or a 100 */
  if (buf_add(&t->head, line, len) != 0)
    return 0;
  if ((len == 2 && line[0] == '\r') || (len == 1 && line[0] == '\n')) {
    long code = 0;
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &code);
    if (code >= 200 &&
        !(t->follow && code >= 300 && code < 400 && has_location(&t->head))) {
      if (!t->headers_done && t->stream)
        mark(t, EV_HEADERS);
      t->headers_done = 1;
    }
  }
  return len;
}

static size_t on_read(char *dest, size_t size, size_t n, void *ud) {
  transfer_t *t = ud;
  size_t room = size * n, have = t->upload.len - t->upload.off;
  if (have == 0) {
    if (t->upload_eof)
      return 0;
    t->paused |= CURLPAUSE_SEND;
    mark(t, EV_NEED_BODY);
    return CURL_READFUNC_PAUSE;
  }
  if (have > room)
    have = room;
  memcpy(dest, t->upload.data + t->upload.off, have);
  t->upload.off += have;
  if (t->upload.off == t->upload.len)
    t->upload.off = t->upload.len = 0;
  return have;
}

/* ---- transfers from Lua ---- */

static transfer_t *check_transfer(lua_State *L) {
  transfer_box_t *box = synchro__check_udata(L, 1, TRANSFER_MT);
  if (box->t == NULL)
    luaL_argerror(L, 1, "transfer is closed");
  return box->t;
}

/* Unpauses what Lua has made room for, then reports what that made. */
static void set_pause(transfer_t *t, int paused) {
  if (paused == t->paused || t->done || !t->added)
    return;
  t->paused = paused;
  curl_easy_pause(t->easy, paused);
  dispatch(t->m);
}

static void release(lua_State *L, transfer_box_t *box) {
  transfer_t *t = box->t;
  if (t == NULL)
    return;
  box->t = NULL;
  unqueue(t);
  if (t->added)
    curl_multi_remove_handle(t->m->multi, t->easy);
  /* curl_easy_reset forgets every option (the headers list and buffers
   * freed below are no longer pointed at); connections stay in the
   * multi's cache either way. */
  if (t->m->nspare < SPARE_EASY && !t->m->closing) {
    curl_easy_reset(t->easy);
    t->m->spare[t->m->nspare++] = t->easy;
  } else {
    curl_easy_cleanup(t->easy);
  }
  curl_slist_free_all(t->headers);
  buf_free(&t->body);
  buf_free(&t->head);
  buf_free(&t->upload);
  luaL_unref(L, LUA_REGISTRYINDEX, t->cb_ref);
  multi_unref(t->m);
  free(t);
}

/* transfer:close(), also __gc and __close: removes the transfer from curl
 * at once (a cancelled request); safe to call twice. */
static int transfer_close(lua_State *L) {
  release(L, synchro__check_udata(L, 1, TRANSFER_MT));
  return 0;
}

static const char *opt_string(lua_State *L, int idx, const char *key) {
  const char *s;
  lua_getfield(L, idx, key);
  s = lua_tostring(L, -1);
  lua_pop(L, 1); /* still anchored in the options table */
  return s;
}

static lua_Integer opt_integer(lua_State *L, int idx, const char *key,
                               lua_Integer def) {
  lua_Integer v;
  lua_getfield(L, idx, key);
  v = lua_isnumber(L, -1) ? lua_tointeger(L, -1) : def;
  lua_pop(L, 1);
  return v;
}

static int opt_bool(lua_State *L, int idx, const char *key) {
  int v;
  lua_getfield(L, idx, key);
  v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

static long http_version(const char *v) {
  if (v == NULL)
    return CURL_HTTP_VERSION_NONE;
  if (strcmp(v, "1.0") == 0)
    return CURL_HTTP_VERSION_1_0;
  if (strcmp(v, "1.1") == 0)
    return CURL_HTTP_VERSION_1_1;
  if (strcmp(v, "2") == 0)
    return CURL_HTTP_VERSION_2TLS;
  if (strcmp(v, "2-prior-knowledge") == 0)
    return CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE;
  return CURL_HTTP_VERSION_NONE;
}

/* Sets the options that Lua has checked and normalised (http.lua). */
static int configure(lua_State *L, transfer_t *t, int o) {
  CURL *e = t->easy;
  const char *method = opt_string(L, o, "method");
  const char *s;
  size_t body_len;
  lua_Integer follow = opt_integer(L, o, "follow", 0);
  int i;
  curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)t);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_BUFFERSIZE, RECV_BUFFER);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, t);
  if (curl_easy_setopt(e, CURLOPT_URL, opt_string(L, o, "url")) != CURLE_OK)
    return luaL_error(L, "not enough memory");
  t->follow = follow > 0;
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, (long)(follow > 0));
  curl_easy_setopt(e, CURLOPT_MAXREDIRS, (long)(follow > 0 ? follow : 0));
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS,
                   (long)opt_integer(L, o, "timeout_ms", 0));
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                   (long)opt_integer(L, o, "connect_timeout_ms", 0));
  if (!opt_bool(L, o, "verify")) {
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  if ((s = opt_string(L, o, "cafile")) != NULL)
    curl_easy_setopt(e, CURLOPT_CAINFO, s);
  curl_easy_setopt(e, CURLOPT_HTTP_VERSION,
                   http_version(opt_string(L, o, "http_version")));
  if (opt_bool(L, o, "pipewait"))
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
  if (opt_bool(L, o, "decompress"))
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
  t->stream = opt_bool(L, o, "stream");
  lua_getfield(L, o, "header_lines");
  for (i = 1;; i++) {
    struct curl_slist *l;
    lua_rawgeti(L, -1, i);
    if (lua_type(L, -1) != LUA_TSTRING)
      break;
    l = curl_slist_append(t->headers, lua_tostring(L, -1));
    lua_pop(L, 1);
    if (l == NULL)
      return luaL_error(L, "not enough memory");
    t->headers = l;
  }
  lua_pop(L, 2);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
  lua_getfield(L, o, "body");
  s = lua_tolstring(L, -1, &body_len);
  if (s != NULL) {
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, s);
  } else if (opt_bool(L, o, "body_source")) {
    lua_Integer size = opt_integer(L, o, "body_size", -1);
    t->upload_source = 1;
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
    curl_easy_setopt(e, CURLOPT_READDATA, t);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)size);
  }
  lua_pop(L, 1);
  if (strcmp(method, "HEAD") == 0)
    curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
  else if (strcmp(method, "GET") != 0 &&
           !(strcmp(method, "POST") == 0 && (s != NULL || t->upload_source)))
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
  else if (strcmp(method, "GET") == 0 && (s != NULL || t->upload_source))
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "GET");
  return 0;
}

/* core.http_request(opts, fn) -> transfer: starts a transfer with the
 * options that http.lua checked; fn(events) reports, outside curl, that
 * headers came (1), data came (2, streaming), it ended (4), or the body
 * source must give more (8). */
static int http_request(lua_State *L) {
  multi_t *m = get_multi(L);
  transfer_box_t *box;
  transfer_t *t;
  CURLMcode mc;
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  box = lua_newuserdata(L, sizeof(*box));
  box->t = NULL;
  luaL_setmetatable(L, TRANSFER_MT);
  t = calloc(1, sizeof(*t));
  if (t != NULL)
    t->easy = m->nspare > 0 ? m->spare[--m->nspare] : curl_easy_init();
  if (t == NULL || t->easy == NULL) {
    free(t);
    return luaL_error(L, "not enough memory for a curl handle");
  }
  t->m = m;
  m->refs++;
  t->cb_ref = LUA_NOREF;
  box->t = t; /* from here, __gc frees it all, even if configure raises */
  configure(L, t, 1);
  lua_pushvalue(L, 2);
  t->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  mc = curl_multi_add_handle(m->multi, t->easy);
  if (mc != CURLM_OK)
    return luaL_error(L, "curl_multi_add_handle: %s", curl_multi_strerror(mc));
  t->added = 1;
  return 1;
}

/* A whole body this large is handed over as bytes (marshal.h), not as a
 * string: a response that only crosses to another VM is copied once from
 * curl's buffer into the call's, instead of into a string first. */
#define BODY_AS_BYTES (64 * 1024)

/* transfer:take_body() -> the whole body of a finished transfer: a string,
 * or for a large one a bytes object that takes curl's buffer over. */
static int transfer_take_body(lua_State *L) {
  transfer_t *t = check_transfer(L);
  synchro_bytes_t *b;
  if (t->body.len < BODY_AS_BYTES) {
    lua_pushlstring(L, t->body.data != NULL ? t->body.data : "", t->body.len);
    t->body.len = 0;
    return 1;
  }
  b = synchro__bytes_new(L);
  b->data = t->body.data;
  b->len = t->body.len;
  memset(&t->body, 0, sizeof(t->body));
  synchro__bytes_account(L, b);
  return 1;
}

/* transfer:take() -> the body bytes received so far (and unread): makes
 * room, so a paused stream goes on. */
static int transfer_take(lua_State *L) {
  transfer_t *t = check_transfer(L);
  lua_pushlstring(L, t->body.data != NULL ? t->body.data : "", t->body.len);
  t->body.len = 0;
  set_pause(t, t->paused & ~CURLPAUSE_RECV);
  return 1;
}

/* transfer:buffered() -> the number of body bytes not taken yet */
static int transfer_buffered(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)check_transfer(L)->body.len);
  return 1;
}

/* transfer:feed(chunk) gives the upload more; feed(nil) ends it. */
static int transfer_feed(lua_State *L) {
  transfer_t *t = check_transfer(L);
  size_t len;
  const char *s = luaL_optlstring(L, 2, NULL, &len);
  if (s == NULL)
    t->upload_eof = 1;
  else if (buf_add(&t->upload, s, len) != 0)
    return luaL_error(L, "not enough memory");
  set_pause(t, t->paused & ~CURLPAUSE_SEND);
  return 0;
}

/* transfer:head() -> the header lines of the last response, as received */
static int transfer_head(lua_State *L) {
  transfer_t *t = check_transfer(L);
  lua_pushlstring(L, t->head.data != NULL ? t->head.data : "", t->head.len);
  return 1;
}

/* transfer:info() -> status, effective url, http version ("1.1", "2") */
static int transfer_info(lua_State *L) {
  transfer_t *t = check_transfer(L);
  long code = 0, version = 0;
  char *url = NULL;
  curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &code);
  curl_easy_getinfo(t->easy, CURLINFO_EFFECTIVE_URL, &url);
  curl_easy_getinfo(t->easy, CURLINFO_HTTP_VERSION, &version);
  lua_pushinteger(L, code);
  lua_pushstring(L, url != NULL ? url : "");
  lua_pushstring(L, version == CURL_HTTP_VERSION_2_0   ? "2"
                    : version == CURL_HTTP_VERSION_1_0 ? "1.0"
                    : version == CURL_HTTP_VERSION_3   ? "3"
                                                       : "1.1");
  return 3;
}

/* A failure as nil, msg, code: libuv's name where the system said why
 * (ECONNREFUSED, ECONNRESET, ETIMEDOUT), else curl's CURLE_ name. */
static int push_failure(lua_State *L, transfer_t *t) {
  CURLcode rc = t->result;
  long os_errno = 0;
  const char *detail = t->errbuf[0] ? t->errbuf : curl_easy_strerror(rc);
  curl_easy_getinfo(t->easy, CURLINFO_OS_ERRNO, &os_errno);
  lua_pushnil(L);
  if (rc == CURLE_OPERATION_TIMEDOUT) {
    lua_pushfstring(L, "ETIMEDOUT: %s", detail);
    lua_pushliteral(L, "ETIMEDOUT");
  } else if ((rc == CURLE_COULDNT_CONNECT || rc == CURLE_RECV_ERROR ||
              rc == CURLE_SEND_ERROR) &&
             os_errno > 0 && os_errno < INT_MAX) {
    int err = uv_translate_sys_error((int)os_errno);
    lua_pushfstring(L, "%s: %s (%s)", uv_err_name(err), uv_strerror(err),
                    detail);
    lua_pushstring(L, uv_err_name(err));
  } else if (rc == CURLE_PEER_FAILED_VERIFICATION ||
             rc == CURLE_SSL_CACERT_BADFILE) {
    lua_pushfstring(L, "%s: TLS certificate verification failed: %s",
                    curle_name(rc), detail);
    lua_pushstring(L, curle_name(rc));
  } else {
    lua_pushfstring(L, "%s: %s", curle_name(rc), detail);
    lua_pushstring(L, curle_name(rc));
  }
  return 3;
}

/* transfer:result() -> nil while running; true when it succeeded; false,
 * msg, code when it failed. */
static int transfer_result(lua_State *L) {
  transfer_t *t = check_transfer(L);
  if (!t->done)
    return 0;
  if (t->result == CURLE_OK) {
    lua_pushboolean(L, 1);
    return 1;
  }
  push_failure(L, t);
  lua_pushboolean(L, 0);
  lua_replace(L, -4);
  return 3;
}

/* core.http_check_url(url) -> true, or nil and why it is malformed */
static int http_check_url(lua_State *L) {
  const char *url = luaL_checkstring(L, 1);
  CURLU *u = curl_url();
  CURLUcode rc;
  char *scheme = NULL;
  if (u == NULL)
    return luaL_error(L, "not enough memory");
  rc = curl_url_set(u, CURLUPART_URL, url, 0);
  if (rc == CURLUE_OK)
    rc = curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
  curl_url_cleanup(u);
  if (rc != CURLUE_OK) {
    lua_pushnil(L);
    lua_pushstring(L, curl_url_strerror(rc));
    return 2;
  }
  if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "scheme '%s' is not http or https", scheme);
    curl_free(scheme);
    return 2;
  }
  curl_free(scheme);
  lua_pushboolean(L, 1);
  return 1;
}

/* core.http_transfers() -> transfers in curl now (for leak checks) */
static int http_transfers(lua_State *L) {
  multi_t **box;
  lua_getfield(L, LUA_REGISTRYINDEX, MULTI_KEY);
  box = lua_touserdata(L, -1);
  lua_pushinteger(L, box != NULL && *box != NULL ? (*box)->refs - 1 : 0);
  return 1;
}

/* core.http_version() -> libcurl's version text */
static int http_curl_version(lua_State *L) {
  lua_pushstring(L, curl_version());
  return 1;
}

static int transfer_gc(lua_State *L) {
  release(L, lua_touserdata(L, 1));
  return 0;
}

void synchro__http_register(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"take", transfer_take},   {"take_body", transfer_take_body},
      {"buffered", transfer_buffered},
      {"feed", transfer_feed},   {"head", transfer_head},
      {"info", transfer_info},   {"result", transfer_result},
      {"close", transfer_close}, {NULL, NULL}};
  if (luaL_newmetatable(L, TRANSFER_MT)) {
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, transfer_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, transfer_close);
    lua_setfield(L, -2, "__close");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, http_request);
  lua_setfield(L, -2, "http_request");
  lua_pushcfunction(L, http_check_url);
  lua_setfield(L, -2, "http_check_url");
  lua_pushcfunction(L, http_transfers);
  lua_setfield(L, -2, "http_transfers");
  lua_pushcfunction(L, http_curl_version);
  lua_setfield(L, -2, "http_curl_version");
}

#else /* built without libcurl: synchro.aio.http says so (check.built_with) */

void synchro__http_register(lua_State *L) { (void)L; }

#endif
