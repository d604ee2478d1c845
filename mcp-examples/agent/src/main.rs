//! `mcp-agent --server http://127.0.0.1:3001/mcp [--client-metadata-url URL] [TOOL [JSON]]`

use clap::Parser;
use mcp_agent::{Agent, AgentOptions, open_browser};

/// A command-line MCP agent: signs you in with OAuth (rmcp's auth client) and calls tools.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The MCP server's URL.
    #[arg(long, default_value = "http://127.0.0.1:3001/mcp")]
    server: String,
    /// Use this https Client ID Metadata Document URL as client_id instead of registering.
    #[arg(long)]
    client_metadata_url: Option<String>,
    /// Loopback port for the redirect (0: any free one).
    #[arg(long, default_value_t = 0)]
    redirect_port: u16,
    /// Scopes to ask for (default: what the server asks for).
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// Do not try to open a browser.
    #[arg(long)]
    no_browser: bool,
    /// The tool to call (default: list the tools and call `whoami`).
    tool: Option<String>,
    /// Its arguments, a JSON object.
    #[arg(default_value = "{}")]
    args: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut opts = AgentOptions::new(&args.server);
    opts.client_metadata_url = args.client_metadata_url;
    opts.redirect_port = args.redirect_port;
    opts.scopes = args.scopes;
    let no_browser = args.no_browser;
    let agent = Agent::connect(&opts, |url| {
        println!("Open this link to sign in and approve:\n\n  {url}\n");
        if !no_browser {
            open_browser(url);
        }
    })
    .await?;
    println!("tools: {}", agent.tools().await?.join(", "));
    let tool = args.tool.unwrap_or_else(|| "whoami".into());
    let call_args: serde_json::Value = serde_json::from_str(&args.args)?;
    let answer = agent.call(&tool, call_args).await?;
    println!("{tool}: {}", serde_json::to_string_pretty(&answer)?);
    agent.close().await
}
