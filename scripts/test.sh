#!/usr/bin/env bash
# The test suite: sets up dependencies, type-checks, then runs every ava test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npx tsc -p .
npx ava "$@"
