#!/usr/bin/env bash
# Builds the vallum wheel (abi3, CPython >= 3.9) with the default classifier model bundled in
# vallum/model. Usage: bash bindings-python/build_wheel.sh [OUT_DIR]   (needs maturin)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/dist}"
rm -rf "$here/python/vallum/model"
mkdir -p "$here/python/vallum/model"
for f in MANIFEST config.json model.onnx tokenizer.json; do
  cp "$here/../models/vallum-pi-minilm/$f" "$here/python/vallum/model/"
done
cd "$here"
maturin build --release --quiet -o "$out"
echo "vallum: wheel written to $out" >&2
