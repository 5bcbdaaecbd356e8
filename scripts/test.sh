#!/usr/bin/env bash
# Every test: the Rust workspace (unit, differential, golden, CLI and bad-input tests),
# the figures of scripts/plot_sweep.py, then the libCacheSim cross-check on the real
# DeepSeek-V2-Lite recording.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r scripts/requirements.txt
python3 scripts/import_graph.py
cargo test --workspace --release
python3 scripts/test_plots.py
python3 scripts/crosscheck_libcachesim.py
