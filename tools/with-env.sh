#!/bin/sh
# with-env.sh BUILD_DIR CMD...: runs CMD with the repository's Lua modules
# and the C module from BUILD_DIR on the Lua paths.
top=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "$1" && pwd)
shift
export LUA_PATH="$top/lua/?.lua;$top/lua/?/init.lua;$top/?.lua;;"
export LUA_CPATH="$build/lua/?.so;;"
unset LUA_PATH_5_2 LUA_PATH_5_3 LUA_PATH_5_4 LUA_CPATH_5_2 LUA_CPATH_5_3 \
  LUA_CPATH_5_4
exec "$@"
