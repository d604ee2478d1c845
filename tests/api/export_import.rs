//! `concierge export` and `concierge import`, run as an operator would: a SQLite installation
//! moved to PostgreSQL keeps working for its clients, users and tokens (and back again), and
//! the import refuses what it must.

use std::path::Path;
use std::process::{Command, Stdio};

use concierge::manage;
use concierge::oauth::client_metadata::RawClientMetadata;
use concierge::oauth::resource::ScopeDef;
use concierge::store::transfer::{SKIPPED, TABLES};
use concierge::store::{Open, TrustedIssuer};
use serde_json::Value;

use crate::both;
use crate::flow::*;
use crate::helpers::*;
use crate::mfa;
use crate::process::{Replica, shared_kek};

/// What a command printed, and whether it succeeded.
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr)
    }
}

/// Run `bin` (a `concierge`) in `dir` with `args`, only the `env` given of the `CONCIERGE_*`
/// settings, and `stdin` on its standard input.
pub fn run(bin: &Path, dir: &Path, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Run {
    let mut cmd = Command::new(bin);
    cmd.current_dir(dir).args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("CONCIERGE_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run concierge");
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// This build's `concierge`.
pub fn concierge(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    run(
        Path::new(env!("CARGO_BIN_EXE_concierge")),
        dir,
        args,
        env,
        "",
    )
}

/// `concierge export <file>` of the database at `url`; the document.
fn export(dir: &Path, url: &str, kek: &str, issuer: &str, file: &Path) -> Value {
    let r = concierge(
        dir,
        &["export", file.to_str().unwrap()],
        &[
            ("CONCIERGE_DATABASE_URL", url),
            ("CONCIERGE_KEY_ENCRYPTION_KEY", kek),
            ("CONCIERGE_ISSUER", issuer),
        ],
    );
    assert!(r.ok, "export: {r}");
    serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap()
}

/// `concierge import <file>` into the database at `url` (`--init`: create it).
fn import(dir: &Path, url: &str, kek: &str, issuer: &str, file: &Path, init: bool) -> Run {
    let mut args = vec!["import", file.to_str().unwrap()];
    if init {
        args.insert(0, "--init");
    }
    concierge(
        dir,
        &args,
        &[
            ("CONCIERGE_DATABASE_URL", url),
            ("CONCIERGE_KEY_ENCRYPTION_KEY", kek),
            ("CONCIERGE_ISSUER", issuer),
        ],
    )
}

/// The rows of `table` in an export.
fn rows<'a>(doc: &'a Value, table: &str) -> &'a Vec<Value> {
    doc["tables"][table]
        .as_array()
        .unwrap_or_else(|| panic!("no {table} in the export"))
}

/// The two exports hold the same rows, the audit log aside: `to` has the events of `from`
/// and, after them, the import's own.
fn assert_same_data(from: &Value, to: &Value) {
    for t in TABLES {
        if t.name == "audit_events" {
            continue;
        }
        assert_eq!(
            from["tables"][t.name], to["tables"][t.name],
            "table {} differs",
            t.name
        );
    }
    let (a, b) = (rows(from, "audit_events"), rows(to, "audit_events"));
    assert_eq!(&b[..a.len()], &a[..], "the audit log is kept, ids and all");
    assert_eq!(b.len(), a.len() + 1, "and the import is recorded");
    assert_eq!(b[a.len()]["kind"], "admin.change");
    assert!(b[a.len()]["detail"].as_str().unwrap().contains("import"));
}

/// A token request authenticated with HTTP Basic.
async fn token_basic(
    app: &impl Server,
    id: &str,
    secret: &str,
    form: &[(&str, &str)],
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    split(
        app.http()
            .post(app.url("/token"))
            .basic_auth(id, Some(secret))
            .form(form)
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn introspect(app: &impl Server, id: &str, secret: &str, token: &str) -> Value {
    let (s, _, body) = post_form(
        app,
        "/introspect",
        vec![
            ("client_id", id),
            ("client_secret", secret),
            ("token", token),
        ],
        &[],
    )
    .await;
    assert_eq!(s, 200, "{body}");
    body
}

/// Verify `jwt` with the JWKS `app` publishes, for `issuer` and `audience`.
async fn verify_with_jwks(app: &impl Server, jwt: &str, issuer: &str, audience: &str) {
    let jwks: jsonwebtoken::jwk::JwkSet = app
        .http()
        .get(app.url("/jwks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(jwt).unwrap();
    let jwk = jwks
        .find(header.kid.as_deref().unwrap())
        .expect("the token's key is published");
    let mut v = jsonwebtoken::Validation::new(header.alg);
    v.set_issuer(&[issuer]);
    v.set_audience(&[audience]);
    jsonwebtoken::decode::<Value>(jwt, &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(), &v)
        .expect("the token verifies");
}

/// Sign in as alice at `app` and authorize `client_id` for `scope`; with consent remembered
/// the authorization answers at once. Returns the redirect back to the client.
async fn authorize_remembered(
    app: &impl Server,
    client_id: &str,
    challenge: &str,
    scope: &str,
) -> String {
    let b = browser();
    let params = auth_params(client_id, challenge, scope);
    let res = b.get(authorize_url(app, &params)).send().await.unwrap();
    assert_eq!(res.status(), 303);
    let signin = format!("{}{}", app.origin(), location(&res));
    let res = sign_in(app, &b, &signin, "alice", PASSWORD).await;
    assert_eq!(res.status(), 303, "alice's password works");
    let res = b
        .get(format!("{}{}", app.origin(), location(&res)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303, "consent is remembered: no consent page");
    let back = location(&res);
    assert!(back.starts_with(REDIRECT), "{back}");
    back
}

both!(
    every_table_is_exported_or_deliberately_skipped,
    |app: TestApp| async move {
        let schema = app.store().schema_tables().await.unwrap();
        for (table, columns) in &schema {
            if let Some(t) = TABLES.iter().find(|t| t.name == table) {
                let mut ours: Vec<&str> = t.columns.iter().map(|c| c.name).collect();
                let mut theirs: Vec<&str> = columns.iter().map(String::as_str).collect();
                ours.sort_unstable();
                theirs.sort_unstable();
                assert_eq!(
                    ours, theirs,
                    "the columns of {table} in store::transfer::TABLES are not the \
                     database's: export them (or say why not)"
                );
            } else {
                assert!(
                    SKIPPED.iter().any(|(n, _)| n == table),
                    "table {table} is neither exported nor skipped: add it to \
                     store::transfer::TABLES, or to SKIPPED with the reason, and to UPGRADE.md"
                );
            }
        }
        for name in TABLES
            .iter()
            .map(|t| t.name)
            .chain(SKIPPED.iter().map(|(n, _)| *n))
        {
            assert!(schema.contains_key(name), "no table {name} in the database");
        }
        app
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_to_postgres_and_back_keeps_clients_users_tokens_and_consent() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let Some((pg_url, pg_name)) = fresh_database(Backend::Postgres, d).await else {
        return;
    };
    let pg_name = pg_name.unwrap();
    let kek = shared_kek();

    // A SQLite server with real state: resources (one with an alias and its own token
    // settings), alice, bob with an authenticator app, a confidential client with a code
    // flow, consent and a refresh token,
    // a public client's rotating refresh token, a machine client, an introspecting resource
    // server, an admin client, an exchange policy, a trusted ID-JAG issuer and a linked
    // identity.
    let k = kek.clone();
    let app = TestApp::builder(Backend::Sqlite)
        .configure(move |c| c.key_encryption_key = Some(k))
        .with_machine_client("robot", Some("notes:read"))
        .with_admin_client()
        .start()
        .await
        .unwrap();
    let issuer = app.issuer.clone();
    let sqlite_url = app.config.database_url.clone().unwrap();
    seed(&app).await;
    let store = app.store();
    manage::create_resource(
        store.as_ref(),
        "http://127.0.0.1:9999/files",
        "Files",
        vec![ScopeDef::parse("files:read=Read your files").unwrap()],
        &manage::ResourceOptions {
            aliases: vec!["http://files.internal/mcp".into()],
            token_alg: Some("RS256".into()),
            dpop: Some("off".into()),
            required_acr: Some("urn:concierge:acr:mfa".into()),
            details_types: vec![
                serde_json::from_value(serde_json::json!({
                    "type": "file_share",
                    "schema": {"type": "object", "properties": {"path": {"type": "string"}}},
                    "sentence": "Share {path}",
                }))
                .unwrap(),
            ],
        },
    )
    .await
    .unwrap();
    manage::trust_id_jag_issuer(
        store.as_ref(),
        &TrustedIssuer {
            issuer: "https://idp.example.com".into(),
            jwks_uri: Some("https://idp.example.com/jwks".into()),
            jwks: None,
            link_by_email: true,
            provision: false,
        },
    )
    .await
    .unwrap();
    let alice = store.find_user("alice").await.unwrap().unwrap();
    manage::link_identity(
        store.as_ref(),
        &alice,
        "https://idp.example.com",
        "00u-alice",
    )
    .await
    .unwrap();
    let (web, web_secret) = app
        .add_client(RawClientMetadata {
            client_name: Some("Web app".into()),
            redirect_uris: Some(vec![REDIRECT.into()]),
            grant_types: Some(vec!["authorization_code".into(), "refresh_token".into()]),
            token_endpoint_auth_method: Some("client_secret_basic".into()),
            ..Default::default()
        })
        .await;
    let web_secret = web_secret.unwrap();
    allow_calendar_to_notes(&app, &web).await;
    let mut rs = TestApp::operator_metadata(RawClientMetadata {
        grant_types: Some(vec!["client_credentials".into()]),
        token_endpoint_auth_method: Some("client_secret_post".into()),
        ..Default::default()
    });
    rs.may_introspect = true;
    let (rs, rs_secret) = app.add_client_metadata(None, rs).await;
    let rs_secret = rs_secret.unwrap();

    let (verifier, challenge) = pkce();
    let back = authorize_and_approve(
        &app,
        &browser(),
        &auth_params(&web, &challenge, "notes:read"),
    )
    .await;
    let (s, _, web_tokens) = token_basic(
        &app,
        &web,
        &web_secret,
        &[
            ("grant_type", "authorization_code"),
            ("code", &query(&back)["code"]),
            ("code_verifier", &verifier),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_eq!(s, 200, "{web_tokens}");
    let web_at = web_tokens["access_token"].as_str().unwrap().to_string();
    let web_rt = web_tokens["refresh_token"].as_str().unwrap().to_string();

    let agent = public_client(&app).await;
    let (verifier, challenge) = pkce();
    let back = authorize_and_approve(
        &app,
        &browser(),
        &auth_params(&agent, &challenge, "notes:read"),
    )
    .await;
    let (s, _, agent_tokens) = redeem(&app, &agent, &query(&back)["code"], &verifier, &[]).await;
    assert_eq!(s, 200, "{agent_tokens}");
    let agent_rt = agent_tokens["refresh_token"].as_str().unwrap().to_string();
    // bob has an authenticator app (and recovery codes), set up through his security page.
    add_user(&app, "bob").await;
    let (bob_secret, bob_recovery) = mfa::enroll(&app, &mfa::signed_in(&app, "bob").await).await;
    let robot = app.machine_clients[0].clone();
    let admin = app.admin_client.clone().unwrap();
    let robot_at = cc_token(&app, &robot.client_id, &robot.secret, NOTES, "notes:read").await;

    // Export through the real binary while the server runs (one snapshot).
    let file = d.join("export.json");
    let doc = export(d, &sqlite_url, &kek, &issuer, &file);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the export is its owner's only");
    }
    assert_eq!(doc["format"], "concierge-export");
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["schema"], concierge::store::latest_migration());
    assert_eq!(doc["issuer"], issuer.as_str());
    for t in TABLES {
        assert!(doc["tables"][t.name].is_array(), "{} exported", t.name);
    }
    for (t, _) in SKIPPED {
        assert!(doc["tables"].get(t).is_none(), "{t} left out");
    }
    let text = std::fs::read_to_string(&file).unwrap();
    for secret in [
        &web_secret,
        &web_rt,
        &agent_rt,
        &robot.secret,
        &PASSWORD.to_string(),
    ] {
        assert!(!text.contains(secret.as_str()), "a secret in the clear");
    }
    assert!(
        rows(&doc, "users")[0]["password_hash"]
            .as_str()
            .unwrap()
            .starts_with("$argon2id$")
    );
    app.finish().await;

    // Into a new PostgreSQL database.
    let r = import(d, &pg_url, &kek, &issuer, &file, true);
    assert!(r.ok, "import: {r}");
    for t in [
        "clients",
        "users",
        "refresh_tokens",
        "consents",
        "signing_keys",
    ] {
        assert!(r.stdout.contains(t), "{r}");
    }
    let pg_doc = export(d, &pg_url, &kek, &issuer, &d.join("pg.json"));
    assert_same_data(&doc, &pg_doc);

    // A second import into it is refused, and changes nothing.
    let r = import(d, &pg_url, &kek, &issuer, &file, false);
    assert!(!r.ok && r.stderr.contains("not empty"), "{r}");

    // A server on it, with the same issuer and key-encryption key.
    let env = [("CONCIERGE_KEY_ENCRYPTION_KEY", kek.as_str())];
    let pg = Replica::start(d, |_| issuer.clone(), &pg_url, &env).await;
    // Tokens issued before validate: by introspection and against its JWKS.
    let body = introspect(&pg, &rs, &rs_secret, &web_at).await;
    assert_eq!(body["active"], true, "{body}");
    assert_eq!(body["client_id"], web.as_str());
    verify_with_jwks(&pg, &web_at, &issuer, NOTES).await;
    verify_with_jwks(&pg, &robot_at, &issuer, NOTES).await;
    // The old refresh tokens refresh; the client secret authenticates.
    let (s, _, refreshed) = token_basic(
        &pg,
        &web,
        &web_secret,
        &[("grant_type", "refresh_token"), ("refresh_token", &web_rt)],
    )
    .await;
    assert_eq!(s, 200, "{refreshed}");
    let web_rt = refreshed["refresh_token"]
        .as_str()
        .map_or(web_rt.clone(), str::to_string);
    let (s, _, refreshed) = refresh(&pg, &agent, &agent_rt, &[]).await;
    assert_eq!(s, 200, "{refreshed}");
    let agent_rt = refreshed["refresh_token"].as_str().unwrap().to_string();
    cc_token(&pg, &robot.client_id, &robot.secret, NOTES, "notes:read").await;
    // Alice's password signs in, and her consent is remembered.
    let (verifier, challenge) = pkce();
    let back = authorize_remembered(&pg, &web, &challenge, "notes:read").await;
    let (s, _, tokens) = token_basic(
        &pg,
        &web,
        &web_secret,
        &[
            ("grant_type", "authorization_code"),
            ("code", &query(&back)["code"]),
            ("code_verifier", &verifier),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_eq!(s, 200, "{tokens}");
    // bob's second factor came along: the password alone does not sign him in, his
    // authenticator's code does.
    let b = browser();
    let html = mfa::password_step(&pg, &b, "bob").await;
    let code = mfa::totp(&bob_secret, mfa::now() + 30);
    let res = mfa::code_step(&pg, &b, &html, &code).await;
    assert_eq!(res.status(), 303, "bob's authenticator code signs him in");
    // The admin client gets admin tokens, and the admin API sees alice.
    let admin_at = cc_token(
        &pg,
        &admin.client_id,
        &admin.secret,
        &format!("{issuer}/admin/v1"),
        "admin",
    )
    .await;
    let users: Value = pg
        .http()
        .get(pg.url("/admin/v1/users"))
        .bearer_auth(&admin_at)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(users.to_string().contains("\"alice\""), "{users}");
    // The alias, and the new audit events numbered after the imported ones.
    assert_eq!(
        pg.store()
            .resource_for_alias("http://files.internal/mcp")
            .await
            .unwrap()
            .as_deref(),
        Some("http://127.0.0.1:9999/files")
    );
    // The resource's declared authorization details type came along.
    let files = pg
        .store()
        .get_resource("http://127.0.0.1:9999/files")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(files.details_types[0].name, "file_share");
    let last_imported = rows(&pg_doc, "audit_events").last().unwrap()["id"]
        .as_i64()
        .unwrap();
    let pg_store = pg.store();
    pg.stop();
    // (After the stop, which flushes the audit queue.)
    let newest = pg_store
        .list_audit(&concierge::store::AuditQuery {
            kind: Some("token".into()),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        newest.first().is_some_and(|e| e.id > last_imported),
        "new events are written after the imported ones: {newest:?}"
    );

    // And back: PostgreSQL into SQLite, where a server has already started once (its own
    // admin resource, keys and their audit events are replaced).
    let sqlite_dir = tempfile::tempdir().unwrap();
    let target = format!("sqlite://{}", sqlite_dir.path().join("target.db").display());
    let first = Replica::start(sqlite_dir.path(), |_| issuer.clone(), &target, &env).await;
    first.stop();
    let pg_doc = export(d, &pg_url, &kek, &issuer, &d.join("pg.json"));
    let r = import(d, &target, &kek, &issuer, &d.join("pg.json"), false);
    assert!(r.ok, "import: {r}");
    assert!(
        r.stdout
            .contains("replaced what a server had made by itself"),
        "{r}"
    );
    let sqlite_doc = export(d, &target, &kek, &issuer, &d.join("sqlite.json"));
    assert_same_data(&pg_doc, &sqlite_doc);
    let back = Replica::start(sqlite_dir.path(), |_| issuer.clone(), &target, &env).await;
    let (s, _, body) = refresh(&back, &agent, &agent_rt, &[]).await;
    assert_eq!(s, 200, "{body}");
    let (s, _, body) = token_basic(
        &back,
        &web,
        &web_secret,
        &[("grant_type", "refresh_token"), ("refresh_token", &web_rt)],
    )
    .await;
    assert_eq!(s, 200, "{body}");
    // And bob's recovery codes.
    let b = browser();
    let html = mfa::password_step(&back, &b, "bob").await;
    let res = mfa::code_step(&back, &b, &html, &bob_recovery[0]).await;
    assert_eq!(res.status(), 303, "a recovery code signs bob in");
    back.stop();
    drop_database(&pg_name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_refuses_another_format_a_newer_schema_the_wrong_key_and_a_used_database() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let kek = shared_kek();
    let k = kek.clone();
    let app = TestApp::builder(Backend::Sqlite)
        .configure(move |c| c.key_encryption_key = Some(k))
        .with_user("alice", PASSWORD)
        .start()
        .await
        .unwrap();
    let issuer = app.issuer.clone();
    let source = app.config.database_url.clone().unwrap();
    let file = d.join("export.json");
    let doc = export(d, &source, &kek, &issuer, &file);
    assert!(!rows(&doc, "signing_keys").is_empty());

    // Without the audit log, to standard output.
    let r = concierge(
        d,
        &["export", "--no-audit"],
        &[
            ("CONCIERGE_DATABASE_URL", &source),
            ("CONCIERGE_KEY_ENCRYPTION_KEY", &kek),
        ],
    );
    assert!(r.ok, "{r}");
    let no_audit: Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(no_audit["tables"].get("audit_events").is_none());
    assert!(r.stderr.contains("audit log was left out"), "{r}");
    app.finish().await;

    let target = format!("sqlite://{}", d.join("target.db").display());
    let variant = |name: &str, change: fn(&mut Value)| {
        let mut v = doc.clone();
        change(&mut v);
        let path = d.join(name);
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        path
    };

    // Another key-encryption key: refused before anything is written, naming both keys.
    let other = shared_kek();
    let r = import(d, &target, &other, &issuer, &file, true);
    assert!(!r.ok, "{r}");
    assert!(
        r.stderr
            .contains("does not open with this key-encryption key")
            && r.stderr
                .contains(doc["key_encryption_key"].as_str().unwrap()),
        "{r}"
    );
    let (store, _) = concierge::store::open(&target, Open::Existing)
        .await
        .unwrap();
    let counts = store.count_rows().await.unwrap();
    assert!(counts.values().all(|n| *n == 0), "{counts:?}");

    type Change = fn(&mut Value);
    let cases: [(&str, Change, &str); 4] = [
        (
            "format.json",
            |v| v["format"] = "keycloak-realm".into(),
            "not a Concierge export",
        ),
        (
            "version.json",
            |v| v["version"] = 2.into(),
            "format version 2",
        ),
        (
            "schema.json",
            |v| v["schema"] = 9999.into(),
            "newer schema (migration 9999)",
        ),
        (
            "column.json",
            |v| v["tables"]["users"][0]["colour"] = "blue".into(),
            "no column \"colour\"",
        ),
    ];
    for (name, change, message) in cases {
        let r = import(d, &target, &kek, &issuer, &variant(name, change), false);
        assert!(!r.ok && r.stderr.contains(message), "{name}: {r}");
    }
    let counts = store.count_rows().await.unwrap();
    assert!(counts.values().all(|n| *n == 0), "{counts:?}");

    // The export without its audit log goes in; then nothing more does.
    let path = d.join("no-audit.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&no_audit).unwrap()).unwrap();
    let r = import(d, &target, &kek, &issuer, &path, false);
    assert!(r.ok, "{r}");
    assert!(r.stdout.contains("audit_events") && r.stdout.contains("not in the export"));
    let r = import(d, &target, &kek, &issuer, &file, false);
    assert!(!r.ok, "{r}");
    assert!(
        r.stderr.contains("not empty") && r.stderr.contains("row(s) in users"),
        "{r}"
    );
    assert_eq!(store.list_users().await.unwrap().len(), 1);
}
