//! Shared by the integration tests: a small local issuer (metadata + JWKS,
//! counting fetches) with our own keys, a protected axum app, and a client.

#![allow(dead_code, clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use axum::Router;
use axum::body::Bytes;
use axum::routing::{get, post};
use concierge::config::Config;
use concierge::oauth::resource::{Resource, ScopeDef};
use concierge::startup::App;
use concierge_guard::{Guard, GuardBuilder, Principal};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// An ES256 key pair with its public JWK.
pub struct Key {
    pub kid: String,
    pub encoding: EncodingKey,
    pub jwk: Value,
}

impl Key {
    pub fn generate(kid: &str) -> Self {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let der = pair.to_pkcs8v1().unwrap();
        let encoding = EncodingKey::from_ec_der(der.as_ref());
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        Self {
            kid: kid.to_owned(),
            encoding,
            jwk: serde_json::to_value(jwk).unwrap(),
        }
    }

    /// Sign `claims` with `typ: at+jwt`.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with(claims, Some("at+jwt"), Some(&self.kid))
    }

    pub fn sign_with(&self, claims: &Value, typ: Option<&str>, kid: Option<&str>) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = typ.map(str::to_owned);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

/// A local authorization server stand-in: RFC 8414 metadata and a JWKS.
pub struct FakeIssuer {
    pub issuer: String,
    pub keys: Arc<Mutex<Vec<Value>>>,
    pub jwks_fetches: Arc<AtomicUsize>,
}

impl FakeIssuer {
    pub async fn start(keys: &[&Key]) -> Self {
        Self::start_with(keys, |_| {}).await
    }

    /// `edit` may change the metadata document before it is served.
    pub async fn start_with(keys: &[&Key], edit: impl FnOnce(&mut Value)) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let mut metadata = json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")});
        edit(&mut metadata);
        let keys: Arc<Mutex<Vec<Value>>> =
            Arc::new(Mutex::new(keys.iter().map(|k| k.jwk.clone()).collect()));
        let jwks_fetches = Arc::new(AtomicUsize::new(0));
        let (k, n) = (keys.clone(), jwks_fetches.clone());
        let app = Router::new()
            .route(
                "/.well-known/oauth-authorization-server",
                get(move || async move { axum::Json(metadata) }),
            )
            .route(
                "/jwks",
                get(move || async move {
                    n.fetch_add(1, Ordering::SeqCst);
                    let keys = k.lock().unwrap().clone();
                    axum::Json(json!({ "keys": keys }))
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            issuer,
            keys,
            jwks_fetches,
        }
    }

    pub fn fetches(&self) -> usize {
        self.jwks_fetches.load(Ordering::SeqCst)
    }

    pub fn add_key(&self, key: &Key) {
        self.keys.lock().unwrap().push(key.jwk.clone());
    }
}

/// The protected app: `POST /mcp` and `POST /admin` echo the principal and
/// the body, `GET /whoami` takes `Option<Principal>` and `GET /me` a `Principal`, both
/// behind an optional layer.
pub struct Protected {
    pub origin: String,
    pub resource: String,
    pub guard: Guard,
    pub http: reqwest::Client,
}

async fn echo(principal: Principal, body: Bytes) -> axum::Json<Value> {
    axum::Json(json!({
        "sub": principal.sub(),
        "client_id": principal.client_id(),
        "scopes": principal.scopes(),
        "act": principal.act().iter().map(|a| a.sub.clone()).collect::<Vec<_>>(),
        "exp": principal.expires_at(),
        "jti": principal.claims()["jti"],
        "body": String::from_utf8_lossy(&body),
    }))
}

async fn whoami(principal: Option<Principal>) -> String {
    principal.map_or_else(|| "anonymous".to_owned(), |p| p.sub().to_owned())
}

impl Protected {
    /// Bind, then build the guard for `http://127.0.0.1:PORT/mcp` with
    /// `configure`, then serve.
    pub async fn start(issuer: &str, configure: impl FnOnce(GuardBuilder) -> GuardBuilder) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let resource = format!("{origin}/mcp");
        let guard = configure(Guard::builder(issuer, resource.as_str()))
            .build()
            .await
            .unwrap();
        let app = Router::new()
            .route("/mcp", post(echo))
            .route("/admin", post(echo))
            .layer(guard.layer())
            .merge(
                Router::new()
                    .route("/whoami", get(whoami))
                    .route("/me", get(|p: Principal| async move { p.sub().to_owned() }))
                    .layer(guard.layer().optional()),
            )
            .merge(guard.metadata_router());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            origin,
            resource,
            guard,
            http: reqwest::Client::new(),
        }
    }

    /// POST `path` with an optional bearer token and body; returns status,
    /// `WWW-Authenticate`, and the JSON body (or Null).
    pub async fn post(&self, path: &str, token: Option<&str>, body: &str) -> Reply {
        let mut req = self
            .http
            .post(format!("{}{path}", self.origin))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        Reply::from(req.send().await.unwrap()).await
    }

    /// GET `path` with an optional bearer token.
    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        let mut req = self.http.get(format!("{}{path}", self.origin));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        Reply::from(req.send().await.unwrap()).await
    }

    pub async fn call(&self, token: Option<&str>) -> Reply {
        self.post(
            "/mcp",
            token,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
        )
        .await
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub challenge: String,
    pub expose: String,
    pub body: Value,
}

impl Reply {
    pub async fn from(res: reqwest::Response) -> Self {
        let status = res.status().as_u16();
        let header = |name: &str| {
            res.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        let challenge = header("www-authenticate");
        let expose = header("access-control-expose-headers");
        let text = res.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Self {
            status,
            challenge,
            expose,
            body,
        }
    }

    /// Assert the `WWW-Authenticate` value contains `text`.
    pub fn assert_challenge_contains(&self, text: &str) {
        assert!(self.challenge.contains(text), "{text:?} not in {self:?}");
    }

    /// Assert a refusal: status, and `error` in the challenge (None: no error).
    pub fn assert_refused(&self, status: u16, error: Option<&str>) {
        assert_eq!(self.status, status, "{self:?}");
        assert!(self.challenge.starts_with("Bearer"), "{self:?}");
        assert!(self.challenge.contains("resource_metadata=\""), "{self:?}");
        assert_eq!(self.expose, "WWW-Authenticate");
        match error {
            Some(e) => assert!(
                self.challenge.contains(&format!("error=\"{e}\"")),
                "{self:?}"
            ),
            None => assert!(!self.challenge.contains("error="), "{self:?}"),
        }
    }
}

/// A real Concierge on SQLite in a temporary directory, on port 0.
pub struct Server {
    pub issuer: String,
    pub app: concierge::state::AppState,
    pub running: concierge::startup::RunningServer,
    _dir: tempfile::TempDir,
}

pub async fn start_concierge() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let config = Config {
        issuer: issuer.clone(),
        data_dir: dir.path().to_path_buf(),
        database_url: Some(format!("sqlite://{}", dir.path().join("test.db").display())),
        ..Config::default()
    };
    let app = App::build(config).await.unwrap();
    let state = app.state.clone();
    let running = app.spawn(listener).await;
    Server {
        issuer,
        app: state,
        running,
        _dir: dir,
    }
}

impl Server {
    /// Register `uri` with the scopes `notes:read` and `notes:write`.
    pub async fn add_resource(&self, uri: &str) {
        let scopes = ["notes:read=Read notes", "notes:write=Write notes"]
            .iter()
            .map(|s| ScopeDef::parse(s).unwrap())
            .collect();
        let resource = Resource::new(uri, "Notes", scopes, 0).unwrap();
        self.app
            .store
            .insert_resource(&resource.to_record())
            .await
            .unwrap();
    }
}
