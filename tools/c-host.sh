#!/bin/bash
# Installs synchro (Lua 5.4 build) into a temporary prefix, then builds and
# runs examples/c-host against it through pkg-config and through CMake's
# find_package, and the worked example of docs/c-api.md. Prints a PASS or
# FAIL line per check.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1
prefix=$(mktemp -d)
work=$(mktemp -d)
status=0
trap 'rm -rf "$prefix" "$work"' EXIT

result() { # name ok?
  if [ "$2" -eq 0 ]; then echo "PASS $1"; else echo "FAIL $1"; status=1; fi
}

# A build configured for this prefix: the loop VM looks for synchro's Lua
# files where the install puts them.
cmake -S . -B "$work/build" -DSYNCHRO_LUA=5.4 \
  -DCMAKE_INSTALL_PREFIX="$prefix" >"$work/log" 2>&1 &&
  cmake --build "$work/build" -j 2 --target synchro synchro_static \
    >>"$work/log" 2>&1 &&
  cmake --install "$work/build" >>"$work/log" 2>&1
rc=$?
result c-api-install $rc
[ $rc -eq 0 ] || { tail -n 30 "$work/log"; exit 1; }

export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
export LD_LIBRARY_PATH="$prefix/lib"
ex=examples/c-host

cc -Wall -Wextra -o "$work/c-host-pc" $ex/main.c \
  $(pkg-config --cflags --libs synchro) -lpthread >"$work/log" 2>&1 &&
  "$work/c-host-pc" $ex >"$work/out" 2>&1 &&
  grep -q "all calls done" "$work/out"
rc=$?
result c-host-pkg-config $rc
[ $rc -eq 0 ] && grep -c "^thread .* got item" "$work/out" | grep -qx 20
result c-host-threads-results $?
[ $rc -eq 0 ] || cat "$work/log" "$work/out"

cmake -S $ex -B "$work/ex" -DCMAKE_PREFIX_PATH="$prefix" >"$work/log" 2>&1 &&
  cmake --build "$work/ex" >>"$work/log" 2>&1 &&
  "$work/ex/c-host" $ex >"$work/out" 2>&1 &&
  grep -q "all calls done" "$work/out"
rc=$?
result c-host-find-package $rc
[ $rc -eq 0 ] || cat "$work/log" "$work/out"

awk '/^```c$/{f=1;next} /^```$/{f=0} f' docs/c-api.md >"$work/doc.c"
cc -Wall -Wextra -o "$work/doc" "$work/doc.c" \
  $(pkg-config --cflags --libs synchro) -lpthread >"$work/log" 2>&1 &&
  "$work/doc" >"$work/out" 2>&1 &&
  grep -qx "hello C" "$work/out" && grep -qx "square(9) = 81" "$work/out" &&
  grep -qx "error: no luck" "$work/out" && grep -qx "ETIMEDOUT" "$work/out"
rc=$?
result docs-c-api-example $rc
[ $rc -eq 0 ] || cat "$work/log" "$work/out"
exit $status
