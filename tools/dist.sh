#!/bin/sh
# dist.sh: builds synchro-0.1.0-1.src.rock (in the top directory) from the
# checkout: the tracked and new files as they are now, not a commit.
set -e
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
rockspec=rockspecs/synchro-0.1.0-1.rockspec
name=synchro-0.1.0
stage=build/dist
rm -rf "$stage"
mkdir -p "$stage/$name"
git ls-files -co --exclude-standard -z |
  xargs -0 sh -c 'for f; do [ -e "$f" ] && cp --parents "$f" "$0"; done' \
    "$stage/$name"
tar -C "$stage" -czf "$stage/$name.tar.gz" "$name"
cp "$rockspec" "$stage/"
# a source rock is a zip of the rockspec and the source its url names
# (what luarocks pack makes; pack itself would look for the url elsewhere)
command -v zip >/dev/null || {
  echo "dist.sh: zip is needed (Debian: apt install zip)" >&2
  exit 1
}
(cd "$stage" && zip -q "$name-1.src.rock" "$(basename "$rockspec")" \
  "$name.tar.gz")
mv "$stage/$name-1.src.rock" "$top/"
echo "$top/$name-1.src.rock"
