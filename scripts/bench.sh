#!/usr/bin/env bash
# bundler vs skopeo on the same data, same machine, same run (issues 5, 12).
# Runnable by anyone; NOT part of the test suite.
#
#   scripts/bench.sh [--quick] [--cases="sync resync ..."] [--rounds=N]
#                    [--images=N] [--unique-mib=M] [--big-gib=G] ...
#
# Every --name=value flag sets the environment parameter NAME (dashes become
# underscores): --big-gib=8 is BIG_GIB=8. --quick shrinks every size for a
# smoke run on a loaded machine (the figures are then not comparable).
#
# Parameters (environment or flags):
#   N_IMAGES=12 SHARED_MIB=48 UNIQUE_MIB=24   the base data set: N images,
#                  each one shared base layer + one unique layer
#   ROUNDS=3       rounds of each timed case (bundler and skopeo alternate)
#   SCALE_IMAGES=100 SCALE_SHARED_MIB=64 SCALE_UNIQUE_MIB=40 SCALE_ROUNDS=1
#                  the scale case (~4 GiB unique)
#   BIG_GIB=8      the one-layer image of the peak-RSS case
#   LATENCY_MS=20  delay each way of the loopback proxy (latency case)
#   FLOOR_THREADS=8  parallel PUTs of the floor
#   BENCH_CONCURRENCY=N  pass --concurrency N to bundler
#   FANOUT_TARGETS="1 2 3"  registries of the fan-out case
#   SLOW_MIB=512 SLOW_HOLD=20 SLOW_STALL=5  the slow-commit case: one
#                  layer whose every PUT the proxy holds SLOW_HOLD s before
#                  the registry gets its last bytes; bundler's answer
#                  timeout is SLOW_STALL s + size at 50 MiB/s
#   BENCH_CASES="sync resync floor latency scale rss pack verify fanout slowcommit"
#   BUNDLER_BIN=path  use this binary instead of building target/release/bundler
#
# Cases (each timed run gets a fresh docker-registry on 127.0.0.1):
#   sync     bundler sync of the N images into an empty registry, vs
#            `skopeo copy --preserve-digests oci:<layout>:<ref> docker://...`
#            for each image, one after another (as users script it)
#   resync   the same again into the now-full registry (nothing to do)
#   floor    the same blobs PUT by plain parallel HTTP (bench/floor.py):
#            bundler's sync throughput as % of it
#   latency  sync and re-sync through a TCP proxy adding LATENCY_MS each way
#            (bench/latency_proxy.py), both tools, and the floor through it
#   scale    sync and re-sync of SCALE_IMAGES images, both tools
#   rss      peak RSS (/usr/bin/time -v) of a sync of one BIG_GIB layer
#   pack     pack from a registry vs skopeo copying each image to a layout,
#            and vs its floor: the same blobs GET by plain parallel HTTP
#            into files (bench/pack_floor.py, FLOOR_THREADS)
#   fanout   sync of the base bundle to 1, 2 and 3 fresh registries at once
#            (target.mirrors): time and bytes read
#   slowcommit  sync of one SLOW_MIB layer through bench/slow_commit_proxy.py:
#            bundler waiting for the commit (HEAD with backoff) vs the same
#            with BUNDLER_COMMIT_WAIT=0 (upload again at once, as other
#            tools do): time to success and bytes uploaded
#   verify   bundler verify vs parallel sha256sum of the same blobs
# Bytes read per byte pushed come from bundler's own `bytesRead` (rchar of
# /proc/self/io at exit, every read/pread of files and sockets) and
# `bytesUploaded` in its --json summary: nothing extra runs for them.
#
# Honest timing: a timed span runs only the tool under test. Timestamps come
# from bash's $EPOCHREALTIME (no process); image lists are read before the
# span; results are checked after it (bench/check_pushed.py).
#
# Output: a table of ratios and every raw run, on stdout and in
# target/bench/results.md; raw figures in target/bench/results.tsv; logs in
# target/bench/work/logs/. Generated data is cached in target/bench/data/.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

for a in "$@"; do
    case "$a" in
    --quick)
        : "${N_IMAGES:=4}" "${SHARED_MIB:=8}" "${UNIQUE_MIB:=4}" "${ROUNDS:=1}"
        : "${SCALE_IMAGES:=20}" "${SCALE_SHARED_MIB:=8}" "${SCALE_UNIQUE_MIB:=2}"
        : "${BIG_GIB:=0.25}"
        ;;
    --*=*)
        k="${a%%=*}"
        k="${k#--}"
        k="${k^^}"
        k="${k//-/_}"
        [ "$k" = CASES ] && k=BENCH_CASES
        [ "$k" = IMAGES ] && k=N_IMAGES
        [ "$k" = CONCURRENCY ] && k=BENCH_CONCURRENCY
        printf -v "$k" '%s' "${a#*=}"
        ;;
    -h | --help)
        sed -n '2,/^set -uo/p' "$0" | sed 's/^# \{0,1\}//; /^set -uo/d'
        exit 0
        ;;
    *)
        echo "bench: unknown argument $a (see --help)" >&2
        exit 2
        ;;
    esac
done

N_IMAGES="${N_IMAGES:-12}"
SHARED_MIB="${SHARED_MIB:-48}"
UNIQUE_MIB="${UNIQUE_MIB:-24}"
ROUNDS="${ROUNDS:-3}"
SCALE_IMAGES="${SCALE_IMAGES:-100}"
SCALE_SHARED_MIB="${SCALE_SHARED_MIB:-64}"
SCALE_UNIQUE_MIB="${SCALE_UNIQUE_MIB:-40}"
SCALE_ROUNDS="${SCALE_ROUNDS:-1}"
BIG_GIB="${BIG_GIB:-8}"
LATENCY_MS="${LATENCY_MS:-20}"
FLOOR_THREADS="${FLOOR_THREADS:-8}"
BENCH_CASES="${BENCH_CASES:-sync resync floor latency scale rss pack verify fanout slowcommit}"
FANOUT_TARGETS="${FANOUT_TARGETS:-1 2 3}"
SLOW_MIB="${SLOW_MIB:-512}"
SLOW_HOLD="${SLOW_HOLD:-20}"
SLOW_STALL="${SLOW_STALL:-5}"
NPROC="$(nproc)"

OUT="$ROOT/target/bench"
WORK="$OUT/work"
LOGS="$WORK/logs"
RESULTS="$OUT/results.tsv"
INFO="$OUT/info.tsv"

say() { echo "bench: $*" >&2; }
die() {
    say "ERROR: $*"
    exit 1
}
has_case() { [[ " $BENCH_CASES " == *" $1 "* ]]; }

for tool in docker-registry skopeo python3 curl; do
    command -v "$tool" >/dev/null || die "$tool is needed (scripts/setup.sh installs docker-registry and skopeo)"
done
if { has_case rss || has_case scale; } && [ ! -x /usr/bin/time ]; then
    say "installing GNU time for the peak-RSS figures"
    apt-get install -y time >/dev/null 2>&1 || (apt-get update >/dev/null && apt-get install -y time >/dev/null) ||
        die "/usr/bin/time is needed (apt-get install time)"
fi

rm -rf "$WORK"
mkdir -p "$WORK" "$LOGS" "$OUT/data"
: >"$RESULTS"
: >"$INFO"
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RESULTS"; } # CASE TOOL ROUND VALUE
info() { printf '%s\t%s\n' "$1" "$2" >>"$INFO"; }

# ------------------------------------------------------- registries, proxy
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do
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
    PIDS+=("$REG_PID")
    for _ in $(seq 1 200); do
        curl -fsS "http://127.0.0.1:$REG_PORT/v2/" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    cat "$REG_DIR/registry.log" >&2
    die "docker-registry did not start on 127.0.0.1:$REG_PORT"
}

# start_proxy UPSTREAM_PORT: the latency proxy; sets PROXY_PORT, PROXY_PID.
start_proxy() {
    PROXY_PORT="$(free_port)"
    python3 scripts/bench/latency_proxy.py "$PROXY_PORT" "127.0.0.1:$1" --delay-ms "$LATENCY_MS" \
        >"$WORK/proxy-$PROXY_PORT.out" 2>>"$LOGS/proxy.log" &
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    for _ in $(seq 1 100); do
        grep -q ready "$WORK/proxy-$PROXY_PORT.out" 2>/dev/null && return 0
        sleep 0.05
    done
    die "latency proxy did not start (log $LOGS/proxy.log)"
}

stop_pid() { # PID [DIR]
    kill "$1" 2>/dev/null
    wait "$1" 2>/dev/null
    [ -n "${2:-}" ] && rm -rf "$2"
    return 0
}

# ------------------------------------------------------------------ timing
# SPAN_START / span_end VAR: wall time of what ran between them, in seconds,
# from $EPOCHREALTIME (a bash variable: no process inside the span).
span_start() { SPAN_T0="${EPOCHREALTIME/./}"; }
span_end() {
    local __t1="${EPOCHREALTIME/./}"
    local __us=$((__t1 - SPAN_T0))
    printf -v "$1" '%d.%06d' $((__us / 1000000)) $((__us % 1000000))
}

BUNDLER_FAILED=0
BUNDLER=""
EXTRA=()
[ -n "${BENCH_CONCURRENCY:-}" ] && EXTRA=(--concurrency "$BENCH_CONCURRENCY")

# bundler_timed VAR LABEL ARGS...: one timed bundler run (stdout in
# $WORK/LABEL.json, stderr in $LOGS/LABEL.log); VAR = seconds or FAIL.
bundler_timed() {
    local __var="$1" label="$2" st __t
    shift 2
    span_start
    "$BUNDLER" "$@" >"$WORK/$label.json" 2>"$LOGS/$label.log"
    st=$?
    span_end __t
    if [ "$st" -ne 0 ]; then
        BUNDLER_FAILED=1
        say "FAILED: bundler $* (exit $st); log $LOGS/$label.log; last lines:"
        tail -n 15 "$LOGS/$label.log" | sed 's/^/    | /' >&2
        __t=FAIL
    fi
    printf -v "$__var" '%s' "$__t"
}

json_field() { # FILE KEY: a top-level field of a JSON file ("" if absent)
    python3 -c 'import json,sys
try: print(json.load(open(sys.argv[1])).get(sys.argv[2], ""))
except Exception: print("")' "$1" "$2"
}

# load_refs DATA: SK_LAYOUTS[] and SK_REFS[] for the skopeo arm, read
# before any timed span.
load_refs() {
    mapfile -t SK_LAYOUTS < <(python3 -c 'import json,sys; [print(i["layout"]) for i in json.load(open(sys.argv[1]))["images"]]' "$1/images.json")
    mapfile -t SK_REFS < <(python3 -c 'import json,sys; [print(i["ref"]) for i in json.load(open(sys.argv[1]))["images"]]' "$1/images.json")
}

# skopeo_timed VAR PORT: copy every image of SK_* one after another.
skopeo_timed() {
    local __var="$1" port="$2" i st=0 __t
    span_start
    for i in "${!SK_REFS[@]}"; do
        skopeo copy --quiet --preserve-digests --dest-tls-verify=false \
            "oci:${SK_LAYOUTS[$i]}:${SK_REFS[$i]}" "docker://127.0.0.1:$port/${SK_REFS[$i]}" \
            >>"$LOGS/skopeo.log" 2>&1 || {
            st=1
            break
        }
    done
    span_end __t
    if [ "$st" -ne 0 ]; then
        say "FAILED: skopeo copy (log $LOGS/skopeo.log)"
        __t=FAIL
    fi
    printf -v "$__var" '%s' "$__t"
}

check_pushed() { # PORT DATA
    python3 scripts/bench/check_pushed.py "127.0.0.1:$1" "$2/images.json" 2>>"$LOGS/check.log" || {
        say "WRONG RESULT in 127.0.0.1:$1 (log $LOGS/check.log)"
        return 1
    }
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
    "$BUNDLER" pack "$m" --output "$out" "${EXTRA[@]}" >"$LOGS/pack-$name.log" 2>&1 || {
        BUNDLER_FAILED=1
        say "FAILED: bundler pack $m (log $LOGS/pack-$name.log)"
        return 1
    }
    mv "$out"/*.bundle.tar "$dest/" 2>/dev/null || {
        say "FAILED: bundler pack $m wrote no *.bundle.tar"
        return 1
    }
    rm -rf "$out"
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

gen_data() { # DIR IMAGES SHARED UNIQUE [PREFIX]
    python3 scripts/bench/gen_images.py "$1" --images "$2" --shared-mib "$3" --unique-mib "$4" \
        ${5:+--ref-prefix "$5"} || die "data generation failed ($1)"
}

# -------------------------------------------------------------------- build
if [ -n "${BUNDLER_BIN:-}" ]; then
    [ -x "$BUNDLER_BIN" ] || die "BUNDLER_BIN=$BUNDLER_BIN is not an executable"
    BUNDLER="$(cd "$(dirname "$BUNDLER_BIN")" && pwd)/$(basename "$BUNDLER_BIN")"
    say "using $BUNDLER (not rebuilt)"
else
    say "building bundler (cargo build --release)"
    cargo build --release >"$LOGS/build.log" 2>&1 || {
        tail -n 30 "$LOGS/build.log" >&2
        die "cargo build --release failed (log $LOGS/build.log)"
    }
    BUNDLER="$ROOT/target/release/bundler"
fi
info "bundler" "$("$BUNDLER" --version 2>/dev/null | head -1) ($(git rev-parse --short HEAD 2>/dev/null))"
info "skopeo" "$(skopeo --version)"
info "registry" "$(docker-registry --version 2>/dev/null | head -1)"
info "machine" "$NPROC cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg)"
info "params" "N_IMAGES=$N_IMAGES SHARED_MIB=$SHARED_MIB UNIQUE_MIB=$UNIQUE_MIB ROUNDS=$ROUNDS SCALE_IMAGES=$SCALE_IMAGES SCALE_UNIQUE_MIB=$SCALE_UNIQUE_MIB BIG_GIB=$BIG_GIB LATENCY_MS=$LATENCY_MS"

# ------------------------------------------------ sync / re-sync, both tools
# sync_pair CASE DATA BUNDLES ROUND VIA_PROXY: one round of both tools
# (order alternates by round), each into a fresh registry, then the re-sync
# into the filled one. Records CASE and CASE-resync, and for bundler the
# bytes it read and pushed.
sync_pair() {
    local case="$1" data="$2" bundles="$3" r="$4" proxy="$5"
    if [ $((r % 2)) = 1 ]; then
        sync_bundler "$@"
        sync_skopeo "$@"
    else
        sync_skopeo "$@"
        sync_bundler "$@"
    fi
}

# target_port VIA_PROXY: the port tools talk to (proxy or registry).
open_target() {
    start_registry
    T_REG_PID="$REG_PID" T_REG_DIR="$REG_DIR" T_REG_PORT="$REG_PORT" T_PORT="$REG_PORT" T_PROXY_PID=""
    if [ "$1" = 1 ]; then
        start_proxy "$REG_PORT"
        T_PORT="$PROXY_PORT" T_PROXY_PID="$PROXY_PID"
    fi
}
close_target() {
    [ -n "$T_PROXY_PID" ] && stop_pid "$T_PROXY_PID"
    stop_pid "$T_REG_PID" "$T_REG_DIR"
}

sync_bundler() {
    local case="$1" data="$2" bundles="$3" r="$4" proxy="$5" t
    open_target "$proxy"
    local cfg="$WORK/sync-$case-$T_PORT.yaml"
    write_sync_config "$cfg" "$T_PORT" "$bundles"
    bundler_timed t "$case-r$r" sync --config "$cfg" --insecure --json "${EXTRA[@]}"
    [ "$t" != FAIL ] && ! check_pushed "$T_REG_PORT" "$data" && t=FAIL
    record "$case" bundler "$r" "$t"
    if [ "$t" != FAIL ]; then
        record "$case.read" bundler "$r" "$(json_field "$WORK/$case-r$r.json" bytesRead)"
        record "$case.pushed" bundler "$r" "$(json_field "$WORK/$case-r$r.json" bytesUploaded)"
        bundler_timed t "$case-resync-r$r" sync --config "$cfg" --insecure --json "${EXTRA[@]}"
        record "$case-resync" bundler "$r" "$t"
        [ "$t" != FAIL ] && record "$case-resync.read" bundler "$r" "$(json_field "$WORK/$case-resync-r$r.json" bytesRead)"
    fi
    close_target
}

sync_skopeo() {
    local case="$1" data="$2" r="$4" proxy="$5" t
    open_target "$proxy"
    load_refs "$data"
    skopeo_timed t "$T_PORT"
    [ "$t" != FAIL ] && ! check_pushed "$T_REG_PORT" "$data" && t=FAIL
    record "$case" skopeo "$r" "$t"
    if [ "$t" != FAIL ]; then
        skopeo_timed t "$T_PORT"
        record "$case-resync" skopeo "$r" "$t"
    fi
    close_target
}

floor_run() { # CASE DATA ROUND VIA_PROXY
    local case="$1" data="$2" r="$3" t
    open_target "$4"
    if python3 scripts/bench/floor.py "127.0.0.1:$T_PORT" "$data/images.json" \
        --threads "$FLOOR_THREADS" >"$WORK/$case-floor-r$r.json" 2>>"$LOGS/floor.log"; then
        record "$case" floor "$r" "$(json_field "$WORK/$case-floor-r$r.json" seconds)"
    else
        say "FAILED: floor.py (log $LOGS/floor.log)"
        record "$case" floor "$r" FAIL
    fi
    close_target
}

DATA="$OUT/data/n${N_IMAGES}-s${SHARED_MIB}-u${UNIQUE_MIB}"
BUNDLES="$WORK/bundles"
if has_case sync || has_case resync || has_case floor || has_case latency || has_case verify || has_case fanout; then
    say "data: $N_IMAGES images (shared ${SHARED_MIB} MiB + ${UNIQUE_MIB} MiB each) in $DATA"
    gen_data "$DATA" "$N_IMAGES" "$SHARED_MIB" "$UNIQUE_MIB"
    info "unique_bytes" "$(json_field "$DATA/images.json" unique_bytes)"
    say "packing the benchmark bundle from the OCI layouts (untimed)"
    pack_archives bench "$DATA" "$N_IMAGES" "$BUNDLES" || die "cannot pack the benchmark bundle"
fi

if has_case sync || has_case resync || has_case floor; then
    for r in $(seq 1 "$ROUNDS"); do
        say "round $r/$ROUNDS: sync / re-sync"
        sync_pair sync "$DATA" "$BUNDLES" "$r" 0
        has_case floor && floor_run floor "$DATA" "$r" 0
    done
fi

if has_case latency; then
    for r in $(seq 1 "$ROUNDS"); do
        say "round $r/$ROUNDS: sync / re-sync through a ${LATENCY_MS} ms-each-way proxy"
        sync_pair latency "$DATA" "$BUNDLES" "$r" 1
        floor_run latency-floor "$DATA" "$r" 1
    done
fi

if has_case scale; then
    SDATA="$OUT/data/n${SCALE_IMAGES}-s${SCALE_SHARED_MIB}-u${SCALE_UNIQUE_MIB}"
    say "scale data: $SCALE_IMAGES images in $SDATA"
    gen_data "$SDATA" "$SCALE_IMAGES" "$SCALE_SHARED_MIB" "$SCALE_UNIQUE_MIB" bench.example.com/scale
    info "scale_unique_bytes" "$(json_field "$SDATA/images.json" unique_bytes)"
    if pack_archives scale "$SDATA" "$SCALE_IMAGES" "$WORK/scale-bundles"; then
        for r in $(seq 1 "$SCALE_ROUNDS"); do
            say "round $r/$SCALE_ROUNDS: scale sync / re-sync"
            sync_pair scale "$SDATA" "$WORK/scale-bundles" "$r" 0
        done
        rm -rf "$WORK/scale-bundles"
    fi
fi

# ---------------------------------------------------------------- peak RSS
if has_case rss; then
    BIGDATA="$OUT/data/big-${BIG_GIB}g"
    say "rss: one ${BIG_GIB} GiB layer in $BIGDATA"
    gen_data "$BIGDATA" 1 0 "$(python3 -c "print(float('$BIG_GIB') * 1024)")" bench.example.com/big
    info "big_bytes" "$(json_field "$BIGDATA/images.json" unique_bytes)"
    if pack_archives big "$BIGDATA" 1 "$WORK/big-bundles"; then
        open_target 0
        write_sync_config "$WORK/sync-big.yaml" "$T_PORT" "$WORK/big-bundles"
        if /usr/bin/time -v -o "$WORK/rss-bundler.txt" "$BUNDLER" sync --config "$WORK/sync-big.yaml" \
            --insecure --json >"$WORK/rss-r1.json" 2>"$LOGS/sync-big.log" && check_pushed "$T_REG_PORT" "$BIGDATA"; then
            record rss bundler 1 "$(max_rss_mib "$WORK/rss-bundler.txt")"
            record rss.read bundler 1 "$(json_field "$WORK/rss-r1.json" bytesRead)"
            record rss.pushed bundler 1 "$(json_field "$WORK/rss-r1.json" bytesUploaded)"
        else
            BUNDLER_FAILED=1
            say "FAILED: bundler sync of the ${BIG_GIB} GiB bundle (log $LOGS/sync-big.log)"
            record rss bundler 1 FAIL
        fi
        close_target
        rm -rf "$WORK/big-bundles"
    fi
    open_target 0
    load_refs "$BIGDATA"
    if /usr/bin/time -v -o "$WORK/rss-skopeo.txt" skopeo copy --quiet --preserve-digests \
        --dest-tls-verify=false "oci:${SK_LAYOUTS[0]}:${SK_REFS[0]}" "docker://127.0.0.1:$T_PORT/${SK_REFS[0]}" \
        >>"$LOGS/skopeo.log" 2>&1; then
        record rss skopeo 1 "$(max_rss_mib "$WORK/rss-skopeo.txt")"
    else
        record rss skopeo 1 FAIL
    fi
    close_target
fi

# -------------------------------------------------------------------- pack
if has_case pack; then
    PDATA="$OUT/data/n${N_IMAGES}-s${SHARED_MIB}-u${UNIQUE_MIB}"
    gen_data "$PDATA" "$N_IMAGES" "$SHARED_MIB" "$UNIQUE_MIB"
    load_refs "$PDATA"
    say "pack: filling a source registry (untimed)"
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
    SRC_REFS=()
    for i in "${!SK_REFS[@]}"; do
        skopeo copy --quiet --preserve-digests --dest-tls-verify=false \
            "oci:${SK_LAYOUTS[$i]}:${SK_REFS[$i]}" "docker://127.0.0.1:$SRC_PORT/bench/img$i:1" >>"$LOGS/skopeo.log" 2>&1 ||
            die "could not fill the source registry (log $LOGS/skopeo.log)"
        echo "    - 127.0.0.1:$SRC_PORT/bench/img$i:1" >>"$PACK_M"
        SRC_REFS+=("127.0.0.1:$SRC_PORT/bench/img$i:1")
    done
    pack_bundler() {
        local r="$1" t out="$WORK/pack-out-r$r"
        rm -rf "$out"
        mkdir -p "$out"
        bundler_timed t "pack-r$r" pack "$PACK_M" --output "$out" --insecure --json "${EXTRA[@]}"
        record pack bundler "$r" "$t"
        [ "$t" != FAIL ] && record pack.bytes bundler "$r" "$(bundle_bytes "$out")"
        rm -rf "$out"
    }
    pack_floor() {
        local r="$1"
        if python3 scripts/bench/pack_floor.py "127.0.0.1:$SRC_PORT" "$WORK/pack-floor-r$r" \
            "${SRC_REFS[@]#127.0.0.1:$SRC_PORT/}" --threads "$FLOOR_THREADS" \
            >"$WORK/pack-floor-r$r.json" 2>>"$LOGS/floor.log"; then
            record pack floor "$r" "$(json_field "$WORK/pack-floor-r$r.json" seconds)"
        else
            say "FAILED: pack_floor.py (log $LOGS/floor.log)"
            record pack floor "$r" FAIL
        fi
    }
    pack_skopeo() {
        local r="$1" t out="$WORK/skopeo-pack-r$r" i st=0
        rm -rf "$out"
        span_start
        for i in "${!SRC_REFS[@]}"; do
            skopeo copy --quiet --preserve-digests --src-tls-verify=false \
                "docker://${SRC_REFS[$i]}" "oci:$out:img$i" >>"$LOGS/skopeo.log" 2>&1 || {
                st=1
                break
            }
        done
        span_end t
        [ "$st" -ne 0 ] && t=FAIL
        record pack skopeo "$r" "$t"
        rm -rf "$out"
    }
    for r in $(seq 1 "$ROUNDS"); do
        say "round $r/$ROUNDS: pack from a registry"
        if [ $((r % 2)) = 1 ]; then
            pack_bundler "$r"
            pack_skopeo "$r"
            pack_floor "$r"
        else
            pack_floor "$r"
            pack_skopeo "$r"
            pack_bundler "$r"
        fi
    done
    stop_pid "$SRC_PID" "$SRC_DIR"
fi

# ------------------------------------------------------------------ verify
if has_case verify; then
    mapfile -t POOL < <(find "$DATA/pool" -type f -name '[0-9a-f]*')
    sha_all() { printf '%s\0' "${POOL[@]}" | xargs -0 -P"$NPROC" -n1 sha256sum >/dev/null; }
    sha_all # warm the page cache for both
    for r in $(seq 1 "$ROUNDS"); do
        say "round $r/$ROUNDS: verify"
        bundler_timed t "verify-r$r" verify "$BUNDLES"/*.bundle.tar
        record verify bundler "$r" "$t"
        span_start
        sha_all
        span_end t
        record verify sha256sum "$r" "$t"
    done
fi

# ----------------------------------------------------------------- fan-out
# fanout_run K ROUND: the base bundle into K fresh registries at once (the
# first as the target, the others as target.mirrors).
fanout_run() {
    local k="$1" r="$2" i t ports=() pids=() dirs=() cfg="$WORK/fanout-$1-r$2.yaml"
    for i in $(seq 1 "$k"); do
        start_registry
        ports+=("$REG_PORT") pids+=("$REG_PID") dirs+=("$REG_DIR")
    done
    {
        echo "source:"
        echo "  intermediateBundlesPath: $BUNDLES"
        echo "target:"
        echo "  containerPrefixRegistry: 127.0.0.1:${ports[0]}"
        echo "  repo: {kind: LOCAL, path: $WORK/charts-fanout}"
        if [ "$k" -gt 1 ]; then
            echo "  mirrors:"
            for i in "${ports[@]:1}"; do echo "    - containerPrefixRegistry: 127.0.0.1:$i"; done
        fi
    } >"$cfg"
    bundler_timed t "fanout-$k-r$r" sync --config "$cfg" --insecure --json "${EXTRA[@]}"
    if [ "$t" != FAIL ]; then
        for i in "${ports[@]}"; do check_pushed "$i" "$DATA" || t=FAIL; done
    fi
    record "fanout-$k" bundler "$r" "$t"
    [ "$t" != FAIL ] && record "fanout-$k.read" bundler "$r" "$(json_field "$WORK/fanout-$k-r$r.json" bytesRead)"
    for i in "${!pids[@]}"; do stop_pid "${pids[$i]}" "${dirs[$i]}"; done
}

if has_case fanout; then
    for r in $(seq 1 "$ROUNDS"); do
        for k in $FANOUT_TARGETS; do
            say "round $r/$ROUNDS: fan-out to $k registr$([ "$k" = 1 ] && echo y || echo ies)"
            fanout_run "$k" "$r"
        done
    done
fi

# ------------------------------------------------------------- slow commit
if has_case slowcommit; then
    SLDATA="$OUT/data/slow-${SLOW_MIB}m"
    say "slow commit: one ${SLOW_MIB} MiB layer in $SLDATA"
    gen_data "$SLDATA" 1 0 "$SLOW_MIB" bench.example.com/slow
    SLOW_HEX="$(python3 -c 'import json,sys; b=max(json.load(open(sys.argv[1]))["blobs"], key=lambda b: b["size"]); print(b["digest"].split(":")[1])' "$SLDATA/images.json")"
    if pack_archives slow "$SLDATA" 1 "$WORK/slow-bundles"; then
        slow_run() { # MODE ROUND
            local mode="$1" r="$2" t pport ppid
            open_target 0
            pport="$(free_port)"
            python3 scripts/bench/slow_commit_proxy.py "$pport" "$T_REG_PORT" "$SLOW_HEX" --hold "$SLOW_HOLD" \
                >"$WORK/slowproxy-$pport.out" 2>>"$LOGS/proxy.log" &
            ppid=$!
            for _ in $(seq 1 100); do grep -q ready "$WORK/slowproxy-$pport.out" 2>/dev/null && break; sleep 0.05; done
            write_sync_config "$WORK/sync-slow-$mode.yaml" "$pport" "$WORK/slow-bundles"
            export BUNDLER_STALL_TIMEOUT="$SLOW_STALL"
            [ "$mode" = naive ] && export BUNDLER_COMMIT_WAIT=0
            bundler_timed t "slowcommit-$mode-r$r" sync --config "$WORK/sync-slow-$mode.yaml" --insecure --json
            unset BUNDLER_STALL_TIMEOUT BUNDLER_COMMIT_WAIT
            [ "$t" != FAIL ] && ! check_pushed "$T_REG_PORT" "$SLDATA" && t=FAIL
            record "slowcommit-$mode" bundler "$r" "$t"
            [ "$t" != FAIL ] && record "slowcommit-$mode.pushed" bundler "$r" "$(json_field "$WORK/slowcommit-$mode-r$r.json" bytesUploaded)"
            stop_pid "$ppid"
            close_target
        }
        for r in $(seq 1 "$ROUNDS"); do
            say "round $r/$ROUNDS: slow commit (wait, then naive re-upload)"
            if [ $((r % 2)) = 1 ]; then
                slow_run wait "$r"
                slow_run naive "$r"
            else
                slow_run naive "$r"
                slow_run wait "$r"
            fi
        done
        rm -rf "$WORK/slow-bundles"
    fi
fi

# ------------------------------------------------------------------ report
python3 scripts/bench/report.py "$RESULTS" "$INFO" >"$OUT/results.md" || die "report failed"
cat "$OUT/results.md"
say "results in $OUT/results.md (raw: $RESULTS)"
if [ "$BUNDLER_FAILED" = 1 ]; then
    say "some bundler commands FAILED; see the messages above and $LOGS/"
    exit 1
fi
