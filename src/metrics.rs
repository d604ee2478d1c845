//! Prometheus metrics, served at `/metrics` in the text exposition format.
//!
//! Labels are chosen to stay few and harmless: the route template (never the raw path or a
//! query), the method, the status, the grant type, the resource URI (registered resources
//! only) and RFC error codes. No client id, user, token or secret is ever a label.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::error::ErrorCode;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    grant_type: String,
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    endpoint: String,
    error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    kind: String,
}

type HistogramFamily = Family<EndpointLabels, Histogram, fn() -> Histogram>;

/// The server's metrics; one per running server (so in-process test servers do not mix).
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    tokens: Family<TokenLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    events: Family<EventLabels, Counter>,
}

fn latency_histogram() -> Histogram {
    // 100 µs … ~3.3 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 2.0, 16,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("concierge");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let tokens = Family::<TokenLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route, method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route",
            latency.clone(),
        );
        registry.register(
            "tokens_issued",
            "Access tokens issued, by grant type and resource",
            tokens.clone(),
        );
        registry.register(
            "oauth_errors",
            "OAuth error responses, by route and RFC error code",
            errors.clone(),
        );
        registry.register(
            "security_events",
            "Audit-log events by kind (registrations, consents, sign-ins, revocations, …)",
            events.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            tokens,
            errors,
            events,
        }
    }

    fn observe(
        &self,
        endpoint: &str,
        method: &str,
        status: StatusCode,
        took: Duration,
        error: Option<ErrorCode>,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.to_string(),
                method: method.to_string(),
                status: status.as_u16(),
            })
            .inc();
        self.latency
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.to_string(),
            })
            .observe(took.as_secs_f64());
        if let Some(code) = error {
            self.errors
                .get_or_create(&ErrorLabels {
                    endpoint: endpoint.to_string(),
                    error: code.as_str().to_string(),
                })
                .inc();
        }
    }

    /// An access token was issued for `resource` by `grant_type`.
    pub fn token_issued(&self, grant_type: &str, resource: &str) {
        self.tokens
            .get_or_create(&TokenLabels {
                grant_type: grant_type.to_string(),
                resource: resource.to_string(),
            })
            .inc();
    }

    /// An audit event of `kind` was recorded.
    pub fn security_event(&self, kind: &str) {
        self.events
            .get_or_create(&EventLabels {
                kind: kind.to_string(),
            })
            .inc();
    }

    /// The text exposition format (OpenMetrics text, which Prometheus reads).
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Middleware: count and time every request under its route template.
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let method = req.method().clone();
    let started = Instant::now();
    let res = next.run(req).await;
    metrics.observe(
        &endpoint,
        method.as_str(),
        res.status(),
        started.elapsed(),
        res.extensions().get::<ErrorCode>().copied(),
    );
    res
}

/// `GET /metrics`.
pub async fn endpoint(State(metrics): State<Arc<Metrics>>) -> Response {
    match metrics.render() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
