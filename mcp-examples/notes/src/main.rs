//! `mcp-notes --listen 127.0.0.1:3001 --issuer http://127.0.0.1:8080 [--resource URL]`

use clap::Parser;
use mcp_notes::{NotesConfig, app};

/// The notes MCP server, protected by concierge-guard.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3001")]
    listen: String,
    /// The authorization server's issuer URL.
    #[arg(long, env = "NOTES_ISSUER")]
    issuer: String,
    /// This server's resource URI (default `http://<listen>/mcp`).
    #[arg(long)]
    resource: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    mcp_notes::init_tracing();
    let args = Args::parse();
    let resource = args
        .resource
        .unwrap_or_else(|| format!("http://{}/mcp", args.listen));
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let router = app(NotesConfig::new(args.issuer, resource.clone())).await?;
    println!("listening on {resource}");
    axum::serve(listener, router).await?;
    Ok(())
}
