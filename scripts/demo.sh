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

# The first 13 people by name: 12 to enrol, the 13th as a stranger. Arrays, not pipes into
# head, so that no pipe closes early under pipefail.
mapfile -t everyone < <(find "$data" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort)
people=("${everyone[@]:0:12}")
stranger="${everyone[12]}"

work="$(mktemp -d)"
mkdir -p "$work/enrol" "$work/probes"
for p in "${people[@]}"; do
  mkdir -p "$work/enrol/$p"
  mapfile -t photos < <(find "$data/$p" -maxdepth 1 -type f -name '*.jpg' -printf '%f\n' | sort)
  last=$(( ${#photos[@]} - 1 ))
  for f in "${photos[@]:0:$last}"; do ln -s "$(realpath "$data/$p/$f")" "$work/enrol/$p/$f"; done
  ln -s "$(realpath "$data/$p/${photos[$last]}")" "$work/probes/${photos[$last]}"
done
mapfile -t stranger_photos < <(find "$data/$stranger" -maxdepth 1 -type f -name '*.jpg' -printf '%f\n' | sort)
ln -s "$(realpath "$data/$stranger/${stranger_photos[0]}")" "$work/probes/not-enrolled-${stranger_photos[0]}"

echo "== enrol: $work/enrol (12 identities) into gallery $work/gallery"
node bin/reidb.js enroll --db "$work/gallery" --layout folder "$work/enrol"

echo
echo "== search: one held-back photo per identity, plus one person who is not enrolled"
echo "   (the file name starts with the person's name; scores are cosine similarities: on LFW,"
echo "   0.904 lets 1 in 100 impostors through and 0.920 1 in 1,000; see the README)"
node bin/reidb.js search --db "$work/gallery" --top-k 3 "$work"/probes/*

echo
echo "gallery kept at $work/gallery (remove it with: rm -rf $work)"
