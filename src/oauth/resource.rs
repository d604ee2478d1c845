//! Protected resources (MCP servers) and their scopes. RFC 8707 resource indicators.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use super::authn::acr::Level;
use super::scope::is_scope_token;
use super::ttl_cache::TtlCache;
use crate::error::OAuthError;
pub use crate::keys::Alg;
pub use crate::store::{DetailsTypeDef, ScopeDef, ToolDef};
use crate::store::{ResourceRecord, ResourceStore, StoreError};

/// Scopes OpenID Connect defines; a resource may not claim them.
pub const OIDC_SCOPES: &[&str] = &["openid", "profile", "email", "offline_access"];

/// A resource URI in its one normal form.
///
/// RFC 8707 §2: an absolute URI without a fragment. Clients differ on a lone trailing slash
/// after the host (`https://mcp.example.com/` vs `https://mcp.example.com`), so that slash is
/// dropped; scheme and host are lower-cased and a default port removed, as `Url` does.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ResourceUri(String);

impl ResourceUri {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.len() > 2000 {
            return Err("is longer than 2000 characters".into());
        }
        let url = Url::parse(raw).map_err(|e| format!("is not an absolute URI ({e})"))?;
        if url.fragment().is_some() || raw.contains('#') {
            return Err("must not contain a fragment (RFC 8707 §2)".into());
        }
        if !matches!(url.scheme(), "https" | "http") {
            return Err("must be an http(s) URI".into());
        }
        if url.host().is_none() {
            return Err("needs a host".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not contain user information".into());
        }
        let mut s = url.to_string();
        if url.path() == "/" && url.query().is_none() && s.ends_with('/') {
            s.pop();
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The same URI with a trailing slash added to, or removed from, its path: clients
    /// write `…/mcp` and `…/mcp/` for one server, so a request for either names a resource
    /// registered as the other. `None` for a URI with a query (the slash is then not at the
    /// end) or an origin (whose lone slash the normal form already drops).
    pub fn trailing_slash_twin(&self) -> Option<Self> {
        if self.0.contains('?') {
            return None;
        }
        let path_start = self.0.find("://").map(|i| i + 3)?;
        if !self.0[path_start..].contains('/') {
            return None;
        }
        Some(match self.0.strip_suffix('/') {
            Some(without) => Self(without.to_string()),
            None => Self(format!("{}/", self.0)),
        })
    }
}

impl TryFrom<String> for ResourceUri {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<ResourceUri> for String {
    fn from(r: ResourceUri) -> String {
        r.0
    }
}

impl std::fmt::Display for ResourceUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The rules for a scope a resource offers (the record itself is the store's).
impl ScopeDef {
    /// Parse `name=Description` (or a bare `name`, described by its name).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (name, description) = match spec.split_once('=') {
            Some((n, d)) => (n.trim(), d.trim()),
            None => (spec.trim(), spec.trim()),
        };
        let def = Self {
            name: name.to_string(),
            description: description.to_string(),
            tools: Vec::new(),
        };
        def.check()?;
        Ok(def)
    }

    /// Attach tools to `scopes`, each from `tool=scope=Description` (or `tool=scope`,
    /// described by its name): the scope a tool needs must be one of them, and a tool is
    /// named once.
    pub fn with_tools(mut scopes: Vec<ScopeDef>, specs: &[String]) -> Result<Vec<Self>, String> {
        for spec in specs {
            let mut parts = spec.splitn(3, '=').map(str::trim);
            let (Some(tool), Some(scope)) = (parts.next(), parts.next()) else {
                return Err(format!(
                    "tool {spec:?} must read tool=scope=Description (the scope it needs)"
                ));
            };
            let description = parts.next().unwrap_or(tool);
            let def = scopes.iter_mut().find(|s| s.name == scope).ok_or_else(|| {
                format!("tool {tool:?} needs {scope:?}, which is not one of the resource's scopes")
            })?;
            def.tools.push(ToolDef {
                name: tool.to_string(),
                description: description.to_string(),
            });
        }
        for s in &scopes {
            s.check()?;
        }
        tools_named_once(&scopes)?;
        Ok(scopes)
    }

    pub fn check(&self) -> Result<(), String> {
        if !is_scope_token(&self.name) {
            return Err(format!("{:?} is not a valid scope name", self.name));
        }
        if OIDC_SCOPES.contains(&self.name.as_str()) {
            return Err(format!(
                "{:?} is an OpenID Connect scope and cannot belong to a resource",
                self.name
            ));
        }
        if self.description.is_empty() || self.description.len() > 300 {
            return Err(format!(
                "the description of {:?} must be 1 to 300 characters",
                self.name
            ));
        }
        for t in &self.tools {
            if !is_tool_name(&t.name) {
                return Err(format!(
                    "{:?} is not an MCP tool name (1 to 128 letters, digits, '_', '-', '.')",
                    t.name
                ));
            }
            if t.description.trim().is_empty() || t.description.len() > 300 {
                return Err(format!(
                    "the description of tool {:?} must be 1 to 300 characters",
                    t.name
                ));
            }
        }
        Ok(())
    }
}

/// Is `name` an MCP tool name (1 to 128 of `A-Z a-z 0-9 _ - .`, as the MCP specification's
/// tool names are)?
pub fn is_tool_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Each tool belongs to one scope: a name appears once across them.
fn tools_named_once(scopes: &[ScopeDef]) -> Result<(), String> {
    let mut names: Vec<&str> = scopes
        .iter()
        .flat_map(|s| s.tools.iter().map(|t| t.name.as_str()))
        .collect();
    names.sort_unstable();
    match names.windows(2).find(|w| w[0] == w[1]) {
        Some(w) => Err(format!("tool {:?} is named twice", w[0])),
        None => Ok(()),
    }
}

/// Whether a resource takes DPoP-bound access tokens (RFC 9449).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DpopPolicy {
    /// It knows only Bearer tokens: a request with a proof gets a Bearer token, which
    /// RFC 9449 §5 allows (`token_type` tells the client), so the client falls back.
    Off,
    /// Bound when the client sends a proof, Bearer otherwise.
    #[default]
    Optional,
    /// Only bound tokens: a token request without a proof is refused.
    Required,
}

impl DpopPolicy {
    pub const ALL: [Self; 3] = [Self::Off, Self::Optional, Self::Required];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Optional => "optional",
            Self::Required => "required",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not off, optional or required"))
    }
}

/// The access-token signing algorithms a resource may ask for.
pub fn parse_token_alg(s: &str) -> Result<Alg, String> {
    Alg::parse(s).ok_or_else(|| format!("{s:?} is not ES256 or RS256"))
}

/// A protected resource: an MCP server (or any API) that accepts our tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub uri: ResourceUri,
    pub name: String,
    pub scopes: Vec<ScopeDef>,
    /// Other URIs that name this resource (`resource add --alias`); tokens carry `uri`.
    pub aliases: Vec<ResourceUri>,
    /// How its access tokens are signed (ES256 unless its verifier knows only RS256).
    pub token_alg: Alg,
    /// Whether it takes DPoP-bound tokens.
    pub dpop: DpopPolicy,
    /// How strongly every user signing in for it must authenticate (`--require-mfa`),
    /// beyond the server's policy.
    pub required_acr: Option<Level>,
    /// RFC 9396 types it accepts besides the built-in ones (`oauth::details_type`).
    pub details_types: Vec<DetailsTypeDef>,
    pub created_at: i64,
}

impl Resource {
    /// Check and build a new resource.
    pub fn new(uri: &str, name: &str, scopes: Vec<ScopeDef>, now: i64) -> Result<Self, String> {
        let uri = ResourceUri::parse(uri).map_err(|e| format!("resource URI {uri:?} {e}"))?;
        Self::from_parts(uri, name.trim().to_string(), scopes, now)
    }

    /// Rebuild from the stored record, re-checking it.
    pub fn from_record(r: ResourceRecord) -> Result<Self, StoreError> {
        let corrupt = |e: String| StoreError::Corrupt(format!("resource {:?} {e}", r.uri));
        let uri = ResourceUri::parse(&r.uri).map_err(corrupt)?;
        let aliases = r
            .aliases
            .iter()
            .map(|a| ResourceUri::parse(a))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| corrupt(format!("alias {e}")))?;
        let token_alg = parse_token_alg(&r.access_token_alg).map_err(corrupt)?;
        let dpop = DpopPolicy::parse(&r.dpop).map_err(corrupt)?;
        let required_acr = match r.required_acr.as_deref() {
            None => None,
            Some(acr) => Some(
                Level::from_acr(acr)
                    .ok_or_else(|| corrupt(format!("requires the unknown acr {acr:?}")))?,
            ),
        };
        let resource = Self::from_parts(uri, r.name.clone(), r.scopes.clone(), r.created_at)
            .map_err(corrupt)?;
        resource
            .with_aliases(aliases)
            .with_tokens(token_alg, dpop)
            .requiring(required_acr)
            .accepting(r.details_types)
            .map_err(corrupt)
    }

    /// The same resource accepting these authorization details types, each checked
    /// (`details_type::check_all`).
    pub fn accepting(mut self, types: Vec<DetailsTypeDef>) -> Result<Self, String> {
        super::details_type::check_all(&types)?;
        self.details_types = types;
        Ok(self)
    }

    /// The declared authorization details type `name`, if this resource accepts it.
    pub fn details_type(&self, name: &str) -> Option<&DetailsTypeDef> {
        self.details_types.iter().find(|t| t.name == name)
    }

    /// The same resource, needing sign-ins at `level` at least (None: the server's policy).
    pub fn requiring(mut self, level: Option<Level>) -> Self {
        self.required_acr = level;
        self
    }

    /// The same resource with its access tokens signed by `alg` and `dpop` as its policy.
    pub fn with_tokens(mut self, alg: Alg, dpop: DpopPolicy) -> Self {
        self.token_alg = alg;
        self.dpop = dpop;
        self
    }

    /// The DPoP key a token for this resource is bound to, given the request's proof
    /// (RFC 9449 §5): none for a resource that knows only Bearer tokens; a request without
    /// a proof is refused for one that takes only bound tokens.
    pub fn dpop_binding<'a>(&self, jkt: Option<&'a str>) -> Result<Option<&'a str>, OAuthError> {
        match (self.dpop, jkt) {
            (DpopPolicy::Off, _) => Ok(None),
            (DpopPolicy::Required, None) => Err(OAuthError::invalid_dpop_proof(format!(
                "{} takes only DPoP-bound access tokens: send a DPoP proof (RFC 9449 §5)",
                self.uri
            ))),
            (_, jkt) => Ok(jkt),
        }
    }

    /// The same resource, also named by `aliases`.
    pub fn with_aliases(mut self, aliases: Vec<ResourceUri>) -> Self {
        self.aliases = aliases;
        self
    }

    /// The record to store.
    pub fn to_record(&self) -> ResourceRecord {
        ResourceRecord {
            uri: self.uri.to_string(),
            name: self.name.clone(),
            scopes: self.scopes.clone(),
            aliases: self.aliases.iter().map(ToString::to_string).collect(),
            access_token_alg: self.token_alg.as_str().to_string(),
            dpop: self.dpop.as_str().to_string(),
            required_acr: self.required_acr.map(|l| l.acr().to_string()),
            details_types: self.details_types.clone(),
            created_at: self.created_at,
        }
    }

    /// Does the resource offer `scope`?
    pub fn offers(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s.name == scope)
    }

    fn from_parts(
        uri: ResourceUri,
        name: String,
        scopes: Vec<ScopeDef>,
        created_at: i64,
    ) -> Result<Self, String> {
        if name.is_empty() || name.len() > 200 {
            return Err("the resource name must be 1 to 200 characters".into());
        }
        for (i, s) in scopes.iter().enumerate() {
            s.check()?;
            if scopes[..i].iter().any(|o| o.name == s.name) {
                return Err(format!("scope {:?} is listed twice", s.name));
            }
        }
        tools_named_once(&scopes)?;
        Ok(Self {
            uri,
            name,
            scopes,
            aliases: Vec::new(),
            token_alg: Alg::ES256,
            dpop: DpopPolicy::Optional,
            required_acr: None,
            details_types: Vec::new(),
            created_at,
        })
    }
}

/// Most resources a replica keeps in memory.
const RESOURCE_CACHE_CAPACITY: usize = 10_000;

/// Registered resources by URI, cached per replica for `resources.cache_secs` (default 10 s)
/// so issuing a token needs no database read. Resources change through the CLI (another
/// process), so every replica sees an added, changed or removed resource within that bound.
/// An unknown resource is never cached: a newly added one works at once.
pub struct ResourceDirectory {
    store: Arc<dyn ResourceStore>,
    cache: TtlCache<String, Arc<Resource>>,
    /// Documents built from every resource (the discovery metadata), by name, as the JSON
    /// they are served as: within the same bound as the resources, and dropped with any
    /// change `forget` hears of.
    derived: TtlCache<&'static str, bytes::Bytes>,
    ttl: Duration,
}

impl ResourceDirectory {
    /// `cache_secs` 0 disables the cache.
    pub fn new(store: Arc<dyn ResourceStore>, cache_secs: u64) -> Self {
        Self {
            store,
            cache: TtlCache::new(RESOURCE_CACHE_CAPACITY),
            derived: TtlCache::new(4),
            ttl: Duration::from_secs(cache_secs),
        }
    }

    /// The cached resource whose normal URI is exactly `raw`. A request that names a
    /// resource in its normal form (as clients usually do) then needs no URL parsing: only a
    /// registered, valid URI is ever a key.
    pub fn cached(&self, raw: &str) -> Option<Arc<Resource>> {
        self.cache.get(raw)
    }

    /// The resource the normalised `uri` names: registered under it or under its
    /// trailing-slash twin, or an operator's alias of either. Cached under `uri`.
    pub async fn get(&self, uri: &ResourceUri) -> Result<Option<Arc<Resource>>, StoreError> {
        if let Some(hit) = self.cache.get(uri.as_str()) {
            return Ok(Some(hit));
        }
        let Some(found) = self.find(uri).await? else {
            return Ok(None);
        };
        let found = Arc::new(Resource::from_record(found)?);
        self.cache
            .insert(uri.as_str().to_string(), found.clone(), self.ttl);
        Ok(Some(found))
    }

    async fn find(&self, uri: &ResourceUri) -> Result<Option<ResourceRecord>, StoreError> {
        let names: Vec<ResourceUri> = std::iter::once(uri.clone())
            .chain(uri.trailing_slash_twin())
            .collect();
        for name in &names {
            if let Some(r) = self.store.get_resource(name.as_str()).await? {
                return Ok(Some(r));
            }
        }
        for name in &names {
            if let Some(registered) = self.store.resource_for_alias(name.as_str()).await? {
                return self.store.get_resource(&registered).await;
            }
        }
        Ok(None)
    }

    /// Every registered resource, read from the store (listings, discovery metadata).
    pub async fn list(&self) -> Result<Vec<Resource>, StoreError> {
        self.store
            .list_resources()
            .await?
            .into_iter()
            .map(Resource::from_record)
            .collect()
    }

    /// The document `name` built from every resource, if built within the cache lifetime.
    pub fn derived(&self, name: &'static str) -> Option<bytes::Bytes> {
        self.derived.get(name)
    }

    /// Keep `json` as the document `name` for the cache lifetime.
    pub fn keep_derived(&self, name: &'static str, json: bytes::Bytes) {
        self.derived.insert(name, json, self.ttl);
    }

    /// Drop the documents built from every resource, after a change they show (a resource,
    /// or what else they are built from: trusted ID-JAG issuers).
    pub fn forget_derived(&self) {
        for (name, _, _) in self.derived.entries() {
            self.derived.remove(&name);
        }
    }

    /// Drop this replica's cached copy after changing or deleting the resource; other
    /// replicas see the change within the cache lifetime.
    pub fn forget(&self, uri: &str) {
        self.forget_derived();
        // Under its own URI and under every other name a request used for it.
        for (key, resource, _) in self.cache.entries() {
            if key == uri || resource.uri.as_str() == uri {
                self.cache.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_attach_to_the_scope_they_need() {
        let scopes = vec![
            ScopeDef::parse("notes:read=Read").unwrap(),
            ScopeDef::parse("notes:write=Write").unwrap(),
        ];
        let specs = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let got = ScopeDef::with_tools(
            scopes.clone(),
            &specs(&["list_notes=notes:read=List", "delete_note=notes:write"]),
        )
        .unwrap();
        assert_eq!(got[0].tools[0].name, "list_notes");
        assert_eq!(got[1].tools[0].description, "delete_note");
        let dup = ScopeDef::with_tools(scopes.clone(), &specs(&["a=notes:read", "a=notes:write"]));
        assert!(dup.unwrap_err().contains("twice"));
        assert!(ScopeDef::with_tools(scopes, &specs(&["a=admin"])).is_err());
    }

    #[test]
    fn normalises_lone_trailing_slash_and_case() {
        let a = ResourceUri::parse("https://MCP.example.com/").expect("valid");
        let b = ResourceUri::parse("https://mcp.example.com").expect("valid");
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "https://mcp.example.com");
        let c = ResourceUri::parse("https://mcp.example.com:443/mcp").expect("valid");
        assert_eq!(c.as_str(), "https://mcp.example.com/mcp");
        // A trailing slash on a longer path stays in the normal form; lookups try both.
        let d = ResourceUri::parse("https://mcp.example.com/mcp/").expect("valid");
        assert_ne!(c, d);
        assert_eq!(c.trailing_slash_twin(), Some(d.clone()));
        assert_eq!(d.trailing_slash_twin(), Some(c));
        assert_eq!(b.trailing_slash_twin(), None, "an origin has no twin");
        let q = ResourceUri::parse("https://mcp.example.com/mcp?x=1").expect("valid");
        assert_eq!(q.trailing_slash_twin(), None);
    }

    #[test]
    fn refuses_fragments_and_non_http() {
        assert!(ResourceUri::parse("https://mcp.example.com/#x").is_err());
        assert!(ResourceUri::parse("urn:example:thing").is_err());
        assert!(ResourceUri::parse("mcp.example.com").is_err());
    }

    #[test]
    fn scope_specs() {
        let s = ScopeDef::parse("notes:read=Read your notes").expect("valid");
        assert_eq!(s.name, "notes:read");
        assert_eq!(s.description, "Read your notes");
        assert_eq!(ScopeDef::parse("x").expect("bare").description, "x");
        assert!(ScopeDef::parse("openid=Sign in").is_err());
        assert!(ScopeDef::parse("bad scope=x").is_err());
        let dup = vec![
            ScopeDef::parse("a").expect("a"),
            ScopeDef::parse("a=again").expect("a"),
        ];
        assert!(Resource::new("https://r.example", "R", dup, 0).is_err());
    }

    /// Property tests (README: Fuzzing).
    mod fuzz {
        use proptest::prelude::*;

        use super::*;
        use crate::fuzz::{config, uri_like};

        proptest! {
            #![proptest_config(config())]

            /// Any text: an http(s) URI in normal form, or a reason; parsing the normal
            /// form gives it back (idempotent).
            #[test]
            fn parse_is_idempotent_on_its_output(raw in uri_like()) {
                let Ok(r) = ResourceUri::parse(&raw) else { return Ok(()) };
                prop_assert_eq!(ResourceUri::parse(r.as_str()), Ok(r.clone()));
                let url = Url::parse(r.as_str())?;
                prop_assert!(matches!(url.scheme(), "http" | "https"));
                prop_assert!(url.host().is_some() && url.fragment().is_none());
                prop_assert!(!r.as_str().contains('#'));
                prop_assert!(!(url.path() == "/" && url.query().is_none() && r.as_str().ends_with('/')));
                // A lone trailing slash on the origin makes no difference.
                if url.path() == "/" && url.query().is_none() {
                    prop_assert_eq!(ResourceUri::parse(&format!("{r}/")), Ok(r.clone()));
                }
            }

            /// Any text as a scope definition: a valid scope name that no OpenID Connect
            /// scope shadows, or a reason.
            #[test]
            fn scope_definitions_are_valid_or_refused(spec in crate::fuzz::nasty_string()) {
                if let Ok(def) = ScopeDef::parse(&spec) {
                    prop_assert!(is_scope_token(&def.name));
                    prop_assert!(!OIDC_SCOPES.contains(&def.name.as_str()));
                    prop_assert!(!def.description.is_empty() && def.description.len() <= 300);
                }
            }
        }
    }
}
