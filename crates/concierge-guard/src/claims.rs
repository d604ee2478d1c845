//! [`ClaimMapping`]: where an issuer puts what the guard reads, so tokens from
//! authorization servers other than Concierge are understood too.

use serde_json::Value;

use crate::error::TokenError;

/// How the access tokens of one issuer are read: which media types (`typ`)
/// are accepted, which claims carry the scopes, which carries the client id.
///
/// The default, [`ClaimMapping::rfc9068`], is the JWT access token profile
/// (RFC 9068) that Concierge and node-oidc-provider follow: `typ: at+jwt`, a
/// space-separated `scope` string, `client_id`. Many identity providers send
/// other shapes by default — `typ: JWT` or no `typ`, `scp` as a string
/// (Entra ID) or an array (Okta), Auth0's `permissions` array, the client in
/// `azp` (Auth0, Keycloak, Entra v2), `cid` (Okta) or `appid` (Entra v1):
/// [`ClaimMapping::identity_providers`] reads all of those.
///
/// ```
/// use concierge_guard::ClaimMapping;
///
/// // Everything the big identity providers send by default…
/// let lenient = ClaimMapping::identity_providers();
/// // …or only what one of them needs.
/// let okta = ClaimMapping::rfc9068()
///     .accept_jwt_typ(true)
///     .scope_claims(["scp"])
///     .client_id_claims(["cid"]);
/// assert_ne!(lenient, okta);
/// ```
///
/// Accepting `typ: JWT` gives up one protection of RFC 9068 §2.1: that an
/// ID token or another JWT of the issuer can never pass for an access token.
/// The audience check still refuses tokens that are not for this resource,
/// so use it with issuers whose other JWTs carry another `aud`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMapping {
    pub(crate) accept_jwt_typ: bool,
    pub(crate) scope_claims: Vec<String>,
    pub(crate) scope_arrays: bool,
    pub(crate) client_id_claims: Vec<String>,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        Self::rfc9068()
    }
}

impl ClaimMapping {
    /// RFC 9068: `typ` must be `at+jwt` (or `application/at+jwt`), the
    /// scopes are the space-separated `scope` string (RFC 8693 §4.2), the
    /// client is `client_id` (RFC 9068 §2.2).
    ///
    /// ```
    /// assert_eq!(concierge_guard::ClaimMapping::rfc9068(), Default::default());
    /// ```
    #[must_use]
    pub fn rfc9068() -> Self {
        Self {
            accept_jwt_typ: false,
            scope_claims: vec!["scope".into()],
            scope_arrays: false,
            client_id_claims: vec!["client_id".into()],
        }
    }

    /// The defaults of widely deployed identity providers: `typ` may also be
    /// `JWT` or absent; the scopes are the union of `scope`, `scp` and
    /// `permissions`, each a space-separated string or an array of strings;
    /// the client is the first of `client_id`, `azp`, `cid`, `appid`.
    ///
    /// ```
    /// let m = concierge_guard::ClaimMapping::identity_providers();
    /// assert_ne!(m, concierge_guard::ClaimMapping::rfc9068());
    /// ```
    #[must_use]
    pub fn identity_providers() -> Self {
        Self {
            accept_jwt_typ: true,
            scope_claims: vec!["scope".into(), "scp".into(), "permissions".into()],
            scope_arrays: true,
            client_id_claims: vec![
                "client_id".into(),
                "azp".into(),
                "cid".into(),
                "appid".into(),
            ],
        }
    }

    /// Also accept `typ: JWT` (any case, with or without `application/`) and
    /// tokens without `typ`. Other types (`dpop+jwt`, `id_token+jwt`, …) are
    /// still refused.
    ///
    /// ```
    /// let m = concierge_guard::ClaimMapping::rfc9068().accept_jwt_typ(true);
    /// # let _ = m;
    /// ```
    #[must_use]
    pub fn accept_jwt_typ(mut self, accept: bool) -> Self {
        self.accept_jwt_typ = accept;
        self
    }

    /// The claims the scopes are read from, in order; the granted scopes are
    /// their union. Each may be a space-separated string or an array of
    /// strings.
    ///
    /// ```
    /// let auth0 = concierge_guard::ClaimMapping::rfc9068().scope_claims(["scope", "permissions"]);
    /// # let _ = auth0;
    /// ```
    #[must_use]
    pub fn scope_claims<I, S>(mut self, claims: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scope_claims = claims.into_iter().map(Into::into).collect();
        self.scope_arrays = true;
        self
    }

    /// The claims the client id is read from, first present wins.
    ///
    /// ```
    /// let keycloak = concierge_guard::ClaimMapping::rfc9068().client_id_claims(["client_id", "azp"]);
    /// # let _ = keycloak;
    /// ```
    #[must_use]
    pub fn client_id_claims<I, S>(mut self, claims: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.client_id_claims = claims.into_iter().map(Into::into).collect();
        self
    }

    /// Is this `typ` header acceptable? RFC 9068 §2.1 (`at+jwt`), compared
    /// case-insensitively with or without the `application/` prefix
    /// (RFC 7515 §4.1.9); with [`accept_jwt_typ`](Self::accept_jwt_typ)
    /// also `JWT` and none.
    pub(crate) fn typ_ok(&self, typ: Option<&str>) -> bool {
        let Some(typ) = typ else {
            return self.accept_jwt_typ;
        };
        let bare = typ
            .get(..12)
            .filter(|p| p.eq_ignore_ascii_case("application/"))
            .map_or(typ, |_| &typ[12..]);
        bare.eq_ignore_ascii_case("at+jwt")
            || (self.accept_jwt_typ && bare.eq_ignore_ascii_case("jwt"))
    }

    /// The granted scopes: the union of the scope claims, in order.
    pub(crate) fn scopes(&self, claims: &Value) -> Result<Vec<String>, TokenError> {
        let mut scopes: Vec<String> = Vec::new();
        let mut add = |s: &str| {
            if !s.is_empty() && !scopes.iter().any(|have| have == s) {
                scopes.push(s.to_owned());
            }
        };
        for name in &self.scope_claims {
            match claims.get(name.as_str()) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) => s.split_ascii_whitespace().for_each(&mut add),
                Some(Value::Array(items)) if self.scope_arrays => {
                    for item in items {
                        let s = item.as_str().ok_or(TokenError::InvalidClaim("scope"))?;
                        s.split_ascii_whitespace().for_each(&mut add);
                    }
                }
                Some(_) => return Err(TokenError::InvalidClaim("scope")),
            }
        }
        Ok(scopes)
    }

    /// The client id: the first non-empty string among the client id claims.
    pub(crate) fn client_id(&self, claims: &Value) -> Result<String, TokenError> {
        self.client_id_claims
            .iter()
            .find_map(|name| {
                claims
                    .get(name.as_str())
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
            })
            .map(str::to_owned)
            .ok_or(TokenError::InvalidClaim("client_id"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn typ_rules() {
        let strict = ClaimMapping::rfc9068();
        let lenient = ClaimMapping::identity_providers();
        for typ in [
            "at+jwt",
            "AT+JWT",
            "application/at+jwt",
            "Application/At+Jwt",
        ] {
            assert!(
                strict.typ_ok(Some(typ)) && lenient.typ_ok(Some(typ)),
                "{typ}"
            );
        }
        for typ in ["JWT", "jwt", "application/jwt"] {
            assert!(
                !strict.typ_ok(Some(typ)) && lenient.typ_ok(Some(typ)),
                "{typ}"
            );
        }
        assert!(!strict.typ_ok(None) && lenient.typ_ok(None));
        for typ in ["dpop+jwt", "id_token+jwt", "xat+jwt", "", "application/"] {
            assert!(
                !strict.typ_ok(Some(typ)) && !lenient.typ_ok(Some(typ)),
                "{typ}"
            );
        }
    }

    #[test]
    fn scopes_from_strings_arrays_and_several_claims() {
        let strict = ClaimMapping::rfc9068();
        assert_eq!(
            strict.scopes(&json!({"scope": "a b  a"})).unwrap(),
            ["a", "b"]
        );
        assert_eq!(
            strict.scopes(&json!({"scp": "a"})).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            strict.scopes(&json!({"scope": ["a"]})).unwrap_err(),
            TokenError::InvalidClaim("scope")
        );
        let lenient = ClaimMapping::identity_providers();
        let auth0 =
            json!({"scope": "openid notes:read", "permissions": ["notes:read", "notes:write"]});
        assert_eq!(
            lenient.scopes(&auth0).unwrap(),
            ["openid", "notes:read", "notes:write"]
        );
        assert_eq!(
            lenient.scopes(&json!({"scp": ["a", "b"]})).unwrap(),
            ["a", "b"]
        );
        assert_eq!(lenient.scopes(&json!({"scp": "a b"})).unwrap(), ["a", "b"]);
        assert_eq!(
            lenient.scopes(&json!({"scp": [1]})).unwrap_err(),
            TokenError::InvalidClaim("scope")
        );
        assert_eq!(
            lenient
                .scopes(&json!({"permissions": {"a": 1}}))
                .unwrap_err(),
            TokenError::InvalidClaim("scope")
        );
    }

    #[test]
    fn client_id_first_present_wins() {
        let lenient = ClaimMapping::identity_providers();
        assert_eq!(
            lenient.client_id(&json!({"azp": "x", "cid": "y"})).unwrap(),
            "x"
        );
        assert_eq!(
            lenient
                .client_id(&json!({"client_id": "", "cid": "y"}))
                .unwrap(),
            "y"
        );
        assert_eq!(lenient.client_id(&json!({"appid": "z"})).unwrap(), "z");
        assert!(
            ClaimMapping::rfc9068()
                .client_id(&json!({"azp": "x"}))
                .is_err()
        );
    }
}
