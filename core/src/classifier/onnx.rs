//! ONNX Runtime classifier (`ort` with `load-dynamic`, `tokenizers`).
//!
//! The ONNX Runtime shared library is resolved, in order, from: the policy's
//! `classifier.runtime_path`, `ORT_DYLIB_PATH`, a project-local `.ort/lib/` (filled by
//! `models/fetch_runtime.sh`) under the current folder or its parents, the library inside an
//! installed Python `onnxruntime` package, the one inside an `onnxruntime-node` package under
//! `node_modules`. Not found or not loadable: `runtime_missing`.
//!
//! `ort::Session::run` takes `&mut self` (a session holds per-run state), so the classifier
//! keeps a small pool of sessions, each behind a `Mutex`; scans take the first free one.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ndarray::Array2;
use ort::session::Session;
use ort::value::Tensor;
use tokenizers::Tokenizer;

use super::{read_verified_bundle, windows, Classifier, ClassifierScore, ModelConfig, VerifiedBundle};
use crate::error::{Error, ErrorCode, Result};

/// Settings for loading an ONNX classifier.
#[derive(Debug, Clone)]
pub struct OnnxOptions {
    /// Model bundle folder.
    pub model_dir: PathBuf,
    /// Explicit ONNX Runtime library path (first in the search order).
    pub runtime_path: Option<PathBuf>,
    /// Sessions in the pool (concurrent scoring calls), at least 1.
    pub sessions: usize,
    /// Intra-op threads per session.
    pub intra_threads: usize,
    /// Overrides of the bundle's window settings.
    pub window_stride: Option<usize>,
    /// Override of the bundle's window cap.
    pub max_windows: Option<usize>,
    /// Texts per ONNX batch.
    pub batch_size: usize,
}

static ENV: OnceLock<std::result::Result<(PathBuf, ort::environment::Environment), String>> = OnceLock::new();

fn runtime_candidates(explicit: Option<&Path>) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(p) = explicit {
        v.push(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        v.push(PathBuf::from(p));
    }
    let lib_names = |dir: &Path| -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("libonnxruntime.so") || n == "libonnxruntime.dylib" || n == "onnxruntime.dll")
                    })
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        found
    };
    let mut roots = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().take(6).map(Path::to_path_buf));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(p) = exe.parent() {
            roots.extend(p.ancestors().take(6).map(Path::to_path_buf));
        }
    }
    roots.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    for r in &roots {
        v.extend(lib_names(&r.join(".ort").join("lib")));
    }
    // Python onnxruntime: ask the interpreter where the package is (no import of the package).
    // Spawning Python costs tens of milliseconds, so only when nothing was found so far.
    if !v.iter().any(|p| p.is_file()) {
        for py in ["python3", "python"] {
            let out = std::process::Command::new(py)
                .args(["-c", "import importlib.util as u; s = u.find_spec('onnxruntime'); print(s.submodule_search_locations[0] if s and s.submodule_search_locations else '')"])
                .stderr(std::process::Stdio::null())
                .output();
            if let Ok(o) = out {
                let dir = String::from_utf8_lossy(&o.stdout).trim().to_string();
                if !dir.is_empty() {
                    v.extend(lib_names(&Path::new(&dir).join("capi")));
                    break;
                }
            }
        }
    }
    for r in &roots {
        let base = r.join("node_modules").join("onnxruntime-node").join("bin");
        for napi in ["napi-v6", "napi-v3"] {
            v.extend(lib_names(&base.join(napi).join("linux").join("x64")));
        }
    }
    v
}

/// Loads ONNX Runtime once per process (ONNX Runtime allows one environment). Returns the path
/// it was loaded from. Errors: `runtime_missing` with the places searched.
pub fn init_runtime(explicit: Option<&Path>) -> Result<PathBuf> {
    // A path the policy names must exist: falling back to another library would run a version
    // nobody chose.
    if let Some(p) = explicit {
        if !p.is_file() {
            return Err(Error::new(
                ErrorCode::RuntimeMissing,
                format!("classifier.runtime_path: {} is not a file", p.display()),
            ));
        }
    }
    let r = ENV.get_or_init(|| {
        let candidates = runtime_candidates(explicit);
        let mut tried = Vec::new();
        for c in &candidates {
            if !c.is_file() {
                tried.push(format!("{} (not found)", c.display()));
                continue;
            }
            match ort::init_from(c) {
                Ok(b) => match b.with_name("vallum").build() {
                    Ok(env) => return Ok((c.clone(), env)),
                    Err(e) => tried.push(format!("{}: {e}", c.display())),
                },
                Err(e) => tried.push(format!("{}: {e}", c.display())),
            }
        }
        Err(format!(
            "ONNX Runtime library not found; set classifier.runtime_path or ORT_DYLIB_PATH, run models/fetch_runtime.sh, or pip install onnxruntime. Tried: {}",
            if tried.is_empty() {
                "no library in any place searched: ORT_DYLIB_PATH (unset), .ort/lib in the current folder, beside \
                 the executable and in the source tree (and their parents), Python's onnxruntime package, \
                 node_modules/onnxruntime-node"
                    .to_string()
            } else {
                tried.join("; ")
            }
        ))
    });
    match r {
        Ok((p, _)) => {
            if let Some(e) = explicit.filter(|e| *e != p.as_path()) {
                // One ONNX Runtime per process: the first one loaded stays.
                tracing::warn!(
                    "classifier.runtime_path {} ignored: ONNX Runtime is already loaded from {}",
                    e.display(),
                    p.display()
                );
            }
            Ok(p.clone())
        }
        Err(m) => Err(Error::new(ErrorCode::RuntimeMissing, m.clone())),
    }
}

/// An ONNX Runtime prompt-injection classifier.
pub struct OnnxClassifier {
    config: ModelConfig,
    tokenizer: Tokenizer,
    sessions: Vec<Mutex<Session>>,
    feed_token_types: bool,
    output: String,
    batch_size: usize,
    cls: u32,
    sep: u32,
    pad: u32,
    runtime: PathBuf,
}

impl std::fmt::Debug for OnnxClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxClassifier")
            .field("model", &self.config.name)
            .field("sessions", &self.sessions.len())
            .field("runtime", &self.runtime)
            .finish()
    }
}

/// At most this many tokens (rows x padded length) in one inference call: attention memory
/// grows with rows x length², so a batch of 16 full 256-token windows would need several
/// hundred MiB of activations. With 512, a long prompt's 256-token windows go two at a time:
/// the latency bench's peak RSS (two sessions, a 3-window prompt, a 2-thread batch) fell from
/// 154 to 137 MiB, latency unchanged.
const MAX_BATCH_TOKENS: usize = 512;

fn model_err(code: ErrorCode, e: impl std::fmt::Display) -> Error {
    Error::new(code, e.to_string())
}

impl OnnxClassifier {
    /// Verifies the bundle (`model_integrity`), loads the runtime (`runtime_missing`), the
    /// tokenizer and the sessions, and checks the model's input/output names
    /// (`model_signature`). The tokenizer and the sessions are built from the bytes whose
    /// digests were checked ([`read_verified_bundle`]), so the files are read once.
    pub fn load(opts: &OnnxOptions) -> Result<Self> {
        let VerifiedBundle { mut config, tokenizer_json: tok_text, model_onnx } = read_verified_bundle(&opts.model_dir)?;
        if let Some(s) = opts.window_stride {
            config.window_stride = s.clamp(1, config.max_length);
        }
        if let Some(m) = opts.max_windows {
            config.max_windows = m.max(1);
        }
        let runtime = init_runtime(opts.runtime_path.as_deref())?;
        let env = match ENV.get() {
            Some(Ok((_, env))) => env,
            _ => return Err(Error::new(ErrorCode::RuntimeMissing, "ONNX Runtime environment unavailable")),
        };
        // Checked for regex patterns before `tokenizers` parses (and compiles) them.
        crate::classifier::check_tokenizer_json(&tok_text)?;
        let mut tokenizer = tok_text
            .parse::<Tokenizer>()
            .map_err(|e| model_err(ErrorCode::ModelIntegrity, format!("tokenizer.json: {e}")))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| model_err(ErrorCode::ModelIntegrity, format!("tokenizer.json: {e}")))?;
        let id = |t: &str| tokenizer.token_to_id(t);
        let (cls, sep, pad) = match (id("[CLS]"), id("[SEP]"), id("[PAD]")) {
            (Some(c), Some(s), Some(p)) => (c, s, p),
            _ => return Err(model_err(ErrorCode::ModelSignature, "tokenizer lacks [CLS]/[SEP]/[PAD]")),
        };
        let model_path = opts.model_dir.join("model.onnx");
        let mut sessions = Vec::new();
        for _ in 0..opts.sessions.max(1) {
            let s = Session::builder(env)
                .map_err(|e| model_err(ErrorCode::ClassifierFailed, e))?
                .with_intra_threads(opts.intra_threads.max(1))
                .map_err(|e| model_err(ErrorCode::ClassifierFailed, e))?
                .commit_from_memory(&model_onnx)
                .map_err(|e| model_err(ErrorCode::ModelSignature, format!("{}: {e}", model_path.display())))?;
            sessions.push(Mutex::new(s));
        }
        let (feed_token_types, output) = {
            let s = sessions[0].lock().unwrap_or_else(|p| p.into_inner());
            let names: Vec<&str> = s.inputs().iter().map(|i| i.name()).collect();
            for required in ["input_ids", "attention_mask"] {
                if !names.contains(&required) {
                    return Err(model_err(
                        ErrorCode::ModelSignature,
                        format!("model inputs {names:?} lack `{required}`"),
                    ));
                }
            }
            if names.len() > 3 || names.iter().any(|n| !["input_ids", "attention_mask", "token_type_ids"].contains(n)) {
                return Err(model_err(ErrorCode::ModelSignature, format!("unexpected model inputs {names:?}")));
            }
            let outs: Vec<&str> = s.outputs().iter().map(|o| o.name()).collect();
            if !outs.contains(&config.output.as_str()) {
                return Err(model_err(
                    ErrorCode::ModelSignature,
                    format!("model outputs {outs:?} lack `{}`", config.output),
                ));
            }
            (names.contains(&"token_type_ids"), config.output.clone())
        };
        Ok(OnnxClassifier {
            config,
            tokenizer,
            sessions,
            feed_token_types,
            output,
            batch_size: opts.batch_size.max(1),
            cls,
            sep,
            pad,
            runtime,
        })
    }

    /// The ONNX Runtime library in use.
    pub fn runtime_path(&self) -> &Path {
        &self.runtime
    }

    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        for s in &self.sessions {
            if let Ok(g) = s.try_lock() {
                return g;
            }
        }
        // All busy: wait for one (spread waiters by thread).
        let i = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::thread::current().id().hash(&mut h);
            h.finish() as usize % self.sessions.len()
        };
        self.sessions[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs one padded batch of token windows; returns one probability per window.
    fn run(&self, batch: &[Vec<u32>]) -> Result<Vec<f32>> {
        let rows = batch.len();
        let cols = batch.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let mut ids = Array2::<i64>::from_elem((rows, cols), self.pad as i64);
        let mut mask = Array2::<i64>::zeros((rows, cols));
        for (r, w) in batch.iter().enumerate() {
            for (c, t) in w.iter().enumerate() {
                ids[[r, c]] = *t as i64;
                mask[[r, c]] = 1;
            }
        }
        let fail = |e: ort::Error| Error::new(ErrorCode::ClassifierFailed, e.to_string());
        let ids_t = Tensor::from_array(ids).map_err(fail)?;
        let mask_t = Tensor::from_array(mask).map_err(fail)?;
        let mut session = self.session();
        let outputs = if self.feed_token_types {
            let types_t = Tensor::from_array(Array2::<i64>::zeros((rows, cols))).map_err(fail)?;
            session.run(ort::inputs!["input_ids" => ids_t, "attention_mask" => mask_t, "token_type_ids" => types_t])
        } else {
            session.run(ort::inputs!["input_ids" => ids_t, "attention_mask" => mask_t])
        }
        .map_err(fail)?;
        let scores = outputs[self.output.as_str()].try_extract_array::<f32>().map_err(fail)?;
        let v: Vec<f32> = scores.iter().copied().collect();
        if v.len() != rows {
            return Err(Error::new(ErrorCode::ModelSignature, format!("output has {} values for {rows} rows", v.len())));
        }
        Ok(v)
    }
}

impl Classifier for OnnxClassifier {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn score_batch(&self, texts: &[&str]) -> Result<Vec<ClassifierScore>> {
        let content_len = self.config.max_length.saturating_sub(2).max(1);
        let stride = self.config.window_stride.min(content_len).max(1);
        // (text index, window tokens)
        let mut items: Vec<(usize, Vec<u32>)> = Vec::new();
        let mut counts = vec![0usize; texts.len()];
        for (ti, t) in texts.iter().enumerate() {
            let enc = self
                .tokenizer
                .encode(*t, false)
                .map_err(|e| Error::new(ErrorCode::ClassifierFailed, format!("tokenizer: {e}")))?;
            let ids = enc.get_ids();
            for (s, e) in windows(ids.len(), content_len, stride, self.config.max_windows) {
                let mut w = Vec::with_capacity(e - s + 2);
                w.push(self.cls);
                w.extend_from_slice(&ids[s..e]);
                w.push(self.sep);
                items.push((ti, w));
                counts[ti] += 1;
            }
        }
        // Batch only windows of equal length: the int8 model quantises activations dynamically
        // per call, so padding inside a batch would shift scores (see MODEL.md). Long texts
        // still batch well: all their full windows have the same length.
        let mut by_len: std::collections::BTreeMap<usize, Vec<usize>> = std::collections::BTreeMap::new();
        for (i, (_, w)) in items.iter().enumerate() {
            by_len.entry(w.len()).or_default().push(i);
        }
        let mut best = vec![0f32; texts.len()];
        // ... and at most MAX_BATCH_TOKENS tokens per call.
        for chunk in by_len.iter().flat_map(|(len, v)| v.chunks(self.batch_size.min(MAX_BATCH_TOKENS / len).max(1))) {
            let batch: Vec<Vec<u32>> = chunk.iter().map(|&i| items[i].1.clone()).collect();
            let scores = self.run(&batch)?;
            for (&i, s) in chunk.iter().zip(scores) {
                let ti = items[i].0;
                let s = if s.is_finite() { s.clamp(0.0, 1.0) } else { 1.0 };
                best[ti] = best[ti].max(s);
            }
        }
        Ok(best.into_iter().zip(counts).map(|(score, windows)| ClassifierScore { score, windows }).collect())
    }
}
