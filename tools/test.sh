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
  tools/with-env.sh "build/$v" "$(interp "$v")" /usr/bin/busted \
    --output=TAP spec >"$log/busted-$v.txt" 2>&1
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
tools/c-host.sh >"$log/c-host.txt" 2>&1
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

if [ "${SYNCHRO_SKIP_SANITIZE:-0}" != 1 ]; then
  echo "== sanitizers and valgrind"
  if tools/sanitize.sh >"$log/sanitize.txt" 2>&1; then
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
