//! Fuzz `scan_output` and the streaming redactor: no panic, text outside findings unchanged,
//! streamed output equal to whole output.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static FW: OnceLock<vallum::Firewall> = OnceLock::new();
    let fw = FW.get_or_init(|| vallum::Firewall::with_defaults().expect("default firewall"));
    let text = String::from_utf8_lossy(data);
    let r = fw.scan_output(&text);
    let mut rebuilt = String::new();
    let mut pos = 0;
    for f in &r.findings {
        rebuilt.push_str(&text[pos..f.start]);
        rebuilt.push_str(&f.replacement);
        pos = f.end;
    }
    rebuilt.push_str(&text[pos..]);
    assert_eq!(rebuilt, r.text);
    let mut s = fw.stream_redactor();
    let mut out = String::new();
    let mut start = 0;
    for (i, _) in text.char_indices().step_by(7) {
        out.push_str(&s.push(&text[start..i]));
        start = i;
    }
    out.push_str(&s.push(&text[start..]));
    out.push_str(&s.finish());
    assert_eq!(out, r.text);
});
