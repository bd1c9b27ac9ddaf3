#!/usr/bin/env bash
# Pull throughput: `bundler serve` (blobs read by position from the bundle)
# vs docker-registry holding the same images, both pulled by
# `skopeo copy docker://... dir:...`, alternating, same run (issue 15).
# Not part of the test suite.
#
#   scripts/bench/serve.sh
#
# Environment: N_IMAGES=4 SHARED_MIB=32 UNIQUE_MIB=32 ROUNDS=3
#   BUNDLER_BIN=path (default target/release/bundler, else target/debug/bundler)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
N_IMAGES="${N_IMAGES:-4}" SHARED_MIB="${SHARED_MIB:-32}" UNIQUE_MIB="${UNIQUE_MIB:-32}" ROUNDS="${ROUNDS:-3}"
BUNDLER="${BUNDLER_BIN:-}"
if [ -z "$BUNDLER" ]; then
    if [ -x "$ROOT/target/release/bundler" ]; then BUNDLER="$ROOT/target/release/bundler"; else BUNDLER="$ROOT/target/debug/bundler"; fi
fi
WORK="$(mktemp -d "${TMPDIR:-/tmp}/serve-bench.XXXXXX")"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
say() { echo "serve-bench: $*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

DATA="$WORK/data"
python3 "$ROOT/scripts/bench/gen_images.py" "$DATA" --images "$N_IMAGES" --shared-mib "$SHARED_MIB" \
    --unique-mib "$UNIQUE_MIB" --ref-prefix bench.example.com/serve >/dev/null
mapfile -t REFS < <(python3 -c 'import json,sys; [print(i["ref"]) for i in json.load(open(sys.argv[1]))["images"]]' "$DATA/images.json")

# Bundles (one pack of all layouts).
{
    echo "apiVersion: bundler/v1"; echo "kind: BundleManifest"; echo "metadata: {name: bench, version: 1.0.0}"
    echo "spec:"; echo "  images:"
    for i in $(seq 0 $((N_IMAGES - 1))); do echo "    - archive: $DATA/img$i"; done
} >"$WORK/manifest.yaml"
"$BUNDLER" pack "$WORK/manifest.yaml" --output "$WORK/bundles" >/dev/null 2>"$WORK/pack.log" || { cat "$WORK/pack.log" >&2; exit 1; }

# docker-registry with the same images.
REG_PORT="$(free_port)"
mkdir -p "$WORK/reg"
cat >"$WORK/reg/config.yml" <<CFG
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $WORK/reg/data}}
http: {addr: 127.0.0.1:$REG_PORT, secret: bench}
CFG
docker-registry serve "$WORK/reg/config.yml" >"$WORK/reg/log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$REG_PORT/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
for i in $(seq 0 $((N_IMAGES - 1))); do
    skopeo copy -q --dest-tls-verify=false "oci:$DATA/img$i:${REFS[$i]}" "docker://127.0.0.1:$REG_PORT/${REFS[$i]}"
done

# serve.
SERVE_PORT="$(free_port)"
"$BUNDLER" serve "$WORK/bundles" --listen "127.0.0.1:$SERVE_PORT" >/dev/null 2>"$WORK/serve.log" &
SERVE_PID=$!
PIDS+=("$SERVE_PID")
for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$SERVE_PORT/v2/" >/dev/null 2>&1 && break; sleep 0.1; done

pull_all() { # HOST -> "seconds bytes-written"
    local host=$1 t0 t1 bytes
    rm -rf "$WORK/pull"; mkdir -p "$WORK/pull"
    t0=$(date +%s.%N)
    for i in $(seq 0 $((N_IMAGES - 1))); do
        skopeo copy -q --src-tls-verify=false "docker://$host/${REFS[$i]}" "dir:$WORK/pull/$i"
    done
    t1=$(date +%s.%N)
    bytes=$(du -sb "$WORK/pull" | cut -f1)
    rm -rf "$WORK/pull"
    python3 -c "print(f'{$t1 - $t0:.3f}')"
    echo "$bytes" >"$WORK/pulled-bytes"
}
S=() R=()
for r in $(seq 1 "$ROUNDS"); do
    S+=("$(pull_all "127.0.0.1:$SERVE_PORT")")
    R+=("$(pull_all "127.0.0.1:$REG_PORT")")
    say "round $r: serve ${S[-1]}s, docker-registry ${R[-1]}s"
done
RSS="$(awk '/VmHWM/ {print $2}' "/proc/$SERVE_PID/status")"
BYTES="$(cat "$WORK/pulled-bytes")"
python3 - "$BYTES" "$RSS" "$BUNDLER" "${S[*]}" "${R[*]}" <<'PY'
import statistics, sys
b, rss, binary = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
s = [float(x) for x in sys.argv[4].split()]; r = [float(x) for x in sys.argv[5].split()]
ms, mr = statistics.median(s), statistics.median(r)
mib = b / 1048576
print(f"| source | median s | MiB/s | rounds (s) |\n|---|---|---|---|")
print(f"| bundler serve ({binary.split('/')[-2]}) | {ms:.2f} | {mib/ms:.0f} | {' '.join(map(str, s))} |")
print(f"| docker-registry | {mr:.2f} | {mib/mr:.0f} | {' '.join(map(str, r))} |")
print(f"{mib:.0f} MiB pulled per round ({len(s)} rounds, images pulled one after another); serve/registry throughput ratio {mr/ms:.2f}; serve peak RSS {rss} KiB")
PY
