#!/usr/bin/env bash
# The test command: sets up a fresh machine (scripts/setup.sh), builds the library for wasm32,
# then runs every test on the CPU backend and on wgpu (lavapipe's Vulkan when there is no GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
scripts/setup.sh

echo "== wasm32 build of the library"
cargo build -p mgm --lib --target wasm32-unknown-unknown

echo "== native tests (cpu + wgpu)"
cargo test -p mgm --no-fail-fast
