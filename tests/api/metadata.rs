//! Discovery documents: RFC 8414 and OpenID Connect Discovery, root and path-inserted forms.

use serde_json::json;

use crate::both;
use crate::helpers::TestApp;

async fn add_notes_resource(app: &TestApp) {
    let r = concierge::oauth::resource::Resource::new(
        "https://mcp.example.com/mcp",
        "Notes",
        vec![
            concierge::oauth::resource::ScopeDef::parse("notes:read=Read your notes").unwrap(),
            concierge::oauth::resource::ScopeDef::parse("notes:write=Change your notes").unwrap(),
        ],
        0,
    )
    .unwrap();
    app.store().insert_resource(&r.to_record()).await.unwrap();
}

both!(authorization_server_metadata, |app: TestApp| async move {
    add_notes_resource(&app).await;
    let (status, headers, m) = app
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    // Byte-identical issuer (RFC 8414 §3.3).
    assert_eq!(m["issuer"].as_str().unwrap(), app.issuer);
    assert_eq!(m["jwks_uri"], app.url("/jwks"));
    assert_eq!(m["registration_endpoint"], app.url("/register"));
    assert_eq!(m["client_id_metadata_document_supported"], true);
    // The resources' scopes, and the OpenID Connect ones the code flow brings.
    assert_eq!(
        m["scopes_supported"],
        json!([
            "notes:read",
            "notes:write",
            "openid",
            "profile",
            "email",
            "offline_access"
        ])
    );
    // Only what works: the grants this configuration enables.
    assert_eq!(
        m["grant_types_supported"],
        json!([
            "authorization_code",
            "refresh_token",
            "client_credentials",
            "urn:ietf:params:oauth:grant-type:token-exchange",
            "urn:ietf:params:oauth:grant-type:device_code",
            "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "urn:openid:params:grant-type:ciba"
        ])
    );
    // The jwt-bearer grant is served (a client's own assertion needs no configuration); the
    // ID-JAG profile only with a trusted IdP.
    assert!(
        m["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("urn:ietf:params:oauth:grant-type:jwt-bearer"))
    );
    assert!(m.get("authorization_grant_profiles_supported").is_none());
    assert_eq!(m["token_endpoint"], format!("{}/token", app.issuer));

    let (status, _, oidc) = app.get_json("/.well-known/openid-configuration").await;
    assert_eq!(status, 200);
    assert_eq!(oidc["issuer"].as_str().unwrap(), app.issuer);
    app
});

both!(
    metadata_reflects_configuration,
    |c: &mut concierge::Config| {
        c.registration.enabled = false;
        c.cimd.enabled = false;
    },
    |app: TestApp| async move {
        let (_, _, m) = app
            .get_json("/.well-known/oauth-authorization-server")
            .await;
        assert!(m.get("registration_endpoint").is_none(), "{m}");
        assert!(
            m.get("client_id_metadata_document_supported").is_none(),
            "{m}"
        );
        assert_eq!(
            m["scopes_supported"],
            json!(["openid", "profile", "email", "offline_access"])
        );
        // Off means off: a registration that would be accepted elsewhere is refused.
        let (status, _, body) = app
            .register(&json!({
                "client_name": "Agent",
                "redirect_uris": ["http://127.0.0.1/callback"],
                "token_endpoint_auth_method": "none"
            }))
            .await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"], "access_denied");
        assert!(
            app.store()
                .list_clients(concierge::util::now())
                .await
                .unwrap()
                .is_empty()
        );
        app
    }
);

both!(cors_for_browser_clients, |app: TestApp| async move {
    // A script's GET from another origin.
    let get = |path: &str| {
        app.http
            .get(app.url(path))
            .header("Origin", "https://inspector.example")
            .send()
    };
    let res = get("/.well-known/oauth-authorization-server")
        .await
        .unwrap();
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    assert!(
        res.headers()
            .get("access-control-allow-credentials")
            .is_none()
    );
    let pre = app
        .http
        .request(reqwest::Method::OPTIONS, app.url("/register"))
        .header("Origin", "https://inspector.example")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(pre.status().is_success(), "{}", pre.status());
    assert_eq!(pre.headers()["access-control-allow-origin"], "*");
    let jwks = get("/jwks").await.unwrap();
    assert_eq!(jwks.headers()["access-control-allow-origin"], "*");
    // The preflight names what the request may be; no list echoes the request, so no
    // answer varies with it.
    assert_eq!(
        pre.headers()["access-control-allow-methods"],
        "GET,POST,PUT,DELETE"
    );
    assert_eq!(
        pre.headers()["access-control-allow-headers"],
        "authorization,content-type,dpop,mcp-protocol-version"
    );
    assert!(pre.headers().get("vary").is_none());
    assert!(jwks.headers().get("vary").is_none());
    // A script may read a refusal's challenge (RFC 6750 §3) and DPoP's nonce.
    let refused = get("/userinfo").await.unwrap();
    assert_eq!(refused.status(), 401);
    assert!(refused.headers().get("www-authenticate").is_some());
    assert_eq!(refused.headers()["access-control-allow-origin"], "*");
    assert_eq!(
        refused.headers()["access-control-expose-headers"],
        "www-authenticate,retry-after,dpop-nonce"
    );
    app
});

both!(
    issuer_with_path,
    builder |b: crate::helpers::TestAppBuilder<'static>| b.at_path("/tenant-a"),
    issuer_with_path_body
);

async fn issuer_with_path_body(app: TestApp) -> TestApp {
    assert!(app.issuer.ends_with("/tenant-a"));
    for path in [
        "/.well-known/oauth-authorization-server/tenant-a",
        "/.well-known/openid-configuration/tenant-a",
        "/tenant-a/.well-known/openid-configuration",
    ] {
        let res = app
            .http
            .get(format!("{}{path}", app.origin))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let m: serde_json::Value = res.json().await.unwrap();
        assert_eq!(m["issuer"].as_str().unwrap(), app.issuer, "{path}");
        assert_eq!(m["jwks_uri"], format!("{}/jwks", app.issuer));
    }
    // The root document belongs to a different issuer, so it is not served here.
    let root = app
        .http
        .get(format!(
            "{}/.well-known/oauth-authorization-server",
            app.origin
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(root.status(), 404);
    let jwks = app
        .http
        .get(format!("{}/jwks", app.issuer))
        .send()
        .await
        .unwrap();
    assert_eq!(jwks.status(), 200);
    app
}

both!(wrong_methods_and_paths_are_4xx, |app: TestApp| async move {
    let res = app.http.post(app.url("/jwks")).send().await.unwrap();
    assert_eq!(res.status(), 405);
    let res = app.http.get(app.url("/nope")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    let res = app.http.get(app.url("/register")).send().await.unwrap();
    assert_eq!(res.status(), 405);
    app
});
