//! `GET /account/apps` and `POST /account/apps/revoke`: every agent a user connected, and a
//! way to disconnect it (the consent goes, and its refresh tokens stop working at once).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use minijinja::context;

use crate::audit::{Event, Kind};
use crate::startup::AppState;
use crate::ui::{self, Browser, see_other};
use crate::util;

pub async fn apps(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some((_, user)) = ui::current_session(&state, &headers).await else {
        let back = format!("{}/account/apps", state.base_path);
        return see_other(&format!(
            "{}/signin?{}",
            state.base_path,
            serde_urlencoded::to_string([("return_to", back)]).unwrap_or_default()
        ));
    };
    let consents = match state.store.list_consents(&user.id).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "listing consents");
            return ui::error_page(
                &state,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Your apps could not be loaded.",
            );
        }
    };
    let mut apps = Vec::new();
    for c in consents {
        let client_name = match state.clients.find(&c.client_id).await {
            Ok(Some(client)) => client.display_name(),
            _ => format!("{} (no longer registered)", c.client_id),
        };
        let resource_name = if c.resource == crate::oauth::consent::identity_key(&state) {
            "Your identity".to_string()
        } else {
            match state.store.get_resource(&c.resource).await {
                Ok(Some(r)) => r.name,
                _ => c.resource.clone(),
            }
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
    let browser = Browser::from_headers(&state, &headers);
    let page = state.pages.render(
        StatusCode::OK,
        "apps.html",
        context! {
            base => state.base_path.as_ref(),
            username => user.username,
            apps => apps,
            csrf => browser.csrf(&state),
        },
    );
    browser.apply(page)
}

pub async fn revoke(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let form = match ui::posted_form(&state, &headers, &body) {
        Ok(f) => f,
        Err(page) => return *page,
    };
    let Some((_, user)) = ui::current_session(&state, &headers).await else {
        return see_other(&format!("{}/signin", state.base_path));
    };
    let (Some(client_id), Some(resource)) = (form.get("client_id"), form.get("resource")) else {
        return ui::error_page(&state, StatusCode::BAD_REQUEST, "Choose an app to revoke.");
    };
    match state
        .store
        .revoke_consent(&user.id, client_id, resource, util::now())
        .await
    {
        Ok(revoked) => {
            tracing::info!(user_id = %user.id, client_id = %client_id, "consent revoked");
            if revoked {
                state.audit.record(
                    Event::new(Kind::ConsentRevoked)
                        .client(client_id)
                        .user(&user.id)
                        .detail(serde_json::json!({ "resource": resource })),
                );
            }
            see_other(&format!("{}/account/apps", state.base_path))
        }
        Err(e) => {
            tracing::error!(error = %e, "revoking consent");
            ui::error_page(
                &state,
                StatusCode::INTERNAL_SERVER_ERROR,
                "The app could not be revoked.",
            )
        }
    }
}
