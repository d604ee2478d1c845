//! PKCE (RFC 7636), S256 only (OAuth 2.1 §4.1.1; plain is refused).

use subtle::ConstantTimeEq;

use crate::util;

/// A code challenge: base64url of a SHA-256, 43 characters.
pub fn valid_challenge(challenge: &str) -> bool {
    challenge.len() == 43 && util::b64_decode(challenge).is_some_and(|b| b.len() == 32)
}

/// A code verifier: 43 to 128 unreserved characters (RFC 7636 §4.1).
pub fn valid_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// The S256 challenge of `verifier` (RFC 7636 §4.2), as a client computes it (we are one
/// toward upstream identity providers).
pub fn s256(verifier: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    util::b64(digest.as_ref())
}

/// Does `verifier` hash to `challenge` (S256)? Constant time.
pub fn verify(verifier: &str, challenge: &str) -> bool {
    if !valid_verifier(verifier) {
        return false;
    }
    let computed = s256(verifier);
    computed.len() == challenge.len() && bool::from(computed.as_bytes().ct_eq(challenge.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(valid_challenge(challenge));
        assert!(verify(verifier, challenge));
        assert!(!verify(challenge, challenge), "plain is not S256");
        assert!(!verify("short", challenge));
        assert!(!valid_challenge("abc"));
        assert!(!valid_verifier(&"a".repeat(129)));
        assert!(!valid_verifier(&format!("{}!", "a".repeat(43))));
    }
}
