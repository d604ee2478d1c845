//! Token validation cost: a cached result, a full check (signature + claims),
//! a DPoP proof's verification (RFC 9449 §4.3: header, key, signature, method,
//! URL, time and `ath`), and the bare ES256 signature verification as the floor.
//!
//! `cargo bench -p concierge-guard --bench validate`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use concierge_guard::test::{TestIssuer, TestKey};
use concierge_guard::{Guard, dpop};
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde_json::{Value, json};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let resource = "https://mcp.example.com/mcp";
    let issuer = TestIssuer::new();
    let (cached, uncached) = rt.block_on(async {
        let cached = Guard::builder(&issuer, resource).build().await.unwrap();
        let uncached = Guard::builder(&issuer, resource)
            .cache_size(0)
            .build()
            .await
            .unwrap();
        (cached, uncached)
    });
    let token = issuer
        .token(resource)
        .subject("user-1")
        .client_id("client-1")
        .scopes(["notes:read", "notes:write"])
        .expires_in(std::time::Duration::from_secs(3600))
        .sign();
    let mut group = c.benchmark_group("validate");
    group.bench_function("cached", |b| {
        b.to_async(&rt)
            .iter(|| async { cached.validate(&token).await.unwrap() });
    });
    group.bench_function("uncached", |b| {
        b.to_async(&rt)
            .iter(|| async { uncached.validate(&token).await.unwrap() });
    });
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(issuer.key().jwk().clone()).unwrap();
    let decoding = DecodingKey::from_jwk(&jwk).unwrap();
    let mut validation = Validation::new(Algorithm::ES256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    group.bench_function("bare_es256_decode", |b| {
        b.iter(|| jsonwebtoken::decode::<Value>(&token, &decoding, &validation).unwrap());
    });

    // A client's DPoP proof for one request, bound to the token: what a DPoP-bound request
    // costs on top of the token check (the replay check is a map lookup, left out here).
    let client = TestKey::generate("client");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut header = Header::new(Algorithm::ES256);
    header.typ = Some("dpop+jwt".into());
    header.jwk = Some(serde_json::from_value(client.jwk().clone()).unwrap());
    let claims = json!({"jti": "bench-1", "htm": "POST", "htu": resource, "iat": now,
        "ath": dpop::access_token_hash(&token)});
    let proof = jsonwebtoken::encode(&header, &claims, client.encoding_key()).unwrap();
    group.bench_function("dpop_proof_verify", |b| {
        b.iter(|| {
            let check = dpop::ProofCheck::new("POST", resource, now).access_token(&token);
            dpop::verify(&proof, &check).unwrap()
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
