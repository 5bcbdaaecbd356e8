#!/usr/bin/env bash
# Regenerate the fixtures and the seed script's expected output on them.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
seed="${SEED_SCRIPT:-$root/../shared/seed/analyze_experts.py}"
python3 "$root/scripts/make_fixtures.py" "$root/traces"
(cd "$root/traces/golden" && python3 "$seed") > "$root/traces/golden/seed_output.expected"
cat "$root/traces/golden/seed_output.expected"
