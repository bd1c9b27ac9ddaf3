#!/usr/bin/env bash
# bundler vs skopeo on the same data, same machine, same run (issue 5).
# Runnable by anyone; NOT part of the test suite.
#
#   scripts/bench.sh
#
# Parameters (environment):
#   N_IMAGES=12        images; each = one shared base layer + one unique layer
#   SHARED_MIB=64      size of the shared base layer
#   UNIQUE_MIB=28      size of each image's unique layer (12 x 28 ~ 340 MiB)
#   ROUNDS=3           rounds per timed case (bundler and skopeo alternate)
#   BIG_GIB=2          the one-layer image of the peak-RSS case
#   BENCH_CASES="1 2 3 4 5 6"   which cases to run (2 and 6 need 1's data)
#   BENCH_SKIP_BUNDLER=1        time only skopeo, sha256sum and the floor
#   BENCH_CONCURRENCY=N         pass --concurrency N to bundler
#   FLOOR_THREADS=8             parallel PUTs of the floor tool
#   BUNDLER_BIN=path            use this bundler binary instead of building
#                               target/release/bundler
#
# Cases:
#   1. sync N images from a bundle into an empty registry
#      vs `skopeo copy oci:<layout>:<ref> docker://...` for each image in turn
#   2. re-sync of the same unchanged images vs the same skopeo copies again
#   3. pack from a registry into a bundle vs skopeo copying each image into
#      one OCI layout; bundle size vs unique blob bytes
#   4. peak RSS (/usr/bin/time -v) of sync with one BIG_GIB layer
#   5. `bundler verify` throughput vs parallel sha256sum of the same blobs
#   6. the floor: the same blobs PUT by plain parallel HTTP
#      (scripts/bench/floor.py); bundler sync throughput as % of it
#
# Every timed run gets a fresh docker-registry on 127.0.0.1 (plain HTTP).
# Output: a markdown table of medians and ratios on stdout and in
# target/bench/results.md; raw figures in target/bench/results.tsv; logs in
# target/bench/work/logs/. Generated data is cached in target/bench/data/.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

N_IMAGES="${N_IMAGES:-12}"
SHARED_MIB="${SHARED_MIB:-64}"
UNIQUE_MIB="${UNIQUE_MIB:-28}"
ROUNDS="${ROUNDS:-3}"
BIG_GIB="${BIG_GIB:-2}"
BENCH_CASES="${BENCH_CASES:-1 2 3 4 5 6}"
BENCH_SKIP_BUNDLER="${BENCH_SKIP_BUNDLER:-0}"
FLOOR_THREADS="${FLOOR_THREADS:-8}"
NPROC="$(nproc)"

OUT="$ROOT/target/bench"
DATA="$OUT/data/n${N_IMAGES}-s${SHARED_MIB}-u${UNIQUE_MIB}"
BIGDATA="$OUT/data/big-${BIG_GIB}g"
WORK="$OUT/work"
LOGS="$WORK/logs"
RESULTS="$OUT/results.tsv"
INFO="$OUT/info.tsv"

say() { echo "bench: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }
has_case() { [[ " $BENCH_CASES " == *" $1 "* ]]; }
skip_bundler() { [ "$BENCH_SKIP_BUNDLER" = 1 ]; }

for tool in docker-registry skopeo python3 curl; do
    command -v "$tool" >/dev/null || die "$tool is needed (scripts/setup.sh installs docker-registry and skopeo)"
done
if has_case 4 && [ ! -x /usr/bin/time ]; then
    say "installing GNU time for the peak-RSS case"
    apt-get install -y time >/dev/null 2>&1 || (apt-get update >/dev/null && apt-get install -y time >/dev/null) ||
        die "/usr/bin/time is needed for case 4 (apt-get install time)"
fi

rm -rf "$WORK"
mkdir -p "$WORK" "$LOGS" "$OUT/data"
: >"$RESULTS"
: >"$INFO"
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RESULTS"; }
info() { printf '%s\t%s\n' "$1" "$2" >>"$INFO"; }

# ---------------------------------------------------------------- registries
REG_PIDS=()
cleanup() {
    for p in "${REG_PIDS[@]}"; do
        kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_registry: a fresh, empty registry; sets REG_PORT, REG_DIR, REG_PID.
# (Call it directly, never in $(...), so the variables reach the caller.)
start_registry() {
    REG_DIR="$(mktemp -d "$WORK/reg.XXXXXX")"
    REG_PORT="$(free_port)"
    cat >"$REG_DIR/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $REG_DIR/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$REG_PORT
  secret: bench
EOF
    docker-registry serve "$REG_DIR/config.yml" >"$REG_DIR/registry.log" 2>&1 &
    REG_PID=$!
    REG_PIDS+=("$REG_PID")
    for _ in $(seq 1 200); do
        curl -fsS "http://127.0.0.1:$REG_PORT/v2/" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    cat "$REG_DIR/registry.log" >&2
    die "docker-registry did not start on 127.0.0.1:$REG_PORT"
}

stop_registry() { # PID DIR
    kill "$1" 2>/dev/null
    wait "$1" 2>/dev/null
    rm -rf "$2"
}

# ------------------------------------------------------------------ helpers
now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$2"; }

BUNDLER_FAILED=0
BUNDLER=""
# run_bundler LABEL ARGS...: run bundler, log to $LOGS/LABEL.log; on failure
# say which command failed, where the log is, and its last lines.
run_bundler() {
    local label="$1"
    shift
    local log="$LOGS/$label.log"
    "$BUNDLER" "$@" >"$log" 2>&1
    local st=$?
    if [ "$st" -ne 0 ]; then
        BUNDLER_FAILED=1
        say "FAILED: bundler $* (exit $st); log $log; last lines:"
        tail -n 15 "$log" | sed 's/^/    | /' >&2
    fi
    return "$st"
}

# time_cmd VAR CMD...: run CMD, put its wall time (s) in VAR, return its status.
time_cmd() {
    local __var="$1"
    shift
    local t0 t1 st
    t0="$(now)"
    "$@"
    st=$?
    t1="$(now)"
    printf -v "$__var" '%s' "$(elapsed "$t0" "$t1")"
    return "$st"
}

json_get() { # FILE PYTHON-EXPR over `d`
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"
}

skopeo_push_all() { # PORT: copy every image from its layout, one after another
    local port="$1" i layout ref
    for i in $(seq 0 $((N_IMAGES - 1))); do
        layout="$DATA/img$i"
        ref="$(json_get "$DATA/images.json" "d['images'][$i]['ref']")"
        skopeo copy --quiet --preserve-digests --dest-tls-verify=false \
            "oci:$layout:$ref" "docker://127.0.0.1:$port/$ref" >>"$LOGS/skopeo.log" 2>&1 || {
            say "FAILED: skopeo copy oci:$layout:$ref (log $LOGS/skopeo.log)"
            return 1
        }
    done
}

# check_pushed PORT: every image is in the registry with its manifest digest.
check_pushed() {
    local port="$1" i ref want got bad=0
    for i in $(seq 0 $((N_IMAGES - 1))); do
        ref="$(json_get "$DATA/images.json" "d['images'][$i]['ref']")"
        want="$(json_get "$DATA/images.json" "d['images'][$i]['manifest_digest']")"
        got="$(skopeo inspect --raw --tls-verify=false "docker://127.0.0.1:$port/$ref" 2>/dev/null | sha256sum | cut -d' ' -f1)"
        if [ "sha256:$got" != "$want" ]; then
            say "WRONG RESULT: 127.0.0.1:$port/$ref has manifest sha256:$got, expected $want"
            bad=1
        fi
    done
    return "$bad"
}

write_sync_config() { # FILE PORT BUNDLE_DIR
    cat >"$1" <<EOF
source:
  intermediateBundlesPath: $3
target:
  containerPrefixRegistry: 127.0.0.1:$2
  repo:
    kind: LOCAL
    path: $WORK/charts-$2
EOF
}

write_archive_manifest() { # FILE DATA_DIR NAME COUNT
    {
        echo "apiVersion: bundler/v1"
        echo "kind: BundleManifest"
        echo "metadata: {name: $3, version: 1.0.0}"
        echo "spec:"
        echo "  platforms: [linux/amd64]"
        echo "  images:"
        for i in $(seq 0 $(($4 - 1))); do
            echo "    - archive: $2/img$i"
        done
    } >"$1"
}

# pack_archives NAME DATA_DIR COUNT OUTDIR: bundler pack from the OCI
# layouts (untimed set-up); the *.bundle.tar files end up alone in OUTDIR.
pack_archives() {
    local name="$1" data="$2" count="$3" dest="$4"
    local m="$WORK/$name-manifest.yaml" out="$WORK/$name-pack"
    write_archive_manifest "$m" "$data" "$name" "$count"
    rm -rf "$out" "$dest"
    mkdir -p "$out" "$dest"
    local extra=()
    [ -n "${BENCH_CONCURRENCY:-}" ] && extra=(--concurrency "$BENCH_CONCURRENCY")
    run_bundler "pack-$name" pack "$m" --output "$out" "${extra[@]}" || return 1
    local n=0 f
    for f in "$out"/*.bundle.tar; do
        [ -f "$f" ] || continue
        mv "$f" "$dest/"
        n=$((n + 1))
    done
    rm -rf "$out"
    if [ "$n" -eq 0 ]; then
        BUNDLER_FAILED=1
        say "FAILED: bundler pack $m wrote no *.bundle.tar in $out"
        return 1
    fi
}

bundle_bytes() { # DIR
    python3 -c 'import glob,os,sys; print(sum(os.path.getsize(f) for f in glob.glob(os.path.join(sys.argv[1], "*.bundle.tar"))))' "$1"
}

max_rss_mib() { # TIME_V_OUTPUT_FILE
    python3 -c '
import re, sys
m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(sys.argv[1]).read())
print(f"{int(m.group(1)) / 1024:.1f}" if m else "FAIL")' "$1"
}

# -------------------------------------------------------------------- build
if ! skip_bundler && [ -n "${BUNDLER_BIN:-}" ]; then
    [ -x "$BUNDLER_BIN" ] || die "BUNDLER_BIN=$BUNDLER_BIN is not an executable"
    BUNDLER="$(cd "$(dirname "$BUNDLER_BIN")" && pwd)/$(basename "$BUNDLER_BIN")"
    say "using $BUNDLER (not rebuilt)"
    info "bundler" "$("$BUNDLER" --version 2>/dev/null | head -1) ($BUNDLER)"
elif ! skip_bundler; then
    say "building bundler (cargo build --release)"
    cargo build --release >"$LOGS/build.log" 2>&1 || {
        tail -n 30 "$LOGS/build.log" >&2
        die "cargo build --release failed (log $LOGS/build.log)"
    }
    BUNDLER="$ROOT/target/release/bundler"
    info "bundler" "$("$BUNDLER" --version 2>/dev/null | head -1)"
fi
info "skopeo" "$(skopeo --version)"
info "registry" "$(docker-registry --version 2>/dev/null | head -1)"
info "machine" "$NPROC cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
info "params" "N_IMAGES=$N_IMAGES SHARED_MIB=$SHARED_MIB UNIQUE_MIB=$UNIQUE_MIB ROUNDS=$ROUNDS BIG_GIB=$BIG_GIB"

# --------------------------------------------------------------------- data
say "generating $N_IMAGES images (shared ${SHARED_MIB} MiB + ${UNIQUE_MIB} MiB each) in $DATA"
python3 scripts/bench/gen_images.py "$DATA" --images "$N_IMAGES" \
    --shared-mib "$SHARED_MIB" --unique-mib "$UNIQUE_MIB" || die "data generation failed"
UNIQUE_BYTES="$(json_get "$DATA/images.json" "d['unique_bytes']")"
info "unique_bytes" "$UNIQUE_BYTES"

BUNDLES="$WORK/bundles"
HAVE_BUNDLE=0
if ! skip_bundler && { has_case 1 || has_case 2 || has_case 5 || has_case 6; }; then
    say "packing the benchmark bundle from the OCI layouts (untimed)"
    pack_archives bench "$DATA" "$N_IMAGES" "$BUNDLES" && HAVE_BUNDLE=1
    [ "$HAVE_BUNDLE" = 1 ] && info "bundle_bytes_archives" "$(bundle_bytes "$BUNDLES")"
fi

# ------------------------------------------------------- cases 1, 2 and 6
bench_sync_bundler() { # ROUND
    local r="$1" t
    if [ "$HAVE_BUNDLE" != 1 ]; then
        record 1 bundler "$r" FAIL
        record 2 bundler "$r" FAIL
        return
    fi
    start_registry
    local pid="$REG_PID" dir="$REG_DIR" port="$REG_PORT" cfg="$WORK/sync-$REG_PORT.yaml"
    write_sync_config "$cfg" "$port" "$BUNDLES"
    local extra=()
    [ -n "${BENCH_CONCURRENCY:-}" ] && extra=(--concurrency "$BENCH_CONCURRENCY")
    if time_cmd t run_bundler "sync-r$r" sync --config "$cfg" --insecure --json "${extra[@]}"; then
        if check_pushed "$port"; then record 1 bundler "$r" "$t"; else record 1 bundler "$r" FAIL; fi
        if time_cmd t run_bundler "resync-r$r" sync --config "$cfg" --insecure --json "${extra[@]}"; then
            record 2 bundler "$r" "$t"
        else
            record 2 bundler "$r" FAIL
        fi
    else
        record 1 bundler "$r" FAIL
        record 2 bundler "$r" FAIL
    fi
    stop_registry "$pid" "$dir"
}

bench_sync_skopeo() { # ROUND
    local r="$1" t
    start_registry
    local pid="$REG_PID" dir="$REG_DIR" port="$REG_PORT"
    if time_cmd t skopeo_push_all "$port"; then
        check_pushed "$port" || say "skopeo result check failed"
        record 1 skopeo "$r" "$t"
        if time_cmd t skopeo_push_all "$port"; then record 2 skopeo "$r" "$t"; else record 2 skopeo "$r" FAIL; fi
    else
        record 1 skopeo "$r" FAIL
        record 2 skopeo "$r" FAIL
    fi
    stop_registry "$pid" "$dir"
}

bench_floor() { # ROUND
    local r="$1"
    start_registry
    local pid="$REG_PID" dir="$REG_DIR" port="$REG_PORT"
    if python3 scripts/bench/floor.py "127.0.0.1:$port" "$DATA/images.json" \
        --threads "$FLOOR_THREADS" >"$WORK/floor-r$r.json" 2>>"$LOGS/floor.log"; then
        record 6 floor "$r" "$(json_get "$WORK/floor-r$r.json" "d['seconds']")"
    else
        say "FAILED: floor.py (log $LOGS/floor.log)"
        record 6 floor "$r" FAIL
    fi
    stop_registry "$pid" "$dir"
}

if has_case 1 || has_case 2 || has_case 6; then
    for r in $(seq 1 "$ROUNDS"); do
        say "round $r/$ROUNDS: sync / re-sync"
        if [ $((r % 2)) = 1 ]; then
            skip_bundler || bench_sync_bundler "$r"
            bench_sync_skopeo "$r"
        else
            bench_sync_skopeo "$r"
            skip_bundler || bench_sync_bundler "$r"
        fi
        has_case 6 && bench_floor "$r"
    done
fi

# ------------------------------------------------------------------- case 3
if has_case 3; then
    say "case 3: source registry for pack"
    start_registry
    SRC_PID="$REG_PID" SRC_DIR="$REG_DIR" SRC_PORT="$REG_PORT"
    PACK_M="$WORK/pack-registry-manifest.yaml"
    {
        echo "apiVersion: bundler/v1"
        echo "kind: BundleManifest"
        echo "metadata: {name: benchreg, version: 1.0.0}"
        echo "spec:"
        echo "  platforms: [linux/amd64]"
        echo "  images:"
    } >"$PACK_M"
    for i in $(seq 0 $((N_IMAGES - 1))); do
        skopeo copy --quiet --preserve-digests --dest-tls-verify=false \
            "oci:$DATA/img$i:$(json_get "$DATA/images.json" "d['images'][$i]['ref']")" \
            "docker://127.0.0.1:$SRC_PORT/bench/img$i:1" >>"$LOGS/skopeo.log" 2>&1 ||
            die "could not fill the source registry (log $LOGS/skopeo.log)"
        echo "    - 127.0.0.1:$SRC_PORT/bench/img$i:1" >>"$PACK_M"
    done
    pack_bundler() {
        local r="$1" t out="$WORK/pack-out-r$r"
        rm -rf "$out"
        mkdir -p "$out"
        local extra=()
        [ -n "${BENCH_CONCURRENCY:-}" ] && extra=(--concurrency "$BENCH_CONCURRENCY")
        if time_cmd t run_bundler "pack-registry-r$r" pack "$PACK_M" --output "$out" --insecure "${extra[@]}"; then
            record 3 bundler "$r" "$t"
            record 3b bundler "$r" "$(bundle_bytes "$out")"
        else
            record 3 bundler "$r" FAIL
        fi
        rm -rf "$out"
    }
    pack_skopeo() {
        local r="$1" t out="$WORK/skopeo-pack-r$r"
        rm -rf "$out"
        copy_all() {
            local i
            for i in $(seq 0 $((N_IMAGES - 1))); do
                skopeo copy --quiet --preserve-digests --src-tls-verify=false \
                    "docker://127.0.0.1:$SRC_PORT/bench/img$i:1" "oci:$out:img$i" >>"$LOGS/skopeo.log" 2>&1 || return 1
            done
        }
        if time_cmd t copy_all; then record 3 skopeo "$r" "$t"; else
            say "FAILED: skopeo copy into $out (log $LOGS/skopeo.log)"
            record 3 skopeo "$r" FAIL
        fi
        rm -rf "$out"
    }
    for r in $(seq 1 "$ROUNDS"); do
        say "round $r/$ROUNDS: pack from a registry"
        if [ $((r % 2)) = 1 ]; then
            skip_bundler || pack_bundler "$r"
            pack_skopeo "$r"
        else
            pack_skopeo "$r"
            skip_bundler || pack_bundler "$r"
        fi
    done
    stop_registry "$SRC_PID" "$SRC_DIR"
fi

# ------------------------------------------------------------------- case 4
if has_case 4; then
    say "case 4: generating one ${BIG_GIB} GiB layer in $BIGDATA"
    python3 scripts/bench/gen_images.py "$BIGDATA" --images 1 --shared-mib 0 \
        --unique-mib "$(python3 -c "print(float('$BIG_GIB') * 1024)")" --ref-prefix bench.example.com/big ||
        die "big data generation failed"
    BIG_REF="$(json_get "$BIGDATA/images.json" "d['images'][0]['ref']")"
    if ! skip_bundler; then
        if pack_archives big "$BIGDATA" 1 "$WORK/big-bundles"; then
            start_registry
            pid="$REG_PID" dir="$REG_DIR" port="$REG_PORT"
            write_sync_config "$WORK/sync-big.yaml" "$port" "$WORK/big-bundles"
            if /usr/bin/time -v -o "$WORK/rss-bundler.txt" "$BUNDLER" sync --config "$WORK/sync-big.yaml" \
                --insecure --json >"$LOGS/sync-big.log" 2>&1; then
                record 4 bundler 1 "$(max_rss_mib "$WORK/rss-bundler.txt")"
            else
                BUNDLER_FAILED=1
                say "FAILED: bundler sync of the ${BIG_GIB} GiB bundle (log $LOGS/sync-big.log):"
                tail -n 15 "$LOGS/sync-big.log" | sed 's/^/    | /' >&2
                record 4 bundler 1 FAIL
            fi
            stop_registry "$pid" "$dir"
            rm -rf "$WORK/big-bundles"
        else
            record 4 bundler 1 FAIL
        fi
    fi
    start_registry
    pid="$REG_PID" dir="$REG_DIR" port="$REG_PORT"
    if /usr/bin/time -v -o "$WORK/rss-skopeo.txt" skopeo copy --quiet --preserve-digests \
        --dest-tls-verify=false "oci:$BIGDATA/img0:$BIG_REF" "docker://127.0.0.1:$port/$BIG_REF" \
        >>"$LOGS/skopeo.log" 2>&1; then
        record 4 skopeo 1 "$(max_rss_mib "$WORK/rss-skopeo.txt")"
    else
        record 4 skopeo 1 FAIL
    fi
    stop_registry "$pid" "$dir"
fi

# ------------------------------------------------------------------- case 5
if has_case 5; then
    sha_all() {
        find "$DATA/pool" -type f -name '[0-9a-f]*' -print0 |
            xargs -0 -P"$NPROC" -n1 sha256sum >/dev/null
    }
    verify_bundler() {
        local r="$1" t
        if [ "$HAVE_BUNDLE" != 1 ]; then
            record 5 bundler "$r" FAIL
            return
        fi
        if time_cmd t run_bundler "verify-r$r" verify "$BUNDLES"/*.bundle.tar; then
            record 5 bundler "$r" "$t"
        else
            record 5 bundler "$r" FAIL
        fi
    }
    verify_sha() {
        local r="$1" t
        if time_cmd t sha_all; then record 5 sha256sum "$r" "$t"; else record 5 sha256sum "$r" FAIL; fi
    }
    sha_all # warm the page cache for both
    for r in $(seq 1 "$ROUNDS"); do
        say "round $r/$ROUNDS: verify"
        if [ $((r % 2)) = 1 ]; then
            skip_bundler || verify_bundler "$r"
            verify_sha "$r"
        else
            verify_sha "$r"
            skip_bundler || verify_bundler "$r"
        fi
    done
fi

# ------------------------------------------------------------------- report
python3 scripts/bench/report.py "$RESULTS" "$INFO" >"$OUT/results.md" || die "report failed"
cat "$OUT/results.md"
say "results in $OUT/results.md (raw: $RESULTS)"
if [ "$BUNDLER_FAILED" = 1 ]; then
    say "some bundler commands FAILED; see the messages above and $LOGS/"
    exit 1
fi
