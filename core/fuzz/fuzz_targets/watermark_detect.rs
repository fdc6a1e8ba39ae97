//! Fuzz watermark `detect` on arbitrary text, and `strip(embed(t)) == t`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static FW: OnceLock<vallum::Firewall> = OnceLock::new();
    let fw = FW.get_or_init(|| vallum::Firewall::builder().key(&[7u8; 32]).build().expect("firewall"));
    let text = String::from_utf8_lossy(data);
    let _ = fw.detect_watermark(&text);
    let marked = fw.watermark(&text, data.len() as u64);
    assert_eq!(fw.strip_watermark(&marked), text);
});
