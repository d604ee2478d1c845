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
//! ([`note_client`]), and the request id. The id itself is kept by `crate::request_id`, so
//! that every layer can read it.

use std::future::Future;
use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::response::Response;

pub use crate::request_id::{HEADER, RequestId, current, note_client};

/// Give the request its id, let `inner` answer it with the id current, answer the id, and
/// write the access-log line when `access_log` is on (a part of `crate::http::front`).
pub async fn around<F, Fut>(access_log: bool, mut req: Request, inner: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let id = RequestId::from_headers(req.headers());
    req.extensions_mut().insert(id.clone());
    let line = access_log.then(|| {
        (
            req.method().clone(),
            req.uri().path().to_string(),
            Instant::now(),
        )
    });
    let (mut res, client) = crate::request_id::scope(id.clone(), inner(req)).await;
    if let Ok(value) = HeaderValue::from_str(id.as_str()) {
        res.headers_mut().insert(HEADER, value);
    }
    if let Some((method, path, started)) = line {
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
