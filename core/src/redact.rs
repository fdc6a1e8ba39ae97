//! Output redaction: secrets, credentials, checksum-validated PII, canary tokens and custom deny
//! terms, with tag / mask / keyed-hash / reversible pseudonym strategies, on whole texts and on
//! streams.
//!
//! Invariant (property-tested): the text outside findings is copied byte for byte; only the
//! bytes of each finding's span `start..end` (half-open byte offsets in the input, on char
//! boundaries) are replaced by the finding's `replacement`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, OnceLock};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::keys::hmac_sha256;
use crate::policy::RedactionPolicy;
use crate::validators::{
    digits_of, iban_valid, is_card_number, is_placeholder, is_uuid, looks_like_identifier, shannon_entropy,
    ssn_valid,
};

/// Kinds of sensitive values found in outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entity {
    /// E-mail address (RFC 5321 shape with RFC 6531 internationalised local parts and domains,
    /// dotted domain with a 2–24 letter TLD).
    Email,
    /// Telephone number: E.164-style `+CC …` (8–15 digits), NANP `(555) 010-0199` /
    /// `555-010-0199`, or a 7-digit local `555-0100`.
    Phone,
    /// Payment card number: 13–19 digits, Luhn (ISO/IEC 7812-1) and a known issuer range.
    PaymentCard,
    /// IBAN: length per country (ISO 13616 registry) and ISO 7064 mod-97 check = 1.
    Iban,
    /// US Social Security number `AAA-GG-SSSS` (area not 000/666/900–999, group not 00,
    /// serial not 0000: SSA rules).
    UsSsn,
    /// IPv4 address (dotted quad, each octet 0–255).
    Ipv4,
    /// IPv6 address (parsed by the standard library, RFC 4291 text forms).
    Ipv6,
    /// AWS access key id (`AKIA…`/`ASIA…`, 20 chars).
    AwsAccessKey,
    /// GitHub token: classic `ghp_`/`gho_`/`ghu_`/`ghs_`/`ghr_` or fine-grained `github_pat_`.
    GithubToken,
    /// OpenAI API key: `sk-…`, `sk-proj-…`, `sk-svcacct-…`, `sk-admin-…`.
    OpenaiKey,
    /// Slack token `xox[abposre]-…` or incoming-webhook URL.
    SlackToken,
    /// Stripe secret or restricted key (`sk_live_`, `rk_test_`, …) or webhook secret `whsec_`.
    StripeKey,
    /// Google API key `AIza…` (39 chars).
    GoogleApiKey,
    /// JSON Web Token (three base64url parts, header decoding to JSON with `alg`).
    Jwt,
    /// PEM private key block (`-----BEGIN … PRIVATE KEY-----` … `-----END …`).
    PrivateKey,
    /// Value of a `password=` / `api_key:` / `token =` style assignment that passes the entropy
    /// floor and is not an identifier, expression or placeholder.
    SecretAssignment,
    /// A canary token minted by this firewall (HMAC-verified) or listed in the policy.
    Canary,
    /// A custom deny term from the policy.
    DenyTerm,
}

impl Entity {
    /// Every entity, in declaration order.
    pub const ALL: [Entity; 18] = [
        Entity::Email,
        Entity::Phone,
        Entity::PaymentCard,
        Entity::Iban,
        Entity::UsSsn,
        Entity::Ipv4,
        Entity::Ipv6,
        Entity::AwsAccessKey,
        Entity::GithubToken,
        Entity::OpenaiKey,
        Entity::SlackToken,
        Entity::StripeKey,
        Entity::GoogleApiKey,
        Entity::Jwt,
        Entity::PrivateKey,
        Entity::SecretAssignment,
        Entity::Canary,
        Entity::DenyTerm,
    ];

    /// snake_case name, e.g. `payment_card`.
    pub fn as_str(self) -> &'static str {
        match self {
            Entity::Email => "email",
            Entity::Phone => "phone",
            Entity::PaymentCard => "payment_card",
            Entity::Iban => "iban",
            Entity::UsSsn => "us_ssn",
            Entity::Ipv4 => "ipv4",
            Entity::Ipv6 => "ipv6",
            Entity::AwsAccessKey => "aws_access_key",
            Entity::GithubToken => "github_token",
            Entity::OpenaiKey => "openai_key",
            Entity::SlackToken => "slack_token",
            Entity::StripeKey => "stripe_key",
            Entity::GoogleApiKey => "google_api_key",
            Entity::Jwt => "jwt",
            Entity::PrivateKey => "private_key",
            Entity::SecretAssignment => "secret_assignment",
            Entity::Canary => "canary",
            Entity::DenyTerm => "deny_term",
        }
    }

    /// Upper-case label used in tags, e.g. `PAYMENT_CARD`.
    pub fn label(self) -> String {
        self.as_str().to_ascii_uppercase()
    }

    /// Lower number wins when two findings overlap.
    fn priority(self) -> u8 {
        match self {
            Entity::Canary => 0,
            Entity::PrivateKey => 1,
            Entity::AwsAccessKey
            | Entity::GithubToken
            | Entity::OpenaiKey
            | Entity::SlackToken
            | Entity::StripeKey
            | Entity::GoogleApiKey
            | Entity::Jwt => 2,
            Entity::SecretAssignment => 3,
            Entity::DenyTerm => 4,
            Entity::PaymentCard | Entity::Iban | Entity::UsSsn => 5,
            Entity::Email => 6,
            Entity::Phone | Entity::Ipv4 | Entity::Ipv6 => 7,
        }
    }
}

/// How a finding is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// `[EMAIL_1]`: numbered per entity and distinct value within one output (or stream).
    Tag,
    /// Every char replaced by `*` (line breaks kept).
    Mask,
    /// `[EMAIL:3fa9c2d1e0b7]`: first 48 bits of HMAC-SHA256(key, entity ‖ 0 ‖ value); equal
    /// values give equal hashes under one key, across calls.
    Hash,
    /// `[PSEUDO_EMAIL_3fa9c2d1e0b7]`, remembered in the firewall's vault so that
    /// [`crate::Firewall::restore`] puts the original back.
    #[serde(alias = "pseudonymise")]
    Pseudonymize,
}

/// One redacted value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// What was found.
    pub entity: Entity,
    /// Start byte offset in the input (inclusive).
    pub start: usize,
    /// End byte offset in the input (exclusive).
    pub end: usize,
    /// How it was replaced.
    pub strategy: Strategy,
    /// The text put in its place.
    pub replacement: String,
}

/// Result of redacting one output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputResult {
    /// The redacted text.
    pub text: String,
    /// Findings, ordered by `start`, non-overlapping.
    pub findings: Vec<Finding>,
    /// True when a canary token appeared (the system prompt leaked).
    pub canary_leaked: bool,
    /// Wall time spent, in microseconds.
    pub elapsed_us: u64,
}

type Check = fn(&str, usize, usize) -> bool;

struct Detector {
    entity: Entity,
    re: Regex,
    /// Capture group holding the value (0 = whole match).
    group: usize,
    check: Check,
    gate: Gate,
}

/// A cheap necessary condition checked before a detector's regex runs, so that a text is not
/// scanned once per detector when it cannot hold a match. Each gate is exact: it never hides a
/// match the regex alone would find (`gated_equals_ungated` below checks this on random text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// No gate (the regex starts with a literal, which its own prefilter finds quickly).
    None,
    /// Every match consists only of digits and ` .-()+`: run the regex on each maximal run of
    /// those characters (see [`digit_runs`]) that holds at least this many digits, not on the
    /// whole text. The count is the fewest digits a match needs to pass its check (card 13,
    /// SSN 9, phone 7, IPv4 4).
    DigitRuns(usize),
    /// A match holds one of the assignment keywords (see [`keyword_gate`]).
    Keywords,
    /// A match holds two `:` separated by at most four hex digits.
    HexColons,
    /// A match starts with two ASCII capitals followed by a digit.
    CapsDigit,
}

/// Maximal runs (byte ranges) of digits (`char::is_numeric`: Nd, Nl, No, a superset of the
/// regexes' `\d`) and ` .-()+` that contain at least one digit, as (start, end, digits).
/// Every match of a
/// [`Gate::DigitRuns`] regex lies inside one of them.
/// Per ASCII byte: 2 = digit, 1 = run separator (` .-()+`), 0 = ends a run.
const ASCII_RUN_CLASS: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut c = b'0';
    while c <= b'9' {
        t[c as usize] = 2;
        c += 1;
    }
    t[b' ' as usize] = 1;
    t[b'.' as usize] = 1;
    t[b'-' as usize] = 1;
    t[b'(' as usize] = 1;
    t[b')' as usize] = 1;
    t[b'+' as usize] = 1;
    t
};

fn digit_runs(text: &str) -> Vec<(usize, usize, usize)> {
    let b = text.as_bytes();
    let mut runs = Vec::new();
    let mut start = None;
    let mut digits = 0;
    let mut i = 0;
    while i < b.len() {
        // ASCII bytes are classified directly; other characters are decoded.
        let (len, in_run, digit) = if b[i] < 0x80 {
            let class = ASCII_RUN_CLASS[b[i] as usize];
            (1, class != 0, class == 2)
        } else {
            let c = text[i..].chars().next().unwrap_or('\u{FFFD}');
            (c.len_utf8(), c.is_numeric(), c.is_numeric())
        };
        if in_run {
            if start.is_none() {
                start = Some(i);
                digits = 0;
            }
            digits += usize::from(digit);
        } else if let Some(s) = start.take() {
            if digits > 0 {
                runs.push((s, i, digits));
            }
        }
        i += len;
    }
    if let Some(s) = start.filter(|_| digits > 0) {
        runs.push((s, text.len(), digits));
    }
    runs
}

/// Literals one of which every secret-assignment key contains (ASCII case-insensitive), plus
/// the two non-ASCII characters that Unicode simple case folding equates with ASCII letters
/// (U+017F LONG S ~ `s`, U+212A KELVIN SIGN ~ `k`), which the regex's `(?i)` also accepts.
fn keyword_gate() -> &'static AhoCorasick {
    static G: OnceLock<AhoCorasick> = OnceLock::new();
    G.get_or_init(|| {
        AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .build(["pass", "pwd", "secret", "key", "token", "bearer", "credential", "conn", "\u{17F}", "\u{212A}"])
            .unwrap_or_else(|_| AhoCorasick::new(["\u{0}"]).expect("one literal"))
    })
}

fn hex_colons(text: &str) -> bool {
    let b = text.as_bytes();
    let mut from = 0;
    while let Some(i) = b[from..].iter().position(|&x| x == b':').map(|i| from + i) {
        let mut j = i + 1;
        while j < b.len() && j - i <= 5 && b[j].is_ascii_hexdigit() {
            j += 1;
        }
        if j < b.len() && b[j] == b':' && j - i <= 5 {
            return true;
        }
        from = i + 1;
    }
    false
}

fn caps_digit(text: &str) -> bool {
    text.as_bytes()
        .windows(3)
        .any(|w| w[0].is_ascii_uppercase() && w[1].is_ascii_uppercase() && (w[2].is_ascii_digit() || w[2] >= 0x80))
}

fn re(p: &str) -> Regex {
    // All patterns are static and tested; a failure here is a programming error caught by tests,
    // but we still avoid a panic by compiling an always-failing regex instead.
    Regex::new(p).unwrap_or_else(|_| Regex::new(r"[^\s\S]").expect("trivial regex"))
}

fn before(text: &str, s: usize) -> Option<char> {
    text[..s].chars().next_back()
}
fn after(text: &str, e: usize) -> Option<char> {
    text[e..].chars().next()
}
fn tokenish(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn check_token(t: &str, s: usize, e: usize) -> bool {
    !tokenish(before(t, s)) && !tokenish(after(t, e))
}
fn check_openai(t: &str, s: usize, e: usize) -> bool {
    let v = &t[s..e];
    let body = v.trim_start_matches("sk-");
    check_token(t, s, e) && body.len() >= 32 && body.bytes().any(|b| b.is_ascii_digit()) && body.bytes().any(|b| b.is_ascii_alphabetic())
}
fn check_jwt(t: &str, s: usize, e: usize) -> bool {
    use base64::Engine;
    if !check_token(t, s, e) {
        return false;
    }
    let head = t[s..e].split('.').next().unwrap_or("");
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head.trim_end_matches('='))
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .is_some_and(|h| h.contains("\"alg\"") || h.contains("\"typ\""))
}
fn check_any(_: &str, _: usize, _: usize) -> bool {
    true
}
fn digit_bounds(t: &str, s: usize, e: usize) -> bool {
    let b = before(t, s);
    let a = after(t, e);
    let bad_before = b.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '+' || c == '_' || c == '/');
    let bad_after = a.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        || (matches!(a, Some('-') | Some('.') | Some('/')) && t[e + 1..].chars().next().is_some_and(|c| c.is_ascii_digit()));
    !bad_before && !bad_after
}
fn check_card(t: &str, s: usize, e: usize) -> bool {
    let v = &t[s..e];
    let seps: Vec<char> = v.chars().filter(|c| !c.is_ascii_digit()).collect();
    let consistent = seps.windows(2).all(|w| w[0] == w[1]);
    consistent && digit_bounds(t, s, e) && is_card_number(&digits_of(v))
}
fn check_ssn(t: &str, s: usize, e: usize) -> bool {
    digit_bounds(t, s, e) && ssn_valid(&t[s..e])
}
fn check_iban(t: &str, s: usize, e: usize) -> bool {
    check_token(t, s, e) && iban_valid(&t[s..e])
}
fn check_phone(t: &str, s: usize, e: usize) -> bool {
    let n = digits_of(&t[s..e]).len();
    (7..=15).contains(&n) && digit_bounds(t, s, e)
}
fn check_ipv4(t: &str, s: usize, e: usize) -> bool {
    digit_bounds(t, s, e) && t[s..e].parse::<std::net::Ipv4Addr>().is_ok()
}
fn check_ipv6(t: &str, s: usize, e: usize) -> bool {
    let v = &t[s..e];
    v.matches(':').count() >= 2
        && v.bytes().filter(|b| b.is_ascii_hexdigit()).count() >= 3
        && !tokenish(before(t, s))
        && !after(t, e).is_some_and(|c| c.is_ascii_alphanumeric() || c == ':')
        && !before(t, s).is_some_and(|c| c == ':')
        && v.parse::<std::net::Ipv6Addr>().is_ok()
}
/// E-mail candidates, found from each `@` (memchr) by expanding over local-part characters
/// (letters and digits of any script, `._%+-`, at most 64) and domain characters (letters,
/// digits, `-`, `.`, at most 253), then checked: local part starts and ends with a letter or
/// digit and has no `..`; domain has 2+ labels of 1–63 chars not starting or ending with `-`;
/// top-level label 2–24 letters. Far faster than a regex whose first character class is all of
/// Unicode's letters (the lazy DFA cannot skip ahead with it).
fn find_emails(t: &str, out: &mut Vec<(usize, usize)>) {
    let local_char = |c: char| c.is_alphanumeric() || matches!(c, '.' | '_' | '%' | '+' | '-');
    let domain_char = |c: char| c.is_alphanumeric() || c == '-' || c == '.';
    let mut last_end = 0;
    for (at, _) in t.match_indices('@') {
        if at < last_end {
            continue;
        }
        let mut s = at;
        let mut n = 0;
        for (i, c) in t[..at].char_indices().rev() {
            if !local_char(c) || n == 64 {
                break;
            }
            s = i;
            n += 1;
        }
        // The local part must start with a letter or digit.
        while s < at && !t[s..].starts_with(|c: char| c.is_alphanumeric()) {
            s += t[s..].chars().next().map_or(1, char::len_utf8);
        }
        let mut e = at + 1;
        for (i, c) in t[at + 1..].char_indices() {
            if !domain_char(c) || i >= 253 {
                break;
            }
            e = at + 1 + i + c.len_utf8();
        }
        while e > at + 1 && t[..e].ends_with(['.', '-']) {
            e -= 1;
        }
        if s >= at || e <= at + 1 {
            continue;
        }
        let local = &t[s..at];
        let domain = &t[at + 1..e];
        let labels: Vec<&str> = domain.split('.').collect();
        let tld = labels.last().copied().unwrap_or("");
        let ok = !local.ends_with('.')
            && !local.contains("..")
            && labels.len() >= 2
            && labels.iter().all(|l| !l.is_empty() && l.chars().count() <= 63 && !l.starts_with('-') && !l.ends_with('-'))
            && (2..=24).contains(&tld.chars().count())
            && tld.chars().all(char::is_alphabetic);
        if ok {
            out.push((s, e));
            last_end = e;
        }
    }
}

fn detectors() -> &'static [Detector] {
    static D: OnceLock<Vec<Detector>> = OnceLock::new();
    D.get_or_init(|| {
        let d = |entity, p: &str, group, check: Check| Detector { entity, re: re(p), group, check, gate: Gate::None };
        let g = |gate: Gate, d: Detector| Detector { gate, ..d };
        vec![
            d(
                Entity::PrivateKey,
                r"(?s)-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----.*?-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----",
                0,
                check_any,
            ),
            d(Entity::AwsAccessKey, r"(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)[A-Z0-9]{16}", 0, check_token),
            d(Entity::GithubToken, r"github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59}|gh[pousr]_[A-Za-z0-9]{36,251}", 0, check_token),
            d(Entity::OpenaiKey, r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,200}", 0, check_openai),
            d(
                Entity::SlackToken,
                r"xox[abposre]-[A-Za-z0-9\-]{10,250}|https://hooks\.slack\.com/services/T[A-Z0-9]{6,12}/B[A-Z0-9]{6,12}/[A-Za-z0-9]{16,32}",
                0,
                check_token,
            ),
            d(Entity::StripeKey, r"(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,247}|whsec_[A-Za-z0-9]{24,64}", 0, check_token),
            d(Entity::GoogleApiKey, r"AIza[0-9A-Za-z_\-]{35}", 0, check_token),
            d(Entity::Jwt, r"eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}", 0, check_jwt),
            g(Gate::Keywords, d(
                Entity::SecretAssignment,
                r#"(?i)([A-Za-z0-9_.\-]{0,40}(?:password|passwd|passphrase|pwd|secret|api[_\-]?key|apikey|access[_\-]?key|private[_\-]?key|auth[_\-]?token|access[_\-]?token|refresh[_\-]?token|bearer|token|credentials?|client[_\-]?secret|conn(?:ection)?[_\-]?string)[A-Za-z0-9_]{0,40})["']?[ \t]{0,8}(?::=|=>|=|:)[ \t]{0,8}["'`]?([^\s"'`,;<>(){}\[\]]{6,256})"#,
                2,
                check_any,
            )),
            g(Gate::DigitRuns(13), d(Entity::PaymentCard, r"\d(?:[ \-]?\d){12,18}", 0, check_card)),
            g(Gate::CapsDigit, d(Entity::Iban, r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?", 0, check_iban)),
            g(Gate::DigitRuns(9), d(Entity::UsSsn, r"\d{3}-\d{2}-\d{4}", 0, check_ssn)),
            g(Gate::DigitRuns(7), d(
                Entity::Phone,
                r"\+\d{1,3}(?:[ .\-]?\(?\d{1,4}\)?){2,5}|\(\d{3}\) ?\d{3}[ .\-]\d{4}|\d{3}([.\- ])\d{3}[.\- ]\d{4}|\d{3}-\d{4}",
                0,
                check_phone,
            )),
            g(Gate::DigitRuns(4), d(Entity::Ipv4, r"(?:\d{1,3}\.){3}\d{1,3}", 0, check_ipv4)),
            g(Gate::HexColons, d(Entity::Ipv6, r"(?i)(?:[0-9a-f]{0,4}:){2,7}[0-9a-f]{0,4}(?:(?:\d{1,3}\.){3}\d{1,3})?", 0, check_ipv6)),
        ]
    })
}

/// Keys of assignments whose values are identifiers, sizes or settings rather than credentials.
fn benign_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    const SUFFIXES: [&str; 24] = [
        "id", "ids", "name", "names", "type", "url", "uri", "path", "file", "length", "len", "count", "size",
        "lifetime", "expiry", "expires", "ttl", "timeout", "header", "field", "prefix", "format", "policy", "hint",
    ];
    SUFFIXES.iter().any(|s| k.ends_with(s) && !k.ends_with("secret") && k.len() > s.len())
        || k.ends_with("_id")
        || k.contains("tokenizer")
        || k.contains("tokens_")
        || k.starts_with("max_")
        || k.starts_with("num_")
}

/// Compiled size limit of the deny-term regex (non-ASCII terms), in bytes: room for tens of
/// thousands of terms; beyond it the policy is refused (`policy_invalid`) rather than slow.
const DENY_REGEX_SIZE_LIMIT: usize = 64 << 20;

/// A compiled redactor (the engine's output side). Immutable and `Send + Sync`.
#[derive(Debug)]
pub(crate) struct Redactor {
    enabled: [bool; Entity::ALL.len()],
    strategies: [Strategy; Entity::ALL.len()],
    /// Deny terms written in ASCII: ASCII-case-insensitive automaton.
    deny: Option<AhoCorasick>,
    /// Deny terms with other characters: Unicode case-insensitive (`(?i)`) alternation, longest
    /// first, so "пРоЕкТ" matches "проект" as "PrOjEcT" matches "project".
    deny_unicode: Option<Regex>,
    canary_re: Option<Regex>,
    canary_fixed: Option<AhoCorasick>,
    min_entropy: f32,
    allow_keys: Vec<String>,
    allow_values: std::collections::HashSet<String>,
    hash_key: [u8; 32],
    canary_key: [u8; 32],
    pub(crate) holdback: usize,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Detector({})", self.entity.as_str())
    }
}

fn idx(e: Entity) -> usize {
    Entity::ALL.iter().position(|x| *x == e).unwrap_or(0)
}

/// Raw candidate before overlap resolution.
#[derive(Debug, Clone, Copy)]
struct Cand {
    entity: Entity,
    start: usize,
    end: usize,
}

impl Redactor {
    pub fn new(p: &RedactionPolicy, canary_prefix: &str, canary_tokens: &[String], hash_key: [u8; 32], canary_key: [u8; 32]) -> Result<Self> {
        let mut enabled = [false; Entity::ALL.len()];
        for e in &p.entities {
            enabled[idx(*e)] = true;
        }
        let mut strategies = [p.default_strategy; Entity::ALL.len()];
        for (e, s) in &p.strategies {
            strategies[idx(*e)] = *s;
        }
        let (ascii_terms, other_terms): (Vec<&String>, Vec<&String>) = p.deny_terms.iter().partition(|t| t.is_ascii());
        let deny = if ascii_terms.is_empty() {
            None
        } else {
            Some(
                AhoCorasickBuilder::new()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&ascii_terms)
                    .map_err(|e| Error::policy(format!("redaction.deny_terms: {e}")))?,
            )
        };
        let deny_unicode = if other_terms.is_empty() {
            None
        } else {
            let mut terms = other_terms;
            terms.sort_by_key(|t| std::cmp::Reverse(t.len()));
            let alternation = terms.iter().map(|t| regex::escape(t)).collect::<Vec<_>>().join("|");
            Some(
                regex::RegexBuilder::new(&format!("(?i:{alternation})"))
                    .size_limit(DENY_REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| Error::policy(format!("redaction.deny_terms: {e}")))?,
            )
        };
        let canary_re = Some(
            Regex::new(&format!(r"{}[0-9a-f]{{32}}", regex::escape(canary_prefix)))
                .map_err(|e| Error::policy(format!("canary.prefix: {e}")))?,
        );
        let canary_fixed = if canary_tokens.is_empty() {
            None
        } else {
            Some(AhoCorasick::new(canary_tokens).map_err(|e| Error::policy(format!("canary.tokens: {e}")))?)
        };
        Ok(Redactor {
            enabled,
            strategies,
            deny,
            deny_unicode,
            canary_re,
            canary_fixed,
            min_entropy: p.secret_min_entropy,
            allow_keys: p.allow_keys.iter().map(|k| k.to_ascii_lowercase()).collect(),
            allow_values: p.allow_values.iter().cloned().collect(),
            hash_key,
            canary_key,
            holdback: p.stream_holdback_bytes,
        })
    }

    fn on(&self, e: Entity) -> bool {
        self.enabled[idx(e)]
    }

    /// Verifies a minted canary `prefix + 16 hex nonce + 16 hex tag`.
    pub fn canary_valid(&self, token: &str) -> bool {
        let n = token.len();
        if n < 32 {
            return false;
        }
        let (nonce, tag) = (&token[n - 32..n - 16], &token[n - 16..]);
        let mac = hmac_sha256(&self.canary_key, nonce.as_bytes());
        hex::encode(&mac[..8]) == tag
    }

    /// Mints a canary: `prefix + hex(nonce 8 bytes) + hex(HMAC(canary key, nonce hex)[..8])`.
    pub fn mint_canary(&self, prefix: &str) -> String {
        let nonce = hex::encode(crate::keys::random_bytes::<8>());
        let mac = hmac_sha256(&self.canary_key, nonce.as_bytes());
        format!("{prefix}{nonce}{}", hex::encode(&mac[..8]))
    }

    fn assignment_ok(&self, text: &str, caps: &regex::Captures<'_>) -> bool {
        let (Some(key), Some(val)) = (caps.get(1), caps.get(2)) else { return false };
        let key_s = key.as_str();
        let v = val.as_str().trim_end_matches(['.', '!', '?', ':']);
        if v.len() < 8 || benign_key(key_s) || self.allow_keys.iter().any(|k| k == &key_s.to_ascii_lowercase()) {
            return false;
        }
        if self.allow_values.contains(v) || is_placeholder(v) || looks_like_identifier(v) {
            return false;
        }
        // A key glued to a preceding word char is part of a longer identifier.
        if tokenish(before(text, key.start())) {
            return false;
        }
        if is_uuid(v) {
            return true;
        }
        let classes = [
            v.bytes().any(|b| b.is_ascii_lowercase()),
            v.bytes().any(|b| b.is_ascii_uppercase()),
            v.bytes().any(|b| b.is_ascii_digit()),
            v.bytes().any(|b| !b.is_ascii_alphanumeric()),
        ];
        let n_classes = classes.iter().filter(|x| **x).count();
        let has_non_letter = classes[2] || classes[3];
        n_classes >= 2 && has_non_letter && shannon_entropy(v) >= self.min_entropy
    }

    fn candidates(&self, text: &str) -> Vec<Cand> {
        self.candidates_gated(text, true, None)
    }

    /// `gated = false` runs every regex over the whole text (tests compare both). `raw`, when
    /// given, receives the span of every detector match before its check, accepted or not (the
    /// stream redactor never cuts through one).
    fn candidates_gated(&self, text: &str, gated: bool, mut raw: Option<&mut Vec<(usize, usize)>>) -> Vec<Cand> {
        let mut out = Vec::new();
        let whole = [(0, text.len(), usize::MAX)];
        let mut runs: Option<Vec<(usize, usize, usize)>> = None;
        for d in detectors() {
            if !self.on(d.entity) {
                continue;
            }
            let gate = if gated { d.gate } else { Gate::None };
            let open = match gate {
                Gate::None | Gate::DigitRuns(_) => true,
                Gate::Keywords => keyword_gate().is_match(text),
                Gate::HexColons => hex_colons(text),
                Gate::CapsDigit => caps_digit(text),
            };
            if !open {
                continue;
            }
            let (ranges, min_digits): (&[(usize, usize, usize)], usize) = match gate {
                Gate::DigitRuns(n) => (runs.get_or_insert_with(|| digit_runs(text)), n),
                _ => (&whole, 0),
            };
            if d.group == 0 {
                let spans = ranges
                    .iter()
                    .filter(|r| r.2 >= min_digits)
                    .flat_map(|&(a, b, _)| d.re.find_iter(&text[a..b]).map(move |m| (a + m.start(), a + m.end())));
                for m in spans {
                    let (s, e) = m;
                    if let Some(r) = raw.as_deref_mut() {
                        r.push((s, e));
                    }
                    if d.entity == Entity::PaymentCard {
                        if let Some(e2) = card_prefix(text, s, e) {
                            out.push(Cand { entity: d.entity, start: s, end: e2 });
                        }
                        continue;
                    }
                    if (d.check)(text, s, e) && !self.allow_values.contains(&text[s..e]) {
                        out.push(Cand { entity: d.entity, start: s, end: e });
                    }
                }
            } else {
                // After a rejected assignment, search again from the start of its value rather
                // than from its end: the value class admits `=` and `:`, so a long rejected value
                // can contain a real `key=value` pair (`a=<identifier>password=<secret>`), which
                // a plain `captures_iter` would skip, and which a stream cut inside the rejected
                // value would find (field report: streaming output differed from whole output).
                let mut at = 0;
                while at < text.len() {
                    let Some(caps) = d.re.captures_at(text, at) else { break };
                    let (Some(m), Some(v)) = (caps.get(0), caps.get(d.group)) else { break };
                    if let Some(r) = raw.as_deref_mut() {
                        r.push((m.start(), m.end()));
                    }
                    if self.assignment_ok(text, &caps) {
                        let vs = v.as_str().trim_end_matches(['.', '!', '?', ':']);
                        out.push(Cand { entity: d.entity, start: v.start(), end: v.start() + vs.len() });
                        at = m.end().max(at + 1);
                    } else {
                        at = v.start().max(at + 1);
                    }
                    while at < text.len() && !text.is_char_boundary(at) {
                        at += 1;
                    }
                }
            }
        }
        if self.on(Entity::Email) {
            let mut spans = Vec::new();
            find_emails(text, &mut spans);
            for (s, e) in spans {
                if !self.allow_values.contains(&text[s..e]) {
                    out.push(Cand { entity: Entity::Email, start: s, end: e });
                }
            }
        }
        if self.on(Entity::Canary) {
            if let Some(re) = &self.canary_re {
                for m in re.find_iter(text) {
                    if self.canary_valid(m.as_str()) {
                        out.push(Cand { entity: Entity::Canary, start: m.start(), end: m.end() });
                    }
                }
            }
            if let Some(ac) = &self.canary_fixed {
                for m in ac.find_iter(text) {
                    out.push(Cand { entity: Entity::Canary, start: m.start(), end: m.end() });
                }
            }
        }
        if self.on(Entity::DenyTerm) {
            let ascii = self.deny.iter().flat_map(|ac| ac.find_iter(text).map(|m| (m.start(), m.end())));
            let other = self.deny_unicode.iter().flat_map(|re| re.find_iter(text).map(|m| (m.start(), m.end())));
            for (start, end) in ascii.chain(other) {
                if let Some(r) = raw.as_deref_mut() {
                    r.push((start, end));
                }
                let wb = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric());
                let first_w = text[start..].chars().next().is_some_and(|c| c.is_alphanumeric());
                let last_w = text[..end].chars().next_back().is_some_and(|c| c.is_alphanumeric());
                if (first_w && wb(before(text, start))) || (last_w && wb(after(text, end))) {
                    continue;
                }
                out.push(Cand { entity: Entity::DenyTerm, start, end });
            }
        }
        resolve_overlaps(out)
    }

    /// Redacts `text`. `state` carries tag numbering (so a stream numbers consistently) and the
    /// vault for pseudonyms. `base` is added to reported offsets.
    pub(crate) fn redact_into(
        &self,
        text: &str,
        base: usize,
        state: &mut TagState,
        vault: &Vault,
        out: &mut String,
        findings: &mut Vec<Finding>,
    ) -> bool {
        let cands = self.candidates(text);
        let mut leaked = false;
        let mut pos = 0;
        for c in cands {
            out.push_str(&text[pos..c.start]);
            let value = &text[c.start..c.end];
            let strategy = self.strategies[idx(c.entity)];
            let replacement = self.replacement(c.entity, strategy, value, state, vault);
            out.push_str(&replacement);
            leaked |= c.entity == Entity::Canary;
            findings.push(Finding { entity: c.entity, start: base + c.start, end: base + c.end, strategy, replacement });
            pos = c.end;
        }
        out.push_str(&text[pos..]);
        leaked
    }

    fn replacement(&self, entity: Entity, strategy: Strategy, value: &str, state: &mut TagState, vault: &Vault) -> String {
        match strategy {
            Strategy::Tag => {
                let n = state.number(entity, value);
                format!("[{}_{n}]", entity.label())
            }
            Strategy::Mask => value.chars().map(|c| if c == '\n' || c == '\r' { c } else { '*' }).collect(),
            Strategy::Hash => format!("[{}:{}]", entity.label(), self.keyed_id(entity, value)),
            Strategy::Pseudonymize => {
                let token = format!("[PSEUDO_{}_{}]", entity.label(), self.keyed_id(entity, value));
                vault.insert(&token, value);
                token
            }
        }
    }

    fn keyed_id(&self, entity: Entity, value: &str) -> String {
        let mut msg = Vec::with_capacity(value.len() + 24);
        msg.extend_from_slice(entity.as_str().as_bytes());
        msg.push(0);
        msg.extend_from_slice(value.as_bytes());
        hex::encode(&hmac_sha256(&self.hash_key, &msg)[..6])
    }
}

/// Longest prefix of a digit run (ending at a digit-group border, 13+ digits) that is a valid
/// card number; returns its end.
fn card_prefix(text: &str, s: usize, e: usize) -> Option<usize> {
    if check_card(text, s, e) {
        return Some(e);
    }
    let v = &text[s..e];
    // Try cutting at separators, longest first.
    let cuts: Vec<usize> = v.char_indices().filter(|(_, c)| !c.is_ascii_digit()).map(|(i, _)| s + i).collect();
    for &cut in cuts.iter().rev() {
        if digits_of(&text[s..cut]).len() >= 13 && check_card(text, s, cut) {
            return Some(cut);
        }
    }
    None
}

/// Keeps non-overlapping candidates, preferring lower priority number, then longer spans.
fn resolve_overlaps(mut c: Vec<Cand>) -> Vec<Cand> {
    c.sort_by_key(|x| (x.entity.priority(), std::cmp::Reverse(x.end - x.start), x.start));
    let mut taken: BTreeMap<usize, Cand> = BTreeMap::new();
    for x in c {
        let overlaps_prev = taken.range(..x.end).next_back().is_some_and(|(_, p)| p.end > x.start);
        if !overlaps_prev {
            taken.insert(x.start, x);
        }
    }
    taken.into_values().collect()
}

/// Tag numbering state: the same (entity, value) gets the same number within one output or one
/// stream.
#[derive(Debug, Default, Clone)]
pub(crate) struct TagState {
    seen: HashMap<(Entity, String), usize>,
    next: HashMap<Entity, usize>,
}

impl TagState {
    fn number(&mut self, e: Entity, v: &str) -> usize {
        if let Some(n) = self.seen.get(&(e, v.to_string())) {
            return *n;
        }
        let n = self.next.entry(e).or_insert(0);
        *n += 1;
        let n = *n;
        self.seen.insert((e, v.to_string()), n);
        n
    }
}

/// A bounded, thread-safe map from pseudonym tokens to original values.
///
/// Holds at most `max_entries`; the oldest entries are dropped first. Values stay in process
/// memory only.
#[derive(Debug)]
pub struct Vault {
    inner: Mutex<VaultInner>,
}

#[derive(Debug, Default)]
struct VaultInner {
    map: HashMap<String, String>,
    order: VecDeque<String>,
    cap: usize,
}

impl Vault {
    /// An empty vault holding at most `max_entries` (at least 1).
    pub fn new(max_entries: usize) -> Self {
        Vault { inner: Mutex::new(VaultInner { cap: max_entries.max(1), ..Default::default() }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VaultInner> {
        // A poisoned lock only means another thread panicked while holding it; the map is
        // still consistent (each operation is a single insert/remove), so keep using it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn insert(&self, token: &str, value: &str) {
        let mut g = self.lock();
        if g.map.contains_key(token) {
            return;
        }
        if g.map.len() >= g.cap {
            if let Some(old) = g.order.pop_front() {
                g.map.remove(&old);
            }
        }
        g.map.insert(token.to_string(), value.to_string());
        g.order.push_back(token.to_string());
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replaces every pseudonym token known to this vault by its original value; unknown tokens
    /// and all other text are left unchanged.
    pub fn restore(&self, text: &str) -> String {
        static TOKEN: OnceLock<Regex> = OnceLock::new();
        let re = TOKEN.get_or_init(|| re(r"\[PSEUDO_[A-Z0-9_]+_[0-9a-f]{12}\]"));
        let g = self.lock();
        re.replace_all(text, |c: &regex::Captures<'_>| {
            let t = &c[0];
            g.map.get(t).cloned().unwrap_or_else(|| t.to_string())
        })
        .into_owned()
    }
}

/// Joins a byte stream into UTF-8 text: a character split across chunks is held until its last
/// byte arrives. Used by the bindings for streamed `bytes`/`Buffer` chunks.
#[derive(Debug, Default, Clone)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Adds bytes; returns the text completed so far. Errors (`input_invalid`) on bytes that can
    /// never be UTF-8 (the incomplete tail of a character is not an error).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<String> {
        self.pending.extend_from_slice(bytes);
        match std::str::from_utf8(&self.pending) {
            Ok(s) => {
                let out = s.to_string();
                self.pending.clear();
                Ok(out)
            }
            Err(e) if e.error_len().is_none() => {
                let n = e.valid_up_to();
                let out = String::from_utf8_lossy(&self.pending[..n]).into_owned();
                self.pending.drain(..n);
                Ok(out)
            }
            Err(e) => {
                let at = e.valid_up_to();
                self.pending.clear();
                Err(Error::new(crate::ErrorCode::InputInvalid, format!("stream is not valid UTF-8 (at byte {at} of the chunk)")))
            }
        }
    }

    /// Bytes of an unfinished character held back.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Ends the stream: errors if a character is left unfinished.
    pub fn finish(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            Ok(())
        } else {
            self.pending.clear();
            Err(Error::new(crate::ErrorCode::InputInvalid, "stream ended inside a UTF-8 character"))
        }
    }
}

/// Incremental redaction of a streamed output.
///
/// Feed chunks with [`StreamRedactor::push`]; each call returns the redacted text that is safe to
/// send now. A value split across chunks is never let through: the redactor holds back the
/// unfinished tail of the current line (at most `redaction.stream_holdback_bytes`), a run of
/// token characters still in progress (up to 16 KiB, for long tokens such as JWTs) and any
/// `-----BEGIN … PRIVATE KEY-----` block until its END line (up to 64 KiB, after which the
/// partial block is redacted). It emits only up to the start of a whitespace-delimited token that
/// no detector match (accepted or rejected) spans, so the output equals redacting the whole
/// stream at once (property-tested), except inside single tokens, or chains of overlapping
/// detector matches, longer than 16 KiB: the cut then moves back at most 16 KiB.
/// Call [`StreamRedactor::finish`] at the end of the stream.
/// Findings carry offsets in the whole stream.
#[derive(Debug)]
pub struct StreamRedactor {
    fw: crate::Firewall,
    buf: String,
    /// Stream offset of `buf[0]`.
    base: usize,
    state: TagState,
    findings: Vec<Finding>,
    canary_leaked: bool,
}

/// Most bytes of a token-character run held back while it may still grow.
const MAX_TOKEN_HOLD: usize = 16 << 10;
/// Most bytes of an unterminated private-key block held back.
const MAX_PEM_HOLD: usize = 64 << 10;

impl StreamRedactor {
    pub(crate) fn new(fw: crate::Firewall) -> Self {
        StreamRedactor { fw, buf: String::new(), base: 0, state: TagState::default(), findings: Vec::new(), canary_leaked: false }
    }

    /// Adds a chunk and returns the redacted text that can be sent now (possibly empty).
    pub fn push(&mut self, chunk: &str) -> String {
        self.buf.push_str(chunk);
        let cut = self.safe_cut();
        self.emit(cut)
    }

    /// Ends the stream: returns the rest, redacted.
    pub fn finish(&mut self) -> String {
        let n = self.buf.len();
        self.emit(n)
    }

    /// Findings so far (offsets in the whole stream).
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// True once a canary token was seen.
    pub fn canary_leaked(&self) -> bool {
        self.canary_leaked
    }

    /// Bytes currently held back.
    pub fn pending_bytes(&self) -> usize {
        self.buf.len()
    }

    fn safe_cut(&self) -> usize {
        let b = &self.buf;
        let n = b.len();
        let hold = self.fw.redactor().holdback;
        // Hold back the current (unfinished) line, at most `hold` bytes ...
        let line_start = b.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let mut cut = line_start.max(n.saturating_sub(hold));
        // ... and a run of token characters that is still growing.
        let tok_start = b
            .char_indices()
            .rev()
            .take_while(|(_, c)| !c.is_whitespace())
            .last()
            .map(|(i, _)| i)
            .unwrap_or(n);
        if n - tok_start <= MAX_TOKEN_HOLD {
            cut = cut.min(tok_start);
        }
        // ... and an unterminated private-key block.
        if let Some(pb) = b.rfind("-----BEGIN ") {
            if !b[pb..].contains("-----END ") && n - pb <= MAX_PEM_HOLD {
                cut = cut.min(pb);
            }
        }
        while !b.is_char_boundary(cut) {
            cut -= 1;
        }
        // The prefix before the cut must redact exactly as it would inside the whole stream, so
        // the cut moves back until it (a) sits at the start of a whitespace-delimited token, so
        // both sides see the same neighbours for the detectors' boundary checks, and (b) crosses
        // no detector match, accepted or rejected (a finding must not be split, and a rejected
        // match must not be cut into an accepted one). Each step only moves the cut back.
        // The cut never moves back more than MAX_TOKEN_HOLD bytes this way, so what is held
        // back stays bounded even when matches chain across tokens (then a long run of them may
        // be split, like a single token over 16 KiB).
        let mut floor = cut.saturating_sub(MAX_TOKEN_HOLD);
        while !b.is_char_boundary(floor) {
            floor -= 1;
        }
        let mut raw = Vec::new();
        self.fw.redactor().candidates_gated(b, true, Some(&mut raw));
        raw.retain(|&(s, e)| e > floor && s < cut);
        loop {
            let before = cut;
            let mut t = cut;
            while t > floor {
                match b[..t].chars().next_back() {
                    Some(c) if !c.is_whitespace() => t -= c.len_utf8(),
                    _ => break,
                }
            }
            if t > floor || t == 0 || b[..t].ends_with(char::is_whitespace) {
                cut = t;
            }
            for &(s, e) in &raw {
                if s < cut && e > cut {
                    cut = s.max(floor);
                }
            }
            if cut == before || cut == floor {
                return cut;
            }
        }
    }

    fn emit(&mut self, cut: usize) -> String {
        let head: String = self.buf[..cut].to_string();
        let mut out = String::with_capacity(head.len());
        let mut fnd = Vec::new();
        let leaked =
            self.fw.redactor().redact_into(&head, self.base, &mut self.state, self.fw.vault(), &mut out, &mut fnd);
        self.canary_leaked |= leaked;
        self.findings.extend(fnd);
        self.buf.drain(..cut);
        self.base += cut;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn red() -> Redactor {
        Redactor::new(&RedactionPolicy::default(), "vlmc-", &[], [1; 32], [2; 32]).unwrap()
    }

    fn ents(t: &str) -> Vec<(Entity, String)> {
        red().candidates(t).into_iter().map(|c| (c.entity, t[c.start..c.end].to_string())).collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]
        /// The gates only skip work: findings are identical to running every regex on the
        /// whole text, on text dense in digits, separators, keys, colons and case-fold look-alikes.
        #[test]
        fn gated_equals_ungated(parts in proptest::collection::vec(proptest::sample::select(vec![
            "0", "1", "4", "7", "9", "\u{663}", "\u{FF14}", "\u{2167}", " ", "-", ".", "(", ")", "+", ":", "::", "=", "\"", "'",
            "\n", "\t", "a", "f", "F", "Z", "x", "é", "GB", "DE89", "GB82 WEST 1234 5698 7654 32", "4111 1111 1111 1111",
            "4111-1111-1111-1111", "123-45-6789", "555-0100", "+44 20 7946 0958", "(415) 555-0132", "10.0.0.1",
            "fe80::1", "2001:db8::ff00:42:8329", "password", "API_KEY", "\u{17F}ecret", "\u{212A}ey", "Token",
            "pwd", "conn_string", "S3cr3t!x9Q#", "wJalrXUtnFEMI/K7MDENG", "bob@example.com", "AKIAIOSFODNN7EXAMPLE",
        ]), 0..40)) {
            let text: String = parts.concat();
            let r = red();
            let key = |c: Vec<Cand>| c.into_iter().map(|c| (c.entity, c.start, c.end)).collect::<Vec<_>>();
            proptest::prop_assert_eq!(key(r.candidates_gated(&text, true, None)), key(r.candidates_gated(&text, false, None)), "{:?}", text);
        }
    }

    #[test]
    fn assignment_inside_rejected_value_is_found() {
        // The first match's value runs to the space and is rejected (a long identifier-like
        // run); the real assignment inside it must still be found, as it is when a stream cut
        // falls between the two.
        let t = "password=Tr0ub4dor&3xaAAghp_aB3dE5gH7jK9mN2pQ4sT6vW8yZ0aB3dE5gH7j?dana@example.orgpassword=Tr0ub4dor&3xGB82 WEST";
        let found = ents(t);
        assert!(found.contains(&(Entity::SecretAssignment, "Tr0ub4dor&3xGB82".to_string())), "{found:?}");
    }

    #[test]
    fn gates() {
        assert_eq!(digit_runs("call 555-0100 now (or +1 2)"), vec![(4, 14, 7), (21, 27, 2)]);
        assert_eq!(digit_runs("no digits here"), Vec::<(usize, usize, usize)>::new());
        assert!(hex_colons("fe80::1") && hex_colons("a:b:c") && hex_colons("abcd:1234:") && !hex_colons("time: 10:30") && !hex_colons("x: y: z"));
        assert!(caps_digit("GB82") && caps_digit("DE\u{663}") && !caps_digit("Gb82") && !caps_digit("G82"));
        assert!(keyword_gate().is_match("My PassWord") && keyword_gate().is_match("\u{212A}EY") && !keyword_gate().is_match("hello"));
    }

    #[test]
    fn detectors_compile() {
        for d in detectors() {
            assert_ne!(d.re.as_str(), r"[^\s\S]", "{:?} failed to compile", d.entity);
        }
    }

    #[test]
    fn pii() {
        assert_eq!(ents("mail dana@example.org now"), vec![(Entity::Email, "dana@example.org".into())]);
        assert_eq!(ents("card 4111 1111 1111 1111."), vec![(Entity::PaymentCard, "4111 1111 1111 1111".into())]);
        assert!(ents("card 4111 1111 1111 1112").is_empty());
        assert_eq!(ents("iban GB82 WEST 1234 5698 7654 32 ok"), vec![(Entity::Iban, "GB82 WEST 1234 5698 7654 32".into())]);
        assert!(ents("iban GB83 WEST 1234 5698 7654 32").is_empty());
        assert_eq!(ents("ssn 123-45-6789"), vec![(Entity::UsSsn, "123-45-6789".into())]);
        assert!(ents("ssn 666-45-6789").is_empty());
        assert_eq!(ents("ring me on 555-0100 after six"), vec![(Entity::Phone, "555-0100".into())]);
        assert_eq!(ents("call +1 555 0100."), vec![(Entity::Phone, "+1 555 0100".into())]);
        assert_eq!(ents("host 10.0.0.1 up"), vec![(Entity::Ipv4, "10.0.0.1".into())]);
        assert!(ents("version 1.2.3.4.5").is_empty());
        assert_eq!(ents("v6 2001:db8::1 ok"), vec![(Entity::Ipv6, "2001:db8::1".into())]);
        assert!(ents("at 10:30:00 today").is_empty());
    }

    #[test]
    fn field_report_false_positives() {
        // Field reports 15, 16, 17, 27, 28: identifiers, UUIDs and config paths are not secrets.
        for t in [
            r#"request_id = "3f2b9c4e-8d1a-4b6e-9f0c-2a7d5e1b8c93""#,
            "const tokenizationId = 'a3f9c2e71b8d4f6a9c0e2b7d5f1a8c34';",
            r#"var resetLifetime = settings.Read("Auth:PasswordResetTokenLifetime");"#,
            "if let token = sessionObserverToken { center.remove(token) }",
            "summary = api_models.ChatSummary.from_records(rows)",
            "password = os.environ['DB_PASSWORD']",
            "token: ${{ secrets.GITHUB_TOKEN }}",
            "api_key = your_api_key_here",
        ] {
            assert!(ents(t).is_empty(), "{t}: {:?}", ents(t));
        }
    }

    #[test]
    fn assignments() {
        assert_eq!(ents("password=Tr0ub4dor&3x"), vec![(Entity::SecretAssignment, "Tr0ub4dor&3x".into())]);
        assert_eq!(ents("DB_PASSWORD: 'k9#Lm2$vQ8'"), vec![(Entity::SecretAssignment, "k9#Lm2$vQ8".into())]);
    }

    #[test]
    fn overlap_prefers_specific_secret() {
        let key = format!("sk-proj-{}", "Ab3De5Gh7Jk9Mn2Pq4St6Vw8Yz0".repeat(3));
        let t = format!("OPENAI_API_KEY={key}");
        assert_eq!(ents(&t), vec![(Entity::OpenaiKey, key)]);
    }

    #[test]
    fn utf8_stream_joins_split_characters() {
        let bytes = "é🙂x".as_bytes();
        let mut u = Utf8Stream::default();
        let mut out = String::new();
        for b in bytes {
            out.push_str(&u.feed(&[*b]).unwrap());
        }
        assert_eq!(out, "é🙂x");
        assert!(u.finish().is_ok());
        assert_eq!(u.feed(&[0xff]).unwrap_err().code(), crate::ErrorCode::InputInvalid);
        assert!(u.feed(&[0xc3]).unwrap().is_empty());
        assert!(u.finish().is_err());
    }

    #[test]
    fn vault_restores_and_is_bounded() {
        let v = Vault::new(2);
        v.insert("[PSEUDO_EMAIL_000000000001]", "a@x.io");
        v.insert("[PSEUDO_EMAIL_000000000002]", "b@x.io");
        v.insert("[PSEUDO_EMAIL_000000000003]", "c@x.io");
        assert_eq!(v.len(), 2);
        assert_eq!(
            v.restore("[PSEUDO_EMAIL_000000000001] [PSEUDO_EMAIL_000000000003]"),
            "[PSEUDO_EMAIL_000000000001] c@x.io"
        );
    }
}
