//! Logs and traces: `tracing` to stderr (text or JSON lines), and OpenTelemetry export over
//! OTLP/HTTP when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) variable is set.
//!
//! What goes into spans is chosen where they are made: the request span has the method, the
//! route template and the status, never a query string, header or body, so no code, token or
//! secret reaches a log line, a span or a metric label.

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

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

/// The OTLP/HTTP (protobuf) span exporter, configured by the standard `OTEL_*` variables.
fn otlp_provider() -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()?;
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
        LogFormat::Json => fmt.json().boxed(),
        LogFormat::Text => fmt.boxed(),
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
