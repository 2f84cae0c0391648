#!/usr/bin/env bash
# Builds the wasm engine into pkg/wasm (wasm-bindgen --target web), ready for pkg/src/*.js.
#   scripts/build-pkg.sh            the shipped module: profile wasm-release (size-optimised, LTO),
#                                   then wasm-opt -Oz (npm's binaryen, pinned in pkg/package-lock.json)
#   scripts/build-pkg.sh --dev      dev profile, no wasm-opt: quicker to build, 4x larger
#   scripts/build-pkg.sh --names    the shipped module with its function names kept (for profiles)
#   MGM_FEATURES=fusion scripts/…   with the crate's cargo features (A/B runs of Burn's fusion)
# Prints the module's raw, gzip and brotli sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=wasm-release
[[ "${1:-}" == "--dev" ]] && profile=dev
names=(); [[ "${1:-}" == "--names" ]] && names=(-g)
cargo build -p mgm --lib --target wasm32-unknown-unknown --profile "$profile" ${MGM_FEATURES:+--features "$MGM_FEATURES"}
dir=$profile; [[ $profile == dev ]] && dir=debug
built="${CARGO_TARGET_DIR:-target}/wasm32-unknown-unknown/$dir/mgm.wasm"
# A module the linker took for a one-call "command" runs every static constructor at the top of
# every export (its name section then holds `….command_export` wrappers): src/web.rs `start`
# prevents that; this catches its loss, which costs milliseconds per kernel launch in a browser.
if grep -q 'command_export' "$built"; then
  echo "error: $built wraps its exports in static-constructor calls (see start() in crate/src/web.rs)" >&2
  exit 1
fi
wasm-bindgen --target web --out-dir pkg/wasm --out-name mgm "$built"
wasm=pkg/wasm/mgm_bg.wasm
if [[ $profile == wasm-release ]]; then
  [[ -x pkg/node_modules/.bin/wasm-opt ]] || (cd pkg && npm ci --no-audit --no-fund --silent)
  # The features rustc's wasm32 target enables by default; wasm-opt must not assume more.
  pkg/node_modules/.bin/wasm-opt -Oz "${names[@]}" --enable-bulk-memory --enable-multivalue --enable-mutable-globals \
    --enable-nontrapping-float-to-int --enable-reference-types --enable-sign-ext "$wasm" -o "$wasm.opt"
  mv "$wasm.opt" "$wasm"
fi
node -e '
const fs = require("fs"), zlib = require("zlib");
const b = fs.readFileSync(process.argv[1]);
const mb = (n) => (n / 1e6).toFixed(2) + " MB";
console.log(`${process.argv[1]}: ${mb(b.length)} raw, ${mb(zlib.gzipSync(b, { level: 9 }).length)} gzip -9, ${mb(zlib.brotliCompressSync(b).length)} brotli`);
' "$wasm"
