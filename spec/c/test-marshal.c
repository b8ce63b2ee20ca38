/* Marshalling: values cross from one lua_State to a second one, as they do
 * between a caller and the loop VM. */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <uv.h>

#include "compat.h"
#include "marshal.h"
#include "synchro.h"
#include "test.h"

#if LUA_VERSION_NUM >= 503 && !defined(LUAJIT_VERSION)
#define HAVE_INTEGERS 1
#endif

#define CHECK_STR(a, b)                                                      \
  do {                                                                       \
    const char *a_ = (a), *b_ = (b);                                         \
    if (a_ == NULL || strcmp(a_, b_) != 0) {                                 \
      fprintf(stderr, "%s:%d: %s == %s failed:\n  \"%s\"\n  \"%s\"\n",      \
              __FILE__, __LINE__, #a, #b, a_ ? a_ : "(null)", b_);           \
      abort();                                                               \
    }                                                                        \
  } while (0)

#define CHECK_PREFIX(a, b)                                                   \
  do {                                                                       \
    const char *a_ = (a), *b_ = (b);                                         \
    if (a_ == NULL || strncmp(a_, b_, strlen(b_)) != 0) {                    \
      fprintf(stderr, "%s:%d: %s starts with %s failed:\n  \"%s\"\n",        \
              __FILE__, __LINE__, #a, #b, a_ ? a_ : "(null)");               \
      abort();                                                               \
    }                                                                        \
  } while (0)

static lua_State *new_state(const char *marker) {
  lua_State *L = luaL_newstate();
  CHECK(L != NULL);
  luaL_openlibs(L);
  lua_pushstring(L, marker);
  lua_setglobal(L, "marker");
  /* require must never find stray modules on disk during the tests. */
  CHECK(luaL_dostring(L, "package.path = '/nonexistent/?.lua' "
                         "package.cpath = '/nonexistent/?.so'") == 0);
  return L;
}

/* Runs code with the nargs values on top of the stack as its arguments
 * (...), leaving nres results; a Lua error aborts the test. */
static void run(lua_State *L, const char *code, int nargs, int nres) {
  if (luaL_loadstring(L, code) != 0) {
    fprintf(stderr, "syntax: %s\n", lua_tostring(L, -1));
    abort();
  }
  lua_insert(L, -(nargs + 1));
  if (lua_pcall(L, nargs, nres, 0) != 0) {
    fprintf(stderr, "lua error: %s\n", lua_tostring(L, -1));
    abort();
  }
}

static void encode_ok(lua_State *L, int n, int flags, synchro_buf_t *buf) {
  int top = lua_gettop(L), bad = -1;
  int rc = synchro__marshal_encode(L, top - n + 1, n, flags, "args", buf,
                                   &bad);
  if (rc != 0) {
    fprintf(stderr, "encode: %s\n", lua_tostring(L, -1));
    abort();
  }
  CHECK_EQ_INT(lua_gettop(L), top);
  CHECK_EQ_INT(bad, -1);
}

static int decode_ok(lua_State *L, const char *data, size_t len) {
  int top = lua_gettop(L);
  int n = synchro__marshal_decode(L, data, len);
  if (n < 0) {
    fprintf(stderr, "decode: %s\n", lua_tostring(L, -1));
    abort();
  }
  CHECK_EQ_INT(lua_gettop(L), top + n);
  return n;
}

/* Moves the n values on top of from to the top of to, as real use does. */
static int transfer(lua_State *from, lua_State *to, int n, int flags) {
  synchro_buf_t buf;
  int got;
  synchro__buf_init(&buf);
  encode_ok(from, n, flags, &buf);
  lua_pop(from, n);
  got = decode_ok(to, buf.data, buf.len);
  CHECK_EQ_INT(got, n);
  synchro__buf_free(&buf);
  synchro__buf_free(&buf); /* safe twice */
  return got;
}

static void expect_encode_error(lua_State *L, int n, int flags,
                                const char *msg, int bad_index) {
  synchro_buf_t buf;
  int top = lua_gettop(L), bad = -1;
  int rc;
  synchro__buf_init(&buf);
  rc = synchro__marshal_encode(L, top - n + 1, n, flags, "args", &buf, &bad);
  CHECK_EQ_INT(rc, SYNCHRO_EMARSHAL);
  CHECK_EQ_INT(lua_gettop(L), top + 1);
  CHECK_STR(lua_tostring(L, -1), msg);
  CHECK_EQ_INT(bad, bad_index);
  lua_settop(L, top - n);
  synchro__buf_free(&buf);
}

static void expect_decode_error(lua_State *L, const char *data, size_t len,
                                int code, const char *prefix) {
  int top = lua_gettop(L);
  CHECK_EQ_INT(synchro__marshal_decode(L, data, len), code);
  CHECK_EQ_INT(lua_gettop(L), top + 1);
  CHECK_PREFIX(lua_tostring(L, -1), prefix);
  lua_pop(L, 1);
}

static uint64_t bits_of(double d) {
  uint64_t u;
  memcpy(&u, &d, sizeof u);
  return u;
}

static double double_of(uint64_t u) {
  double d;
  memcpy(&d, &u, sizeof d);
  return d;
}

static void test_scalars(void) {
  lua_State *L1 = new_state("L1"), *L2 = new_state("L2");
  static const char zs[] = "a\0b\0\0c";
  const uint64_t nan_bits = 0x7ff8000000000123ull;
  size_t len;
  const char *s;
  lua_pushnil(L1);
  lua_pushboolean(L1, 1);
  lua_pushboolean(L1, 0);
  lua_pushinteger(L1, 42);
  lua_pushnumber(L1, 3.5);
  lua_pushnumber(L1, -0.0);
  lua_pushnumber(L1, HUGE_VAL);
  lua_pushnumber(L1, -HUGE_VAL);
  lua_pushnumber(L1, double_of(nan_bits));
  lua_pushlstring(L1, zs, sizeof zs - 1);
  lua_pushliteral(L1, "");
  lua_pushnumber(L1, 2.0); /* a float, not an integer, on 5.3+ */
  run(L1, "return math.mininteger or -1, math.maxinteger or 1", 0, 2);
  CHECK_EQ_INT(transfer(L1, L2, 14, SYNCHRO_MARSHAL_DATA), 14);
  CHECK_EQ_INT(lua_gettop(L1), 0);
  CHECK(lua_isnil(L2, 1));
  CHECK(lua_type(L2, 2) == LUA_TBOOLEAN && lua_toboolean(L2, 2));
  CHECK(lua_type(L2, 3) == LUA_TBOOLEAN && !lua_toboolean(L2, 3));
  CHECK(lua_tonumber(L2, 4) == 42);
  CHECK(lua_tonumber(L2, 5) == 3.5);
  CHECK(bits_of(lua_tonumber(L2, 6)) == bits_of(-0.0));
  CHECK(lua_tonumber(L2, 7) == HUGE_VAL);
  CHECK(lua_tonumber(L2, 8) == -HUGE_VAL);
  CHECK(isnan(lua_tonumber(L2, 9)));
  lua_getglobal(L2, "jit"); /* LuaJIT canonicalises NaNs itself */
  CHECK(!lua_isnil(L2, -1) || bits_of(lua_tonumber(L2, 9)) == nan_bits);
  lua_pop(L2, 1);
  s = lua_tolstring(L2, 10, &len);
  CHECK(len == sizeof zs - 1 && memcmp(s, zs, len) == 0);
  CHECK(lua_type(L2, 11) == LUA_TSTRING && lua_rawlen(L2, 11) == 0);
#ifdef HAVE_INTEGERS
  CHECK(lua_isinteger(L2, 4));
  CHECK(!lua_isinteger(L2, 5) && !lua_isinteger(L2, 12));
  CHECK(lua_isinteger(L2, 13) && lua_tointeger(L2, 13) == LUA_MININTEGER);
  CHECK(lua_isinteger(L2, 14) && lua_tointeger(L2, 14) == LUA_MAXINTEGER);
#endif
  CHECK(lua_tonumber(L2, 12) == 2.0);
  /* 0 values, and values in the middle of the stack. */
  lua_settop(L2, 0);
  CHECK_EQ_INT(transfer(L1, L2, 0, SYNCHRO_MARSHAL_DATA), 0);
  CHECK_EQ_INT(lua_gettop(L2), 0);
  {
    synchro_buf_t buf;
    synchro__buf_init(&buf);
    CHECK(synchro__buf_append(&buf, "xyz", 3) == 0);
    run(L1, "return 'below', 'a', 'b', 'above'", 0, 4);
    CHECK(synchro__marshal_encode(L1, 2, 2, 0, "args", &buf, NULL) == 0);
    CHECK_EQ_INT(lua_gettop(L1), 4);
    CHECK(memcmp(buf.data, "xyz", 3) == 0);
    CHECK_EQ_INT(decode_ok(L2, buf.data + 3, buf.len - 3), 2);
    CHECK_STR(lua_tostring(L2, 1), "a");
    CHECK_STR(lua_tostring(L2, 2), "b");
    synchro__buf_free(&buf);
  }
  lua_close(L1);
  lua_close(L2);
}

static void test_big_string(void) {
  lua_State *L1 = new_state("L1"), *L2 = new_state("L2");
  size_t n = (size_t)1 << 20, len, i;
  char *big = malloc(n);
  const char *s;
  synchro_buf_t buf;
  uint64_t t0, t1;
  int rounds = 64;
  CHECK(big != NULL);
  for (i = 0; i < n; i++)
    big[i] = (char)(i * 7 + (i >> 9));
  lua_pushlstring(L1, big, n);
  CHECK_EQ_INT(transfer(L1, L2, 1, 0), 1);
  s = lua_tolstring(L2, 1, &len);
  CHECK(len == n && memcmp(s, big, n) == 0);
  lua_settop(L2, 0);
  /* Throughput, reported only: encode + decode of 1 MiB. */
  synchro__buf_init(&buf);
  lua_pushlstring(L1, big, n);
  t0 = uv_hrtime();
  for (i = 0; i < (size_t)rounds; i++) {
    buf.len = 0;
    encode_ok(L1, 1, 0, &buf);
    decode_ok(L2, buf.data, buf.len);
    lua_settop(L2, 0);
  }
  t1 = uv_hrtime();
  fprintf(stderr, "    1 MiB string: %.2f GB/s round trip\n",
          (double)n * rounds / (double)(t1 - t0));
  synchro__buf_free(&buf);
  free(big);
  lua_close(L1);
  lua_close(L2);
}

static void test_tables(void) {
  lua_State *L1 = new_state("L1"), *L2 = new_state("L2");
  run(L1,
      "local shared = {1, 2, 3}\n"
      "local t = {10, 20, nil, 40, x = 'y', [1.5] = 'f', [true] = 'b',\n"
      "  nested = {deep = {deeper = {'z'}}}, a = shared, b = shared}\n"
      "t.self = t\n"
      "t[shared] = 'table key'\n"
      "local ring = {}; ring.next = {next = {next = ring}}\n"
      "return t, shared, ring, {}, {[0] = 0, [-1] = -1}",
      0, 5);
  transfer(L1, L2, 5, SYNCHRO_MARSHAL_DATA);
  run(L2,
      "local t, shared, ring, empty, odd = ...\n"
      "assert(t[1] == 10 and t[2] == 20 and t[3] == nil and t[4] == 40)\n"
      "assert(t.x == 'y' and t[1.5] == 'f' and t[true] == 'b')\n"
      "assert(t.nested.deep.deeper[1] == 'z')\n"
      "assert(t.a == shared and t.b == shared and #shared == 3)\n"
      "assert(t.self == t and t[shared] == 'table key')\n"
      "assert(ring.next.next.next == ring)\n"
      "assert(next(empty) == nil)\n"
      "assert(odd[0] == 0 and odd[-1] == -1)\n"
      "local n = 0 for _ in pairs(t) do n = n + 1 end\n"
      "assert(n == 11, n)\n",
      5, 0);
  CHECK_EQ_INT(lua_gettop(L1), 0);
  CHECK_EQ_INT(lua_gettop(L2), 0);
  lua_close(L1);
  lua_close(L2);
}

static void test_big_tables(void) {
  lua_State *L1 = new_state("L1"), *L2 = new_state("L2");
  synchro_buf_t buf;
  uint64_t t0, t1;
  int i, rounds = 50;
  run(L1,
      "local a, h = {}, {}\n"
      "for i = 1, 10000 do a[i] = i * 2; h['k' .. i] = i end\n"
      "return a, h",
      0, 2);
  lua_pushvalue(L1, 1);
  lua_pushvalue(L1, 2);
  transfer(L1, L2, 2, 0);
  run(L2,
      "local a, h = ...\n"
      "assert(#a == 10000)\n"
      "for i = 1, 10000 do assert(a[i] == i * 2 and h['k' .. i] == i) end\n"
      "local n = 0 for _ in pairs(h) do n = n + 1 end\n"
      "assert(n == 10000)\n",
      2, 0);
  synchro__buf_init(&buf);
  for (i = 1; i <= 2; i++) {
    uint64_t enc = 0, dec = 0;
    int r;
    lua_pushvalue(L1, i);
    for (r = 0; r < rounds; r++) {
      buf.len = 0;
      t0 = uv_hrtime();
      encode_ok(L1, 1, 0, &buf);
      t1 = uv_hrtime();
      decode_ok(L2, buf.data, buf.len);
      enc += t1 - t0;
      dec += uv_hrtime() - t1;
      lua_settop(L2, 0);
    }
    lua_pop(L1, 1);
    fprintf(stderr,
            "    10k-entry %s table: encode %.3f ms, decode %.3f ms "
            "(%zu bytes)\n",
            i == 1 ? "array" : "hash", (double)enc / rounds / 1e6,
            (double)dec / rounds / 1e6, buf.len);
  }
  synchro__buf_free(&buf);
  lua_close(L1);
  lua_close(L2);
}

static void test_functions(void) {
  lua_State *L1 = new_state("L1"), *L2 = new_state("L2");
  run(L1,
      "local counter = 0\n"
      "local function fact(n) if n <= 1 then return 1 end\n"
      "  return n * fact(n - 1) end\n"
      "local function inc() counter = counter + 1 return counter end\n"
      "local function get() return counter end\n"
      "local cfg = {base = 10}\n"
      "local function f(x) return fact(x) + cfg.base + inc() end\n"
      "local x\n"
      "x = {get = function() return x end}\n"
      "local function outer() return x end\n"
      "local function env() return marker, string.rep('a', 3),\n"
      "  tostring(print), _G end\n"
      "local sandbox = setmetatable({marker = 'box'}, {__index = _G})\n"
      "local boxed\n"
      "if setfenv then boxed = setfenv(loadstring('return marker'), sandbox)\n"
      "else boxed = load('return marker', '=boxed', 't', sandbox) end\n"
      "assert(boxed() == 'box')\n"
      "local tail = {}\n"
      "return f, inc, get, outer, env, fact, boxed, tail, tail",
      0, 9);
  transfer(L1, L2, 9, SYNCHRO_MARSHAL_CODE);
#ifdef SYNCHRO_HAVE_UPVALUEJOIN
  lua_pushboolean(L2, 1);
#else
  lua_pushboolean(L2, 0);
#endif
  run(L2,
      "local f, inc, get, outer, env, fact, boxed, t1, t2, joined = ...\n"
      "assert(type(t1) == 'table' and t1 == t2)\n"
      "assert(boxed() == 'L2') -- a sandbox's globals become the receiver's\n"
      "assert(fact(6) == 720)\n"
      "assert(f(5) == 131, f(5))\n"
      "if joined then\n"
      "  assert(inc() == 3 and get() == 3)\n"
      "else\n"
      "  assert(inc() == 3 and get() == 0)\n"
      "end\n"
      "assert(outer().get() == outer())\n"
      "local m, s, p, g = env()\n"
      "assert(m == 'L2' and s == 'aaa' and p == tostring(print))\n"
      "assert(g == _G)\n"
      "marker = 'changed'\n"
      "assert(env() == 'changed')\n",
      10, 0);
  CHECK_EQ_INT(lua_gettop(L2), 0);
  lua_close(L1);
  lua_close(L2);
}

static int not_reachable(lua_State *L) {
  (void)L;
  return 0;
}

static void test_modules(void) {
  lua_State *L1 = new_state("L1"), *L2 = new_state("L2");
  run(L2, "package.preload.mymod = function() return {who = 'L2'} end", 0,
      0);
  run(L1,
      "package.loaded.mymod = {who = 'L1'}\n"
      "return string, string.format, _G, print, io.write, mymod or\n"
      "  package.loaded.mymod, string",
      0, 7);
  transfer(L1, L2, 7, SYNCHRO_MARSHAL_CODE);
  run(L2,
      "local str, fmt, g, p, w, mymod, str2 = ...\n"
      "assert(str == string and fmt == string.format and g == _G)\n"
      "assert(p == print and w == io.write and str2 == str)\n"
      "assert(mymod.who == 'L2' and package.loaded.mymod == mymod)\n",
      7, 0);
  /* In DATA mode a module is a plain table. */
  run(L1, "return package.loaded.mymod", 0, 1);
  transfer(L1, L2, 1, SYNCHRO_MARSHAL_DATA);
  run(L2, "local m = ... assert(m.who == 'L1' and m ~= mymod)", 1, 0);
  /* Errors: a module the receiver cannot load, an unreachable C function. */
  {
    synchro_buf_t buf;
    synchro__buf_init(&buf);
    run(L1, "package.loaded.onlyhere = {} return package.loaded.onlyhere", 0,
        1);
    encode_ok(L1, 1, SYNCHRO_MARSHAL_CODE, &buf);
    expect_decode_error(L2, buf.data, buf.len, SYNCHRO_EMARSHAL,
                        "cannot load module 'onlyhere': ");
    lua_pushcfunction(L1, not_reachable);
    expect_encode_error(L1, 1, SYNCHRO_MARSHAL_CODE,
                        "args[1]: cannot send C function", 1);
    synchro__buf_free(&buf);
  }
  lua_settop(L1, 0);
  CHECK_EQ_INT(lua_gettop(L2), 0);
  lua_close(L1);
  lua_close(L2);
}

static void test_errors(void) {
  lua_State *L = new_state("L1");
  run(L, "return 1, {conn = io.stdout}", 0, 2);
  expect_encode_error(L, 2, 0, "args[2].conn: cannot send userdata", 2);
  run(L, "return {a = {1, 2, {b = coroutine.create(function() end)}}}", 0, 1);
  expect_encode_error(L, 1, 0, "args[1].a[3].b: cannot send thread", 1);
  run(L, "return 1, 2, 3, print", 0, 4);
  expect_encode_error(L, 4, 0, "args[4]: cannot send function", 4);
  run(L, "return {obj = setmetatable({}, {})}", 0, 1);
  expect_encode_error(L, 1, SYNCHRO_MARSHAL_CODE,
                      "args[1].obj: cannot send table with a metatable", 1);
  lua_pushlightuserdata(L, &L);
  expect_encode_error(L, 1, 0, "args[1]: cannot send light userdata", 1);
  run(L, "return {['some key'] = {['a\"b\\\\'] = print}}", 0, 1);
  expect_encode_error(L, 1, 0,
                      "args[1][\"some key\"][\"a\\\"b\\\\\"]: "
                      "cannot send function",
                      1);
  run(L, "return {[1.5] = {['end'] = {[true] = {[{}] = print}}}}", 0, 1);
  expect_encode_error(L, 1, 0,
                      "args[1][1.5][\"end\"][boolean][table]: "
                      "cannot send function",
                      1);
  run(L, "return {[print] = 1}", 0, 1);
  expect_encode_error(L, 1, 0, "args[1][key function]: cannot send function",
                      1);
  run(L, "return {[{x = io.stdout}] = 1}", 0, 1);
  expect_encode_error(L, 1, 0, "args[1][key table].x: cannot send userdata",
                      1);
  run(L,
      "local conn = io.stdout\n"
      "return function() return conn end",
      0, 1);
  expect_encode_error(L, 1, SYNCHRO_MARSHAL_CODE,
                      "args[1][upvalue \"conn\"]: cannot send userdata", 1);
  run(L, "return print", 0, 1); /* root NULL: the path is just the index */
  {
    synchro_buf_t buf;
    synchro__buf_init(&buf);
    CHECK_EQ_INT(synchro__marshal_encode(L, 1, 1, 0, NULL, &buf, NULL),
                 SYNCHRO_EMARSHAL);
    CHECK_STR(lua_tostring(L, -1), "[1]: cannot send function");
    synchro__buf_free(&buf);
  }
  lua_settop(L, 0);
  lua_close(L);
}

static void test_lenient(void) {
  lua_State *L1 = new_state("L1"), *L2 = new_state("L2");
  run(L1,
      "local named = setmetatable({}, {__tostring = function() "
      "return 'named' end})\n"
      "local broken = setmetatable({}, {__tostring = function() "
      "error('no') end})\n"
      "keep = setmetatable({a = 1}, {__index = error})\n"
      "return {ud = io.stdout, f = print, obj = keep, [print] = 'key',\n"
      "  co = coroutine.create(function() end)},\n"
      "  named, broken",
      0, 3);
  /* Userdata with a __tostring, and one whose __tostring fails. */
  lua_newuserdata(L1, 1);
  run(L1, "local u = ... debug.setmetatable(u, {__tostring = function() "
          "return 'MyUD' end}) return u", 1, 1);
  lua_newuserdata(L1, 1);
  run(L1, "local u = ... debug.setmetatable(u, {__tostring = function() "
          "error('no') end}) return u", 1, 1);
  lua_pushlightuserdata(L1, &L1);
  transfer(L1, L2, 6, SYNCHRO_MARSHAL_LENIENT);
  run(L2,
      "local t, named, broken, ud, ud2, light = ...\n"
      "assert(type(t.ud) == 'string' and t.ud:find('^file'))\n"
      "assert(type(t.f) == 'string' and t.f:find('^function'))\n"
      "assert(type(t.co) == 'string' and t.co:find('^thread'))\n"
      "assert(t.obj.a == 1 and getmetatable(t.obj) == nil)\n"
      "local found\n"
      "for k, v in pairs(t) do if v == 'key' then found = k end end\n"
      "assert(type(found) == 'string' and found:find('^function'))\n"
      "assert(named == 'named', named)\n"
      "assert(type(broken) == 'string' and broken:find('^table: '))\n"
      "assert(ud == 'MyUD', ud)\n"
      "assert(ud2:find('^userdata: '), ud2)\n"
      "assert(type(light) == 'string' and light:find('^userdata'))\n",
      6, 0);
  run(L1, "assert(getmetatable(keep).__index == error)", 0, 0);
  lua_close(L1);
  lua_close(L2);
}

/* LENIENT: a table whose metatable is a loaded module's class arrives with
 * the receiver's copy of that class; without it, as its text. */
static void test_lenient_classes(void) {
  lua_State *L1 = new_state("L1"), *L2 = new_state("L2");
  const char *lib =
      "local m = { E = { __tostring = function(e) return 'E' .. e.n end } }\n"
      "m.E.__index = m.E\n"
      "m.__tostring = function() return 'module class' end\n"
      "package.loaded['errlib'] = m\n"
      "package.loaded['alias'] = { E = m.E }\n";
  run(L1, lib, 0, 0);
  run(L2, lib, 0, 0);
  run(L1,
      "local m = package.loaded.errlib\n"
      "local e = setmetatable({ n = 1 }, m.E)\n"
      "e.self = e\n"
      "return e, setmetatable({}, m), { inner = setmetatable({ n = 2 }, m.E) }",
      0, 3);
  transfer(L1, L2, 3, SYNCHRO_MARSHAL_LENIENT);
  run(L2,
      "local e, me, outer = ...\n"
      "local m = package.loaded.errlib\n"
      "assert(getmetatable(e) == m.E and e.n == 1 and e.self == e)\n"
      "assert(tostring(e) == 'E1')\n"
      "assert(getmetatable(me) == m)\n"
      "assert(getmetatable(outer.inner) == m.E)\n",
      3, 0);
  /* L3 has only the alias: the second name is taken */
  {
    lua_State *L3 = new_state("L3");
    run(L3, "package.loaded['alias'] = { E = {} }", 0, 0);
    run(L1, "return setmetatable({ n = 5 }, package.loaded.errlib.E)", 0, 1);
    transfer(L1, L3, 1, SYNCHRO_MARSHAL_LENIENT);
    run(L3, "local e = ... assert(getmetatable(e) == package.loaded.alias.E)",
        1, 0);
    /* no name known at all: the text */
    run(L3, "package.loaded['alias'] = nil", 0, 0);
    run(L1, "return setmetatable({ n = 6 }, package.loaded.errlib.E)", 0, 1);
    transfer(L1, L3, 1, SYNCHRO_MARSHAL_LENIENT);
    run(L3, "local e = ... assert(e == 'E6', e)", 1, 0);
    lua_close(L3);
  }
  lua_close(L1);
  lua_close(L2);
}

static int blob_marshal(lua_State *L) {
  lua_pushliteral(L, "blob");
  lua_pushliteral(L, "bytes");
  return 2;
}

static void set_ext(lua_State *L, const char *code) {
  run(L, code, 0, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, SYNCHRO_EXT_REGISTRY);
}

static void test_extensions(void) {
  lua_State *L1 = new_state("L1"), *L2 = new_state("L2");
  lua_State *L3 = new_state("L3");
  synchro_buf_t buf;
  set_ext(L2,
          "return {point = function(s)\n"
          "  local x, y = s:match('^(%d+),(%d+)$')\n"
          "  return {x = tonumber(x), y = tonumber(y)} end,\n"
          "  blob = function(s) return 'blob:' .. s end}");
  set_ext(L3, "return {point = function(s) error('refused') end}");
  run(L1,
      "local mt = {__synchro = function(o) return 'point', o.x .. ',' .. o.y "
      "end}\n"
      "local p = setmetatable({x = 1, y = 2}, mt)\n"
      "return p, {p, p}",
      0, 2);
  lua_newuserdata(L1, 4);
  lua_newtable(L1);
  lua_pushcfunction(L1, blob_marshal);
  lua_setfield(L1, -2, "__synchro");
  lua_setmetatable(L1, -2);
  /* The same userdata again, in an array part and a hash part. */
  run(L1, "local u = ... return u, {u, u, k = u, [u] = true}", 1, 2);
  synchro__buf_init(&buf);
  encode_ok(L1, 4, SYNCHRO_MARSHAL_DATA, &buf);
  lua_pop(L1, 4);
  CHECK_EQ_INT(decode_ok(L2, buf.data, buf.len), 4);
  run(L2,
      "local p, t, b, bt = ...\n"
      "assert(p.x == 1 and p.y == 2 and getmetatable(p) == nil)\n"
      "assert(t[1] == p and t[2] == p)\n"
      "assert(b == 'blob:bytes')\n"
      "assert(bt[1] == b and bt[2] == b and bt.k == b and bt[b] == true)\n",
      4, 0);
  expect_decode_error(L3, buf.data, buf.len, SYNCHRO_EMARSHAL,
                      "extension 'point' failed: ");
  lua_pushnil(L3);
  lua_setfield(L3, LUA_REGISTRYINDEX, SYNCHRO_EXT_REGISTRY);
  expect_decode_error(L3, buf.data, buf.len, SYNCHRO_EMARSHAL,
                      "unknown extension 'point'");
  /* Encoding errors: a failing marshaller, a bad result. */
  run(L1,
      "return {v = setmetatable({}, {__synchro = function() "
      "error('boom', 0) end})}",
      0, 1);
  expect_encode_error(L1, 1, 0, "args[1].v: __synchro failed: boom", 1);
  run(L1, "return setmetatable({}, {__synchro = function() return 1 end})",
      0, 1);
  expect_encode_error(L1, 1, SYNCHRO_MARSHAL_CODE,
                      "args[1]: __synchro must return a kind (a string) and "
                      "a payload (a string or a table)", 1);
  /* A table payload: its values cross as values (no joined string), its
   * shared tables stay shared, and the ids after it line up on both
   * sides (the table after the extension is a REF to the first one). */
  set_ext(L2, "return {pair = function(t) return {sum = t[1] + t[2], "
              "body = t.body, same = t.a == t.b} end}");
  run(L1,
      "local shared = {}\n"
      "local mt = {__synchro = function(o) return 'pair', {o[1], o[2], "
      "body = o.body, a = shared, b = shared} end}\n"
      "local v = setmetatable({3, 4, body = ('z'):rep(100000)}, mt)\n"
      "local t = {}\n"
      "return v, t, t, v",
      0, 4);
  synchro__buf_free(&buf);
  synchro__buf_init(&buf);
  encode_ok(L1, 4, SYNCHRO_MARSHAL_DATA, &buf);
  lua_pop(L1, 4);
  CHECK_EQ_INT(decode_ok(L2, buf.data, buf.len), 4);
  run(L2,
      "local v, t1, t2, v2 = ...\n"
      "assert(v.sum == 7 and #v.body == 100000 and v.same)\n"
      "assert(type(t1) == 'table' and t1 == t2 and v2 == v)\n",
      4, 0);
  /* A payload that holds the value itself: the encoder sends a REF to the
   * extension, which the decoder refuses (it cannot build a value out of
   * itself). */
  run(L1,
      "local mt = {__synchro = function(o) return 'pair', {o} end}\n"
      "return setmetatable({}, mt)",
      0, 1);
  synchro__buf_free(&buf);
  synchro__buf_init(&buf);
  encode_ok(L1, 1, SYNCHRO_MARSHAL_DATA, &buf);
  lua_pop(L1, 1);
  expect_decode_error(L2, buf.data, buf.len, SYNCHRO_EMARSHAL,
                      "an extension's payload refers to it");
  synchro__buf_free(&buf);
  CHECK_EQ_INT(lua_gettop(L1), 0);
  CHECK_EQ_INT(lua_gettop(L2), 0);
  CHECK_EQ_INT(lua_gettop(L3), 0);
  lua_close(L1);
  lua_close(L2);
  lua_close(L3);
}

static void test_depth(void) {
  lua_State *L1 = new_state("L1"), *L2 = new_state("L2");
  char expected[1024] = "args[1]";
  unsigned char deep[3 + 6 * 300 + 1];
  int i;
  const char *chain = "local n = ... local t = {} local c = t\n"
                      "for i = 2, n do c.x = {} c = c.x end return t";
  lua_pushinteger(L1, 200);
  run(L1, chain, 1, 1);
  transfer(L1, L2, 1, 0);
  lua_pushinteger(L1, 201);
  run(L1, chain, 1, 1);
  for (i = 0; i < 200; i++)
    strcat(expected, ".x");
  strcat(expected, ": nesting too deep");
  expect_encode_error(L1, 1, 0, expected, 1);
  /* LENIENT never fails: the too-deep table becomes its text. */
  lua_pushinteger(L1, 201);
  run(L1, chain, 1, 1);
  transfer(L1, L2, 1, SYNCHRO_MARSHAL_LENIENT);
  /* A corrupt buffer claiming deep nesting. */
  deep[0] = 0xC5;
  deep[1] = 2; /* the format version */
  deep[2] = 1;
  for (i = 0; i < 300; i++)
    memcpy(deep + 3 + 6 * i, "\x06\x01\0\0\0\0", 6);
  deep[sizeof deep - 1] = 0;
  expect_decode_error(L2, (const char *)deep, sizeof deep, SYNCHRO_EBADBUF,
                      "corrupt buffer: nesting too deep at offset ");
  lua_close(L1);
  lua_close(L2);
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint32_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (uint32_t)(rng_state >> 11);
}

/* Any outcome but a crash, a leak or an unbalanced stack is fine. */
static void decode_any(lua_State *L, const char *data, size_t len) {
  int n = synchro__marshal_decode(L, data, len);
  if (n < 0) {
    CHECK(n == SYNCHRO_EBADBUF || n == SYNCHRO_EMARSHAL);
    CHECK_EQ_INT(lua_gettop(L), 1);
    CHECK(lua_type(L, 1) == LUA_TSTRING);
  } else {
    CHECK_EQ_INT(lua_gettop(L), n);
  }
  lua_settop(L, 0);
}

static void test_bad_buffers(void) {
  lua_State *L1 = new_state("L1"), *L2 = new_state("L2");
  synchro_buf_t buf;
  char *copy;
  size_t i, len;
  int j;
  set_ext(L2, "return {point = function(s) return {s} end}");
  run(L1,
      "local up = {1, 2.5, 'three', [true] = false}\n"
      "local function rec(n) if n > 0 then return rec(n - 1) end\n"
      "  return up end\n"
      "local p = setmetatable({}, {__synchro = function() "
      "return 'point', 'xy' end})\n"
      "local t = {up, rec, string, string.format, p, p, 'a\\0b'}\n"
      "t.t = t\n"
      "return t, rec, -0.0, 1e300, 2^53",
      0, 5);
  synchro__buf_init(&buf);
  encode_ok(L1, 5, SYNCHRO_MARSHAL_CODE, &buf);
  len = buf.len;
  CHECK_EQ_INT(decode_ok(L2, buf.data, len), 5);
  lua_settop(L2, 0);
  copy = malloc(len);
  CHECK(copy != NULL);
  /* Every truncation is an error. */
  for (i = 0; i < len; i++) {
    memcpy(copy, buf.data, i);
    CHECK(synchro__marshal_decode(L2, i ? copy : NULL, i) ==
          SYNCHRO_EBADBUF);
    CHECK_EQ_INT(lua_gettop(L2), 1);
    lua_settop(L2, 0);
  }
  /* Trailing garbage, wrong version and specific corruptions. */
  memcpy(copy, buf.data, len);
  expect_decode_error(L2, "\xC5\x02\x01\x00\x00", 5, SYNCHRO_EBADBUF,
                      "corrupt buffer: trailing bytes at offset 4");
  expect_decode_error(L2, "\xC5\x01\x00", 3, SYNCHRO_EBADBUF,
                      "corrupt buffer: unsupported format version");
  expect_decode_error(L2, "Lua", 3, SYNCHRO_EBADBUF,
                      "corrupt buffer: bad magic byte at offset 0");
  expect_decode_error(L2, "\xC5\x02\x05\x00", 4, SYNCHRO_EBADBUF,
                      "corrupt buffer: count larger than the buffer");
  expect_decode_error(L2, "\xC5\x02\x01\x07\x01", 5, SYNCHRO_EBADBUF,
                      "corrupt buffer: bad reference at offset 5");
  expect_decode_error(L2, "\xC5\x02\x01\x0C", 4, SYNCHRO_EBADBUF,
                      "corrupt buffer: unknown tag at offset 3");
  expect_decode_error(L2, "\xC5\x02\x01\x06\x00\x01\0\0\0\x00\x01", 11,
                      SYNCHRO_EBADBUF, "corrupt buffer: nil table key");
  expect_decode_error(L2, "\xC5\x02\x01\x03\xff\xff\xff\xff\xff\xff\xff"
                      "\xff\xff\x7f", 14, SYNCHRO_EBADBUF,
                      "corrupt buffer: varint overflow");
  {
    /* A function alone: tag at 3, u32 size, u32 hash, bytecode at 12. */
    synchro_buf_t fb;
    synchro__buf_init(&fb);
    run(L1, "return function(a) return a + 1 end", 0, 1);
    encode_ok(L1, 1, SYNCHRO_MARSHAL_CODE, &fb);
    lua_pop(L1, 1);
    CHECK(fb.data[3] == 8);
    fb.data[20] ^= 0x40;
    expect_decode_error(L2, fb.data, fb.len, SYNCHRO_EBADBUF,
                        "corrupt buffer: bytecode checksum mismatch");
    synchro__buf_free(&fb);
  }
  /* Single-byte corruptions of a valid buffer. */
  for (j = 0; j < 20000; j++) {
    size_t at = rng() % len;
    memcpy(copy, buf.data, len);
    copy[at] = (char)(j & 1 ? copy[at] ^ (1 << (rng() % 8)) : (int)rng());
    decode_any(L2, copy, len);
  }
  /* Random buffers, half of them with a valid header. */
  for (j = 0; j < 5000; j++) {
    size_t n = rng() % len + 1;
    for (i = 0; i < n; i++)
      copy[i] = (char)rng();
    if (j & 1 && n > 2) {
      copy[0] = (char)0xC5;
      copy[1] = 2; /* the format version */
      copy[2] = (char)(rng() % 4);
    }
    decode_any(L2, copy, n);
  }
  free(copy);
  synchro__buf_free(&buf);
  lua_close(L1);
  lua_close(L2);
}

/* Bytes (marshal.h) cross as strings in every mode, alone, in a table,
 * empty; Lua sees #b and b:take(); the buffer is freed with the
 * userdata, and unreachable ones are collected once they hold more than
 * the VM's budget. */
static void test_bytes(void) {
  static const int modes[] = {SYNCHRO_MARSHAL_DATA, SYNCHRO_MARSHAL_CODE,
                              SYNCHRO_MARSHAL_LENIENT, SYNCHRO_MARSHAL_PROXY};
  size_t i, n = 200000, len;
  for (i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
    lua_State *L1 = new_state("L1"), *L2 = new_state("L2");
    synchro_bytes_t *b = synchro__bytes_new(L1);
    const char *s;
    size_t k;
    CHECK((b->data = malloc(n)) != NULL);
    for (k = 0; k < n; k++)
      b->data[k] = (char)(k * 13 + (k >> 8));
    b->len = n;
    synchro__bytes_account(L1, b);
    /* the same bytes twice, and in a table; an empty one */
    run(L1, "local b = ... return b, { body = b, n = #b }, b", 1, 3);
    synchro__bytes_new(L1);
    CHECK_EQ_INT(transfer(L1, L2, 4, modes[i]), 4);
    s = lua_tolstring(L2, 1, &len);
    CHECK(s != NULL && len == n);
    for (k = 0; k < n; k++)
      CHECK(s[k] == (char)(k * 13 + (k >> 8)));
    run(L2, "local a, t, c, e = ... "
            "return type(t.body) == 'string' and t.body == a and c == a "
            "and t.n == #a and e == ''", 4, 1);
    CHECK(lua_toboolean(L2, -1));
    lua_close(L1); /* frees the buffer (valgrind and ASan check it) */
    lua_close(L2);
  }
  {
    lua_State *L = new_state("L");
    const size_t *held;
    int k;
    /* 200 MiB made and dropped: what is held stays near the 32 MiB
     * budget (its first field) */
    for (k = 0; k < 200; k++) {
      synchro_bytes_t *b = synchro__bytes_new(L);
      CHECK((b->data = calloc(1, (size_t)1 << 20)) != NULL);
      b->len = (size_t)1 << 20;
      synchro__bytes_account(L, b);
      lua_pop(L, 1);
      lua_getfield(L, LUA_REGISTRYINDEX, "synchro.bytes_budget");
      held = lua_touserdata(L, -1);
      lua_pop(L, 1);
      CHECK(held != NULL && *held <= ((size_t)33 << 20));
    }
    /* take gives the string and empties the bytes */
    synchro__bytes_new(L)->data = NULL;
    run(L, "local b = ... local s = b:take() "
           "return s == '' and #b == 0 and b:take() == ''", 1, 1);
    CHECK(lua_toboolean(L, -1));
    lua_close(L);
  }
}

int main(void) {
  fprintf(stderr, "test-marshal (%s)\n", LUA_VERSION);
  RUN(test_scalars);
  RUN(test_big_string);
  RUN(test_bytes);
  RUN(test_tables);
  RUN(test_big_tables);
  RUN(test_functions);
  RUN(test_modules);
  RUN(test_errors);
  RUN(test_lenient);
  RUN(test_lenient_classes);
  RUN(test_extensions);
  RUN(test_depth);
  RUN(test_bad_buffers);
  return 0;
}
