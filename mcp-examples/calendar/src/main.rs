//! `mcp-calendar --listen 127.0.0.1:3002 --issuer URL --notes URL --client-id ID
//!  (--client-secret S | --client-key key.pem [--client-key-id KID]) [--resource URL]`

use clap::Parser;
use concierge_guard::{Algorithm, ClientCredentials};
use mcp_calendar::{CalendarConfig, app};

/// The calendar MCP server: calls notes on the user's behalf through token exchange.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3002")]
    listen: String,
    /// The authorization server's issuer URL.
    #[arg(long, env = "CALENDAR_ISSUER")]
    issuer: String,
    /// This server's resource URI (default `http://<listen>/mcp`).
    #[arg(long)]
    resource: Option<String>,
    /// The notes server's resource URI.
    #[arg(long, default_value = "http://127.0.0.1:3001/mcp")]
    notes: String,
    /// Calendar's client id at the issuer.
    #[arg(long, env = "CALENDAR_CLIENT_ID", default_value = "calendar-server")]
    client_id: String,
    /// Its secret (client_secret_basic).
    #[arg(long, env = "CALENDAR_CLIENT_SECRET", conflicts_with = "client_key")]
    client_secret: Option<String>,
    /// Or a PEM EC P-256 private key file (private_key_jwt, ES256).
    #[arg(long, required_unless_present = "client_secret")]
    client_key: Option<std::path::PathBuf>,
    /// The `kid` of that key among the client's registered keys.
    #[arg(long)]
    client_key_id: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    mcp_notes::init_tracing();
    let args = Args::parse();
    let credentials = match (args.client_secret, args.client_key) {
        (Some(secret), _) => ClientCredentials::secret_basic(&args.client_id, secret),
        (None, Some(path)) => {
            let pem = std::fs::read(&path)?;
            let key = jsonwebtoken::EncodingKey::from_ec_pem(&pem)?;
            ClientCredentials::private_key_jwt(
                &args.client_id,
                key,
                Algorithm::ES256,
                args.client_key_id,
            )
        }
        (None, None) => anyhow::bail!("give --client-secret or --client-key"),
    };
    let resource = args
        .resource
        .unwrap_or_else(|| format!("http://{}/mcp", args.listen));
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let router = app(CalendarConfig {
        issuer: args.issuer,
        resource: resource.clone(),
        notes: args.notes,
        credentials,
    })
    .await?;
    println!("listening on {resource}");
    axum::serve(listener, router).await?;
    Ok(())
}
