#!/bin/sh
# instructions.sh [LUA]: instructions per blocking round trip, counted by
# valgrind's callgrind (counts do not move with the machine's load), split
# into the caller's thread, the loop thread, and libuv's share of the
# loop thread. Two runs, N and 2N calls; the difference divided by N is
# what one call costs in steady state (start-up and close cancel out).
# Run from the checkout after make build: bench/instructions.sh 5.4
set -e
lua=${1:-5.4}
top=$(cd "$(dirname "$0")/.." && pwd)
interp=lua$lua
[ "$lua" = luajit ] && interp=luajit
N=${SYNCHRO_BENCH_CALLS:-20000}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/calls.lua" <<'LUA'
local n = tonumber(arg[1])
local synchro = require "synchro"
local S = synchro.new({ slow = 0 })
local echo = S:wrap(function(x) return x end)
for i = 1, 1000 do echo(i) end -- warm-up, both runs alike
for i = 1, n do echo(i) end
S:close()
LUA

# run COUNT -> files $tmp/cg.COUNT-NN, one per thread
run() {
  "$top/tools/with-env.sh" "$top/build/$lua" valgrind --tool=callgrind \
    --separate-threads=yes --callgrind-out-file="$tmp/cg.$1" \
    "$interp" "$tmp/calls.lua" "$1" >/dev/null 2>&1
}
# total COUNT THREAD -> instructions of that thread ("-01" the caller)
total() {
  f=$(ls "$tmp"/cg."$1"-"$2" 2>/dev/null | head -1)
  [ -n "$f" ] || { echo 0; return; }
  sed -n 's/^totals: *\([0-9]*\).*/\1/p; s/^summary: *\([0-9]*\).*/\1/p' "$f" |
    head -1
}
# libuv COUNT THREAD -> instructions in libuv's code on that thread
libuv() {
  f=$(ls "$tmp"/cg."$1"-"$2" 2>/dev/null | head -1)
  [ -n "$f" ] || { echo 0; return; }
  callgrind_annotate --threshold=100 "$f" 2>/dev/null |
    awk '/libuv\.so/ { gsub(",", "", $1); s += $1 } END { print s + 0 }'
}

run "$N"
run "$((2 * N))"
# the loop thread is the busiest of the others (-02, -03, ...)
loop_thread() {
  best=02 bestn=0
  for f in "$tmp"/cg."$1"-*; do
    t=${f##*-}
    [ "$t" = 01 ] && continue
    n=$(total "$1" "$t")
    if [ "$n" -gt "$bestn" ]; then best=$t bestn=$n; fi
  done
  echo "$best"
}
lt1=$(loop_thread "$N")
lt2=$(loop_thread "$((2 * N))")
caller=$((($(total "$((2 * N))" 01) - $(total "$N" 01)) / N))
loop=$((($(total "$((2 * N))" "$lt2") - $(total "$N" "$lt1")) / N))
uv=$((($(libuv "$((2 * N))" "$lt2") - $(libuv "$N" "$lt1")) / N))
printf 'synchro instructions per blocking round trip: Lua %s, %s calls\n' \
  "$lua" "$N"
printf '%-40s %10s\n' "part" "instr/call"
printf '%-40s %10d\n' "caller thread" "$caller" "loop thread" "$loop" \
  "  of which libuv" "$uv" "total" "$((caller + loop))"
printf '%-40s %10s\n' "target (issue: fast path)" "<= 6000"
