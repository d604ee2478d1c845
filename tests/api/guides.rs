//! What the guides in `docs/guides/` (MCP servers in TypeScript and Python behind Concierge)
//! have in common when they run: start a guide's server against a real Concierge, register
//! it, and prove the same things of each (`ts_server.rs`, `fastmcp.rs`): the 401 challenge and
//! the protected resource metadata naming Concierge; tokens refused for another audience,
//! expired or tampered; the 403 `insufficient_scope` step-up; and an official MCP SDK client's
//! whole journey. Also here: the guides quote the files the tests run, verbatim.

use std::path::Path;
use std::time::Duration;

use concierge::keys::Alg;
use concierge::manage;
use concierge::oauth::resource::ScopeDef;
use serde_json::{Value, json};

use crate::flow::{PASSWORD, add_user, claims};
use crate::helpers::TestApp;
use crate::interop::{interop_dir, node, node_ready, run_script};
use crate::mcp_sdk::python;

/// Another resource of the same Concierge: its tokens must not open a guide's server.
pub const FOREIGN: &str = "http://127.0.0.1:9999/other-mcp";
pub const NOTE: &str = "written by the";

/// A guide's server, killed when dropped: its MCP URL and its metadata URL (RFC 9728).
pub struct GuideServer {
    _child: tokio::process::Child,
    pub url: String,
    pub metadata_url: String,
}

/// Start `program script <port> <issuer>` in `tests/interop/` and wait until it answers 401.
pub async fn spawn(app: &TestApp, program: &str, script: &str) -> GuideServer {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = tokio::process::Command::new(program)
        .arg(script)
        .arg(port.to_string())
        .arg(&app.issuer)
        .current_dir(interop_dir())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{program} {script} does not start: {e}"));
    let url = format!("http://127.0.0.1:{port}/mcp");
    for _ in 0..200 {
        if let Ok(r) = app.http.post(&url).send().await {
            assert_eq!(r.status(), 401, "{script} wants a token");
            return GuideServer {
                _child: child,
                metadata_url: format!(
                    "http://127.0.0.1:{port}/.well-known/oauth-protected-resource/mcp"
                ),
                url,
            };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{script} did not listen on {url} within 20 s");
}

/// `concierge resource add --uri <uri> --name … --scope notes:read=… --scope notes:write=…
/// [--token-alg <alg>] --dpop <dpop>`, through the same operation.
pub async fn register_notes(app: &TestApp, uri: &str, alg: Option<&str>, dpop: Option<&str>) {
    let options = manage::ResourceOptions {
        token_alg: alg.map(str::to_string),
        dpop: dpop.map(str::to_string),
        ..Default::default()
    };
    let scopes = [
        "notes:read=Read your notes",
        "notes:write=Change your notes",
    ]
    .iter()
    .map(|s| ScopeDef::parse(s).unwrap())
    .collect();
    manage::create_resource(app.store().as_ref(), uri, "Notes", scopes, &options)
        .await
        .unwrap();
}

/// POST one JSON-RPC message as MCP clients do (Streamable HTTP).
async fn post(
    app: &TestApp,
    url: &str,
    token: Option<&str>,
    session: Option<&str>,
    body: &Value,
) -> reqwest::Response {
    let mut req = app
        .http
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(s) = session {
        req = req.header("mcp-session-id", s);
    }
    req.send().await.unwrap()
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{
    "protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"guides","version":"1"}}}"#;

/// An HTTP answer: status, `WWW-Authenticate`, and the JSON-RPC message in the body (plain
/// JSON or one SSE event).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub challenge: String,
    pub message: Value,
}

async fn answer(res: reqwest::Response) -> Answer {
    let status = res.status().as_u16();
    let challenge = res
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let text = res.text().await.unwrap();
    let json = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap_or(&text);
    let message = serde_json::from_str(json).unwrap_or(Value::Null);
    Answer {
        status,
        challenge,
        message,
    }
}

/// `initialize` with `token`.
pub async fn initialize(app: &TestApp, url: &str, token: Option<&str>) -> Answer {
    let init: Value = serde_json::from_str(INITIALIZE).unwrap();
    answer(post(app, url, token, None, &init).await).await
}

/// `initialize`, then call tool `name` in that session (stateless servers need none).
pub async fn call_tool(app: &TestApp, url: &str, token: &str, name: &str, args: Value) -> Answer {
    let init: Value = serde_json::from_str(INITIALIZE).unwrap();
    let res = post(app, url, Some(token), None, &init).await;
    assert_eq!(res.status(), 200, "initialize");
    let session = res
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_string());
    let _ = res.text().await;
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let r = post(app, url, Some(token), session.as_deref(), &initialized).await;
    assert!(r.status().is_success(), "initialized: {}", r.status());
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": name, "arguments": args}});
    answer(post(app, url, Some(token), session.as_deref(), &call).await).await
}

/// (a) A request without a token: 401 naming the metadata and the scope every request needs;
/// the metadata names this server and Concierge as its authorization server.
pub async fn check_challenge(app: &TestApp, s: &GuideServer, name: &str) {
    let a = initialize(app, &s.url, None).await;
    assert_eq!(a.status, 401, "{a:?}");
    let c = &a.challenge;
    assert!(c.starts_with("Bearer "), "{c}");
    assert!(
        c.contains(&format!("resource_metadata=\"{}\"", s.metadata_url)),
        "{c}"
    );
    assert!(c.contains("scope=\"notes:read\""), "{c}");

    let prm: Value = app
        .http
        .get(&s.metadata_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(prm["resource"], s.url.as_str(), "{prm}");
    assert_eq!(prm["authorization_servers"], json!([app.issuer]), "{prm}");
    assert_eq!(
        prm["scopes_supported"],
        json!(["notes:read", "notes:write"]),
        "{prm}"
    );
    assert_eq!(prm["resource_name"], name, "{prm}");
}

/// (c) and (d) with tokens from an operator's machine client: a good token opens the server
/// and the same claims signed again by Concierge's key too; a token for another resource,
/// an expired one and a tampered one are refused with 401 `invalid_token`; `add_note` with
/// `notes:read` only is 403 `insufficient_scope` naming both scopes, and with `notes:write`
/// it writes.
pub async fn check_tokens(app: &TestApp, s: &GuideServer, alg: Alg) {
    let options = manage::ResourceOptions {
        token_alg: Some(alg.as_str().to_string()),
        dpop: Some("off".into()),
        ..Default::default()
    };
    let scopes = vec![ScopeDef::parse("notes:read").unwrap()];
    manage::create_resource(app.store().as_ref(), FOREIGN, "Other", scopes, &options)
        .await
        .unwrap();
    let (id, secret) = app
        .add_machine_client("client_secret_basic", Some("notes:read notes:write"))
        .await;
    let (id, secret) = (id.as_str(), secret.as_str());
    let token = move |resource: &str, scope: &str| {
        let (resource, scope) = (resource.to_string(), scope.to_string());
        async move { crate::flow::cc_token(app, id, secret, &resource, &scope).await }
    };
    let url = s.url.as_str();
    let good = token(url, "notes:read").await;
    let c = claims(&good);
    assert_eq!(c["aud"], url);
    let sign = |c: &Value| app.state.oauth.keys.sign_jwt(alg, "at+jwt", c).unwrap();

    let ok = initialize(app, url, Some(&good)).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    let resigned = initialize(app, url, Some(&sign(&c))).await;
    assert_eq!(
        resigned.status, 200,
        "the same claims, signed again: {resigned:?}"
    );

    let foreign = token(FOREIGN, "notes:read").await;
    assert_eq!(claims(&foreign)["aud"], FOREIGN);
    let now = concierge::util::now();
    let mut old = c.clone();
    old["iat"] = json!(now - 720);
    old["exp"] = json!(now - 120);
    let (head, rest) = good.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let mut wider = c.clone();
    wider["scope"] = json!("notes:read notes:write");
    let tampered = format!(
        "{head}.{}.{signature}",
        concierge::util::b64(&serde_json::to_vec(&wider).unwrap())
    );
    for (what, t) in [
        ("another resource's", foreign),
        ("an expired", sign(&old)),
        ("a tampered", tampered),
    ] {
        let a = initialize(app, url, Some(&t)).await;
        assert_eq!(a.status, 401, "{what} token: {a:?}");
        assert!(
            a.challenge.contains("error=\"invalid_token\""),
            "{what} token: {}",
            a.challenge
        );
        assert!(
            a.challenge.contains("resource_metadata="),
            "{}",
            a.challenge
        );
    }

    // Step-up: notes:read is not enough for add_note.
    let note = json!({"text": "written by a machine"});
    let a = call_tool(app, url, &good, "add_note", note.clone()).await;
    assert_eq!(a.status, 403, "{a:?}");
    let c = &a.challenge;
    assert!(c.contains("error=\"insufficient_scope\""), "{c}");
    assert!(c.contains("scope=\"notes:read notes:write\""), "{c}");
    assert!(
        c.contains(&format!("resource_metadata=\"{}\"", s.metadata_url)),
        "{c}"
    );
    let both = token(url, "notes:read notes:write").await;
    let a = call_tool(app, url, &both, "add_note", note).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_ne!(a.message["result"]["isError"], true, "{a:?}");
    let wrote = tool_json(&a.message["result"]);
    assert_eq!(wrote["added"], "written by a machine", "{a:?}");
}

/// A tool result's JSON: its structured content, or its text parsed.
pub fn tool_json(result: &Value) -> Value {
    if let Some(s) = result.get("structuredContent") {
        return s.clone();
    }
    serde_json::from_str(result["content"][0]["text"].as_str().unwrap_or("null")).unwrap()
}

/// (b) and (d): what an SDK client's journey (`mcp_ts_sdk_guide.mjs`,
/// `mcp_py_sdk_guide.py`) must show: the bare 401, discovery, registration, a code flow with
/// PKCE and `resource` for the challenged scope, the tools as alice, the 403 step-up to
/// `notes:write` (consented, single sign-on), and the note written.
pub fn check_journey(app: &TestApp, s: &GuideServer, alice: &str, out: &Value) {
    let trail = out["trail"].as_array().expect("trail");
    let at = |method: &str, url: &str, status: u16| {
        trail
            .iter()
            .position(|t| t["method"] == method && t["url"] == url && t["status"] == status)
            .unwrap_or_else(|| panic!("no {method} {url} → {status} in {trail:#?}"))
    };
    let first = &trail[0];
    assert_eq!(first["url"], s.url.as_str(), "{first}");
    assert_eq!(first["status"], 401, "{first}");
    let challenge = first["wwwAuthenticate"].as_str().unwrap();
    assert!(
        challenge.contains(&format!("resource_metadata=\"{}\"", s.metadata_url)),
        "{challenge}"
    );
    let prm = at("GET", &s.metadata_url, 200);
    let asm = at(
        "GET",
        &app.url("/.well-known/oauth-authorization-server"),
        200,
    );
    let register = at("POST", &app.url("/register"), 201);
    let token = at("POST", &app.url("/token"), 200);
    assert!(
        prm < asm && asm < register && register < token,
        "{trail:#?}"
    );

    let auths = out["authorizations"].as_array().expect("authorizations");
    assert_eq!(auths.len(), 2, "a first authorization and a step-up: {out}");
    let first = &auths[0];
    assert_eq!(first["resource"], s.url.as_str(), "{first}");
    assert_eq!(first["codeChallengeMethod"], "S256", "{first}");
    assert_eq!(first["iss"], app.issuer.as_str(), "RFC 9207: {first}");
    assert_eq!(first["signedIn"], true, "{first}");
    let scope = first["scope"].as_str().unwrap();
    assert!(scope.split(' ').any(|s| s == "notes:read"), "{scope}");
    assert!(!scope.contains("notes:write"), "{scope}");

    let tools = &out["tools"];
    assert_eq!(tools, &json!(["add_note", "list_notes", "whoami"]), "{out}");
    let who = &out["whoami"];
    assert_eq!(who["sub"], alice, "{out}");
    assert_eq!(who["client_id"], out["clientId"], "{out}");
    assert_eq!(who["aud"], s.url.as_str(), "{out}");
    // The token's scopes: what was asked (the Python SDK adds offline_access when the
    // metadata lists it, and Concierge keeps it in the access token's `scope`).
    let scopes: Vec<&str> = who["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(scopes.contains(&"notes:read"), "{out}");
    assert!(!scopes.contains(&"notes:write"), "{out}");
    assert_eq!(out["listBefore"]["notes"], json!([]), "{out}");

    let forbidden = trail
        .iter()
        .find(|t| t["status"] == 403)
        .unwrap_or_else(|| panic!("no 403 in {trail:#?}"));
    // The challenge names the token's scopes plus the missing one.
    let c = forbidden["wwwAuthenticate"].as_str().unwrap();
    assert!(c.contains("error=\"insufficient_scope\""), "{c}");
    let wanted = format!("scope=\"{} notes:write\"", scopes.join(" "));
    assert!(c.contains(&wanted), "{c} should say {wanted}");
    let step_up = &auths[1];
    let scope = step_up["scope"].as_str().unwrap();
    assert!(scope.split(' ').any(|s| s == "notes:write"), "{step_up}");
    assert_eq!(step_up["resource"], s.url.as_str(), "{step_up}");
    assert_eq!(step_up["signedIn"], false, "single sign-on: {step_up}");
    let consented = step_up["consent"]["scopes"].as_array().unwrap();
    assert!(consented.iter().any(|s| s == "notes:write"), "{step_up}");
    let written = out["listAfter"]["notes"].as_array().unwrap();
    assert_eq!(written.len(), 1, "{out}");
    assert!(written[0].as_str().unwrap().starts_with(NOTE), "{out}");
}

/// The official TypeScript SDK client's journey (`mcp_ts_sdk_guide.mjs`) as a new user
/// `username`, checked. Skipped (loudly; failed under `CI=true`) without Node.
pub async fn typescript_sdk_journey(app: &TestApp, s: &GuideServer, username: &str) {
    if !node_ready() {
        return;
    }
    let user = add_user(app, username).await;
    let out = node("mcp_ts_sdk_guide.mjs", &[&s.url, username, PASSWORD], &[]).await;
    check_journey(app, s, &user, &out);
    // The SDK's own step-up refreshes while it holds a refresh token; a refresh cannot widen
    // the grant, so the SDK (1.32.2) gives up and the client re-authorizes with auth() and
    // the challenged scope. When an SDK update steps up by itself, this says "sdk".
    assert_eq!(out["stepUp"], "auth()", "{out}");
    assert_eq!(out["challenge"]["scope"], "notes:read notes:write", "{out}");
    granted_both(&out);
}

/// The official MCP Python SDK client's journey (`mcp_py_sdk_guide.py`) as a new user
/// `username`, checked. Skipped (loudly; failed under `CI=true`) without Python.
pub async fn python_sdk_journey(app: &TestApp, s: &GuideServer, username: &str) {
    let Some(python) = python() else {
        return;
    };
    let user = add_user(app, username).await;
    let out = run_script(
        python.to_str().unwrap(),
        "mcp_py_sdk_guide.py",
        &[&s.url, username, PASSWORD],
        &[],
    )
    .await;
    check_journey(app, s, &user, &out);
    // The provider's own step-up asked for what was granted plus what was challenged.
    granted_both(&out);
}

fn granted_both(out: &Value) {
    let granted = out["grantedScope"].as_str().unwrap();
    for s in ["notes:read", "notes:write"] {
        assert!(granted.split(' ').any(|g| g == s), "{granted}");
    }
}

/// The guides quote the servers the tests run: every fenced block whose info string names a
/// file (```js tests/interop/ts_mcp_server.mjs) is, piece by piece between `…` elision
/// lines, text of that file; and every repository path a guide mentions exists.
#[test]
fn guides_quote_the_files_the_tests_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut quoted = 0;
    for guide in ["typescript-mcp-server.md", "python-mcp-server.md"] {
        let path = root.join("docs/guides").join(guide);
        let text = std::fs::read_to_string(&path).unwrap();
        for word in text.split(['`', ' ', '(', ')', '\n']) {
            let word = word.trim_end_matches([',', '.', ':', ';']);
            if word.starts_with("tests/") || word.starts_with("docs/") {
                assert!(
                    root.join(word).exists(),
                    "{guide} names {word}: no such file"
                );
            }
        }
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            let Some(info) = line.strip_prefix("```") else {
                continue;
            };
            let block: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
            let Some((_, file)) = info.split_once(' ') else {
                continue;
            };
            let source = std::fs::read_to_string(root.join(file))
                .unwrap_or_else(|e| panic!("{guide} quotes {file}: {e}"));
            for piece in block
                .split(|l| matches!(l.trim(), "// …" | "# …"))
                .filter(|p| !p.is_empty())
            {
                let piece = piece.join("\n");
                assert!(
                    source.contains(&piece),
                    "{guide} quotes {file}, which does not contain:\n{piece}"
                );
                quoted += 1;
            }
        }
    }
    assert!(
        quoted >= 10,
        "the guides quote their servers ({quoted} pieces)"
    );
}
