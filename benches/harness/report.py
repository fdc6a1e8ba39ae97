"""Renders benches/RESULTS.md and the plots from the harness results (dict from run.py)."""
from __future__ import annotations

import re
from pathlib import Path


def f(x, nd=2):
    if x is None:
        return "n/a"
    if isinstance(x, str):
        return x
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{nd}f}"


def met(a, b, target):
    """'yes' / 'no' for a ratio a/b against a target like '>= 500x' or '> 1x', '' without one."""
    try:
        r = a / b
    except (TypeError, ZeroDivisionError):
        return ""
    if not target:
        return ""
    n = float(target.split()[-1].rstrip("x"))
    return "yes" if (r >= n if target.startswith(">=") else r > n) else "**no**"


def ratio(a, b):
    try:
        r = a / b
        return (f"{r:,.1f}x" if r >= 10 else f"{r:.2f}x" if r >= 1 else f"{r:.2g}x") if a and b else "n/a"
    except (TypeError, ZeroDivisionError):
        return "n/a"


def table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def plots(R, plots_dir: Path):
    made = []
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:  # noqa: BLE001
        return [f"matplotlib unavailable: {e!r}"]
    c = R.get("classifier", {})
    if c.get("tools"):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for name, d in c["tools"].items():
            xs = [int(k) for k in d["latency"]]
            ax.plot(xs, [d["latency"][k]["p50_ms"] for k in d["latency"]], marker="o", label=f"{name} p50")
            ax.plot(xs, [d["latency"][k]["p99_ms"] for k in d["latency"]], ls=":", marker=".", color=ax.lines[-1].get_color())
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("input tokens")
        ax.set_ylabel("latency per text, ms (solid p50, dotted p99)")
        ax.set_title("Classifier latency vs input size (1 thread each, noisy shared 2-core box)")
        ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(plots_dir / "classifier_latency.svg")
        plt.close(fig)
        made.append("classifier_latency.svg")
    for key, title, fname in (("signatures", "Signature matching throughput (MB/s, log)", "signatures_throughput.svg"),
                              ("redaction", "Secret/PII redaction throughput (MB/s, log)", "redaction_throughput.svg")):
        d = R.get(key, {}).get("tools", {})
        items = [(n, v["mb_s"]) for n, v in d.items() if "mb_s" in v]
        if not items:
            continue
        fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(items)))
        ax.barh([n for n, _ in items][::-1], [v for _, v in items][::-1],
                color=["#c0392b" if n.lower().startswith("vallum") else "#7f8c8d" for n, _ in items][::-1])
        ax.set_xscale("log")
        ax.set_title(title)
        for i, (_, v) in enumerate(items[::-1]):
            ax.text(v, i, f" {v:.3g}", va="center", fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        fig.tight_layout()
        fig.savefig(plots_dir / fname)
        plt.close(fig)
        made.append(fname)
    if c.get("tools"):
        fig, ax = plt.subplots(figsize=(7, 2.6))
        items = [(n, d["throughput_texts_s"]) for n, d in c["tools"].items()]
        ax.barh([n for n, _ in items][::-1], [v for _, v in items][::-1],
                color=["#c0392b" if n.lower().startswith("vallum") else "#7f8c8d" for n, _ in items][::-1])
        ax.set_title(f"Classifier throughput, texts/s ({c.get('throughput_texts')} real prompts)")
        ax.tick_params(axis="y", labelsize=7)
        fig.tight_layout()
        fig.savefig(plots_dir / "classifier_throughput.svg")
        plt.close(fig)
        made.append("classifier_throughput.svg")
    return made



def dev_sentence(V):
    """Where the dev rows of the eval section came from, and whether they match the training split."""
    src = V.get("dev_source", "")
    out = ("The *dev* split is the held-out part of the training data (near-duplicate clusters kept on one "
           f"side), {V.get('dev_rows')} rows")
    if src == "models/split.py":
        chk = V.get("dev_split_check") or {}
        bad = chk.get("mismatches")
        out += (" of shared/data recomputed by `models/split.py` (the split train.py uses; the hard negatives "
                "train.py collects from its own Python environment are not included); its per-source counts "
                + (f"match the training run's in {chk.get('against')} ({chk.get('groups')} source/label groups); "
                   if bad == [] else f"differ from the training run's in {len(bad or [])} groups: {bad}; "))
    else:
        out += f" from {src}; "
    return out

def write(R, repo: Path, plots_dir: Path):
    plots_dir.mkdir(parents=True, exist_ok=True)
    c = R.get("classifier", {})  # JSON turns int keys into strings: back to ints
    for d in c.get("tools", {}).values():
        d["latency"] = {int(k): v for k, v in d.get("latency", {}).items()}
    for key in ("vallum_engine_p50_ms", "actual_tokens", "iters"):
        if isinstance(c.get(key), dict):
            c[key] = {int(k): v for k, v in c[key].items()}
    made = plots(R, plots_dir)
    m = R["machine"]
    L = []
    L.append(f"# Vallum comparison harness results\n\nGenerated {R['date']} by `python3 benches/harness/run.py` "
             f"(total {R.get('total_s', 0) / 60:.1f} min). Raw numbers: `benches/harness/.work/results.json` (not committed).\n")
    for rr in R.get("reruns", []):
        L.append(f"Re-run alone on {rr['date']} (`run.py --only {' '.join(rr['steps'])}`), after a change to what it "
                 f"measures: {', '.join(rr['steps'])}. Every other section is from the run above.\n")
    L.append("## Machine\n")
    L.append(f"- {m['nproc']} cores (`nproc`), CPU `{m['cpu']}`, {m['mem']} RAM, Linux {m['kernel']}, Python {m['python']}")
    L.append(f"- load average at start {', '.join(f'{x:.1f}' for x in m['loadavg_start'])}, at end "
             f"{', '.join(f'{x:.1f}' for x in m.get('loadavg_end', (0, 0, 0)))}. "
             + ("**Other work shared the 2 cores during this run: absolute numbers are noisy.** "
                if m["loadavg_start"][0] > 1.5 else "")
             + "**The machine's speed drifts by about ±20% from minute to minute even when idle (a shared virtual "
             "machine), so absolute MB/s vary between runs; the ratios below come from tools timed in interleaved "
             "rounds, which keeps them steadier.**")
    L.append("- every tool runs single-threaded in one Python process (Vallum through its Python binding unless "
             f"stated), on the same in-memory inputs. Signatures and redaction: {R.get('speed_rounds', 3)} rounds; in "
             "each round every tool in turn repeats its pass over the whole corpus for about a second (a slow tool "
             "does one pass) and the round keeps the median pass; each tool's best round counts. No progress bar "
             "or other bookkeeping runs inside a timed pass. Classifier: fixed iteration counts, p50/p99 per call; "
             "Vallum and Python onnxruntime (same process) alternate call by call, and their throughput passes "
             "alternate for 3 rounds (fastest pass counts); the PyTorch rows run afterwards in their own process.\n")
    L.append("## Reproduce\n\n```sh\ncargo build --release -p vallum             # the CLI, for eval and the CLI rows\n"
             "(cd bindings-python && maturin develop --release)   # run.py imports bindings-python/python\n"
             "(cd bindings-node && npm ci --ignore-scripts && npm run build)   # the Express app of the e2e step\n"
             "python3 benches/harness/run.py             # creates benches/harness/.venv and .venv-torch, installs the peers\n"
             "python3 benches/harness/run.py --only classifier   # one step; --report-only re-renders this file\n```\n")
    L.append("Peers (installed by the harness from PyPI into `benches/harness/.venv`, and PyTorch's into "
             "`benches/harness/.venv-torch`):\n")
    L.append(table(["package", "status"], [[p, ("ok " + str(s.get("version"))) if s.get("installed") else "**NOT INSTALLED**"]
                                          for p, s in R.get("peers", {}).items()]) + "\n")
    if R.get("errors"):
        L.append("**Steps that failed:** " + ", ".join(R["errors"]) + " (tracebacks in results.json)\n")

    # ------------------------------------------------------------ headline
    S, D, C = R.get("signatures", {}), R.get("redaction", {}), R.get("classifier", {})
    st, dt, ct = S.get("tools", {}), D.get("tools", {}), C.get("tools", {})

    def g(d, *names, key="mb_s"):
        for n in names:
            if n in d and key in d[n]:
                return d[n][key]
        return None
    v_sig = g(st, "Vallum scan_prompt (default rules + harness phrases)")
    v_sig0 = g(st, "Vallum scan_prompt (default rules)")
    v_sig_only = g(st, "Vallum scan_prompt (harness phrases only, no default rules)")
    aho = g(st, "pyahocorasick (lower() + iter)")
    aho_raw = g(st, "pyahocorasick (iter, no case folding)")
    rex = g(st, "Python re alternation (IGNORECASE)")
    v_red = g(dt, "Vallum scan_output")
    ds = g(dt, "detect-secrets (scan_file, default plugins)")
    pr = g(dt, "Presidio patterns (all predefined)")
    pr6 = g(dt, "Presidio patterns (6 matching entities)")
    vn = "Vallum scan_prompt (Rust: normalise + signatures + classifier)"
    on = "Python onnxruntime (tokenizers + same model.onnx)"
    tn = "PyTorch fp32 (models/vallum_lib.py)"
    hn = "transformers pipeline fp32 (text-classification)"
    h_note = "failed: see section 3" if C.get("transformers_error") else ""
    L.append("## Headline ratios (targets from issue #6)\n")
    rows = []
    raw = []  # (a, b) behind each row, for the "met" column
    v_doc = g(dt, "Vallum scan_output (whole corpus as one document)")
    raw.append((v_doc, ds))
    rows.append(["redaction: Vallum / detect-secrets, both reading the corpus as one file (MB/s)", ratio(v_doc, ds), ">= 500x",
                 "detect-secrets scans one file; Vallum one document"])
    raw.append((v_red, ds))
    rows.append(["redaction: Vallum per record / detect-secrets (MB/s)", ratio(v_red, ds), "", "Vallum called once per ~160-byte record"])
    raw.append((v_red, pr))
    rows.append(["redaction: Vallum / Presidio patterns, all recognizers", ratio(v_red, pr), ">= 500x", "both per record"])
    raw.append((v_red, pr6))
    rows.append(["redaction: Vallum / Presidio patterns, 6 matching entities", ratio(v_red, pr6), ">= 500x", "both per record"])
    raw.append((v_sig, aho))
    rows.append(["signatures incl. normalisation: Vallum / pyahocorasick (lower()+iter)", ratio(v_sig, aho), ">= 4x",
                 "Vallum with the same phrases added to its default rules"])
    raw.append((v_sig_only, aho))
    rows.append(["signatures, same phrase set only, incl. normalisation: Vallum / pyahocorasick (lower()+iter)",
                 ratio(v_sig_only, aho), ">= 4x", "no default rules: the peers' phrases through normalisation and decoding"])
    raw.append((v_sig, aho_raw))
    rows.append(["signatures: Vallum / pyahocorasick without case folding", ratio(v_sig, aho_raw), "", ""])
    raw.append((v_sig, rex))
    rows.append(["signatures: Vallum / Python re alternation", ratio(v_sig, rex), "", ""])
    for n in C.get("sizes", []):
        try:
            vl = ct[vn]["latency"][n]["p50_ms"]
            raw.append((ct[tn]["latency"][n]["p50_ms"], vl))
            rows.append([f"classifier p50 @ {n} tok: PyTorch / Vallum", ratio(ct[tn]["latency"][n]["p50_ms"], vl), ">= 10x", ""])
            raw.append((ct[on]["latency"][n]["p50_ms"], vl))
            rows.append([f"classifier p50 @ {n} tok: onnxruntime / Vallum", ratio(ct[on]["latency"][n]["p50_ms"], vl), "> 1x", ""])
        except (KeyError, TypeError):
            pass
        if vn in ct:  # the transformers row, or n/a with its failure
            hl = ct.get(hn, {}).get("latency", {}).get(n, {}).get("p50_ms")
            raw.append((hl, ct[vn]["latency"][n]["p50_ms"]))
            rows.append([f"classifier p50 @ {n} tok: transformers pipeline / Vallum", ratio(hl, ct[vn]["latency"][n]["p50_ms"]),
                         ">= 10x", h_note])
    try:
        raw.append((ct[vn]["throughput_texts_s"], ct[tn]["throughput_texts_s"]))
        rows.append(["classifier throughput: Vallum / PyTorch", ratio(ct[vn]["throughput_texts_s"], ct[tn]["throughput_texts_s"]), ">= 10x", ""])
        raw.append((ct[vn]["throughput_texts_s"], ct[on]["throughput_texts_s"]))
        rows.append(["classifier throughput: Vallum / onnxruntime", ratio(ct[vn]["throughput_texts_s"], ct[on]["throughput_texts_s"]), "> 1x", ""])
    except (KeyError, TypeError):
        pass
    if vn in ct:
        ht = ct.get(hn, {}).get("throughput_texts_s")
        raw.append((ct[vn]["throughput_texts_s"], ht))
        rows.append(["classifier throughput: Vallum / transformers pipeline", ratio(ct[vn]["throughput_texts_s"], ht), ">= 10x", h_note])
    rows = [r[:3] + [met(a, b, r[2])] + r[3:] for r, (a, b) in zip(rows, raw)]
    L.append(table(["ratio", "measured", "target", "met", "note"], rows) + "\n")

    # ------------------------------------------------------------ signatures
    if S:
        L.append("## 1. Signatures\n")
        L.append(f"Corpus: {S['records']} records, {S['bytes'] / 1e6:.2f} MB of prompts and prose from every shared/data "
                 f"source (round-robin, both labels; built at run time, not committed). Phrase set: {S['phrases']} "
                 "lower-case literal phrases = the `phrases` of core/rules/default.toml + common injection phrases "
                 "written in benches/harness/gen.py. The peers get that phrase set; Vallum runs its whole "
                 "signature layer (Unicode NFKC + confusable folding, invisible characters, leetspeak, spacing, "
                 "base64/hex/percent/ROT13 decoding and rescanning, Aho-Corasick phrases *and* its regex "
                 "patterns) with the same phrases added as an inline rule, and once with those phrases alone (no default rules; normalisation and decoding still run); `records hit` differ because Vallum "
                 "matches more than the literal phrases (regexes, de-obfuscation) and phrases on word boundaries.\n")
        rows = [[n, f(d.get("mb_s")), f(d.get("seconds")), d.get("records_hit") if d.get("records_hit") is not None else "n/a", d.get("passes", "")]
                for n, d in st.items() if "mb_s" in d]
        rows += [[n, "error: " + d["error"], "", "", ""] for n, d in st.items() if "error" in d]
        L.append(table(["tool", "MB/s", "seconds (one pass)", "records hit", "passes"], rows))
        if S.get("vallum_engine_only_mb_s"):
            per_rec = S["bytes"] / S["records"]
            eng = S["vallum_engine_only_mb_s"]
            L.append(f"\nVallum engine time alone (sum of `verdict.elapsed_us` over the median pass, default rules, no binding overhead): "
                     f"{f(eng)} MB/s, i.e. about {per_rec / eng:.0f} us per record of ~{per_rec:.0f} bytes. The cost is the "
                     "engine's prompt path (normalisation into several views, de-obfuscation, phrase automata and "
                     "about 100 regex rules per view), not the binding.\n")

    # ------------------------------------------------------------ redaction
    if D:
        L.append("## 2. Secrets and PII redaction\n")
        L.append(f"Generated corpus (benches/harness/gen.py, seed 6): {D['records']} records, {D['bytes'] / 1e6:.2f} MB, "
                 f"{D['planted']} planted fake entities with exact spans (e-mail, phone, Luhn-valid cards, mod-97 IBANs, "
                 "SSA-valid SSNs, IPv4, AWS access keys, GitHub tokens, JWTs, high-entropy password assignments) and "
                 "hard negatives (UUIDs, SHA-1/SHA-256 hashes, Luhn-invalid order numbers, `token_count = 42`, "
                 "`password_policy = \"strict\"`, `password: ********`, `api_key = os.environ[...]`, versions and "
                 "dates). Scoring is entity-agnostic span overlap: recall = planted spans overlapped by a finding; "
                 "precision = merged findings overlapping a planted span. detect-secrets only targets secrets and "
                 "Presidio only PII, so recall on each half is listed too. detect-secrets runs its own file scan "
                 "(`detect_secrets.core.scan.scan_file`, default plugins and filters, one record per line; spans "
                 "located from `secret_value`). Presidio: `AnalyzerEngine` over a `SpacyNlpEngine` subclass holding "
                 "`spacy.blank(\"en\")` (no model download), predefined recognizers minus `SpacyRecognizer`"
                 + (f" ({', '.join(D.get('presidio_recognizers', []))})" if D.get("presidio_recognizers") else "") + ".\n")
        rows = []
        for n, d in dt.items():
            if "error" in d:
                rows.append([n, "error: " + d["error"][:200]] + [""] * 6)
                continue
            rows.append([n, f(d["mb_s"], 3), f(d["recall"], 3), f(d["precision"], 3), f(d["recall_secrets"], 3),
                         f(d["recall_pii"], 3), d["predicted_spans"], d["false_positive_spans"], d.get("passes", "")])
        L.append(table(["tool", "MB/s", "recall", "precision", "recall secrets", "recall PII", "findings", "false positives", "passes"], rows) + "\n")
        kinds = sorted({k for d in dt.values() for k in d.get("recall_by_kind", {})})
        if kinds:
            L.append("Recall by planted kind:\n")
            L.append(table(["tool"] + kinds, [[n] + [f(d["recall_by_kind"].get(k), 2) for k in kinds]
                                              for n, d in dt.items() if "recall_by_kind" in d]) + "\n")

    # ------------------------------------------------------------ classifier
    if C:
        L.append("## 3. Classifier\n")
        t = ct.get(tn, {})
        L.append(f"Same benign prose cut to {', '.join(str(n) for n in C['sizes'])} tokens (actual "
                 f"{C.get('actual_tokens')}), iterations {C.get('iters')} after 10 warm-up calls; every pipeline "
                 "tokenises with tokenizer.json (padding off), applies the engine's windowing (256-token windows, "
                 "at most 128 apart, spread evenly: 512 tokens = 3 windows; models/windowing.py, checked against the "
                 "engine's vectors; batched as equal-length windows, for onnxruntime at most 512 tokens per call as "
                 "in the engine; the transformers pipeline one window per call, see below) and returns the max score. "
                 "All single-threaded. Vallum is `Firewall().scan_prompt` through the Python binding, so its numbers "
                 "*include* normalisation and the signature layer (the signatures-only row shows that share). "
                 f"Python onnxruntime {C.get('onnxruntime_version')} runs the same int8 `model.onnx`. PyTorch "
                 f"{t.get('torch', '')} ({t.get('threads', '?')} thread) runs the model class of models/vallum_lib.py "
                 f"in fp32 with weights: {t.get('weights', 'n/a')}.\n")
        if C.get("vallum_error"):
            L.append(f"**Vallum classifier unavailable:** {C['vallum_error']}\n")
        h = ct.get(hn)
        if h:
            wr = h.get("windows_retokenized") or {}
            L.append(f"The transformers row is what a FastAPI team would write with Hugging Face transformers "
                     f"{h.get('version')}: `pipeline(\"text-classification\", device=-1, function_to_apply=\"sigmoid\")` "
                     "over a `BertPreTrainedModel` subclass holding `BertModel(BertConfig(...), add_pooling_layer=False)` "
                     f"({t.get('layers', '?')} layers, hidden 384, 12 heads, strictly loaded with the same fp32 weights as the PyTorch row) "
                     "plus the masked mean pool and linear head, returning `SequenceClassifierOutput` logits "
                     "(num_labels 1), and a `PreTrainedTokenizerFast` over tokenizer.json; attention implementation "
                     f"`{h.get('attn')}` (transformers' default), {h.get('dtype')}, {h.get('threads', '?')} thread, "
                     "built offline from local files. The pipeline does not window, so a text over 254 tokens is cut "
                     "into the engine's windows, each mapped back to a substring of the text through the token "
                     "offsets and re-tokenised by the pipeline (batch size 1), score = max"
                     + (f"; {wr.get('differ')} of {wr.get('windows')} window substrings of the timed texts re-tokenise "
                        "differently from the engine's window (a window starting inside a word)" if wr else "")
                     + ". Texts of at most 254 tokens are one pipeline call on the whole text.\n")
        if C.get("torch_error"):
            L.append(f"**PyTorch pipeline failed:** {C['torch_error']}\n")
        if C.get("transformers_error"):
            err = C["transformers_error"].strip().splitlines()
            L.append(f"**transformers pipeline failed:** {err[-1]}" + (" (traceback in results.json)" if len(err) > 1 else "") + "\n")
        head = ["tool"] + [f"p50 / p99 ms @ {n} tok" for n in C["sizes"]] + ["texts/s", "MB/s"]
        rows = []
        for n, d in ct.items():
            rows.append([n] + [f"{f(d['latency'][k]['p50_ms'])} / {f(d['latency'][k]['p99_ms'])}" for k in C["sizes"]]
                        + [f(d.get("throughput_texts_s"), 1), f(d.get("throughput_mb_s"), 3)])
        L.append(table(head, rows) + "\n")
        rounds = next((d["throughput_rounds"] for d in C.get("tools", {}).values() if "throughput_rounds" in d), None)
        L.append(f"Throughput: {C.get('throughput_texts')} real prompts from shared/data ({C.get('throughput_bytes', 0) / 1e3:.0f} kB), one call per text"
                 + (f"; in-process tools: fastest of {rounds} interleaved passes, PyTorch rows: one pass." if rounds else "."))
        if C.get("vallum_engine_p50_ms"):
            L.append("\n- Vallum engine time alone (verdict.elapsed_us) p50: "
                     + ", ".join(f"{n} tok {f(v)} ms" for n, v in C["vallum_engine_p50_ms"].items()) + ".")
        if C.get("vallum_vs_ort_max_abs_score_diff") is not None:
            L.append(f"- Max |score difference| between Vallum's `verdict.classifier['score']` and the raw Python "
                     f"onnxruntime score on those prompts: {C['vallum_vs_ort_max_abs_score_diff']:.2g}. Both are the "
                     "model's probability, max over the same windows batched the same way; they differ on texts "
                     "where Vallum also scores the normalised view (look-alike letters, letter spacing, invisible "
                     "characters), which the peer does not; models/vallum-pi-minilm/pinned_scores.json and the "
                     "engine tests cover parity.")
        if C.get("torch_vs_ort_max_abs_score_diff") is not None:
            L.append(f"- PyTorch fp32 vs int8 onnxruntime: {C['torch_vs_ort_max_abs_score_diff']:.2g}. The int8 model "
                     "quantises each layer's input activations to 8 bits at run time (dynamic quantisation); the fp32 "
                     "rows run the same weights without that rounding, so scores near the decision boundary move. "
                     "These rows compare speed on the same weights, not decisions.")
        if C.get("transformers_vs_ort_max_abs_score_diff") is not None:
            L.append(f"- transformers pipeline vs int8 onnxruntime: {C['transformers_vs_ort_max_abs_score_diff']:.2g} (fp32 vs "
                     "int8, as for the PyTorch row); vs the PyTorch row (same fp32 weights): "
                     f"{C.get('transformers_vs_torch_max_abs_score_diff', float('nan')):.2g}.")
        L.append("\n")

    # ------------------------------------------------------------ e2e
    E = R.get("e2e", {})
    if E:
        L.append("## 4. End to end (middleware on loopback)\n")
        loads = {k: (E.get(k, {}).get("json") or {}) for k in ("fastapi", "express")}
        if any(d.get("load") for d in loads.values()):
            j = next(d for d in loads.values() if d.get("load"))
            L.append(f"Concurrent load: each app runs in its own server process on 127.0.0.1 (FastAPI: uvicorn, 1 worker; "
                     f"Express: one node process); a separate load-generator process keeps {j.get('concurrency')} "
                     f"closed-loop keep-alive clients busy for {j.get('requests')} measured requests per app (after "
                     f"{j.get('warmup')} warm-up requests, in {j.get('rounds')} interleaved rounds) on the same small "
                     "JSON chat endpoint, with the same prompt mix in both frameworks: "
                     f"{(j.get('mix') or {}).get('blocked')} of every {(j.get('mix') or {}).get('prompts')} prompts are "
                     "injections that the default rules block (403 behind Vallum, checked), the rest short benign "
                     "prompts (200, checked). *vallum off* = middleware with the classifier disabled (signatures "
                     "only), *vallum on* = the default policy with the bundled model. *added* = the app's percentile "
                     "minus the bare app's, under the same load; errors = failed requests or unexpected statuses. "
                     "Server and generator share the machine's cores (see Machine).\n")
            names = {"bare": "bare", "middleware-off": "vallum off", "middleware-on": "vallum on"}

            def ms(x):
                return f(x / 1000, 2) if x is not None else ""
            rows = []
            for k, title in (("fastapi", "FastAPI"), ("express", "Express")):
                d = loads[k]
                for v in d.get("load", []):
                    name = names.get(v.get("variant"), v.get("variant"))
                    if not v.get("available"):
                        rows.append([title, name, d.get("concurrency"), "n/a", "n/a", "n/a", "n/a", "", "",
                                     f"not available: {v.get('error', '')[:80]}"])
                        continue
                    rows.append([title, name, d.get("concurrency"), v.get("requests"), ms(v.get("p50_us")),
                                 ms(v.get("p99_us")), f(v.get("req_s"), 0), ms(v.get("added_p50_us")),
                                 ms(v.get("added_p99_us")), v.get("errors")])
            L.append(table(["framework", "variant", "concurrency", "requests", "p50 ms", "p99 ms", "req/s",
                            "added p50 ms", "added p99 ms", "errors"], rows) + "\n")
            rows = []
            for k, title in (("fastapi", "FastAPI"), ("express", "Express")):
                d = loads[k]
                for v in d.get("load", []):
                    if v.get("available"):
                        rows.append([title, names.get(v["variant"], v["variant"]), ms(v.get("max_us")),
                                     f(v.get("server_cpu_pct"), 0), f(v.get("client_cpu_pct"), 0)])
            L.append("CPU time over the time under load, as a % of one core (near 100 = that side is the bottleneck), "
                     "and the slowest request:\n")
            L.append(table(["framework", "variant", "max ms", "server CPU %", "load generator CPU %"], rows) + "\n")
            seq = [(t, loads[k]["sequential"]) for k, t in (("fastapi", "FastAPI"), ("express", "Express"))
                   if loads[k].get("sequential")]
            if seq:
                L.append(f"Sequential requests (one keep-alive client, server in the same process; "
                         f"{seq[0][1].get('requests')} requests per app):\n")
                rows = [[t, r["label"], f(r.get("p50_us"), 0), f(r.get("p99_us"), 0),
                         f(r.get("added_p50_us"), 0) if r.get("added_p50_us") is not None else "",
                         f(r.get("added_p99_us"), 0) if r.get("added_p99_us") is not None else ""]
                        for t, sd in seq for r in sd.get("rows", [])]
                L.append(table(["framework", "app", "p50 us", "p99 us", "added p50 us", "added p99 us"], rows) + "\n")
        L.append("Full output of the bindings' own benchmarks as run by the harness (per-call binding cost, the "
                 "sequential requests and the concurrent load; see each script's header):\n")
        for k, title in (("fastapi", "FastAPI: `python bindings-python/bench/bench_middleware.py`"),
                         ("express", "Express: `node bench/bench.mjs` in bindings-node")):
            d = E.get(k, {})
            L.append(f"### {title}\n")
            if d.get("rc") not in (0,):
                L.append(f"**Did not complete** (exit {d.get('rc')}): `{(d.get('stderr') or '').strip()[-600:]}`\n")
            if d.get("stdout"):
                L.append("```\n" + d["stdout"].strip() + "\n```\n")

    # ------------------------------------------------------------ eval
    V = R.get("eval", {})
    if V:
        L.append("## 5. Detection quality (`vallum eval`)\n")
        if V.get("error"):
            L.append(f"**eval failed:** {V['error']}\n")
        L.append("Positive = decision `flag` or above. "
                 + (dev_sentence(V) if V.get("dev_rows") else "")
                 + "*all* = every row of shared/data/*/*.jsonl, which the classifier was trained on (its train side), "
                 "so the full-engine *all* numbers are optimistic; the signature-only numbers are not trained.\n")
        if V.get("dev_note"):
            L.append(V["dev_note"] + "\n")
        rows = []
        for tag in ("dev_full", "dev_signatures", "all_full", "all_signatures"):
            d = V.get(tag)
            if not d:
                continue
            if "error" in d:
                rows.append([tag, "**error:** " + d["error"][:300].replace("|", "/").replace("\n", " ")] + [""] * 6)
                continue
            rows.append([tag, d["n"], f(d.get("auc"), 4), f(d.get("tpr"), 4), f(d.get("fpr"), 4), f(d.get("precision"), 4),
                         f(d.get("tpr_at_1pct_fpr"), 4), f(d.get("wall_s"), 0)])
        L.append(table(["run", "rows", "AUC", "TPR", "FPR", "precision", "TPR @ 1% FPR", "wall s"], rows) + "\n")
        for full, sig, title in (("dev_full", "dev_signatures", "Per source, dev split"),
                                 ("all_full", "all_signatures", "Per source, all data")):
            if full not in V or "per_source" not in V.get(full, {}) or "error" in V[full]:
                continue
            L.append(f"### {title} (full engine vs signatures only)\n")
            rows = []
            for src, d in V[full]["per_source"].items():
                s = V.get(sig, {}).get("per_source", {}).get(src, {})
                rows.append([src, d["n"], d["positives"], f(d.get("tpr"), 3), f(d.get("fpr"), 3),
                             f(s.get("tpr"), 3), f(s.get("fpr"), 3)])
            L.append(table(["source", "rows", "positives", "TPR full", "FPR full", "TPR sig", "FPR sig"], rows) + "\n")
        rocs = sorted(p.relative_to(plots_dir.parent).as_posix() for p in plots_dir.glob("roc*/*") if p.suffix in (".svg", ".png"))
        if rocs:
            L.append("ROC curves and score histograms written by `vallum eval --plots`: "
                     + ", ".join(f"[{Path(r).name}]({r})" for r in rocs[:12]) + (" ..." if len(rocs) > 12 else "") + "\n")

    L.append("## Plots\n")
    L.append("\n".join(f"![{p}](plots/{p})" for p in made if p.endswith(".svg")) + "\n")
    L.append("## Timings of the harness steps\n")
    L.append(table(["step", "seconds"], [[k, f(v, 0)] for k, v in R.get("timings_s", {}).items()]) + "\n")
    text = "\n".join(L)
    text = re.sub(r"\n{3,}", "\n\n", text)
    (repo / "benches/RESULTS.md").write_text(text)
