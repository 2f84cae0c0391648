#!/usr/bin/env bash
# The test command: sets up a fresh machine (scripts/setup.sh), runs every native test on the CPU
# backend and on wgpu (lavapipe's Vulkan when there is no GPU), then builds the npm package and
# runs the browser tests in headless Chromium on WebGPU (its CPU adapter when there is no GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
scripts/setup.sh

echo "== native tests (cpu + wgpu)"
cargo test -p mgm --no-fail-fast
echo "== fuzz targets, short run (seeds + mutations; scripts/fuzz.sh is the coverage-guided fuzzer)"
cargo test -p mgm-fuzz
cargo build -p mgm --bin mgm

echo "== npm package: the shipped wasm (wasm32 release build, wasm-bindgen, wasm-opt)"
scripts/build-pkg.sh

echo "== browser tests (headless Chromium, WebGPU)"
(cd tests/browser && npm ci --no-audit --no-fund --silent)
node tests/browser/pkg.test.mjs
node tests/browser/faults.test.mjs
node tests/browser/npm.test.mjs
node tests/browser/web.test.mjs
