//! The resource server as an OAuth *client* of its issuer: its credentials
//! (`client_secret_basic` or `private_key_jwt`) and one way to POST a form to
//! the token or introspection endpoint and read the JSON answer or the
//! RFC 6749 §5.2 error.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use url::Url;

use crate::client::unix_now;

/// Client assertion type of RFC 7523 §2.2.
const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Answers larger than this are refused.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// How this resource server authenticates to the issuer when it exchanges or
/// introspects tokens: the credentials of the client registered for it.
///
/// `Debug` never shows the secret or the key.
///
/// ```
/// use concierge_guard::ClientCredentials;
/// let basic = ClientCredentials::secret_basic("calendar-server", "s3cret");
/// assert_eq!(basic.client_id(), "calendar-server");
/// assert!(!format!("{basic:?}").contains("s3cret"));
/// ```
#[derive(Clone)]
pub struct ClientCredentials {
    client_id: String,
    method: Method,
}

#[derive(Clone)]
enum Method {
    /// RFC 6749 §2.3.1: HTTP Basic with the form-urlencoded id and secret.
    SecretBasic(String),
    /// RFC 7523 §2.2 / OpenID Connect Core §9: a signed JWT assertion.
    PrivateKeyJwt {
        key: EncodingKey,
        alg: Algorithm,
        kid: Option<String>,
    },
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let method = match &self.method {
            Method::SecretBasic(_) => "client_secret_basic",
            Method::PrivateKeyJwt { .. } => "private_key_jwt",
        };
        f.debug_struct("ClientCredentials")
            .field("client_id", &self.client_id)
            .field("method", &method)
            .finish_non_exhaustive()
    }
}

impl ClientCredentials {
    /// `client_secret_basic` (RFC 6749 §2.3.1).
    pub fn secret_basic(client_id: impl Into<String>, client_secret: impl Into<String>) -> Self {
        Self {
            client_id: client_id.into(),
            method: Method::SecretBasic(client_secret.into()),
        }
    }

    /// `private_key_jwt` (RFC 7523 §2.2): every request carries a fresh
    /// assertion signed with `key` (`iss` = `sub` = client id, `aud` = the
    /// endpoint's URL, a random `jti`, one minute of life). `kid` names the
    /// key among those the client registered (its `jwks` or `jwks_uri`).
    ///
    /// ```
    /// # fn run(pkcs8_der: &[u8]) {
    /// use concierge_guard::{Algorithm, ClientCredentials};
    /// // An EC P-256 private key (PKCS#8 DER; with jsonwebtoken's `use_pem`, `from_ec_pem`).
    /// let key = jsonwebtoken::EncodingKey::from_ec_der(pkcs8_der);
    /// let creds = ClientCredentials::private_key_jwt("calendar-server", key, Algorithm::ES256, Some("k1".into()));
    /// # }
    /// ```
    pub fn private_key_jwt(
        client_id: impl Into<String>,
        key: EncodingKey,
        alg: Algorithm,
        kid: Option<String>,
    ) -> Self {
        Self {
            client_id: client_id.into(),
            method: Method::PrivateKeyJwt { key, alg, kid },
        }
    }

    /// The client's id.
    #[must_use]
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The token endpoint authentication method's registered name.
    #[must_use]
    pub fn method_name(&self) -> &'static str {
        match self.method {
            Method::SecretBasic(_) => "client_secret_basic",
            Method::PrivateKeyJwt { .. } => "private_key_jwt",
        }
    }

    /// Adds the authentication to a form POST to `endpoint`.
    fn apply(
        &self,
        request: reqwest::RequestBuilder,
        form: &mut Vec<(&'static str, String)>,
        endpoint: &Url,
    ) -> Result<reqwest::RequestBuilder, String> {
        match &self.method {
            Method::SecretBasic(secret) => {
                // RFC 6749 §2.3.1: both parts form-urlencoded before Base64.
                let enc = |s: &str| -> String {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
                };
                let pair = format!("{}:{}", enc(&self.client_id), enc(secret));
                Ok(request.header(
                    http::header::AUTHORIZATION,
                    format!("Basic {}", STANDARD.encode(pair)),
                ))
            }
            Method::PrivateKeyJwt { key, alg, kid } => {
                let now = unix_now();
                let mut jti = [0u8; 16];
                aws_lc_rs::rand::fill(&mut jti).map_err(|_| "no randomness".to_owned())?;
                let claims = json!({
                    "iss": self.client_id,
                    "sub": self.client_id,
                    "aud": endpoint.as_str(),
                    "jti": URL_SAFE_NO_PAD.encode(jti),
                    "iat": now,
                    "exp": now + 60,
                });
                let mut header = Header::new(*alg);
                header.kid.clone_from(kid);
                let assertion = jsonwebtoken::encode(&header, &claims, key)
                    .map_err(|e| format!("signing the client assertion failed: {e}"))?;
                form.push(("client_id", self.client_id.clone()));
                form.push(("client_assertion_type", JWT_BEARER_ASSERTION.to_owned()));
                form.push(("client_assertion", assertion));
                Ok(request)
            }
        }
    }
}

/// What an endpoint answered.
#[derive(Debug)]
pub(crate) enum Answer {
    /// 2xx with a JSON object.
    Ok(Value),
    /// An OAuth error (RFC 6749 §5.2): `error`, `error_description`, status.
    Error {
        error: String,
        description: Option<String>,
        #[cfg_attr(not(feature = "introspection"), allow(dead_code))]
        status: u16,
    },
}

/// POST `form` to `endpoint` authenticated as `credentials`. `Err` is a
/// transport failure or an answer that is not JSON.
pub(crate) async fn post_form(
    http: &reqwest::Client,
    endpoint: &Url,
    credentials: &ClientCredentials,
    mut form: Vec<(&'static str, String)>,
) -> Result<Answer, String> {
    let request = http
        .post(endpoint.clone())
        .header(http::header::ACCEPT, "application/json")
        .timeout(Duration::from_secs(10));
    let request = credentials.apply(request, &mut form, endpoint)?;
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form.iter().map(|(k, v)| (*k, v.as_str())))
        .finish();
    let res = request
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(body)
        .send()
        .await
        .map_err(|e| format!("POST {endpoint} failed: {e}"))?;
    let status = res.status().as_u16();
    if res
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
    {
        return Err(format!("{endpoint} answered with a too large body"));
    }
    let body = res
        .bytes()
        .await
        .map_err(|e| format!("reading the answer of {endpoint} failed: {e}"))?;
    if body.len() > MAX_ANSWER_BYTES {
        return Err(format!("{endpoint} answered with a too large body"));
    }
    let json: Value = serde_json::from_slice(&body)
        .map_err(|_| format!("{endpoint} answered HTTP {status} without a JSON body"))?;
    if (200..300).contains(&status) && json.is_object() {
        return Ok(Answer::Ok(json));
    }
    let text = |k: &str| json.get(k).and_then(Value::as_str).map(str::to_owned);
    Ok(Answer::Error {
        error: text("error").unwrap_or_else(|| format!("http_{status}")),
        description: text("error_description"),
        status,
    })
}
