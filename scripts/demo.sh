#!/usr/bin/env bash
# The main job on real photos: enrols 12 LFW identities (all but one photo each) into a fresh
# gallery, then searches with each identity's held-back photo and with a photo of someone
# who is not enrolled, printing the ranked matches. Usage: bash scripts/demo.sh [DATA_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

data="${1:-../shared/data}/lfw_multi"
if [ ! -d "$data" ]; then
  echo "demo: $data not found; pass the folder that holds lfw_multi/ as the first argument" >&2
  exit 2
fi

work="$(mktemp -d -t reidb-demo-XXXXXX)"
mkdir -p "$work/enrol" "$work/probes"
people=$(ls "$data" | grep -v '\.' | head -n 13)
enrolled=$(echo "$people" | head -n 12)
stranger=$(echo "$people" | tail -n 1)

for p in $enrolled; do
  mkdir -p "$work/enrol/$p"
  photos=$(ls "$data/$p")
  for f in $(echo "$photos" | head -n -1); do ln -s "$(realpath "$data/$p/$f")" "$work/enrol/$p/$f"; done
  last=$(echo "$photos" | tail -n 1)
  ln -s "$(realpath "$data/$p/$last")" "$work/probes/$last"
done
first_stranger=$(ls "$data/$stranger" | head -n 1)
ln -s "$(realpath "$data/$stranger/$first_stranger")" "$work/probes/not-enrolled-$first_stranger"

echo "== enrol: $work/enrol (12 identities) into gallery $work/gallery"
node bin/reidb.js enroll --db "$work/gallery" --layout folder "$work/enrol"

echo
echo "== search: one held-back photo per identity, plus one person who is not enrolled"
node bin/reidb.js search --db "$work/gallery" --top-k 3 "$work"/probes/*

echo
echo "gallery kept at $work/gallery (remove it with: rm -rf $work)"
