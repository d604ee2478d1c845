//! Scale-out: two real `concierge serve` processes sharing one PostgreSQL
//! behave as one server. Single-use things are decided once by the database; what replicas
//! cache (keys, clients) follows a change made elsewhere within its documented bound
//! (`keys.refresh_secs`, `clients.cache_secs`; set to 1 s here so the tests are quick).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::device;
use crate::flow::*;
use crate::helpers::*;
use crate::process::{Replica, shared_kek};

/// Two replicas A and B on a fresh PostgreSQL database, one issuer (as behind a proxy).
struct Pair {
    a: Replica,
    b: Replica,
    database_url: String,
    database: String,
    kek: String,
    _dir: tempfile::TempDir,
}

const BOUND_SECS: u64 = 1;
/// `keys.activation_delay_secs`: more than the reload bound, so both replicas publish a new
/// key before either signs with it.
const ACTIVATION_SECS: &str = "3";

async fn pair() -> Option<Pair> {
    let dir = tempfile::tempdir().unwrap();
    let (url, name) = fresh_database(Backend::Postgres, dir.path()).await?;
    let kek = shared_kek();
    let bound = BOUND_SECS.to_string();
    let env = [
        ("CONCIERGE_KEY_ENCRYPTION_KEY", kek.as_str()),
        ("CONCIERGE_KEYS__REFRESH_SECS", bound.as_str()),
        ("CONCIERGE_KEYS__ACTIVATION_DELAY_SECS", ACTIVATION_SECS),
        ("CONCIERGE_CLIENTS__CACHE_SECS", bound.as_str()),
        ("CONCIERGE_RESOURCES__CACHE_SECS", bound.as_str()),
        ("CONCIERGE_TOKENS__DEVICE_POLL_INTERVAL_SECS", "1"),
        // The removal test uses a self-registered machine client (RFC 7592 deletes it).
        ("CONCIERGE_REGISTRATION__ALLOW_CLIENT_CREDENTIALS", "true"),
    ];
    // Both replicas share the first one's issuer, as behind a load balancer.
    let a = Replica::start(dir.path(), |p| format!("http://127.0.0.1:{p}"), &url, &env).await;
    let issuer = a.issuer.clone();
    let b = Replica::start(dir.path(), |_| issuer.clone(), &url, &env).await;
    Some(Pair {
        a,
        b,
        database_url: url,
        database: name.unwrap(),
        kek,
        _dir: dir,
    })
}

impl Pair {
    async fn finish(self) {
        self.a.stop();
        self.b.stop();
        drop_database(&self.database).await;
    }
}

/// Poll `check` until it holds, for at most the bound plus slack for a loaded machine.
async fn within_bound(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(BOUND_SECS + 10);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within the bound");
}

/// A code issued through replica A: sign in there and approve, unless consent is remembered.
async fn code_from_a(p: &Pair, client_id: &str) -> (String, String) {
    let (verifier, challenge) = pkce();
    let b = browser();
    let params = auth_params(client_id, &challenge, "notes:read");
    let res = b.get(authorize_url(&p.a, &params)).send().await.unwrap();
    let signin = format!("{}{}", p.a.origin, location(&res));
    let res = sign_in(&p.a, &b, &signin, "alice", PASSWORD).await;
    let res = b
        .get(format!("{}{}", p.a.origin, location(&res)))
        .send()
        .await
        .unwrap();
    let back = if res.status() == 303 {
        location(&res)
    } else {
        let html = res.text().await.unwrap();
        location(&decide(&p.a, &b, &html, "approve").await)
    };
    (query(&back)["code"].clone(), verifier)
}

fn successes(results: &[(reqwest::StatusCode, reqwest::header::HeaderMap, Value)]) -> usize {
    results.iter().filter(|r| r.0 == 200).count()
}

#[tokio::test]
async fn a_code_issued_by_one_replica_is_redeemed_at_the_other() {
    let Some(p) = pair().await else { return };
    seed(&p.a).await;
    let client_id = public_client(&p.a).await;
    let (code, verifier) = code_from_a(&p, &client_id).await;
    let (status, _, tokens) = redeem(&p.b, &client_id, &code, &verifier, &[]).await;
    assert_eq!(status, 200, "{tokens}");
    let claims = claims(tokens["access_token"].as_str().unwrap());
    assert_eq!(claims["iss"], p.a.issuer);
    assert_eq!(claims["aud"], NOTES);
    // And the refresh token B issued works at A.
    let rt = tokens["refresh_token"].as_str().unwrap();
    let (status, _, body) = refresh(&p.a, &client_id, rt, &[]).await;
    assert_eq!(status, 200, "{body}");
    p.finish().await;
}

#[tokio::test]
async fn two_replicas_racing_for_one_code_one_refresh_token_or_one_device_code_one_wins() {
    let Some(p) = pair().await else { return };
    seed(&p.a).await;
    let client_id = public_client(&p.a).await;
    for round in 0..3 {
        let (code, verifier) = code_from_a(&p, &client_id).await;
        let (ra, rb) = tokio::join!(
            redeem(&p.a, &client_id, &code, &verifier, &[]),
            redeem(&p.b, &client_id, &code, &verifier, &[]),
        );
        let results = [ra, rb];
        assert_eq!(successes(&results), 1, "round {round}: {results:?}");
        let loser = results.iter().find(|r| r.0 != 200).unwrap();
        assert_eq!(loser.2["error"], "invalid_grant");

        // The replay revoked what the winner got (RFC 9700 §4.5).
        let winner = results.iter().find(|r| r.0 == 200).unwrap();
        let rt = winner.2["refresh_token"].as_str().unwrap();
        assert_eq!(refresh(&p.a, &client_id, rt, &[]).await.0, 400);

        // A public client's refresh token rotates. Two concurrent uses by its client are
        // both answered (the second is a retry within `tokens.refresh_reuse_grace_secs`),
        // and of the two successors exactly one works afterwards.
        let (code, verifier) = code_from_a(&p, &client_id).await;
        let (s, _, tokens) = redeem(&p.b, &client_id, &code, &verifier, &[]).await;
        assert_eq!(s, 200, "{tokens}");
        let rt = tokens["refresh_token"].as_str().unwrap().to_string();
        let (ra, rb) = tokio::join!(
            refresh(&p.a, &client_id, &rt, &[]),
            refresh(&p.b, &client_id, &rt, &[]),
        );
        let results = [ra, rb];
        assert_eq!(successes(&results), 2, "round {round}: {results:?}");
        let mut live = 0;
        for r in &results {
            let successor = r.2["refresh_token"].as_str().unwrap();
            if refresh(&p.a, &client_id, successor, &[]).await.0 == 200 {
                live += 1;
            }
        }
        assert_eq!(live, 1, "round {round}: one successor stays valid");
    }

    // The device grant: approved once at A, polled by both at the same moment.
    let device_client = device::device_client(&p.a).await;
    let d = device::start(&p.a, &device_client).await;
    let dc = d["device_code"].as_str().unwrap().to_string();
    device::user_decides(&p.a, d["user_code"].as_str().unwrap(), "approve").await;
    let (ra, rb) = tokio::join!(
        device::poll(&p.a, &device_client, &dc),
        device::poll(&p.b, &device_client, &dc),
    );
    let results = [ra, rb];
    assert_eq!(successes(&results), 1, "{results:?}");
    p.finish().await;
}

/// Run the `concierge` CLI against the pair's database, as an operator would.
fn operator(p: &Pair, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_concierge"));
    cmd.args(args)
        .current_dir(p._dir.path())
        .env("CONCIERGE_DATABASE_URL", &p.database_url)
        .env("CONCIERGE_KEY_ENCRYPTION_KEY", &p.kek);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "concierge {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

async fn jwks_kids(r: &Replica) -> Vec<String> {
    let v: Value = r
        .http()
        .get(r.url("/jwks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

async fn client_token(r: &Replica, id: &str, secret: &str) -> String {
    let (s, _, t) = machine_token(r, id, secret).await;
    assert_eq!(s, 200, "{t}");
    t["access_token"].as_str().unwrap().to_string()
}

async fn introspect(r: &Replica, token: &str) -> Value {
    let form = vec![
        ("client_id", "rs"),
        ("client_secret", RS_SECRET),
        ("token", token),
    ];
    let (s, _, v) = post_form(r, "/introspect", form, &[]).await;
    assert_eq!(s, 200, "{v}");
    v
}

const RS_SECRET: &str = "resource-server-secret-0123456789abcdef";

fn kid_of(jwt: &str) -> String {
    jsonwebtoken::decode_header(jwt).unwrap().kid.unwrap()
}

#[tokio::test]
async fn a_key_rotated_elsewhere_is_served_and_honoured_by_both_replicas_within_the_bound() {
    let Some(p) = pair().await else { return };
    seed(&p.a).await;
    let before = jwks_kids(&p.b).await;
    assert_eq!(before, jwks_kids(&p.a).await);
    operator(
        &p,
        &[
            "client",
            "add",
            "--name",
            "RS",
            "--id",
            "rs",
            "--grant-type",
            "client_credentials",
            "--auth-method",
            "client_secret_post",
            "--may-introspect",
            "--scope",
            "notes:read",
            "--secret-from-env",
            "RS_SECRET",
        ],
        &[("RS_SECRET", RS_SECRET)],
    );
    let old_token = client_token(&p.b, "rs", RS_SECRET).await;
    let old_kid = kid_of(&old_token);

    let rotated_at = concierge::util::now();
    let out = operator(
        &p,
        &["keys", "rotate", "--alg", "ES256"],
        &[("CONCIERGE_KEYS__ACTIVATION_DELAY_SECS", ACTIVATION_SECS)],
    );
    let new_kid = out
        .lines()
        .find_map(|l| l.strip_prefix("new ES256 key "))
        .and_then(|l| l.split(':').next())
        .expect("the new kid is printed")
        .to_string();
    assert_ne!(new_kid, old_kid);
    let activation: i64 = ACTIVATION_SECS.parse().unwrap();

    // Publish-then-activate: whenever either replica signs with the new key, both already
    // publish it, and neither signs with it before its activation time.
    within_bound("the new key in use at both replicas", async || {
        let mut both_sign = true;
        for r in [&p.a, &p.b] {
            let t = client_token(r, "rs", RS_SECRET).await;
            if kid_of(&t) == new_kid {
                assert!(claims(&t)["iat"].as_i64().unwrap() >= rotated_at + activation - 1);
                for other in [&p.a, &p.b] {
                    assert!(
                        jwks_kids(other).await.contains(&new_kid),
                        "signing with a key a replica does not publish"
                    );
                }
            } else {
                assert_eq!(kid_of(&t), old_kid);
                both_sign = false;
            }
        }
        both_sign
    })
    .await;
    for r in [&p.a, &p.b] {
        // The retired key stays published while its tokens live.
        assert!(jwks_kids(r).await.contains(&old_kid));
    }
    // Each replica honours tokens the other signed, with the old key and with the new one.
    let new_at_a = client_token(&p.a, "rs", RS_SECRET).await;
    assert_eq!(kid_of(&new_at_a), new_kid);
    for (r, t) in [(&p.b, &new_at_a), (&p.b, &old_token), (&p.a, &old_token)] {
        assert_eq!(introspect(r, t).await["active"], true);
    }
    p.finish().await;
}

#[tokio::test]
async fn a_client_removed_at_one_replica_is_refused_by_the_other_within_the_bound() {
    let Some(p) = pair().await else { return };
    seed(&p.a).await;
    let (s, _, c) =
        p.a.register(
            &json!({"client_name": "Machine", "grant_types": ["client_credentials"],
                          "token_endpoint_auth_method": "client_secret_post",
                          "scope": "notes:read"}),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    let id = c["client_id"].as_str().unwrap().to_string();
    let secret = c["client_secret"].as_str().unwrap().to_string();
    // B has it cached now.
    client_token(&p.b, &id, &secret).await;
    // The client deletes itself at A (RFC 7592).
    let res =
        p.a.http()
            .delete(p.a.url(&format!("/register/{id}")))
            .bearer_auth(c["registration_access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap();
    assert_eq!(res.status(), 204);
    within_bound("B refusing the deleted client", async || {
        machine_token(&p.b, &id, &secret).await.0 == 401
    })
    .await;
    p.finish().await;
}
