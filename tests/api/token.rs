//! `POST /token` with the client credentials grant, and the endpoint's refusals.

use base64::Engine;
use serde_json::Value;

use crate::both;
use crate::helpers::{TOOLS_RESOURCE, TestApp, add_tools_resource, assert_error, split};

const RESOURCE: &str = TOOLS_RESOURCE;

/// A resource and an operator's machine client with `scope`; returns (client_id, secret).
async fn setup(app: &TestApp, method: &str, scope: Option<&str>) -> (String, String) {
    add_tools_resource(app).await;
    app.add_machine_client(method, scope).await
}

async fn post_form(
    app: &TestApp,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    let mut req = app
        .http
        .post(app.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(form).unwrap());
    if let Some((id, secret)) = basic {
        let enc = |s: &str| serde_urlencoded::to_string([("v", s)]).unwrap()[2..].to_string();
        let v = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            enc(id),
            enc(secret)
        ));
        req = req.header("authorization", format!("Basic {v}"));
    }
    split(req.send().await.unwrap()).await
}

fn verify(app: &TestApp, token: &str) -> Value {
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    let jwks = app.state.oauth.keys.ring().jwks(concierge::util::now());
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks).unwrap();
    let jwk = set.find(header.kid.as_deref().unwrap()).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&[RESOURCE]);
    v.set_issuer(&[app.issuer.as_str()]);
    jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
        &v,
    )
    .unwrap()
    .claims
}

both!(
    client_credentials_with_client_secret_post,
    |app: TestApp| async move {
        let (id, secret) = setup(&app, "client_secret_post", Some("tools:read")).await;
        let (status, headers, body) = post_form(
            &app,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &id),
                ("client_secret", &secret),
                ("scope", "tools:read"),
                ("resource", RESOURCE),
            ],
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(headers["cache-control"], "no-store");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 600);
        assert_eq!(body["scope"], "tools:read");
        let claims = verify(&app, body["access_token"].as_str().unwrap());
        assert_eq!(claims["sub"], id.as_str());
        assert_eq!(claims["client_id"], id.as_str());
        assert_eq!(claims["aud"], RESOURCE);
        assert_eq!(claims["scope"], "tools:read");
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            600
        );
        assert!(claims["jti"].as_str().unwrap().len() >= 22);
        // The use is recorded (off the request path).
        let mut used = None;
        for _ in 0..50 {
            used = app
                .store()
                .get_client(&id, concierge::util::now())
                .await
                .unwrap()
                .unwrap()
                .last_used_at;
            if used.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(used.is_some());
        // Metadata now lists the grant and the token endpoint.
        let (_, _, m) = app
            .get_json("/.well-known/oauth-authorization-server")
            .await;
        assert_eq!(m["token_endpoint"], app.url("/token"));
        assert!(
            m["grant_types_supported"]
                .as_array()
                .unwrap()
                .contains(&"client_credentials".into())
        );
        app
    }
);

both!(
    client_credentials_with_basic_and_registered_scope,
    |app: TestApp| async move {
        let (id, secret) = setup(&app, "client_secret_basic", Some("tools:read")).await;
        // The trailing-slash-free resource and a body client_id that agrees are fine.
        let (status, _, body) = post_form(
            &app,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &id),
                ("resource", RESOURCE),
            ],
            Some((&id, &secret)),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["scope"], "tools:read",
            "defaults to the registered scope"
        );
        // Asking beyond the registered scope fails.
        let got = post_form(
            &app,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "tools:write"),
                ("resource", RESOURCE),
            ],
            Some((&id, &secret)),
        )
        .await;
        assert_error(&got, 400, "invalid_scope", "tools:write");
        app
    }
);

both!(token_endpoint_refusals, |app: TestApp| async move {
    let (id, secret) = setup(&app, "client_secret_post", Some("tools:read tools:write")).await;
    let ok = |extra: &[(&'static str, &'static str)]| {
        let mut f: Vec<(&str, String)> = vec![
            ("grant_type", "client_credentials".into()),
            ("client_id", id.clone()),
            ("client_secret", secret.clone()),
            ("scope", "tools:read".into()),
            ("resource", RESOURCE.into()),
        ];
        for (k, v) in extra {
            f.retain(|(name, _)| name != k);
            if !v.is_empty() {
                f.push((k, v.to_string()));
            }
        }
        f
    };
    let send = |f: Vec<(&'static str, String)>| {
        let app = &app;
        async move {
            let pairs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
            post_form(app, &pairs, None).await
        }
    };
    assert_error(
        &send(ok(&[("client_secret", "wrong")])).await,
        401,
        "invalid_client",
        "failed",
    );
    assert_error(
        &send(ok(&[("client_id", "nobody")])).await,
        401,
        "invalid_client",
        "unknown client",
    );
    assert_error(
        &send(ok(&[("grant_type", "password")])).await,
        400,
        "unsupported_grant_type",
        "OAuth 2.1",
    );
    assert_error(
        &send(ok(&[(
            "grant_type",
            "urn:ietf:params:oauth:grant-type:jwt-bearer",
        )]))
        .await,
        400,
        "unauthorized_client",
        "jwt-bearer",
    );
    assert_error(
        &send(ok(&[("grant_type", "")])).await,
        400,
        "invalid_request",
        "grant_type",
    );
    assert_error(
        &send(ok(&[("resource", "https://unknown.example/mcp")])).await,
        400,
        "invalid_target",
        "not a registered resource",
    );
    assert_error(
        &send(ok(&[("resource", "")])).await,
        400,
        "invalid_target",
        "required",
    );
    assert_error(
        &send(ok(&[("resource", "not a uri")])).await,
        400,
        "invalid_target",
        "resource",
    );
    assert_error(
        &send(ok(&[("scope", "tools:admin")])).await,
        400,
        "invalid_scope",
        "tools:admin",
    );
    assert_error(
        &send(ok(&[(
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        )]))
        .await,
        400,
        "invalid_request",
        "client_assertion",
    );

    // The same secret in the header works for a client registered for the body (the MCP
    // SDKs differ on where they put it); a wrong one with Basic gets a Basic challenge.
    let got = post_form(
        &app,
        &[("grant_type", "client_credentials"), ("resource", RESOURCE)],
        Some((&id, &secret)),
    )
    .await;
    assert_eq!(got.0, 200, "{}", got.2);
    let got = post_form(
        &app,
        &[("grant_type", "client_credentials"), ("resource", RESOURCE)],
        Some((&id, "not-the-secret")),
    )
    .await;
    assert_error(&got, 401, "invalid_client", "authentication failed");
    assert!(
        got.1["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );

    // Repeated parameters, wrong content type, a client without the grant.
    let raw = format!(
        "grant_type=client_credentials&client_id={id}&client_secret={secret}&scope=tools:read&scope=tools:write&resource={RESOURCE}"
    );
    let res = app
        .http
        .post(app.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_error(&split(res).await, 400, "invalid_request", "repeated");
    let res = app
        .http
        .post(app.url("/token"))
        .json(&serde_json::json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    assert_error(&split(res).await, 400, "invalid_request", "Content-Type");
    let (_, _, reg) = app
        .register(&serde_json::json!({"redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "client_secret_post"}))
        .await;
    let (cid, csecret) = (
        reg["client_id"].as_str().unwrap(),
        reg["client_secret"].as_str().unwrap(),
    );
    let got = post_form(
        &app,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", cid),
            ("client_secret", csecret),
            ("resource", RESOURCE),
            ("scope", "tools:read"),
        ],
        None,
    )
    .await;
    assert_error(&got, 400, "unauthorized_client", "client_credentials");
    // Nothing stored a token: the refusals leave no trace but the attempts.
    app
});

both!(
    deleted_client_gets_invalid_client,
    // A self-registered client that may use client credentials (RFC 7592 deletes it).
    |c: &mut concierge::Config| c.registration.allow_client_credentials = true,
    |app: TestApp| async move {
        let (_, _, reg) = app
        .register(&serde_json::json!({"grant_types": ["client_credentials"], "token_endpoint_auth_method": "client_secret_basic", "scope": "tools:read"}))
        .await;
        let id = reg["client_id"].as_str().unwrap();
        let secret = reg["client_secret"].as_str().unwrap();
        add_tools_resource(&app).await;
        let form = [
            ("grant_type", "client_credentials"),
            ("resource", RESOURCE),
            ("scope", "tools:read"),
        ];
        assert_eq!(post_form(&app, &form, Some((id, secret))).await.0, 200);
        let rat = reg["registration_access_token"].as_str().unwrap();
        let del = app
            .http
            .delete(app.url(&format!("/register/{id}")))
            .bearer_auth(rat)
            .send()
            .await
            .unwrap();
        assert_eq!(del.status(), 204);
        let got = post_form(&app, &form, Some((id, secret))).await;
        assert_error(&got, 401, "invalid_client", "register again");
        app
    }
);

both!(machine_tokens_need_an_operator, |app: TestApp| async move {
    add_tools_resource(&app).await;
    // An operator's client without an operator-set scope gets no scope it was not given.
    let (id, secret) = app.add_machine_client("client_secret_basic", None).await;
    let got = post_form(
        &app,
        &[
            ("grant_type", "client_credentials"),
            ("resource", RESOURCE),
            ("scope", "tools:read"),
        ],
        Some((&id, &secret)),
    )
    .await;
    assert_error(&got, 400, "invalid_scope", "operator");
    let (status, _, body) = post_form(
        &app,
        &[("grant_type", "client_credentials"), ("resource", RESOURCE)],
        Some((&id, &secret)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("scope").is_none(), "no scope: {body}");
    assert!(verify(&app, body["access_token"].as_str().unwrap())["scope"].is_null());

    // A client that registered itself gets no client-credentials token by default.
    let (_, _, reg) = app
        .register(&serde_json::json!({
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "client_secret_basic",
            "scope": "tools:read"
        }))
        .await;
    let (cid, csecret) = (
        reg["client_id"].as_str().unwrap(),
        reg["client_secret"].as_str().unwrap(),
    );
    let got = post_form(
        &app,
        &[
            ("grant_type", "client_credentials"),
            ("resource", RESOURCE),
            ("scope", "tools:read"),
        ],
        Some((cid, csecret)),
    )
    .await;
    assert_error(&got, 400, "unauthorized_client", "operator");
    app
});
