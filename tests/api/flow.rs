//! A browser's part of the code flow, spoken over HTTP with a cookie jar: sign-in pages,
//! consent forms and redirects. Used by the code-flow tests.

use concierge::oauth::resource::{Resource, ScopeDef};
use concierge::store::User;
use reqwest::header::LOCATION;
use serde_json::{Value, json};

use crate::helpers::{Server, TestApp};

pub const NOTES: &str = "http://127.0.0.1:9999/notes";
pub const CALENDAR: &str = "http://127.0.0.1:9999/calendar";
pub const REDIRECT: &str = "http://127.0.0.1/callback";
pub const PASSWORD: &str = "correct horse battery";

/// Two resources and a user `alice`; returns alice's id.
pub async fn seed(app: &impl Server) -> String {
    for (uri, name, scopes) in [
        (
            NOTES,
            "Notes",
            vec![
                "notes:read=Read your notes",
                "notes:write=Change your notes",
            ],
        ),
        (
            CALENDAR,
            "Calendar",
            vec!["calendar:read=See your calendar"],
        ),
    ] {
        let scopes = scopes
            .into_iter()
            .map(|s| ScopeDef::parse(s).unwrap())
            .collect();
        app.store()
            .insert_resource(&Resource::new(uri, name, scopes, 0).unwrap().to_record())
            .await
            .unwrap();
    }
    add_user(app, "alice").await
}

/// Disable the user `user_id` now, as `concierge user disable` does; fails the test if there
/// is no such user.
pub async fn disable_now(app: &impl Server, user_id: &str) {
    let now = concierge::util::now();
    assert!(
        app.store()
            .set_disabled(user_id, Some(now), now)
            .await
            .unwrap(),
        "no user {user_id}"
    );
}

pub async fn add_user(app: &impl Server, username: &str) -> String {
    let now = concierge::util::now();
    let id = concierge::util::random_id();
    app.store()
        .insert_user(&User {
            id: id.clone(),
            username: username.into(),
            email: Some(format!("{username}@example.com")),
            email_verified: false,
            name: Some(format!("{username} Example")),
            password_hash: Some(concierge::oauth::authn::password::hash(PASSWORD).unwrap()),
            disabled_at: None,
            password_change_required: false,
            created_at: now,
            updated_at: now,
        })
        .await
        .unwrap();
    id
}

/// Let `client_id` exchange Calendar tokens (calendar:read) for Notes tokens (notes:read).
pub async fn allow_calendar_to_notes(app: &TestApp, client_id: &str) {
    app.store()
        .save_exchange_policy(&concierge::store::ExchangePolicy {
            target: NOTES.into(),
            client_id: client_id.into(),
            source: CALENDAR.into(),
            scope_map: [("calendar:read".to_string(), vec!["notes:read".to_string()])]
                .into_iter()
                .collect(),
            created_at: 0,
        })
        .await
        .unwrap();
}

/// Set the `acr` every sign-in for the resource `uri` must reach (None: no requirement of
/// its own), straight in the store, and make this replica's cache forget it.
pub async fn set_required_acr(app: &TestApp, uri: &str, acr: Option<&str>) {
    let mut r = app.store().get_resource(uri).await.unwrap().unwrap();
    r.required_acr = acr.map(str::to_string);
    assert!(app.store().update_resource(&r).await.unwrap());
    app.state.oauth.resources.forget(uri);
}

/// Register a public client the way MCP clients do; returns its client_id.
pub async fn public_client(app: &impl Server) -> String {
    let (status, _, body) = app
        .register(&json!({
            "client_name": "Test Agent",
            "redirect_uris": [REDIRECT],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "none"
        }))
        .await;
    assert_eq!(status, 201, "{body}");
    body["client_id"].as_str().unwrap().to_string()
}

/// A PKCE pair (verifier, S256 challenge).
pub fn pkce() -> (String, String) {
    let verifier = format!("{}{}", concierge::util::random_secret(), "-._~");
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    (verifier, concierge::util::b64(d.as_ref()))
}

/// A browser: a cookie jar, no automatic redirects.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The body of the page at `url`, as browser `b` gets it.
pub async fn page_text(b: &reqwest::Client, url: &str) -> String {
    b.get(url).send().await.unwrap().text().await.unwrap()
}

pub fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#x2f;", "/")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// What a browser submits of a page's forms without the user typing: every
/// `<input type="hidden" name=… value=…>`, then every ticked checkbox (`checked`), in order.
pub fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (kind, part) in html
        .split("<input type=\"hidden\" ")
        .skip(1)
        .map(|p| ("hidden", p))
        .chain(
            html.split("<input type=\"checkbox\" ")
                .skip(1)
                .map(|p| ("checkbox", p)),
        )
    {
        let tag = part.split('>').next().unwrap_or("");
        if kind == "checkbox" && !tag.contains(" checked") {
            continue;
        }
        let attr = |name: &str| {
            tag.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|v| v.split('"').next())
                .map(unescape)
        };
        if let (Some(name), Some(value)) = (attr("name"), attr("value")) {
            out.push((name, value));
        }
    }
    out
}

pub fn location(res: &reqwest::Response) -> String {
    res.headers()
        .get(LOCATION)
        .unwrap_or_else(|| panic!("no Location; status {}", res.status()))
        .to_str()
        .unwrap()
        .to_string()
}

/// Query parameters of a URL.
pub fn query(url: &str) -> std::collections::HashMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

/// Authorization parameters for `client_id` with sensible defaults.
pub fn auth_params(client_id: &str, challenge: &str, scope: &str) -> Vec<(String, String)> {
    [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        ("scope", scope),
        ("state", "st-123"),
        ("nonce", "n-456"),
        ("resource", NOTES),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

pub fn authorize_url(app: &impl Server, params: &[(String, String)]) -> String {
    format!(
        "{}?{}",
        app.url("/authorize"),
        serde_urlencoded::to_string(params).unwrap()
    )
}

/// Sign in through the sign-in page that `signin_url` names; returns where it sends us.
pub async fn sign_in(
    app: &impl Server,
    b: &reqwest::Client,
    signin_url: &str,
    username: &str,
    password: &str,
) -> reqwest::Response {
    let page = b.get(signin_url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    let mut form = hidden_inputs(&html);
    form.push(("username".into(), username.into()));
    form.push(("password".into(), password.into()));
    b.post(app.url("/signin")).form(&form).send().await.unwrap()
}

/// `res` redirects to the sign-in page: sign in there as alice and return the page the
/// sign-in leads to (the consent page, the device code entry, …).
pub async fn sign_in_and_see(
    app: &impl Server,
    b: &reqwest::Client,
    res: &reqwest::Response,
) -> String {
    let signin = format!("{}{}", app.origin(), location(res));
    let res = sign_in(app, b, &signin, "alice", PASSWORD).await;
    b.get(format!("{}{}", app.origin(), location(&res)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The CSRF token of a page's forms.
pub fn csrf_of(html: &str) -> String {
    hidden_inputs(html)
        .into_iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no csrf field in {html}"))
}

/// Approve the consent page `html` with the scopes `untick` unticked, as a user would.
pub async fn approve_unticking(
    app: &impl Server,
    b: &reqwest::Client,
    html: &str,
    untick: &[&str],
) -> reqwest::Response {
    let mut form: Vec<(String, String)> = hidden_inputs(html)
        .into_iter()
        .filter(|(n, _)| !untick.iter().any(|u| n == &format!("keep:{u}")))
        .collect();
    form.push(("decision".into(), "approve".into()));
    b.post(app.url("/authorize/decision"))
        .form(&form)
        .send()
        .await
        .unwrap()
}

/// Submit the consent page `html` with `decision`.
pub async fn decide(
    app: &impl Server,
    b: &reqwest::Client,
    html: &str,
    decision: &str,
) -> reqwest::Response {
    let mut form = hidden_inputs(html);
    form.push(("decision".into(), decision.into()));
    b.post(app.url("/authorize/decision"))
        .form(&form)
        .send()
        .await
        .unwrap()
}

/// Where `/authorize` sends browser `b` for `params` (it must answer 303).
pub async fn authorize_redirect(
    app: &impl Server,
    b: &reqwest::Client,
    params: &[(String, String)],
) -> String {
    let res = b.get(authorize_url(app, params)).send().await.unwrap();
    assert_eq!(res.status(), 303);
    location(&res)
}

/// The code a signed-in browser `b` gets at once for `params`: its user's consent to them
/// is remembered, so `/authorize` answers with the redirect.
pub async fn remembered_code(
    app: &impl Server,
    b: &reqwest::Client,
    params: &[(String, String)],
) -> String {
    query(&authorize_redirect(app, b, params).await)["code"].clone()
}

/// The whole browser part for a first authorization: sign in as alice, approve. Returns the
/// redirect back to the client.
pub async fn authorize_and_approve(
    app: &impl Server,
    b: &reqwest::Client,
    params: &[(String, String)],
) -> String {
    let signin = authorize_redirect(app, b, params).await;
    assert!(signin.contains("/signin?"), "{signin}");
    let res = sign_in(
        app,
        b,
        &format!("{}{}", app.origin(), signin),
        "alice",
        PASSWORD,
    )
    .await;
    assert_eq!(res.status(), 303);
    let back = location(&res);
    let consent = b
        .get(format!("{}{}", app.origin(), back))
        .send()
        .await
        .unwrap();
    assert_eq!(consent.status(), 200);
    let html = consent.text().await.unwrap();
    let res = decide(app, b, &html, "approve").await;
    assert_eq!(res.status(), 303);
    location(&res)
}

/// Redeem a code at the token endpoint as a public client.
pub async fn redeem(
    app: &impl Server,
    client_id: &str,
    code: &str,
    verifier: &str,
    extra: &[(&str, &str)],
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("client_id", client_id),
        ("code", code),
        ("code_verifier", verifier),
        ("redirect_uri", REDIRECT),
    ];
    for (k, v) in extra {
        form.retain(|(name, _)| name != k);
        if !v.is_empty() {
            form.push((k, v));
        }
    }
    let res = app
        .http()
        .post(app.url("/token"))
        .form(&form)
        .send()
        .await
        .unwrap();
    crate::helpers::split(res).await
}

/// The refresh token `raw` as the store holds it now, whatever its state.
pub async fn stored_refresh(app: &TestApp, raw: &str) -> concierge::store::Presented {
    let key = concierge::util::secret_key(raw);
    let found = app.store().find_refresh(&key, concierge::util::now()).await;
    found.unwrap().expect("the refresh token is stored")
}

pub async fn refresh(
    app: &impl Server,
    client_id: &str,
    token: &str,
    extra: &[(&str, &str)],
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("client_id", client_id),
        ("refresh_token", token),
    ];
    form.extend_from_slice(extra);
    let res = app
        .http()
        .post(app.url("/token"))
        .form(&form)
        .send()
        .await
        .unwrap();
    crate::helpers::split(res).await
}

/// `POST /revoke` of `token` by the public client `client_id` (RFC 7009): the status, which
/// is 200 whatever became of the token (§2.2).
pub async fn revoke_public(app: &impl Server, client_id: &str, token: &str) -> reqwest::StatusCode {
    app.http()
        .post(app.url("/revoke"))
        .form(&[("client_id", client_id), ("token", token)])
        .send()
        .await
        .unwrap()
        .status()
}

/// Decode a JWT's claims without checking it (tests check signatures separately).
pub fn claims(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&concierge::util::b64_decode(part).unwrap()).unwrap()
}

/// Verify a JWT we issued against the published JWKS.
pub fn verify(app: &TestApp, jwt: &str, alg: jsonwebtoken::Algorithm, audience: &str) -> Value {
    let header = jsonwebtoken::decode_header(jwt).unwrap();
    assert_eq!(header.alg, alg);
    let set: jsonwebtoken::jwk::JwkSet =
        serde_json::from_value(app.state.oauth.keys.ring().jwks(concierge::util::now())).unwrap();
    let jwk = set.find(header.kid.as_deref().unwrap()).unwrap();
    let mut v = jsonwebtoken::Validation::new(alg);
    v.set_issuer(&[app.issuer.as_str()]);
    v.set_audience(&[audience]);
    jsonwebtoken::decode::<Value>(jwt, &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(), &v)
        .unwrap()
        .claims
}

/// Alice (seeded) connects a public agent with `scope`: returns her id, the agent's
/// client_id, her browser (signed in) and the token response.
pub async fn connect_agent(app: &TestApp, scope: &str) -> (String, String, reqwest::Client, Value) {
    let alice = seed(app).await;
    let client = public_client(app).await;
    let (verifier, challenge) = pkce();
    let b = browser();
    let back = authorize_and_approve(app, &b, &auth_params(&client, &challenge, scope)).await;
    let (s, _, tokens) = redeem(app, &client, &query(&back)["code"], &verifier, &[]).await;
    assert_eq!(s, 200, "{tokens}");
    (alice, client, b, tokens)
}

/// An operator's machine client (client_credentials, `client_secret_post`) with the notes
/// scopes: its id and secret.
pub async fn machine_client(app: &TestApp) -> (String, String) {
    app.add_machine_client("client_secret_post", Some("notes:read notes:write"))
        .await
}

/// A client-credentials access token for `resource` and `scope`, the client authenticated
/// with `client_secret_basic`; anything but 200 fails the test.
pub async fn cc_token(
    app: &impl Server,
    id: &str,
    secret: &str,
    resource: &str,
    scope: &str,
) -> String {
    let res = app
        .http()
        .post(app.url("/token"))
        .basic_auth(id, Some(secret))
        .form(&[
            ("grant_type", "client_credentials"),
            ("resource", resource),
            ("scope", scope),
        ])
        .send()
        .await
        .unwrap();
    let (s, _, body) = crate::helpers::split(res).await;
    assert_eq!(s, 200, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

/// A client_credentials token request (`client_secret_post`) for `NOTES` with `notes:read`.
pub async fn machine_token(
    app: &impl Server,
    client_id: &str,
    secret: &str,
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    let form = vec![
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("client_secret", secret),
        ("resource", NOTES),
        ("scope", "notes:read"),
    ];
    crate::helpers::post_form(app, "/token", form, &[]).await
}
