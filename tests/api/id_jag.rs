//! ID-JAG (MCP enterprise-managed authorization) with two Concierge instances over HTTP: one
//! is the enterprise IdP, the other the MCP server's authorization server trusting it. Sign in
//! at the IdP, exchange the ID token for an ID-JAG, redeem it at the second server, use the
//! access token; and every refusal on both sides.

use concierge::config::{Config, TrustedIssuer};
use concierge::keys::Alg;
use concierge::oauth::client_metadata::RawClientMetadata;
use concierge::store::{AuditQuery, IdJagPolicy};
use serde_json::{Value, json};

use crate::flow::*;
use crate::helpers::{Backend, TestApp, assert_error, post_form, spawn_app_on, split};

pub const TE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
pub const ID_JAG: &str = "urn:ietf:params:oauth:token-type:id-jag";
pub const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
/// Our client at the IdP, and what it is called at the MCP server's authorization server.
pub const IDP_CLIENT: &str = "enterprise-agent";
pub const AS_CLIENT: &str = "agent-at-as";
/// An audience the IdP has a policy for, but that is not the second server.
const OTHER_AS: &str = "https://other-as.example";

/// An operator's confidential client (client_secret_post) with a chosen id: (id, secret).
pub async fn static_client(
    app: &TestApp,
    id: Option<&str>,
    grants: &[&str],
    redirect: bool,
    may_introspect: bool,
) -> (String, String) {
    let mut m = TestApp::operator_metadata(RawClientMetadata {
        grant_types: Some(grants.iter().map(|g| g.to_string()).collect()),
        token_endpoint_auth_method: Some("client_secret_post".into()),
        redirect_uris: redirect.then(|| vec![REDIRECT.to_string()]),
        ..Default::default()
    });
    m.may_introspect = may_introspect;
    let (id, secret) = app.add_client_metadata(id, m).await;
    (id, secret.unwrap())
}

/// The IdP and the MCP server's authorization server, each knowing the other's issuer.
pub struct Pair {
    pub idp: TestApp,
    pub rs_as: TestApp,
    /// Our client's secret at the IdP and at the authorization server.
    pub idp_secret: String,
    pub as_secret: String,
}

impl Pair {
    pub async fn start(backend: Backend, configure_as: impl FnOnce(&mut Config)) -> Option<Self> {
        let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
        let (l_idp, l_as) = (bind().await.unwrap(), bind().await.unwrap());
        let idp_issuer = format!("http://127.0.0.1:{}", l_idp.local_addr().unwrap().port());
        let as_issuer = format!("http://127.0.0.1:{}", l_as.local_addr().unwrap().port());
        let policy = |audience: &str| IdJagPolicy {
            client_id: IDP_CLIENT.into(),
            audience: audience.into(),
            resource: NOTES.into(),
            target_client_id: AS_CLIENT.into(),
            scopes: vec!["notes:read".into(), "notes:write".into()],
        };
        let idp = spawn_app_on(backend, l_idp, "", |c| {
            c.id_jag.policies = vec![policy(&as_issuer), policy(OTHER_AS)];
        })
        .await?;
        let trusted = TrustedIssuer {
            issuer: idp_issuer.clone(),
            jwks_uri: Some(format!("{idp_issuer}/jwks")),
            jwks: None,
            link_by_email: false,
            provision: true,
        };
        let rs_as = spawn_app_on(backend, l_as, "", |c| {
            c.id_jag.trusted_issuers = vec![trusted];
            // The IdP's JWKS is on loopback http in tests.
            c.cimd.allow_loopback = true;
            configure_as(c);
        })
        .await?;
        seed(&idp).await;
        seed(&rs_as).await;
        let (_, idp_secret) = static_client(
            &idp,
            Some(IDP_CLIENT),
            &["authorization_code", TE],
            true,
            false,
        )
        .await;
        let (_, as_secret) =
            static_client(&rs_as, Some(AS_CLIENT), &[JWT_BEARER], false, false).await;
        Some(Self {
            idp,
            rs_as,
            idp_secret,
            as_secret,
        })
    }

    pub async fn finish(self) {
        self.idp.finish().await;
        self.rs_as.finish().await;
    }

    /// alice signs in at the IdP through the browser flow; returns her ID token.
    pub async fn id_token(&self) -> String {
        self.id_token_for("openid notes:read").await
    }

    /// The same, asking for `scope` (e.g. with `email`, so the ID-JAG carries her address).
    pub async fn id_token_for(&self, scope: &str) -> String {
        let app = &self.idp;
        let (verifier, challenge) = pkce();
        let params = auth_params(IDP_CLIENT, &challenge, scope);
        let back = authorize_and_approve(app, &browser(), &params).await;
        let (s, _, tokens) = redeem(
            app,
            IDP_CLIENT,
            &query(&back)["code"],
            &verifier,
            &[("client_secret", &self.idp_secret)],
        )
        .await;
        assert_eq!(s, 200, "{tokens}");
        tokens["id_token"].as_str().unwrap().to_string()
    }

    /// Token exchange at the IdP: ID token → ID-JAG. `extra` replaces or (empty) removes.
    pub async fn request_id_jag(
        &self,
        id_token: &str,
        extra: &[(&str, &str)],
    ) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
        let form = vec![
            ("grant_type", TE),
            ("client_id", IDP_CLIENT),
            ("client_secret", self.idp_secret.as_str()),
            ("requested_token_type", ID_JAG),
            ("subject_token", id_token),
            ("subject_token_type", ID_TOKEN),
            ("audience", self.rs_as.issuer.as_str()),
            ("resource", NOTES),
        ];
        post_form(&self.idp, "/token", form, extra).await
    }

    /// The local user the IdP's user `idp_sub` is at the authorization server (linked when
    /// their first ID-JAG was redeemed): the `sub` of the access tokens it issues for them.
    pub async fn local_user_of(&self, idp_sub: &str) -> String {
        self.rs_as
            .store()
            .find_identity(&self.idp.issuer, idp_sub)
            .await
            .unwrap()
            .expect("linked")
            .user_id
    }

    /// The jwt-bearer grant at the authorization server.
    pub async fn redeem_id_jag(
        &self,
        assertion: &str,
        extra: &[(&str, &str)],
    ) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
        let form = vec![
            ("grant_type", JWT_BEARER),
            ("client_id", AS_CLIENT),
            ("client_secret", self.as_secret.as_str()),
            ("assertion", assertion),
        ];
        post_form(&self.rs_as, "/token", form, extra).await
    }

    /// An ID-JAG signed with the IdP's published key, with `claims` merged over good ones.
    pub fn forge(&self, typ: &str, claims: Value) -> String {
        self.forge_by(&self.idp, typ, claims)
    }

    /// The same, signed with `signer`'s key.
    pub fn forge_by(&self, signer: &TestApp, typ: &str, claims: Value) -> String {
        let now = concierge::util::now();
        let mut c = json!({
            "iss": self.idp.issuer,
            "sub": "alice-at-idp",
            "aud": self.rs_as.issuer,
            "resource": NOTES,
            "client_id": AS_CLIENT,
            "jti": concierge::util::random_id(),
            "iat": now,
            "exp": now + 300,
            "scope": "notes:read",
        });
        for (k, v) in claims.as_object().unwrap() {
            c[k] = v.clone();
        }
        signer
            .state
            .oauth
            .keys
            .sign_jwt(Alg::ES256, typ, &c)
            .unwrap()
    }
}

/// A refusal case: who signs, `typ`, claims over good ones, extra parameters, the error code
/// and a word of its description.
type Refusal<'a> = (
    &'a TestApp,
    &'a str,
    Value,
    Vec<(&'a str, &'a str)>,
    &'a str,
    &'a str,
);

/// Run a two-server test (the IdP and the MCP server's authorization server) on both
/// backends.
macro_rules! both_pair {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let pair = Pair::start(Backend::Sqlite, |_| {}).await.unwrap();
                ($body)(pair).await.finish().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(pair) = Pair::start(Backend::Postgres, |_| {}).await else {
                    return;
                };
                ($body)(pair).await.finish().await;
            }
        }
    };
}
pub(crate) use both_pair;

both_pair!(id_token_to_id_jag_to_access_token, |p: Pair| async move {
    let id_token = p.id_token().await;
    let alice = claims(&id_token)["sub"].as_str().unwrap().to_string();

    // At the IdP: the ID-JAG.
    let (s, h, body) = p
        .request_id_jag(&id_token, &[("scope", "notes:read notes:write")])
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(body["issued_token_type"], ID_JAG);
    assert_eq!(body["token_type"], "N_A");
    assert_eq!(body["scope"], "notes:read notes:write");
    assert!(body["expires_in"].as_i64().unwrap() > 0);
    assert!(body.get("refresh_token").is_none());
    let jag = body["access_token"].as_str().unwrap().to_string();
    let header = jsonwebtoken::decode_header(&jag).unwrap();
    assert_eq!(header.typ.as_deref(), Some("oauth-id-jag+jwt"));
    let c = claims(&jag);
    assert_eq!(c["iss"], p.idp.issuer);
    assert_eq!(c["sub"], alice);
    assert_eq!(c["aud"], p.rs_as.issuer);
    assert_eq!(c["resource"], NOTES);
    assert_eq!(c["client_id"], AS_CLIENT);
    assert_eq!(c["scope"], "notes:read notes:write");
    assert!(c["jti"].is_string() && c["auth_time"].is_i64());
    assert!(c["exp"].as_i64().unwrap() > c["iat"].as_i64().unwrap());

    // The second server advertises the grant; the IdP (no trusted issuers) does not.
    let (_, _, m) = p
        .rs_as
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert!(
        m["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!(JWT_BEARER))
    );
    assert_eq!(
        m["authorization_grant_profiles_supported"],
        json!(["urn:ietf:params:oauth:grant-profile:id-jag"])
    );
    let (_, _, idp_m) = p
        .idp
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert!(
        idp_m
            .get("authorization_grant_profiles_supported")
            .is_none()
    );

    // At the MCP server's authorization server: the access token, narrowed on request.
    let (s, h, body) = p.redeem_id_jag(&jag, &[("scope", "notes:read")]).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "notes:read");
    assert!(body.get("refresh_token").is_none());
    let at = body["access_token"].as_str().unwrap();

    // Use it: the resource server introspects it at its authorization server.
    let (rs, rs_secret) = static_client(&p.rs_as, None, &["client_credentials"], false, true).await;
    let (s, _, intro) = split(
        p.rs_as
            .http
            .post(p.rs_as.url("/introspect"))
            .form(&[
                ("client_id", rs.as_str()),
                ("client_secret", rs_secret.as_str()),
                ("token", at),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{intro}");
    assert_eq!(intro["active"], true, "{intro}");
    // Issue 18.8: the token names a local user, provisioned for the IdP's alice and linked
    // to her (iss, sub); the IdP's own `sub` never names a user here.
    let link = p
        .rs_as
        .store()
        .find_identity(&p.idp.issuer, &alice)
        .await
        .unwrap()
        .expect("provisioned and linked");
    assert_eq!(link.linked_by, concierge::store::LinkedBy::Provisioned);
    assert_eq!(intro["sub"], link.user_id);
    assert_ne!(intro["sub"], alice);
    let local = p
        .rs_as
        .store()
        .get_user(&link.user_id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        local.password_hash.is_none(),
        "provisioned accounts have no password"
    );
    assert!(local.username.ends_with("@127.0.0.1"), "{}", local.username);
    assert_eq!(intro["client_id"], AS_CLIENT);
    assert_eq!(intro["scope"], "notes:read");
    let v = verify(&p.rs_as, at, jsonwebtoken::Algorithm::ES256, NOTES);
    assert_eq!(v["iss"], p.rs_as.issuer);
    assert_eq!(v["aud"], NOTES);

    // The same ID-JAG again: refused (jti spent), and the refusal is in the audit log.
    let again = p.redeem_id_jag(&jag, &[]).await;
    assert_error(&again, 400, "invalid_grant", "used before");
    p.rs_as.state.oauth.audit.flush().await;
    let events = p
        .rs_as
        .store()
        .list_audit(&AuditQuery {
            kind: Some("id_jag.refused".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].detail["role"], "authorization_server");
    assert_eq!(events[0].detail["iss"], p.idp.issuer);
    assert!(!events[0].detail.to_string().contains(&jag));
    let issued = p
        .rs_as
        .store()
        .list_audit(&AuditQuery {
            kind: Some("token.issued".into()),
            client_id: Some(AS_CLIENT.into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(issued[0].detail["grant_type"], JWT_BEARER);
    assert_eq!(issued[0].detail["id_jag"]["iss"], p.idp.issuer);
    p
});

both_pair!(the_idp_refuses, |p: Pair| async move {
    let id_token = p.id_token().await;
    // Policy: no policy for this resource; scopes beyond the policy.
    let r = p.request_id_jag(&id_token, &[("resource", CALENDAR)]).await;
    assert_error(&r, 400, "invalid_target", "no ID-JAG policy");
    // A policy made with the CLI (in the database) counts as much as the file's.
    let calendar = IdJagPolicy {
        client_id: IDP_CLIENT.into(),
        audience: format!("{}/", p.rs_as.issuer),
        resource: CALENDAR.into(),
        target_client_id: AS_CLIENT.into(),
        scopes: vec!["calendar:read".into()],
    };
    p.idp
        .store()
        .save_id_jag_policy(&calendar, concierge::util::now())
        .await
        .unwrap();
    let (s, _, body) = p.request_id_jag(&id_token, &[("resource", CALENDAR)]).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["scope"], "calendar:read");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["resource"],
        CALENDAR
    );
    let listed = p.idp.store().list_id_jag_policies().await.unwrap();
    assert_eq!(listed, vec![calendar.clone()]);
    assert!(
        p.idp
            .store()
            .delete_id_jag_policy(IDP_CLIENT, &calendar.audience, CALENDAR)
            .await
            .unwrap()
    );
    let r = p.request_id_jag(&id_token, &[("resource", CALENDAR)]).await;
    assert_error(&r, 400, "invalid_target", "no ID-JAG policy");
    let r = p
        .request_id_jag(&id_token, &[("audience", "https://unknown-as.example")])
        .await;
    assert_error(&r, 400, "invalid_target", "no ID-JAG policy");
    let r = p
        .request_id_jag(&id_token, &[("scope", "notes:read notes:admin")])
        .await;
    assert_error(&r, 400, "invalid_scope", "notes:admin");
    // The subject must be an ID token issued to the requesting client.
    let (other, other_secret) =
        static_client(&p.idp, Some("second-agent"), &[TE], false, false).await;
    let r = p
        .request_id_jag(
            &id_token,
            &[("client_id", &other), ("client_secret", &other_secret)],
        )
        .await;
    assert_error(&r, 400, "invalid_grant", "issued to this client");
    // An access token is not an ID token, whatever the type says.
    let r = p.request_id_jag("not-a-jwt", &[]).await;
    assert_error(&r, 400, "invalid_grant", "ID token");
    let r = p
        .request_id_jag(
            &id_token,
            &[(
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:access_token",
            )],
        )
        .await;
    assert_error(&r, 400, "invalid_request", "subject_token_type");
    let r = p.request_id_jag(&id_token, &[("audience", "")]).await;
    assert_error(&r, 400, "invalid_request", "audience");
    // The IdP trusts no ID-JAG issuer, and its client did not register the grant.
    let (_, _, ok) = p.request_id_jag(&id_token, &[]).await;
    let jag = ok["access_token"].as_str().unwrap();
    let form = vec![
        ("grant_type", JWT_BEARER),
        ("client_id", IDP_CLIENT),
        ("client_secret", p.idp_secret.as_str()),
        ("assertion", jag),
    ];
    let r = post_form(&p.idp, "/token", form, &[]).await;
    assert_error(&r, 400, "unauthorized_client", "jwt-bearer");
    p.idp.state.oauth.audit.flush().await;
    let refused = p
        .idp
        .store()
        .list_audit(&AuditQuery {
            kind: Some("id_jag.refused".into()),
            limit: 20,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(refused.len() >= 7, "{refused:?}");
    assert!(refused.iter().all(|e| e.detail["role"] == "idp"));
    p
});

both_pair!(the_authorization_server_refuses, |p: Pair| async move {
    // An ID-JAG the IdP issued for another authorization server: wrong aud.
    let id_token = p.id_token().await;
    let (s, _, body) = p.request_id_jag(&id_token, &[("audience", OTHER_AS)]).await;
    assert_eq!(s, 200, "{body}");
    let r = p
        .redeem_id_jag(body["access_token"].as_str().unwrap(), &[])
        .await;
    assert_error(&r, 400, "invalid_grant", "aud");

    // Each refusal: who signs, typ, claims over good ones, extra parameters, what answers.
    let now = concierge::util::now();
    let (idp, rs_as) = (&p.idp, &p.rs_as);
    let typ = "oauth-id-jag+jwt";
    let cases: Vec<Refusal> = vec![
        // Signed by a server we do not trust (the authorization server itself).
        (
            rs_as,
            typ,
            json!({"iss": rs_as.issuer}),
            vec![],
            "invalid_grant",
            "not trusted",
        ),
        // Claiming the trusted IdP as issuer, signed with another key.
        (rs_as, typ, json!({}), vec![], "invalid_grant", "kid"),
        // An ordinary JWT from the IdP, not an ID-JAG.
        (idp, "JWT", json!({}), vec![], "invalid_grant", "typ"),
        (
            idp,
            typ,
            json!({"iat": now - 600, "exp": now - 300}),
            vec![],
            "invalid_grant",
            "expired",
        ),
        // Issued for another client than the one authenticating.
        (
            idp,
            typ,
            json!({"client_id": "someone-else"}),
            vec![],
            "invalid_grant",
            "client_id",
        ),
        // A resource this server does not protect.
        (
            idp,
            typ,
            json!({"resource": "http://127.0.0.1:9999/elsewhere"}),
            vec![],
            "invalid_target",
            "elsewhere",
        ),
        // Scope widening: more than the assertion carries.
        (
            idp,
            typ,
            json!({"scope": "notes:read"}),
            vec![("scope", "notes:read notes:write")],
            "invalid_scope",
            "notes:write",
        ),
        // A resource parameter that differs from the assertion's.
        (
            idp,
            typ,
            json!({}),
            vec![("resource", CALENDAR)],
            "invalid_target",
            "differs",
        ),
    ];
    for (signer, typ, claims, extra, code, mention) in cases {
        let r = p
            .redeem_id_jag(&p.forge_by(signer, typ, claims), &extra)
            .await;
        assert_error(&r, 400, code, mention);
    }
    // Replay, and a refused assertion does not spend its jti.
    let good = p.forge("oauth-id-jag+jwt", json!({}));
    let r = p.redeem_id_jag(&good, &[("scope", "notes:write")]).await;
    assert_error(&r, 400, "invalid_scope", "notes:write");
    let (s, _, body) = p.redeem_id_jag(&good, &[]).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["scope"], "notes:read");
    let r = p.redeem_id_jag(&good, &[]).await;
    assert_error(&r, 400, "invalid_grant", "used before");

    // A resource that requires a second factor: an ID-JAG cannot attest one here, so it gets
    // no token from one (the user authorizes through this server instead). Refused before
    // its jti is spent: lifted again, the same assertion is redeemed.
    set_required_acr(&p.rs_as, NOTES, Some("urn:concierge:acr:mfa")).await;
    let fresh = p.forge("oauth-id-jag+jwt", json!({}));
    let r = p.redeem_id_jag(&fresh, &[]).await;
    assert_error(&r, 400, "invalid_grant", "a second factor");
    set_required_acr(&p.rs_as, NOTES, None).await;
    let (s, _, body) = p.redeem_id_jag(&fresh, &[]).await;
    assert_eq!(s, 200, "{body}");
    p
});

// A token for a user linked by an ID-JAG that carries no `auth_time` (the IdP need not
// send one) is not active once that user is deleted: introspection must not take its
// subject, which names no user any more, for a machine's.
both_pair!(
    a_deleted_users_token_from_an_id_jag_is_not_active,
    |p: Pair| async move {
        let jag = p.forge("oauth-id-jag+jwt", json!({}));
        assert!(claims(&jag).get("auth_time").is_none());
        let (s, _, body) = p.redeem_id_jag(&jag, &[]).await;
        assert_eq!(s, 200, "{body}");
        let at = body["access_token"].as_str().unwrap();
        assert!(claims(at).get("auth_time").is_none(), "{}", claims(at));
        let intro = crate::step_up::introspect(&p.rs_as, at).await;
        assert_eq!(intro["active"], true, "{intro}");

        let user_id = p.local_user_of("alice-at-idp").await;
        let user = p.rs_as.store().get_user(&user_id).await.unwrap().unwrap();
        assert!(p.rs_as.store().delete_user(&user.username).await.unwrap());
        let intro = crate::step_up::introspect(&p.rs_as, at).await;
        assert_eq!(intro, json!({ "active": false }));
        p
    }
);

async fn grant_profiles(app: &TestApp) -> Option<Value> {
    let (_, _, m) = app
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    m.get("authorization_grant_profiles_supported").cloned()
}

/// Issue 18.8: an operator trusts the IdP through the admin API instead of the
/// configuration file; distrusting it stops redemption and the advertised profile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_issuers_from_the_admin_api() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(p) = Pair::start(backend, |c| c.id_jag.trusted_issuers.clear()).await else {
            continue;
        };
        let (admin, secret) = concierge::manage::create_admin_client(
            p.rs_as.store().as_ref(),
            &p.rs_as.issuer,
            "ops",
        )
        .await
        .unwrap();
        let token = crate::flow::cc_token(
            &p.rs_as,
            &admin.client_id,
            &secret,
            &concierge::oauth::admin_token::admin_resource_uri(&p.rs_as.issuer),
            "admin",
        )
        .await;
        let id_token = p.id_token().await;
        let (_, _, ok) = p.request_id_jag(&id_token, &[]).await;
        let jag = ok["access_token"].as_str().unwrap().to_string();
        assert!(
            grant_profiles(&p.rs_as).await.is_none(),
            "no IdP trusted yet"
        );
        let refused = p.redeem_id_jag(&jag, &[]).await;
        assert_error(&refused, 400, "invalid_grant", "not trusted");

        let trust = json!({"issuer": p.idp.issuer, "jwks_uri": format!("{}/jwks", p.idp.issuer)});
        let admin_call = |method: reqwest::Method, path: String, body: Option<Value>| {
            let mut req = p
                .rs_as
                .http
                .request(method, p.rs_as.url(&path))
                .bearer_auth(&token);
            if let Some(b) = body {
                req = req.json(&b);
            }
            req.send()
        };
        let res = admin_call(
            reqwest::Method::POST,
            "/admin/v1/id-jag/trusted-issuers".into(),
            Some(trust),
        )
        .await
        .unwrap();
        assert_eq!(res.status(), 201);
        let bad = admin_call(
            reqwest::Method::POST,
            "/admin/v1/id-jag/trusted-issuers".into(),
            Some(json!({"issuer": "https://idp.example"})),
        )
        .await
        .unwrap();
        assert_eq!(bad.status(), 400, "keys are required");
        let listed: Value = admin_call(
            reqwest::Method::GET,
            "/admin/v1/id-jag/trusted-issuers".into(),
            None,
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        assert_eq!(listed[0]["issuer"], p.idp.issuer);
        assert_eq!(
            grant_profiles(&p.rs_as).await,
            Some(json!(["urn:ietf:params:oauth:grant-profile:id-jag"]))
        );
        let (s, _, body) = p.redeem_id_jag(&jag, &[]).await;
        assert_eq!(s, 200, "{body}");

        let encoded: String =
            url::form_urlencoded::byte_serialize(p.idp.issuer.as_bytes()).collect();
        let res = admin_call(
            reqwest::Method::DELETE,
            format!("/admin/v1/id-jag/trusted-issuers/{encoded}"),
            None,
        )
        .await
        .unwrap();
        assert_eq!(res.status(), 204);
        let (_, _, ok) = p.request_id_jag(&id_token, &[]).await;
        let jag = ok["access_token"].as_str().unwrap().to_string();
        assert_error(
            &p.redeem_id_jag(&jag, &[]).await,
            400,
            "invalid_grant",
            "not trusted",
        );
        assert!(grant_profiles(&p.rs_as).await.is_none());
        p.finish().await;
    }
}
