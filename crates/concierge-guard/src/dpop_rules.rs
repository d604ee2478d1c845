//! How the guard checks DPoP-bound tokens at the resource (RFC 9449 §7) and
//! the nonces it hands out (§9).

use jsonwebtoken::Algorithm;

use crate::cache::{ReplayCache, Spend};
use crate::client::unix_now;
use crate::error::TokenError;
use crate::guard::Scheme;
use crate::nonce::Nonces;
use crate::principal::Principal;

/// Seconds of clock skew tolerated around a DPoP proof's `iat` window.
const DPOP_LEEWAY: i64 = 5;

/// How DPoP-bound tokens are checked.
pub(crate) struct DpopRules {
    pub(crate) algorithms: Vec<Algorithm>,
    /// The `algs` of the `DPoP` challenge.
    pub(crate) challenge_algs: String,
    pub(crate) max_age: i64,
    /// The configured resource's origin: `htu` is this plus the request path,
    /// never the `Host` header.
    pub(crate) origin: String,
    pub(crate) replays: ReplayCache,
    /// Nonces this resource requires in proofs, when configured.
    pub(crate) nonces: Option<Nonces>,
}

impl DpopRules {
    /// RFC 9449 §7.1, §7.2, §9; see [`Guard::check_possession`](crate::Guard).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn check(
        &self,
        principal: &Principal,
        scheme: Scheme,
        token: &str,
        method: &str,
        path: &str,
        proofs: &[&str],
        required: bool,
    ) -> Result<Option<String>, TokenError> {
        let Some(jkt) = principal.dpop_jkt() else {
            return match scheme {
                Scheme::DPoP => Err(TokenError::NotDpopBound(
                    "the token is not DPoP-bound: send it as a Bearer token",
                )),
                Scheme::Bearer if required => Err(TokenError::NotDpopBound(
                    "this resource accepts DPoP-bound tokens only",
                )),
                Scheme::Bearer => Ok(None),
            };
        };
        if scheme == Scheme::Bearer {
            return Err(TokenError::DpopBound);
        }
        let proof = match proofs {
            [one] => *one,
            [] => {
                return Err(TokenError::InvalidDpopProof(
                    "a DPoP proof header is required with a DPoP token".into(),
                ));
            }
            _ => {
                return Err(TokenError::InvalidDpopProof(
                    "send exactly one DPoP header".into(),
                ));
            }
        };
        let url = format!("{}{path}", self.origin);
        let now = unix_now();
        let check = crate::dpop::ProofCheck::new(method, &url, now)
            .access_token(token)
            .algorithms(&self.algorithms)
            .window(self.max_age, DPOP_LEEWAY);
        let proof = crate::dpop::verify(proof, &check)
            .map_err(|e| TokenError::InvalidDpopProof(e.to_string()))?;
        if proof.jkt != jkt {
            return Err(TokenError::InvalidDpopProof(
                "the DPoP proof is signed with another key than the token is bound to".into(),
            ));
        }
        // §9: a proof without a nonce we issued recently is refused before it
        // is spent, so the client's retry with the nonce is not a replay.
        if let Some(nonces) = &self.nonces
            && !proof
                .nonce
                .as_deref()
                .is_some_and(|n| nonces.accepts(n, now))
        {
            return Err(TokenError::UseDpopNonce);
        }
        match self
            .replays
            .spend(&proof.jkt, &proof.jti, now + proof.replay_window, now)
        {
            Spend::Fresh => Ok(self.nonces.as_ref().map(|n| n.current(now))),
            Spend::Replayed => Err(TokenError::InvalidDpopProof(
                "this DPoP proof was already used; make a new one per request".into(),
            )),
            Spend::KeyFull => Err(TokenError::InvalidDpopProof(
                "too many DPoP proofs with this key right now; retry shortly".into(),
            )),
        }
    }

    /// The nonce a `use_dpop_nonce` answer hands out.
    pub(crate) fn current_nonce(&self) -> Option<String> {
        self.nonces.as_ref().map(|n| n.current(unix_now()))
    }

    /// The `DPoP` challenge (RFC 9449 §7.1) for an error, with `algs`.
    pub(crate) fn challenge(&self, error: Option<(&str, &str)>) -> String {
        let algs = &self.challenge_algs;
        match error {
            Some((code, description)) => format!(
                "DPoP error=\"{code}\", error_description=\"{}\", algs=\"{algs}\"",
                crate::challenge::description_text(description)
            ),
            None => format!("DPoP algs=\"{algs}\""),
        }
    }
}
