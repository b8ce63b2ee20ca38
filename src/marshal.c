/* Marshalling: Lua values <-> one buffer (see marshal.h, DESIGN.md 2).
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
 *   EXT                 string extension name, string payload
 *   PROXY               reserved
 * (a "string" inside a tag is varint length + bytes). TABLE, FUNC, CFUNC,
 * MODULE and EXT take ids 1, 2, ... in the order their tags appear, on both
 * sides, so shared values and cycles come back shared.
 *
 * Error paths: root[i] for value i, then .name for identifier keys, [12],
 * [1.5], ["other key"], [<typename>] for other keys, [key <typename>] when
 * the key itself is what failed (or holds what failed), [upvalue "name"]
 * inside functions. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compat.h"
#include "marshal.h"
#include "synchro.h"

#define MAGIC 0xC5
#define VERSION 1
#define MAX_DEPTH 200

enum {
  TAG_NIL, TAG_FALSE, TAG_TRUE, TAG_INT, TAG_FLOAT, TAG_STRING, TAG_TABLE,
  TAG_REF, TAG_FUNC, TAG_CFUNC, TAG_MODULE, TAG_EXT, TAG_PROXY
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

void synchro__buf_init(synchro_buf_t *buf) {
  buf->data = NULL;
  buf->len = buf->cap = 0;
}

void synchro__buf_free(synchro_buf_t *buf) {
  free(buf->data);
  synchro__buf_init(buf);
}

int synchro__buf_reserve(synchro_buf_t *buf, size_t extra) {
  size_t need, cap;
  char *data;
  if (buf->cap - buf->len >= extra)
    return 0;
  if (extra > SIZE_MAX - buf->len)
    return SYNCHRO_ENOMEM;
  need = buf->len + extra;
  cap = buf->cap < 64 ? 64 : buf->cap;
  while (cap < need)
    cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  data = realloc(buf->data, cap);
  if (data == NULL)
    return SYNCHRO_ENOMEM;
  buf->data = data;
  buf->cap = cap;
  return 0;
}

int synchro__buf_append(synchro_buf_t *buf, const void *p, size_t n) {
  if (synchro__buf_reserve(buf, n))
    return SYNCHRO_ENOMEM;
  if (n > 0)
    memcpy(buf->data + buf->len, p, n);
  buf->len += n;
  return 0;
}

static uint32_t fnv1a(const unsigned char *p, size_t n) {
  uint32_t h = 2166136261u;
  while (n-- > 0)
    h = (h ^ *p++) * 16777619u;
  return h;
}

static const char *error_text(lua_State *L) {
  return lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1)
                                        : "(error object is not a string)";
}

static void push_loaded(lua_State *L) {
  lua_pushliteral(L, "_LOADED");
  lua_rawget(L, LUA_REGISTRYINDEX);
}

/* ---- encoder ---- */

enum { FRAME_TOP, FRAME_ITEM, FRAME_FIELD, FRAME_KEY, FRAME_UPVALUE };

/* How the value one level down was reached; formatted only on error. */
typedef struct frame {
  int kind;
  int idx;          /* stack index of the key: FRAME_FIELD, FRAME_KEY */
  lua_Integer n;    /* position: FRAME_TOP, FRAME_ITEM */
  const char *name; /* FRAME_UPVALUE */
} frame;

typedef struct encoder {
  lua_State *L;
  synchro_buf_t *buf;
  int mode;
  int base;
  int refs;   /* stack slot of the value -> id table, 0 until needed */
  int loaded; /* stack slot of the package.loaded reverse map, or 0 */
  lua_Integer nrefs;
  int err_depth;
  const char *why; /* static reason; NULL: the reason string is at base+1 */
  int dump_oom;
  frame frames[MAX_DEPTH + 1];
} encoder;

static int fail(encoder *e, int depth, const char *why) {
  e->err_depth = depth;
  e->why = why;
  return SYNCHRO_EMARSHAL;
}

/* The reason is the string on top of the stack; base+1 is free to hold it
 * since the ref table is no longer needed once encoding fails. */
static int fail_top(encoder *e, int depth) {
  lua_replace(e->L, e->base + 1);
  e->err_depth = depth;
  e->why = NULL;
  return SYNCHRO_EMARSHAL;
}

static int oom(encoder *e) {
  e->err_depth = 0;
  e->why = "out of memory";
  return SYNCHRO_ENOMEM;
}

static int put_byte(encoder *e, int b) {
  synchro_buf_t *buf = e->buf;
  if (buf->len == buf->cap && synchro__buf_reserve(buf, 1))
    return oom(e);
  buf->data[buf->len++] = (char)b;
  return 0;
}

static void write_varint(synchro_buf_t *buf, uint64_t v) {
  for (; v >= 0x80; v >>= 7)
    buf->data[buf->len++] = (char)(v | 0x80);
  buf->data[buf->len++] = (char)v;
}

static int put_varint(encoder *e, uint64_t v) {
  if (synchro__buf_reserve(e->buf, 10))
    return oom(e);
  write_varint(e->buf, v);
  return 0;
}

/* tag (if >= 0), varint length, bytes: one reservation, one memcpy. */
static int put_bytes(encoder *e, int tag, const char *s, size_t len) {
  synchro_buf_t *buf = e->buf;
  if (len > SIZE_MAX - 11 || synchro__buf_reserve(buf, len + 11))
    return oom(e);
  if (tag >= 0)
    buf->data[buf->len++] = (char)tag;
  write_varint(buf, len);
  if (len > 0)
    memcpy(buf->data + buf->len, s, len);
  buf->len += len;
  return 0;
}

static int put_zeros(encoder *e, size_t n) {
  static const char zeros[8];
  return synchro__buf_append(e->buf, zeros, n) ? oom(e) : 0;
}

static void patch_u32(synchro_buf_t *buf, size_t at, uint32_t v) {
  int i;
  for (i = 0; i < 4; i++)
    buf->data[at + i] = (char)(v >> (8 * i));
}

static int put_ref(encoder *e, lua_Integer id) {
  TRY(put_byte(e, TAG_REF));
  return put_varint(e, (uint64_t)id);
}

/* The id given to the value at idx earlier in this encode, or 0. */
static lua_Integer ref_find(encoder *e, int idx) {
  lua_State *L = e->L;
  lua_Integer id;
  if (!e->refs) {
    lua_newtable(L);
    lua_replace(L, e->base + 1);
    e->refs = e->base + 1;
    return 0;
  }
  lua_pushvalue(L, idx);
  lua_rawget(L, e->refs);
  id = lua_tointeger(L, -1);
  lua_pop(L, 1);
  return id;
}

static void ref_add(encoder *e, int idx) {
  lua_State *L = e->L;
  lua_pushvalue(L, idx);
  lua_pushinteger(L, ++e->nrefs);
  lua_rawset(L, e->refs);
}

static int tostring_cf(lua_State *L) {
  luaL_tolstring(L, 1, NULL);
  return 1;
}

/* LENIENT: the value's tostring() text; a failing __tostring is replaced
 * by the raw "<type>: <address>" form. */
static int encode_tostring(encoder *e, int idx, int depth) {
  lua_State *L = e->L;
  size_t len;
  const char *s;
  int rc;
  if (!lua_checkstack(L, 4))
    return fail(e, depth, "Lua stack exhausted");
  lua_pushcfunction(L, tostring_cf);
  lua_pushvalue(L, idx);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK || lua_type(L, -1) != LUA_TSTRING) {
    lua_pop(L, 1);
    lua_pushfstring(L, "%s: %p", luaL_typename(L, idx),
                    lua_topointer(L, idx));
  }
  s = lua_tolstring(L, -1, &len);
  rc = put_bytes(e, TAG_STRING, s, len);
  lua_pop(L, 1);
  return rc;
}

static int unsupported(encoder *e, int idx, int depth, const char *why) {
  lua_State *L = e->L;
  if (e->mode == SYNCHRO_MARSHAL_LENIENT)
    return encode_tostring(e, idx, depth);
  if (why)
    return fail(e, depth, why);
  lua_pushfstring(L, "cannot send %s",
                  lua_type(L, idx) == LUA_TLIGHTUSERDATA
                      ? "light userdata"
                      : luaL_typename(L, idx));
  return fail_top(e, depth);
}

static int encode_value(encoder *e, int idx, int depth);

static int encode_number(encoder *e, int idx) {
  lua_State *L = e->L;
  lua_Number d = lua_tonumber(L, idx);
  uint64_t u;
#ifdef HAVE_INTEGERS
  if (lua_isinteger(L, idx)) {
    u = (uint64_t)lua_tointeger(L, idx);
#else
  /* Every number is a float here; integral ones travel shorter as INT. */
  if (d >= -0x1p53 && d <= 0x1p53 && d == (lua_Number)(int64_t)d &&
      (d != 0 || !signbit(d))) {
    u = (uint64_t)(int64_t)d;
#endif
    TRY(put_byte(e, TAG_INT));
    return put_varint(e, (u << 1) ^ (0 - (u >> 63)));
  }
  if (synchro__buf_reserve(e->buf, 1 + sizeof d))
    return oom(e);
  e->buf->data[e->buf->len++] = TAG_FLOAT;
  memcpy(e->buf->data + e->buf->len, &d, sizeof d);
  e->buf->len += sizeof d;
  return 0;
}

/* Maps each package.loaded[name] table to name, and each C function found
 * in one (or in the globals) to the module's name; built once per encode,
 * and only when CODE mode meets a table or a C function. */
static void map_functions(lua_State *L, int map, int mod, int name) {
  lua_pushnil(L);
  while (lua_next(L, mod)) {
    if (lua_type(L, -2) == LUA_TSTRING && lua_iscfunction(L, -1)) {
      lua_pushvalue(L, -1);
      if (lua_rawget(L, map) == LUA_TNIL) {
        lua_pushvalue(L, -2);
        lua_pushvalue(L, name);
        lua_rawset(L, map);
      }
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
}

static int build_loaded_map(encoder *e, int depth) {
  lua_State *L = e->L;
  int top = lua_gettop(L), map = e->base + 2;
  if (!lua_checkstack(L, 10))
    return fail(e, depth, "Lua stack exhausted");
  lua_newtable(L);
  lua_replace(L, map);
  e->loaded = map;
  push_loaded(L);
  if (lua_type(L, -1) == LUA_TTABLE) {
    lua_pushnil(L);
    while (lua_next(L, top + 1)) {
      if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TTABLE) {
        lua_pushvalue(L, -1);
        if (lua_rawget(L, map) == LUA_TNIL) {
          lua_pushvalue(L, -2);
          lua_pushvalue(L, -4);
          lua_rawset(L, map);
        }
        lua_pop(L, 1);
        map_functions(L, map, lua_gettop(L), lua_gettop(L) - 1);
      }
      lua_pop(L, 1);
    }
  }
  lua_pushglobaltable(L);
  lua_pushvalue(L, -1);
  if (lua_rawget(L, map) == LUA_TNIL) {
    lua_pushliteral(L, "_G");
    lua_pushvalue(L, -3);
    lua_pushvalue(L, -2);
    lua_rawset(L, map);
    map_functions(L, map, top + 2, lua_gettop(L));
  }
  lua_settop(L, top);
  return 0;
}

/* Pushes package.loaded[name], falling back to the globals for "_G". */
static void push_module_table(lua_State *L, const char *name, size_t len) {
  push_loaded(L);
  if (lua_type(L, -1) == LUA_TTABLE) {
    lua_pushlstring(L, name, len);
    lua_rawget(L, -2);
    lua_remove(L, -2);
  }
  if (!lua_toboolean(L, -1) && len == 2 && memcmp(name, "_G", 2) == 0) {
    lua_pop(L, 1);
    lua_pushglobaltable(L);
  }
}

/* CODE mode: a module table crosses by name. Returns 1 if not a module. */
static int encode_module(encoder *e, int idx, int depth) {
  lua_State *L = e->L;
  const char *name;
  size_t len;
  int rc;
  if (!e->loaded)
    TRY(build_loaded_map(e, depth));
  lua_pushvalue(L, idx);
  if (lua_rawget(L, e->loaded) != LUA_TSTRING) {
    lua_pop(L, 1);
    return 1;
  }
  name = lua_tolstring(L, -1, &len);
  ref_add(e, idx);
  rc = put_bytes(e, TAG_MODULE, name, len);
  lua_pop(L, 1);
  return rc;
}

static int encode_cfunction(encoder *e, int idx, int depth) {
  lua_State *L = e->L;
  lua_Integer id;
  const char *name, *key;
  size_t nlen, klen;
  if ((id = ref_find(e, idx)) != 0)
    return put_ref(e, id);
  if (!e->loaded)
    TRY(build_loaded_map(e, depth));
  lua_pushvalue(L, idx);
  if (lua_rawget(L, e->loaded) != LUA_TSTRING)
    return fail(e, depth, "cannot send C function");
  name = lua_tolstring(L, -1, &nlen);
  push_module_table(L, name, nlen);
  if (lua_type(L, -1) == LUA_TTABLE) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      if (lua_type(L, -2) == LUA_TSTRING && lua_rawequal(L, -1, idx)) {
        key = lua_tolstring(L, -2, &klen);
        ref_add(e, idx);
        TRY(put_bytes(e, TAG_CFUNC, name, nlen));
        TRY(put_bytes(e, -1, key, klen));
        lua_pop(L, 4);
        return 0;
      }
      lua_pop(L, 1);
    }
  }
  return fail(e, depth, "cannot send C function");
}

static int dump_writer(lua_State *L, const void *p, size_t n, void *ud) {
  encoder *e = (encoder *)ud;
  (void)L;
  if (synchro__buf_append(e->buf, p, n)) {
    e->dump_oom = 1;
    return 1;
  }
  return 0;
}

/* A function's globals are the receiver's globals, whatever table (_G, a
 * sandbox, a test runner's environment) they are here. The decoder gives
 * every MODULE an id, so one is used up here, mapped to nothing. */
static int put_globals(encoder *e) {
  ++e->nrefs;
  return put_bytes(e, TAG_MODULE, "_G", 2);
}

static int encode_upvalues(encoder *e, int idx, int depth, int nups) {
  lua_State *L = e->L;
  frame *f = &e->frames[depth];
  int i;
#ifdef SYNCHRO_HAVE_UPVALUEJOIN
  lua_Integer fid = e->nrefs;
#endif
  for (i = 1; i <= nups; i++) {
#ifdef SYNCHRO_HAVE_UPVALUEJOIN
    /* The first closure met owning a variable carries its value; the
     * others are joined to that closure's upvalue. */
    void *uid = lua_upvalueid(L, idx, i);
    lua_pushlightuserdata(L, uid);
    if (lua_rawget(L, e->refs) == LUA_TNUMBER) {
      lua_Integer code = lua_tointeger(L, -1);
      lua_pop(L, 1);
      TRY(put_byte(e, 1));
      TRY(put_varint(e, (uint64_t)(code >> 8)));
      TRY(put_byte(e, (int)(code & 255)));
      continue;
    }
    lua_pop(L, 1);
    lua_pushlightuserdata(L, uid);
    lua_pushinteger(L, fid * 256 + i);
    lua_rawset(L, e->refs);
#endif
    TRY(put_byte(e, 0));
    f->kind = FRAME_UPVALUE;
    f->name = lua_getupvalue(L, idx, i);
    if (f->name == NULL)
      return fail(e, depth, "cannot read upvalues (stripped function?)");
    if (strcmp(f->name, "_ENV") == 0)
      TRY(put_globals(e));
    else
      TRY(encode_value(e, lua_gettop(L), depth + 1));
    lua_pop(L, 1);
  }
#ifdef HAVE_FENV
  TRY(put_globals(e)); /* as _ENV above */
#endif
  return 0;
}

static int encode_function(encoder *e, int idx, int depth) {
  lua_State *L = e->L;
  lua_Debug ar;
  lua_Integer id;
  size_t at, size;
  int rc;
  if (e->mode != SYNCHRO_MARSHAL_CODE)
    return unsupported(e, idx, depth, "cannot send function");
  if (!lua_checkstack(L, 8))
    return fail(e, depth, "Lua stack exhausted");
  if (lua_iscfunction(L, idx))
    return encode_cfunction(e, idx, depth);
  if ((id = ref_find(e, idx)) != 0)
    return put_ref(e, id);
  if (depth > MAX_DEPTH)
    return fail(e, depth, "nesting too deep");
  ref_add(e, idx);
  TRY(put_byte(e, TAG_FUNC));
  at = e->buf->len;
  TRY(put_zeros(e, 8)); /* u32 size and hash, patched below */
  lua_pushvalue(L, idx);
  e->dump_oom = 0;
  rc = synchro__dump(L, dump_writer, e);
  lua_pop(L, 1);
  if (e->dump_oom)
    return oom(e);
  size = e->buf->len - at - 8;
  if (rc != 0 || size > UINT32_MAX)
    return fail(e, depth, "cannot dump function");
  patch_u32(e->buf, at, (uint32_t)size);
  patch_u32(e->buf, at + 4,
            fnv1a((const unsigned char *)e->buf->data + at + 8, size));
  lua_pushvalue(L, idx);
  lua_getinfo(L, ">u", &ar);
  TRY(put_byte(e, ar.nups));
  return encode_upvalues(e, idx, depth, ar.nups);
}

/* The __synchro function is on top of the stack. Returns 0, an error, or
 * 1 to fall back to the plain rules (LENIENT only). */
static int encode_ext(encoder *e, int idx, int depth) {
  lua_State *L = e->L;
  const char *s;
  size_t len;
  lua_pushvalue(L, idx);
  if (lua_pcall(L, 1, 2, 0) != LUA_OK) {
    if (e->mode == SYNCHRO_MARSHAL_LENIENT) {
      lua_pop(L, 1);
      return 1;
    }
    lua_pushfstring(L, "__synchro failed: %s", error_text(L));
    return fail_top(e, depth);
  }
  if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING) {
    lua_pop(L, 2);
    if (e->mode == SYNCHRO_MARSHAL_LENIENT)
      return 1;
    return fail(e, depth, "__synchro must return two strings");
  }
  ref_add(e, idx);
  s = lua_tolstring(L, -2, &len);
  TRY(put_bytes(e, TAG_EXT, s, len));
  s = lua_tolstring(L, -1, &len);
  TRY(put_bytes(e, -1, s, len));
  lua_pop(L, 2);
  return 0;
}

/* Pushes the metatable's __synchro and returns 1 if it is a function. */
static int get_marshaller(lua_State *L, int idx) {
  if (!lua_getmetatable(L, idx))
    return 0;
  lua_pushliteral(L, "__synchro");
  if (lua_rawget(L, -2) == LUA_TFUNCTION) {
    lua_remove(L, -2);
    return 1;
  }
  lua_pop(L, 2);
  return 0;
}

static int is_array_key(lua_State *L, int idx, size_t narr) {
  if (lua_type(L, idx) != LUA_TNUMBER)
    return 0;
#ifdef HAVE_INTEGERS
  if (lua_isinteger(L, idx)) {
    lua_Integer k = lua_tointeger(L, idx);
    return k >= 1 && (uint64_t)k <= narr;
  }
  return 0;
#else
  {
    lua_Number k = lua_tonumber(L, idx);
    return k >= 1 && k <= (lua_Number)narr && (lua_Number)(size_t)k == k;
  }
#endif
}

static int encode_fields(encoder *e, int idx, int depth) {
  lua_State *L = e->L;
  frame *f = &e->frames[depth];
  size_t narr = lua_rawlen(L, idx), i, at;
  uint32_t nhash = 0;
  ref_add(e, idx);
  TRY(put_byte(e, TAG_TABLE));
  TRY(put_varint(e, narr));
  at = e->buf->len;
  TRY(put_zeros(e, 4)); /* u32 nhash, patched below */
  f->kind = FRAME_ITEM;
  for (i = 1; i <= narr; i++) {
    f->n = (lua_Integer)i;
    lua_rawgeti(L, idx, (lua_Integer)i);
    TRY(encode_value(e, lua_gettop(L), depth + 1));
    lua_pop(L, 1);
  }
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int top = lua_gettop(L);
    if (is_array_key(L, top - 1, narr)) {
      lua_pop(L, 1);
      continue;
    }
    f->kind = FRAME_KEY;
    f->idx = top - 1;
    TRY(encode_value(e, top - 1, depth + 1));
    f->kind = FRAME_FIELD;
    TRY(encode_value(e, top, depth + 1));
    lua_pop(L, 1);
    if (++nhash == UINT32_MAX)
      return fail(e, depth, "table too large");
  }
  patch_u32(e->buf, at, nhash);
  return 0;
}

static int encode_table(encoder *e, int idx, int depth) {
  lua_State *L = e->L;
  lua_Integer id;
  int rc;
  if (!lua_checkstack(L, 8))
    return fail(e, depth, "Lua stack exhausted");
  if ((id = ref_find(e, idx)) != 0)
    return put_ref(e, id);
  if (e->mode == SYNCHRO_MARSHAL_CODE && (rc = encode_module(e, idx, depth))
      != 1)
    return rc;
  if (get_marshaller(L, idx)) {
    if ((rc = encode_ext(e, idx, depth)) != 1)
      return rc;
  } else if (e->mode != SYNCHRO_MARSHAL_LENIENT && lua_getmetatable(L, idx)) {
    return fail(e, depth, "cannot send table with a metatable");
  }
  if (depth > MAX_DEPTH)
    return unsupported(e, idx, depth, "nesting too deep");
  return encode_fields(e, idx, depth);
}

static int encode_userdata(encoder *e, int idx, int depth) {
  lua_Integer id;
  int rc;
  if (!lua_checkstack(e->L, 8))
    return fail(e, depth, "Lua stack exhausted");
  if ((id = ref_find(e, idx)) != 0)
    return put_ref(e, id);
  if (get_marshaller(e->L, idx) && (rc = encode_ext(e, idx, depth)) != 1)
    return rc;
  return unsupported(e, idx, depth, "cannot send userdata");
}

static int encode_value(encoder *e, int idx, int depth) {
  lua_State *L = e->L;
  size_t len;
  const char *s;
  switch (lua_type(L, idx)) {
  case LUA_TNIL:
    return put_byte(e, TAG_NIL);
  case LUA_TBOOLEAN:
    return put_byte(e, lua_toboolean(L, idx) ? TAG_TRUE : TAG_FALSE);
  case LUA_TNUMBER:
    return encode_number(e, idx);
  case LUA_TSTRING:
    s = lua_tolstring(L, idx, &len);
    return put_bytes(e, TAG_STRING, s, len);
  case LUA_TTABLE:
    return encode_table(e, idx, depth);
  case LUA_TFUNCTION:
    return encode_function(e, idx, depth);
  case LUA_TUSERDATA:
    return encode_userdata(e, idx, depth);
  default:
    return unsupported(e, idx, depth, NULL);
  }
}

static int is_identifier(const char *s, size_t len) {
  static const char *const reserved[] = {
      "and",  "break", "do",     "else", "elseif", "end",   "false",
      "for",  "function", "goto", "if",  "in",     "local", "nil",
      "not",  "or",    "repeat", "return", "then", "true",  "until",
      "while", NULL};
  size_t i;
  if (len == 0 || (s[0] >= '0' && s[0] <= '9'))
    return 0;
  for (i = 0; i < len; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '_'))
      return 0;
  }
  for (i = 0; reserved[i]; i++)
    if (strlen(reserved[i]) == len && memcmp(reserved[i], s, len) == 0)
      return 0;
  return 1;
}

static int append_str(synchro_buf_t *b, const char *s) {
  return synchro__buf_append(b, s, strlen(s));
}

static int append_quoted(synchro_buf_t *b, const char *s, size_t len) {
  char esc[8];
  size_t i;
  TRY(append_str(b, "[\""));
  for (i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      esc[0] = '\\';
      esc[1] = (char)c;
      TRY(synchro__buf_append(b, esc, 2));
    } else if (c < 0x20 || c == 0x7f) {
      snprintf(esc, sizeof esc, "\\%d", c);
      TRY(append_str(b, esc));
    } else {
      TRY(synchro__buf_append(b, &s[i], 1));
    }
  }
  return append_str(b, "\"]");
}

static int append_frame(lua_State *L, synchro_buf_t *b, const frame *f) {
  char tmp[64];
  const char *s;
  size_t len;
  switch (f->kind) {
  case FRAME_TOP:
  case FRAME_ITEM:
    snprintf(tmp, sizeof tmp, "[%lld]", (long long)f->n);
    return append_str(b, tmp);
  case FRAME_UPVALUE:
    TRY(append_str(b, "[upvalue \""));
    TRY(append_str(b, f->name));
    return append_str(b, "\"]");
  case FRAME_KEY:
    snprintf(tmp, sizeof tmp, "[key %s]", luaL_typename(L, f->idx));
    return append_str(b, tmp);
  }
  switch (lua_type(L, f->idx)) { /* FRAME_FIELD; never convert keys */
  case LUA_TSTRING:
    s = lua_tolstring(L, f->idx, &len);
    if (!is_identifier(s, len))
      return append_quoted(b, s, len);
    TRY(append_str(b, "."));
    return synchro__buf_append(b, s, len);
  case LUA_TNUMBER:
#ifdef HAVE_INTEGERS
    if (lua_isinteger(L, f->idx)) {
      snprintf(tmp, sizeof tmp, "[%lld]", (long long)lua_tointeger(L, f->idx));
      return append_str(b, tmp);
    }
#endif
    snprintf(tmp, sizeof tmp, "[%.14g]", (double)lua_tonumber(L, f->idx));
    return append_str(b, tmp);
  default:
    snprintf(tmp, sizeof tmp, "[%s]", luaL_typename(L, f->idx));
    return append_str(b, tmp);
  }
}

/* Leaves exactly "<path>: <why>" at base+1 and drops everything above. */
static void push_error(encoder *e, const char *root) {
  lua_State *L = e->L;
  synchro_buf_t b;
  const char *why = e->why ? e->why : lua_tostring(L, e->base + 1);
  int i, rc = 0;
  synchro__buf_init(&b);
  if (e->err_depth > 0) {
    rc = append_str(&b, root ? root : "");
    for (i = 0; i < e->err_depth && !rc; i++)
      rc = append_frame(L, &b, &e->frames[i]);
    if (!rc)
      rc = append_str(&b, ": ");
  }
  if (!rc)
    rc = append_str(&b, why);
  if (rc)
    lua_pushstring(L, why);
  else
    lua_pushlstring(L, b.data, b.len);
  synchro__buf_free(&b);
  lua_replace(L, e->base + 1);
  lua_settop(L, e->base + 1);
}

int synchro__marshal_encode(lua_State *L, int first, int n, int flags,
                            const char *root, synchro_buf_t *buf,
                            int *bad_index) {
  encoder e;
  int i, rc;
  if (n > 0)
    first = lua_absindex(L, first);
  e.L = L;
  e.buf = buf;
  e.mode = flags;
  e.base = lua_gettop(L);
  e.refs = e.loaded = 0;
  e.nrefs = 0;
  e.frames[0].kind = FRAME_TOP;
  e.frames[0].n = 0;
  luaL_checkstack(L, 4, "marshal");
  lua_pushnil(L); /* base+1: ref table, base+2: package.loaded map */
  lua_pushnil(L);
  rc = put_byte(&e, MAGIC);
  if (!rc)
    rc = put_byte(&e, VERSION);
  if (!rc)
    rc = put_varint(&e, (uint64_t)(n > 0 ? n : 0));
  for (i = 0; i < n && !rc; i++) {
    e.frames[0].n = i + 1;
    rc = encode_value(&e, first + i, 1);
  }
  if (rc) {
    push_error(&e, root);
    if (bad_index)
      *bad_index = (int)e.frames[0].n;
    return rc;
  }
  lua_settop(L, e.base);
  return 0;
}

/* ---- decoder ---- */

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
  push_module_table(L, name, nlen);
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

/* EXT: registry[SYNCHRO_EXT_REGISTRY][name](payload), run protected. */
static int decode_ext(decoder *d) {
  lua_State *L = d->L;
  const char *name, *payload;
  size_t nlen, plen;
  TRY(get_string(d, &name, &nlen));
  TRY(get_string(d, &payload, &plen));
  if (!lua_checkstack(L, 8))
    return no_stack(d);
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
  lua_pushlstring(L, payload, plen);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    lua_pushfstring(L, "extension '%s' failed: %s", lua_tostring(L, -2),
                    error_text(L));
    return dfail(d, SYNCHRO_EMARSHAL, NULL);
  }
  lua_remove(L, -2);
  ref_new(d, lua_gettop(L));
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
    return 0;
  case TAG_FUNC:
    return decode_function(d, depth);
  case TAG_CFUNC:
    return decode_named(d, 1);
  case TAG_MODULE:
    return decode_named(d, 0);
  case TAG_EXT:
    return decode_ext(d);
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
