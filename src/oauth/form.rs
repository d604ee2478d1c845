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
}
