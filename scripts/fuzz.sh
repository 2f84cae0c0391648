#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz + libFuzzer, nightly) of the targets in fuzz/src/lib.rs:
#   scripts/fuzz.sh [RUNS] [TARGET...]     default: 1000000 inputs for each of the five targets
# Starts from the seeds (fuzz/examples/seeds.rs) plus what earlier runs kept in
# target/fuzz-corpus/; a crash (panic, abort, an allocation over the cap, 10 s on one input)
# stops the run and leaves the input under fuzz/artifacts/. CI runs the stable short run instead
# (cargo test -p mgm-fuzz).
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-1000000}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(manifest safetensors config image prompt)
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
scripts/fetch-tokenizer.sh >/dev/null
corpus="${CARGO_TARGET_DIR:-target}/fuzz-corpus"
cargo run -q -p mgm-fuzz --example seeds -- "$corpus"
cargo +nightly fuzz build -s none --debug-assertions --features libfuzzer-sys
# The binaries run outside cargo, so other builds can use the target directory meanwhile.
bin="${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release"
mkdir -p fuzz/artifacts
for t in "${targets[@]}"; do
  echo "== fuzz $t ($runs inputs)"
  mkdir -p "fuzz/artifacts/$t"
  "$bin/$t" -artifact_prefix="fuzz/artifacts/$t/" -runs="$runs" -timeout=10 -print_final_stats=1 "$corpus/$t"
done
