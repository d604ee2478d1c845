//! Client ID Metadata Documents, fetched from a real local document server.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use concierge::oauth::cimd::CimdError;
use concierge::oauth::client_metadata::AuthMethod;
use concierge::oauth::clients::{ClientLookupError, ClientSource};
use concierge::oauth::net_guard::FetchError;
use serde_json::json;

use crate::both;
use crate::helpers::{Backend, TestApp, spawn_app_with};

/// A document server on loopback. Every path counts its fetches.
struct DocServer {
    base: String,
    hits: Arc<dashmap_lite::Counts>,
}

mod dashmap_lite {
    use std::collections::HashMap;
    use std::sync::Mutex;

    #[derive(Default)]
    pub struct Counts(Mutex<HashMap<String, usize>>);

    impl Counts {
        pub fn bump(&self, k: &str) -> usize {
            let mut m = self.0.lock().unwrap();
            let e = m.entry(k.to_string()).or_default();
            *e += 1;
            *e
        }
        pub fn get(&self, k: &str) -> usize {
            *self.0.lock().unwrap().get(k).unwrap_or(&0)
        }
    }
}

fn doc(base: &str, path: &str) -> serde_json::Value {
    json!({
        "client_id": format!("{base}{path}"),
        "client_name": "Doc Agent",
        "redirect_uris": ["http://127.0.0.1/callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_method": "none"
    })
}

async fn doc_server() -> DocServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let hits = Arc::new(dashmap_lite::Counts::default());
    let flaky = Arc::new(AtomicUsize::new(0));
    let (b, h) = (base.clone(), hits.clone());
    let app = Router::new().fallback(get(move |uri: axum::http::Uri| {
        let (base, hits, flaky) = (b.clone(), h.clone(), flaky.clone());
        async move {
            let path = uri.path().to_string();
            hits.bump(&path);
            let json = |v: serde_json::Value, cache: &'static str| -> Response {
                let mut headers = HeaderMap::new();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                if !cache.is_empty() {
                    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
                }
                (headers, v.to_string()).into_response()
            };
            match path.as_str() {
                "/client.json" => json(doc(&base, &path), "max-age=60"),
                "/nostore.json" => json(doc(&base, &path), "no-store"),
                "/mismatch.json" => json(doc(&base, "/other.json"), ""),
                "/redirect.json" => {
                    (StatusCode::FOUND, [(header::LOCATION, "/client.json")]).into_response()
                }
                "/big.json" => {
                    let mut d = doc(&base, &path);
                    d["client_uri"] = json!(format!("https://agent.example/{}", "x".repeat(6000)));
                    json(d, "")
                }
                "/gentle.json" => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    json(doc(&base, &path), "max-age=60")
                }
                "/slow.json" => {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    json(doc(&base, &path), "")
                }
                "/flaky.json" => {
                    if flaky.fetch_add(1, Ordering::SeqCst) == 0 {
                        StatusCode::INTERNAL_SERVER_ERROR.into_response()
                    } else {
                        json(doc(&base, &path), "max-age=60")
                    }
                }
                "/secret.json" => {
                    let mut d = doc(&base, &path);
                    d["token_endpoint_auth_method"] = json!("client_secret_basic");
                    json(d, "")
                }
                "/pkjwt.json" => {
                    let mut d = doc(&base, &path);
                    d["token_endpoint_auth_method"] = json!("private_key_jwt");
                    d["jwks_uri"] = json!("https://agent.example/jwks.json");
                    json(d, "")
                }
                "/notjson.json" => "<html>hello</html>".into_response(),
                _ => StatusCode::NOT_FOUND.into_response(),
            }
        }
    }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    DocServer { base, hits }
}

async fn lookup_err(app: &TestApp, id: &str) -> CimdError {
    match app.state.oauth.clients.find(id).await {
        Err(ClientLookupError::Document(e)) => e,
        other => panic!("{id}: expected a document error, got {other:?}"),
    }
}

/// A server that may fetch documents from loopback, quickly giving up.
fn allowing_loopback(c: &mut concierge::Config) {
    c.cimd.allow_loopback = true;
    c.cimd.timeout_ms = 500;
}

both!(documents, allowing_loopback, documents_body);

async fn documents_body(app: TestApp) -> TestApp {
    let docs = doc_server().await;
    let id = format!("{}/client.json", docs.base);

    // Success: the document is the client.
    let c = app.state.oauth.clients.find(&id).await.unwrap().unwrap();
    assert_eq!(c.source, ClientSource::MetadataDocument);
    assert_eq!(c.metadata.token_endpoint_auth_method, AuthMethod::None);
    assert_eq!(c.display_name(), "Doc Agent (127.0.0.1)");
    assert!(
        c.metadata
            .redirect_uri_matches("http://127.0.0.1:5555/callback")
    );
    // Cached per Cache-Control: a second look-up does not fetch.
    app.state.oauth.clients.find(&id).await.unwrap().unwrap();
    assert_eq!(docs.hits.get("/client.json"), 1);
    // no-store: fetched every time.
    let ns = format!("{}/nostore.json", docs.base);
    app.state.oauth.clients.find(&ns).await.unwrap().unwrap();
    app.state.oauth.clients.find(&ns).await.unwrap().unwrap();
    assert_eq!(docs.hits.get("/nostore.json"), 2);

    // Failures, each for its reason.
    let e = lookup_err(&app, &format!("{}/mismatch.json", docs.base)).await;
    assert!(
        matches!(&e, CimdError::Invalid(m) if m.contains("client_id")),
        "{e}"
    );
    let e = lookup_err(&app, &format!("{}/redirect.json", docs.base)).await;
    assert!(
        matches!(e, CimdError::Fetch(FetchError::Redirect(302))),
        "{e}"
    );
    assert_eq!(
        docs.hits.get("/client.json"),
        1,
        "the redirect was not followed"
    );
    let e = lookup_err(&app, &format!("{}/big.json", docs.base)).await;
    assert!(
        matches!(e, CimdError::Fetch(FetchError::TooLarge(5120))),
        "{e}"
    );
    let e = lookup_err(&app, &format!("{}/slow.json", docs.base)).await;
    assert!(
        matches!(e, CimdError::Fetch(FetchError::Timeout(500))),
        "{e}"
    );
    let e = lookup_err(&app, &format!("{}/missing.json", docs.base)).await;
    assert!(
        matches!(e, CimdError::Fetch(FetchError::Status(404))),
        "{e}"
    );
    let e = lookup_err(&app, &format!("{}/secret.json", docs.base)).await;
    assert!(
        matches!(&e, CimdError::Invalid(m) if m.contains("shared secret")),
        "{e}"
    );
    let e = lookup_err(&app, &format!("{}/notjson.json", docs.base)).await;
    assert!(matches!(e, CimdError::Invalid(_)), "{e}");
    let pk = app
        .state
        .oauth
        .clients
        .find(&format!("{}/pkjwt.json", docs.base))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        pk.metadata.token_endpoint_auth_method,
        AuthMethod::PrivateKeyJwt
    );

    // Failures are never cached: the flaky document fails once, then works, then is cached.
    let flaky = format!("{}/flaky.json", docs.base);
    assert!(matches!(
        lookup_err(&app, &flaky).await,
        CimdError::Fetch(FetchError::Status(500))
    ));
    app.state.oauth.clients.find(&flaky).await.unwrap().unwrap();
    app.state.oauth.clients.find(&flaky).await.unwrap().unwrap();
    assert_eq!(docs.hits.get("/flaky.json"), 2);
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_addresses_refused_without_the_flag() {
    let app = spawn_app_with(Backend::Sqlite, |_| {}).await.unwrap();
    let docs = doc_server().await;
    let port = docs.base.rsplit(':').next().unwrap().to_string();
    // Plain http is not a document URL without the flag: it is simply no client.
    assert!(
        app.state
            .oauth
            .clients
            .find(&format!("{}/client.json", docs.base))
            .await
            .unwrap()
            .is_none()
    );
    // An address literal in a special-use range, however it is spelled: refused before any
    // connection (a spelling that is not the URL's normal form is refused as a URL).
    for host in [
        "127.0.0.1",
        "10.0.0.1",
        "169.254.169.254",
        "[::1]",
        "0.0.0.0",
        "[::]",
        "[::ffff:7f00:1]",
        "[::ffff:127.0.0.1]",
        "[::7f00:1]",
        "[fec0::1]",
        "127.1",
        "2130706433",
        "0x7f.0.0.1",
        "0177.0.0.1",
    ] {
        let e = lookup_err(&app, &format!("https://{host}:{port}/client.json")).await;
        assert!(
            matches!(
                e,
                CimdError::Fetch(FetchError::SpecialUseAddress(_)) | CimdError::BadUrl(_)
            ),
            "{host}: {e}"
        );
    }
    // A name that resolves to loopback is refused at resolution time.
    let e = lookup_err(&app, &format!("https://localhost:{port}/client.json")).await;
    assert!(
        matches!(&e, CimdError::Fetch(FetchError::SpecialUseAddress(m)) if m.contains("127.0.0.1") || m.contains("::1")),
        "{e}"
    );
    assert_eq!(docs.hits.get("/client.json"), 0, "nothing was fetched");
    // URL rules.
    let e = lookup_err(&app, "https://agent.example/a/../client.json").await;
    assert!(matches!(e, CimdError::BadUrl(_)), "{e}");
    let e = lookup_err(&app, "https://agent.example").await;
    assert!(matches!(e, CimdError::BadUrl(_)), "{e}");
    app.finish().await;
}

both!(
    fetches_are_shared_and_failures_paused,
    allowing_loopback,
    fetches_are_shared_and_failures_paused_body
);

/// Concurrent requests naming one document share one fetch; a host whose documents keep
/// failing is paused, the caller learns nothing about how a fetch failed, and the audit log
/// gets the first failure and the one that pauses the host, not one row per attempt.
async fn fetches_are_shared_and_failures_paused_body(app: TestApp) -> TestApp {
    let docs = doc_server().await;
    let authorize = |client_id: String| {
        let params = vec![
            ("response_type".to_string(), "code".to_string()),
            ("client_id".to_string(), client_id),
            (
                "redirect_uri".to_string(),
                "http://127.0.0.1/callback".to_string(),
            ),
        ];
        let (http, url) = (app.http.clone(), crate::flow::authorize_url(&app, &params));
        async move {
            let res = http.get(url).send().await.unwrap();
            (res.status(), res.text().await.unwrap())
        }
    };

    let id = format!("{}/gentle.json", docs.base);
    let answers = join_all((0..20).map(|_| tokio::spawn(authorize(id.clone())))).await;
    for (status, page) in answers {
        assert!(status.as_u16() < 500, "{status} {page}");
    }
    assert_eq!(
        docs.hits.get("/gentle.json"),
        1,
        "one fetch for twenty requests"
    );

    // Failures are counted per host in one-minute windows; keep clear of a boundary.
    let second = concierge::util::now().rem_euclid(60);
    if second > 50 {
        tokio::time::sleep(Duration::from_secs((61 - second) as u64)).await;
    }
    for i in 0..10 {
        let (status, page) = authorize(format!("{}/missing-{i}.json", docs.base)).await;
        assert_eq!(status, 400);
        assert!(page.contains("could not be fetched"), "{page}");
        assert!(
            !page.contains("404") && !page.contains("Not Found"),
            "{page}"
        );
        assert_eq!(docs.hits.get(&format!("/missing-{i}.json")), 1);
    }
    for i in 10..13 {
        let (status, page) = authorize(format!("{}/missing-{i}.json", docs.base)).await;
        assert_eq!(status, 400);
        assert!(page.contains("failed too often"), "{page}");
        assert_eq!(
            docs.hits.get(&format!("/missing-{i}.json")),
            0,
            "a paused host is not fetched"
        );
    }

    app.state.oauth.audit.flush().await;
    let events = app
        .store()
        .list_audit(&concierge::store::AuditQuery {
            kind: Some("cimd.fetch_failed".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].detail["paused"], true, "newest first: the pause");
    assert_eq!(events[1].detail["failures_in_window"], 1);
    app
}

async fn join_all<T>(handles: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
