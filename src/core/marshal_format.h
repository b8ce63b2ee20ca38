/* Marshalling, private to marshal.c (encoder) and unmarshal.c (decoder):
 * what both sides of the buffer format share.
 *
 * Format. Header: MAGIC, VERSION, varint count, then count values. A varint
 * is unsigned LEB128; u32 is 4 bytes little-endian. A value is a tag byte:
 *   NIL, FALSE, TRUE    nothing follows
 *   INT                 zigzag varint: a 5.3+ integer, or elsewhere an
 *                       integral float (not -0.0)
 *   FLOAT               the lua_Number's bytes (bit-exact: NaN, -0.0)
 *   STRING              varint length, bytes
 *   TABLE               varint narr, u32 nhash, narr values (keys 1..narr),
 *                       nhash key/value pairs
 *   REF                 varint id of an earlier TABLE/FUNC/CFUNC/MODULE/EXT
 *   FUNC                u32 size, u32 FNV-1a of the bytecode, the bytecode,
 *                       byte nups, per upvalue either 0 + value or 1 +
 *                       varint fid + byte n (joined with upvalue n of the
 *                       function with id fid); on 5.1/LuaJIT the
 *                       environment follows. An _ENV upvalue and the
 *                       environment are always MODULE "_G".
 *   CFUNC               string module, string key: package.loaded[m][k]
 *   MODULE              string name: package.loaded[name]
 *   EXT                 string extension name, then the payload: a value
 *                       (STRING or TABLE; a REF to the EXT itself from
 *                       inside it is refused)
 *   PROXY               reserved
 *   CLASS               string module, string key, byte has_text (+ string
 *                       text), then a TABLE: an error table whose
 *                       metatable is package.loaded[module][key] (key ""
 *                       for the module table itself); the receiver gives
 *                       the table its own package.loaded[module][key], or,
 *                       when it has none, replaces the table by text (the
 *                       sender's tostring() of it) if there is one
 * (a "string" inside a tag is varint length + bytes). TABLE, FUNC, CFUNC,
 * MODULE and EXT take ids 1, 2, ... in the order their tags appear, on both
 * sides, so shared values and cycles come back shared. */
#ifndef SYNCHRO_MARSHAL_FORMAT_H
#define SYNCHRO_MARSHAL_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include "compat.h"

#define MAGIC 0xC5
#define VERSION 2 /* 2: an EXT payload is a value */
#define MAX_DEPTH 200

enum {
  TAG_NIL, TAG_FALSE, TAG_TRUE, TAG_INT, TAG_FLOAT, TAG_STRING, TAG_TABLE,
  TAG_REF, TAG_FUNC, TAG_CFUNC, TAG_MODULE, TAG_EXT, TAG_PROXY, TAG_CLASS
};

#if LUA_VERSION_NUM >= 503 && !defined(LUAJIT_VERSION)
#define HAVE_INTEGERS 1
#endif
#if LUA_VERSION_NUM == 501
#define HAVE_FENV 1
#endif

#define TRY(x)                                                               \
  do {                                                                       \
    int rc_ = (x);                                                           \
    if (rc_)                                                                 \
      return rc_;                                                            \
  } while (0)

static inline uint32_t fnv1a(const unsigned char *p, size_t n) {
  uint32_t h = 2166136261u;
  while (n-- > 0)
    h = (h ^ *p++) * 16777619u;
  return h;
}

static inline const char *error_text(lua_State *L) {
  return lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1)
                                        : "(error object is not a string)";
}

/* Pushes package.loaded[name], falling back to the globals for "_G". */
void synchro__push_module_table(lua_State *L, const char *name, size_t len);

#endif
