//! Property tests (`proptest`) over HTTP (issue 12 item 19): arbitrary requests to every
//! endpoint that reads network input, against a real server on each store. No answer is a
//! 5xx; every JSON error (and every error sent back in a redirect) has an RFC `error` code;
//! and every `error_description` keeps to the characters RFC 6749 §5.2 allows
//! (`%x20-21 / %x23-5B / %x5D-7E`: no `"`, no `\`, no non-ASCII).
//!
//! Each test runs 24 requests per property unless `PROPTEST_CASES` says otherwise, and keeps
//! no failure files. A 5xx fails at once with the shrunk request; descriptions with other
//! characters are collected and listed once every property of the test has run. A longer
//! campaign:
//! `PROPTEST_CASES=2000 cargo test --test api fuzz` (README: Fuzzing).

use std::fmt::Debug;
use std::future::Future;
use std::sync::Mutex;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};

use crate::both;
use crate::helpers::{TOOLS_RESOURCE, TestApp, TestAppBuilder};

/// The adversarial inputs the unit properties use (`src/fuzz.rs`).
#[allow(dead_code)]
#[path = "../../src/fuzz.rs"]
mod inputs;

use inputs::{
    compact_jws, json_text_edge, json_value, nasty_bytes, nasty_string, rfc6749_description_ok,
    uri_like,
};

/// 24 requests per property unless `PROPTEST_CASES` says otherwise; shrinking bounded, no
/// failure files.
fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 256,
        ..Config::default()
    }
}

/// Every `error` code RFC 6749, 6750, 7591, 8628, 8707, 9449 and OpenID Connect define that
/// the server may answer with.
const RFC_CODES: &[&str] = &[
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "invalid_target",
    "invalid_client_metadata",
    "invalid_redirect_uri",
    "invalid_token",
    "insufficient_scope",
    "access_denied",
    "unsupported_response_type",
    "login_required",
    "consent_required",
    "interaction_required",
    "request_not_supported",
    "request_uri_not_supported",
    "authorization_pending",
    "slow_down",
    "expired_token",
    "invalid_dpop_proof",
    "use_dpop_nonce",
    "temporarily_unavailable",
];

/// An answer, as the properties look at it.
#[derive(Debug)]
struct Answer {
    status: u16,
    location: Option<String>,
    body: String,
}

/// A request the properties send: method, path and raw query, headers, body.
#[derive(Debug, Clone)]
struct Req {
    method: reqwest::Method,
    path: String,
    query: Option<String>,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Option<Vec<u8>>,
}

/// Send `r`; `None` when the client cannot make such a request at all (a URL longer than
/// HTTP allows, say): that is no question for the server.
async fn send(app: &TestApp, client: &reqwest::Client, r: Req) -> Option<Answer> {
    let mut url = app.url(&r.path);
    if let Some(q) = &r.query {
        url.push('?');
        url.push_str(q);
    }
    let mut headers = HeaderMap::new();
    for (k, v) in r.headers {
        headers.append(k, v);
    }
    let mut req = client.request(r.method, &url).headers(headers);
    if let Some(b) = r.body {
        req = req.body(b);
    }
    let res = match req.send().await {
        Ok(res) => res,
        Err(e) if e.is_builder() => return None,
        Err(e) => panic!("the server did not answer: {e}"),
    };
    let status = res.status().as_u16();
    let location = res
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = res.text().await.unwrap_or_default();
    Some(Answer {
        status,
        location,
        body,
    })
}

/// The errors an answer carries: a JSON body's, and a redirect's query.
fn errors(a: &Answer) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    if let Ok(Value::Object(body)) = serde_json::from_str::<Value>(&a.body)
        && let Some(e) = body.get("error")
    {
        out.push((
            e.as_str().unwrap_or("(not a string)").to_string(),
            body.get("error_description")
                .map(|d| d.as_str().unwrap_or("(not a string)").to_string()),
        ));
    }
    if let Some(url) = a.location.as_deref().and_then(|l| url::Url::parse(l).ok()) {
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        if let Some((_, e)) = pairs.iter().find(|(k, _)| k == "error") {
            let d = pairs
                .iter()
                .find(|(k, _)| k == "error_description")
                .map(|(_, v)| v.clone());
            out.push((e.clone(), d));
        }
    }
    out
}

/// The `error_description`s with characters RFC 6749 §5.2 does not allow, with the requests
/// that got them: collected by every property of a test, asserted when all have run (so a
/// description does not keep the later properties from looking for 5xx answers).
#[derive(Default)]
struct Findings(Mutex<Vec<String>>);

impl Findings {
    fn assert_none(self) {
        let bad = self.0.into_inner().unwrap_or_default();
        assert!(
            bad.is_empty(),
            "{} error_description(s) with characters RFC 6749 §5.2 does not allow:\n{}",
            bad.len(),
            bad.join("\n")
        );
    }
}

/// Run `config().cases` requests made by `strategy()` and sent by `send`: none may answer 5xx
/// (shrunk at once) and every error must carry an RFC code; descriptions outside RFC 6749's
/// characters go to `found`.
async fn property<M, S, F, Fut>(found: &Findings, what: &str, strategy: M, send: F)
where
    M: FnOnce() -> S + Send,
    S: Strategy,
    S::Value: Debug,
    F: Fn(S::Value) -> Fut + Sync,
    Fut: Future<Output = Option<Answer>>,
{
    let handle = tokio::runtime::Handle::current();
    let (send, handle, bad) = (&send, &handle, &found.0);
    let run = move || {
        let strategy = strategy();
        let mut runner = TestRunner::new(config());
        runner
            .run(&strategy, |input| {
                let shown = format!("{input:?}");
                let Some(a) = handle.block_on(send(input)) else {
                    return Ok(());
                };
                prop_assert!(a.status < 500, "{} answered {}: {}", what, a.status, a.body);
                for (code, description) in errors(&a) {
                    prop_assert!(
                        RFC_CODES.contains(&code.as_str()),
                        "{} answered error {:?}",
                        what,
                        code
                    );
                    if let Some(d) = description
                        && !rfc6749_description_ok(&d)
                    {
                        let shown: String = shown.chars().take(600).collect();
                        if let Ok(mut bad) = bad.lock() {
                            bad.push(format!("{what}: {code}: {d:?}\n    for {shown}"));
                        }
                    }
                }
                Ok::<(), TestCaseError>(())
            })
            .map_err(|e| e.to_string())
    };
    // Unoptimised, the strategies' nested generics need more stack than a test thread has.
    let result = tokio::task::block_in_place(|| {
        std::thread::scope(|s| {
            std::thread::Builder::new()
                .stack_size(64 << 20)
                .spawn_scoped(s, run)
                .expect("a thread")
                .join()
        })
    });
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{what}: {e}"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

// ---------------------------------------------------------------------------------------
// Inputs shared by the endpoints.

fn header(name: &'static str) -> HeaderName {
    HeaderName::from_static(name)
}

/// Any value a header can carry.
fn header_value() -> impl Strategy<Value = HeaderValue> {
    prop_oneof![nasty_bytes(), compact_jws().prop_map(String::into_bytes),]
        .prop_filter_map("not a header value", |b| HeaderValue::from_bytes(&b).ok())
}

/// A parameter value: one of `known` (so requests get past the first checks), or anything.
fn value(known: Vec<String>) -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(known),
        2 => nasty_string(),
        1 => compact_jws(),
        1 => uri_like(),
    ]
}

/// Up to eight parameters named from `names` (or anything) with values from `known`.
fn pairs(
    names: &'static [&'static str],
    known: Vec<String>,
) -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop_oneof![
        6 => proptest::sample::select(names).prop_map(str::to_string),
        1 => nasty_string(),
    ];
    proptest::collection::vec((name, value(known)), 0..8)
}

/// Parameters form-encoded, or written raw (unescaped, broken `%`-escapes), or bytes.
fn encoded(pairs: impl Strategy<Value = Vec<(String, String)>>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        5 => pairs.prop_map(|p| serde_urlencoded::to_string(p).unwrap_or_default().into_bytes()),
        1 => proptest::collection::vec((nasty_string(), nasty_string()), 0..6).prop_map(|p| {
            p.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&").into_bytes()
        }),
        1 => nasty_bytes(),
    ]
}

/// A `Content-Type`: usually the form type (so the body is read), sometimes another.
fn form_content_type() -> impl Strategy<Value = Option<HeaderValue>> {
    prop_oneof![
        6 => Just(Some(HeaderValue::from_static("application/x-www-form-urlencoded"))),
        1 => Just(Some(HeaderValue::from_static("application/x-www-form-urlencoded; charset=ISO-8859-1"))),
        1 => Just(Some(HeaderValue::from_static("application/json"))),
        1 => Just(None),
        1 => header_value().prop_map(Some),
    ]
}

/// An `Authorization` header: HTTP Basic with the real client's credentials, Basic of
/// anything, a bearer or DPoP token of any shape, or any value.
fn authorization(basic: Option<(String, String)>) -> impl Strategy<Value = Option<HeaderValue>> {
    use base64::Engine as _;
    let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
    let real = basic
        .map(|(id, secret)| format!("Basic {}", b64(format!("{id}:{secret}"))))
        .unwrap_or_else(|| "Basic Og==".into());
    prop_oneof![
        3 => Just(None),
        2 => Just(HeaderValue::from_str(&real).ok()),
        1 => (nasty_string(), nasty_string())
            .prop_map(move |(i, s)| HeaderValue::from_str(&format!("Basic {}", b64(format!("{i}:{s}")))).ok()),
        1 => ("(?i)(bearer|dpop|basic) {0,2}", compact_jws())
            .prop_map(|(s, t)| HeaderValue::from_str(&format!("{s}{t}")).ok()),
        1 => header_value().prop_map(Some),
    ]
}

/// Extra headers: `DPoP` proofs of any shape, `Content-Length`-free oddities.
fn extra_headers() -> impl Strategy<Value = Vec<(HeaderName, HeaderValue)>> {
    let name = proptest::sample::select(vec![
        header("dpop"),
        header("dpop"),
        header("cookie"),
        header("x-forwarded-for"),
        header("accept"),
        header("origin"),
    ]);
    proptest::collection::vec((name, header_value()), 0..3)
}

/// A form POST to `path`: body, content type, `Authorization` and other headers.
fn form_post(
    path: &'static str,
    body: impl Strategy<Value = Vec<u8>>,
    basic: Option<(String, String)>,
) -> impl Strategy<Value = Req> {
    (
        body,
        form_content_type(),
        authorization(basic),
        extra_headers(),
    )
        .prop_map(move |(body, ct, auth, extra)| {
            let mut headers = extra;
            if let Some(ct) = ct {
                headers.push((reqwest::header::CONTENT_TYPE, ct));
            }
            if let Some(a) = auth {
                headers.push((reqwest::header::AUTHORIZATION, a));
            }
            Req {
                method: reqwest::Method::POST,
                path: path.into(),
                query: None,
                headers,
                body: Some(body),
            }
        })
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|s| s.to_string()).collect()
}

/// What every server under test has: the tools resource, a user, an operator's machine
/// client, and no registration rate limit (so long campaigns go deep).
fn setup(b: TestAppBuilder<'_>) -> TestAppBuilder<'_> {
    b.with_resource(
        TOOLS_RESOURCE,
        "Tools",
        &["tools:read=Read", "tools:write=Write"],
    )
    .with_user("alice", "correct horse battery staple")
    .with_machine_client("fuzzer", Some("tools:read"))
    .configure(|c| {
        c.registration.rate_limit_max = u32::MAX;
    })
}

/// An access token of the machine client for the tools resource.
async fn access_token(app: &TestApp) -> String {
    let m = &app.machine_clients[0];
    let res = app
        .http
        .post(app.url("/token"))
        .basic_auth(&m.client_id, Some(&m.secret))
        .form(&[
            ("grant_type", "client_credentials"),
            ("resource", TOOLS_RESOURCE),
        ])
        .send()
        .await
        .expect("token");
    res.json::<Value>().await.expect("json")["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The known values of the token endpoint's parameters: grant and token types, the machine
/// client's credentials, a real access token, the resource and its scopes.
async fn token_values(app: &TestApp) -> Vec<String> {
    let m = &app.machine_clients[0];
    let mut known = strings(&[
        "authorization_code",
        "refresh_token",
        "client_credentials",
        "urn:ietf:params:oauth:grant-type:token-exchange",
        "urn:ietf:params:oauth:grant-type:jwt-bearer",
        "urn:ietf:params:oauth:grant-type:device_code",
        "urn:ietf:params:oauth:token-type:access_token",
        "urn:ietf:params:oauth:token-type:id_token",
        "urn:ietf:params:oauth:token-type:id-jag",
        "urn:ietf:params:oauth:token-type:refresh_token",
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        TOOLS_RESOURCE,
        "tools:read",
        "tools:read tools:write openid",
        "access_token",
        "refresh_token",
        "http://127.0.0.1:9/cb",
    ]);
    known.push(m.client_id.clone());
    known.push(m.secret.clone());
    known.push(access_token(app).await);
    known.push(app.issuer.clone());
    known
}

// ---------------------------------------------------------------------------------------
// The endpoints.

const TOKEN_PARAMS: &[&str] = &[
    "grant_type",
    "client_id",
    "client_secret",
    "code",
    "code_verifier",
    "redirect_uri",
    "refresh_token",
    "scope",
    "resource",
    "audience",
    "subject_token",
    "subject_token_type",
    "actor_token",
    "actor_token_type",
    "requested_token_type",
    "assertion",
    "client_assertion",
    "client_assertion_type",
    "device_code",
];

both!(token, builder setup, |app: TestApp| async move {
    let found = Findings::default();
    let m = app.machine_clients[0].clone();
    let known = token_values(&app).await;
    let strategy = move || form_post(
        "/token",
        encoded(pairs(TOKEN_PARAMS, known)),
        Some((m.client_id, m.secret)),
    );
    property(&found, "POST /token", strategy, |r| send(&app, &app.http, r)).await;
    found.assert_none();
    app
});

both!(introspect_and_revoke, builder setup, |app: TestApp| async move {
    let found = Findings::default();
    let m = app.machine_clients[0].clone();
    let known = token_values(&app).await;
    let params = &[
        "token",
        "token_type_hint",
        "client_id",
        "client_secret",
        "client_assertion",
        "client_assertion_type",
    ];
    for path in ["/introspect", "/revoke"] {
        let (known, m) = (known.clone(), m.clone());
        let strategy = move || form_post(
            path,
            encoded(pairs(params, known)),
            Some((m.client_id, m.secret)),
        );
        property(&found, &format!("POST {path}"), strategy, |r| send(&app, &app.http, r)).await;
    }
    found.assert_none();
    app
});

both!(device_authorization, builder setup, |app: TestApp| async move {
    let found = Findings::default();
    let (device_client, _) = app
        .add_client(concierge::oauth::client_metadata::RawClientMetadata {
            grant_types: Some(vec!["urn:ietf:params:oauth:grant-type:device_code".into()]),
            token_endpoint_auth_method: Some("none".into()),
            ..Default::default()
        })
        .await;
    let m = app.machine_clients[0].clone();
    let mut known = token_values(&app).await;
    known.push(device_client);
    let params = &["client_id", "client_secret", "scope", "resource", "client_assertion", "client_assertion_type"];
    let strategy = move || form_post(
        "/device_authorization",
        encoded(pairs(params, known)),
        Some((m.client_id, m.secret)),
    );
    property(&found, "POST /device_authorization", strategy, |r| send(&app, &app.http, r)).await;
    found.assert_none();
    app
});

/// Registration bodies: client metadata of every shape, and anything else.
fn registration_body() -> impl Strategy<Value = Vec<u8>> {
    let field = |plausible: Vec<Value>| {
        proptest::option::weighted(
            0.4,
            prop_oneof![
                3 => proptest::sample::select(plausible),
                1 => json_value(),
                1 => nasty_string().prop_map(Value::from),
                1 => proptest::collection::vec(uri_like(), 0..3).prop_map(Value::from),
            ],
        )
    };
    let object = (
        field(vec![
            json!(["http://127.0.0.1/cb"]),
            json!(["https://app.example/cb"]),
            json!([]),
        ]),
        field(vec![
            json!("none"),
            json!("client_secret_basic"),
            json!("private_key_jwt"),
        ]),
        field(vec![
            json!(["authorization_code", "refresh_token"]),
            json!(["client_credentials"]),
        ]),
        field(vec![json!(["code"])]),
        field(vec![json!("Agent"), json!("https://app.example")]),
        field(vec![json!("tools:read"), json!("openid")]),
        field(vec![json!({"keys": []}), json!("https://app.example/jwks")]),
        proptest::collection::btree_map(nasty_string(), json_value(), 0..3),
    )
        .prop_map(|(r, auth, grants, responses, name, scope, keys, extra)| {
            let mut m: serde_json::Map<String, Value> = extra.into_iter().collect();
            for (k, v) in [
                ("redirect_uris", r),
                ("token_endpoint_auth_method", auth),
                ("grant_types", grants),
                ("response_types", responses),
                ("client_name", name.clone()),
                ("client_uri", name),
                ("scope", scope),
                ("jwks", keys),
            ] {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            Value::Object(m).to_string().into_bytes()
        });
    prop_oneof![
        5 => object,
        1 => json_text_edge().prop_map(String::into_bytes),
        1 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => nasty_bytes(),
    ]
}

both!(register, builder setup, |app: TestApp| async move {
    let found = Findings::default();
    let content_type = || prop_oneof![
        6 => Just(Some(HeaderValue::from_static("application/json"))),
        1 => Just(Some(HeaderValue::from_static("application/json; charset=utf-16"))),
        1 => Just(None),
        1 => header_value().prop_map(Some),
    ];
    let strategy = move || (registration_body(), content_type(), authorization(None)).prop_map(
        |(body, ct, auth)| {
            let mut headers = Vec::new();
            if let Some(ct) = ct {
                headers.push((reqwest::header::CONTENT_TYPE, ct));
            }
            if let Some(a) = auth {
                headers.push((reqwest::header::AUTHORIZATION, a));
            }
            Req { method: reqwest::Method::POST, path: "/register".into(), query: None, headers, body: Some(body) }
        },
    );
    property(&found, "POST /register", strategy, |r| send(&app, &app.http, r)).await;
    // RFC 7592: any client id in the path, any registration access token.
    let strategy = || (
        proptest::sample::select(vec![reqwest::Method::GET, reqwest::Method::PUT, reqwest::Method::DELETE]),
        nasty_string(),
        authorization(None),
        registration_body(),
    )
        .prop_map(|(method, id, auth, body)| {
            let mut headers = vec![(reqwest::header::CONTENT_TYPE, HeaderValue::from_static("application/json"))];
            if let Some(a) = auth {
                headers.push((reqwest::header::AUTHORIZATION, a));
            }
            let id: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
            Req { method, path: format!("/register/{id}"), query: None, headers, body: Some(body) }
        });
    property(&found, "/register/{client_id}", strategy, |r| send(&app, &app.http, r)).await;
    found.assert_none();
    app
});

const AUTHORIZE_PARAMS: &[&str] = &[
    "client_id",
    "redirect_uri",
    "response_type",
    "response_mode",
    "code_challenge",
    "code_challenge_method",
    "scope",
    "resource",
    "state",
    "nonce",
    "prompt",
    "max_age",
    "login_hint",
    "dpop_jkt",
    "request",
    "request_uri",
];

/// Query strings of authorization requests: encoded, raw, or bytes made text.
fn query(pairs: impl Strategy<Value = Vec<(String, String)>>) -> impl Strategy<Value = String> {
    encoded(pairs).prop_map(|b| String::from_utf8_lossy(&b).into_owned())
}

both!(authorize, builder setup, |app: TestApp| async move {
    let found = Findings::default();
    // An operator's client (errors may go back to it) and a self-registered one (they may
    // not, before sign-in): both with the same loopback redirect URI.
    let (operator_client, _) = app
        .add_client(concierge::oauth::client_metadata::RawClientMetadata {
            redirect_uris: Some(vec!["http://127.0.0.1:9/cb".into()]),
            token_endpoint_auth_method: Some("none".into()),
            ..Default::default()
        })
        .await;
    let (_, _, registered) = app
        .register(&json!({"redirect_uris": ["http://127.0.0.1:9/cb"], "token_endpoint_auth_method": "none"}))
        .await;
    let mut known = strings(&[
        "http://127.0.0.1:9/cb",
        "http://127.0.0.1:4242/cb",
        "code",
        "token",
        "query",
        "fragment",
        "S256",
        "plain",
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        TOOLS_RESOURCE,
        "tools:read",
        "openid profile email offline_access tools:read",
        "none",
        "login consent",
        "none login",
        "0",
        "-1",
        "99999999999999999999",
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs",
    ]);
    known.push(operator_client);
    known.push(registered["client_id"].as_str().unwrap_or_default().to_string());
    let known_too = known.clone();
    let get = move || (query(pairs(AUTHORIZE_PARAMS, known_too)), extra_headers()).prop_map(|(q, headers)| Req {
        method: reqwest::Method::GET,
        path: "/authorize".into(),
        query: Some(q),
        headers,
        body: None,
    });
    property(&found, "GET /authorize", get, |r| send(&app, &app.http, r)).await;
    let post = move || form_post("/authorize", encoded(pairs(AUTHORIZE_PARAMS, known)), None);
    property(&found, "POST /authorize", post, |r| send(&app, &app.http, r)).await;
    // The steps after: a sealed request of any text, a decision without a session.
    let steps = || (
        proptest::sample::select(vec!["/authorize/continue", "/authorize/decision"]),
        compact_jws(),
        nasty_bytes(),
        extra_headers(),
    )
        .prop_map(|(path, request, body, headers)| {
            let q: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("request", &request)
                .finish();
            let post = path.ends_with("decision");
            Req {
                method: if post { reqwest::Method::POST } else { reqwest::Method::GET },
                path: path.into(),
                query: (!post).then_some(q),
                headers,
                body: post.then_some(body),
            }
        });
    property(&found, "/authorize/continue and /decision", steps, |r| send(&app, &app.http, r)).await;
    found.assert_none();
    app
});

both!(userinfo, builder setup, |app: TestApp| async move {
    let found = Findings::default();
    let known = token_values(&app).await;
    let access_token = access_token(&app).await;
    let auth = move || prop_oneof![
        3 => authorization(None),
        2 => ("(?i)(bearer|dpop)", proptest::sample::select(vec![access_token]))
            .prop_map(|(s, t)| HeaderValue::from_str(&format!("{s} {t}")).ok()),
    ];
    let strategy = move || (
        proptest::sample::select(vec![reqwest::Method::GET, reqwest::Method::POST]),
        auth(),
        extra_headers(),
        encoded(pairs(&["access_token", "scope"], known)),
        form_content_type(),
    )
        .prop_map(|(method, auth, extra, body, ct)| {
            let mut headers = extra;
            if let Some(a) = auth {
                headers.push((reqwest::header::AUTHORIZATION, a));
            }
            if let Some(ct) = ct {
                headers.push((reqwest::header::CONTENT_TYPE, ct));
            }
            let post = method == reqwest::Method::POST;
            Req { method, path: "/userinfo".into(), query: None, headers, body: post.then_some(body) }
        });
    property(&found, "/userinfo", strategy, |r| send(&app, &app.http, r)).await;
    found.assert_none();
    app
});

/// A browser: a cookie jar, and the anti-forgery token of the sign-in page.
async fn browser(app: &TestApp) -> (reqwest::Client, String) {
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let page = client
        .get(app.url("/signin"))
        .send()
        .await
        .expect("sign-in page")
        .text()
        .await
        .expect("page");
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page has an anti-forgery token")
        .to_string();
    (client, csrf)
}

both!(signin, builder setup, |app: TestApp| async move {
    let found = Findings::default();
    let (client, csrf) = browser(&app).await;
    let return_to = app.url("/account/apps");
    let return_path = url::Url::parse(&return_to).map(|u| u.path().to_string()).unwrap_or_default();
    let known = vec![
        csrf,
        "alice".to_string(),
        "correct horse battery staple".to_string(),
        return_path,
        "//evil.example/".to_string(),
    ];
    let params: &[&str] = &["csrf", "username", "password", "return_to", "login_hint"];
    let known_too = known.clone();
    let get = move || query(pairs(params, known_too)).prop_map(|q| Req {
        method: reqwest::Method::GET,
        path: "/signin".into(),
        query: Some(q),
        headers: Vec::new(),
        body: None,
    });
    property(&found, "GET /signin", get, |r| send(&app, &client, r)).await;
    let post = move || form_post("/signin", encoded(pairs(params, known)), None);
    property(&found, "POST /signin", post, |r| send(&app, &client, r)).await;
    found.assert_none();
    app
});

both!(device, builder setup, |app: TestApp| async move {
    let found = Findings::default();
    // A signed-in browser, so that codes are looked up.
    let (client, csrf) = browser(&app).await;
    let res = client
        .post(app.url("/signin"))
        .form(&[("csrf", csrf.as_str()), ("username", "alice"), ("password", "correct horse battery staple")])
        .send()
        .await
        .expect("sign in");
    assert_eq!(res.status().as_u16(), 303, "signed in");
    let known = vec![
        csrf,
        "BCDF-GHJK".to_string(),
        "bcdfghjk".to_string(),
        "approve".to_string(),
        "deny".to_string(),
    ];
    let params: &[&str] = &["csrf", "user_code", "decision"];
    let known_too = known.clone();
    let get = move || query(pairs(params, known_too)).prop_map(|q| Req {
        method: reqwest::Method::GET,
        path: "/device".into(),
        query: Some(q),
        headers: Vec::new(),
        body: None,
    });
    property(&found, "GET /device", get, |r| send(&app, &client, r)).await;
    let post = move || (
        proptest::sample::select(vec!["/device", "/device/decision"]),
        encoded(pairs(params, known)),
        form_content_type(),
    )
        .prop_map(|(path, body, ct)| Req {
            method: reqwest::Method::POST,
            path: path.into(),
            query: None,
            headers: ct.map(|ct| vec![(reqwest::header::CONTENT_TYPE, ct)]).unwrap_or_default(),
            body: Some(body),
        });
    property(&found, "POST /device and /device/decision", post, |r| send(&app, &client, r)).await;
    found.assert_none();
    app
});

// A NUL in a client_id or a username names nobody: PostgreSQL's TEXT cannot hold one, and a
// lookup with one used to fail there with a 500 (found by the properties above).
both!(nul_in_a_name_is_unknown_not_a_server_error, builder setup, |app: TestApp| async move {
    let h = &app.http;
    let token = |req: reqwest::RequestBuilder| async move {
        req.form(&[("grant_type", "client_credentials")]).send().await.expect("request").status().as_u16()
    };
    assert_eq!(token(h.post(app.url("/token")).basic_auth("\0", Some("x"))).await, 401, "Basic");
    let body = h.post(app.url("/token")).form(&[
        ("grant_type", "client_credentials"),
        ("client_id", "a\0"),
        ("client_secret", "x"),
    ]);
    assert_eq!(body.send().await.expect("request").status().as_u16(), 401, "client_secret_post");
    let page = h.get(app.url("/authorize?client_id=%00&response_type=code")).send().await.expect("request");
    assert_eq!(page.status().as_u16(), 400, "authorization request");
    let read = h.get(app.url("/register/%00")).bearer_auth("x").send().await.expect("request");
    assert_eq!(read.status().as_u16(), 401, "RFC 7592 read");
    let (client, csrf) = browser(&app).await;
    let signin = client
        .post(app.url("/signin"))
        .form(&[("csrf", csrf.as_str()), ("username", "alice\0"), ("password", "correct horse battery staple")])
        .send()
        .await
        .expect("request");
    assert_eq!(signin.status().as_u16(), 401, "sign-in");
    app
});
