#!/usr/bin/env bash
# Builds the wasm engine into pkg/wasm (wasm-bindgen --target web), ready for pkg/src/*.js.
#   scripts/build-pkg.sh            dev profile (what the tests use; shares CI's wasm build)
#   scripts/build-pkg.sh --release  size-optimised build for shipping
set -euo pipefail
cd "$(dirname "$0")/.."
profile=debug
args=()
if [[ "${1:-}" == "--release" ]]; then profile=release; args=(--release); fi
cargo build -p mgm --lib --target wasm32-unknown-unknown "${args[@]}"
wasm-bindgen --target web --out-dir pkg/wasm --out-name mgm "${CARGO_TARGET_DIR:-target}/wasm32-unknown-unknown/$profile/mgm.wasm"
ls -l pkg/wasm/mgm_bg.wasm
