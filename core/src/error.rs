//! The one error type of the engine.
//!
//! Errors come from configuration (policy, rule packs, keys, model files), never from the text
//! being scanned: scanning functions are infallible by design. Every error carries a stable
//! machine-readable [`ErrorCode`] that the Python and Node bindings expose unchanged as `.code`.

use std::fmt;

/// Stable error codes shared by Rust, Python and Node.
///
/// The string form ([`ErrorCode::as_str`]) is part of the public contract: bindings expose it as
/// `error.code`, and tests in all three languages compare against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The policy (TOML/JSON) is malformed or has an invalid value. `policy_invalid`.
    PolicyInvalid,
    /// A rule pack is malformed, or a rule's pattern does not compile. `rule_invalid`.
    RuleInvalid,
    /// A key (watermark / hashing / canary) is malformed, e.g. bad hex or too short. `key_invalid`.
    KeyInvalid,
    /// The input given to a non-scanning API is unusable (e.g. invalid UTF-8 passed to a binding,
    /// a labelled JSONL row without `text`). Scanning itself never raises it. `input_invalid`.
    InputInvalid,
    /// A file could not be read. `io`.
    Io,
    /// A model file does not match its `MANIFEST` digest, or the manifest is missing. `model_integrity`.
    ModelIntegrity,
    /// The ONNX Runtime shared library could not be found or loaded. `runtime_missing`.
    RuntimeMissing,
    /// The model loaded but its inputs/outputs are not the expected signature. `model_signature`.
    ModelSignature,
    /// The classifier failed while scoring. `classifier_failed`.
    ClassifierFailed,
}

impl ErrorCode {
    /// The stable snake_case code, e.g. `"policy_invalid"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::PolicyInvalid => "policy_invalid",
            ErrorCode::RuleInvalid => "rule_invalid",
            ErrorCode::KeyInvalid => "key_invalid",
            ErrorCode::InputInvalid => "input_invalid",
            ErrorCode::Io => "io",
            ErrorCode::ModelIntegrity => "model_integrity",
            ErrorCode::RuntimeMissing => "runtime_missing",
            ErrorCode::ModelSignature => "model_signature",
            ErrorCode::ClassifierFailed => "classifier_failed",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An engine error: a stable [`ErrorCode`] plus a sentence naming what was wrong (for policy
/// errors, the offending field path such as `thresholds.block`).
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    code: ErrorCode,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// A new error with the given code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error { code, message: message.into(), source: None }
    }

    /// Attaches an underlying cause.
    pub fn with_source(
        mut self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The stable code of this error.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The human-readable message (without the code prefix).
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn policy(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::PolicyInvalid, message)
    }

    pub(crate) fn rule(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::RuleInvalid, message)
    }

    pub(crate) fn key(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::KeyInvalid, message)
    }

    /// Reads a UTF-8 text file: `io` when it cannot be read, `invalid_utf8` (the given code) naming
    /// the first bad byte's offset when its bytes are not UTF-8. `what` prefixes messages (the
    /// policy field the path came from, or empty).
    pub(crate) fn read_text(path: &std::path::Path, what: &str, invalid_utf8: ErrorCode) -> Result<String> {
        let bytes = std::fs::read(path).map_err(|e| {
            Error::new(ErrorCode::Io, format!("{what}cannot read {}: {e}", path.display())).with_source(e)
        })?;
        Error::text_from(bytes, path, what, invalid_utf8)
    }

    /// The text of bytes already read from `path`: the given code naming the first bad byte's
    /// offset when they are not UTF-8 (as [`Error::read_text`]).
    pub(crate) fn text_from(bytes: Vec<u8>, path: &std::path::Path, what: &str, invalid_utf8: ErrorCode) -> Result<String> {
        String::from_utf8(bytes).map_err(|e| {
            let at = e.utf8_error().valid_up_to();
            Error::new(invalid_utf8, format!("{what}{}: not valid UTF-8 (byte {at})", path.display()))
        })
    }
}

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
