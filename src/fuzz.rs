//! Test support for the property tests (`proptest`) of the parsers that read network input:
//! one configuration for all of them and the adversarial inputs they share. The properties
//! themselves live next to each parser, in a `fuzz` module of its tests, so
//! `cargo test --workspace fuzz` runs them all (README: "Fuzzing").

use proptest::prelude::*;
use proptest::test_runner::Config;

/// Cases per property when `PROPTEST_CASES` is not set: enough to catch the obvious in the
/// normal test command, small enough to keep it fast. Longer campaigns set the variable.
pub const DEFAULT_CASES: u32 = 64;

/// The configuration of every unit-level property: [`DEFAULT_CASES`] unless `PROPTEST_CASES`
/// says otherwise, and no failure persistence (nothing is written into the source tree; a
/// failure prints its shrunk input, which then becomes an ordinary regression test).
pub fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Pieces that have broken parsers before: escapes, separators, quotes, control and
/// non-ASCII characters, URL syntax.
const PIECES: &[&str] = &[
    "",
    " ",
    "  ",
    "\t",
    "\r\n",
    "\0",
    "\u{7f}",
    "\u{1b}",
    "%",
    "%0",
    "%00",
    "%zz",
    "%25",
    "%E9",
    "%C3%A9",
    "%FF",
    "%2B",
    "+",
    "&",
    "=",
    ";",
    ",",
    ":",
    "#",
    "?",
    "/",
    "//",
    "\\",
    "\"",
    "'",
    "<",
    ">",
    "..",
    ".",
    "@",
    "*",
    "[",
    "]",
    "{",
    "}",
    "[::1]",
    "é",
    "\u{202e}",
    "\u{feff}",
    "\u{10ffff}",
    "💥",
    "ǅ",
    "ﬃ",
    "https://",
    "http://",
    "http://localhost",
    "127.0.0.1",
    ":443",
    ":0",
    ":99999",
    "a",
    "Z",
    "0",
    "-1",
    "1e999",
    "9223372036854775808",
    "null",
    "true",
    "eyJ",
    "e30",
    "AAAA",
    "Basic ",
    "Bearer ",
    "DPoP ",
];

/// A string made of [`PIECES`] and arbitrary characters.
pub fn pieces() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            3 => proptest::sample::select(PIECES).prop_map(str::to_string),
            1 => any::<char>().prop_map(String::from),
            1 => "[a-zA-Z0-9_.~-]{1,12}",
        ],
        0..24,
    )
    .prop_map(|v| v.concat())
}

/// Adversarial text: arbitrary Unicode, control characters, `%`-escapes, long runs.
pub fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => pieces(),
        2 => any::<String>(),
        1 => "[\\x00-\\x7f]{0,64}",
        1 => (proptest::sample::select(PIECES), 1000usize..10_000)
            .prop_map(|(p, n)| p.repeat(n.max(1) / p.len().max(1))),
        1 => proptest::collection::vec(any::<char>(), 1000..3000)
            .prop_map(|v| v.into_iter().collect()),
    ]
}

/// Arbitrary bytes, or the bytes of [`nasty_string`].
pub fn nasty_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        nasty_string().prop_map(String::into_bytes),
    ]
}

/// JSON values of every type, nested a few levels, with adversarial strings and numbers.
pub fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        nasty_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(nasty_string(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// JSON text no value can hold: nesting far past any recursion limit, numbers out of every
/// range, truncations, duplicate keys.
pub fn json_text_edge() -> impl Strategy<Value = String> {
    prop_oneof![
        (1usize..20_000).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n))),
        (1usize..20_000).prop_map(|n| "{\"a\":".repeat(n) + "1" + &"}".repeat(n)),
        (1usize..20_000).prop_map(|n| "[".repeat(n)),
        Just("1e999".to_string()),
        Just("-1e999".to_string()),
        Just("123456789012345678901234567890123456789".to_string()),
        Just("{\"a\":1,\"a\":2}".to_string()),
        Just("{\"a\":\"\\ud800\"}".to_string()),
        Just("{\"a\":\"\\u0000\"}".to_string()),
        Just("{".to_string()),
        Just("".to_string()),
    ]
}

/// The characters RFC 6749 §5.2 allows in `error_description`:
/// `%x20-21 / %x23-5B / %x5D-7E` (no `"`, no `\`, nothing outside printable ASCII).
/// (Used by `tests/api/fuzz.rs`, which includes this file.)
#[allow(dead_code)]
pub fn rfc6749_description_ok(s: &str) -> bool {
    s.bytes()
        .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E))
}

/// base64url without padding, as JOSE writes it.
pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `alg` values: the accepted ones, the forbidden ones, and junk.
pub fn alg_name() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        4 => proptest::sample::select(
            &[
                "ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                "EdDSA", "none", "None", "HS256", "HS512", "es256", "",
            ][..]
        )
        .prop_map(serde_json::Value::from),
        1 => json_value(),
    ]
}

/// A JOSE header: `alg`, `typ`, `kid`, `jwk`, `crit`, each present or not, of any type.
pub fn jose_header() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let typ = prop_oneof![
        proptest::sample::select(
            &[
                "JWT",
                "at+jwt",
                "dpop+jwt",
                "DPoP+JWT",
                "oauth-id-jag+jwt",
                "application/oauth-id-jag+jwt",
                "application/at+jwt",
            ][..]
        )
        .prop_map(Value::from),
        json_value(),
    ];
    (
        proptest::option::of(alg_name()),
        proptest::option::of(typ),
        proptest::option::of(json_value()),
        proptest::option::of(json_value()),
        proptest::option::of(json_value()),
    )
        .prop_map(|(alg, typ, kid, jwk, crit)| {
            let mut h = serde_json::Map::new();
            for (name, v) in [
                ("alg", alg),
                ("typ", typ),
                ("kid", kid),
                ("jwk", jwk),
                ("crit", crit),
            ] {
                if let Some(v) = v {
                    h.insert(name.into(), v);
                }
            }
            Value::Object(h)
        })
}

/// One part of a compact JWS: base64url of JSON (a header, or anything), of arbitrary
/// bytes, or text that is not base64url at all.
pub fn jws_part() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => jose_header().prop_map(|v| b64(v.to_string().as_bytes())),
        2 => json_value().prop_map(|v| b64(v.to_string().as_bytes())),
        1 => json_text_edge().prop_map(|t| b64(t.as_bytes())),
        1 => nasty_bytes().prop_map(|b| b64(&b)),
        1 => nasty_string(),
        1 => Just(String::new()),
    ]
}

/// Compact-JWS-shaped text: three parts usually, sometimes fewer or more, sometimes none.
pub fn compact_jws() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (jws_part(), jws_part(), jws_part()).prop_map(|(h, p, s)| format!("{h}.{p}.{s}")),
        1 => proptest::collection::vec(jws_part(), 0..6).prop_map(|v| v.join(".")),
        1 => nasty_string(),
    ]
}

/// A JWT claim for a token made at `now`: usually `good` (so that the other claims' checks
/// are reached too), else absent, of a wrong type or a number out of range.
pub fn claim(
    good: serde_json::Value,
    now: i64,
) -> impl Strategy<Value = Option<serde_json::Value>> {
    use serde_json::Value;
    prop_oneof![
        6 => Just(Some(good)),
        1 => Just(None),
        1 => json_value().prop_map(Some),
        1 => proptest::sample::select(
            vec![
                Value::from(i64::MIN), Value::from(i64::MAX), Value::from(u64::MAX),
                Value::from(-1), Value::from(0), Value::from(1e300), Value::from(-1e300),
                Value::from(now as f64 + 0.5), Value::from(now.to_string()),
                Value::from(now - 100_000), Value::from(now + 100_000),
            ]
        )
        .prop_map(Some),
    ]
}

/// An object of the claims given, each drawn by [`claim`], and perhaps more.
pub fn claims(
    good: Vec<(&'static str, serde_json::Value)>,
    now: i64,
) -> impl Strategy<Value = serde_json::Value> {
    let parts: Vec<_> = good
        .into_iter()
        .map(|(name, v)| claim(v, now).prop_map(move |v| (name, v)))
        .collect();
    (
        parts,
        proptest::collection::btree_map("[a-z_]{1,8}", json_value(), 0..3),
    )
        .prop_map(|(parts, extra)| {
            let mut m: serde_json::Map<String, serde_json::Value> = extra.into_iter().collect();
            for (name, v) in parts {
                match v {
                    Some(v) => m.insert(name.into(), v),
                    None => m.remove(name),
                };
            }
            serde_json::Value::Object(m)
        })
}

/// A fresh P-256 key for ES256: the signing key and its public JWK, named `kid`.
pub fn es256_key(kid: &str) -> (jsonwebtoken::EncodingKey, jsonwebtoken::jwk::Jwk) {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("a P-256 key");
    let der = pair.to_pkcs8v1().expect("its PKCS#8 document");
    let key = jsonwebtoken::EncodingKey::from_ec_der(der.as_ref());
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, jsonwebtoken::Algorithm::ES256)
        .expect("the public JWK");
    jwk.common.key_id = Some(kid.into());
    (key, jwk)
}

/// Sign `claims` with `key` under `header` (whatever it says).
pub fn sign(
    key: &jsonwebtoken::EncodingKey,
    header: &jsonwebtoken::Header,
    claims: &serde_json::Value,
) -> String {
    jsonwebtoken::encode(header, claims, key).expect("sign")
}

/// URI-shaped text: schemes safe and forbidden, user information, hosts of every spelling
/// (loopback, IDN, IP literals), ports in and out of range, dot segments, escapes, queries
/// and fragments; sometimes arbitrary text.
pub fn uri_like() -> impl Strategy<Value = String> {
    use proptest::sample::select;
    let scheme = select(
        &[
            "https",
            "http",
            "HTTPS",
            "hTTp",
            "com.example.app",
            "cursor",
            "javascript",
            "data",
            "file",
            "urn",
            "ftp",
            "ws",
            "",
        ][..],
    );
    let sep = select(&["://", ":", ":/", ":///", "//", ""][..]);
    let userinfo = proptest::option::weighted(0.1, select(&["user@", "user:pw@", ":@", "@"][..]));
    let host = prop_oneof![
        3 => select(
            &[
                "localhost", "LOCALHOST", "127.0.0.1", "127.1", "[::1]", "[::ffff:127.0.0.1]",
                "app.example", "APP.Example.com", "xn--caf-dma.example", "café.example",
                "0x7f.0.0.1", "2130706433", "localhost.evil.example", "", "a..b", "%61pp.example",
                "[fe80::1%25eth0]", "[::1", "mcp.example.com.",
            ][..]
        )
        .prop_map(str::to_string),
        1 => "[a-z0-9.-]{1,20}",
    ];
    let port = proptest::option::of(select(
        &[
            ":443", ":80", ":0", ":65535", ":65536", ":8080", ":", ":x", ":-1",
        ][..],
    ));
    let path = proptest::collection::vec(
        select(
            &[
                "", "cb", "..", ".", "%2e%2E", "%00", "a b", "é", "callback", "mcp", ";x", "\\",
                "\t", "\0",
            ][..],
        ),
        0..5,
    )
    .prop_map(|segments| segments.iter().map(|s| format!("/{s}")).collect::<String>());
    let query = proptest::option::weighted(0.3, pieces());
    let fragment = proptest::option::weighted(0.1, pieces());
    let structured = (scheme, sep, userinfo, host, port, path, query, fragment).prop_map(
        |(scheme, sep, userinfo, host, port, path, query, fragment)| {
            let mut s = format!(
                "{scheme}{sep}{}{host}{}{path}",
                userinfo.unwrap_or(""),
                port.unwrap_or("")
            );
            if let Some(q) = query {
                s.push('?');
                s.push_str(&q);
            }
            if let Some(f) = fragment {
                s.push('#');
                s.push_str(&f);
            }
            s
        },
    );
    prop_oneof![6 => structured, 1 => nasty_string()]
}
