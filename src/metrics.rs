//! Prometheus metrics, served at `/metrics` in the text exposition format.
//!
//! Labels are chosen to stay few and harmless: the route template (never the raw path or a
//! query), the method (one of HTTP's own, or `other`), the status, the grant type, the
//! resource URI (registered resources only) and RFC error codes. No client id, user, token or
//! secret is ever a label, and nothing a caller sends can add a label value: every series
//! stays in memory until the process ends, so each label's values are a set the server
//! knows.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{LazyLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::error::ErrorCode;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    grant_type: &'static str,
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    endpoint: &'static str,
    error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PushLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabels {
    alg: String,
}

type HistogramFamily = Family<EndpointLabels, Histogram, fn() -> Histogram>;

/// What became of audit events meant for the webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    Pushed,
    /// The receiver refused them, or kept failing until the retries ran out.
    Failed,
    /// The pusher was too far behind to take them.
    Dropped,
}

/// What the metrics read from the rest of the server when they are scraped.
#[derive(Debug, Clone, Default)]
pub struct Readings {
    /// Audit events waiting for the writer.
    pub audit_queued: usize,
    pub pool: Option<crate::store::PoolStats>,
    /// The age in seconds of each algorithm's signing key (since it was made).
    pub key_ages: Vec<(String, i64)>,
    /// Failed OpenTelemetry exports since the process started (`crate::telemetry`).
    pub otlp_export_failures: u64,
}

/// The server's metrics; one per running server (so in-process test servers do not mix).
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    tokens: Family<TokenLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    events: Family<EventLabels, Counter>,
    audit_queued: Gauge,
    audit_stored: Counter,
    audit_failed: Counter,
    audit_pushed: Family<PushLabels, Counter>,
    pool: Family<PoolLabels, Gauge>,
    key_age: Family<KeyLabels, Gauge>,
    otlp_failures: Counter,
    /// The failures already counted, so each scrape adds only the new ones.
    otlp_counted: std::sync::atomic::AtomicU64,
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
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            "build_info",
            "Always 1; the label says which release runs",
            build,
        );
        let audit_queued = Gauge::default();
        let audit_stored = Counter::default();
        let audit_failed = Counter::default();
        registry.register(
            "audit_queue_events",
            "Audit events recorded but not yet stored",
            audit_queued.clone(),
        );
        registry.register(
            "audit_events_stored",
            "Audit events written to the database",
            audit_stored.clone(),
        );
        registry.register(
            "audit_events_failed",
            "Audit events lost because the database refused them (see the error log)",
            audit_failed.clone(),
        );
        let audit_pushed = Family::<PushLabels, Counter>::default();
        registry.register(
            "audit_events_pushed",
            "Audit events for the webhook, by outcome (pushed, failed, dropped)",
            audit_pushed.clone(),
        );
        let pool = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "db_pool_connections",
            "Database connections by state (idle, in_use) and the most that may be open (max; \
             connections are opened as they are needed)",
            pool.clone(),
        );
        let key_age = Family::<KeyLabels, Gauge>::default();
        registry.register(
            "signing_key_age_seconds",
            "Age of the signing key in use, by algorithm (since it was made)",
            key_age.clone(),
        );
        let otlp_failures = Counter::default();
        registry.register(
            "otlp_export_failures",
            "OpenTelemetry span exports that failed (see the error log)",
            otlp_failures.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            tokens,
            errors,
            events,
            audit_queued,
            audit_stored,
            audit_failed,
            audit_pushed,
            pool,
            key_age,
            otlp_failures,
            otlp_counted: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A request to `endpoint` (a route template, see [`endpoint_label`]) answered.
    fn observe(
        &self,
        endpoint: &'static str,
        method: &Method,
        status: StatusCode,
        took: Duration,
        error: Option<ErrorCode>,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint,
                method: method_label(method),
                status: status.as_u16(),
            })
            .inc();
        self.latency
            .get_or_create(&EndpointLabels { endpoint })
            .observe(took.as_secs_f64());
        if let Some(code) = error {
            self.errors
                .get_or_create(&ErrorLabels {
                    endpoint,
                    error: code.as_str(),
                })
                .inc();
        }
    }

    /// An access token was issued for `resource` (a registered one) by `grant_type`.
    pub fn token_issued(&self, grant_type: &'static str, resource: &str) {
        self.tokens
            .get_or_create(&TokenLabels {
                grant_type,
                resource: resource.to_string(),
            })
            .inc();
    }

    /// An audit event of `kind` was recorded.
    pub fn security_event(&self, kind: &'static str) {
        self.events.get_or_create(&EventLabels { kind }).inc();
    }

    /// The audit writer stored `n` events, or lost them.
    pub fn audit_written(&self, n: usize, stored: bool) {
        let counter = if stored {
            &self.audit_stored
        } else {
            &self.audit_failed
        };
        counter.inc_by(n as u64);
    }

    /// Events meant for the audit webhook met `outcome`.
    pub fn audit_pushed(&self, n: usize, outcome: PushOutcome) {
        let outcome = match outcome {
            PushOutcome::Pushed => "pushed",
            PushOutcome::Failed => "failed",
            PushOutcome::Dropped => "dropped",
        };
        self.audit_pushed
            .get_or_create(&PushLabels { outcome })
            .inc_by(n as u64);
    }

    /// Take in what was read from the server for this scrape.
    pub fn read(&self, r: &Readings) {
        self.audit_queued
            .set(i64::try_from(r.audit_queued).unwrap_or(i64::MAX));
        if let Some(p) = r.pool {
            let in_use = p.open.saturating_sub(p.idle);
            for (state, n) in [("idle", p.idle), ("in_use", in_use), ("max", p.max)] {
                self.pool
                    .get_or_create(&PoolLabels { state })
                    .set(i64::from(n));
            }
        }
        let before = self
            .otlp_counted
            .fetch_max(r.otlp_export_failures, std::sync::atomic::Ordering::Relaxed);
        if r.otlp_export_failures > before {
            self.otlp_failures.inc_by(r.otlp_export_failures - before);
        }
        self.key_age.clear();
        for (alg, age) in &r.key_ages {
            self.key_age
                .get_or_create(&KeyLabels { alg: alg.clone() })
                .set(*age);
        }
    }

    /// The text exposition format (OpenMetrics text, which Prometheus reads).
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Count and time every request under its route template, as `inner` answers it (a part of
/// `crate::http::front`).
pub async fn around<F, Fut>(metrics: &Metrics, req: Request, inner: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let endpoint = endpoint_label(
        req.extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
    );
    let method = req.method().clone();
    let started = Instant::now();
    let res = inner(req).await;
    metrics.observe(
        endpoint,
        &method,
        res.status(),
        started.elapsed(),
        res.extensions().get::<ErrorCode>().copied(),
    );
    res
}

/// The method as a label: HTTP's own methods by name, any other (a caller may send any token
/// as a method, RFC 9110 §9.1) as `other`, so that callers cannot add series.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::POST, "POST"),
        (Method::HEAD, "HEAD"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::PUT, "PUT"),
        (Method::PATCH, "PATCH"),
        (Method::DELETE, "DELETE"),
        (Method::CONNECT, "CONNECT"),
        (Method::TRACE, "TRACE"),
    ];
    KNOWN
        .iter()
        .find(|(m, _)| m == method)
        .map_or("other", |(_, name)| name)
}

/// Route templates seen so far, each kept once for the life of the process: a label is then
/// a pointer, not a string made for every request.
static ENDPOINTS: LazyLock<RwLock<HashSet<&'static str>>> = LazyLock::new(RwLock::default);

/// The endpoint label: the route template the request matched (`/clients/{client_id}`, never
/// the path itself), or `unmatched`. Templates are the router's, a set fixed when it is
/// built, so the ones kept here stay few.
fn endpoint_label(matched: Option<&str>) -> &'static str {
    let Some(path) = matched else {
        return "unmatched";
    };
    let known = ENDPOINTS
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(path)
        .copied();
    known.unwrap_or_else(|| {
        let mut all = ENDPOINTS.write().unwrap_or_else(PoisonError::into_inner);
        match all.get(path) {
            Some(kept) => kept,
            None => {
                let kept: &'static str = Box::leak(path.into());
                all.insert(kept);
                kept
            }
        }
    })
}

/// The `/metrics` answer: the registry in the text format.
pub fn answer(metrics: &Metrics) -> Response {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_http_s_own_are_one_label() {
        assert_eq!(method_label(&Method::POST), "POST");
        assert_eq!(method_label(&Method::DELETE), "DELETE");
        for odd in ["FOO1", "BREW", "post"] {
            let m = Method::from_bytes(odd.as_bytes()).unwrap();
            assert_eq!(method_label(&m), "other", "{odd}");
        }
    }

    #[test]
    fn a_route_template_is_kept_once() {
        let (a, b) = (
            String::from("/metrics-test/{id}"),
            String::from("/metrics-test/{id}"),
        );
        let first = endpoint_label(Some(&a));
        assert_eq!(first, "/metrics-test/{id}");
        assert!(
            std::ptr::eq(first, endpoint_label(Some(&b))),
            "one copy of the template"
        );
        assert_eq!(endpoint_label(None), "unmatched");
    }
}
