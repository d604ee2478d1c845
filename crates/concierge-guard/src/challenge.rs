//! The `WWW-Authenticate: Bearer` challenge (RFC 6750 §3, RFC 9728 §5.1).

use std::fmt;

use url::Url;

/// The `error` code of a bearer token challenge ([RFC 6750] §3.1).
///
/// ```
/// use concierge_guard::ChallengeError;
///
/// assert_eq!(ChallengeError::InsufficientScope.to_string(), "insufficient_scope");
/// assert_eq!(ChallengeError::InvalidToken.http_status(), 401);
/// ```
///
/// [RFC 6750]: https://www.rfc-editor.org/rfc/rfc6750#section-3.1
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChallengeError {
    /// `invalid_request`: the request is malformed (missing parameter,
    /// several tokens, …). Sent with status 400.
    InvalidRequest,
    /// `invalid_token`: the token is expired, revoked, malformed or for
    /// another resource. Sent with status 401.
    InvalidToken,
    /// `insufficient_scope`: the token is valid but lacks a required scope.
    /// Sent with status 403.
    InsufficientScope,
    /// `insufficient_user_authentication` ([RFC 9470] §3): the user's
    /// authentication is not strong or recent enough. Sent with status 401.
    ///
    /// [RFC 9470]: https://www.rfc-editor.org/rfc/rfc9470#section-3
    InsufficientUserAuthentication,
}

impl ChallengeError {
    /// The error code as it appears on the wire, e.g. `"invalid_token"`.
    ///
    /// ```
    /// use concierge_guard::ChallengeError;
    ///
    /// assert_eq!(ChallengeError::InvalidRequest.as_str(), "invalid_request");
    /// ```
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope => "insufficient_scope",
            Self::InsufficientUserAuthentication => "insufficient_user_authentication",
        }
    }

    /// The HTTP status code RFC 6750 §3.1 (and RFC 9470 §3) prescribes for
    /// this error.
    ///
    /// ```
    /// use concierge_guard::ChallengeError;
    ///
    /// assert_eq!(ChallengeError::InvalidRequest.http_status(), 400);
    /// assert_eq!(ChallengeError::InvalidToken.http_status(), 401);
    /// assert_eq!(ChallengeError::InsufficientScope.http_status(), 403);
    /// ```
    #[must_use]
    pub const fn http_status(self) -> u16 {
        match self {
            Self::InvalidRequest => 400,
            Self::InvalidToken | Self::InsufficientUserAuthentication => 401,
            Self::InsufficientScope => 403,
        }
    }
}

impl fmt::Display for ChallengeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `WWW-Authenticate` challenge for the `Bearer` scheme ([RFC 6750] §3),
/// with the `resource_metadata` parameter of [RFC 9728] §5.1.
///
/// Its [`Display`](fmt::Display) output is the header value. Parameters
/// appear in the order `error`, `error_description`, `scope`, `acr_values`,
/// `max_age` (RFC 9470 §3), `resource_metadata`; unset ones are omitted. A challenge without
/// parameters renders as just `Bearer`.
///
/// Every value is sent as an RFC 9110 quoted-string: `"` and `\` are escaped
/// with a backslash, control characters are removed, and non-ASCII
/// characters are replaced by `?` (RFC 6750 allows only ASCII in these
/// values). The output is therefore always a valid visible-ASCII header
/// value.
///
/// Pair the value with the status from [`http_status`](Self::http_status).
///
/// ```
/// use concierge_guard::{BearerChallenge, ChallengeError};
///
/// let challenge = BearerChallenge::new()
///     .with_error(ChallengeError::InvalidToken)
///     .with_error_description("token expired");
/// assert_eq!(challenge.http_status(), 401);
/// assert_eq!(
///     challenge.to_string(),
///     r#"Bearer error="invalid_token", error_description="token expired""#,
/// );
/// ```
///
/// [RFC 6750]: https://www.rfc-editor.org/rfc/rfc6750#section-3
/// [RFC 9728]: https://www.rfc-editor.org/rfc/rfc9728#section-5.1
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BearerChallenge {
    error: Option<ChallengeError>,
    error_description: Option<String>,
    scope: Option<String>,
    acr_values: Option<String>,
    max_age: Option<u64>,
    resource_metadata: Option<Url>,
}

impl BearerChallenge {
    /// A challenge without parameters: the response to a request that carried
    /// no token at all (RFC 6750 §3.1 says not to send an error code then).
    ///
    /// ```
    /// use concierge_guard::BearerChallenge;
    ///
    /// assert_eq!(BearerChallenge::new().to_string(), "Bearer");
    /// assert_eq!(BearerChallenge::new().http_status(), 401);
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Shorthand for an `invalid_token` challenge with a description.
    ///
    /// ```
    /// use concierge_guard::{BearerChallenge, ChallengeError};
    ///
    /// let c = BearerChallenge::invalid_token("token expired");
    /// assert_eq!(c.error(), Some(ChallengeError::InvalidToken));
    /// assert_eq!(c.to_string(), r#"Bearer error="invalid_token", error_description="token expired""#);
    /// ```
    #[must_use]
    pub fn invalid_token(description: impl Into<String>) -> Self {
        Self::new()
            .with_error(ChallengeError::InvalidToken)
            .with_error_description(description)
    }

    /// Shorthand for an `insufficient_scope` challenge naming the scopes
    /// needed for the request.
    ///
    /// ```
    /// use concierge_guard::BearerChallenge;
    ///
    /// let c = BearerChallenge::insufficient_scope(["notes:read", "notes:write"]);
    /// assert_eq!(c.http_status(), 403);
    /// assert_eq!(c.to_string(), r#"Bearer error="insufficient_scope", scope="notes:read notes:write""#);
    /// ```
    #[must_use]
    pub fn insufficient_scope<I, S>(scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::new()
            .with_error(ChallengeError::InsufficientScope)
            .with_scope(scopes)
    }

    /// Sets the `error` parameter.
    ///
    /// ```
    /// use concierge_guard::{BearerChallenge, ChallengeError};
    ///
    /// let c = BearerChallenge::new().with_error(ChallengeError::InvalidRequest);
    /// assert_eq!(c.to_string(), r#"Bearer error="invalid_request""#);
    /// assert_eq!(c.http_status(), 400);
    /// ```
    #[must_use]
    pub fn with_error(mut self, error: ChallengeError) -> Self {
        self.error = Some(error);
        self
    }

    /// Sets the human-readable `error_description` parameter (for developers,
    /// not end users), kept to the characters RFC 6750 §3 allows: a double
    /// quote becomes `'`, a backslash `/`, control characters are dropped and
    /// other non-ASCII characters become `?`.
    ///
    /// ```
    /// use concierge_guard::BearerChallenge;
    ///
    /// let c = BearerChallenge::new().with_error_description(r#"bad "aud""#);
    /// assert_eq!(c.to_string(), r#"Bearer error_description="bad 'aud'""#);
    /// ```
    #[must_use]
    pub fn with_error_description(mut self, description: impl Into<String>) -> Self {
        self.error_description = Some(description_text(&description.into()));
        self
    }

    /// Sets the `scope` parameter to the given scopes joined by spaces,
    /// replacing any previous value. An empty list removes the parameter.
    ///
    /// ```
    /// use concierge_guard::BearerChallenge;
    ///
    /// let c = BearerChallenge::new().with_scope(["a", "b"]);
    /// assert_eq!(c.to_string(), r#"Bearer scope="a b""#);
    /// assert_eq!(BearerChallenge::new().with_scope(Vec::<String>::new()).to_string(), "Bearer");
    /// ```
    #[must_use]
    pub fn with_scope<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut joined = String::new();
        for scope in scopes {
            if !joined.is_empty() {
                joined.push(' ');
            }
            joined.push_str(scope.as_ref());
        }
        self.scope = (!joined.is_empty()).then_some(joined);
        self
    }

    /// Sets the `acr_values` parameter of an `insufficient_user_authentication`
    /// challenge (RFC 9470 §3); an empty list removes it.
    ///
    /// ```
    /// use concierge_guard::BearerChallenge;
    /// assert_eq!(BearerChallenge::new().with_acr_values(["mfa", "hwk"]).to_string(), r#"Bearer acr_values="mfa hwk""#);
    /// ```
    #[must_use]
    pub fn with_acr_values<I, S>(mut self, values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let joined = values
            .into_iter()
            .map(|v| v.as_ref().to_owned())
            .collect::<Vec<_>>()
            .join(" ");
        self.acr_values = (!joined.is_empty()).then_some(joined);
        self
    }

    /// Sets the `max_age` parameter (seconds) of an
    /// `insufficient_user_authentication` challenge (RFC 9470 §3).
    ///
    /// ```
    /// use concierge_guard::BearerChallenge;
    /// assert_eq!(BearerChallenge::new().with_max_age(Some(60)).to_string(), r#"Bearer max_age="60""#);
    /// ```
    #[must_use]
    pub fn with_max_age(mut self, max_age: Option<u64>) -> Self {
        self.max_age = max_age;
        self
    }

    /// The `scope` parameter, if set.
    ///
    /// ```
    /// use concierge_guard::BearerChallenge;
    /// assert_eq!(BearerChallenge::new().with_scope(["a", "b"]).scope(), Some("a b"));
    /// ```
    #[must_use]
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// Sets the `resource_metadata` parameter: the URL of this resource's
    /// [`ProtectedResourceMetadata`](crate::ProtectedResourceMetadata), usually from
    /// [`metadata_url`](crate::metadata_url).
    ///
    /// ```
    /// use concierge_guard::{BearerChallenge, metadata_url};
    /// use url::Url;
    ///
    /// let resource = Url::parse("https://mcp.example.com/")?;
    /// let c = BearerChallenge::new().with_resource_metadata(metadata_url(&resource));
    /// assert_eq!(
    ///     c.to_string(),
    ///     r#"Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource""#,
    /// );
    /// # Ok::<(), url::ParseError>(())
    /// ```
    #[must_use]
    pub fn with_resource_metadata(mut self, url: Url) -> Self {
        self.resource_metadata = Some(url);
        self
    }

    /// The `error` parameter, if set.
    ///
    /// ```
    /// use concierge_guard::BearerChallenge;
    ///
    /// assert_eq!(BearerChallenge::new().error(), None);
    /// ```
    #[must_use]
    pub fn error(&self) -> Option<ChallengeError> {
        self.error
    }

    /// The HTTP status code to send with this challenge: 401 when there is no
    /// error code or it is `invalid_token` or `insufficient_user_authentication`,
    /// 400 for `invalid_request`, 403 for `insufficient_scope`.
    ///
    /// ```
    /// use concierge_guard::{BearerChallenge, ChallengeError};
    ///
    /// assert_eq!(BearerChallenge::new().http_status(), 401);
    /// assert_eq!(BearerChallenge::new().with_error(ChallengeError::InsufficientScope).http_status(), 403);
    /// ```
    #[must_use]
    pub fn http_status(&self) -> u16 {
        self.error.map_or(401, ChallengeError::http_status)
    }
}

impl fmt::Display for BearerChallenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Bearer")?;
        let max_age = self.max_age.map(|m| m.to_string());
        let params = [
            ("error", self.error.map(ChallengeError::as_str)),
            ("error_description", self.error_description.as_deref()),
            ("scope", self.scope.as_deref()),
            ("acr_values", self.acr_values.as_deref()),
            ("max_age", max_age.as_deref()),
            (
                "resource_metadata",
                self.resource_metadata.as_ref().map(Url::as_str),
            ),
        ];
        let mut separator = " ";
        for (name, value) in params {
            if let Some(value) = value {
                write!(f, "{separator}{name}=")?;
                write_quoted(f, value)?;
                separator = ", ";
            }
        }
        Ok(())
    }
}

/// `text` with only the characters RFC 6750 §3 allows in `error_description`
/// (`%x20-21 / %x23-5B / %x5D-7E`), for the challenge and the JSON body alike.
pub(crate) fn description_text(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            ' '..='~' => c,
            _ => '?',
        })
        .collect()
}

/// Writes `value` as an RFC 9110 quoted-string restricted to visible ASCII
/// and space: `"` and `\` are backslash-escaped, control characters dropped,
/// other non-ASCII characters replaced by `?`.
fn write_quoted(f: &mut fmt::Formatter<'_>, value: &str) -> fmt::Result {
    use fmt::Write as _;

    f.write_char('"')?;
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                f.write_char('\\')?;
                f.write_char(c)?;
            }
            c if c.is_control() => {}
            ' '..='~' => f.write_char(c)?,
            _ => f.write_char('?')?,
        }
    }
    f.write_char('"')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn challenge_without_parameters() {
        assert_eq!(BearerChallenge::new().to_string(), "Bearer");
    }

    #[test]
    fn challenge_parameter_order() {
        let challenge = BearerChallenge::new()
            .with_resource_metadata(url(
                "https://mcp.example.com/.well-known/oauth-protected-resource/mcp",
            ))
            .with_scope(["notes:read", "notes:write"])
            .with_error_description("need more")
            .with_error(ChallengeError::InsufficientScope);
        assert_eq!(
            challenge.to_string(),
            "Bearer error=\"insufficient_scope\", error_description=\"need more\", \
             scope=\"notes:read notes:write\", \
             resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\""
        );
    }

    #[test]
    fn challenge_escapes_quotes_and_backslashes() {
        // The description keeps to RFC 6750's characters; other values are escaped.
        let challenge = BearerChallenge::new()
            .with_error_description(r#"say "hi" \o/"#)
            .with_scope([r#"a"b\c"#]);
        assert_eq!(
            challenge.to_string(),
            r#"Bearer error_description="say 'hi' /o/", scope="a\"b\\c""#
        );
    }

    #[test]
    fn challenge_removes_control_and_replaces_non_ascii() {
        let challenge = BearerChallenge::new()
            .with_error_description("line1\r\nline2\t\u{7f}\u{85}end é")
            .with_scope(["a\"b", "c\nd"]);
        let value = challenge.to_string();
        assert_eq!(
            value,
            r#"Bearer error_description="line1line2end ?", scope="a\"b cd""#
        );
        assert!(value.bytes().all(|b| (b' '..=b'~').contains(&b)));
    }

    #[test]
    fn status_mapping() {
        assert_eq!(BearerChallenge::new().http_status(), 401);
        assert_eq!(BearerChallenge::invalid_token("x").http_status(), 401);
        assert_eq!(
            BearerChallenge::new()
                .with_error(ChallengeError::InvalidRequest)
                .http_status(),
            400
        );
        assert_eq!(
            BearerChallenge::insufficient_scope(["s"]).http_status(),
            403
        );
    }

    #[test]
    fn error_codes_render() {
        assert_eq!(
            ChallengeError::InvalidRequest.to_string(),
            "invalid_request"
        );
        assert_eq!(ChallengeError::InvalidToken.to_string(), "invalid_token");
        assert_eq!(
            ChallengeError::InsufficientScope.to_string(),
            "insufficient_scope"
        );
    }
}
