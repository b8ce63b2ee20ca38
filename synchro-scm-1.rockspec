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
-- libuv (Debian: libuv1-dev); honours LIBUV_DIR, LIBUV_INCDIR, LIBUV_LIBDIR.
-- The build also needs cmake and, for Lua 5.1, 5.2 and LuaJIT, the
-- compat-5.3 headers (Debian: cmake, lua-compat53-dev): tools/rock-build.sh
-- and CMakeLists.txt name the package that is missing.
external_dependencies = {
  LIBUV = { header = "uv.h", library = "uv" },
}
build = {
  type = "command",
  -- LUA is the interpreter: it tells LuaJIT from PUC Lua 5.1 (detected,
  -- not guessed from the headers luarocks was configured with)
  build_command = [[sh tools/rock-build.sh build "-DLUA=$(LUA)" ]] ..
    [["-DLUA_INCDIR=$(LUA_INCDIR)" "-DLUA_LIBDIR=$(LUA_LIBDIR)" ]] ..
    [["-DLIBUV_INCDIR=$(LIBUV_INCDIR)" "-DLIBUV_LIBDIR=$(LIBUV_LIBDIR)" ]] ..
    [["-DLUADIR=$(LUADIR)" "-DLIBDIR=$(LIBDIR)"]],
  install_command = "sh tools/rock-build.sh install",
  install = {
    bin = { ["synchro-stubs"] = "bin/synchro-stubs" },
  },
  -- LuaCATS meta files: point LuaLS's workspace.library at
  -- $(luarocks show --rock-dir synchro)/types
  copy_directories = { "types", "docs" },
}
