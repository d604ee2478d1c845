//! `application/x-www-form-urlencoded` request bodies (RFC 6749 §3.1, §3.2).

use std::collections::HashMap;

use crate::error::OAuthError;

/// Parameters that may repeat: `resource` (RFC 8707 §2).
const REPEATABLE: &[&str] = &["resource"];

/// A parsed form. Empty values count as omitted (RFC 6749 §3.1); other parameters may
/// appear once only.
#[derive(Debug, Default)]
pub struct Form(HashMap<String, Vec<String>>);

impl Form {
    pub fn parse(body: &[u8]) -> Result<Self, OAuthError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).map_err(|e| {
            OAuthError::invalid_request(format!("the body is not a valid form: {e}"))
        })?;
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in pairs {
            if v.is_empty() {
                continue;
            }
            let values = map.entry(k).or_default();
            values.push(v);
        }
        for (k, v) in &map {
            if v.len() > 1 && !REPEATABLE.contains(&k.as_str()) {
                return Err(OAuthError::invalid_request(format!(
                    "the parameter {k} is repeated (RFC 6749 §3.2)"
                )));
            }
        }
        Ok(Self(map))
    }

    /// The single value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(|v| v.first()).map(String::as_str)
    }

    /// Every value of a repeatable parameter.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .get(name)
            .map(|v| v.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_repeats() {
        let f =
            Form::parse(b"grant_type=client_credentials&scope=&resource=a&resource=b").expect("ok");
        assert_eq!(f.get("grant_type"), Some("client_credentials"));
        assert_eq!(f.get("scope"), None, "empty means omitted");
        assert_eq!(f.all("resource"), vec!["a", "b"]);
        let e = Form::parse(b"scope=a&scope=b").expect_err("repeat");
        assert!(e.description.contains("scope"));
        // A repeat with an empty value is an omission, not a repeat.
        assert_eq!(
            Form::parse(b"scope=a&scope=").expect("ok").get("scope"),
            Some("a")
        );
    }

    /// Property tests (README: Fuzzing).
    mod fuzz {
        use proptest::prelude::*;

        use super::*;
        use crate::error::ErrorCode;
        use crate::fuzz::{config, nasty_bytes, nasty_string};

        fn key() -> impl Strategy<Value = String> {
            prop_oneof![
                3 => proptest::sample::select(&["resource", "scope", "client_id", "grant_type"][..])
                    .prop_map(str::to_string),
                1 => nasty_string(),
            ]
        }

        proptest! {
            #![proptest_config(config())]

            /// Any body is a form or an `invalid_request`; a parsed form holds no empty value.
            #[test]
            fn any_body_is_a_form_or_invalid_request(body in nasty_bytes()) {
                match Form::parse(&body) {
                    Ok(form) => {
                        for (k, values) in &form.0 {
                            prop_assert!(!values.is_empty() && values.iter().all(|v| !v.is_empty()));
                            prop_assert!(values.len() == 1 || REPEATABLE.contains(&k.as_str()));
                        }
                    }
                    Err(e) => prop_assert_eq!(e.code, ErrorCode::InvalidRequest),
                }
            }

            /// Encoded parameters come back as sent (empty ones omitted, `resource` in
            /// order); any other parameter sent twice is refused by name.
            #[test]
            fn encoded_pairs_round_trip(pairs in proptest::collection::vec((key(), nasty_string()), 0..8)) {
                let body = serde_urlencoded::to_string(&pairs)?;
                let sent: Vec<(&str, &str)> = pairs
                    .iter()
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let values = |k: &str| -> Vec<&str> {
                    sent.iter().filter(|(o, _)| *o == k).map(|(_, v)| *v).collect()
                };
                let repeated: Vec<&str> = sent
                    .iter()
                    .map(|(k, _)| *k)
                    .filter(|k| !REPEATABLE.contains(k) && values(k).len() > 1)
                    .collect();
                match Form::parse(body.as_bytes()) {
                    Ok(form) => {
                        prop_assert!(repeated.is_empty(), "{:?} repeated yet accepted", repeated);
                        for (k, _) in &sent {
                            prop_assert_eq!(form.all(k), values(k));
                            prop_assert_eq!(form.get(k), values(k).first().copied());
                        }
                    }
                    Err(e) => {
                        prop_assert_eq!(e.code, ErrorCode::InvalidRequest);
                        prop_assert!(
                            repeated.iter().any(|k| e.description.contains(k)),
                            "{} names none of {:?}", e.description, repeated
                        );
                    }
                }
            }
        }
    }
}
