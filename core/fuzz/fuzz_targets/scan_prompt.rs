//! Fuzz `scan_prompt` and `scan_conversation`: no panic, spans inside the text on char boundaries.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static FW: OnceLock<vallum::Firewall> = OnceLock::new();
    let fw = FW.get_or_init(|| vallum::Firewall::with_defaults().expect("default firewall"));
    let text = String::from_utf8_lossy(data);
    let v = fw.scan_prompt(&text);
    assert!((0.0..=1.0).contains(&v.score));
    for m in &v.matches {
        assert!(m.start < m.end && m.end <= text.len());
        assert!(text.is_char_boundary(m.start) && text.is_char_boundary(m.end));
    }
    let turns: Vec<&str> = text.split('\u{1}').collect();
    let _ = fw.scan_conversation(&turns);
});
