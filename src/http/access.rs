//! What every request carries for operators: a request id, and optionally an access-log line.
//!
//! The id is the caller's `X-Request-Id` when it is a plausible one (so a proxy's or a
//! client's id follows the request through), or a fresh random one. It is answered in the
//! `X-Request-Id` response header of every response, named by every log line written while
//! the request is handled ([`current`], read by `crate::telemetry`'s formatter), and quoted
//! in internal-error messages, so a user's screenshot of an error finds its log lines.
//!
//! The access log (`http.access_log = true`) writes one INFO line per request, with target
//! `concierge::access`: method, path (never the query string, which may carry codes or
//! state), status, latency, the client the request concerned when the handler named it
//! ([`note_client`]), and the request id.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

/// The request- and response-header name.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The longest caller-supplied id we take.
const MAX_LEN: usize = 128;

tokio::task_local! {
    static CURRENT: Arc<Current>;
}

/// What the request being handled on this task has told us so far.
#[derive(Debug)]
struct Current {
    id: RequestId,
    /// The client it concerns, once a handler knows ([`note_client`]).
    client: Mutex<Option<String>>,
}

/// A request's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(Arc<str>);

impl RequestId {
    /// The caller's `X-Request-Id`, if there is exactly one and it is 1–128 characters of
    /// letters, digits and `-_.:/+=@` (nothing that could forge a log line); else a fresh id.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut values = headers.get_all(HEADER).iter();
        match (values.next(), values.next()) {
            (Some(v), None) => v
                .to_str()
                .ok()
                .filter(|s| is_plausible(s))
                .map_or_else(Self::fresh, |s| Self(s.into())),
            _ => Self::fresh(),
        }
    }

    /// 128 random bits, base64url.
    pub fn fresh() -> Self {
        Self(crate::util::random_id().into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_plausible(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(&b))
}

/// The id of the request being handled on this task, if any.
pub fn current() -> Option<RequestId> {
    CURRENT.try_with(|c| c.id.clone()).ok()
}

/// Name the client the request concerns, for the access log: handlers call it once they
/// know (the token endpoint after client authentication, the authorization endpoint, …),
/// whether they then succeed or fail. A client id the caller only claimed is logged as
/// claimed; control characters are dropped and it is cut at 256 characters, so no value
/// forges a line.
pub fn note_client(client_id: &str) {
    let _ = CURRENT.try_with(|c| {
        if let Ok(mut slot) = c.client.lock() {
            *slot = Some(
                client_id
                    .chars()
                    .filter(|ch| !ch.is_control())
                    .take(256)
                    .collect(),
            );
        }
    });
}

/// Middleware: give the request its id, handle it with the id current, answer the id, and
/// write the access-log line when `access_log` is on.
pub async fn layer(State(access_log): State<bool>, mut req: Request, next: Next) -> Response {
    let id = RequestId::from_headers(req.headers());
    req.extensions_mut().insert(id.clone());
    let line = access_log.then(|| {
        (
            req.method().clone(),
            req.uri().path().to_string(),
            Instant::now(),
        )
    });
    let current = Arc::new(Current {
        id: id.clone(),
        client: Mutex::new(None),
    });
    let mut res = CURRENT.scope(current.clone(), next.run(req)).await;
    if let Ok(value) = HeaderValue::from_str(id.as_str()) {
        res.headers_mut().insert(HEADER, value);
    }
    if let Some((method, path, started)) = line {
        let client = current.client.lock().ok().and_then(|c| c.clone());
        tracing::info!(
            target: "concierge::access",
            method = %method,
            path = %path,
            status = res.status().as_u16(),
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            client_id = client.as_deref().unwrap_or("-"),
            request_id = id.as_str(),
            "request"
        );
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(HEADER, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn a_plausible_caller_id_is_kept() {
        let id = RequestId::from_headers(&headers(&["req-42_a.b:c/d+e=f@g"]));
        assert_eq!(id.as_str(), "req-42_a.b:c/d+e=f@g");
    }

    #[test]
    fn anything_else_gets_a_fresh_id() {
        let long = "a".repeat(MAX_LEN + 1);
        for h in [
            headers(&[]),
            headers(&[""]),
            headers(&["a b"]),
            headers(&["x\"y"]),
            headers(&[&long]),
            headers(&["one", "two"]),
        ] {
            let id = RequestId::from_headers(&h);
            assert_eq!(id.as_str().len(), 22, "{h:?}");
            assert!(is_plausible(id.as_str()));
        }
        assert_ne!(RequestId::fresh(), RequestId::fresh());
    }

    #[tokio::test]
    async fn current_is_the_id_of_the_task_in_scope() {
        assert_eq!(current(), None);
        let id = RequestId::fresh();
        let cur = Arc::new(Current {
            id: id.clone(),
            client: Mutex::new(None),
        });
        let seen = CURRENT
            .scope(cur.clone(), async {
                note_client("agent");
                current()
            })
            .await;
        assert_eq!(seen, Some(id));
        assert_eq!(cur.client.lock().unwrap().as_deref(), Some("agent"));
    }
}
