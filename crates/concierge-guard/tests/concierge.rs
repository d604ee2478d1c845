//! The guard against the real Concierge server, started in-process on port 0
//! with SQLite in a temporary directory, and real tokens from `POST /token`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Protected, Server, start_concierge};
use concierge::oauth::client_metadata::{Origin, RawClientMetadata, validate};
use concierge::oauth::registration::new_client;
use concierge::store::ClientKind;
use serde_json::Value;

impl Server {
    /// A static client-credentials client using `client_secret_post`.
    async fn add_client(&self) -> (String, String) {
        let raw = RawClientMetadata {
            grant_types: Some(vec!["client_credentials".into()]),
            token_endpoint_auth_method: Some("client_secret_post".into()),
            ..Default::default()
        };
        let metadata = validate(
            raw,
            Origin::Operator,
            &concierge::oauth::grants::GrantRegistry::standard(),
        )
        .unwrap();
        let (record, secrets) =
            new_client(metadata, ClientKind::Static, None, None, common::now(), 0);
        self.app.store.insert_client(&record).await.unwrap();
        (record.client_id, secrets.client_secret.unwrap())
    }

    async fn token(&self, client: &(String, String), resource: &str, scope: &str) -> String {
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", client.0.as_str()),
            ("client_secret", client.1.as_str()),
            ("resource", resource),
            ("scope", scope),
        ];
        let res = reqwest::Client::new()
            .post(format!("{}/token", self.issuer))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(form).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }
}

#[tokio::test]
async fn real_concierge_tokens_through_the_guard() {
    let server = start_concierge().await;
    let app = Protected::start(&server.issuer, |b| {
        b.required_scopes(["notes:read"])
            .tool_scopes("add_note", ["notes:write"])
    })
    .await;
    server.add_resource(&app.resource).await;
    let other = "http://127.0.0.1:9/other";
    server.add_resource(other).await;
    let client = server.add_client().await;

    // No token: the challenge points at the metadata, which names Concierge.
    let reply = app.call(None).await;
    reply.assert_refused(401, None);
    let metadata_url = app.guard.metadata_url().to_string();
    reply.assert_challenge_contains(&metadata_url);
    let doc: Value = app
        .http
        .get(&metadata_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["resource"], app.resource.as_str());
    assert_eq!(doc["authorization_servers"][0], server.issuer.as_str());

    // A real token for this resource passes; the handler sees the client.
    let reader = server.token(&client, &app.resource, "notes:read").await;
    let reply = app.call(Some(&reader)).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["sub"], client.0.as_str());
    assert_eq!(reply.body["client_id"], client.0.as_str());
    assert_eq!(reply.body["scopes"], serde_json::json!(["notes:read"]));

    // Per-tool step-up: add_note needs notes:write.
    let add = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add_note","arguments":{}}}"#;
    let reply = app.post("/mcp", Some(&reader), add).await;
    reply.assert_refused(403, Some("insufficient_scope"));
    reply.assert_challenge_contains(r#"scope="notes:read notes:write""#);
    let writer = server
        .token(&client, &app.resource, "notes:read notes:write")
        .await;
    assert_eq!(app.post("/mcp", Some(&writer), add).await.status, 200);

    // A token for another resource is refused.
    let elsewhere = server.token(&client, other, "notes:read").await;
    let reply = app.call(Some(&elsewhere)).await;
    reply.assert_refused(401, Some("invalid_token"));
    reply.assert_challenge_contains("not meant for this resource");

    server.running.stop().await.unwrap();
}
