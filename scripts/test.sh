#!/usr/bin/env bash
# The test suite: sets up dependencies, type-checks, then runs every ava test and ends with
# one summary line "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npx tsc -p .

log="$(mktemp)"
status=0
npx ava "$@" 2>&1 | tee "$log" || status=$?
passed=$(grep -c '✔' "$log" || true)
failed=$(grep -c '✘' "$log" || true)
rm -f "$log"
echo "ava: ${passed:-0} passed, ${failed:-0} failed"
exit "$status"
