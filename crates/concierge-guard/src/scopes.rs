//! Scope rules: what an MCP operation (a tool, a prompt, a resource) needs,
//! alternatives, and scopes that imply others.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Value, json};

/// The scopes an operation needs: one or more alternatives, each a set of
/// scopes that must all be granted. The rule is satisfied when any
/// alternative is.
///
/// Lists convert into a rule needing all of them, so `["notes:write"]` can be
/// passed wherever a rule is expected.
///
/// ```
/// use concierge_guard::ScopeRule;
///
/// let write = ScopeRule::all(["notes:write"]);
/// let either = ScopeRule::any_of(["notes:write", "notes:admin"]);
/// let both_or_admin = ScopeRule::all(["notes:read", "notes:write"]).or(ScopeRule::all(["notes:admin"]));
///
/// assert!(either.is_satisfied_by(|s| s == "notes:admin"));
/// assert!(!write.is_satisfied_by(|s| s == "notes:read"));
/// assert!(both_or_admin.is_satisfied_by(|s| ["notes:read", "notes:write"].contains(&s)));
/// assert_eq!(ScopeRule::from(["a", "b"]), ScopeRule::all(["a", "b"]));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeRule {
    alternatives: Vec<Vec<String>>,
}

impl<I, S> From<I> for ScopeRule
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    fn from(scopes: I) -> Self {
        Self::all(scopes)
    }
}

impl ScopeRule {
    /// Every one of `scopes` is needed. An empty list needs nothing beyond
    /// what every request needs (with [`default_deny`](crate::GuardBuilder::default_deny),
    /// that is how an operation is let through without an extra scope).
    ///
    /// ```
    /// let rule = concierge_guard::ScopeRule::all(["notes:read", "notes:write"]);
    /// assert_eq!(rule.alternatives(), [vec!["notes:read".to_owned(), "notes:write".to_owned()]]);
    /// ```
    #[must_use]
    pub fn all<I, S>(scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut set: Vec<String> = Vec::new();
        for s in scopes {
            let s = s.into();
            if !set.contains(&s) {
                set.push(s);
            }
        }
        Self {
            alternatives: vec![set],
        }
    }

    /// Any one of `scopes` is enough. The first is the one a challenge asks
    /// for, so list the least powerful first. An empty list is refused by
    /// [`build`](crate::GuardBuilder::build).
    ///
    /// ```
    /// let rule = concierge_guard::ScopeRule::any_of(["notes:write", "notes:admin"]);
    /// assert_eq!(rule.alternatives().len(), 2);
    /// ```
    #[must_use]
    pub fn any_of<I, S>(scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            alternatives: scopes.into_iter().map(|s| vec![s.into()]).collect(),
        }
    }

    /// This rule, or `other`.
    ///
    /// ```
    /// use concierge_guard::ScopeRule;
    /// let rule = ScopeRule::all(["a", "b"]).or(ScopeRule::all(["admin"]));
    /// assert_eq!(rule.alternatives().len(), 2);
    /// ```
    #[must_use]
    pub fn or(mut self, other: ScopeRule) -> Self {
        for alt in other.alternatives {
            if !self.alternatives.contains(&alt) {
                self.alternatives.push(alt);
            }
        }
        self
    }

    /// The alternatives, each a set of scopes needed together.
    #[must_use]
    pub fn alternatives(&self) -> &[Vec<String>] {
        &self.alternatives
    }

    /// Does a principal with `granted` scopes satisfy the rule?
    ///
    /// ```
    /// let rule = concierge_guard::ScopeRule::any_of(["a", "b"]);
    /// assert!(rule.is_satisfied_by(|s| s == "b"));
    /// assert!(!rule.is_satisfied_by(|_| false));
    /// ```
    pub fn is_satisfied_by(&self, granted: impl Fn(&str) -> bool) -> bool {
        self.alternatives
            .iter()
            .any(|alt| alt.iter().all(|s| granted(s)))
    }

    /// The alternative a challenge names: the first.
    pub(crate) fn preferred(&self) -> &[String] {
        self.alternatives.first().map_or(&[], Vec::as_slice)
    }

    /// Every scope named anywhere in the rule.
    pub(crate) fn scopes(&self) -> impl Iterator<Item = &String> {
        self.alternatives.iter().flatten()
    }

    /// As a tool's or prompt's `_meta` entry: `securitySchemes`, one
    /// `oauth2` scheme per alternative (the shape of the OpenAI Apps SDK's
    /// per-tool authentication, which MCP clients may read to filter tools).
    #[cfg_attr(not(feature = "rmcp"), allow(dead_code))]
    pub(crate) fn to_security_schemes(&self) -> Value {
        Value::Array(
            self.alternatives
                .iter()
                .map(|alt| json!({"type": "oauth2", "scopes": alt}))
                .collect(),
        )
    }

    /// Reads a `securitySchemes` array back: `oauth2` schemes are
    /// alternatives, `noauth` is an alternative needing nothing extra.
    /// `None` when there is none; `Err` naming what is wrong.
    #[cfg_attr(not(feature = "rmcp"), allow(dead_code))]
    pub(crate) fn from_security_schemes(schemes: &Value) -> Result<Option<Self>, String> {
        let Value::Array(schemes) = schemes else {
            return Err("securitySchemes must be an array".into());
        };
        let mut alternatives = Vec::new();
        for scheme in schemes {
            match scheme.get("type").and_then(Value::as_str) {
                Some("oauth2") => {
                    let scopes = match scheme.get("scopes") {
                        None | Some(Value::Null) => Vec::new(),
                        Some(Value::Array(list)) => list
                            .iter()
                            .map(|s| s.as_str().map(str::to_owned))
                            .collect::<Option<Vec<_>>>()
                            .ok_or("oauth2 scopes must be strings")?,
                        Some(_) => return Err("oauth2 scopes must be an array".into()),
                    };
                    alternatives.push(scopes);
                }
                Some("noauth") => alternatives.push(Vec::new()),
                other => return Err(format!("unknown security scheme type {other:?}")),
            }
        }
        Ok((!alternatives.is_empty()).then_some(Self { alternatives }))
    }
}

/// Scopes that imply others: a token granted `notes:write` also satisfies
/// rules needing `notes:read` when `notes:write` is declared to imply it.
/// Implications are transitive.
///
/// ```
/// use concierge_guard::ScopeHierarchy;
///
/// let h = ScopeHierarchy::new()
///     .implies("notes:admin", ["notes:write"])
///     .implies("notes:write", ["notes:read"]);
/// assert_eq!(h.expand(["notes:admin"]), ["notes:admin", "notes:write", "notes:read"]);
/// assert_eq!(h.expand(["notes:read"]), ["notes:read"]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeHierarchy {
    implies: BTreeMap<String, Vec<String>>,
}

impl ScopeHierarchy {
    /// No implications.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// `scope` implies each of `implied`.
    #[must_use]
    pub fn implies<I, S>(mut self, scope: impl Into<String>, implied: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let entry = self.implies.entry(scope.into()).or_default();
        for s in implied {
            let s = s.into();
            if !entry.contains(&s) {
                entry.push(s);
            }
        }
        self
    }

    /// Whether no implication is declared.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.implies.is_empty()
    }

    /// `granted` and everything it implies, granted ones first, in order.
    #[must_use]
    pub fn expand<I, S>(&self, granted: I) -> Vec<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out: Vec<String> = Vec::new();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        for s in granted {
            let s = s.as_ref();
            if seen.insert(s.to_owned()) {
                out.push(s.to_owned());
            }
        }
        let mut i = 0;
        while i < out.len() {
            if let Some(more) = self.implies.get(&out[i]) {
                for m in more {
                    if seen.insert(m.clone()) {
                        out.push(m.clone());
                    }
                }
            }
            i += 1;
        }
        out
    }

    /// Every scope named by the hierarchy.
    pub(crate) fn scopes(&self) -> impl Iterator<Item = &String> {
        self.implies
            .iter()
            .flat_map(|(k, v)| std::iter::once(k).chain(v.iter()))
    }
}

/// One MCP operation a JSON-RPC request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Operation {
    /// `tools/call` of this tool.
    Tool(String),
    /// `prompts/get` of this prompt.
    Prompt(String),
    /// `resources/read` of this URI.
    Resource(String),
}

impl Operation {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Tool(_) => "tool",
            Self::Prompt(_) => "prompt",
            Self::Resource(_) => "resource",
        }
    }

    pub(crate) fn name(&self) -> &str {
        match self {
            Self::Tool(n) | Self::Prompt(n) | Self::Resource(n) => n,
        }
    }
}

/// The scope rules of MCP operations, checked on every request that names one.
#[derive(Debug, Clone, Default)]
pub(crate) struct OperationRules {
    pub(crate) tools: HashMap<String, ScopeRule>,
    pub(crate) prompts: HashMap<String, ScopeRule>,
    /// Exact URIs, or prefixes when the key ends with `*`.
    pub(crate) resources: Vec<(String, ScopeRule)>,
    pub(crate) default_deny: bool,
    /// The authentication each tool needs besides its scopes (RFC 9470).
    pub(crate) tool_authentication: HashMap<String, AuthenticationRule>,
}

/// How recently and strongly the user must have signed in for an operation (RFC 9470):
/// one of `acr_values` (any when empty), at most `max_age` ago (any time when None).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AuthenticationRule {
    pub(crate) acr_values: Vec<String>,
    pub(crate) max_age: Option<std::time::Duration>,
}

impl OperationRules {
    /// Does any request need its body read?
    pub(crate) fn inspects_bodies(&self) -> bool {
        self.default_deny
            || !self.tools.is_empty()
            || !self.tool_authentication.is_empty()
            || !self.prompts.is_empty()
            || !self.resources.is_empty()
    }

    /// The rule for `op`; `None` when there is none.
    pub(crate) fn rule(&self, op: &Operation) -> Option<&ScopeRule> {
        match op {
            Operation::Tool(name) => self.tools.get(name),
            Operation::Prompt(name) => self.prompts.get(name),
            Operation::Resource(uri) => self
                .resources
                .iter()
                .filter(|(pattern, _)| match pattern.strip_suffix('*') {
                    Some(prefix) => uri.starts_with(prefix),
                    None => uri == pattern,
                })
                // The most specific pattern wins: an exact URI, then the longest prefix.
                .max_by_key(|(pattern, _)| (!pattern.ends_with('*'), pattern.len()))
                .map(|(_, rule)| rule),
        }
    }

    /// Every scope named by a rule, tools then prompts then resources, each
    /// sorted by name for a stable metadata document.
    pub(crate) fn scopes(&self) -> Vec<&String> {
        let mut out = Vec::new();
        for map in [&self.tools, &self.prompts] {
            let mut names: Vec<_> = map.keys().collect();
            names.sort();
            for name in names {
                out.extend(map[name].scopes());
            }
        }
        for (_, rule) in &self.resources {
            out.extend(rule.scopes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_schemes_round_trip() {
        let rule = ScopeRule::all(["a", "b"]).or(ScopeRule::all(["admin"]));
        let schemes = rule.to_security_schemes();
        assert_eq!(
            schemes,
            json!([{"type": "oauth2", "scopes": ["a", "b"]}, {"type": "oauth2", "scopes": ["admin"]}])
        );
        assert_eq!(
            ScopeRule::from_security_schemes(&schemes).unwrap(),
            Some(rule)
        );
        assert_eq!(
            ScopeRule::from_security_schemes(&json!([{"type": "noauth"}])).unwrap(),
            Some(ScopeRule::all(Vec::<String>::new()))
        );
        assert_eq!(ScopeRule::from_security_schemes(&json!([])).unwrap(), None);
        for bad in [
            json!({}),
            json!([{"type": "apiKey"}]),
            json!([{"type": "oauth2", "scopes": "a"}]),
            json!([{"type": "oauth2", "scopes": [1]}]),
        ] {
            assert!(ScopeRule::from_security_schemes(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hierarchy_is_transitive_and_survives_cycles() {
        let h = ScopeHierarchy::new()
            .implies("a", ["b"])
            .implies("b", ["c"])
            .implies("c", ["a"]);
        assert_eq!(h.expand(["b"]), ["b", "c", "a"]);
        assert_eq!(h.expand(["x", "x"]), ["x"]);
    }

    #[test]
    fn resource_rules_prefer_the_most_specific_pattern() {
        let rules = OperationRules {
            resources: vec![
                ("notes://*".into(), ScopeRule::all(["notes:read"])),
                (
                    "notes://private/*".into(),
                    ScopeRule::all(["notes:private"]),
                ),
                (
                    "notes://private/readme".into(),
                    ScopeRule::all(Vec::<String>::new()),
                ),
            ],
            ..Default::default()
        };
        let rule = |uri: &str| rules.rule(&Operation::Resource(uri.into())).cloned();
        assert_eq!(rule("notes://1"), Some(ScopeRule::all(["notes:read"])));
        assert_eq!(
            rule("notes://private/2"),
            Some(ScopeRule::all(["notes:private"]))
        );
        assert_eq!(
            rule("notes://private/readme"),
            Some(ScopeRule::all(Vec::<String>::new()))
        );
        assert_eq!(rule("other://x"), None);
    }
}
