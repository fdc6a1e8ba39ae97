//! Keyed, invisible watermark for model outputs.
//!
//! # Design
//! - **Payload**: a `u64` chosen by the caller (e.g. a client or request id).
//! - **Frame**: 64 payload bits + a 32-bit tag `HMAC-SHA256(key, "vallum-wm/v1" ‖ payload)[..4]`
//!   = 96 bits = 48 base-4 symbols, preceded by one sync symbol: 49 symbols.
//! - **Carriers**: five default-ignorable, zero-width characters: U+200B, U+200C, U+2060, U+2062
//!   carry the symbols 0–3 and U+2064 marks the frame start.
//! - **Placement**: two symbols right after every word gap (a single space, or CJK punctuation
//!   `。，、！？；：`, between two non-space characters), outside fenced code blocks
//!   (```` ``` ```` / `~~~`), inline code spans and URLs. Frames repeat back to back until the text
//!   ends, so any excerpt with about 26+ consecutive gaps holds a whole frame and longer excerpts
//!   (≈50 words) hold two or more copies that are combined by per-position majority vote.
//! - **Detection** aligns symbols on the sync marks, votes, and accepts the single resulting
//!   candidate only if its tag verifies. A random text or a wrong key therefore yields a false
//!   payload with probability 2⁻³² per call.
//! - **Exact removal**: [`strip`] deletes only runs of carriers that directly follow a gap
//!   character, so `strip(embed(t, p)) == t` for every `t` without such runs.
//! - **Carriers already in the text**: a gap already followed by a carrier (a text marked
//!   before, or a model asked to print a zero-width space after a space) is left as it is and
//!   the other gaps are marked, so one foreign carrier cannot keep a whole output unmarked; the
//!   text is never changed but for the inserted runs. [`Watermarker::detect`] reads only runs of
//!   exactly two carriers (what `embed` writes), so a foreign carrier present before marking, one
//!   alone or three and more in a row, does not shift the frame. A foreign *pair* reads like a
//!   mark and shifts the frame copy it falls in (a short text can lose its mark; longer ones
//!   are outvoted by their other copies), and so does a carrier added after marking. A text that
//!   quotes a marked excerpt gets its other gaps marked; detection then yields the payload with
//!   the most copies, or none when the votes split (often, when the two parts are of similar
//!   length).
//!
//! # Limits
//! Anyone who deletes zero-width characters (or retypes the text, or paraphrases it) removes the
//! mark: it traces copy-pasted leaks, it is no defence against a deliberate adversary. Texts with
//! fewer than ~26 word gaps (outside code) cannot carry a whole frame. Renderers that show
//! zero-width characters will reveal it.

use crate::keys::hmac_sha256;

const DATA: [char; 4] = ['\u{200B}', '\u{200C}', '\u{2060}', '\u{2062}'];
const SYNC: char = '\u{2064}';
/// Data symbols per frame (96 bits / 2 bits per symbol).
const FRAME_SYMBOLS: usize = 48;
/// Symbols written after each gap.
const PER_GAP: usize = 2;

/// True for the five watermark carrier characters.
pub fn is_carrier(c: char) -> bool {
    c == SYNC || DATA.contains(&c)
}

fn is_gap_char(c: char) -> bool {
    matches!(c, ' ' | '。' | '，' | '、' | '！' | '？' | '；' | '：')
}

/// A recovered watermark.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Detection {
    /// The embedded payload (tag verified).
    pub payload: u64,
    /// Carrier symbols read (data and sync).
    pub marks: usize,
    /// Share of votes agreeing with the decoded frame, 0..1 (1.0 = every copy agreed).
    pub confidence: f32,
}

/// What starts a URL for [`excluded_ranges`] and [`StreamWatermarker`].
const URL_MARKERS: [&str; 2] = ["://", "www."];

/// Byte ranges where no mark may be placed: fenced code blocks, inline code, URLs.
fn excluded_ranges(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    // Fenced code blocks, line based.
    let mut fence_start: Option<(usize, &str)> = None;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        let marker = if t.starts_with("```") { Some("```") } else if t.starts_with("~~~") { Some("~~~") } else { None };
        match (fence_start, marker) {
            (None, Some(m)) => fence_start = Some((pos, m)),
            (Some((s, m)), Some(m2)) if m == m2 => {
                out.push((s, pos + line.len()));
                fence_start = None;
            }
            _ => {}
        }
        pos += line.len();
    }
    if let Some((s, _)) = fence_start {
        out.push((s, text.len()));
    }
    // Inline code: backtick pairs on one line outside fences.
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'`' && !out.iter().any(|&(s, e)| s <= i && i < e) {
            if let Some(j) = text[i + 1..].find(['`', '\n']) {
                let j = i + 1 + j;
                if bytes[j] == b'`' {
                    out.push((i, j + 1));
                    i = j + 1;
                    continue;
                }
            }
        }
        i += 1;
    }
    // URLs: from `://` or `www.` up to the next whitespace. A gap character is a space or CJK
    // punctuation, so only the latter can fall inside one, and only after its `://` or `www.`
    // (a scheme is ASCII letters): starting there, not at the word's start, lets a stream
    // watermarker, which cannot look ahead, skip the same gaps (see `StreamWatermarker`).
    for pat in URL_MARKERS {
        let mut from = 0;
        while let Some(k) = text[from..].find(pat) {
            let k = from + k;
            let end = text[k..].find(char::is_whitespace).map(|x| k + x).unwrap_or(text.len());
            out.push((k, end));
            from = end.max(k + pat.len());
        }
    }
    out.sort_unstable();
    out
}

/// Byte offsets just after each usable gap character.
fn gap_positions(text: &str) -> Vec<usize> {
    let ex = excluded_ranges(text);
    let mut gaps = Vec::new();
    let mut prev: Option<char> = None;
    let mut it = text.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        let next = it.peek().map(|&(_, n)| n);
        if is_gap_char(c)
            && prev.is_some_and(|p| !p.is_whitespace() && !is_carrier(p))
            && next.is_some_and(|n| !n.is_whitespace() && !is_carrier(n))
        {
            let at = i + c.len_utf8();
            if !ex.iter().any(|&(s, e)| s <= i && at <= e) {
                gaps.push(at);
            }
        }
        prev = Some(c);
    }
    gaps
}

/// Removes every run of carrier characters that directly follows a gap character. Exact inverse
/// of [`Watermarker::embed`]; other text (including zero-width characters elsewhere, such as the
/// ZWNJ inside Persian words) is left alone. No key needed.
pub fn strip(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_run = false;
    for c in text.chars() {
        if in_run && is_carrier(c) {
            continue;
        }
        in_run = is_gap_char(c);
        out.push(c);
    }
    out
}

/// Embeds and detects watermarks under one key. Cheap to clone.
#[derive(Clone)]
pub struct Watermarker {
    key: [u8; 32],
}

impl std::fmt::Debug for Watermarker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watermarker(<key>)")
    }
}

impl Watermarker {
    /// A watermarker for a 32-byte key (derive one with the firewall; see [`crate::Firewall`]).
    pub fn new(key: [u8; 32]) -> Self {
        Watermarker { key }
    }

    fn tag(&self, payload: u64) -> u32 {
        let mut msg = b"vallum-wm/v1".to_vec();
        msg.extend_from_slice(&payload.to_be_bytes());
        let m = hmac_sha256(&self.key, &msg);
        u32::from_be_bytes([m[0], m[1], m[2], m[3]])
    }

    fn frame(&self, payload: u64) -> Vec<char> {
        let bits: u128 = ((payload as u128) << 32) | self.tag(payload) as u128;
        let mut f = Vec::with_capacity(FRAME_SYMBOLS + 1);
        f.push(SYNC);
        for k in (0..FRAME_SYMBOLS).rev() {
            f.push(DATA[((bits >> (2 * k)) & 3) as usize]);
        }
        f
    }

    /// Number of word gaps available for marks in `text` (a whole frame needs 25).
    pub fn capacity(text: &str) -> usize {
        gap_positions(text).len()
    }

    /// Returns `text` with the watermark for `payload` inserted after every usable gap: a gap
    /// already followed by a carrier (a text marked before) is not usable, so a marked text comes
    /// back unchanged. Only characters are inserted; `strip(embed(t, p)) == t` when `t` has no
    /// carrier right after a gap.
    pub fn embed(&self, text: &str, payload: u64) -> String {
        let gaps = gap_positions(text);
        if gaps.is_empty() {
            return text.to_string();
        }
        let frame = self.frame(payload);
        let mut out = String::with_capacity(text.len() + gaps.len() * PER_GAP * 3);
        let mut pos = 0;
        let mut k = 0usize;
        for g in gaps {
            out.push_str(&text[pos..g]);
            for _ in 0..PER_GAP {
                out.push(frame[k % frame.len()]);
                k += 1;
            }
            pos = g;
        }
        out.push_str(&text[pos..]);
        out
    }

    /// Recovers the payload, or `None` when there is no whole frame or the tag does not verify
    /// under this key (a false payload has probability 2⁻³²).
    pub fn detect(&self, text: &str) -> Option<Detection> {
        // Read symbols from carrier runs after gap characters: runs of exactly PER_GAP carriers,
        // as embed writes them; a run of another length is somebody else's character.
        let mut syms: Vec<Option<u8>> = Vec::new(); // None = sync
        let symbol = |c: char| if c == SYNC { None } else { DATA.iter().position(|d| *d == c).map(|p| p as u8) };
        let mut run: Vec<char> = Vec::with_capacity(PER_GAP + 1);
        let mut in_run = false;
        for c in text.chars().chain(std::iter::once('\0')) {
            if in_run && is_carrier(c) {
                run.push(c);
                continue;
            }
            if run.len() == PER_GAP {
                syms.extend(run.iter().map(|&r| symbol(r)));
            }
            run.clear();
            in_run = is_gap_char(c);
        }
        let first_sync = syms.iter().position(Option::is_none)?;
        let mut votes = [[0u32; 4]; FRAME_SYMBOLS];
        // Tail of a frame before the first sync.
        for (k, s) in syms[..first_sync].iter().rev().enumerate() {
            if k >= FRAME_SYMBOLS {
                break;
            }
            if let Some(v) = s {
                votes[FRAME_SYMBOLS - 1 - k][*v as usize] += 1;
            }
        }
        // Frames after each sync.
        let mut j = 0usize;
        let mut counting = false;
        for s in &syms[first_sync..] {
            match s {
                None => {
                    counting = true;
                    j = 0;
                }
                Some(v) if counting => {
                    if j < FRAME_SYMBOLS {
                        votes[j][*v as usize] += 1;
                        j += 1;
                    } else {
                        counting = false;
                    }
                }
                Some(_) => {}
            }
        }
        let mut bits: u128 = 0;
        let mut agree = 0u32;
        let mut total = 0u32;
        for v in &votes {
            let t: u32 = v.iter().sum();
            if t == 0 {
                return None;
            }
            let (best, n) = v.iter().enumerate().max_by_key(|(_, n)| **n).map(|(i, n)| (i, *n))?;
            bits = (bits << 2) | best as u128;
            agree += n;
            total += t;
        }
        let payload = (bits >> 32) as u64;
        let tag = (bits & 0xFFFF_FFFF) as u32;
        (tag == self.tag(payload)).then(|| Detection {
            payload,
            marks: syms.len(),
            confidence: agree as f32 / total as f32,
        })
    }
}

/// Watermarks a streamed text chunk by chunk, continuing the frame across chunks: the
/// concatenated output equals [`Watermarker::embed`] of the whole text for texts without code
/// (fenced blocks and inline code are tracked line by line; marks are never put inside them, nor
/// inside URLs).
/// Holds back nothing: a mark is written before the first character after a gap, whenever that
/// character arrives. A gap already followed by a carrier is left unmarked, as in `embed`.
#[derive(Debug, Clone)]
pub struct StreamWatermarker {
    frame: Vec<char>,
    k: usize,
    prev2: Option<char>,
    prev: Option<char>,
    in_fence: bool,
    in_inline: bool,
    /// Inside a URL: since `://` or `www.`, until whitespace.
    in_url: bool,
    /// The last four characters (for the URL markers).
    recent: [char; 4],
    line_head: String,
    enabled: bool,
}

impl StreamWatermarker {
    pub(crate) fn new(wm: &Watermarker, payload: u64, enabled: bool) -> Self {
        StreamWatermarker {
            frame: wm.frame(payload),
            k: 0,
            prev2: None,
            prev: None,
            in_fence: false,
            in_inline: false,
            in_url: false,
            recent: ['\0'; 4],
            line_head: String::new(),
            enabled,
        }
    }

    /// Watermarks the next chunk and returns it.
    pub fn push(&mut self, chunk: &str) -> String {
        if !self.enabled {
            return chunk.to_string();
        }
        let mut out = String::with_capacity(chunk.len() + 16);
        for c in chunk.chars() {
            let gap_before = self.prev.is_some_and(is_gap_char)
                && self.prev2.is_some_and(|p| !p.is_whitespace() && !is_carrier(p))
                && !c.is_whitespace()
                && !is_carrier(c);
            if gap_before && !self.in_fence && !self.in_inline && !self.in_url {
                for _ in 0..PER_GAP {
                    out.push(self.frame[self.k % self.frame.len()]);
                    self.k += 1;
                }
            }
            out.push(c);
            self.track(c);
            self.prev2 = self.prev;
            self.prev = Some(c);
        }
        out
    }

    /// Ends the stream (nothing is held back, so this returns an empty string; kept for
    /// symmetry with [`crate::StreamRedactor::finish`]).
    pub fn finish(&mut self) -> String {
        String::new()
    }

    fn track(&mut self, c: char) {
        self.recent = [self.recent[1], self.recent[2], self.recent[3], c];
        if c.is_whitespace() {
            self.in_url = false;
        } else if URL_MARKERS.iter().any(|m| m.chars().rev().zip(self.recent.iter().rev()).all(|(a, b)| a == *b)) {
            self.in_url = true;
        }
        if c == '\n' {
            self.line_head.clear();
            self.in_inline = false;
            return;
        }
        if self.line_head.len() < 8 && !(self.line_head.is_empty() && c.is_whitespace()) {
            self.line_head.push(c);
            if self.line_head == "```" || self.line_head == "~~~" {
                self.in_fence = !self.in_fence;
                return;
            }
        }
        if c == '`' && !self.in_fence && !self.line_head.starts_with("``") {
            self.in_inline = !self.in_inline;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(n: usize) -> String {
        (0..n).map(|i| format!("word{i}")).collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn round_trip_and_strip() {
        let w = Watermarker::new([7; 32]);
        let t = words(60);
        let m = w.embed(&t, 0xDEAD_BEEF_1234);
        assert_ne!(m, t);
        assert_eq!(strip(&m), t);
        let d = w.detect(&m).unwrap();
        assert_eq!(d.payload, 0xDEAD_BEEF_1234);
        assert!(d.confidence > 0.99);
    }

    #[test]
    fn wrong_key_and_plain_text_yield_nothing() {
        let m = Watermarker::new([7; 32]).embed(&words(60), 42);
        assert!(Watermarker::new([8; 32]).detect(&m).is_none());
        assert!(Watermarker::new([7; 32]).detect(&words(60)).is_none());
    }

    #[test]
    fn excerpts_of_fifty_words_are_detected() {
        let w = Watermarker::new([3; 32]);
        let m = w.embed(&words(400), 77);
        let ws: Vec<&str> = m.split(' ').collect();
        for start in [0usize, 13, 101, 257, 340] {
            // Re-join with the original single spaces: each element keeps its leading carriers.
            let excerpt = ws[start..start + 50].join(" ");
            assert_eq!(w.detect(&excerpt).map(|d| d.payload), Some(77), "excerpt at word {start}");
        }
    }

    #[test]
    fn no_marks_in_code_or_urls() {
        let w = Watermarker::new([1; 32]);
        let t = format!("{} see https://example.com/a b and `x y z` then\n```\nlet a = b + c;\n```\n{}", words(10), words(10));
        let m = w.embed(&t, 5);
        assert!(m.contains("https://example.com/a"));
        assert!(m.contains("`x y z`"));
        assert!(m.contains("```\nlet a = b + c;\n```"));
        assert_eq!(strip(&m), t);
    }

    /// `text` watermarked by a [`StreamWatermarker`] fed `step` characters at a time.
    fn streamed(w: &Watermarker, payload: u64, text: &str, step: usize) -> String {
        let mut s = StreamWatermarker::new(w, payload, true);
        let chars: Vec<char> = text.chars().collect();
        let mut out: String = chars.chunks(step).map(|c| s.push(&c.iter().collect::<String>())).collect();
        out.push_str(&s.finish());
        out
    }

    #[test]
    fn streaming_equals_whole_for_any_chunking() {
        let w = Watermarker::new([2; 32]);
        let t = format!("{} 早上好，今天天气怎么样？ {}", words(70), words(30));
        let whole = w.embed(&t, 31337);
        for step in [1usize, 2, 3, 7, 50, 1000] {
            assert_eq!(streamed(&w, 31337, &t, step), whole, "step {step}");
        }
        let mut s = StreamWatermarker::new(&w, 1, true);
        let code = "intro text here\n```\nlet a = b + c;\n```\nand `x y` done";
        let out = s.push(code);
        assert!(out.contains("let a = b + c;") && out.contains("`x y`"));
        assert_eq!(strip(&out), code);
    }

    /// Checks that `out` is `text` with runs of exactly PER_GAP carriers inserted right after gap
    /// characters, and nothing else changed; returns the number of runs inserted.
    fn inserted_runs(text: &str, out: &str) -> usize {
        let (t, o): (Vec<char>, Vec<char>) = (text.chars().collect(), out.chars().collect());
        let (mut i, mut j, mut runs) = (0, 0, 0);
        while j < o.len() {
            // An inserted run: PER_GAP carriers right after a gap character, where the text goes
            // on with something else (embed never marks a gap the text follows with a carrier).
            let run = j > 0 && is_gap_char(o[j - 1]) && o[j..].iter().take(PER_GAP).filter(|c| is_carrier(**c)).count() == PER_GAP;
            if run && t.get(i) != Some(&o[j]) {
                runs += 1;
                j += PER_GAP;
                continue;
            }
            assert_eq!(t.get(i), Some(&o[j]), "changed at char {i} of {text:?}");
            i += 1;
            j += 1;
        }
        assert_eq!(i, t.len(), "text cut short");
        runs
    }

    #[test]
    fn foreign_carriers_do_not_stop_the_mark() {
        // A model asked to print a zero-width space after a space, a ZWNJ after a space and a
        // stray word joiner: the other gaps are still marked, and nothing of the text changes.
        let w = Watermarker::new([9; 32]);
        let mut t = String::from("Sure, \u{200B}here it is.");
        for (i, word) in words(70).split(' ').enumerate() {
            t.push(' ');
            if i % 17 == 3 {
                t.push(['\u{200B}', '\u{200C}', '\u{2060}'][i % 3]);
            }
            t.push_str(word);
        }
        let m = w.embed(&t, 4242);
        assert!(inserted_runs(&t, &m) >= 60);
        assert_eq!(strip(&m), strip(&t));
        assert_eq!(w.detect(&m).map(|d| d.payload), Some(4242));
        // Streaming gives the same text for any chunking.
        for step in [1usize, 3, 64] {
            assert_eq!(streamed(&w, 4242, &t, step), m, "step {step}");
        }
    }

    #[test]
    fn stream_skips_the_gaps_of_urls_as_embed_does() {
        // CJK punctuation is a gap; inside a URL (after its `://` or `www.`) it is not marked,
        // before the scheme it is, whatever the chunking (review finding: the stream marked
        // `www.a，b` while embed did not).
        let w = Watermarker::new([4; 32]);
        let t = format!("{} 请看，https://例子。中国/a，b 和 www.a，b 还有，更多 {}", words(40), words(20));
        let whole = w.embed(&t, 99);
        assert!(whole.contains("https://例子。中国/a，b") && whole.contains("www.a，b"));
        assert!(!whole.contains("请看，https"), "the gap before the scheme is marked");
        for step in [1usize, 2, 5, 1000] {
            assert_eq!(streamed(&w, 99, &t, step), whole, "step {step}");
        }
        assert_eq!(strip(&whole), t);
    }

    #[test]
    fn existing_marks_are_not_doubled() {
        let w = Watermarker::new([1; 32]);
        let m = w.embed(&words(40), 1);
        assert_eq!(w.embed(&m, 2), m);
        // ZWNJ inside a word is not a mark and survives strip.
        let persian = "می\u{200C}خواهم برو";
        assert_eq!(strip(persian), persian);
    }
}
