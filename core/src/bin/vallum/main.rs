//! `vallum`: the command-line front end of the Vallum engine.
//!
//! Input is read line by line (plain text, or JSON objects with a `text` field); each line gives
//! one JSON object on stdout. A bad line (invalid UTF-8, bad JSON, too long) gives an
//! `{"line": N, "error": {...}}` object and a message on stderr, and the run goes on. Exit code:
//! 0 when every line succeeded, 1 when any line failed, 2 for usage or configuration errors.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};
use vallum::eval::{auc, tpr_at_fpr, Counts, Report};
use vallum::{Action, Firewall, Policy};

mod plots;

/// Longest input line read (bytes); longer lines are reported as errors and skipped.
const MAX_LINE_BYTES: usize = 256 << 20;

#[derive(Parser)]
#[command(name = "vallum", version, about = "Prompt-and-output firewall: scan prompts, redact and watermark outputs")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// JSON object lines when a line starts with `{`, plain text otherwise.
    Auto,
    /// Every line is one prompt.
    Text,
    /// Every line is a JSON object with a `text` field.
    Jsonl,
}

#[derive(clap::Args)]
struct InputArgs {
    /// Policy file (TOML, or JSON when it ends in .json). Default: built-in policy.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// How to read lines.
    #[arg(long, value_enum, default_value = "auto")]
    format: Format,
    /// Input file, or `-` for stdin.
    #[arg(default_value = "-")]
    input: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// Scan prompts: one verdict JSON object per input line.
    Scan(InputArgs),
    /// Redact outputs: one `{"text", "findings"}` object per input line.
    Redact(InputArgs),
    /// Embed, detect or strip a watermark.
    #[command(subcommand)]
    Watermark(WmCmd),
    /// Print a new canary token for a system prompt (needs --key-hex to verify it later).
    Canary {
        /// Secret key, hex (at least 16 bytes).
        #[arg(long)]
        key_hex: Option<String>,
        /// Policy file.
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// Evaluate detection on labelled JSONL files (`text`, `label` 1/0, optional `source`).
    Eval {
        /// Policy file.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Print one JSON object instead of tables.
        #[arg(long)]
        json: bool,
        /// Decision that counts as a positive prediction.
        #[arg(long, value_enum, default_value = "flag")]
        positive_at: PositiveAt,
        /// Write ROC curves and per-source score histograms (SVG) into this folder.
        #[arg(long)]
        plots: Option<PathBuf>,
        /// Turn the classifier off (signature layer alone).
        #[arg(long)]
        signatures_only: bool,
        /// Labelled JSONL files.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum PositiveAt {
    Flag,
    Block,
}

#[derive(Subcommand)]
enum WmCmd {
    /// Watermark each line (plain text or JSONL `text`) with a payload.
    Embed {
        /// Secret key, hex (at least 16 bytes).
        #[arg(long)]
        key_hex: String,
        /// Payload (unsigned 64-bit integer).
        #[arg(long)]
        payload: u64,
        /// Treat the whole input as one text instead of one text per line.
        #[arg(long)]
        whole: bool,
        /// Input file or `-`.
        #[arg(default_value = "-")]
        input: String,
    },
    /// Detect a watermark in each line: prints `{"payload": N|null, "marks", "confidence"}`.
    Detect {
        /// Secret key, hex.
        #[arg(long)]
        key_hex: String,
        /// Treat the whole input as one text.
        #[arg(long)]
        whole: bool,
        /// Input file or `-`.
        #[arg(default_value = "-")]
        input: String,
    },
    /// Remove watermark marks from the input (no key needed).
    Strip {
        /// Input file or `-`.
        #[arg(default_value = "-")]
        input: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("vallum: {e}");
            ExitCode::from(2)
        }
    }
}

fn open(input: &str) -> Result<Box<dyn BufRead>, String> {
    if input == "-" {
        Ok(Box::new(BufReader::new(io::stdin())))
    } else {
        File::open(input).map(|f| Box::new(BufReader::new(f)) as Box<dyn BufRead>).map_err(|e| format!("cannot open {input}: {e}"))
    }
}

fn firewall(policy: &Option<PathBuf>, key_hex: Option<&str>) -> Result<Firewall, String> {
    let p = match policy {
        Some(path) => Policy::from_file(path).map_err(|e| e.to_string())?,
        None => Policy::default(),
    };
    let mut b = Firewall::builder().policy(p);
    if let Some(k) = key_hex {
        b = b.key(&vallum::keys::parse_key_hex(k).map_err(|e| e.to_string())?);
    }
    b.build().map_err(|e| e.to_string())
}

/// Reads one line (without the trailing `\n`/`\r\n`) of at most MAX_LINE_BYTES; a longer line is
/// consumed and returned as `Err(len)`.
fn read_line(r: &mut dyn BufRead, buf: &mut Vec<u8>) -> io::Result<Option<Result<(), usize>>> {
    buf.clear();
    let mut total = 0usize;
    let mut over = false;
    loop {
        let avail = r.fill_buf()?;
        if avail.is_empty() {
            if total == 0 {
                return Ok(None);
            }
            break;
        }
        let (chunk, done) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (&avail[..i], Some(i + 1)),
            None => (avail, None),
        };
        total += chunk.len();
        if !over {
            if buf.len() + chunk.len() > MAX_LINE_BYTES {
                over = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let used = done.unwrap_or(avail.len());
        r.consume(used);
        if done.is_some() {
            total += 1;
            break;
        }
    }
    if over {
        return Ok(Some(Err(total)));
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Some(Ok(())))
}

/// One parsed input line: the text and, for JSON lines, the object.
fn parse_line(raw: &[u8], format: Format) -> Result<(String, Option<Value>), (String, String)> {
    let s = std::str::from_utf8(raw).map_err(|e| ("input_invalid".to_string(), format!("invalid UTF-8 at byte {}", e.valid_up_to())))?;
    let is_json = match format {
        Format::Jsonl => true,
        Format::Text => false,
        Format::Auto => s.trim_start().starts_with('{'),
    };
    if !is_json {
        return Ok((s.to_string(), None));
    }
    let v: Value = serde_json::from_str(s).map_err(|e| ("input_invalid".to_string(), format!("bad JSON: {e}")))?;
    let text = v
        .get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| ("input_invalid".to_string(), "JSON line without a string `text` field".to_string()))?
        .to_string();
    Ok((text, Some(v)))
}

fn error_obj(line: usize, code: &str, message: &str) -> Value {
    eprintln!("vallum: line {line}: {message}");
    json!({"line": line, "error": {"code": code, "message": message}})
}

/// Runs `f` over every line of `input`, printing one JSON object per line. Returns whether all
/// lines succeeded.
fn for_each_line(input: &str, format: Format, mut f: impl FnMut(&str) -> Value) -> Result<bool, String> {
    let mut r = open(input)?;
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut buf = Vec::new();
    let mut ok = true;
    let mut line = 0usize;
    loop {
        let got = read_line(&mut *r, &mut buf).map_err(|e| format!("read error: {e}"))?;
        let Some(got) = got else { break };
        line += 1;
        let obj = match got {
            Err(len) => {
                ok = false;
                error_obj(line, "input_invalid", &format!("line of {len} bytes exceeds the {MAX_LINE_BYTES}-byte limit"))
            }
            Ok(()) => match parse_line(&buf, format) {
                Err((code, msg)) => {
                    ok = false;
                    error_obj(line, &code, &msg)
                }
                Ok((text, src)) => {
                    let mut v = f(&text);
                    if let (Some(obj), Some(id)) = (v.as_object_mut(), src.as_ref().and_then(|s| s.get("id"))) {
                        obj.insert("id".into(), id.clone());
                    }
                    if let Some(obj) = v.as_object_mut() {
                        obj.insert("line".into(), json!(line));
                    }
                    v
                }
            },
        };
        serde_json::to_writer(&mut out, &obj).map_err(|e| e.to_string())?;
        out.write_all(b"\n").map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| e.to_string())?;
    Ok(ok)
}

fn read_all(input: &str) -> Result<Result<String, String>, String> {
    let mut r = open(input)?;
    let mut bytes = Vec::new();
    r.read_to_end(&mut bytes).map_err(|e| format!("read error: {e}"))?;
    Ok(String::from_utf8(bytes).map_err(|e| format!("invalid UTF-8 at byte {}", e.utf8_error().valid_up_to())))
}

fn run(cli: Cli) -> Result<bool, String> {
    match cli.cmd {
        Cmd::Scan(a) => {
            let fw = firewall(&a.policy, None)?;
            for_each_line(&a.input, a.format, |t| serde_json::to_value(fw.scan_prompt(t)).unwrap_or(Value::Null))
        }
        Cmd::Redact(a) => {
            let fw = firewall(&a.policy, None)?;
            for_each_line(&a.input, a.format, |t| {
                let r = fw.scan_output(t);
                json!({"text": r.text, "findings": r.findings, "canary_leaked": r.canary_leaked})
            })
        }
        Cmd::Canary { key_hex, policy } => {
            let fw = firewall(&policy, key_hex.as_deref())?;
            println!("{}", fw.new_canary());
            Ok(true)
        }
        Cmd::Watermark(w) => watermark(w),
        Cmd::Eval { policy, json, positive_at, plots, signatures_only, paths } => {
            eval(&policy, json, positive_at, plots.as_deref(), signatures_only, &paths)
        }
    }
}

fn watermark(w: WmCmd) -> Result<bool, String> {
    match w {
        WmCmd::Embed { key_hex, payload, whole, input } => {
            let fw = firewall(&None, Some(&key_hex))?;
            if whole {
                return match read_all(&input)? {
                    Ok(t) => {
                        print!("{}", fw.watermark(&t, payload));
                        Ok(true)
                    }
                    Err(e) => Err(e),
                };
            }
            for_each_line(&input, Format::Auto, |t| json!({"text": fw.watermark(t, payload)}))
        }
        WmCmd::Detect { key_hex, whole, input } => {
            let fw = firewall(&None, Some(&key_hex))?;
            let det = |t: &str| match fw.detect_watermark(t) {
                Some(d) => json!({"payload": d.payload, "marks": d.marks, "confidence": d.confidence}),
                None => json!({"payload": null, "marks": 0, "confidence": 0.0}),
            };
            if whole {
                let t = read_all(&input)??;
                println!("{}", det(&t));
                return Ok(true);
            }
            for_each_line(&input, Format::Auto, det)
        }
        WmCmd::Strip { input } => {
            let t = read_all(&input)??;
            print!("{}", vallum::watermark::strip(&t));
            Ok(true)
        }
    }
}

fn source_of(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "input".into())
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map(|x| format!("{:.4}", x)).unwrap_or_else(|| "-".into())
}

fn eval(
    policy: &Option<PathBuf>,
    as_json: bool,
    positive_at: PositiveAt,
    plot_dir: Option<&Path>,
    signatures_only: bool,
    paths: &[PathBuf],
) -> Result<bool, String> {
    let fw = if signatures_only {
        let mut p = match policy {
            Some(path) => Policy::from_file(path).map_err(|e| e.to_string())?,
            None => Policy::default(),
        };
        p.classifier.enabled = false;
        Firewall::builder().policy(p).build().map_err(|e| e.to_string())?
    } else {
        firewall(policy, None)?
    };
    let classifier = if fw.has_classifier() {
        "used"
    } else if signatures_only || !fw.policy().classifier.enabled {
        "disabled"
    } else {
        eprintln!("vallum: classifier unavailable, evaluating signatures only (see `classifier` in the verdicts)");
        "unavailable"
    };
    let mut by_source: std::collections::BTreeMap<String, Vec<(f32, bool)>> = Default::default();
    let min = match positive_at {
        PositiveAt::Flag => Action::Flag,
        PositiveAt::Block => Action::Block,
    };
    // Count lines first for the progress bar.
    let mut total = 0u64;
    for p in paths {
        let f = File::open(p).map_err(|e| format!("cannot open {}: {e}", p.display()))?;
        total += BufReader::new(f).split(b'\n').count() as u64;
    }
    let pb = indicatif::ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::stderr());
    pb.set_style(
        indicatif::ProgressStyle::with_template("{spinner} eval [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut report = Report { positive_at: min.as_str().into(), classifier: classifier.into(), ..Default::default() };
    let mut scores: Vec<(f32, bool)> = Vec::new();
    let mut ok = true;
    for p in paths {
        let default_source = source_of(p);
        let mut r: Box<dyn BufRead> = Box::new(BufReader::new(File::open(p).map_err(|e| e.to_string())?));
        let mut buf = Vec::new();
        let mut line = 0;
        while let Some(got) = read_line(&mut *r, &mut buf).map_err(|e| e.to_string())? {
            line += 1;
            pb.inc(1);
            let parsed = got.map_err(|_| "line too long".to_string()).and_then(|_| {
                let s = std::str::from_utf8(&buf).map_err(|_| "invalid UTF-8".to_string())?;
                if s.trim().is_empty() {
                    return Err(String::new());
                }
                let v: Value = serde_json::from_str(s).map_err(|e| format!("bad JSON: {e}"))?;
                let text = v.get("text").and_then(Value::as_str).ok_or("no string `text`")?.to_string();
                let label = match v.get("label") {
                    Some(Value::Number(n)) if n.as_i64() == Some(1) => true,
                    Some(Value::Number(n)) if n.as_i64() == Some(0) => false,
                    Some(Value::Bool(b)) => *b,
                    _ => return Err("`label` must be 0 or 1".into()),
                };
                let source = v.get("source").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| default_source.clone());
                Ok((text, label, source))
            });
            match parsed {
                Err(e) if e.is_empty() => {}
                Err(e) => {
                    pb.suspend(|| eprintln!("vallum: {}:{line}: {e}", p.display()));
                    report.errors += 1;
                    ok = false;
                }
                Ok((text, label, source)) => {
                    let v = fw.scan_prompt(&text);
                    let pred = v.decision >= min;
                    report.overall.add(label, pred);
                    report.per_source.entry(source.clone()).or_default().add(label, pred);
                    scores.push((v.score, label));
                    by_source.entry(source).or_default().push((v.score, label));
                }
            }
        }
    }
    pb.finish_and_clear();
    let o = &report.overall;
    report.n = o.n;
    report.tpr = o.tpr();
    report.fpr = o.fpr();
    report.precision = o.precision();
    report.f1 = o.f1();
    report.auc = auc(&scores);
    report.tpr_at_1pct_fpr = tpr_at_fpr(&scores, 0.01);
    if let Some(dir) = plot_dir {
        let files = plots::write(dir, &scores, &by_source)?;
        eprintln!("vallum: wrote {} plots to {}", files.len(), dir.display());
    }
    if as_json {
        let mut v = serde_json::to_value(&report).map_err(|e| e.to_string())?;
        if let Some(ps) = v.get_mut("per_source").and_then(Value::as_object_mut) {
            for (name, c) in ps.iter_mut() {
                let counts = &report.per_source[name];
                if let Some(obj) = c.as_object_mut() {
                    obj.insert("tpr".into(), json!(counts.tpr()));
                    obj.insert("fpr".into(), json!(counts.fpr()));
                    obj.insert("precision".into(), json!(counts.precision()));
                    obj.insert("f1".into(), json!(counts.f1()));
                }
            }
        }
        println!("{}", serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?);
    } else {
        println!("positive = decision >= {}; classifier {}", report.positive_at, report.classifier);
        println!("{:<34} {:>6} {:>6} {:>6} {:>8} {:>8} {:>9} {:>8}", "source", "n", "pos", "neg", "TPR", "FPR", "precision", "F1");
        let row = |name: &str, c: &Counts| {
            println!(
                "{:<34} {:>6} {:>6} {:>6} {:>8} {:>8} {:>9} {:>8}",
                name,
                c.n,
                c.positives,
                c.negatives,
                fmt_opt(c.tpr()),
                fmt_opt(c.fpr()),
                fmt_opt(c.precision()),
                fmt_opt(c.f1())
            )
        };
        for (name, c) in &report.per_source {
            row(name, c);
        }
        row("OVERALL", &report.overall);
        println!("AUC {}   TPR@1%FPR {}   errors {}", fmt_opt(report.auc), fmt_opt(report.tpr_at_1pct_fpr), report.errors);
    }
    Ok(ok)
}
