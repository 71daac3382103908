#!/usr/bin/env bash
# Re-runs every benchmark whose figures the README quotes, writing JSON and reports to OUT
# (default out/bench). Takes about 50 minutes on a 2-core machine.
#   bash bench/reproduce.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out="${1:-out/bench}"
data=../shared/data
mkdir -p "$out"

run() {
  local name=$1
  shift
  echo "== $name: $*" >&2
  /usr/bin/time -f "$name: %e s wall, %M KB max RSS" "$@" > "$out/$name.json"
}

run enrol-speed npx tsx bench/enrol-speed.ts --root $data/lfw_multi --limit 600 \
  --export "$out/real-embeddings.json"
run lfw npx reidb bench --layout folder $data/lfw_multi --pairs $data/lfw_multi/pairs.csv \
  --out "$out/lfw" --json
run lfw-raw npx reidb bench --layout folder $data/lfw_multi --pairs $data/lfw_multi/pairs.csv \
  --align raw --out "$out/lfw-raw" --json
run lfw-distractors npx reidb bench --layout folder $data/lfw_multi \
  --distractors $data/lfw_distractors --out "$out/lfw-distractors" --json
run pointing04 npx reidb bench --layout folder $data/pointing04_headpose \
  --protocol frontal-gallery --out "$out/pointing04" --json
run mfr2 npx reidb bench --layout folder $data/mfr2_masked --pairs $data/mfr2_masked/pairs.csv \
  --out "$out/mfr2" --json
run cuhk01 npx reidb bench --layout cuhk01 $data/cuhk01_reid --out "$out/cuhk01" --json
run train npx reidb train --layout folder $data/celeba_wild --out "$out/fusion-celeba.reidbfus" \
  --cache "$out/celeba-features.json" --epochs 30 --json
for w in 0.5,0.5 0.6,0.4 0.7,0.3; do
  run "train-glorot-$w" npx reidb train --layout folder $data/celeba_wild \
    --out "$out/fusion-glorot-$w.reidbfus" --cache "$out/celeba-features.json" --epochs 30 \
    --init glorot --loss-weights "$w" --json
done
run train-augmented npx reidb train --layout folder $data/celeba_wild --out "$out/fusion-aug.reidbfus" \
  --cache "$out/celeba-features-aug2.json" --augment 2 --contact-sheet "$out/augment-sheet.png" \
  --epochs 30 --json
run lfw-ablation npx reidb bench --layout folder $data/lfw_multi --pairs $data/lfw_multi/pairs.csv \
  --ablation --fusion "$out/fusion-celeba.reidbfus" --occlusion-levels 0.2,0.4,0.6 --json
run pointing04-ablation npx reidb bench --layout folder $data/pointing04_headpose \
  --protocol frontal-gallery --ablation --fusion "$out/fusion-celeba.reidbfus" --json
run mfr2-ablation npx reidb bench --layout folder $data/mfr2_masked \
  --pairs $data/mfr2_masked/pairs.csv --ablation --fusion "$out/fusion-celeba.reidbfus" --json
run search-speed npx tsx bench/search-speed.ts --faces 100000 --dim 254 --ef 64 \
  --real "$out/real-embeddings.json"
run load npx tsx bench/load.ts --out "$out/load-report.json"
echo "figures in $out" >&2
