//! The one layer every request of the public listener passes through before its route's own,
//! and its answer on the way out. Outermost first:
//!
//! 1. its request id, and the access-log line (`access`);
//! 2. held back until what it reports is on disk (`durable`);
//! 3. counted and timed under its route (`crate::metrics`);
//! 4. refused when its `Host` is not one valid host (`host`);
//! 5. the state in its extensions, for the layers routes add (the admin token check);
//! 6. `X-Content-Type-Options: nosniff` on the answer, whatever answered.
//!
//! They were six layers, four of them axum `from_fn` middleware that each boxed its part of
//! the request's future and cloned the services under it for every request; as one, a
//! request pays that once (issue 17.1: the ceiling). The request's trace span opens inside
//! this layer. Each part takes a function that makes what it wraps, or wraps it where it lies
//! (`crate::util::run_with`), so that the whole is one future the size of its largest part
//! (2.8 KB): as `async fn`s taking futures, each part held the one under it twice, and the
//! whole was 30 KB, copied for every request.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

use super::{access, durable, host};
use crate::state::AppState;

pub async fn layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let access_log = state.oauth.config.http.access_log;
    let mut res = access::around(access_log, req, |req| {
        durable::around(&state, || {
            crate::metrics::around(&state.metrics, req, |req| {
                host::around(req, |mut req| {
                    req.extensions_mut().insert(state.clone());
                    next.run(req)
                })
            })
        })
    })
    .await;
    res.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}
