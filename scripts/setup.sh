#!/usr/bin/env bash
# Installs reidb's dependencies when they are missing or older than package-lock.json, and
# checks that the native modules (better-sqlite3, hnswlib-node, sharp) load on this Node.
set -euo pipefail
cd "$(dirname "$0")/.."

stamp=node_modules/.reidb-installed
if [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ] || [ package.json -nt "$stamp" ]; then
  echo "reidb setup: installing dependencies (npm ci)" >&2
  ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund >&2
  touch "$stamp"
fi

check='require("better-sqlite3"); require("hnswlib-node"); require("sharp")'
if ! node -e "$check" 2>/dev/null; then
  echo "reidb setup: building native modules for $(node --version)" >&2
  npm rebuild better-sqlite3 hnswlib-node >&2
  node -e "$check"
fi
