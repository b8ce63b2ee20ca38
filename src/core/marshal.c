/* Marshalling: Lua values <-> one buffer (see marshal.h, DESIGN.md 2).
 * This file is the encoder; unmarshal.c is the decoder, and the buffer
 * format is described at the top of marshal_format.h.
 *
 * Error paths: root[i] for value i, then .name for identifier keys, [12],
 * [1.5], ["other key"], [<typename>] for other keys, [key <typename>] when
 * the key itself is what failed (or holds what failed), [upvalue "name"]
 * inside functions. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compat.h"
#include "marshal.h"
#include "marshal_format.h"
#include "synchro.h"

void synchro__buf_init(synchro_buf_t *buf) {
  buf->data = NULL;
  buf->len = buf->cap = 0;
  buf->borrowed = 0;
}

void synchro__buf_use(synchro_buf_t *buf, char *storage, size_t size) {
  buf->data = storage;
  buf->len = 0;
  buf->cap = size;
  buf->borrowed = 1;
}

void synchro__buf_free(synchro_buf_t *buf) {
  if (!buf->borrowed)
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
  if (need / 2 > cap) {
    /* one large piece (a big string): room for it, sized once */
    cap = need;
  } else {
    while (cap < need)
      cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  }
  if (buf->borrowed) {
    data = malloc(cap);
    if (data != NULL && buf->len > 0)
      memcpy(data, buf->data, buf->len);
  } else {
    data = realloc(buf->data, cap);
  }
  if (data == NULL)
    return SYNCHRO_ENOMEM;
  buf->data = data;
  buf->borrowed = 0;
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
  int classes; /* stack slot of the class map (LENIENT), or 0 */
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

/* Pushes the value's tostring() text; a failing __tostring is replaced by
 * the raw "<type>: <address>" form. Needs 3 free stack slots. */
static void push_tostring(lua_State *L, int idx) {
  lua_pushcfunction(L, tostring_cf);
  lua_pushvalue(L, idx);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK || lua_type(L, -1) != LUA_TSTRING) {
    lua_pop(L, 1);
    lua_pushfstring(L, "%s: %p", luaL_typename(L, idx),
                    lua_topointer(L, idx));
  }
}

/* LENIENT: the value's tostring() text. */
static int encode_tostring(encoder *e, int idx, int depth) {
  lua_State *L = e->L;
  size_t len;
  const char *s;
  int rc;
  if (!lua_checkstack(L, 4))
    return fail(e, depth, "Lua stack exhausted");
  push_tostring(L, idx);
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
static int encode_fields(encoder *e, int idx, int depth);
static int get_exporter(encoder *e);
static int encode_ext(encoder *e, int idx, int depth);

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
void synchro__push_module_table(lua_State *L, const char *name, size_t len) {
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
  synchro__push_module_table(L, name, nlen);
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
  if (e->mode != SYNCHRO_MARSHAL_CODE) {
    if ((id = ref_find(e, idx)) != 0)
      return put_ref(e, id);
    if (get_exporter(e))
      return encode_ext(e, idx, depth);
    return unsupported(e, idx, depth, "cannot send function");
  }
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

/* Whether the marshaller on top of the stack is synchro's own: the proxy
 * exporter, or one of SYNCHRO_OWN_MARSHALLERS. */
static int is_own_marshaller(lua_State *L) {
  int own;
  lua_getfield(L, LUA_REGISTRYINDEX, SYNCHRO_PROXY_EXPORTER);
  own = lua_rawequal(L, -1, -2);
  lua_pop(L, 1);
  if (own)
    return 1;
  lua_getfield(L, LUA_REGISTRYINDEX, SYNCHRO_OWN_MARSHALLERS);
  if (lua_type(L, -1) == LUA_TTABLE) {
    lua_pushvalue(L, -2);
    lua_rawget(L, -2);
    own = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return own;
}

/* The __synchro function is on top of the stack. Returns 0, an error, or
 * 1 to fall back to the plain rules (LENIENT only). */
static int encode_ext(encoder *e, int idx, int depth) {
  lua_State *L = e->L;
  const char *s;
  size_t len;
  int own = is_own_marshaller(L);
  lua_pushvalue(L, idx);
  if (lua_pcall(L, 1, 2, 0) != LUA_OK) {
    if (e->mode == SYNCHRO_MARSHAL_LENIENT) {
      lua_pop(L, 1);
      return 1;
    }
    lua_pushfstring(L, "__synchro failed: %s", error_text(L));
    return fail_top(e, depth);
  }
  if (lua_isnil(L, -2)) { /* an exporter that leaves this value alone */
    lua_pop(L, 2);
    return unsupported(e, idx, depth, NULL);
  }
  if (lua_type(L, -2) != LUA_TSTRING ||
      (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TTABLE)) {
    lua_pop(L, 2);
    if (e->mode == SYNCHRO_MARSHAL_LENIENT)
      return 1;
    return fail(e, depth, "__synchro must return a kind (a string) and a "
                          "payload (a string or a table)");
  }
  if (!own && strncmp(lua_tostring(L, -2), SYNCHRO_RESERVED_KIND,
                      sizeof(SYNCHRO_RESERVED_KIND) - 1) == 0) {
    if (e->mode == SYNCHRO_MARSHAL_LENIENT) {
      lua_pop(L, 2);
      return 1;
    }
    lua_pushfstring(L, "__synchro returned '%s', a kind reserved to "
                    "synchro (" SYNCHRO_RESERVED_KIND "*)",
                    lua_tostring(L, -2));
    lua_replace(L, -3);
    lua_pop(L, 1);
    return fail_top(e, depth);
  }
  ref_add(e, idx);
  s = lua_tolstring(L, -2, &len);
  TRY(put_bytes(e, TAG_EXT, s, len));
  /* the payload is a value: a table payload's strings are copied once,
   * into the buffer, not first joined into one string */
  TRY(encode_value(e, lua_gettop(L), depth + 1));
  lua_pop(L, 2);
  return 0;
}

/* In PROXY mode, pushes the proxy exporter and returns 1 if there is one. */
static int get_exporter(encoder *e) {
  if (e->mode != SYNCHRO_MARSHAL_PROXY)
    return 0;
  lua_getfield(e->L, LUA_REGISTRYINDEX, SYNCHRO_PROXY_EXPORTER);
  if (lua_type(e->L, -1) == LUA_TFUNCTION)
    return 1;
  lua_pop(e->L, 1);
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

/* Whether the key at idx is the integer n. */
static int key_is(lua_State *L, int idx, size_t n) {
#ifdef HAVE_INTEGERS
  return lua_isinteger(L, idx) && lua_tointeger(L, idx) == (lua_Integer)n;
#else
  return lua_type(L, idx) == LUA_TNUMBER &&
         lua_tonumber(L, idx) == (lua_Number)n;
#endif
}

/* Items from..narr of the table at idx, by index. */
static int encode_items(encoder *e, int idx, int depth, size_t from,
                        size_t narr) {
  lua_State *L = e->L;
  frame *f = &e->frames[depth];
  size_t i;
  f->kind = FRAME_ITEM;
  for (i = from; i <= narr; i++) {
    f->n = (lua_Integer)i;
    lua_rawgeti(L, idx, (lua_Integer)i);
    TRY(encode_value(e, lua_gettop(L), depth + 1));
    lua_pop(L, 1);
  }
  return 0;
}

/* The format: items 1..narr (narr = the border rawlen gives), then the
 * other pairs. The table is walked once with lua_next: its array part
 * comes first, in order, and its items are encoded as they come; when a
 * key comes out of that order (a hole, or items kept in the hash part),
 * the missing items are taken by index and the walk goes on skipping the
 * keys that were items. */
static int encode_fields(encoder *e, int idx, int depth) {
  lua_State *L = e->L;
  frame *f = &e->frames[depth];
  size_t narr = lua_rawlen(L, idx), next = 1, at;
  uint32_t nhash = 0;
  int in_order = 1; /* every key so far was the next item */
  ref_add(e, idx);
  TRY(put_byte(e, TAG_TABLE));
  TRY(put_varint(e, narr));
  at = e->buf->len;
  TRY(put_zeros(e, 4)); /* u32 nhash, patched below */
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int top = lua_gettop(L);
    if (in_order) {
      if (next <= narr && key_is(L, top - 1, next)) {
        f->kind = FRAME_ITEM;
        f->n = (lua_Integer)next++;
        TRY(encode_value(e, top, depth + 1));
        lua_pop(L, 1);
        continue;
      }
      in_order = 0;
      if (next <= narr) {
        /* items still missing: by index, before any pair */
        TRY(encode_items(e, idx, depth, next, narr));
        next = 0; /* from here on, keys 1..narr are items already sent */
      }
    }
    if (next == 0 && is_array_key(L, top - 1, narr)) {
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
  if (in_order && next <= narr)
    TRY(encode_items(e, idx, depth, next, narr));
  patch_u32(e->buf, at, nhash);
  return 0;
}

#define MAX_CLASS_NAMES 8

/* Adds (name, key) to map[value], the value on top; pops it. */
static void add_class_name(lua_State *L, int map, int name, int key) {
  size_t n;
  lua_pushvalue(L, -1);
  if (lua_rawget(L, map) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -2);
    lua_pushvalue(L, -2);
    lua_rawset(L, map);
  }
  n = lua_rawlen(L, -1);
  if (n < 2 * MAX_CLASS_NAMES) {
    lua_pushvalue(L, name);
    lua_rawseti(L, -2, (lua_Integer)n + 1);
    lua_pushvalue(L, key);
    lua_rawseti(L, -2, (lua_Integer)n + 2);
  }
  lua_pop(L, 2);
}

/* LENIENT: maps every table that is package.loaded[m] to { m, "" } and
 * every table in a string field k of one to { m, k } (all such names, up
 * to MAX_CLASS_NAMES: the receiver takes the first it has). Built once per
 * encode, only when an error table with a metatable is met; leaves
 * e->classes 0 if it cannot. */
static void build_class_map(encoder *e) {
  lua_State *L = e->L;
  int top = lua_gettop(L), map = e->base + 3, pass;
  if (!lua_checkstack(L, 12))
    return;
  lua_newtable(L);
  lua_replace(L, map);
  e->classes = map;
  push_loaded(L); /* top + 1 */
  lua_pushliteral(L, ""); /* top + 2 */
  if (lua_type(L, top + 1) != LUA_TTABLE) {
    lua_settop(L, top);
    return;
  }
  /* the modules themselves first, so that they are their first names */
  for (pass = 0; pass < 2; pass++) {
    lua_pushnil(L);
    while (lua_next(L, top + 1)) {
      int name = lua_gettop(L) - 1, mod = lua_gettop(L);
      if (lua_type(L, name) == LUA_TSTRING && lua_type(L, mod) == LUA_TTABLE) {
        if (pass == 0) {
          lua_pushvalue(L, mod);
          add_class_name(L, map, name, top + 2);
        } else {
          lua_pushnil(L);
          while (lua_next(L, mod)) {
            if (lua_type(L, -2) == LUA_TSTRING &&
                lua_type(L, -1) == LUA_TTABLE)
              add_class_name(L, map, name, lua_gettop(L) - 1);
            else
              lua_pop(L, 1);
          }
        }
      }
      lua_settop(L, name);
    }
  }
  lua_settop(L, top);
}

/* LENIENT, the table at idx has a metatable, on top of the stack (popped
 * here). A class of a loaded module crosses by its names (CLASS, then the
 * table); otherwise, with __tostring, the table crosses as its text.
 * Returns 1 to encode the fields alone (the metatable dropped). */
static int encode_class(encoder *e, int idx, int depth) {
  lua_State *L = e->L;
  int mt = lua_gettop(L), names, has_text, i, n;
  size_t len;
  const char *s;
  if (!lua_checkstack(L, 8) || depth > MAX_DEPTH) {
    lua_pop(L, 1);
    return 1;
  }
  lua_pushliteral(L, "__tostring");
  has_text = lua_rawget(L, mt) != LUA_TNIL;
  lua_pop(L, 1);
  if (!e->classes)
    build_class_map(e);
  if (e->classes) {
    lua_pushvalue(L, mt);
    lua_rawget(L, e->classes);
  } else {
    lua_pushnil(L);
  }
  names = lua_gettop(L);
  if (lua_type(L, names) != LUA_TTABLE) {
    lua_settop(L, mt - 1);
    return has_text ? encode_tostring(e, idx, depth) : 1;
  }
  n = (int)lua_rawlen(L, names) / 2;
  TRY(put_byte(e, TAG_CLASS));
  TRY(put_varint(e, (uint64_t)n));
  for (i = 1; i <= 2 * n; i++) {
    lua_rawgeti(L, names, i);
    s = lua_tolstring(L, -1, &len);
    TRY(put_bytes(e, -1, s, len));
    lua_pop(L, 1);
  }
  TRY(put_byte(e, has_text));
  if (has_text) {
    push_tostring(L, idx);
    s = lua_tolstring(L, -1, &len);
    TRY(put_bytes(e, -1, s, len));
  }
  lua_settop(L, mt - 1);
  return encode_fields(e, idx, depth);
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
  } else if (lua_getmetatable(L, idx)) {
    if (e->mode == SYNCHRO_MARSHAL_LENIENT) {
      if ((rc = encode_class(e, idx, depth)) != 1)
        return rc;
    } else {
      lua_pop(L, 1);
      if (get_exporter(e))
        return encode_ext(e, idx, depth);
      return fail(e, depth, "cannot send table with a metatable");
    }
  }
  if (depth > MAX_DEPTH)
    return unsupported(e, idx, depth, "nesting too deep");
  return encode_fields(e, idx, depth);
}

/* ---- bytes (marshal.h) ---- */

/* What a VM's bytes hold, outside its collector's count. Past the limit
 * a full collection frees the buffers of unreachable bytes; the limit is
 * then twice what is still held (at least BYTES_MIN_LIMIT), as Lua's own
 * pause waits for the heap to double. Counting them in the collector's
 * debt instead (lua_gc STEP) made Lua 5.4's generational collector take
 * every large body for heap growth and run a major collection per
 * request. */
#define BYTES_BUDGET "synchro.bytes_budget"
#define BYTES_MIN_LIMIT ((size_t)32 << 20)
typedef struct {
  size_t held, limit;
} bytes_budget_t;

typedef struct {
  synchro_bytes_t b; /* first: what synchro__bytes_new returns */
  bytes_budget_t *budget;
  size_t counted; /* what this one added to budget->held */
} bytes_box_t;

static void bytes_release(bytes_box_t *x) {
  free(x->b.data);
  x->b.data = NULL;
  x->b.len = 0;
  x->budget->held -= x->counted;
  x->counted = 0;
}

static int bytes_gc(lua_State *L) {
  bytes_release(luaL_checkudata(L, 1, SYNCHRO_BYTES_MT));
  return 0;
}

static int bytes_len(lua_State *L) {
  synchro_bytes_t *b = luaL_checkudata(L, 1, SYNCHRO_BYTES_MT);
  lua_pushinteger(L, (lua_Integer)b->len);
  return 1;
}

/* b:take() -> the bytes as a string; the buffer is freed (b is empty). */
static int bytes_take(lua_State *L) {
  bytes_box_t *x = luaL_checkudata(L, 1, SYNCHRO_BYTES_MT);
  lua_pushlstring(L, x->b.data != NULL ? x->b.data : "", x->b.len);
  bytes_release(x);
  return 1;
}

static bytes_budget_t *bytes_budget(lua_State *L) {
  bytes_budget_t *budget;
  lua_getfield(L, LUA_REGISTRYINDEX, BYTES_BUDGET);
  budget = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (budget == NULL) {
    budget = lua_newuserdata(L, sizeof(*budget));
    budget->held = 0;
    budget->limit = BYTES_MIN_LIMIT;
    lua_setfield(L, LUA_REGISTRYINDEX, BYTES_BUDGET);
  }
  return budget;
}

synchro_bytes_t *synchro__bytes_new(lua_State *L) {
  bytes_budget_t *budget = bytes_budget(L);
  bytes_box_t *x = lua_newuserdata(L, sizeof(*x));
  x->b.data = NULL;
  x->b.len = 0;
  x->budget = budget;
  x->counted = 0;
  if (luaL_newmetatable(L, SYNCHRO_BYTES_MT)) {
    static const luaL_Reg methods[] = {{"take", bytes_take}, {NULL, NULL}};
    lua_pushcfunction(L, bytes_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, bytes_len);
    lua_setfield(L, -2, "__len");
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
  }
  lua_setmetatable(L, -2);
  return &x->b;
}

void synchro__bytes_account(lua_State *L, synchro_bytes_t *b) {
  bytes_box_t *x = (bytes_box_t *)(void *)b;
  bytes_budget_t *budget = x->budget;
  budget->held += b->len - x->counted;
  x->counted = b->len;
  if (budget->held > budget->limit) {
    lua_gc(L, LUA_GCCOLLECT, 0);
    budget->limit = budget->held * 2 > BYTES_MIN_LIMIT ? budget->held * 2
                                                       : BYTES_MIN_LIMIT;
  }
}

static int encode_userdata(encoder *e, int idx, int depth) {
  lua_Integer id;
  int rc;
  synchro_bytes_t *b;
  if (!lua_checkstack(e->L, 8))
    return fail(e, depth, "Lua stack exhausted");
  if ((b = luaL_testudata(e->L, idx, SYNCHRO_BYTES_MT)) != NULL)
    return put_bytes(e, TAG_STRING, b->data != NULL ? b->data : "", b->len);
  if ((id = ref_find(e, idx)) != 0)
    return put_ref(e, id);
  if (get_marshaller(e->L, idx) && (rc = encode_ext(e, idx, depth)) != 1)
    return rc;
  if (get_exporter(e))
    return encode_ext(e, idx, depth);
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
  e.refs = e.loaded = e.classes = 0;
  e.nrefs = 0;
  e.frames[0].kind = FRAME_TOP;
  e.frames[0].n = 0;
  luaL_checkstack(L, 5, "marshal");
  /* base+1: ref table, base+2: package.loaded map, base+3: class map */
  lua_pushnil(L);
  lua_pushnil(L);
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
