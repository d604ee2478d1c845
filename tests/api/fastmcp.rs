//! A resource server we did not write: a FastMCP server (PyPI `fastmcp`, pinned in
//! `tests/interop/requirements.txt`) behind FastMCP's own `JWTVerifier` with its defaults
//! (RS256 Bearer tokens) and Concierge's JWKS, issuer and the server's URL as the audience
//! (`tests/interop/fastmcp_server.py`). Its resource in Concierge signs with RS256 and has
//! DPoP off, and two MCP clients we did not write call it: the Python SDK with a Bearer token
//! Concierge issued, and the TypeScript SDK v2 whose token request carries a DPoP proof and
//! gets a Bearer token (RFC 9449 §5). An ES256 token for the same URL is refused: the setting
//! is what makes it work.
//!
//! Needs Python 3.10+ with `venv` and Node with npm; skipped loudly without them, failed under
//! `CI=true`.

use std::path::Path;
use std::time::Duration;

use concierge::manage;
use concierge::oauth::resource::ScopeDef;
use serde_json::Value;

use crate::both;
use crate::helpers::TestApp;
use crate::interop::{interop_dir, node, node_ready, run_script};
use crate::mcp_sdk::python;

const SCOPE: &str = "tools:read";

/// The FastMCP server, killed when dropped, and its MCP URL.
struct FastMcp {
    _child: tokio::process::Child,
    url: String,
}

/// Start `fastmcp_server.py` on a free port, trusting `app`, and wait until it answers.
async fn spawn_fastmcp(app: &TestApp, python: &Path) -> FastMcp {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = tokio::process::Command::new(python)
        .arg("fastmcp_server.py")
        .arg(port.to_string())
        .arg(&app.issuer)
        .current_dir(interop_dir())
        .kill_on_drop(true)
        .spawn()
        .expect("the FastMCP server starts");
    let url = format!("http://127.0.0.1:{port}/mcp");
    for _ in 0..200 {
        if let Ok(r) = app.http.post(&url).send().await {
            assert_eq!(r.status(), 401, "FastMCP wants a token");
            return FastMcp { _child: child, url };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the FastMCP server did not listen on {url} within 20 s");
}

/// Register `uri` with `tools:read`, its tokens signed with `alg` and DPoP as `dpop`.
async fn register(app: &TestApp, uri: &str, alg: Option<&str>, dpop: Option<&str>) {
    let options = manage::ResourceOptions {
        token_alg: alg.map(str::to_string),
        dpop: dpop.map(str::to_string),
        ..Default::default()
    };
    let scopes = vec![ScopeDef::parse(SCOPE).unwrap()];
    manage::create_resource(app.store().as_ref(), uri, "FastMCP", scopes, &options)
        .await
        .unwrap();
}

fn header(jwt: &str) -> Value {
    use base64::Engine;
    let h = jwt.split('.').next().unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(h)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

// The Python SDK with an operator machine client's token: FastMCP verifies it and the tool
// sees the client. The negative control first: the same URL registered with the defaults
// (ES256) gives a token FastMCP refuses though issuer and audience are right; then the URL is
// registered again with RS256 and DPoP off (with the resource cache off, so the change applies
// at once rather than within `resources.cache_secs`).
both!(
    python_sdk_calls_fastmcp,
    |c: &mut concierge::Config| c.resources.cache_secs = 0,
    |app: TestApp| async move {
        let Some(python) = python() else {
            return app;
        };
        let fm = spawn_fastmcp(&app, &python).await;
        register(&app, &fm.url, None, None).await;
        let (id, secret) = app
            .add_machine_client("client_secret_basic", Some(SCOPE))
            .await;
        let es256 = crate::flow::cc_token(&app, &id, &secret, &fm.url, SCOPE).await;
        assert_eq!(header(&es256)["alg"], "ES256");
        manage::delete_resource(app.store().as_ref(), &fm.url)
            .await
            .unwrap();
        register(&app, &fm.url, Some("RS256"), Some("off")).await;
        let rs256 = crate::flow::cc_token(&app, &id, &secret, &fm.url, SCOPE).await;
        assert_eq!(header(&rs256)["alg"], "RS256");

        let out = run_script(
            python.to_str().unwrap(),
            "fastmcp_py_client.py",
            &[&fm.url, &rs256, &es256],
            &[],
        )
        .await;
        assert_eq!(out["tools"], serde_json::json!(["whoami"]), "{out}");
        assert_eq!(out["isError"], false, "{out}");
        let who = &out["whoami"];
        assert_eq!(who["client_id"], id.as_str(), "{out}");
        assert_eq!(who["sub"], id.as_str(), "{out}");
        assert_eq!(who["aud"], fm.url.as_str(), "{out}");
        assert_eq!(who["scopes"], serde_json::json!([SCOPE]), "{out}");
        // The negative control: FastMCP's verifier refuses the ES256 token.
        assert_eq!(out["es256"]["status"], 401, "{out}");
        let challenge = out["es256"]["wwwAuthenticate"].as_str().unwrap();
        assert!(challenge.contains("invalid_token"), "{challenge}");
        app
    }
);

// The TypeScript SDK v2's client-credentials flow with DPoP on: discovery from FastMCP's 401
// (RFC 9728) to Concierge, a token request with a DPoP proof, `token_type: Bearer` back for
// this resource, the token presented as Bearer, and FastMCP takes it.
both!(
    typescript_sdk_v2_dpop_gets_bearer_for_fastmcp,
    |app: TestApp| async move {
        if !node_ready() {
            return app;
        }
        let Some(python) = python() else {
            return app;
        };
        let fm = spawn_fastmcp(&app, &python).await;
        register(&app, &fm.url, Some("RS256"), Some("off")).await;
        let (id, secret) = app
            .add_machine_client("client_secret_basic", Some(SCOPE))
            .await;
        let out = node(
            "fastmcp_ts_sdk_v2_dpop.mjs",
            &[&fm.url, &app.issuer, &id],
            &[("CLIENT_SECRET", &secret)],
        )
        .await;

        let requests = out["tokenRequests"].as_array().unwrap();
        assert_eq!(requests.len(), 1, "{out}");
        let r = &requests[0];
        assert_eq!(r["status"], 200, "{r}");
        assert_eq!(r["grantType"], "client_credentials");
        assert_eq!(r["resource"], fm.url.as_str(), "{r}");
        assert_eq!(r["dpopProof"], "dpop+jwt", "the SDK sent a DPoP proof: {r}");
        assert_eq!(r["tokenType"], "Bearer", "RFC 9449 §5: {r}");
        assert_eq!(out["savedTokenType"], "Bearer");
        let t = &out["token"];
        assert_eq!(t["alg"], "RS256", "{t}");
        assert!(t.get("cnf").is_none(), "not bound: {t}");
        assert_eq!(t["aud"], fm.url.as_str());
        // Every MCP request after the token presented it as Bearer, without a proof.
        let mcp = out["mcpRequests"].as_array().unwrap();
        let authorized: Vec<_> = mcp.iter().filter(|m| !m["scheme"].is_null()).collect();
        assert!(!authorized.is_empty(), "{out}");
        for m in authorized {
            assert_eq!(m["scheme"], "Bearer", "{m}");
            assert_eq!(m["dpopProof"], false, "{m}");
            assert!(
                m["status"].as_u64().unwrap() < 300,
                "FastMCP accepted it: {m}"
            );
        }
        assert_eq!(out["tools"], serde_json::json!(["whoami"]), "{out}");
        assert_eq!(out["isError"], false, "{out}");
        assert_eq!(out["whoami"]["client_id"], id.as_str(), "{out}");
        app
    }
);
