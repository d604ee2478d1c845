//! Every route in one place: the map of the server. Each is registered once, through
//! utoipa's `OpenApiRouter`, so the OpenAPI document ([`openapi`]) is collected from the
//! same list that serves requests and cannot drift from it.

use std::sync::OnceLock;

use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::admin::{self, audit, clients, consents, delegations, id_jag, keys, resources, users};
use crate::endpoints::{
    account, authorize, backchannel, device, health, introspect, jwks, passkeys, register, revoke,
    signin, token, upstream, userinfo, well_known,
};
use crate::http::cors::PublicLayer;
use crate::oauth::client_metadata::MAX_BODY_BYTES;
use crate::state::AppState;

async fn passkey_script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        crate::ui::PASSKEY_SCRIPT,
    )
}

async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        crate::ui::STYLESHEET,
    )
}

/// The admin API (`/admin/v1`): every route behind the admin token check, so none can be
/// left unprotected.
fn admin_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(resources::list, resources::create))
        .routes(routes!(resources::get, resources::delete))
        .routes(routes!(
            resources::list_exchanges,
            resources::allow_exchange,
            resources::deny_exchange
        ))
        .routes(routes!(clients::list, clients::create))
        .routes(routes!(clients::metadata_documents))
        .routes(routes!(clients::get, clients::update, clients::delete))
        .routes(routes!(clients::rotate_secret))
        .routes(routes!(resources::update))
        .routes(routes!(users::list, users::create))
        .routes(routes!(users::get, users::update, users::delete))
        .routes(routes!(users::set_password))
        .routes(routes!(users::identities, users::link, users::unlink))
        .routes(routes!(users::unlock))
        .routes(routes!(users::reset_factors))
        .routes(routes!(users::disable))
        .routes(routes!(users::enable))
        .routes(routes!(users::require_password_change))
        .routes(routes!(consents::list, consents::revoke))
        .routes(routes!(delegations::list))
        .routes(routes!(delegations::cut))
        .routes(routes!(keys::list))
        .routes(routes!(keys::rotate))
        .routes(routes!(keys::revoke))
        .routes(routes!(audit::list))
        .routes(routes!(id_jag::list, id_jag::trust))
        .routes(routes!(id_jag::distrust))
        .route_layer(axum::middleware::from_fn(admin::auth::require_admin))
}

/// Every route under the issuer's path: the endpoints clients call (documented, with CORS for
/// browser-based clients), the pages (for browsers, never cross-origin), and the admin API.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(<admin::openapi::Doc as utoipa::OpenApi>::openapi())
        .merge(cross_origin_routes().layer(PublicLayer))
        .merge(page_routes())
        .merge(admin_routes())
}

/// What browser-based MCP clients call directly: discovery, keys, the token endpoint and
/// its companions, registration. CORS (any origin, no credentials) on these only.
fn cross_origin_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(well_known::metadata))
        .route(
            "/.well-known/openid-configuration",
            get(well_known::metadata),
        )
        .routes(routes!(jwks::jwks))
        .routes(routes!(token::token))
        .routes(routes!(revoke::revoke))
        .routes(routes!(userinfo::get, userinfo::post))
        .routes(routes!(register::register))
        .routes(routes!(register::read, register::update, register::delete))
        .route("/openapi.json", get(serve_openapi))
}

/// The authorization endpoint and its steps, sign-in, the account pages, the device pages;
/// introspection and device authorization (for servers and devices): no CORS, ever (a
/// cross-origin script must not drive them).
fn page_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(authorize::authorize_get, authorize::authorize_post))
        .route("/authorize/continue", get(authorize::resume))
        .route("/authorize/decision", post(authorize::decision))
        .route("/signin", get(signin::page).post(signin::submit))
        .route("/signin/code", post(signin::submit_code))
        .route("/signin/enroll", post(signin::submit_enroll))
        .route("/signout", post(signin::signout))
        .route("/account/apps", get(account::apps))
        .route("/account/apps/revoke", post(account::revoke))
        .route("/account/apps/cut", post(account::cut))
        .route("/account/approvals", get(backchannel::page))
        .route("/account/approvals/decide", post(backchannel::decide))
        .route("/account/security", get(account::security))
        .route("/account/security/password", post(account::password))
        .route("/account/security/sessions/end", post(account::end_session))
        .route(
            "/account/security/identities/unlink",
            post(account::unlink_identity),
        )
        .route("/account/security/totp/start", post(account::totp_start))
        .route(
            "/account/security/totp/confirm",
            post(account::totp_confirm),
        )
        .route("/account/security/totp/remove", post(account::totp_remove))
        .route(
            "/account/security/recovery-codes",
            post(account::recovery_codes),
        )
        .route("/signin/passkey/options", post(passkeys::signin_options))
        .route("/signin/passkey", post(passkeys::signin))
        .route(
            "/signin/code/passkey/options",
            post(passkeys::second_options),
        )
        .route("/signin/code/passkey", post(passkeys::second))
        .route(
            "/account/security/passkeys/options",
            post(passkeys::register_options),
        )
        .route("/account/security/passkeys", post(passkeys::register))
        .route("/account/security/passkeys/rename", post(passkeys::rename))
        .route("/account/security/passkeys/remove", post(passkeys::remove))
        .route("/signin/upstream/{id}", get(upstream::start))
        .route("/signin/upstream/{id}/callback", get(upstream::callback))
        .route("/account/security/identities/link", post(upstream::link))
        .route("/static/concierge.css", get(stylesheet))
        .route("/static/passkey.js", get(passkey_script))
        // Servers and devices, not browsers.
        .routes(routes!(introspect::introspect))
        .routes(routes!(device::authorization))
        .routes(routes!(backchannel::authorize))
        .route("/device", get(device::page).post(device::enter))
        .route("/device/decision", post(device::decision))
}

/// The OpenAPI 3.1 document: every documented route, as the committed
/// `openapi/concierge.json` holds it (a test fails when the two drift). Paths are relative
/// to the issuer URL.
pub fn openapi() -> utoipa::openapi::OpenApi {
    admin::openapi::finish(routes().into_openapi())
}

/// The document as the committed file holds it: pretty JSON with a final newline.
pub fn openapi_json() -> String {
    let mut s = openapi().to_pretty_json().unwrap_or_default();
    s.push('\n');
    s
}

/// `GET /openapi.json`.
async fn serve_openapi() -> impl IntoResponse {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    Json(DOC.get_or_init(openapi).clone())
}

/// Health and metrics: for load balancers, orchestrators and Prometheus, not for clients.
/// `/metrics` needs the configured bearer token, when there is one.
fn operational_routes(state: &AppState) -> Router<AppState> {
    let metrics = match &state.oauth.config.metrics.bearer_token {
        Some(token) => {
            let expected = crate::util::secret_hash(token);
            get(health::metrics).route_layer(axum::middleware::from_fn(
                move |req: axum::extract::Request, next: axum::middleware::Next| {
                    let allowed = crate::http::bearer_token(req.headers())
                        .is_some_and(|t| crate::util::verify_secret(t, &expected));
                    async move {
                        if allowed {
                            next.run(req).await
                        } else {
                            crate::error::ApiError::unauthorized(
                                None,
                                "metrics need the configured bearer token (metrics.bearer_token)",
                            )
                            .into_response()
                        }
                    }
                },
            ))
        }
        None => get(health::metrics),
    };
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", metrics)
}

/// The management listener's router (`metrics.listen`): health and metrics only.
pub fn management(state: AppState) -> Router {
    operational_routes(&state).with_state(state)
}

/// Build the router. Endpoints live under the issuer's path (`base_path`, "" for an issuer
/// at the root), and the well-known documents are also served in the path-inserted form
/// (RFC 8414 §3.1) and the appended form (OpenID Connect Discovery §4).
pub fn build(state: AppState) -> Router {
    let base_path = state.web.base_path().to_string();
    let (api, _) = routes()
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .split_for_parts();
    let mut app = Router::new();
    if base_path.is_empty() {
        app = app.merge(api);
    } else {
        let path_inserted = Router::new()
            .route(
                &format!("/.well-known/oauth-authorization-server{base_path}"),
                get(well_known::metadata),
            )
            .route(
                &format!("/.well-known/openid-configuration{base_path}"),
                get(well_known::metadata),
            )
            .layer(PublicLayer);
        app = app.nest(&base_path, api).merge(path_inserted);
    }
    let app = if state.oauth.config.metrics.listen.is_some() {
        app
    } else {
        app.merge(operational_routes(&state))
    };
    let body_timeout =
        std::time::Duration::from_secs(u64::from(state.oauth.config.http.body_timeout_secs.max(1)));
    app.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        body_timeout,
    ))
    .layer(
        tower_http::trace::TraceLayer::new_for_http().make_span_with(
            // Method and path only: query strings may carry codes or state. DEBUG, so
            // only built when logs or the trace exporter want it (see `telemetry`).
            |req: &axum::http::Request<_>| {
                tracing::debug_span!("request", method = %req.method(), path = %req.uri().path())
            },
        ),
    )
    // Outermost: the request id and access log, the wait for the disk, the metrics, the Host
    // check, the state for the admin token check, `nosniff` (`crate::http::front`).
    .layer(axum::middleware::from_fn_with_state(
        state.clone(),
        crate::http::front::layer,
    ))
    .with_state(state)
}
