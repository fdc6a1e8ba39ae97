//! Runs the shared JSON test vectors under `testdata/vectors/` (the same files pytest and
//! `node --test` run), so the three surfaces cannot drift.

use std::path::PathBuf;

use serde_json::Value;
use sha2::{Digest, Sha256};
use vallum::{Action, Firewall, Policy};

fn load(name: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/vectors").join(name);
    let s = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&s).unwrap()
}

fn firewall(case: &Value) -> Firewall {
    let policy = match case.get("policy") {
        Some(p) => Policy::from_json(&p.to_string()).unwrap(),
        None => Policy::default(),
    };
    Firewall::builder().policy(policy).build().unwrap()
}

fn action(s: &str) -> Action {
    serde_json::from_value(Value::String(s.into())).unwrap()
}

fn joined(case: &Value, key: &str) -> String {
    case[key].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect()
}

#[test]
fn prompt_vectors() {
    let v = load("prompts.json");
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 30);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let fw = firewall(c);
        let (verdict, input) = if c["kind"] == "conversation" {
            let turns: Vec<&str> = c["input"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
            (fw.scan_conversation(&turns), turns.join("\n"))
        } else {
            let t = c["input"].as_str().unwrap();
            (fw.scan_prompt(t), t.to_string())
        };
        let e = &c["expect"];
        let ctx = || format!("{name}: {}", serde_json::to_string(&verdict).unwrap());
        if let Some(d) = e.get("decision") {
            assert_eq!(verdict.decision, action(d.as_str().unwrap()), "{}", ctx());
        }
        if let Some(d) = e.get("min_decision") {
            assert!(verdict.decision >= action(d.as_str().unwrap()), "{}", ctx());
        }
        if let Some(d) = e.get("max_decision") {
            assert!(verdict.decision <= action(d.as_str().unwrap()), "{}", ctx());
        }
        for r in e.get("rule_ids").and_then(Value::as_array).into_iter().flatten() {
            assert!(verdict.rule_ids().contains(&r.as_str().unwrap()), "missing rule {r}: {}", ctx());
        }
        for r in e.get("categories").and_then(Value::as_array).into_iter().flatten() {
            assert!(verdict.categories().contains(&r.as_str().unwrap()), "missing category {r}: {}", ctx());
        }
        if e.get("no_matches") == Some(&Value::Bool(true)) {
            assert!(verdict.matches.is_empty(), "{}", ctx());
        }
        if let Some(flags) = e.get("flags").and_then(Value::as_object) {
            let got = serde_json::to_value(&verdict.flags).unwrap();
            for (k, want) in flags {
                assert_eq!(&got[k], want, "flag {k}: {}", ctx());
            }
        }
        for k in e.get("flag_nonzero").and_then(Value::as_array).into_iter().flatten() {
            let got = serde_json::to_value(&verdict.flags).unwrap();
            assert!(got[k.as_str().unwrap()].as_u64().unwrap_or(0) > 0, "flag {k} is zero: {}", ctx());
        }
        for enc in e.get("encodings").and_then(Value::as_array).into_iter().flatten() {
            assert!(verdict.flags.encodings.iter().any(|x| x == enc.as_str().unwrap()), "encoding {enc}: {}", ctx());
        }
        if let Some(s) = e.get("decoded_contains").and_then(Value::as_str) {
            assert!(verdict.matches.iter().any(|m| m.decoded.as_deref().is_some_and(|d| d.contains(s))), "{}", ctx());
        }
        if e.get("quoted") == Some(&Value::Bool(true)) {
            assert!(verdict.matches.iter().any(|m| m.quoted), "{}", ctx());
        }
        for t in e.get("match_texts").and_then(Value::as_array).into_iter().flatten() {
            let t = t.as_str().unwrap();
            assert!(verdict.matches.iter().any(|m| &input[m.start..m.end] == t), "no match spans {t:?}: {}", ctx());
        }
        for m in &verdict.matches {
            assert!(m.start < m.end && m.end <= input.len(), "{}", ctx());
            assert!(input.is_char_boundary(m.start) && input.is_char_boundary(m.end), "{}", ctx());
        }
    }
}

#[test]
fn output_vectors() {
    let v = load("outputs.json");
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 30);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let fw = firewall(c);
        let input = joined(c, "input_parts");
        let r = fw.scan_output(&input);
        let e = &c["expect"];
        assert_eq!(r.text, e["text"].as_str().unwrap(), "{name}");
        let got: Vec<(String, usize, usize)> =
            r.findings.iter().map(|f| (f.entity.as_str().to_string(), f.start, f.end)).collect();
        let want: Vec<(String, usize, usize)> = e["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["entity"].as_str().unwrap().to_string(), f["start"].as_u64().unwrap() as usize, f["end"].as_u64().unwrap() as usize))
            .collect();
        assert_eq!(got, want, "{name}");
        assert_eq!(r.canary_leaked, e.get("canary_leaked") == Some(&Value::Bool(true)), "{name}");
        if e.get("restores") == Some(&Value::Bool(true)) {
            assert_eq!(fw.restore(&r.text), input, "{name}");
        }
    }
}

#[test]
fn watermark_vectors() {
    let v = load("watermark.json");
    let key = vallum::keys::parse_key_hex(v["key_hex"].as_str().unwrap()).unwrap();
    let fw = Firewall::builder().key(&key).build().unwrap();
    for c in v["cases"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let input = c["input"].as_str().unwrap();
        let payload = c["payload"].as_u64().unwrap();
        let marked = fw.watermark(input, payload);
        let stripped = c.get("stripped").and_then(Value::as_str).unwrap_or(input);
        assert_eq!(fw.strip_watermark(&marked), stripped, "{name}");
        let detected = fw.detect_watermark(&marked).map(|d| d.payload);
        match c.get("detect") {
            Some(Value::Null) => assert_eq!(detected, None, "{name}"),
            _ => assert_eq!(detected, Some(payload), "{name}"),
        }
        if let Some(h) = c.get("embedded_sha256").and_then(Value::as_str) {
            assert_eq!(hex::encode(Sha256::digest(marked.as_bytes())), h, "{name}");
        }
    }
}

#[test]
fn policy_vectors() {
    let v = load("policies.json");
    for c in v["cases"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let parsed = Policy::from_json(c["json"].as_str().unwrap());
        let result = if c.get("build") == Some(&Value::Bool(true)) {
            parsed.and_then(|p| Firewall::builder().policy(p).build().map(|_| ()))
        } else {
            parsed.map(|_| ())
        };
        if c.get("ok") == Some(&Value::Bool(true)) {
            assert!(result.is_ok(), "{name}: {result:?}");
            continue;
        }
        let err = result.expect_err(name);
        assert_eq!(err.code().as_str(), c["error_code"].as_str().unwrap(), "{name}: {err}");
        if let Some(p) = c.get("error_path").and_then(Value::as_str) {
            assert!(err.message().starts_with(p), "{name}: {err}");
        }
    }
}

/// The joined `choices[0].delta.content` strings of an OpenAI-style event stream.
fn openai_contents(stream: &str) -> String {
    stream
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(d).unwrap()["choices"][0]["delta"]["content"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn sse_vectors() {
    let v = load("sse.json");
    let key = vallum::keys::parse_key_hex(v["key_hex"].as_str().unwrap()).unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let policy = match c.get("policy") {
            Some(p) => Policy::from_json(&p.to_string()).unwrap(),
            None => Policy::default(),
        };
        let fw = Firewall::builder().policy(policy).key(&key).build().unwrap();
        let payload = c.get("payload_decimal").and_then(Value::as_str).map(|s| s.parse::<u64>().unwrap());
        let mut s = fw.sse_stream(c["redact"].as_bool().unwrap(), payload);
        let chunks: Vec<&str> = c["chunks"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
        let mut outs: Vec<String> = chunks.iter().map(|ch| s.push(ch)).collect();
        outs.push(s.finish());
        let all = outs.concat();
        if c.get("expect_chunks") == Some(&Value::Bool(true)) {
            let want: Vec<&str> = c["expect"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
            assert_eq!(outs, want, "{name}");
        } else if let Some(h) = c.get("expect_sha256").and_then(Value::as_str) {
            assert_eq!(hex::encode(Sha256::digest(all.as_bytes())), h, "{name}");
        } else {
            assert_eq!(all, c["expect"].as_str().unwrap(), "{name}");
        }
        if c.get("watermark_detect") == Some(&Value::Bool(true)) {
            let joined = openai_contents(&all);
            assert_eq!(fw.detect_watermark(&joined).map(|d| d.payload), payload, "{name}");
            assert_eq!(fw.strip_watermark(&joined), openai_contents(&chunks.concat()), "{name}");
        }
    }
}

/// The policy example in README.md is a valid policy (so the documented format cannot drift).
#[test]
fn readme_policy_example_parses() {
    let readme = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let block = readme
        .split("```toml")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|b| b.contains("[thresholds]") && b.contains("[sse]"))
        .expect("README has the full policy example");
    let p = Policy::from_toml(block).unwrap_or_else(|e| panic!("README policy: {e}"));
    assert_eq!(p.sse, vallum::policy::SsePolicy::default(), "the README shows the defaults");
}
