/* Unmarshalling: one buffer -> Lua values (see marshal.h, DESIGN.md 2).
 * This file is the decoder; marshal.c is the encoder, and the buffer format
 * is described at the top of marshal_format.h. */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "compat.h"
#include "marshal.h"
#include "marshal_format.h"
#include "synchro.h"

typedef struct decoder {
  lua_State *L;
  const unsigned char *start, *p, *end;
  int base;
  int refs; /* stack slot of the id -> value table, 0 until needed */
  lua_Integer nrefs;
  int code;
  const char *why; /* static reason; NULL: the message is at base+1 */
  size_t at;
} decoder;

/* A NULL why means the message is on top of the stack; base+1 can take it
 * since the ref table is not needed once decoding fails. */
static int dfail(decoder *d, int code, const char *why) {
  if (why == NULL)
    lua_replace(d->L, d->base + 1);
  d->code = code;
  d->why = why;
  d->at = (size_t)(d->p - d->start);
  return code;
}

static int corrupt(decoder *d, const char *why) {
  return dfail(d, SYNCHRO_EBADBUF, why);
}

static int no_stack(decoder *d) {
  return dfail(d, SYNCHRO_EMARSHAL, "Lua stack exhausted");
}

static int get_byte(decoder *d, int *b) {
  if (d->p == d->end)
    return corrupt(d, "truncated");
  *b = *d->p++;
  return 0;
}

static int get_varint(decoder *d, uint64_t *v) {
  uint64_t r = 0;
  int shift = 0, b;
  do {
    TRY(get_byte(d, &b));
    if (shift == 63 && b > 1)
      return corrupt(d, "varint overflow");
    r |= (uint64_t)(b & 0x7f) << shift;
    shift += 7;
  } while ((b & 0x80) && shift <= 63);
  if (b & 0x80)
    return corrupt(d, "varint overflow");
  *v = r;
  return 0;
}

/* A count of items taking at least unit bytes each. */
static int get_count(decoder *d, size_t unit, size_t *n) {
  uint64_t v;
  TRY(get_varint(d, &v));
  if (v > (uint64_t)(d->end - d->p) / unit || v > INT_MAX)
    return corrupt(d, "count larger than the buffer");
  *n = (size_t)v;
  return 0;
}

static int get_u32(decoder *d, uint32_t *v) {
  const unsigned char *p = d->p;
  if (d->end - p < 4)
    return corrupt(d, "truncated");
  *v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
       (uint32_t)p[3] << 24;
  d->p += 4;
  return 0;
}

static int get_string(decoder *d, const char **s, size_t *len) {
  TRY(get_count(d, 1, len));
  *s = (const char *)d->p;
  d->p += *len;
  return 0;
}

static void ref_new(decoder *d, int idx) {
  lua_State *L = d->L;
  if (!d->refs) {
    lua_newtable(L);
    lua_replace(L, d->base + 1);
    d->refs = d->base + 1;
  }
  lua_pushvalue(L, idx);
  lua_rawseti(L, d->refs, ++d->nrefs);
}

static int decode_value(decoder *d, int depth);

static int decode_table(decoder *d, int depth) {
  lua_State *L = d->L;
  size_t narr, i;
  uint32_t nhash;
  int t;
  if (depth > MAX_DEPTH)
    return corrupt(d, "nesting too deep");
  if (!lua_checkstack(L, 8))
    return no_stack(d);
  TRY(get_count(d, 1, &narr));
  TRY(get_u32(d, &nhash));
  if (nhash > (size_t)(d->end - d->p) / 2 || narr + nhash > INT_MAX)
    return corrupt(d, "count larger than the buffer");
  lua_createtable(L, (int)narr, (int)nhash);
  t = lua_gettop(L);
  ref_new(d, t);
  for (i = 1; i <= narr; i++) {
    TRY(decode_value(d, depth + 1));
    lua_rawseti(L, t, (lua_Integer)i);
  }
  for (; nhash > 0; nhash--) {
    TRY(decode_value(d, depth + 1));
    if (lua_isnil(L, -1))
      return corrupt(d, "nil table key");
    if (lua_type(L, -1) == LUA_TNUMBER &&
        lua_tonumber(L, -1) != lua_tonumber(L, -1))
      return corrupt(d, "NaN table key");
    TRY(decode_value(d, depth + 1));
    lua_rawset(L, t);
  }
  return 0;
}

#ifdef SYNCHRO_HAVE_UPVALUEJOIN
/* Whether the Lua function at absolute index idx has upvalue n, by both
 * the closure and its prototype, which forged bytecode can make differ. */
static int has_upvalue(lua_State *L, int idx, int n) {
  lua_Debug ar;
  lua_pushvalue(L, idx);
  lua_getinfo(L, ">u", &ar);
  if (n < 1 || n > ar.nups || lua_getupvalue(L, idx, n) == NULL)
    return 0;
  lua_pop(L, 1);
  return 1;
}

static int join_upvalue(decoder *d, int fidx, int i) {
  lua_State *L = d->L;
  uint64_t fid;
  int n;
  TRY(get_varint(d, &fid));
  TRY(get_byte(d, &n));
  if (fid == 0 || fid > (uint64_t)d->nrefs)
    return corrupt(d, "bad reference");
  lua_rawgeti(L, d->refs, (lua_Integer)fid);
  if (lua_type(L, -1) != LUA_TFUNCTION || lua_iscfunction(L, -1) ||
      !has_upvalue(L, lua_gettop(L), n) || !has_upvalue(L, fidx, i))
    return corrupt(d, "bad upvalue join");
  lua_upvaluejoin(L, fidx, i, -1, n);
  lua_pop(L, 1);
  return 0;
}
#endif

/* Lua does not verify bytecode, so only what the encoder wrote is loaded
 * (checksum). A fuzzer forges a checksum at once: fuzz builds load the
 * blob as source text instead, which Lua does check. */
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
#define BYTECODE_MODE "t"
#else
#define BYTECODE_MODE "b"
#endif

static int decode_function(decoder *d, int depth) {
  lua_State *L = d->L;
  lua_Debug ar;
  uint32_t size, hash;
  int fidx, nups, i, kind, status;
  if (depth > MAX_DEPTH)
    return corrupt(d, "nesting too deep");
  if (!lua_checkstack(L, 8))
    return no_stack(d);
  TRY(get_u32(d, &size));
  TRY(get_u32(d, &hash));
  if (size > (size_t)(d->end - d->p))
    return corrupt(d, "count larger than the buffer");
  if (fnv1a(d->p, size) != hash)
    return corrupt(d, "bytecode checksum mismatch");
  status = luaL_loadbufferx(L, (const char *)d->p, size, "=marshal",
                            BYTECODE_MODE);
  if (status == LUA_ERRMEM)
    return dfail(d, SYNCHRO_ENOMEM, "out of memory");
  if (status != LUA_OK)
    return corrupt(d, "bad bytecode");
  d->p += size;
  fidx = lua_gettop(L);
  ref_new(d, fidx);
  TRY(get_byte(d, &nups));
  lua_pushvalue(L, fidx);
  lua_getinfo(L, ">u", &ar);
  if (nups != ar.nups)
    return corrupt(d, "upvalue count mismatch");
  for (i = 1; i <= nups; i++) {
    TRY(get_byte(d, &kind));
    if (kind == 0) {
      TRY(decode_value(d, depth + 1));
      if (lua_setupvalue(L, fidx, i) == NULL)
        return corrupt(d, "bad upvalue");
#ifdef SYNCHRO_HAVE_UPVALUEJOIN
    } else if (kind == 1) {
      TRY(join_upvalue(d, fidx, i));
#endif
    } else {
      return corrupt(d, "bad upvalue kind");
    }
  }
#ifdef HAVE_FENV
  TRY(decode_value(d, depth + 1));
  if (!lua_istable(L, -1))
    return corrupt(d, "bad function environment");
  lua_setfenv(L, fidx);
#endif
  return 0;
}

/* MODULE: the receiver's package.loaded[name], else require(name) run
 * protected. CFUNC (with_key): that module's field key. */
static int decode_named(decoder *d, int with_key) {
  lua_State *L = d->L;
  const char *name, *key = NULL;
  size_t nlen, klen = 0;
  TRY(get_string(d, &name, &nlen));
  if (with_key)
    TRY(get_string(d, &key, &klen));
  if (!lua_checkstack(L, 8))
    return no_stack(d);
  lua_pushlstring(L, name, nlen); /* a terminated copy for messages */
  synchro__push_module_table(L, name, nlen);
  if (!lua_toboolean(L, -1)) {
    lua_pop(L, 1);
    lua_pushglobaltable(L);
    lua_pushliteral(L, "require");
    lua_rawget(L, -2);
    lua_remove(L, -2);
    lua_pushvalue(L, -2);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
      lua_pushfstring(L, "cannot load module '%s': %s", lua_tostring(L, -2),
                      error_text(L));
      return dfail(d, SYNCHRO_EMARSHAL, NULL);
    }
  }
  if (with_key) {
    if (lua_type(L, -1) == LUA_TTABLE) {
      lua_pushlstring(L, key, klen);
      lua_rawget(L, -2);
    } else {
      lua_pushnil(L);
    }
    if (lua_type(L, -1) != LUA_TFUNCTION) {
      lua_pushlstring(L, key, klen);
      lua_pushfstring(L, "cannot find C function '%s.%s'",
                      lua_tostring(L, -4), lua_tostring(L, -1));
      return dfail(d, SYNCHRO_EMARSHAL, NULL);
    }
    lua_replace(L, -2);
  }
  lua_replace(L, -2);
  ref_new(d, lua_gettop(L));
  return 0;
}

/* What an extension's reference holds while its payload is decoded: a
 * reference to it from inside its own payload is refused. */
static char ext_pending;

/* EXT: registry[SYNCHRO_EXT_REGISTRY][name](payload), run protected. The
 * extension takes its reference id before its payload's values do, as
 * on the encoder's side. */
static int decode_ext(decoder *d, int depth) {
  lua_State *L = d->L;
  const char *name;
  size_t nlen;
  int id;
  TRY(get_string(d, &name, &nlen));
  if (!lua_checkstack(L, 8))
    return no_stack(d);
  lua_pushlightuserdata(L, &ext_pending);
  ref_new(d, lua_gettop(L));
  lua_pop(L, 1);
  id = d->nrefs;
  lua_pushlstring(L, name, nlen);
  lua_pushliteral(L, SYNCHRO_EXT_REGISTRY);
  if (lua_rawget(L, LUA_REGISTRYINDEX) == LUA_TTABLE) {
    lua_pushvalue(L, -2);
    lua_rawget(L, -2);
    lua_remove(L, -2);
  }
  if (lua_type(L, -1) != LUA_TFUNCTION) {
    lua_pushfstring(L, "unknown extension '%s'", lua_tostring(L, -2));
    return dfail(d, SYNCHRO_EMARSHAL, NULL);
  }
  TRY(decode_value(d, depth + 1));
  if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TTABLE)
    return corrupt(d, "bad extension payload");
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    lua_pushfstring(L, "extension '%s' failed: %s", lua_tostring(L, -2),
                    error_text(L));
    return dfail(d, SYNCHRO_EMARSHAL, NULL);
  }
  lua_remove(L, -2);
  lua_pushvalue(L, -1);
  lua_rawseti(L, d->refs, id);
  return 0;
}

/* CLASS: the first of the sender's names for the class that this state
 * has (package.loaded only: nothing is required for an error) becomes the
 * table's metatable; without one, the sender's text replaces the table. */
static int decode_class(decoder *d, int depth) {
  lua_State *L = d->L;
  const char *name, *key, *text = NULL;
  size_t n, nlen, klen, tlen = 0;
  int has_text, tag, mt;
  if (!lua_checkstack(L, 8))
    return no_stack(d);
  TRY(get_count(d, 2, &n));
  lua_pushnil(L);
  mt = lua_gettop(L);
  for (; n > 0; n--) {
    TRY(get_string(d, &name, &nlen));
    TRY(get_string(d, &key, &klen));
    if (!lua_isnil(L, mt))
      continue;
    synchro__push_module_table(L, name, nlen);
    if (klen > 0 && lua_type(L, -1) == LUA_TTABLE) {
      lua_pushlstring(L, key, klen);
      lua_rawget(L, -2);
      lua_remove(L, -2);
    }
    if (lua_type(L, -1) == LUA_TTABLE)
      lua_replace(L, mt);
    else
      lua_pop(L, 1);
  }
  TRY(get_byte(d, &has_text));
  if (has_text > 1)
    return corrupt(d, "bad class text flag");
  if (has_text)
    TRY(get_string(d, &text, &tlen));
  TRY(get_byte(d, &tag));
  if (tag != TAG_TABLE) {
    d->p--;
    return corrupt(d, "class without a table");
  }
  TRY(decode_table(d, depth));
  if (!lua_isnil(L, mt)) {
    lua_pushvalue(L, mt);
    lua_setmetatable(L, -2);
  } else if (has_text) {
    lua_pop(L, 1);
    lua_pushlstring(L, text, tlen);
  }
  lua_remove(L, mt);
  return 0;
}

static int decode_value(decoder *d, int depth) {
  lua_State *L = d->L;
  const char *s;
  size_t len;
  uint64_t u;
  lua_Number n;
  int tag;
  TRY(get_byte(d, &tag));
  switch (tag) {
  case TAG_NIL:
    lua_pushnil(L);
    return 0;
  case TAG_FALSE:
  case TAG_TRUE:
    lua_pushboolean(L, tag == TAG_TRUE);
    return 0;
  case TAG_INT:
    TRY(get_varint(d, &u));
    u = (u >> 1) ^ (0 - (u & 1));
#ifdef HAVE_INTEGERS
    lua_pushinteger(L, (lua_Integer)u);
#else
    lua_pushnumber(L, (lua_Number)(int64_t)u);
#endif
    return 0;
  case TAG_FLOAT:
    if ((size_t)(d->end - d->p) < sizeof n)
      return corrupt(d, "truncated");
    memcpy(&n, d->p, sizeof n);
    d->p += sizeof n;
    lua_pushnumber(L, n);
    return 0;
  case TAG_STRING:
    TRY(get_string(d, &s, &len));
    lua_pushlstring(L, s, len);
    return 0;
  case TAG_TABLE:
    return decode_table(d, depth);
  case TAG_REF:
    TRY(get_varint(d, &u));
    if (u == 0 || u > (uint64_t)d->nrefs)
      return corrupt(d, "bad reference");
    lua_rawgeti(L, d->refs, (lua_Integer)u);
    if (lua_touserdata(L, -1) == (void *)&ext_pending)
      return dfail(d, SYNCHRO_EMARSHAL, "an extension's payload refers to it");
    return 0;
  case TAG_FUNC:
    return decode_function(d, depth);
  case TAG_CFUNC:
    return decode_named(d, 1);
  case TAG_MODULE:
    return decode_named(d, 0);
  case TAG_EXT:
    return decode_ext(d, depth);
  case TAG_CLASS:
    return decode_class(d, depth);
  default:
    d->p--;
    return corrupt(d, "unknown tag");
  }
}

int synchro__marshal_decode(lua_State *L, const char *data, size_t len) {
  decoder d;
  char msg[128];
  size_t count = 0, i;
  int rc = 0;
  d.L = L;
  d.start = d.p = d.end = (const unsigned char *)data;
  d.base = lua_gettop(L);
  d.refs = 0;
  d.nrefs = 0;
  luaL_checkstack(L, 4, "marshal");
  lua_pushnil(L); /* base+1: the ref table */
  if (data == NULL || len < 2 || d.p[0] != MAGIC) {
    rc = corrupt(&d, "bad magic byte");
  } else if (d.p[1] != VERSION) {
    rc = corrupt(&d, "unsupported format version");
  } else {
    d.end = d.p + len;
    d.p += 2;
    rc = get_count(&d, 1, &count);
    if (!rc && (count > INT_MAX - 16 || !lua_checkstack(L, (int)count + 8)))
      rc = no_stack(&d);
  }
  for (i = 0; i < count && !rc; i++)
    rc = decode_value(&d, 1);
  if (!rc && d.p != d.end)
    rc = corrupt(&d, "trailing bytes");
  if (rc == 0) {
    lua_remove(L, d.base + 1);
    return (int)count;
  }
  if (d.why) {
    if (d.code == SYNCHRO_EBADBUF)
      snprintf(msg, sizeof msg, "corrupt buffer: %s at offset %zu", d.why,
               d.at);
    else
      snprintf(msg, sizeof msg, "%s", d.why);
    lua_pushstring(L, msg);
    lua_replace(L, d.base + 1);
  }
  lua_settop(L, d.base + 1);
  return rc;
}
