//! Adding a grant (README: "Adding a grant"): one type implementing `Grant`, one line in the
//! registry. This test adds an example grant to a server and shows that discovery, client
//! registration, the OpenAPI token-request schema, the token endpoint and its audit record
//! all follow from the registry.

use async_trait::async_trait;
use concierge::error::{ErrorCode, OAuthError};
use concierge::oauth::Context;
use concierge::oauth::grants::{Grant, GrantRegistry, Param, TokenRequest};
use concierge::oauth::policy;
use concierge::oauth::tokens::{AccessToken, TokenResponse, issue_access_token};
use concierge::store::AuditQuery;
use serde_json::{Map, Value, json};

use crate::both;
use crate::helpers::{TOOLS_RESOURCE, TestApp, assert_error, post_form};

/// The example: a client proves it knows a passphrase and gets a token for itself.
struct Passphrase;

const PASSPHRASE: &str = "urn:example:params:oauth:grant-type:passphrase";

#[async_trait]
impl Grant for Passphrase {
    fn grant_type(&self) -> &'static str {
        PASSPHRASE
    }

    fn description(&self) -> &'static str {
        "An example: a passphrase for a client's own token"
    }

    fn parameters(&self) -> &'static [Param] {
        &[Param {
            name: "passphrase",
            description: "passphrase: the words",
        }]
    }

    fn metadata(&self, _c: &concierge::oauth::grants::Advertised<'_>, m: &mut Map<String, Value>) {
        m.insert("passphrase_grant_supported".into(), Value::Bool(true));
    }

    fn acts_for_user(&self) -> bool {
        false
    }

    async fn issue(
        &self,
        ctx: &Context,
        req: &TokenRequest<'_>,
    ) -> Result<TokenResponse, OAuthError> {
        if req.form.get("passphrase") != Some("open sesame") {
            return Err(OAuthError::new(ErrorCode::InvalidGrant, "wrong passphrase"));
        }
        let resource =
            policy::resource_for_client(ctx, req.client, &req.form.all("resource")).await?;
        let scope = policy::scopes_for_client(req.client, &resource, req.form.get("scope"))?;
        Ok(issue_access_token(
            &ctx.keys,
            ctx.issuer(),
            &AccessToken {
                sub: &req.client.client_id,
                client_id: &req.client.client_id,
                audience: &[resource.uri.to_string()],
                scope: &scope.to_string(),
                auth_time: None,
                amr: &[],
                acr: None,
                act: None,
                ttl: 60,
                not_after: None,
                jkt: resource.dpop_binding(req.dpop_jkt)?,
                alg: resource.token_alg,
                authorization_details: None,
                delegation: None,
            },
        )?)
    }
}

#[test]
fn the_token_request_schema_lists_a_new_grant() {
    let registry = GrantRegistry::standard().with(Passphrase);
    let schema = serde_json::to_value(
        concierge::endpoints::schemas::token_request_schema(&registry).build(),
    )
    .unwrap();
    assert!(
        schema["properties"]["grant_type"]["enum"]
            .as_array()
            .unwrap()
            .contains(&json!(PASSPHRASE)),
        "{schema}"
    );
    assert_eq!(
        schema["properties"]["passphrase"]["description"],
        "passphrase: the words"
    );
}

both!(
    a_new_grant_is_served_advertised_and_recorded,
    builder |b: crate::helpers::TestAppBuilder<'static>| b
        .with_grants(GrantRegistry::standard().with(Passphrase))
        .with_resource(TOOLS_RESOURCE, "Tools", &["tools:read"]),
    |app: TestApp| async move {
        // Discovery lists it, with what it adds.
        let (_, _, m) = app
            .get_json("/.well-known/oauth-authorization-server")
            .await;
        assert!(
            m["grant_types_supported"]
                .as_array()
                .unwrap()
                .contains(&json!(PASSPHRASE))
        );
        assert_eq!(m["passphrase_grant_supported"], true);

        // An operator registers a client for it.
        let metadata = TestApp::operator_metadata_with(
            &GrantRegistry::standard().with(Passphrase),
            concierge::oauth::client_metadata::RawClientMetadata {
                grant_types: Some(vec![PASSPHRASE.into()]),
                token_endpoint_auth_method: Some("client_secret_post".into()),
                scope: Some("tools:read".into()),
                ..Default::default()
            },
        );
        let (id, secret) = app.add_client_metadata(None, metadata).await;
        let secret = secret.unwrap();
        let form = vec![
            ("grant_type", PASSPHRASE),
            ("client_id", id.as_str()),
            ("client_secret", secret.as_str()),
            ("resource", TOOLS_RESOURCE),
            ("passphrase", "open sesame"),
        ];
        let (status, _, body) = post_form(&app, "/token", form.clone(), &[]).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["scope"], "tools:read");
        assert_error(
            &post_form(&app, "/token", form, &[("passphrase", "open barley")]).await,
            400,
            "invalid_grant",
            "passphrase",
        );

        // The audit record names the grant, and no user (a client's own token).
        app.state.oauth.audit.flush().await;
        let events = app
            .store()
            .list_audit(&AuditQuery {
                kind: Some("token.issued".into()),
                client_id: Some(id.clone()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].detail["grant_type"], PASSPHRASE);
        assert!(events[0].user_id.is_none());

        // A server without it neither serves nor advertises it.
        app
    }
);

both!(
    the_standard_registry_does_not_know_the_example,
    |app: TestApp| async move {
        let (_, _, reg) = app
            .register(&json!({
                "grant_types": [PASSPHRASE],
                "token_endpoint_auth_method": "client_secret_post"
            }))
            .await;
        assert_eq!(reg["error"], "invalid_client_metadata", "{reg}");
        app
    }
);
