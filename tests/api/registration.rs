//! Dynamic client registration (RFC 7591) and its management protocol (RFC 7592).

use serde_json::{Value, json};

use crate::both;
use crate::helpers::{TestApp, assert_error, split};

fn public_client() -> Value {
    // What MCP clients typically send.
    json!({
        "client_name": "Example Agent",
        "redirect_uris": ["http://localhost:6274/oauth/callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "scope": "notes:read notes:write",
        "software_id": "example-agent",
        "software_version": "1.2.3",
        "logo_uri": "https://agent.example/logo.png",
        "client_uri": "https://agent.example",
        // Not RFC 7591 metadata; some clients send it. Ignored, not refused.
        "resource": "https://mcp.example.com/mcp"
    })
}

both!(public_client_registers, |app: TestApp| async move {
    let (status, headers, body) = app.register(&public_client()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    let id = body["client_id"].as_str().unwrap();
    assert!(!id.starts_with("https://") && id.len() >= 22, "{id}");
    assert!(
        body.get("client_secret").is_none(),
        "public clients get no secret"
    );
    assert!(body["client_id_issued_at"].as_i64().unwrap() > 0);
    assert_eq!(body["token_endpoint_auth_method"], "none");
    assert_eq!(body["client_name"], "Example Agent");
    assert_eq!(body["software_version"], "1.2.3");
    assert_eq!(
        body["redirect_uris"],
        json!(["http://localhost:6274/oauth/callback"])
    );
    assert!(body.get("resource").is_none());
    assert!(body["registration_access_token"].as_str().unwrap().len() >= 43);
    assert_eq!(
        body["registration_client_uri"],
        app.url(&format!("/register/{id}"))
    );

    let stored = app
        .store()
        .get_client(id, concierge::util::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.registered_from.as_deref(), Some("127.0.0.1"));
    assert!(stored.expires_at.is_some(), "unused registrations expire");
    // The registration access token is stored hashed.
    let rat = body["registration_access_token"].as_str().unwrap();
    assert_ne!(
        stored.registration_token_hash.as_deref().unwrap(),
        rat.as_bytes()
    );
    // The directory finds it like any client.
    let c = app.state.oauth.clients.find(id).await.unwrap().unwrap();
    assert!(c.is_unverified());
    assert_eq!(c.display_name(), "Example Agent");
    app
});

both!(
    confidential_client_defaults_to_client_secret_basic,
    |app: TestApp| async move {
        let (status, _, body) = app
        .register(&json!({"redirect_uris": ["https://app.example.com/cb"], "application_type": "web"}))
        .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["token_endpoint_auth_method"], "client_secret_basic");
        let secret = body["client_secret"].as_str().unwrap();
        assert_eq!(secret.len(), 43, "256-bit secret");
        assert_eq!(body["client_secret_expires_at"], 0);
        assert_eq!(body["grant_types"], json!(["authorization_code"]));
        assert_eq!(body["response_types"], json!(["code"]));
        let stored = app
            .store()
            .get_client(body["client_id"].as_str().unwrap(), concierge::util::now())
            .await
            .unwrap()
            .unwrap();
        assert!(concierge::util::verify_secret(
            secret,
            stored.secret_hash.as_deref().unwrap()
        ));
        app
    }
);

both!(
    native_app_with_private_use_scheme,
    |app: TestApp| async move {
        let (status, _, body) = app
            .register(&json!({
                "application_type": "native",
                "redirect_uris": ["com.example.agent:/oauth2redirect", "http://127.0.0.1/callback"],
                "token_endpoint_auth_method": "none"
            }))
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["application_type"], "native");
        app
    }
);

both!(
    machine_client_with_private_key_jwt,
    |app: TestApp| async move {
        let jwk = app.state.oauth.keys.ring().jwks(concierge::util::now())["keys"][0].clone();
        let (status, _, body) = app
            .register(&json!({
                "grant_types": ["client_credentials"],
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks": {"keys": [jwk]}
            }))
            .await;
        assert_eq!(status, 201, "{body}");
        assert!(body.get("client_secret").is_none());
        assert_eq!(body["response_types"], json!([]));
        app
    }
);

/// One test per refusal reason: `refused!(name, body, status, error, field)`.
macro_rules! refused {
    ($name:ident, $body:expr, $code:literal, $field:literal) => {
        both!($name, |app: TestApp| async move {
            let got = app.register(&$body).await;
            assert_error(&got, 400, $code, $field);
            assert!(
                app.store()
                    .list_clients(concierge::util::now())
                    .await
                    .unwrap()
                    .is_empty(),
                "nothing stored"
            );
            app
        });
    };
}

refused!(
    refuses_http_redirect_to_other_hosts,
    json!({"redirect_uris": ["http://app.example.com/cb"]}),
    "invalid_redirect_uri",
    "redirect_uris[0]"
);
refused!(
    refuses_redirect_with_fragment,
    json!({"redirect_uris": ["https://app.example.com/cb#x"]}),
    "invalid_redirect_uri",
    "fragment"
);
refused!(
    refuses_javascript_redirect,
    json!({"redirect_uris": ["javascript:alert(1)"]}),
    "invalid_redirect_uri",
    "javascript"
);
refused!(
    refuses_data_redirect,
    json!({"redirect_uris": ["data:text/html,<script>x</script>"]}),
    "invalid_redirect_uri",
    "data"
);
refused!(
    refuses_relative_redirect,
    json!({"redirect_uris": ["/cb"]}),
    "invalid_redirect_uri",
    "absolute"
);
refused!(
    refuses_code_client_without_redirects,
    json!({"client_name": "x"}),
    "invalid_redirect_uri",
    "redirect_uris"
);
refused!(
    refuses_unknown_grant_type,
    json!({"redirect_uris": ["https://a.example/cb"], "grant_types": ["authorization_code", "magic"]}),
    "invalid_client_metadata",
    "grant_types"
);
refused!(
    refuses_implicit_grant,
    json!({"redirect_uris": ["https://a.example/cb"], "grant_types": ["implicit"]}),
    "invalid_client_metadata",
    "OAuth 2.1"
);
refused!(
    refuses_password_grant,
    json!({"redirect_uris": ["https://a.example/cb"], "grant_types": ["password"]}),
    "invalid_client_metadata",
    "OAuth 2.1"
);
refused!(
    refuses_token_response_type,
    json!({"redirect_uris": ["https://a.example/cb"], "response_types": ["code", "token"]}),
    "invalid_client_metadata",
    "response_types"
);
refused!(
    refuses_mismatched_response_types,
    json!({"grant_types": ["client_credentials"], "response_types": ["code"]}),
    "invalid_client_metadata",
    "response_types"
);
refused!(
    refuses_code_grant_without_code_response,
    json!({"redirect_uris": ["https://a.example/cb"], "response_types": []}),
    "invalid_client_metadata",
    "response_types"
);
refused!(
    refuses_unknown_auth_method,
    json!({"redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "client_secret_jwt"}),
    "invalid_client_metadata",
    "token_endpoint_auth_method"
);
refused!(
    refuses_private_key_jwt_without_keys,
    json!({"redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "private_key_jwt"}),
    "invalid_client_metadata",
    "jwks"
);
refused!(
    refuses_public_client_credentials,
    json!({"grant_types": ["client_credentials"], "token_endpoint_auth_method": "none"}),
    "invalid_client_metadata",
    "grant_types"
);
refused!(
    refuses_bad_logo_uri,
    json!({"redirect_uris": ["https://a.example/cb"], "logo_uri": "javascript:alert(1)"}),
    "invalid_client_metadata",
    "logo_uri"
);
refused!(
    refuses_wrong_field_type,
    json!({"redirect_uris": "https://a.example/cb"}),
    "invalid_client_metadata",
    "redirect_uris"
);
refused!(
    refuses_bad_application_type,
    json!({"redirect_uris": ["https://a.example/cb"], "application_type": "desktop"}),
    "invalid_client_metadata",
    "application_type"
);
refused!(
    refuses_private_jwk,
    json!({"grant_types": ["client_credentials"], "token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}}),
    "invalid_client_metadata",
    "private member"
);
refused!(
    refuses_non_object_body,
    json!(["redirect_uris"]),
    "invalid_client_metadata",
    "JSON object"
);

async fn post_raw(
    app: &TestApp,
    content_type: &str,
    body: Vec<u8>,
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    let res = app
        .http
        .post(app.url("/register"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    split(res).await
}

both!(refuses_malformed_json, |app: TestApp| async move {
    let got = post_raw(&app, "application/json", b"{\"redirect_uris\": [".to_vec()).await;
    assert_error(&got, 400, "invalid_client_metadata", "not valid JSON");
    app
});

both!(refuses_wrong_content_type, |app: TestApp| async move {
    let got = post_raw(
        &app,
        "application/x-www-form-urlencoded",
        b"redirect_uris=https://a.example/cb".to_vec(),
    )
    .await;
    assert_error(&got, 400, "invalid_client_metadata", "Content-Type");
    app
});

both!(refuses_oversized_body, |app: TestApp| async move {
    let big =
        json!({"redirect_uris": ["https://a.example/cb"], "client_name": "x".repeat(70 * 1024)});
    let got = post_raw(&app, "application/json", serde_json::to_vec(&big).unwrap()).await;
    assert_error(&got, 400, "invalid_client_metadata", "larger than");
    // A long field under the body limit is refused by the field's own limit.
    let long = json!({"redirect_uris": ["https://a.example/cb"], "client_name": "x".repeat(1000)});
    assert_error(
        &app.register(&long).await,
        400,
        "invalid_client_metadata",
        "client_name",
    );
    app
});

both!(refuses_duplicate_fields, |app: TestApp| async move {
    let got = post_raw(
        &app,
        "application/json",
        br#"{"redirect_uris":["https://a.example/cb"],"redirect_uris":["https://evil.example/cb"]}"#.to_vec(),
    )
    .await;
    assert_error(&got, 400, "invalid_client_metadata", "duplicate field");
    app
});

both!(
    policy_limits_redirect_hosts,
    |c: &mut concierge::Config| {
        c.registration.allowed_redirect_hosts = vec!["*.trusted.example".into()];
    },
    |app: TestApp| async move {
        let got = app
            .register(&json!({"redirect_uris": ["https://evil.example/cb"]}))
            .await;
        assert_error(&got, 400, "invalid_redirect_uri", "policy");
        let ok = app
            .register(&json!({"redirect_uris": ["https://app.trusted.example/cb"]}))
            .await;
        assert_eq!(ok.0, 201, "{}", ok.2);
        let loopback = app.register(&public_client()).await;
        assert_eq!(
            loopback.0, 201,
            "loopback is not host-limited: {}",
            loopback.2
        );
        app
    }
);

both!(
    policy_limits_redirect_schemes,
    |c: &mut concierge::Config| {
        c.registration.allowed_redirect_schemes = vec!["https".into()];
    },
    |app: TestApp| async move {
        let got = app.register(&public_client()).await;
        assert_error(&got, 400, "invalid_redirect_uri", "scheme 'http'");
        app
    }
);

both!(
    initial_access_token_when_required,
    |c: &mut concierge::Config| {
        c.registration.initial_access_token = Some("let-me-in-0123456789".into());
    },
    |app: TestApp| async move {
        let (status, headers, body) = app.register(&public_client()).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"], "invalid_token");
        assert!(
            headers["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
        let wrong = app
            .http
            .post(app.url("/register"))
            .bearer_auth("let-me-in-0123456788")
            .json(&public_client())
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401);
        let right = app
            .http
            .post(app.url("/register"))
            .bearer_auth("let-me-in-0123456789")
            .json(&public_client())
            .send()
            .await
            .unwrap();
        assert_eq!(right.status(), 201);
        app
    }
);

/// [`public_client`] with its own name: distinct metadata.
fn named_client(name: &str) -> Value {
    let mut body = public_client();
    body["client_name"] = json!(name);
    body
}

both!(
    registrations_are_rate_limited_per_address,
    |c: &mut concierge::Config| {
        c.registration.rate_limit_max = 3;
    },
    |app: TestApp| async move {
        for i in 0..3 {
            assert_eq!(
                app.register(&named_client(&format!("Agent {i}"))).await.0,
                201
            );
        }
        let (status, headers, body) = app.register(&named_client("Agent 3")).await;
        assert_eq!(status, 429, "{body}");
        assert!(
            headers["retry-after"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                > 0
        );
        assert_eq!(
            app.store()
                .list_clients(concierge::util::now())
                .await
                .unwrap()
                .len(),
            3,
            "no pile-up"
        );
        app
    }
);

both!(
    unused_registrations_expire,
    |c: &mut concierge::Config| {
        c.registration.unused_client_ttl_secs = 1;
    },
    |app: TestApp| async move {
        let (_, _, body) = app.register(&public_client()).await;
        let id = body["client_id"].as_str().unwrap().to_string();
        let rat = body["registration_access_token"]
            .as_str()
            .unwrap()
            .to_string();
        let (_, _, used) = app.register(&public_client()).await;
        let used_id = used["client_id"].as_str().unwrap().to_string();
        app.store()
            .touch_client(&used_id, concierge::util::now())
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        assert!(
            app.state.oauth.clients.find(&id).await.unwrap().is_none(),
            "expired unused client is gone"
        );
        assert!(
            app.state
                .oauth
                .clients
                .find(&used_id)
                .await
                .unwrap()
                .is_some(),
            "a used client stays"
        );
        let res = app
            .http
            .get(app.url(&format!("/register/{id}")))
            .bearer_auth(&rat)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
        assert_eq!(
            app.store()
                .delete_expired_clients(concierge::util::now())
                .await
                .unwrap(),
            1
        );
        app
    }
);

// Hosted agents register one client per user from a few shared egress addresses, all alike
// (issue 18.4): identical registrations are counted apart from distinct ones.
both!(
    identical_registrations_from_one_address_are_not_limited_like_distinct_ones,
    |app: TestApp| async move {
        let mut ids = std::collections::HashSet::new();
        let mut tokens = std::collections::HashSet::new();
        for i in 0..40 {
            let (status, _, body) = app.register(&public_client()).await;
            assert_eq!(status, 201, "registration {i}: {body}");
            ids.insert(body["client_id"].as_str().unwrap().to_string());
            tokens.insert(
                body["registration_access_token"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
        assert_eq!(ids.len(), 40, "each registration is its own client");
        assert_eq!(tokens.len(), 40, "with its own registration access token");
        // Distinct ones from the same address still have their whole allowance.
        for i in 0..29 {
            assert_eq!(
                app.register(&named_client(&format!("Other {i}"))).await.0,
                201
            );
        }
        app
    }
);

both!(
    distinct_registrations_from_one_address_are_limited,
    |app: TestApp| async move {
        for i in 0..30 {
            let (status, _, body) = app.register(&named_client(&format!("Agent {i}"))).await;
            assert_eq!(status, 201, "registration {i}: {body}");
        }
        for i in 30..40 {
            let got = app.register(&named_client(&format!("Agent {i}"))).await;
            assert_error(&got, 429, "temporarily_unavailable", "distinct metadata");
            let retry: u64 = got.1["retry-after"].to_str().unwrap().parse().unwrap();
            assert!(retry > 0);
        }
        // A refused registration is not remembered as registered: sent again, it is still
        // distinct and still refused. One admitted before may be repeated.
        let got = app.register(&named_client("Agent 35")).await;
        assert_error(&got, 429, "temporarily_unavailable", "distinct metadata");
        assert_eq!(app.register(&named_client("Agent 7")).await.0, 201);
        assert_eq!(
            app.store()
                .list_clients(concierge::util::now())
                .await
                .unwrap()
                .len(),
            31
        );
        app
    }
);

both!(
    identical_registrations_have_their_own_bound,
    |c: &mut concierge::Config| {
        c.registration.rate_limit_identical_max = 5;
    },
    |app: TestApp| async move {
        for i in 0..6 {
            let (status, _, body) = app.register(&public_client()).await;
            assert_eq!(status, 201, "registration {i}: {body}");
        }
        let got = app.register(&public_client()).await;
        assert_error(
            &got,
            429,
            "temporarily_unavailable",
            "identical registrations",
        );
        assert!(got.1.contains_key("retry-after"));
        // Other metadata from the same address is counted apart.
        assert_eq!(app.register(&named_client("Another")).await.0, 201);
        app
    }
);

both!(
    registrants_cannot_reach_each_others_clients,
    |app: TestApp| async move {
        // Identical metadata, one address: two registrants, two clients.
        let (_, _, a) = app.register(&public_client()).await;
        let (_, _, b) = app.register(&public_client()).await;
        let a_token = a["registration_access_token"].as_str().unwrap();
        let b_uri = b["registration_client_uri"].as_str().unwrap();
        let b_id = b["client_id"].as_str().unwrap();
        assert_ne!(a["client_id"], b["client_id"]);
        let refused = |res: reqwest::Response| async move {
            let got = split(res).await;
            assert_error(&got, 401, "invalid_token", "not valid for this client");
        };
        refused(
            app.http
                .get(b_uri)
                .bearer_auth(a_token)
                .send()
                .await
                .unwrap(),
        )
        .await;
        let mut update = public_client();
        update["client_id"] = json!(b_id);
        update["client_name"] = json!("Hijacked");
        update["redirect_uris"] = json!(["https://evil.example/cb"]);
        refused(
            app.http
                .put(b_uri)
                .bearer_auth(a_token)
                .json(&update)
                .send()
                .await
                .unwrap(),
        )
        .await;
        refused(
            app.http
                .delete(b_uri)
                .bearer_auth(a_token)
                .send()
                .await
                .unwrap(),
        )
        .await;
        // B's client is untouched, and B's token still reaches it.
        let (status, _, body) = split(
            app.http
                .get(b_uri)
                .bearer_auth(b["registration_access_token"].as_str().unwrap())
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["client_name"], "Example Agent");
        assert_eq!(body["redirect_uris"], public_client()["redirect_uris"]);
        app
    }
);

both!(
    a_client_given_tokens_outlives_the_unused_ttl,
    |c: &mut concierge::Config| {
        c.registration.unused_client_ttl_secs = 5;
    },
    |app: TestApp| async move {
        let (_, client, _, tokens) = crate::flow::connect_agent(&app, "notes:read").await;
        let unused = registered(&app, &public_client()).await.0;
        tokio::time::sleep(std::time::Duration::from_millis(6100)).await;
        assert_eq!(
            app.store()
                .delete_expired_clients(concierge::util::now())
                .await
                .unwrap(),
            1,
            "only the unused registration goes"
        );
        assert!(
            app.state
                .oauth
                .clients
                .find(&unused)
                .await
                .unwrap()
                .is_none()
        );
        let (s, _, body) = crate::flow::refresh(
            &app,
            &client,
            tokens["refresh_token"].as_str().unwrap(),
            &[],
        )
        .await;
        assert_eq!(s, 200, "{body}");
        app
    }
);

// Should recording a client's first use fail, its live grant still keeps it.
both!(
    the_sweeper_keeps_a_registration_holding_a_live_grant,
    |c: &mut concierge::Config| {
        c.registration.unused_client_ttl_secs = 1;
    },
    |app: TestApp| async move {
        let alice = crate::flow::add_user(&app, "alice").await;
        let (id, _) = registered(&app, &public_client()).await;
        let (revoked_holder, _) = registered(&app, &public_client()).await;
        let now = concierge::util::now();
        for (client, revoked_at) in [(&id, None), (&revoked_holder, Some(now))] {
            let token = concierge::store::RefreshToken {
                token_hash: concierge::util::secret_hash(&concierge::util::random_secret()),
                family_id: concierge::util::random_id(),
                client_id: client.clone(),
                user_id: alice.clone(),
                resources: vec![crate::flow::NOTES.into()],
                scope: "notes:read".into(),
                auth_time: now,
                amr: vec!["pwd".into()],
                acr: None,
                sid: None,
                created_at: now,
                expires_at: now + 3600,
                absolute_expires_at: now + 7200,
                dpop_jkt: None,
            };
            app.store().insert_refresh(&token).await.unwrap();
            if revoked_at.is_some() {
                app.store()
                    .revoke_family(&token.family_id, now)
                    .await
                    .unwrap();
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        assert_eq!(
            app.store()
                .delete_expired_clients(concierge::util::now())
                .await
                .unwrap(),
            1,
            "the one whose grant was revoked goes"
        );
        let kept = app.state.oauth.clients.find(&id).await.unwrap();
        assert!(
            kept.is_some(),
            "the one with a live grant stays, and no longer expires"
        );
        assert!(
            app.state
                .oauth
                .clients
                .find(&revoked_holder)
                .await
                .unwrap()
                .is_none()
        );
        app
    }
);

both!(
    an_unknown_or_pruned_client_gets_invalid_client_and_may_register_again,
    |c: &mut concierge::Config| {
        c.registration.unused_client_ttl_secs = 1;
    },
    |app: TestApp| async move {
        let (gone, _) = registered(&app, &public_client()).await;
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        let token_request = |client_id: String| {
            let app = &app;
            async move {
                split(
                    app.http
                        .post(app.url("/token"))
                        .form(&[
                            ("grant_type", "refresh_token"),
                            ("client_id", client_id.as_str()),
                            ("refresh_token", "whatever"),
                        ])
                        .send()
                        .await
                        .unwrap(),
                )
                .await
            }
        };
        // Expired, not yet swept; swept; never known.
        assert_error(
            &token_request(gone.clone()).await,
            401,
            "invalid_client",
            "register again",
        );
        app.store()
            .delete_expired_clients(concierge::util::now())
            .await
            .unwrap();
        assert_error(
            &token_request(gone).await,
            401,
            "invalid_client",
            "register again",
        );
        assert_error(
            &token_request("no-such-client".into()).await,
            401,
            "invalid_client",
            "register again",
        );
        assert_eq!(app.register(&public_client()).await.0, 201);
        app
    }
);

// RFC 7592.

async fn registered(app: &TestApp, body: &Value) -> (String, String) {
    let (status, _, b) = app.register(body).await;
    assert_eq!(status, 201, "{b}");
    (
        b["client_id"].as_str().unwrap().to_string(),
        b["registration_access_token"].as_str().unwrap().to_string(),
    )
}

both!(management_read, |app: TestApp| async move {
    let (id, rat) = registered(&app, &public_client()).await;
    let res = app
        .http
        .get(app.url(&format!("/register/{id}")))
        .bearer_auth(&rat)
        .send()
        .await
        .unwrap();
    let (status, headers, body) = split(res).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(body["client_id"], id.as_str());
    assert_eq!(body["client_name"], "Example Agent");
    assert_eq!(
        body["registration_client_uri"],
        app.url(&format!("/register/{id}"))
    );

    // No token, a wrong token, another client's token: 401 invalid_token alike.
    let (other, other_rat) = registered(&app, &public_client()).await;
    for token in [None, Some("wrong"), Some(other_rat.as_str())] {
        let mut req = app.http.get(app.url(&format!("/register/{id}")));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let (status, headers, body) = split(req.send().await.unwrap()).await;
        assert_eq!(status, 401, "{token:?}: {body}");
        assert_eq!(body["error"], "invalid_token");
        assert!(
            headers["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("invalid_token")
        );
    }
    let unknown = app
        .http
        .get(app.url("/register/nope"))
        .bearer_auth(&rat)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 401);
    assert_ne!(id, other);
    app
});

both!(management_update, |app: TestApp| async move {
    let (id, rat) = registered(&app, &public_client()).await;
    let uri = app.url(&format!("/register/{id}"));
    let mut update = public_client();
    update["client_id"] = json!(id);
    update["client_name"] = json!("Renamed Agent");
    update["token_endpoint_auth_method"] = json!("client_secret_post");
    let (status, _, body) = split(
        app.http
            .put(&uri)
            .bearer_auth(&rat)
            .json(&update)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["client_name"], "Renamed Agent");
    let secret = body["client_secret"]
        .as_str()
        .expect("a new secret for a confidential client");
    let stored = app
        .store()
        .get_client(&id, concierge::util::now())
        .await
        .unwrap()
        .unwrap();
    assert!(concierge::util::verify_secret(
        secret,
        stored.secret_hash.as_deref().unwrap()
    ));
    assert_eq!(
        stored.metadata.client_name.as_deref(),
        Some("Renamed Agent")
    );

    // client_id must be sent and match; server-issued fields must not be sent.
    let mut wrong_id = update.clone();
    wrong_id["client_id"] = json!("someone-else");
    let got = split(
        app.http
            .put(&uri)
            .bearer_auth(&rat)
            .json(&wrong_id)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&got, 400, "invalid_client_metadata", "client_id");
    let mut with_rat = update.clone();
    with_rat["registration_access_token"] = json!(rat);
    let got = split(
        app.http
            .put(&uri)
            .bearer_auth(&rat)
            .json(&with_rat)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&got, 400, "invalid_request", "registration_access_token");
    let mut wrong_secret = update.clone();
    wrong_secret["client_secret"] = json!("not-it");
    let got = split(
        app.http
            .put(&uri)
            .bearer_auth(&rat)
            .json(&wrong_secret)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&got, 400, "invalid_client_metadata", "client_secret");
    let mut bad = update.clone();
    bad["redirect_uris"] = json!(["http://evil.example/cb"]);
    let got = split(
        app.http
            .put(&uri)
            .bearer_auth(&rat)
            .json(&bad)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&got, 400, "invalid_redirect_uri", "redirect_uris[0]");
    let still = app
        .store()
        .get_client(&id, concierge::util::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        still.metadata.redirect_uris,
        vec!["http://localhost:6274/oauth/callback"]
    );
    let unauth = app.http.put(&uri).json(&update).send().await.unwrap();
    assert_eq!(unauth.status(), 401);
    app
});

both!(management_delete, |app: TestApp| async move {
    let (id, rat) = registered(&app, &public_client()).await;
    let uri = app.url(&format!("/register/{id}"));
    assert_eq!(app.http.delete(&uri).send().await.unwrap().status(), 401);
    assert_eq!(
        app.http
            .delete(&uri)
            .bearer_auth("nope")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let res = app
        .http
        .delete(&uri)
        .bearer_auth(&rat)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(
        app.http
            .get(&uri)
            .bearer_auth(&rat)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert!(app.state.oauth.clients.find(&id).await.unwrap().is_none());
    app
});
