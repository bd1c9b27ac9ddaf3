#!/usr/bin/env bash
# Run bundler's whole test suite: unit tests and the integration tests that
# drive the real registry, skopeo and helm (installed by scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --locked --all-targets "$@"
