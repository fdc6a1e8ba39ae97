//! The policy: one serde configuration, loadable from TOML or JSON, that means the same in Rust,
//! Python and Node.
//!
//! Every section has a default, so an empty document (`{}` or an empty TOML file) is the
//! built-in policy. Unknown fields are errors. Errors name the field path, e.g.
//! `policy_invalid: thresholds.block: must be within 0..=1`.
//!
//! ```
//! let p = vallum::Policy::from_toml(r#"
//! version = 1
//! [thresholds]
//! flag = 0.4
//! block = 0.9
//! [actions]
//! template_injection = "block"
//! "#).unwrap();
//! assert_eq!(p.thresholds.block, 0.9);
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorCode, Result};
use crate::redact::{Entity, Strategy};
use crate::signatures::RuleDef;

/// The only policy format version this build understands.
pub const POLICY_VERSION: u32 = 1;

/// What to do with a prompt. Ordered: `Allow < Flag < Block`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Let it through.
    Allow,
    /// Let it through, marked for review.
    Flag,
    /// Refuse it.
    Block,
}

impl Action {
    /// `"allow" | "flag" | "block"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Flag => "flag",
            Action::Block => "block",
        }
    }
}

/// Score thresholds (0..=1) turning a score into a decision: `score >= block` blocks,
/// otherwise `score >= flag` flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// Flag threshold. Default 0.5 (one `medium` signature).
    pub flag: f32,
    /// Block threshold. Default 0.8 (one `high` signature).
    pub block: f32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { flag: 0.5, block: 0.8 }
    }
}

/// Resource limits. Inputs are scanned in overlapping chunks, so memory stays bounded by the
/// chunk size whatever the input size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Longest prompt scanned, in bytes (default 16 MiB). Longer prompts are scanned up to this
    /// many bytes (cut on a char boundary), `truncated` is set in the verdict and the decision is
    /// at least `oversize_action`.
    pub max_input_bytes: usize,
    /// Decision floor for prompts longer than `max_input_bytes` (default `flag`).
    pub oversize_action: Action,
    /// Size of one scanning chunk, in bytes (default 64 KiB, at least 4 KiB).
    pub chunk_bytes: usize,
    /// Overlap between consecutive chunks, in bytes (default 2 KiB; less than half a chunk).
    /// A signature match longer than this may be missed at a chunk border.
    pub overlap_bytes: usize,
    /// How many times decoded content is decoded again (default 2, at most 4).
    pub max_decode_depth: u32,
    /// Total decoded bytes scanned per chunk (default 64 KiB).
    pub max_decoded_bytes: usize,
    /// Most matches kept in a verdict (default 256); more set `matches_truncated`.
    pub max_matches: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_input_bytes: 16 << 20,
            oversize_action: Action::Flag,
            chunk_bytes: 64 << 10,
            overlap_bytes: 2 << 10,
            max_decode_depth: 2,
            max_decoded_bytes: 64 << 10,
            max_matches: 256,
        }
    }
}

/// Which signature rules are on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesPolicy {
    /// Built-in packs to load; the only built-in pack is `"default"`. Default `["default"]`.
    pub builtin: Vec<String>,
    /// Rule pack files (TOML or JSON) to add; relative paths are resolved against the policy
    /// file's folder when the policy was loaded from a file.
    pub packs: Vec<PathBuf>,
    /// Rules written inline in the policy (same shape as in a pack).
    pub inline: Vec<RuleDef>,
    /// Rule ids to switch off.
    pub disabled: Vec<String>,
}

impl Default for RulesPolicy {
    fn default() -> Self {
        RulesPolicy { builtin: vec!["default".into()], packs: Vec::new(), inline: Vec::new(), disabled: Vec::new() }
    }
}

/// Output redaction settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedactionPolicy {
    /// Entities to redact. Default: all of them.
    pub entities: Vec<Entity>,
    /// Strategy for entities without an override. Default `tag`.
    pub default_strategy: Strategy,
    /// Per-entity strategy overrides, e.g. `{ email = "mask" }`.
    pub strategies: BTreeMap<Entity, Strategy>,
    /// Custom deny terms (matched case-insensitively on word boundaries: ASCII terms by an
    /// ASCII-case-insensitive automaton, others by a Unicode `(?i)` regex), redacted as entity
    /// `deny_term`.
    pub deny_terms: Vec<String>,
    /// Minimum Shannon entropy (bits per char) of the value in a `password=`/`api_key=` style
    /// assignment. Default 3.0.
    pub secret_min_entropy: f32,
    /// Assignment key names (case-insensitive) whose values are never redacted as secrets,
    /// e.g. `["tokenizationId"]`.
    pub allow_keys: Vec<String>,
    /// Exact values never redacted (e.g. documented example keys).
    pub allow_values: Vec<String>,
    /// Most entries kept by a firewall's pseudonymisation vault (default 100 000; the oldest are
    /// dropped first).
    pub vault_max_entries: usize,
    /// Bytes a streaming redactor may hold back at most, beyond a private-key block in progress
    /// (default 512).
    pub stream_holdback_bytes: usize,
}

impl Default for RedactionPolicy {
    fn default() -> Self {
        RedactionPolicy {
            entities: Entity::ALL.to_vec(),
            default_strategy: Strategy::Tag,
            strategies: BTreeMap::new(),
            deny_terms: Vec::new(),
            secret_min_entropy: 3.0,
            allow_keys: Vec::new(),
            allow_values: Vec::new(),
            vault_max_entries: 100_000,
            stream_holdback_bytes: 512,
        }
    }
}

/// Watermark settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatermarkPolicy {
    /// When false, `embed` returns the text unchanged. Default true.
    pub enabled: bool,
}

impl Default for WatermarkPolicy {
    fn default() -> Self {
        WatermarkPolicy { enabled: true }
    }
}

/// Canary token settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CanaryPolicy {
    /// Prefix of minted canaries (ASCII letters, digits, `-`, `_`; 2–16 chars). Default `vlmc-`.
    pub prefix: String,
    /// Extra fixed canary strings reported as leaks when they appear in an output.
    pub tokens: Vec<String>,
}

impl Default for CanaryPolicy {
    fn default() -> Self {
        CanaryPolicy { prefix: "vlmc-".into(), tokens: Vec::new() }
    }
}

/// Server-sent event streams ([`crate::sse`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SsePolicy {
    /// Strings of JSON events that are pieces of the streamed text: redacted as one stream
    /// across events, and watermarked. Each entry is a field path (`choices[*].delta.content`:
    /// keys joined by `.`, `[*]` any array index, `[N]` one index; an array element with an
    /// integer `index` field is addressed by it) optionally followed by ` if type=VALUE` (only
    /// in events whose top-level `type` is VALUE). Default [`crate::sse::DEFAULT_TEXT_FIELDS`].
    pub text_fields: Vec<String>,
    /// Like `text_fields`, but never watermarked (streamed JSON fragments such as tool-call
    /// arguments). Default [`crate::sse::DEFAULT_REDACT_FIELDS`]. Other strings are redacted one
    /// by one.
    pub redact_fields: Vec<String>,
    /// How plain-text `data:` values of consecutive events are joined: `tokens` (default; with
    /// nothing between them) or `lines` (as separate lines: values never run across events).
    pub plain_data: crate::sse::PlainData,
}

impl Default for SsePolicy {
    fn default() -> Self {
        let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        SsePolicy {
            text_fields: own(crate::sse::DEFAULT_TEXT_FIELDS),
            redact_fields: own(crate::sse::DEFAULT_REDACT_FIELDS),
            plain_data: crate::sse::PlainData::Tokens,
        }
    }
}

/// What the engine does when the classifier is enabled but cannot be loaded or fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unavailable {
    /// Signatures only; the verdict's `classifier.status` says `unavailable`.
    FailOpen,
    /// Every prompt is blocked while the classifier is unavailable.
    FailClosed,
}

/// Classifier settings (the ONNX model layer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassifierPolicy {
    /// Use the classifier (default true; without the `onnx` feature it is always unavailable).
    pub enabled: bool,
    /// When true, a classifier that cannot be loaded is a build error (`model_integrity`,
    /// `runtime_missing`, ...) instead of a degraded firewall. Default false.
    pub required: bool,
    /// Fail open (signatures only) or closed (block) when unavailable. Default `fail_open`.
    pub on_unavailable: Unavailable,
    /// Model bundle folder; default: see `classifier::default_model_dirs`.
    pub model_dir: Option<PathBuf>,
    /// ONNX Runtime shared library; default: searched (see `classifier::onnx`). When set, the
    /// file must exist (`runtime_missing` otherwise, no fallback to another library); only one
    /// runtime is loaded per process, so a later firewall naming another path keeps the first.
    pub runtime_path: Option<PathBuf>,
    /// Override of the model's calibrated probability thresholds.
    pub thresholds: Option<crate::classifier::ModelThresholds>,
    /// Override of the window stride (tokens).
    pub window_stride: Option<usize>,
    /// Override of the window cap per text.
    pub max_windows: Option<usize>,
    /// Sessions in the pool (default 2).
    pub sessions: usize,
    /// Intra-op threads per session (default 1).
    pub intra_threads: usize,
    /// Windows per ONNX batch (default 16); a batch also holds at most 512 tokens (rows x padded
    /// length), which bounds activation memory for long inputs.
    pub batch_size: usize,
    /// Also score the normalised view when an evasion it undoes was seen: invisible, bidi or tag
    /// characters, look-alikes, letter spacing (default true). Costs a second inference then,
    /// unless the text's own score already reaches the model's block threshold.
    pub score_normalized_view: bool,
}

impl Default for ClassifierPolicy {
    fn default() -> Self {
        ClassifierPolicy {
            enabled: true,
            required: false,
            on_unavailable: Unavailable::FailOpen,
            model_dir: None,
            runtime_path: None,
            thresholds: None,
            window_stride: None,
            max_windows: None,
            sessions: 2,
            intra_threads: 1,
            batch_size: 16,
            score_normalized_view: true,
        }
    }
}

/// The whole policy. See the module docs and README for the format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Format version; must be 1.
    pub version: u32,
    /// Secret key (hex, at least 16 bytes) for watermarks, keyed hashes, pseudonyms and
    /// canaries. When absent and none is given to the builder, a random key is made per firewall
    /// (then watermarks and canaries only verify with that firewall instance).
    pub key_hex: Option<String>,
    /// Decision thresholds.
    pub thresholds: Thresholds,
    /// Resource limits.
    pub limits: Limits,
    /// Signature rules.
    pub rules: RulesPolicy,
    /// Per-category decision floors: a match of that category makes the decision at least this
    /// action; `allow` turns a category's matches into evidence only (they do not add to the
    /// score).
    pub actions: BTreeMap<String, Action>,
    /// Output redaction.
    pub redaction: RedactionPolicy,
    /// Watermarking.
    pub watermark: WatermarkPolicy,
    /// Canary tokens.
    pub canary: CanaryPolicy,
    /// The classifier layer.
    pub classifier: ClassifierPolicy,
    /// Server-sent event streams.
    pub sse: SsePolicy,
    #[serde(skip)]
    pub(crate) base_dir: Option<PathBuf>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            version: POLICY_VERSION,
            key_hex: None,
            thresholds: Thresholds::default(),
            limits: Limits::default(),
            rules: RulesPolicy::default(),
            actions: BTreeMap::new(),
            redaction: RedactionPolicy::default(),
            watermark: WatermarkPolicy::default(),
            canary: CanaryPolicy::default(),
            classifier: ClassifierPolicy::default(),
            sse: SsePolicy::default(),
            base_dir: None,
        }
    }
}

fn path_error<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> Error {
    let path = e.path().to_string();
    // TOML errors span several lines (position, a source excerpt, then the message): keep the
    // first and the last, so "invalid type: string, expected f32" is not lost.
    let full = e.inner().to_string();
    let mut lines = full.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("").to_string();
    let inner = match lines.next_back() {
        Some(last) if !last.starts_with('|') && !last.ends_with('|') => format!("{first}: {last}"),
        _ => first,
    };
    if path.is_empty() || path == "." {
        Error::policy(inner)
    } else {
        Error::policy(format!("{path}: {inner}"))
    }
}

impl Policy {
    /// Parses and validates a TOML policy. Errors: `policy_invalid` naming the field.
    pub fn from_toml(s: &str) -> Result<Self> {
        let de = toml::Deserializer::new(s);
        let p: Policy = serde_path_to_error::deserialize(de).map_err(path_error)?;
        p.validate()?;
        Ok(p)
    }

    /// Parses and validates a JSON policy. Errors: `policy_invalid` naming the field.
    pub fn from_json(s: &str) -> Result<Self> {
        // A byte-order mark (Windows editors) is accepted, as TOML accepts it.
        let s = s.strip_prefix('\u{feff}').unwrap_or(s);
        let mut de = serde_json::Deserializer::from_str(s);
        let p: Policy = serde_path_to_error::deserialize(&mut de).map_err(path_error)?;
        de.end().map_err(|e| Error::policy(format!("trailing data: {e}")))?;
        p.validate()?;
        Ok(p)
    }

    /// Loads a policy file: `.json` is JSON, anything else TOML. Relative rule-pack paths are
    /// resolved against the file's folder. Errors: `io` (unreadable), `policy_invalid` (not UTF-8,
    /// or not a valid policy).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let s = Error::read_text(path, "", ErrorCode::PolicyInvalid)?;
        let mut p = if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) {
            Self::from_json(&s)
        } else {
            Self::from_toml(&s)
        }
        .map_err(|e| Error::policy(format!("{}: {}", path.display(), e.message())))?;
        p.base_dir = path.parent().map(Path::to_path_buf);
        Ok(p)
    }

    /// Serialises to JSON (the canonical interchange form used by the bindings).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".into())
    }

    /// Serialises to TOML.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| Error::policy(format!("cannot serialise: {e}")))
    }

    /// Checks values that serde cannot: ranges, versions, names. Called by every constructor.
    pub fn validate(&self) -> Result<()> {
        if self.version != POLICY_VERSION {
            return Err(Error::policy(format!(
                "version: unsupported policy version {} (this build reads {POLICY_VERSION})",
                self.version
            )));
        }
        let t = &self.thresholds;
        for (name, v) in [("thresholds.flag", t.flag), ("thresholds.block", t.block)] {
            if !(0.0..=1.0).contains(&v) || v.is_nan() {
                return Err(Error::policy(format!("{name}: {v} must be within 0..=1")));
            }
        }
        if t.flag > t.block {
            return Err(Error::policy(format!(
                "thresholds.flag: {} must not exceed thresholds.block ({})",
                t.flag, t.block
            )));
        }
        let l = &self.limits;
        if l.max_input_bytes == 0 {
            return Err(Error::policy("limits.max_input_bytes: must be positive"));
        }
        if !(4096..=(64 << 20)).contains(&l.chunk_bytes) {
            return Err(Error::policy("limits.chunk_bytes: must be within 4096..=67108864"));
        }
        if l.overlap_bytes.saturating_mul(2) >= l.chunk_bytes {
            return Err(Error::policy("limits.overlap_bytes: must be less than half of limits.chunk_bytes"));
        }
        if l.max_decode_depth > 4 {
            return Err(Error::policy("limits.max_decode_depth: at most 4"));
        }
        if l.max_matches == 0 {
            return Err(Error::policy("limits.max_matches: must be positive"));
        }
        for b in &self.rules.builtin {
            if b != "default" {
                return Err(Error::policy(format!("rules.builtin: unknown built-in pack `{b}` (known: default)")));
            }
        }
        let r = &self.redaction;
        if !(0.0..=8.0).contains(&r.secret_min_entropy) {
            return Err(Error::policy("redaction.secret_min_entropy: must be within 0..=8 bits per char"));
        }
        for (i, t) in r.deny_terms.iter().enumerate() {
            if t.trim().is_empty() {
                return Err(Error::policy(format!("redaction.deny_terms[{i}]: must not be empty")));
            }
        }
        if r.stream_holdback_bytes < 64 {
            return Err(Error::policy("redaction.stream_holdback_bytes: at least 64"));
        }
        let c = &self.canary;
        if !(2..=16).contains(&c.prefix.len())
            || !c.prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Error::policy("canary.prefix: 2-16 chars of ASCII letters, digits, '-' or '_'"));
        }
        for (i, t) in c.tokens.iter().enumerate() {
            if t.len() < 8 {
                return Err(Error::policy(format!("canary.tokens[{i}]: at least 8 bytes")));
            }
        }
        for (i, f) in self.sse.text_fields.iter().enumerate() {
            crate::sse::FieldSpec::parse(f, &format!("sse.text_fields[{i}]"), true)?;
        }
        for (i, f) in self.sse.redact_fields.iter().enumerate() {
            crate::sse::FieldSpec::parse(f, &format!("sse.redact_fields[{i}]"), false)?;
        }
        let cl = &self.classifier;
        if cl.sessions == 0 || cl.sessions > 64 {
            return Err(Error::policy("classifier.sessions: within 1..=64"));
        }
        if cl.intra_threads == 0 || cl.batch_size == 0 {
            return Err(Error::policy("classifier.intra_threads / classifier.batch_size: must be positive"));
        }
        if let Some(t) = &cl.thresholds {
            if !(0.0..=1.0).contains(&t.flag) || !(0.0..=1.0).contains(&t.block) || t.flag > t.block {
                return Err(Error::policy("classifier.thresholds: flag <= block, both within 0..=1"));
            }
        }
        if let Some(k) = &self.key_hex {
            crate::keys::parse_key_hex(k).map_err(|e| Error::policy(format!("key_hex: {}", e.message())))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_documents_are_the_default() {
        assert_eq!(Policy::from_toml("").unwrap(), Policy::default());
        assert_eq!(Policy::from_json("{}").unwrap(), Policy::default());
    }

    #[test]
    fn json_round_trip() {
        let p = Policy::default();
        assert_eq!(Policy::from_json(&p.to_json()).unwrap(), p);
        assert_eq!(Policy::from_toml(&p.to_toml().unwrap()).unwrap(), p);
    }

    #[test]
    fn errors_name_the_field() {
        let e = Policy::from_toml("[thresholds]\nblok = 0.5").unwrap_err();
        assert_eq!(e.code(), crate::ErrorCode::PolicyInvalid);
        assert!(e.message().contains("thresholds") && e.message().contains("blok"), "{e}");
        // TOML says what is wrong too, not only where (same wording as JSON).
        assert!(e.message().contains("unknown field `blok`"), "{e}");
        let e = Policy::from_toml("[thresholds]\nblock = \"high\"").unwrap_err();
        assert!(e.message().starts_with("thresholds.block") && e.message().contains("expected f32"), "{e}");
        let e = Policy::from_json(r#"{"thresholds": {"block": "high"}}"#).unwrap_err();
        assert!(e.message().starts_with("thresholds.block"), "{e}");
        let e = Policy::from_json(r#"{"thresholds": {"block": 1.5}}"#).unwrap_err();
        assert!(e.message().starts_with("thresholds.block"), "{e}");
        // A byte-order mark is accepted in JSON as in TOML.
        let bom = "\u{feff}{\"thresholds\": {\"flag\": 0.4}}";
        assert_eq!(Policy::from_json(bom).unwrap().thresholds.flag, 0.4);
        assert_eq!(Policy::from_toml("\u{feff}[thresholds]\nflag = 0.4").unwrap().thresholds.flag, 0.4);
        // Review finding: 2^63 doubled wrapped to 0 in a release build and passed, then chunking
        // with it hung scans. Values past i64 are only expressible in JSON.
        for v in ["9223372036854775808", "9223372036854775809", "18446744073709551615"] {
            let e = Policy::from_json(&format!(r#"{{"limits": {{"overlap_bytes": {v}}}}}"#)).unwrap_err();
            assert!(e.message().starts_with("limits.overlap_bytes"), "{v}: {e}");
        }
        let e = Policy::from_json(r#"{"redaction": {"entities": ["emial"]}}"#).unwrap_err();
        assert!(e.message().starts_with("redaction.entities"), "{e}");
        let e = Policy::from_json(r#"{"version": 2}"#).unwrap_err();
        assert!(e.message().starts_with("version"), "{e}");
        let e = Policy::from_json(r#"{"key_hex": "zz"}"#).unwrap_err();
        assert!(e.message().starts_with("key_hex"), "{e}");
        let e = Policy::from_json(r#"{} trailing"#).unwrap_err();
        assert_eq!(e.code(), crate::ErrorCode::PolicyInvalid);
    }
}
