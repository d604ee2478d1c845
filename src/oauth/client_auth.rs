//! Client authentication at the token endpoint (RFC 6749 §2.3, OAuth 2.1 §2.4).

use base64::Engine;
use http::HeaderMap;

use super::client_assertion::{self, AssertionError, AssertionVerifier, CLIENT_ASSERTION_TYPE};
use super::clients::{Client, ClientLookupError};
use super::context::Context;
use super::form::Form;
use crate::error::{ErrorCode, OAuthError};
use crate::store::AuthMethod;
use crate::util;

/// The methods the token endpoint can check today; metadata lists exactly these.
pub const IMPLEMENTED: &[AuthMethod] = &[
    AuthMethod::ClientSecretBasic,
    AuthMethod::ClientSecretPost,
    AuthMethod::PrivateKeyJwt,
    AuthMethod::None,
];

/// What the client presented.
pub enum Presented {
    Basic {
        client_id: String,
        secret: String,
    },
    Post {
        client_id: String,
        secret: String,
    },
    /// A public client: only its id.
    None {
        client_id: String,
    },
    /// `private_key_jwt`: a signed assertion (RFC 7523 §2.2). `client_id` is the one the
    /// assertion names in `sub`, not yet verified.
    Assertion {
        client_id: String,
        assertion: String,
    },
}

impl std::fmt::Debug for Presented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Presented({}, {})",
            self.method().as_str(),
            self.client_id()
        )
    }
}

impl Presented {
    pub fn client_id(&self) -> &str {
        match self {
            Self::Basic { client_id, .. }
            | Self::Post { client_id, .. }
            | Self::None { client_id }
            | Self::Assertion { client_id, .. } => client_id,
        }
    }

    pub fn method(&self) -> AuthMethod {
        match self {
            Self::Basic { .. } => AuthMethod::ClientSecretBasic,
            Self::Post { .. } => AuthMethod::ClientSecretPost,
            Self::None { .. } => AuthMethod::None,
            Self::Assertion { .. } => AuthMethod::PrivateKeyJwt,
        }
    }
}

/// 401 `invalid_client`; with HTTP Basic the answer carries a Basic challenge (RFC 6749 §5.2).
pub fn invalid_client(
    basic: bool,
    description: impl Into<std::borrow::Cow<'static, str>>,
) -> OAuthError {
    let mut e = OAuthError::new(ErrorCode::InvalidClient, description);
    if basic {
        e.www_authenticate = Some("Basic realm=\"concierge\"".into());
    }
    e
}

/// Read the client's credentials from the request. One method only; `client_id` in the body
/// alongside HTTP Basic is accepted when the two agree: some clients send both.
pub fn presented(headers: &HeaderMap, form: &Form) -> Result<Presented, OAuthError> {
    if form.get("client_assertion").is_some() || form.get("client_assertion_type").is_some() {
        return presented_assertion(headers, form);
    }
    let body_id = form.get("client_id");
    let body_secret = form.get("client_secret");
    if let Some(value) = headers.get(http::header::AUTHORIZATION) {
        let (id, secret) = parse_basic(value.to_str().unwrap_or_default()).ok_or_else(|| {
            invalid_client(true, "the Authorization header is not valid HTTP Basic")
        })?;
        if body_secret.is_some() {
            return Err(OAuthError::invalid_request(
                "use one client authentication method, not HTTP Basic and client_secret together",
            ));
        }
        if body_id.is_some_and(|b| b != id) {
            return Err(OAuthError::invalid_request(
                "client_id in the body differs from the one in the Authorization header",
            ));
        }
        return Ok(Presented::Basic {
            client_id: id,
            secret,
        });
    }
    match (body_id, body_secret) {
        (Some(id), Some(secret)) => Ok(Presented::Post {
            client_id: id.to_string(),
            secret: secret.to_string(),
        }),
        (Some(id), None) => Ok(Presented::None {
            client_id: id.to_string(),
        }),
        (None, _) => Err(invalid_client(
            false,
            "client authentication is required: HTTP Basic, or client_id (and client_secret) in the body",
        )),
    }
}

/// A grant assertion that authenticates the client is its only credential: a `client_id`
/// may repeat whom it names, nothing else may come along (RFC 6749 §2.3: one method).
pub fn only_the_assertion(
    headers: &HeaderMap,
    form: &Form,
    client_id: &str,
) -> Result<(), OAuthError> {
    if headers.contains_key(http::header::AUTHORIZATION)
        || ["client_secret", "client_assertion", "client_assertion_type"]
            .iter()
            .any(|p| form.get(p).is_some())
    {
        return Err(OAuthError::invalid_request(
            "the assertion authenticates the client here; send no other client credentials",
        ));
    }
    if form.get("client_id").is_some_and(|id| id != client_id) {
        return Err(OAuthError::invalid_request(
            "client_id differs from the client the assertion names",
        ));
    }
    Ok(())
}

/// `client_assertion_type` + `client_assertion` (RFC 7523 §2.2), alone: no HTTP Basic, no
/// `client_secret`; a `client_id` in the body must be the assertion's `sub`.
fn presented_assertion(headers: &HeaderMap, form: &Form) -> Result<Presented, OAuthError> {
    if headers.contains_key(http::header::AUTHORIZATION) || form.get("client_secret").is_some() {
        return Err(OAuthError::invalid_request(
            "use one client authentication method: a client_assertion, without HTTP Basic or \
             client_secret",
        ));
    }
    match form.get("client_assertion_type") {
        Some(CLIENT_ASSERTION_TYPE) => {}
        Some(_) => {
            return Err(OAuthError::invalid_request(format!(
                "client_assertion_type must be {CLIENT_ASSERTION_TYPE}"
            )));
        }
        None => {
            return Err(OAuthError::invalid_request(format!(
                "client_assertion_type is missing; it must be {CLIENT_ASSERTION_TYPE}"
            )));
        }
    }
    let assertion = form
        .get("client_assertion")
        .ok_or_else(|| OAuthError::invalid_request("client_assertion is missing"))?;
    let client_id = client_assertion::claimed_client_id(assertion)
        .map_err(|e| invalid_client(false, e.to_string()))?;
    if form.get("client_id").is_some_and(|b| b != client_id) {
        return Err(invalid_client(
            false,
            "client_id in the body differs from the sub of the client_assertion",
        ));
    }
    Ok(Presented::Assertion {
        client_id,
        assertion: assertion.to_string(),
    })
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 §2.3.1).
fn parse_basic(value: &str) -> Option<(String, String)> {
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let decode = |s: &str| -> Option<String> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&format!("v={s}")).ok()?;
        pairs.into_iter().next().map(|(_, v)| v)
    };
    let id = decode(id)?;
    (!id.is_empty()).then_some(())?;
    Some((id, decode(secret).unwrap_or_default()))
}

/// Check what the client presented against how it registered.
pub async fn authenticate(
    client: &Client,
    presented: &Presented,
    assertions: &AssertionVerifier,
) -> Result<(), OAuthError> {
    let basic = matches!(presented, Presented::Basic { .. });
    if !client.metadata.accepts(presented.method()) {
        return Err(invalid_client(
            basic,
            format!(
                "this client is registered for {}, not {}",
                client.metadata.accepted_methods(),
                presented.method().as_str()
            ),
        ));
    }
    match presented {
        Presented::Basic { secret, .. } | Presented::Post { secret, .. } => {
            // The current secret, or one being rotated out until its overlap ends.
            let ok = client
                .secret_hash
                .as_deref()
                .is_some_and(|h| util::verify_secret(secret, h))
                || client
                    .previous_secret
                    .as_ref()
                    .is_some_and(|p| p.accepts(secret, util::now()));
            if ok {
                Ok(())
            } else {
                Err(invalid_client(basic, "client authentication failed"))
            }
        }
        Presented::None { .. } => Ok(()),
        Presented::Assertion { assertion, .. } => {
            match assertions.verify(client, assertion).await {
                Ok(()) => Ok(()),
                Err(AssertionError::Store(e)) => Err(OAuthError::internal(e)),
                Err(e) => {
                    tracing::info!(client_id = %client.client_id, reason = %e, "client assertion refused");
                    Err(invalid_client(false, e.to_string()))
                }
            }
        }
    }
}

/// Authenticate the client of a token-endpoint-style request (token, introspection,
/// revocation, device authorization): what it presented, checked against how it registered.
/// A client that no longer exists gets `invalid_client`, so agents know to register again.
pub async fn authenticate_client(
    ctx: &Context,
    headers: &HeaderMap,
    form: &Form,
) -> Result<Client, OAuthError> {
    let presented = presented(headers, form)?;
    let basic = matches!(presented, Presented::Basic { .. });
    let client = match ctx.clients.find(presented.client_id()).await {
        Ok(Some(c)) => c,
        Ok(None) => return Err(invalid_client(basic, "unknown client; register again")),
        Err(ClientLookupError::Store(e)) => return Err(e.into()),
        Err(ClientLookupError::Document(e)) => return Err(invalid_client(basic, e.public())),
    };
    authenticate(&client, &presented, &ctx.assertions).await?;
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(id: &str, secret: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
        h.insert(
            http::header::AUTHORIZATION,
            format!("Basic {v}").parse().expect("header"),
        );
        h
    }

    #[test]
    fn basic_is_form_decoded() {
        let p = presented(&basic("my%20client", "s%3Acret"), &Form::default()).expect("ok");
        assert_eq!(p.client_id(), "my client");
        assert!(matches!(p, Presented::Basic { ref secret, .. } if secret == "s:cret"));
    }

    #[test]
    fn one_method_only() {
        let form = Form::parse(b"client_secret=x").expect("form");
        assert!(presented(&basic("a", "b"), &form).is_err());
        let form = Form::parse(b"client_id=other").expect("form");
        assert!(presented(&basic("a", "b"), &form).is_err());
        let form = Form::parse(b"client_id=a").expect("form");
        assert!(presented(&basic("a", "b"), &form).is_ok());
        let e = presented(&HeaderMap::new(), &Form::default()).expect_err("none");
        assert_eq!(e.code, ErrorCode::InvalidClient);
        let mut bad = HeaderMap::new();
        bad.insert(http::header::AUTHORIZATION, "Bearer x".parse().expect("h"));
        let e = presented(&bad, &Form::default()).expect_err("not basic");
        assert!(e.www_authenticate.is_some());
    }

    #[test]
    fn assertions_stand_alone() {
        let payload = util::b64(br#"{"sub":"c1","iss":"c1"}"#);
        let jwt = format!("e30.{payload}.sig");
        let t = CLIENT_ASSERTION_TYPE;
        let form = |extra: &str| {
            let body = format!(
                "client_assertion_type={}&client_assertion={jwt}{extra}",
                form_urlencode(t)
            );
            Form::parse(body.as_bytes()).expect("form")
        };
        let p = presented(&HeaderMap::new(), &form("")).expect("ok");
        assert_eq!(p.client_id(), "c1");
        assert_eq!(p.method(), AuthMethod::PrivateKeyJwt);
        assert!(
            !format!("{p:?}").contains(&jwt),
            "Debug never shows the assertion"
        );
        assert!(presented(&HeaderMap::new(), &form("&client_id=c1")).is_ok());
        let e = presented(&HeaderMap::new(), &form("&client_id=c2")).expect_err("mismatch");
        assert_eq!(e.code, ErrorCode::InvalidClient);
        let e = presented(&HeaderMap::new(), &form("&client_secret=x")).expect_err("mixed");
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        let e = presented(&basic("c1", "x"), &form("")).expect_err("mixed");
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        let wrong =
            Form::parse(format!("client_assertion_type=x&client_assertion={jwt}").as_bytes())
                .expect("form");
        let e = presented(&HeaderMap::new(), &wrong).expect_err("type");
        assert_eq!(e.code, ErrorCode::InvalidRequest);
    }

    fn form_urlencode(s: &str) -> String {
        serde_urlencoded::to_string([("v", s)]).expect("enc")[2..].to_string()
    }

    /// Property tests (README: Fuzzing).
    mod fuzz {
        use http::HeaderValue;
        use proptest::prelude::*;

        use super::*;
        use crate::fuzz::{config, nasty_bytes, nasty_string};

        fn authorization() -> impl Strategy<Value = Option<HeaderValue>> {
            let value = prop_oneof![
                nasty_bytes(),
                nasty_bytes().prop_map(|b| {
                    format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(b)
                    )
                    .into_bytes()
                }),
                "(?i)basic +[A-Za-z0-9+/=]{0,40}".prop_map(String::into_bytes),
            ];
            proptest::option::of(
                value.prop_filter_map("not a header value", |b| HeaderValue::from_bytes(&b).ok()),
            )
        }

        fn form() -> impl Strategy<Value = Form> {
            let name = proptest::sample::select(
                &[
                    "client_id",
                    "client_secret",
                    "client_assertion",
                    "client_assertion_type",
                ][..],
            );
            let value = prop_oneof![
                nasty_string(),
                Just(CLIENT_ASSERTION_TYPE.to_string()),
                (nasty_bytes(), nasty_bytes()).prop_map(|(h, p)| format!(
                    "{}.{}.sig",
                    util::b64(&h),
                    util::b64(&p)
                )),
                nasty_string().prop_map(|sub| {
                    format!(
                        "e30.{}.sig",
                        util::b64(serde_json::json!({ "sub": sub }).to_string().as_bytes())
                    )
                }),
            ];
            proptest::collection::vec((name, value), 0..5).prop_map(|pairs| {
                Form::parse(
                    serde_urlencoded::to_string(pairs)
                        .unwrap_or_default()
                        .as_bytes(),
                )
                .unwrap_or_default()
            })
        }

        proptest! {
            #![proptest_config(config())]

            /// Any header and form: one method with a client_id, or `invalid_request` /
            /// `invalid_client` (with a Basic challenge when Basic was attempted).
            #[test]
            fn credentials_are_one_method_or_a_client_error(auth in authorization(), form in form()) {
                let mut h = HeaderMap::new();
                if let Some(v) = auth {
                    h.insert(http::header::AUTHORIZATION, v);
                }
                match presented(&h, &form) {
                    Ok(p) => {
                        prop_assert!(!p.client_id().is_empty());
                        prop_assert_eq!(matches!(p, Presented::Basic { .. }), h.contains_key(http::header::AUTHORIZATION));
                        prop_assert_eq!(
                            p.method() == AuthMethod::PrivateKeyJwt,
                            form.get("client_assertion").is_some() || form.get("client_assertion_type").is_some()
                        );
                        prop_assert!(form.get("client_id").is_none_or(|b| b == p.client_id()));
                    }
                    Err(e) => prop_assert!(
                        matches!(e.code, ErrorCode::InvalidRequest | ErrorCode::InvalidClient),
                        "{:?}", e.code
                    ),
                }
            }

            /// HTTP Basic as RFC 6749 §2.3.1 encodes it comes back as sent.
            #[test]
            fn basic_round_trips(id in nasty_string().prop_filter("empty", |s| !s.is_empty()), secret in nasty_string()) {
                let enc = |s: &str| serde_urlencoded::to_string([("v", s)]).unwrap_or_default()[2..].to_string();
                let v = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", enc(&id), enc(&secret)));
                prop_assert_eq!(parse_basic(&format!("Basic {v}")), Some((id, secret)));
            }

            /// Any text as a Basic header: a non-empty client_id, or nothing.
            #[test]
            fn basic_decoding_never_panics(value in nasty_string()) {
                if let Some((id, _)) = parse_basic(&value) {
                    prop_assert!(!id.is_empty());
                }
            }
        }
    }
}
