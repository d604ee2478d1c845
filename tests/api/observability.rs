//! Operations: `/healthz`, `/readyz`, Prometheus `/metrics`, and OpenTelemetry spans received
//! over OTLP/HTTP from a real server process.

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::json;

use crate::both;
use crate::flow::*;
use crate::helpers::*;
use crate::process::Replica;

/// `GET <origin><path>`: the operator endpoints live at the origin, not under the issuer.
async fn get_at_origin(
    app: &TestApp,
    path: &str,
) -> (
    reqwest::StatusCode,
    reqwest::header::HeaderMap,
    serde_json::Value,
) {
    split(
        app.http
            .get(format!("{}{path}", app.origin))
            .send()
            .await
            .unwrap(),
    )
    .await
}

both!(health_and_readiness, |app: TestApp| async move {
    assert_eq!(get_at_origin(&app, "/healthz").await.0, 200);
    let (s, _, body) = get_at_origin(&app, "/readyz").await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        body,
        json!({"status": "ready", "database": "ok", "keys": "ok"})
    );
    app
});

/// The database going away makes the server not ready (and only that).
#[tokio::test]
async fn not_ready_without_its_database() {
    let Some(app) = spawn_app_with(Backend::Postgres, |_| {}).await else {
        return;
    };
    let name = url::Url::parse(app.config.database_url.as_deref().unwrap())
        .unwrap()
        .path()
        .trim_start_matches('/')
        .to_string();
    drop_database(&name).await;
    let (s, _, body) = get_at_origin(&app, "/readyz").await;
    assert_eq!(s, 503, "{body}");
    assert_eq!(body["database"], "unreachable");
    assert_eq!(body["keys"], "ok");
    assert_eq!(get_at_origin(&app, "/healthz").await.0, 200);
    app.finish().await;
}

both!(
    metrics_count_requests_tokens_errors_and_events,
    |app: TestApp| async move {
        seed(&app).await;
        public_client(&app).await;
        let (id, secret) = machine_client(&app).await;
        let (id, secret) = (id.as_str(), secret.as_str());
        let mut issued = Vec::new();
        for _ in 0..2 {
            let (s, _, t) = machine_token(&app, id, secret).await;
            assert_eq!(s, 200, "{t}");
            issued.push(t["access_token"].as_str().unwrap().to_string());
        }
        let (s, _, _) = machine_token(&app, id, "not-the-secret").await;
        assert_eq!(s, 401);
        // Any token is a method (RFC 9110 §9.1): callers choosing them must not add series,
        // which /metrics would keep and list for the life of the process.
        for (i, method) in ["BREW1", "BREW2", "BREW3"].into_iter().enumerate() {
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let path = if i == 0 {
                "/token".to_string()
            } else {
                format!("/no-such-{i}")
            };
            let res = app
                .http
                .request(method, app.url(&path))
                .send()
                .await
                .unwrap();
            assert!(res.status().is_client_error(), "{}", res.status());
        }

        let res = app
            .http
            .get(format!("{}/metrics", app.origin))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert!(
            res.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text")
        );
        let text = res.text().await.unwrap();
        let has = |line: &str| text.lines().any(|l| l == line);
        assert!(
            has(&format!(
                "concierge_tokens_issued_total{{grant_type=\"client_credentials\",resource=\"{NOTES}\"}} 2"
            )),
            "{text}"
        );
        assert!(
            has(
                "concierge_http_requests_total{endpoint=\"/token\",method=\"POST\",status=\"200\"} 2"
            ),
            "{text}"
        );
        assert!(
            has(
                "concierge_http_requests_total{endpoint=\"/token\",method=\"POST\",status=\"401\"} 1"
            ),
            "{text}"
        );
        assert!(
            has("concierge_oauth_errors_total{endpoint=\"/token\",error=\"invalid_client\"} 1"),
            "{text}"
        );
        assert!(
            has(
                "concierge_http_requests_total{endpoint=\"/token\",method=\"other\",status=\"405\"} 1"
            ),
            "{text}"
        );
        assert!(
            has(
                "concierge_http_requests_total{endpoint=\"unmatched\",method=\"other\",status=\"404\"} 2"
            ),
            "{text}"
        );
        assert!(
            !text.contains("BREW"),
            "a caller's method became a label: {text}"
        );
        assert!(
            has("concierge_security_events_total{kind=\"client.registered\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("concierge_http_request_duration_seconds_bucket{le=\""),
            "{text}"
        );
        assert!(text.contains("endpoint=\"/register\""), "{text}");
        // Nothing secret: no client secret, no token, no client id as a label.
        for secret in [secret, "not-the-secret", issued[0].as_str(), id] {
            assert!(!text.contains(secret), "{secret} leaked into /metrics");
        }
        app
    }
);

/// A real server process exports its spans to an OTLP/HTTP endpoint when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set: a span per request and one per grant decision, with
/// no secret in them.
// Multi-threaded: the collector must keep answering while the test blocks on the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_endpoint() {
    let received: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let sink = received.clone();
    let collector = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(body.to_vec());
                // An empty ExportTraceServiceResponse.
                (
                    [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, collector).await });

    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/otel.db", dir.path().display());
    let server = Replica::start(
        dir.path(),
        |port| format!("http://127.0.0.1:{port}"),
        &db,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_SERVICE_NAME", "concierge-under-test"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await;
    let secret = "a-client-secret-that-must-not-be-exported";
    let res = server
        .http()
        .post(server.url("/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "nobody"),
            ("client_secret", secret),
        ])
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}; log: {}",
                std::fs::read_to_string(&server.log).unwrap_or_default()
            )
        });
    assert_eq!(res.status(), 401);
    // SIGTERM: the exporter flushes on the way out.
    let log = server.log.clone();
    server.stop();

    let bodies = received.lock().unwrap().clone();
    assert!(
        !bodies.is_empty(),
        "no OTLP export; server log: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let mut spans = Vec::new();
    let mut services = Vec::new();
    for body in &bodies {
        assert!(
            !body.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "a secret reached the exported spans"
        );
        let req = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        for rs in req.resource_spans {
            for a in rs.resource.iter().flat_map(|r| r.attributes.iter()) {
                if a.key == "service.name"
                    && let Some(AnyValue::StringValue(s)) =
                        a.value.as_ref().and_then(|v| v.value.clone())
                {
                    services.push(s);
                }
            }
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
    }
    assert!(
        services.iter().any(|s| s == "concierge-under-test"),
        "{services:?}"
    );
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"request"), "{names:?}");
    let grant = spans
        .iter()
        .find(|s| s.name == "token_request")
        .unwrap_or_else(|| panic!("no grant span in {names:?}"));
    let attr = |key: &str| {
        grant
            .attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.as_ref())
            .and_then(|v| v.value.clone())
    };
    assert_eq!(
        attr("grant_type"),
        Some(AnyValue::StringValue("client_credentials".into()))
    );
    // The grant span is a child of the request span.
    let request = spans.iter().find(|s| s.name == "request").unwrap();
    assert_eq!(grant.trace_id, request.trace_id);
}
