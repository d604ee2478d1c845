//! Scope values (RFC 6749 §3.3): space-delimited, case-sensitive tokens.

/// Longest scope string accepted anywhere.
pub const MAX_LEN: usize = 2000;

/// Is `token` a valid scope-token (`1*( %x21 / %x23-5B / %x5D-7E )`)?
pub fn is_scope_token(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

/// A parsed scope: distinct tokens in the order first given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scope(Vec<String>);

impl Scope {
    /// Parse a space-delimited scope string. Repeated tokens are merged.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.len() > MAX_LEN {
            return Err(format!("is longer than {MAX_LEN} characters"));
        }
        let mut out: Vec<String> = Vec::new();
        for t in s.split(' ') {
            if t.is_empty() {
                continue;
            }
            if !is_scope_token(t) {
                return Err(format!("contains the invalid scope token {t:?}"));
            }
            if !out.iter().any(|x| x == t) {
                out.push(t.to_string());
            }
        }
        Ok(Self(out))
    }

    pub fn tokens(&self) -> &[String] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, token: &str) -> bool {
        self.0.iter().any(|t| t == token)
    }

    /// The tokens for which `keep` holds, in order.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) -> Self {
        Self(self.0.iter().filter(|t| keep(t)).cloned().collect())
    }

    /// A scope of tokens already known to be valid (from a parsed scope or a checked
    /// record); repeats are merged.
    pub fn from_tokens<'a>(tokens: impl IntoIterator<Item = &'a str>) -> Self {
        let mut out: Vec<String> = Vec::new();
        for t in tokens {
            if !t.is_empty() && !out.iter().any(|x| x == t) {
                out.push(t.to_string());
            }
        }
        Self(out)
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_merges() {
        let s = Scope::parse("notes:read  notes:write notes:read").expect("valid");
        assert_eq!(s.tokens(), ["notes:read", "notes:write"]);
        assert_eq!(s.to_string(), "notes:read notes:write");
        assert!(Scope::parse("").expect("empty").is_empty());
    }

    #[test]
    fn refuses_bad_tokens() {
        assert!(Scope::parse("a\"b").is_err());
        assert!(Scope::parse("a\\b").is_err());
        assert!(Scope::parse("caf\u{e9}").is_err());
        assert!(Scope::parse("a\tb").is_err());
        assert!(Scope::parse(&"a".repeat(MAX_LEN + 1)).is_err());
    }

    /// Property tests (README: Fuzzing).
    mod fuzz {
        use proptest::prelude::*;

        use super::*;
        use crate::fuzz::{config, nasty_string};

        fn scope_text() -> impl Strategy<Value = String> {
            prop_oneof![
                nasty_string(),
                proptest::collection::vec(
                    (
                        prop_oneof!["[!#-\\[\\]-~]{1,12}", Just("openid".to_string())],
                        " {1,3}"
                    ),
                    0..40
                )
                .prop_map(|v| v.into_iter().map(|(t, sp)| t + &sp).collect()),
            ]
        }

        proptest! {
            #![proptest_config(config())]

            /// Any text: scope tokens, each valid and distinct, that print and parse back to
            /// the same scope; or a reason.
            #[test]
            fn scope_round_trips_through_its_string(s in scope_text()) {
                match Scope::parse(&s) {
                    Ok(scope) => {
                        prop_assert!(s.len() <= MAX_LEN);
                        prop_assert!(scope.tokens().iter().all(|t| is_scope_token(t)));
                        let again = Scope::parse(&scope.to_string());
                        prop_assert_eq!(again.as_ref(), Ok(&scope));
                        prop_assert_eq!(Scope::from_tokens(scope.tokens().iter().map(String::as_str)), scope.clone());
                        for t in s.split(' ').filter(|t| !t.is_empty()) {
                            prop_assert!(scope.contains(t));
                        }
                    }
                    Err(_) => prop_assert!(
                        s.len() > MAX_LEN || s.split(' ').any(|t| !t.is_empty() && !is_scope_token(t))
                    ),
                }
            }
        }
    }
}
