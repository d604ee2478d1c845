//! `spawn_app(Backend)`: a fresh server with its own fresh database, and an HTTP client.

use std::sync::Arc;

use concierge::config::Config;
use concierge::startup::{App, AppState, RunningServer};
use serde_json::Value;
use tokio::sync::OnceCell;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server the tests create their databases on.
pub fn pg_admin_url() -> String {
    std::env::var("CONCIERGE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

static PG_AVAILABLE: OnceCell<bool> = OnceCell::const_new();

/// Is PostgreSQL there? Without it the PostgreSQL half is skipped loudly, except under
/// `CI=true`, where its absence fails the run (DESIGN.md §7).
async fn pg_available() -> bool {
    *PG_AVAILABLE
        .get_or_init(|| async {
            let url = pg_admin_url();
            match sqlx::PgPool::connect(&url).await {
                Ok(pool) => {
                    drop_stale_databases(&pool).await;
                    pool.close().await;
                    true
                }
                Err(e) => {
                    if std::env::var("CI").is_ok_and(|v| v == "true") {
                        panic!("CI=true but PostgreSQL is not reachable at {url}: {e}");
                    }
                    eprintln!(
                        "\n!!!! PostgreSQL not reachable at {url} ({e}).\n!!!! SKIPPING the PostgreSQL half of the tests. Set CONCIERGE_TEST_POSTGRES_URL to run it.\n"
                    );
                    false
                }
            }
        })
        .await
}

/// Test databases are named `concierge_t_<unix time>_<random>`; drop ones older than an hour
/// that a crashed run left behind.
async fn drop_stale_databases(pool: &sqlx::PgPool) {
    let names: Vec<(String,)> =
        sqlx::query_as("SELECT datname FROM pg_database WHERE datname LIKE 'concierge_t_%'")
            .fetch_all(pool)
            .await
            .unwrap_or_default();
    let cutoff = concierge::util::now() - 3600;
    for (name,) in names {
        let ts: i64 = name
            .split('_')
            .nth(2)
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        if ts < cutoff {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
            )))
            .execute(pool)
            .await;
        }
    }
}

/// A fresh database for one test: its URL and, for PostgreSQL, its name.
pub async fn fresh_database(
    backend: Backend,
    dir: &std::path::Path,
) -> Option<(String, Option<String>)> {
    match backend {
        Backend::Sqlite => Some((format!("sqlite://{}", dir.join("test.db").display()), None)),
        Backend::Postgres => {
            if !pg_available().await {
                return None;
            }
            let name = format!(
                "concierge_t_{}_{}",
                concierge::util::now(),
                concierge::util::random_id()
                    .to_lowercase()
                    .replace(['-', '_'], "")
            );
            let admin = sqlx::PgPool::connect(&pg_admin_url()).await.expect("pg");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                .execute(&admin)
                .await
                .expect("create database");
            admin.close().await;
            let mut url = url::Url::parse(&pg_admin_url()).expect("pg url");
            url.set_path(&format!("/{name}"));
            Some((url.to_string(), Some(name)))
        }
    }
}

pub async fn drop_database(name: &str) {
    if let Ok(admin) = sqlx::PgPool::connect(&pg_admin_url()).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
        )))
        .execute(&admin)
        .await;
        admin.close().await;
    }
}

pub struct TestApp {
    /// The issuer, e.g. `http://127.0.0.1:41234`.
    pub issuer: String,
    /// `http://127.0.0.1:port`, without any issuer path.
    pub origin: String,
    pub http: reqwest::Client,
    pub state: AppState,
    pub config: Config,
    server: Option<RunningServer>,
    pg_database: Option<String>,
    _dir: tempfile::TempDir,
}

/// Start a server after `configure` adjusts the configuration. `None` when the backend is
/// not available (PostgreSQL outside CI).
pub async fn spawn_app_with(
    backend: Backend,
    configure: impl FnOnce(&mut Config),
) -> Option<TestApp> {
    spawn_app_at_path(backend, "", configure).await
}

pub async fn spawn_app_at_path(
    backend: Backend,
    issuer_path: &str,
    configure: impl FnOnce(&mut Config),
) -> Option<TestApp> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    spawn_app_on(backend, listener, issuer_path, configure).await
}

/// Start a server on a listener bound beforehand, so that a test can know several servers'
/// issuers before configuring them (two servers that trust each other).
pub async fn spawn_app_on(
    backend: Backend,
    listener: tokio::net::TcpListener,
    issuer_path: &str,
    configure: impl FnOnce(&mut Config),
) -> Option<TestApp> {
    let dir = tempfile::tempdir().expect("tempdir");
    let (database_url, pg_database) = fresh_database(backend, dir.path()).await?;
    let port = listener.local_addr().expect("addr").port();
    let origin = format!("http://127.0.0.1:{port}");
    let mut config = Config {
        issuer: format!("{origin}{issuer_path}"),
        data_dir: dir.path().to_path_buf(),
        database_url: Some(database_url),
        ..Config::default()
    };
    configure(&mut config);
    let app = App::build(config.clone()).await.expect("build app");
    let state = app.state.clone();
    let server = app.spawn(listener).await;
    Some(TestApp {
        issuer: config.issuer.clone(),
        origin,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        state,
        config,
        server: Some(server),
        pg_database,
        _dir: dir,
    })
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    pub async fn get_json(
        &self,
        path: &str,
    ) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
        let res = self.http.get(self.url(path)).send().await.expect("request");
        split(res).await
    }

    /// `POST /register` with a JSON body.
    pub async fn register(
        &self,
        body: &Value,
    ) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
        Server::register(self, body).await
    }

    /// Stop the server and drop its PostgreSQL database.
    pub async fn finish(mut self) {
        if let Some(s) = self.server.take() {
            s.stop().await.expect("server stopped cleanly");
        }
        if let Some(name) = self.pg_database.take() {
            drop_database(&name).await;
        }
    }

    pub fn store(&self) -> Arc<dyn concierge::store::Store> {
        self.state.store.clone()
    }
}

/// What the flow helpers need of a server: an in-process [`TestApp`] or a separate process
/// (see `process.rs`).
pub trait Server {
    /// `http://127.0.0.1:port`, without any issuer path.
    fn origin(&self) -> &str;
    /// An endpoint's URL at this server.
    fn url(&self, path: &str) -> String;
    fn http(&self) -> &reqwest::Client;
    /// The database this server uses.
    fn store(&self) -> Arc<dyn concierge::store::Store>;

    /// `POST /register` with a JSON body.
    async fn register(
        &self,
        body: &Value,
    ) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
        let res = self
            .http()
            .post(self.url("/register"))
            .json(body)
            .send()
            .await
            .expect("request");
        split(res).await
    }
}

impl Server for TestApp {
    fn origin(&self) -> &str {
        &self.origin
    }
    fn url(&self, path: &str) -> String {
        TestApp::url(self, path)
    }
    fn http(&self) -> &reqwest::Client {
        &self.http
    }
    fn store(&self) -> Arc<dyn concierge::store::Store> {
        TestApp::store(self)
    }
}

pub async fn split(
    res: reqwest::Response,
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    let status = res.status();
    let headers = res.headers().clone();
    let text = res.text().await.expect("body");
    let json = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, headers, json)
}

/// POST the form `base` to `path`, each of `extra` replacing the parameter of its name (an
/// empty value removes it).
pub async fn post_form<'a>(
    app: &impl Server,
    path: &str,
    mut base: Vec<(&'a str, &'a str)>,
    extra: &[(&'a str, &'a str)],
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    for (k, v) in extra {
        base.retain(|(n, _)| n != k);
        if !v.is_empty() {
            base.push((k, v));
        }
    }
    split(
        app.http()
            .post(app.url(path))
            .form(&base)
            .send()
            .await
            .expect("request"),
    )
    .await
}

/// Assert an RFC error answer: status, `error` code, and a description mentioning `mention`.
pub fn assert_error(
    got: &(reqwest::StatusCode, reqwest::header::HeaderMap, Value),
    status: u16,
    code: &str,
    mention: &str,
) {
    let (s, _, body) = got;
    assert_eq!(s.as_u16(), status, "status; body {body}");
    assert_eq!(body["error"], code, "error code; body {body}");
    let d = body["error_description"].as_str().unwrap_or_default();
    assert!(
        d.contains(mention),
        "description {d:?} should mention {mention:?}"
    );
}

/// Run one async test body against both backends: `both!(name, |app| async move { … })`.
/// The body gets a started `TestApp` and must return it so the test can clean up.
#[macro_export]
macro_rules! both {
    ($name:ident, $body:expr) => {
        $crate::both!($name, |_| {}, $body);
    };
    ($name:ident, $configure:expr, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let app =
                    $crate::helpers::spawn_app_with($crate::helpers::Backend::Sqlite, $configure)
                        .await
                        .expect("sqlite is always available");
                let app = ($body)(app).await;
                app.finish().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(app) =
                    $crate::helpers::spawn_app_with($crate::helpers::Backend::Postgres, $configure)
                        .await
                else {
                    return;
                };
                let app = ($body)(app).await;
                app.finish().await;
            }
        }
    };
}

/// The resource the token tests ask for, as the benchmark has it.
pub const TOOLS_RESOURCE: &str = "http://127.0.0.1:9999/mcp";

/// Register [`TOOLS_RESOURCE`] with scopes `tools:read` and `tools:write` (again is fine).
pub async fn add_tools_resource(app: &TestApp) {
    let r = concierge::oauth::resource::Resource::new(
        TOOLS_RESOURCE,
        "Tools",
        vec![
            concierge::oauth::resource::ScopeDef::parse("tools:read=Read").unwrap(),
            concierge::oauth::resource::ScopeDef::parse("tools:write=Write").unwrap(),
        ],
        0,
    )
    .unwrap();
    match app.store().insert_resource(&r).await {
        Ok(()) | Err(concierge::store::StoreError::Conflict(_)) => {}
        Err(e) => panic!("adding the resource: {e}"),
    }
}
