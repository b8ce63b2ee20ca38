#!/bin/bash
# Runs the whole suite: busted specs on every Lua given, the C tests under
# ctest, then the sanitizer and valgrind checks; ends with one summary line.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1
passed=0 failed=0 skipped=0
log=$(mktemp -d)

interp() { [ "$1" = luajit ] && echo luajit || echo "lua$1"; }

for v in "$@"; do
  echo "== busted on Lua $v"
  # bounded: a hang is a failure with its stacks, not a run that never ends
  tools/watchdog.sh "${SYNCHRO_BUSTED_BOUND:-900}" \
    tools/with-env.sh "build/$v" "$(interp "$v")" /usr/bin/busted \
    --output=TAP spec >"$log/busted-$v.txt" 2>&1
  if grep -q '^WATCHDOG' "$log/busted-$v.txt"; then
    echo "   HANG on Lua $v; the last tests that ended:"
    grep -E '^(not )?ok ' "$log/busted-$v.txt" | tail -n 3
    sed -n '/^WATCHDOG/,$p' "$log/busted-$v.txt" | head -n 400
  fi
  p=$(grep -c '^ok ' "$log/busted-$v.txt")
  s=$(grep -c '^ok .*# SKIP' "$log/busted-$v.txt")
  f=$(grep -c '^not ok ' "$log/busted-$v.txt")
  if ! grep -q '^1\.\.[0-9]' "$log/busted-$v.txt"; then
    f=$((f + 1)) # busted itself failed
  fi
  grep -E '^not ok|^#' "$log/busted-$v.txt" | head -60
  echo "   Lua $v: $((p - s)) passed, $f failed, $s pending"
  passed=$((passed + p - s)); failed=$((failed + f)); skipped=$((skipped + s))
done

echo "== C tests (ctest, Lua 5.4 build)"
if (cd build/5.4 && ctest --output-on-failure >"$log/ctest.txt" 2>&1); then :; fi
tail -n 3 "$log/ctest.txt"
cp=$(grep -cE 'Test +#[0-9]+: .* Passed' "$log/ctest.txt")
cf=$(grep -cE 'Test +#[0-9]+: .*(Failed|Timeout|Exception|Not Run)' "$log/ctest.txt")
grep -E 'Failed|Timeout|check failed' "$log/ctest.txt" | head -20
passed=$((passed + cp)); failed=$((failed + cf))

echo "== C hosts: install, examples/c-host, docs/c-api.md"
tools/watchdog.sh 900 tools/c-host.sh >"$log/c-host.txt" 2>&1
cat "$log/c-host.txt"
passed=$((passed + $(grep -c '^PASS ' "$log/c-host.txt")))
failed=$((failed + $(grep -c '^FAIL ' "$log/c-host.txt")))

echo "== luacheck, and a clang build with warnings as errors"
if luacheck -q lua spec examples bench >"$log/luacheck.txt" 2>&1; then
  echo "PASS luacheck"; passed=$((passed + 1))
else
  echo "FAIL luacheck"; cat "$log/luacheck.txt"; failed=$((failed + 1))
fi
if CC=clang cmake -S . -B build/clang -DSYNCHRO_LUA=5.4 -DSYNCHRO_WERROR=ON \
     >"$log/clang.txt" 2>&1 &&
   cmake --build build/clang -j 2 >>"$log/clang.txt" 2>&1; then
  echo "PASS clang-build"; passed=$((passed + 1))
else
  echo "FAIL clang-build"; tail -n 30 "$log/clang.txt"; failed=$((failed + 1))
fi

echo "== luarocks make (offline, into a temp tree), then require from /"
tree=$(mktemp -d)
src=$(mktemp -d)
git ls-files -z | xargs -0 -I{} cp --parents {} "$src" 2>/dev/null ||
  cp -r . "$src"
if (cd "$src" && luarocks --lua-version=5.4 --tree="$tree" make \
      synchro-scm-1.rockspec >"$log/luarocks.txt" 2>&1) &&
   (cd / && eval "$(luarocks --lua-version=5.4 --tree="$tree" path)" &&
      lua5.4 -e 'local s = require "synchro"
        local S = s.new()
        assert(S:wrap(function(x) return x * 2 end)(21) == 42)
        S:close()'); then
  echo "PASS luarocks-make"
  passed=$((passed + 1))
else
  echo "FAIL luarocks-make"
  tail -n 20 "$log/luarocks.txt"
  failed=$((failed + 1))
fi
rm -rf "$tree" "$src"

echo "== make dist, then the rock installed offline into a fresh tree per Lua"
if tools/dist.sh >"$log/dist.txt" 2>&1; then
  rock="$top/synchro-0.1.0-1.src.rock"
  for v in "$@"; do
    tree=$(mktemp -d)
    if [ "$v" = luajit ]; then lv=5.1 extra="LUA=$(command -v luajit)"
    else lv=$v extra=""; fi
    # shellcheck disable=SC2086
    if (cd / && luarocks --lua-version="$lv" --tree="$tree" install "$rock" \
          $extra >"$log/rock-$v.txt" 2>&1) &&
       (cd / && eval "$(luarocks --lua-version="$lv" --tree="$tree" path)" &&
          "$(interp "$v")" -e 'local s = require "synchro"
            local S = s.new()
            assert(S:wrap(function(x) return x * 2 end)(21) == 42)
            S:close()' && # loading at all: the right variant (the other refuses)
          [ -x "$tree/bin/synchro-stubs" ] &&
          [ -f "$tree/lib/luarocks/rocks-$lv/synchro/0.1.0-1/types/synchro.lua" ]); then
      echo "PASS dist-rock-$v"; passed=$((passed + 1))
    else
      echo "FAIL dist-rock-$v"; tail -n 20 "$log/rock-$v.txt"; failed=$((failed + 1))
    fi
    rm -rf "$tree"
  done
  # a module built for PUC 5.1 refuses LuaJIT, with a message saying so
  if [ -f build/5.1/lua/synchro/core.so ] &&
     LUA_CPATH="$top/build/5.1/lua/?.so" LUA_PATH="$top/lua/?.lua;$top/lua/?/init.lua" \
       luajit -e 'require "synchro"' 2>&1 |
       grep -q "built for PUC Lua 5.1 but is loaded into LuaJIT"; then
    echo "PASS wrong-interpreter"; passed=$((passed + 1))
  else
    echo "FAIL wrong-interpreter"; failed=$((failed + 1))
  fi
  # a tree without libuv's header: luarocks' check names LIBUV, uv.h and
  # the variables to set, before anything builds
  tree=$(mktemp -d) empty=$(mktemp -d)
  out=$(cd / && luarocks --lua-version=5.4 --tree="$tree" install "$rock" \
    LIBUV_DIR="$empty" 2>&1)
  if echo "$out" | grep -q "Could not find header file for LIBUV" &&
     echo "$out" | grep -q "uv.h" && echo "$out" | grep -q "LIBUV_DIR"; then
    echo "PASS no-libuv-header"; passed=$((passed + 1))
  else
    echo "FAIL no-libuv-header"; echo "$out" | tail -n 10; failed=$((failed + 1))
  fi
  # and cmake's own check, building by hand with LIBUV_INCDIR elsewhere
  if cmake -S . -B "$tree/b" -DSYNCHRO_LUA=5.4 -DLIBUV_INCDIR="$empty" \
       -DLIBUV_LIBDIR="$empty" 2>&1 | grep -q "Debian: apt install libuv1-dev"; then
    echo "PASS no-libuv-cmake"; passed=$((passed + 1))
  else
    echo "FAIL no-libuv-cmake"; failed=$((failed + 1))
  fi
  rm -rf "$tree" "$empty" "$rock"
else
  echo "FAIL make-dist"; tail -n 20 "$log/dist.txt"; failed=$((failed + 1))
fi

if [ "${SYNCHRO_SKIP_SANITIZE:-0}" != 1 ]; then
  echo "== sanitizers and valgrind"
  if tools/watchdog.sh "${SYNCHRO_SANITIZE_BOUND:-2400}" tools/sanitize.sh \
       >"$log/sanitize.txt" 2>&1; then
    sp=$(grep -c '^PASS ' "$log/sanitize.txt")
    passed=$((passed + sp))
  else
    sp=$(grep -c '^PASS ' "$log/sanitize.txt")
    sf=$(grep -c '^FAIL ' "$log/sanitize.txt")
    [ "$sf" -eq 0 ] && sf=1
    passed=$((passed + sp)); failed=$((failed + sf))
    tail -n 60 "$log/sanitize.txt"
  fi
  grep -E '^(PASS|FAIL) ' "$log/sanitize.txt"
fi

rm -rf "$log"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
