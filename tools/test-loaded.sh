#!/bin/bash
# Runs the whole suite (tools/test.sh) with two CPU hogs beside it, so that
# every assertion that depends on scheduling is tried on a busy machine.
# The hogs are stopped when the suite ends, fails or is interrupted.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1
hogs=()
stop_hogs() {
  [ "${#hogs[@]}" -gt 0 ] && kill "${hogs[@]}" 2>/dev/null
  wait 2>/dev/null
  hogs=()
}
trap stop_hogs EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP
for _ in 1 2; do
  sh -c 'while :; do :; done' &
  hogs+=("$!")
done
echo "== two CPU hogs running (pids ${hogs[*]})"
tools/test.sh "$@"
