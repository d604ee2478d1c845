//! Holding a response back until what it reports is on disk: the change's audit
//! event (`crate::audit`), and the writes the request committed without waiting for the disk
//! (`crate::store::commits`). One wait serves both where it can: the event, stored after the
//! writes, makes them durable too (the WAL is flushed in order).

use std::future::Future;

use axum::response::{IntoResponse, Response};

use crate::audit;
use crate::error::OAuthError;
use crate::state::AppState;
use crate::store::commits::{self, Deferred};

/// Answer with what `inner()` answers once what it reports is on disk, or with an error when
/// that cannot be made sure of (a part of `crate::http::front`).
///
/// It takes a function that makes the future, not the future: an `async fn`'s argument stays
/// in its state beside what it awaits, so every layer that took the request's future doubled
/// it (`crate::util::run_with`).
pub async fn around<F, Fut>(state: &AppState, inner: F) -> Response
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Response>,
{
    let ((res, recorded), deferred) = commits::deferring(audit::recording(inner())).await;
    let stored = state.oauth.audit.hand_over(recorded).await;
    let settled = match deferred {
        Deferred::None => true,
        // The event was stored after the writes it covers, and its commit waited.
        Deferred::Covered => stored,
        Deferred::Uncovered => false,
    };
    if !settled && let Err(e) = state.store.settle().await {
        // What the response reports may not be on disk: it must not go out as if it were.
        return OAuthError::from(e).into_response();
    }
    res
}
