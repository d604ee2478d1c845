//! Benchmark fixtures for `bench/paths.sh`: a user, `COUNT` authorization codes and one
//! refresh token for the confidential client `bench`, written straight into the database
//! the server under test uses (as `/authorize` and `/token` would have stored them: by hash).
//!
//!     cargo run --release --example bench_seed -- <database_url> <count> <out_dir>
//!
//! Writes `<out_dir>/codes.txt` (one code a line) and `<out_dir>/refresh.txt`. The PKCE
//! verifier of every code is `BENCH_VERIFIER` below (the wrk script sends it).

use concierge::store::{AuthCode, RefreshToken, User};
use concierge::util;

const BENCH_VERIFIER: &str = "bench-verifier-0123456789abcdefghijklmnopqrstuvwxyz";
const CLIENT_ID: &str = "bench";
const REDIRECT: &str = "http://127.0.0.1/callback";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, count, out] = args.as_slice() else {
        anyhow::bail!("usage: bench_seed <database_url> <count> <out_dir>");
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
    let challenge = util::b64(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, BENCH_VERIFIER.as_bytes()).as_ref(),
    );
    let mut codes = String::with_capacity(count * 44);
    for _ in 0..count {
        let code = util::random_secret();
        store
            .insert_code(&AuthCode {
                code_hash: util::secret_hash(&code),
                family_id: util::random_id(),
                client_id: CLIENT_ID.into(),
                user_id: user_id.clone(),
                redirect_uri: Some(REDIRECT.into()),
                code_challenge: challenge.clone(),
                resources: vec![resource.clone()],
                scope: "tools:read".into(),
                nonce: None,
                auth_time: now,
                amr: vec!["pwd".into()],
                acr: None,
                sid: None,
                created_at: now,
                expires_at: now + 3600,
                dpop_jkt: None,
                authorization_details: None,
            })
            .await?;
        codes.push_str(&code);
        codes.push('\n');
    }
    let refresh = util::random_secret();
    store
        .insert_refresh(&RefreshToken {
            token_hash: util::secret_hash(&refresh),
            family_id: util::random_id(),
            client_id: CLIENT_ID.into(),
            user_id,
            resources: vec![resource],
            scope: "tools:read".into(),
            auth_time: now,
            amr: vec!["pwd".into()],
            acr: None,
            sid: None,
            created_at: now,
            expires_at: now + 86_400,
            absolute_expires_at: now + 86_400,
            dpop_jkt: None,
        })
        .await?;
    let out = std::path::Path::new(out);
    std::fs::write(out.join("codes.txt"), codes)?;
    std::fs::write(out.join("refresh.txt"), format!("{refresh}\n"))?;
    Ok(())
}
