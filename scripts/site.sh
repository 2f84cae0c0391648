#!/usr/bin/env bash
# Assembles the static demo site: web/ + the npm package (pkg/src, pkg/wasm) + one model bundle.
#   scripts/site.sh OUT_DIR [MODEL]
# MODEL: a converted bundle (has manifest.json; linked, not copied) or an HF checkpoint directory
# (converted here to q4). Default: the committed tiny MGM, whose random weights answer random text.
# Needs target/debug/mgm and pkg/wasm (scripts/build-pkg.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$1
model=${2:-}
mgm=${MGM_BIN:-${CARGO_TARGET_DIR:-target}/debug/mgm}
rm -rf "$out"
mkdir -p "$out/pkg" "$out/models"
cp -r web/. "$out/"
cp -r pkg/src pkg/wasm "$out/pkg/"
# The benchmark page's default image.
cp tests/fixtures/images/landscape.png "$out/bench.png"
note=""
if [[ -z "$model" ]]; then
  name=demo
  "$mgm" convert --model tests/fixtures/mgm_tiny --out "$out/models/$name" 2>/dev/null
  note="Demo model: the committed tiny MGM with random weights, so its answers are random text. Serve a converted MGM-2B bundle (scripts/demo.sh BUNDLE_DIR) for real answers."
elif [[ -f "$model/manifest.json" ]]; then
  name=$(basename "$(realpath "$model")")
  ln -s "$(realpath "$model")" "$out/models/$name"
elif [[ -f "$model/config.json" ]]; then
  name=$(basename "$(realpath "$model")")-q4
  bundle=target/bundles/$name
  [[ -f "$bundle/manifest.json" ]] || "$mgm" convert --model "$model" --out "$bundle"
  ln -s "$(realpath "$bundle")" "$out/models/$name"
else
  echo "error: $model is neither a bundle (manifest.json) nor an HF checkpoint (config.json)" >&2
  exit 1
fi
node -e 'console.log(JSON.stringify({ default: `models/${process.argv[1]}/`, note: process.argv[2] }))' "$name" "$note" > "$out/models/index.json"
echo "site: $out (model: models/$name/)"
