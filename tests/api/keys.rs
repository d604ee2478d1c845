//! Signing keys: generated on first start, encrypted at rest, published, rotated with overlap.

use concierge::keys::Alg;
use serde_json::Value;

use crate::both;
use crate::helpers::TestApp;

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

both!(
    rotation_keeps_old_keys_until_their_tokens_expire,
    |app: TestApp| async move {
        let (_, _, before) = app.get_json("/jwks").await;
        let old = kids(&before);
        let active_before = app
            .state
            .oauth
            .keys
            .ring()
            .active(Alg::ES256)
            .unwrap()
            .kid
            .clone();

        let new = app.state.oauth.keys.rotate(&Alg::ALL).await.unwrap();
        let (_, _, after) = app.get_json("/jwks").await;
        let published = kids(&after);
        assert_eq!(published.len(), 4, "{after}");
        for k in old.iter().chain(new.iter()) {
            assert!(published.contains(k), "{k} published");
        }
        let active_after = app
            .state
            .oauth
            .keys
            .ring()
            .active(Alg::ES256)
            .unwrap()
            .kid
            .clone();
        assert_ne!(active_before, active_after);
        assert!(new.contains(&active_after));

        // Tokens signed now use the new key and verify with the published JWKS.
        let jwt = app
            .state
            .oauth
            .keys
            .sign_jwt(Alg::ES256, "at+jwt", &serde_json::json!({"sub": "x"}))
            .unwrap();
        let header = jsonwebtoken::decode_header(&jwt).unwrap();
        assert_eq!(header.kid.as_deref(), Some(active_after.as_str()));

        // Once the longest token lifetime has passed, retired keys are no longer published.
        let later = concierge::util::now() + app.config.tokens.longest_signed_lifetime() + 120;
        let jwks_later = app.state.oauth.keys.ring().jwks(later);
        let mut remaining = kids(&jwks_later);
        remaining.sort();
        let mut expected = new.clone();
        expected.sort();
        assert_eq!(remaining, expected);
        let rows = app.store().list_keys().await.unwrap();
        for r in rows.iter().filter(|r| old.contains(&r.kid)) {
            assert!(r.retired_at.is_some() && r.expires_at.is_some());
        }
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
        let new = other.state.oauth.keys.rotate(&[Alg::ES256]).await.unwrap();
        let mut seen = false;
        for _ in 0..40 {
            let (_, _, jwks) = app.get_json("/jwks").await;
            if kids(&jwks).contains(&new[0]) {
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
