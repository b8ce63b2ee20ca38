/* synchro.aio.tls, the C side: OpenSSL 3 contexts and sessions over
 * memory BIOs. A session never touches a socket: lua/synchro/aio/tls.lua
 * feeds it the ciphertext a stream read and writes out the ciphertext it
 * produces, so TLS runs over any synchro stream (TCP, a pipe, even
 * another TLS stream) and the buffered stream API stays the one of
 * stream.lua. C converts and reports; when to read, write or wait is
 * decided in Lua.
 *
 * Thread: loop thread of the VM that made the objects. OpenSSL's error
 * queue is per thread and shared with libcurl and libpq on the same loop,
 * so it is cleared before every operation here. */
#include <stdlib.h>
#include <string.h>

#include "aio.h"

#ifdef SYNCHRO_HAVE_OPENSSL

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define CTX_MT     "synchro.tls.context"
#define SESSION_MT "synchro.tls.session"
/* The most plaintext one read() returns; the rest waits for the next. */
#define READ_CHUNK (64 * 1024)

/* A context lives as long as its Lua object or its last session, which
 * ever ends last: the ALPN select callback and the read buffer are its. */
typedef struct {
  SSL_CTX *ctx;
  int refs;
  unsigned char *alpn; /* wire format; a server picks from it */
  unsigned int alpn_len;
  char *rbuf; /* READ_CHUNK bytes, shared by the sessions (one thread) */
} tls_ctx_t;

typedef struct {
  tls_ctx_t *c; /* NULL once released */
} ctx_box_t;

typedef struct {
  SSL *ssl; /* NULL once closed */
  tls_ctx_t *c;
  BIO *rbio, *wbio; /* owned by ssl */
  char host[256];   /* the name verified, for messages; "" if none */
  /* an end or error met after data, for the next read */
  char err_msg[256];
  char err_code[16];
} session_t;

static void ctx_unref(tls_ctx_t *c) {
  if (c == NULL || --c->refs > 0)
    return;
  SSL_CTX_free(c->ctx);
  free(c->alpn);
  free(c->rbuf);
  free(c);
}

/* The reason of the last OpenSSL error, or what. */
static const char *last_reason(const char *what) {
  unsigned long e = ERR_peek_last_error();
  const char *r = e != 0 ? ERR_reason_error_string(e) : NULL;
  return r != NULL ? r : what;
}

/* nil, "ETLS: <what>: <reason>", "ETLS" for a context setup failure. */
static int push_setup_error(lua_State *L, const char *what, const char *path) {
  lua_pushnil(L);
  lua_pushfstring(L, "ETLS: %s %s: %s", what, path, last_reason("failed"));
  lua_pushliteral(L, "ETLS");
  ERR_clear_error();
  return 3;
}

static int alpn_select(SSL *ssl, const unsigned char **out,
                       unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg) {
  tls_ctx_t *c = arg;
  unsigned char *sel;
  (void)ssl;
  if (SSL_select_next_proto(&sel, outlen, c->alpn, c->alpn_len, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK; /* no common protocol: go on without */
  *out = sel;
  return SSL_TLSEXT_ERR_OK;
}

static tls_ctx_t *check_ctx(lua_State *L, int idx) {
  ctx_box_t *box = synchro__check_udata(L, idx, CTX_MT);
  if (box->c == NULL)
    luaL_argerror(L, idx, "TLS context is released");
  return box->c;
}

/* core.tls_context(server, verify, cafile, cert, key, alpn) -> context,
 * or nil, msg, code. server: boolean; verify: check the peer's
 * certificate (a server then requires one); cafile: PEM file of trusted
 * CAs, nil for the system's store; cert/key: PEM files (a chain, and its
 * key, which must match); alpn: protocols in ALPN wire format or nil. */
static int tls_context(lua_State *L) {
  int server = lua_toboolean(L, 1), verify = lua_toboolean(L, 2);
  const char *cafile = luaL_optstring(L, 3, NULL);
  const char *cert = luaL_optstring(L, 4, NULL);
  const char *key = luaL_optstring(L, 5, NULL);
  size_t alpn_len = 0;
  const char *alpn = luaL_optlstring(L, 6, NULL, &alpn_len);
  ctx_box_t *box = lua_newuserdata(L, sizeof(*box));
  tls_ctx_t *c;
  box->c = NULL;
  luaL_setmetatable(L, CTX_MT);
  c = calloc(1, sizeof(*c));
  if (c == NULL)
    return luaL_error(L, "not enough memory");
  c->refs = 1;
  box->c = c; /* from here __gc frees what is made */
  ERR_clear_error();
  c->ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (c->ctx == NULL)
    return push_setup_error(L, "cannot make a context", "");
  SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
  /* renegotiation would make a write wait for a read */
  SSL_CTX_set_options(c->ctx, SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_mode(c->ctx, SSL_MODE_RELEASE_BUFFERS);
  /* No session resumption, so no TLS 1.3 tickets: a client that writes
   * and closes without reading would leave them unread, and its kernel
   * would reset the connection instead of ending it (losing the data
   * in flight). */
  if (server)
    SSL_CTX_set_num_tickets(c->ctx, 0);
  if (cafile != NULL) {
    if (SSL_CTX_load_verify_locations(c->ctx, cafile, NULL) != 1)
      return push_setup_error(L, "cannot load cafile", cafile);
  } else if (verify && !server) {
    if (SSL_CTX_set_default_verify_paths(c->ctx) != 1)
      return push_setup_error(L, "cannot load the system CA store", "");
  }
  if (verify)
    SSL_CTX_set_verify(c->ctx,
                       server
                           ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
                           : SSL_VERIFY_PEER,
                       NULL);
  else
    SSL_CTX_set_verify(c->ctx, SSL_VERIFY_NONE, NULL);
  if (cert != NULL && SSL_CTX_use_certificate_chain_file(c->ctx, cert) != 1)
    return push_setup_error(L, "cannot load cert", cert);
  if (key != NULL &&
      SSL_CTX_use_PrivateKey_file(c->ctx, key, SSL_FILETYPE_PEM) != 1 &&
      ERR_GET_REASON(ERR_peek_last_error()) != X509_R_KEY_VALUES_MISMATCH)
    return push_setup_error(L, "cannot load key", key);
  if (cert != NULL && key != NULL && SSL_CTX_check_private_key(c->ctx) != 1) {
    lua_pushnil(L);
    lua_pushfstring(L, "ETLS: key %s does not match cert %s", key, cert);
    lua_pushliteral(L, "ETLS");
    ERR_clear_error();
    return 3;
  }
  if (alpn != NULL && alpn_len > 0) {
    luaL_argcheck(L, alpn_len < 65536, 6, "ALPN list too long");
    if (server) {
      c->alpn = malloc(alpn_len);
      if (c->alpn == NULL)
        return luaL_error(L, "not enough memory");
      memcpy(c->alpn, alpn, alpn_len);
      c->alpn_len = (unsigned int)alpn_len;
      SSL_CTX_set_alpn_select_cb(c->ctx, alpn_select, c);
    } else if (SSL_CTX_set_alpn_protos(c->ctx, (const unsigned char *)alpn,
                                       (unsigned int)alpn_len) != 0) {
      return push_setup_error(L, "cannot set", "alpn");
    }
  }
  return 1;
}

static int ctx_gc(lua_State *L) {
  ctx_box_t *box = synchro__check_udata(L, 1, CTX_MT);
  tls_ctx_t *c = box->c;
  box->c = NULL;
  ctx_unref(c);
  return 0;
}

static session_t *check_session(lua_State *L, int idx) {
  session_t *s = synchro__check_udata(L, idx, SESSION_MT);
  if (s->ssl == NULL)
    luaL_argerror(L, idx, "TLS session is closed");
  return s;
}

/* core.tls_session(context, host, servername) -> session. host: the name
 * or IP address the peer's certificate must be for (nil: not checked);
 * servername: the SNI name sent (nil: none). Raises on bad arguments. */
static int tls_session(lua_State *L) {
  tls_ctx_t *c = check_ctx(L, 1);
  size_t host_len = 0, sni_len = 0;
  const char *host = luaL_optlstring(L, 2, NULL, &host_len);
  const char *sni = luaL_optlstring(L, 3, NULL, &sni_len);
  /* a NUL inside would verify a shorter name than the one asked for */
  luaL_argcheck(L, host == NULL || strlen(host) == host_len, 2,
                "NUL byte in host name");
  luaL_argcheck(L, sni == NULL || strlen(sni) == sni_len, 3,
                "NUL byte in servername");
  session_t *s = lua_newuserdata(L, sizeof(*s));
  memset(s, 0, sizeof(*s));
  luaL_setmetatable(L, SESSION_MT);
  ERR_clear_error();
  s->ssl = SSL_new(c->ctx);
  s->rbio = BIO_new(BIO_s_mem());
  s->wbio = BIO_new(BIO_s_mem());
  if (s->ssl == NULL || s->rbio == NULL || s->wbio == NULL) {
    SSL_free(s->ssl);
    BIO_free(s->rbio);
    BIO_free(s->wbio);
    s->ssl = NULL;
    ERR_clear_error();
    return luaL_error(L, "not enough memory for a TLS session");
  }
  /* reads of an empty rbio say "retry", until set_eof */
  BIO_set_mem_eof_return(s->rbio, -1);
  SSL_set_bio(s->ssl, s->rbio, s->wbio);
  s->c = c;
  c->refs++;
  if (SSL_is_server(s->ssl))
    SSL_set_accept_state(s->ssl);
  else
    SSL_set_connect_state(s->ssl);
  if (host != NULL) {
    size_t n = strlen(host);
    int ok;
    memcpy(s->host, host, n < sizeof(s->host) ? n + 1 : sizeof(s->host) - 1);
    s->host[sizeof(s->host) - 1] = '\0';
    /* an IP address is matched against the certificate's IP entries */
    ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s->ssl), host) == 1;
    if (!ok) {
      ERR_clear_error();
      ok = SSL_set1_host(s->ssl, host) == 1;
    }
    if (!ok)
      return luaL_error(L, "bad host name for TLS verification: %s", host);
  }
  if (sni != NULL && SSL_set_tlsext_host_name(s->ssl, sni) != 1) {
    ERR_clear_error();
    return luaL_error(L, "bad servername: %s", sni);
  }
  return 1;
}

static void session_release(session_t *s) {
  if (s->ssl == NULL)
    return;
  SSL_free(s->ssl); /* frees both BIOs */
  s->ssl = NULL;
  s->rbio = s->wbio = NULL;
  ctx_unref(s->c);
  s->c = NULL;
}

/* s:close(), also __gc; safe twice. */
static int session_close(lua_State *L) {
  session_release(synchro__check_udata(L, 1, SESSION_MT));
  return 0;
}

/* Pushes nil, msg, code for the failed operation's result ret; clears the
 * error queue. */
static int push_ssl_error(lua_State *L, session_t *s, int ret) {
  int e = SSL_get_error(s->ssl, ret);
  unsigned long err = ERR_peek_last_error();
  int reason = ERR_GET_REASON(err);
  lua_pushnil(L);
  if (e == SSL_ERROR_ZERO_RETURN) {
    lua_pushliteral(L, "EOF: end of stream");
    lua_pushliteral(L, "EOF");
  } else if (e == SSL_ERROR_SSL && reason == SSL_R_CERTIFICATE_VERIFY_FAILED) {
    long v = SSL_get_verify_result(s->ssl);
    if (v == X509_V_ERR_HOSTNAME_MISMATCH ||
        v == X509_V_ERR_IP_ADDRESS_MISMATCH)
      lua_pushfstring(L,
                      "ECERT: certificate verify failed: %s (the "
                      "certificate is not for %s)",
                      X509_verify_cert_error_string(v), s->host);
    else
      lua_pushfstring(L, "ECERT: certificate verify failed: %s",
                      X509_verify_cert_error_string(v));
    lua_pushliteral(L, "ECERT");
  } else if (e == SSL_ERROR_SSL &&
             reason == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
    lua_pushliteral(L, "ECONNRESET: TLS peer closed the connection without "
                       "close_notify");
    lua_pushliteral(L, "ECONNRESET");
  } else {
    lua_pushfstring(L, "ETLS: %s", last_reason("TLS protocol error"));
    lua_pushliteral(L, "ETLS");
  }
  ERR_clear_error();
  return 3;
}

static int wants_io(session_t *s, int ret) {
  int e = SSL_get_error(s->ssl, ret);
  return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE;
}

/* s:handshake() -> true when done, false when it needs more input (feed
 * it, after sending what take() gives), or nil, msg, code. */
static int session_handshake(lua_State *L) {
  session_t *s = check_session(L, 1);
  int ret;
  ERR_clear_error();
  ret = SSL_do_handshake(s->ssl);
  if (ret == 1) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (wants_io(s, ret)) {
    lua_pushboolean(L, 0);
    return 1;
  }
  return push_ssl_error(L, s, ret);
}

/* s:feed(ciphertext): what the stream read, for the next handshake or
 * read. */
static int session_feed(lua_State *L) {
  session_t *s = check_session(L, 1);
  size_t len, done = 0;
  const char *data = luaL_checklstring(L, 2, &len);
  while (done < len) {
    size_t n = 0;
    if (BIO_write_ex(s->rbio, data + done, len - done, &n) != 1)
      return luaL_error(L, "not enough memory for TLS input");
    done += n;
  }
  return 0;
}

/* s:set_eof(): the stream ended; a read now reports the end (or that the
 * peer ended without close_notify). */
static int session_set_eof(lua_State *L) {
  session_t *s = check_session(L, 1);
  BIO_set_mem_eof_return(s->rbio, 0);
  return 0;
}

/* Pushes the ciphertext waiting to be sent, or nil. */
static int push_output(lua_State *L, session_t *s) {
  char *p;
  long n = BIO_get_mem_data(s->wbio, &p);
  if (n <= 0) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushlstring(L, p, (size_t)n);
  (void)BIO_reset(s->wbio);
  return 1;
}

/* s:take() -> the ciphertext to send now, or nil. */
static int session_take(lua_State *L) {
  return push_output(L, check_session(L, 1));
}

/* s:read() -> plaintext (up to 64 KiB), false when more input is needed,
 * or nil, msg, code: "EOF" after the peer's close_notify. */
static int session_read(lua_State *L) {
  session_t *s = check_session(L, 1);
  tls_ctx_t *c = s->c;
  size_t filled = 0;
  int ret = 1;
  if (s->err_code[0] != '\0') {
    lua_pushnil(L);
    lua_pushstring(L, s->err_msg);
    lua_pushstring(L, s->err_code);
    return 3;
  }
  if (c->rbuf == NULL && (c->rbuf = malloc(READ_CHUNK)) == NULL)
    return luaL_error(L, "not enough memory");
  ERR_clear_error();
  while (filled < READ_CHUNK) {
    size_t n = 0;
    ret = SSL_read_ex(s->ssl, c->rbuf + filled, READ_CHUNK - filled, &n);
    if (ret != 1)
      break;
    filled += n;
  }
  if (filled > 0) {
    /* an end or error after data comes with the next read, with its
     * reason (OpenSSL's error queue would be gone by then) */
    if (ret != 1 && !wants_io(s, ret)) {
      push_ssl_error(L, s, ret);
      strncpy(s->err_msg, lua_tostring(L, -2), sizeof(s->err_msg) - 1);
      strncpy(s->err_code, lua_tostring(L, -1), sizeof(s->err_code) - 1);
      lua_pop(L, 3);
    }
    lua_pushlstring(L, c->rbuf, filled);
    return 1;
  }
  if (wants_io(s, ret)) {
    lua_pushboolean(L, 0);
    return 1;
  }
  return push_ssl_error(L, s, ret);
}

/* s:write(plaintext) -> the ciphertext to send, or nil, msg, code. */
static int session_write(lua_State *L) {
  session_t *s = check_session(L, 1);
  size_t len, n = 0;
  const char *data = luaL_checklstring(L, 2, &len);
  int ret;
  if (len == 0) {
    lua_pushliteral(L, "");
    return 1;
  }
  ERR_clear_error();
  ret = SSL_write_ex(s->ssl, data, len, &n);
  if (ret != 1 || n != len)
    return push_ssl_error(L, s, ret);
  return push_output(L, s);
}

/* s:shutdown() -> the close_notify alert to send (once), or nil. */
static int session_shutdown(lua_State *L) {
  session_t *s = check_session(L, 1);
  if ((SSL_get_shutdown(s->ssl) & SSL_SENT_SHUTDOWN) == 0 &&
      SSL_is_init_finished(s->ssl)) {
    ERR_clear_error();
    (void)SSL_shutdown(s->ssl);
    ERR_clear_error();
  }
  return push_output(L, s);
}

/* s:info() -> { version=, cipher=, alpn=, peer= (subject), verified= } */
static int session_info(lua_State *L) {
  session_t *s = check_session(L, 1);
  const unsigned char *alpn = NULL;
  unsigned int alpn_len = 0;
  X509 *peer;
  lua_createtable(L, 0, 5);
  lua_pushstring(L, SSL_get_version(s->ssl));
  lua_setfield(L, -2, "version");
  if (SSL_get_current_cipher(s->ssl) != NULL) {
    lua_pushstring(L, SSL_CIPHER_get_name(SSL_get_current_cipher(s->ssl)));
    lua_setfield(L, -2, "cipher");
  }
  SSL_get0_alpn_selected(s->ssl, &alpn, &alpn_len);
  if (alpn != NULL && alpn_len > 0) {
    lua_pushlstring(L, (const char *)alpn, alpn_len);
    lua_setfield(L, -2, "alpn");
  }
  peer = SSL_get1_peer_certificate(s->ssl);
  if (peer != NULL) {
    char subject[512];
    X509_NAME_oneline(X509_get_subject_name(peer), subject, sizeof(subject));
    lua_pushstring(L, subject);
    lua_setfield(L, -2, "peer");
    X509_free(peer);
  }
  lua_pushboolean(L, SSL_get_verify_result(s->ssl) == X509_V_OK &&
                         (SSL_get_verify_mode(s->ssl) & SSL_VERIFY_PEER));
  lua_setfield(L, -2, "verified");
  return 1;
}

/* core.tls_version() -> OpenSSL's version text */
static int tls_version(lua_State *L) {
  lua_pushstring(L, OpenSSL_version(OPENSSL_VERSION));
  return 1;
}

/* core.tls_sessions(context) -> the sessions alive on it (for leak
 * checks). */
static int tls_sessions(lua_State *L) {
  lua_pushinteger(L, check_ctx(L, 1)->refs - 1);
  return 1;
}

void synchro__tls_register(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"handshake", session_handshake}, {"feed", session_feed},
      {"set_eof", session_set_eof},     {"take", session_take},
      {"read", session_read},           {"write", session_write},
      {"shutdown", session_shutdown},   {"info", session_info},
      {"close", session_close},         {NULL, NULL}};
  if (luaL_newmetatable(L, SESSION_MT)) {
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, session_close);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, CTX_MT)) {
    lua_pushcfunction(L, ctx_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, tls_context);
  lua_setfield(L, -2, "tls_context");
  lua_pushcfunction(L, tls_session);
  lua_setfield(L, -2, "tls_session");
  lua_pushcfunction(L, tls_version);
  lua_setfield(L, -2, "tls_version");
  lua_pushcfunction(L, tls_sessions);
  lua_setfield(L, -2, "tls_sessions");
}

#else /* built without OpenSSL: synchro.aio.tls says what to install */

void synchro__tls_register(lua_State *L) { (void)L; }

#endif
