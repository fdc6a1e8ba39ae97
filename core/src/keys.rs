//! Secret keys and keyed primitives (HMAC-SHA256, RFC 2104 / FIPS 180-4).
//!
//! One master key (policy `key_hex` or the builder) is split into independent sub-keys per
//! purpose with `HMAC(master, "vallum/<purpose>/v1")`, so that a leaked keyed hash of one purpose
//! tells nothing about another.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{Error, Result};

type HmacSha256 = Hmac<Sha256>;

/// Shortest accepted key, in bytes (128 bits).
pub const MIN_KEY_BYTES: usize = 16;

/// Parses a hex key of at least [`MIN_KEY_BYTES`] bytes. Errors: `key_invalid`.
pub fn parse_key_hex(s: &str) -> Result<Vec<u8>> {
    let bytes = hex::decode(s.trim()).map_err(|e| Error::key(format!("not valid hex: {e}")))?;
    if bytes.len() < MIN_KEY_BYTES {
        return Err(Error::key(format!(
            "{} bytes is too short: at least {MIN_KEY_BYTES} bytes (32 hex digits)",
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// A fresh random 32-byte key from the operating system. Falls back to a time-and-address
/// derived key only if the OS generator fails (never seen on supported platforms).
pub fn random_key() -> Vec<u8> {
    let mut k = vec![0u8; 32];
    if getrandom::getrandom(&mut k).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let addr = &k as *const _ as usize;
        k = hmac_sha256(&t.to_le_bytes(), &addr.to_le_bytes()).to_vec();
    }
    k
}

/// Random bytes for nonces (canaries).
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    if getrandom::getrandom(&mut b).is_err() {
        let k = random_key();
        b.copy_from_slice(&k[..N.min(k.len())]);
    }
    b
}

/// HMAC-SHA256 of `msg` under `key`.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return [0u8; 32],
    };
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// Per-purpose sub-keys derived from one master key.
#[derive(Clone)]
pub(crate) struct KeySet {
    pub watermark: [u8; 32],
    pub hash: [u8; 32],
    pub canary: [u8; 32],
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeySet(<redacted>)")
    }
}

impl KeySet {
    pub fn derive(master: &[u8]) -> Self {
        KeySet {
            watermark: hmac_sha256(master, b"vallum/watermark/v1"),
            hash: hmac_sha256(master, b"vallum/hash/v1"),
            canary: hmac_sha256(master, b"vallum/canary/v1"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4231_case_2() {
        // RFC 4231 test case 2.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(hex::encode(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn key_parsing() {
        assert!(parse_key_hex("00112233445566778899aabbccddeeff").is_ok());
        assert_eq!(parse_key_hex("0011").unwrap_err().code(), crate::ErrorCode::KeyInvalid);
        assert_eq!(parse_key_hex("xyz").unwrap_err().code(), crate::ErrorCode::KeyInvalid);
    }
}
