//! The validated caller handed to handlers and tools.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::client::unix_now;
use crate::scopes::{ScopeHierarchy, ScopeRule};
use crate::stepup::{Need, StepUp, StepUpSink};

/// The caller behind a validated access token.
///
/// The [`GuardLayer`](crate::GuardLayer) inserts it into the request's
/// extensions; take it with the axum extractor (`principal: Principal` or
/// `Option<Principal>`), or — with the `rmcp` feature — as a parameter of an
/// rmcp `#[tool]` or `#[prompt]`. Cloning is cheap (one `Arc`).
///
/// ```
/// use axum::{Router, routing::get};
/// use concierge_guard::Principal;
///
/// async fn whoami(principal: Principal) -> String {
///     format!("{} via {} with {:?}", principal.sub(), principal.client_id(), principal.scopes())
/// }
/// let app: Router = Router::new().route("/whoami", get(whoami));
/// ```
///
/// In tests of handlers and tools, make one with [`Principal::builder`].
#[derive(Clone)]
pub struct Principal {
    data: Arc<PrincipalData>,
    /// The request it was validated for, when the layer put it there: where
    /// a [`StepUp`] is recorded so the layer can answer with the challenge.
    context: Option<Arc<dyn StepUpSink>>,
}

/// What a [`Principal`] is made of; built by validation.
pub(crate) struct PrincipalData {
    pub(crate) sub: String,
    pub(crate) client_id: String,
    /// As granted by the token.
    pub(crate) scopes: Vec<String>,
    /// Granted plus implied by the scope hierarchy.
    pub(crate) effective: Vec<String>,
    pub(crate) act: Vec<Actor>,
    pub(crate) expires_at: i64,
    pub(crate) claims: Value,
}

impl From<PrincipalData> for Principal {
    fn from(data: PrincipalData) -> Self {
        Self {
            data: Arc::new(data),
            context: None,
        }
    }
}

/// The raw bearer token of a request the [`GuardLayer`](crate::GuardLayer)
/// let through, next to the [`Principal`] in the request extensions: what a
/// server passes to `Guard::exchange` (feature `exchange`) to call another
/// resource on the caller's behalf. Never forward it itself. `Debug` does not
/// show it.
///
/// ```
/// # fn handler(token: concierge_guard::BearerToken) {
/// assert_eq!(format!("{token:?}"), "BearerToken(…)");
/// # }
/// ```
#[derive(Clone)]
pub struct BearerToken(Arc<str>);

impl BearerToken {
    pub(crate) fn new(token: &str) -> Self {
        Self(token.into())
    }

    /// The token.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(…)")
    }
}

/// One party in a delegation chain (`act` claim, RFC 8693 §4.1).
///
/// ```
/// let actor = concierge_guard::Actor::new("calendar-server").with_client_id("calendar");
/// assert_eq!(actor.sub.as_deref(), Some("calendar-server"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Actor {
    /// The acting party's subject.
    pub sub: Option<String>,
    /// The acting party's client, when the issuer names it.
    pub client_id: Option<String>,
}

impl Actor {
    /// An actor with this subject.
    #[must_use]
    pub fn new(sub: impl Into<String>) -> Self {
        Self {
            sub: Some(sub.into()),
            client_id: None,
        }
    }

    /// Names the actor's client too.
    #[must_use]
    pub fn with_client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }
}

impl Principal {
    /// Starts a principal for tests of handlers and tools: the subject
    /// `user`, the client `client`, no scopes, valid for an hour.
    ///
    /// ```
    /// use concierge_guard::Principal;
    /// let p = Principal::builder().subject("alice").scopes(["notes:read"]).claim("tenant", "acme").build();
    /// assert_eq!(p.sub(), "alice");
    /// assert!(p.has_scope("notes:read"));
    /// assert_eq!(p.claims()["tenant"], "acme");
    /// assert!(p.require_scopes(["notes:write"]).is_err());
    /// ```
    pub fn builder() -> PrincipalBuilder {
        PrincipalBuilder::default()
    }

    pub(crate) fn with_context(&self, context: Arc<dyn StepUpSink>) -> Self {
        Self {
            data: self.data.clone(),
            context: Some(context),
        }
    }

    /// The subject (`sub`): the user, or the client itself for machine tokens.
    #[must_use]
    pub fn sub(&self) -> &str {
        &self.data.sub
    }

    /// The OAuth client the token was issued to (`client_id`, RFC 9068 §2.2,
    /// or the claim the issuer's [`ClaimMapping`](crate::ClaimMapping) names).
    #[must_use]
    pub fn client_id(&self) -> &str {
        &self.data.client_id
    }

    /// The issuer (`iss`) of the token.
    #[must_use]
    pub fn issuer(&self) -> &str {
        self.data
            .claims
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The granted scopes, as the token lists them.
    #[must_use]
    pub fn scopes(&self) -> &[String] {
        &self.data.scopes
    }

    /// Whether `scope` was granted, or is implied by a granted scope in the
    /// guard's [scope hierarchy](crate::GuardBuilder::scope_implies).
    #[must_use]
    pub fn has_scope(&self, scope: &str) -> bool {
        self.data.effective.iter().any(|s| s == scope)
    }

    /// Whether the token was issued to a client for itself (client
    /// credentials), not to a client acting for a user.
    ///
    /// RFC 9068 §2.2: when no resource owner is involved, `sub` is the
    /// client's own identifier; Concierge follows it, and tokens obtained by
    /// exchange carry an `act` claim instead. So this is `sub == client_id`
    /// without `act`. Issuers that name machine subjects otherwise (Auth0's
    /// `<client>@clients`) are not recognised.
    ///
    /// ```
    /// use concierge_guard::{Actor, Principal};
    /// assert!(Principal::builder().subject("svc").client_id("svc").build().is_client());
    /// assert!(!Principal::builder().subject("alice").client_id("svc").build().is_client());
    /// assert!(!Principal::builder().subject("svc").client_id("svc").act(Actor::new("x")).build().is_client());
    /// ```
    #[must_use]
    pub fn is_client(&self) -> bool {
        self.data.sub == self.data.client_id && self.data.act.is_empty()
    }

    /// The delegation chain from the `act` claim, current actor first; empty
    /// when the token was not obtained by token exchange.
    #[must_use]
    pub fn act(&self) -> &[Actor] {
        &self.data.act
    }

    /// Expiry (`exp`), in seconds since the Unix epoch.
    #[must_use]
    pub fn expires_at(&self) -> i64 {
        self.data.expires_at
    }

    /// The DPoP key the token is bound to (`cnf.jkt`, RFC 9449 §6.1), if any.
    /// The guard has checked the request's proof of that key.
    #[must_use]
    pub fn dpop_jkt(&self) -> Option<&str> {
        self.data.claims.get("cnf")?.get("jkt")?.as_str()
    }

    /// Every claim of the token, as sent.
    #[must_use]
    pub fn claims(&self) -> &Value {
        &self.data.claims
    }

    /// The claims as your own type, for custom claims.
    ///
    /// ```
    /// #[derive(serde::Deserialize)]
    /// struct Tenant { tenant: String, #[serde(default)] roles: Vec<String> }
    ///
    /// let p = concierge_guard::Principal::builder().claim("tenant", "acme").build();
    /// let t: Tenant = p.claims_as()?;
    /// assert_eq!(t.tenant, "acme");
    /// assert!(t.roles.is_empty());
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// When the claims do not deserialize into `T`.
    pub fn claims_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.data.claims)
    }

    /// The scopes of `required` that were not granted (nor implied).
    #[must_use]
    pub fn missing_scopes<'a>(&self, required: &'a [String]) -> Vec<&'a str> {
        required
            .iter()
            .filter(|s| !self.has_scope(s))
            .map(String::as_str)
            .collect()
    }

    /// Whether the principal satisfies `rule`.
    ///
    /// ```
    /// use concierge_guard::{Principal, ScopeRule};
    /// let p = Principal::builder().scopes(["notes:admin"]).build();
    /// assert!(p.satisfies(&ScopeRule::any_of(["notes:write", "notes:admin"])));
    /// ```
    #[must_use]
    pub fn satisfies(&self, rule: &ScopeRule) -> bool {
        rule.is_satisfied_by(|s| self.has_scope(s))
    }

    /// Step-up from inside a handler or tool: `Ok` when every scope is
    /// granted, otherwise a [`StepUp`] naming them. Returned from an rmcp tool
    /// (`?` turns it into rmcp's `ErrorData`) or an axum handler, it makes
    /// the guard answer `403 insufficient_scope` with
    /// `scope="<the request's scopes> <these>"` — the challenge MCP clients
    /// answer by asking the user for more (RFC 6750 §3.1). Use it for
    /// decisions that depend on the arguments; fixed needs belong in the
    /// [declared rules](crate::GuardBuilder::tool_scopes).
    ///
    /// ```
    /// # fn run(principal: concierge_guard::Principal, shared: bool) -> Result<(), concierge_guard::StepUp> {
    /// if shared {
    ///     principal.require_scopes(["notes:share"])?;
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The [`StepUp`] when a scope is missing.
    pub fn require_scopes<I, S>(&self, scopes: I) -> Result<(), StepUp>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let rule = ScopeRule::all(scopes);
        if self.satisfies(&rule) {
            Ok(())
        } else {
            Err(self.insufficient_scope(rule.preferred().iter().cloned()))
        }
    }

    /// Like [`require_scopes`](Self::require_scopes) for a rule with
    /// alternatives; the challenge names the first alternative.
    ///
    /// ```
    /// use concierge_guard::{Principal, ScopeRule};
    /// let p = Principal::builder().scopes(["notes:read"]).build();
    /// let err = p.require(&ScopeRule::any_of(["notes:write", "notes:admin"])).unwrap_err();
    /// assert_eq!(err.challenge().to_string(), r#"Bearer error="insufficient_scope", scope="notes:write""#);
    /// ```
    ///
    /// # Errors
    ///
    /// The [`StepUp`] when no alternative is satisfied.
    pub fn require(&self, rule: &ScopeRule) -> Result<(), StepUp> {
        if self.satisfies(rule) {
            Ok(())
        } else {
            Err(self.insufficient_scope(rule.preferred().iter().cloned()))
        }
    }

    /// A "needs these scopes" outcome, for a tool that decides by itself.
    ///
    /// ```
    /// let p = concierge_guard::Principal::builder().build();
    /// let step_up = p.insufficient_scope(["notes:share"]);
    /// assert_eq!(step_up.challenge().http_status(), 403);
    /// ```
    #[must_use]
    pub fn insufficient_scope<I, S>(&self, scopes: I) -> StepUp
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        StepUp::scopes(scopes).in_context(self.context.clone())
    }

    /// Step-up of the user's authentication (RFC 9470): `Ok` when the token's
    /// `acr` is one of `acr_values` (when any are given) and its `auth_time`
    /// is at most `max_age` old (when given). Otherwise a [`StepUp`] the
    /// guard answers with `401 insufficient_user_authentication`, naming
    /// `acr_values` and `max_age`, so the client signs the user in again.
    ///
    /// ```
    /// use std::time::Duration;
    /// let p = concierge_guard::Principal::builder().claim("acr", "urn:mace:incommon:iap:silver").build();
    /// assert!(p.require_authentication(["urn:mace:incommon:iap:silver"], None).is_ok());
    /// let err = p.require_authentication(["phr"], Some(Duration::from_secs(300))).unwrap_err();
    /// assert_eq!(err.challenge().http_status(), 401);
    /// ```
    ///
    /// # Errors
    ///
    /// The [`StepUp`] when the authentication is not strong or recent enough.
    pub fn require_authentication<I, S>(
        &self,
        acr_values: I,
        max_age: Option<Duration>,
    ) -> Result<(), StepUp>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let acr_values: Vec<String> = acr_values.into_iter().map(Into::into).collect();
        let claims = &self.data.claims;
        let acr_ok = acr_values.is_empty()
            || claims
                .get("acr")
                .and_then(Value::as_str)
                .is_some_and(|acr| acr_values.iter().any(|v| v == acr));
        let max_age_secs = max_age.map(|d| d.as_secs());
        let recent = max_age_secs.is_none_or(|max| {
            claims
                .get("auth_time")
                .and_then(Value::as_i64)
                .is_some_and(|t| {
                    unix_now().saturating_sub(t) <= i64::try_from(max).unwrap_or(i64::MAX)
                })
        });
        if acr_ok && recent {
            return Ok(());
        }
        Err(StepUp::from_need(Need::Authentication {
            acr_values,
            max_age: max_age_secs,
        })
        .in_context(self.context.clone()))
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("sub", &self.data.sub)
            .field("client_id", &self.data.client_id)
            .field("scopes", &self.data.scopes)
            .field("act", &self.data.act)
            .field("expires_at", &self.data.expires_at)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Principal`] by hand, for tests of handlers and tools. Start with
/// [`Principal::builder`]. The claims are assembled from the settings, so
/// [`Principal::claims_as`] sees them too.
#[derive(Debug, Clone)]
#[must_use = "call .build()"]
pub struct PrincipalBuilder {
    sub: String,
    client_id: String,
    scopes: Vec<String>,
    hierarchy: ScopeHierarchy,
    act: Vec<Actor>,
    expires_at: Option<i64>,
    claims: Map<String, Value>,
}

impl Default for PrincipalBuilder {
    fn default() -> Self {
        Self {
            sub: "user".into(),
            client_id: "client".into(),
            scopes: Vec::new(),
            hierarchy: ScopeHierarchy::default(),
            act: Vec::new(),
            expires_at: None,
            claims: Map::new(),
        }
    }
}

impl PrincipalBuilder {
    /// The subject (`sub`).
    pub fn subject(mut self, sub: impl Into<String>) -> Self {
        self.sub = sub.into();
        self
    }

    /// The client (`client_id`).
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = client_id.into();
        self
    }

    /// The granted scopes.
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// The scope hierarchy [`Principal::has_scope`] applies, as the guard would.
    pub fn scope_hierarchy(mut self, hierarchy: ScopeHierarchy) -> Self {
        self.hierarchy = hierarchy;
        self
    }

    /// Appends an actor to the `act` chain (current actor first).
    pub fn act(mut self, actor: Actor) -> Self {
        self.act.push(actor);
        self
    }

    /// The expiry (`exp`), in seconds since the Unix epoch (default: in an hour).
    pub fn expires_at(mut self, exp: i64) -> Self {
        self.expires_at = Some(exp);
        self
    }

    /// Binds the principal to a DPoP key (`cnf.jkt`).
    pub fn dpop_jkt(self, jkt: impl Into<String>) -> Self {
        self.claim("cnf", json!({ "jkt": jkt.into() }))
    }

    /// Any other claim; set after the standard ones, so it may override them.
    pub fn claim(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.claims.insert(name.into(), value.into());
        self
    }

    /// The principal.
    #[must_use]
    pub fn build(self) -> Principal {
        let expires_at = self.expires_at.unwrap_or_else(|| unix_now() + 3600);
        let mut claims = Map::new();
        claims.insert("sub".into(), json!(self.sub));
        claims.insert("client_id".into(), json!(self.client_id));
        claims.insert("scope".into(), json!(self.scopes.join(" ")));
        claims.insert("exp".into(), json!(expires_at));
        let mut act = Value::Null;
        for actor in self.act.iter().rev() {
            let mut obj = Map::new();
            if let Some(sub) = &actor.sub {
                obj.insert("sub".into(), json!(sub));
            }
            if let Some(client_id) = &actor.client_id {
                obj.insert("client_id".into(), json!(client_id));
            }
            if !act.is_null() {
                obj.insert("act".into(), act);
            }
            act = Value::Object(obj);
        }
        if !act.is_null() {
            claims.insert("act".into(), act);
        }
        claims.extend(self.claims);
        PrincipalData {
            effective: self.hierarchy.expand(&self.scopes),
            sub: self.sub,
            client_id: self.client_id,
            scopes: self.scopes,
            act: self.act,
            expires_at,
            claims: Value::Object(claims),
        }
        .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_assembles_claims_and_applies_the_hierarchy() {
        let p = Principal::builder()
            .subject("alice")
            .client_id("agent")
            .scopes(["notes:write"])
            .scope_hierarchy(ScopeHierarchy::new().implies("notes:write", ["notes:read"]))
            .act(Actor::new("svc-a").with_client_id("a"))
            .act(Actor::new("svc-b"))
            .dpop_jkt("thumb")
            .expires_at(42)
            .build();
        assert!(p.has_scope("notes:read") && p.has_scope("notes:write"));
        assert_eq!(p.scopes(), ["notes:write"]);
        assert_eq!(p.claims()["act"]["sub"], "svc-a");
        assert_eq!(p.claims()["act"]["act"]["sub"], "svc-b");
        assert_eq!(p.act().len(), 2);
        assert_eq!(p.dpop_jkt(), Some("thumb"));
        assert_eq!(p.expires_at(), 42);
        assert_eq!(p.claims()["scope"], "notes:write");
        assert!(!p.is_client());
    }

    #[test]
    fn authentication_step_up_checks_acr_and_age() {
        let now = unix_now();
        let p = Principal::builder()
            .claim("acr", "mfa")
            .claim("auth_time", now - 600)
            .build();
        assert!(p.require_authentication(["mfa"], None).is_ok());
        assert!(
            p.require_authentication(Vec::<String>::new(), Some(Duration::from_secs(900)))
                .is_ok()
        );
        assert!(
            p.require_authentication(["mfa"], Some(Duration::from_secs(300)))
                .is_err()
        );
        assert!(p.require_authentication(["hwk"], None).is_err());
        let none = Principal::builder().build();
        assert!(
            none.require_authentication(Vec::<String>::new(), Some(Duration::from_secs(1)))
                .is_err()
        );
    }
}
