//! A small protected HTTP API in front of Concierge.
//!
//! ```text
//! concierge serve &                                   # issuer http://localhost:8080
//! concierge resource add --uri http://127.0.0.1:3000/mcp --name Notes \
//!     --scope 'notes:read=Read notes' --scope 'notes:write=Write notes'
//! cargo run -p concierge-guard --example notes_http -- http://localhost:8080
//! curl -i -X POST http://127.0.0.1:3000/mcp           # 401 with the challenge
//! curl http://127.0.0.1:3000/.well-known/oauth-protected-resource/mcp
//! ```
//!
//! The first argument is the issuer (default `http://localhost:8080`), the
//! second the address to listen on (default `127.0.0.1:3000`).

use axum::Router;
use axum::routing::{get, post};
use concierge_guard::{Guard, Principal};

/// Stands in for an MCP endpoint: answers with what the guard let through.
async fn mcp(principal: Principal, body: String) -> String {
    format!(
        "{} (client {}) may {:?}; you sent {} bytes\n",
        principal.sub(),
        principal.client_id(),
        principal.scopes(),
        body.len()
    )
}

async fn hello(principal: Option<Principal>) -> String {
    match principal {
        Some(p) => format!("hello {}\n", p.sub()),
        None => "hello stranger\n".to_owned(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let issuer = args
        .next()
        .unwrap_or_else(|| "http://localhost:8080".into());
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:3000".into());
    let resource = format!("http://{listen}/mcp");

    let guard = Guard::builder(issuer, resource.as_str())
        .required_scopes(["notes:read"])
        .tool_scopes("add_note", ["notes:write"])
        .resource_name("Notes (example)")
        .build()
        .await?;

    let app = Router::new()
        .route("/mcp", post(mcp))
        .layer(guard.layer())
        .merge(
            Router::new()
                .route("/hello", get(hello))
                .layer(guard.layer().optional()),
        )
        .merge(guard.metadata_router());

    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!(
        "protecting {resource}; metadata at {}",
        guard.metadata_url()
    );
    axum::serve(listener, app).await?;
    Ok(())
}
