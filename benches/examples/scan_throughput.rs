//! Prompt-scan throughput of the signature path (normalisation, signatures, decoding; the
//! classifier off) over a JSONL file of prompts, or with `--output` redaction throughput
//! (`scan_output`) over a JSONL file of model outputs, for profiling on real text:
//!
//! ```sh
//! cargo run --release -p vallum-benches --example scan_throughput -- [--output] [--policy POLICY.json] FILE.jsonl [PASSES]
//! ```
//!
//! Without `--policy` the built-in defaults run with the classifier off.
//!
//! Each line is a JSON object with a `text` field (what `vallum scan` reads). Prints the number
//! of records with a match (a signature match, or a redaction finding with `--output`) and of
//! matches (so that a faster but different engine shows), then
//! seconds per pass, MB/s and microseconds per record, timed after one untimed pass. Use it with
//! `perf record`; speed targets are checked by the criterion benchmarks and the harness.

use std::io::BufRead;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).peekable();
    let output = args.next_if(|a| a == "--output").is_some();
    let policy_json = match args.next_if(|a| a == "--policy").map(|_| args.next()) {
        None => r#"{"classifier": {"enabled": false}}"#.to_string(),
        Some(Some(p)) => match std::fs::read_to_string(&p) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("scan_throughput: {p}: {e}");
                return ExitCode::from(2);
            }
        },
        Some(None) => {
            eprintln!("scan_throughput: --policy needs a file");
            return ExitCode::from(2);
        }
    };
    let Some(path) = args.next() else {
        eprintln!("usage: scan_throughput [--output] [--policy POLICY.json] FILE.jsonl [PASSES]");
        return ExitCode::from(2);
    };
    let passes: usize = match args.next().map(|s| s.parse()) {
        None => 5,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("scan_throughput: PASSES must be a whole number above 0");
            return ExitCode::from(2);
        }
    };
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("scan_throughput: {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let mut texts = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let parsed = line.map_err(|e| e.to_string()).and_then(|l| serde_json::from_str::<serde_json::Value>(&l).map_err(|e| e.to_string()));
        match parsed.as_ref().ok().and_then(|v| v["text"].as_str()) {
            Some(t) => texts.push(t.to_string()),
            None => eprintln!("scan_throughput: line {}: no `text` string, skipped", n + 1),
        }
    }
    let policy = match vallum::Policy::from_json(&policy_json) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("scan_throughput: policy: {e}");
            return ExitCode::from(2);
        }
    };
    let fw = match vallum::Firewall::builder().policy(policy).build() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("scan_throughput: {e}");
            return ExitCode::from(2);
        }
    };
    let bytes: usize = texts.iter().map(String::len).sum();
    let (mut hit, mut matches) = (0, 0);
    for t in &texts {
        let n = if output { fw.scan_output(t).findings.len() } else { fw.scan_prompt(t).matches.len() };
        hit += usize::from(n > 0);
        matches += n;
    }
    let t0 = std::time::Instant::now();
    for _ in 0..passes {
        for t in &texts {
            if output {
                std::hint::black_box(fw.scan_output(t));
            } else {
                std::hint::black_box(fw.scan_prompt(t));
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64() / passes as f64;
    println!(
        "{} records, {bytes} bytes, {hit} with a match, {matches} matches; {secs:.3} s/pass, {:.1} MB/s, {:.2} us/record",
        texts.len(),
        bytes as f64 / secs / 1e6,
        secs * 1e6 / texts.len().max(1) as f64
    );
    ExitCode::SUCCESS
}
