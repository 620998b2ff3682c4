#!/bin/sh
# The device tool sends the checkout's tracked and untracked-not-ignored files, at most 64 MiB; the
# default model's weights alone are 75 MB. `slim` takes them out of the index and ignores them (they
# stay on disk), so a device call does not send them; `restore` puts them back from HEAD. Commit
# nothing between the two: a commit would record the weights as deleted.
#   tools/device-tree.sh slim      # before device calls
#   tools/device-tree.sh restore   # after them
set -eu
cd "$(git rev-parse --show-toplevel)"
exclude=$(git rev-parse --git-path info/exclude)
weights='models/default/model.safetensors models/default/model.w4a8'
case "${1:-}" in
  slim)
    # shellcheck disable=SC2086  # one word a path
    git rm -q --cached $weights
    for w in $weights; do grep -qxF "/$w" "$exclude" || echo "/$w" >>"$exclude"; done ;;
  restore)
    for w in $weights; do sed -i "\\#^/$w\$#d" "$exclude"; done
    # shellcheck disable=SC2086
    git reset -q -- $weights ;;
  *) echo "usage: $0 slim|restore" >&2; exit 2 ;;
esac
git ls-files -z | xargs -0 du -cb | tail -1 | sed 's/total/bytes tracked/'
