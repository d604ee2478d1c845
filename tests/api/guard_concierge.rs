//! concierge-guard against the real Concierge, on both stores: real tokens through the
//! guard's layer, token exchange and introspection with the guard's client credentials, and
//! the start-up checks that name a misconfiguration. Clients, resources and exchange policies
//! are made through the admin API, as an operator would.

use axum::Router;
use axum::body::Bytes;
use axum::routing::{get, post};
use concierge_guard::test::TestKey;
use concierge_guard::{
    BuildError, ClientCredentials, ExchangeError, Guard, GuardBuilder, Introspection, Principal,
    TokenError,
};
use serde_json::{Value, json};

use crate::both;
use crate::flow::cc_token;
use crate::helpers::{TestApp, split};

const TE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// The operator: an admin token for `/admin/v1`.
struct Operator {
    token: String,
}

impl Operator {
    async fn new(app: &TestApp) -> Self {
        let (record, secret) =
            concierge::manage::create_admin_client(app.store().as_ref(), &app.issuer, "ops")
                .await
                .unwrap();
        let admin = concierge::oauth::admin_token::admin_resource_uri(&app.issuer);
        let token = cc_token(app, &record.client_id, &secret, &admin, "admin").await;
        Self { token }
    }

    async fn call(&self, app: &TestApp, method: reqwest::Method, path: &str, body: Value) -> Value {
        let res = app
            .http
            .request(method, app.url(path))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let (s, _, body) = split(res).await;
        assert!(s.is_success(), "{path}: {s} {body}");
        body
    }

    /// A resource with `notes:read` and `notes:write`.
    async fn resource(&self, app: &TestApp, uri: &str) {
        self.call(
            app,
            reqwest::Method::POST,
            "/admin/v1/resources",
            json!({"uri": uri, "name": "Notes", "scopes": [
                {"name": "notes:read", "description": "Read notes"},
                {"name": "notes:write", "description": "Write notes"},
            ]}),
        )
        .await;
    }

    /// A confidential client; returns its id and secret (none for `private_key_jwt`).
    async fn client(&self, app: &TestApp, body: Value) -> (String, Option<String>) {
        let created = self
            .call(app, reqwest::Method::POST, "/admin/v1/clients", body)
            .await;
        (
            created["client"]["client_id"].as_str().unwrap().to_owned(),
            created["client_secret"].as_str().map(str::to_owned),
        )
    }

    /// A `client_secret_basic` client with these grants.
    async fn secret_client(
        &self,
        app: &TestApp,
        grants: &[&str],
        may_introspect: bool,
    ) -> (String, String) {
        let (id, secret) = self
            .client(
                app,
                json!({"client_name": "Server", "grant_types": grants,
                    "token_endpoint_auth_method": "client_secret_basic", "may_introspect": may_introspect,
                    "scope": "notes:read notes:write"}),
            )
            .await;
        (id, secret.unwrap())
    }

    /// `client` may exchange `notes:read` tokens for `source` into `notes:read` tokens for `target`.
    async fn allow(&self, app: &TestApp, target: &str, client: &str, source: &str) {
        self.call(
            app,
            reqwest::Method::PUT,
            "/admin/v1/exchange-policies",
            json!({"target": target, "client_id": client, "source": source,
                "scope_map": {"notes:read": ["notes:read"]}}),
        )
        .await;
    }
}

/// A resource URI on a port nothing listens on (the guard does not serve it here).
fn resource_uri(name: &str) -> String {
    format!("http://127.0.0.1:9/{name}")
}

/// The claims of a JWT, unverified.
fn claims(jwt: &str) -> Value {
    use base64::Engine as _;
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

/// An axum app behind the guard on a free port: `POST /mcp` answers with the principal.
struct Protected {
    resource: String,
    guard: Guard,
    http: reqwest::Client,
}

impl Protected {
    /// Bind, register the resource (so the start-up check passes), build, serve.
    async fn start(
        app: &TestApp,
        op: &Operator,
        configure: impl FnOnce(GuardBuilder) -> GuardBuilder,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let resource = format!("http://{}/mcp", listener.local_addr().unwrap());
        op.resource(app, &resource).await;
        let guard = configure(Guard::builder(app.issuer.as_str(), resource.as_str()))
            .build()
            .await
            .unwrap();
        let router = Router::new()
            .route(
                "/mcp",
                post(|p: Principal, _body: Bytes| async move {
                    axum::Json(json!({"sub": p.sub(), "client_id": p.client_id(),
                        "scopes": p.scopes(), "is_client": p.is_client()}))
                }),
            )
            .route("/health", get(|| async { "ok" }))
            .layer(guard.layer())
            .merge(guard.metadata_router());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self {
            resource,
            guard,
            http: reqwest::Client::new(),
        }
    }

    /// POST `body` with an optional token: status, `WWW-Authenticate`, body.
    async fn post(&self, token: Option<&str>, body: &str) -> (u16, String, Value) {
        let mut req = self
            .http
            .post(&self.resource)
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let (s, h, body) = split(req.send().await.unwrap()).await;
        let challenge = h
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (s.as_u16(), challenge, body)
    }
}

const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
const ADD: &str =
    r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"add_note","arguments":{}}}"#;

both!(real_tokens_through_the_guard, |app: TestApp| async move {
    let op = Operator::new(&app).await;
    let protected = Protected::start(&app, &op, |b| {
        b.required_scopes(["notes:read"])
            .tool_scopes("add_note", ["notes:write"])
    })
    .await;
    let other = resource_uri("other");
    op.resource(&app, &other).await;
    let (client, secret) = op.secret_client(&app, &["client_credentials"], false).await;

    // No token: the challenge points at the metadata, which names Concierge.
    let (s, challenge, _) = protected.post(None, LIST).await;
    assert_eq!(s, 401);
    let metadata_url = protected.guard.metadata_url().to_string();
    assert!(challenge.contains(&metadata_url), "{challenge}");
    let (_, _, doc) = split(app.http.get(&metadata_url).send().await.unwrap()).await;
    assert_eq!(doc["resource"], protected.resource.as_str());
    assert_eq!(doc["authorization_servers"], json!([app.issuer]));
    assert!(
        doc["dpop_signing_alg_values_supported"]
            .as_array()
            .is_some()
    );

    // A client-credentials token: its subject is the client itself (RFC 9068 §2.2).
    let reader = cc_token(&app, &client, &secret, &protected.resource, "notes:read").await;
    let (s, _, body) = protected.post(Some(&reader), LIST).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["sub"], client.as_str());
    assert_eq!(body["client_id"], client.as_str());
    assert_eq!(body["scopes"], json!(["notes:read"]));
    assert_eq!(body["is_client"], true);

    // Per-tool step-up: add_note needs notes:write.
    let (s, challenge, _) = protected.post(Some(&reader), ADD).await;
    assert_eq!(s, 403);
    assert!(
        challenge.contains(r#"scope="notes:read notes:write""#),
        "{challenge}"
    );
    let writer = cc_token(
        &app,
        &client,
        &secret,
        &protected.resource,
        "notes:read notes:write",
    )
    .await;
    assert_eq!(protected.post(Some(&writer), ADD).await.0, 200);

    // A token for another resource is refused.
    let elsewhere = cc_token(&app, &client, &secret, &other, "notes:read").await;
    let (s, challenge, _) = protected.post(Some(&elsewhere), LIST).await;
    assert_eq!(s, 401);
    assert!(
        challenge.contains("not meant for this resource"),
        "{challenge}"
    );
    app
});

both!(
    exchange_gets_cached_downstream_tokens_with_typed_errors,
    |app: TestApp| async move {
        let op = Operator::new(&app).await;
        let (calendar, notes) = (resource_uri("calendar"), resource_uri("notes"));
        op.resource(&app, &calendar).await;
        op.resource(&app, &notes).await;
        let (cal_id, cal_secret) = op
            .secret_client(&app, &[TE, "client_credentials"], false)
            .await;
        let guard = Guard::builder(app.issuer.as_str(), calendar.as_str())
            .client_credentials(ClientCredentials::secret_basic(&cal_id, &cal_secret))
            .build()
            .await
            .unwrap();
        let (caller, caller_secret) = op.secret_client(&app, &["client_credentials"], false).await;
        let subject = cc_token(&app, &caller, &caller_secret, &calendar, "notes:read").await;

        // No policy yet: refused, typed.
        let err = guard
            .exchange(&subject, &notes, &["notes:read"])
            .await
            .unwrap_err();
        assert!(matches!(err, ExchangeError::NotAllowed { .. }), "{err:?}");
        assert!(err.to_string().contains("exchange policy"), "{err}");

        op.allow(&app, &notes, &cal_id, &calendar).await;
        let token = guard
            .exchange(&subject, &notes, &["notes:read"])
            .await
            .unwrap();
        assert_eq!(token.scope(), Some("notes:read"));
        let c = claims(token.access_token());
        assert_eq!(c["aud"], notes.as_str());
        assert_eq!(c["sub"], caller.as_str(), "same subject");
        assert_eq!(c["act"]["sub"], cal_id.as_str(), "calendar acts");
        assert!(!format!("{token:?}").contains(token.access_token()));

        // At notes, the exchanged token is not a client's own token: it carries `act`.
        let at_notes = Guard::builder(app.issuer.as_str(), notes.as_str())
            .build()
            .await
            .unwrap();
        let p = at_notes.validate(token.access_token()).await.unwrap();
        assert!(!p.is_client());
        assert_eq!(p.act()[0].sub.as_deref(), Some(cal_id.as_str()));
        assert!(
            at_notes
                .validate(&cc_token(&app, &caller, &caller_secret, &notes, "notes:read").await)
                .await
                .unwrap()
                .is_client()
        );

        // Cached per (subject, target, scope): the same token again.
        let again = guard
            .exchange(&subject, &notes, &["notes:read"])
            .await
            .unwrap();
        assert_eq!(again.access_token(), token.access_token());

        // An unknown target, a scope the policy does not give.
        let err = guard
            .exchange(&subject, &resource_uri("nowhere"), &[])
            .await
            .unwrap_err();
        assert!(
            matches!(err, ExchangeError::TargetNotRegistered { .. }),
            "{err:?}"
        );
        let err = guard
            .exchange(&subject, &notes, &["notes:write"])
            .await
            .unwrap_err();
        assert!(matches!(err, ExchangeError::InvalidScope(_)), "{err:?}");

        // Without credentials the helper says what is missing.
        let bare = Guard::builder(app.issuer.as_str(), calendar.as_str())
            .build()
            .await
            .unwrap();
        assert_eq!(
            bare.exchange(&subject, &notes, &[]).await.unwrap_err(),
            ExchangeError::NoCredentials
        );
        app
    }
);

both!(
    exchange_authenticates_with_private_key_jwt,
    |c: &mut concierge::Config| c.cimd.allow_loopback = true,
    |app: TestApp| async move {
        let op = Operator::new(&app).await;
        let (calendar, notes) = (resource_uri("calendar"), resource_uri("notes"));
        op.resource(&app, &calendar).await;
        op.resource(&app, &notes).await;
        // The client's public key, served on loopback.
        let key = TestKey::generate("cal-1");
        let jwks = json!({ "keys": [key.jwk()] });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let jwks_uri = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let router =
            Router::new().route("/jwks.json", get(move || async move { axum::Json(jwks) }));
        tokio::spawn(async move { axum::serve(listener, router).await });
        let (cal_id, _) = op
            .client(
                &app,
                json!({"client_name": "Calendar", "grant_types": [TE, "client_credentials"],
                    "token_endpoint_auth_method": "private_key_jwt", "jwks_uri": jwks_uri,
                    "scope": "notes:read"}),
            )
            .await;
        op.allow(&app, &notes, &cal_id, &calendar).await;
        let creds = ClientCredentials::private_key_jwt(
            &cal_id,
            key.encoding_key().clone(),
            key.algorithm(),
            Some("cal-1".into()),
        );
        let guard = Guard::builder(app.issuer.as_str(), calendar.as_str())
            .client_credentials(creds)
            .build()
            .await
            .unwrap();
        let (caller, secret) = op.secret_client(&app, &["client_credentials"], false).await;
        let subject = cc_token(&app, &caller, &secret, &calendar, "notes:read").await;
        let token = guard.exchange(&subject, &notes, &[]).await.unwrap();
        assert_eq!(claims(token.access_token())["act"]["sub"], cal_id.as_str());
        app
    }
);

both!(
    build_names_an_unregistered_resource_and_bad_credentials,
    |app: TestApp| async move {
        let op = Operator::new(&app).await;
        let (id, secret) = op.secret_client(&app, &["client_credentials"], false).await;
        let unknown = resource_uri("typo");
        let err = Guard::builder(app.issuer.as_str(), unknown.as_str())
            .client_credentials(ClientCredentials::secret_basic(&id, &secret))
            .build()
            .await
            .unwrap_err();
        assert!(
            matches!(err, BuildError::ResourceNotRegistered { .. }),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains(&unknown) && text.contains("register"),
            "{text}"
        );
        // The probe switched off, the same guard builds (and would refuse every token).
        Guard::builder(app.issuer.as_str(), unknown.as_str())
            .client_credentials(ClientCredentials::secret_basic(&id, &secret))
            .check_resource_registration(false)
            .build()
            .await
            .unwrap();

        op.resource(&app, &unknown).await;
        Guard::builder(app.issuer.as_str(), unknown.as_str())
            .client_credentials(ClientCredentials::secret_basic(&id, &secret))
            .build()
            .await
            .unwrap();
        let err = Guard::builder(app.issuer.as_str(), unknown.as_str())
            .client_credentials(ClientCredentials::secret_basic(&id, "wrong"))
            .build()
            .await
            .unwrap_err();
        assert!(matches!(err, BuildError::ClientRejected { .. }), "{err:?}");
        app
    }
);

both!(
    introspection_refuses_a_revoked_jwt,
    |app: TestApp| async move {
        let op = Operator::new(&app).await;
        let (rs_id, rs_secret) = op.secret_client(&app, &[TE], true).await;
        let creds = ClientCredentials::secret_basic(&rs_id, &rs_secret);
        let protected = Protected::start(&app, &op, |b| {
            b.client_credentials(creds.clone())
                .introspection(Introspection::AllTokens)
                .introspection_cache_ttl(std::time::Duration::ZERO)
        })
        .await;
        let (client, secret) = op.secret_client(&app, &["client_credentials"], false).await;
        let token = cc_token(&app, &client, &secret, &protected.resource, "notes:read").await;
        assert_eq!(protected.post(Some(&token), LIST).await.0, 200);

        // Revoke it (RFC 7009) as its client: the signature is still good, introspection is not.
        let res = app
            .http
            .post(app.url("/revoke"))
            .basic_auth(&client, Some(&secret))
            .form(&[("token", token.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let (s, challenge, _) = protected.post(Some(&token), LIST).await;
        assert_eq!(s, 401);
        assert!(challenge.contains("not active"), "{challenge}");
        assert_eq!(
            protected.guard.validate(&token).await.unwrap_err(),
            TokenError::Inactive
        );

        // A client the operator did not allow to introspect is named at start-up.
        let (other, other_secret) = op.secret_client(&app, &["client_credentials"], false).await;
        let err = Guard::builder(app.issuer.as_str(), protected.resource.as_str())
            .client_credentials(ClientCredentials::secret_basic(&other, &other_secret))
            .introspection(Introspection::OpaqueTokens)
            .build()
            .await
            .unwrap_err();
        assert!(
            matches!(err, BuildError::IntrospectionNotAllowed { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("--may-introspect"), "{err}");
        app
    }
);

both!(
    a_guard_started_before_concierge_answers_becomes_ready,
    |app: TestApp| async move {
        // Concierge is up here; the background start reaches it and reports readiness.
        let guard = Guard::builder(app.issuer.as_str(), resource_uri("late").as_str())
            .build_in_background()
            .unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(60), guard.ready())
            .await
            .expect("ready");
        assert_eq!(guard.issuer(), app.issuer);
        assert!(guard.startup_error().is_none());
        app
    }
);
