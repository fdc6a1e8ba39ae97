"""PyTorch side of the classifier comparison; run by run.py with the torch interpreter
(benches/harness/.venv-torch, which run.py creates, or VALLUM_TORCH_PYTHON).

Two PyTorch rows over the same fp32 weights, timed on the same job:

1. lean: models/vallum_lib.py (the code that trained the model): tokenisation with
   tokenizer.json, padding off, the engine's windowing (equal-length windows batched), PIClassifier
   forward + sigmoid.
2. transformers: what a FastAPI team would write with Hugging Face transformers. A `BertConfig`
   matching PIClassifier's constructor (vocab 30522, hidden 384, the weights' layer count, 12 heads, intermediate
   1536, 512 positions, 2 token types, LayerNorm eps 1e-12, exact GELU), `BertModel(config,
   add_pooling_layer=False)` loaded strictly from the same state dict, masked mean pool and the
   Linear(384, 1) head, wrapped as a `BertPreTrainedModel` subclass that returns
   `SequenceClassifierOutput(logits=[batch, 1])` with num_labels=1; run through
   `transformers.pipeline("text-classification", tokenizer=PreTrainedTokenizerFast(tokenizer_object=
   <tokenizer.json, padding and truncation off>), device=-1, function_to_apply="sigmoid")` with the
   attention implementation transformers picks by default (recorded in OUT.json; "sdpa" with
   transformers 5.x). The pipeline does not window: a text of at most max_length - 2 = 254 body
   tokens is one pipeline call on the whole text; a longer one is tokenised with the tokenizers
   Tokenizer, cut by windowing.windows (applied to token positions, so the windows are exactly the
   engine's), each window mapped back to the substring of the text from its first token's start
   offset to its last token's end offset, and the list of substrings goes through the pipeline with
   batch_size=1 (its default: no padding inside a batch, so each window is scored exactly like a
   single text; the lean row batches its equal-length windows instead); score = max over windows.
   A substring that starts inside a word (a ##piece) re-tokenises differently from the engine's
   window; OUT.json counts those windows over the job's texts. Nothing is downloaded from the
   Hugging Face Hub: HF_HUB_OFFLINE=1 and TRANSFORMERS_OFFLINE=1, everything is built from local
   files. If transformers is missing or the model does not build, OUT.json["transformers"] holds
   {"error": traceback} and the lean row is still written.

One torch thread, fp32, both rows. Weights: by default those of the shipped
models/vallum-pi-minilm/model.onnx, dequantized ((q - zero_point) * scale per tensor), so PyTorch
runs the same model as Vallum and onnxruntime; with VALLUM_TORCH_CHECKPOINT, the fine-tuned fp32
checkpoint train.py saved (what the int8 model was quantized from; not in the repository).

Timing (both rows): for each job["latency"][size] = {"text", "iters", "warmup"}, `warmup` untimed
calls then `iters` timed calls (seconds per call); then one timed pass over job["throughput"]
(one call per text). OUT.json: {"weights", "layers", "threads", "torch", "latency": {size: [s, ...]},
"throughput_s", "scores": [max-over-windows probability per throughput text], "transformers":
{"version", "attn", "dtype", "device", "threads", "build_log": [warnings transformers logged while
building the pipeline], "latency", "throughput_s", "scores", "windows_retokenized": {"windows",
"differ"}} or {"error"}}. OUT.json is written after the lean row and again at
the end.

usage: torch_worker.py IN.json OUT.json
"""
import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path

# Build the transformers row from local files only: never reach the Hugging Face Hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

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


def time_job(score, job, label):
    """Times `score(text) -> float` on the job: per latency size, job["latency"][size]["warmup"]
    untimed calls, then "iters" timed calls; then one timed pass over job["throughput"].
    Returns {"latency": {size: [seconds per call]}, "throughput_s": seconds for the pass,
    "scores": [score per throughput text]}."""
    res = {"latency": {}}
    for size, spec in job["latency"].items():
        text, iters, warm = spec["text"], spec["iters"], spec["warmup"]
        for _ in range(warm):
            score(text)
        lat = []
        for _ in range(iters):
            t = time.perf_counter()
            score(text)
            lat.append(time.perf_counter() - t)
        res["latency"][size] = lat
        print(f"  {label} {size} tokens: p50 {np.median(lat) * 1e3:.2f} ms", flush=True)
    texts = job["throughput"]
    t = time.perf_counter()
    res["scores"] = [score(x) for x in texts]
    res["throughput_s"] = time.perf_counter() - t
    print(f"  {label} throughput: {len(texts) / res['throughput_s']:.1f} texts/s", flush=True)
    return res


def build_transformers_pipeline(sd, tok, layers):
    """The Hugging Face row: `transformers.pipeline("text-classification")` over a BertModel that
    holds the weights of `sd` (a PIClassifier state dict: embeddings.*, encoder.layer.N.*,
    classifier.weight [1, 384], classifier.bias [1]) and `tok` (tokenizers.Tokenizer, padding and
    truncation off). The config repeats PIClassifier's constructor defaults; BertModel takes the
    embeddings.* and encoder.* tensors under their own names, strictly (a missing, extra or
    misshapen tensor raises RuntimeError naming it), the head takes classifier.*.
    Returns (pipeline, info dict with the transformers version and attention implementation)."""
    import transformers
    from transformers import BertConfig, BertModel, BertPreTrainedModel, PreTrainedTokenizerFast
    from transformers.modeling_outputs import SequenceClassifierOutput

    class PIBertForSequenceClassification(BertPreTrainedModel):
        """BertModel without pooler -> mean of the last hidden states over attention_mask ->
        Linear(hidden, 1). forward(input_ids [B, T], attention_mask [B, T], token_type_ids
        [B, T]) -> SequenceClassifierOutput(logits [B, 1]); the pipeline applies the sigmoid."""

        def __init__(self, config):
            super().__init__(config)
            self.bert = BertModel(config, add_pooling_layer=False)
            self.classifier = torch.nn.Linear(config.hidden_size, config.num_labels)
            self.post_init()

        def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, **kwargs):
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            h = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)  # [B, T, 1]
            pooled = (h * m).sum(dim=1) / torch.clamp(m.sum(dim=1), min=1e-9)  # [B, H]
            return SequenceClassifierOutput(logits=self.classifier(pooled))

    # PIClassifier() defaults: vocab 30522, hidden 384, heads 12, inter 1536, max_pos 512,
    # type_vocab 2, eps 1e-12; F.gelu is BertConfig's hidden_act "gelu" (exact erf form).
    config = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=layers, num_attention_heads=12,
                        intermediate_size=1536, max_position_embeddings=512, type_vocab_size=2,
                        layer_norm_eps=1e-12, hidden_act="gelu", num_labels=1)
    model = PIBertForSequenceClassification(config)
    head = {k[len("classifier."):]: v for k, v in sd.items() if k.startswith("classifier.")}
    model.bert.load_state_dict({k: v for k, v in sd.items() if not k.startswith("classifier.")}, strict=True)
    model.classifier.load_state_dict(head, strict=True)
    model.eval()
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
                                     cls_token="[CLS]", mask_token="[MASK]", model_max_length=config.max_position_embeddings)
    # pipeline() logs "The model 'PIBertForSequenceClassification' is not supported for
    # text-classification. Supported models are [... every model class ...]": check_model_type only
    # knows the library's own heads and only logs. Its records are kept (first line printed by
    # main(), whole text in OUT.json) instead of printing a few kB of class names.
    records = []
    catch = logging.Handler(logging.WARNING)
    catch.emit = lambda r: records.append(f"{r.levelname}: {r.getMessage()}")
    transformers.utils.logging.disable_default_handler()
    transformers.utils.logging.add_handler(catch)
    try:
        clf = transformers.pipeline("text-classification", model=model, tokenizer=hf_tok, device=-1,
                                    function_to_apply="sigmoid")
    finally:
        transformers.utils.logging.remove_handler(catch)
        transformers.utils.logging.enable_default_handler()
    p = next(clf.model.parameters())
    info = {"version": transformers.__version__, "attn": clf.model.config._attn_implementation,
            "dtype": str(p.dtype).replace("torch.", ""), "device": str(clf.device), "build_log": records}
    return clf, info


def encoder_layers(sd):
    """Number of transformer layers in a PIClassifier state dict: the distinct N of its
    `encoder.layer.N.*` tensors (the shipped model's depth is not fixed here)."""
    return len({k.split(".")[2] for k in sd if k.startswith("encoder.layer.")})


def window_substrings(tok, text, cfg):
    """The engine's windows of `text` as substrings of it: [text] if it has at most
    max_length - 2 body tokens, else for each window of windowing.windows (applied to token
    positions) text[start offset of its first body token : end offset of its last]. Returns
    (substrings, the windows' token id lists)."""
    enc = tok.encode(text)
    pos = V.windows(list(range(len(enc.ids))), cfg["max_length"], cfg["window_stride"], cfg["max_windows"])
    if len(pos) == 1:
        return [text], [list(enc.ids)]
    subs = [text[enc.offsets[w[1]][0]:enc.offsets[w[-2]][1]] for w in pos]
    return subs, [[enc.ids[i] for i in w] for w in pos]


def main():
    job = json.loads(Path(sys.argv[1]).read_text())
    cfg = json.loads((REPO / "models/vallum-pi-minilm/config.json").read_text())
    torch.set_num_threads(1)
    ckpt = os.environ.get("VALLUM_TORCH_CHECKPOINT")
    if ckpt:
        sd = torch.load(ckpt, map_location="cpu")
        weights = f"fine-tuned fp32 checkpoint ({Path(ckpt).name})"
    else:
        onnx_path = REPO / "models/vallum-pi-minilm/model.onnx"
        sd = state_dict_from_onnx(onnx_path)
        weights = f"{onnx_path.relative_to(REPO)} dequantized to fp32 (the same model)"
    layers = encoder_layers(sd)
    model = V.PIClassifier(layers=layers)
    model.load_state_dict(sd)  # strict: every tensor mapped
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

    out = {"weights": weights, "layers": layers, "threads": torch.get_num_threads(), "torch": torch.__version__}
    out.update(time_job(score, job, "torch"))
    Path(sys.argv[2]).write_text(json.dumps(out))

    try:
        clf, info = build_transformers_pipeline(sd, tok, layers)
        print(f"  transformers {info['version']} pipeline built (attention: {info['attn']}, {info['dtype']}, "
              f"{info['device']})", flush=True)
        for rec in info["build_log"]:
            print(f"  transformers logged {rec[:150]}{' ...' if len(rec) > 150 else ''}", flush=True)

        def tf_score(text):
            subs, _ = window_substrings(tok, text, cfg)
            if len(subs) == 1:
                return float(clf(subs[0])[0]["score"])
            return max(float(r["score"]) for r in clf(subs, batch_size=1))

        t = {**info, "threads": torch.get_num_threads()}
        t.update(time_job(tf_score, job, "transformers"))
        # windows whose substring the pipeline's tokenizer does not turn back into the engine's ids
        n_win = n_diff = 0
        for text in [s["text"] for s in job["latency"].values()] + job["throughput"]:
            subs, ids = window_substrings(tok, text, cfg)
            for sub, w in zip(subs, ids):
                n_win += 1
                n_diff += clf.tokenizer(sub)["input_ids"] != w
        t["windows_retokenized"] = {"windows": n_win, "differ": n_diff}
        print(f"  transformers: {n_diff} of {n_win} window substrings re-tokenise differently", flush=True)
        out["transformers"] = t
    except Exception:  # noqa: BLE001  (reported in OUT.json and by run.py, never skipped)
        out["transformers"] = {"error": traceback.format_exc()}
        print(f"  transformers row FAILED:\n{out['transformers']['error']}", flush=True)
    Path(sys.argv[2]).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
