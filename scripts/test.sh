#!/usr/bin/env bash
# Every test: the Rust workspace (unit, differential, golden, CLI and bad-input tests),
# the figures of scripts/plot_sweep.py, the libCacheSim cross-check on the real
# DeepSeek-V2-Lite recording, then `record` end to end (the `record` feature: llama.cpp,
# built with cmake, a C/C++ compiler and libclang, installed here when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r scripts/requirements.txt
python3 scripts/import_graph.py
cargo test --workspace --release
python3 scripts/test_plots.py
python3 scripts/crosscheck_libcachesim.py

# `record` builds llama.cpp: cmake, a C/C++ compiler and libclang (for bindgen).
has_libclang() {
    local f
    for f in /usr/lib/llvm-*/lib/libclang.so* /usr/lib/*/libclang.so* /usr/lib64/libclang.so*; do
        [ -e "$f" ] && return 0
    done
    return 1
}
if ! command -v cmake >/dev/null || ! command -v c++ >/dev/null || ! has_libclang; then
    echo "test.sh: installing cmake, clang and libclang-dev for the record feature" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get -y -qq install cmake clang libclang-dev >/dev/null
fi
cargo test --release --features record --test record
