//! # Vallum
//!
//! A prompt-and-output firewall engine for AI APIs.
//!
//! - [`Firewall::scan_prompt`] normalises a prompt ([`normalize`]), matches signature rules
//!   ([`signatures`]) on every view, decodes and rescans encoded spans, and returns a [`Verdict`]
//!   (decision, score, evidence with byte spans in the original text, obfuscation flags).
//! - [`Firewall::scan_output`] redacts secrets, credentials, checksum-validated PII, canary tokens
//!   and deny terms ([`redact`]); [`Firewall::stream_redactor`] does it on streams, and
//!   [`Firewall::sse_stream`] on server-sent event streams of JSON deltas ([`sse`]).
//! - [`Firewall::watermark`] / [`Firewall::detect_watermark`] embed and recover a keyed,
//!   invisible mark ([`watermark`]).
//!
//! Configuration is one [`Policy`] (TOML or JSON). Errors come only from configuration and
//! carry a stable [`ErrorCode`]; scanning never fails and never panics because of its input.
//!
//! ```
//! use vallum::{Action, Firewall};
//! let fw = Firewall::with_defaults().unwrap();
//! assert_eq!(fw.scan_prompt("What is the capital of France?").decision, Action::Allow);
//! let out = fw.scan_output("Mail dana@example.org for access.");
//! assert_eq!(out.text, "Mail [EMAIL_1] for access.");
//! ```

pub(crate) mod decode;
pub mod classifier;
pub mod error;
pub mod eval;
pub mod firewall;
pub mod keys;
pub mod normalize;
pub mod policy;
pub mod redact;
pub mod signatures;
pub mod sse;
pub mod validators;
pub mod watermark;

pub use error::{Error, ErrorCode, Result};
pub use firewall::{ClassifierVerdict, Firewall, FirewallBuilder, Match, Verdict};
pub use normalize::{Flags, ViewKind};
pub use classifier::Classifier;
pub use policy::{Action, Policy};
pub use redact::{Entity, Finding, OutputResult, Strategy, StreamRedactor, Utf8Stream, Vault};
pub use signatures::{RuleDef, RulePack, Severity};
pub use sse::SseStream;
pub use watermark::{Detection, StreamWatermarker};
