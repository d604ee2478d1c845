//! Issue 17.4: nothing committed is lost. Agents rotate refresh tokens, ask for codes and
//! register clients as fast as they can while the server is killed with SIGKILL: on SQLite
//! the server is then started again on the same file; on PostgreSQL one of two replicas is
//! killed and the other answers. Every refresh token, code and registration whose answer
//! reached its client works afterwards.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::flow::*;
use crate::helpers::{Backend, Server, drop_database, fresh_database};
use crate::process::{Replica, shared_kek};

/// Agents rotating refresh tokens at once.
const AGENTS: usize = 4;
/// How long the load runs before the kill.
const LOAD: Duration = Duration::from_millis(1500);

/// A refresh token from the code flow at `app` (alice's consent is remembered after the
/// first one).
pub(crate) async fn first_refresh_token(
    app: &impl Server,
    b: &reqwest::Client,
    client_id: &str,
) -> String {
    tokens_for(app, b, client_id).await["refresh_token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The token response to the code flow at `app` (see [`code_for`]).
async fn tokens_for(app: &impl Server, b: &reqwest::Client, client_id: &str) -> Value {
    let (verifier, challenge) = pkce();
    let code = code_for(app, b, client_id, &challenge).await;
    let (s, _, body) = redeem(app, client_id, &code, &verifier, &[]).await;
    assert_eq!(s, 200, "{body}");
    body
}

/// A code for `challenge` from the code flow at `app`: alice signs in when she must, and
/// approves when asked (on a page of its own, or the answer to her sign-in).
async fn code_for(
    app: &impl Server,
    b: &reqwest::Client,
    client_id: &str,
    challenge: &str,
) -> String {
    let params = auth_params(client_id, challenge, "notes:read");
    let mut res = b.get(authorize_url(app, &params)).send().await.unwrap();
    loop {
        if res.status() == 200 {
            let html = res.text().await.unwrap();
            res = decide(app, b, &html, "approve").await;
            continue;
        }
        assert_eq!(res.status(), 303, "{:?}", res.text().await);
        let at = location(&res);
        if at.starts_with(REDIRECT) {
            return query(&at)["code"].clone();
        }
        let url = format!("{}{at}", app.origin());
        res = if at.contains("/signin?") {
            sign_in(app, b, &url, "alice", PASSWORD).await
        } else {
            b.get(&url).send().await.unwrap()
        };
    }
}

/// Rotate `token` at `token_url` until the server stops answering; the last token whose
/// answer arrived, and how many rotations were answered.
async fn rotate_until_killed(
    token_url: String,
    client_id: String,
    mut token: String,
) -> (String, usize) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut answered = 0;
    loop {
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", client_id.as_str()),
            ("refresh_token", token.as_str()),
        ];
        let Ok(res) = http.post(&token_url).form(&form).send().await else {
            return (token, answered);
        };
        let status = res.status();
        let Ok(body) = res.json::<Value>().await else {
            return (token, answered);
        };
        assert_eq!(status, 200, "{body}");
        token = body["refresh_token"].as_str().unwrap().to_string();
        answered += 1;
    }
}

/// Ask for codes at `authorize` (the authorization endpoint's URL) as the signed-in browser
/// `b`, whose consent to `client_id` is remembered, until the server stops answering: each
/// code answered (a 303 to the client) with its PKCE verifier.
async fn authorize_until_killed(
    authorize: String,
    b: reqwest::Client,
    client_id: String,
) -> Vec<(String, String)> {
    let mut codes = Vec::new();
    loop {
        let (verifier, challenge) = pkce();
        let params = auth_params(&client_id, &challenge, "notes:read");
        let url = format!(
            "{authorize}?{}",
            serde_urlencoded::to_string(&params).unwrap()
        );
        let Ok(res) = b.get(&url).send().await else {
            return codes;
        };
        assert_eq!(
            res.status(),
            303,
            "a remembered consent answers with a code"
        );
        let at = location(&res);
        assert!(at.starts_with(REDIRECT), "{at}");
        codes.push((query(&at)["code"].clone(), verifier));
    }
}

/// Register clients at `url` until the server stops answering; the ids answered with 201.
async fn register_until_killed(url: String, ids: Arc<Mutex<Vec<String>>>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    loop {
        let body = json!({
            "client_name": "Durable Agent",
            "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "none",
        });
        let Ok(res) = http.post(&url).json(&body).send().await else {
            return;
        };
        let status = res.status();
        let Ok(v) = res.json::<Value>().await else {
            return;
        };
        if status == 201 {
            ids.lock()
                .unwrap()
                .push(v["client_id"].as_str().unwrap().to_string());
        }
        // Registrations are rate-limited per address: slow enough to stay under it.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn nothing_answered_is_lost(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some((url, database)) = fresh_database(backend, dir.path()).await else {
        return;
    };
    let kek = shared_kek();
    // The token endpoint's limits per client and per address (1,200 a minute by default)
    // are off: rotating as fast as it can, the load passes them within its second and a
    // half, and this test is about what was answered, not about refusals.
    let env = [
        ("CONCIERGE_KEY_ENCRYPTION_KEY", kek.as_str()),
        ("CONCIERGE_RATE_LIMITS__TOKEN_PER_CLIENT", "0"),
        ("CONCIERGE_RATE_LIMITS__TOKEN_PER_ADDRESS", "0"),
    ];
    let victim = Replica::start(dir.path(), |p| format!("http://127.0.0.1:{p}"), &url, &env).await;
    let issuer = victim.issuer.clone();
    // PostgreSQL: a second replica behind the same issuer, which stays up.
    let survivor = match backend {
        Backend::Postgres => Some(Replica::start(dir.path(), |_| issuer.clone(), &url, &env).await),
        Backend::Sqlite => None,
    };
    seed(&victim).await;
    let client = public_client(&victim).await;
    let b = browser();
    let mut agents = Vec::new();
    for _ in 0..AGENTS {
        let token = first_refresh_token(&victim, &b, &client).await;
        agents.push(tokio::spawn(rotate_until_killed(
            victim.url("/token"),
            client.clone(),
            token,
        )));
    }
    let registered = Arc::new(Mutex::new(Vec::new()));
    let registering = tokio::spawn(register_until_killed(
        victim.url("/register"),
        registered.clone(),
    ));
    // Codes too: on PostgreSQL a code's commit does not wait for the disk, but it stands in
    // the database once answered, whoever dies after.
    let authorizing = tokio::spawn(authorize_until_killed(
        victim.url("/authorize"),
        b.clone(),
        client.clone(),
    ));

    tokio::time::sleep(LOAD).await;
    drop(victim); // SIGKILL, mid-request.
    let mut last = Vec::new();
    let mut rotations = 0;
    for a in agents {
        let (token, n) = a.await.unwrap();
        rotations += n;
        last.push(token);
    }
    registering.await.unwrap();
    let codes = authorizing.await.unwrap();
    assert!(
        rotations >= AGENTS * 5,
        "the load ran: {rotations} rotations"
    );
    assert!(codes.len() >= 5, "the load ran: {} codes", codes.len());

    let after = match survivor {
        Some(s) => s,
        None => Replica::start(dir.path(), |_| issuer.clone(), &url, &env).await,
    };
    // Each agent's last answered token works. (The one an agent sent when the server died
    // may have been rotated by a commit whose answer was lost: its reuse is within the
    // refresh grace window, which answers as the lost answer would have.)
    for token in &last {
        let (s, _, body) = refresh(&after, &client, token, &[]).await;
        assert_eq!(
            s, 200,
            "{backend:?}: an answered refresh token was lost: {body}"
        );
    }
    // The last codes answered before the kill, the ones a lost commit would take, are
    // redeemed (each redemption takes a moment; the earlier codes were committed as these).
    for (code, verifier) in codes.iter().rev().take(20) {
        let (s, _, body) = redeem(&after, &client, code, verifier, &[]).await;
        assert_eq!(s, 200, "{backend:?}: an answered code was lost: {body}");
    }
    let ids = registered.lock().unwrap().clone();
    assert!(!ids.is_empty(), "registrations ran");
    eprintln!(
        "{backend:?}: killed after {rotations} rotations, {} codes and {} registrations answered",
        codes.len(),
        ids.len()
    );
    let store = after.store();
    for id in &ids {
        assert!(
            store
                .get_client(id, concierge::util::now())
                .await
                .unwrap()
                .is_some(),
            "{backend:?}: registered client {id} was lost"
        );
    }
    // The audit log lost no event of those changes.
    let events = store
        .list_audit(&concierge::store::AuditQuery {
            kind: Some("client.registered".into()),
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap();
    for id in &ids {
        assert!(
            events
                .iter()
                .any(|e| e.client_id.as_deref() == Some(id.as_str())),
            "{backend:?}: the registration of {id} is missing from the audit log"
        );
    }
    after.stop();
    if let Some(name) = database {
        drop_database(&name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_nothing_answered_on_sqlite() {
    nothing_answered_is_lost(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_one_replica_under_load_loses_nothing_answered_on_postgres() {
    nothing_answered_is_lost(Backend::Postgres).await;
}

/// A code's redemption commits without waiting for the disk (PostgreSQL's asynchronous
/// commit); the answer must still wait for it. With a refresh token, whose insert waits
/// for the disk and flushes the WAL before it, and without one, where the redemption is
/// made durable on its own: either way the WAL is flushed past where it ended before the
/// redemption when the tokens reach the client. (Other tests' commits flush the same WAL,
/// so run alongside them this can pass without the wait; alone, without it, it fails.)
#[tokio::test]
async fn a_redeemed_code_is_on_disk_before_the_answer_on_postgres() {
    let Some((app, db, b)) = seeded_on_postgres().await else {
        return;
    };
    for grant_types in [
        json!(["authorization_code", "refresh_token"]),
        json!(["authorization_code"]),
    ] {
        let (status, _, body) = app
            .register(&json!({
                "redirect_uris": [REDIRECT],
                "grant_types": grant_types,
                "token_endpoint_auth_method": "none",
            }))
            .await;
        assert_eq!(status, 201, "{body}");
        let client_id = body["client_id"].as_str().unwrap();
        // A first redemption writes the consent's and the client's first use after it,
        // waiting for the disk; the next, within the minute, writes nothing after it but
        // its refresh token, if any.
        tokens_for(&app, &b, client_id).await;
        let (verifier, challenge) = pkce();
        let code = code_for(&app, &b, client_id, &challenge).await;
        // Past the audit writer's lingering batch of the sign-in's events.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = wal_end(&db).await;
        let (s, _, tokens) = redeem(&app, client_id, &code, &verifier, &[]).await;
        assert_eq!(s, 200, "{tokens}");
        assert_eq!(
            tokens.get("refresh_token").is_some(),
            grant_types.as_array().unwrap().len() == 2,
            "{tokens}"
        );
        assert!(
            flushed_past(&db, &before).await,
            "{grant_types}: the redemption was not on disk when the tokens were answered"
        );
    }
}

/// A seeded server on PostgreSQL, a connection to its database and a browser; `None` where
/// PostgreSQL is not there (and CI is not set).
async fn seeded_on_postgres() -> Option<(crate::helpers::TestApp, sqlx::PgPool, reqwest::Client)> {
    seeded_on_postgres_with(|_| {}).await
}

/// [`seeded_on_postgres`] with its configuration changed by `configure`.
async fn seeded_on_postgres_with(
    configure: impl FnOnce(&mut concierge::config::Config) + 'static,
) -> Option<(crate::helpers::TestApp, sqlx::PgPool, reqwest::Client)> {
    let app = crate::helpers::TestApp::builder(Backend::Postgres)
        .configure(configure)
        .start()
        .await?;
    seed(&app).await;
    let db = sqlx::PgPool::connect(app.config.database_url.as_deref().unwrap())
        .await
        .unwrap();
    Some((app, db, browser()))
}

/// RFC 7009 revocation of `token` by the public client `client_id`.
async fn revoke(
    app: &impl Server,
    client_id: &str,
    token: &str,
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    crate::helpers::post_form(
        app,
        "/revoke",
        vec![("client_id", client_id), ("token", token)],
        &[],
    )
    .await
}

/// Where PostgreSQL's WAL ends now.
async fn wal_end(db: &sqlx::PgPool) -> String {
    let (lsn,): (String,) = sqlx::query_as("SELECT pg_current_wal_insert_lsn()::text")
        .fetch_one(db)
        .await
        .unwrap();
    lsn
}

/// Has PostgreSQL flushed its WAL past `lsn`?
async fn flushed_past(db: &sqlx::PgPool, lsn: &str) -> bool {
    let (flushed,): (bool,) = sqlx::query_as("SELECT pg_current_wal_flush_lsn() > $1::pg_lsn")
        .bind(lsn)
        .fetch_one(db)
        .await
        .unwrap();
    flushed
}

/// A revocation and a registration store their audit events in their own writes, committed
/// without waiting for the disk and then settled before the answer: what the answer reports
/// is on disk when it arrives, and when the event cannot be stored, neither is the change,
/// and the answer is a 500. (Like the
/// test above, the flush checks can pass by luck while other tests flush the same WAL; they
/// never fail wrongly.)
#[tokio::test]
async fn a_revocation_and_a_registration_are_on_disk_before_their_answers_on_postgres() {
    let Some((app, db, b)) = seeded_on_postgres().await else {
        return;
    };
    let client_id = &public_client(&app).await;
    for events_fail in [false, true] {
        if events_fail {
            sqlx::query(
                "ALTER TABLE audit_events ADD CONSTRAINT refused \
                 CHECK (kind NOT IN ('token.revoked', 'client.registered')) NOT VALID",
            )
            .execute(&db)
            .await
            .unwrap();
        }
        let refresh_token = first_refresh_token(&app, &b, client_id).await;
        // Past the audit writer's lingering batch of the code flow's events.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = wal_end(&db).await;
        let (s, _, body) = revoke(&app, client_id, &refresh_token).await;
        if events_fail {
            assert_eq!(s, 500, "{body}");
            assert_eq!(body["error"], "server_error", "{body}");
            let (s, _, body) = refresh(&app, client_id, &refresh_token, &[]).await;
            assert_eq!(s, 200, "revoked without its event: {body}");
        } else {
            assert_eq!(s, 200, "{body}");
            assert!(
                flushed_past(&db, &before).await,
                "the revocation was not on disk when it was answered"
            );
            let (s, _, body) = refresh(&app, client_id, &refresh_token, &[]).await;
            assert_eq!(s, 400, "the revoked token still works: {body}");
        }

        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = wal_end(&db).await;
        let name = format!("later, events fail: {events_fail}");
        let (s, _, body) = app
            .register(&json!({ "redirect_uris": [REDIRECT], "client_name": name }))
            .await;
        if events_fail {
            assert_eq!(s, 500, "{body}");
            assert_eq!(body["error"], "server_error", "{body}");
            let stored: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM clients WHERE metadata::jsonb ->> 'client_name' = $1",
            )
            .bind(&name)
            .fetch_one(&db)
            .await
            .unwrap();
            assert_eq!(stored, 0, "a client was stored without its event");
        } else {
            assert_eq!(s, 201, "{body}");
            assert!(
                flushed_past(&db, &before).await,
                "the client was not on disk when it was answered"
            );
        }
    }
}

/// A replayed refresh token revokes its family with a commit that does not wait for the
/// disk: its answer waits once, for the replay's audit event, whose commit flushes the WAL
/// past it; when storing the event fails, for a write that waits instead (`store::commits`).
/// When neither can be stored, the answer is a 500, not a refusal that may be lost.
#[tokio::test]
async fn a_replays_revocation_is_on_disk_before_its_answer_on_postgres() {
    let Some((app, db, b)) =
        seeded_on_postgres_with(|c| c.tokens.refresh_reuse_grace_secs = 0).await
    else {
        return;
    };
    let client_id = &public_client(&app).await;
    // A replay of a rotated token: the family is revoked, the successor with it.
    let replayed = || {
        let (app, b, db) = (&app, &b, &db);
        async move {
            let first = first_refresh_token(app, b, client_id).await;
            let (s, _, body) = refresh(app, client_id, &first, &[]).await;
            assert_eq!(s, 200, "{body}");
            let successor = body["refresh_token"].as_str().unwrap().to_string();
            tokio::time::sleep(Duration::from_millis(300)).await;
            let before = wal_end(db).await;
            let (s, _, body) = refresh(app, client_id, &first, &[]).await;
            (s, body, flushed_past(db, &before).await, successor)
        }
    };
    for events_fail in [false, true] {
        if events_fail {
            sqlx::query(
                "ALTER TABLE audit_events ADD CONSTRAINT refused \
                 CHECK (kind <> 'refresh.reuse_detected') NOT VALID",
            )
            .execute(&db)
            .await
            .unwrap();
        }
        let (s, body, flushed, successor) = replayed().await;
        assert_eq!(s, 400, "{body}");
        assert!(
            flushed,
            "events fail: {events_fail}: the family's revocation was not on disk when the \
             replay was answered"
        );
        let (s, _, body) = refresh(&app, client_id, &successor, &[]).await;
        assert_eq!(
            s, 400,
            "the successor of a replayed token still works: {body}"
        );
    }
    // With the events still refused and the barrier gone too, nothing can say the revocation
    // is on disk: the answer is an error, not a refusal that may be lost.
    sqlx::query("DROP SEQUENCE commit_barrier")
        .execute(&db)
        .await
        .unwrap();
    let (s, body, _, _) = replayed().await;
    assert_eq!(s, 500, "{body}");
    assert_eq!(body["error"], "server_error", "{body}");
}
