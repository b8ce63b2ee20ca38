rockspec_format = "3.0"
package = "synchro"
version = "scm-1"
source = {
  url = "git+https://example.invalid/synchro.git",
}
description = {
  summary = "Call async Lua code on a libuv loop thread from blocking code",
  detailed = [[
synchro runs a libuv event loop on its own thread, with its own Lua VM.
S:wrap(fn) turns an async coroutine function into an ordinary blocking
call, with .aio (await from async code) and .future variants.
]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.1, < 5.5",
}
external_dependencies = {
  LIBUV = { header = "uv.h" },
}
build = {
  type = "cmake",
  variables = {
    CMAKE_BUILD_TYPE = "Release",
    LUA_INCDIR = "$(LUA_INCDIR)",
    LUA_LIBDIR = "$(LUA_LIBDIR)",
    LUADIR = "$(LUADIR)",
    LIBDIR = "$(LIBDIR)",
    SYNCHRO_MODULE_ONLY = "ON",
  },
}
