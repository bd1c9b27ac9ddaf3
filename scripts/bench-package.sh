#!/usr/bin/env bash
# The offline package on removable media (issue 21): a ~2 GiB product packed
# as volumes with parity, then verified, synced with two volumes missing, and
# repaired; sizes, parity overhead, times and peak RSS of every step.
# Runnable by anyone; NOT part of the test suite.
#
#   scripts/bench-package.sh            # ~2 GiB: 4 images x 500 MiB + 16 MiB shared
#   UNIQUE_MIB=100 scripts/bench-package.sh   # smaller
#
# Parameters (environment): IMAGES=4 SHARED_MIB=16 UNIQUE_MIB=500
#   VOLUME=512M PARITY=2  BUNDLER_BIN=path (default: target/release/bundler,
#   else target/debug/bundler)  WORK=dir (default: a temp dir under /tmp,
#   removed at the end; needs ~4.5x the product size free)
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
IMAGES="${IMAGES:-4}" SHARED_MIB="${SHARED_MIB:-16}" UNIQUE_MIB="${UNIQUE_MIB:-500}"
VOLUME="${VOLUME:-512M}" PARITY="${PARITY:-2}"
die() { echo "bench-package: $*" >&2; exit 1; }
for t in docker-registry python3 curl /usr/bin/time; do
    command -v "$t" >/dev/null || die "$t is needed (scripts/setup.sh)"
done
BUNDLER="${BUNDLER_BIN:-}"
if [ -z "$BUNDLER" ]; then
    if [ -x target/release/bundler ]; then BUNDLER=target/release/bundler; else
        cargo build -q || die "build failed"; BUNDLER=target/debug/bundler
    fi
fi
BUNDLER="$(cd "$(dirname "$BUNDLER")" && pwd)/$(basename "$BUNDLER")"
OWN_WORK=0
if [ -z "${WORK:-}" ]; then WORK="$(mktemp -d /tmp/bench-package.XXXXXX)"; OWN_WORK=1; fi
mkdir -p "$WORK"
REG_PIDS=()
cleanup() {
    for p in "${REG_PIDS[@]}"; do kill "$p" 2>/dev/null; done
    [ "$OWN_WORK" = 1 ] && rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_mib() { python3 -c 'import re,sys; m=re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(sys.argv[1]).read()); print(f"{int(m.group(1))/1024:.1f}")' "$1"; }
now() { echo "$EPOCHREALTIME"; }
secs() { python3 -c "print(f'{$2-$1:.1f}')"; }
RESULTS=()
# measure NAME CMD...: time and peak RSS of one bundler run (exit status kept in RC).
measure() {
    local name="$1"; shift
    local t0 t1
    t0=$(now)
    /usr/bin/time -v -o "$WORK/$name.time" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err"
    RC=$?
    t1=$(now)
    RESULTS+=("$(printf '%-28s %8s s  peak RSS %8s MiB  exit %s' "$name" "$(secs "$t0" "$t1")" "$(rss_mib "$WORK/$name.time")" "$RC")")
}

# start_registry NAME: a fresh docker-registry; writes $WORK/NAME.yaml, a
# load-image.yaml syncing the medium into it.
start_registry() {
    local dir="$WORK/reg-$1" port
    port=$(free_port)
    mkdir -p "$dir"
    cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/data
http:
  addr: 127.0.0.1:$port
  secret: bench
EOF
    docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
    REG_PIDS+=("$!")
    for _ in $(seq 1 200); do curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break; sleep 0.05; done
    printf 'source:\n  intermediateBundlesPath: %s\ntarget:\n  containerPrefixRegistry: 127.0.0.1:%s/site\n' "$MEDIA" "$port" >"$WORK/$1.yaml"
}

echo "data: $IMAGES images x $UNIQUE_MIB MiB + $SHARED_MIB MiB shared, volumes of $VOLUME + $PARITY parity, in $WORK"
python3 scripts/bench/gen_images.py "$WORK/data" --images "$IMAGES" --shared-mib "$SHARED_MIB" \
    --unique-mib "$UNIQUE_MIB" --ref-prefix example.com/bench >/dev/null || die "data generation failed"
{
    printf 'apiVersion: bundler/v1\nkind: BundleManifest\nmetadata: {name: media, version: 1.0.0}\nspec:\n  images:\n'
    for d in "$WORK"/data/img*/; do printf '    - archive: %s\n' "${d%/}"; done
} >"$WORK/media.yaml"

OUT="$WORK/out"
measure pack-split "$BUNDLER" pack "$WORK/media.yaml" -o "$OUT" --split "$VOLUME" --parity "$PARITY"
[ "$RC" = 0 ] || { cat "$WORK/pack-split.err"; die "pack failed"; }
MEDIA="$WORK/media"
mkdir -p "$MEDIA"
mv "$OUT"/media_1.0.0_amd64.tar.* "$MEDIA"/
rm -rf "$OUT" "$WORK/data"   # what is left is what the medium carries
DATA_BYTES=$(cat "$MEDIA"/media_1.0.0_amd64.tar.[0-9]* | wc -c)
PAR_BYTES=$(cat "$MEDIA"/media_1.0.0_amd64.tar.par* 2>/dev/null | wc -c)
NDATA=$(ls "$MEDIA"/media_1.0.0_amd64.tar.[0-9]* | wc -l)

measure verify-whole "$BUNDLER" verify "$MEDIA"
start_registry whole
measure sync-whole "$BUNDLER" sync -c "$WORK/whole.yaml" --insecure --json
rm -rf "$WORK/reg-whole/data"
ls "$MEDIA"/media_1.0.0_amd64.tar.[0-9]* | head -2 >"$WORK/victims"
mkdir -p "$WORK/aside"
sha256sum $(cat "$WORK/victims") >"$WORK/victims.sha"
while read -r v; do mv "$v" "$WORK/aside/"; done <"$WORK/victims"
measure verify-2-missing "$BUNDLER" verify "$MEDIA"

start_registry missing
measure sync-2-missing "$BUNDLER" sync -c "$WORK/missing.yaml" --insecure --json
rm -rf "$WORK/reg-missing/data"
measure repair-2 "$BUNDLER" repair "$MEDIA"
if sha256sum -c --quiet "$WORK/victims.sha"; then IDENT=yes; else IDENT=NO; fi
measure verify-after-repair "$BUNDLER" verify "$MEDIA"

echo
echo "volumes: $NDATA data volumes, $DATA_BYTES bytes; $PARITY parity volumes, $PAR_BYTES bytes"
python3 -c "print(f'parity overhead: {$PAR_BYTES/$DATA_BYTES*100:.1f}% of the package')"
echo "repaired volumes byte-identical: $IDENT"
echo "binary: $BUNDLER"
printf '%s\n' "${RESULTS[@]}"
grep -h "is missing\|DAMAGED" "$WORK/verify-2-missing.err" | head -3
python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print("sync pushed", len(s.get("images",[])), "images,", s.get("bytesUploaded"), "bytes uploaded,", s.get("bytesRead"), "bytes read")' "$WORK/sync-2-missing.out" 2>/dev/null || true
