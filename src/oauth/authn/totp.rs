//! Authenticator codes (TOTP, RFC 6238) and recovery codes: the second sign-in factor.
//!
//! The usual authenticator-app parameters: HMAC-SHA-1, 6 digits, 30-second steps, a 160-bit
//! secret (RFC 4226 §4 asks for at least 128 bits and recommends 160). A code is accepted for
//! the current step and one step either side (RFC 6238 §5.2 on clock drift), and only for a
//! step later than the last one accepted, so each code is used at most once (RFC 6238 §5.2:
//! "the verifier MUST NOT accept the second attempt of the same OTP").

use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, Secret, TOTP};
use zeroize::Zeroizing;

use crate::util;

/// RFC 6238 time step, seconds.
pub const STEP_SECS: i64 = 30;
/// Digits in a code.
pub const DIGITS: usize = 6;
/// Steps accepted either side of the current one.
pub const SKEW_STEPS: i64 = 1;
/// Recovery codes made at once.
pub const RECOVERY_CODES: usize = 10;
/// Characters in a recovery code: 12 of 32 symbols, 60 bits.
const RECOVERY_LEN: usize = 12;
/// No 0/O, 1/I/L, U: nothing to misread when typing a code from paper.
const RECOVERY_ALPHABET: &[u8; 32] = b"ABCDEFGHJKMNPQRSTVWXYZ0123456789";
/// The `amr` value of an authenticator code (RFC 8176 §2: one-time password).
pub const AMR_OTP: &str = "otp";
/// The `amr` value when a recovery code stood in for the code (RFC 8176 §2: multiple-factor).
pub const AMR_MFA: &str = "mfa";

/// A new random secret.
pub fn new_secret() -> Zeroizing<Vec<u8>> {
    Zeroizing::new(util::random_bytes::<20>().to_vec())
}

/// The secret in base32, as authenticator apps take it typed in.
pub fn secret_base32(secret: &[u8]) -> String {
    match Secret::Raw(secret.to_vec()).to_encoded() {
        Secret::Encoded(s) => s,
        Secret::Raw(_) => String::new(),
    }
}

/// The `otpauth://` URI apps read from a QR code (the Key Uri Format of Google
/// Authenticator, the de-facto standard): label `issuer:account`, and the parameters spelt
/// out so apps that ignore them still get the defaults we use.
pub fn otpauth_uri(secret: &[u8], issuer: &str, account: &str) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    // In the path, a space is %20, not '+'.
    let label = format!("{}:{}", enc(issuer), enc(account)).replace('+', "%20");
    format!(
        "otpauth://totp/{label}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        secret_base32(secret),
        enc(issuer).replace('+', "%20"),
    )
}

/// The code of `step` for `secret`.
fn code_at(secret: &[u8], step: i64) -> Option<String> {
    // new_unchecked: a stored secret is ours and long enough; `generate` takes a time.
    let totp = TOTP::new_unchecked(
        Algorithm::SHA1,
        DIGITS,
        0,
        u64::try_from(STEP_SECS).ok()?,
        secret.to_vec(),
    );
    Some(totp.generate(u64::try_from(step.checked_mul(STEP_SECS)?).ok()?))
}

/// The time step of `now` (RFC 6238 §4.2: T = floor((now - T0) / X), T0 = 0).
pub fn step_of(now: i64) -> i64 {
    now.div_euclid(STEP_SECS)
}

/// The step whose code `code` is, among those accepted at `now`; the latest when several
/// match. Every candidate is compared, in constant time.
pub fn matching_step(secret: &[u8], code: &str, now: i64) -> Option<i64> {
    let code = normalize(code);
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let current = step_of(now);
    let mut found = None;
    for step in current - SKEW_STEPS..=current + SKEW_STEPS {
        if let Some(expected) = code_at(secret, step)
            && bool::from(expected.as_bytes().ct_eq(code.as_bytes()))
        {
            found = Some(step);
        }
    }
    found
}

/// Spaces and dashes people type inside codes, gone; letters upper-cased.
fn normalize(code: &str) -> String {
    code.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// Does this look like a recovery code rather than an authenticator code?
pub fn is_recovery_code(code: &str) -> bool {
    normalize(code).len() == RECOVERY_LEN
}

/// New recovery codes, grouped for reading (`ABCD-EFGH-JKMN`).
pub fn new_recovery_codes() -> Vec<String> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let bytes = util::random_bytes::<RECOVERY_LEN>();
            let chars: Vec<char> = bytes
                .iter()
                .map(|b| char::from(RECOVERY_ALPHABET[usize::from(b % 32)]))
                .collect();
            chars
                .chunks(4)
                .map(|c| c.iter().collect::<String>())
                .collect::<Vec<_>>()
                .join("-")
        })
        .collect()
}

/// What is stored of a recovery code: argon2id of the code as typed without grouping, salted
/// by its user, so the same code of two users never has the same hash. A recovery code has 60
/// bits, too few for a fast hash to protect it in a stolen database: NIST SP 800-63B
/// §5.1.2.2 asks for a password hashing scheme below 112 bits. Slow: call it off the async
/// workers.
pub fn recovery_hash(user_id: &str, code: &str) -> Result<Vec<u8>, argon2::Error> {
    super::password::hash_with_derived_salt(normalize(code).as_bytes(), user_id)
}

/// What was stored of a recovery code before [`recovery_hash`] (SHA-256 over the user and the
/// code): such codes are accepted until they are used or replaced.
pub fn legacy_recovery_hash(user_id: &str, code: &str) -> Vec<u8> {
    util::secret_hash(&format!("{user_id}\n{}", normalize(code)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totp_matches_rfc_6238_sha1_vectors() {
        // RFC 6238 Appendix B, SHA-1 seed, last 6 of the 8 digits.
        let seed = b"12345678901234567890";
        for (t, code) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
        ] {
            assert_eq!(code_at(seed, step_of(t)).as_deref(), Some(code));
            assert_eq!(matching_step(seed, code, t), Some(step_of(t)));
        }
    }

    #[test]
    fn totp_accepts_one_step_either_side_only() {
        let seed = b"12345678901234567890";
        let now = 1_111_111_111;
        let before = code_at(seed, step_of(now) - 1).unwrap_or_default();
        let after = code_at(seed, step_of(now) + 1).unwrap_or_default();
        let far = code_at(seed, step_of(now) + 2).unwrap_or_default();
        assert_eq!(matching_step(seed, &before, now), Some(step_of(now) - 1));
        assert_eq!(matching_step(seed, &after, now), Some(step_of(now) + 1));
        assert_eq!(matching_step(seed, &far, now), None);
        assert_eq!(matching_step(seed, "12345", now), None);
        assert_eq!(matching_step(seed, "abcdef", now), None);
    }

    #[test]
    fn totp_recovery_codes_are_distinct_grouped_and_hashed_per_user() {
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        assert!(codes.iter().all(|c| c.len() == 14 && is_recovery_code(c)));
        let mut sorted = codes.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), RECOVERY_CODES);
        let c = &codes[0];
        let hash = recovery_hash("u1", c).unwrap();
        assert_eq!(
            hash,
            recovery_hash("u1", &c.to_lowercase().replace('-', " ")).unwrap()
        );
        assert_ne!(hash, recovery_hash("u2", c).unwrap());
        assert_ne!(hash, recovery_hash("u1", &codes[1]).unwrap());
        assert_ne!(hash, legacy_recovery_hash("u1", c), "not the fast hash");
    }

    #[test]
    fn totp_uri_has_the_usual_parameters() {
        let uri = otpauth_uri(b"12345678901234567890", "Concierge", "al ice");
        assert_eq!(
            uri,
            "otpauth://totp/Concierge:al%20ice?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Concierge&algorithm=SHA1&digits=6&period=30"
        );
    }
}
