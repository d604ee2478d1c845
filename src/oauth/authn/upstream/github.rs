//! GitHub as an upstream provider: OAuth 2.0 (no ID token), so the user is read from the
//! REST API with the access token: `GET /user` (the numeric `id` is the stable subject; the
//! `login` can be renamed) and `GET /user/emails` (only a verified primary address is
//! reported as verified). The endpoints default to github.com's and can be pointed at GitHub
//! Enterprise Server.

use serde::Deserialize;

use super::{Identity, Provider, UpstreamError, get_json, token_error, token_request};
use crate::oauth::context::Context;

/// The issuer GitHub identities are linked under unless the provider names another.
pub const DEFAULT_ISSUER: &str = "https://github.com";
const AUTHORIZATION_ENDPOINT: &str = "https://github.com/login/oauth/authorize";
const TOKEN_ENDPOINT: &str = "https://github.com/login/oauth/access_token";
const API: &str = "https://api.github.com";
const ACCEPT: &str = "application/vnd.github+json";

pub fn authorization_endpoint(p: &Provider) -> &str {
    p.record
        .authorization_endpoint
        .as_deref()
        .unwrap_or(AUTHORIZATION_ENDPOINT)
}

#[derive(Deserialize)]
struct GithubUser {
    id: u64,
    login: String,
    name: Option<String>,
    email: Option<String>,
}

#[derive(Deserialize)]
struct GithubEmail {
    email: String,
    primary: bool,
    verified: bool,
}

/// Redeem the code (GitHub answers errors with 200 and an `error` member) and read the user.
pub async fn redeem(
    ctx: &Context,
    p: &Provider,
    code: &str,
    verifier: &str,
    redirect_uri: &str,
) -> Result<Identity, UpstreamError> {
    let endpoint = p.record.token_endpoint.as_deref().unwrap_or(TOKEN_ENDPOINT);
    let form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("code_verifier", verifier),
    ];
    // GitHub documents the secret in the body.
    let (status, json) = token_request(ctx, p, endpoint, form, false).await?;
    let access_token = match json.get("access_token").and_then(|t| t.as_str()) {
        Some(t) if status == 200 && json.get("error").is_none() => t.to_string(),
        _ => return Err(token_error(status, &json)),
    };
    let api = p
        .record
        .userinfo_endpoint
        .as_deref()
        .unwrap_or(API)
        .trim_end_matches('/');
    let user: GithubUser = serde_json::from_value(
        get_json(ctx, &format!("{api}/user"), ACCEPT, Some(&access_token)).await?,
    )
    .map_err(|e| UpstreamError::Invalid(format!("GET /user: {e}")))?;
    // Without the `user:email` scope this is refused; the public address is then unverified.
    let emails: Vec<GithubEmail> = match get_json(
        ctx,
        &format!("{api}/user/emails"),
        ACCEPT,
        Some(&access_token),
    )
    .await
    {
        Ok(v) => serde_json::from_value(v).unwrap_or_default(),
        Err(e) => {
            tracing::info!(error = %e, "GitHub addresses unavailable");
            Vec::new()
        }
    };
    let (email, email_verified) = match emails.iter().find(|e| e.primary && e.verified) {
        Some(e) => (Some(e.email.clone()), Some(true)),
        None => (user.email.clone(), Some(false)),
    };
    Ok(Identity {
        issuer: p.issuer().to_string(),
        subject: user.id.to_string(),
        email,
        email_verified,
        name: user.name.or(Some(user.login)),
    })
}
