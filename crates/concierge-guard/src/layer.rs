//! [`GuardLayer`]: the tower middleware that checks the bearer token of every
//! request and answers like RFC 6750 / RFC 9728 say when it is not good enough.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Json;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use bytes::Bytes;
use http_body::Body as HttpBody;
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use serde_json::{Value, json};
use tower::{BoxError, Layer, Service};

use crate::challenge::{BearerChallenge, ChallengeError};
use crate::config::union_into;
use crate::error::TokenError;
use crate::guard::{Guard, Scheme};
use crate::principal::BearerToken;

/// A tower [`Layer`] that lets a request through only with a valid access
/// token carrying the needed scopes. Get one from [`Guard::layer`].
///
/// On success the [`Principal`](crate::Principal) is put in the request's
/// extensions and the inner service is called. Otherwise the answer is:
///
/// - **401** `WWW-Authenticate: Bearer scope="…", resource_metadata="…"`
///   when no bearer token was sent;
/// - **401** with `error="invalid_token"` and an `error_description` when the
///   token is invalid (expired, wrong audience, bad signature, …);
/// - **403** with `error="insufficient_scope"` and the `scope` the request
///   needs, so the client can ask for more (step-up);
/// - **400** `invalid_request` for several `Authorization` headers or a
///   malformed one; **413** when a JSON-RPC body to inspect is too large.
///
/// Every such answer carries `Access-Control-Expose-Headers: WWW-Authenticate`
/// and `Access-Control-Allow-Origin: *`. `OPTIONS` requests (CORS preflights)
/// pass through untouched.
///
/// The service accepts any request body and hands the inner service an
/// [`axum::body::Body`], so it fits axum routers as well as rmcp's
/// `StreamableHttpService`.
#[derive(Clone, Debug)]
pub struct GuardLayer {
    guard: Guard,
    scopes: Arc<[String]>,
    optional: bool,
}

impl GuardLayer {
    pub(crate) fn new(guard: Guard) -> Self {
        Self {
            guard,
            scopes: Arc::new([]),
            optional: false,
        }
    }

    /// Also require these scopes for the routes under this layer (use it with
    /// axum's `route_layer` for per-route scopes).
    ///
    /// ```no_run
    /// # fn app(guard: concierge_guard::Guard) -> axum::Router {
    /// use axum::{Router, routing::{get, post}};
    /// Router::new()
    ///     .route("/notes", post(|| async { "written" }))
    ///     .route_layer(guard.layer().require_scopes(["notes:write"]))
    ///     .route("/health", get(|| async { "ok" }))
    /// # }
    /// ```
    #[must_use]
    pub fn require_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut all = self.scopes.to_vec();
        union_into(
            &mut all,
            &scopes.into_iter().map(Into::into).collect::<Vec<_>>(),
        );
        self.scopes = all.into();
        self
    }

    /// Let requests *without* a token through (an invalid token is still
    /// refused). Handlers then take `Option<Principal>`; extracting a plain
    /// `Principal` answers with the 401 challenge.
    #[must_use]
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = GuardService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GuardService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The [`Service`] made by [`GuardLayer`].
#[derive(Clone, Debug)]
pub struct GuardService<S> {
    inner: S,
    layer: GuardLayer,
}

/// Put in the request extensions by the layer, so extractors can build the
/// right challenge.
#[derive(Clone)]
pub(crate) struct GuardContext {
    pub(crate) guard: Guard,
    pub(crate) scopes: Arc<[String]>,
}

/// The answer to a request the guard refuses. Implements
/// [`IntoResponse`]; also the rejection of the [`Principal`](crate::Principal)
/// extractor.
#[derive(Debug, Clone)]
pub struct GuardRejection {
    status: StatusCode,
    challenge: Option<Box<BearerChallenge>>,
    description: Option<String>,
    /// A `DPoP` challenge (RFC 9449 §7.1), sent as a second `WWW-Authenticate`.
    dpop_challenge: Option<String>,
    /// The body's `error` is `invalid_dpop_proof`.
    dpop_error: bool,
}

impl GuardRejection {
    pub(crate) fn challenge_only(challenge: BearerChallenge) -> Self {
        let status =
            StatusCode::from_u16(challenge.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
        Self {
            status,
            challenge: Some(Box::new(challenge)),
            description: None,
            dpop_challenge: None,
            dpop_error: false,
        }
    }

    fn with_description(challenge: BearerChallenge, description: impl Into<String>) -> Self {
        let description = description.into();
        let mut rejection =
            Self::challenge_only(challenge.with_error_description(description.clone()));
        rejection.description = Some(description);
        rejection
    }

    fn too_large() -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            challenge: None,
            description: Some("the request body is too large".into()),
            dpop_challenge: None,
            dpop_error: false,
        }
    }

    /// The HTTP status: 400, 401, 403 or 413.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The `WWW-Authenticate` challenge sent, if any.
    #[must_use]
    pub fn challenge(&self) -> Option<&BearerChallenge> {
        self.challenge.as_deref()
    }

    /// The `DPoP` challenge sent beside the bearer one (RFC 9449 §7.1), if any.
    #[must_use]
    pub fn dpop_challenge(&self) -> Option<&str> {
        self.dpop_challenge.as_deref()
    }

    /// A refused token or DPoP proof: 401 with the bearer challenge (keeping
    /// `resource_metadata`) and, for DPoP matters, a `DPoP` challenge.
    fn token_refused(guard: &Guard, scopes: &[String], scheme: Scheme, error: &TokenError) -> Self {
        let description = error.to_string();
        match error {
            TokenError::InvalidDpopProof(_) => {
                let mut r = Self::challenge_only(guard.challenge(scopes));
                r.description = Some(description.clone());
                r.dpop_challenge =
                    Some(guard.dpop_challenge(Some(("invalid_dpop_proof", &description))));
                r.dpop_error = true;
                r
            }
            _ => {
                let dpop_matter = scheme == Scheme::DPoP
                    || matches!(error, TokenError::DpopBound | TokenError::NotDpopBound(_));
                let mut r = Self::with_description(
                    guard
                        .challenge(scopes)
                        .with_error(ChallengeError::InvalidToken),
                    description.clone(),
                );
                if dpop_matter {
                    r.dpop_challenge =
                        Some(guard.dpop_challenge(Some(("invalid_token", &description))));
                }
                r
            }
        }
    }
}

impl IntoResponse for GuardRejection {
    fn into_response(self) -> axum::response::Response {
        let error = if self.dpop_error {
            Some("invalid_dpop_proof")
        } else {
            self.challenge
                .as_deref()
                .and_then(BearerChallenge::error)
                .map(ChallengeError::as_str)
        };
        let mut response = match (error, &self.description) {
            (Some(error), description) => (
                self.status,
                Json(json!({"error": error, "error_description": description})),
            )
                .into_response(),
            (None, Some(description)) => {
                (self.status, Json(json!({"error_description": description}))).into_response()
            }
            (None, None) => self.status.into_response(),
        };
        let headers = response.headers_mut();
        if let Some(challenge) = &self.challenge {
            let value = HeaderValue::from_str(&challenge.to_string())
                .unwrap_or(HeaderValue::from_static("Bearer"));
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
        if let Some(value) = self
            .dpop_challenge
            .as_deref()
            .and_then(|c| HeaderValue::from_str(c).ok())
        {
            headers.append(header::WWW_AUTHENTICATE, value);
        }
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("WWW-Authenticate"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// The access token of the request and its scheme (`Bearer`, or `DPoP` per
/// RFC 9449 §7.1): `None` when there is no `Authorization` header or it uses
/// another scheme; an error for several headers or a malformed value.
fn access_token(
    headers: &HeaderMap,
    guard: &Guard,
    scopes: &[String],
) -> Result<Option<(Scheme, String)>, GuardRejection> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return if headers.contains_key(header::AUTHORIZATION) {
            Err(invalid_request(
                guard,
                scopes,
                "send exactly one Authorization header",
            ))
        } else {
            Ok(None)
        };
    };
    let Ok(value) = value.to_str() else {
        return Err(invalid_request(
            guard,
            scopes,
            "the Authorization header is not ASCII",
        ));
    };
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        Scheme::Bearer
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Scheme::DPoP
    } else {
        return Ok(None);
    };
    let token = token.trim_start();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(invalid_request(
            guard,
            scopes,
            "the access token is missing or malformed",
        ));
    }
    Ok(Some((scheme, token.to_owned())))
}

fn invalid_request(guard: &Guard, scopes: &[String], description: &str) -> GuardRejection {
    GuardRejection::with_description(
        guard
            .challenge(scopes)
            .with_error(ChallengeError::InvalidRequest),
        description,
    )
}

/// The names of the tools a JSON-RPC body calls (`tools/call` requests,
/// single or batched).
pub(crate) fn tool_names(body: &[u8]) -> Vec<String> {
    fn name(message: &Value) -> Option<String> {
        (message.get("method")? == "tools/call")
            .then(|| {
                message
                    .get("params")?
                    .get("name")?
                    .as_str()
                    .map(str::to_owned)
            })
            .flatten()
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(batch)) => batch.iter().filter_map(name).collect(),
        Ok(message) => name(&message).into_iter().collect(),
        Err(_) => Vec::new(),
    }
}

async fn authorize<B>(
    layer: &GuardLayer,
    request: Request<B>,
) -> Result<Request<Body>, GuardRejection>
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    if request.method() == Method::OPTIONS {
        return Ok(request.map(Body::new));
    }
    let guard = &layer.guard;
    let (mut parts, body) = request.into_parts();
    let (body, tools) = if parts.method == Method::POST && !guard.inner.tool_scopes.is_empty() {
        let max = guard.inner.max_body_bytes;
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max as u64) {
            return Err(GuardRejection::too_large());
        }
        let bytes = match Limited::new(body, max).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<LengthLimitError>() => return Err(GuardRejection::too_large()),
            Err(_) => {
                return Err(GuardRejection {
                    status: StatusCode::BAD_REQUEST,
                    challenge: None,
                    description: Some("the request body could not be read".into()),
                    dpop_challenge: None,
                    dpop_error: false,
                });
            }
        };
        let tools = tool_names(&bytes);
        (Body::from(bytes), tools)
    } else {
        (Body::new(body), Vec::new())
    };
    let mut scopes = guard.scopes_for(parts.uri.path(), &tools);
    union_into(&mut scopes, &layer.scopes);

    match access_token(&parts.headers, guard, &scopes)? {
        None if layer.optional => {}
        None => {
            let mut r = GuardRejection::challenge_only(guard.challenge(&scopes));
            if guard.inner.dpop.required {
                r.dpop_challenge = Some(guard.dpop_challenge(None));
            }
            return Err(r);
        }
        Some((scheme, token)) => {
            let refused = |e: TokenError| GuardRejection::token_refused(guard, &scopes, scheme, &e);
            let principal = guard.validate(&token).await.map_err(refused)?;
            let proofs: Vec<&str> = parts
                .headers
                .get_all("dpop")
                .iter()
                .map(|v| v.to_str().unwrap_or(""))
                .collect();
            guard
                .check_possession(
                    &principal,
                    scheme,
                    &token,
                    parts.method.as_str(),
                    parts.uri.path(),
                    &proofs,
                )
                .map_err(refused)?;
            if !principal.missing_scopes(&scopes).is_empty() {
                return Err(GuardRejection::with_description(
                    guard
                        .challenge(&scopes)
                        .with_error(ChallengeError::InsufficientScope),
                    "the token lacks a scope this request needs",
                ));
            }
            parts.extensions.insert(principal);
            parts.extensions.insert(BearerToken::new(&token));
        }
    }
    parts.extensions.insert(GuardContext {
        guard: guard.clone(),
        scopes: scopes.into(),
    });
    Ok(Request::from_parts(parts, body))
}

impl<S, B, ResBody> Service<Request<B>> for GuardService<S>
where
    S: Service<Request<Body>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The clone is not ready yet; keep the ready one for this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            match authorize(&layer, request).await {
                Ok(request) => Ok(inner.call(request).await?.map(Body::new)),
                Err(rejection) => Ok(rejection.into_response()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_names_from_json_rpc() {
        let call = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add_note","arguments":{}}}"#;
        assert_eq!(tool_names(call), ["add_note"]);
        let batch = br#"[{"method":"tools/call","params":{"name":"a"}},{"method":"tools/list"},{"method":"tools/call","params":{"name":"b"}}]"#;
        assert_eq!(tool_names(batch), ["a", "b"]);
        for other in [
            &br#"{"method":"tools/list"}"#[..],
            br#"{"method":"tools/call","params":{"name":7}}"#,
            br#"{"method":"tools/call"}"#,
            b"not json",
            b"",
        ] {
            assert!(tool_names(other).is_empty());
        }
    }
}
