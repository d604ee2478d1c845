//! Benchmark fixtures for `bench/run.sh`, written straight into the database the server under
//! test uses, as `/authorize`, `/token` and the sign-in page would have stored them (secrets
//! by hash only):
//!
//! - `codes.txt`: `COUNT` authorization codes of the confidential client `bench`
//!   (PKCE verifier `BENCH_VERIFIER`, redirect `REDIRECT`, scope `tools:read` at `RESOURCE`);
//! - `refresh.txt`: `COUNT` refresh tokens of the public client `bench-public`, each in its own
//!   family: a public client's token rotates on use, so each is spent once;
//! - `revoke.txt`: `COUNT` refresh tokens of `bench`, one per revocation request;
//! - `devices.txt`: `COUNT` device codes of `bench` its user already approved (RFC 8628), one
//!   per token request of the device grant;
//! - `ciba.txt`: `COUNT` `auth_req_id`s of backchannel requests of `bench` its user already
//!   approved (OpenID Connect CIBA, poll mode), one per token request of the CIBA grant;
//! - `cookie.txt`: a signed-in session's cookie value, whose user already allowed `bench`
//!   `tools:read` at `RESOURCE` (so `/authorize` answers with a code at once).
//!
//! With a fourth argument `BULK`, the store is then filled as a long-running deployment's
//! would be (issue 17.2): `BULK` each of registered clients, consents, authorization codes,
//! refresh-token families and audit events, for `BULK / 100` users, all live, written by
//! one `INSERT … SELECT` per table (the client `bench-public` must exist: its metadata is
//! copied).
//!
//! ```text
//! RESOURCE=http://127.0.0.1:9999/mcp \
//!   cargo run --release --example bench_seed -- <database_url> <count> <out_dir> [bulk]
//! ```

use std::sync::Arc;

use concierge::store::{
    AuthCode, BackchannelRequest, Consent, DeviceCode, RefreshToken, Session, Store, User,
};
use concierge::util;

const BENCH_VERIFIER: &str = "bench-verifier-0123456789abcdefghijklmnopqrstuvwxyz";
const CLIENT_ID: &str = "bench";
const PUBLIC_CLIENT_ID: &str = "bench-public";
const REDIRECT: &str = "http://127.0.0.1/callback";
const SCOPE: &str = "tools:read";
/// Inserts in flight at once: PostgreSQL commits each one, so one at a time would take minutes.
const PARALLEL: usize = 16;

/// What every fixture shares.
struct Seed {
    store: Arc<dyn Store>,
    user_id: String,
    resource: String,
    challenge: String,
    now: i64,
}

impl Seed {
    async fn code(&self) -> anyhow::Result<String> {
        let code = util::ordered_secret();
        self.store
            .insert_code(&AuthCode {
                code_hash: util::secret_key(&code),
                family_id: util::ordered_id(),
                client_id: CLIENT_ID.into(),
                user_id: self.user_id.clone(),
                redirect_uri: Some(REDIRECT.into()),
                code_challenge: self.challenge.clone(),
                resources: vec![self.resource.clone()],
                scope: SCOPE.into(),
                nonce: None,
                auth_time: self.now,
                amr: vec!["pwd".into()],
                acr: None,
                sid: None,
                created_at: self.now,
                expires_at: self.now + 3600,
                dpop_jkt: None,
                authorization_details: None,
            })
            .await?;
        Ok(code)
    }

    async fn refresh(&self, client_id: &str) -> anyhow::Result<String> {
        let token = util::ordered_secret();
        self.store
            .insert_refresh(&RefreshToken {
                token_hash: util::secret_key(&token),
                family_id: util::ordered_id(),
                client_id: client_id.into(),
                user_id: self.user_id.clone(),
                resources: vec![self.resource.clone()],
                scope: SCOPE.into(),
                auth_time: self.now,
                amr: vec!["pwd".into()],
                acr: None,
                sid: None,
                created_at: self.now,
                expires_at: self.now + 86_400,
                absolute_expires_at: self.now + 86_400,
                dpop_jkt: None,
            })
            .await?;
        Ok(token)
    }

    async fn approved_device(&self) -> anyhow::Result<String> {
        let code = util::ordered_secret();
        self.store
            .insert_device(&DeviceCode {
                device_code_hash: util::secret_key(&code),
                user_code: util::random_id(),
                client_id: CLIENT_ID.into(),
                resources: vec![self.resource.clone()],
                scope: SCOPE.into(),
                status: "approved".into(),
                user_id: Some(self.user_id.clone()),
                auth_time: Some(self.now),
                amr: vec!["pwd".into()],
                acr: None,
                sid: None,
                interval_secs: 5,
                last_polled_at: None,
                created_at: self.now,
                expires_at: self.now + 3600,
            })
            .await?;
        Ok(code)
    }

    async fn approved_backchannel(&self) -> anyhow::Result<String> {
        let auth_req_id = util::ordered_secret();
        self.store
            .insert_backchannel(&BackchannelRequest {
                auth_req_hash: util::secret_key(&auth_req_id),
                id: util::random_id(),
                client_id: CLIENT_ID.into(),
                user_id: Some(self.user_id.clone()),
                resources: vec![self.resource.clone()],
                scope: SCOPE.into(),
                authorization_details: None,
                binding_message: None,
                acr_values: Vec::new(),
                status: "approved".into(),
                auth_time: Some(self.now),
                amr: vec!["pwd".into()],
                acr: None,
                sid: None,
                interval_secs: 5,
                last_polled_at: None,
                created_at: self.now,
                expires_at: self.now + 3600,
            })
            .await?;
        Ok(auth_req_id)
    }
}

/// `count` fixtures made by `make(seed)`, `PARALLEL` at a time, one a line.
async fn many<F, Fut>(seed: &Arc<Seed>, count: usize, make: F) -> anyhow::Result<String>
where
    F: Fn(Arc<Seed>) -> Fut + Copy + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<String>> + Send,
{
    let mut tasks = tokio::task::JoinSet::new();
    for part in 0..PARALLEL {
        let seed = seed.clone();
        let n = count / PARALLEL + usize::from(part < count % PARALLEL);
        tasks.spawn(async move {
            let mut lines = String::with_capacity(n * 44);
            for _ in 0..n {
                lines.push_str(&make(seed.clone()).await?);
                lines.push('\n');
            }
            anyhow::Ok(lines)
        });
    }
    let mut all = String::with_capacity(count * 44);
    while let Some(lines) = tasks.join_next().await {
        all.push_str(&lines??);
    }
    Ok(all)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (url, count, out, bulk) = match args.as_slice() {
        [url, count, out] => (url, count, out, 0),
        [url, count, out, bulk] => (url, count, out, bulk.parse()?),
        _ => anyhow::bail!("usage: bench_seed <database_url> <count> <out_dir> [bulk]"),
    };
    let count: usize = count.parse()?;
    let resource = std::env::var("RESOURCE")?;
    let store = concierge::store::connect(url).await?;
    let now = util::now();
    let user_id = util::random_id();
    store
        .insert_user(&User {
            id: user_id.clone(),
            username: format!("bench-{user_id}"),
            email: None,
            email_verified: false,
            name: None,
            password_hash: Some(
                concierge::oauth::authn::password::hash("bench password")
                    .map_err(anyhow::Error::msg)?,
            ),
            disabled_at: None,
            password_change_required: false,
            created_at: now,
            updated_at: now,
        })
        .await?;
    // The user signed in and allowed `bench` before: the signed-in /authorize answers at once.
    let cookie = util::ordered_secret();
    store
        .insert_session(
            &util::secret_key(&cookie),
            &Session {
                sid: util::random_id(),
                user_id: user_id.clone(),
                auth_time: now,
                amr: vec!["pwd".into()],
                acr: Some(concierge::oauth::authn::acr::ACR_ONE_FACTOR.into()),
                created_at: now,
                expires_at: now + 86_400,
            },
        )
        .await?;
    store
        .save_consent(&Consent {
            user_id: user_id.clone(),
            client_id: CLIENT_ID.into(),
            resource: resource.clone(),
            scopes: SCOPE.into(),
            created_at: now,
            updated_at: now,
            last_used_at: None,
        })
        .await?;
    let seed = Arc::new(Seed {
        store,
        user_id,
        resource,
        challenge: util::b64(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, BENCH_VERIFIER.as_bytes())
                .as_ref(),
        ),
        now,
    });
    let out = std::path::Path::new(out);
    std::fs::write(
        out.join("codes.txt"),
        many(&seed, count, |s| async move { s.code().await }).await?,
    )?;
    std::fs::write(
        out.join("refresh.txt"),
        many(&seed, count, |s| async move {
            s.refresh(PUBLIC_CLIENT_ID).await
        })
        .await?,
    )?;
    std::fs::write(
        out.join("revoke.txt"),
        many(&seed, count, |s| async move { s.refresh(CLIENT_ID).await }).await?,
    )?;
    std::fs::write(
        out.join("devices.txt"),
        many(&seed, count, |s| async move { s.approved_device().await }).await?,
    )?;
    std::fs::write(
        out.join("ciba.txt"),
        many(
            &seed,
            count,
            |s| async move { s.approved_backchannel().await },
        )
        .await?,
    )?;
    std::fs::write(out.join("cookie.txt"), format!("{cookie}\n"))?;
    if bulk > 0 {
        fill(url, bulk, &seed.resource, now).await?;
    }
    Ok(())
}

/// `bulk` rows in each table a deployment accumulates, one statement per table. Keys are
/// shaped as the server makes them: a code's and a refresh token's key is its issue time
/// (here a microsecond apart, all before the fixtures') then 32 bytes of hash
/// (`util::secret_key`), and a registration token's hash is 32 random-looking bytes. The
/// statements carry their numbers inline: they are this tool's own, not anyone's input.
async fn fill(url: &str, bulk: i64, resource: &str, now: i64) -> anyhow::Result<()> {
    use sqlx::Connection as _;
    let postgres = url.starts_with("postgres");
    let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
    // Rows numbered 1..=N, and 32 random-looking bytes for row i.
    let numbers = |n: i64| {
        if postgres {
            format!("SELECT i FROM generate_series(1, {n}) AS g(i)")
        } else {
            format!(
                "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) \
                 SELECT i FROM s"
            )
        }
    };
    let bytes = if postgres {
        format!("sha256(int8send(n.i::bigint) || convert_to('{now}', 'UTF8'))")
    } else {
        "randomblob(32)".to_string()
    };
    // Row i was issued (bulk - i) µs before now, in microseconds as `util::ordered_secret`
    // (the first term is a 64-bit literal, so PostgreSQL computes in 64 bits).
    let issued = format!("({} - ({bulk} - n.i))", now * 1_000_000);
    let ordered = if postgres {
        format!("int8send({issued}::bigint) || {bytes}")
    } else {
        format!("unhex(printf('%016x', {issued})) || {bytes}")
    };
    let users = (bulk / 100).max(1);
    let all = numbers(bulk);
    let user = format!("'bulk-user-' || (n.i % {users})");
    let client = "'bulk-client-' || n.i";
    let resource_json = quote(&serde_json::to_string(&[resource])?);
    let resource = quote(resource);
    let statements = [
        (
            "users",
            format!(
                "INSERT INTO users (id, username, password_hash, created_at, updated_at) \
                 SELECT 'bulk-user-' || (n.i - 1), 'bulk-user-' || (n.i - 1), u.password_hash, \
                 {now}, {now} FROM ({}) AS n, \
                 (SELECT password_hash FROM users WHERE username LIKE 'bench-%' LIMIT 1) AS u",
                numbers(users)
            ),
        ),
        (
            "clients",
            format!(
                "INSERT INTO clients (client_id, kind, metadata, registration_token_hash, \
                 registered_from, created_at, updated_at, last_used_at) \
                 SELECT {client}, 'dynamic', c.metadata, {bytes}, '127.0.0.1', {now}, {now}, \
                 {now} FROM ({all}) AS n, clients c WHERE c.client_id = 'bench-public'"
            ),
        ),
        (
            "consents",
            format!(
                "INSERT INTO consents (user_id, client_id, resource, scopes, created_at, \
                 updated_at, last_used_at) \
                 SELECT {user}, {client}, {resource}, 'tools:read', {now}, {now}, {now} \
                 FROM ({all}) AS n"
            ),
        ),
        (
            "auth_codes",
            format!(
                "INSERT INTO auth_codes (code_hash, family_id, client_id, user_id, redirect_uri, \
                 code_challenge, resources, scope, auth_time, created_at, expires_at, amr) \
                 SELECT {ordered}, 'bulk-family-' || n.i, {client}, {user}, \
                 'http://127.0.0.1/callback', 'bulk', {resource_json}, 'tools:read', {now}, \
                 {now}, {now} + 86400, 'pwd' FROM ({all}) AS n"
            ),
        ),
        (
            "refresh_tokens",
            format!(
                "INSERT INTO refresh_tokens (token_hash, family_id, client_id, user_id, resources, \
                 scope, auth_time, created_at, expires_at, absolute_expires_at, amr) \
                 SELECT {ordered}, 'bulk-family-' || n.i, {client}, {user}, {resource_json}, \
                 'tools:read', {now}, {now}, {now} + 86400, {now} + 2592000, 'pwd' \
                 FROM ({all}) AS n"
            ),
        ),
        (
            "audit_events",
            format!(
                "INSERT INTO audit_events (at, kind, client_id, user_id, ip, detail) \
                 SELECT {now} - n.i % 86400, 'token.issued', {client}, {user}, '127.0.0.1', \
                 '{{\"grant_type\":\"authorization_code\"}}' FROM ({all}) AS n"
            ),
        ),
    ];
    let started = std::time::Instant::now();
    macro_rules! run_all {
        ($conn:expr) => {{
            let mut conn = $conn;
            for (table, sql) in &statements {
                let t = std::time::Instant::now();
                let r = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| anyhow::anyhow!("{table}: {e}"))?;
                eprintln!(
                    "{table}: {} rows in {:.1} s",
                    r.rows_affected(),
                    t.elapsed().as_secs_f64()
                );
            }
        }};
    }
    if postgres {
        run_all!(sqlx::PgConnection::connect(url).await?);
    } else {
        run_all!(sqlx::SqliteConnection::connect(url).await?);
    }
    eprintln!("filled in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
