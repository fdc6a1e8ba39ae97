//! Python bindings for Vallum (PyO3, abi3). Thin: converts types and maps errors; every
//! behaviour lives in the `vallum` core crate.
//!
//! Every call into the engine runs inside `catch_unwind`, so no Rust panic crosses into Python:
//! an internal fault becomes `VallumError(code="internal")`. Calls release the GIL
//! (`py.detach`), except short scans without the classifier (see [`enter_core_sized`]).

use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

create_exception!(_vallum, VallumError, PyException, "Base class of Vallum errors; `.code` is a stable string.");
create_exception!(_vallum, PolicyError, VallumError, "Malformed policy, rule pack or key (codes policy_invalid, rule_invalid, key_invalid).");
create_exception!(_vallum, ModelError, VallumError, "Classifier model or runtime problem (codes model_integrity, runtime_missing, model_signature, classifier_failed).");
create_exception!(_vallum, InputError, VallumError, "Unusable input, e.g. bytes that are not UTF-8 (code input_invalid).");
create_exception!(_vallum, VallumIOError, VallumError, "A file could not be read (code io).");

/// A watermark payload: an `int` within 0..=2^64-1. An `int` out of that range raises
/// `InputError` (code `input_invalid`, as in Node); a non-integer raises `TypeError`.
fn payload_arg(payload: &Bound<'_, PyAny>) -> PyResult<u64> {
    if payload.is_instance_of::<pyo3::types::PyBool>() {
        return Err(pyo3::exceptions::PyTypeError::new_err("payload: expected an int, got bool"));
    }
    if !payload.is_instance_of::<pyo3::types::PyInt>() {
        return payload.extract::<u64>();
    }
    payload
        .extract::<u64>()
        .map_err(|_| raise("input_invalid", format!("payload: {payload} is outside 0..=18446744073709551615 (an unsigned 64-bit integer)")))
}

fn raise(code: &str, message: String) -> PyErr {
    let err = match code {
        "policy_invalid" | "rule_invalid" | "key_invalid" => PolicyError::new_err(message),
        "model_integrity" | "runtime_missing" | "model_signature" | "classifier_failed" => ModelError::new_err(message),
        "input_invalid" => InputError::new_err(message),
        "io" => VallumIOError::new_err(message),
        _ => VallumError::new_err(message),
    };
    Python::attach(|py| {
        let _ = err.value(py).setattr("code", code);
    });
    err
}

fn map_err(e: vallum::Error) -> PyErr {
    raise(e.code().as_str(), e.to_string())
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The error a caught engine panic becomes.
fn internal_error<E>(_: E) -> PyErr {
    raise("internal", "internal error in the Vallum engine (please report)".into())
}

/// Runs `f` without the GIL and without letting a panic escape.
fn enter_core<T: Send>(py: Python<'_>, f: impl FnOnce() -> T + Send) -> PyResult<T> {
    py.detach(|| catch_unwind(AssertUnwindSafe(f))).map_err(internal_error)
}

/// Inputs shorter than this many bytes are scanned with the GIL held when no classifier runs:
/// they take a few microseconds, less than releasing and re-taking the GIL adds to the call.
/// Longer inputs, and every call that runs the classifier, release it.
const DETACH_MIN_BYTES: usize = 16 * 1024;

/// Like [`enter_core`], but keeps the GIL for short (`bytes` < [`DETACH_MIN_BYTES`]), light
/// work.
fn enter_core_sized<T: Send>(py: Python<'_>, bytes: usize, heavy: bool, f: impl FnOnce() -> T + Send) -> PyResult<T> {
    if heavy || bytes >= DETACH_MIN_BYTES {
        return enter_core(py, f);
    }
    catch_unwind(AssertUnwindSafe(f)).map_err(internal_error)
}

/// Accepts `str` or `bytes` (UTF-8), borrowed when Python already holds it as UTF-8; invalid
/// UTF-8 or lone surrogates raise `InputError`.
fn text_ref<'a>(obj: &'a Bound<'_, PyAny>) -> PyResult<Cow<'a, str>> {
    if let Ok(s) = obj.cast::<PyString>() {
        return s.to_cow().map_err(|e| raise("input_invalid", format!("text is not valid Unicode: {e}")));
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return std::str::from_utf8(b.as_bytes())
            .map(Cow::Borrowed)
            .map_err(|e| raise("input_invalid", format!("bytes are not valid UTF-8 (at byte {})", e.valid_up_to())));
    }
    Err(raise("input_invalid", format!("expected str or bytes, got {}", obj.get_type().name()?)))
}

/// [`text_ref`], owned.
fn text_arg(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    text_ref(obj).map(Cow::into_owned)
}

fn to_py_json(py: Python<'_>, v: &impl serde::Serialize) -> PyResult<Py<PyAny>> {
    let s = serde_json::to_string(v).map_err(|e| raise("internal", e.to_string()))?;
    let json = py.import("json")?;
    Ok(json.call_method1("loads", (s,))?.unbind())
}

fn enum_str(v: &impl serde::Serialize) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// A policy (TOML or JSON; same meaning in Rust, Python and Node).
#[pyclass(frozen, module = "vallum")]
#[derive(Clone)]
struct Policy(vallum::Policy);

#[pymethods]
impl Policy {
    /// The built-in default policy.
    #[staticmethod]
    fn default() -> Self {
        Policy(vallum::Policy::default())
    }
    /// Parses TOML. Raises PolicyError naming the field.
    #[staticmethod]
    fn from_toml(s: &str) -> PyResult<Self> {
        vallum::Policy::from_toml(s).map(Policy).map_err(map_err)
    }
    /// Parses JSON. Raises PolicyError naming the field.
    #[staticmethod]
    fn from_json(s: &str) -> PyResult<Self> {
        vallum::Policy::from_json(s).map(Policy).map_err(map_err)
    }
    /// Loads a `.toml` or `.json` file. Raises PolicyError or VallumIOError.
    #[staticmethod]
    fn from_file(path: std::path::PathBuf) -> PyResult<Self> {
        vallum::Policy::from_file(path).map(Policy).map_err(map_err)
    }
    /// The policy as JSON.
    fn to_json(&self) -> String {
        self.0.to_json()
    }
    fn __repr__(&self) -> String {
        format!(
            "Policy(version={}, thresholds=(flag={}, block={}), rules={:?}, classifier={})",
            self.0.version, self.0.thresholds.flag, self.0.thresholds.block, self.0.rules.builtin, self.0.classifier.enabled
        )
    }
}

/// One signature match (byte offsets into the UTF-8 prompt).
#[pyclass(frozen, get_all, module = "vallum")]
struct Match {
    rule_id: String,
    category: String,
    severity: String,
    start: usize,
    end: usize,
    view: String,
    encoding: Option<String>,
    decoded: Option<String>,
    quoted: bool,
}

#[pymethods]
impl Match {
    fn __repr__(&self) -> String {
        format!("Match(rule_id={:?}, category={:?}, start={}, end={})", self.rule_id, self.category, self.start, self.end)
    }
}

/// The verdict on a prompt.
#[pyclass(frozen, module = "vallum")]
struct Verdict(vallum::Verdict);

#[pymethods]
impl Verdict {
    #[getter]
    fn decision(&self) -> &'static str {
        self.0.decision.as_str()
    }
    #[getter]
    fn score(&self) -> f32 {
        self.0.score
    }
    #[getter]
    fn signature_score(&self) -> f32 {
        self.0.signature_score
    }
    #[getter]
    fn classifier(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        to_py_json(py, &self.0.classifier)
    }
    #[getter]
    fn matches(&self) -> Vec<Match> {
        self.0
            .matches
            .iter()
            .map(|m| Match {
                rule_id: m.rule_id.clone(),
                category: m.category.clone(),
                severity: enum_str(&m.severity),
                start: m.start,
                end: m.end,
                view: enum_str(&m.view),
                encoding: m.encoding.clone(),
                decoded: m.decoded.clone(),
                quoted: m.quoted,
            })
            .collect()
    }
    #[getter]
    fn flags(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        to_py_json(py, &self.0.flags)
    }
    #[getter]
    fn truncated(&self) -> bool {
        self.0.truncated
    }
    #[getter]
    fn input_bytes(&self) -> usize {
        self.0.input_bytes
    }
    #[getter]
    fn elapsed_us(&self) -> u64 {
        self.0.elapsed_us
    }
    #[getter]
    fn rule_ids(&self) -> Vec<String> {
        self.0.rule_ids().into_iter().map(str::to_owned).collect()
    }
    #[getter]
    fn categories(&self) -> Vec<String> {
        self.0.categories().into_iter().map(str::to_owned).collect()
    }
    /// The verdict as a dict (same shape as the CLI's JSON).
    fn to_dict(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        to_py_json(py, &self.0)
    }
    /// The verdict as JSON.
    fn to_json(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_default()
    }
    fn __repr__(&self) -> String {
        format!("Verdict(decision={:?}, score={:.3}, rule_ids={:?})", self.0.decision.as_str(), self.0.score, self.0.rule_ids())
    }
}

/// One redacted value (byte offsets into the UTF-8 output).
#[pyclass(frozen, get_all, module = "vallum")]
#[derive(Clone)]
struct Finding {
    entity: String,
    start: usize,
    end: usize,
    strategy: String,
    replacement: String,
}

impl From<&vallum::Finding> for Finding {
    fn from(f: &vallum::Finding) -> Self {
        Finding {
            entity: f.entity.as_str().to_owned(),
            start: f.start,
            end: f.end,
            strategy: enum_str(&f.strategy),
            replacement: f.replacement.clone(),
        }
    }
}

#[pymethods]
impl Finding {
    fn __repr__(&self) -> String {
        format!("Finding(entity={:?}, start={}, end={}, strategy={:?})", self.entity, self.start, self.end, self.strategy)
    }
}

/// A redacted output.
#[pyclass(frozen, module = "vallum")]
struct OutputResult(vallum::OutputResult);

#[pymethods]
impl OutputResult {
    #[getter]
    fn text(&self) -> &str {
        &self.0.text
    }
    #[getter]
    fn findings(&self) -> Vec<Finding> {
        self.0.findings.iter().map(Finding::from).collect()
    }
    #[getter]
    fn canary_leaked(&self) -> bool {
        self.0.canary_leaked
    }
    #[getter]
    fn elapsed_us(&self) -> u64 {
        self.0.elapsed_us
    }
    fn to_dict(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        to_py_json(py, &self.0)
    }
    fn __repr__(&self) -> String {
        format!("OutputResult(findings={}, canary_leaked={})", self.0.findings.len(), self.0.canary_leaked)
    }
}

/// A recovered watermark.
#[pyclass(frozen, get_all, module = "vallum")]
struct Detection {
    payload: u64,
    marks: usize,
    confidence: f32,
}

#[pymethods]
impl Detection {
    fn __repr__(&self) -> String {
        format!("Detection(payload={}, marks={}, confidence={:.3})", self.payload, self.marks, self.confidence)
    }
}

/// A chunk of a stream: `str`, or `bytes` joined through a UTF-8 carry so that a character split
/// across chunks is not an error.
fn chunk_arg(obj: &Bound<'_, PyAny>, carry: &Mutex<vallum::Utf8Stream>) -> PyResult<String> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return carry.lock().unwrap_or_else(|p| p.into_inner()).feed(b.as_bytes()).map_err(map_err);
    }
    text_arg(obj)
}

/// Streaming redaction of one response (see the core's `StreamRedactor`).
#[pyclass(module = "vallum")]
struct StreamRedactor(Mutex<vallum::StreamRedactor>, Mutex<vallum::Utf8Stream>);

#[pymethods]
impl StreamRedactor {
    /// Adds a chunk; returns the redacted text that is safe to send now.
    fn push(&self, py: Python<'_>, chunk: &Bound<'_, PyAny>) -> PyResult<String> {
        let c = chunk_arg(chunk, &self.1)?;
        enter_core(py, || self.0.lock().unwrap_or_else(|p| p.into_inner()).push(&c))
    }
    /// Ends the stream; returns the rest, redacted. Raises InputError if a `bytes` stream ended
    /// inside a UTF-8 character.
    fn finish(&self, py: Python<'_>) -> PyResult<String> {
        self.1.lock().unwrap_or_else(|p| p.into_inner()).finish().map_err(map_err)?;
        enter_core(py, || self.0.lock().unwrap_or_else(|p| p.into_inner()).finish())
    }
    #[getter]
    fn findings(&self) -> Vec<Finding> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).findings().iter().map(Finding::from).collect()
    }
    #[getter]
    fn canary_leaked(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).canary_leaked()
    }
    #[getter]
    fn pending_bytes(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).pending_bytes()
    }
}

/// Streaming watermarking of one response.
#[pyclass(module = "vallum")]
struct StreamWatermarker(Mutex<vallum::StreamWatermarker>, Mutex<vallum::Utf8Stream>);

#[pymethods]
impl StreamWatermarker {
    fn push(&self, chunk: &Bound<'_, PyAny>) -> PyResult<String> {
        let c = chunk_arg(chunk, &self.1)?;
        Ok(self.0.lock().unwrap_or_else(|p| p.into_inner()).push(&c))
    }
    fn finish(&self) -> PyResult<String> {
        self.1.lock().unwrap_or_else(|p| p.into_inner()).finish().map_err(map_err)?;
        Ok(self.0.lock().unwrap_or_else(|p| p.into_inner()).finish())
    }
}

/// Redaction and watermarking of one `text/event-stream` response (see the core's `sse`
/// module): `data:` values and JSON delta fields are redacted as one text stream across events.
#[pyclass(module = "vallum")]
struct SseStream(Mutex<vallum::SseStream>, Mutex<vallum::Utf8Stream>);

#[pymethods]
impl SseStream {
    /// Adds a chunk (`str`, or `bytes` of UTF-8); returns the events that can be sent now.
    fn push(&self, py: Python<'_>, chunk: &Bound<'_, PyAny>) -> PyResult<String> {
        let c = chunk_arg(chunk, &self.1)?;
        enter_core(py, || self.0.lock().unwrap_or_else(|p| p.into_inner()).push(&c))
    }
    /// Ends the stream; returns the rest. Raises InputError if a `bytes` stream ended inside a
    /// UTF-8 character.
    fn finish(&self, py: Python<'_>) -> PyResult<String> {
        self.1.lock().unwrap_or_else(|p| p.into_inner()).finish().map_err(map_err)?;
        enter_core(py, || self.0.lock().unwrap_or_else(|p| p.into_inner()).finish())
    }
    #[getter]
    fn findings(&self) -> Vec<Finding> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).findings().iter().map(Finding::from).collect()
    }
    #[getter]
    fn canary_leaked(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).canary_leaked()
    }
    #[getter]
    fn pending_bytes(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).pending_bytes()
    }
}

/// The firewall: immutable, thread-safe; share one instance across threads.
#[pyclass(frozen, subclass, module = "vallum")]
struct Firewall(vallum::Firewall);

#[pymethods]
impl Firewall {
    #[new]
    #[pyo3(signature = (policy=None, key=None))]
    fn new(py: Python<'_>, policy: Option<&Policy>, key: Option<Vec<u8>>) -> PyResult<Self> {
        let mut b = vallum::Firewall::builder().policy(policy.map(|p| p.0.clone()).unwrap_or_default());
        if let Some(k) = key {
            b = b.key(&k);
        }
        enter_core(py, || b.build())?.map(Firewall).map_err(map_err)
    }
    #[getter]
    fn has_classifier(&self) -> bool {
        self.0.has_classifier()
    }
    fn scan_prompt(&self, py: Python<'_>, text: &Bound<'_, PyAny>) -> PyResult<Verdict> {
        let t = text_ref(text)?;
        enter_core_sized(py, t.len(), self.0.has_classifier(), || Verdict(self.0.scan_prompt(&t)))
    }
    fn scan_prompts(&self, py: Python<'_>, texts: Vec<Bound<'_, PyAny>>) -> PyResult<Vec<Verdict>> {
        let ts = texts.iter().map(text_arg).collect::<PyResult<Vec<_>>>()?;
        enter_core(py, || self.0.scan_prompts(&ts).into_iter().map(Verdict).collect())
    }
    fn scan_conversation(&self, py: Python<'_>, turns: Vec<Bound<'_, PyAny>>) -> PyResult<Verdict> {
        let ts = turns.iter().map(text_arg).collect::<PyResult<Vec<_>>>()?;
        enter_core(py, || Verdict(self.0.scan_conversation(&ts)))
    }
    fn scan_output(&self, py: Python<'_>, text: &Bound<'_, PyAny>) -> PyResult<OutputResult> {
        let t = text_ref(text)?;
        enter_core_sized(py, t.len(), false, || OutputResult(self.0.scan_output(&t)))
    }
    fn restore(&self, py: Python<'_>, text: &Bound<'_, PyAny>) -> PyResult<String> {
        let t = text_arg(text)?;
        enter_core(py, || self.0.restore(&t))
    }
    fn watermark(&self, py: Python<'_>, text: &Bound<'_, PyAny>, payload: &Bound<'_, PyAny>) -> PyResult<String> {
        let t = text_arg(text)?;
        let payload = payload_arg(payload)?;
        enter_core(py, || self.0.watermark(&t, payload))
    }
    fn detect_watermark(&self, py: Python<'_>, text: &Bound<'_, PyAny>) -> PyResult<Option<Detection>> {
        let t = text_arg(text)?;
        let d = enter_core(py, || self.0.detect_watermark(&t))?;
        Ok(d.map(|d| Detection { payload: d.payload, marks: d.marks, confidence: d.confidence }))
    }
    fn strip_watermark(&self, py: Python<'_>, text: &Bound<'_, PyAny>) -> PyResult<String> {
        let t = text_arg(text)?;
        enter_core(py, || self.0.strip_watermark(&t))
    }
    fn new_canary(&self) -> String {
        self.0.new_canary()
    }
    fn stream_redactor(&self) -> StreamRedactor {
        StreamRedactor(Mutex::new(self.0.stream_redactor()), Mutex::default())
    }
    fn stream_watermarker(&self, payload: &Bound<'_, PyAny>) -> PyResult<StreamWatermarker> {
        Ok(StreamWatermarker(Mutex::new(self.0.stream_watermarker(payload_arg(payload)?)), Mutex::default()))
    }
    #[pyo3(signature = (payload=None, redact=true))]
    fn sse_stream(&self, payload: Option<&Bound<'_, PyAny>>, redact: bool) -> PyResult<SseStream> {
        let p = payload.map(payload_arg).transpose()?;
        Ok(SseStream(Mutex::new(self.0.sse_stream(redact, p)), Mutex::default()))
    }
    fn __repr__(&self) -> String {
        format!("Firewall(rules={}, classifier={})", self.0.rule_count(), self.0.has_classifier())
    }
}

#[pymodule(gil_used = false)]
fn _vallum(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // Benchmarks refuse to time a debug build (it is several times slower than release).
    m.add("BUILD_PROFILE", if cfg!(debug_assertions) { "debug" } else { "release" })?;
    m.add("VallumError", py.get_type::<VallumError>())?;
    m.add("PolicyError", py.get_type::<PolicyError>())?;
    m.add("ModelError", py.get_type::<ModelError>())?;
    m.add("InputError", py.get_type::<InputError>())?;
    m.add("VallumIOError", py.get_type::<VallumIOError>())?;
    m.add_class::<Policy>()?;
    m.add_class::<Firewall>()?;
    m.add_class::<Verdict>()?;
    m.add_class::<Match>()?;
    m.add_class::<Finding>()?;
    m.add_class::<OutputResult>()?;
    m.add_class::<Detection>()?;
    m.add_class::<StreamRedactor>()?;
    m.add_class::<StreamWatermarker>()?;
    m.add_class::<SseStream>()?;
    Ok(())
}
