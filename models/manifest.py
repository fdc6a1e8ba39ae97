#!/usr/bin/env python3
"""Write or check a model bundle's MANIFEST.

Format (one line each, two spaces between fields):
    <sha256>  <size_bytes>  model.onnx
    <sha256>  <size_bytes>  tokenizer.json
    <sha256>  <size_bytes>  config.json
    data-digest <sha256>

data-digest = sha256 of the UTF-8 text made of one line
"<relative/path.jsonl>  <sha256 of file>\\n" per training data file, sorted by
path (paths relative to the data dir, e.g. "xstest/xstest.jsonl"). A model
trained on no data (the tiny test model) uses the digest of the empty list,
i.e. sha256 of the empty string.

Usage:
    python models/manifest.py models/vallum-pi-minilm            # regenerate
    python models/manifest.py models/vallum-pi-minilm --check    # verify
    --data-dir DIR  recompute data-digest from DIR (otherwise the digest already
                    in MANIFEST is kept when regenerating and not checked)
Standard library only.
"""
from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path

FILES = ["model.onnx", "tokenizer.json", "config.json"]
EMPTY_DIGEST = hashlib.sha256(b"").hexdigest()


def sha256_file(p) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def data_files(data_dir):
    d = Path(data_dir)
    return sorted(p.relative_to(d).as_posix() for p in d.glob("*/*.jsonl"))


def data_digest(data_dir=None, files=None) -> str:
    if data_dir is None:
        return EMPTY_DIGEST
    d = Path(data_dir)
    names = files if files is not None else data_files(d)
    text = "".join(f"{n}  {sha256_file(d / n)}\n" for n in sorted(names))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def render(model_dir, digest) -> str:
    lines = []
    for name in FILES:
        p = Path(model_dir, name)
        lines.append(f"{sha256_file(p)}  {p.stat().st_size}  {name}")
    lines.append(f"data-digest {digest}")
    return "\n".join(lines) + "\n"


def read_digest(manifest: Path):
    if not manifest.exists():
        return None
    m = re.search(r"^data-digest ([0-9a-f]{64})$", manifest.read_text(), re.M)
    return m.group(1) if m else None


def write(model_dir, digest=None):
    mf = Path(model_dir, "MANIFEST")
    if digest is None:
        digest = read_digest(mf) or EMPTY_DIGEST
    mf.write_text(render(model_dir, digest))
    return mf


def check(model_dir, data_dir=None) -> list[str]:
    mf = Path(model_dir, "MANIFEST")
    errs = []
    if not mf.exists():
        return [f"{mf}: missing"]
    lines = mf.read_text().splitlines()
    seen = set()
    digest = None
    for ln in lines:
        m = re.fullmatch(r"([0-9a-f]{64})  (\d+)  (\S+)", ln)
        if m:
            sha, size, name = m.group(1), int(m.group(2)), m.group(3)
            p = Path(model_dir, name)
            seen.add(name)
            if not p.exists():
                errs.append(f"{name}: missing")
                continue
            if p.stat().st_size != size:
                errs.append(f"{name}: size {p.stat().st_size} != {size}")
            if sha256_file(p) != sha:
                errs.append(f"{name}: sha256 mismatch")
            continue
        m = re.fullmatch(r"data-digest ([0-9a-f]{64})", ln)
        if m:
            digest = m.group(1)
            continue
        errs.append(f"bad line: {ln!r}")
    for name in FILES:
        if name not in seen:
            errs.append(f"{name}: not listed")
    if digest is None:
        errs.append("data-digest line missing")
    elif data_dir is not None and digest != data_digest(data_dir):
        errs.append("data-digest does not match --data-dir")
    return errs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--data-dir")
    a = ap.parse_args(argv)
    if a.check:
        errs = check(a.model_dir, a.data_dir)
        for e in errs:
            print(f"MANIFEST check: {e}", file=sys.stderr)
        print("MANIFEST ok" if not errs else "MANIFEST FAILED")
        return 1 if errs else 0
    digest = data_digest(a.data_dir) if a.data_dir else None
    print(write(a.model_dir, digest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
