//! What operators run on (issue 15.7): a request id on every response and log line, the
//! access log, the metrics read at each scrape (audit queue, pool, keys, build), OTLP export
//! failures made visible, audit events pushed to a SIEM webhook, audit filters checked, and
//! admin changes naming their actor and address.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::admin::{admin_token, call};
use crate::both;
use crate::flow::*;
use crate::helpers::*;
use crate::process::{Replica, free_port};

/// `GET <origin>/metrics` as text.
async fn metrics(server: &impl Server) -> String {
    let res = server
        .http()
        .get(format!("{}/metrics", server.origin()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.text().await.unwrap()
}

/// The value of the sample `name` (with its labels, as written) in `text`.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

both!(
    every_response_carries_a_request_id,
    |app: TestApp| async move {
        let get = |path: &str, id: Option<&str>| {
            let mut req = app.http.get(app.url(path));
            if let Some(id) = id {
                req = req.header("x-request-id", id);
            }
            req.send()
        };
        let id_of = |res: &reqwest::Response| {
            res.headers()
                .get("x-request-id")
                .map(|v| v.to_str().unwrap().to_string())
        };
        let a = get("/.well-known/oauth-authorization-server", None)
            .await
            .unwrap();
        let b = get("/.well-known/oauth-authorization-server", None)
            .await
            .unwrap();
        let (ida, idb) = (id_of(&a).unwrap(), id_of(&b).unwrap());
        assert_eq!(ida.len(), 22, "{ida}");
        assert_ne!(ida, idb);
        // The caller's id is kept when it is plausible (a proxy's or a client's correlation id),
        // replaced when it could forge a log line.
        let kept = get("/jwks", Some("trace-7f3a:span/1")).await.unwrap();
        assert_eq!(id_of(&kept).as_deref(), Some("trace-7f3a:span/1"));
        let replaced = get("/jwks", Some("a\"b c")).await.unwrap();
        assert_eq!(id_of(&replaced).unwrap().len(), 22);
        // Errors too: an OAuth error, a page, an unknown path.
        let token = app
            .http
            .post(app.url("/token"))
            .form(&[("grant_type", "nonsense")])
            .send()
            .await
            .unwrap();
        assert_eq!(token.status(), 400);
        assert!(id_of(&token).is_some());
        for path in ["/authorize", "/no/such/path"] {
            let res = get(path, Some("page-1")).await.unwrap();
            assert!(res.status().is_client_error(), "{path}");
            assert_eq!(id_of(&res).as_deref(), Some("page-1"), "{path}");
        }
        app
    }
);

both!(
    metrics_read_the_audit_queue_pool_keys_and_build,
    |app: TestApp| async move {
        seed(&app).await;
        let (id, secret) = machine_client(&app).await;
        let (s, _, t) = machine_token(&app, &id, &secret).await;
        assert_eq!(s, 200, "{t}");
        // The writer stores within its linger (100 ms).
        let mut text = String::new();
        for _ in 0..50 {
            text = metrics(&app).await;
            if sample(&text, "concierge_audit_events_stored_total").is_some_and(|n| n >= 1.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let build = format!(
            "concierge_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(sample(&text, &build), Some(1.0), "{text}");
        assert!(
            sample(&text, "concierge_audit_events_stored_total").unwrap() >= 1.0,
            "{text}"
        );
        assert_eq!(
            sample(&text, "concierge_audit_events_failed_total"),
            Some(0.0)
        );
        assert!(
            sample(&text, "concierge_audit_queue_events").is_some(),
            "{text}"
        );
        let max = sample(&text, "concierge_db_pool_connections{state=\"max\"}").unwrap();
        let idle = sample(&text, "concierge_db_pool_connections{state=\"idle\"}").unwrap();
        let in_use = sample(&text, "concierge_db_pool_connections{state=\"in_use\"}").unwrap();
        assert!(max >= 1.0 && idle + in_use <= max, "{text}");
        for alg in ["ES256", "RS256"] {
            let age = sample(
                &text,
                &format!("concierge_signing_key_age_seconds{{alg=\"{alg}\"}}"),
            );
            assert!(
                age.is_some_and(|a| (0.0..3600.0).contains(&a)),
                "{alg}: {text}"
            );
        }
        assert!(
            sample(&text, "concierge_otlp_export_failures_total").is_some(),
            "{text}"
        );
        app
    }
);

both!(
    audit_filters_are_checked_and_admin_changes_name_actor_and_address,
    |app: TestApp| async move {
        let (admin, _, t) = admin_token(&app).await;
        for (query, field) in [("type=toke", "type"), ("type=tokens.issued", "type")] {
            let (s, _, body) = call(
                &app,
                Some(&t),
                reqwest::Method::GET,
                &format!("/admin/v1/audit?{query}"),
                None,
            )
            .await;
            assert_eq!(s, 400, "{query}: {body}");
            assert_eq!(body["error"]["field"], field, "{body}");
        }
        // A misspelt parameter is refused, not ignored.
        let (s, _, body) = call(
            &app,
            Some(&t),
            reqwest::Method::GET,
            "/admin/v1/audit?kind=token",
            None,
        )
        .await;
        assert_eq!(s, 400, "{body}");
        assert!(body.to_string().contains("kind"), "{body}");
        let (s, _, _) = call(
            &app,
            Some(&t),
            reqwest::Method::GET,
            "/admin/v1/audit?type=token",
            None,
        )
        .await;
        assert_eq!(s, 200);

        let (s, _, made) = call(
            &app,
            Some(&t),
            reqwest::Method::POST,
            "/admin/v1/clients",
            Some(json!({"client_name": "Backend", "grant_types": ["client_credentials"]})),
        )
        .await;
        assert_eq!(s, 201, "{made}");
        let (s, _, page) = call(
            &app,
            Some(&t),
            reqwest::Method::GET,
            "/admin/v1/audit?type=admin.change",
            None,
        )
        .await;
        assert_eq!(s, 200, "{page}");
        let change = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["detail"]["action"] == "client.create")
            .unwrap_or_else(|| panic!("no client.create in {page}"));
        assert_eq!(change["client_id"], admin.as_str(), "{change}");
        assert_eq!(change["ip"], "127.0.0.1", "{change}");
        assert_eq!(
            change["detail"]["actor"],
            json!({"via": "admin_api", "client_id": admin}),
            "{change}"
        );
        app
    }
);

/// What the webhook receiver saw: each delivery's headers and body.
pub(crate) type Deliveries = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;

/// A receiver that answers 503 to the first delivery and 204 to the rest.
pub(crate) async fn receiver() -> (String, Deliveries) {
    let seen: Deliveries = Arc::default();
    let app = axum::Router::new().route(
        "/siem",
        axum::routing::post({
            let seen = seen.clone();
            move |headers: HeaderMap, body: axum::body::Bytes| {
                let seen = seen.clone();
                async move {
                    let mut seen = seen.lock().unwrap();
                    seen.push((headers, body.to_vec()));
                    if seen.len() == 1 {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::NO_CONTENT
                    }
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/siem", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

/// HMAC-SHA256 over `"<t>.<body>"`, computed here from the documented recipe.
pub(crate) fn expected_signature(secret: &str, t: &str, body: &[u8]) -> String {
    use aws_lc_rs::hmac;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed = t.as_bytes().to_vec();
    signed.push(b'.');
    signed.extend_from_slice(body);
    let tag = hmac::sign(&key, &signed);
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The secret the audit webhook's deliveries are signed with in these tests.
const SECRET: &str = "a-shared-secret-of-at-least-32-characters";

/// A server on SQLite pushing the audit events of `kinds` to a [`receiver`], and what it
/// received.
async fn pushing_to(kinds: &[&str]) -> (TestApp, Deliveries) {
    let (url, seen) = receiver().await;
    let kinds: Vec<String> = kinds.iter().map(|k| k.to_string()).collect();
    let app = TestApp::builder(Backend::Sqlite)
        .configure(move |c| {
            c.audit.webhook = Some(concierge::config::AuditWebhook {
                url,
                secret: SECRET.into(),
                kinds,
                timeout_secs: 5,
            });
        })
        .start()
        .await
        .unwrap();
    (app, seen)
}

/// Stored audit events are pushed to the configured webhook as signed JSON, only the kinds
/// asked for, and a delivery the receiver could not take (503) is retried with the same
/// delivery id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_events_are_pushed_signed_and_retried() {
    let (app, seen) = pushing_to(&["token"]).await;
    seed(&app).await;
    let (id, secret) = machine_client(&app).await;
    let (s, _, _) = machine_token(&app, &id, &secret).await;
    assert_eq!(s, 200);
    // A kind not asked for: registering a client.
    public_client(&app).await;
    for _ in 0..100 {
        if seen.lock().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() >= 2, "{} deliveries", seen.len());
    let delivery = |h: &HeaderMap| h["concierge-delivery"].to_str().unwrap().to_string();
    assert_eq!(
        delivery(&seen[0].0),
        delivery(&seen[1].0),
        "a retry keeps its id"
    );
    let mut kinds = Vec::new();
    for (headers, body) in &seen {
        assert_eq!(headers["content-type"], "application/json");
        let sig = headers["concierge-signature"].to_str().unwrap();
        let (t, v1) = sig
            .strip_prefix("t=")
            .and_then(|s| s.split_once(",v1="))
            .unwrap_or_else(|| panic!("signature {sig}"));
        assert_eq!(v1, expected_signature(SECRET, t, body));
        let t: i64 = t.parse().unwrap();
        assert!((t - concierge::util::now()).abs() < 60);
        let doc: Value = serde_json::from_slice(body).unwrap();
        for e in doc["events"].as_array().unwrap() {
            kinds.push(e["type"].as_str().unwrap().to_string());
            if e["type"] == "token.issued" {
                assert_eq!(e["client_id"], id.as_str(), "{e}");
                assert!(e["at"].as_str().unwrap().ends_with('Z'), "{e}");
                assert!(e["detail"].is_object(), "{e}");
            }
        }
        assert!(
            !String::from_utf8_lossy(body).contains(&secret),
            "no secret is pushed"
        );
    }
    assert!(kinds.iter().any(|k| k == "token.issued"), "{kinds:?}");
    assert!(kinds.iter().all(|k| k.starts_with("token.")), "{kinds:?}");
    let text = metrics(&app).await;
    assert!(
        sample(
            &text,
            "concierge_audit_events_pushed_total{outcome=\"pushed\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    app.finish().await;
}

/// A registration stores its audit event in its own write, not through the audit writer:
/// the event is still pushed, with the client it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_stored_with_its_event_is_pushed() {
    let (app, seen) = pushing_to(&["client"]).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(public_client(&app).await);
    }
    let pushed = |seen: &Deliveries| -> Vec<(String, String)> {
        let mut pushed = Vec::new();
        for (_, body) in seen.lock().unwrap().iter() {
            let doc: Value = serde_json::from_slice(body).unwrap();
            for e in doc["events"].as_array().unwrap() {
                let kind = e["type"].as_str().unwrap().to_string();
                pushed.push((kind, e["client_id"].as_str().unwrap_or("").to_string()));
            }
        }
        pushed
    };
    for _ in 0..100 {
        let pushed = pushed(&seen);
        if ids.iter().all(|id| pushed.iter().any(|(_, c)| c == id)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pushed = pushed(&seen);
    for id in &ids {
        assert!(
            pushed.contains(&("client.registered".to_string(), id.clone())),
            "{id} was not pushed: {pushed:?}"
        );
    }
    let text = metrics(&app).await;
    assert!(
        sample(&text, "concierge_audit_events_stored_total").is_some_and(|n| n >= 3.0),
        "{text}"
    );
    app.finish().await;
}

/// The JSON lines of a replica's log.
fn json_lines(replica: &Replica) -> Vec<Value> {
    std::fs::read_to_string(&replica.log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// With `http.access_log`, one line per request (no query string); every line written while
/// a request is handled names its request id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_and_request_ids_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/ops.db", dir.path().display());
    let server = Replica::start(
        dir.path(),
        |port| format!("http://127.0.0.1:{port}"),
        &db,
        &[
            ("CONCIERGE_HTTP__ACCESS_LOG", "true"),
            ("CONCIERGE_LOG_FORMAT", "json"),
        ],
    )
    .await;
    let res = server
        .http()
        .post(server.url("/token"))
        .header("x-request-id", "req-token-1")
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "nobody"),
            ("client_secret", "wrong"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = server
        .http()
        .post(server.url("/register"))
        .header("x-request-id", "req-register-1")
        .json(&json!({
            "client_name": "Logged",
            "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "none",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = server
        .http()
        .get(server.url("/.well-known/oauth-authorization-server?probe=query-must-not-be-logged"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut lines = Vec::new();
    for _ in 0..50 {
        lines = json_lines(&server);
        if lines
            .iter()
            .filter(|l| l["target"] == "concierge::access")
            .count()
            >= 3
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let access = |id: &str| {
        lines
            .iter()
            .find(|l| l["target"] == "concierge::access" && l["fields"]["request_id"] == id)
            .unwrap_or_else(|| panic!("no access line for {id}: {lines:?}"))
    };
    let token = &access("req-token-1")["fields"];
    assert_eq!(token["method"], "POST");
    assert_eq!(token["path"], "/token");
    assert_eq!(token["status"], 401);
    assert_eq!(token["client_id"], "nobody", "the claimed client: {token}");
    assert!(token["latency_ms"].as_f64().is_some(), "{token}");
    let register = &access("req-register-1")["fields"];
    assert_eq!(register["status"], 201);
    assert_ne!(register["client_id"], "-", "{register}");
    // A line the handler wrote names the request.
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "client registered"
                && l["request_id"] == "req-register-1"),
        "{lines:?}"
    );
    let text = std::fs::read_to_string(&server.log).unwrap();
    assert!(text.contains("/.well-known/oauth-authorization-server"));
    assert!(!text.contains("query-must-not-be-logged"), "{text}");
    assert!(!text.contains("wrong\""), "no secret in the log");
    server.stop();
}

/// An OTLP endpoint that does not answer: the failures are logged (not silently dropped)
/// and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_export_failures_are_logged_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/otlp.db", dir.path().display());
    // Nothing listens there.
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let server = Replica::start(
        dir.path(),
        |port| format!("http://127.0.0.1:{port}"),
        &db,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await;
    let mut logged = false;
    for _ in 0..100 {
        let _ = server
            .http()
            .get(server.url("/.well-known/oauth-authorization-server"))
            .send()
            .await;
        if std::fs::read_to_string(&server.log)
            .unwrap_or_default()
            .contains("OpenTelemetry export failed")
        {
            logged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        logged,
        "{}",
        std::fs::read_to_string(&server.log).unwrap_or_default()
    );
    let text = metrics(&server).await;
    assert!(
        sample(&text, "concierge_otlp_export_failures_total").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    server.stop();
}

/// With `[audit.otlp]`, stored events reach an OpenTelemetry collector as log records, in
/// OTLP/HTTP's JSON encoding, read here with the OpenTelemetry project's own types.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_events_reach_an_otlp_collector_as_log_records() {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;

    let seen: Deliveries = Arc::default();
    let collector = axum::Router::new().route(
        "/v1/logs",
        axum::routing::post({
            let seen = seen.clone();
            move |headers: HeaderMap, body: axum::body::Bytes| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push((headers, body.to_vec()));
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/v1/logs", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, collector).await });
    let app = TestApp::builder(Backend::Sqlite)
        .configure(move |c| {
            c.audit.otlp = Some(concierge::config::AuditOtlp {
                endpoint,
                headers: [("authorization".into(), "Bearer collector-token".into())].into(),
                service_name: "concierge-audit-test".into(),
                kinds: Vec::new(),
                timeout_secs: 5,
            });
        })
        .start()
        .await
        .unwrap();
    seed(&app).await;
    let (id, secret) = machine_client(&app).await;
    let (s, _, _) = machine_token(&app, &id, &secret).await;
    assert_eq!(s, 200);
    let mut records = Vec::new();
    for _ in 0..100 {
        records.clear();
        for (headers, body) in seen.lock().unwrap().iter() {
            assert_eq!(headers["authorization"], "Bearer collector-token");
            assert_eq!(headers["content-type"], "application/json");
            let req: ExportLogsServiceRequest = serde_json::from_slice(body)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)));
            for rl in req.resource_logs {
                let service = rl
                    .resource
                    .iter()
                    .flat_map(|r| r.attributes.iter())
                    .find(|a| a.key == "service.name")
                    .and_then(|a| a.value.clone()?.value);
                assert_eq!(
                    service,
                    Some(AnyValue::StringValue("concierge-audit-test".into()))
                );
                for sl in rl.scope_logs {
                    records.extend(sl.log_records);
                }
            }
        }
        if !records.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let issued = records
        .iter()
        .find(|r| {
            r.body.as_ref().and_then(|b| b.value.clone())
                == Some(AnyValue::StringValue("token.issued".into()))
        })
        .unwrap_or_else(|| panic!("no token.issued record in {records:?}"));
    let attr = |key: &str| {
        issued
            .attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.clone()?.value)
    };
    assert_eq!(
        attr("concierge.client_id"),
        Some(AnyValue::StringValue(id.clone()))
    );
    assert_eq!(
        attr("event.name"),
        Some(AnyValue::StringValue("token.issued".into()))
    );
    let Some(AnyValue::StringValue(detail)) = attr("concierge.detail") else {
        panic!("no detail");
    };
    let detail: Value = serde_json::from_str(&detail).unwrap();
    assert_eq!(detail["grant_type"], "client_credentials", "{detail}");
    let now = concierge::util::now() as u64 * 1_000_000_000;
    assert!(
        issued.time_unix_nano > now - 60_000_000_000
            && issued.time_unix_nano <= now + 1_000_000_000
    );
    assert_eq!(issued.severity_number, 9);
    app.finish().await;
}

/// A change's audit event is stored before its response goes out: a `kill -9` right after
/// the answer loses none (token issuance may lag by the writer's linger; see
/// `audit.durable_tokens`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changes_audit_event_survives_kill_9_right_after_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/durable.db", dir.path().display());
    let kek = crate::process::shared_kek();
    let env = [("CONCIERGE_KEY_ENCRYPTION_KEY", kek.as_str())];
    let server = Replica::start(
        dir.path(),
        |port| format!("http://127.0.0.1:{port}"),
        &db,
        &env,
    )
    .await;
    let (admin, secret) =
        concierge::manage::create_admin_client(server.store().as_ref(), &server.issuer, "ops")
            .await
            .unwrap();
    let resource = concierge::oauth::admin_token::admin_resource_uri(&server.issuer);
    let (s, _, t) = post_form(
        &server,
        "/token",
        vec![
            ("grant_type", "client_credentials"),
            ("client_id", admin.client_id.as_str()),
            ("client_secret", secret.as_str()),
            ("resource", resource.as_str()),
            ("scope", "admin"),
        ],
        &[],
    )
    .await;
    assert_eq!(s, 200, "{t}");
    let token = t["access_token"].as_str().unwrap().to_string();
    let mut made = Vec::new();
    for i in 0..5 {
        let res = server
            .http()
            .post(server.url("/admin/v1/clients"))
            .bearer_auth(&token)
            .json(&json!({"client_name": format!("Backend {i}"), "grant_types": ["client_credentials"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let body: Value = res.json().await.unwrap();
        made.push(body["client"]["client_id"].as_str().unwrap().to_string());
    }
    // SIGKILL at once: no shutdown, no flush.
    drop(server);
    let store = concierge::store::connect(&db).await.unwrap();
    let events = store
        .list_audit(&concierge::store::AuditQuery {
            kind: Some("admin.change".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    for id in &made {
        assert!(
            events.iter().any(|e| e.detail["action"] == "client.create"
                && e.detail.to_string().contains(id.as_str())),
            "the creation of {id} was answered but its audit event is lost: {events:?}"
        );
    }
}
