"""The shared JSON vectors of testdata/vectors (same expectations as cargo test and node --test)."""

import hashlib
import json

import pytest

import vallum
from conftest import load_vectors

ORDER = {"allow": 0, "flag": 1, "block": 2}
PROMPTS = load_vectors("prompts.json")["cases"]
OUTPUTS = load_vectors("outputs.json")["cases"]
WATERMARK = load_vectors("watermark.json")
POLICIES = load_vectors("policies.json")["cases"]


def firewall(case):
    policy = vallum.Policy.from_json(json.dumps(case["policy"])) if "policy" in case else None
    return vallum.Firewall(policy)


@pytest.mark.parametrize("case", PROMPTS, ids=[c["name"] for c in PROMPTS])
def test_prompt_vector(case):
    fw = firewall(case)
    if case["kind"] == "conversation":
        v = fw.scan_conversation(case["input"])
        text = "\n".join(case["input"])
    else:
        text = case["input"]
        v = fw.scan_prompt(text)
    e = case["expect"]
    data = text.encode()
    if "decision" in e:
        assert v.decision == e["decision"], v.to_json()
    if "min_decision" in e:
        assert ORDER[v.decision] >= ORDER[e["min_decision"]], v.to_json()
    if "max_decision" in e:
        assert ORDER[v.decision] <= ORDER[e["max_decision"]], v.to_json()
    for r in e.get("rule_ids", []):
        assert r in v.rule_ids
    for c in e.get("categories", []):
        assert c in v.categories
    if e.get("no_matches"):
        assert v.matches == []
    for k, want in e.get("flags", {}).items():
        assert v.flags[k] == want
    for k in e.get("flag_nonzero", []):
        assert v.flags[k] > 0
    for enc in e.get("encodings", []):
        assert enc in v.flags["encodings"]
    if "decoded_contains" in e:
        assert any(m.decoded and e["decoded_contains"] in m.decoded for m in v.matches)
    if e.get("quoted"):
        assert any(m.quoted for m in v.matches)
    for t in e.get("match_texts", []):
        assert any(data[m.start : m.end].decode() == t for m in v.matches), t
    for m in v.matches:
        assert 0 <= m.start < m.end <= len(data)
        data[m.start : m.end].decode()  # on char boundaries


@pytest.mark.parametrize("case", OUTPUTS, ids=[c["name"] for c in OUTPUTS])
def test_output_vector(case):
    fw = firewall(case)
    text = "".join(case["input_parts"])
    r = fw.scan_output(text)
    e = case["expect"]
    assert r.text == e["text"]
    assert [(f.entity, f.start, f.end) for f in r.findings] == [(f["entity"], f["start"], f["end"]) for f in e["findings"]]
    assert r.canary_leaked == e.get("canary_leaked", False)
    if e.get("restores"):
        assert fw.restore(r.text) == text


@pytest.mark.parametrize("case", WATERMARK["cases"], ids=[c["name"] for c in WATERMARK["cases"]])
def test_watermark_vector(case):
    fw = vallum.Firewall(key=bytes.fromhex(WATERMARK["key_hex"]))
    marked = fw.watermark(case["input"], case["payload"])
    assert fw.strip_watermark(marked) == case.get("stripped", case["input"])
    d = fw.detect_watermark(marked)
    if "detect" in case and case["detect"] is None:
        assert d is None
    else:
        assert d is not None and d.payload == case["payload"]
    if "embedded_sha256" in case:
        assert hashlib.sha256(marked.encode()).hexdigest() == case["embedded_sha256"]


@pytest.mark.parametrize("case", POLICIES, ids=[c["name"] for c in POLICIES])
def test_policy_vector(case):
    def run():
        p = vallum.Policy.from_json(case["json"])
        if case.get("build"):
            vallum.Firewall(p)

    if case.get("ok"):
        run()
        return
    with pytest.raises(vallum.VallumError) as ei:
        run()
    assert ei.value.code == case["error_code"]
    if "error_path" in case:
        assert str(ei.value).split(": ", 1)[1].startswith(case["error_path"])


SSE = load_vectors("sse.json")


def _openai_contents(stream):
    """The joined choices[0].delta.content strings of an OpenAI-style event stream."""
    out = []
    for e in stream.split("\n\n"):
        if e.startswith("data: ") and e[6:] != "[DONE]":
            out.append(json.loads(e[6:])["choices"][0]["delta"]["content"])
    return "".join(out)


@pytest.mark.parametrize("case", SSE["cases"], ids=[c["name"] for c in SSE["cases"]])
@pytest.mark.parametrize("as_bytes", [False, True], ids=["str", "bytes"])
def test_sse_vector(case, as_bytes):
    policy = vallum.Policy.from_json(json.dumps(case["policy"])) if "policy" in case else None
    fw = vallum.Firewall(policy, key=bytes.fromhex(SSE["key_hex"]))
    payload = int(case["payload_decimal"]) if "payload_decimal" in case else None
    s = fw.sse_stream(payload, redact=case["redact"])
    outs = [s.push(c.encode() if as_bytes else c) for c in case["chunks"]]
    outs.append(s.finish())
    whole = "".join(outs)
    if case.get("expect_chunks"):
        assert outs == case["expect"]
    elif "expect_sha256" in case:
        assert hashlib.sha256(whole.encode()).hexdigest() == case["expect_sha256"]
    else:
        assert whole == case["expect"]
    if case.get("watermark_detect"):
        joined = _openai_contents(whole)
        assert fw.detect_watermark(joined).payload == payload
        assert fw.strip_watermark(joined) == _openai_contents("".join(case["chunks"]))
