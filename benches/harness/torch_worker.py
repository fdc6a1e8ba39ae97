"""PyTorch side of the classifier comparison; run by run.py with the torch interpreter
(benches/harness/.venv-torch, which run.py creates, or VALLUM_TORCH_PYTHON).

Uses models/vallum_lib.py (the code that trained the model): tokenisation with tokenizer.json,
padding off, the engine's windowing, PIClassifier forward + sigmoid, one thread, fp32.
Weights: by default those of the shipped models/vallum-pi-minilm/model.onnx, dequantized
((q - zero_point) * scale per tensor), so PyTorch runs the same model as Vallum and
onnxruntime; with VALLUM_TORCH_CHECKPOINT, the fine-tuned fp32 checkpoint train.py saved
(what the int8 model was quantized from; not in the repository).

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


# Output-name stem of each quantized MatMul in the exported graph -> PIClassifier parameter.
_LINEAR = {"query": "attention.self.query", "key": "attention.self.key",
           "value": "attention.self.value", "dense": "attention.output.dense",
           "dense_1": "intermediate.dense", "dense_2": "output.dense"}


def state_dict_from_onnx(path):
    """PIClassifier state dict from the int8 model.onnx that export.py writes.

    Float initializers named m.<param> (biases, LayerNorm) are taken as they are; a quantized
    tensor X_quantized with X_scale and X_zero_point becomes (X_quantized - zero_point) * scale.
    The anonymous MatMul weights (onnx::MatMul_N) are named from the MatMulInteger that reads
    them, whose output is /m/layer.L/<linear>/MatMul...; ONNX keeps them [in, out], torch.nn.Linear
    [out, in]. Raises KeyError if the graph holds a tensor this mapping does not know.
    """
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(path)).graph
    init = {t.name: numpy_helper.to_array(t) for t in g.initializer}

    def deq(stem):
        q = init[stem + "_quantized"].astype(np.float32)
        return (q - np.float32(init[stem + "_zero_point"])) * np.float32(init[stem + "_scale"])

    sd = {}
    for name, a in init.items():
        if name.startswith("m.") and a.dtype == np.float32 and a.ndim > 0:
            sd[name[2:]] = a
        elif name.startswith("m.embeddings.") and name.endswith("_quantized"):
            sd[name[2:-len("_quantized")]] = deq(name[:-len("_quantized")])
    sd["classifier.weight"] = deq("m.classifier.weight_Transposed").T
    for n in g.node:
        if n.op_type != "MatMulInteger" or not n.input[1].startswith("onnx::MatMul_"):
            continue
        parts = n.output[0].split("/")  # ['', 'm', 'layer.L', '<linear>', 'MatMul_output_...']
        layer = parts[2].split(".")[1]
        sd[f"encoder.layer.{layer}.{_LINEAR[parts[3]]}.weight"] = deq(n.input[1][:-len("_quantized")]).T
    return {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in sd.items()}  # writable copies


def main():
    job = json.loads(Path(sys.argv[1]).read_text())
    cfg = json.loads((REPO / "models/vallum-pi-minilm/config.json").read_text())
    ckpt = os.environ.get("VALLUM_TORCH_CHECKPOINT")
    model = V.PIClassifier(layers=2)
    if ckpt:
        model.load_state_dict(torch.load(ckpt, map_location="cpu"))
        weights = f"fine-tuned fp32 checkpoint ({Path(ckpt).name})"
    else:
        onnx_path = REPO / "models/vallum-pi-minilm/model.onnx"
        model.load_state_dict(state_dict_from_onnx(onnx_path))  # strict: every tensor mapped
        weights = f"{onnx_path.relative_to(REPO)} dequantized to fp32 (the same model)"
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
