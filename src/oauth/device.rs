//! The device authorization grant (RFC 8628): user codes that are easy to read and type.

/// Consonants only (no vowels, so no words; no look-alikes such as 0/O or 1/I).
const ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

/// A new user code, `XXXX-XXXX` (20^8 ≈ 2.6·10^10 codes; entry is rate-limited).
pub fn new_user_code() -> String {
    let bytes = crate::util::random_bytes::<8>();
    let chars: String = bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect();
    format!("{}-{}", &chars[..4], &chars[4..])
}

/// What a person typed, in the stored form: upper case, dashes and spaces ignored.
pub fn normalize_user_code(typed: &str) -> Option<String> {
    let chars: String = typed
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (chars.len() == 8 && chars.bytes().all(|b| ALPHABET.contains(&b)))
        .then(|| format!("{}-{}", &chars[..4], &chars[4..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_round_trip_through_sloppy_typing() {
        let code = new_user_code();
        assert_eq!(code.len(), 9);
        assert_eq!(normalize_user_code(&code).as_deref(), Some(code.as_str()));
        let sloppy = code.to_lowercase().replace('-', " ");
        assert_eq!(normalize_user_code(&sloppy).as_deref(), Some(code.as_str()));
        assert_eq!(
            normalize_user_code("BCDF-GHJA"),
            None,
            "vowels never appear"
        );
        assert_eq!(normalize_user_code("BCD"), None);
    }
}
