/* libFuzzer target: decoding arbitrary bytes into a fresh lua_State must
 * never crash, read out of bounds, leak or unbalance the stack. Built by
 * hand, not from CMake:
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined \
 *     -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION -Isrc/core -Iinclude \
 *     -I/usr/include/lua5.4 spec/fuzz/fuzz-marshal.c src/core/marshal.c src/core/unmarshal.c \
 *     -llua5.4 -o /tmp/fuzz-marshal
 *   /tmp/fuzz-marshal -max_total_time=60 /tmp/corpus
 *
 * FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION makes the decoder load function
 * blobs as source text: Lua's bytecode loaders trust their input, and the
 * fuzzer forges the 32-bit checksum that guards them within a minute.
 * Compiling Lua's own sources into the target (with -DLUA_USE_APICHECK)
 * also checks the decoder's use of the API.
 *
 * Seed corpus (valid buffers of every tag): build the same file with
 * -DFUZZ_MAKE_SEEDS and without -fsanitize=fuzzer, run it with the
 * corpus directory as its argument. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compat.h"
#include "marshal.h"
#include "synchro.h"

static const char setup[] =
    "package.path = '/nonexistent/?.lua'\n"
    "package.cpath = '/nonexistent/?.so'\n"
    "package.preload.fuzzmod = function() return {} end\n"
    "return {point = function(s) return {s} end,\n"
    "  fail = function(s) error(s) end}";

static lua_State *new_state(void) {
  lua_State *L = luaL_newstate();
  if (L == NULL)
    abort();
  luaL_openlibs(L);
  if (luaL_dostring(L, setup) != 0)
    abort();
  lua_setfield(L, LUA_REGISTRYINDEX, SYNCHRO_EXT_REGISTRY);
  return L;
}

#ifndef FUZZ_MAKE_SEEDS

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_State *L = new_state();
  int n = synchro__marshal_decode(L, (const char *)data, size);
  if (n < 0 ? lua_gettop(L) != 1 || lua_type(L, 1) != LUA_TSTRING
            : lua_gettop(L) != n)
    abort();
  lua_close(L);
  return 0;
}

#else

static const struct {
  int flags;
  const char *code;
} seeds[] = {
    {SYNCHRO_MARSHAL_DATA, "return nil, true, false, 1, -2^63, 0/0, -0.0, "
                           "1/0, 'a\\0b', ''"},
    {SYNCHRO_MARSHAL_DATA, "local t = {1, 2, {3}, x = 'y', [1.5] = true} "
                           "t.t = t t[t] = t return t, t"},
    {SYNCHRO_MARSHAL_DATA, "local p = setmetatable({}, {__synchro = "
                           "function() return 'point', 'xy' end}) "
                           "return p, {p, p}"},
    {SYNCHRO_MARSHAL_CODE, "local up = {1} local function f(n) if n > 0 "
                           "then return f(n - 1) end return up, marker end "
                           "local function g() return f, up end "
                           "return f, g, string, string.format, _G, print"},
    {SYNCHRO_MARSHAL_CODE, "package.loaded.fuzzmod = {} "
                           "return package.loaded.fuzzmod"},
    {SYNCHRO_MARSHAL_LENIENT, "return io.stdout, print, {f = print}"},
};

static void write_file(const char *dir, const char *name, const char *data,
                       size_t len) {
  char path[4096];
  FILE *f;
  snprintf(path, sizeof path, "%s/%s", dir, name);
  f = fopen(path, "wb");
  if (f == NULL || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
    perror(path);
    exit(1);
  }
}

static uint32_t fnv1a(const char *p, size_t n) {
  uint32_t h = 2166136261u;
  while (n-- > 0)
    h = (h ^ (unsigned char)*p++) * 16777619u;
  return h;
}

static void put_u32(char *p, uint32_t v) {
  int i;
  for (i = 0; i < 4; i++)
    p[i] = (char)(v >> (8 * i));
}

/* Fuzz builds load function blobs as text: two chunks with one upvalue
 * (_ENV) each, the first set to a table, the second joined to it. */
static void text_seed(const char *dir) {
  static const char chunk[] = "return x";
  char b[64];
  size_t n = 0, len = sizeof chunk - 1;
  memcpy(b, "\xC5\x01\x02", 3);
  n = 3;
  b[n++] = 8; /* FUNC */
  put_u32(b + n, (uint32_t)len);
  put_u32(b + n + 4, fnv1a(chunk, len));
  memcpy(b + n + 8, chunk, len);
  n += 8 + len;
  memcpy(b + n, "\x01\x00\x06\x00\x00\x00\x00\x00", 8); /* {} */
  n += 8;
  memcpy(b + n, b + 3, 9 + len); /* the same chunk again */
  n += 9 + len;
  memcpy(b + n, "\x01\x01\x01\x01", 4); /* joined to (fid 1, 1) */
  n += 4;
  write_file(dir, "seed-text", b, n);
}

int main(int argc, char **argv) {
  size_t i;
  if (argc != 2) {
    fprintf(stderr, "usage: %s corpus-dir\n", argv[0]);
    return 2;
  }
  text_seed(argv[1]);
  for (i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
    lua_State *L = new_state();
    synchro_buf_t buf;
    char name[32];
    synchro__buf_init(&buf);
    if (luaL_dostring(L, seeds[i].code) != 0 ||
        synchro__marshal_encode(L, 1, lua_gettop(L), seeds[i].flags, "seed",
                                &buf, NULL) != 0) {
      fprintf(stderr, "seed %zu: %s\n", i, lua_tostring(L, -1));
      return 1;
    }
    snprintf(name, sizeof name, "seed-%zu", i);
    write_file(argv[1], name, buf.data, buf.len);
    synchro__buf_free(&buf);
    lua_close(L);
  }
  return 0;
}

#endif
