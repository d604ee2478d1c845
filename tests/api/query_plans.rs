//! Issue 17.2: no query on a request path scans a table. A real server runs the token paths
//! (registration, sign-in, `/authorize` with remembered consent, code redemption, refresh,
//! userinfo, revocation, client credentials, token exchange through a delegation chain,
//! discovery, JWKS) with sqlx's statement log on;
//! every statement it ran is then explained on the same database: SQLite's query plan, and
//! PostgreSQL's generic plan with sequential scans priced out. A full scan is allowed only of
//! the operator's small configuration tables. The sweeper's deletions are explained too: they
//! run once a minute whatever the traffic, and a scan of a million-row table each time (on
//! SQLite, under the one write lock) would show in every request's latency.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::durability::first_refresh_token;
use crate::flow::*;
use crate::helpers::{Backend, Server, drop_database, fresh_database};
use crate::process::{Replica, shared_kek};

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// Tables an operator fills by hand (keys, resources, policies, providers): a handful of rows,
/// read whole into caches.
const SMALL: &[&str] = &[
    "_sqlx_migrations",
    "signing_keys",
    "resources",
    "resource_aliases",
    "exchange_policies",
    "id_jag_policies",
    "id_jag_trusted_issuers",
    "upstream_providers",
];

/// The statements the server logged after byte `from` of its log, each on its own.
fn statements(log: &str, from: usize) -> BTreeSet<String> {
    log[from..]
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "sqlx::query")
        .filter_map(|v| v["fields"]["db.statement"].as_str().map(str::to_string))
        // Statements sent together (SQLite's family revocation) are explained one by one:
        // `EXPLAIN` covers only the first of several.
        .flat_map(|s| {
            s.split(';')
                .map(|one| one.trim().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|s| {
            let head = s
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_uppercase();
            matches!(
                head.as_str(),
                "SELECT" | "INSERT" | "UPDATE" | "DELETE" | "WITH"
            )
        })
        .collect()
}

/// The highest `$n` placeholder of a statement.
fn placeholders(sql: &str) -> usize {
    let mut max = 0;
    let b = sql.as_bytes();
    for (i, c) in b.iter().enumerate() {
        if *c == b'$' {
            let digits: String = sql[i + 1..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            max = max.max(digits.parse().unwrap_or(0));
        }
    }
    max
}

/// `sql` with the placeholders of `$a - $b` (and `+`) typed as bigint: PostgreSQL cannot
/// infer them without the values sqlx binds (they are times, in seconds).
fn typed_arithmetic(sql: &str) -> String {
    let mut words: Vec<String> = sql.split_whitespace().map(str::to_string).collect();
    // A placeholder with the parentheses or comma written against it (`($2`, `$3)`): where
    // the placeholder ends in the word, or `None`.
    let param_end = |w: &str| {
        let start = w.find('$')?;
        let digits = w[start + 1..]
            .chars()
            .take_while(char::is_ascii_digit)
            .count();
        let end = start + 1 + digits;
        let framed =
            w[..start].chars().all(|c| c == '(') && w[end..].chars().all(|c| c == ')' || c == ',');
        (digits > 0 && framed).then_some(end)
    };
    for i in 1..words.len().saturating_sub(1) {
        if !matches!(words[i].as_str(), "-" | "+") {
            continue;
        }
        if let (Some(a), Some(b)) = (param_end(&words[i - 1]), param_end(&words[i + 1])) {
            words[i - 1].insert_str(a, "::bigint");
            words[i + 1].insert_str(b, "::bigint");
        }
    }
    words.join(" ")
}

/// The lines of `sql`'s plan: SQLite's query plan; PostgreSQL's generic plan (what a
/// prepared statement settles on) with sequential scans priced out, for NULL parameters.
async fn plan(backend: Backend, url: &str, sql: &str) -> Vec<String> {
    use sqlx::Connection as _;
    match backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
            let rows: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                    .fetch_all(&mut c)
                    .await
                    .unwrap_or_else(|e| panic!("{e}: {sql}"));
            rows.into_iter().map(|r| r.3).collect()
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            for set in [
                "SET enable_seqscan = off",
                "SET plan_cache_mode = force_generic_plan",
            ] {
                sqlx::query(set).execute(&mut c).await.unwrap();
            }
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "PREPARE planned AS {}",
                typed_arithmetic(sql)
            )))
            .execute(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{e}: {sql}"));
            let nulls = vec!["NULL"; placeholders(sql)].join(", ");
            let explain = if nulls.is_empty() {
                "EXPLAIN EXECUTE planned".to_string()
            } else {
                format!("EXPLAIN EXECUTE planned({nulls})")
            };
            let rows: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(explain))
                .fetch_all(&mut c)
                .await
                .unwrap_or_else(|e| panic!("{e}: {sql}"));
            rows.into_iter().map(|(l,)| l).collect()
        }
    }
}

/// The full scans of `sql`'s plan, by table, other than of [`SMALL`] tables.
async fn full_scans(backend: Backend, url: &str, sql: &str) -> Vec<String> {
    let lines = plan(backend, url, sql).await;
    let tables: Vec<String> = match backend {
        Backend::Sqlite => lines
            .into_iter()
            // A VALUES list, a constant row or a JSON parameter's elements (a virtual table,
            // named or by its alias) is no table.
            .filter(|d| d.starts_with("SCAN ") && !d.ends_with("VALUES CLAUSE"))
            .filter(|d| d != "SCAN CONSTANT ROW")
            .filter(|d| !d.starts_with("SCAN json_each") && !d.starts_with("SCAN jsonb_each"))
            .filter(|d| !d.contains(" VIRTUAL TABLE"))
            .map(|d| {
                d["SCAN ".len()..]
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .collect(),
        Backend::Postgres => lines
            .into_iter()
            .filter_map(|l| {
                l.split_once("Seq Scan on ")
                    .map(|(_, t)| t.split_whitespace().next().unwrap_or("").to_string())
            })
            .collect(),
    };
    tables
        .into_iter()
        .filter(|t| !SMALL.contains(&t.as_str()))
        .collect()
}

async fn no_scans_on_request_paths(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some((url, database)) = fresh_database(backend, dir.path()).await else {
        return;
    };
    let kek = shared_kek();
    let env = [
        ("CONCIERGE_KEY_ENCRYPTION_KEY", kek.as_str()),
        ("CONCIERGE_LOG_FORMAT", "json"),
        ("RUST_LOG", "info,sqlx::query=debug"),
        ("CONCIERGE_REGISTRATION__ALLOW_CLIENT_CREDENTIALS", "true"),
    ];
    let app = Replica::start(dir.path(), |p| format!("http://127.0.0.1:{p}"), &url, &env).await;
    seed(&app).await;
    // What start-up ran is not a request path.
    let from = std::fs::read_to_string(&app.log).unwrap().len();

    let http = app.http();
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
        "/jwks",
    ] {
        assert_eq!(
            http.get(app.url(path)).send().await.unwrap().status(),
            200,
            "{path}"
        );
    }
    let client = public_client(&app).await;
    let b = browser();
    // Twice: the second authorization finds the session and the remembered consent.
    let first = first_refresh_token(&app, &b, &client).await;
    let second = first_refresh_token(&app, &b, &client).await;
    let (s, _, body) = refresh(&app, &client, &first, &[]).await;
    assert_eq!(s, 200, "{body}");
    let at = body["access_token"].as_str().unwrap().to_string();
    let res = http
        .get(app.url("/userinfo"))
        .bearer_auth(&at)
        .send()
        .await
        .unwrap();
    assert!(
        res.status().is_success() || res.status() == 401,
        "{}",
        res.status()
    );
    let res = http
        .post(app.url("/revoke"))
        .form(&[("token", second.as_str()), ("client_id", client.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let (s, _, machine) = app
        .register(&json!({
            "client_name": "Machine",
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "client_secret_basic",
            "scope": "notes:read",
        }))
        .await;
    assert_eq!(s, 201, "{machine}");
    let res = http
        .post(app.url("/token"))
        .basic_auth(
            machine["client_id"].as_str().unwrap(),
            machine["client_secret"].as_str(),
        )
        .form(&[
            ("grant_type", "client_credentials"),
            ("resource", NOTES),
            ("scope", "notes:read"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{:?}", res.text().await);
    // Token exchange: the first records its delegation hop, the second finds it, and an
    // exchange of the exchanged token checks the hop and records the next one.
    let (s, _, server) = app
        .register(&json!({
            "client_name": "Calendar server",
            "grant_types": [TOKEN_EXCHANGE],
            "token_endpoint_auth_method": "client_secret_basic",
        }))
        .await;
    assert_eq!(s, 201, "{server}");
    let server_id = server["client_id"].as_str().unwrap();
    for (target, source, from, to) in [
        (CALENDAR, NOTES, "notes:read", "calendar:read"),
        (NOTES, CALENDAR, "calendar:read", "notes:read"),
    ] {
        app.store()
            .save_exchange_policy(&concierge::store::ExchangePolicy {
                target: target.into(),
                client_id: server_id.into(),
                source: source.into(),
                scope_map: [(from.to_string(), vec![to.to_string()])].into(),
                created_at: 0,
            })
            .await
            .unwrap();
    }
    let exchange = |subject: String, target: &'static str| {
        let http = http.clone();
        let url = app.url("/token");
        let (id, secret) = (server_id.to_string(), server["client_secret"].clone());
        async move {
            let res = http
                .post(url)
                .basic_auth(id, secret.as_str())
                .form(&[
                    ("grant_type", TOKEN_EXCHANGE),
                    ("subject_token", subject.as_str()),
                    (
                        "subject_token_type",
                        "urn:ietf:params:oauth:token-type:access_token",
                    ),
                    ("resource", target),
                ])
                .send()
                .await
                .unwrap();
            let body: Value = res.json().await.unwrap();
            body["access_token"]
                .as_str()
                .unwrap_or_else(|| panic!("{body}"))
                .to_string()
        }
    };
    exchange(at.clone(), CALENDAR).await;
    let hop = exchange(at.clone(), CALENDAR).await;
    exchange(hop, NOTES).await;
    // The audit writer lingers before it writes.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let log = std::fs::read_to_string(&app.log).unwrap();
    let mut ran = statements(&log, from);
    assert!(ran.len() >= 10, "the statement log is on: {ran:?}");
    // The sweeper's first pass runs at start-up.
    let swept: BTreeSet<String> = statements(&log, 0)
        .into_iter()
        .filter(|s| s.starts_with("DELETE") && (s.contains(" < $1") || s.contains(" <= $1")))
        .collect();
    assert!(swept.len() >= 8, "the sweeper's deletions: {swept:?}");
    ran.extend(swept);
    // A refresh's rotation, a code's or device's redemption, a family's revocation and (on
    // PostgreSQL) a refresh token's, a session's or a user's look-up batched with others' (under
    // concurrent requests only, so not certainly in the log): their statements, explained
    // whether or not they ran.
    let batched: &[&str] = match backend {
        Backend::Sqlite => &[
            concierge::store::refresh_tokens::ROTATE_MANY_SQLITE,
            concierge::store::refresh_tokens::REVOKE_MANY_SQLITE,
        ],
        Backend::Postgres => &[
            concierge::store::refresh_tokens::ROTATE_MANY_POSTGRES,
            concierge::store::codes::REDEEM_MANY_POSTGRES,
            concierge::store::devices::REDEEM_MANY_POSTGRES,
            concierge::store::refresh_tokens::REVOKE_MANY_POSTGRES,
            concierge::store::refresh_tokens::LOOK_UP_MANY_POSTGRES,
            concierge::store::sessions::LOOK_UP_MANY_POSTGRES,
            concierge::store::users::LOOK_UP_MANY_POSTGRES,
        ],
    };
    for statement in batched {
        ran.extend(statement.split(';').map(|one| one.trim().to_string()));
    }
    eprintln!("{backend:?}: {} distinct statements explained", ran.len());
    let mut scans = Vec::new();
    for sql in &ran {
        for table in full_scans(backend, &url, sql).await {
            scans.push(format!("{table}: {sql}"));
        }
    }
    // The check sees a scan where there is one: no index covers an audit event's detail.
    let unindexed = "SELECT id FROM audit_events WHERE detail = $1";
    assert_eq!(
        full_scans(backend, &url, unindexed).await,
        vec!["audit_events"]
    );
    assert!(
        scans.is_empty(),
        "{backend:?}: full scans on request paths:\n{}",
        scans.join("\n\n")
    );
    app.stop();
    if let Some(name) = database {
        drop_database(&name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_path_query_scans_a_table_on_sqlite() {
    no_scans_on_request_paths(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_path_query_scans_a_table_on_postgres() {
    no_scans_on_request_paths(Backend::Postgres).await;
}

crate::both!(
    audit_listings_name_only_their_filters_and_walk_their_index,
    |app: crate::helpers::TestApp| async move {
        use concierge::store::{AuditQuery, NewAuditEvent};
        let store = app.store();
        let url = app.config.database_url();
        let backend = if store.backend() == "postgres" {
            Backend::Postgres
        } else {
            Backend::Sqlite
        };
        // Far in the future, so the sweeper leaves them and no other event is as late; ids
        // unique to this test.
        let t = concierge::util::now() + 1_000_000;
        let tag = concierge::util::random_id();
        let (c1, c2, u1) = (
            format!("c1-{tag}"),
            format!("c2-{tag}"),
            format!("u1-{tag}"),
        );
        let event =
            |at: i64, kind: &'static str, client: Option<&str>, user: Option<&str>| NewAuditEvent {
                at,
                kind,
                client_id: client.map(str::to_string),
                user_id: user.map(str::to_string),
                ip: None,
                detail: format!("{{\"n\":{}}}", at - t),
            };
        store
            .append_audit(&[
                event(t, "token.issued", Some(&c1), None),
                event(t + 1, "token.revoked", Some(&c1), Some(&u1)),
                event(t + 2, "signin.failed", None, Some(&u1)),
                event(t + 3, "token.issued", Some(&c2), None),
                event(t + 4, "tokens.other", Some(&c2), None),
            ])
            .await
            .unwrap();
        let list = |q: AuditQuery| {
            let store = store.clone();
            async move {
                let found: Vec<i64> = store
                    .list_audit(&q)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|e| e.at - t)
                    .collect();
                found
            }
        };
        let q = |f: &dyn Fn(&mut AuditQuery)| {
            let mut q = AuditQuery {
                limit: 50,
                ..AuditQuery::default()
            };
            f(&mut q);
            q
        };
        let by_client = q(&|q| q.client_id = Some(c1.clone()));
        let by_user = q(&|q| q.user_id = Some(u1.clone()));
        assert_eq!(list(by_client.clone()).await, [1, 0], "newest first");
        assert_eq!(list(by_user.clone()).await, [2, 1]);
        // A kind's first part matches the kinds under it, not a longer word.
        let tokens = q(&|q| {
            q.since = Some(t);
            q.kind = Some("token".into());
        });
        assert_eq!(list(tokens).await, [3, 1, 0]);
        let exact = q(&|q| {
            q.since = Some(t);
            q.kind = Some("token.issued".into());
        });
        assert_eq!(list(exact).await, [3, 0]);
        let window = q(&|q| {
            q.since = Some(t + 1);
            q.until = Some(t + 3);
        });
        assert_eq!(list(window).await, [2, 1]);
        let page = store.list_audit(&by_client).await.unwrap();
        let older = q(&|q| {
            q.client_id = Some(c1.clone());
            q.before_id = Some(page[0].id);
        });
        assert_eq!(list(older).await, [0], "the next page");
        let first = q(&|q| {
            q.user_id = Some(u1.clone());
            q.limit = 1;
        });
        assert_eq!(list(first).await, [2]);
        let both = q(&|q| {
            q.client_id = Some(c1.clone());
            q.user_id = Some(u1.clone());
        });
        assert_eq!(list(both).await, [1]);

        let explained = |query: &AuditQuery| {
            let sql = match backend {
                Backend::Sqlite => {
                    concierge::store::audit::listing::<sqlx::Sqlite>(query).into_string()
                }
                Backend::Postgres => {
                    concierge::store::audit::listing::<sqlx::Postgres>(query).into_string()
                }
            };
            let url = url.clone();
            async move {
                let lines = plan(backend, &url, &sql).await;
                (sql, lines)
            }
        };
        // The listings an operator runs on a large log walk the index of their filter.
        for (query, index) in [
            (&by_client, "audit_events_client"),
            (&by_user, "audit_events_user"),
        ] {
            let (sql, lines) = explained(query).await;
            assert!(
                lines.iter().any(|l| l.contains(index)),
                "{backend:?}: {sql}\n{}",
                lines.join("\n")
            );
        }
        // A listing by time walks the log newest first and stops at its page: it does not
        // gather every event since `since` to sort them first.
        let recent = q(&|q| {
            q.since = Some(t - 86_400);
            q.until = Some(t + 86_400);
        });
        let (sql, lines) = explained(&recent).await;
        assert!(
            !lines
                .iter()
                .any(|l| l.contains("TEMP B-TREE") || l.contains("Sort")),
            "{backend:?}: {sql}\n{}",
            lines.join("\n")
        );
        app
    }
);
