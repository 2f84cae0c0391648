#!/usr/bin/env bash
# The test command: sets up a fresh machine (scripts/setup.sh), runs every native test on the CPU
# backend and on wgpu (lavapipe's Vulkan when there is no GPU), then builds the npm package and
# runs the browser tests in headless Chromium on WebGPU (its CPU adapter when there is no GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
scripts/setup.sh

echo "== build: native tests, fuzz targets, CLI"
cargo test -p mgm --no-run
cargo test -p mgm-fuzz --no-run
cargo build -p mgm --bin mgm

# The npm package builds (wasm32 release, LTO, wasm-opt) while the native tests run: those spend
# their time compiling shaders in lavapipe, one at a time, so one core is otherwise idle.
pkg_log=target/build-pkg.log
echo "== npm package: the shipped wasm builds in the background (log: $pkg_log)"
# In its own process group, so that a failed run stops its cargo and rustc too, not only the shell.
setsid scripts/build-pkg.sh >"$pkg_log" 2>&1 &
pkg=$!
trap 'kill -- -$pkg 2>/dev/null || true' EXIT

echo "== native tests (cpu + wgpu)"
status=0
cargo test -p mgm --no-fail-fast || status=$?
echo "== fuzz targets, short run (seeds + mutations; scripts/fuzz.sh is the coverage-guided fuzzer)"
cargo test -p mgm-fuzz || status=$?

echo "== npm package: waiting for its build"
wait $pkg || { cat "$pkg_log"; echo "scripts/build-pkg.sh failed" >&2; exit 1; }
cat "$pkg_log"
((status == 0)) || exit "$status"

echo "== browser tests (headless Chromium, WebGPU)"
(cd tests/browser && npm ci --no-audit --no-fund --silent)
node tests/browser/pkg.test.mjs
node tests/browser/faults.test.mjs
node tests/browser/npm.test.mjs
node tests/browser/web.test.mjs
