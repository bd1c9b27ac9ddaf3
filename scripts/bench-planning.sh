#!/bin/bash
# Planning cost of `pack --print-images` over the real charts of
# ../shared/fixtures/real-charts (issue 18: relocation planned by rendering).
# Usage: scripts/bench-planning.sh [BUNDLER_BIN ...]   (default target/debug/bundler)
# For each binary: wall and CPU seconds of 3 runs with a cold learning cache
# (a fresh BUNDLER_CACHE_DIR each run) and 3 warm runs, then per chart (cold).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
charts=${REAL_CHARTS:-$here/../shared/fixtures/real-charts}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
manifest() { # manifest FILE CHART...
  local f=$1; shift
  { echo "apiVersion: bundler/v1"; echo "kind: BundleManifest"
    echo "metadata: {name: bench, version: 1.0.0}"; echo "spec:"; echo "  charts:"
    for c in "$@"; do echo "    - name: $(basename "$c")"; echo "      path: $c"
      echo "      release: {name: rel, namespace: apps}"; done; } > "$f"
}
all=()
for c in "$charts"/*/; do all+=("${c%/}"); done
manifest "$work/all.yaml" "${all[@]}"
bins=("$@"); [ ${#bins[@]} -eq 0 ] && bins=("$here/target/debug/bundler")
for b in "${bins[@]}"; do
  echo "== $b"
  for mode in cold warm; do
    export BUNDLER_CACHE_DIR="$work/cache"
    for i in 1 2 3; do
      [ $mode = cold ] && rm -rf "$work/cache"
      /usr/bin/time -f "$mode all charts: %e s wall, %U s user, %S s sys" \
        "$b" pack "$work/all.yaml" --print-images >/dev/null 2>"$work/err" || { cat "$work/err"; exit 1; }
      tail -1 "$work/err"
    done
  done
  for c in "${all[@]}"; do
    rm -rf "$work/cache"
    manifest "$work/one.yaml" "$c"
    /usr/bin/time -f "  $(basename "$c"): %e s" "$b" pack "$work/one.yaml" --print-images >/dev/null 2>"$work/err"
    tail -1 "$work/err"
  done
done
