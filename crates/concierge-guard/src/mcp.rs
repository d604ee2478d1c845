//! rmcp integration (feature `rmcp`): the [`Principal`] as a tool parameter,
//! scopes declared on the tools themselves, and one call that mounts a
//! protected streamable-HTTP service.
//!
//! ```no_run
//! use concierge_guard::rmcp::scopes;
//! use concierge_guard::{Guard, Principal};
//! use rmcp::handler::server::router::tool::ToolRouter;
//! use rmcp::{ErrorData, ServerHandler, tool, tool_handler, tool_router};
//!
//! #[derive(Clone)]
//! struct Notes {
//!     tool_router: ToolRouter<Self>,
//! }
//!
//! #[tool_router]
//! impl Notes {
//!     #[tool(description = "Who is calling.")]
//!     async fn whoami(&self, principal: Principal) -> String {
//!         principal.sub().to_owned()
//!     }
//!
//!     #[tool(description = "Add a note.", meta = scopes(["notes:write"]))]
//!     async fn add_note(&self, principal: Principal) -> Result<String, ErrorData> {
//!         principal.require_scopes(["notes:write"])?; // already checked by the guard
//!         Ok("added".into())
//!     }
//! }
//!
//! #[tool_handler(router = self.tool_router)]
//! impl ServerHandler for Notes {}
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let guard = Guard::builder("https://auth.example.com", "https://mcp.example.com/mcp")
//!     .required_scopes(["notes:read"])
//!     .tools(&Notes::tool_router()) // reads the scopes declared on the tools
//!     .build()
//!     .await?;
//! let app = guard.mcp_router(|| Ok(Notes { tool_router: Notes::tool_router() }));
//! # let _: axum::Router = app;
//! # Ok(()) }
//! ```

use std::sync::Arc;

use ::rmcp::handler::server::common::{AsRequestContext, FromContextPart};
use ::rmcp::handler::server::router::prompt::PromptRouter;
use ::rmcp::handler::server::router::tool::ToolRouter;
use ::rmcp::model::MetaObject;
use ::rmcp::service::RequestContext;
use ::rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use ::rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService,
};
use ::rmcp::{ErrorData, RoleServer, ServerHandler};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::GuardBuilder;
use crate::extract::Claims;
use crate::guard::Guard;
use crate::principal::{BearerToken, Principal};
use crate::scopes::ScopeRule;

/// The `_meta` key the scope declarations are kept under.
const SECURITY_SCHEMES: &str = "securitySchemes";

/// Declares on a `#[tool]` or `#[prompt]` that it needs every one of
/// `scopes`: `#[tool(description = "…", meta = scopes(["notes:write"]))]`.
/// [`GuardBuilder::tools`] reads it, so the rule travels with the tool and
/// cannot be lost by renaming it.
///
/// The declaration is also what `tools/list` shows clients, as
/// `_meta.securitySchemes` (`[{"type": "oauth2", "scopes": [...]}]`, the
/// per-tool shape of the OpenAI Apps SDK), so clients may ask for the scopes
/// before calling.
///
/// ```
/// let meta = concierge_guard::rmcp::scopes(["notes:write"]);
/// assert_eq!(
///     serde_json::to_value(&meta).unwrap(),
///     serde_json::json!({"securitySchemes": [{"type": "oauth2", "scopes": ["notes:write"]}]}),
/// );
/// ```
#[must_use]
pub fn scopes<I, S>(scopes: I) -> MetaObject
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    rule(&ScopeRule::all(scopes))
}

/// Declares that any one of `scopes` is enough (see [`scopes`]).
///
/// ```
/// let meta = concierge_guard::rmcp::any_scope(["notes:write", "notes:admin"]);
/// # let _ = meta;
/// ```
#[must_use]
pub fn any_scope<I, S>(scopes: I) -> MetaObject
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    rule(&ScopeRule::any_of(scopes))
}

/// Declares a [`ScopeRule`] (see [`scopes`]).
///
/// ```
/// use concierge_guard::ScopeRule;
/// let meta = concierge_guard::rmcp::rule(&ScopeRule::all(["a", "b"]).or(ScopeRule::all(["admin"])));
/// # let _ = meta;
/// ```
#[must_use]
pub fn rule(rule: &ScopeRule) -> MetaObject {
    let mut meta = MetaObject::default();
    meta.0
        .insert(SECURITY_SCHEMES.into(), rule.to_security_schemes());
    meta
}

/// The rule declared in a `_meta`, if any.
fn declared(meta: Option<&MetaObject>) -> Result<Option<ScopeRule>, String> {
    match meta.and_then(|m| m.0.get(SECURITY_SCHEMES)) {
        None | Some(Value::Null) => Ok(None),
        Some(schemes) => ScopeRule::from_security_schemes(schemes),
    }
}

impl GuardBuilder {
    /// Registers the server's tools: their names (so a rule naming another
    /// tool fails [`build`](Self::build)) and the scopes declared on them
    /// with [`scopes`], [`any_scope`] or [`rule`].
    ///
    /// ```no_run
    /// # use rmcp::handler::server::router::tool::ToolRouter;
    /// # fn run(router: ToolRouter<()>) {
    /// let builder = concierge_guard::Guard::builder("https://auth.example.com", "https://mcp.example.com/mcp")
    ///     .tools(&router)
    ///     .tool_scopes("add_nte", ["notes:write"]); // a typo: build() fails, naming the tools there are
    /// # let _ = builder;
    /// # }
    /// ```
    pub fn tools<S>(self, router: &ToolRouter<S>) -> Self
    where
        S: Send + Sync + 'static,
    {
        router.list_all().into_iter().fold(self, |b, tool| {
            let rule = declared(tool.meta.as_ref());
            b.declare_tool(tool.name.into_owned(), rule)
        })
    }

    /// Registers the server's prompts (see [`tools`](Self::tools)).
    pub fn prompts<S>(self, router: &PromptRouter<S>) -> Self
    where
        S: Send + Sync + 'static,
    {
        router.list_all().into_iter().fold(self, |b, prompt| {
            let rule = declared(prompt.meta.as_ref());
            b.declare_prompt(prompt.name, rule)
        })
    }
}

/// The principal the guard put in the request, from rmcp's context: rmcp's
/// streamable HTTP service hands tools the request's `http::request::Parts`,
/// whose extensions the guard's layer filled.
fn principal_of(context: &RequestContext<RoleServer>) -> Option<Principal> {
    context.extensions.get::<Principal>().cloned().or_else(|| {
        context
            .extensions
            .get::<http::request::Parts>()?
            .extensions
            .get::<Principal>()
            .cloned()
    })
}

fn no_principal() -> ErrorData {
    // Only reachable when the rmcp service is served without the guard's layer.
    tracing::error!(
        target: "concierge_guard",
        "a tool takes Principal but no GuardLayer runs in front of the rmcp service"
    );
    ErrorData::internal_error("no validated principal for this request", None)
}

/// `principal: Principal` as a parameter of an rmcp `#[tool]` or `#[prompt]`.
impl<C: AsRequestContext> FromContextPart<C> for Principal {
    fn from_context_part(context: &mut C) -> Result<Self, ErrorData> {
        principal_of(context.as_request_context()).ok_or_else(no_principal)
    }
}

/// `token: BearerToken` as a tool parameter: the request's token, for token
/// exchange (never forward it).
impl<C: AsRequestContext> FromContextPart<C> for BearerToken {
    fn from_context_part(context: &mut C) -> Result<Self, ErrorData> {
        let context = context.as_request_context();
        context
            .extensions
            .get::<BearerToken>()
            .cloned()
            .or_else(|| {
                context
                    .extensions
                    .get::<http::request::Parts>()?
                    .extensions
                    .get::<BearerToken>()
                    .cloned()
            })
            .ok_or_else(no_principal)
    }
}

/// `Claims(claims): Claims<T>` as a tool parameter: the token's claims as `T`;
/// claims that do not fit are an `invalid_request` error.
impl<C: AsRequestContext, T: DeserializeOwned> FromContextPart<C> for Claims<T> {
    fn from_context_part(context: &mut C) -> Result<Self, ErrorData> {
        let principal = principal_of(context.as_request_context()).ok_or_else(no_principal)?;
        Claims::of(&principal).map_err(|e| ErrorData::invalid_request(e, None))
    }
}

impl Guard {
    /// The path the MCP endpoint is served at: the resource URI's path
    /// (`/mcp` for `https://mcp.example.com/mcp`).
    #[must_use]
    pub fn mcp_path(&self) -> String {
        match self.inner.resource_url.path() {
            "" => "/".to_owned(),
            p => p.to_owned(),
        }
    }

    /// The `Host` values rmcp's DNS-rebinding check lets through: the
    /// resource's host (any port), and the loopback names when the resource
    /// itself is on loopback.
    #[must_use]
    pub fn allowed_hosts(&self) -> Vec<String> {
        let url = &self.inner.resource_url;
        let mut hosts = Vec::new();
        if let Some(host) = url.host_str() {
            hosts.push(host.to_owned());
        }
        let loopback = match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        if loopback {
            for name in ["localhost", "127.0.0.1", "::1"] {
                if !hosts.iter().any(|h| h.trim_matches(['[', ']']) == name) {
                    hosts.push(name.to_owned());
                }
            }
        }
        hosts
    }

    /// The rmcp streamable-HTTP settings [`mcp_router`](Self::mcp_router)
    /// uses: [`allowed_hosts`](Self::allowed_hosts); stateless (every POST
    /// carries its token and is authorized on its own, so no session outlives
    /// the token that opened it); JSON answers for simple calls, so a tool's
    /// [`StepUp`](crate::StepUp) can become the HTTP challenge.
    #[must_use]
    pub fn mcp_config(&self) -> StreamableHttpServerConfig {
        StreamableHttpServerConfig::default()
            .with_legacy_session_mode(false)
            .with_json_response(true)
            .with_allowed_hosts(self.allowed_hosts())
    }

    /// The whole protected MCP endpoint as an axum `Router`: rmcp's
    /// streamable-HTTP service for the handlers `factory` makes, at
    /// [`mcp_path`](Self::mcp_path), behind this guard's layer, with the
    /// RFC 9728 metadata routes (public) beside it.
    ///
    /// ```no_run
    /// # #[derive(Clone)] struct Notes;
    /// # impl rmcp::ServerHandler for Notes {}
    /// # async fn run(guard: concierge_guard::Guard) -> std::io::Result<()> {
    /// let app = guard.mcp_router(|| Ok(Notes));
    /// let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
    /// axum::serve(listener, app).await
    /// # }
    /// ```
    pub fn mcp_router<S, F>(&self, factory: F) -> axum::Router
    where
        S: ServerHandler + Send + 'static,
        F: Fn() -> Result<S, std::io::Error> + Send + Sync + 'static,
    {
        self.mcp_router_with(factory, self.mcp_config())
    }

    /// [`mcp_router`](Self::mcp_router) with your own rmcp settings (start
    /// from [`mcp_config`](Self::mcp_config)).
    pub fn mcp_router_with<S, F>(
        &self,
        factory: F,
        config: StreamableHttpServerConfig,
    ) -> axum::Router
    where
        S: ServerHandler + Send + 'static,
        F: Fn() -> Result<S, std::io::Error> + Send + Sync + 'static,
    {
        let service: StreamableHttpService<S, LocalSessionManager> =
            StreamableHttpService::new(factory, Arc::default(), config);
        axum::Router::new()
            .route_service(&self.mcp_path(), service)
            .layer(self.layer())
            .merge(self.metadata_router())
    }
}
