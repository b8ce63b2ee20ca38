/* The public C API (include/synchro.h): Synchronizers, calls by path,
 * futures with a pollable fd and a callback. */
#include <stdlib.h>
#include <string.h>

#include "capi.h"

#define DEFAULT_GRACE 5.0

/* on_done runs once, before the call is seen done (synchro_future_wait,
 * the fd), and never after synchro_future_release has returned: release
 * waits for a callback that is running, and drops one not yet run. */
struct synchro_future {
  synchro_call_t *call; /* holds a reference */
  int refs;             /* the owner's, and the pending completion's */
  uv_mutex_t lock;      /* guards the fields below */
  uv_cond_t idle;       /* signalled when in_cb drops to 0 */
  int completed;
  int released;
  int in_cb; /* cb is running */
  void (*cb)(synchro_future_t *f, void *ud);
  void *ud;
};

static char *dup_string(const char *s, size_t n) {
  char *d = malloc(n + 1);
  if (d != NULL) {
    memcpy(d, s, n);
    d[n] = '\0';
  }
  return d;
}

static int set_error(char **errmsg, int err, const char *msg) {
  if (errmsg != NULL) {
    const char *text = msg != NULL ? msg : synchro_strerror(err);
    *errmsg = dup_string(text, strlen(text));
  }
  return err;
}

void synchro_free(void *p) { free(p); }

/* ---- Synchronizers ---- */

int synchro_open(synchro_t **out, const synchro_options_t *opts,
                 char **errmsg) {
  synchro_t *S;
  int err;
  if (errmsg != NULL)
    *errmsg = NULL;
  if (out == NULL)
    return set_error(errmsg, SYNCHRO_EINVAL, "out is NULL");
  *out = NULL;
  S = synchro__new(opts != NULL ? opts->name : NULL,
                   opts != NULL ? opts->lua_path : NULL,
                   opts != NULL ? opts->lua_cpath : NULL,
                   &synchro__vm, synchro__lua_open);
  if (S == NULL)
    return set_error(errmsg, SYNCHRO_ENOMEM, NULL);
  S->paths_prepend = 1;
  if (opts != NULL && opts->grace > 0)
    S->grace = opts->grace;
  err = synchro__start(S);
  if (err != 0) {
    set_error(errmsg, err, S->start_message);
    synchro__close(S, 0);
    synchro__unref(S);
    return err;
  }
  *out = S;
  return 0;
}

/* A close's grace: < 0 the Synchronizer's own; NaN is EINVAL. */
static int close_grace(synchro_t *s, double grace, double *out) {
  if (grace < 0) {
    *out = s->grace;
    return 0;
  }
  if (synchro__time_normalize(grace, out) != 0) {
    *out = s->grace;
    return SYNCHRO_EINVAL;
  }
  if (*out == SYNCHRO_NO_LIMIT)
    *out = SYNCHRO_TIME_MAX;
  return 0;
}

int synchro_shutdown(synchro_t *s, double grace) {
  if (s == NULL || close_grace(s, grace, &grace) != 0)
    return SYNCHRO_EINVAL;
  synchro__close(s, grace);
  return 0;
}

int synchro_close(synchro_t *s, double grace) {
  int err;
  if (s == NULL)
    return 0;
  err = close_grace(s, grace, &grace); /* NaN: closes all the same */
  synchro__close(s, grace);
  synchro__unref(s);
  return err;
}

/* ---- calls ---- */

/* The C API's times: the one rule (synchro__time_normalize), except that
 * a negative value means no limit, poll()'s convention, as synchro.h
 * says. */
static int c_time(double seconds, double *out) {
  if (seconds < 0) {
    *out = SYNCHRO_NO_LIMIT;
    return 0;
  }
  return synchro__time_normalize(seconds, out);
}

static void on_call_done(synchro_call_t *call, void *ud);

static int submit(synchro_t *s, const char *path, const synchro_value_t *args,
                  size_t nargs, synchro_future_t *f, synchro_call_t **out) {
  synchro_call_t *call;
  synchro_value_t first;
  int err;
  if (s == NULL || path == NULL || (args == NULL && nargs > 0))
    return SYNCHRO_EINVAL;
  if (synchro__is_loop_thread(s))
    return SYNCHRO_EINVAL;
  err = synchro__start(s);
  if (err != 0)
    return err;
  call = synchro__call_new(s, SYNCHRO_OP_PATH, 0);
  if (call == NULL)
    return SYNCHRO_ENOMEM;
  call->plain_results = 1;
  first = synchro_string(path);
  err = synchro__capi_encode(&call->args, &first, args, nargs);
  if (err != 0) {
    synchro__call_unref(call);
    return err;
  }
  if (f != NULL) {
    call->done_cb = on_call_done;
    call->done_ud = f;
  }
  synchro__call_ref(call); /* the loop's */
  err = synchro__send(s, &call->msg);
  if (err != 0) {
    synchro__call_unref(call);
    synchro__call_unref(call);
    return err;
  }
  *out = call;
  return 0;
}

/* The outcome of a completed call, as synchro_call returns it. */
static int outcome(synchro_call_t *call, synchro_value_t **results,
                   size_t *nresults, char **errmsg) {
  synchro_value_t *values = NULL;
  size_t n = 0;
  int err;
  switch (call->status) {
  case SYNCHRO_CALL_OK:
    err = synchro__capi_decode(call->reply.data, call->reply.len, &values,
                               &n);
    if (err != 0)
      return set_error(errmsg, err,
                       err == SYNCHRO_EMARSHAL
                           ? "a result is not plain data (nil, boolean, "
                             "number, string, or a table of those without "
                             "shared references)"
                           : NULL);
    if (results != NULL) {
      *results = values;
      *nresults = n;
    } else {
      synchro_values_free(values, n);
    }
    return 0;
  case SYNCHRO_CALL_ERROR:
  case SYNCHRO_CALL_BAD_RESULT: {
    char *msg = NULL;
    err = synchro__capi_decode(call->reply.data, call->reply.len, &values,
                               &n);
    if (err == 0 && n >= 1) {
      const char *text = values[0].type == SYNCHRO_TBYTES
                             ? values[0].as.bytes.data
                             : "(error object is not a string)";
      const char *tb = n >= 2 && values[1].type == SYNCHRO_TBYTES
                           ? values[1].as.bytes.data
                           : "";
      size_t lt = strlen(text), lb = strlen(tb);
      msg = malloc(lt + lb + 2);
      if (msg != NULL) {
        memcpy(msg, text, lt);
        msg[lt] = lb > 0 ? '\n' : '\0';
        memcpy(msg + lt + (lb > 0), tb, lb + 1);
      }
    }
    synchro_values_free(values, n);
    if (errmsg != NULL)
      *errmsg = msg != NULL ? msg : dup_string("Lua error", 9);
    else
      free(msg);
    return call->status == SYNCHRO_CALL_BAD_RESULT ? SYNCHRO_EMARSHAL
                                                   : SYNCHRO_ELUAERROR;
  }
  default: {
    const char *msg;
    err = synchro__call_status_error(call->status, &msg);
    return set_error(errmsg, err, msg);
  }
  }
}

int synchro_call(synchro_t *s, const char *path, const synchro_value_t *args,
                 size_t nargs, synchro_value_t **results, size_t *nresults,
                 double timeout, char **errmsg) {
  synchro_call_t *call = NULL;
  int err;
  if (errmsg != NULL)
    *errmsg = NULL;
  if (results != NULL)
    *results = NULL;
  if (nresults != NULL)
    *nresults = 0;
  if (results != NULL && nresults == NULL)
    return set_error(errmsg, SYNCHRO_EINVAL, "nresults is NULL");
  if (c_time(timeout, &timeout) != 0)
    return set_error(errmsg, SYNCHRO_EINVAL, "timeout is NaN");
  err = submit(s, path, args, nargs, NULL, &call);
  if (err != 0)
    return set_error(errmsg, err, NULL);
  if (timeout >= 0)
    synchro__deadline_add(call, timeout);
  err = synchro__call_await(call, timeout, synchro__call_wait_plain, NULL);
  if (err == 0)
    err = outcome(call, results, nresults, errmsg);
  else
    err = set_error(errmsg, err, NULL);
  synchro__call_unref(call);
  return err;
}

int synchro_load_module(synchro_t *s, const char *name, char **errmsg) {
  synchro_value_t arg = synchro_string(name);
  if (name == NULL)
    return set_error(errmsg, SYNCHRO_EINVAL, "name is NULL");
  return synchro_call(s, "synchro.runtime.require", &arg, 1, NULL, NULL, -1,
                      errmsg);
}

int synchro_load_chunk(synchro_t *s, const char *code, size_t len,
                       const char *chunkname, char **errmsg) {
  synchro_value_t args[2];
  if (code == NULL)
    return set_error(errmsg, SYNCHRO_EINVAL, "code is NULL");
  args[0] = synchro_bytes(code, len);
  args[1] = chunkname != NULL ? synchro_string(chunkname) : synchro_nil();
  return synchro_call(s, "synchro.runtime.load_chunk", args, 2, NULL, NULL,
                      -1, errmsg);
}

/* ---- futures ---- */

static void future_unref(synchro_future_t *f) {
  if (synchro__decr(&f->refs) != 0)
    return;
  synchro__call_unref(f->call);
  uv_cond_destroy(&f->idle);
  uv_mutex_destroy(&f->lock);
  free(f);
}

/* Runs cb unless released; called with f->lock held, returns with it. */
static void run_cb_locked(synchro_future_t *f) {
  void (*cb)(synchro_future_t *, void *) = f->released ? NULL : f->cb;
  if (cb == NULL)
    return;
  f->in_cb = 1;
  uv_mutex_unlock(&f->lock);
  cb(f, f->ud);
  uv_mutex_lock(&f->lock);
  f->in_cb = 0;
  uv_cond_broadcast(&f->idle);
}

/* On the completing thread (the loop's), once, before the call is seen
 * done. */
static void on_call_done(synchro_call_t *call, void *ud) {
  synchro_future_t *f = ud;
  (void)call;
  uv_mutex_lock(&f->lock);
  f->completed = 1;
  run_cb_locked(f);
  uv_mutex_unlock(&f->lock);
  future_unref(f);
}

int synchro_submit(synchro_t *s, const char *path, const synchro_value_t *args,
                   size_t nargs, synchro_future_t **out) {
  synchro_future_t *f;
  int err;
  if (out == NULL)
    return SYNCHRO_EINVAL;
  *out = NULL;
  f = calloc(1, sizeof(*f));
  if (f == NULL)
    return SYNCHRO_ENOMEM;
  f->refs = 2;
  if (uv_mutex_init(&f->lock) != 0) {
    free(f);
    return SYNCHRO_ENOMEM;
  }
  if (uv_cond_init(&f->idle) != 0) {
    uv_mutex_destroy(&f->lock);
    free(f);
    return SYNCHRO_ENOMEM;
  }
  err = submit(s, path, args, nargs, f, &f->call);
  if (err != 0) {
    uv_cond_destroy(&f->idle);
    uv_mutex_destroy(&f->lock);
    free(f);
    return err;
  }
  *out = f;
  return 0;
}

int synchro_future_wait(synchro_future_t *f, double timeout) {
  if (f == NULL || c_time(timeout, &timeout) != 0)
    return SYNCHRO_EINVAL;
  return synchro__event_wait(&f->call->done, timeout, NULL, NULL,
                             &f->call->S->call_spin) == 0
             ? 0
             : SYNCHRO_ETIMEDOUT;
}

static int future_completed(synchro_future_t *f);

int synchro_future_done(synchro_future_t *f) {
  /* completed: true inside on_done too, which runs before done is set */
  return f != NULL &&
         (synchro__event_is_set(&f->call->done) || future_completed(f));
}

int synchro_future_fd(synchro_future_t *f) {
  if (f == NULL)
    return SYNCHRO_EINVAL;
  return synchro__call_pollfd(f->call); /* closed with the call */
}

int synchro_future_on_done(synchro_future_t *f,
                           void (*cb)(synchro_future_t *f, void *ud),
                           void *ud) {
  if (f == NULL || cb == NULL)
    return SYNCHRO_EINVAL;
  uv_mutex_lock(&f->lock);
  if (f->cb != NULL) {
    uv_mutex_unlock(&f->lock);
    return SYNCHRO_EINVAL;
  }
  f->cb = cb;
  f->ud = ud;
  if (f->completed)
    run_cb_locked(f); /* done already: here, now */
  uv_mutex_unlock(&f->lock);
  return 0;
}

int synchro_future_cancel(synchro_future_t *f) {
  if (f == NULL)
    return SYNCHRO_EINVAL;
  synchro__call_cancel(f->call);
  return 0;
}

static int future_completed(synchro_future_t *f) {
  int c;
  uv_mutex_lock(&f->lock);
  c = f->completed;
  uv_mutex_unlock(&f->lock);
  return c;
}

int synchro_future_results(synchro_future_t *f, synchro_value_t **results,
                           size_t *nresults, char **errmsg) {
  if (errmsg != NULL)
    *errmsg = NULL;
  if (results != NULL)
    *results = NULL;
  if (nresults != NULL)
    *nresults = 0;
  if (f == NULL || (results != NULL && nresults == NULL))
    return set_error(errmsg, SYNCHRO_EINVAL, NULL);
  /* completed: from inside on_done too, which runs before done is set */
  if (!synchro__event_is_set(&f->call->done) && !future_completed(f))
    return set_error(errmsg, SYNCHRO_EINVAL, "the future is not done");
  return outcome(f->call, results, nresults, errmsg);
}

void synchro_future_release(synchro_future_t *f) {
  if (f == NULL)
    return;
  uv_mutex_lock(&f->lock);
  f->released = 1; /* a callback not yet run never will be */
  while (f->in_cb)
    uv_cond_wait(&f->idle, &f->lock);
  uv_mutex_unlock(&f->lock);
  future_unref(f);
}

/* ---- a host's own Lua state ---- */

int synchro_lua_push(lua_State *L, synchro_t *s) {
  int64_t h;
  if (s == NULL) {
    lua_pushliteral(L, "synchro_lua_push: synchronizer is NULL");
    return SYNCHRO_EINVAL;
  }
  /* require "synchro.core" must give this library's code, not load a
   * second copy from package.cpath. */
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, synchro__lua_open);
  lua_setfield(L, -2, "synchro.core");
  lua_pop(L, 2);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "synchro");
  if (lua_pcall(L, 1, 1, 0) != 0)
    return SYNCHRO_EINVAL;
  lua_getfield(L, -1, "import");
  lua_remove(L, -2);
  synchro__ref(s); /* taken over by import, as from S:export() */
  h = synchro__handle_new(SYNCHRO_HANDLE_EXPORT, s, NULL);
  if (h == 0) {
    synchro__unref(s);
    lua_pop(L, 1);
    lua_pushliteral(L, "synchro_lua_push: out of memory");
    return SYNCHRO_ENOMEM;
  }
  lua_pushinteger(L, (lua_Integer)h);
  if (lua_pcall(L, 1, 1, 0) != 0) {
    if (synchro__handle_take(h, SYNCHRO_HANDLE_EXPORT) != NULL)
      synchro__unref(s);
    return SYNCHRO_EINVAL;
  }
  return 0;
}
