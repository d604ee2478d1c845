//! The official MCP SDK clients, TypeScript (`@modelcontextprotocol/sdk`) and Python (`mcp`),
//! each doing an agent's whole journey against the `notes` MCP server (rmcp behind
//! concierge-guard) with Concierge as its authorization server: a bare 401, discovery
//! (RFC 9728, then RFC 8414), dynamic registration (RFC 7591), sign-in and consent in headless
//! Chromium, the code back on a loopback redirect URI, `list_notes`, the 403
//! `insufficient_scope` step-up for `add_note`, and a token for another resource refused.
//! Then the TypeScript SDK's machine-to-machine providers: client credentials (v1's
//! `ClientCredentialsProvider` and `PrivateKeyJwtProvider`) and enterprise-managed
//! authorization (v2's `CrossAppAccessProvider`, against two Concierge servers).
//!
//! Needs Node with npm, Debian's `chromium` (not for the machine providers) and `python3`
//! (3.10 or newer, with `venv`); the Python SDK is installed from
//! `tests/interop/requirements.txt` into `target/mcp-python-venv`.
//! Without them the tests are skipped loudly, except under `CI=true`, where they fail.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{Value, json};

use crate::both;
use crate::flow::*;
use crate::helpers::{Backend, TestApp};
use crate::id_jag::{AS_CLIENT, IDP_CLIENT, JWT_BEARER, Pair, TE, both_pair};
use crate::interop::{interop_dir, node, node_ready, ready, run_script, skip_or_fail};
use crate::mcp::{spawn_notes, spawn_notes_with, user_token};
use crate::rmcp_client::es256_key;

const NOTE: &str = "written by the";

/// What a journey needs: the notes server on a free port, registered as a resource; alice; and
/// an access token alice granted for another resource.
struct Journey {
    mcp_url: String,
    alice: String,
    foreign_token: String,
    profile: tempfile::TempDir,
}

impl Journey {
    async fn start(app: &TestApp) -> Journey {
        let alice = seed(app).await;
        let mcp_url = spawn_notes(app).await;
        let foreign_token = user_token(app, CALENDAR, "calendar:read").await;
        assert_eq!(claims(&foreign_token)["aud"], CALENDAR);
        Journey {
            mcp_url,
            alice,
            foreign_token,
            profile: tempfile::tempdir().unwrap(),
        }
    }

    fn profile(&self) -> &str {
        self.profile.path().to_str().unwrap()
    }

    fn args(&self) -> [&str; 5] {
        [
            &self.mcp_url,
            "alice",
            PASSWORD,
            self.profile(),
            &self.foreign_token,
        ]
    }

    /// What both SDKs must have done; `out` is the JSON their scripts print.
    async fn check(&self, app: &TestApp, out: &Value, sdk: &str) {
        let trail = out["trail"].as_array().expect("trail");
        let at = |method: &str, url: &str, status: u16| {
            trail
                .iter()
                .position(|t| t["method"] == method && t["url"] == url && t["status"] == status)
                .unwrap_or_else(|| panic!("no {method} {url} → {status} in {trail:#?}"))
        };
        let metadata = format!(
            "{}/.well-known/oauth-protected-resource/mcp",
            self.mcp_url.trim_end_matches("/mcp")
        );

        // A bare 401 names the metadata and the scope, with no error (RFC 6750 §3.1).
        let first = &trail[0];
        assert_eq!(first["url"], self.mcp_url.as_str(), "{first}");
        assert_eq!(first["status"], 401, "{first}");
        let challenge = first["wwwAuthenticate"].as_str().unwrap();
        assert!(
            challenge.contains(&format!("resource_metadata=\"{metadata}\"")),
            "{challenge}"
        );
        assert!(challenge.contains("scope=\"notes:read\""), "{challenge}");
        assert!(!challenge.contains("error="), "{challenge}");

        // Discovery, RFC 9728 then RFC 8414; registration; the token request.
        let prm = at("GET", &metadata, 200);
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
        // The SDK registered the challenged scope only: the step-up below needs Concierge to
        // let a self-registered client ask for more (see `check_scope`).
        let client = app
            .store()
            .get_client(out["clientId"].as_str().unwrap(), concierge::util::now())
            .await
            .unwrap()
            .expect("the SDK registered a client");
        assert_eq!(client.kind, concierge::store::ClientKind::Dynamic);
        let registered = client.metadata.scope.clone().unwrap_or_default();
        assert!(registered.contains("notes:read"), "{registered}");
        assert!(!registered.contains("notes:write"), "{registered}");

        // The first authorization: the challenged scope for this resource, in the browser.
        let auths = out["authorizations"].as_array().expect("authorizations");
        assert_eq!(auths.len(), 2, "a first authorization and a step-up: {out}");
        let first = &auths[0];
        assert_eq!(first["resource"], self.mcp_url.as_str(), "{first}");
        assert_eq!(first["codeChallengeMethod"], "S256");
        assert_eq!(first["iss"], app.issuer.as_str(), "RFC 9207: {first}");
        assert_eq!(first["signedIn"], true, "{first}");
        let scope = first["scope"].as_str().unwrap();
        assert!(scope.split(' ').any(|s| s == "notes:read"), "{scope}");
        assert!(!scope.contains("notes:write"), "{scope}");
        assert_eq!(
            first["consent"]["resourceUris"],
            serde_json::json!([self.mcp_url])
        );
        assert!(
            first["consent"]["client"]
                .as_str()
                .unwrap()
                .contains(&format!("MCP {sdk} SDK interop")),
            "{first}"
        );

        // The tools, as alice.
        let tools = out["tools"].as_array().unwrap();
        for t in ["list_notes", "add_note", "whoami"] {
            assert!(tools.iter().any(|x| x == t), "{t} in {tools:?}");
        }
        assert!(
            out["whoami"].as_str().unwrap().contains(&self.alice),
            "{out}"
        );
        assert!(!out["listBefore"].as_str().unwrap().contains(NOTE), "{out}");

        // Step-up: 403 insufficient_scope asking for notes:write, consent to it (alice is still
        // signed in), and the note is written.
        let forbidden = trail
            .iter()
            .find(|t| t["status"] == 403)
            .unwrap_or_else(|| panic!("no 403 in {trail:#?}"));
        let c = forbidden["wwwAuthenticate"].as_str().unwrap();
        assert!(c.contains("error=\"insufficient_scope\""), "{c}");
        assert!(c.contains("scope=\"notes:read notes:write\""), "{c}");
        let step_up = &auths[1];
        assert!(
            step_up["scope"].as_str().unwrap().contains("notes:write"),
            "{step_up}"
        );
        assert_eq!(step_up["resource"], self.mcp_url.as_str());
        assert_eq!(step_up["signedIn"], false, "single sign-on: {step_up}");
        let consented = step_up["consent"]["scopes"].as_array().unwrap();
        assert!(consented.iter().any(|s| s == "notes:write"), "{step_up}");
        assert!(out["listAfter"].as_str().unwrap().contains(NOTE), "{out}");

        // A token for another resource is refused as invalid, not as insufficient.
        let foreign = &out["foreign"];
        assert_eq!(foreign["status"], 401, "{out}");
        assert!(
            foreign["wwwAuthenticate"]
                .as_str()
                .unwrap()
                .contains("error=\"invalid_token\""),
            "{foreign}"
        );
        assert_eq!(out["foreignWouldReauthorize"], true, "{out}");
        assert!(out["foreignConnected"].is_null(), "{out}");
    }
}

/// The Python interpreter of a virtual environment under `target/` with
/// `tests/interop/requirements.txt` installed (again whenever that file changes).
pub fn python() -> Option<PathBuf> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let r = PYTHON.get_or_init(|| {
        let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/mcp-python-venv");
        let requirements = interop_dir().join("requirements.txt");
        let wanted = std::fs::read_to_string(&requirements).map_err(|e| e.to_string())?;
        let stamp = venv.join("installed-requirements.txt");
        let bin = venv.join("bin/python");
        if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
            return Ok(bin);
        }
        let run = |cmd: &mut Command, what: &str| -> Result<(), String> {
            let out = cmd
                .output()
                .map_err(|e| format!("{what} could not run: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{what} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        };
        let _ = std::fs::remove_dir_all(&venv);
        let system = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        run(
            Command::new(&system).arg("-m").arg("venv").arg(&venv),
            &format!("{system} -m venv"),
        )?;
        run(
            Command::new(&bin)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "-q",
                    "-r",
                ])
                .arg(&requirements),
            "pip install -r tests/interop/requirements.txt",
        )?;
        std::fs::write(&stamp, wanted).map_err(|e| e.to_string())?;
        Ok(bin)
    });
    match r {
        Ok(bin) => Some(bin.clone()),
        Err(why) => {
            skip_or_fail(&format!("the MCP Python SDK: {why}"));
            None
        }
    }
}

both!(typescript_sdk_client_journey, |app: TestApp| async move {
    if !ready() {
        return app;
    }
    let j = Journey::start(&app).await;
    let out = node("mcp_ts_sdk.mjs", &j.args(), &[]).await;
    j.check(&app, &out, "TypeScript").await;
    // The SDK's own step-up refreshes while it holds a refresh token; a refresh cannot widen
    // the scope, so the SDK (1.32.2) gives up and the script re-authorizes with auth() and the
    // challenged scope (see mcp_ts_sdk.mjs). When an SDK update handles it, this says "sdk".
    assert_eq!(out["stepUp"], "auth()", "{out}");
    assert_eq!(out["challenge"]["scope"], "notes:read notes:write", "{out}");
    app
});

both!(python_sdk_client_journey, |app: TestApp| async move {
    if !ready() {
        return app;
    }
    let Some(python) = python() else {
        return app;
    };
    let j = Journey::start(&app).await;
    let out = run_script(python.to_str().unwrap(), "mcp_py_sdk.py", &j.args(), &[]).await;
    j.check(&app, &out, "Python").await;
    // The provider's own step-up asked for what was granted plus what was challenged.
    let granted = out["grantedScope"].as_str().unwrap();
    for s in ["notes:read", "notes:write"] {
        assert!(granted.split(' ').any(|g| g == s), "{granted}");
    }
    app
});

// The TypeScript SDK's own client-credentials providers (SEP-1046), each with an operator's
// machine client: discovery from the 401, a client_credentials token for the notes server
// (RFC 8707 `resource`), the tools.
both!(
    typescript_sdk_client_credentials_providers,
    |app: TestApp| async move {
        use concierge::oauth::client_metadata::RawClientMetadata;
        if !node_ready() {
            return app;
        }
        let notes = spawn_notes(&app).await;
        let scope = Some("notes:read notes:write");
        let (basic, secret) = app.add_machine_client("client_secret_basic", scope).await;
        let (pem, jwk) = es256_key();
        let metadata = TestApp::operator_metadata(RawClientMetadata {
            grant_types: Some(vec!["client_credentials".into()]),
            token_endpoint_auth_method: Some("private_key_jwt".into()),
            jwks: Some(serde_json::json!({ "keys": [jwk] })),
            scope: scope.map(str::to_string),
            ..Default::default()
        });
        let (jwt, _) = app.add_client_metadata(None, metadata).await;
        let pem = String::from_utf8(pem).unwrap();
        let out = node(
            "mcp_ts_sdk_machine.mjs",
            &[&notes, &app.issuer, &basic, &secret, &jwt],
            &[("PRIVATE_KEY_PEM", &pem)],
        )
        .await;

        for (provider, id) in [("basic", &basic), ("privateKeyJwt", &jwt)] {
            let o = &out[provider];
            let requests = o["tokenRequests"].as_array().unwrap();
            assert_eq!(requests.len(), 1, "{provider}: {o}");
            let r = &requests[0];
            assert_eq!(r["status"], 200, "{provider}: {r}");
            assert_eq!(r["grantType"], "client_credentials");
            assert_eq!(r["resource"], notes.as_str(), "{provider}: {r}");
            assert_eq!(r["scope"], "notes:read");
            let t = &o["token"];
            assert_eq!(t["iss"], app.issuer.as_str());
            assert_eq!(t["aud"], notes.as_str(), "{provider}: {t}");
            assert_eq!(t["client_id"], id.as_str());
            assert_eq!(t["scope"], "notes:read");
            let tools = o["tools"].as_array().unwrap();
            assert!(tools.iter().any(|t| t == "list_notes"), "{tools:?}");
            assert_eq!(o["listNotes"]["notes"], serde_json::json!([]), "{o}");
            assert_eq!(o["whoami"]["client_id"], id.as_str(), "{o}");
            assert_eq!(o["whoami"]["scopes"], serde_json::json!(["notes:read"]));
        }
        let basic_auth = &out["basic"]["tokenRequests"][0];
        assert_eq!(basic_auth["basic"], true, "{basic_auth}");
        assert_eq!(basic_auth["secretInBody"], false);
        let jwt_auth = &out["privateKeyJwt"]["tokenRequests"][0];
        assert_eq!(
            jwt_auth["assertionType"],
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        );
        assert_eq!(jwt_auth["assertion"]["iss"], jwt.as_str(), "{jwt_auth}");
        assert_eq!(jwt_auth["assertion"]["sub"], jwt.as_str());
        assert_eq!(jwt_auth["basic"], false);
        app
    }
);

// Enterprise-managed authorization with the TypeScript SDK v2's own `CrossAppAccessProvider`
// and `discoverAndRequestJwtAuthGrant`, against two servers: the enterprise IdP (alice's ID
// token → an ID-JAG) and the notes server's authorization server trusting it (ID-JAG → an
// access token for the notes server).
both_pair!(typescript_sdk_v2_enterprise_managed, |p: Pair| async move {
    if !node_ready() {
        return p;
    }
    let notes = spawn_notes(&p.rs_as).await;
    // The IdP lets our client obtain ID-JAGs for this notes server at that server.
    let policy = concierge::store::IdJagPolicy {
        client_id: IDP_CLIENT.into(),
        audience: p.rs_as.issuer.clone(),
        resource: notes.clone(),
        target_client_id: AS_CLIENT.into(),
        scopes: vec!["notes:read".into(), "notes:write".into()],
    };
    p.idp
        .store()
        .save_id_jag_policy(&policy, concierge::util::now())
        .await
        .unwrap();
    let id_token = p.id_token().await;
    let alice = claims(&id_token)["sub"].clone();
    let out = node(
        "mcp_ts_sdk_v2_ema.mjs",
        &[
            &notes,
            &p.idp.issuer,
            IDP_CLIENT,
            &p.rs_as.issuer,
            AS_CLIENT,
        ],
        &[
            ("ID_TOKEN", &id_token),
            ("IDP_SECRET", &p.idp_secret),
            ("AS_SECRET", &p.as_secret),
        ],
    )
    .await;

    // What the SDK found from the 401 (RFC 9728) and asked the IdP for.
    assert_eq!(out["told"]["resourceUrl"], notes.as_str(), "{out}");
    assert_eq!(
        out["told"]["authorizationServerUrl"],
        p.rs_as.issuer.as_str()
    );
    assert_eq!(out["told"]["scope"], "notes:read", "the 401's scope");
    let requests = out["tokenRequests"].as_array().unwrap();
    assert_eq!(requests.len(), 2, "{out}");
    let (at_idp, at_as) = (&requests[0], &requests[1]);
    assert_eq!(at_idp["server"], "idp");
    assert_eq!(at_idp["status"], 200, "{at_idp}");
    assert_eq!(at_idp["grantType"], TE);
    assert_eq!(at_idp["requestedTokenType"], crate::id_jag::ID_JAG);
    assert_eq!(at_idp["resource"], notes.as_str());
    assert_eq!(at_idp["secretInBody"], true, "client_secret_post: {at_idp}");
    let jag = &out["jag"]["claims"];
    assert_eq!(jag["iss"], p.idp.issuer.as_str(), "{jag}");
    assert_eq!(jag["aud"], p.rs_as.issuer.as_str());
    assert_eq!(jag["resource"], notes.as_str());
    assert_eq!(jag["client_id"], AS_CLIENT);
    assert_eq!(jag["sub"], alice);
    assert_eq!(at_as["server"], "as");
    assert_eq!(at_as["status"], 200, "{at_as}");
    assert_eq!(at_as["grantType"], JWT_BEARER);
    // The SDK sends the secret with HTTP Basic here though the client registered
    // client_secret_post: Concierge takes a client's secret in either place.
    assert_eq!(at_as["basic"], true, "{at_as}");

    // The access token, for the notes server, as alice; and the tools.
    let t = &out["token"];
    assert_eq!(t["iss"], p.rs_as.issuer.as_str(), "{t}");
    assert_eq!(t["aud"], notes.as_str());
    // As the local user her IdP identity is linked to (issue 18.8).
    let local = p.local_user_of(alice.as_str().unwrap()).await;
    assert_eq!(t["sub"], local.as_str());
    assert_eq!(t["client_id"], AS_CLIENT);
    assert!(
        out["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "list_notes")
    );
    assert_eq!(out["whoami"]["sub"], local.as_str(), "{out}");
    assert_eq!(out["listNotes"]["notes"], serde_json::json!([]), "{out}");
    p
});

// The TypeScript SDK client meets `clear_notes`, which needs a second factor in the last five
// minutes (RFC 9470 step-up through concierge-guard): the challenge names Concierge's
// `acr_values` and `max_age`, the next authorization request carries them, and Concierge has
// alice (who has no second factor) set up an authenticator at that sign-in, in Chromium.
both!(
    typescript_sdk_steps_up_for_a_sensitive_tool,
    |app: TestApp| async move {
        if !ready() {
            return app;
        }
        seed(&app).await;
        let notes = spawn_notes(&app).await;
        let profile = tempfile::tempdir().unwrap();
        let out = node(
            "mcp_ts_sdk_step_up.mjs",
            &[&notes, "alice", PASSWORD, profile.path().to_str().unwrap()],
            &[],
        )
        .await;
        assert_eq!(out["firstAcr"], "urn:concierge:acr:1fa", "{out}");
        let challenges = out["challenges"].as_array().unwrap();
        let step_up = challenges
            .iter()
            .find(|c| c["error"] == "insufficient_user_authentication")
            .unwrap_or_else(|| panic!("no step-up challenge: {out}"));
        assert_eq!(step_up["status"], 401);
        assert_eq!(step_up["acrValues"], "urn:concierge:acr:mfa phr");
        assert_eq!(step_up["maxAge"], "300");
        let last = out["authorizations"]
            .as_array()
            .unwrap()
            .last()
            .cloned()
            .unwrap();
        assert_eq!(last["acrValues"], "urn:concierge:acr:mfa phr", "{out}");
        assert_eq!(out["enrolledAtSignIn"], true, "{out}");
        assert_eq!(out["recoveryCodes"], 10, "{out}");
        assert_eq!(out["finalAcr"], "urn:concierge:acr:mfa", "{out}");
        assert_eq!(out["finalAmr"], json!(["pwd", "otp"]), "{out}");
        assert_eq!(out["cleared"]["removed"], 1, "{out}");
        assert_eq!(out["listAfter"]["notes"], json!([]), "{out}");
        app
    }
);

both!(
    typescript_sdk_calls_a_tool_the_user_approves_on_another_page,
    |c: &mut concierge::Config| {
        c.ciba.poll_interval_secs = 1;
    },
    |app: TestApp| async move {
        if !ready() {
            return app;
        }
        use concierge::oauth::client_metadata::RawClientMetadata;
        seed(&app).await;
        // The notes server's own client, allowed to ask users for approvals.
        let (id, secret) = app
            .add_client_metadata(
                None,
                TestApp::operator_metadata(RawClientMetadata {
                    client_name: Some("Notes server".into()),
                    grant_types: Some(vec!["urn:openid:params:grant-type:ciba".into()]),
                    token_endpoint_auth_method: Some("client_secret_basic".into()),
                    ..Default::default()
                }),
            )
            .await;
        let secret = secret.unwrap();
        let notes = spawn_notes_with(&app, |mut c| {
            c.approval_wait = std::time::Duration::from_secs(2);
            c.approvals(id, secret)
        })
        .await;
        let profile = tempfile::tempdir().unwrap();
        let out = node(
            "mcp_ts_sdk_approval.mjs",
            &[
                &notes,
                &app.issuer,
                "alice",
                PASSWORD,
                profile.path().to_str().unwrap(),
            ],
            &[],
        )
        .await;
        assert_eq!(out["firstTry"]["status"], "approval_pending", "{out}");
        assert_eq!(
            out["firstTry"]["approve_at"],
            app.url("/account/approvals").as_str()
        );
        let page = &out["approvedPage"];
        assert_eq!(
            page["heading"], "Notes server asks for your approval",
            "{out}"
        );
        assert_eq!(
            page["detail"],
            "Use the tool “delete_note” on Notes: Delete the note “groceries”"
        );
        assert_eq!(page["argument"], "id = 1");
        assert_eq!(out["secondTry"]["status"], "deleted", "{out}");
        assert_eq!(out["otherTry"]["status"], "approval_pending", "{out}");
        assert_eq!(out["otherAgain"]["status"], "denied", "{out}");
        let left = out["listAfter"]["notes"].as_array().unwrap();
        assert_eq!(left.len(), 1, "{out}");
        assert_eq!(left[0]["text"], "birthdays");
        app
    }
);
