//! DPoP (RFC 9449) on the server side: the `DPoP` header of a request, its proof checked by
//! the one implementation in `concierge_guard::dpop`, single use of its `jti` across replicas,
//! and stateless server nonces (§8).

use concierge_guard::dpop::{self, Proof, ProofCheck};
use http::HeaderMap;

use super::context::Context;
use crate::audit::{Event, Kind};
use crate::config::DpopConfig;
use crate::error::{ErrorCode, OAuthError};
use crate::keys::Kek;

pub use concierge_guard::dpop::DEFAULT_ALGORITHMS as ALGORITHMS;

/// The request header carrying the proof (RFC 9449 §4.1).
pub const PROOF_HEADER: &str = "dpop";
/// The response header carrying a server nonce (RFC 9449 §8.1).
pub use crate::error::DPOP_NONCE_HEADER as NONCE_HEADER;

/// The accepted proof algorithms by name, for metadata and challenges.
pub fn algorithm_names() -> Vec<String> {
    ALGORITHMS.iter().map(|a| format!("{a:?}")).collect()
}

/// The nonce to hand out at `now`.
pub fn current_nonce(kek: &Kek, config: &DpopConfig, now: i64) -> String {
    kek.dpop_nonce(window(config, now))
}

/// Is `nonce` the current or the previous window's nonce?
pub fn nonce_is_valid(kek: &Kek, config: &DpopConfig, nonce: &str, now: i64) -> bool {
    let w = window(config, now);
    kek.verify_dpop_nonce(w, nonce) || kek.verify_dpop_nonce(w - 1, nonce)
}

fn window(config: &DpopConfig, now: i64) -> i64 {
    now.div_euclid(i64::from(config.nonce_window_secs.max(1)))
}

/// The proof in the request's `DPoP` header: `None` without one, an error for several
/// (RFC 9449 §4.3 check 1) or a value that is not text.
pub fn proof_header(headers: &HeaderMap) -> Result<Option<&str>, OAuthError> {
    let mut values = headers.get_all(PROOF_HEADER).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => v
            .to_str()
            .map(Some)
            .map_err(|_| OAuthError::invalid_dpop_proof("the DPoP header is not a compact JWT")),
        (Some(_), Some(_)) => Err(OAuthError::invalid_dpop_proof(
            "send exactly one DPoP header (RFC 9449 §4.3)",
        )),
    }
}

/// What a request's proof must match.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    pub method: &'a str,
    /// The endpoint's URL under our issuer.
    pub url: &'a str,
    /// The access token sent with the proof (resource requests: `ath`).
    pub access_token: Option<&'a str>,
    /// Require one of our nonces.
    pub nonce: bool,
}

/// Check the request's DPoP proof, if it has one: the proof itself, our nonce when
/// required (`use_dpop_nonce` with a fresh `DPoP-Nonce`), and its `jti` spent once for
/// every replica (RFC 9449 §11.1).
pub async fn check(
    ctx: &Context,
    headers: &HeaderMap,
    expect: Expect<'_>,
) -> Result<Option<Proof>, OAuthError> {
    let Some(raw) = proof_header(headers)? else {
        return Ok(None);
    };
    let config = &ctx.config.dpop;
    let now = ctx.now();
    let mut check = ProofCheck::new(expect.method, expect.url, now)
        .algorithms(ALGORITHMS)
        .window(
            i64::from(config.proof_max_age_secs),
            i64::from(config.proof_leeway_secs),
        );
    if let Some(t) = expect.access_token {
        check = check.access_token(t);
    }
    let proof =
        dpop::verify(raw, &check).map_err(|e| OAuthError::invalid_dpop_proof(e.to_string()))?;
    if expect.nonce {
        let kek = ctx.keys.kek();
        let fresh = proof
            .nonce
            .as_deref()
            .is_some_and(|n| nonce_is_valid(kek, config, n, now));
        if !fresh {
            let mut e = OAuthError::new(
                ErrorCode::UseDpopNonce,
                "this server requires a nonce in DPoP proofs: use the one in the DPoP-Nonce header",
            );
            e.dpop_nonce = Some(current_nonce(kek, config, now));
            return Err(e);
        }
    }
    let key = format!("dpop:{}", proof.replay_key());
    if !ctx
        .replay()
        .use_once(&key, now + proof.replay_window, now)
        .await?
    {
        ctx.audit.record(
            Event::new(Kind::DpopProofReplayed)
                .detail(serde_json::json!({ "jkt": proof.jkt, "url": expect.url })),
        );
        return Err(OAuthError::invalid_dpop_proof(
            "this DPoP proof was already used; make a new one (with a new jti) per request",
        ));
    }
    Ok(Some(proof))
}

/// A `dpop_jkt` authorization request parameter (RFC 9449 §10): a base64url SHA-256.
pub fn valid_jkt(jkt: &str) -> bool {
    jkt.len() == 43
        && jkt
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::util;

    fn kek() -> Kek {
        Kek::from_base64(&util::b64(&[7u8; 32])).expect("kek")
    }

    #[test]
    fn nonces_last_two_windows_and_are_shared_by_replicas() {
        let config = DpopConfig::default();
        let (a, b) = (kek(), kek());
        let n = current_nonce(&a, &config, 1_000_000);
        assert!(nonce_is_valid(&b, &config, &n, 1_000_000));
        assert!(nonce_is_valid(&b, &config, &n, 1_000_000 + 300));
        assert!(!nonce_is_valid(&b, &config, &n, 1_000_000 + 900));
        assert!(!nonce_is_valid(&b, &config, "nope", 1_000_000));
        let other = Kek::from_base64(&util::b64(&[8u8; 32])).expect("kek");
        assert!(!nonce_is_valid(&other, &config, &n, 1_000_000));
        // A nonce is not a CSRF token of the same text.
        assert!(!a.verify_csrf(&window(&config, 1_000_000).to_string(), &n));
    }

    #[test]
    fn one_proof_header_only() {
        let mut h = HeaderMap::new();
        assert!(proof_header(&h).expect("none").is_none());
        h.append(PROOF_HEADER, "a.b.c".parse().expect("value"));
        assert_eq!(proof_header(&h).expect("one"), Some("a.b.c"));
        h.append(PROOF_HEADER, "d.e.f".parse().expect("value"));
        let e = proof_header(&h).expect_err("two");
        assert_eq!(e.code, ErrorCode::InvalidDpopProof);
    }

    #[test]
    fn jkt_parameter_shape() {
        assert!(valid_jkt("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"));
        assert!(!valid_jkt("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9X"));
        assert!(!valid_jkt("NzbLsXh8uDCcd+6MNwXF4W/7noWXFZAfHkxZsRGC9Xs"));
    }

    /// Property tests (README: Fuzzing).
    mod fuzz {
        use http::HeaderValue;
        use proptest::prelude::*;

        use super::*;
        use crate::fuzz::{config, nasty_bytes, nasty_string};

        proptest! {
            #![proptest_config(config())]

            /// Any `DPoP` headers: none, the one proof as text, or `invalid_dpop_proof`.
            #[test]
            fn proof_header_is_one_text_or_refused(values in proptest::collection::vec(nasty_bytes(), 0..3)) {
                let mut h = HeaderMap::new();
                for v in values.iter().filter_map(|v| HeaderValue::from_bytes(v).ok()) {
                    h.append(PROOF_HEADER, v);
                }
                let n = h.get_all(PROOF_HEADER).iter().count();
                match proof_header(&h) {
                    Ok(None) => prop_assert_eq!(n, 0),
                    Ok(Some(p)) => {
                        prop_assert_eq!(n, 1);
                        prop_assert_eq!(h.get(PROOF_HEADER).map(HeaderValue::as_bytes), Some(p.as_bytes()));
                    }
                    Err(e) => prop_assert_eq!(e.code, ErrorCode::InvalidDpopProof),
                }
            }

            /// `dpop_jkt`: every base64url SHA-256 passes; what passes is 43 base64url
            /// characters.
            #[test]
            fn jkt_is_a_base64url_sha256(jkt in nasty_string(), digest in any::<[u8; 32]>()) {
                prop_assert!(valid_jkt(&util::b64(&digest)));
                if valid_jkt(&jkt) {
                    let padded = format!("{jkt}A");
                    prop_assert!(jkt.len() == 43 && util::b64_decode(&padded).is_some());
                }
            }

            /// A nonce the client made up is never one of ours, at any time.
            #[test]
            fn made_up_nonces_are_refused(nonce in nasty_string(), now in any::<i64>()) {
                let kek = Kek::from_base64(&util::b64(&[7u8; 32])).expect("kek");
                let config = DpopConfig::default();
                prop_assert!(!nonce_is_valid(&kek, &config, &nonce, now) || nonce == current_nonce(&kek, &config, now));
            }
        }
    }
}
