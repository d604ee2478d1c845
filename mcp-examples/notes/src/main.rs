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
    /// This server's client id at the issuer, registered for the CIBA grant: `delete_note`
    /// asks users' approval with it (`concierge client add --grant-type
    /// urn:openid:params:grant-type:ciba …`).
    #[arg(long, env = "NOTES_CLIENT_ID", requires = "client_secret")]
    client_id: Option<String>,
    /// That client's secret.
    #[arg(long, env = "NOTES_CLIENT_SECRET", hide_env_values = true)]
    client_secret: Option<String>,
    /// Seconds `delete_note` waits for the user before answering `approval_pending`.
    #[arg(long, default_value_t = 20)]
    approval_wait_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    mcp_notes::init_tracing();
    let args = Args::parse();
    let resource = args
        .resource
        .unwrap_or_else(|| format!("http://{}/mcp", args.listen));
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let mut config = NotesConfig::new(args.issuer, resource.clone());
    if let (Some(id), Some(secret)) = (args.client_id, args.client_secret) {
        config = config.approvals(id, secret);
    }
    config.approval_wait = std::time::Duration::from_secs(args.approval_wait_secs);
    let router = app(config).await?;
    println!("listening on {resource}");
    axum::serve(listener, router).await?;
    Ok(())
}
