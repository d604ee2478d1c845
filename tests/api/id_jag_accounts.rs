//! Issue 18.8: who an enterprise IdP's user is at the MCP server's authorization server.
//! Linked by subject first, then (when the trusted issuer allows it) by verified email, else
//! provisioned or refused; operators link and unlink from the admin API and the CLI. Two
//! Concierge instances over HTTP, on both stores.

use serde_json::{Value, json};

use crate::admin::{admin_token, call};
use crate::flow::*;
use crate::helpers::{Backend, assert_error};
use crate::id_jag::Pair;

/// The `sub` of the access token an ID-JAG redeems for, or the error answer.
async fn redeemed_sub(p: &Pair, jag: &str) -> Result<String, (reqwest::StatusCode, Value)> {
    let (s, _, body) = p.redeem_id_jag(jag, &[]).await;
    if s != 200 {
        return Err((s, body));
    }
    let at = body["access_token"].as_str().unwrap();
    let v = verify(&p.rs_as, at, jsonwebtoken::Algorithm::ES256, NOTES);
    Ok(v["sub"].as_str().unwrap().to_string())
}

fn refused(r: Result<String, (reqwest::StatusCode, Value)>, word: &str) {
    let (s, body) = r.expect_err("refused");
    assert_eq!(s, 400, "{body}");
    assert_eq!(body["error"], "invalid_grant", "{body}");
    let d = body["error_description"].as_str().unwrap();
    assert!(d.contains(word), "{d:?} should say {word:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linked_by_subject_then_verified_email_else_refused() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(p) = Pair::start(backend, |c| {
            for t in &mut c.id_jag.trusted_issuers {
                t.link_by_email = true;
                t.provision = false;
            }
        })
        .await
        else {
            continue;
        };
        let store = p.rs_as.store();
        let alice = store.find_user("alice").await.unwrap().unwrap();
        let (_, _, token) = admin_token(&p.rs_as).await;
        let app = &p.rs_as;
        let admin = |method: reqwest::Method, path: String, body: Option<Value>| {
            let token = token.clone();
            async move { call(app, Some(&token), method, &path, body).await }
        };
        let emp = |sub: &str, extra: Value| {
            let mut c = json!({ "sub": sub });
            for (k, v) in extra.as_object().unwrap() {
                c[k] = v.clone();
            }
            p.forge("oauth-id-jag+jwt", c)
        };

        // alice's address here is not verified: nothing links, and nobody is provisioned.
        let mixed_case = json!({ "email": "Alice@Example.com" });
        refused(
            redeemed_sub(&p, &emp("emp-1", mixed_case.clone())).await,
            "no account here is linked",
        );
        assert!(
            store
                .find_identity(&p.idp.issuer, "emp-1")
                .await
                .unwrap()
                .is_none()
        );

        // An operator marks it verified (issue 15.2's lifecycle verb).
        let (s, _, u) = admin(
            reqwest::Method::PATCH,
            format!("/admin/v1/users/{}", alice.id),
            Some(json!({ "email_verified": true })),
        )
        .await;
        assert_eq!(s, 200, "{u}");
        assert_eq!(u["email_verified"], true);
        assert_eq!(u["email"], "alice@example.com");

        // The real IdP: its alice (verified there too) signs in with the email scope; the
        // ID-JAG carries her address and the link is made by email.
        let mut idp_alice = p.idp.store().find_user("alice").await.unwrap().unwrap();
        idp_alice.email_verified = true;
        p.idp.store().update_profile(&idp_alice, 0).await.unwrap();
        let id_token = p.id_token_for("openid email notes:read").await;
        let (s, _, body) = p.request_id_jag(&id_token, &[]).await;
        assert_eq!(s, 200, "{body}");
        let jag = body["access_token"].as_str().unwrap().to_string();
        let c = claims(&jag);
        assert_eq!(c["email"], "alice@example.com");
        assert_eq!(c["email_verified"], true);
        assert_eq!(redeemed_sub(&p, &jag).await.unwrap(), alice.id);
        let (s, _, links) = admin(
            reqwest::Method::GET,
            format!("/admin/v1/users/{}/identities", alice.id),
            None,
        )
        .await;
        assert_eq!(s, 200, "{links}");
        assert_eq!(links.as_array().unwrap().len(), 1, "{links}");
        assert_eq!(links[0]["issuer"], p.idp.issuer);
        assert_eq!(links[0]["subject"], idp_alice.id);
        assert_eq!(links[0]["linked_by"], "email");
        // Linked by subject from now on, whatever the address says.
        let jag = p.forge(
            "oauth-id-jag+jwt",
            json!({ "sub": idp_alice.id, "email": "x@y.example" }),
        );
        assert_eq!(redeemed_sub(&p, &jag).await.unwrap(), alice.id);

        // Another user of the same IdP asserting alice's address (reassigned there) does not
        // take her account; nor does an address the IdP says is unverified.
        refused(
            redeemed_sub(&p, &emp("emp-2", mixed_case.clone())).await,
            "linked to another user of this issuer",
        );
        let unverified = json!({ "email": "bob@example.com", "email_verified": false });
        let bob_id = add_user(&p.rs_as, "bob").await;
        let bob = store.get_user(&bob_id).await.unwrap().unwrap();
        let mut verified_bob = bob.clone();
        verified_bob.email_verified = true;
        store.update_profile(&verified_bob, 0).await.unwrap();
        refused(
            redeemed_sub(&p, &emp("emp-3", unverified.clone())).await,
            "no account here is linked",
        );

        // An operator links emp-3 to bob; linking it to alice as well is a conflict.
        let (s, _, l) = admin(
            reqwest::Method::POST,
            format!("/admin/v1/users/{}/identities", bob.id),
            Some(json!({ "issuer": p.idp.issuer, "subject": "emp-3" })),
        )
        .await;
        assert_eq!(s, 201, "{l}");
        assert_eq!(l["linked_by"], "operator");
        assert_eq!(
            redeemed_sub(&p, &emp("emp-3", unverified.clone()))
                .await
                .unwrap(),
            bob.id
        );
        let (s, _, e) = admin(
            reqwest::Method::POST,
            format!("/admin/v1/users/{}/identities", alice.id),
            Some(json!({ "issuer": p.idp.issuer, "subject": "emp-3" })),
        )
        .await;
        assert_eq!(s, 409, "{e}");
        let (s, _, e) = admin(
            reqwest::Method::POST,
            format!("/admin/v1/users/{}/identities", alice.id),
            Some(json!({ "issuer": "not a url", "subject": "emp-3" })),
        )
        .await;
        assert_eq!(
            (s.as_u16(), e["error"]["field"].as_str()),
            (400, Some("issuer")),
            "{e}"
        );

        // Unlinked: refused again (provisioning is off for this IdP).
        let q: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("issuer", &p.idp.issuer)
            .append_pair("subject", "emp-3")
            .finish();
        let (s, _, e) = admin(
            reqwest::Method::DELETE,
            format!("/admin/v1/users/{}/identities?{q}", bob.id),
            None,
        )
        .await;
        assert_eq!(s, 204, "{e}");
        let (s, _, _) = admin(
            reqwest::Method::DELETE,
            format!("/admin/v1/users/{}/identities?{q}", bob.id),
            None,
        )
        .await;
        assert_eq!(s, 404);
        refused(
            redeemed_sub(&p, &emp("emp-3", unverified)).await,
            "no account here is linked",
        );

        // A changed address is unverified again unless the operator says otherwise.
        let (s, _, u) = admin(
            reqwest::Method::PATCH,
            format!("/admin/v1/users/{}", alice.id),
            Some(json!({ "email": "alice@new.example" })),
        )
        .await;
        assert_eq!(s, 200, "{u}");
        assert_eq!(u["email_verified"], false);
        let (s, _, e) = admin(
            reqwest::Method::PATCH,
            format!("/admin/v1/users/{}", alice.id),
            Some(json!({ "email": null, "email_verified": true })),
        )
        .await;
        assert_eq!(
            (s.as_u16(), e["error"]["field"].as_str()),
            (400, Some("email_verified")),
            "{e}"
        );

        p.rs_as.state.oauth.audit.flush().await;
        let linked = store
            .list_audit(&concierge::store::AuditQuery {
                kind: Some("identity.linked".into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(linked.len(), 1, "{linked:?}");
        assert_eq!(linked[0].detail["linked_by"], "email");
        assert_eq!(linked[0].user_id.as_deref(), Some(alice.id.as_str()));
        p.finish().await;
    }
}

/// Provisioning (the default): one account per IdP user, the same on every ID-JAG, also
/// when two redemptions race for a user seen for the first time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioned_once_per_idp_user() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(p) = Pair::start(backend, |_| {}).await else {
            continue;
        };
        let forge = |sub: &str| {
            p.forge(
                "oauth-id-jag+jwt",
                json!({ "sub": sub, "email": "carol@corp.example", "name": "Carol" }),
            )
        };
        let (a, b) = (forge("carol"), forge("carol"));
        let (ra, rb) = tokio::join!(redeemed_sub(&p, &a), redeemed_sub(&p, &b));
        let (sa, sb) = (ra.unwrap(), rb.unwrap());
        assert_eq!(sa, sb, "one account for one IdP user");
        let user = p.rs_as.store().get_user(&sa).await.unwrap().unwrap();
        assert_eq!(user.username, "carol@corp.example");
        assert_eq!(user.name.as_deref(), Some("Carol"));
        assert!(!user.email_verified, "the IdP did not say it was verified");
        assert_eq!(redeemed_sub(&p, &forge("carol")).await.unwrap(), sa);

        // Another IdP user with the same address gets their own account (no email linking
        // unless the operator turns it on), under a username of its own.
        let other = redeemed_sub(&p, &forge("carol-2")).await.unwrap();
        assert_ne!(other, sa);
        let u2 = p.rs_as.store().get_user(&other).await.unwrap().unwrap();
        assert!(
            u2.username.starts_with("carol@corp.example~"),
            "{}",
            u2.username
        );

        // Disabled (issue 15.2): the IdP's ID-JAGs for that user are refused.
        let store = p.rs_as.store();
        assert!(store.set_disabled(&sa, Some(1), 1).await.unwrap());
        let r = p.redeem_id_jag(&forge("carol"), &[]).await;
        assert_error(&r, 400, "invalid_grant", "disabled");
        assert!(store.set_disabled(&sa, None, 2).await.unwrap());
        assert_eq!(redeemed_sub(&p, &forge("carol")).await.unwrap(), sa);

        // A `sub` no OpenID provider would send is refused before anything is stored.
        let long = "s".repeat(256);
        let r = p.redeem_id_jag(&forge(&long), &[]).await;
        assert_error(&r, 400, "invalid_grant", "sub of 1 to 255");
        p.finish().await;
    }
}
