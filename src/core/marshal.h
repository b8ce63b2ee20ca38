/* Marshalling: Lua values <-> one contiguous buffer, so that values can
 * cross from one lua_State to another (possibly on another thread).
 * Internal to synchro; see DESIGN.md section 2. The encoder is marshal.c,
 * the decoder unmarshal.c; the buffer format is documented at the top of
 * marshal_format.h. */
#ifndef SYNCHRO_MARSHAL_H
#define SYNCHRO_MARSHAL_H

#include <stddef.h>
#include <stdint.h>

#include "lua.h"

/* A growable byte buffer. Zero-initialise (or synchro__buf_init) before use;
 * synchro__buf_free releases the storage and may be called twice. */
typedef struct synchro_buf {
  char *data;
  size_t len;
  size_t cap;
  int borrowed; /* data is storage the buffer does not own (see buf_use) */
} synchro_buf_t;

void synchro__buf_init(synchro_buf_t *buf);
/* Starts the buffer on caller-owned storage of size bytes (a small inline
 * array, say); it moves to the heap only if it outgrows it. */
void synchro__buf_use(synchro_buf_t *buf, char *storage, size_t size);
void synchro__buf_free(synchro_buf_t *buf);
/* Makes room for extra more bytes; returns 0 or SYNCHRO_ENOMEM. */
int synchro__buf_reserve(synchro_buf_t *buf, size_t extra);
/* Appends n bytes; returns 0 or SYNCHRO_ENOMEM. */
int synchro__buf_append(synchro_buf_t *buf, const void *p, size_t n);

/* Encoding flags. */
enum {
  /* Plain data only (call arguments and results): a function or a table
   * with a metatable that has no "__synchro" marshaller is an error. */
  SYNCHRO_MARSHAL_DATA = 0,
  /* Wrap time: Lua functions cross as bytecode plus upvalues (recursively,
   * shared upvalues kept joined where the Lua has lua_upvaluejoin), tables
   * that are package.loaded[name] cross by name (so _G crosses as the
   * receiver's globals), C functions by their path in package.loaded. */
  SYNCHRO_MARSHAL_CODE = 1,
  /* Error values: never fails on an unsupported value. A table whose
   * metatable is a class of a loaded module (package.loaded[m] or one of
   * its fields) crosses with it, by name (the receiver gives it its own
   * copy of that class); any other table with a metatable that has
   * __tostring crosses as its tostring() text, and without one as its
   * fields alone; any other unsupported value crosses as its tostring()
   * text. */
  SYNCHRO_MARSHAL_LENIENT = 2,
  /* DATA, except that what DATA refuses (a function, a table or userdata
   * with a metatable) is handed to the function in the registry field
   * SYNCHRO_PROXY_EXPORTER, which returns an extension name and payload
   * for it, as __synchro does (how loop objects cross as proxies). Without
   * an exporter this is DATA. */
  SYNCHRO_MARSHAL_PROXY = 3
};

#define SYNCHRO_PROXY_EXPORTER "synchro.proxy_exporter"

/* Bytes: a userdata that owns a malloc'd buffer and crosses as a string,
 * encoded straight from its buffer. A C module of the loop VM hands a
 * large result to another VM this way without first making it a string
 * of its own VM (one allocation and one copy fewer, and nothing for that
 * VM's collector to trace). In Lua: `#b`, and `b:take()`, which gives
 * the string and frees the buffer. Called on the
 * thread of the VM L (the loop thread for the loop VM). */
#define SYNCHRO_BYTES_MT "synchro.bytes"
typedef struct synchro_bytes {
  char *data; /* malloc'd, owned (freed by the userdata's __gc) */
  size_t len;
} synchro_bytes_t;
/* Pushes a new, empty bytes userdata (raises on memory errors); moving a
 * buffer into it afterwards cannot fail. */
synchro_bytes_t *synchro__bytes_new(lua_State *L);
/* Counts b's buffer (after moving one in) in its VM's budget for bytes;
 * past the budget a full collection runs first (bytes no longer reachable
 * free their buffers). */
void synchro__bytes_account(lua_State *L, synchro_bytes_t *b);

/* Encodes the n values in L's stack slots first .. first+n-1 (first is an
 * absolute index) and appends them to buf, replacing nothing before
 * buf->len. root names the list in error paths: root "args" gives paths
 * like "args[2].conn".
 *
 * Returns 0 on success. On an unsupported value returns SYNCHRO_EMARSHAL,
 * pushes one string message "<path>: cannot send <what>" onto L and, if
 * bad_index is not NULL, stores the 1-based position (within the n values)
 * of the value that failed. When buf cannot grow returns SYNCHRO_ENOMEM,
 * pushes the message "out of memory" the same way and (bad_index not
 * NULL) stores the position of the value being encoded, 0 if none yet.
 * buf's content past its old length is then unspecified. Never raises
 * except on memory errors. Leaves the stack as it found it apart from the
 * error message. Thread: the thread owning L. */
int synchro__marshal_encode(lua_State *L, int first, int n, int flags,
                            const char *root, synchro_buf_t *buf,
                            int *bad_index);

/* Decodes a buffer made by synchro__marshal_encode (possibly in another
 * lua_State of the same Lua version) and pushes its values in order.
 * Returns the number of values pushed (>= 0), or a negative code
 * (SYNCHRO_EBADBUF for a truncated or corrupted buffer, SYNCHRO_EMARSHAL
 * when a module or extension cannot be resolved or the Lua stack cannot
 * grow, SYNCHRO_ENOMEM when loading a function's bytecode runs out of
 * memory) with exactly one error message string pushed instead. Never
 * crashes on bad input; never raises except on memory errors (require and
 * extension decoders run protected). Thread: the thread owning L. */
int synchro__marshal_decode(lua_State *L, const char *data, size_t len);

/* Extensions ("__synchro" marshaller): a table or full userdata whose
 * metatable has a field "__synchro" that is a function crosses as an
 * extension. The encoder calls __synchro(value) (protected); it must return
 * two strings: an extension name and a payload. The decoder looks the name
 * up in the registry table SYNCHRO_EXT_REGISTRY of the receiving state and
 * calls that function with the payload; its first result is the value.
 * An unknown name or an error there is a decode error (SYNCHRO_EMARSHAL).
 * This is how wrapped functions (and later, proxies) cross. */
#define SYNCHRO_EXT_REGISTRY "synchro.ext"
/* Kinds whose name starts with this are synchro's own (wrapped functions,
 * proxies, callbacks, code): their decoders trust the payload, so only
 * synchro's marshallers may produce them, the proxy exporter and the
 * functions that are keys of the registry table SYNCHRO_OWN_MARSHALLERS.
 * Any other __synchro returning one is an encode error naming the value. */
#define SYNCHRO_RESERVED_KIND "synchro."
#define SYNCHRO_OWN_MARSHALLERS "synchro.own_marshallers"

#endif
