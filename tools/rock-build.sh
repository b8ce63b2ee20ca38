#!/bin/sh
# rock-build.sh build|install [-DVAR=VALUE...]: the build luarocks runs
# (the rockspecs' "command" build). CMake configures and builds the module
# into build.luarocks/ and installs it and the Lua files into the rock.
# The checks here and in CMakeLists.txt say which Debian package is missing.
set -e
step=$1
shift
if ! command -v cmake >/dev/null 2>&1; then
  echo "synchro: cmake is needed to build synchro (Debian: apt install cmake)" >&2
  exit 1
fi
case $step in
build)
  # an empty -DVAR= (luarocks had no value) is left out: CMake's default
  args=""
  for a in "$@"; do
    case $a in *=) ;; *) args="$args '$a'" ;; esac
  done
  eval "set -- $args"
  cmake -S . -B build.luarocks -DCMAKE_BUILD_TYPE=Release \
    -DSYNCHRO_MODULE_ONLY=ON "$@"
  cmake --build build.luarocks
  ;;
install)
  cmake --install build.luarocks
  ;;
*)
  echo "usage: rock-build.sh build|install [-DVAR=VALUE...]" >&2
  exit 2
  ;;
esac
