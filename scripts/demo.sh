#!/usr/bin/env bash
# The main job: set up, build everything, and serve the demo page on http://127.0.0.1:8080/.
#   scripts/demo.sh [MODEL]   MODEL: a converted bundle or an HF MGM checkpoint (default: tiny demo)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build -p mgm --bin mgm
scripts/build-pkg.sh
scripts/site.sh target/site "${1:-}"
exec node scripts/serve.mjs target/site "${PORT:-8080}"
