#!/bin/sh
# Installs the Debian packages the build and the tests need, if missing.
set -e
PKGS="cmake make gcc pkg-config libuv1-dev liblua5.1-0-dev liblua5.2-dev
liblua5.3-dev liblua5.4-dev libluajit-5.1-dev lua5.1 lua5.2 lua5.3 lua5.4
luajit lua-busted luarocks lua-compat53-dev lua-luv lua-luv-dev lua-check
valgrind clang libclang-rt-14-dev lua-cqueues neovim python3 redis-server
libcurl4-openssl-dev lua-cjson openssl libssl-dev curl libpq-dev postgresql gdb
nghttp2-server"
# `tools/deps.sh bench`: also what bench/ compares against (not the tests)
[ "$1" = bench ] && PKGS="$PKGS python3-httpx python3-aiohttp nginx-light"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
    missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "installing:$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null
# shellcheck disable=SC2086
$SUDO apt-get install -y -q $missing >/dev/null
