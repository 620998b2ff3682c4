#!/bin/sh
# Builds the corpus of w4a8's default model on a Debian 12 machine (as root, or with sudo rights for apt):
#   1. installs the Debian packages that hold the text (corpus.py --packages lists them), if missing
#   2. extracts, cleans, deduplicates and splits it (corpus.py): tools/default-model/work/{train,valid,test}.txt,
#      models/default/test.txt and models/default/SOURCES.md
#   3. packs the three splits for the device machine: .train/corpus.tar.xz (train.py reads them there)
# Idempotent: a second run installs nothing and rewrites the same bytes from the same package versions.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

packages=$(python3 "$here/corpus.py" --packages)
missing=''
for p in $packages; do
  dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed || missing="$missing $p"
done
if [ -n "$missing" ]; then
  apt-get update
  # One package at a time and --no-remove: installing a text package must never uninstall anything
  # (nodejs-doc pulls Debian's nodejs, which would replace a Node installed from elsewhere). A package
  # that would remove something is refused here; install it by hand after checking, or accept that the
  # corpus then differs from the SOURCES.md shipped with the model.
  for p in $missing; do
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends --no-remove "$p" ||
      { echo "corpus.sh: $p not installed (it would remove other packages); stopping" >&2; exit 1; }
  done
fi

python3 "$here/corpus.py" --work "$here/work" --model-dir "$repo/models/default"

# The splits travel to the device compressed (a call carries at most 64 MiB). Both folders are
# ignored through .git/info/exclude, not .gitignore: they are local build products of this script.
for ignored in /.train/ /tools/default-model/work/; do
  grep -qxF "$ignored" "$repo/.git/info/exclude" 2>/dev/null || echo "$ignored" >>"$repo/.git/info/exclude"
done
mkdir -p "$repo/.train"
tar -C "$here/work" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - train.txt valid.txt test.txt |
  xz -9 -T0 >"$repo/.train/corpus.tar.xz"
ls -l "$repo/.train/corpus.tar.xz"
