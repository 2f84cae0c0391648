#!/usr/bin/env bash
# The side-by-side of issue "Speed": llama.cpp's Vulkan backend on Mesa lavapipe and its CPU
# backend (../shared/peer-bench), then mgm on the same adapter and the same Gemma-2B shape, in one
# run. Numbers mean something only on an idle machine, as ratios within the run.
#   scripts/bench-peers.sh BUNDLE_DIR      a full-size q4 bundle (see README, "Benchmarks")
# PEER_DIR (default /tmp/peer-bench) must have been set up by ../shared/peer-bench/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bundle=${1:?usage: scripts/bench-peers.sh BUNDLE_DIR}
peers=${PEERS:-$(cd .. && pwd)/shared/peer-bench}
export PEER_DIR=${PEER_DIR:-/tmp/peer-bench} T=${T:-2} PP=${PP:-32} TG=${TG:-16} REPS=${REPS:-2}
cargo build -q -p mgm --bin mgm
echo "== peers (llama.cpp): $PP prompt tokens, $TG new tokens, $T threads"
"$peers/run.sh" vulkan cpu
echo "== mgm on lavapipe (the same Vulkan adapter): $PP prompt tokens, $TG new tokens"
"${CARGO_TARGET_DIR:-target}/debug/mgm" bench --bundle "$bundle" --backend wgpu --prompt-tokens "$PP" --new-tokens "$TG"
