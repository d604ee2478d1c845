//! concierge-guard with an authorization server we did not write: node-oidc-provider (npm
//! `oidc-provider`, OpenID certified) issuing JWT access tokens for a resource (RFC 8707,
//! RFC 9068), plain and DPoP-bound (RFC 9449), checked by the guard in front of an axum app.
//!
//! Needs Node with npm; the package is installed from `tests/interop/oidc-provider` on first
//! run. Without them the test is skipped loudly, except under `CI=true`, where it fails.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use axum::Router;
use axum::routing::post;
use concierge_guard::test::TestKey;
use concierge_guard::{Guard, Principal, dpop};
use jsonwebtoken::{Algorithm, Header};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;

const SECRET: &str = "agent-secret-0123456789abcdef0123456789abcdef";

fn peer_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/oidc-provider")
}

/// Installs the peer's packages once (`npm ci`); an error says why it cannot run.
fn npm_ready() -> Result<(), String> {
    static READY: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    READY
        .get_or_init(|| {
            if peer_dir().join("node_modules/oidc-provider").exists() {
                return Ok(());
            }
            let out = std::process::Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(peer_dir())
                .output()
                .map_err(|e| format!("npm could not run: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "npm ci failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        })
        .clone()
}

/// node-oidc-provider running one of the scripts in `tests/interop/oidc-provider` on a free
/// port; stopped when dropped.
pub(crate) struct Peer {
    pub(crate) issuer: String,
    _child: tokio::process::Child,
}

impl Peer {
    /// `node <script> <port> <arg>`, once it says it listens. `None` (said loudly) when Node
    /// or the package cannot run outside CI.
    pub(crate) async fn run(script: &str, arg: &str) -> Option<Self> {
        if let Err(why) = npm_ready() {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true but the oidc-provider interop test cannot run: {why}");
            }
            eprintln!("\n!!!! SKIPPING the oidc-provider interop test: {why}\n");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = tokio::process::Command::new("node")
            .args([script, &port.to_string(), arg])
            .current_dir(peer_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs");
        let stdout = child.stdout.take().unwrap();
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let first = tokio::time::timeout(std::time::Duration::from_secs(60), lines.next_line())
            .await
            .expect("oidc-provider starts within a minute")
            .unwrap()
            .expect("a line");
        let started: Value = serde_json::from_str(&first).unwrap();
        // Keep reading: a closed pipe would end the provider at its next line of output.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Some(Self {
            issuer: started["issuer"].as_str().unwrap().to_owned(),
            _child: child,
        })
    }

    /// Issuing tokens for `resource`.
    async fn start(resource: &str) -> Option<Self> {
        Self::run("peer.mjs", resource).await
    }
}

/// A DPoP proof for `htm htu` (and `ath` of `token`, if any) made with `key`.
fn proof(key: &TestKey, htm: &str, htu: &str, token: Option<&str>, jti: &str) -> String {
    let mut claims = json!({"jti": jti, "htm": htm, "htu": htu,
        "iat": now_secs()});
    if let Some(t) = token {
        claims["ath"] = json!(dpop::access_token_hash(t));
    }
    let mut header = Header::new(Algorithm::ES256);
    header.typ = Some("dpop+jwt".into());
    header.jwk = Some(serde_json::from_value(key.jwk().clone()).unwrap());
    jsonwebtoken::encode(&header, &claims, key.encoding_key()).unwrap()
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_oidc_provider_tokens_plain_and_dpop_bound_pass_the_guard() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let resource = format!("http://{}/mcp", listener.local_addr().unwrap());
    let Some(peer) = Peer::start(&resource).await else {
        return;
    };
    // Discovery (RFC 8414 or OpenID Connect), its JWKS, RFC 9068 claims: no mapping needed.
    let guard = Guard::builder(peer.issuer.as_str(), resource.as_str())
        .required_scopes(["notes:read"])
        .build()
        .await
        .unwrap();
    assert_eq!(guard.issuer(), peer.issuer);
    let app = Router::new()
        .route(
            "/mcp",
            post(|p: Principal| async move {
                axum::Json(
                    json!({"sub": p.sub(), "client_id": p.client_id(), "scopes": p.scopes(),
                    "is_client": p.is_client(), "jkt": p.dpop_jkt()}),
                )
            }),
        )
        .layer(guard.layer());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();
    let token_request = |proof: Option<String>| {
        let (http, url, resource) = (
            http.clone(),
            format!("{}/token", peer.issuer),
            resource.clone(),
        );
        async move {
            let mut req = http.post(url).form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "agent"),
                ("client_secret", SECRET),
                ("scope", "notes:read"),
                ("resource", resource.as_str()),
            ]);
            if let Some(p) = proof {
                req = req.header("dpop", p);
            }
            let res = req.send().await.unwrap();
            assert_eq!(res.status(), 200);
            res.json::<Value>().await.unwrap()
        }
    };

    // A plain JWT access token.
    let plain = token_request(None).await;
    assert_eq!(plain["token_type"], "Bearer");
    let at = plain["access_token"].as_str().unwrap();
    let res = http.post(&resource).bearer_auth(at).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let seen: Value = res.json().await.unwrap();
    assert_eq!(seen["client_id"], "agent");
    assert_eq!(seen["scopes"], json!(["notes:read"]));
    assert_eq!(
        seen["is_client"], true,
        "client credentials: sub is the client"
    );

    // A DPoP-bound one: the guard needs a proof of the same key for its own URL.
    let key = TestKey::generate("agent-dpop");
    let bound = token_request(Some(proof(
        &key,
        "POST",
        &format!("{}/token", peer.issuer),
        None,
        "t1",
    )))
    .await;
    assert_eq!(bound["token_type"], "DPoP", "{bound}");
    let at = bound["access_token"].as_str().unwrap();
    let call = |proofs: Vec<String>, scheme: &str| {
        let mut req = http
            .post(&resource)
            .header("authorization", format!("{scheme} {at}"));
        for p in proofs {
            req = req.header("dpop", p);
        }
        req.send()
    };
    let good = proof(&key, "POST", &resource, Some(at), "r1");
    let res = call(vec![good.clone()], "DPoP").await.unwrap();
    assert_eq!(res.status(), 200);
    let seen: Value = res.json().await.unwrap();
    assert_eq!(
        seen["jkt"],
        dpop::thumbprint(key.jwk()).unwrap(),
        "bound to the proof's key"
    );
    // The same proof again, the token as a bearer token, a proof by another key: refused.
    assert_eq!(call(vec![good], "DPoP").await.unwrap().status(), 401);
    assert_eq!(call(vec![], "Bearer").await.unwrap().status(), 401);
    let other = TestKey::generate("other");
    let res = call(
        vec![proof(&other, "POST", &resource, Some(at), "r2")],
        "DPoP",
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 401);
}
