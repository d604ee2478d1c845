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
//! listener. Every check the suite records must be SUCCESS. The listener's port is chosen
//! free here and bound by the suite a second or two later, and another test's socket may take
//! it in between. So when the suite's listener does not answer the callback, the run is
//! repeated on another port, at most three times in all.
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

/// What one run of the suite came to.
enum Run {
    /// It finished: its output, and the checks each scenario wrote.
    Finished {
        printed: String,
        stderr: String,
        success: bool,
        found: Vec<(String, Vec<Value>)>,
    },
    /// Its callback listener never took the code. The likely cause: another socket took the
    /// port between [`free_port`] and the suite's `listen` (tests run in parallel and bind
    /// ports of their own). Worth another port; after three, the test fails with what each
    /// run got back.
    PortLost(String),
}

/// Run the suite's authorization-server scenarios once, with its callback listener on `port`,
/// and play the browser for its authorization request.
async fn run_suite(app: &TestApp, node: &std::path::Path, client: &str, port: u16) -> Run {
    let port = port.to_string();
    let out_dir = tempfile::tempdir().unwrap();
    let mut suite = tokio::process::Command::new(node)
        .arg("node_modules/.bin/conformance")
        .args(["authorization", "--url", &app.issuer, "--client-id", client])
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

    // The metadata scenario runs first; then the suite prints the authorization URL. Up to
    // two minutes: the suite shares two cores with the rest of the tests.
    let authorize = app.url("/authorize?");
    let url = tokio::time::timeout(Duration::from_secs(120), async {
        while let Ok(Some(line)) = stdout.next_line().await {
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
        let _ = suite.start_kill();
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
    let back = authorize_and_approve(app, &browser(), &params).await;
    let callback = format!("http://127.0.0.1:{port}/callback?");
    assert!(back.starts_with(&callback), "{back}");
    // The suite starts its listener as it prints the URL; give it a moment if need be. Its
    // answer says it took the code; anything else on that port is not the suite.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut delivered = Err("not sent".to_string());
    for _ in 0..100 {
        match http.get(&back).send().await {
            Ok(res) => {
                let status = res.status();
                let body = res.text().await.unwrap_or_default();
                delivered = Ok((status, body));
                break;
            }
            Err(e) if e.is_connect() => {
                delivered = Err(e.to_string());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                delivered = Err(e.to_string());
                break;
            }
        }
    }
    let took =
        matches!(&delivered, Ok((status, body)) if *status == 200 && body.starts_with("OK."));
    if !took {
        let _ = suite.start_kill();
        return Run::PortLost(format!(
            "port {port}: {delivered:?}\n{}",
            printed.join("\n")
        ));
    }

    // It redeems the code, checks the answer and exits.
    let finished = tokio::time::timeout(Duration::from_secs(120), async {
        while let Ok(Some(line)) = stdout.next_line().await {
            printed.push(line);
        }
        suite.wait_with_output().await.unwrap()
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the suite did not finish within two minutes of the callback:\n{}",
            printed.join("\n")
        )
    });
    Run::Finished {
        printed: printed.join("\n"),
        stderr: String::from_utf8_lossy(&finished.stderr).into_owned(),
        success: finished.status.success(),
        found: results(out_dir.path()),
    }
}

both!(
    conformance_suite_authorization_server_scenarios,
    |app: TestApp| async move {
        let Some(node) = node22() else {
            return app;
        };
        seed(&app).await;
        let mut lost = Vec::new();
        let (printed, stderr, success, found) = loop {
            // Registered as `http://127.0.0.1/callback`: a loopback redirect URI matches on
            // any port (RFC 8252 §7.3), so it covers the suite's
            // `http://127.0.0.1:<port>/callback`. A client of its own for each run, so that
            // each run meets the consent screen.
            let client = public_client(&app).await;
            match run_suite(&app, &node, &client, free_port()).await {
                Run::Finished {
                    printed,
                    stderr,
                    success,
                    found,
                } => break (printed, stderr, success, found),
                Run::PortLost(why) if lost.len() < 2 => lost.push(why),
                Run::PortLost(why) => {
                    lost.push(why);
                    panic!(
                        "the suite's callback listener never took the code:\n{}",
                        lost.join("\n---\n")
                    )
                }
            }
        };

        // Each scenario wrote its checks, and every check passed.
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
        assert!(success, "{printed}\n{stderr}");
        app
    }
);
