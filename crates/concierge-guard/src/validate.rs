//! Access token validation rules (RFC 9068 §4: `typ`, signature, issuer, audience, time,
//! scope) as pure functions.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::Value;

use std::sync::Arc;

use crate::claims::ClaimMapping;
use crate::error::TokenError;
use crate::principal::{Actor, Principal, PrincipalData};
use crate::scopes::ScopeHierarchy;

/// Tokens longer than this are refused without being parsed.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// How deep an `act` chain may nest before the token is refused.
const MAX_ACT_DEPTH: usize = 16;

/// The parts of a JOSE header the guard looks at.
#[derive(Debug, Deserialize)]
pub(crate) struct RawHeader {
    pub(crate) alg: Option<String>,
    pub(crate) typ: Option<String>,
    pub(crate) kid: Option<String>,
}

/// The three non-empty parts of a compact JWS (header, payload, signature).
pub(crate) fn split_jws(token: &str) -> Option<(&str, &str, &str)> {
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s), None) if !h.is_empty() && !p.is_empty() && !s.is_empty() => {
            Some((h, p, s))
        }
        _ => None,
    }
}

/// Size and shape checks, then the header decoded without trusting it.
pub(crate) fn parse_header(token: &str) -> Result<RawHeader, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLarge);
    }
    let (header, _, _) = split_jws(token).ok_or(TokenError::Malformed("not a signed JWT"))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::Malformed("the header is not base64url"))?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed("the header is not JSON"))
}

/// `typ` must be acceptable to the issuer's claim mapping (RFC 9068 §2.1
/// by default); `alg` must be in the allow-list. Returns the algorithm.
pub(crate) fn check_header(
    header: &RawHeader,
    allowed: &[Algorithm],
    mapping: &ClaimMapping,
) -> Result<Algorithm, TokenError> {
    if !mapping.typ_ok(header.typ.as_deref()) {
        return Err(TokenError::WrongType);
    }
    let name = header.alg.as_deref().unwrap_or_default();
    name.parse::<Algorithm>()
        .ok()
        .filter(|alg| allowed.contains(alg))
        .ok_or_else(|| TokenError::AlgorithmNotAllowed(name.chars().take(16).collect()))
}

/// The `iss` of a token, read without verifying it: only to pick which
/// issuer's keys and rules to check it with. `None` when there is none.
pub(crate) fn peek_issuer(token: &str) -> Option<String> {
    let (_, payload, _) = split_jws(token)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    #[derive(Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    serde_json::from_slice::<Iss>(&bytes).ok()?.iss
}

/// What the claims are checked against.
#[derive(Debug, Clone)]
pub(crate) struct ClaimRules {
    /// Byte-compared with `iss`.
    pub(crate) issuer: String,
    /// This resource and any other accepted audience, normalised with
    /// [`normalize_uri`].
    pub(crate) audiences: Vec<String>,
    /// Seconds of clock skew tolerated on `exp`, `nbf` and `iat`.
    pub(crate) leeway: i64,
    /// Where the scopes and the client id are.
    pub(crate) mapping: ClaimMapping,
    /// Scopes that imply others.
    pub(crate) hierarchy: Arc<ScopeHierarchy>,
}

/// Strip a lone trailing slash on an origin (`https://a.example/` →
/// `https://a.example`), leaving every other URI as it is: the server compares resource
/// URIs in the same form, so `https://a.example/` and `https://a.example` name one resource.
pub(crate) fn normalize_uri(uri: &str) -> &str {
    match uri.split_once("://") {
        Some((_, rest)) if rest.len() > 1 && rest.find('/') == Some(rest.len() - 1) => {
            &uri[..uri.len() - 1]
        }
        _ => uri,
    }
}

fn number(claims: &Value, name: &'static str) -> Result<Option<i64>, TokenError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .map(Some)
            .ok_or(TokenError::InvalidClaim(name)),
    }
}

fn string(claims: &Value, name: &'static str) -> Result<String, TokenError> {
    claims
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .ok_or(TokenError::InvalidClaim(name))
}

/// Checks the verified claims at time `now` (Unix seconds) and builds the
/// [`Principal`].
pub(crate) fn check_claims(
    claims: Value,
    rules: &ClaimRules,
    now: i64,
) -> Result<Principal, TokenError> {
    if claims.get("iss").and_then(Value::as_str) != Some(rules.issuer.as_str()) {
        return Err(TokenError::WrongIssuer);
    }
    let ours = |a: &Value| {
        a.as_str().is_some_and(|a| {
            let a = normalize_uri(a);
            rules.audiences.iter().any(|ours| ours == a)
        })
    };
    let audience_ok = match claims.get("aud") {
        Some(Value::Array(list)) => list.iter().any(ours),
        Some(a) => ours(a),
        None => false,
    };
    if !audience_ok {
        return Err(TokenError::WrongAudience);
    }
    let exp = number(&claims, "exp")?.ok_or(TokenError::InvalidClaim("exp"))?;
    if now > exp.saturating_add(rules.leeway) {
        return Err(TokenError::Expired);
    }
    for name in ["nbf", "iat"] {
        if number(&claims, name)?.is_some_and(|t| t.saturating_sub(rules.leeway) > now) {
            return Err(TokenError::NotYetValid);
        }
    }
    if let Some(cnf) = claims.get("cnf")
        && cnf.get("jkt").is_some_and(|j| !j.is_string())
    {
        return Err(TokenError::InvalidClaim("cnf"));
    }
    let sub = string(&claims, "sub")?;
    let client_id = rules.mapping.client_id(&claims)?;
    let scopes = rules.mapping.scopes(&claims)?;
    let act = act_chain(&claims)?;
    Ok(PrincipalData {
        sub,
        client_id,
        effective: rules.hierarchy.expand(&scopes),
        scopes,
        act,
        expires_at: exp,
        claims,
    }
    .into())
}

/// The `act` chain, outermost (current) actor first.
fn act_chain(claims: &Value) -> Result<Vec<Actor>, TokenError> {
    let mut chain = Vec::new();
    let mut next = claims.get("act");
    while let Some(act) = next {
        let Value::Object(obj) = act else {
            return Err(TokenError::InvalidClaim("act"));
        };
        if chain.len() == MAX_ACT_DEPTH {
            return Err(TokenError::InvalidClaim("act"));
        }
        let text = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_owned);
        chain.push(Actor {
            sub: text("sub"),
            client_id: text("client_id"),
        });
        next = obj.get("act");
    }
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;

    fn rules() -> ClaimRules {
        ClaimRules {
            issuer: "https://as.example".into(),
            audiences: vec!["https://mcp.example/mcp".into()],
            leeway: 60,
            mapping: ClaimMapping::rfc9068(),
            hierarchy: Arc::default(),
        }
    }

    fn claims() -> Value {
        json!({
            "iss": "https://as.example",
            "aud": "https://mcp.example/mcp",
            "sub": "user-1",
            "client_id": "client-1",
            "scope": "notes:read notes:write",
            "iat": NOW - 10,
            "exp": NOW + 600,
            "jti": "abc",
        })
    }

    fn with(mut c: Value, key: &str, v: Value) -> Value {
        c[key] = v;
        c
    }

    fn without(mut c: Value, key: &str) -> Value {
        c.as_object_mut().unwrap().remove(key);
        c
    }

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    fn header(h: Value) -> Result<Algorithm, TokenError> {
        let token = format!("{}.{}.sig", b64(&h), b64(&json!({})));
        check_header(
            &parse_header(&token)?,
            &[Algorithm::ES256, Algorithm::RS256],
            &ClaimMapping::rfc9068(),
        )
    }

    #[test]
    fn valid_claims_make_a_principal() {
        let p = check_claims(claims(), &rules(), NOW).unwrap();
        assert_eq!(p.sub(), "user-1");
        assert_eq!(p.client_id(), "client-1");
        assert_eq!(p.scopes(), ["notes:read", "notes:write"]);
        assert!(p.has_scope("notes:read") && !p.has_scope("notes"));
        assert_eq!(p.expires_at(), NOW + 600);
        assert!(p.act().is_empty());
        assert_eq!(p.claims()["jti"], "abc");
        let required = vec!["notes:read".to_owned(), "admin".to_owned()];
        assert_eq!(p.missing_scopes(&required), ["admin"]);
    }

    #[test]
    fn issuer_is_byte_compared() {
        for iss in [
            json!("https://as.example/"),
            json!("https://AS.example"),
            json!(null),
            json!(1),
        ] {
            assert_eq!(
                check_claims(with(claims(), "iss", iss), &rules(), NOW).unwrap_err(),
                TokenError::WrongIssuer
            );
        }
    }

    #[test]
    fn audience_string_or_array_with_trailing_slash_normalised() {
        let mut r = rules();
        r.audiences = vec!["https://mcp.example".into()];
        for aud in [
            json!("https://mcp.example"),
            json!("https://mcp.example/"),
            json!(["https://other", "https://mcp.example/"]),
        ] {
            assert!(check_claims(with(claims(), "aud", aud), &r, NOW).is_ok());
        }
        for aud in [
            json!("https://mcp.example/mcp"),
            json!("https://mcp.example.evil"),
            json!([]),
            json!(["https://other"]),
            json!(null),
            json!(7),
        ] {
            assert_eq!(
                check_claims(with(claims(), "aud", aud), &r, NOW).unwrap_err(),
                TokenError::WrongAudience
            );
        }
        assert_eq!(
            check_claims(without(claims(), "aud"), &r, NOW).unwrap_err(),
            TokenError::WrongAudience
        );
        // A path resource is not normalised: /mcp/ is another resource than /mcp.
        assert_eq!(
            check_claims(
                with(claims(), "aud", json!("https://mcp.example/mcp/")),
                &rules(),
                NOW
            )
            .unwrap_err(),
            TokenError::WrongAudience
        );
    }

    #[test]
    fn normalize_only_strips_lone_origin_slash() {
        assert_eq!(normalize_uri("https://a.example/"), "https://a.example");
        assert_eq!(
            normalize_uri("https://a.example:8443/"),
            "https://a.example:8443"
        );
        assert_eq!(normalize_uri("https://a.example"), "https://a.example");
        assert_eq!(
            normalize_uri("https://a.example/mcp/"),
            "https://a.example/mcp/"
        );
        assert_eq!(normalize_uri("urn:x/"), "urn:x/");
        assert_eq!(normalize_uri("https:///"), "https:///");
    }

    #[test]
    fn expiry_and_not_before_with_leeway() {
        let c = |k: &str, v: i64| with(claims(), k, json!(v));
        assert!(check_claims(c("exp", NOW - 59), &rules(), NOW).is_ok());
        assert_eq!(
            check_claims(c("exp", NOW - 61), &rules(), NOW).unwrap_err(),
            TokenError::Expired
        );
        assert!(check_claims(c("nbf", NOW + 59), &rules(), NOW).is_ok());
        assert_eq!(
            check_claims(c("nbf", NOW + 61), &rules(), NOW).unwrap_err(),
            TokenError::NotYetValid
        );
        assert_eq!(
            check_claims(c("iat", NOW + 120), &rules(), NOW).unwrap_err(),
            TokenError::NotYetValid
        );
        assert_eq!(
            check_claims(without(claims(), "exp"), &rules(), NOW).unwrap_err(),
            TokenError::InvalidClaim("exp")
        );
        assert_eq!(
            check_claims(with(claims(), "exp", json!("soon")), &rules(), NOW).unwrap_err(),
            TokenError::InvalidClaim("exp")
        );
        assert!(
            check_claims(
                with(claims(), "exp", json!((NOW + 5) as f64 + 0.5)),
                &rules(),
                NOW
            )
            .is_ok()
        );
    }

    #[test]
    fn subject_client_and_scope_claims_are_required_shapes() {
        for k in ["sub", "client_id"] {
            assert_eq!(
                check_claims(without(claims(), k), &rules(), NOW).unwrap_err(),
                TokenError::InvalidClaim(k)
            );
            assert_eq!(
                check_claims(with(claims(), k, json!("")), &rules(), NOW).unwrap_err(),
                TokenError::InvalidClaim(k)
            );
        }
        assert!(
            check_claims(without(claims(), "scope"), &rules(), NOW)
                .unwrap()
                .scopes()
                .is_empty()
        );
        assert_eq!(
            check_claims(with(claims(), "scope", json!(["a"])), &rules(), NOW).unwrap_err(),
            TokenError::InvalidClaim("scope")
        );
    }

    #[test]
    fn act_chain_is_flattened_and_bounded() {
        let c = with(
            claims(),
            "act",
            json!({"sub": "svc-a", "client_id": "a", "act": {"sub": "svc-b"}}),
        );
        let p = check_claims(c, &rules(), NOW).unwrap();
        assert_eq!(p.act().len(), 2);
        assert_eq!(p.act()[0].sub.as_deref(), Some("svc-a"));
        assert_eq!(p.act()[0].client_id.as_deref(), Some("a"));
        assert_eq!(p.act()[1].sub.as_deref(), Some("svc-b"));
        let mut deep = json!({"sub": "x"});
        for _ in 0..20 {
            deep = json!({"sub": "x", "act": deep});
        }
        assert_eq!(
            check_claims(with(claims(), "act", deep), &rules(), NOW).unwrap_err(),
            TokenError::InvalidClaim("act")
        );
        assert_eq!(
            check_claims(with(claims(), "act", json!("x")), &rules(), NOW).unwrap_err(),
            TokenError::InvalidClaim("act")
        );
    }

    #[test]
    fn dpop_binding_is_kept_for_the_proof_check() {
        let c = with(claims(), "cnf", json!({"jkt": "thumb"}));
        let p = check_claims(c, &rules(), NOW).unwrap();
        assert_eq!(p.dpop_jkt(), Some("thumb"));
        let c = with(claims(), "cnf", json!({"jkt": 7}));
        assert_eq!(
            check_claims(c, &rules(), NOW).unwrap_err(),
            TokenError::InvalidClaim("cnf")
        );
    }

    #[test]
    fn header_typ_variants() {
        for typ in [
            "at+jwt",
            "AT+JWT",
            "application/at+jwt",
            "Application/At+Jwt",
        ] {
            assert_eq!(
                header(json!({"alg": "ES256", "typ": typ})),
                Ok(Algorithm::ES256)
            );
        }
        for typ in [
            json!("JWT"),
            json!(null),
            json!("application/jwt"),
            json!("xat+jwt"),
        ] {
            assert_eq!(
                header(json!({"alg": "ES256", "typ": typ})),
                Err(TokenError::WrongType)
            );
        }
        assert_eq!(header(json!({"alg": "ES256"})), Err(TokenError::WrongType));
    }

    #[test]
    fn header_algorithm_allow_list() {
        assert_eq!(
            header(json!({"alg": "RS256", "typ": "at+jwt"})),
            Ok(Algorithm::RS256)
        );
        for alg in ["none", "HS256", "ES384", "", "es256"] {
            assert_eq!(
                header(json!({"alg": alg, "typ": "at+jwt"})),
                Err(TokenError::AlgorithmNotAllowed(alg.into()))
            );
        }
        assert_eq!(
            header(json!({"typ": "at+jwt"})),
            Err(TokenError::AlgorithmNotAllowed(String::new()))
        );
    }

    #[test]
    fn malformed_and_oversized_tokens() {
        assert_eq!(
            parse_header(&"a".repeat(MAX_TOKEN_BYTES + 1)).unwrap_err(),
            TokenError::TooLarge
        );
        for t in [
            "",
            "abc",
            "a.b",
            "a.b.c.d",
            "..",
            "a..c",
            "!!!.e30.sig",
            "e30",
            "bm90anNvbg.e30.sig",
        ] {
            assert!(
                matches!(parse_header(t), Err(TokenError::Malformed(_))),
                "{t:?} should be malformed"
            );
        }
        // alg: none tokens have an empty signature part.
        let none = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "at+jwt"})),
            b64(&claims())
        );
        assert!(matches!(parse_header(&none), Err(TokenError::Malformed(_))));
    }
}
