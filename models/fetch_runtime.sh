#!/usr/bin/env bash
# Puts the ONNX Runtime shared library into the project-local folder .ort/lib/, taken from the
# PyPI `onnxruntime` wheel (a registry package: no other download). The engine looks there
# (see core/src/classifier/onnx.rs). Idempotent.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.ort/lib"
version="${ONNXRUNTIME_VERSION:-1.32.0}"
if compgen -G "$dest/libonnxruntime.so*" >/dev/null; then
  echo "vallum: ONNX Runtime already present in $dest" >&2
  exit 0
fi
echo "vallum: fetching ONNX Runtime $version (PyPI onnxruntime wheel) into $dest ..." >&2
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "onnxruntime==$version" >&2
mkdir -p "$dest"
python3 - "$tmp" "$dest" <<'PY'
import glob, os, sys, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(tmp, "onnxruntime-*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if "/capi/" in name and base.startswith("libonnxruntime.so"):
            with z.open(name) as src, open(os.path.join(dest, base), "wb") as out:
                out.write(src.read())
            print(f"vallum: installed {base}", file=sys.stderr)
PY
