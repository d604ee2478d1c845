//! Errors: what is misconfigured when a [`Guard`](crate::Guard) cannot be
//! built, and why a token was refused.

use jsonwebtoken::Algorithm;
use thiserror::Error;

/// Why [`GuardBuilder::build`](crate::GuardBuilder::build) failed. Each message
/// names the setting or the remote document at fault, so the server author
/// can fix the configuration without reading the specifications.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A configured URL does not parse, or is not an absolute `http(s)` URL.
    #[error("the {what} {value:?} is not a valid absolute http(s) URL: {reason}")]
    InvalidUrl {
        /// Which setting: `"issuer URL"`, `"resource URI"`, `"jwks_uri"`.
        what: &'static str,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A URL uses plain `http` for a host that is not a loopback address.
    #[error(
        "the {what} {url} must use https; plain http is only accepted for loopback hosts \
         (localhost, 127.0.0.0/8, [::1]) or with GuardBuilder::allow_insecure_http"
    )]
    InsecureUrl {
        /// Which setting.
        what: &'static str,
        /// The URL.
        url: String,
    },
    /// The issuer's metadata document could not be fetched or parsed.
    #[error(
        "the issuer {issuer} is unreachable or serves no usable authorization server metadata \
         (tried {tried}): {reason}; to start anyway and wait for it use \
         GuardBuilder::build_in_background, to skip discovery give Issuer::jwks_uri"
    )]
    IssuerUnreachable {
        /// The configured issuer.
        issuer: String,
        /// The metadata URLs tried, comma-separated.
        tried: String,
        /// The last failure.
        reason: String,
    },
    /// The metadata document names another issuer (RFC 8414 §3.3).
    #[error(
        "the authorization server metadata at {url} announces issuer {found:?}, but the guard \
         is configured with {configured:?}; configure exactly the issuer the server announces \
         (it must byte-equal the `iss` of its tokens)"
    )]
    IssuerMismatch {
        /// Where the metadata came from.
        url: String,
        /// The `issuer` in the document.
        found: String,
        /// The configured issuer.
        configured: String,
    },
    /// The metadata has no `jwks_uri`, so signatures cannot be verified.
    #[error(
        "the authorization server metadata at {url} has no jwks_uri, so the guard cannot verify \
         token signatures"
    )]
    MissingJwksUri {
        /// Where the metadata came from.
        url: String,
    },
    /// The key set could not be fetched or holds no usable signing key.
    #[error("the JSON Web Key Set at {url} is unusable: {reason}")]
    JwksUnavailable {
        /// The `jwks_uri`.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// An algorithm that must never verify access tokens was allowed.
    #[error(
        "algorithm {0:?} cannot be allowed: HMAC algorithms would let anyone holding the \
         public key forge tokens; use asymmetric ones (ES256, RS256, PS256, EdDSA, …)"
    )]
    UnsafeAlgorithm(Algorithm),
    /// Another setting is out of range.
    #[error("invalid guard setting: {0}")]
    InvalidSetting(String),
    /// The issuer's clock and this machine's differ by more than the leeway:
    /// every token would look expired or not yet valid.
    #[error(
        "this machine's clock is {skew_secs} s {direction} the issuer's ({issuer} sent Date: \
         {issuer_date}), more than the {leeway_secs} s leeway; fix the clock (NTP) on one side, \
         or raise GuardBuilder::leeway"
    )]
    ClockSkew {
        /// The issuer.
        issuer: String,
        /// The `Date` header it sent.
        issuer_date: String,
        /// The difference in seconds.
        skew_secs: u64,
        /// `"ahead of"` or `"behind"`.
        direction: &'static str,
        /// The configured leeway.
        leeway_secs: i64,
    },
    /// The issuer answered a request naming this resource with
    /// `invalid_target` (RFC 8707 §2): it does not know the resource URI.
    #[error(
        "the issuer {issuer} does not know the resource {resource} ({description}); register it \
         there with exactly this URI (concierge resource add --uri {resource} …), or configure \
         the URI the issuer knows"
    )]
    ResourceNotRegistered {
        /// The issuer.
        issuer: String,
        /// The configured resource.
        resource: String,
        /// The issuer's `error_description`.
        description: String,
    },
    /// The issuer refused this server's client credentials (`invalid_client`).
    #[error(
        "the issuer refused the credentials of client {client_id} at {endpoint} ({description}); \
         check the client id, its secret or key, and its token_endpoint_auth_method"
    )]
    ClientRejected {
        /// The configured client id.
        client_id: String,
        /// The endpoint that refused.
        endpoint: String,
        /// The issuer's `error_description`.
        description: String,
    },
    /// A scope rule names a tool or prompt the server does not have.
    #[error(
        "a scope rule names the {kind} {name:?}, but the server has no such {kind} (it has: \
         {known}); fix the name in GuardBuilder::{kind}_scopes, or declare the scopes on the \
         {kind} itself"
    )]
    UnknownOperation {
        /// `"tool"` or `"prompt"`.
        kind: &'static str,
        /// The name in the rule.
        name: String,
        /// The names the server has, comma-separated.
        known: String,
    },
    /// Introspection is configured but the issuer does not let this client use it.
    #[error(
        "client {client_id} may not use the introspection endpoint {endpoint} ({description}); \
         with Concierge an operator allows it with `concierge client add --may-introspect`"
    )]
    IntrospectionNotAllowed {
        /// The configured client id.
        client_id: String,
        /// The introspection endpoint.
        endpoint: String,
        /// The issuer's answer.
        description: String,
    },
}

/// Why a token was refused. Its `Display` text goes into the
/// `error_description` of the `invalid_token` challenge, so it says what is
/// wrong without echoing the token.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Longer than the 8 KiB the guard accepts; not parsed.
    #[error("the token is too large")]
    TooLarge,
    /// Not a compact JWS with a JSON header and payload.
    #[error("the token is malformed: {0}")]
    Malformed(&'static str),
    /// The header's `typ` is not `at+jwt` (RFC 9068 §2.1).
    #[error("the token type must be at+jwt")]
    WrongType,
    /// The header's `alg` is not in the guard's allow-list.
    #[error("the token's algorithm {0:?} is not accepted")]
    AlgorithmNotAllowed(String),
    /// No key in the issuer's JWKS has the token's `kid`.
    #[error("the token was signed with an unknown key")]
    UnknownKey,
    /// The key named by `kid` is not for the token's algorithm.
    #[error("the token's algorithm does not match its signing key")]
    KeyMismatch,
    /// The signature does not verify.
    #[error("the token's signature is invalid")]
    BadSignature,
    /// `iss` is not the configured issuer.
    #[error("the token was issued by another issuer")]
    WrongIssuer,
    /// `aud` does not contain this resource.
    #[error("the token is not meant for this resource")]
    WrongAudience,
    /// `exp` has passed (beyond the leeway).
    #[error("the token has expired")]
    Expired,
    /// `nbf` or `iat` is in the future (beyond the leeway).
    #[error("the token is not valid yet")]
    NotYetValid,
    /// A required claim is absent or has the wrong type.
    #[error("the token's {0} claim is missing or invalid")]
    InvalidClaim(&'static str),
    /// The token is DPoP-bound (`cnf.jkt`) but was sent as a bearer token.
    #[error("the token is DPoP-bound: send it as 'Authorization: DPoP' with a DPoP proof")]
    DpopBound,
    /// The token is not DPoP-bound but was sent with the DPoP scheme, or this
    /// resource requires DPoP-bound tokens.
    #[error("{0}")]
    NotDpopBound(&'static str),
    /// The DPoP proof is missing, invalid, replayed or made with another key.
    #[error("{0}")]
    InvalidDpopProof(String),
    /// The issuer's keys could not be loaded.
    #[error("the issuer's signing keys are unavailable")]
    KeysUnavailable,
    /// Introspection (RFC 7662) says the token is not active: revoked,
    /// expired, unknown, or not an access token.
    #[error("the token is not active")]
    Inactive,
    /// Introspection was needed but failed (endpoint unreachable or refusing).
    #[error("the token could not be checked with the issuer")]
    IntrospectionUnavailable,
    /// The issuer's keys are not loaded yet (a guard started in the
    /// background whose issuer has not answered): answered with 503.
    #[error("the server is not ready to check tokens from this issuer yet; retry shortly")]
    NotReady,
    /// The DPoP proof carries no nonce, or one this server did not issue
    /// recently (RFC 9449 §9): answered with `use_dpop_nonce` and a fresh
    /// `DPoP-Nonce`.
    #[error("the resource server requires a nonce it issued in the DPoP proof")]
    UseDpopNonce,
}

impl TokenError {
    /// A short, stable name for metrics and logs, e.g. `"expired"`.
    ///
    /// ```
    /// assert_eq!(concierge_guard::TokenError::Expired.reason(), "expired");
    /// ```
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::Malformed(_) => "malformed",
            Self::WrongType => "wrong_type",
            Self::AlgorithmNotAllowed(_) => "algorithm_not_allowed",
            Self::UnknownKey => "unknown_key",
            Self::KeyMismatch => "key_mismatch",
            Self::BadSignature => "bad_signature",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::InvalidClaim(_) => "invalid_claim",
            Self::DpopBound => "dpop_bound_as_bearer",
            Self::NotDpopBound(_) => "not_dpop_bound",
            Self::InvalidDpopProof(_) => "invalid_dpop_proof",
            Self::KeysUnavailable => "keys_unavailable",
            Self::Inactive => "inactive",
            Self::IntrospectionUnavailable => "introspection_unavailable",
            Self::NotReady => "not_ready",
            Self::UseDpopNonce => "use_dpop_nonce",
        }
    }

    /// For the server's operator: which setting to look at when tokens are
    /// refused for this reason although they should not be. Logged with the
    /// refusal, never sent to the client.
    ///
    /// ```
    /// let hint = concierge_guard::TokenError::WrongType.hint().unwrap();
    /// assert!(hint.contains("ClaimMapping::accept_jwt_typ"));
    /// ```
    #[must_use]
    pub fn hint(&self) -> Option<&'static str> {
        Some(match self {
            Self::WrongType => {
                "the issuer's tokens are not typ at+jwt (RFC 9068); if it sends plain JWTs, \
                 configure Issuer::claims(ClaimMapping::identity_providers()) or \
                 ClaimMapping::accept_jwt_typ(true)"
            }
            Self::AlgorithmNotAllowed(_) => {
                "the token's alg is not allowed; GuardBuilder::algorithms sets the allow-list"
            }
            Self::WrongIssuer => {
                "the token's iss is none of the trusted issuers; add it with GuardBuilder::also_trust"
            }
            Self::WrongAudience => {
                "the token's aud does not name this resource; the issuer must issue tokens for \
                 exactly the resource URI (RFC 8707), or add the audience it uses with \
                 GuardBuilder::audiences"
            }
            Self::Expired | Self::NotYetValid => {
                "check both clocks (NTP); GuardBuilder::leeway sets the tolerance"
            }
            Self::InvalidClaim("client_id") => {
                "the token names no client where the guard looks; map the claim with \
                 ClaimMapping::client_id_claims (e.g. azp, cid)"
            }
            Self::InvalidClaim("scope") => {
                "the scope claim has an unexpected shape; ClaimMapping::scope_claims accepts \
                 strings and arrays"
            }
            Self::UnknownKey | Self::KeysUnavailable => {
                "the issuer's JWKS has no key for the token's kid; check Issuer::jwks_uri and \
                 GuardBuilder::jwks_refetch_interval"
            }
            Self::InvalidDpopProof(d) if d.contains("too many") => {
                "one DPoP key sent more proofs than GuardBuilder::dpop_replay_cache_size \
                 within the proof lifetime"
            }
            Self::NotReady => {
                "the issuer has not answered yet; Guard::ready() resolves when it has"
            }
            Self::IntrospectionUnavailable => {
                "the introspection endpoint failed; see the warning before this event"
            }
            _ => return None,
        })
    }
}
