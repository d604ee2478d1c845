//! `GET /healthz` (the process is alive) and `GET /readyz` (it can do its work: the database
//! answers and signing keys are loaded), for load balancers and Kubernetes probes; and
//! `GET /metrics` for Prometheus.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::keys::Alg;
use crate::state::AppState;

/// How long `/readyz` waits for the database before calling it unreachable.
const DATABASE_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    let database = match tokio::time::timeout(DATABASE_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => "ok".to_string(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: database check failed");
            "unreachable".to_string()
        }
        Err(_) => "timed out".to_string(),
    };
    let ring = state.oauth.keys.ring();
    let keys = if Alg::ALL.iter().all(|&a| ring.active(a).is_some()) {
        "ok"
    } else {
        "missing"
    };
    let ready = database == "ok" && keys == "ok";
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "not ready" },
        "database": database,
        "keys": keys,
    });
    (status, Json(body)).into_response()
}

/// `GET /metrics`: the counters, and what is read from the server at each scrape (the audit
/// queue, the connection pool, the signing keys' ages).
pub async fn metrics(State(state): State<AppState>) -> Response {
    let ring = state.oauth.keys.ring();
    let now = state.oauth.now();
    let key_ages = Alg::ALL
        .iter()
        .filter_map(|&alg| ring.active_at(alg, now))
        .map(|k| (k.alg.as_str().to_string(), now - k.times.created_at))
        .collect();
    state.metrics.read(&crate::metrics::Readings {
        audit_queued: state.oauth.audit.queued(),
        pool: Some(state.store.pool_stats()),
        key_ages,
        otlp_export_failures: crate::telemetry::otlp_export_failures(),
    });
    crate::metrics::answer(&state.metrics)
}
