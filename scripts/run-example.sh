#!/usr/bin/env bash
# Builds doris-fe-proxy and runs it on the bundled example: the files in
# examples/small_files, the token of examples/VERSION, the proxy on 127.0.0.1:8030 and
# metrics on 127.0.0.1:9091. Stop it with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

scripts/install-deps.sh build
exec cargo run --release -- -c conf/example.yaml
