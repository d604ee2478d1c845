//! `spawn_app(Backend)`: a fresh server with its own fresh database, and an HTTP client.

use std::sync::Arc;

use concierge::config::Config;
use concierge::manage;
use concierge::oauth::client_metadata::{ClientMetadata, Origin, RawClientMetadata, validate};
use concierge::oauth::grants::GrantRegistry;
use concierge::oauth::registration::new_client;
use concierge::oauth::resource::ScopeDef;
use concierge::startup::{App, RunningServer};
use concierge::state::AppState;
use concierge::store::ClientKind;
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
/// `CI=true`, where its absence fails the run (README: the test command).
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
    /// The users [`TestAppBuilder::with_user`] added: username → id.
    pub users: std::collections::HashMap<String, String>,
    /// The machine clients [`TestAppBuilder::with_machine_client`] added, in order.
    pub machine_clients: Vec<MachineClient>,
    /// The admin client [`TestAppBuilder::with_admin_client`] added.
    pub admin_client: Option<MachineClient>,
    server: Option<RunningServer>,
    pg_database: Option<String>,
    _dir: tempfile::TempDir,
}

/// A confidential client an operator registered for the client credentials grant.
#[derive(Debug, Clone)]
pub struct MachineClient {
    pub client_id: String,
    pub secret: String,
}

type Configure<'a> = Box<dyn FnOnce(&mut Config) + 'a>;

/// How a test's server starts: `TestApp::builder(backend).with_resource(…).with_user(…)
/// .start().await`. The resources, users and clients are added through the same operations
/// an operator uses (`concierge::manage`), before the test runs.
pub struct TestAppBuilder<'a> {
    backend: Backend,
    issuer_path: String,
    localhost: bool,
    listener: Option<tokio::net::TcpListener>,
    configure: Vec<Configure<'a>>,
    grants: Option<GrantRegistry>,
    resources: Vec<(String, String, Vec<String>)>,
    users: Vec<(String, String)>,
    machine_clients: Vec<(String, Option<String>)>,
    admin_client: bool,
}

impl TestApp {
    pub fn builder<'a>(backend: Backend) -> TestAppBuilder<'a> {
        TestAppBuilder {
            backend,
            issuer_path: String::new(),
            localhost: false,
            listener: None,
            configure: Vec::new(),
            grants: None,
            resources: Vec::new(),
            users: Vec::new(),
            machine_clients: Vec::new(),
            admin_client: false,
        }
    }
}

impl<'a> TestAppBuilder<'a> {
    /// Adjust the configuration (after the test defaults: port 0, a fresh database).
    pub fn configure(mut self, f: impl FnOnce(&mut Config) + 'a) -> Self {
        self.configure.push(Box::new(f));
        self
    }

    /// An issuer with a path, e.g. `/tenant-a`.
    pub fn at_path(mut self, path: &str) -> Self {
        self.issuer_path = path.to_string();
        self
    }

    /// An issuer on `http://localhost:PORT` instead of `http://127.0.0.1:PORT`: WebAuthn
    /// allows no IP address as a relying party, so passkeys are offered only so.
    pub fn on_localhost(mut self) -> Self {
        self.localhost = true;
        self
    }

    /// Serve on a listener bound beforehand, so that a test can know several servers'
    /// issuers before configuring them (two servers that trust each other).
    pub fn on(mut self, listener: tokio::net::TcpListener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Serve these grants instead of the standard ones.
    pub fn with_grants(mut self, grants: GrantRegistry) -> Self {
        self.grants = Some(grants);
        self
    }

    /// A resource with scopes given as `name` or `name=Description`.
    pub fn with_resource(mut self, uri: &str, name: &str, scopes: &[&str]) -> Self {
        self.resources.push((
            uri.into(),
            name.into(),
            scopes.iter().map(|s| s.to_string()).collect(),
        ));
        self
    }

    /// A user with this password; its id is in `app.users`.
    pub fn with_user(mut self, username: &str, password: &str) -> Self {
        self.users.push((username.into(), password.into()));
        self
    }

    /// A confidential client for the client credentials grant (HTTP Basic) with the scope an
    /// operator gave it, if any; it is in `app.machine_clients`.
    pub fn with_machine_client(mut self, name: &str, scope: Option<&str>) -> Self {
        self.machine_clients
            .push((name.into(), scope.map(str::to_string)));
        self
    }

    /// An admin client (`concierge admin-client create`); it is in `app.admin_client`.
    pub fn with_admin_client(mut self) -> Self {
        self.admin_client = true;
        self
    }

    /// Start the server. `None` when the backend is not available (PostgreSQL outside CI).
    pub async fn start(self) -> Option<TestApp> {
        let listener = match self.listener {
            Some(l) => l,
            None => tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind"),
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let (database_url, pg_database) = fresh_database(self.backend, dir.path()).await?;
        let port = listener.local_addr().expect("addr").port();
        let host = if self.localhost {
            "localhost"
        } else {
            "127.0.0.1"
        };
        let origin = format!("http://{host}:{port}");
        let mut config = Config {
            issuer: format!("{origin}{}", self.issuer_path),
            data_dir: dir.path().to_path_buf(),
            database_url: Some(database_url),
            ..Config::default()
        };
        for f in self.configure {
            f(&mut config);
        }
        let grants = self.grants.unwrap_or_else(GrantRegistry::standard);
        let app = App::build_with(config.clone(), grants)
            .await
            .expect("build app");
        let state = app.state.clone();
        let store = state.store.clone();
        for (uri, name, scopes) in &self.resources {
            let scopes = scopes.iter().map(|s| ScopeDef::parse(s).unwrap()).collect();
            manage::create_resource(store.as_ref(), uri, name, scopes, &Default::default())
                .await
                .expect("resource");
        }
        let mut users = std::collections::HashMap::new();
        for (username, password) in &self.users {
            let hash = manage::hash_new_password(password).expect("password");
            let profile = manage::Profile {
                email: Some(format!("{username}@example.com")),
                email_verified: false,
                name: Some(format!("{username} Example")),
            };
            let user = manage::create_user(store.as_ref(), username, profile, hash)
                .await
                .expect("user");
            users.insert(username.clone(), user.id);
        }
        let mut machine_clients = Vec::new();
        for (name, scope) in &self.machine_clients {
            let (record, secret) = manage::create_client(
                store.as_ref(),
                &GrantRegistry::standard(),
                manage::NewClient {
                    name: name.clone(),
                    grant_types: vec!["client_credentials".into()],
                    scope: scope.clone(),
                    ..Default::default()
                },
                None,
            )
            .await
            .expect("client");
            machine_clients.push(MachineClient {
                client_id: record.client_id,
                secret: secret.expect("secret"),
            });
        }
        let admin_client = if self.admin_client {
            let (record, secret) =
                manage::create_admin_client(store.as_ref(), &config.issuer, "admin")
                    .await
                    .expect("admin client");
            Some(MachineClient {
                client_id: record.client_id,
                secret,
            })
        } else {
            None
        };
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
            users,
            machine_clients,
            admin_client,
            server: Some(server),
            pg_database,
            _dir: dir,
        })
    }
}

/// Start a server after `configure` adjusts the configuration. `None` when the backend is
/// not available (PostgreSQL outside CI).
pub async fn spawn_app_with(
    backend: Backend,
    configure: impl FnOnce(&mut Config),
) -> Option<TestApp> {
    TestApp::builder(backend).configure(configure).start().await
}

/// Start a server on a listener bound beforehand (see [`TestAppBuilder::on`]).
pub async fn spawn_app_on(
    backend: Backend,
    listener: tokio::net::TcpListener,
    issuer_path: &str,
    configure: impl FnOnce(&mut Config),
) -> Option<TestApp> {
    TestApp::builder(backend)
        .on(listener)
        .at_path(issuer_path)
        .configure(configure)
        .start()
        .await
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

    /// Register a client as an operator would (`client add`, the admin API): its id and, for
    /// a confidential client, its secret.
    pub async fn add_client(&self, raw: RawClientMetadata) -> (String, Option<String>) {
        self.add_client_metadata(None, Self::operator_metadata(raw))
            .await
    }

    /// Client metadata as an operator gives it (checked, before it is stored).
    pub fn operator_metadata(raw: RawClientMetadata) -> ClientMetadata {
        Self::operator_metadata_with(&GrantRegistry::standard(), raw)
    }

    /// [`TestApp::operator_metadata`] for a server with other grants.
    pub fn operator_metadata_with(
        grants: &GrantRegistry,
        raw: RawClientMetadata,
    ) -> ClientMetadata {
        validate(raw, Origin::Operator, grants).unwrap()
    }

    /// [`TestApp::add_client`] with metadata already checked (and perhaps changed after),
    /// under a chosen client_id if given.
    pub async fn add_client_metadata(
        &self,
        client_id: Option<&str>,
        metadata: ClientMetadata,
    ) -> (String, Option<String>) {
        let (rec, secrets) = new_client(
            metadata,
            ClientKind::Static,
            client_id.map(str::to_string),
            None,
            concierge::util::now(),
            0,
        );
        self.store().insert_client(&rec).await.unwrap();
        (rec.client_id, secrets.client_secret)
    }

    /// A confidential client for the client credentials grant authenticating with `method`,
    /// with the scope an operator gave it: (client_id, secret).
    pub async fn add_machine_client(&self, method: &str, scope: Option<&str>) -> (String, String) {
        let (id, secret) = self
            .add_client(RawClientMetadata {
                grant_types: Some(vec!["client_credentials".into()]),
                token_endpoint_auth_method: Some(method.into()),
                scope: scope.map(str::to_string),
                ..Default::default()
            })
            .await;
        (id, secret.unwrap())
    }

    /// A resource with scopes given as `name` or `name=Description` (again is fine).
    pub async fn add_resource(&self, uri: &str, name: &str, scopes: &[&str]) {
        let scopes = scopes.iter().map(|s| ScopeDef::parse(s).unwrap()).collect();
        match manage::create_resource(
            self.store().as_ref(),
            uri,
            name,
            scopes,
            &Default::default(),
        )
        .await
        {
            Ok(_) | Err(manage::ManageError::Conflict(_)) => {}
            Err(e) => panic!("adding the resource: {e}"),
        }
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

/// Run one async test body against both backends. The body gets a started `TestApp` and
/// must return it so the test can clean up.
///
/// - `both!(name, |app| async move { … })`: the default server;
/// - `both!(name, |c: &mut Config| …, body)`: with its configuration adjusted;
/// - `both!(name, builder |b: TestAppBuilder| b.with_resource(…), body)`: built with
///   [`TestAppBuilder`] (resources, users, clients, an issuer path, …).
#[macro_export]
macro_rules! both {
    ($name:ident, $body:expr) => {
        $crate::both!($name, builder std::convert::identity, $body);
    };
    ($name:ident, builder $build:expr, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let b = $crate::helpers::TestApp::builder($crate::helpers::Backend::Sqlite);
                let app = $crate::helpers::build_with(b, $build)
                    .start()
                    .await
                    .expect("sqlite is always available");
                let app = ($body)(app).await;
                app.finish().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let b = $crate::helpers::TestApp::builder($crate::helpers::Backend::Postgres);
                let Some(app) = $crate::helpers::build_with(b, $build).start().await else {
                    return;
                };
                let app = ($body)(app).await;
                app.finish().await;
            }
        }
    };
    ($name:ident, $configure:expr, $body:expr) => {
        $crate::both!($name, builder |b| b.configure($configure), $body);
    };
}

/// `f(b)`, with the closure's types taken from here (for `both!`).
pub fn build_with<'a>(
    b: TestAppBuilder<'a>,
    f: impl FnOnce(TestAppBuilder<'a>) -> TestAppBuilder<'a>,
) -> TestAppBuilder<'a> {
    f(b)
}

/// The resource the token tests ask for, as the benchmark has it.
pub const TOOLS_RESOURCE: &str = "http://127.0.0.1:9999/mcp";

/// Register [`TOOLS_RESOURCE`] with scopes `tools:read` and `tools:write` (again is fine).
pub async fn add_tools_resource(app: &TestApp) {
    app.add_resource(
        TOOLS_RESOURCE,
        "Tools",
        &["tools:read=Read", "tools:write=Write"],
    )
    .await;
}
