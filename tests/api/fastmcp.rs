//! A resource server we did not write: a FastMCP server (PyPI `fastmcp`, pinned in
//! `tests/interop/requirements.txt`) behind FastMCP's own `JWTVerifier` with its defaults
//! (RS256 Bearer tokens), Concierge's JWKS, issuer and the server's URL as the audience, and
//! `notes:read` required (`tests/interop/fastmcp_server.py`, the server of
//! `docs/guides/python-mcp-server.md`). Its resource in Concierge signs with RS256 and has
//! DPoP off. The guide, run: the 401 and its metadata; tokens for another resource, expired
//! or tampered, refused; the 403 `insufficient_scope` step-up; and the MCP Python and
//! TypeScript SDK clients' whole journeys (discovery, registration, code flow, tools,
//! step-up), the user's part over plain HTTP. Also: the Python SDK with a Bearer token
//! Concierge issued to a machine client, and the TypeScript SDK v2 whose token request carries
//! a DPoP proof and gets a Bearer token (RFC 9449 §5). An ES256 token for the same URL is
//! refused: the setting is what makes it work.
//!
//! Needs Python 3.10+ with `venv` (and Node with npm for the TypeScript SDK); skipped loudly
//! without them, failed under `CI=true`.

use concierge::keys::Alg;
use concierge::manage;
use serde_json::Value;

use crate::both;
use crate::guides::{
    GuideServer, check_challenge, check_tokens, python_sdk_journey, register_notes,
    typescript_sdk_journey,
};
use crate::helpers::TestApp;
use crate::interop::{node, node_ready, run_script};
use crate::mcp_sdk::python;

const SCOPE: &str = "notes:read";

/// Start `fastmcp_server.py` on a free port, trusting `app`, and wait until it answers.
async fn spawn_fastmcp(app: &TestApp, python: &std::path::Path) -> GuideServer {
    crate::guides::spawn(app, python.to_str().unwrap(), "fastmcp_server.py").await
}

fn header(jwt: &str) -> Value {
    use base64::Engine;
    let h = jwt.split('.').next().unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(h)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

// The guide, on the Python side: registered as it says (RS256, DPoP off), FastMCP answers the
// bare request and refuses the wrong tokens; the Python SDK's provider signs alice in, steps
// up to notes:write by itself on the 403 and writes the note; the TypeScript SDK's client
// does the same for bob, its application re-authorizing for the step-up.
both!(python_server_follows_the_guide, |app: TestApp| async move {
    let Some(python) = python() else {
        return app;
    };
    let server = spawn_fastmcp(&app, &python).await;
    register_notes(&app, &server.url, Some("RS256"), Some("off")).await;

    check_challenge(&app, &server, "Notes (Python)").await;
    check_tokens(&app, &server, Alg::RS256).await;
    python_sdk_journey(&app, &server, "alice").await;
    // Any client that follows the MCP authorization specification: the TypeScript SDK's too.
    typescript_sdk_journey(&app, &server, "bob").await;
    app
});

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
        register_notes(&app, &fm.url, None, None).await;
        let (id, secret) = app
            .add_machine_client("client_secret_basic", Some(SCOPE))
            .await;
        let es256 = crate::flow::cc_token(&app, &id, &secret, &fm.url, SCOPE).await;
        assert_eq!(header(&es256)["alg"], "ES256");
        manage::delete_resource(app.store().as_ref(), &fm.url)
            .await
            .unwrap();
        register_notes(&app, &fm.url, Some("RS256"), Some("off")).await;
        let rs256 = crate::flow::cc_token(&app, &id, &secret, &fm.url, SCOPE).await;
        assert_eq!(header(&rs256)["alg"], "RS256");

        let out = run_script(
            python.to_str().unwrap(),
            "fastmcp_py_client.py",
            &[&fm.url, &rs256, &es256],
            &[],
        )
        .await;
        assert_eq!(
            out["tools"],
            serde_json::json!(["add_note", "list_notes", "whoami"]),
            "{out}"
        );
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
        register_notes(&app, &fm.url, Some("RS256"), Some("off")).await;
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
        assert_eq!(
            out["tools"],
            serde_json::json!(["add_note", "list_notes", "whoami"]),
            "{out}"
        );
        assert_eq!(out["isError"], false, "{out}");
        assert_eq!(out["whoami"]["client_id"], id.as_str(), "{out}");
        app
    }
);
