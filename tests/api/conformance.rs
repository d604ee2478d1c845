//! The MCP conformance suite (`@modelcontextprotocol/conformance`, pinned in
//! `tests/interop/package.json`) against Concierge, on both stores.
//!
//! Two of its scenarios test an authorization server, and both run here:
//! `authorization-server-metadata-endpoint` (RFC 8414 metadata: status, content type, the
//! required members, `issuer`, `S256`, `client_id_metadata_document_supported`) and
//! `authorization-code-grant` (a code flow with PKCE and `resource`, as a public client: the
//! authorization response's `code`, `state` and `iss`; the token response's status, content
//! type, `Cache-Control: no-store`, `access_token`, `token_type`). Its other scenarios test
//! other roles: the `auth/*` ones play the authorization server themselves and test an MCP
//! client, the server ones test an MCP server.
//!
//! `authorization-code-grant` prints the authorization URL and waits for the browser on
//! `http://127.0.0.1:<port>/callback`. The test is that browser: it signs in and consents over
//! HTTP as the code-flow tests do (`flow.rs`), then follows the redirect to the suite's
//! listener. Every check the suite records must be SUCCESS.
//!
//! Needs the npm packages of `tests/interop`, among them the `node` package: the suite needs
//! Node 22 (`fs.globSync`), newer than Debian's. Without them the test is skipped loudly,
//! except under `CI=true`, where it fails.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::both;
use crate::flow::*;
use crate::helpers::TestApp;
use crate::interop::{interop_dir, node22};

/// The suite's authorization-server scenarios, in the order it runs them.
const SCENARIOS: [&str; 2] = [
    "authorization-server-metadata-endpoint",
    "authorization-code-grant",
];

/// A port nothing listens on now, for the suite's callback listener.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Every `checks.json` under `dir`, with the name of the folder it is in.
fn results(dir: &std::path::Path) -> Vec<(String, Vec<Value>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let checks = path.join("checks.json");
        if checks.exists() {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            let text = std::fs::read_to_string(checks).unwrap();
            out.push((name, serde_json::from_str(&text).unwrap()));
        }
    }
    out
}

both!(
    conformance_suite_authorization_server_scenarios,
    |app: TestApp| async move {
        let Some(node) = node22() else {
            return app;
        };
        seed(&app).await;
        // Registered as `http://127.0.0.1/callback`: a loopback redirect URI matches on any
        // port (RFC 8252 §7.3), so it covers the suite's `http://127.0.0.1:<port>/callback`.
        let client = public_client(&app).await;
        let port = free_port().to_string();
        let out_dir = tempfile::tempdir().unwrap();
        let mut suite = tokio::process::Command::new(node)
            .arg("node_modules/.bin/conformance")
            .args([
                "authorization",
                "--url",
                &app.issuer,
                "--client-id",
                &client,
            ])
            .args(["--resource", NOTES, "-p", &port, "-o"])
            .arg(out_dir.path())
            .current_dir(interop_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs");
        let mut stdout = BufReader::new(suite.stdout.take().unwrap()).lines();
        let mut printed = Vec::new();

        // The metadata scenario runs first; then the suite prints the authorization URL.
        let authorize = app.url("/authorize?");
        let url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = stdout.next_line().await.unwrap() {
                printed.push(line.clone());
                if line.starts_with(&authorize) {
                    return Some(line);
                }
            }
            None
        })
        .await
        .unwrap_or(None);
        let Some(url) = url else {
            let mut err = String::new();
            let _ = suite.stderr.take().unwrap().read_to_string(&mut err).await;
            panic!(
                "no authorization URL from the suite:\n{}\n{err}",
                printed.join("\n")
            );
        };

        // The browser: sign in, consent, and back to the suite's listener with the code.
        let params: Vec<(String, String)> = url::Url::parse(&url)
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect();
        let back = authorize_and_approve(&app, &browser(), &params).await;
        let callback = format!("http://127.0.0.1:{port}/callback?");
        assert!(back.starts_with(&callback), "{back}");
        // The suite starts its listener as it prints the URL; give it a moment if need be.
        let mut res = reqwest::get(&back).await;
        for _ in 0..50 {
            if res.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            res = reqwest::get(&back).await;
        }
        assert_eq!(
            res.unwrap().status(),
            200,
            "the suite's listener took the code"
        );

        // It redeems the code, checks the answer and exits.
        let finished = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = stdout.next_line().await.unwrap() {
                printed.push(line);
            }
            suite.wait_with_output().await.unwrap()
        })
        .await
        .expect("the suite finishes within a minute of the callback");
        let printed = printed.join("\n");
        let stderr = String::from_utf8_lossy(&finished.stderr);

        // Each scenario wrote its checks, and every check passed.
        let found = results(out_dir.path());
        assert_eq!(found.len(), SCENARIOS.len(), "{printed}\n{stderr}");
        for scenario in SCENARIOS {
            let prefix = format!("authorization-server-{scenario}-");
            let (_, checks) = found
                .iter()
                .find(|(dir, _)| dir.starts_with(&prefix))
                .unwrap_or_else(|| panic!("no results for {scenario}:\n{printed}"));
            assert!(!checks.is_empty(), "{scenario}: no checks");
            for check in checks {
                assert_eq!(
                    check["status"], "SUCCESS",
                    "{scenario}: {check:#}\n{printed}\n{stderr}"
                );
            }
        }
        assert!(finished.status.success(), "{printed}\n{stderr}");
        app
    }
);
