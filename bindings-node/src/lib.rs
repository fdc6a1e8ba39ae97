//! Node bindings for Vallum (napi-rs). Thin: converts types and maps errors; every behaviour
//! lives in the `vallum` core crate.
//!
//! Each CPU-bound call exists twice: a Promise computed on the libuv thread pool (an `AsyncTask`,
//! with an optional `AbortSignal`) and a `...Sync` twin; both run the same `run` function inside
//! `catch_unwind`, so no Rust panic crosses into JavaScript. Errors carry the engine's stable
//! code as the message prefix (`policy_invalid: ...`); the JS entry point (`vallum.js`) copies it
//! into `error.code`.

#![allow(missing_docs)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

use napi::bindgen_prelude::*;
use napi::{Either, Status};
use napi_derive::napi;

fn err(code: &str, message: impl std::fmt::Display) -> Error {
    Error::new(Status::GenericFailure, format!("{code}: {message}"))
}

fn map_err(e: vallum::Error) -> Error {
    err(e.code().as_str(), e.message())
}

type Text = Either<String, Buffer>;

fn text(t: Text) -> Result<String> {
    match t {
        Either::A(s) => Ok(s),
        Either::B(b) => String::from_utf8(b.to_vec())
            .map_err(|e| err("input_invalid", format!("Buffer is not valid UTF-8 (at byte {})", e.utf8_error().valid_up_to()))),
    }
}

fn payload(p: Either<BigInt, f64>) -> Result<u64> {
    match p {
        Either::A(b) => {
            let (signed, v, lossless) = b.get_u64();
            if signed || !lossless {
                return Err(err("input_invalid", "payload must be an unsigned 64-bit integer"));
            }
            Ok(v)
        }
        Either::B(f) if f >= 0.0 && f.fract() == 0.0 && f <= 9_007_199_254_740_991.0 => Ok(f as u64),
        Either::B(_) => Err(err("input_invalid", "payload must be a non-negative safe integer or a bigint")),
    }
}

fn json(v: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(v).map_err(|e| err("internal", e))
}

/// One unit of work, shared by the async and sync forms.
enum Job {
    ScanPrompt(String),
    ScanPrompts(Vec<String>),
    ScanConversation(Vec<String>),
    ScanOutput(String),
    Restore(String),
    Watermark(String, u64),
    Detect(String),
    Strip(String),
}

/// Runs a job; results cross to JavaScript as JSON text, parsed by `vallum.js`.
fn run(fw: &vallum::Firewall, job: Job) -> Result<String> {
    let r = catch_unwind(AssertUnwindSafe(|| match job {
        Job::ScanPrompt(t) => json(&fw.scan_prompt(&t)),
        Job::ScanPrompts(ts) => json(&fw.scan_prompts(&ts)),
        Job::ScanConversation(ts) => json(&fw.scan_conversation(&ts)),
        Job::ScanOutput(t) => json(&fw.scan_output(&t)),
        Job::Restore(t) => json(&fw.restore(&t)),
        Job::Watermark(t, p) => json(&fw.watermark(&t, p)),
        Job::Detect(t) => json(&fw.detect_watermark(&t).map(|d| {
            // The payload travels as a decimal string; vallum.js turns it into a BigInt.
            serde_json::json!({"payload": d.payload.to_string(), "marks": d.marks, "confidence": d.confidence})
        })),
        Job::Strip(t) => json(&fw.strip_watermark(&t)),
    }));
    r.unwrap_or_else(|_| Err(err("internal", "internal error in the Vallum engine (please report)")))
}

pub struct ScanTask {
    fw: vallum::Firewall,
    job: Option<Job>,
}

impl Task for ScanTask {
    type Output = String;
    type JsValue = String;

    fn compute(&mut self) -> Result<Self::Output> {
        let job = self.job.take().ok_or_else(|| err("internal", "task ran twice"))?;
        run(&self.fw, job)
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> Result<Self::JsValue> {
        Ok(output)
    }
}

/// A policy (TOML or JSON; same meaning in Rust, Python and Node).
#[napi]
pub struct Policy {
    inner: vallum::Policy,
}

#[napi]
impl Policy {
    /// The built-in default policy.
    #[napi(factory, js_name = "default")]
    pub fn default_policy() -> Self {
        Policy { inner: vallum::Policy::default() }
    }

    /// Parses TOML. Throws `policy_invalid` naming the field.
    #[napi(factory)]
    pub fn from_toml(s: String) -> Result<Self> {
        vallum::Policy::from_toml(&s).map(|inner| Policy { inner }).map_err(map_err)
    }

    /// Parses JSON. Throws `policy_invalid` naming the field.
    #[napi(factory)]
    pub fn from_json(s: String) -> Result<Self> {
        vallum::Policy::from_json(&s).map(|inner| Policy { inner }).map_err(map_err)
    }

    /// Loads a `.toml` or `.json` file. Throws `policy_invalid` or `io`.
    #[napi(factory)]
    pub fn from_file(path: String) -> Result<Self> {
        vallum::Policy::from_file(path).map(|inner| Policy { inner }).map_err(map_err)
    }

    /// The policy as JSON.
    #[napi]
    pub fn to_json(&self) -> String {
        self.inner.to_json()
    }
}

/// A chunk of a stream: a string, or a Buffer joined through a UTF-8 carry so that a character
/// split across chunks is not an error.
fn chunk(t: Text, carry: &Mutex<vallum::Utf8Stream>) -> Result<String> {
    match t {
        Either::A(s) => Ok(s),
        Either::B(b) => carry.lock().unwrap_or_else(|p| p.into_inner()).feed(&b).map_err(map_err),
    }
}

/// Streaming redaction of one response.
#[napi]
pub struct StreamRedactor {
    inner: Mutex<vallum::StreamRedactor>,
    carry: Mutex<vallum::Utf8Stream>,
}

#[napi]
impl StreamRedactor {
    /// Adds a chunk; returns the redacted text that is safe to send now.
    #[napi]
    pub fn push(&self, chunk_: Text) -> Result<String> {
        let c = chunk(chunk_, &self.carry)?;
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        catch_unwind(AssertUnwindSafe(|| g.push(&c))).map_err(|_| err("internal", "panic in push"))
    }

    /// Ends the stream; returns the rest, redacted.
    #[napi]
    pub fn finish(&self) -> Result<String> {
        self.carry.lock().unwrap_or_else(|p| p.into_inner()).finish().map_err(map_err)?;
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        catch_unwind(AssertUnwindSafe(|| g.finish())).map_err(|_| err("internal", "panic in finish"))
    }

    /// Findings so far as JSON text (vallum.js parses it).
    #[napi(getter)]
    pub fn findings_json(&self) -> Result<String> {
        json(&self.inner.lock().unwrap_or_else(|p| p.into_inner()).findings())
    }

    /// True once a canary token was seen.
    #[napi(getter)]
    pub fn canary_leaked(&self) -> bool {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).canary_leaked()
    }
}

/// Streaming watermarking of one response.
#[napi]
pub struct StreamWatermarker {
    inner: Mutex<vallum::StreamWatermarker>,
    carry: Mutex<vallum::Utf8Stream>,
}

#[napi]
impl StreamWatermarker {
    /// Watermarks the next chunk.
    #[napi]
    pub fn push(&self, chunk_: Text) -> Result<String> {
        let c = chunk(chunk_, &self.carry)?;
        Ok(self.inner.lock().unwrap_or_else(|p| p.into_inner()).push(&c))
    }

    /// Ends the stream.
    #[napi]
    pub fn finish(&self) -> String {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).finish()
    }
}

/// Redaction and watermarking of one `text/event-stream` response (see the core's `sse`
/// module).
#[napi]
pub struct SseStream {
    inner: Mutex<vallum::SseStream>,
    carry: Mutex<vallum::Utf8Stream>,
}

#[napi]
impl SseStream {
    /// Adds a chunk; returns the events that can be sent now.
    #[napi]
    pub fn push(&self, chunk_: Text) -> Result<String> {
        let c = chunk(chunk_, &self.carry)?;
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        catch_unwind(AssertUnwindSafe(|| g.push(&c))).map_err(|_| err("internal", "panic in push"))
    }

    /// Ends the stream; returns the rest. Throws `input_invalid` if a Buffer stream ended inside
    /// a UTF-8 character.
    #[napi]
    pub fn finish(&self) -> Result<String> {
        self.carry.lock().unwrap_or_else(|p| p.into_inner()).finish().map_err(map_err)?;
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        catch_unwind(AssertUnwindSafe(|| g.finish())).map_err(|_| err("internal", "panic in finish"))
    }

    /// Findings so far as JSON text (vallum.js parses it).
    #[napi(getter)]
    pub fn findings_json(&self) -> Result<String> {
        json(&self.inner.lock().unwrap_or_else(|p| p.into_inner()).findings())
    }

    /// True once a canary token was seen.
    #[napi(getter)]
    pub fn canary_leaked(&self) -> bool {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).canary_leaked()
    }

    /// Bytes of input held back.
    #[napi(getter)]
    pub fn pending_bytes(&self) -> u32 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).pending_bytes().min(u32::MAX as usize) as u32
    }
}

/// An async task on the libuv pool; `signal` aborts it before it starts computing.
fn task(fw: &vallum::Firewall, job: Job, signal: Option<AbortSignal>) -> AsyncTask<ScanTask> {
    AsyncTask::with_optional_signal(ScanTask { fw: fw.clone(), job: Some(job) }, signal)
}

fn texts(ts: Vec<Text>) -> Result<Vec<String>> {
    ts.into_iter().map(text).collect()
}

/// The firewall: immutable and thread-safe.
#[napi]
pub struct Firewall {
    inner: vallum::Firewall,
}

#[napi]
impl Firewall {
    /// `new Firewall(policy?, key?)`. Throws `policy_invalid`, `key_invalid`, `model_integrity`, ...
    #[napi(constructor)]
    pub fn new(policy: Option<&Policy>, key: Option<Buffer>) -> Result<Self> {
        let mut b = vallum::Firewall::builder().policy(policy.map(|p| p.inner.clone()).unwrap_or_default());
        if let Some(k) = key {
            b = b.key(&k);
        }
        let fw = catch_unwind(AssertUnwindSafe(|| b.build())).map_err(|_| err("internal", "panic while building"))?;
        fw.map(|inner| Firewall { inner }).map_err(map_err)
    }

    /// True when the classifier is loaded.
    #[napi(getter)]
    pub fn has_classifier(&self) -> bool {
        self.inner.has_classifier()
    }

    #[napi(ts_return_type = "Promise<string>")]
    pub fn scan_prompt(&self, text_: Text, signal: Option<AbortSignal>) -> Result<AsyncTask<ScanTask>> {
        Ok(task(&self.inner, Job::ScanPrompt(text(text_)?), signal))
    }

    #[napi(ts_return_type = "string")]
    pub fn scan_prompt_sync(&self, text_: Text) -> Result<String> {
        run(&self.inner, Job::ScanPrompt(text(text_)?))
    }

    #[napi(ts_return_type = "Promise<string>")]
    pub fn scan_prompts(&self, texts_: Vec<Text>, signal: Option<AbortSignal>) -> Result<AsyncTask<ScanTask>> {
        Ok(task(&self.inner, Job::ScanPrompts(texts(texts_)?), signal))
    }

    #[napi(ts_return_type = "string")]
    pub fn scan_prompts_sync(&self, texts_: Vec<Text>) -> Result<String> {
        run(&self.inner, Job::ScanPrompts(texts(texts_)?))
    }

    #[napi(ts_return_type = "Promise<string>")]
    pub fn scan_conversation(&self, turns: Vec<Text>, signal: Option<AbortSignal>) -> Result<AsyncTask<ScanTask>> {
        Ok(task(&self.inner, Job::ScanConversation(texts(turns)?), signal))
    }

    #[napi(ts_return_type = "string")]
    pub fn scan_conversation_sync(&self, turns: Vec<Text>) -> Result<String> {
        run(&self.inner, Job::ScanConversation(texts(turns)?))
    }

    #[napi(ts_return_type = "Promise<string>")]
    pub fn scan_output(&self, text_: Text, signal: Option<AbortSignal>) -> Result<AsyncTask<ScanTask>> {
        Ok(task(&self.inner, Job::ScanOutput(text(text_)?), signal))
    }

    #[napi(ts_return_type = "string")]
    pub fn scan_output_sync(&self, text_: Text) -> Result<String> {
        run(&self.inner, Job::ScanOutput(text(text_)?))
    }

    #[napi(ts_return_type = "Promise<string>")]
    pub fn restore(&self, text_: Text, signal: Option<AbortSignal>) -> Result<AsyncTask<ScanTask>> {
        Ok(task(&self.inner, Job::Restore(text(text_)?), signal))
    }

    #[napi(ts_return_type = "string")]
    pub fn restore_sync(&self, text_: Text) -> Result<String> {
        run(&self.inner, Job::Restore(text(text_)?))
    }

    #[napi(ts_return_type = "Promise<string>")]
    pub fn watermark(&self, text_: Text, payload_: Either<BigInt, f64>, signal: Option<AbortSignal>) -> Result<AsyncTask<ScanTask>> {
        Ok(task(&self.inner, Job::Watermark(text(text_)?, payload(payload_)?), signal))
    }

    #[napi(ts_return_type = "string")]
    pub fn watermark_sync(&self, text_: Text, payload_: Either<BigInt, f64>) -> Result<String> {
        run(&self.inner, Job::Watermark(text(text_)?, payload(payload_)?))
    }

    #[napi(ts_return_type = "Promise<string>")]
    pub fn detect_watermark(&self, text_: Text, signal: Option<AbortSignal>) -> Result<AsyncTask<ScanTask>> {
        Ok(task(&self.inner, Job::Detect(text(text_)?), signal))
    }

    #[napi(ts_return_type = "string")]
    pub fn detect_watermark_sync(&self, text_: Text) -> Result<String> {
        run(&self.inner, Job::Detect(text(text_)?))
    }

    #[napi(ts_return_type = "Promise<string>")]
    pub fn strip_watermark(&self, text_: Text, signal: Option<AbortSignal>) -> Result<AsyncTask<ScanTask>> {
        Ok(task(&self.inner, Job::Strip(text(text_)?), signal))
    }

    #[napi(ts_return_type = "string")]
    pub fn strip_watermark_sync(&self, text_: Text) -> Result<String> {
        run(&self.inner, Job::Strip(text(text_)?))
    }

    /// A new canary token for a system prompt.
    #[napi]
    pub fn new_canary(&self) -> String {
        self.inner.new_canary()
    }

    #[napi]
    pub fn stream_redactor(&self) -> StreamRedactor {
        StreamRedactor { inner: Mutex::new(self.inner.stream_redactor()), carry: Mutex::default() }
    }

    #[napi]
    pub fn stream_watermarker(&self, payload_: Either<BigInt, f64>) -> Result<StreamWatermarker> {
        Ok(StreamWatermarker { inner: Mutex::new(self.inner.stream_watermarker(payload(payload_)?)), carry: Mutex::default() })
    }

    /// An SSE stream: redacts when `redact`, watermarks with `payload` when given.
    #[napi]
    pub fn sse_stream(&self, redact: bool, payload_: Option<Either<BigInt, f64>>) -> Result<SseStream> {
        let p = payload_.map(payload).transpose()?;
        Ok(SseStream { inner: Mutex::new(self.inner.sse_stream(redact, p)), carry: Mutex::default() })
    }
}
