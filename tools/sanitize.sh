#!/bin/bash
# Sanitizer and valgrind checks: an ASan+UBSan build runs the C tests and
# the Lua 5.4 specs; a TSan build runs the C tests and the threaded specs;
# valgrind's memcheck runs the C tests of the normal 5.4 build. Prints one
# PASS or FAIL line per check; exits non-zero if any failed.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1
status=0
log=$(mktemp -d)

check() { # name command...
  local name=$1
  shift
  local rc=0
  "$@" >"$log/$name.txt" 2>&1 || rc=$?
  if [ "$rc" -eq 0 ]; then
    echo "PASS $name"
  else
    echo "FAIL $name (exit status $rc)"
    # a sanitizer's report first (it may sit far from the end), then the
    # end of the output
    grep -n -m 1 -A 60 -E "(ERROR|WARNING): [A-Za-z]+Sanitizer|runtime error:" \
      "$log/$name.txt"
    # busted's failed tests, with their messages (the tail may not reach
    # them)
    grep -n -A 14 "^not ok" "$log/$name.txt" | grep -v -E "^[0-9]+-ok " |
      head -n 120
    tail -n 40 "$log/$name.txt"
    status=1
  fi
}

build() { # dir sanitizer
  cmake -S . -B "$1" -DSYNCHRO_LUA=5.4 -DSYNCHRO_SANITIZE="$2" \
    -DCMAKE_BUILD_TYPE=Debug >/dev/null &&
    cmake --build "$1" -j 2 >/dev/null
}

asan_lib=$(gcc -print-file-name=libasan.so)
tsan_lib=$(gcc -print-file-name=libtsan.so)
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

check asan-build build build/asan address
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
check asan-ctest ctest --test-dir build/asan --output-on-failure
# The interpreter is not instrumented: preload the runtime. Leaks of the
# test runner's own modules are not ours; the C tests check leaks.
check asan-busted-5.4 tools/with-env.sh build/asan env \
  LD_PRELOAD="$asan_lib" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
  lua5.4 /usr/bin/busted -o TAP spec

check tsan-build build build/tsan thread
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
check tsan-ctest ctest --test-dir build/tsan --output-on-failure
check tsan-busted-5.4 tools/with-env.sh build/tsan env \
  LD_PRELOAD="$tsan_lib" lua5.4 /usr/bin/busted -o TAP \
  --exclude-tags=subprocess spec/threads_spec.lua spec/future_spec.lua \
  spec/cancel_spec.lua spec/wrap_spec.lua spec/aio_spec.lua \
  spec/aio_thread_spec.lua spec/cross_spec.lua spec/objects_spec.lua \
  spec/generator_spec.lua spec/protocol_spec.lua

for t in build/5.4/spec/c/test-*; do
  [ -x "$t" ] || continue
  check "valgrind-$(basename "$t")" env SYNCHRO_TEST_QUICK=1 \
    valgrind -q --error-exitcode=1 --child-silent-after-fork=yes \
    --leak-check=full --errors-for-leak-kinds=definite,indirect "$t"
done

rm -rf "$log"
exit $status
