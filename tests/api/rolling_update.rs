//! A rolling update on PostgreSQL: the previous release (the commit in `.ci/previous-release`,
//! built by `.ci/build-previous` and named by `CONCIERGE_PREVIOUS_BIN`) and this build serve
//! one database side by side, and each accepts what the other issued. Migrations follow the
//! expand-then-contract rule (UPGRADE.md), so the previous release keeps working on the
//! newer schema; whether it can *restart* on it is recorded below.
//!
//! Without `CONCIERGE_PREVIOUS_BIN` the test says so loudly and passes: a new contributor's
//! `cargo test --workspace` needs no second build. `.ci/run` sets it.

use std::path::PathBuf;

use concierge::store::Open;
use serde_json::Value;

use crate::export_import::{Run, run};
use crate::flow::*;
use crate::helpers::*;
use crate::process::{Replica, free_port, shared_kek};

/// The previous release, from `.ci/previous-release`.
const PREVIOUS_RELEASE: &str = include_str!("../../.ci/previous-release");

/// Previous releases that cannot start on a schema newer than theirs: sqlx's migrator refused
/// applied migrations it did not know, so a replica of such a release, once stopped, does
/// not come back after the first replica of the next release migrated (UPGRADE.md says so
/// for that one update). Releases from the one that fixed it on start on a newer schema.
const CANNOT_RESTART_ON_A_NEWER_SCHEMA: &[&str] = &["f3ac714bfefc8fc82d66282607a3591ecabb7f61"];

fn previous_bin() -> Option<PathBuf> {
    match std::env::var_os("CONCIERGE_PREVIOUS_BIN").filter(|v| !v.is_empty()) {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            eprintln!(
                "\n!!!! CONCIERGE_PREVIOUS_BIN is not set: SKIPPING the rolling-update test \
                 against the previous release ({}).\n!!!! Build it with \
                 `CONCIERGE_PREVIOUS_BIN=$(.ci/build-previous)` (`.ci/run` does).\n",
                PREVIOUS_RELEASE.trim()
            );
            None
        }
    }
}

/// `id` and secret from `client add`'s output.
fn client_from(r: &Run) -> (String, String) {
    assert!(r.ok, "client add: {r}");
    let field = |prefix: &str| {
        r.stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in {r}"))
            .trim()
            .to_string()
    };
    (field("added client "), field("client_secret: "))
}

async fn introspect(app: &impl Server, rs: &(String, String), token: &str) -> Value {
    let (s, _, body) = post_form(
        app,
        "/introspect",
        vec![
            ("client_id", &rs.0),
            ("client_secret", &rs.1),
            ("token", token),
        ],
        &[],
    )
    .await;
    assert_eq!(s, 200, "{body}");
    body
}

/// alice authorizes `client` at `app` (signing in, approving unless remembered) and the
/// code is redeemed there: the token response.
async fn code_flow(app: &impl Server, client: &str) -> Value {
    let (verifier, challenge) = pkce();
    let b = browser();
    let res = b
        .get(authorize_url(
            app,
            &auth_params(client, &challenge, "notes:read"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let signin = format!("{}{}", app.origin(), location(&res));
    let res = sign_in(app, &b, &signin, "alice", PASSWORD).await;
    assert_eq!(res.status(), 303);
    let res = b
        .get(format!("{}{}", app.origin(), location(&res)))
        .send()
        .await
        .unwrap();
    let back = if res.status() == 303 {
        location(&res)
    } else {
        let html = res.text().await.unwrap();
        location(&decide(app, &b, &html, "approve").await)
    };
    let (s, _, tokens) = redeem(app, client, &query(&back)["code"], &verifier, &[]).await;
    assert_eq!(s, 200, "{tokens}");
    tokens
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_release_and_this_one_serve_one_database_side_by_side() {
    let Some(old_bin) = previous_bin() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let Some((url, name)) = fresh_database(Backend::Postgres, d).await else {
        return;
    };
    let kek = shared_kek();
    let old_port = free_port();
    let issuer = format!("http://127.0.0.1:{old_port}");
    // Settings both releases know; short cache bounds, so each sees the other's changes.
    let env = [
        ("CONCIERGE_KEY_ENCRYPTION_KEY", kek.as_str()),
        ("CONCIERGE_KEYS__REFRESH_SECS", "1"),
        ("CONCIERGE_CLIENTS__CACHE_SECS", "1"),
        ("CONCIERGE_RESOURCES__CACHE_SECS", "1"),
    ];
    let mut cli_env = env.to_vec();
    cli_env.extend([
        ("CONCIERGE_DATABASE_URL", url.as_str()),
        ("CONCIERGE_ISSUER", issuer.as_str()),
        ("CONCIERGE_DATA_DIR", d.to_str().unwrap()),
    ]);
    let old_cli = |args: &[&str], stdin: &str| run(&old_bin, d, args, &cli_env, stdin);

    // The previous release makes the database (its migrations end at its schema) and the
    // state: a resource, alice, a machine client and an introspecting resource server.
    let r = old_cli(
        &[
            "resource",
            "add",
            "--uri",
            NOTES,
            "--name",
            "Notes",
            "--scope",
            "notes:read=Read your notes",
        ],
        "",
    );
    assert!(r.ok, "{r}");
    let r = old_cli(&["user", "add", "alice"], &format!("{PASSWORD}\n"));
    assert!(r.ok, "{r}");
    let robot = client_from(&old_cli(
        &[
            "client",
            "add",
            "--name",
            "robot",
            "--grant-type",
            "client_credentials",
            "--scope",
            "notes:read",
        ],
        "",
    ));
    let rs = client_from(&old_cli(
        &[
            "client",
            "add",
            "--name",
            "notes server",
            "--grant-type",
            "client_credentials",
            "--auth-method",
            "client_secret_post",
            "--may-introspect",
        ],
        "",
    ));
    let (_, before) = concierge::store::open(&url, Open::Existing).await.unwrap();
    assert!(
        before.latest() < concierge::store::latest_migration(),
        "the previous release's schema is older: {before:?}"
    );

    let old = Replica::try_start(&old_bin, d, old_port, &issuer, &url, &env)
        .await
        .expect("the previous release starts");
    let agent = public_client(&old).await;
    let old_tokens = code_flow(&old, &agent).await;
    let old_at = old_tokens["access_token"].as_str().unwrap().to_string();
    let old_rt = old_tokens["refresh_token"].as_str().unwrap().to_string();
    let old_cc = cc_token(&old, &robot.0, &robot.1, NOTES, "notes:read").await;

    // This release starts on the same database and brings its schema up to date. While the
    // previous release runs beside it, it issues secrets of the shape that release reads
    // (UPGRADE.md).
    let mut beside_env = env.to_vec();
    beside_env.push(("CONCIERGE_TOKENS__ORDERED_SECRETS", "false"));
    let new = Replica::start(d, |_| issuer.clone(), &url, &beside_env).await;
    let (_, after) = concierge::store::open(&url, Open::Existing).await.unwrap();
    assert_eq!(after.latest(), concierge::store::latest_migration());
    assert!(after.pending.is_empty(), "{after:?}");

    // Both serve at once. Tokens of each validate at the other.
    let new_cc = cc_token(&new, &robot.0, &robot.1, NOTES, "notes:read").await;
    for token in [&old_at, &old_cc] {
        let body = introspect(&new, &rs, token).await;
        assert_eq!(
            body["active"], true,
            "the previous release's at this one: {body}"
        );
    }
    let body = introspect(&old, &rs, &new_cc).await;
    assert_eq!(body["active"], true, "at the previous release: {body}");
    // Client credentials work at both (the old one still, after the migration).
    cc_token(&old, &robot.0, &robot.1, NOTES, "notes:read").await;

    // A refresh token of the old one refreshes at the new one, and back, and again.
    let (s, _, body) = refresh(&new, &agent, &old_rt, &[]).await;
    assert_eq!(s, 200, "old → new: {body}");
    let rt = body["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(rt.len(), 43, "the earlier shape: {rt}");
    let (s, _, body) = refresh(&old, &agent, &rt, &[]).await;
    assert_eq!(s, 200, "new → old: {body}");
    let rt = body["refresh_token"].as_str().unwrap().to_string();
    let (s, _, body) = refresh(&new, &agent, &rt, &[]).await;
    assert_eq!(s, 200, "old → new again: {body}");
    let rt = body["refresh_token"].as_str().unwrap().to_string();

    // A client registered at the new one works at the old one, and its tokens at both.
    let second = public_client(&new).await;
    let tokens = code_flow(&old, &second).await;
    let body = introspect(&new, &rs, tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(body["active"], true, "{body}");
    let (s, _, body) = refresh(
        &new,
        &second,
        tokens["refresh_token"].as_str().unwrap(),
        &[],
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let tokens = code_flow(&new, &agent).await;
    let body = introspect(&old, &rs, tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(body["active"], true, "{body}");

    // A replica of the previous release restarting now finds a newer schema.
    old.stop();
    let restarted = Replica::try_start(&old_bin, d, free_port(), &issuer, &url, &env).await;
    let previous = PREVIOUS_RELEASE.trim();
    match restarted {
        Err(log) => {
            assert!(
                CANNOT_RESTART_ON_A_NEWER_SCHEMA.contains(&previous),
                "the previous release {previous} does not start on this release's schema; \
                 every release from the one that fixed it on must (expand-then-contract, \
                 UPGRADE.md). Its log:\n{log}"
            );
            assert!(
                log.contains("previously applied but is missing"),
                "it refuses the migrations it does not know: {log}"
            );
            eprintln!(
                "the previous release {previous} does not restart on the newer schema, as \
                 recorded (UPGRADE.md: do not restart its replicas during this update)"
            );
        }
        Ok(again) => {
            cc_token(&again, &robot.0, &robot.1, NOTES, "notes:read").await;
            let body = introspect(&again, &rs, &new_cc).await;
            assert_eq!(body["active"], true, "{body}");
            again.stop();
        }
    }

    // Meanwhile this release serves on.
    let (s, _, body) = refresh(&new, &agent, &rt, &[]).await;
    assert_eq!(s, 200, "{body}");
    let rt = body["refresh_token"].as_str().unwrap().to_string();
    new.stop();

    // The update done, this release runs with its default settings: the refresh token it
    // issued in the earlier shape still refreshes, into one that begins with its issue time.
    let new = Replica::start(d, |_| issuer.clone(), &url, &env).await;
    let (s, _, body) = refresh(&new, &agent, &rt, &[]).await;
    assert_eq!(s, 200, "{body}");
    let rt = body["refresh_token"].as_str().unwrap();
    assert_eq!(rt.len(), 54, "the new shape: {rt}");
    let (s, _, body) = refresh(&new, &agent, rt, &[]).await;
    assert_eq!(s, 200, "{body}");
    new.stop();
    drop_database(&name.unwrap()).await;
}

/// Mark a migration this build does not have as applied, as a newer release would.
async fn apply_unknown_migration(url: &str) {
    const INSERT: &str = "INSERT INTO _sqlx_migrations \
        (version, description, success, checksum, execution_time) \
        VALUES (9999, 'from the future', TRUE, $1, 0)";
    let checksum = vec![0u8; 48];
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        sqlx::query(INSERT)
            .bind(checksum)
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        sqlx::query(INSERT)
            .bind(checksum)
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
}

/// This build's `serve` (and operator commands) on a database a newer release migrated: it
/// starts, and says which migrations it does not know. So the next release's rolling-update
/// test can restart this one.
async fn serve_on_a_newer_schema(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let Some((url, name)) = fresh_database(backend, d).await else {
        return;
    };
    concierge::store::connect(&url).await.unwrap();
    apply_unknown_migration(&url).await;

    let kek = shared_kek();
    let env = [("CONCIERGE_KEY_ENCRYPTION_KEY", kek.as_str())];
    let server = Replica::start(d, |port| format!("http://127.0.0.1:{port}"), &url, &env).await;
    let (_, schema) = concierge::store::open(&url, Open::Existing).await.unwrap();
    assert_eq!(schema.unknown, vec!["9999_from_the_future".to_string()]);
    assert!(schema.pending.is_empty());
    let (s, _, body) = split(
        server
            .http()
            .get(server.url("/.well-known/oauth-authorization-server"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let log_path = server.log.clone();
    server.stop();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("newer than this binary") && log.contains("9999_from_the_future"),
        "the server warns, naming the migration: {log}"
    );

    let cli_env = [
        ("CONCIERGE_DATABASE_URL", url.as_str()),
        ("CONCIERGE_KEY_ENCRYPTION_KEY", kek.as_str()),
    ];
    let r = crate::export_import::concierge(d, &["migrate", "--check"], &cli_env);
    assert!(r.ok && r.stdout.contains("9999_from_the_future"), "{r}");
    let r = crate::export_import::concierge(d, &["user", "list"], &cli_env);
    assert!(r.ok && r.stderr.contains("9999_from_the_future"), "{r}");
    if let Some(name) = name {
        drop_database(&name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_starts_on_a_schema_with_a_migration_it_does_not_know_sqlite() {
    serve_on_a_newer_schema(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_starts_on_a_schema_with_a_migration_it_does_not_know_postgres() {
    serve_on_a_newer_schema(Backend::Postgres).await;
}
