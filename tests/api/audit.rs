//! The audit log: a code flow, a replayed code, a failed sign-in and a revocation each leave
//! the events an operator would look for, filterable and paginated, with no token in them.

use serde_json::{Value, json};

use crate::both;
use crate::flow::*;
use crate::helpers::*;
use concierge::store::{AuditEvent, AuditQuery};

async fn events(app: &TestApp, q: AuditQuery) -> Vec<AuditEvent> {
    app.state.oauth.audit.flush().await;
    app.store()
        .list_audit(&AuditQuery {
            limit: if q.limit == 0 { 100 } else { q.limit },
            ..q
        })
        .await
        .unwrap()
}

fn kinds(list: &[AuditEvent]) -> Vec<&str> {
    list.iter().map(|e| e.kind.as_str()).collect()
}

both!(
    a_code_flow_and_its_replay_are_recorded,
    |app: TestApp| async move {
        let alice = seed(&app).await;
        let client_id = public_client(&app).await;
        let b = browser();
        // A wrong password first.
        let res = b
            .get(authorize_url(
                &app,
                &auth_params(&client_id, &pkce().1, "notes:read"),
            ))
            .send()
            .await
            .unwrap();
        let signin = format!("{}{}", app.origin, location(&res));
        let res = sign_in(&app, &b, &signin, "alice", "wrong password").await;
        assert_eq!(res.status(), 401);

        let (verifier, challenge) = pkce();
        let back =
            authorize_and_approve(&app, &b, &auth_params(&client_id, &challenge, "notes:read"))
                .await;
        let code = query(&back)["code"].clone();
        let (status, _, tokens) = redeem(&app, &client_id, &code, &verifier, &[]).await;
        assert_eq!(status, 200, "{tokens}");
        let (status, _, _) = redeem(&app, &client_id, &code, &verifier, &[]).await;
        assert_eq!(status, 400);

        let all = events(&app, AuditQuery::default()).await;
        let k = kinds(&all);
        for want in [
            "client.registered",
            "signin.failed",
            "signin.succeeded",
            "consent.granted",
            "token.issued",
            "code.replay_detected",
        ] {
            assert!(k.contains(&want), "{want} missing from {k:?}");
        }
        // Newest first, ids strictly decreasing.
        assert!(all.windows(2).all(|w| w[0].id > w[1].id));

        let issued = all.iter().find(|e| e.kind == "token.issued").unwrap();
        assert_eq!(issued.client_id.as_deref(), Some(client_id.as_str()));
        assert_eq!(issued.user_id.as_deref(), Some(alice.as_str()));
        assert_eq!(issued.detail["grant_type"], "authorization_code");
        assert_eq!(issued.detail["audience"][0], NOTES);
        let jti = claims(tokens["access_token"].as_str().unwrap())["jti"].clone();
        assert_eq!(issued.detail["jti"], jti);
        assert_eq!(
            issued.detail["refresh_token_issued"],
            Value::Bool(tokens["refresh_token"].is_string())
        );
        // No token or secret anywhere in the log.
        let text = serde_json::to_string(&all).unwrap();
        assert!(!text.contains(tokens["access_token"].as_str().unwrap()));
        assert!(!text.contains(&code));
        if let Some(rt) = tokens["refresh_token"].as_str() {
            assert!(!text.contains(rt));
        }
        assert!(!text.contains(PASSWORD) && !text.contains("wrong password"));

        let failed = all.iter().find(|e| e.kind == "signin.failed").unwrap();
        assert_eq!(failed.user_id.as_deref(), Some(alice.as_str()));
        assert!(failed.ip.is_some());

        // Filters: by kind prefix, by client, by user; and a cursor.
        let signins = events(
            &app,
            AuditQuery {
                kind: Some("signin".into()),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(kinds(&signins), ["signin.succeeded", "signin.failed"]);
        let exact = events(
            &app,
            AuditQuery {
                kind: Some("signin.failed".into()),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(exact.len(), 1);
        let none = events(
            &app,
            AuditQuery {
                kind: Some("sign".into()),
                ..Default::default()
            },
        )
        .await;
        assert!(none.is_empty(), "a kind prefix matches whole parts only");
        let by_user = events(
            &app,
            AuditQuery {
                user_id: Some(alice.clone()),
                ..Default::default()
            },
        )
        .await;
        assert!(
            by_user
                .iter()
                .all(|e| e.user_id.as_deref() == Some(alice.as_str()))
        );
        assert!(by_user.len() >= 4);
        let page1 = events(
            &app,
            AuditQuery {
                limit: 2,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(page1.len(), 2);
        let page2 = events(
            &app,
            AuditQuery {
                limit: 2,
                before_id: Some(page1[1].id),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(page2[0].id, all[2].id);
        let later = events(
            &app,
            AuditQuery {
                since: Some(concierge::util::now() + 5),
                ..Default::default()
            },
        )
        .await;
        assert!(later.is_empty());
        let by_client = events(
            &app,
            AuditQuery {
                client_id: Some("someone-else".into()),
                ..Default::default()
            },
        )
        .await;
        assert!(by_client.is_empty());
        app
    }
);

both!(
    revocation_and_refresh_reuse_are_recorded,
    |app: TestApp| async move {
        seed(&app).await;
        let client_id = public_client(&app).await;
        let b = browser();
        let (verifier, challenge) = pkce();
        let back = authorize_and_approve(
            &app,
            &b,
            &auth_params(&client_id, &challenge, "notes:read offline_access"),
        )
        .await;
        let code = query(&back)["code"].clone();
        let (_, _, tokens) = redeem(&app, &client_id, &code, &verifier, &[]).await;
        let rt = tokens["refresh_token"]
            .as_str()
            .expect("refresh token")
            .to_string();
        let (status, _, _) = refresh(&app, &client_id, &rt, &[]).await;
        assert_eq!(status, 200);
        // A retry within the grace window, then a rotation, then a replay of the first.
        let (status, _, retried) = refresh(&app, &client_id, &rt, &[]).await;
        assert_eq!(status, 200);
        let rt2 = retried["refresh_token"].as_str().unwrap();
        let (status, _, _) = refresh(&app, &client_id, rt2, &[]).await;
        assert_eq!(status, 200);
        let (status, _, _) = refresh(&app, &client_id, &rt, &[]).await;
        assert_eq!(status, 400);
        let at = tokens["access_token"].as_str().unwrap();
        assert_eq!(revoke_public(&app, &client_id, at).await, 200);
        let all = events(&app, AuditQuery::default()).await;
        let k = kinds(&all);
        assert!(k.contains(&"refresh.reuse_detected"), "{k:?}");
        let graced = all
            .iter()
            .find(|e| e.kind == "refresh.reuse_within_grace")
            .expect("the retry recorded apart from the replay");
        assert_eq!(graced.client_id.as_deref(), Some(client_id.as_str()));
        assert!(graced.detail["family_id"].is_string());
        let revoked = all
            .iter()
            .find(|e| e.kind == "token.revoked")
            .expect("revocation recorded");
        assert_eq!(revoked.detail["token_type"], "access_token");
        assert_eq!(
            revoked.detail["jti"],
            claims(tokens["access_token"].as_str().unwrap())["jti"]
        );
        let refreshes = all
            .iter()
            .filter(|e| e.kind == "token.issued" && e.detail["grant_type"] == "refresh_token")
            .count();
        assert_eq!(refreshes, 3);
        app
    }
);

both!(
    issued_tokens_reach_the_table_without_a_flush,
    |app: TestApp| async move {
        seed(&app).await;
        let (id, secret) = machine_client(&app).await;
        let id = id.as_str();
        let (s, _, t) = machine_token(&app, id, &secret).await;
        assert_eq!(s, 200, "{t}");
        let jti = claims(t["access_token"].as_str().unwrap())["jti"].clone();
        // The writer lingers briefly to batch events, then writes them with nobody asking.
        let query = AuditQuery {
            kind: Some("token.issued".into()),
            client_id: Some(id.to_string()),
            limit: 10,
            ..Default::default()
        };
        let mut found = Vec::new();
        for _ in 0..100 {
            found = app.store().list_audit(&query).await.unwrap();
            if !found.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let [issued] = found.as_slice() else {
            panic!("one token.issued event within 5 s: {found:?}");
        };
        assert_eq!(issued.user_id, None, "a client's own token has no user");
        assert_eq!(
            issued.detail,
            json!({
                "grant_type": "client_credentials",
                "sub": id,
                "audience": [NOTES],
                "scope": "notes:read",
                "jti": jti,
                "exp": issued.detail["exp"],
                "refresh_token_issued": false,
            })
        );
        assert!(issued.detail["exp"].as_i64().unwrap() > issued.at);
        app
    }
);

both!(unknown_usernames_are_not_kept, |app: TestApp| async move {
    seed(&app).await;
    // A password typed into the username field is never kept: an unknown username is
    // recorded only as a short digest; a known user's name and id are.
    let b = browser();
    let typed = "my secret passphrase";
    for _ in 0..2 {
        let res = sign_in(&app, &b, &app.url("/signin"), typed, "whatever").await;
        assert_eq!(res.status(), 401);
    }
    let res = sign_in(&app, &b, &app.url("/signin"), "alice", "wrong password").await;
    assert_eq!(res.status(), 401);
    let failed = events(
        &app,
        AuditQuery {
            kind: Some("signin.failed".into()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(failed.len(), 3);
    let digests: Vec<&str> = failed
        .iter()
        .filter(|e| e.user_id.is_none())
        .map(|e| e.detail["username_digest"].as_str().unwrap())
        .collect();
    assert_eq!(digests.len(), 2);
    assert!(
        digests[0] == digests[1] && digests[0].len() == 8,
        "{digests:?}"
    );
    assert!(failed.iter().any(|e| e.detail["username"] == "alice"));
    assert!(!serde_json::to_string(&failed).unwrap().contains(typed));
    app
});
