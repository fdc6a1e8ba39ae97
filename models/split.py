"""The data loading and the dev split of models/train.py, without torch.

The dev split is by cluster, not by row: rows are grouped by normalised text (NFKC, lower case,
whitespace runs collapsed), by upstream template-family keys and by MinHash near-duplicates
(word 3-shingles, 64 permutations in 16 bands, Jaccard >= 0.5), and a cluster goes to dev when
sha256("vallum-dev|" + cluster id) mod 5 == 0, i.e. about 20% of the clusters. So no text, template
family or near-duplicate sits on both sides.

    python models/split.py --data-dir ../shared/data --out dev_rows.json

writes the dev rows of the shared data (a JSON list of {text, label, source, category}); the
benchmark harness runs it for `vallum eval` on the dev split. train.py adds hard negatives
collected from the Python environment it runs in before clustering; those rows depend on the
installed packages, so this command leaves them out (they only rarely join a cluster of data rows;
the harness checks the per-source counts against models/reports/*-metrics.json).

Needs numpy and the standard library only.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import unicodedata
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np

NON_EN_BENIGN_CATS = {"benign_question_translated"}


def is_non_english(r):
    lang = str(r.get("language") or "").lower()
    if r.get("machine_translated") is True:
        return True
    if lang and lang not in ("en", "english", "none"):
        return True
    return r.get("category") in NON_EN_BENIGN_CATS or r.get("source") == "hn_gettext_intl"


def load_data(data_dir: Path):
    files = sorted(p.relative_to(data_dir).as_posix() for p in data_dir.glob("*/*.jsonl"))
    rows = []
    for rel in files:
        with open(data_dir / rel, encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                rows.append({"text": r["text"], "label": int(r["label"]), "source": r["source"],
                             "category": r.get("category", ""), "meta": _meta_key(r),
                             "non_en": False, "raw_lang": r.get("language"),
                             "mt": r.get("machine_translated")})
    for r in rows:
        r["non_en"] = is_non_english({"language": r.pop("raw_lang"), "machine_translated": r.pop("mt"),
                                      "category": r["category"], "source": r["source"]})
    return files, rows


def _meta_key(r):
    """Template-family keys from upstream metadata: rows sharing one are grouped."""
    s = r["source"]
    if s == "latent_jailbreak" and r.get("template"):
        return f"latent:{r['template']}"
    if s == "jailbreakbench_artifacts" and "random_search" in str(r.get("category", "")):
        return "jbb:random_search"
    if s == "spikee" and r.get("jailbreak_type"):
        return f"spikee:{r['jailbreak_type']}"
    if s == "gptfuzz_templates" and r.get("template_id") is not None:
        return f"gptfuzz:{r['template_id']}"
    return None


def norm_text(t: str) -> str:
    t = unicodedata.normalize("NFKC", t).lower()
    return re.sub(r"\s+", " ", t).strip()


class UF:
    def __init__(self, n):
        self.p = list(range(n))

    def find(self, a):
        while self.p[a] != a:
            self.p[a] = self.p[self.p[a]]
            a = self.p[a]
        return a

    def union(self, a, b):
        a, b = self.find(a), self.find(b)
        if a != b:
            self.p[max(a, b)] = min(a, b)


def cluster(rows, jaccard=0.5, shingle=3, perms=64, bands=16, seed=7):
    n = len(rows)
    uf = UF(n)
    norms = [norm_text(r["text"]) for r in rows]
    first = {}
    for i, t in enumerate(norms):
        if t in first:
            uf.union(first[t], i)
        else:
            first[t] = i
    meta_first = {}
    for i, r in enumerate(rows):
        k = r.get("meta")
        if k:
            if k in meta_first:
                uf.union(meta_first[k], i)
            else:
                meta_first[k] = i
    P = (1 << 31) - 1
    rs = np.random.RandomState(seed)
    a = rs.randint(1, P, size=perms).astype(np.uint64)
    b = rs.randint(0, P, size=perms).astype(np.uint64)
    rows_per_band = perms // bands
    sh_sets = {}
    buckets = defaultdict(list)
    for i, t in enumerate(norms):
        if i != first[t]:
            continue
        w = re.findall(r"\w+", t)
        if len(w) < 6:
            continue
        sh = {zlib.crc32(" ".join(w[j:j + shingle]).encode()) & 0x7FFFFFFF for j in range(len(w) - shingle + 1)}
        sh_sets[i] = sh
        x = np.fromiter(sh, dtype=np.uint64)
        sig = ((a[:, None] * x[None, :] + b[:, None]) % P).min(axis=1)
        for bi in range(bands):
            buckets[(bi, sig[bi * rows_per_band:(bi + 1) * rows_per_band].tobytes())].append(i)
    checked = set()
    for members in buckets.values():
        if len(members) < 2:
            continue
        anchors = []
        for m in members:
            for an in anchors:
                key = (an, m)
                if key in checked:
                    continue
                checked.add(key)
                s1, s2 = sh_sets[an], sh_sets[m]
                inter = len(s1 & s2)
                if inter and inter / (len(s1) + len(s2) - inter) >= jaccard:
                    uf.union(an, m)
            if len(anchors) < 40:
                anchors.append(m)
    roots = [uf.find(i) for i in range(n)]
    # cluster id: sha256 of the cluster's smallest normalised text
    small = {}
    for i, r in enumerate(roots):
        if r not in small or norms[i] < small[r]:
            small[r] = norms[i]
    return [hashlib.sha256(small[r].encode("utf-8")).hexdigest() for r in roots]


def is_dev(cluster_id: str) -> bool:
    """True for the clusters in the dev split: sha256("vallum-dev|" + id) mod 5 == 0."""
    return int(hashlib.sha256(("vallum-dev|" + cluster_id).encode()).hexdigest(), 16) % 5 == 0


def dev_rows(data_dir: Path) -> list[dict]:
    """The shared-data rows of the dev split (hard negatives not included; see the module doc)."""
    _, rows = load_data(Path(data_dir))
    return [{"text": r["text"], "label": r["label"], "source": r["source"], "category": r["category"]}
            for r, c in zip(rows, cluster(rows)) if is_dev(c)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    ap.add_argument("--out", required=True, help="JSON file for the dev rows")
    args = ap.parse_args()
    rows = dev_rows(Path(args.data_dir))
    Path(args.out).write_text(json.dumps(rows, ensure_ascii=False))
    print(f"{len(rows)} dev rows -> {args.out}")


if __name__ == "__main__":
    main()
