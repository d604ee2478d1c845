//! Dynamic client registration (RFC 7591) and management (RFC 7592): the parts that are
//! decisions, not I/O. The handler in `endpoints::register` does the I/O around them.

use serde_json::{Map, Value, json};

use crate::store::{ClientKind, ClientMetadata, ClientRecord};
use crate::util;

/// Secrets issued with a registration, shown once and stored only as hashes.
pub struct IssuedSecrets {
    pub client_secret: Option<String>,
    pub registration_access_token: Option<String>,
}

impl std::fmt::Debug for IssuedSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IssuedSecrets(<redacted>)")
    }
}

/// A new client record with fresh credentials. Dynamic clients get a registration access
/// token and expire at `now + unused_ttl` unless they are used; static clients neither.
pub fn new_client(
    metadata: ClientMetadata,
    kind: ClientKind,
    client_id: Option<String>,
    registered_from: Option<String>,
    now: i64,
    unused_ttl: i64,
) -> (ClientRecord, IssuedSecrets) {
    let client_secret = metadata
        .token_endpoint_auth_method
        .uses_secret()
        .then(util::random_secret);
    let registration_access_token = (kind == ClientKind::Dynamic).then(util::random_secret);
    let record = ClientRecord {
        client_id: client_id.unwrap_or_else(util::random_id),
        kind,
        secret_hash: client_secret.as_deref().map(util::secret_hash),
        previous_secret: None,
        metadata,
        registration_token_hash: registration_access_token.as_deref().map(util::secret_hash),
        registered_from,
        created_at: now,
        updated_at: now,
        last_used_at: None,
        expires_at: (kind == ClientKind::Dynamic).then_some(now + unused_ttl),
    };
    (
        record,
        IssuedSecrets {
            client_secret,
            registration_access_token,
        },
    )
}

/// The fingerprint of validated client metadata, by which registration limits tell identical
/// registrations from distinct ones: equal for the same fields with the same values, however
/// the request spelled or ordered them (the JSON of the validated record: fields in
/// declaration order, objects such as `jwks` with sorted keys), hashed (SHA-256, base64url).
pub fn fingerprint(metadata: &ClientMetadata) -> Result<String, serde_json::Error> {
    let canonical = serde_json::to_string(metadata)?;
    Ok(util::b64(&util::secret_hash(&canonical)))
}

/// Apply an RFC 7592 update: new metadata replaces the old. A client that moves to a
/// secret-based method without a secret gets one (returned); one that leaves secrets behind
/// loses its secret.
pub fn apply_update(
    record: &mut ClientRecord,
    metadata: ClientMetadata,
    now: i64,
) -> Option<String> {
    let needs_secret = metadata.token_endpoint_auth_method.uses_secret();
    let mut issued = None;
    if needs_secret && record.secret_hash.is_none() {
        let s = util::random_secret();
        record.secret_hash = Some(util::secret_hash(&s));
        issued = Some(s);
    } else if !needs_secret {
        record.secret_hash = None;
    }
    record.metadata = metadata;
    record.updated_at = now;
    issued
}

/// The client information response (RFC 7591 §3.2.1, RFC 7592 §3).
pub fn client_information(
    record: &ClientRecord,
    client_secret: Option<&str>,
    registration_access_token: Option<&str>,
    issuer: &str,
) -> Value {
    let mut out = match serde_json::to_value(&record.metadata) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    out.insert("client_id".into(), json!(record.client_id));
    out.insert("client_id_issued_at".into(), json!(record.created_at));
    if let Some(s) = client_secret {
        out.insert("client_secret".into(), json!(s));
    }
    if record.secret_hash.is_some() {
        // Our secrets do not expire.
        out.insert("client_secret_expires_at".into(), json!(0));
    }
    if let Some(t) = registration_access_token {
        out.insert("registration_access_token".into(), json!(t));
        out.insert(
            "registration_client_uri".into(),
            json!(format!("{issuer}/register/{}", record.client_id)),
        );
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RegistrationConfig;
    use crate::oauth::client_metadata::{Origin, RawClientMetadata, validate};

    fn metadata(method: &str) -> ClientMetadata {
        let raw = RawClientMetadata::from_json(
            format!(r#"{{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"{method}"}}"#)
                .as_bytes(),
        )
        .expect("json");
        validate(
            raw,
            Origin::Registration(&RegistrationConfig::default()),
            &crate::oauth::grants::GrantRegistry::standard(),
        )
        .expect("valid")
    }

    #[test]
    fn confidential_clients_get_a_hashed_secret() {
        let (rec, s) = new_client(
            metadata("client_secret_basic"),
            ClientKind::Dynamic,
            None,
            None,
            100,
            50,
        );
        let secret = s.client_secret.expect("secret");
        assert!(util::verify_secret(
            &secret,
            rec.secret_hash.as_deref().expect("hash")
        ));
        assert!(!rec.client_id.starts_with("https://"));
        assert_eq!(rec.expires_at, Some(150));
        let rat = s.registration_access_token.expect("rat");
        let info = client_information(&rec, Some(&secret), Some(&rat), "https://as.example");
        assert_eq!(info["client_secret_expires_at"], 0);
        assert_eq!(
            info["registration_client_uri"],
            format!("https://as.example/register/{}", rec.client_id)
        );
    }

    #[test]
    fn public_and_static_clients() {
        let (rec, s) = new_client(
            metadata("none"),
            ClientKind::Static,
            Some("cli".into()),
            None,
            1,
            50,
        );
        assert!(s.client_secret.is_none() && rec.secret_hash.is_none());
        assert!(s.registration_access_token.is_none());
        assert_eq!(rec.expires_at, None);
        let info = client_information(&rec, None, None, "https://as.example");
        assert!(info.get("client_secret_expires_at").is_none());
    }

    #[test]
    fn identical_metadata_has_one_fingerprint() {
        let fp = |json: &str| {
            let raw = RawClientMetadata::from_json(json.as_bytes()).expect("json");
            let m = validate(
                raw,
                Origin::Registration(&RegistrationConfig::default()),
                &crate::oauth::grants::GrantRegistry::standard(),
            )
            .expect("valid");
            fingerprint(&m).expect("fingerprint")
        };
        let a = fp(
            r#"{"redirect_uris":["https://a.example/cb"],"client_name":"A","token_endpoint_auth_method":"none"}"#,
        );
        let same = fp(
            r#"{ "token_endpoint_auth_method": "none", "client_name": "A",
            "redirect_uris": ["https://a.example/cb"] }"#,
        );
        assert_eq!(a, same);
        assert_ne!(
            a,
            fp(
                r#"{"redirect_uris":["https://a.example/cb"],"client_name":"B","token_endpoint_auth_method":"none"}"#
            )
        );
        assert_ne!(
            a,
            fp(r#"{"redirect_uris":["https://a.example/cb"],"client_name":"A"}"#)
        );
    }

    #[test]
    fn updates_issue_or_drop_secrets() {
        let (mut rec, _) = new_client(metadata("none"), ClientKind::Dynamic, None, None, 1, 50);
        let s = apply_update(&mut rec, metadata("client_secret_post"), 2).expect("new secret");
        assert!(util::verify_secret(
            &s,
            rec.secret_hash.as_deref().expect("hash")
        ));
        assert!(
            apply_update(&mut rec, metadata("client_secret_basic"), 3).is_none(),
            "keeps secret"
        );
        assert!(rec.secret_hash.is_some());
        assert!(apply_update(&mut rec, metadata("none"), 4).is_none());
        assert!(rec.secret_hash.is_none());
    }
}
