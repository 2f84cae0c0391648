#!/usr/bin/env bash
# The prepared GPU check (issue "Speed"): native wgpu on a lent GPU machine, with the full-size
# MGM-2B-shaped random bundle: decode tok/s and bytes read per token, prefill, and an image to its
# first token. The GPU machine reaches no network, so it runs what this machine built:
#   scripts/gpu-bench.sh prepare  here: release binaries, the Vulkan loader and the tokenizer
#                                 into .devbin/ (ignored by git; 16 MB, compressed)
#   scripts/gpu-bench.sh run      there: makes the bundle (random weights, ~2 min), then the
#                                 benchmarks; their tables go to stdout and to $OUT (or
#                                 out/gpu-bench/): text.txt, kernels.txt, image.txt.
# The workplace's device tool: run `scripts/gpu-bench.sh run` with carry [".devbin"].
# `run` works here too (lavapipe, slowly): BUNDLE=DIR reuses a converted bundle, QUICK=1 runs
# shorter prompts and fewer kernel shapes (a check of the script, not a measurement).
set -euo pipefail
cd "$(dirname "$0")/.."
dev=.devbin

case "${1:-}" in
prepare)
  cargo build --release -p mgm --bin mgm --example random_checkpoint
  scripts/fetch-tokenizer.sh
  rm -rf "$dev"
  mkdir -p "$dev"
  cp target/release/mgm target/release/examples/random_checkpoint tests/fixtures/.tokenizer/tokenizer.json "$dev/"
  strip "$dev/mgm" "$dev/random_checkpoint"
  # What travels is limited (64 MiB with the working tree): xz takes 95 MB to about a quarter.
  xz -T2 -6 "$dev/mgm" "$dev/random_checkpoint" "$dev/tokenizer.json"
  # The Vulkan loader: the GPU machine's image has NVIDIA's driver but may lack libvulkan.so.1.
  lists=$(mktemp -d); mkdir -p "$lists/partial"
  o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$lists")
  apt-get "${o[@]}" update >/dev/null
  (cd "$dev" && apt-get "${o[@]}" download libvulkan1 2>/dev/null)
  rm -rf "$lists"
  du -sh "$dev"
  ;;
run)
  out=${OUT:-out/gpu-bench}
  mkdir -p "$out"
  if [ -z "$(ldconfig -p | grep libvulkan.so.1)" ]; then
    for f in "$dev"/*.deb; do dpkg -x "$f" /; done
    ldconfig
  fi
  icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  if [ -f "$icd" ] && [ -z "${VK_DRIVER_FILES:-}" ]; then export VK_DRIVER_FILES=$icd; fi
  nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv 2>/dev/null | tee "$out/gpu.txt" || true
  bin=/tmp/mgm-gpu/bin
  mkdir -p "$bin"
  for f in mgm random_checkpoint tokenizer.json; do xz -dc "$dev/$f.xz" >"$bin/$f"; done
  chmod +x "$bin/mgm" "$bin/random_checkpoint"
  mgm="$bin/mgm"
  bundle=${BUNDLE:-/tmp/mgm-gpu/bundle}
  if [ ! -f "$bundle/manifest.json" ]; then
    echo "== full-size random checkpoint, then the q4 bundle (q8 vision)"
    "$bin/random_checkpoint" /tmp/mgm-gpu/checkpoint "$bin/tokenizer.json"
    "$mgm" convert --model /tmp/mgm-gpu/checkpoint --out "$bundle"
    rm -rf /tmp/mgm-gpu/checkpoint
  fi
  prompt=32 new=64
  if [ -n "${QUICK:-}" ]; then prompt=8 new=8; export MGM_SHAPES=256x512; fi
  failed=0
  # One benchmark, its output also in $out/NAME.txt; a failure is reported and the next one runs.
  step() {
    local name=$1; shift
    echo "== $name: $*"
    "$@" 2>&1 | grep -v XDG_RUNTIME_DIR | tee "$out/$name.txt" || { echo "== $name FAILED"; failed=1; }
  }
  step text "$mgm" bench --bundle "$bundle" --backend wgpu --prompt-tokens $prompt --new-tokens $new --split-gemv
  MGM_MS=1,32 step kernels "$mgm" bench --kernels --backend wgpu
  step image "$mgm" bench --mgm --bundle "$bundle" --backend wgpu --new-tokens $((new / 4))
  exit $failed
  ;;
*)
  echo "usage: scripts/gpu-bench.sh prepare|run" >&2
  exit 2
  ;;
esac
