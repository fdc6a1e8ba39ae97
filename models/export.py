#!/usr/bin/env python3
"""Re-export a trained checkpoint without retraining (train.py already exports).

    python models/export.py --checkpoint /tmp/vallum-train-work/vallum-pi-minilm.pt \
        --layers 4 --out models/vallum-pi-minilm

Writes <work>/<name>.fp32.onnx (torch.onnx.export, dynamo=False, opset 17), quantises it
with onnxruntime quantize_dynamic(weight_type=QInt8) into <out>/model.onnx, checks that
fp32 ONNX matches torch, recomputes pinned_scores.json and MANIFEST (the data-digest and
the thresholds in config.json are kept: they come from train.py's dev calibration).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import vallum_lib as V  # noqa: E402
import manifest as M  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--layers", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--work-dir", default="/tmp/vallum-train-work")
    a = ap.parse_args()
    out = Path(a.out)
    work = Path(a.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    model = V.load_minilm(a.layers)
    model.load_state_dict(torch.load(a.checkpoint, map_location="cpu"))
    model.eval()
    fp32 = work / f"{out.name}.fp32.onnx"
    V.export_onnx(model, fp32)
    tok = V.load_tokenizer()
    from train import PINNED
    w = V.encode_windows(tok, PINNED, 256, 128, 16)
    st = V.torch_scores(model, w)
    so = V.ort_scores(V.ort_session(fp32), w)
    print(f"torch vs onnx fp32 max abs diff {np.abs(st - so).max():.2e}")
    V.quantize_int8(fp32, out / "model.onnx")
    V.copy_tokenizer(out)
    V.pinned_scores(out, PINNED)
    M.write(out)
    print(f"{out / 'model.onnx'}: {(out / 'model.onnx').stat().st_size} bytes")


if __name__ == "__main__":
    main()
