//! The user's part in a real headless Chromium, and a client library we did not write
//! (openid-client), both driven from Node scripts in `tests/interop/`.
//!
//! Needs Debian's `chromium` (or `CHROMIUM=/path`) and Node with npm. Without them these
//! tests are skipped with a loud message, except under `CI=true`, where they fail.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

use crate::both;
use crate::flow::*;
use crate::helpers::{TestApp, assert_error};

pub fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// Are the Node packages of `tests/interop` installed? Installs them once (`npm ci`) when
/// one is missing; every Node-driven test goes through here, so they never race to install.
pub fn npm_ready() -> Result<(), String> {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    READY
        .get_or_init(|| {
            let missing = [
                "openid-client",
                "playwright-core",
                "@readme/openapi-parser",
                "@modelcontextprotocol/sdk",
                "@modelcontextprotocol/client",
                "@modelcontextprotocol/conformance",
                "jose",
                "zod",
                "node",
            ]
            .iter()
            .any(|p| !interop_dir().join("node_modules").join(p).exists());
            if missing {
                let out = Command::new("npm")
                    .args(["ci", "--no-audit", "--no-fund"])
                    .current_dir(interop_dir())
                    .output()
                    .map_err(|e| format!("npm could not run: {e}"))?;
                if !out.status.success() {
                    return Err(format!(
                        "npm ci failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
            }
            Ok(())
        })
        .clone()
}

/// The Node 22 binary of the npm package `node` (in `tests/interop/package.json`), for the
/// packages that need a newer Node than Debian's (the conformance suite uses `fs.globSync`).
/// `None` (skipped loudly, or failed under `CI=true`) when it cannot be installed.
pub fn node22() -> Option<PathBuf> {
    let bin = interop_dir().join("node_modules/.bin/node");
    if !node_ready() {
        return None;
    }
    if !bin.exists() {
        skip_or_fail(&format!("npm ci left no {}", bin.display()));
        return None;
    }
    Some(bin)
}

/// Are the Node packages there (for the tests that need no browser)?
pub fn node_ready() -> bool {
    npm_ready()
        .map_err(|why| skip_or_fail(&format!("interop tests: {why}")))
        .is_ok()
}

/// Are Chromium and the Node packages there?
pub fn ready() -> bool {
    let r = if Path::new(&chromium()).exists() {
        npm_ready()
    } else {
        Err(format!(
            "no Chromium at {} (apt-get install chromium, or set CHROMIUM)",
            chromium()
        ))
    };
    match r {
        Ok(()) => true,
        Err(why) => {
            skip_or_fail(&format!("browser and interop tests: {why}"));
            false
        }
    }
}

/// Under `CI=true` a missing tool fails the run; elsewhere the test is skipped loudly.
pub fn skip_or_fail(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but the interop tests cannot run: {why}");
    }
    eprintln!("\n!!!! SKIPPING interop test: {why}\n");
}

/// Run a Node script; its last stdout line is JSON.
pub async fn node(script: &str, args: &[&str], env: &[(&str, &str)]) -> Value {
    run_script("node", script, args, env).await
}

/// Run `program script args…` in `tests/interop/` (three minutes at most); its last stdout
/// line is JSON.
pub async fn run_script(program: &str, script: &str, args: &[&str], env: &[(&str, &str)]) -> Value {
    let mut cmd = tokio::process::Command::new(program);
    cmd.arg(script)
        .args(args)
        .current_dir(interop_dir())
        .env("CHROMIUM", chromium())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(180), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within three minutes"))
        .unwrap_or_else(|e| panic!("{program} could not run: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("JSON result")
}

both!(
    browser_signs_in_consents_and_revokes,
    |app: TestApp| async move {
        if !ready() {
            return app;
        }
        seed(&app).await;
        let client = public_client(&app).await;
        let (verifier, challenge) = pkce();
        let profile = tempfile::tempdir().unwrap();
        let profile = profile.path().to_str().unwrap().to_string();
        let url = authorize_url(&app, &auth_params(&client, &challenge, "notes:read"));
        let shot = std::env::temp_dir().join(format!("concierge-consent-{}.png", client));
        let shot = shot.to_str().unwrap();

        // First time: sign in, see the consent page, approve.
        let seen = node(
            "browser.mjs",
            &["authorize", &url, "alice", PASSWORD, REDIRECT, &profile],
            &[("SCREENSHOT", shot)],
        )
        .await;
        // The sign-in page said who asks, before the password.
        let asker = &seen["asker"];
        assert_eq!(asker["client"], "Test Agent", "{seen}");
        assert_eq!(asker["unverified"], true);
        assert_eq!(asker["redirectHost"], "127.0.0.1");
        let consent = &seen["consent"];
        assert_eq!(consent["client"], "Test Agent", "{seen}");
        assert_eq!(consent["unverified"], true);
        assert_eq!(consent["resources"], serde_json::json!(["Notes"]));
        assert_eq!(consent["resourceUris"], serde_json::json!([NOTES]));
        assert_eq!(consent["scopes"], serde_json::json!(["notes:read"]));
        assert_eq!(consent["redirectHost"], "127.0.0.1");
        let back = seen["callback"].as_str().unwrap();
        let q = query(back);
        assert_eq!(q["state"], "st-123");
        let (status, _, tokens) = redeem(&app, &client, &q["code"], &verifier, &[]).await;
        assert_eq!(status, 200, "{tokens}");
        let rt = tokens["refresh_token"].as_str().unwrap().to_string();

        // Second time, same scopes: no consent page, still signed in.
        let again = node(
            "browser.mjs",
            &["authorize", &url, "alice", PASSWORD, REDIRECT, &profile],
            &[],
        )
        .await;
        assert!(again["consent"].is_null(), "consent is remembered: {again}");
        assert_eq!(again["signedIn"], false, "single sign-on: {again}");
        assert!(query(again["callback"].as_str().unwrap()).contains_key("code"));

        // Revoking on the connected-apps page stops the refresh token at once.
        let revoked = node(
            "browser.mjs",
            &[
                "revoke",
                &app.url("/account/apps"),
                "alice",
                PASSWORD,
                &profile,
            ],
            &[],
        )
        .await;
        assert_eq!(revoked["before"], 1, "{revoked}");
        assert_eq!(revoked["after"], 0, "{revoked}");
        assert_error(
            &refresh(&app, &client, &rt, &[]).await,
            400,
            "invalid_grant",
            "revoked",
        );

        // The security page: a new password through its form; this browser stays signed in.
        let shot = std::env::temp_dir().join(format!("concierge-security-{client}.png"));
        let changed = node(
            "browser.mjs",
            &[
                "password",
                &app.url("/account/security"),
                "alice",
                PASSWORD,
                "a new and longer password",
                &profile,
            ],
            &[("SCREENSHOT", shot.to_str().unwrap())],
        )
        .await;
        assert!(changed["error"].is_null(), "{changed}");
        assert!(
            changed["notice"]
                .as_str()
                .is_some_and(|n| n.contains("password is changed")),
            "{changed}"
        );
        assert_eq!(changed["thisBrowser"], 1, "{changed}");
        let b = browser();
        let res = sign_in(
            &app,
            &b,
            &app.url("/signin"),
            "alice",
            "a new and longer password",
        )
        .await;
        assert_eq!(res.status(), 303);
        app
    }
);

both!(
    browser_deny_returns_access_denied,
    |app: TestApp| async move {
        if !ready() {
            return app;
        }
        seed(&app).await;
        let client = public_client(&app).await;
        let (_, challenge) = pkce();
        let profile = tempfile::tempdir().unwrap();
        let url = authorize_url(&app, &auth_params(&client, &challenge, "notes:read"));
        let seen = node(
            "browser.mjs",
            &[
                "authorize",
                &url,
                "alice",
                PASSWORD,
                REDIRECT,
                profile.path().to_str().unwrap(),
                "deny",
            ],
            &[],
        )
        .await;
        let q = query(seen["callback"].as_str().unwrap());
        assert_eq!(q["error"], "access_denied");
        assert_eq!(q["iss"], app.issuer);
        app
    }
);

both!(
    openid_client_library_accepts_the_whole_flow,
    |app: TestApp| async move {
        if !ready() {
            return app;
        }
        let alice = seed(&app).await;
        let profile = tempfile::tempdir().unwrap();
        let out = node(
            "openid_client.mjs",
            &[
                &app.issuer,
                NOTES,
                "alice",
                PASSWORD,
                profile.path().to_str().unwrap(),
            ],
            &[],
        )
        .await;
        assert_eq!(out["issuer"], app.issuer.as_str());
        assert_eq!(out["sub"], alice.as_str(), "{out}");
        assert_eq!(out["idTokenAud"], out["clientId"]);
        assert_eq!(out["tokenType"].as_str().unwrap().to_lowercase(), "bearer");
        assert_eq!(out["hasRefresh"], true);
        assert_eq!(out["userinfo"]["sub"], alice.as_str());
        assert_eq!(out["userinfo"]["email"], "alice@example.com");
        assert_eq!(out["refreshedSub"], alice.as_str());
        assert_eq!(out["consent"]["client"], "openid-client interop");
        app
    }
);

both!(
    openid_client_library_drives_the_machine_grants,
    |c: &mut concierge::Config| {
        c.tokens.device_poll_interval_secs = 1;
    },
    |app: TestApp| async move {
        if !ready() {
            return app;
        }
        use concierge::oauth::client_metadata::RawClientMetadata;
        seed(&app).await;
        let machine_client = |grants: Vec<&str>, introspect: bool| {
            let mut m = TestApp::operator_metadata(RawClientMetadata {
                grant_types: Some(grants.into_iter().map(str::to_string).collect()),
                token_endpoint_auth_method: Some("client_secret_post".into()),
                scope: Some("notes:read notes:write calendar:read".into()),
                ..Default::default()
            });
            m.may_introspect = introspect;
            let app = &app;
            async move {
                let (id, secret) = app.add_client_metadata(None, m).await;
                (id, secret.unwrap())
            }
        };
        let (svc, svc_s) = machine_client(
            vec![
                "client_credentials",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ],
            false,
        )
        .await;
        let (rs, rs_s) = machine_client(vec!["client_credentials"], true).await;
        allow_calendar_to_notes(&app, &svc).await;
        let (s, _, dev) = app
            .register(
                &serde_json::json!({"client_name": "Kiosk", "token_endpoint_auth_method": "none",
            "grant_types": ["urn:ietf:params:oauth:grant-type:device_code"]}),
            )
            .await;
        assert_eq!(s, 201, "{dev}");
        let profile = tempfile::tempdir().unwrap();
        let out = node(
            "openid_client_machine.mjs",
            &[
                &app.issuer,
                &svc,
                &svc_s,
                &rs,
                &rs_s,
                CALENDAR,
                NOTES,
                dev["client_id"].as_str().unwrap(),
                "alice",
                PASSWORD,
                profile.path().to_str().unwrap(),
            ],
            &[],
        )
        .await;
        assert_eq!(out["ccScope"], "calendar:read", "{out}");
        assert_eq!(out["introspectedActive"], true);
        assert_eq!(out["introspectedAud"], CALENDAR);
        assert_eq!(
            out["exchangedType"],
            "urn:ietf:params:oauth:token-type:access_token"
        );
        assert_eq!(out["exchangedScope"], "notes:read");
        assert_eq!(out["afterRevokeActive"], false);
        assert_eq!(out["deviceClient"], "Kiosk");
        assert_eq!(out["deviceResult"], "Your device is connected");
        assert_eq!(out["deviceHasAccessToken"], true);
        app
    }
);

both!(
    openid_client_library_uses_dpop,
    |c: &mut concierge::Config| {
        c.dpop.require_nonce = true;
    },
    |app: TestApp| async move {
        if !ready() {
            return app;
        }
        let alice = seed(&app).await;
        let (id, secret) = app
            .add_client(concierge::oauth::client_metadata::RawClientMetadata {
                grant_types: Some(vec!["client_credentials".into()]),
                token_endpoint_auth_method: Some("client_secret_post".into()),
                dpop_bound_access_tokens: Some(true),
                scope: Some("notes:read".into()),
                ..Default::default()
            })
            .await;
        let secret = secret.unwrap();
        let profile = tempfile::tempdir().unwrap();
        let out = node(
            "openid_client_dpop.mjs",
            &[
                &app.issuer,
                NOTES,
                &id,
                &secret,
                "alice",
                PASSWORD,
                profile.path().to_str().unwrap(),
            ],
            &[],
        )
        .await;
        assert_eq!(
            out["ccTokenType"].as_str().unwrap().to_lowercase(),
            "dpop",
            "{out}"
        );
        assert!(out["ccJkt"].is_string(), "{out}");
        assert_eq!(
            out["codeTokenType"].as_str().unwrap().to_lowercase(),
            "dpop"
        );
        assert_eq!(out["codeJkt"], out["expectedCodeJkt"]);
        assert_eq!(out["refreshedJkt"], out["expectedCodeJkt"]);
        assert_ne!(out["ccJkt"], out["codeJkt"], "two clients, two keys");
        assert_eq!(out["userinfoStatus"], 200, "{out}");
        assert_eq!(out["userinfo"]["sub"], alice.as_str());
        assert_eq!(out["userinfo"]["email"], "alice@example.com");
        app
    }
);

both!(
    browser_shows_delegation_chains_and_cuts_a_link,
    |app: TestApp| async move {
        if !ready() {
            return app;
        }
        let c = crate::exchange::two_hop_chain(&app).await;
        let profile = tempfile::tempdir().unwrap();
        let shot = std::env::temp_dir().join(format!("concierge-chains-{}.png", c.agent));
        let seen = node(
            "browser.mjs",
            &[
                "cut",
                &app.url("/account/apps"),
                "alice",
                PASSWORD,
                &c.hop1,
                profile.path().to_str().unwrap(),
            ],
            &[("SCREENSHOT", shot.to_str().unwrap())],
        )
        .await;
        // Before: both chains, under the agent, in names, neither cut.
        let before = seen["before"].as_array().unwrap();
        assert_eq!(before.len(), 2, "{seen}");
        let find = |list: &Value, hop: &str| -> Value {
            list.as_array()
                .unwrap()
                .iter()
                .find(|c| c["hop"] == hop)
                .cloned()
                .unwrap_or_else(|| panic!("no chain {hop} in {list}"))
        };
        let first = find(&seen["before"], &c.hop1);
        assert_eq!(
            first["path"],
            serde_json::json!(["Test Agent", "Calendar", "Notes"])
        );
        assert_eq!(first["app"], c.agent.as_str());
        assert_eq!(first["cut"], false);
        assert!(
            first["text"].as_str().unwrap().contains("acts here"),
            "{first}"
        );
        assert_eq!(
            find(&seen["before"], &c.hop2)["path"],
            serde_json::json!(["Test Agent", "Calendar", "Notes", "Calendar"])
        );
        // After cutting the first link: both shown cut, and their tokens inactive.
        assert_eq!(find(&seen["after"], &c.hop1)["cut"], true, "{seen}");
        assert_eq!(find(&seen["after"], &c.hop2)["cut"], true, "{seen}");
        assert!(!crate::exchange::active(&app, &c.t1).await);
        assert!(!crate::exchange::active(&app, &c.t2).await);
        assert!(crate::exchange::active(&app, &c.root).await);
        app
    }
);

both!(
    browser_unticks_a_tool_on_the_consent_page,
    |app: TestApp| async move {
        if !ready() {
            return app;
        }
        seed(&app).await;
        // A resource whose scopes list their tools.
        let things = "http://127.0.0.1:9999/things";
        let scopes = concierge::oauth::resource::ScopeDef::with_tools(
            vec![
                concierge::oauth::resource::ScopeDef::parse("t:read=See your things").unwrap(),
                concierge::oauth::resource::ScopeDef::parse("t:write=Change your things").unwrap(),
            ],
            &[
                "list_things=t:read=List your things".to_string(),
                "delete_thing=t:write=Delete one thing".to_string(),
            ],
        )
        .unwrap();
        app.store()
            .insert_resource(
                &concierge::oauth::resource::Resource::new(things, "Things", scopes, 0)
                    .unwrap()
                    .to_record(),
            )
            .await
            .unwrap();
        let client = public_client(&app).await;
        let (verifier, challenge) = pkce();
        let mut params = auth_params(&client, &challenge, "t:read t:write");
        params.retain(|(k, _)| k != "resource");
        params.push(("resource".into(), things.into()));
        let profile = tempfile::tempdir().unwrap();
        let shot = std::env::temp_dir().join(format!("concierge-tools-{client}.png"));
        let seen = node(
            "browser.mjs",
            &[
                "authorize",
                &authorize_url(&app, &params),
                "alice",
                PASSWORD,
                REDIRECT,
                profile.path().to_str().unwrap(),
            ],
            &[
                ("SCREENSHOT", shot.to_str().unwrap()),
                ("UNTICK", "t:write"),
            ],
        )
        .await;
        // The page listed each scope's tools under it.
        let tools = &seen["consent"]["tools"];
        assert_eq!(
            tools["t:read"],
            serde_json::json!(["list_things"]),
            "{seen}"
        );
        assert_eq!(
            tools["t:write"],
            serde_json::json!(["delete_thing"]),
            "{seen}"
        );
        // Unticked in the browser: the grant is what stayed ticked.
        let q = query(seen["callback"].as_str().unwrap());
        let (s, _, tokens) = redeem(&app, &client, &q["code"], &verifier, &[]).await;
        assert_eq!(s, 200, "{tokens}");
        assert_eq!(tokens["scope"], "t:read");
        assert_eq!(
            claims(tokens["access_token"].as_str().unwrap())["scope"],
            "t:read"
        );
        app
    }
);
