//! Shared by the integration tests: the crate's own test issuer (served on a
//! loopback port, or offline), a protected axum app, and a client.

#![allow(dead_code, clippy::unwrap_used)]

use axum::Router;
use axum::body::Bytes;
use axum::routing::{get, post};
use concierge_guard::test::{TestIssuer, TestKey};
use concierge_guard::{Guard, GuardBuilder, Principal};
use serde_json::{Value, json};

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims of a token for `resource` from `issuer` with `scope`.
pub fn claims(issuer: &str, resource: &str, scope: &str) -> Value {
    json!({
        "iss": issuer,
        "aud": resource,
        "sub": "user-1",
        "client_id": "client-1",
        "scope": scope,
        "iat": now(),
        "exp": now() + 600,
        "jti": "j1",
    })
}

/// Signs `claims` with `key` as an RFC 9068 access token.
pub fn sign(key: &TestKey, claims: &Value) -> String {
    key.sign_with(claims, Some("at+jwt"), Some(key.kid()))
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
        "is_client": principal.is_client(),
        "body": String::from_utf8_lossy(&body),
    }))
}

async fn whoami(principal: Option<Principal>) -> String {
    principal.map_or_else(|| "anonymous".to_owned(), |p| p.sub().to_owned())
}

impl Protected {
    /// Bind, then build the guard for `http://127.0.0.1:PORT/mcp` trusting
    /// `issuer` with `configure`, then serve.
    pub async fn start(
        issuer: impl Into<concierge_guard::Issuer>,
        configure: impl FnOnce(GuardBuilder) -> GuardBuilder,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let resource = format!("{origin}/mcp");
        let guard = configure(Guard::builder(issuer, resource.as_str()))
            .build()
            .await
            .unwrap();
        Self::serve(listener, origin, resource, guard)
    }

    /// Serve `guard` (already built for `resource`) on `listener`.
    pub fn serve(
        listener: tokio::net::TcpListener,
        origin: String,
        resource: String,
        guard: Guard,
    ) -> Self {
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

    /// The metadata document.
    pub async fn metadata(&self) -> Value {
        self.http
            .get(self.guard.metadata_url().as_str())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub challenge: String,
    pub challenges: Vec<String>,
    pub expose: String,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub async fn from(res: reqwest::Response) -> Self {
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let header = |name: &str| {
            headers
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        let challenge = header("www-authenticate");
        let expose = header("access-control-expose-headers");
        let challenges = headers
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        let text = res.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Self {
            status,
            challenge,
            challenges,
            expose,
            headers,
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
        assert!(self.expose.contains("WWW-Authenticate"), "{self:?}");
        match error {
            Some(e) => assert!(
                self.challenge.contains(&format!("error=\"{e}\"")),
                "{self:?}"
            ),
            None => assert!(!self.challenge.contains("error="), "{self:?}"),
        }
    }
}

/// A served test issuer and a protected app trusting it.
pub async fn served(
    configure: impl FnOnce(GuardBuilder) -> GuardBuilder,
) -> (TestIssuer, Protected) {
    let issuer = TestIssuer::serve().await.unwrap();
    let app = Protected::start(issuer.issuer(), configure).await;
    (issuer, app)
}
