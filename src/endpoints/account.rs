//! `GET /account/apps` and `POST /account/apps/revoke`: every agent a user connected, and a
//! way to disconnect it (the consent goes, and its refresh tokens stop working at once).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use minijinja::context;

use crate::audit::{Event, Kind};
use crate::oauth::consent::identity_key;
use crate::oauth::resource::ResourceUri;
use crate::state::AppState;
use crate::ui::see_other;
use crate::util;

pub async fn apps(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let ctx = &state.oauth;
    let user = match super::current_session(&state, &headers).await {
        Ok(Some((_, user))) => user,
        Ok(None) => return super::to_signin(&state, &state.web.path("/account/apps"), None),
        Err(page) => return *page,
    };
    let consents = match ctx.consents().list_consents(&user.id).await {
        Ok(c) => c,
        Err(e) => return state.web.internal_error(e),
    };
    let mut apps = Vec::new();
    for c in consents {
        let client_name = match ctx.clients.find(&c.client_id).await {
            Ok(Some(client)) => client.display_name(),
            _ => format!("{} (no longer registered)", c.client_id),
        };
        let resource_name = if c.resource == identity_key(ctx) {
            "Your identity".to_string()
        } else {
            let found = match ResourceUri::parse(&c.resource) {
                Ok(uri) => ctx.resources.get(&uri).await.ok().flatten(),
                Err(_) => None,
            };
            found.map_or_else(|| c.resource.clone(), |r| r.name.clone())
        };
        let scopes: Vec<&str> = c.scopes.split(' ').filter(|s| !s.is_empty()).collect();
        apps.push(context! {
            client_id => c.client_id,
            client_name => client_name,
            resource => c.resource,
            resource_name => resource_name,
            scopes => scopes,
            approved => util::rfc3339(c.created_at),
            last_used => c.last_used_at.map(util::rfc3339).unwrap_or_else(|| "never".into()),
        });
    }
    let web = &state.web;
    let browser = web.browser(&headers);
    let page = web.render(
        StatusCode::OK,
        "apps.html",
        context! {
            base => web.base_path(),
            username => user.username,
            apps => apps,
            csrf => web.csrf(&browser),
        },
    );
    browser.apply(page)
}

pub async fn revoke(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let ctx = &state.oauth;
    let form = match state.web.posted_form(&headers, &body) {
        Ok(f) => f,
        Err(page) => return *page,
    };
    let user = match super::current_session(&state, &headers).await {
        Ok(Some((_, user))) => user,
        Ok(None) => return see_other(&state.web.path("/signin")),
        Err(page) => return *page,
    };
    let (Some(client_id), Some(resource)) = (form.get("client_id"), form.get("resource")) else {
        return state
            .web
            .error_page(StatusCode::BAD_REQUEST, "Choose an app to revoke.");
    };
    match ctx
        .consents()
        .revoke_consent(&user.id, client_id, resource, ctx.now())
        .await
    {
        Ok(revoked) => {
            tracing::info!(user_id = %user.id, client_id = %client_id, "consent revoked");
            if revoked {
                ctx.audit.record(
                    Event::new(Kind::ConsentRevoked)
                        .client(client_id)
                        .user(&user.id)
                        .detail(serde_json::json!({ "resource": resource })),
                );
            }
            see_other(&state.web.path("/account/apps"))
        }
        Err(e) => state.web.internal_error(e),
    }
}
