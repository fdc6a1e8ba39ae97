//! Redaction and watermarking of server-sent event streams (`text/event-stream`, as parsed by
//! the WHATWG HTML standard, § 9.2 "Server-sent events").
//!
//! An LLM API streams its reply as many small events, one or a few tokens each, often as JSON
//! deltas (`data: {"choices":[{"delta":{"content":"dana"}}]}`). Redacting the raw bytes of
//! such a stream misses every value split across events and can break the JSON (an e-mail
//! pattern next to a `\n` escape takes the `n`). [`SseStream`] works on what an SSE client
//! sees instead:
//!
//! - Lines end with CRLF, LF or CR; an event ends with a blank line; `data:` values (one leading
//!   space removed) of one event are joined with `\n`.
//! - **JSON events** (the data parses as a JSON object or array without duplicate keys): every
//!   string at a path of `sse.text_fields` is a piece of a *text stream* named by its concrete
//!   path (`choices[0].delta.content`; an array element with an integer `index` field is named
//!   by it, so parallel choices are separate streams); the pieces of one stream go through one
//!   [`StreamRedactor`] and one [`StreamWatermarker`] across events, so a value split across
//!   events is redacted and the watermark frame runs on. Strings at `sse.redact_fields`
//!   (tool-call arguments) are streamed the same way but never watermarked. Every other string
//!   is redacted on its own ([`crate::Firewall::scan_output`]); numbers, keys and structure
//!   are kept.
//! - **Plain-text events** (anything else but `[DONE]`): the data is a piece of one text stream,
//!   joined to the previous event's data with nothing between them (`sse.plain_data = "tokens"`,
//!   for token streams) or as a new line (`"lines"`, for one message per event). Each event's
//!   text is then also redacted on its own, so that a value at the end of one message is not
//!   missed when it runs into the next word.
//! - `[DONE]` (OpenAI's end marker) and events without data pass unchanged.
//!
//! **Release.** An event is held until the redactor has released all of its text (the same
//! hold as [`StreamRedactor`]: the unfinished line up to `redaction.stream_holdback_bytes`, a
//! growing token, an open private-key block), then gets exactly the redacted text of its own
//! pieces; a replacement whose value spans several events goes to the event where the value
//! starts, and the later events carry an empty string. Events of one text stream keep their
//! order; an event held for its stream does not hold events of other streams (open reasoning
//! text while the answer streams, parallel choices, separate blocks or items: streams are named
//! by their path and by the event's top-level `index` / `item_id` / `output_index` /
//! `content_index`). An event that ends a stream (a choice's `finish_reason`, a `type` ending
//! in `_stop` or `.done` for its block or item, `message_stop`, `response.completed`, `[DONE]`)
//! releases that stream's held text ([`StreamRedactor::flush`]); no other event does, so a
//! ping between two halves of a value cannot cut it. An event with data but no streamed text
//! waits for every event before it, so it keeps its place. Comment-only blocks (keep-alives) go
//! at once. More than 4,096 queued events release every held stream.
//!
//! **Output.** An event whose text did not change is written byte for byte as it came; a
//! changed JSON event is written as one compact `data:` line (serde_json, key order kept;
//! numbers beyond `f64`/`u64`/`i64` precision lose digits), a changed plain-text event as one
//! `data:` line per line of its new text. Text outside redacted values is never changed, apart
//! from watermark carriers.

use std::collections::{HashMap, VecDeque};

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::redact::{Finding, StreamRedactor};
use crate::watermark::StreamWatermarker;

/// Default of `sse.text_fields`: the streamed text of the JSON event formats of common LLM APIs.
/// OpenAI Chat Completions and compatible servers (`choices[*].delta.content`, and
/// `reasoning_content` as DeepSeek and vLLM send it), OpenAI legacy Completions
/// (`choices[*].text`), the OpenAI Responses API (a top-level `delta` string in events of type
/// `response.output_text.delta`, `response.reasoning_summary_text.delta` and
/// `response.refusal.delta`), Anthropic Messages (`content_block_delta` events: `delta.text`,
/// `delta.thinking`), Google Gemini `streamGenerateContent?alt=sse`
/// (`candidates[*].content.parts[*].text`) and Hugging Face TGI (`token.text`).
pub const DEFAULT_TEXT_FIELDS: &[&str] = &[
    "choices[*].delta.content",
    "choices[*].delta.reasoning_content",
    "choices[*].text",
    "delta if type=response.output_text.delta",
    "delta if type=response.reasoning_summary_text.delta",
    "delta if type=response.refusal.delta",
    "delta.text",
    "delta.thinking",
    "candidates[*].content.parts[*].text",
    "token.text",
];

/// Default of `sse.redact_fields`: streamed JSON fragments (tool-call arguments), redacted
/// across events like text fields but never watermarked (a mark would break the JSON they
/// build): OpenAI Chat Completions `choices[*].delta.tool_calls[*].function.arguments`,
/// Anthropic `delta.partial_json` (`input_json_delta`) and the Responses API's
/// `response.function_call_arguments.delta`.
pub const DEFAULT_REDACT_FIELDS: &[&str] = &[
    "choices[*].delta.tool_calls[*].function.arguments",
    "delta.partial_json",
    "delta if type=response.function_call_arguments.delta",
];

/// How plain-text (not JSON) `data:` values of consecutive events are joined into one text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlainData {
    /// With nothing between them: each event is a piece of the text (token streams,
    /// `data: Hel`, `data: lo`). The default.
    Tokens,
    /// As separate lines: each event is a whole message; values never run across events.
    Lines,
}

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
    AnyIndex,
}

/// A parsed field path: `a.b`, `a[*].b`, `a[0].b` (keys cannot contain `.`, `[` or `]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldPath(Vec<Step>);

impl FieldPath {
    /// Parses `choices[*].delta.content`. Errors (`policy_invalid`, naming `what`) on an empty
    /// path, an empty key or a bracket that is not `[*]` or `[N]`.
    pub(crate) fn parse(s: &str, what: &str) -> Result<Self> {
        let bad = || Error::policy(format!("{what}: invalid field path {s:?} (expected e.g. \"choices[*].delta.content\")"));
        let mut steps = Vec::new();
        let mut rest = s;
        let mut first = true;
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix('[') {
                let close = r.find(']').ok_or_else(bad)?;
                let inner = &r[..close];
                steps.push(if inner == "*" {
                    Step::AnyIndex
                } else if !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_digit()) {
                    Step::Index(inner.parse().map_err(|_| bad())?)
                } else {
                    return Err(bad());
                });
                rest = &r[close + 1..];
            } else {
                let r = if first { rest } else { rest.strip_prefix('.').ok_or_else(bad)? };
                let end = r.find(['.', '[', ']']).unwrap_or(r.len());
                if end == 0 || r[end..].starts_with(']') {
                    return Err(bad());
                }
                steps.push(Step::Key(r[..end].to_string()));
                rest = &r[end..];
            }
            first = false;
        }
        if steps.is_empty() {
            return Err(bad());
        }
        Ok(FieldPath(steps))
    }

    fn matches(&self, path: &[PathStep<'_>]) -> bool {
        self.0.len() == path.len()
            && self.0.iter().zip(path).all(|(s, p)| match (s, p) {
                (Step::Key(k), PathStep::Key(q)) => k == q,
                (Step::Index(i), PathStep::Index { label, .. }) => i == label,
                (Step::AnyIndex, PathStep::Index { .. }) => true,
                _ => false,
            })
    }
}

/// One entry of `sse.text_fields` / `sse.redact_fields`: `PATH` or `PATH if type=VALUE` (the
/// field counts only in events whose top-level `type` string is VALUE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldSpec {
    path: FieldPath,
    type_is: Option<String>,
    watermark: bool,
}

impl FieldSpec {
    /// Parses one entry; errors (`policy_invalid`, naming `what`) as [`FieldPath::parse`], or on
    /// an empty type value.
    pub(crate) fn parse(s: &str, what: &str, watermark: bool) -> Result<Self> {
        let (path, type_is) = match s.split_once(" if type=") {
            Some((p, t)) if !t.is_empty() && !t.contains(char::is_whitespace) => (p, Some(t.to_string())),
            Some(_) => return Err(Error::policy(format!("{what}: invalid type filter in {s:?} (expected \"PATH if type=VALUE\")"))),
            None => (s, None),
        };
        Ok(FieldSpec { path: FieldPath::parse(path, what)?, type_is, watermark })
    }
}

/// A step of a concrete path inside one JSON document. An array element that is an object
/// with an integer `index` field (OpenAI's `choices`, `tool_calls`) is labelled by that index,
/// not by its position, so that parallel choices sent one per event stay separate streams.
#[derive(Debug, Clone, Copy)]
enum PathStep<'a> {
    Key(&'a str),
    Index { pos: usize, label: usize },
}

fn path_label(path: &[PathStep<'_>]) -> String {
    let mut s = String::new();
    for p in path {
        match p {
            PathStep::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            PathStep::Index { label, .. } => {
                s.push('[');
                s.push_str(&label.to_string());
                s.push(']');
            }
        }
    }
    s
}

/// RFC 6901 JSON pointer of a concrete path.
fn pointer(path: &[PathStep<'_>]) -> String {
    let mut s = String::new();
    for p in path {
        s.push('/');
        match p {
            PathStep::Key(k) => s.push_str(&k.replace('~', "~0").replace('/', "~1")),
            PathStep::Index { pos, .. } => s.push_str(&pos.to_string()),
        }
    }
    s
}

/// A JSON value parsed with duplicate object keys refused: serde_json keeps the last of them,
/// so a secret in an earlier one would be neither seen nor removed, while the original bytes,
/// which some clients read first-key-wins, went out.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value without duplicate keys")
    }
    fn visit_bool<E>(self, v: bool) -> std::result::Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> std::result::Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> std::result::Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> std::result::Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> std::result::Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> std::result::Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Value, A::Error> {
        let mut v = Vec::new();
        while let Some(StrictValue(x)) = seq.next_element()? {
            v.push(x);
        }
        Ok(Value::Array(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Value, A::Error> {
        let mut m = serde_json::Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let StrictValue(v) = map.next_value()?;
            if m.insert(k, v).is_some() {
                return Err(de::Error::custom("duplicate key"));
            }
        }
        Ok(Value::Object(m))
    }
}

/// One text stream: the pieces of one field (or of plain-text data) across events.
#[derive(Debug)]
struct Channel {
    redactor: Option<StreamRedactor>,
    watermarker: Option<StreamWatermarker>,
    /// Input bytes pushed so far.
    pushed: usize,
    /// Redacted output not yet handed to an event; `out_base` is the output offset of `out[0]`.
    out: String,
    out_base: usize,
    /// Findings before this index are summed into `delta` for good.
    fcur: usize,
    /// Output length minus input length of the findings before `fcur`.
    delta: isize,
    /// The block or item the stream belongs to ([`scope_of`]) and its field path label.
    scope: String,
    label: String,
}

impl Channel {
    /// Input bytes whose redacted text has been released.
    fn committed(&self) -> usize {
        match &self.redactor {
            Some(r) => self.pushed - r.pending_bytes(),
            None => self.pushed,
        }
    }

    fn push(&mut self, piece: &str) -> usize {
        self.pushed += piece.len();
        match &mut self.redactor {
            Some(r) => {
                let out = r.push(piece);
                self.out.push_str(&out);
            }
            None => self.out.push_str(piece),
        }
        self.pushed
    }

    /// Releases everything held (at an event that ends the text so far, or the stream's end).
    fn flush(&mut self) {
        if let Some(r) = &mut self.redactor {
            let out = r.flush();
            self.out.push_str(&out);
        }
    }

    /// Output offset of input offset `x` (committed): text outside findings keeps its length;
    /// an offset inside a finding maps to the end of its replacement, so the whole replacement
    /// goes to the piece where the value starts.
    fn map(&mut self, x: usize) -> usize {
        let findings: &[Finding] = self.redactor.as_ref().map(|r| r.findings()).unwrap_or(&[]);
        let committed = self.committed();
        // A key block redacted before its END line grows while its body is dropped: its end is
        // the committed offset then, so only findings ending before that are summed for good.
        while let Some(f) = findings.get(self.fcur) {
            if f.end <= x && f.end < committed {
                self.delta += f.replacement.len() as isize - (f.end - f.start) as isize;
                self.fcur += 1;
            } else {
                break;
            }
        }
        let mut d = self.delta;
        for f in &findings[self.fcur..] {
            if f.end <= x {
                d += f.replacement.len() as isize - (f.end - f.start) as isize;
            } else if f.start < x {
                return (f.start as isize + d) as usize + f.replacement.len();
            } else {
                break;
            }
        }
        (x as isize + d).max(0) as usize
    }

    /// The redacted output of the input up to `end`, which must be committed.
    fn take(&mut self, end: usize) -> String {
        let m = self.map(end);
        let mut k = m.saturating_sub(self.out_base).min(self.out.len());
        while !self.out.is_char_boundary(k) {
            k -= 1;
        }
        debug_assert_eq!(self.out_base + k, m, "output map out of step");
        let text: String = self.out.drain(..k).collect();
        self.out_base += k;
        text
    }

    fn watermark(&mut self, text: String) -> String {
        match &mut self.watermarker {
            Some(w) => w.push(&text),
            None => text,
        }
    }
}

/// A piece of a text stream inside one event.
#[derive(Debug)]
struct Piece {
    channel: usize,
    /// End of the piece in the channel's input; `skip` ends a separator after it that belongs
    /// to no event (plain data joined as lines).
    end: usize,
    skip: usize,
    /// JSON pointer of the string, or None for the plain-text data of the event.
    pointer: Option<String>,
    original: String,
}

#[derive(Debug)]
enum Body {
    /// No text stream: written as it came, or with `new_data`.
    Raw,
    Plain,
    Json(Value),
}

/// An event waiting for the redaction of its pieces.
#[derive(Debug)]
struct Pending {
    /// Lines with their terminators, as they came.
    lines: Vec<(String, String)>,
    body: Body,
    pieces: Vec<Piece>,
    /// JSON strings redacted on their own that changed: (pointer, new text).
    fixed: Vec<(String, String)>,
    /// New data of a `Raw` event whose data was redacted as a whole.
    new_data: Option<String>,
}

impl Pending {
    fn comment_only(&self) -> bool {
        self.lines.iter().all(|(l, _)| l.is_empty() || l.starts_with(':'))
    }

    fn held_bytes(&self) -> usize {
        self.lines.iter().map(|(a, b)| a.len() + b.len()).sum::<usize>() + self.pieces.iter().map(|p| p.original.len()).sum::<usize>()
    }
}

/// Redacts and watermarks one `text/event-stream` response (see the module docs).
///
/// Made by [`crate::Firewall::sse_stream`]. Feed the decoded text chunk by chunk with
/// [`SseStream::push`]; each call returns the events (whole, with their blank line) that may
/// be sent now. [`SseStream::finish`] returns the rest, including an event or line the stream
/// did not terminate (passed on as it came, after redaction).
#[derive(Debug)]
pub struct SseStream {
    fw: crate::Firewall,
    redact: bool,
    payload: Option<u64>,
    fields: Vec<FieldSpec>,
    plain: PlainData,
    /// Text not yet split into lines; `scanned` bytes of it hold no line end.
    buf: String,
    scanned: usize,
    /// Complete lines of the event being read.
    lines: Vec<(String, String)>,
    queue: VecDeque<Pending>,
    channels: Vec<Channel>,
    by_name: HashMap<String, usize>,
    /// Findings of strings redacted on their own (the channels keep theirs).
    findings: Vec<Finding>,
    canary_leaked: bool,
    started: bool,
    /// Comment-only blocks in `queue`.
    comments: usize,
}

/// Name of the plain-text data channel (cannot collide with a JSON path label).
const PLAIN: &str = "\u{0}data";

impl SseStream {
    pub(crate) fn new(fw: crate::Firewall, redact: bool, payload: Option<u64>) -> Self {
        let sse = &fw.policy().sse;
        let fields = sse
            .text_fields
            .iter()
            .map(|s| FieldSpec::parse(s, "sse.text_fields", true))
            .chain(sse.redact_fields.iter().map(|s| FieldSpec::parse(s, "sse.redact_fields", false)))
            .filter_map(|f| f.ok())
            .collect();
        let plain = sse.plain_data;
        SseStream {
            fw,
            redact,
            payload,
            fields,
            plain,
            buf: String::new(),
            scanned: 0,
            lines: Vec::new(),
            queue: VecDeque::new(),
            channels: Vec::new(),
            by_name: HashMap::new(),
            findings: Vec::new(),
            canary_leaked: false,
            started: false,
            comments: 0,
        }
    }

    /// Adds a chunk of the stream; returns the text that can be sent now (possibly empty).
    pub fn push(&mut self, chunk: &str) -> String {
        let mut out = String::new();
        let mut chunk = chunk;
        if !self.started && !chunk.is_empty() {
            // A leading byte-order mark is not part of the first line (the client drops it).
            self.started = true;
            if let Some(r) = chunk.strip_prefix('\u{feff}') {
                out.push('\u{feff}');
                chunk = r;
            }
        }
        self.buf.push_str(chunk);
        self.split_lines(false);
        self.release(&mut out, false);
        out
    }

    /// Ends the stream; returns everything still held, redacted.
    pub fn finish(&mut self) -> String {
        let mut out = String::new();
        self.started = true;
        self.split_lines(true);
        if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            self.lines.push((line, String::new()));
        }
        if !self.lines.is_empty() {
            let lines = std::mem::take(&mut self.lines);
            self.enqueue(lines);
        }
        for c in &mut self.channels {
            c.flush();
        }
        self.release(&mut out, true);
        out
    }

    /// Every finding so far: those of the text streams (offsets in the stream of their field)
    /// and of strings redacted on their own (offsets in that string).
    pub fn findings(&self) -> Vec<Finding> {
        let mut v = self.findings.clone();
        for c in &self.channels {
            if let Some(r) = &c.redactor {
                v.extend_from_slice(r.findings());
            }
        }
        v
    }

    /// True once a canary token was seen.
    pub fn canary_leaked(&self) -> bool {
        self.canary_leaked || self.channels.iter().any(|c| c.redactor.as_ref().is_some_and(|r| r.canary_leaked()))
    }

    /// Bytes held back: text not split into lines, the event being read, queued events and
    /// their text, and redacted text not yet handed to an event.
    pub fn pending_bytes(&self) -> usize {
        self.buf.len()
            + self.lines.iter().map(|(a, b)| a.len() + b.len()).sum::<usize>()
            + self.queue.iter().map(Pending::held_bytes).sum::<usize>()
            + self.channels.iter().map(|c| c.out.len()).sum::<usize>()
    }

    fn split_lines(&mut self, at_end: bool) {
        let mut pos = 0;
        let mut from = self.scanned.min(self.buf.len());
        let text = std::mem::take(&mut self.buf);
        let b = text.as_bytes();
        while let Some(i) = memchr::memchr2(b'\r', b'\n', &b[from..]) {
            let at = from + i;
            let term = if b[at] == b'\n' {
                1
            } else if at + 1 < b.len() {
                if b[at + 1] == b'\n' {
                    2
                } else {
                    1
                }
            } else if at_end {
                1
            } else {
                break; // a CR at the end of the text so far: an LF may follow
            };
            let line = text[pos..at].to_string();
            let t = text[at..at + term].to_string();
            pos = at + term;
            from = pos;
            let blank = line.is_empty();
            self.lines.push((line, t));
            if blank {
                let lines = std::mem::take(&mut self.lines);
                self.enqueue(lines);
            }
        }
        // Long lines arrive in many chunks: keep the text (no copy) unless lines were taken,
        // and start the next search where this one stopped.
        self.buf = if pos == 0 { text } else { text[pos..].to_string() };
        self.scanned = self.buf.len() - usize::from(self.buf.ends_with('\r'));
    }

    fn channel(&mut self, scope: &str, label: &str, watermark: bool) -> usize {
        let name = format!("{scope}\u{0}{label}");
        if let Some(&i) = self.by_name.get(&name) {
            return i;
        }
        let i = self.channels.len();
        self.channels.push(Channel {
            redactor: self.redact.then(|| self.fw.stream_redactor()),
            watermarker: self.payload.filter(|_| watermark).map(|p| self.fw.stream_watermarker(p)),
            pushed: 0,
            out: String::new(),
            out_base: 0,
            fcur: 0,
            delta: 0,
            scope: scope.to_string(),
            label: label.to_string(),
        });
        self.by_name.insert(name, i);
        i
    }

    /// Redacts a string on its own; returns the new text when it changed.
    fn redact_whole(&mut self, s: &str) -> Option<String> {
        if !self.redact {
            return None;
        }
        let r = self.fw.scan_output(s);
        self.canary_leaked |= r.canary_leaked;
        if r.findings.is_empty() {
            return None;
        }
        self.findings.extend(r.findings);
        Some(r.text)
    }

    fn enqueue(&mut self, lines: Vec<(String, String)>) {
        let data = event_data(lines.iter().map(|(l, _)| l.as_str()));
        let mut ev = Pending { lines, body: Body::Raw, pieces: Vec::new(), fixed: Vec::new(), new_data: None };
        if let Some(data) = data.filter(|_| self.redact || self.payload.is_some()) {
            let t = data.trim_start();
            let json = if t.starts_with('{') || t.starts_with('[') {
                serde_json::from_str::<StrictValue>(&data).ok().map(|StrictValue(v)| v)
            } else {
                None
            };
            if let Some(v) = json {
                self.json_pieces(&mut ev, &v);
                self.flush_ended(&v);
                ev.body = Body::Json(v);
            } else if data == "[DONE]" {
                self.flush_where(|_| true);
            } else {
                let c = self.channel("", PLAIN, true);
                let end = self.channels[c].push(&data);
                let skip = match self.plain {
                    PlainData::Tokens => end,
                    PlainData::Lines => self.channels[c].push("\n"),
                };
                ev.pieces.push(Piece { channel: c, end, skip, pointer: None, original: data });
                ev.body = Body::Plain;
            }
        }
        if self.queue.len() >= MAX_QUEUED_EVENTS {
            // Bounds the queue (and the work of each release) when one stream stays held while
            // others flow: the held text is released as at the end of its stream.
            self.flush_where(|_| true);
        }
        if ev.comment_only() {
            self.comments += 1;
        }
        self.queue.push_back(ev);
    }

    /// Releases the held text of the streams a JSON event says have ended: every stream at
    /// `message_stop` / `response.completed` (and at `[DONE]`, see `enqueue`), the streams of
    /// the event's block or item at a `type` ending in `_stop` or `.done` (Anthropic
    /// `content_block_stop`, Responses `response.output_text.done`), and the streams of a choice
    /// with a `finish_reason`. Nothing else flushes: a value of one stream may go on after any
    /// other event.
    fn flush_ended(&mut self, v: &Value) {
        let scope = scope_of(v);
        if let Some(t) = v.get("type").and_then(Value::as_str) {
            if t == "message_stop" || t == "response.completed" {
                self.flush_where(|_| true);
            } else if t.ends_with("_stop") || t.ends_with(".done") {
                self.flush_where(|c| c.scope == scope);
            }
        }
        if let Some(choices) = v.get("choices").and_then(Value::as_array) {
            for (pos, ch) in choices.iter().enumerate() {
                if ch.get("finish_reason").is_some_and(|f| !f.is_null()) {
                    let i = ch.get("index").and_then(Value::as_u64).map_or(pos, |i| i as usize);
                    let prefix = format!("choices[{i}]");
                    self.flush_where(|c| c.scope == scope && c.label.starts_with(&prefix));
                }
            }
        }
    }

    fn flush_where(&mut self, f: impl Fn(&Channel) -> bool) {
        for c in &mut self.channels {
            if f(c) {
                c.flush();
            }
        }
    }

    /// Pushes the streamed-field strings of a JSON event to their channels and redacts the
    /// other strings on their own (iteratively: deep documents cannot exhaust the stack).
    fn json_pieces(&mut self, ev: &mut Pending, v: &Value) {
        let event_type = v.get("type").and_then(Value::as_str);
        let scope = scope_of(v);
        let mut stack: Vec<(&Value, Vec<PathStep<'_>>)> = vec![(v, Vec::new())];
        while let Some((v, path)) = stack.pop() {
            match v {
                Value::String(s) => {
                    let spec = self
                        .fields
                        .iter()
                        .find(|f| f.type_is.as_deref().is_none_or(|t| Some(t) == event_type) && f.path.matches(&path))
                        .map(|f| f.watermark);
                    if let Some(watermark) = spec {
                        let c = self.channel(&scope, &path_label(&path), watermark);
                        let end = self.channels[c].push(s);
                        ev.pieces.push(Piece { channel: c, end, skip: end, pointer: Some(pointer(&path)), original: s.clone() });
                    } else if let Some(new) = self.redact_whole(s) {
                        ev.fixed.push((pointer(&path), new));
                    }
                }
                Value::Array(a) => {
                    for (pos, x) in a.iter().enumerate().rev() {
                        let label = x.get("index").and_then(Value::as_u64).map_or(pos, |i| i as usize);
                        let mut p = path.clone();
                        p.push(PathStep::Index { pos, label });
                        stack.push((x, p));
                    }
                }
                Value::Object(o) => {
                    let items: Vec<_> = o.iter().collect();
                    for (k, x) in items.into_iter().rev() {
                        let mut p = path.clone();
                        p.push(PathStep::Key(k));
                        stack.push((x, p));
                    }
                }
                _ => {}
            }
        }
    }

    fn ready(&self, ev: &Pending) -> bool {
        ev.pieces.iter().all(|p| p.skip <= self.channels[p.channel].committed())
    }

    /// Writes the events that can go now. Events of one text stream keep their order; an event
    /// whose stream is still held does not hold back events of other streams (reasoning text
    /// still open while the answer streams, or parallel choices); an event without streamed
    /// text waits for every event before it, and comment-only blocks go at once.
    fn release(&mut self, out: &mut String, all: bool) {
        let mut blocked: Vec<usize> = Vec::new();
        let mut i = 0;
        while i < self.queue.len() {
            let ev = &self.queue[i];
            let go = if all || ev.comment_only() {
                true
            } else if ev.pieces.is_empty() {
                if i > 0 {
                    break;
                }
                true
            } else {
                !ev.pieces.iter().any(|p| blocked.contains(&p.channel)) && self.ready(ev)
            };
            if go {
                if let Some(ev) = self.queue.remove(i) {
                    if ev.comment_only() {
                        self.comments -= 1;
                    }
                    self.write(ev, out);
                }
                continue;
            }
            for p in &ev.pieces {
                if !blocked.contains(&p.channel) {
                    blocked.push(p.channel);
                }
            }
            if blocked.len() >= self.channels.len() && self.comments == 0 {
                break;
            }
            i += 1;
        }
    }

    /// Writes one event: as it came when nothing changed, else with its data rewritten.
    fn write(&mut self, ev: Pending, out: &mut String) {
        let Pending { lines, body, pieces, fixed, new_data } = ev;
        let mut changed = !fixed.is_empty();
        let mut texts: Vec<(Option<String>, String)> = Vec::with_capacity(pieces.len());
        for p in pieces {
            let c = &mut self.channels[p.channel];
            let mut t = c.take(p.end);
            if p.skip > p.end {
                c.take(p.skip); // the separator between plain values belongs to no event
            }
            if p.pointer.is_none() {
                // Plain data is also redacted on its own: joined as tokens, a value at the end
                // of one message could run into the next word and be missed.
                if let Some(new) = self.redact_whole(&t) {
                    t = new;
                }
            }
            let t = self.channels[p.channel].watermark(t);
            changed |= t != p.original;
            texts.push((p.pointer, t));
        }
        let data = match body {
            Body::Raw => new_data,
            _ if !changed => None,
            Body::Plain => texts.pop().map(|(_, t)| t),
            Body::Json(mut v) => {
                let sets = texts.into_iter().filter_map(|(p, t)| p.map(|p| (p, t))).chain(fixed);
                for (ptr, t) in sets {
                    if let Some(slot) = v.pointer_mut(&ptr) {
                        *slot = Value::String(t);
                    }
                }
                Some(v.to_string())
            }
        };
        let Some(data) = data else {
            for (l, t) in &lines {
                out.push_str(l);
                out.push_str(t);
            }
            return;
        };
        let mut written = false;
        for (l, t) in &lines {
            if field_of(l) != Some("data") {
                out.push_str(l);
                out.push_str(t);
                continue;
            }
            if written {
                continue;
            }
            written = true;
            let mut parts = data.split(['\n', '\r']).peekable();
            while let Some(part) = parts.next() {
                out.push_str("data: ");
                out.push_str(part);
                out.push_str(if parts.peek().is_some() { "\n" } else { t });
            }
        }
    }
}

/// Most events queued while a stream is held ([`SseStream`] then releases the held text).
const MAX_QUEUED_EVENTS: usize = 4096;

/// The block or item a JSON event belongs to: its top-level `index` (Anthropic content blocks),
/// `item_id`, `output_index` and `content_index` (OpenAI Responses). Streams of different
/// blocks or items are kept apart.
fn scope_of(v: &Value) -> String {
    let mut s = String::new();
    for k in ["index", "item_id", "output_index", "content_index"] {
        if let Some(x) = v.get(k).filter(|x| x.is_number() || x.is_string()) {
            s.push_str(k);
            s.push('=');
            s.push_str(&x.to_string());
            s.push(';');
        }
    }
    s
}

/// The data of an event as a client dispatches it: the values of its `data` lines (one
/// leading space removed) joined with `\n`; None when it has no `data` line.
fn event_data<'a>(lines: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut data: Option<String> = None;
    for l in lines {
        if field_of(l) == Some("data") {
            let value = l.get(5..).unwrap_or("");
            let value = value.strip_prefix(' ').unwrap_or(value);
            match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_string()),
            }
        }
    }
    data
}

/// The field name of an event-stream line (None for a comment).
fn field_of(line: &str) -> Option<&str> {
    match line.find(':') {
        Some(0) => None,
        Some(i) => Some(&line[..i]),
        None => Some(line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Firewall;
    use proptest::prelude::*;

    fn fw() -> Firewall {
        Firewall::builder().key(b"0123456789abcdef0123456789abcdef").build().unwrap()
    }

    fn run(fw: &Firewall, chunks: &[&str], redact: bool, payload: Option<u64>) -> String {
        let mut s = fw.sse_stream(redact, payload);
        let mut out = String::new();
        for c in chunks {
            out.push_str(&s.push(c));
        }
        out.push_str(&s.finish());
        out
    }

    fn openai(pieces: &[&str]) -> String {
        let mut s = String::new();
        for p in pieces {
            let ev = serde_json::json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]});
            s.push_str(&format!("data: {ev}\n\n"));
        }
        s.push_str("data: [DONE]\n\n");
        s
    }

    /// The `data` of each event, as an SSE client dispatches it (WHATWG parsing).
    fn events(stream: &str) -> Vec<String> {
        let norm = stream.replace("\r\n", "\n").replace('\r', "\n");
        norm.split("\n\n").filter_map(|block| event_data(block.split('\n'))).collect()
    }

    fn contents(stream: &str) -> Vec<String> {
        events(stream)
            .iter()
            .filter(|d| d.as_str() != "[DONE]")
            .map(|d| {
                let v: Value = serde_json::from_str(d).expect("every JSON event still parses");
                v["choices"][0]["delta"]["content"].as_str().unwrap().to_string()
            })
            .collect()
    }

    #[test]
    fn a_value_split_across_json_deltas_is_redacted_and_the_json_stays_valid() {
        let fw = fw();
        let input = openai(&["Contact:\n", "dana", "@exam", "ple.org", " today."]);
        let out = run(&fw, &[&input], true, None);
        let c = contents(&out);
        assert_eq!(c.len(), 5, "events keep their number");
        assert_eq!(c.concat(), "Contact:\n[EMAIL_1] today.");
        assert_eq!(c[1], "[EMAIL_1]", "the tag goes where the value starts");
        assert_eq!(c[2], "");
        assert!(out.ends_with("data: [DONE]\n\n"));
        assert!(!out.contains("\\[EMAIL"), "no escape is split");
    }

    #[test]
    fn a_secret_after_a_json_newline_escape_is_redacted() {
        let fw = fw();
        let key = ["AKIA", "IOSFODNN7", "EXAMPLE"].concat();
        let input = openai(&["Key:\n", &key, "\n"]);
        let out = run(&fw, &[&input], true, None);
        assert!(!out.contains(&key));
        assert_eq!(contents(&out).concat(), "Key:\n[AWS_ACCESS_KEY_1]\n");
    }

    #[test]
    fn plain_text_data_split_across_events_is_redacted() {
        let fw = fw();
        let out = run(&fw, &["data: dana\n\n", "data: @exam\n\n", "data: ple.org\n\n", "data:  bye\n\n"], true, None);
        assert_eq!(events(&out), vec!["[EMAIL_1]", "", "", " bye"]);
    }

    #[test]
    fn a_stream_with_nothing_to_redact_is_byte_exact() {
        let fw = fw();
        let input = "\u{feff}: keep-alive\r\nretry: 3000\r\nid: 7\r\nevent: message\r\ndata:{\"a\": \"caf\\u00e9\", \"n\": 1.50}\r\n\r\ndata: hello\rdata: world\r\r\nevent: x\ndata\n\ndata: [DONE]\n\ntrailing";
        for step in [1, 2, 3, 7, input.len()] {
            let chunks: Vec<&str> = chunk(input, step);
            assert_eq!(run(&fw, &chunks, true, None), input, "step {step}");
        }
        assert_eq!(run(&fw, &[input], false, None), input);
    }

    fn chunk(s: &str, step: usize) -> Vec<&str> {
        let mut v = Vec::new();
        let mut i = 0;
        while i < s.len() {
            let mut j = (i + step).min(s.len());
            while !s.is_char_boundary(j) {
                j += 1;
            }
            v.push(&s[i..j]);
            i = j;
        }
        v
    }

    #[test]
    fn keep_alive_comments_are_not_held_behind_held_text() {
        let fw = fw();
        let mut s = fw.sse_stream(true, None);
        assert_eq!(s.push("data: dana\n\n"), "", "held: the value may go on");
        assert_eq!(s.push(": ping\n\n"), ": ping\n\n");
        assert_eq!(s.push("data: @example.org\n\n"), "");
        assert_eq!(s.finish(), "data: [EMAIL_1]\n\ndata: \n\n");
        // Nothing held: comments keep their place.
        let input = "data: a b\n\n: ping\n\ndata: c\n\n";
        assert_eq!(crate::watermark::strip(&run(&fw, &[input], false, Some(3))), input);
    }

    #[test]
    fn other_strings_are_redacted_whole_and_structure_is_kept() {
        let fw = fw();
        let input = "event: tool\ndata: {\"type\":\"x\",\"note\":\"mail dana@example.org\",\"n\":[1,2]}\n\n";
        let out = run(&fw, &[input], true, None);
        assert_eq!(out, "event: tool\ndata: {\"type\":\"x\",\"note\":\"mail [EMAIL_1]\",\"n\":[1,2]}\n\n");
    }

    #[test]
    fn data_that_is_not_json_is_plain_text() {
        // A token that starts with `[` or `{` but is not JSON stays in the text stream.
        let fw = fw();
        let out = run(&fw, &["data: [dana\n\n", "data: @example.org] hi\n\n"], true, None);
        assert_eq!(events(&out), vec!["[[EMAIL_1]", "] hi"]);
        // A JSON event with a duplicate key is not JSON to us: redacted as text.
        let out = run(&fw, &["data: {\"note\":\"dana@example.org\",\"note\":\"x\"}\n\n"], true, None);
        assert_eq!(out, "data: {\"note\":\"[EMAIL_1]\",\"note\":\"x\"}\n\n");
    }

    #[test]
    fn anthropic_text_deltas_are_one_stream() {
        let fw = fw();
        let mut input = String::from("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"content\":[]}}\n\n");
        for p in ["Call +1 415", " 555 2671", " now"] {
            input.push_str(&format!(
                "event: content_block_delta\ndata: {}\n\n",
                serde_json::json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}})
            ));
        }
        input.push_str("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        let out = run(&fw, &[&input], true, None);
        let texts: Vec<String> = events(&out)
            .iter()
            .filter_map(|d| serde_json::from_str::<Value>(d).ok()?["delta"]["text"].as_str().map(String::from))
            .collect();
        assert_eq!(texts.concat(), "Call [PHONE_1] now");
        assert_eq!(out.matches("event: content_block_delta\n").count(), 3);
        assert!(out.starts_with("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"content\":[]}}\n\n"));
    }

    #[test]
    fn a_private_key_streamed_in_small_deltas_is_redacted() {
        let fw = fw();
        let body = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7";
        let key = format!("-----BEGIN PRIVATE KEY-----\n{body}\n{body}\n-----END PRIVATE KEY-----");
        let text = format!("Here it is:\n{key}\nDone.");
        let pieces: Vec<&str> = chunk(&text, 3);
        let out = run(&fw, &[&openai(&pieces)], true, None);
        let joined = contents(&out).concat();
        assert_eq!(joined, "Here it is:\n[PRIVATE_KEY_1]\nDone.");
        assert!(!out.contains(body));
    }

    #[test]
    fn json_deltas_are_watermarked_and_the_mark_is_detected() {
        let fw = fw();
        let text = "The quick brown fox jumps over the lazy dog while the cat watches from a sunny window sill and the birds sing in the old oak tree near the river bank on a calm summer morning.";
        let pieces: Vec<String> = text.split_inclusive(' ').map(String::from).collect();
        let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let out = run(&fw, &[&openai(&refs)], true, Some(0xC0FFEE));
        let joined = contents(&out).concat();
        assert_eq!(crate::watermark::strip(&joined), text, "only carriers were added");
        assert_eq!(fw.detect_watermark(&joined).map(|d| d.payload), Some(0xC0FFEE));
    }

    #[test]
    fn text_field_paths_are_validated() {
        for bad in ["", "a..b", "a[x]", "a[", "[*", "a.]", ".a"] {
            let doc = serde_json::json!({"sse": {"text_fields": [bad]}}).to_string();
            let e = crate::Policy::from_json(&doc).unwrap_err();
            assert_eq!(e.code(), crate::ErrorCode::PolicyInvalid, "{bad:?}");
            assert!(e.to_string().contains("sse.text_fields[0]"), "{e}");
        }
        let ok = crate::Policy::from_json(r#"{"sse": {"text_fields": ["message.content", "[*].text", "a[0][*].b"]}}"#).unwrap();
        assert_eq!(ok.sse.text_fields.len(), 3);
    }

    #[test]
    fn custom_text_fields_are_streamed() {
        let p = crate::Policy::from_json(r#"{"key_hex": "00112233445566778899aabbccddeeff", "sse": {"text_fields": ["message.content"]}}"#).unwrap();
        let fw = Firewall::builder().policy(p).build().unwrap();
        let out = run(&fw, &["data: {\"message\":{\"content\":\"dana@\"}}\n\n", "data: {\"message\":{\"content\":\"example.org\"}}\n\n"], true, None);
        assert_eq!(out, "data: {\"message\":{\"content\":\"[EMAIL_1]\"}}\n\ndata: {\"message\":{\"content\":\"\"}}\n\n");
    }

    fn delta(field: &str, piece: &str, index: u64) -> String {
        format!("data: {}\n\n", serde_json::json!({"choices": [{"index": index, "delta": {field: piece}}]}))
    }

    #[test]
    fn message_per_event_plain_data_is_also_redacted_per_event() {
        // Review finding: joined as tokens, "…org" ran into "Thanks" and the phone into "Bye".
        let fw = fw();
        let input = "data: my email is dana@example.org\n\ndata: Thanks, call +1 415 555 2671\n\ndata: Bye\n\n";
        let out = events(&run(&fw, &[input], true, None));
        assert!(!out.concat().contains("2671"), "{out:?}");
        assert_eq!(out[2], "Bye");
        // As lines, values never run across events and no text is lost.
        let p = crate::Policy::from_json(r#"{"sse": {"plain_data": "lines"}}"#).unwrap();
        let fwl = Firewall::builder().policy(p).key(b"0123456789abcdef0123456789abcdef").build().unwrap();
        let out = events(&run(&fwl, &[input], true, None));
        assert_eq!(out, vec!["my email is [EMAIL_1]", "Thanks, call [PHONE_1]", "Bye"]);
    }

    #[test]
    fn a_held_stream_does_not_hold_other_streams() {
        // Review finding: the last reasoning piece waited for more reasoning text, and every
        // content event after it waited with it, until the end of the stream.
        let fw = fw();
        let mut s = fw.sse_stream(true, None);
        let mut out = s.push(&delta("reasoning_content", "Think ", 0));
        out.push_str(&s.push(&delta("reasoning_content", "hard.", 0)));
        for i in 0..40 {
            out.push_str(&s.push(&delta("content", &format!(" w{i}\n"), 0)));
        }
        assert!(out.contains(" w38\\n"), "content streams while reasoning is held: {out}");
        assert!(!out.contains("hard."));
        // An event without streamed text (the finish reason) releases what is held, in order.
        let fin = "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
        let tail = s.push(fin);
        assert!(tail.contains("hard.") && tail.ends_with(fin), "{tail}");
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn parallel_choices_are_separate_streams() {
        // OpenAI sends each choice at array position 0 with its own `index`.
        let fw = fw();
        let input = [delta("content", "Write to dana", 0), delta("content", "Hello ", 1), delta("content", "@example.org\n", 0)].concat();
        let out = run(&fw, &[&input], true, None);
        assert!(!out.contains("@example.org"), "{out}");
        assert!(out.contains("[EMAIL_1]") && out.contains("Hello "));
    }

    #[test]
    fn tool_call_arguments_are_redacted_across_events_and_not_watermarked() {
        let fw = fw();
        let args = ["{\"to\": \"dana", "@example.org\", \"note\": \"see you at the meeting ", "tomorrow morning\"}"];
        let resp: String = args
            .iter()
            .map(|a| format!("event: response.function_call_arguments.delta\ndata: {}\n\n", serde_json::json!({"type": "response.function_call_arguments.delta", "delta": a})))
            .collect();
        let chat: String = args
            .iter()
            .map(|a| format!("data: {}\n\n", serde_json::json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": a}}]}}]})))
            .collect();
        let anthropic: String = args
            .iter()
            .map(|a| format!("data: {}\n\n", serde_json::json!({"type": "content_block_delta", "delta": {"type": "input_json_delta", "partial_json": a}})))
            .collect();
        for (name, input, get) in [
            ("responses", resp, "/delta"),
            ("chat", chat, "/choices/0/delta/tool_calls/0/function/arguments"),
            ("anthropic", anthropic, "/delta/partial_json"),
        ] {
            let out = run(&fw, &[&input], true, Some(9));
            let joined: String = events(&out).iter().map(|d| serde_json::from_str::<Value>(d).unwrap().pointer(get).unwrap().as_str().unwrap().to_string()).collect();
            let parsed: Value = serde_json::from_str(&joined).unwrap_or_else(|e| panic!("{name}: {e}: {joined}"));
            assert_eq!(parsed["to"], "[EMAIL_1]", "{name}");
            assert_eq!(crate::watermark::strip(&joined), joined, "{name}: no marks");
        }
        // Text deltas of the Responses API are watermarked; Anthropic thinking is streamed.
        let text = format!("data: {}\n\ndata: {}\n\n", serde_json::json!({"type": "response.output_text.delta", "delta": "mail dana"}), serde_json::json!({"type": "response.output_text.delta", "delta": "@example.org now"}));
        assert!(!run(&fw, &[&text], true, None).contains("@example"));
        let thinking = format!("data: {}\n\ndata: {}\n\n", serde_json::json!({"type": "content_block_delta", "delta": {"type": "thinking_delta", "thinking": "mail dana"}}), serde_json::json!({"type": "content_block_delta", "delta": {"type": "thinking_delta", "thinking": "@example.org now"}}));
        assert!(!run(&fw, &[&thinking], true, None).contains("@example"));
    }

    #[test]
    fn events_that_do_not_end_a_stream_do_not_cut_its_values() {
        // Second review finding: every event without streamed text flushed every stream, so a
        // ping, a retry line or another choice's finish between two halves let a value out.
        let fw = fw();
        let key = ["AKIA", "IOSFODNN7EXAMPLE"];
        let fin0 = "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n".to_string();
        let ping = "event: ping\ndata: {\"type\":\"ping\"}\n\n".to_string();
        for between in [fin0, ping, "retry: 1000\n\n".to_string(), "data: {\"choices\":[],\"usage\":null}\n\n".to_string()] {
            let input = [delta("content", &format!("key {}", key[0]), 1), between.clone(), delta("content", &format!("{} ok\n", key[1]), 1)].concat();
            let out = run(&fw, &[&input], true, None);
            assert!(!out.contains(key[1]) && out.contains("[AWS_ACCESS_KEY_1]"), "{between:?}: {out}");
        }
        // Responses API: each item / content part is its own stream.
        let ev = |t: &str, item: &str, d: &str| format!("data: {}\n\n", serde_json::json!({"type": t, "item_id": item, "output_index": 0, "content_index": 0, "delta": d}));
        let input = [
            ev("response.output_text.delta", "msg_1", "mail da"),
            ev("response.function_call_arguments.delta", "fc_1", "{\"x\":1}"),
            ev("response.output_text.delta", "msg_1", "na@example.org ok\n"),
        ]
        .concat();
        let out = run(&fw, &[&input], true, None);
        assert!(!out.contains("\"mail da\""), "{out}");
        assert!(out.contains("[EMAIL_1]") && out.contains("{\\\"x\\\":1}"), "{out}");
    }

    #[test]
    fn type_filters_are_validated() {
        for bad in ["delta if type=", "delta if type=a b"] {
            let doc = serde_json::json!({"sse": {"redact_fields": [bad]}}).to_string();
            let e = crate::Policy::from_json(&doc).unwrap_err();
            assert!(e.to_string().contains("sse.redact_fields[0]"), "{e}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Any chunking gives the same output; the streamed text equals redacting the whole text;
        /// every event still parses; with a watermark, stripping it gives the redacted text back.
        #[test]
        fn chunking_does_not_matter_and_only_values_change(
            parts in proptest::collection::vec(proptest::sample::select(vec![
                "dana", "@", "example.org", " ", "\n", "\"", "\\", "4111 1111", " 1111 1111", "é", "😀",
                "AKIA", "IOSFODNN7EXAMPLE", "password=", "hunter2hunter2X9", " the", " text", "-----BEGIN PRIVATE KEY-----\n",
                "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcw\n", "-----END PRIVATE KEY-----", "",
            ]), 0..40),
            cuts in proptest::collection::vec(1usize..40, 1..8),
            mark in any::<bool>(),
        ) {
            let fw = fw();
            let input = openai(&parts);
            let payload = mark.then_some(7u64);
            let whole = run(&fw, &[&input], true, payload);
            let mut chunks = Vec::new();
            let mut i = 0;
            let mut k = 0;
            while i < input.len() {
                let mut j = (i + cuts[k % cuts.len()]).min(input.len());
                while !input.is_char_boundary(j) { j += 1; }
                chunks.push(&input[i..j]);
                i = j;
                k += 1;
            }
            prop_assert_eq!(&run(&fw, &chunks, true, payload), &whole);
            let c = contents(&whole);
            prop_assert_eq!(c.len(), parts.len());
            let joined = crate::watermark::strip(&c.concat());
            prop_assert_eq!(joined, fw.scan_output(&parts.concat()).text);
        }
    }
}
