//! Refresh-token rotation as real agents use it: two processes refreshing with one token at
//! once, a retry after a lost response. Within `tokens.refresh_reuse_grace_secs` the client
//! that just rotated a token gets a successor replacing the first (one stays valid); later,
//! from another client, or for an older token, reuse revokes the family (RFC 9700 §4.14.2).

use serde_json::Value;

use crate::both;
use crate::flow::*;
use crate::helpers::{TestApp, assert_error, split};
use crate::introspection::static_client;

fn rt(body: &Value) -> String {
    body["refresh_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no refresh token in {body}"))
        .to_string()
}

/// `token` at the introspection endpoint: is it active?
async fn active(app: &TestApp, token: &str) -> bool {
    let (rs, secret) = static_client(app, &["client_credentials"], true).await;
    let (s, _, body) = split(
        app.http
            .post(app.url("/introspect"))
            .form(&[
                ("client_id", rs.as_str()),
                ("client_secret", secret.as_str()),
                ("token", token),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    body["active"] == true
}

/// Of `tokens` (the successors of one refresh token), exactly one still refreshes, and the
/// grant goes on from it: returns its index.
async fn exactly_one_refreshes(app: &TestApp, client: &str, tokens: &[String]) -> usize {
    let mut live = Vec::new();
    let mut next = None;
    for (i, t) in tokens.iter().enumerate() {
        let got = refresh(app, client, t, &[]).await;
        if got.0 == 200 {
            live.push(i);
            next = Some(rt(&got.2));
        } else {
            // A replaced successor is revoked; presenting it revokes nothing else.
            assert_error(&got, 400, "invalid_grant", "revoked");
        }
    }
    assert_eq!(live.len(), 1, "exactly one successor works: {live:?}");
    let next = next.unwrap();
    let (s, _, body) = refresh(app, client, &next, &[]).await;
    assert_eq!(s, 200, "the grant is not revoked: {body}");
    live[0]
}

/// `used` was rotated into `next`: presenting it again is refused as a replay, and the
/// family (with `next`) is revoked.
async fn assert_replay_revokes_the_family(app: &TestApp, client: &str, used: &str, next: &Value) {
    assert_error(
        &refresh(app, client, used, &[]).await,
        400,
        "invalid_grant",
        "already used",
    );
    assert_error(
        &refresh(app, client, &rt(next), &[]).await,
        400,
        "invalid_grant",
        "revoked",
    );
}

both!(
    concurrent_refreshes_with_one_token_leave_one_live_successor,
    |app: TestApp| async move {
        let (_, client, _, tokens) = connect_agent(&app, "notes:read").await;
        let t = rt(&tokens);
        let (a, b) = tokio::join!(
            refresh(&app, &client, &t, &[]),
            refresh(&app, &client, &t, &[])
        );
        assert_eq!(a.0, 200, "{}", a.2);
        assert_eq!(b.0, 200, "{}", b.2);
        let (ra, rb) = (rt(&a.2), rt(&b.2));
        assert_ne!(ra, rb);
        let winner = [&a.2, &b.2][exactly_one_refreshes(&app, &client, &[ra, rb]).await];
        assert!(
            active(&app, winner["access_token"].as_str().unwrap()).await,
            "the survivor's access token is active"
        );
        app
    }
);

both!(
    four_concurrent_refreshes_with_one_token_leave_one_live_successor,
    |app: TestApp| async move {
        let (_, client, _, tokens) = connect_agent(&app, "notes:read").await;
        let t = rt(&tokens);
        let r = || refresh(&app, &client, &t, &[]);
        let (a, b, c, d) = tokio::join!(r(), r(), r(), r());
        let all = [a, b, c, d];
        for got in &all {
            assert_eq!(got.0, 200, "{}", got.2);
        }
        let successors: Vec<String> = all.iter().map(|g| rt(&g.2)).collect();
        exactly_one_refreshes(&app, &client, &successors).await;
        app
    }
);

both!(
    a_retry_after_a_lost_response_replaces_the_first_successor,
    |app: TestApp| async move {
        let (_, client, _, tokens) = connect_agent(&app, "notes:read").await;
        let t = rt(&tokens);
        // The first answer is lost on the way back; the agent retries with the same token.
        let (s, _, lost) = refresh(&app, &client, &t, &[]).await;
        assert_eq!(s, 200, "{lost}");
        let (s, _, retried) = refresh(&app, &client, &t, &[]).await;
        assert_eq!(s, 200, "within the grace window: {retried}");
        assert!(
            !active(&app, &rt(&lost)).await,
            "the first successor is revoked"
        );
        assert!(active(&app, &rt(&retried)).await);
        assert_error(
            &refresh(&app, &client, &rt(&lost), &[]).await,
            400,
            "invalid_grant",
            "revoked",
        );
        let (s, _, next) = refresh(&app, &client, &rt(&retried), &[]).await;
        assert_eq!(s, 200, "{next}");
        app
    }
);

both!(
    without_grace_reuse_revokes_the_family,
    |c: &mut concierge::Config| c.tokens.refresh_reuse_grace_secs = 0,
    |app: TestApp| async move {
        let (_, client, _, tokens) = connect_agent(&app, "notes:read").await;
        let t = rt(&tokens);
        let (s, _, next) = refresh(&app, &client, &t, &[]).await;
        assert_eq!(s, 200, "{next}");
        assert_replay_revokes_the_family(&app, &client, &t, &next).await;
        app
    }
);

both!(
    reuse_after_the_grace_window_revokes_the_family,
    |c: &mut concierge::Config| c.tokens.refresh_reuse_grace_secs = 1,
    |app: TestApp| async move {
        let (_, client, _, tokens) = connect_agent(&app, "notes:read").await;
        let t = rt(&tokens);
        let (s, _, next) = refresh(&app, &client, &t, &[]).await;
        assert_eq!(s, 200, "{next}");
        // Rotated at second n, the window ends with second n + 1.
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        assert_replay_revokes_the_family(&app, &client, &t, &next).await;
        app
    }
);

both!(
    reuse_within_the_window_by_another_client_is_refused_and_revokes_the_family,
    |app: TestApp| async move {
        let (_, client, _, tokens) = connect_agent(&app, "notes:read").await;
        let t = rt(&tokens);
        let (s, _, next) = refresh(&app, &client, &t, &[]).await;
        assert_eq!(s, 200, "{next}");
        // The just-rotated token in another client's hands is a stolen token.
        let thief = public_client(&app).await;
        assert_error(
            &refresh(&app, &thief, &t, &[]).await,
            400,
            "invalid_grant",
            "already used",
        );
        assert_error(
            &refresh(&app, &client, &rt(&next), &[]).await,
            400,
            "invalid_grant",
            "revoked",
        );
        assert_error(
            &refresh(&app, &client, &t, &[]).await,
            400,
            "invalid_grant",
            "already used",
        );
        app
    }
);

both!(
    reuse_of_an_older_ancestor_within_the_window_revokes_the_family,
    |app: TestApp| async move {
        let (_, client, _, tokens) = connect_agent(&app, "notes:read").await;
        let t1 = rt(&tokens);
        let (_, _, r2) = refresh(&app, &client, &t1, &[]).await;
        let (s, _, r3) = refresh(&app, &client, &rt(&r2), &[]).await;
        assert_eq!(s, 200, "{r3}");
        // t1's successor was rotated in its turn: t1 is not the last rotated token.
        assert_error(
            &refresh(&app, &client, &t1, &[]).await,
            400,
            "invalid_grant",
            "already used",
        );
        assert_error(
            &refresh(&app, &client, &rt(&r3), &[]).await,
            400,
            "invalid_grant",
            "revoked",
        );
        app
    }
);

both!(
    a_retry_cannot_revive_a_revoked_grant,
    |app: TestApp| async move {
        let (_, client, _, tokens) = connect_agent(&app, "notes:read").await;
        let t = rt(&tokens);
        let (_, _, next) = refresh(&app, &client, &t, &[]).await;
        // The client revokes its grant (RFC 7009), then a late retry of the rotated token.
        assert_eq!(revoke_public(&app, &client, &rt(&next)).await, 200);
        assert_eq!(
            refresh(&app, &client, &t, &[]).await.0,
            400,
            "no successor for a revoked grant"
        );
        app
    }
);

// A client that kept an older refresh token (a logout racing a rotation, a copy on another of
// its processes) revokes it: the token names the grant, so the grant ends, its current token
// with it (RFC 7009 §2.1, "other tokens based on the same authorization grant").
both!(
    revoking_a_rotated_out_token_ends_the_grant,
    |app: TestApp| async move {
        let (_, client, _, tokens) = connect_agent(&app, "notes:read").await;
        let t = rt(&tokens);
        let (s, _, next) = refresh(&app, &client, &t, &[]).await;
        assert_eq!(s, 200, "{next}");
        let next = rt(&next);
        assert!(active(&app, &next).await);
        assert_eq!(revoke_public(&app, &client, &t).await, 200);
        assert!(
            !active(&app, &next).await,
            "the current token went with the grant"
        );
        assert_error(
            &refresh(&app, &client, &next, &[]).await,
            400,
            "invalid_grant",
            "revoked",
        );
        app
    }
);

// Refresh tokens are keyed in the store behind their issue time (`util::ordered_secret`, issue
// 17.2); one a release before that issued (43 characters, keyed by its hash alone) still
// works after the upgrade, and rotates into one of the new shape.
both!(
    a_refresh_token_of_an_earlier_release_still_refreshes,
    |app: TestApp| async move {
        use concierge::util::{now, random_secret, secret_hash, secret_key};
        let (_, client, _, tokens) = connect_agent(&app, "notes:read").await;
        let issued = rt(&tokens);
        assert_eq!(issued.len(), 54, "{issued}");
        let stored = app
            .store()
            .get_refresh(&secret_key(&issued), now())
            .await
            .unwrap()
            .expect("the issued token is found by its key");
        let old = random_secret();
        app.store()
            .insert_refresh(&concierge::store::RefreshToken {
                token_hash: secret_hash(&old),
                family_id: concierge::util::random_id(),
                ..stored.clone()
            })
            .await
            .unwrap();
        assert!(active(&app, &old).await);
        let (s, _, next) = refresh(&app, &client, &old, &[]).await;
        assert_eq!(s, 200, "{next}");
        let next = rt(&next);
        assert_eq!(next.len(), 54, "{next}");
        // Issued later, keyed later: new tokens go to the end of the store's index.
        assert!(secret_key(&next) > stored.token_hash);
        app
    }
);

both!(
    a_refresh_without_resource_keeps_the_granted_resource,
    |app: TestApp| async move {
        let (_, client, _, tokens) = connect_agent(&app, "notes:read").await;
        let (s, _, body) = refresh(&app, &client, &rt(&tokens), &[]).await;
        assert_eq!(s, 200, "{body}");
        let at = claims(body["access_token"].as_str().unwrap());
        assert_eq!(at["aud"], NOTES, "{at}");
        assert_eq!(at["scope"], "notes:read");
        // And its successor keeps it too.
        let (s, _, body) = refresh(&app, &client, &rt(&body), &[]).await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(claims(body["access_token"].as_str().unwrap())["aud"], NOTES);
        app
    }
);
