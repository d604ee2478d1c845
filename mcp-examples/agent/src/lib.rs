//! A command-line MCP agent on rmcp's OAuth client (`rmcp::transport::auth`).
//!
//! [`Agent::connect`] does what the MCP authorization specification asks of a client:
//! 1. sends an unauthenticated request and reads the 401's `WWW-Authenticate` challenge
//!    (`resource_metadata`, `scope`);
//! 2. lets rmcp discover the protected resource metadata (RFC 9728) and the authorization
//!    server's metadata (RFC 8414), then register by Dynamic Client Registration (RFC 7591)
//!    — or use a Client ID Metadata Document URL when one is given and the server supports it;
//! 3. hands the authorization URL (PKCE S256, `resource`) to the caller, who prints it and may
//!    open a browser, and waits for the code on a loopback redirect (RFC 8252 §7.3);
//! 4. redeems the code (checking the RFC 9207 `iss`), then talks MCP over streamable HTTP with
//!    rmcp's `AuthClient`, which refreshes the access token when it is about to expire.

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use axum::Router;
use axum::extract::{RawQuery, State};
use axum::response::Html;
use axum::routing::get;
use rmcp::model::{CallToolRequestParams, ClientConfig};
use rmcp::service::RunningService;
use rmcp::transport::auth::OAuthState;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{AuthClient, AuthorizationRequest, StreamableHttpClientTransport};
use rmcp::{RoleClient, ServiceExt as _};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// How the agent connects.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The MCP server's URL, e.g. `http://127.0.0.1:3001/mcp`.
    pub server: String,
    /// Loopback port for the redirect (0: any free one).
    pub redirect_port: u16,
    /// An https Client ID Metadata Document URL to use as `client_id` instead of registering.
    pub client_metadata_url: Option<String>,
    /// The name shown on the consent screen (when registering).
    pub client_name: String,
    /// Scopes to ask for; empty: those the server's challenge and metadata name.
    pub scopes: Vec<String>,
    /// How long to wait for the browser to come back.
    pub timeout: Duration,
}

impl AgentOptions {
    /// Defaults for `server`.
    pub fn new(server: impl Into<String>) -> Self {
        Self {
            server: server.into(),
            redirect_port: 0,
            client_metadata_url: None,
            client_name: "Concierge example agent".into(),
            scopes: Vec::new(),
            timeout: Duration::from_secs(300),
        }
    }
}

/// A connected, authorized MCP client.
pub struct Agent {
    auth: AuthClient<reqwest::Client>,
    service: RunningService<RoleClient, ClientConfig>,
}

/// The server's challenge to an unauthenticated request.
async fn challenge(server: &str) -> anyhow::Result<String> {
    let body = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "mcp-agent", "version": env!("CARGO_PKG_VERSION")}}});
    let res = reqwest::Client::new()
        .post(server)
        .header("accept", "application/json, text/event-stream")
        .json(&body)
        .send()
        .await
        .with_context(|| format!("cannot reach {server}"))?;
    if res.status() != reqwest::StatusCode::UNAUTHORIZED {
        bail!(
            "{server} answered {} without a token; this agent expects a protected server (401)",
            res.status()
        );
    }
    res.headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("{server} answered 401 without a WWW-Authenticate challenge"))
}

/// Waits on `listener` for the authorization server's redirect; returns its full URL.
async fn receive_redirect(
    listener: tokio::net::TcpListener,
    redirect_uri: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    let (tx, mut rx) = mpsc::channel::<String>(1);
    let base = redirect_uri.to_owned();
    let app = Router::new()
        .route(
            "/callback",
            get(
                |State((tx, base)): State<(mpsc::Sender<String>, String)>,
                 RawQuery(query): RawQuery| async move {
                    let _ = tx
                        .send(format!("{base}?{}", query.unwrap_or_default()))
                        .await;
                    Html(
                        "<!doctype html><title>Signed in</title>\
                         <p>The agent has your authorization; you can close this tab.</p>",
                    )
                },
            ),
        )
        .with_state((tx, base));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let got = tokio::time::timeout(timeout, rx.recv()).await;
    server.abort();
    got.context("timed out waiting for the browser to come back")?
        .ok_or_else(|| anyhow!("the redirect listener stopped"))
}

/// Best effort: open `url` in the user's browser.
pub fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else if cfg!(target_os = "windows") {
        "explorer"
    } else {
        "xdg-open"
    };
    let _ = std::process::Command::new(opener)
        .arg(url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

impl Agent {
    /// Authorize against `opts.server` and connect. `show` gets the authorization URL
    /// (print it, open a browser, or — in tests — play the browser).
    pub async fn connect(opts: &AgentOptions, show: impl FnOnce(&str)) -> anyhow::Result<Self> {
        let challenge = challenge(&opts.server).await?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", opts.redirect_port))
            .await
            .context("cannot listen for the redirect on loopback")?;
        let redirect_uri = format!(
            "http://127.0.0.1:{}/callback",
            listener.local_addr()?.port()
        );

        let mut state = OAuthState::new(opts.server.as_str(), None).await?;
        let mut request = AuthorizationRequest::new(&redirect_uri)
            .with_client_name(&opts.client_name)
            .with_challenge(&challenge);
        if let Some(url) = &opts.client_metadata_url {
            request = request.with_client_metadata_url(url);
        }
        if !opts.scopes.is_empty() {
            request = request.with_scopes(opts.scopes.iter());
        }
        state
            .start_authorization(request)
            .await
            .context("discovery or client registration failed")?;
        show(&state.get_authorization_url().await?);

        let callback = receive_redirect(listener, &redirect_uri, opts.timeout).await?;
        state
            .handle_callback_url(&callback)
            .await
            .context("the authorization did not complete")?;
        let manager = state
            .into_authorization_manager()
            .ok_or_else(|| anyhow!("not authorized after the callback"))?;
        let auth = AuthClient::new(reqwest::Client::new(), manager);
        let transport = StreamableHttpClientTransport::with_client(
            auth.clone(),
            StreamableHttpClientTransportConfig::with_uri(opts.server.as_str()),
        );
        let service = ClientConfig::default().serve(transport).await?;
        Ok(Self { auth, service })
    }

    /// The tools the server offers.
    pub async fn tools(&self) -> anyhow::Result<Vec<String>> {
        Ok(self
            .service
            .list_all_tools()
            .await?
            .into_iter()
            .map(|t| t.name.to_string())
            .collect())
    }

    /// Calls `tool` with `args` (a JSON object); returns the structured content, or the
    /// text content as a JSON string.
    pub async fn call(&self, tool: &str, args: Value) -> anyhow::Result<Value> {
        let mut params = CallToolRequestParams::new(tool.to_owned());
        if let Value::Object(map) = args {
            params = params.with_arguments(map);
        }
        let result = self.service.call_tool(params).await?;
        let value = result.structured_content.clone().unwrap_or_else(|| {
            Value::String(
                result
                    .content
                    .iter()
                    .filter_map(|c| c.as_text().map(|t| t.text.clone()))
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        });
        if result.is_error == Some(true) {
            bail!("{tool} failed: {value}");
        }
        Ok(value)
    }

    /// The current access token, refreshed first when it is about to expire.
    pub async fn access_token(&self) -> anyhow::Result<String> {
        Ok(self.auth.get_access_token().await?)
    }

    /// Closes the MCP connection.
    pub async fn close(self) -> anyhow::Result<()> {
        self.service.cancel().await?;
        Ok(())
    }
}
