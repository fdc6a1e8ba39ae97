"""models/windowing.py against the shared vectors that the engine's `windows` is tested on
(testdata/vectors/windows.json): training, the benchmark peers and the engine must cut the
same windows. Run: python3 -m pytest models/test_windowing.py"""
import json
from pathlib import Path

import windowing

VECTORS = Path(__file__).resolve().parents[1] / "testdata/vectors/windows.json"


def test_spans_match_the_shared_vectors():
    cases = json.loads(VECTORS.read_text())["cases"]
    assert len(cases) >= 10
    for c in cases:
        got = windowing.spans(c["body_tokens"], c["window_tokens"], c["stride"], c["max_windows"])
        assert [list(x) for x in got] == c["windows"], c


def test_windows_wrap_each_span_in_cls_and_sep():
    for c in json.loads(VECTORS.read_text())["cases"]:
        body = list(range(1000, 1000 + c["body_tokens"]))
        ws = windowing.windows([101, *body, 102], c["window_tokens"] + 2, c["stride"], c["max_windows"])
        assert [[w[0], w[-1]] for w in ws] == [[101, 102]] * len(ws)
        assert [w[1:-1] for w in ws] == [body[s:e] for s, e in c["windows"]]
