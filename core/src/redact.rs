//! Output redaction: secrets, credentials, checksum-validated PII, canary tokens and custom deny
//! terms, with tag / mask / keyed-hash / reversible pseudonym strategies, on whole texts and on
//! streams.
//!
//! Invariant (property-tested): the text outside findings is copied byte for byte; only the
//! bytes of each finding's span `start..end` (half-open byte offsets in the input, on char
//! boundaries) are replaced by the finding's `replacement`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Range;
use std::sync::{Mutex, OnceLock};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::keys::hmac_sha256;
use crate::policy::RedactionPolicy;
use crate::validators::{
    iban_valid, is_card_number, is_placeholder, is_uuid, looks_like_identifier, shannon_entropy,
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
        self.upper().to_string()
    }

    /// [`Entity::label`] without an allocation.
    fn upper(self) -> &'static str {
        match self {
            Entity::Email => "EMAIL",
            Entity::Phone => "PHONE",
            Entity::PaymentCard => "PAYMENT_CARD",
            Entity::Iban => "IBAN",
            Entity::UsSsn => "US_SSN",
            Entity::Ipv4 => "IPV4",
            Entity::Ipv6 => "IPV6",
            Entity::AwsAccessKey => "AWS_ACCESS_KEY",
            Entity::GithubToken => "GITHUB_TOKEN",
            Entity::OpenaiKey => "OPENAI_KEY",
            Entity::SlackToken => "SLACK_TOKEN",
            Entity::StripeKey => "STRIPE_KEY",
            Entity::GoogleApiKey => "GOOGLE_API_KEY",
            Entity::Jwt => "JWT",
            Entity::PrivateKey => "PRIVATE_KEY",
            Entity::SecretAssignment => "SECRET_ASSIGNMENT",
            Entity::Canary => "CANARY",
            Entity::DenyTerm => "DENY_TERM",
        }
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
    /// No gate.
    None,
    /// Every match starts with one of these literals (case-sensitive). One Aho-Corasick pass
    /// over the text (see [`literal_gates`]) answers for every detector, instead of one regex
    /// prefilter search per detector.
    Prefixes(&'static [&'static str]),
    /// Every match consists only of digits and ` .-()+`: run the regex on each maximal run of
    /// those characters (see [`digit_runs`]) that the [`RunNeed`] admits, not on the whole text.
    DigitRuns(RunNeed),
    /// Secret assignments: candidates are found from their separators (see
    /// [`next_assignment`]), whose keys must hold a keyword of [`KEYWORD_LITERALS`].
    Separators,
    /// A match holds two `:` separated by at most four hex digits.
    HexColons,
    /// Every match starts with two ASCII capitals and a digit and consists of `[A-Z0-9 ]` and
    /// digits: run the regex on each maximal run of those characters that holds such a start
    /// and at least this many bytes (the shortest match), see [`DigitScan::caps_runs`].
    CapsRuns(usize),
}

/// A maximal run (byte range `start..end`) of digits (`char::is_numeric`: Nd, Nl, No, a superset
/// of the regexes' `\d`) and ` .-()+` that contains at least one digit, with counts of what it
/// holds. Every match of a [`Gate::DigitRuns`] regex lies inside one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct DigitRun {
    start: usize,
    end: usize,
    digits: usize,
    /// Counts of `-`, `.`, ` `, `+` and `(` in the run.
    dashes: usize,
    dots: usize,
    spaces: usize,
    plus: usize,
    parens: usize,
}

/// What a digit run must hold before a detector's regex is run on it: the fewest digits and
/// separators any match needs to pass its check. Each is a necessary condition read off the
/// pattern, so no match is hidden (`gated_equals_ungated` checks this).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunNeed {
    /// Payment card: 13 digits (the shortest card number, ISO/IEC 7812).
    Card,
    /// US SSN `ddd-dd-dddd`: 9 digits and 2 dashes.
    Ssn,
    /// Phone: 7 digits (the check's minimum) and a `+`, a `(`, a `-`, or two of ` .`
    /// (the four alternatives of the pattern each need one of these).
    Phone,
    /// IPv4 dotted quad: 4 digits and 3 dots.
    Ipv4,
    /// A run of [`DigitScan::caps_runs`] at least this many bytes long.
    Bytes(usize),
}

impl RunNeed {
    /// The fewest digits any digit-run need admits ([`RunNeed::Ipv4`]); [`digit_scan`] keeps no
    /// shorter run.
    const MIN_DIGITS: usize = 4;

    fn admits(self, r: &DigitRun) -> bool {
        match self {
            RunNeed::Card => r.digits >= 13,
            RunNeed::Ssn => r.digits >= 9 && r.dashes >= 2,
            RunNeed::Phone => r.digits >= 7 && (r.plus > 0 || r.parens > 0 || r.dashes > 0 || r.dots + r.spaces >= 2),
            RunNeed::Ipv4 => r.digits >= 4 && r.dots >= 3,
            RunNeed::Bytes(n) => r.end - r.start >= n,
        }
    }
}

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

/// What one pass over the text finds for the digit gates.
#[derive(Debug, Default)]
struct DigitScan {
    /// The digit runs with at least [`RunNeed::MIN_DIGITS`] digits (no detector runs on a
    /// shorter one), in text order.
    runs: Vec<DigitRun>,
    /// Maximal runs of `[A-Z0-9 ]` and `char::is_numeric` characters that hold two ASCII
    /// capitals followed by a digit (where every IBAN starts); only `start` and `end` are set.
    caps_runs: Vec<DigitRun>,
}

/// The maximal run of `[A-Z0-9 ]` and numeric characters around byte offset `at`.
fn caps_run(text: &str, at: usize) -> DigitRun {
    let in_run = |c: char| c.is_ascii_uppercase() || c.is_ascii_digit() || c == ' ' || (!c.is_ascii() && c.is_numeric());
    let start = text[..at].char_indices().rev().take_while(|&(_, c)| in_run(c)).last().map_or(at, |(i, _)| i);
    let end = text[at..].char_indices().find(|&(_, c)| !in_run(c)).map_or(text.len(), |(i, _)| at + i);
    DigitRun { start, end, ..DigitRun::default() }
}

/// Index of the first ASCII digit or non-ASCII byte in `b`, tested eight bytes at a time: with
/// the high bits cleared, adding 0x50 (0x46) to a byte sets its high bit exactly when it is at
/// least `0` (past `9`), and no sum carries into the next byte.
fn digit_or_non_ascii(b: &[u8]) -> Option<usize> {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    while let Some(chunk) = b.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        let y = w & LOW7;
        let digits = y.wrapping_add(0x5050_5050_5050_5050) & !y.wrapping_add(0x4646_4646_4646_4646) & HIGH;
        let hits = digits | (w & HIGH);
        if hits != 0 {
            return Some(i + hits.trailing_zeros() as usize / 8);
        }
        i += 8;
    }
    b[i..].iter().position(|&c| c.is_ascii_digit() || c >= 0x80).map(|k| i + k)
}

#[cfg(test)]
fn digit_runs(text: &str) -> Vec<DigitRun> {
    digit_scan(text).runs
}

fn digit_scan(text: &str) -> DigitScan {
    let b = text.as_bytes();
    // (bytes, is digit) of the run character at `i`, or None when `i` ends a run.
    let class_at = |i: usize| -> Option<(usize, bool)> {
        if b[i] < 0x80 {
            match ASCII_RUN_CLASS[b[i] as usize] {
                0 => None,
                class => Some((1, class == 2)),
            }
        } else {
            let c = text[i..].chars().next().unwrap_or('\u{FFFD}');
            c.is_numeric().then_some((c.len_utf8(), true))
        }
    };
    let count = |r: &mut DigitRun, byte: u8, digit: bool| {
        r.digits += usize::from(digit);
        match byte {
            b'-' => r.dashes += 1,
            b'.' => r.dots += 1,
            b' ' => r.spaces += 1,
            b'+' => r.plus += 1,
            b'(' => r.parens += 1,
            _ => {}
        }
    };
    let mut scan = DigitScan::default();
    let mut i = 0;
    // Skip to the next ASCII digit or non-ASCII character (most text holds neither), then grow
    // the run left over separators and right over digits and separators. Inside a run a digit
    // follows a digit or separator, so only these stops can follow two capitals.
    while let Some(k) = digit_or_non_ascii(&b[i..]) {
        i += k;
        let after_caps = i >= 2 && b[i - 1].is_ascii_uppercase() && b[i - 2].is_ascii_uppercase();
        // A start at `i - 2` inside the last caps run is already covered by it.
        if after_caps && scan.caps_runs.last().is_none_or(|r| r.end <= i - 2) {
            scan.caps_runs.push(caps_run(text, i - 2));
        }
        let Some((len, true)) = class_at(i) else {
            i += text[i..].chars().next().map_or(1, char::len_utf8);
            continue;
        };
        let mut r = DigitRun { start: i, ..DigitRun::default() };
        while r.start > 0 && b[r.start - 1] < 0x80 && ASCII_RUN_CLASS[b[r.start - 1] as usize] == 1 {
            let sep = b[r.start - 1];
            r.start -= 1;
            count(&mut r, sep, false);
        }
        count(&mut r, b[i], true);
        i += len;
        while i < b.len() {
            let Some((len, digit)) = class_at(i) else { break };
            count(&mut r, b[i], digit);
            i += len;
        }
        r.end = i;
        if r.digits >= RunNeed::MIN_DIGITS {
            scan.runs.push(r);
        }
    }
    scan
}

/// Literals one of which every secret-assignment key contains (ASCII case-insensitive), plus
/// the two non-ASCII characters that Unicode simple case folding equates with ASCII letters
/// (U+017F LONG S ~ `s`, U+212A KELVIN SIGN ~ `k`), which the regex's `(?i)` also accepts.
const KEYWORD_LITERALS: [&str; 10] = ["pass", "pwd", "secret", "key", "token", "bearer", "credential", "conn", "\u{17F}", "\u{212A}"];

/// The secret-assignment pattern's keywords written out (its alternation, where a keyword that
/// holds another, such as `auth_token`, is covered by the shorter one): every ASCII key the
/// pattern accepts contains one of them, ASCII case-insensitively.
const ASSIGNMENT_KEYWORDS: [&str; 23] = [
    "password", "passwd", "passphrase", "pwd", "secret", "apikey", "api_key", "api-key", "accesskey", "access_key",
    "access-key", "privatekey", "private_key", "private-key", "token", "bearer", "credential", "connstring", "conn_string",
    "conn-string", "connectionstring", "connection_string", "connection-string",
];

/// Every detector's [`Gate::Prefixes`] literals in one automaton (leftmost-first, searched with
/// the crate's SIMD prefilter), with the index of the detector each one opens; and the
/// assignment keywords (ASCII case-insensitive, see [`next_assignment`]): the literals for any
/// key, the whole words for an ASCII key.
struct LiteralGates {
    prefixes: AhoCorasick,
    owner: Vec<usize>,
    keywords: AhoCorasick,
    ascii_keywords: AhoCorasick,
}

fn literal_gates() -> &'static LiteralGates {
    static G: OnceLock<LiteralGates> = OnceLock::new();
    G.get_or_init(|| {
        let mut owner = Vec::new();
        let mut literals = Vec::new();
        for (i, d) in detectors().iter().enumerate() {
            if let Gate::Prefixes(lits) = d.gate {
                owner.extend(lits.iter().map(|_| i));
                literals.extend(lits.iter().copied());
            }
        }
        let fallback = || AhoCorasick::new(["\u{0}"]).expect("one literal");
        let prefixes = AhoCorasickBuilder::new().match_kind(MatchKind::LeftmostFirst).build(&literals).unwrap_or_else(|_| fallback());
        let keywords = AhoCorasickBuilder::new().ascii_case_insensitive(true).build(KEYWORD_LITERALS).unwrap_or_else(|_| fallback());
        let ascii_keywords =
            AhoCorasickBuilder::new().ascii_case_insensitive(true).build(ASSIGNMENT_KEYWORDS).unwrap_or_else(|_| fallback());
        LiteralGates { prefixes, owner, keywords, ascii_keywords }
    })
}

/// A bit per detector index whose [`Gate::Prefixes`] literals occur in `text`. Each search
/// restarts one byte after the last hit's start, so every position where a literal starts is
/// seen; as no literal is a prefix of another (`prefix_literals_are_prefix_free`), that is every
/// occurrence of every literal.
fn open_literal_gates(text: &str) -> u64 {
    let g = literal_gates();
    let mut open = 0u64;
    let mut at = 0;
    while let Some(m) = g.prefixes.find(aho_corasick::Input::new(text).span(at..text.len())) {
        open |= 1 << g.owner[m.pattern().as_usize()];
        at = m.start() + 1;
    }
    open
}

fn hex_colons(text: &str) -> bool {
    let b = text.as_bytes();
    let mut from = 0;
    while let Some(i) = text[from..].find(':').map(|i| from + i) {
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

/// Test oracle for [`DigitScan::caps_runs`]: byte offsets, ascending, of every two ASCII
/// capitals followed by an ASCII digit or a non-ASCII character.
#[cfg(test)]
fn caps_digit_sites(text: &str) -> impl Iterator<Item = usize> + '_ {
    let b = text.as_bytes();
    // From each ASCII digit or non-ASCII byte (rare in most text), look back at two bytes.
    let mut i = 2;
    std::iter::from_fn(move || {
        while let Some(k) = b.get(i..).and_then(|rest| rest.iter().position(|&c| c.is_ascii_digit() || c >= 0x80)) {
            i += k + 1;
            if b[i - 2].is_ascii_uppercase() && b[i - 3].is_ascii_uppercase() {
                return Some(i - 3);
            }
        }
        None
    })
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
    let mut seps = v.chars().filter(|c| !c.is_ascii_digit());
    let consistent = seps.next().is_none_or(|first| seps.all(|c| c == first));
    consistent && digit_bounds(t, s, e) && card_digits(v).is_some_and(|(buf, n)| std::str::from_utf8(&buf[..n]).is_ok_and(is_card_number))
}
/// The ASCII digits of `v` on the stack, or `None` past 19 (no card number is longer, ISO/IEC
/// 7812-1).
fn card_digits(v: &str) -> Option<([u8; 19], usize)> {
    let (mut buf, mut n) = ([0u8; 19], 0);
    for b in v.bytes().filter(u8::is_ascii_digit) {
        *buf.get_mut(n)? = b;
        n += 1;
    }
    Some((buf, n))
}
fn check_ssn(t: &str, s: usize, e: usize) -> bool {
    digit_bounds(t, s, e) && ssn_valid(&t[s..e])
}
fn check_iban(t: &str, s: usize, e: usize) -> bool {
    check_token(t, s, e) && iban_valid(&t[s..e])
}
/// Number of ASCII digits in `v`.
fn ascii_digits(v: &str) -> usize {
    v.bytes().filter(u8::is_ascii_digit).count()
}
fn check_phone(t: &str, s: usize, e: usize) -> bool {
    (7..=15).contains(&ascii_digits(&t[s..e])) && digit_bounds(t, s, e)
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
        && before(t, s).is_none_or(|c| c != ':')
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
        for (n, (i, c)) in t[..at].char_indices().rev().enumerate() {
            if !local_char(c) || n == 64 {
                break;
            }
            s = i;
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

/// AWS access key id prefixes (AWS IAM "unique identifiers" documentation).
const AWS_PREFIXES: [&str; 11] = ["AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AROA", "AIPA", "ANPA", "ANVA", "APKA"];

fn detectors() -> &'static [Detector] {
    static D: OnceLock<Vec<Detector>> = OnceLock::new();
    D.get_or_init(|| {
        let d = |entity, p: &str, group, check: Check| Detector { entity, re: re(p), group, check, gate: Gate::None };
        let pre = |lits: &'static [&'static str], d: Detector| Detector { gate: Gate::Prefixes(lits), ..d };
        let g = |gate: Gate, d: Detector| Detector { gate, ..d };
        vec![
            pre(&["-----BEGIN "], d(
                Entity::PrivateKey,
                // Terminated by its END line, or, when the header is followed by a line of key
                // body (base64, 16+ characters, after optional `Proc-Type:`-style headers),
                // running to the end of the text: an output cut off mid-key (max_tokens) still
                // holds key material.
                &format!(r"(?s)-----BEGIN [A-Z0-9 ]{{0,40}}PRIVATE KEY(?: BLOCK)?-----(?:.*?{PEM_END}|[ \t]*\r?\n(?:[A-Za-z-]+:[^\r\n]*\r?\n)*[ \t]*[A-Za-z0-9+/=]{{16,}}[ \t]*(?:\r?\n|\z).*\z)"),
                0,
                check_any,
            )),
            pre(&AWS_PREFIXES, d(Entity::AwsAccessKey, r"(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)[A-Z0-9]{16}", 0, check_token)),
            pre(&["github_pat_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_"], d(Entity::GithubToken, r"github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59}|gh[pousr]_[A-Za-z0-9]{36,251}", 0, check_token)),
            pre(&["sk-"], d(Entity::OpenaiKey, r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,200}", 0, check_openai)),
            pre(&["xox", "https://hooks.slack.com/"], d(
                Entity::SlackToken,
                r"xox[abposre]-[A-Za-z0-9\-]{10,250}|https://hooks\.slack\.com/services/T[A-Z0-9]{6,12}/B[A-Z0-9]{6,12}/[A-Za-z0-9]{16,32}",
                0,
                check_token,
            )),
            pre(&["sk_live_", "sk_test_", "rk_live_", "rk_test_", "whsec_"], d(Entity::StripeKey, r"(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,247}|whsec_[A-Za-z0-9]{24,64}", 0, check_token)),
            pre(&["AIza"], d(Entity::GoogleApiKey, r"AIza[0-9A-Za-z_\-]{35}", 0, check_token)),
            pre(&["eyJ"], d(Entity::Jwt, r"eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}", 0, check_jwt)),
            g(Gate::Separators, d(
                Entity::SecretAssignment,
                r#"(?i)([A-Za-z0-9_.\-]{0,40}(?:password|passwd|passphrase|pwd|secret|api[_\-]?key|apikey|access[_\-]?key|private[_\-]?key|auth[_\-]?token|access[_\-]?token|refresh[_\-]?token|bearer|token|credentials?|client[_\-]?secret|conn(?:ection)?[_\-]?string)[A-Za-z0-9_]{0,40})["']?[ \t]{0,8}(?::=|=>|=|:)[ \t]{0,8}["'`]?([^\s"'`,;<>(){}\[\]]{6,256})"#,
                2,
                check_any,
            )),
            g(Gate::DigitRuns(RunNeed::Card), d(Entity::PaymentCard, r"\d(?:[ \-]?\d){12,18}", 0, check_card)),
            g(Gate::CapsRuns(12), d(Entity::Iban, r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?", 0, check_iban)),
            g(Gate::DigitRuns(RunNeed::Ssn), d(Entity::UsSsn, r"\d{3}-\d{2}-\d{4}", 0, check_ssn)),
            g(Gate::DigitRuns(RunNeed::Phone), d(
                Entity::Phone,
                r"\+\d{1,3}(?:[ .\-]?\(?\d{1,4}\)?){2,5}|\(\d{3}\) ?\d{3}[ .\-]\d{4}|\d{3}([.\- ])\d{3}[.\- ]\d{4}|\d{3}-\d{4}",
                0,
                check_phone,
            )),
            g(Gate::DigitRuns(RunNeed::Ipv4), d(Entity::Ipv4, r"(?:\d{1,3}\.){3}\d{1,3}", 0, check_ipv4)),
            g(Gate::HexColons, d(Entity::Ipv6, r"(?i)(?:[0-9a-f]{0,4}:){2,7}[0-9a-f]{0,4}(?:(?:\d{1,3}\.){3}\d{1,3})?", 0, check_ipv6)),
        ]
    })
}

/// Longest key of the secret-assignment pattern, in bytes: 40 characters, a keyword of at most
/// 17 (`connection_string`) and 40 more, each at most 3 bytes (U+212A KELVIN SIGN).
const ASSIGNMENT_KEY_MAX_BYTES: usize = 97 * 3;

/// Where a secret assignment whose separator starts at byte `p` ends at the latest: after the
/// separator (`:`, `=`, `:=` or `=>`), up to 8 blanks, a quote, and the value's run of
/// characters (the pattern's value class) up to 257 of them (256, plus the `=` that starts the
/// value when `:=` is read as `:`).
fn assignment_tail_end(text: &str, p: usize) -> usize {
    let b = text.as_bytes();
    let mut q = p + 1;
    if matches!(b.get(q), Some(b'=' | b'>')) {
        q += 1;
    }
    let mut blanks = 0;
    while blanks < 8 && matches!(b.get(q), Some(b' ' | b'\t')) {
        q += 1;
        blanks += 1;
    }
    if matches!(b.get(q), Some(b'"' | b'\'' | b'`')) {
        q += 1;
    }
    q + text[q..].chars().take(257).take_while(|&c| value_char(c)).map(char::len_utf8).sum::<usize>()
}

/// Whether `c` is in the secret-assignment pattern's value class `[^\s"'`,;<>(){}\[\]]`
/// (`\s` is Unicode White_Space, as `char::is_whitespace`); ASCII by table.
fn value_char(c: char) -> bool {
    const ASCII_VALUE: [bool; 128] = {
        let mut t = [true; 128];
        let excluded = b"\t\n\x0b\x0c\r \"'`,;<>(){}[]";
        let mut i = 0;
        while i < excluded.len() {
            t[excluded[i] as usize] = false;
            i += 1;
        }
        t
    };
    if c.is_ascii() {
        ASCII_VALUE[c as usize]
    } else {
        !c.is_whitespace()
    }
}

/// The secret-assignment regex's leftmost match starting at or after `at`, found from the
/// separators (`:` and `=`, found with SIMD `memchr`) instead of a regex search through the
/// whole text. For each separator: its key ends before at most 8 blanks and a quote and is a
/// run of key characters (`[A-Za-z0-9_.-]`, U+212A, U+017F); when the last
/// [`ASSIGNMENT_KEY_MAX_BYTES`] of that run hold an assignment keyword, the regex runs on the
/// window from the run to the longest possible end and its match counts if it starts in the
/// run (a later start belongs to a later separator, whose window comes next). Keys of
/// successive separators do not overlap, so the first counted match is the leftmost one.
fn next_assignment<'t>(re: &Regex, text: &'t str, at: usize) -> Option<regex::Match<'t>> {
    let b = text.as_bytes();
    let key_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '\u{212A}' | '\u{17F}');
    let gates = literal_gates();
    for p in memchr::memchr2_iter(b':', b'=', b.get(at..)?).map(|k| at + k) {
        let mut key_end = p;
        while key_end > 0 && p - key_end < 8 && matches!(b[key_end - 1], b' ' | b'\t') {
            key_end -= 1;
        }
        if key_end > 0 && matches!(b[key_end - 1], b'"' | b'\'') {
            key_end -= 1;
        }
        if key_end <= at {
            continue; // a match for this separator would start before `at`
        }
        let mut lo = key_end.saturating_sub(ASSIGNMENT_KEY_MAX_BYTES).max(at);
        while !text.is_char_boundary(lo) {
            lo += 1;
        }
        let run_start = text[lo..key_end].char_indices().rev().take_while(|&(_, c)| key_char(c)).last().map_or(key_end, |(i, _)| lo + i);
        // An ASCII key must hold a whole keyword (`key=` alone is no assignment); a key with
        // U+212A or U+017F, which `(?i)` reads as `k` and `s`, is checked by its literals only.
        let key = &text[run_start..key_end];
        let keywords = if key.is_ascii() { &gates.ascii_keywords } else { &gates.keywords };
        if run_start == key_end || !keywords.is_match(key) {
            continue;
        }
        let end = assignment_tail_end(text, p);
        if let Some(m) = re.find_at(&text[..end], run_start) {
            if m.start() < key_end {
                return Some(m);
            }
        }
    }
    None
}

/// Splits a secret-assignment match `text[s..e]` into the pattern's key and value groups
/// (byte ranges), without a capture search. Every character of the pattern's key is a letter,
/// digit, `_`, `.` or `-`, so the key ends at the first quote, blank, `:` or `=`; what follows is
/// an optional quote, blanks, the separator, blanks, an optional quote and the value up to `e`.
/// The one ambiguous separator, `:=` (also `:` followed by a value starting with `=`), returns
/// `None`, as does a value that does not validate: the caller then asks the regex.
fn split_assignment(text: &str, s: usize, e: usize) -> Option<(Range<usize>, Range<usize>)> {
    let b = &text.as_bytes()[..e];
    let key_end = s + b[s..].iter().position(|c| matches!(c, b'"' | b'\'' | b' ' | b'\t' | b':' | b'='))?;
    let blanks = |mut p: usize| {
        while p < e && matches!(b[p], b' ' | b'\t') {
            p += 1;
        }
        p
    };
    let mut p = key_end + usize::from(matches!(b[key_end], b'"' | b'\''));
    p = blanks(p);
    p += match b.get(p..p + 2) {
        Some(b":=") => return None,
        Some(b"=>") => 2,
        _ if matches!(b.get(p), Some(b'=' | b':')) => 1,
        _ => return None,
    };
    p = blanks(p);
    p += usize::from(matches!(b.get(p), Some(b'"' | b'\'' | b'`')));
    let value = text.get(p..e)?;
    let n = value.chars().count();
    let valid = (6..=256).contains(&n) && value.chars().all(value_char);
    valid.then_some((s..key_end, p..e))
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

    /// Whether `value` is one of the policy's `allow_values` (not hashed when there are none).
    fn allowed(&self, value: &str) -> bool {
        !self.allow_values.is_empty() && self.allow_values.contains(value)
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

    /// Whether the assignment `key` = `value` (byte ranges of `text`) holds a secret.
    fn assignment_ok(&self, text: &str, key: Range<usize>, value: Range<usize>) -> bool {
        let key_start = key.start;
        let key_s = &text[key];
        let v = text[value].trim_end_matches(['.', '!', '?', ':']);
        if v.len() < 8 || benign_key(key_s) || self.allow_keys.iter().any(|k| k == &key_s.to_ascii_lowercase()) {
            return false;
        }
        if self.allowed(v) || is_placeholder(v) || looks_like_identifier(v) {
            return false;
        }
        // A key glued to a preceding word char is part of a longer identifier.
        if tokenish(before(text, key_start)) {
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
        let whole = [DigitRun { start: 0, end: text.len(), ..DigitRun::default() }];
        let mut scan: Option<DigitScan> = None;
        let mut literals: Option<u64> = None;
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for (i, d) in detectors().iter().enumerate() {
            if !self.on(d.entity) {
                continue;
            }
            let gate = if gated { d.gate } else { Gate::None };
            // Gates that narrow where the regex runs (below) leave the detector open here.
            let open = match gate {
                Gate::Prefixes(_) => *literals.get_or_insert_with(|| open_literal_gates(text)) & (1 << i) != 0,
                Gate::HexColons => hex_colons(text),
                Gate::None | Gate::DigitRuns(_) | Gate::Separators | Gate::CapsRuns(_) => true,
            };
            if !open {
                continue;
            }
            let (ranges, need): (&[DigitRun], Option<RunNeed>) = match gate {
                Gate::DigitRuns(need) => (&scan.get_or_insert_with(|| digit_scan(text)).runs, Some(need)),
                Gate::CapsRuns(min_bytes) => (&scan.get_or_insert_with(|| digit_scan(text)).caps_runs, Some(RunNeed::Bytes(min_bytes))),
                _ => (&whole, None),
            };
            if d.entity == Entity::PaymentCard {
                // Card numbers are searched again right after an accepted card that ended before
                // its match did, and from the next digit group after a rejected match: the
                // pattern takes up to 19 digits, so two cards in a row (`4111 1111 1111 1111
                // 4111 ...`) or a number after a stray digit group would hide the second card.
                for r in ranges.iter().filter(|r| need.is_none_or(|n| n.admits(r))) {
                    let hay = &text[..r.end];
                    let mut at = r.start;
                    while let Some(m) = d.re.find_at(hay, at) {
                        let (s, e) = (m.start(), m.end());
                        if let Some(r) = raw.as_deref_mut() {
                            r.push((s, e));
                        }
                        at = match card_prefix(text, s, e) {
                            Some(e2) if !self.allowed(&text[s..e2]) => {
                                out.push(Cand { entity: d.entity, start: s, end: e2 });
                                e2
                            }
                            _ => text[s..e].find([' ', '-']).map_or(e, |k| s + k + 1),
                        };
                    }
                }
            } else if d.group == 0 {
                spans.clear();
                spans.extend(
                    ranges
                        .iter()
                        .filter(|r| need.is_none_or(|n| n.admits(r)))
                        .flat_map(|r| d.re.find_iter(&text[r.start..r.end]).map(move |m| (r.start + m.start(), r.start + m.end()))),
                );
                for &(s, e) in &spans {
                    if let Some(r) = raw.as_deref_mut() {
                        r.push((s, e));
                    }
                    if (d.check)(text, s, e) && !self.allowed(&text[s..e]) {
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
                    // A capture search costs microseconds per match with this pattern; the
                    // match's groups are split off by hand when that is unambiguous.
                    let split = if gated {
                        let Some(m) = next_assignment(&d.re, text, at) else { break };
                        split_assignment(text, m.start(), m.end()).map(|(k, v)| (m.range(), k, v))
                    } else {
                        None
                    };
                    let (m, key, v) = match split {
                        Some(groups) => groups,
                        None => {
                            let Some(caps) = d.re.captures_at(text, at) else { break };
                            let (Some(m), Some(k), Some(v)) = (caps.get(0), caps.get(1), caps.get(d.group)) else { break };
                            (m.range(), k.range(), v.range())
                        }
                    };
                    if let Some(r) = raw.as_deref_mut() {
                        r.push((m.start, m.end));
                    }
                    if self.assignment_ok(text, key, v.clone()) {
                        let vs = text[v.clone()].trim_end_matches(['.', '!', '?', ':']);
                        out.push(Cand { entity: d.entity, start: v.start, end: v.start + vs.len() });
                        at = m.end.max(at + 1);
                    } else {
                        at = v.start.max(at + 1);
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
                if !self.allowed(&text[s..e]) {
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
                // `[LABEL_n]`, built without the formatting machinery (one per finding).
                let n = state.number(entity, value);
                let mut digits = itoa::Buffer::new();
                let (label, digits) = (entity.upper(), digits.format(n));
                let mut tag = String::with_capacity(label.len() + digits.len() + 3);
                tag.push('[');
                tag.push_str(label);
                tag.push('_');
                tag.push_str(digits);
                tag.push(']');
                tag
            }
            Strategy::Mask => value.chars().map(|c| if c == '\n' || c == '\r' { c } else { '*' }).collect(),
            Strategy::Hash => format!("[{}:{}]", entity.upper(), self.keyed_id(entity, value)),
            Strategy::Pseudonymize => {
                let token = format!("[PSEUDO_{}_{}]", entity.upper(), self.keyed_id(entity, value));
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
        if ascii_digits(&text[s..cut]) >= 13 && check_card(text, s, cut) {
            return Some(cut);
        }
    }
    None
}

/// Keeps non-overlapping candidates, preferring lower priority number, then longer spans, then
/// earlier starts (earlier found on a full tie); returns them ordered by start. Candidates that
/// overlap nothing (most of them) are kept without the priority pass: choosing within one
/// cluster of overlapping spans never blocks a span of another, so each cluster is resolved on
/// its own.
fn resolve_overlaps(mut c: Vec<Cand>) -> Vec<Cand> {
    c.sort_by_key(|x| x.start); // stable: full ties keep the order found
    let mut out = Vec::with_capacity(c.len());
    let mut cluster: Vec<Cand> = Vec::new();
    let mut reach = 0;
    for x in c {
        if !cluster.is_empty() && x.start >= reach {
            resolve_cluster(&mut cluster, &mut out);
        }
        reach = if cluster.is_empty() { x.end } else { reach.max(x.end) };
        cluster.push(x);
    }
    resolve_cluster(&mut cluster, &mut out);
    out
}

/// Resolves one cluster of [`resolve_overlaps`] (ordered by start) into `out`, emptying it.
fn resolve_cluster(cluster: &mut Vec<Cand>, out: &mut Vec<Cand>) {
    if cluster.len() < 2 {
        out.append(cluster);
        return;
    }
    cluster.sort_by_key(|x| (x.entity.priority(), std::cmp::Reverse(x.end - x.start), x.start));
    // Kept spans by start (a cluster can be long: a map keeps this O(n log n)).
    let mut kept: BTreeMap<usize, Cand> = BTreeMap::new();
    for &x in cluster.iter() {
        // Kept spans are disjoint, so an overlap shows with the kept span that starts last
        // before `x` ends.
        if kept.range(..x.end).next_back().is_none_or(|(_, p)| p.end <= x.start) {
            kept.insert(x.start, x);
        }
    }
    out.extend(kept.into_values());
    cluster.clear();
}

/// Tag numbering state: the same (entity, value) gets the same number within one output or one
/// stream.
#[derive(Debug, Default, Clone)]
pub(crate) struct TagState {
    /// Per entity (index in [`Entity::ALL`]): value -> its number (1, 2, ... in order seen).
    /// Each map is made on the entity's first tag: a `RandomState` costs a seed draw, and most
    /// outputs tag no entity or one.
    seen: [Option<HashMap<String, usize, foldhash::fast::RandomState>>; Entity::ALL.len()],
}

impl TagState {
    fn number(&mut self, e: Entity, v: &str) -> usize {
        let seen = self.seen[idx(e)].get_or_insert_with(HashMap::default);
        if let Some(n) = seen.get(v) {
            return *n;
        }
        let n = seen.len() + 1;
        seen.insert(v.to_string(), n);
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
/// `-----BEGIN … PRIVATE KEY-----` block until its END line is complete (up to 64 KiB; a longer
/// block is then redacted as far as it has come, and the rest of its body is dropped until the
/// END line, so the output is still one tag). A block still open when the stream ends is
/// redacted to the end, as in whole-text redaction. It emits only up to the start of a
/// whitespace-delimited token that no detector match (accepted or rejected) spans, so the output equals redacting the whole
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
    /// Inside a private-key block that was redacted before its END line arrived (it was longer
    /// than MAX_PEM_HOLD): its body is dropped until the END line.
    in_key: bool,
}

/// The END line of a private-key block (the private-key detector ends with it too).
const PEM_END: &str = r"-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----";

fn pem_end_re() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    R.get_or_init(|| re(PEM_END))
}

/// Longest END line [`PEM_END`] matches (bytes): `-----END `, 40 label bytes, `PRIVATE KEY`,
/// ` BLOCK`, `-----`.
const PEM_END_MAX: usize = 9 + 40 + 11 + 6 + 5;

/// The header of a private-key block, as the detector begins.
const PEM_BEGIN: &str = r"\A-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----";

/// Longest header [`PEM_BEGIN`] matches (bytes).
const PEM_BEGIN_MAX: usize = 11 + 40 + 11 + 6 + 5;

/// True when `h` (text from a `-----BEGIN `) is, or may still grow into, a private-key header;
/// false for a complete header of something else (a certificate, a public key).
fn private_key_header(h: &str) -> bool {
    static R: OnceLock<Regex> = OnceLock::new();
    if R.get_or_init(|| re(PEM_BEGIN)).is_match(h) {
        return true;
    }
    // Not complete yet: every byte after `-----BEGIN ` could still belong to the label and the
    // closing dashes, and the header is not over its longest length.
    let rest = &h[11..];
    h.len() < PEM_BEGIN_MAX && rest.bytes().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b' ' || c == b'-')
}

/// Start of the first private-key `-----BEGIN ` header in `b` (or a `-----BEGIN ` whose header
/// is not complete yet) that no complete END line closes (each BEGIN is closed by the first END
/// line after it, as the detector's lazy match does). Headers of other PEM blocks (certificates,
/// public keys) are not held.
fn unterminated_pem(b: &str) -> Option<usize> {
    let mut pos = 0;
    loop {
        let pb = pos + b[pos..].find("-----BEGIN ")?;
        if !private_key_header(&b[pb..]) {
            pos = pb + 11;
            continue;
        }
        match pem_end_re().find(&b[pb..]) {
            Some(m) => pos = pb + m.end(),
            None => return Some(pb),
        }
    }
}

/// Most bytes of a token-character run held back while it may still grow.
const MAX_TOKEN_HOLD: usize = 16 << 10;
/// Most bytes of an unterminated private-key block held back.
const MAX_PEM_HOLD: usize = 64 << 10;

impl StreamRedactor {
    pub(crate) fn new(fw: crate::Firewall) -> Self {
        StreamRedactor { fw, buf: String::new(), base: 0, state: TagState::default(), findings: Vec::new(), canary_leaked: false, in_key: false }
    }

    /// Adds a chunk and returns the redacted text that can be sent now (possibly empty).
    pub fn push(&mut self, chunk: &str) -> String {
        self.buf.push_str(chunk);
        if self.in_key && !self.drop_key_body() {
            return String::new();
        }
        let pem = unterminated_pem(&self.buf);
        if let Some(pb) = pem.filter(|&pb| self.buf.len() - pb > MAX_PEM_HOLD) {
            // Held long enough: redact the partial block now (it runs to the end of the buffer)
            // and drop the rest of the key body as it arrives, up to its END line.
            let (n, at) = (self.buf.len(), self.base + pb);
            let out = self.emit(n);
            self.in_key = self.findings.last().is_some_and(|f| f.entity == Entity::PrivateKey && f.start == at);
            return out;
        }
        let cut = self.safe_cut(pem);
        self.emit(cut)
    }

    /// In a key block redacted before its END line: drops the buffered key body up to and
    /// including the END line and returns true, or, while there is none, drops all but a tail
    /// that may hold the start of a split END line and returns false.
    fn drop_key_body(&mut self) -> bool {
        if let Some(m) = pem_end_re().find(&self.buf) {
            self.drop_key_bytes(m.end());
            self.in_key = false;
            return true;
        }
        let mut k = self.buf.len().saturating_sub(PEM_END_MAX);
        while !self.buf.is_char_boundary(k) {
            k -= 1;
        }
        self.drop_key_bytes(k);
        false
    }

    /// Drops the first `k` buffered bytes as key body: the key block's finding (the last one)
    /// grows over them.
    fn drop_key_bytes(&mut self, k: usize) {
        self.buf.drain(..k);
        self.base += k;
        if let Some(f) = self.findings.last_mut() {
            f.end = self.base;
        }
    }

    /// Ends the stream: returns the rest, redacted (the rest of a key block redacted before its
    /// END line is dropped).
    pub fn finish(&mut self) -> String {
        if self.in_key && !self.drop_key_body() {
            self.drop_key_bytes(self.buf.len());
            self.in_key = false;
            return String::new();
        }
        let n = self.buf.len();
        self.emit(n)
    }

    /// Releases everything held now, redacted as at the end of the stream, and goes on: use it
    /// where the text is known to end for now (the SSE stream calls it at an event that carries
    /// no streamed text). A value split across a flush is not recognised. Inside a key block
    /// redacted before its END line, the held key body is dropped and dropping goes on.
    pub fn flush(&mut self) -> String {
        if self.in_key && !self.drop_key_body() {
            self.drop_key_bytes(self.buf.len());
            return String::new();
        }
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

    /// Where the buffer can be cut now; `pem` is [`unterminated_pem`] of the buffer.
    fn safe_cut(&self, pem: Option<usize>) -> usize {
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
        // ... and a private-key block whose END line is not complete yet (a block over
        // MAX_PEM_HOLD is handled by `push`).
        if let Some(pb) = pem {
            cut = cut.min(pb);
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
            ":=", "=>", "`", "  ", "\t\t\t\t\t\t\t\t\t", ">", ",", "\u{3000}", "ab3$Z", "2024-05-01", "v1.2.3.4",
            "ghp_", "aB3dE5gH7jK9mN2pQ4sT6vW8yZ0aB3dE5gH7j", "eyJ", "hbGciOiJIUzI1NiJ9", "xoxb-", "sk_live_", "sk-",
            "AIza", "ASIA", "asia", "-----BEGIN ", "RSA PRIVATE KEY-----", "-----END ",
            "DE89370400440532013000", "GB82WEST12345698765432", "DE\u{663}\u{664} 3704 0044 0532 0130 00", "X", "AB",
        ]), 0..40)) {
            let text: String = parts.concat();
            let r = red();
            let key = |c: Vec<Cand>| c.into_iter().map(|c| (c.entity, c.start, c.end)).collect::<Vec<_>>();
            proptest::prop_assert_eq!(key(r.candidates_gated(&text, true, None)), key(r.candidates_gated(&text, false, None)), "{:?}", text);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]
        /// `split_assignment` gives the regex's own groups whenever it answers.
        #[test]
        fn split_assignment_equals_captures(parts in proptest::collection::vec(proptest::sample::select(vec![
            "password", "DB_PASSWORD", "api-key", "\u{17F}ecret", "token", "x.y", "\"", "'", "`", " ", "\t", ":", "=", ":=",
            "=>", ">", "==", "::", "Tr0ub4dor&3x", "k9#Lm2$vQ8", "é", "\u{3000}", ",", "a", "7", "(", "[", ";",
        ]), 1..24)) {
            let text: String = parts.concat();
            let re = &detectors().iter().find(|d| d.entity == Entity::SecretAssignment).unwrap().re;
            for caps in re.captures_iter(&text) {
                let (m, k, v) = (caps.get(0).unwrap(), caps.get(1).unwrap(), caps.get(2).unwrap());
                if let Some((key, value)) = split_assignment(&text, m.start(), m.end()) {
                    proptest::prop_assert_eq!((key, value), (k.range(), v.range()), "{:?}", text);
                }
            }
        }
    }

    /// The plain definition of a kept digit run: maximal runs of `char::is_numeric` and
    /// ` .-()+` holding at least [`RunNeed::MIN_DIGITS`] digits.
    fn digit_runs_plain(text: &str) -> Vec<(usize, usize, usize)> {
        let mut runs: Vec<(usize, usize, usize)> = Vec::new();
        let mut cur: Option<(usize, usize, usize)> = None;
        for (i, c) in text.char_indices().chain([(text.len(), 'x')]) {
            if c.is_numeric() || " .-()+".contains(c) {
                let r = cur.get_or_insert((i, i, 0));
                r.1 = i + c.len_utf8();
                r.2 += usize::from(c.is_numeric());
            } else if let Some(r) = cur.take().filter(|r| r.2 >= RunNeed::MIN_DIGITS) {
                runs.push(r);
            }
        }
        runs
    }

    proptest::proptest! {
        #[test]
        fn digit_or_non_ascii_finds_the_first(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..40)) {
            let plain = bytes.iter().position(|&c| c.is_ascii_digit() || c >= 0x80);
            proptest::prop_assert_eq!(digit_or_non_ascii(&bytes), plain);
        }

        #[test]
        fn digit_runs_match_their_definition(parts in proptest::collection::vec(proptest::sample::select(vec![
            "1", "42", "1234", "\u{663}", "\u{2167}", "\u{FF14}", " ", "-", ".", "(", ")", "+", "a", "é", "\u{3000}", "x-", "--",
            "GB", "Q", "DE8", "AB-",
        ]), 0..30)) {
            let text: String = parts.concat();
            let scan = digit_scan(&text);
            let fast: Vec<_> = scan.runs.iter().map(|r| (r.start, r.end, r.digits)).collect();
            proptest::prop_assert_eq!(fast, digit_runs_plain(&text), "{:?}", text);
            // Every start of two capitals and a digit lies in a caps run.
            for site in caps_digit_sites(&text) {
                proptest::prop_assert!(scan.caps_runs.iter().any(|r| r.start <= site && site + 2 <= r.end), "{:?}", text);
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// `next_assignment` finds what the regex finds, from every starting offset.
        #[test]
        fn next_assignment_equals_find_at(parts in proptest::collection::vec(proptest::sample::select(vec![
            "password", "PaSsWoRd", "pa\u{17F}\u{17F}word", "api_\u{212A}ey", "connection-string", "token", "x", "my.app-",
            "key", "api_key", "API-KEY", "apikey", "conn", "string", "Bearer",
            "_", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "\"", "'", "`", " ", "\t", "        ", ":", "=", ":=",
            "=>", "Tr0ub4dor&3x", "k9#Lm2$vQ8", "é", ",", "\n", "S3cr3t!x9Q#S3cr3t!x9Q#S3cr3t!x9Q#S3cr3t!x9Q#",
            "\u{1}", "\u{7f}", "\u{85}", "\u{3000}", "\x0b", "\u{1F}",
        ]), 1..30)) {
            let text: String = parts.concat();
            let re = &detectors().iter().find(|d| d.entity == Entity::SecretAssignment).unwrap().re;
            for at in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
                let fast = next_assignment(re, &text, at).map(|m| m.range());
                proptest::prop_assert_eq!(fast, re.find_at(&text, at).map(|m| m.range()), "{:?} at {}", text, at);
            }
        }
    }

    proptest::proptest! {
        /// The literal search opens exactly the gates whose literals occur.
        #[test]
        fn literal_gates_match_substring_search(parts in proptest::collection::vec(proptest::sample::select(vec![
            "ACC", "A", "AIza", "ASIA", "asia", "KIA", "eyJ", "EYJ", "gh", "p_", "sk", "-", "_live_", "xox", "PASS", "w0rd",
            "\u{212A}", "\u{17F}", "to", "ken", "é", " ", "-----BEGIN ", "https://hooks.slack.com/", "whsec_", "rk_test_",
        ]), 0..30)) {
            let text: String = parts.concat();
            let mut prefixes = 0u64;
            for (i, d) in detectors().iter().enumerate() {
                if let Gate::Prefixes(lits) = d.gate {
                    if lits.iter().any(|l| text.contains(l)) {
                        prefixes |= 1 << i;
                    }
                }
            }
            proptest::prop_assert_eq!(open_literal_gates(&text), prefixes, "{:?}", text);
        }
    }

    #[test]
    fn prefix_literals_are_prefix_free() {
        let lits: Vec<&str> = detectors().iter().filter_map(|d| match d.gate { Gate::Prefixes(l) => Some(l), _ => None }).flatten().copied().collect();
        for a in &lits {
            for b in &lits {
                assert!(a == b || !b.starts_with(a), "{a:?} is a prefix of {b:?}");
            }
        }
    }

    #[test]
    fn split_assignment_defers_when_ambiguous() {
        let t = "password:=abcdefgh";
        assert_eq!(split_assignment(t, 0, t.len()), None);
        let t = "password' => `Tr0ub4dor&3x";
        assert_eq!(split_assignment(t, 0, t.len()), Some((0..8, 14..t.len())));
    }

    #[test]
    fn assignment_inside_rejected_value_is_found() {
        // The first match's value runs to the space and is rejected (a placeholder); the real
        // assignment inside it must still be found, as it is when a stream cut falls between
        // the two.
        let t = "password=<changeme>password=Tr0ub4dor&3xGB82 WEST";
        let found = ents(t);
        assert!(found.contains(&(Entity::SecretAssignment, "Tr0ub4dor&3xGB82".to_string())), "{found:?}");
        // Found by a stream property test: here the outer value is random around `example`, so
        // it is a secret itself and its redaction covers the inner one.
        let t = "password=Tr0ub4dor&3xaAAghp_aB3dE5gH7jK9mN2pQ4sT6vW8yZ0aB3dE5gH7j?dana@example.orgpassword=Tr0ub4dor&3xGB82 WEST";
        let found = ents(t);
        assert!(found.iter().any(|(e, v)| *e == Entity::SecretAssignment && v.contains("Tr0ub4dor&3xGB82")), "{found:?}");
    }

    #[test]
    fn tags_number_values_in_order_seen() {
        let r = red();
        let (mut state, vault) = (TagState::default(), Vault::new(4));
        let tag = |state: &mut TagState, v: &str| r.replacement(Entity::Email, Strategy::Tag, v, state, &vault);
        assert_eq!(tag(&mut state, "a@x.io"), "[EMAIL_1]");
        assert_eq!(tag(&mut state, "b@x.io"), "[EMAIL_2]");
        assert_eq!(tag(&mut state, "a@x.io"), "[EMAIL_1]");
        for i in 3..=120 {
            assert_eq!(tag(&mut state, &format!("{i}@x.io")), format!("[EMAIL_{i}]"));
        }
    }

    #[test]
    fn labels_are_upper_case_names() {
        for e in Entity::ALL {
            assert_eq!(e.label(), e.as_str().to_ascii_uppercase());
        }
    }

    #[test]
    fn gates() {
        let spans = |t| digit_runs(t).iter().map(|r| (r.start, r.end, r.digits)).collect::<Vec<_>>();
        assert_eq!(spans("call 555-0100 now (or +1 2), v1.2.3 at 1.2.3.4"), vec![(4, 14, 7), (38, 46, 4)]);
        assert_eq!(spans("no digits here"), vec![]);
        let r = digit_runs("ip 10.0.0.1, ssn 123-45-6789 or (415) 555 0132+")[..].to_vec();
        assert_eq!((r[0].digits, r[0].dots), (5, 3));
        assert_eq!((r[1].digits, r[1].dashes, r[1].spaces), (9, 2, 2));
        assert_eq!((r[2].digits, r[2].parens, r[2].spaces, r[2].plus), (10, 1, 3, 1));
        assert!(RunNeed::Ipv4.admits(&r[0]) && !RunNeed::Ssn.admits(&r[0]) && RunNeed::Ssn.admits(&r[1]) && RunNeed::Phone.admits(&r[2]));
        assert!(hex_colons("fe80::1") && hex_colons("a:b:c") && hex_colons("abcd:1234:") && !hex_colons("time: 10:30") && !hex_colons("x: y: z"));
        // Two starts in one caps run (the second before a non-ASCII letter) give one run.
        assert_eq!(digit_scan("GB82WEST12345698765432 XY\u{e9}").caps_runs.len(), 1);
        let sites = |t| caps_digit_sites(t).collect::<Vec<_>>();
        assert_eq!(sites("GB82 x DE\u{663} Gb82 G82 ABC1"), vec![0, 7, 22]);
        assert_eq!(sites("8A"), Vec::<usize>::new());
        let aws = detectors().iter().position(|d| d.entity == Entity::AwsAccessKey).unwrap();
        let google = detectors().iter().position(|d| d.entity == Entity::GoogleApiKey).unwrap();
        assert_eq!(open_literal_gates("in ASIA"), 1 << aws);
        assert_eq!(open_literal_gates("key ACCAIza"), 1 << aws | 1 << google);
        assert_eq!(open_literal_gates("in Asia, eyj"), 0);
        assert!(detectors().len() <= 64, "one bit per detector");
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
        // Review finding: the pattern takes up to 19 digits, so a second card right after the
        // first (or after a stray digit group) was swallowed by the first match.
        let card = |v: &str| (Entity::PaymentCard, v.to_string());
        assert_eq!(ents("4111 1111 1111 1111 4111 1111 1111 1111"), vec![card("4111 1111 1111 1111"); 2]);
        assert_eq!(ents("4111111111111111 4111111111111111"), vec![card("4111111111111111"); 2]);
        assert_eq!(ents("5500 0000 0000 0004 4111 1111 1111 1111"), vec![card("5500 0000 0000 0004"), card("4111 1111 1111 1111")]);
        assert_eq!(ents("ref 1234 4111 1111 1111 1111"), vec![card("4111 1111 1111 1111")]);
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

    /// The overlap rule applied to all candidates at once: in priority order, keep what overlaps
    /// nothing kept.
    fn resolve_overlaps_plain(mut c: Vec<Cand>) -> Vec<Cand> {
        c.sort_by_key(|x| (x.entity.priority(), std::cmp::Reverse(x.end - x.start), x.start));
        let mut kept: Vec<Cand> = Vec::new();
        for x in c {
            if kept.iter().all(|p| p.end <= x.start || x.end <= p.start) {
                kept.push(x);
            }
        }
        kept.sort_by_key(|x| x.start);
        kept
    }

    proptest::proptest! {
        #[test]
        fn overlaps_resolve_per_cluster_as_at_once(spans in proptest::collection::vec((0usize..60, 1usize..12, 0usize..Entity::ALL.len()), 0..40)) {
            let c: Vec<Cand> = spans.iter().map(|&(start, len, e)| Cand { entity: Entity::ALL[e], start, end: start + len }).collect();
            proptest::prop_assert_eq!(resolve_overlaps(c.clone()), resolve_overlaps_plain(c));
        }
    }

    #[test]
    fn overlap_prefers_specific_secret() {
        let key = format!("sk-proj-{}", "Ab3De5Gh7Jk9Mn2Pq4St6Vw8Yz0".repeat(3));
        let t = format!("OPENAI_API_KEY={key}");
        assert_eq!(ents(&t), vec![(Entity::OpenaiKey, key)]);
    }

    #[test]
    fn card_check_wants_one_separator_kind_and_at_most_19_digits() {
        let t = "pay 4111 1111 1111 1111 now";
        assert!(check_card(t, 4, 23));
        let mixed = "pay 4111 1111-1111 1111 now";
        assert!(!check_card(mixed, 4, 23));
        let dashes = "pay 4111-1111-1111-1111 now";
        assert!(check_card(dashes, 4, 23));
        let long = "41111111111111111111"; // 20 digits, no card number is that long
        assert!(!check_card(long, 0, long.len()));
        assert_eq!(card_digits("4111 1111"), Some((*b"41111111\0\0\0\0\0\0\0\0\0\0\0", 8)));
        assert_eq!(card_digits(long), None);
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
