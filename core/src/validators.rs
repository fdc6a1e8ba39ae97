//! Checksums and shape tests that turn pattern candidates into findings.

/// The ASCII digits of `s`, in order.
pub fn digits_of(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_digit()).collect()
}

/// Luhn mod-10 check (ISO/IEC 7812-1 Annex B) over a string of ASCII digits.
pub fn luhn_valid(digits: &str) -> bool {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let mut sum = 0u32;
    for (i, b) in digits.bytes().rev().enumerate() {
        let mut d = (b - b'0') as u32;
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum % 10 == 0
}

/// A payment card number: 13–19 digits, Luhn-valid, inside a published issuer range
/// (IIN/BIN prefixes and lengths of Visa, Mastercard incl. 2221–2720, American Express,
/// Discover, JCB, Diners Club, UnionPay, Maestro).
pub fn is_card_number(digits: &str) -> bool {
    let n = digits.len();
    if !(13..=19).contains(&n) || !luhn_valid(digits) {
        return false;
    }
    let p = |k: usize| digits[..k].parse::<u32>().unwrap_or(0);
    let issuer = match digits.as_bytes()[0] {
        b'4' => matches!(n, 13 | 16 | 19),
        b'5' => (51..=55).contains(&p(2)) && n == 16 || (p(2) == 50 || (56..=59).contains(&p(2))) && (12..=19).contains(&n),
        b'2' => (2221..=2720).contains(&p(4)) && n == 16,
        b'3' => {
            ((p(2) == 34 || p(2) == 37) && n == 15)
                || ((3528..=3589).contains(&p(4)) && (16..=19).contains(&n))
                || (((300..=305).contains(&p(3)) || p(2) == 36 || p(2) == 38 || p(2) == 39) && (14..=19).contains(&n))
        }
        b'6' => {
            p(4) == 6011
                || (644..=649).contains(&p(3))
                || p(2) == 65
                || p(2) == 62
                || (60..=69).contains(&p(2)) && (12..=19).contains(&n)
        }
        _ => false,
    };
    issuer
}

/// IBAN lengths by country (ISO 13616, SWIFT IBAN registry).
const IBAN_LENGTHS: [(&str, usize); 75] = [
    ("AD", 24), ("AE", 23), ("AL", 28), ("AT", 20), ("AZ", 28), ("BA", 20), ("BE", 16), ("BG", 22),
    ("BH", 22), ("BR", 29), ("BY", 28), ("CH", 21), ("CR", 22), ("CY", 28), ("CZ", 24), ("DE", 22),
    ("DK", 18), ("DO", 28), ("EE", 20), ("EG", 29), ("ES", 24), ("FI", 18), ("FO", 18), ("FR", 27),
    ("GB", 22), ("GE", 22), ("GI", 23), ("GL", 18), ("GR", 27), ("GT", 28), ("HR", 21), ("HU", 28),
    ("IE", 22), ("IL", 23), ("IQ", 23), ("IS", 26), ("IT", 27), ("JO", 30), ("KW", 30), ("KZ", 20),
    ("LB", 28), ("LC", 32), ("LI", 21), ("LT", 20), ("LU", 20), ("LV", 21), ("LY", 25), ("MC", 27),
    ("MD", 24), ("ME", 22), ("MK", 19), ("MR", 27), ("MT", 31), ("MU", 30), ("NL", 18), ("NO", 15),
    ("PK", 24), ("PL", 28), ("PS", 29), ("PT", 25), ("QA", 29), ("RO", 24), ("RS", 22), ("SA", 24),
    ("SC", 31), ("SE", 24), ("SI", 19), ("SK", 24), ("SM", 27), ("ST", 25), ("SV", 28), ("TL", 23),
    ("TN", 24), ("TR", 26), ("UA", 29),
];

/// IBAN check: known country, registered length, ISO 7064 MOD 97-10 remainder 1.
/// Spaces are ignored.
pub fn iban_valid(s: &str) -> bool {
    // The compact form (spaces removed) is read in place: no copy, no rearranged string.
    let mut compact = s.bytes().filter(|&b| b != b' ');
    let (Some(c0), Some(c1)) = (compact.next(), compact.next()) else { return false };
    let Some(&(_, len)) = IBAN_LENGTHS.iter().find(|(c, _)| c.as_bytes() == [c0, c1]) else { return false };
    // MOD 97-10 over the rearranged IBAN (characters 5.. then 1..4), each letter read as two
    // digits (A = 10 ... Z = 35); the country code's letters are known to be capitals.
    let step = |rem: u32, b: u8| -> Option<u32> {
        match b {
            b'0'..=b'9' => Some((rem * 10 + u32::from(b - b'0')) % 97),
            b'A'..=b'Z' => Some((rem * 100 + u32::from(b - b'A') + 10) % 97),
            _ => None,
        }
    };
    let mut head = [c0, c1, 0, 0];
    let mut n = 2;
    let mut rem = 0;
    for b in compact {
        if n < 4 {
            head[n] = b;
        } else {
            let Some(r) = step(rem, b) else { return false };
            rem = r;
        }
        n += 1;
    }
    if n != len {
        return false;
    }
    for b in head {
        let Some(r) = step(rem, b) else { return false };
        rem = r;
    }
    rem == 1
}

/// US SSN `AAA-GG-SSSS` with the Social Security Administration's never-issued values excluded:
/// area 000, 666 or 900–999; group 00; serial 0000.
pub fn ssn_valid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    if parts.len() != 3 || parts[0].len() != 3 || parts[1].len() != 2 || parts[2].len() != 4 {
        return false;
    }
    let (Ok(a), Ok(g), Ok(n)) = (parts[0].parse::<u32>(), parts[1].parse::<u32>(), parts[2].parse::<u32>()) else {
        return false;
    };
    a != 0 && a != 666 && a < 900 && g != 0 && n != 0
}

/// Shannon entropy of the chars of `s`, in bits per char.
pub fn shannon_entropy(s: &str) -> f32 {
    // Counts per character: a table for ASCII, sorted runs for the rest.
    let mut ascii = [0u32; 128];
    let mut other: Vec<char> = Vec::new();
    let mut n = 0u32;
    for c in s.chars() {
        n += 1;
        if c.is_ascii() {
            ascii[c as usize] += 1;
        } else {
            other.push(c);
        }
    }
    if n == 0 {
        return 0.0;
    }
    other.sort_unstable();
    let term = |k: u32| {
        let p = k as f32 / n as f32;
        -p * p.log2()
    };
    let h_ascii: f32 = ascii.iter().filter(|&&k| k > 0).map(|&k| term(k)).sum();
    let h_other: f32 = other.chunk_by(|a, b| a == b).map(|run| term(run.len() as u32)).sum();
    h_ascii + h_other
}

/// A UUID in 8-4-4-4-12 hex form (RFC 9562).
pub fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && [8, 4, 4, 4, 12].iter().zip(&parts).all(|(n, p)| p.len() == *n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Values that are code rather than credentials: a plain word or CamelCase identifier, a dotted
/// path (`settings.Read`, `os.environ`), a variable reference (`$X`, `%X%`), or a call.
pub fn looks_like_identifier(v: &str) -> bool {
    let ident = |p: &str| {
        !p.is_empty()
            && p.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    let letters_only = v.bytes().all(|b| b.is_ascii_alphabetic() || b == b'_' || b == b'-');
    letters_only
        || (v.contains('.') && v.split('.').all(ident))
        || v.starts_with('$')
        || v.starts_with('%')
        || v.starts_with('&')
        || v.starts_with('*')
        || v.contains("::")
        || v.contains("->")
}

/// Documentation placeholders: `your_api_key_here`, `<token>`, `xxxx`, `changeme`, `********`.
///
/// A placeholder word (`example`, `changeme`, `dummy`, ...) marks the value as a placeholder only
/// when what is left around it does not look random by itself: at least
/// [`RANDOM_REMAINDER_MIN`] ASCII letters and digits mixing lower case, upper case and digits. So
/// `CHANGEME123` and `my-example-key` are placeholders, while AWS's documentation secret key
/// `wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY` (33 random characters around `EXAMPLE`) is not: a
/// pasted example key is still a credential shape, and a real key that happens to contain one of
/// the words must not pass unredacted.
pub fn is_placeholder(v: &str) -> bool {
    let l = v.to_ascii_lowercase();
    let first = l.chars().next().unwrap_or(' ');
    l.starts_with("your") && (l.ends_with("here") || l.contains("key") || l.contains("token") || l.contains("password"))
        || l.starts_with('<')
        || l.chars().all(|c| c == first)
        || placeholder_word_only(v, &l)
}

/// How many ASCII letters and digits, besides the placeholder words, make a value random enough
/// to be a secret (16: the shortest generic API key length that detect-secrets' and gitleaks'
/// generic rules accept).
pub const RANDOM_REMAINDER_MIN: usize = 16;

/// Whether `v` (with `l` its ASCII lower case, same byte offsets) contains a placeholder word and
/// the rest of it is not random by the rule of [`is_placeholder`].
fn placeholder_word_only(v: &str, l: &str) -> bool {
    let (mut n, mut lower, mut upper, mut digit) = (0usize, false, false, false);
    let mut count = |s: &str| {
        for b in s.bytes().filter(u8::is_ascii_alphanumeric) {
            n += 1;
            lower |= b.is_ascii_lowercase();
            upper |= b.is_ascii_uppercase();
            digit |= b.is_ascii_digit();
        }
    };
    let mut last = 0;
    let mut found = false;
    for m in placeholder_words().find_iter(l) {
        found = true;
        count(&v[last..m.start()]);
        last = m.end();
    }
    if !found {
        return false;
    }
    count(&v[last..]);
    !(n >= RANDOM_REMAINDER_MIN && lower && upper && digit)
}

/// Words that mark a value as a placeholder, in one automaton (one pass instead of nine
/// substring searches per candidate secret).
fn placeholder_words() -> &'static aho_corasick::AhoCorasick {
    static W: std::sync::OnceLock<aho_corasick::AhoCorasick> = std::sync::OnceLock::new();
    W.get_or_init(|| {
        aho_corasick::AhoCorasick::new(["changeme", "change_me", "example", "placeholder", "redacted", "xxxxxxxx", "dummy", "replace_me", "insert"])
            .unwrap_or_else(|_| aho_corasick::AhoCorasick::new(["\u{0}"]).expect("one literal"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_and_cards() {
        assert!(luhn_valid("79927398713"));
        assert!(!luhn_valid("79927398710"));
        assert!(is_card_number("4111111111111111"));
        assert!(is_card_number("5555555555554444"));
        assert!(is_card_number("378282246310005"));
        assert!(is_card_number("2223003122003222"));
        assert!(!is_card_number("1234567812345670")); // Luhn-valid, no issuer
    }

    #[test]
    fn iban() {
        assert!(iban_valid("GB82 WEST 1234 5698 7654 32"));
        assert!(iban_valid("DE89370400440532013000"));
        assert!(!iban_valid("DE89370400440532013001"));
        assert!(!iban_valid("XX89370400440532013000"));
        for bad in ["", "G", "GB", "gb82 WEST 1234 5698 7654 32", "GB82 WEST 1234 5698 7654 3", "GB82 WEST 1234 5698 7654 321", "GB8\u{e9} WEST 1234 5698 76"] {
            assert!(!iban_valid(bad), "{bad}");
        }
    }

    /// The MOD 97-10 check as ISO 13616 states it: compact, move the first four characters to
    /// the end, letters to two digits, remainder 1.
    fn iban_valid_plain(s: &str) -> bool {
        let compact: String = s.chars().filter(|c| *c != ' ').collect();
        if !compact.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()) || compact.len() < 4 {
            return false;
        }
        let Some(&(_, len)) = IBAN_LENGTHS.iter().find(|(c, _)| *c == &compact[..2]) else { return false };
        let digits: String = format!("{}{}", &compact[4..], &compact[..4])
            .chars()
            .map(|c| c.to_digit(36).map_or(String::new(), |v| v.to_string()))
            .collect();
        compact.len() == len && digits.bytes().fold(0u32, |r, d| (r * 10 + u32::from(d - b'0')) % 97) == 1
    }

    proptest::proptest! {
        #[test]
        fn iban_valid_matches_the_standard(country in proptest::sample::select(vec!["GB", "DE", "NO", "LC", "XX", "gb"]),
                                           body in "[A-Z0-9]{10,30}", cut in 0usize..40, space in 0usize..30,
                                           tail in "[a-z\u{e9} ]?") {
            // Every pair of check digits, on bodies cut to the country's length about half the
            // time (so that valid IBANs occur), with a space and a stray tail sometimes.
            let len = IBAN_LENGTHS.iter().find(|(c, _)| *c == country).map_or(22, |&(_, n)| n);
            let mut body = body.clone();
            body.truncate(if cut < 20 { len.saturating_sub(4) } else { cut });
            if space < body.len() {
                body.insert(space, ' ');
            }
            let mut valid = 0;
            for check in 0..100 {
                let text = format!("{country}{check:02}{body}{tail}");
                proptest::prop_assert_eq!(iban_valid(&text), iban_valid_plain(&text), "{:?}", text);
                valid += usize::from(iban_valid(&text));
            }
            proptest::prop_assert!(valid <= 2, "check digits c and c + 97 are the same remainder");
        }
    }

    #[test]
    fn ssn() {
        assert!(ssn_valid("123-45-6789"));
        for bad in ["000-12-3456", "666-12-3456", "912-12-3456", "123-00-4567", "123-45-0000"] {
            assert!(!ssn_valid(bad), "{bad}");
        }
    }

    #[test]
    fn entropy_and_shapes() {
        assert_eq!(shannon_entropy("aaaa"), 0.0);
        assert!((shannon_entropy("abcd") - 2.0).abs() < 1e-6);
        assert!((shannon_entropy("ééab") - 1.5).abs() < 1e-6);
        assert!((shannon_entropy("日本日本") - 1.0).abs() < 1e-6);
        assert!(is_uuid("3f2b9c4e-8d1a-4b6e-9f0c-2a7d5e1b8c93"));
        assert!(looks_like_identifier("sessionObserverToken"));
        assert!(looks_like_identifier("settings.Read"));
        assert!(!looks_like_identifier("Tr0ub4dor&3"));
        assert!(is_placeholder("your_api_key_here"));
        for v in ["<token>", "aaaaaaaa", "CHANGEME123", "my-example-key", "PLACEHOLDER", "[REDACTED]1", "dummy_pw", "insert_here"] {
            assert!(is_placeholder(v), "{v}");
        }
        assert!(!is_placeholder("Tr0ub4dor&3x") && !is_placeholder("k9#Lm2$vQ8"));
        // Placeholder words inside an otherwise random value do not make it a placeholder.
        assert!(!is_placeholder("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"));
        assert!(!is_placeholder("dummy9fQ2xLk8Rt3Vb7Nm1Pz"));
        for v in ["INSERT_YOUR_OPENAI_API_KEY_HERE", "REPLACE_ME_WITH_TOKEN_123456789", "example_key_2024_v1", "ExampleKey12"] {
            assert!(is_placeholder(v), "{v}");
        }
    }
}
