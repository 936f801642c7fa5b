#!/usr/bin/env bash
# Installs what building and testing doris-fe-proxy needs on a Debian machine, skipping
# whatever is already there:
#   build:  cmake (pingora-core builds zlib-ng with it)
#   tests:  curl (Stream Load and BE-style downloads), promtool (Debian package prometheus),
#           s3s-fs 0.14.1 (an S3-protocol server the S3 tests start on loopback)
# Usage: scripts/install-deps.sh [build|test]   (default: test)
set -euo pipefail

what=${1:-test}
export PATH="$HOME/.cargo/bin:$PATH"

sudo_cmd=()
if [ "$(id -u)" != 0 ]; then
    sudo_cmd=(sudo)
fi

packages=()
command -v cmake >/dev/null || packages+=(cmake)
if [ "$what" = test ]; then
    command -v curl >/dev/null || packages+=(curl)
    command -v promtool >/dev/null || packages+=(prometheus)
fi
if [ ${#packages[@]} -gt 0 ]; then
    echo "installing Debian packages: ${packages[*]}"
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}"
fi

# s3s-fs 0.15 and later need a newer rustc than the one these machines have.
if [ "$what" = test ] && ! command -v s3s-fs >/dev/null; then
    echo "installing s3s-fs 0.14.1 from crates.io"
    cargo install s3s-fs --version 0.14.1 --features binary --locked
fi
