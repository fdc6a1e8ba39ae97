#!/usr/bin/env python3
"""Vallum comparison harness (issue #6): one command, same machine, same inputs.

    python3 benches/harness/run.py            # from the repository root, after the build

Creates benches/harness/.venv (gitignored) and installs the peers from PyPI into it
(pyahocorasick, detect-secrets, presidio-analyzer, onnxruntime, tokenizers, matplotlib, numpy,
tqdm); a peer that cannot be installed is reported in RESULTS.md, not skipped silently. Then,
with fixed iteration counts (about 6 minutes on 2 cores, after the first install):

 1. signatures: Vallum scan_prompt (signatures only, normalisation included) vs pyahocorasick and
    Python `re` alternation over the same phrase set, MB/s on ~3 MB of shared/data prompts;
 2. redaction: Vallum scan_output vs detect-secrets and Presidio pattern recognizers (blank spaCy
    pipeline), MB/s and span-overlap recall/precision on a generated labelled corpus;
 3. classifier: Vallum (Rust, via the Python binding) vs Python onnxruntime on the same
    model.onnx vs the PyTorch model (models/vallum_lib.py, same weights, .venv-torch) vs a Hugging
    Face transformers text-classification pipeline over a BertModel with the same weights (what a
    FastAPI team would write; torch_worker.py), p50/p99 at 16/128/512 tokens and throughput;
 4. end to end: bindings-python/bench/bench_middleware.py and bindings-node/bench/bench.mjs;
 5. detection quality: `vallum eval` (full engine and --signatures-only), per source, ROC plots.

Writes benches/RESULTS.md, benches/plots/*.svg, benches/plots/roc/ and the raw numbers in
benches/harness/.work/results.json. Generated corpora stay in benches/harness/.work/.

Everything it needs beyond the build comes from PyPI: the peers, fastapi/uvicorn/httpx for the
FastAPI app, and PyTorch with transformers in a second environment, benches/harness/.venv-torch
(the transformers row is built from local files only, HF_HUB_OFFLINE=1). The dev split for
`vallum eval` is recomputed from shared/data by models/split.py.

Environment (all optional): VALLUM_PYTHON (interpreter with vallum, fastapi, uvicorn and httpx for
bench_middleware.py; default the harness venv with bindings-python/python on PYTHONPATH),
VALLUM_TORCH_PYTHON (an interpreter with torch, onnx, tokenizers and transformers instead of
.venv-torch; without transformers the PyTorch row is still measured and the failure reported),
VALLUM_TORCH_CHECKPOINT (fp32 checkpoint from train.py instead of model.onnx's weights),
VALLUM_DEV_ROWS (dev_rows.json written by models/train.py instead of models/split.py's),
VALLUM_DATA (default ../shared/data beside the repository).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
VENV = HERE / ".venv"
WORK = HERE / ".work"
PLOTS = REPO / "benches/plots"
CLI = REPO / "target/release/vallum"
MODEL_DIR = REPO / "models/vallum-pi-minilm"
# Interleaved timing rounds for the signature and redaction comparisons (best of this many).
SPEED_ROUNDS = 3
PEERS = ["numpy", "tqdm", "matplotlib", "tokenizers", "onnxruntime", "pyahocorasick",
         "detect-secrets", "presidio-analyzer",
         # the FastAPI app of the end-to-end step (bindings-python/bench/bench_middleware.py)
         "fastapi", "uvicorn", "httpx"]
# The PyTorch pipeline of the classifier step runs in its own environment (torch from PyPI is
# about 2 GB with its CUDA libraries; only its CPU path is used). onnx reads model.onnx's weights;
# transformers runs the second PyTorch row (a text-classification pipeline over the same weights).
TORCH_VENV = HERE / ".venv-torch"
TORCH_PEERS = ["torch", "numpy", "tokenizers", "onnx", "transformers"]


# ============================================================== bootstrap

def install_peers(venv, packages, label=""):
    """Creates `venv` if missing and pip-installs each package its interpreter cannot import.
    Returns {package + label: {"installed": bool, "version": str | None}}; a failed install is
    printed with pip's error and reported, never skipped silently."""
    py = venv / "bin/python"
    if not py.exists():
        print(f"[setup] creating {venv}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    status = {}
    for p in packages:
        mod = {"detect-secrets": "detect_secrets", "presidio-analyzer": "presidio_analyzer",
               "pyahocorasick": "ahocorasick"}.get(p, p)
        ok = subprocess.run([str(py), "-c", f"import {mod}"], capture_output=True).returncode == 0
        if not ok:
            print(f"[setup] pip install {p}{label}", flush=True)
            r = subprocess.run([str(py), "-m", "pip", "install", "-q", p], capture_output=True, text=True)
            ok = r.returncode == 0
            if not ok:
                print(f"[setup] FAILED to install {p}:\n{r.stderr[-2000:]}", flush=True)
        ver = subprocess.run([str(py), "-m", "pip", "show", p], capture_output=True, text=True).stdout
        ver = next((line.split(":", 1)[1].strip() for line in ver.splitlines() if line.startswith("Version:")), None)
        status[p + label] = {"installed": ok, "version": ver}
        print(f"[setup] {p}{label}: {'ok ' + str(ver) if ok else 'NOT INSTALLED'}", flush=True)
    return status


def bootstrap(argv):
    WORK.mkdir(exist_ok=True)
    status = install_peers(VENV, PEERS)
    only = argv[argv.index("--only") + 1:] if "--only" in argv else None
    if not os.environ.get("VALLUM_TORCH_PYTHON") and "--report-only" not in argv and (only is None or "classifier" in only):
        status.update(install_peers(TORCH_VENV, TORCH_PEERS, label=" (.venv-torch)"))
    else:
        # .venv-torch not checked in this run: keep what the last run that checked it found,
        # so that a --report-only or --only run does not drop its rows from the peers table.
        try:
            prev = json.loads((WORK / "peers.json").read_text())
        except (OSError, ValueError):
            prev = {}
        status.update({k: v for k, v in prev.items() if k.endswith(" (.venv-torch)")})
    (WORK / "peers.json").write_text(json.dumps(status, indent=1))
    py = VENV / "bin/python"
    os.execv(str(py), [str(py), str(Path(__file__).resolve()), "--inner", *argv])


# ============================================================== helpers

def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pct(xs, q):
    import numpy as np
    return float(np.percentile(np.asarray(xs), q))


def mbps(nbytes, secs):
    return nbytes / secs / 1e6 if secs > 0 else float("nan")


def bar(it, **kw):
    try:
        from tqdm import tqdm
        return tqdm(it, mininterval=1.0, ncols=90, **kw)
    except Exception:
        return it


def import_vallum():
    sys.path.insert(0, str(REPO / "bindings-python/python"))
    import vallum
    # A `maturin develop` without --release is several times slower: never time it.
    profile = getattr(vallum._vallum, "BUILD_PROFILE", "unknown")
    if profile != "release":
        sys.exit(f"run.py: the vallum extension in bindings-python/python is a {profile} build; "
                 "rebuild it with `(cd bindings-python && maturin develop --release)` before benchmarking")
    # `maturin develop` does not copy the model (build_wheel.sh does): without this a missing
    # bundle would fail and one left from an older build would be timed instead of
    # models/vallum-pi-minilm.
    bundled = Path(vallum.__file__).parent / "model"
    if not (bundled / "MANIFEST").exists() or (bundled / "MANIFEST").read_bytes() != (MODEL_DIR / "MANIFEST").read_bytes():
        import shutil
        bundled.mkdir(exist_ok=True)
        for f in ("MANIFEST", "config.json", "model.onnx", "tokenizer.json"):
            shutil.copyfile(MODEL_DIR / f, bundled / f)
        log(f"copied {MODEL_DIR} into {bundled} (the package's bundled model was missing or older)")
    return vallum


def interleaved(contenders, rounds, round_secs=1.0):
    """Times each contender once per round, round after round, and keeps its best round.

    The machine's speed drifts (shared cores; see RESULTS.md), so timing one tool's passes back
    to back and then the next tool's would compare different minutes; interleaving gives every
    tool the same chances. Within a round a contender repeats its pass until `round_secs` have
    passed (a slow tool does one pass) and the round's time is the median of those passes, so a
    fast tool is not credited with its luckiest few milliseconds. The progress bar counts passes
    of whole tools: a per-record bar inside a timed loop would add its own cost to every record,
    which is a large share of a 3 us call and nothing next to a 1 ms one. contenders: (name, run, cap)
    where run() does one pass and returns its output and cap (or None) limits its rounds.
    Returns {name: (seconds of the best round's median pass, output of the last pass, passes)}.
    """
    import statistics
    best, outs, passes = {}, {}, {}
    steps = [(r, c) for r in range(rounds) for c in contenders if c[2] is None or r < c[2]]
    progress = bar(steps, desc="passes", leave=False)
    for r, (name, run, _) in progress:
        if hasattr(progress, "set_description_str"):
            progress.set_description_str(f"round {r + 1}/{rounds}: {name[:40]}")
        times, t_round = [], time.perf_counter()
        while not times or time.perf_counter() - t_round < round_secs:
            t = time.perf_counter()
            outs[name] = run()
            times.append(time.perf_counter() - t)
        best[name] = min(best.get(name, float("inf")), statistics.median(times))
        passes[name] = passes.get(name, 0) + len(times)
    return {name: (best[name], outs[name], passes[name]) for name, _, _ in contenders if name in best}


def sig_policy_json(extra_phrases=None, builtin=True):
    """Policy JSON with the classifier off; `extra_phrases` become an inline phrase rule, and
    `builtin=False` drops the default rule pack (normalisation and decoding still run)."""
    doc = {"classifier": {"enabled": False}}
    if not builtin:
        doc["rules"] = {"builtin": []}
    if extra_phrases:
        doc.setdefault("rules", {})["inline"] = [{"id": "BENCH-PHRASES", "category": "instruction_override",
                                    "severity": "high", "description": "harness phrase set",
                                    "phrases": extra_phrases}]
    return json.dumps(doc)


def byte_to_char_spans(text, spans):
    """Vallum reports byte offsets; the labels are character offsets."""
    b = text.encode()
    return [(len(b[:s].decode("utf-8", "replace")), len(b[:e].decode("utf-8", "replace"))) for s, e in spans]


# ============================================================== 1. signatures

def bench_signatures(R):
    import re
    import gen
    vallum = import_vallum()
    phrases = gen.injection_phrases()
    corpus = gen.prose_corpus(3_000_000)
    nbytes = sum(len(t.encode()) for t in corpus)
    log(f"signatures: {len(phrases)} phrases, {len(corpus)} records, {nbytes / 1e6:.2f} MB")
    res = {"phrases": len(phrases), "records": len(corpus), "bytes": nbytes, "tools": {}}

    fw = vallum.Firewall(vallum.Policy.from_json(sig_policy_json()))
    fw2 = vallum.Firewall(vallum.Policy.from_json(sig_policy_json(phrases)))
    # like for like with the peers: the same phrase set and nothing else, but through Vallum's
    # normalisation and decoding
    fw3 = vallum.Firewall(vallum.Policy.from_json(sig_policy_json(phrases, builtin=False)))
    eng_us = []

    def over_corpus(fn):
        def run():
            return sum(fn(x) for x in corpus)
        return run

    def v_default(x):
        v = fw.scan_prompt(x)
        eng_us.append(v.elapsed_us)
        return 1 if v.matches else 0
    contenders = [("Vallum scan_prompt (default rules)", over_corpus(v_default), None),
                  ("Vallum scan_prompt (default rules + harness phrases)",
                   over_corpus(lambda x: 1 if fw2.scan_prompt(x).matches else 0), None),
                  ("Vallum scan_prompt (harness phrases only, no default rules)",
                   over_corpus(lambda x: 1 if fw3.scan_prompt(x).matches else 0), None)]
    try:
        import ahocorasick
        A = ahocorasick.Automaton()
        for i, p in enumerate(phrases):
            A.add_word(p, i)
        A.make_automaton()
        contenders += [
            ("pyahocorasick (lower() + iter)", over_corpus(lambda x: 1 if any(True for _ in A.iter(x.lower())) else 0), None),
            ("pyahocorasick (iter, no case folding)", over_corpus(lambda x: 1 if any(True for _ in A.iter(x)) else 0), None),
        ]
    except ImportError as e:
        res["tools"]["pyahocorasick"] = {"error": f"not installed: {e}"}
    rx = re.compile("|".join(re.escape(p) for p in sorted(phrases, key=len, reverse=True)), re.I)
    # ~9 s a pass and not a target: one pass.
    contenders.append(("Python re alternation (IGNORECASE)", over_corpus(lambda x: 1 if rx.search(x) else 0), 1))
    for name, (secs, hits, passes) in interleaved(contenders, SPEED_ROUNDS).items():
        res["tools"][name] = {"seconds": secs, "mb_s": mbps(nbytes, secs), "records_hit": hits, "passes": passes}
        log(f"  {name}: {mbps(nbytes, secs):.2f} MB/s, {hits} records hit ({passes} passes)")
    # engine time alone: the median pass of the default-rules firewall
    import statistics
    per_pass = [sum(eng_us[i:i + len(corpus)]) for i in range(0, len(eng_us), len(corpus))]
    eng_s = statistics.median(per_pass) / 1e6
    res["vallum_engine_only_mb_s"] = mbps(nbytes, eng_s)
    log(f"  Vallum engine time only (verdict.elapsed_us, median pass): {mbps(nbytes, eng_s):.2f} MB/s")
    # the release CLI over the same records (JSONL parse + verdict JSON output included)
    if CLI.exists():
        (WORK / "prose.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus))
        (WORK / "sig-policy.json").write_text(sig_policy_json())
        t = time.perf_counter()
        r = subprocess.run([str(CLI), "scan", "--policy", str(WORK / "sig-policy.json"), str(WORK / "prose.jsonl")],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        secs = time.perf_counter() - t
        if r.returncode in (0, 1, 2):
            res["tools"]["vallum scan CLI (default rules, JSON in/out)"] = {"seconds": secs, "mb_s": mbps(nbytes, secs), "records_hit": None, "passes": 1}
            log(f"  vallum scan CLI: {mbps(nbytes, secs):.2f} MB/s (rc {r.returncode})")
        else:
            res["cli_error"] = r.stderr[-800:]
    R["signatures"] = res


# ============================================================== 2. redaction

def overlap_metrics(records, preds):
    """Entity-agnostic span overlap. preds: per record list of (start, end) char spans."""
    from collections import Counter
    tp_p = n_p = 0
    found, total = Counter(), Counter()
    for rec, ps in zip(records, preds):
        merged = []
        for s, e in sorted(ps):
            if merged and s < merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        gold = rec["spans"]
        for s, e in merged:
            n_p += 1
            if any(s < ge and gs < e for gs, ge, _ in gold):
                tp_p += 1
        for gs, ge, k in gold:
            total[k] += 1
            if any(s < ge and gs < e for s, e in merged):
                found[k] += 1
    import gen
    g_all = sum(total.values())
    sec = sum(total[k] for k in gen.SECRET_KINDS)
    pii = sum(total[k] for k in gen.PII_KINDS)
    return {
        "recall": sum(found.values()) / g_all if g_all else None,
        "precision": tp_p / n_p if n_p else None,
        "predicted_spans": n_p, "false_positive_spans": n_p - tp_p,
        "recall_secrets": sum(found[k] for k in gen.SECRET_KINDS) / sec if sec else None,
        "recall_pii": sum(found[k] for k in gen.PII_KINDS) / pii if pii else None,
        "recall_by_kind": {k: found[k] / total[k] for k in sorted(total)},
    }


def bench_redaction(R):
    import gen
    vallum = import_vallum()
    records = gen.redaction_corpus(4000)
    (WORK / "redaction_corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    nbytes = sum(len(r["text"].encode()) for r in records)
    log(f"redaction: {len(records)} records, {nbytes / 1e6:.2f} MB, {sum(len(r['spans']) for r in records)} planted spans")
    res = {"records": len(records), "bytes": nbytes, "planted": sum(len(r["spans"]) for r in records), "tools": {}}

    # Each contender: (name, one timed pass, cap), and to_preds[name](output of a pass) ->
    # per-record char spans for scoring, run after the clock stops.
    contenders, to_preds = [], {}
    texts = [r["text"] for r in records]

    def add(name, fn, spans):
        """A tool called once per record; spans(text, output) -> its char spans."""
        contenders.append((name, lambda: [fn(x) for x in texts], None))
        to_preds[name] = lambda out: [spans(r["text"], o) for r, o in zip(records, out)]

    fw = vallum.Firewall(vallum.Policy.from_json('{"classifier": {"enabled": false}}'))
    add("Vallum scan_output", fw.scan_output,
        lambda text, o: byte_to_char_spans(text, [(f.start, f.end) for f in o.findings]))

    # The same records as one document, one record per line: what detect-secrets' scan_file reads.
    doc = "".join(r["text"] + "\n" for r in records)
    starts, pos = [], 0
    for r in records:
        starts.append(pos)
        pos += len(r["text"].encode()) + 1

    def doc_preds(o):
        import bisect
        preds = [[] for _ in records]
        for fnd in o.findings:
            i = bisect.bisect_right(starts, fnd.start) - 1
            text, base = records[i]["text"], starts[i]
            preds[i].extend(byte_to_char_spans(text, [(fnd.start - base, min(fnd.end - base, len(text.encode())))]))
        return preds

    contenders.append(("Vallum scan_output (whole corpus as one document)", lambda: fw.scan_output(doc), None))
    to_preds["Vallum scan_output (whole corpus as one document)"] = doc_preds

    # detect-secrets: its own file scan (all default plugins and filters), one record per line.
    ds_path = WORK / "redaction_corpus.txt"
    ds_path.write_text(doc)

    def ds_preds(found):
        preds = [[] for _ in records]
        for sec in found:
            line = records[sec.line_number - 1]["text"]
            v = sec.secret_value or ""
            i = line.find(v) if v else -1
            while v and i >= 0:
                preds[sec.line_number - 1].append((i, i + len(v)))
                i = line.find(v, i + 1)
        return preds

    try:
        from detect_secrets.core import scan as ds_scan
        from detect_secrets.settings import default_settings

        def ds_run():
            with default_settings():
                return list(ds_scan.scan_file(str(ds_path)))
        contenders.append(("detect-secrets (scan_file, default plugins)", ds_run, None))
        to_preds["detect-secrets (scan_file, default plugins)"] = ds_preds
    except Exception as e:  # noqa: BLE001
        res["tools"]["detect-secrets"] = {"error": repr(e)}
        log(f"  detect-secrets FAILED: {e!r}")

    # Presidio: AnalyzerEngine with a blank spaCy pipeline and the predefined pattern recognizers.
    try:
        import tldextract
        tldextract.extract = tldextract.TLDExtract(suffix_list_urls=())  # no network fetch of the PSL
        import spacy
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
        from presidio_analyzer.nlp_engine import SpacyNlpEngine

        class BlankSpacyEngine(SpacyNlpEngine):
            def __init__(self):
                super().__init__(models=[{"lang_code": "en", "model_name": "blank"}])

            def load(self):
                self.nlp = {"en": spacy.blank("en")}

        eng = BlankSpacyEngine()
        eng.load()
        reg = RecognizerRegistry()
        reg.load_predefined_recognizers(nlp_engine=eng, languages=["en"])
        reg.remove_recognizer("SpacyRecognizer")
        an = AnalyzerEngine(nlp_engine=eng, registry=reg, supported_languages=["en"])
        res["presidio_recognizers"] = [r.name for r in reg.recognizers]
        ents = ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS"]
        add("Presidio patterns (all predefined)", lambda x: [(r.start, r.end) for r in an.analyze(x, language="en")],
            lambda text, o: o)
        add("Presidio patterns (6 matching entities)",
            lambda x: [(r.start, r.end) for r in an.analyze(x, language="en", entities=ents)], lambda text, o: o)
    except Exception as e:  # noqa: BLE001
        res["tools"]["Presidio"] = {"error": repr(e)}
        log(f"  presidio FAILED: {e!r}")

    for name, (secs, out, passes) in interleaved(contenders, SPEED_ROUNDS).items():
        m = overlap_metrics(records, to_preds[name](out))
        res["tools"][name] = {"seconds": secs, "mb_s": mbps(nbytes, secs), "passes": passes, **m}
        log(f"  {name}: {mbps(nbytes, secs):.3f} MB/s recall {m['recall']:.3f} precision {m['precision'] or 0:.3f} ({passes} passes)")
    R["redaction"] = res


# ============================================================== 3. classifier

def bench_classifier(R, sizes, iters):
    sys.path.insert(0, str(REPO / "models"))
    import windowing  # the engine's windowing (testdata/vectors/windows.json), shared with models/vallum_lib.py
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer
    import gen
    vallum = import_vallum()
    cfg = json.loads((MODEL_DIR / "config.json").read_text())
    tok = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()

    # benign prose of exactly N tokens ([CLS] + N-2 + [SEP])
    prose = " ".join(t for t in gen.prose_corpus(400_000)[::3] if "ignore" not in t.lower())
    enc = tok.encode(prose)
    texts = {}
    for n in sizes:
        end = enc.offsets[n - 2][1]
        texts[n] = prose[:end]
        assert abs(len(tok.encode(texts[n]).ids) - n) <= 2, (n, len(tok.encode(texts[n]).ids))
    thr_texts = [t for t in gen.prose_corpus(600_000) if 40 < len(t) < 3000][:300]
    thr_bytes = sum(len(t.encode()) for t in thr_texts)
    res = {"sizes": sizes, "iters": iters, "tools": {}, "throughput_texts": len(thr_texts), "throughput_bytes": thr_bytes,
           "actual_tokens": {n: len(tok.encode(texts[n]).ids) for n in sizes}}

    def lat_run(contenders, rounds=3):
        """Times the in-process contenders [(name, fn)] interleaved, so machine drift hits all alike:
        latency alternates single calls (A, B, A, B, ...) after 10 warm-up calls each; throughput
        alternates whole passes over thr_texts for `rounds` rounds and keeps each one's fastest.
        Returns {name: scores of the first throughput pass}."""
        rows = {name: {"latency": {}} for name, _ in contenders}
        for n in sizes:
            for _, fn in contenders:
                for _ in range(10):
                    fn(texts[n])
            lat = {name: [] for name, _ in contenders}
            for _ in bar(range(iters[n]), desc=f"{n} tok, {len(contenders)} tools interleaved", leave=False):
                for name, fn in contenders:
                    t = time.perf_counter()
                    fn(texts[n])
                    lat[name].append(time.perf_counter() - t)
            for name, xs in lat.items():
                rows[name]["latency"][n] = {"p50_ms": pct(xs, 50) * 1e3, "p99_ms": pct(xs, 99) * 1e3, "mean_ms": float(np.mean(xs)) * 1e3}
                log(f"  {name} {n} tok: p50 {pct(xs, 50) * 1e3:.2f} ms p99 {pct(xs, 99) * 1e3:.2f} ms")
        scores, passes = {}, {}
        for _ in bar(range(rounds), desc="throughput rounds", leave=False):
            for name, fn in contenders:
                t = time.perf_counter()
                got = [fn(x) for x in thr_texts]
                passes.setdefault(name, []).append(time.perf_counter() - t)
                scores.setdefault(name, got)
        for name, ps in passes.items():
            secs = min(ps)
            rows[name].update({"throughput_texts_s": len(thr_texts) / secs, "throughput_mb_s": mbps(thr_bytes, secs),
                               "throughput_rounds": rounds, "throughput_passes_s": ps})
            log(f"  {name} throughput: {len(thr_texts) / secs:.1f} texts/s (best of {rounds} interleaved passes)")
        res["tools"].update(rows)
        return scores

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(str(MODEL_DIR / "model.onnx"), so, providers=["CPUExecutionProvider"])

    def ort_score(x):
        ws = windowing.windows(tok.encode(x).ids, cfg["max_length"], cfg["window_stride"], cfg["max_windows"])
        by_len = {}
        for w in ws:
            by_len.setdefault(len(w), []).append(w)
        best = 0.0
        # batched as the engine does: equal-length windows, at most 512 tokens per call (the int8
        # model quantises activations per call, so the batch shapes the scores slightly)
        for group in (g[i:i + max(1, 512 // len(g[0]))] for g in by_len.values() for i in range(0, len(g), max(1, 512 // len(g[0])))):
            ids = np.asarray(group, dtype=np.int64)
            out = sess.run(["score"], {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)})[0]
            best = max(best, float(out.max()))
        return best
    ORT_NAME = "Python onnxruntime (tokenizers + same model.onnx)"
    VALLUM_NAME = "Vallum scan_prompt (Rust: normalise + signatures + classifier)"
    res["onnxruntime_version"] = ort.__version__

    fw = vallum.Firewall()
    fw_sig = vallum.Firewall(vallum.Policy.from_json(sig_policy_json()))
    contenders = [("Vallum scan_prompt, signatures only (for reference)", lambda x: fw_sig.scan_prompt(x).score), (ORT_NAME, ort_score)]
    if not fw.has_classifier:
        res["vallum_error"] = "vallum.Firewall() has no classifier (model or ONNX Runtime not found)"
        log("  " + res["vallum_error"])
    else:
        def v_score(x):
            c = fw.scan_prompt(x).classifier or {}
            return c.get("raw_score", c.get("score"))
        res["vallum_classifier_fields"] = fw.scan_prompt(texts[sizes[0]]).classifier
        contenders.insert(0, (VALLUM_NAME, v_score))
    scores = lat_run(contenders)
    o_scores = scores[ORT_NAME]
    if fw.has_classifier:
        # engine-only time of the same calls (no Python binding overhead)
        eng = {}
        for n in sizes:
            us = [fw.scan_prompt(texts[n]).elapsed_us for _ in range(min(50, iters[n]))]
            eng[n] = pct(us, 50) / 1e3
        res["vallum_engine_p50_ms"] = eng
        diffs = [abs(a - b) for a, b in zip(scores[VALLUM_NAME], o_scores) if a is not None]
        res["vallum_vs_ort_max_abs_score_diff"] = max(diffs) if diffs else None

    # PyTorch, in the environment bootstrap() made (or VALLUM_TORCH_PYTHON): the lean model of
    # models/vallum_lib.py and the transformers pipeline, both in torch_worker.py
    tpy = os.environ.get("VALLUM_TORCH_PYTHON") or str(TORCH_VENV / "bin/python")
    t_out = WORK / "torch_out.json"
    t = None
    if not Path(tpy).exists():
        res["torch_error"] = f"no torch interpreter at {tpy} (its install failed; see the peers table)"
    else:
        job = {"latency": {str(n): {"text": texts[n], "iters": iters[n], "warmup": 10} for n in sizes}, "throughput": thr_texts}
        (WORK / "torch_job.json").write_text(json.dumps(job))
        t_out.unlink(missing_ok=True)  # never read an earlier run's numbers
        log(f"  PyTorch worker ({tpy})...")
        try:
            r = subprocess.run([tpy, str(HERE / "torch_worker.py"), str(WORK / "torch_job.json"), str(t_out)],
                               env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
                               timeout=1800)
            if r.returncode != 0:
                res["torch_error"] = f"torch worker exited {r.returncode}"
        except subprocess.TimeoutExpired:
            res["torch_error"] = "torch worker killed after 1800 s"
        # The worker writes OUT.json after the PyTorch row and again after the transformers row,
        # so a worker that dies in the second still leaves the first.
        t = json.loads(t_out.read_text()) if t_out.exists() else None

    def torch_row(w, extra):
        d = {"latency": {}, **extra}
        for n in sizes:
            lat = w["latency"][str(n)]
            d["latency"][n] = {"p50_ms": pct(lat, 50) * 1e3, "p99_ms": pct(lat, 99) * 1e3, "mean_ms": float(np.mean(lat)) * 1e3}
        d["throughput_texts_s"] = len(thr_texts) / w["throughput_s"]
        d["throughput_mb_s"] = mbps(thr_bytes, w["throughput_s"])
        return d
    if t is not None:
        if "torch_error" in res and "transformers" not in t:  # died in the transformers row, not this one
            res["transformers_error"] = res.pop("torch_error") + " during the transformers row"
        d = torch_row(t, {"weights": t["weights"], "layers": t.get("layers"), "torch": t["torch"], "threads": t["threads"]})
        res["tools"]["PyTorch fp32 (models/vallum_lib.py)"] = d
        res["torch_vs_ort_max_abs_score_diff"] = max(abs(a - b) for a, b in zip(t["scores"], o_scores))
        log(f"  PyTorch throughput {d['throughput_texts_s']:.1f} texts/s ({t['weights']})")
    h = (t or {}).get("transformers")
    if h is None:
        res.setdefault("transformers_error", "not run: " + res.get("torch_error", "the torch worker wrote no transformers row"))
    elif "error" in h:
        res["transformers_error"] = h["error"]
    else:
        d = torch_row(h, {k: h.get(k) for k in ("version", "attn", "dtype", "device", "threads", "windows_retokenized")})
        # what transformers logged while building the pipeline (its "not supported for
        # text-classification" line lists every model class: cut)
        d["build_log"] = [x if len(x) <= 300 else x[:300] + f" ... ({len(x)} chars)" for x in h.get("build_log", [])]
        d["weights"] = t["weights"]
        res["tools"]["transformers pipeline fp32 (text-classification)"] = d
        res["transformers_vs_ort_max_abs_score_diff"] = max(abs(a - b) for a, b in zip(h["scores"], o_scores))
        res["transformers_vs_torch_max_abs_score_diff"] = max(abs(a - b) for a, b in zip(h["scores"], t["scores"]))
        log(f"  transformers {h['version']} pipeline ({h['attn']} attention) throughput {d['throughput_texts_s']:.1f} texts/s")
    if "transformers_error" in res:
        log("  transformers row FAILED: " + res["transformers_error"].strip().splitlines()[-1])
    R["classifier"] = res


# ============================================================== 4. end to end

def bench_e2e(R, requests, concurrency=None, load_requests=None):
    """Runs both bindings' middleware benchmarks: `requests` sequential requests per app (their
    parts 1-2), then the concurrent load (part 3): `concurrency` keep-alive clients (default
    $VALLUM_E2E_CONCURRENCY or 8), `load_requests` measured requests per app (default
    $VALLUM_E2E_REQUESTS or 2000), server and load generator in separate processes. The scripts
    write their numbers with --json; stdout is kept for the report."""
    concurrency = int(concurrency or os.environ.get("VALLUM_E2E_CONCURRENCY", 8))
    load_requests = int(load_requests or os.environ.get("VALLUM_E2E_REQUESTS", 2000))
    res = {"concurrency": concurrency, "requests": load_requests, "sequential_requests": requests}
    # This interpreter (the harness venv, with fastapi, uvicorn and httpx) imports vallum from
    # bindings-python/python, as import_vallum() does; VALLUM_PYTHON overrides both.
    py = os.environ.get("VALLUM_PYTHON") or sys.executable
    env = {**os.environ}
    if not os.environ.get("VALLUM_PYTHON"):
        env["PYTHONPATH"] = os.pathsep.join(x for x in (str(REPO / "bindings-python/python"), env.get("PYTHONPATH")) if x)
    flags = ["--concurrency", str(concurrency), "--requests", str(load_requests), "--sequential-requests", str(requests)]
    runs = (("fastapi", REPO / "bindings-python/bench/bench_middleware.py", REPO, [py, "bindings-python/bench/bench_middleware.py"]),
            ("express", REPO / "bindings-node/bench/bench.mjs", REPO / "bindings-node", ["node", "bench/bench.mjs"]))
    for key, script, cwd, cmd in runs:
        if not script.exists():
            res[key] = {"rc": None, "stdout": "", "stderr": f"{script.relative_to(REPO)} not found"}
            continue
        out = WORK / f"e2e_{key}.json"
        out.unlink(missing_ok=True)
        cmd = [*cmd, *flags, "--json", str(out)]
        log(f"e2e: {key} ({' '.join(cmd[1:-2])})")
        try:
            r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=420)
            res[key] = {"rc": r.returncode, "stdout": r.stdout, "stderr": r.stderr[-1500:]}
        except Exception as e:  # noqa: BLE001
            res[key] = {"rc": -1, "stdout": "", "stderr": repr(e)}
        try:
            res[key]["json"] = json.loads(out.read_text())
        except (OSError, ValueError):
            res[key]["json"] = None
        for d in (res[key].get("json") or {}).get("load", []):
            if d.get("available"):
                log(f"  {key} {d['variant']}: p50 {d.get('p50_us', float('nan')):.0f} us, p99 "
                    f"{d.get('p99_us', float('nan')):.0f} us, {d['req_s']:.0f} req/s, {d['errors']} errors")
    R["e2e"] = res


# ============================================================== 5. detection quality

def dev_split_check(rows):
    """Compares the per-(source, label) counts of recomputed dev rows with the split table of the
    shipped model's training report. Returns {"groups": n, "mismatches": [...]}; hard-negative
    sources (hn_*), which split.py does not rebuild, are not compared."""
    from collections import Counter
    got = Counter((r["source"], int(r["label"])) for r in rows)
    metrics = REPO / "models/reports/vallum-pi-minilm-metrics.json"
    table = [t for t in json.loads(metrics.read_text()).get("split", []) if not t["source"].startswith("hn_")]
    bad = [{"source": t["source"], "label": t["label"], "trained_dev": t["dev"], "recomputed": got.get((t["source"], t["label"]), 0)}
           for t in table if got.get((t["source"], t["label"]), 0) != t["dev"]]
    return {"groups": len(table), "mismatches": bad, "against": str(metrics.relative_to(REPO))}


def bench_eval(R):
    data = Path(os.environ.get("VALLUM_DATA", REPO.parent / "shared/data"))
    files = [str(p) for p in sorted(data.glob("*/*.jsonl"))]
    res = {"files": len(files)}
    if not CLI.exists():
        R["eval"] = {"error": f"{CLI} not found (build with cargo build --release first)"}
        return

    def ev(tag, args, paths):
        log(f"eval: {tag}")
        t = time.perf_counter()
        r = subprocess.run([str(CLI), "eval", "--json", *args, *paths], capture_output=True, text=True, timeout=900)
        secs = time.perf_counter() - t
        if r.returncode != 0:
            res[tag] = {"error": r.stderr[-1500:]}
            return
        res[tag] = json.loads(r.stdout)
        res[tag]["wall_s"] = secs
        if "--signatures-only" not in args and res[tag].get("classifier") != "used":
            res[tag]["error"] = (f"classifier {res[tag].get('classifier', '?')}: these are signature-only numbers "
                                 f"(ORT_DYLIB_PATH={os.environ.get('ORT_DYLIB_PATH')}); {r.stderr[-300:]}")
            log("  " + res[tag]["error"])
        log(f"  {tag}: AUC {res[tag].get('auc')} TPR {res[tag].get('tpr')} FPR {res[tag].get('fpr')} ({secs:.0f} s)")

    # The dev split: rows given by VALLUM_DEV_ROWS (the dev_rows.json train.py writes), else the
    # shared-data rows of the same split recomputed by models/split.py and checked against the
    # per-source dev counts the training run recorded.
    given = os.environ.get("VALLUM_DEV_ROWS")
    dev_rows = Path(given) if given else WORK / "dev_rows.json"
    if not given:
        r = subprocess.run([sys.executable, str(REPO / "models/split.py"), "--data-dir", str(data), "--out", str(dev_rows)],
                           capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            dev_rows.unlink(missing_ok=True)
            res["dev_note"] = f"models/split.py failed (all-data numbers only): {r.stderr[-800:]}"
    if dev_rows.exists():
        rows = json.loads(dev_rows.read_text())
        res["dev_source"] = given or "models/split.py"
        if not given:
            res["dev_split_check"] = dev_split_check(rows)
        dev = WORK / "dev.jsonl"
        dev.write_text("".join(json.dumps({"text": r["text"], "label": int(r["label"]), "source": r.get("source", "?")}) + "\n" for r in rows))
        ev("dev_full", ["--plots", str(PLOTS / "roc")], [str(dev)])
        ev("dev_signatures", ["--signatures-only", "--plots", str(PLOTS / "roc-signatures")], [str(dev)])
        res["dev_rows"] = len(rows)
    elif "dev_note" not in res:
        res["dev_note"] = f"dev split rows not found at {dev_rows}; all-data numbers only"
    ev("all_full", [] if dev_rows.exists() else ["--plots", str(PLOTS / "roc")], files)
    ev("all_signatures", ["--signatures-only"], files)
    R["eval"] = res


# ============================================================== report

def machine():
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kb = int(next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")).split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    except Exception:  # noqa: BLE001
        pass
    load = os.getloadavg()
    return {"nproc": os.cpu_count(), "cpu": cpu, "mem": mem, "kernel": platform.release(),
            "python": platform.python_version(), "loadavg_start": load}


def harness_report():
    """benches/harness/report.py, loaded by path: the classifier step puts models/ first on
    sys.path, and models/report.py (the training report) would be imported instead."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("vallum_harness_report", HERE / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def use_venv_onnxruntime():
    """Points ORT_DYLIB_PATH (unless set) at the ONNX Runtime library of this venv's onnxruntime
    package, so the vallum CLI that the signature and eval steps spawn loads the runtime the
    onnxruntime peer and the Python binding use. Without it the CLI looks for the library through
    `python3` on PATH, which on a clean machine has none, and its eval would be signatures only."""
    if os.environ.get("ORT_DYLIB_PATH"):
        return os.environ["ORT_DYLIB_PATH"]
    import importlib.util
    spec = importlib.util.find_spec("onnxruntime")
    if spec and spec.submodule_search_locations:
        libs = sorted(Path(spec.submodule_search_locations[0], "capi").glob("libonnxruntime.so*"))
        if libs:
            os.environ["ORT_DYLIB_PATH"] = str(libs[-1])
            return str(libs[-1])
    return None


def main_inner(args):
    sys.path.insert(0, str(HERE))
    WORK.mkdir(exist_ok=True)
    use_venv_onnxruntime()
    PLOTS.mkdir(parents=True, exist_ok=True)
    R = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
         "peers": json.loads((WORK / "peers.json").read_text()) if (WORK / "peers.json").exists() else {},
         "errors": {}, "speed_rounds": SPEED_ROUNDS}
    if args.only and (WORK / "results.json").exists():  # update one step of an earlier full run
        prev = json.loads((WORK / "results.json").read_text())
        prev.update({k: R[k] for k in ("peers", "speed_rounds")})
        prev.setdefault("errors", {})
        for k in args.only:
            prev["errors"].pop(k, None)
        prev["reruns"] = [r for r in prev.get("reruns", []) if set(r["steps"]) - set(args.only)]
        prev["reruns"].append({"steps": list(args.only), "date": R["date"]})
        R = prev
    T0 = time.time()
    sizes = [16, 128, 512]
    iters = {16: 300, 128: 200, 512: 100}
    steps = [("signatures", lambda: bench_signatures(R)), ("redaction", lambda: bench_redaction(R)),
             ("classifier", lambda: bench_classifier(R, sizes, iters)), ("e2e", lambda: bench_e2e(R, args.requests, args.concurrency, args.load_requests)),
             ("eval", lambda: bench_eval(R))]
    for i, (name, fn) in enumerate(steps, 1):
        if args.only and name not in args.only:
            continue
        log(f"==== [{i}/{len(steps)}] {name}")
        t = time.time()
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            import traceback
            R["errors"][name] = traceback.format_exc()
            log(f"{name} FAILED: {e!r}")
        R.setdefault("timings_s", {})[name] = time.time() - t
        (WORK / "results.json").write_text(json.dumps(R, indent=1, default=str))
    R["machine"]["loadavg_end"] = os.getloadavg()
    if not args.only:
        R["total_s"] = time.time() - T0
    (WORK / "results.json").write_text(json.dumps(R, indent=1, default=str))
    harness_report().write(R, REPO, PLOTS)
    log(f"done in {(time.time() - T0) / 60:.1f} min: benches/RESULTS.md, benches/plots/")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--only", nargs="*", help="run only these steps (signatures redaction classifier e2e eval)")
    ap.add_argument("--requests", type=int, default=300, help="sequential requests per configuration in the e2e benches")
    ap.add_argument("--concurrency", type=int, default=None, help="e2e load: concurrent keep-alive clients (default 8)")
    ap.add_argument("--load-requests", type=int, default=None, help="e2e load: measured requests per app (default 2000)")
    ap.add_argument("--report-only", action="store_true", help="re-render RESULTS.md from .work/results.json")
    a = ap.parse_args()
    if not a.inner:
        bootstrap(sys.argv[1:])
    elif a.report_only:
        sys.path.insert(0, str(HERE))
        harness_report().write(json.loads((WORK / "results.json").read_text()), REPO, PLOTS)
    else:
        main_inner(a)
