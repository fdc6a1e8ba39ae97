//! Fuzz policy and rule-pack parsing (TOML and JSON) and firewall building: errors, never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    for p in [vallum::Policy::from_toml(s), vallum::Policy::from_json(s)].into_iter().flatten() {
        let _ = vallum::Firewall::builder().policy(p).build();
    }
    let _ = vallum::RulePack::from_toml(s);
    let _ = vallum::RulePack::from_json(s);
});
