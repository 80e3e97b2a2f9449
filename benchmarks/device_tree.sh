#!/usr/bin/env bash
# Keep docs/results/ from travelling with the device tool's calls. A call sends the checkout's tracked and
# untracked-not-ignored files with the carried paths, at most 64 MiB in all; docs/results/ (every session's figures
# and raw results) is most of the tracked size and no device command reads it (the split files
# they do read live in docs/splits/), and since session 33 the tree with the
# wheels (.whl) and fundus-od (.device_data/fundus-od) passed the limit, so every call was refused.
#
#   bash benchmarks/device_tree.sh hide      # before the session's first device call
#   bash benchmarks/device_tree.sh restore   # after its last, before committing anything
#   bash benchmarks/device_tree.sh size      # the MB a call would send, carrying .whl and .device_data/fundus-od
#
# hide takes docs/results/ out of git's index and ignores it in .git/info/exclude (the files stay on disk), and
# installs a pre-commit hook that refuses every commit until restore: a commit meanwhile would delete docs/results/
# from the repository. restore puts the index back as HEAD has it and removes both (so stage new files under
# docs/results/ after restore: changes staged there before hide come back unstaged, still on disk).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
HIDDEN=docs/results
EXCLUDE=.git/info/exclude
HOOK=$(git rev-parse --git-path hooks/pre-commit)  # a fresh clone may have no hooks/ folder yet
MARK="# device_tree.sh: $HIDDEN/ is hidden from the index"

case "${1:-}" in
  hide)
    if grep -qxF "/$HIDDEN/" "$EXCLUDE" 2>/dev/null; then
      echo "$HIDDEN/ is already hidden (bash $0 restore puts it back)"
      exit 0
    fi
    if [ -e "$HOOK" ]; then
      echo "$HOOK exists; this script would replace it. Fix: move it away, then run hide again." >&2
      exit 1
    fi
    mkdir -p "$(dirname "$HOOK")"
    git rm -r --cached -q "$HIDDEN"
    echo "/$HIDDEN/" >> "$EXCLUDE"
    printf '#!/bin/sh\n%s\necho "%s: %s/ is out of the index for device calls; a commit now would delete it. Fix: bash benchmarks/device_tree.sh restore" >&2\nexit 1\n' \
      "$MARK" "$HOOK" "$HIDDEN" > "$HOOK"
    chmod +x "$HOOK"
    echo "$HIDDEN/ hidden from device calls; commits refused until: bash $0 restore"
    ;;
  restore)
    git reset -q -- "$HIDDEN"
    if [ -f "$EXCLUDE" ]; then
      grep -vxF "/$HIDDEN/" "$EXCLUDE" > "$EXCLUDE.tmp" || true
      mv "$EXCLUDE.tmp" "$EXCLUDE"
    fi
    if [ -f "$HOOK" ] && grep -qxF "$MARK" "$HOOK"; then rm "$HOOK"; fi
    echo "$HIDDEN/ back in the index; commits allowed"
    ;;
  size)
    tracked=$({ git ls-files -z; git ls-files -z --others --exclude-standard; } | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
    carried=$(du -cb .whl .device_data/fundus-od 2>/dev/null | tail -1 | cut -f1)
    echo "tree $((tracked / 1000000)) MB + carried $((carried / 1000000)) MB = $(((tracked + carried) / 1000000)) MB (limit 64 MiB = 67 MB)"
    ;;
  *)
    echo "usage: bash $0 hide|restore|size" >&2
    exit 2
    ;;
esac
