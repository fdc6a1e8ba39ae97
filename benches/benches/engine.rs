//! Criterion benchmarks of the engine's hot paths. Each benchmark first asserts the expected
//! number of detections on its corpus.
//!
//! Run: `cargo bench -p vallum-benches` (throughput is reported in bytes/s).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vallum::Firewall;
use vallum_benches::{output_corpus, prompt_corpus, PLANTED};

const SIZES: [(&str, usize); 2] = [("1KB", 1 << 10), ("1MB", 1 << 20)];

/// The signature path alone: the classifier has its own benchmarks (classifier.rs, latency.rs).
fn signatures_only() -> Firewall {
    let p = vallum::Policy::from_json(r#"{"classifier": {"enabled": false}}"#).unwrap();
    Firewall::builder().policy(p).build().unwrap()
}

fn signatures(c: &mut Criterion) {
    let fw = signatures_only();
    let mut g = c.benchmark_group("prompt_scan");
    for (name, size) in SIZES {
        let attacks = if size < 4096 { 1 } else { 16 };
        let text = prompt_corpus(size, attacks);
        let v = fw.scan_prompt(&text);
        let hits = v.matches.iter().filter(|m| m.rule_id == "VAL-IO-001").count();
        assert_eq!(hits, attacks, "prompt corpus {name}: expected {attacks} VAL-IO-001 matches");
        assert_eq!(v.matches.len(), attacks, "prompt corpus {name}: unexpected extra matches {:?}", v.rule_ids());
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_with_input(BenchmarkId::new("normalise+signatures", name), &text, |b, t| {
            b.iter(|| fw.scan_prompt(black_box(t)))
        });
        g.bench_with_input(BenchmarkId::new("normalise_only", name), &text, |b, t| {
            b.iter(|| vallum::normalize::normalize(black_box(t)))
        });
    }
    g.finish();
}

fn redaction(c: &mut Criterion) {
    let fw = signatures_only();
    let mut g = c.benchmark_group("output_redaction");
    for (name, size) in SIZES {
        let blocks = if size < 4096 { 1 } else { 32 };
        let text = output_corpus(size, blocks);
        let r = fw.scan_output(&text);
        assert_eq!(r.findings.len(), blocks * PLANTED.len(), "output corpus {name}: {:?}", r.findings.iter().map(|f| f.entity).collect::<Vec<_>>());
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_with_input(BenchmarkId::new("redact", name), &text, |b, t| b.iter(|| fw.scan_output(black_box(t))));
    }
    g.finish();
}

fn watermark(c: &mut Criterion) {
    let fw = Firewall::builder().key(&[7u8; 32]).build().unwrap();
    let text = vallum_benches::prose(10 << 10, 3);
    let marked = fw.watermark(&text, 12345);
    assert_eq!(fw.detect_watermark(&marked).map(|d| d.payload), Some(12345));
    let mut g = c.benchmark_group("watermark");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("embed_10KB", |b| b.iter(|| fw.watermark(black_box(&text), 12345)));
    g.bench_function("detect_10KB", |b| b.iter(|| fw.detect_watermark(black_box(&marked))));
    g.finish();
}

criterion_group!(benches, signatures, redaction, watermark);
criterion_main!(benches);
