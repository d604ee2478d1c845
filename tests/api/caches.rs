//! The per-replica caches of stored clients and resources: changes made through this replica
//! apply at once, changes made elsewhere (another replica, the CLI) within `cache_secs`, and
//! an unknown client or resource is never cached.

use serde_json::{Value, json};

use crate::both;
use crate::helpers::{TOOLS_RESOURCE, TestApp, add_tools_resource, split};

const RESOURCE: &str = TOOLS_RESOURCE;

/// A resource and a self-registered machine client (these tests' servers let such clients
/// use client credentials).
async fn setup(app: &TestApp) -> Value {
    add_tools_resource(app).await;
    let (status, _, info) = app
        .register(&json!({
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "client_secret_post",
            "scope": "tools:read",
        }))
        .await;
    assert_eq!(status, 201, "{info}");
    info
}

async fn token_status(app: &TestApp, info: &Value) -> u16 {
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", info["client_id"].as_str().unwrap()),
        ("client_secret", info["client_secret"].as_str().unwrap()),
        ("resource", RESOURCE),
        ("scope", "tools:read"),
    ];
    let res = app
        .http
        .post(app.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(form).unwrap())
        .send()
        .await
        .unwrap();
    split(res).await.0.as_u16()
}

both!(
    local_changes_apply_at_once,
    |c: &mut concierge::Config| c.registration.allow_client_credentials = true,
    |app: TestApp| async move {
        let info = setup(&app).await;
        let uri = info["registration_client_uri"]
            .as_str()
            .unwrap()
            .to_string();
        let rat = info["registration_access_token"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(token_status(&app, &info).await, 200, "cached now");

        // RFC 7592 update to another method: the cached copy is dropped.
        let res = app
            .http
            .put(&uri)
            .bearer_auth(&rat)
            .json(&json!({
                "client_id": info["client_id"],
                "grant_types": ["client_credentials"],
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks_uri": "https://agent.example/jwks.json",
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(
            token_status(&app, &info).await,
            401,
            "a secret is no longer its method"
        );

        // RFC 7592 delete: refused at once.
        let info = setup(&app).await;
        assert_eq!(token_status(&app, &info).await, 200);
        let res = app
            .http
            .delete(info["registration_client_uri"].as_str().unwrap())
            .bearer_auth(info["registration_access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
        assert_eq!(token_status(&app, &info).await, 401);
        app
    }
);

both!(
    changes_elsewhere_apply_within_the_bound,
    |c: &mut concierge::Config| c.registration.allow_client_credentials = true,
    |app: TestApp| async move {
        // "Not found" is never cached: a client created elsewhere works at once.
        let mut info = setup(&app).await;
        let id = info["client_id"].as_str().unwrap().to_string();
        assert_eq!(token_status(&app, &info).await, 200);
        // Deleted by another replica: this one still has it cached (10 s by default)...
        assert!(app.store().delete_client(&id).await.unwrap());
        assert_eq!(
            token_status(&app, &info).await,
            200,
            "served from the cache"
        );
        // ...but an unknown client stays unknown.
        info["client_id"] = json!("never-registered");
        assert_eq!(token_status(&app, &info).await, 401);
        app
    }
);

both!(
    cache_off_reads_the_store_every_time,
    |c: &mut concierge::Config| {
        c.clients.cache_secs = 0;
        c.registration.allow_client_credentials = true;
    },
    |app: TestApp| async move {
        let info = setup(&app).await;
        let id = info["client_id"].as_str().unwrap().to_string();
        assert_eq!(token_status(&app, &info).await, 200);
        assert!(app.store().delete_client(&id).await.unwrap());
        assert_eq!(token_status(&app, &info).await, 401);
        app
    }
);

both!(
    resources_unknown_never_cached_removed_within_bound,
    |c: &mut concierge::Config| c.registration.allow_client_credentials = true,
    |app: TestApp| async move {
        let info = setup(&app).await;
        let uri = concierge::oauth::resource::ResourceUri::parse(RESOURCE).unwrap();
        assert!(app.store().delete_resource(uri.as_str()).await.unwrap());
        assert_eq!(
            token_status(&app, &info).await,
            400,
            "unknown resource: invalid_target"
        );
        // Added elsewhere (the CLI): works at once, since "unknown" was not cached.
        add_tools_resource(&app).await;
        assert_eq!(token_status(&app, &info).await, 200);
        // Removed elsewhere: this replica serves its cached copy within the bound.
        assert!(app.store().delete_resource(uri.as_str()).await.unwrap());
        assert_eq!(
            token_status(&app, &info).await,
            200,
            "served from the cache"
        );
        app
    }
);

both!(
    resource_cache_off,
    |c: &mut concierge::Config| {
        c.resources.cache_secs = 0;
        c.registration.allow_client_credentials = true;
    },
    |app: TestApp| async move {
        let info = setup(&app).await;
        assert_eq!(token_status(&app, &info).await, 200);
        let uri = concierge::oauth::resource::ResourceUri::parse(RESOURCE).unwrap();
        assert!(app.store().delete_resource(uri.as_str()).await.unwrap());
        assert_eq!(token_status(&app, &info).await, 400);
        app
    }
);
