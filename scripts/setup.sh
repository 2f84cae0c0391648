#!/usr/bin/env bash
# Installs what building and testing need, on a fresh Debian machine; each step is skipped when
# already done. Needs root for apt (as on the project's machines).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

# Chromium (browser tests), and Mesa's lavapipe so native wgpu runs on Vulkan without a GPU.
need=()
for p in chromium chromium-driver mesa-vulkan-drivers; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if ((${#need[@]})); then
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown

# wasm-bindgen-cli must equal the wasm-bindgen in Cargo.lock. No --locked: the registry here
# lacks a version its lockfile pins.
wbg=$(awk '$0=="name = \"wasm-bindgen\""{getline; gsub(/[^0-9.]/,""); print; exit}' Cargo.lock)
if ! wasm-bindgen --version 2>/dev/null | grep -qx "wasm-bindgen $wbg"; then
  cargo install -q wasm-bindgen-cli --version "$wbg"
fi

scripts/fetch-tokenizer.sh
