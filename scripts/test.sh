#!/usr/bin/env bash
# Runs every check and test of doris-fe-proxy: formatting, clippy, unit and integration
# tests. Installs the test tools first (see scripts/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

scripts/install-deps.sh test
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets
