"""PyTorch side of the classifier comparison; run by run.py with the torch interpreter
(default /work/venv-train/bin/python, override VALLUM_TORCH_PYTHON).

Uses models/vallum_lib.py (the code that trained the model): tokenisation with tokenizer.json,
padding off, the engine's windowing, PIClassifier forward + sigmoid, one thread.
Weights: the fine-tuned fp32 checkpoint if one is found (VALLUM_TORCH_CHECKPOINT, else
/tmp/vallum-train-work/vallum-pi-minilm.pt), otherwise all-MiniLM-L6-v2 base weights truncated to
2 layers with an untrained head (same architecture and cost, not the same scores).

usage: torch_worker.py IN.json OUT.json
"""
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "models"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import vallum_lib as V  # noqa: E402


def main():
    job = json.loads(Path(sys.argv[1]).read_text())
    cfg = json.loads((REPO / "models/vallum-pi-minilm/config.json").read_text())
    ckpt = os.environ.get("VALLUM_TORCH_CHECKPOINT", "/tmp/vallum-train-work/vallum-pi-minilm.pt")
    model = V.PIClassifier(layers=2)
    if ckpt and Path(ckpt).exists():
        model.load_state_dict(torch.load(ckpt, map_location="cpu"))
        weights = f"fine-tuned fp32 checkpoint ({Path(ckpt).name})"
    else:
        model = V.load_minilm(2)
        weights = "base all-MiniLM-L6-v2 truncated to 2 layers (untrained head; same cost, different scores)"
    model.eval()
    tok = V.load_tokenizer(REPO / "models/vallum-pi-minilm/tokenizer.json")

    @torch.no_grad()
    def score(text):
        ws = V.windows(tok.encode(text).ids, cfg["max_length"], cfg["window_stride"], cfg["max_windows"])
        best = 0.0
        by_len = {}
        for w in ws:
            by_len.setdefault(len(w), []).append(w)
        for group in by_len.values():
            ids, mask, tt = V.batch_arrays(group)
            p = model(torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(tt)).numpy()
            best = max(best, float(p.max()))
        return best

    out = {"weights": weights, "threads": torch.get_num_threads(), "torch": torch.__version__, "latency": {}}
    for size, spec in job["latency"].items():
        text, iters, warm = spec["text"], spec["iters"], spec["warmup"]
        for _ in range(warm):
            score(text)
        lat = []
        for _ in range(iters):
            t = time.perf_counter()
            score(text)
            lat.append(time.perf_counter() - t)
        out["latency"][size] = lat
        print(f"  torch {size} tokens: p50 {np.median(lat) * 1e3:.2f} ms", flush=True)
    texts = job["throughput"]
    t = time.perf_counter()
    scores = [score(x) for x in texts]
    out["throughput_s"] = time.perf_counter() - t
    out["scores"] = scores
    Path(sys.argv[2]).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
