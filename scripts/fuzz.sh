#!/usr/bin/env bash
# Fuzz bundler's parsers of untrusted input for a bounded time (issue 6).
# Not part of CI.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# SECONDS: time per target (default 60). TARGETs default to all of:
#   reference_parse  bundler::oci::reference::Reference::parse
#   hints_parse      bundler::chart::hints::Hints::parse
#   config_load      bundler::config::{SyncConfig,BundleManifest}::load
#   bundle_reader    bundler::bundle::reader::BundleReader::open (+ verify)
#
# Environment:
#   FUZZ_SANITIZER  address (default) | none   (falls back to none when the
#                   address sanitizer cannot be built here)
#   FUZZ_JOBS       parallel fuzzing jobs per target (default 1)
#   FUZZ_PROFILE    release (default) | dev
#
# Only the stable toolchain exists here; cargo-fuzz needs nightly flags
# (-Zsanitizer, -Cpasses=sancov...), so this runs it with RUSTC_BOOTSTRAP=1,
# which lets stable accept them.
#
# A crash (or leak, timeout, OOM) is copied to tests/fuzz-regressions/<target>/
# and the script says how to reproduce it and turn it into a regression test.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

SECS="${1:-60}"
shift || true
ALL_TARGETS=(reference_parse hints_parse config_load bundle_reader)
if [ "$#" -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL_TARGETS[@]}"); fi
SANITIZER="${FUZZ_SANITIZER:-address}"
JOBS="${FUZZ_JOBS:-1}"
PROFILE="${FUZZ_PROFILE:-release}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz (cargo install cargo-fuzz --locked)"
    cargo install cargo-fuzz --locked
fi

FEATURES=()
if grep -q 'pub fn verify(' src/bundle/verify.rs 2>/dev/null; then
    FEATURES=(--features verify)
    echo "== bundle_reader will also run bundler::bundle::verify::verify"
fi

PROFILE_FLAGS=()
[ "$PROFILE" = dev ] && PROFILE_FLAGS=(--dev)

build() {
    cargo fuzz build "${PROFILE_FLAGS[@]}" "${FEATURES[@]}" --sanitizer "$SANITIZER" "$@"
}

echo "== building fuzz targets (sanitizer: $SANITIZER, profile: $PROFILE)"
if ! build; then
    if [ "$SANITIZER" != none ]; then
        echo "== the $SANITIZER sanitizer does not build here; retrying with --sanitizer none"
        SANITIZER=none
        build
    else
        exit 1
    fi
fi

max_len() {
    case "$1" in
        bundle_reader) echo 1048576 ;;
        config_load | hints_parse) echo 65536 ;;
        *) echo 4096 ;;
    esac
}

crashed=()
copied=()
for t in "${TARGETS[@]}"; do
    corpus="fuzz/corpus/$t"
    seeds="fuzz/seeds/$t"
    mkdir -p "$corpus" "fuzz/artifacts/$t"
    # Real-world inputs from the shared fixtures, when they are there.
    case "$t" in
        bundle_reader)
            for f in ../shared/fixtures/relok8s/*.tar; do
                [ -f "$f" ] && cp -n "$f" "$corpus/" 2>/dev/null || true
            done ;;
        config_load)
            for f in ../shared/fixtures/charts-syncer/*.yaml bundle-manifests/*.yaml; do
                [ -f "$f" ] && cp -n "$f" "$corpus/" 2>/dev/null || true
            done ;;
        hints_parse)
            for f in ../shared/fixtures/relok8s/*/.relok8s-images.yaml bundle-manifests/hints/*.yaml; do
                [ -f "$f" ] && cp -n "$f" "$corpus/$(echo "$f" | tr '/' '_')" 2>/dev/null || true
            done ;;
    esac
    # -jobs makes libFuzzer log each job to ./fuzz-<n>.log: only above 1.
    JOB_FLAGS=()
    [ "$JOBS" -gt 1 ] && JOB_FLAGS=(-jobs="$JOBS" -workers="$JOBS")
    before="$(ls "fuzz/artifacts/$t" | sort)"
    echo "== fuzzing $t for ${SECS}s"
    set +e
    cargo fuzz run "${PROFILE_FLAGS[@]}" "${FEATURES[@]}" --sanitizer "$SANITIZER" "$t" \
        "$corpus" "$seeds" -- \
        -max_total_time="$SECS" -max_len="$(max_len "$t")" -timeout=20 \
        -rss_limit_mb=2048 "${JOB_FLAGS[@]}" -print_final_stats=1 \
        2>&1 | tee "fuzz/artifacts/$t.log" | grep -E '^(#[0-9]+ +(DONE|INITED)|==[0-9]+==|SUMMARY|Test unit written|stat::number_of_executed_units|thread .* panicked)'
    status="${PIPESTATUS[0]}"
    set -e
    for l in fuzz-[0-9]*.log; do
        [ -f "$l" ] && mv "$l" "fuzz/artifacts/$t.$l"
    done
    after="$(ls "fuzz/artifacts/$t" | sort)"
    new="$(comm -13 <(echo "$before") <(echo "$after") | grep -v '^$' || true)"
    if [ "$status" -ne 0 ] || [ -n "$new" ]; then
        crashed+=("$t")
        mkdir -p "tests/fuzz-regressions/$t"
        for a in $new; do
            cp "fuzz/artifacts/$t/$a" "tests/fuzz-regressions/$t/$a"
            echo "!! $t: $a -> tests/fuzz-regressions/$t/$a"
            copied+=("$t tests/fuzz-regressions/$t/$a")
        done
        echo "!! $t failed (exit $status); log: fuzz/artifacts/$t.log"
    fi
done

if [ "${#crashed[@]}" -gt 0 ]; then
    cat <<EOF

== CRASHES in: ${crashed[*]}
Reproduce (and minimise with \`cargo fuzz tmin\` instead of \`run\`):
$(for c in "${copied[@]}"; do echo "    RUSTC_BOOTSTRAP=1 cargo fuzz run ${FEATURES[*]} --sanitizer $SANITIZER $c"; done)
Turn it into a regression test: keep the file under tests/fuzz-regressions/<target>/
(commit it) and add to tests/fuzz_regressions.rs a test that feeds every file of
that directory to the same call as fuzz/fuzz_targets/<target>.rs and only asks
that it returns (Ok or Err) without panicking, e.g.

    #[test]
    fn bundle_reader_regressions() {
        for f in std::fs::read_dir("tests/fuzz-regressions/bundle_reader").unwrap() {
            let f = f.unwrap().path();
            let tmp = tempfile::tempdir().unwrap();
            let p = tmp.path().join("x.bundle.tar");
            std::fs::copy(&f, &p).unwrap();
            let _ = bundler::bundle::reader::BundleReader::open(&p); // must not panic
        }
    }

then fix the code until it passes.
EOF
    exit 1
fi
echo "== no crash in: ${TARGETS[*]} (${SECS}s each)"
