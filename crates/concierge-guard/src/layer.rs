//! [`GuardLayer`]: the tower middleware that checks the bearer token of every
//! request and answers like RFC 6750 / RFC 9728 say when it is not good enough.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use bytes::Bytes;
use http_body::Body as HttpBody;
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use serde_json::Value;
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument as _;

use crate::challenge::ChallengeError;
use crate::config::union_into;
use crate::error::TokenError;
use crate::guard::{Guard, Needed, Scheme};
use crate::observe::Refusal;
use crate::principal::{BearerToken, Principal};
pub use crate::rejection::GuardRejection;
use crate::scopes::Operation;
use crate::stepup::{Need, StepUpSink, challenge_for};

/// Errors of the bodies the layer reads and the services it wraps.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A tower [`Layer`] that lets a request through only with a valid access
/// token carrying the needed scopes. Get one from [`Guard::layer`].
///
/// On success the [`Principal`] is put in the request's extensions (with the
/// [`BearerToken`]) and the inner service is called inside a `tracing` span
/// `guard` with the fields `sub` and `client_id`. Otherwise the answer is:
///
/// - **401** `WWW-Authenticate: Bearer scope="…", resource_metadata="…"`
///   when no bearer token was sent;
/// - **401** with `error="invalid_token"` and an `error_description` when the
///   token is invalid (expired, wrong audience, bad signature, …);
/// - **403** with `error="insufficient_scope"` and the `scope` the request
///   needs, so the client can ask for more (step-up) — also when a handler
///   or tool returns a [`StepUp`](crate::StepUp);
/// - **400** `invalid_request` for several `Authorization` headers or a
///   malformed one; **413** when a JSON-RPC body to inspect is too large;
///   **503** with `Retry-After` while the token's issuer has not been reached
///   (a guard started in the background).
///
/// Every such answer carries `Access-Control-Expose-Headers:
/// WWW-Authenticate, DPoP-Nonce`, `Access-Control-Allow-Origin: *` and
/// `Cache-Control: no-store`, and is logged as a `tracing` event. `OPTIONS`
/// requests (CORS preflights) pass through untouched.
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

/// Put in the request extensions by the layer (and inside the request's
/// principal), so extractors can build the right challenge and a step-up
/// from the handler reaches the layer.
pub(crate) struct GuardContext {
    pub(crate) guard: Guard,
    /// The scopes a challenge for this request names.
    pub(crate) scopes: Arc<[String]>,
    /// What a handler said it needs more of ([`StepUp`](crate::StepUp)).
    pub(crate) need: Mutex<Option<Need>>,
}

impl StepUpSink for GuardContext {
    fn needs(&self) -> &Mutex<Option<Need>> {
        &self.need
    }

    fn answer(&self, need: &Need) -> axum::response::Response {
        GuardRejection::step_up(&self.guard, &self.scopes, need).into_response()
    }
}

impl GuardRejection {
    /// A handler's or tool's [`StepUp`](crate::StepUp) for a request that
    /// needed `scopes`.
    pub(crate) fn step_up(guard: &Guard, scopes: &[String], need: &Need) -> Self {
        match need {
            Need::Scopes(more) => {
                let mut all = scopes.to_vec();
                union_into(&mut all, more);
                Self::with_description(
                    guard
                        .challenge(&all)
                        .with_error(ChallengeError::InsufficientScope),
                    "the token lacks a scope this request needs",
                )
            }
            Need::Authentication { .. } => {
                let challenge =
                    challenge_for(need).with_resource_metadata(guard.metadata_url().clone());
                let mut r = Self::challenge_only(challenge);
                r.description = Some("a stronger or more recent sign-in is required".into());
                r
            }
        }
    }

    fn refusal(&self) -> Refusal {
        Refusal {
            reason: self.reason,
            status: self.status.as_u16(),
        }
    }

    /// A refused token or DPoP proof: 401 with the bearer challenge (keeping
    /// `resource_metadata`) and, for DPoP matters, a `DPoP` challenge; 503
    /// when the issuer has not been reached yet.
    fn token_refused(guard: &Guard, scopes: &[String], scheme: Scheme, error: &TokenError) -> Self {
        let description = error.to_string();
        let mut r = match error {
            TokenError::NotReady => Self {
                description: Some(description.into()),
                body_error: Some("temporarily_unavailable"),
                retry_after: Some(5),
                ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready")
            },
            // RFC 9449 §9: only the DPoP challenge, and the nonce to use.
            TokenError::UseDpopNonce => Self {
                dpop_challenge: guard
                    .dpop_challenge(Some(("use_dpop_nonce", &description)))
                    .map(Into::into),
                body_error: Some("use_dpop_nonce"),
                description: Some(description.into()),
                #[cfg(feature = "dpop")]
                dpop_nonce: guard.inner.dpop.current_nonce().map(Into::into),
                ..Self::new(StatusCode::UNAUTHORIZED, "use_dpop_nonce")
            },
            TokenError::InvalidDpopProof(_) => {
                let mut r = Self::challenge_only(guard.challenge(scopes));
                r.dpop_challenge = guard
                    .dpop_challenge(Some(("invalid_dpop_proof", &description)))
                    .map(Into::into);
                r.description = Some(description.into());
                r.body_error = Some("invalid_dpop_proof");
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
                    r.dpop_challenge = guard
                        .dpop_challenge(Some(("invalid_token", &description)))
                        .map(Into::into);
                }
                r
            }
        };
        r.reason = error.reason();
        r.hint = error.hint();
        r
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

/// The MCP operations a JSON-RPC body asks for (`tools/call`, `prompts/get`,
/// `resources/read` requests, single or batched).
pub(crate) fn operations(body: &[u8]) -> Vec<Operation> {
    fn operation(message: &Value) -> Option<Operation> {
        let params = message.get("params");
        let text = |key: &str| params?.get(key)?.as_str().map(str::to_owned);
        match message.get("method")?.as_str()? {
            "tools/call" => text("name").map(Operation::Tool),
            "prompts/get" => text("name").map(Operation::Prompt),
            "resources/read" => text("uri").map(Operation::Resource),
            _ => None,
        }
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(batch)) => batch.iter().filter_map(operation).collect(),
        Ok(message) => operation(&message).into_iter().collect(),
        Err(_) => Vec::new(),
    }
}

/// A request the layer lets through.
struct Authorized {
    request: Request<Body>,
    principal: Option<Principal>,
    context: Arc<GuardContext>,
    /// A fresh DPoP nonce for the response (RFC 9449 §8.2, §9).
    nonce: Option<String>,
}

async fn authorize<B>(layer: &GuardLayer, request: Request<B>) -> Result<Authorized, GuardRejection>
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let guard = &layer.guard;
    let (mut parts, body) = request.into_parts();
    let (body, operations) = if parts.method == Method::POST && guard.inner.rules.inspects_bodies()
    {
        let max = guard.inner.max_body_bytes;
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max as u64) {
            return Err(GuardRejection::too_large(max));
        }
        let bytes = match Limited::new(body, max).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<LengthLimitError>() => return Err(GuardRejection::too_large(max)),
            Err(_) => {
                return Err(GuardRejection {
                    description: Some("the request body could not be read".into()),
                    ..GuardRejection::new(StatusCode::BAD_REQUEST, "invalid_request")
                });
            }
        };
        let operations = operations(&bytes);
        (Body::from(bytes), operations)
    } else {
        (Body::new(body), Vec::new())
    };
    let needed: Needed = guard.needed(parts.uri.path(), &operations, &layer.scopes);
    let anonymous_scopes = guard.challenge_scopes(&needed, None);

    let (principal, nonce, scopes) = match access_token(&parts.headers, guard, &anonymous_scopes)? {
        None if layer.optional => (None, None, anonymous_scopes),
        None => {
            let mut r = GuardRejection::challenge_only(guard.challenge(&anonymous_scopes));
            if guard.inner.dpop_required {
                r.dpop_challenge = guard.dpop_challenge(None).map(Into::into);
            }
            return Err(r);
        }
        Some((scheme, token)) => {
            let refused =
                |e: TokenError| GuardRejection::token_refused(guard, &anonymous_scopes, scheme, &e);
            let principal = guard.validate(&token).await.map_err(refused)?;
            let proofs: Vec<&str> = parts
                .headers
                .get_all("dpop")
                .iter()
                .map(|v| v.to_str().unwrap_or(""))
                .collect();
            let nonce = guard
                .check_possession(
                    &principal,
                    scheme,
                    &token,
                    parts.method.as_str(),
                    parts.uri.path(),
                    &proofs,
                )
                .map_err(refused)?;
            let scopes = guard.challenge_scopes(&needed, Some(&principal));
            if let Some(op) = &needed.denied {
                let mut r = GuardRejection::with_description(
                    guard
                        .challenge(&scopes)
                        .with_error(ChallengeError::InsufficientScope),
                    format!("no scope rule lets this {} through", op.kind()),
                );
                r.reason = "no_scope_rule";
                r.hint = Some(
                    "default_deny is on: give the operation a rule (GuardBuilder::tool_scopes, \
                     prompt_scopes, resource_scopes, or scopes declared on the tool)",
                );
                tracing::debug!(
                    target: "concierge_guard",
                    kind = op.kind(),
                    name = op.name(),
                    "no scope rule"
                );
                return Err(r);
            }
            let missing_base = !principal.missing_scopes(&needed.base).is_empty();
            if missing_base || !needed.rules.iter().all(|r| principal.satisfies(r)) {
                return Err(GuardRejection::with_description(
                    guard
                        .challenge(&scopes)
                        .with_error(ChallengeError::InsufficientScope),
                    "the token lacks a scope this request needs",
                ));
            }
            // RFC 9470: a sensitive tool's sign-in must be strong and recent enough.
            for op in &operations {
                let Operation::Tool(name) = op else { continue };
                let Some(rule) = guard.inner.rules.tool_authentication.get(name) else {
                    continue;
                };
                if let Err(step_up) =
                    principal.require_authentication(rule.acr_values.iter().cloned(), rule.max_age)
                {
                    tracing::debug!(target: "concierge_guard", tool = %name, "step-up of the user's authentication needed");
                    return Err(GuardRejection::step_up(guard, &scopes, step_up.need()));
                }
            }
            parts.extensions.insert(BearerToken::new(&token));
            (Some(principal), nonce, scopes)
        }
    };
    let context = Arc::new(GuardContext {
        guard: guard.clone(),
        scopes: scopes.into(),
        need: Mutex::new(None),
    });
    let principal = principal.map(|p| p.with_context(context.clone() as Arc<dyn StepUpSink>));
    if let Some(p) = &principal {
        parts.extensions.insert(p.clone());
    }
    parts.extensions.insert(context.clone());
    Ok(Authorized {
        request: Request::from_parts(parts, body),
        principal,
        context,
        nonce,
    })
}

/// Is the answer a stream of server-sent events (its status already sent)?
fn is_event_stream<B>(response: &Response<B>) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
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
            if request.method() == Method::OPTIONS {
                return Ok(inner.call(request.map(Body::new)).await?.map(Body::new));
            }
            let hooks = &layer.guard.inner.hooks;
            let ok = match authorize(&layer, request).await {
                Ok(ok) => ok,
                Err(rejection) => {
                    hooks.refused(
                        rejection.refusal(),
                        rejection.description.as_deref().unwrap_or_default(),
                        rejection.hint,
                    );
                    return Ok(rejection.into_response());
                }
            };
            let future = inner.call(ok.request);
            let response = match &ok.principal {
                Some(p) => {
                    hooks.accepted(p);
                    let span = tracing::info_span!(
                        target: "concierge_guard",
                        "guard",
                        sub = %p.sub(),
                        client_id = %p.client_id()
                    );
                    future.instrument(span).await?
                }
                None => future.await?,
            };
            let mut response = response.map(Body::new);
            let need = ok
                .context
                .need
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(need) = need {
                if is_event_stream(&response) {
                    tracing::debug!(
                        target: "concierge_guard",
                        ?need,
                        "a step-up was answered inside an event stream, as a JSON-RPC error"
                    );
                } else {
                    let rejection =
                        GuardRejection::step_up(&layer.guard, &ok.context.scopes, &need);
                    let mut refusal = rejection.refusal();
                    if let Need::Authentication { .. } = need {
                        refusal.reason = "insufficient_user_authentication";
                    }
                    hooks.refused(refusal, "a handler asked for a step-up", None);
                    response = rejection.into_response();
                }
            }
            if let Some(value) = ok
                .nonce
                .as_deref()
                .and_then(|n| HeaderValue::from_str(n).ok())
            {
                let headers = response.headers_mut();
                headers.insert("dpop-nonce", value);
                headers.append(
                    header::ACCESS_CONTROL_EXPOSE_HEADERS,
                    HeaderValue::from_static("DPoP-Nonce"),
                );
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn operations_from_json_rpc() {
        let call = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add_note","arguments":{}}}"#;
        assert_eq!(operations(call), [Operation::Tool("add_note".into())]);
        let batch = br#"[{"method":"tools/call","params":{"name":"a"}},{"method":"tools/list"},{"method":"prompts/get","params":{"name":"p"}},{"method":"resources/read","params":{"uri":"notes://1"}}]"#;
        assert_eq!(
            operations(batch),
            [
                Operation::Tool("a".into()),
                Operation::Prompt("p".into()),
                Operation::Resource("notes://1".into())
            ]
        );
        for other in [
            &br#"{"method":"tools/list"}"#[..],
            br#"{"method":"tools/call","params":{"name":7}}"#,
            br#"{"method":"tools/call"}"#,
            br#"{"method":"resources/read","params":{"name":"x"}}"#,
            br#"{"method":7}"#,
            b"not json",
            b"",
        ] {
            assert!(operations(other).is_empty());
        }
    }

    /// Property tests (README: Fuzzing).
    mod fuzz {
        use proptest::prelude::*;

        use super::*;

        fn config() -> proptest::test_runner::Config {
            let cases = std::env::var("PROPTEST_CASES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(64);
            proptest::test_runner::Config {
                cases,
                failure_persistence: None,
                ..proptest::test_runner::Config::default()
            }
        }

        /// A message: one the layer inspects, with its name, or another.
        fn message() -> impl Strategy<Value = (Value, Option<Operation>)> {
            let name = prop_oneof![any::<String>(), "[a-z_:/*.]{0,12}"];
            (0..4usize, name, any::<bool>()).prop_map(|(kind, name, extra)| {
                let (method, key, op) = match kind {
                    0 => ("tools/call", "name", Some(Operation::Tool(name.clone()))),
                    1 => ("prompts/get", "name", Some(Operation::Prompt(name.clone()))),
                    2 => (
                        "resources/read",
                        "uri",
                        Some(Operation::Resource(name.clone())),
                    ),
                    _ => ("tools/list", "name", None),
                };
                let mut params = json!({ key: name });
                if extra {
                    params["arguments"] = json!({"a": [1, {"b": null}]});
                }
                (
                    json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}),
                    op,
                )
            })
        }

        proptest! {
            #![proptest_config(config())]

            /// Any bytes: some operations or none, never a panic.
            #[test]
            fn any_body_gives_operations_or_none(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
                let _ = operations(&body);
            }

            /// The name a message or a batch carries is the one read, in order.
            #[test]
            fn names_are_read_as_sent(batch in proptest::collection::vec(message(), 1..6), single in any::<bool>()) {
                let (body, expected): (Value, Vec<Operation>) = if single {
                    let (m, op) = batch[0].clone();
                    (m, op.into_iter().collect())
                } else {
                    let ops = batch.iter().filter_map(|(_, op)| op.clone()).collect();
                    (Value::Array(batch.into_iter().map(|(m, _)| m).collect()), ops)
                };
                prop_assert_eq!(operations(body.to_string().as_bytes()), expected);
            }

            /// Nesting past any limit is no operation, and no stack overflow.
            #[test]
            fn deep_nesting_is_no_operation(depth in 1usize..50_000) {
                let body = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
                prop_assert!(operations(body.as_bytes()).is_empty());
            }
        }
    }
}
