#!/bin/bash
# watchdog.sh SECONDS CMD [ARGS...]: runs CMD; if it is still running after
# SECONDS, prints the stacks of every thread of every process it started
# (gdb, when installed), kills them all and exits 124. Otherwise exits with
# CMD's status. So a hang in the suite is a failure with its evidence, not
# a CI run that never ends.
set -u
bound=$1
shift
setsid "$@" &
pid=$!
# its own session, so a Ctrl-C or kill of ours must be passed on
trap 'kill -TERM -- "-$pid" 2>/dev/null; exit 130' INT TERM HUP
deadline=$((SECONDS + bound))
while kill -0 "$pid" 2>/dev/null; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "WATCHDOG: '$*' still running after $bound s: stacks, then kill"
    for p in $(pgrep -s "$pid"); do
      echo "--- pid $p: $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-200)"
      if command -v gdb >/dev/null; then
        timeout 60 gdb -p "$p" -batch -ex "thread apply all bt 30" 2>/dev/null |
          grep -E '^(Thread|#)' | head -n 150
      fi
    done
    kill -KILL -- "-$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    exit 124
  fi
  sleep 1
done
wait "$pid"
