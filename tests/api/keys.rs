//! Signing keys: generated on first start, encrypted at rest, published, rotated with overlap
//! (publish-then-activate), revoked at once, rotated on schedule by exactly one replica.

use std::time::Duration;

use concierge::keys::{Activation, Alg, KeyState};
use serde_json::{Value, json};

use crate::both;
use crate::flow::*;
use crate::helpers::{TestApp, add_tools_resource, split};

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

both!(jwks_publishes_es256_and_rs256, |app: TestApp| async move {
    let (status, headers, jwks) = app.get_json("/jwks").await;
    assert_eq!(status, 200);
    assert!(
        headers["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age")
    );
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "{jwks}");
    let algs: Vec<&str> = keys.iter().map(|k| k["alg"].as_str().unwrap()).collect();
    assert!(
        algs.contains(&"ES256") && algs.contains(&"RS256"),
        "{algs:?}"
    );
    for k in keys {
        assert_eq!(k["use"], "sig");
        assert!(k.get("d").is_none(), "no private part: {k}");
        // Every published key is usable by an independent JOSE implementation.
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(k.clone()).unwrap();
        jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
    }
    // Private parts are stored encrypted, not as DER.
    for row in app.store().list_keys().await.unwrap() {
        assert_eq!(row.private_key[0], 1, "versioned ciphertext");
    }
    app
});

fn signing_kid(app: &TestApp) -> String {
    let jwt = app
        .state
        .oauth
        .keys
        .sign_jwt(Alg::ES256, "at+jwt", &json!({"sub": "x"}))
        .unwrap();
    jsonwebtoken::decode_header(&jwt).unwrap().kid.unwrap()
}

/// The activation delay of these tests: short, but more than `refresh_secs`.
const ACTIVATION_SECS: u64 = 2;

both!(
    a_rotated_key_is_published_first_and_signs_after_the_activation_delay,
    |c: &mut concierge::Config| {
        c.keys.refresh_secs = 1;
        c.keys.activation_delay_secs = Some(ACTIVATION_SECS);
    },
    |app: TestApp| async move {
        let (_, _, before) = app.get_json("/jwks").await;
        let old = kids(&before);
        let active_before = signing_kid(&app);

        let new = app
            .state
            .oauth
            .keys
            .rotate(&Alg::ALL, Activation::Delayed)
            .await
            .unwrap();
        let now = concierge::util::now();
        for k in &new {
            assert!(k.activates_at >= now + ACTIVATION_SECS as i64 - 1, "{k:?}");
            assert!(!k.immediate, "{k:?}");
        }
        let new: Vec<String> = new.into_iter().map(|k| k.kid).collect();
        // Published at once, next to the keys still signing...
        let (_, _, after) = app.get_json("/jwks").await;
        let published = kids(&after);
        assert_eq!(published.len(), 4, "{after}");
        for k in old.iter().chain(new.iter()) {
            assert!(published.contains(k), "{k} published");
        }
        // ...which keep signing until the activation time.
        assert_eq!(signing_kid(&app), active_before);
        // A second rotation while one is pending is refused.
        let again = app
            .state
            .oauth
            .keys
            .rotate(&[Alg::ES256], Activation::Delayed)
            .await;
        assert!(
            matches!(
                again,
                Err(concierge::keys::KeyError::AlreadyPending(Alg::ES256))
            ),
            "{again:?}"
        );

        tokio::time::sleep(Duration::from_secs(ACTIVATION_SECS + 1)).await;
        let active_after = signing_kid(&app);
        assert_ne!(active_before, active_after);
        assert!(new.contains(&active_after));
        // The retired key stays published while its tokens live.
        let (_, _, later) = app.get_json("/jwks").await;
        assert_eq!(kids(&later).len(), 4, "{later}");

        // Once the longest token lifetime has passed, retired keys are no longer published.
        let later = concierge::util::now() + app.config.tokens.longest_signed_lifetime() + 120;
        let ring = app.state.oauth.keys.ring();
        let jwks_later = ring.jwks(later);
        let mut remaining = kids(&jwks_later);
        remaining.sort();
        let mut expected = new.clone();
        expected.sort();
        assert_eq!(remaining, expected);
        // The JSON served is kept for the second it was made for only: each second asked
        // for gets its own set, in either order.
        let now = concierge::util::now();
        let served = |at: i64| -> Value { serde_json::from_slice(&ring.jwks_json(at)).unwrap() };
        assert_eq!(kids(&served(now)).len(), 4);
        assert_eq!(served(later), jwks_later);
        assert_eq!(kids(&served(now)).len(), 4);
        assert_eq!(served(now), ring.jwks(now));
        app
    }
);

both!(
    a_revoked_key_is_withdrawn_and_its_tokens_refused,
    |app: TestApp| async move {
        add_tools_resource(&app).await;
        seed(&app).await;
        let (rs, rs_secret) =
            crate::introspection::static_client(&app, &["client_credentials"], true).await;
        let client = public_client(&app).await;
        let (verifier, challenge) = pkce();
        let params = auth_params(&client, &challenge, "openid offline_access notes:read");
        let back = authorize_and_approve(&app, &browser(), &params).await;
        let (s, _, tokens) = redeem(&app, &client, &query(&back)["code"], &verifier, &[]).await;
        assert_eq!(s, 200, "{tokens}");
        let at = tokens["access_token"].as_str().unwrap().to_string();
        let kid = jsonwebtoken::decode_header(&at).unwrap().kid.unwrap();

        let introspect = async |token: &str| {
            let res = app
                .http
                .post(app.url("/introspect"))
                .form(&[
                    ("client_id", rs.as_str()),
                    ("client_secret", rs_secret.as_str()),
                    ("token", token),
                ])
                .send()
                .await
                .unwrap();
            let (s, _, body) = split(res).await;
            assert_eq!(s, 200, "{body}");
            body
        };
        let userinfo = async |token: &str| {
            app.http
                .get(app.url("/userinfo"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        };
        assert_eq!(introspect(&at).await["active"], true);
        assert_eq!(userinfo(&at).await, 200);

        let r = app.state.oauth.keys.revoke(&kid).await.unwrap();
        assert_eq!(r.alg, Alg::ES256);
        // It was the active key: a replacement signs at once, so signing never stops.
        let replacement = r.replacement.clone().expect("a replacement");
        assert_eq!(signing_kid(&app), replacement);
        let (_, _, jwks) = app.get_json("/jwks").await;
        assert!(
            !kids(&jwks).contains(&kid),
            "withdrawn from the JWKS: {jwks}"
        );
        assert!(kids(&jwks).contains(&replacement));
        // Tokens it signed are refused by our own verifiers.
        assert_eq!(introspect(&at).await["active"], false);
        assert_eq!(userinfo(&at).await, 401);
        // The refresh token is opaque and still works: it gets a token signed by the new key.
        let rt = tokens["refresh_token"].as_str().expect("a refresh token");
        let (s, _, body) = refresh(&app, &client, rt, &[]).await;
        assert_eq!(s, 200, "{body}");
        let fresh = body["access_token"].as_str().unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(fresh).unwrap().kid,
            Some(replacement)
        );
        assert_eq!(introspect(fresh).await["active"], true);
        // Revoked once only; unknown keys are named.
        assert!(matches!(
            app.state.oauth.keys.revoke(&kid).await,
            Err(concierge::keys::KeyError::AlreadyRevoked(_))
        ));
        assert!(matches!(
            app.state.oauth.keys.revoke("nope").await,
            Err(concierge::keys::KeyError::UnknownKey(_))
        ));
        let events = app
            .store()
            .list_audit(&concierge::store::AuditQuery {
                kind: Some("key.revoked".into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(events.len(), 1, "audited once");
        app
    }
);

both!(
    a_revocation_elsewhere_is_honoured_within_the_reload_bound,
    |c: &mut concierge::Config| {
        c.keys.refresh_secs = 1;
    },
    |app: TestApp| async move {
        let old = signing_kid(&app);
        let jwt = app
            .state
            .oauth
            .keys
            .sign_jwt(Alg::ES256, "at+jwt", &json!({"sub": "x"}))
            .unwrap();
        // Another replica (a second manager on the same database) revokes the active key.
        let other = concierge::App::build(app.config.clone()).await.unwrap();
        other.state.oauth.keys.revoke(&old).await.unwrap();
        let mut gone = false;
        for _ in 0..40 {
            let (_, _, jwks) = app.get_json("/jwks").await;
            if !kids(&jwks).contains(&old) {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(gone, "withdrawn here within refresh_secs");
        assert_ne!(signing_kid(&app), old, "never signs again");
        assert!(
            app.state
                .oauth
                .keys
                .ring()
                .verifier(&old, concierge::util::now())
                .is_none()
        );
        drop(jwt);
        app
    }
);

both!(
    scheduled_rotation_racing_replicas_make_one_pending_key,
    |c: &mut concierge::Config| {
        c.keys.rotate_after_days = 1;
    },
    |app: TestApp| async move {
        let b = concierge::App::build(app.config.clone()).await.unwrap();
        let c = concierge::App::build(app.config.clone()).await.unwrap();
        // Not due yet.
        let now = concierge::util::now();
        assert!(
            app.state
                .oauth
                .keys
                .rotate_due(now)
                .await
                .unwrap()
                .is_empty()
        );
        // Two days on, three replicas notice at once.
        let later = now + 2 * 86_400;
        let (x, y, z) = tokio::join!(
            app.state.oauth.keys.rotate_due(later),
            b.state.oauth.keys.rotate_due(later),
            c.state.oauth.keys.rotate_due(later),
        );
        let made = x.unwrap().len() + y.unwrap().len() + z.unwrap().len();
        assert_eq!(made, 2, "one new key per algorithm");
        let rows = app.store().list_keys().await.unwrap();
        assert_eq!(rows.len(), 4);
        let states = concierge::keys::row_states(&rows, later, 600);
        let pending = states
            .iter()
            .filter(|s| matches!(s, KeyState::Pending { .. }))
            .count();
        assert_eq!(pending, 2, "{states:?}");
        // And once made, it is not made again.
        assert!(
            b.state
                .oauth
                .keys
                .rotate_due(later)
                .await
                .unwrap()
                .is_empty()
        );
        app
    }
);

both!(
    keys_survive_restart_and_need_the_same_kek,
    |app: TestApp| async move {
        let (_, _, first) = app.get_json("/jwks").await;
        // A second server on the same database and key file serves the same keys.
        let again = concierge::App::build(app.config.clone()).await.unwrap();
        let mut a = kids(&first);
        let mut b = kids(&again.state.oauth.keys.ring().jwks(concierge::util::now()));
        a.sort();
        b.sort();
        assert_eq!(a, b);
        drop(again);
        // One with another key-encryption key refuses to start, and says why.
        let mut other = app.config.clone();
        other.key_encryption_key = Some(concierge::util::b64(&[9u8; 32]));
        let err = concierge::App::build(other)
            .await
            .err()
            .expect("must refuse");
        let msg = format!("{err:#}");
        assert!(msg.contains("key-encryption key"), "{msg}");
        app
    }
);

both!(
    a_rotation_elsewhere_is_picked_up,
    |c: &mut concierge::Config| {
        c.keys.refresh_secs = 1;
    },
    |app: TestApp| async move {
        // Another replica (here: a second manager on the same database) rotates.
        let other = concierge::App::build(app.config.clone()).await.unwrap();
        let new = other
            .state
            .oauth
            .keys
            .rotate(&[Alg::ES256], Activation::Delayed)
            .await
            .unwrap();
        let mut seen = false;
        for _ in 0..40 {
            let (_, _, jwks) = app.get_json("/jwks").await;
            if kids(&jwks).contains(&new[0].kid) {
                seen = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(
            seen,
            "the running server publishes a key rotated elsewhere within refresh_secs"
        );
        app
    }
);
