//! Logs and traces: `tracing` to stderr (text or JSON lines), and OpenTelemetry export over
//! OTLP/HTTP when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) variable is set.
//!
//! What goes into spans is chosen where they are made: the request span has the method, the
//! route template and the status, never a query string, header or body, so no code, token or
//! secret reaches a log line, a span or a metric label.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// Adds the request id ([`crate::http::access`]) to every line written while a request is
/// handled: ` request_id=…` at the end of a text line, a `request_id` member of a JSON line.
/// The id's characters need no escaping in either.
struct WithRequestId<F> {
    inner: F,
    json: bool,
}

impl<S, N, F> FormatEvent<S, N> for WithRequestId<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let id = crate::request_id::current();
        // Access-log lines name the id as a field of their own.
        let Some(id) = id.filter(|_| event.metadata().target() != "concierge::access") else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let body = line.strip_suffix('\n').unwrap_or(&line);
        let id = id.as_str();
        match body.strip_suffix('}').filter(|_| self.json) {
            Some(head) => writeln!(writer, "{head},\"request_id\":\"{id}\"}}"),
            None => writeln!(writer, "{body} request_id={id}"),
        }
    }
}

/// Flushes and stops the OpenTelemetry exporter when dropped (at the end of `main`).
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("stopping the OpenTelemetry exporter: {e}");
        }
    }
}

/// Is OTLP export asked for by the environment?
fn otlp_requested() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()))
}

/// A span exporter whose failures are seen: counted in `concierge_otlp_export_failures` and
/// logged (the first one at once, then at most one line a minute with how many failed since),
/// where the SDK alone would drop them silently.
#[derive(Debug)]
struct Watched<E> {
    inner: E,
    /// When a failure was last logged, and the failures since.
    logged: std::sync::Mutex<(Option<Instant>, u64)>,
}

/// Failed span exports since the process started. Process-wide, as the exporter is.
static OTLP_EXPORT_FAILURES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many span exports failed since the process started (for the metrics).
pub fn otlp_export_failures() -> u64 {
    OTLP_EXPORT_FAILURES.load(std::sync::atomic::Ordering::Relaxed)
}

/// Between two log lines about failed exports.
const EXPORT_FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);

impl<E: SpanExporter> SpanExporter for Watched<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        if let Err(e) = &result {
            OTLP_EXPORT_FAILURES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut logged = self
                .logged
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            logged.1 += 1;
            if logged
                .0
                .is_none_or(|at| at.elapsed() >= EXPORT_FAILURE_LOG_EVERY)
            {
                tracing::warn!(
                    target: "concierge::telemetry",
                    error = %e,
                    spans,
                    failed_exports = logged.1,
                    "OpenTelemetry export failed; spans were dropped"
                );
                *logged = (Some(Instant::now()), 0);
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP/HTTP (protobuf) span exporter, configured by the standard `OTEL_*` variables.
fn otlp_provider() -> anyhow::Result<SdkTracerProvider> {
    let exporter = Watched {
        inner: opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()?,
        logged: std::sync::Mutex::new((None, 0)),
    };
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "concierge".into());
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service).build())
        .build())
}

/// `RUST_LOG`, or `info,sqlx=warn`.
fn env_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"))
}

/// Our request and grant-decision spans. They are DEBUG-level, so log lines carry them only
/// when `RUST_LOG` asks for debug; the trace exporter takes them at any level. Built for
/// nobody, a span would still cost its fields' formatting on every request (about a tenth of
/// the token endpoint's throughput, measured with `bench/run.sh`), so with no exporter and
/// the default filter they are not built at all.
fn is_request_span(m: &tracing::Metadata<'_>) -> bool {
    m.is_span() && m.target().starts_with("concierge")
}

/// Install the global subscriber. `RUST_LOG` filters logs (default `info,sqlx=warn`) and
/// exported spans, which also always include the request and grant-decision spans.
pub fn init(format: LogFormat) -> Telemetry {
    // Colours only for a terminal: a log file or collector gets plain text.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let fmt = match format {
        LogFormat::Json => fmt
            .json()
            .map_event_format(|inner| WithRequestId { inner, json: true })
            .boxed(),
        LogFormat::Text => fmt
            .map_event_format(|inner| WithRequestId { inner, json: false })
            .boxed(),
    };
    let provider = if otlp_requested() {
        match otlp_provider() {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("OpenTelemetry export is off: {e}");
                None
            }
        }
    } else {
        None
    };
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("concierge"))
            .with_filter(env_filter().or(filter_fn(is_request_span)))
    });
    tracing_subscriber::registry()
        .with(fmt.with_filter(env_filter()))
        .with(otel)
        .init();
    if provider.is_some() {
        tracing::info!("exporting traces over OTLP/HTTP");
    }
    Telemetry { provider }
}
