//! Every route in one place: the map of the server.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::routing::get;
use tower_http::cors::{Any, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::endpoints::{
    account, authorize, device, health, introspect, jwks, register, revoke, signin, token,
    userinfo, well_known,
};
use crate::oauth::client_metadata::MAX_BODY_BYTES;
use crate::startup::AppState;

async fn stylesheet() -> impl axum::response::IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        crate::ui::STYLESHEET,
    )
}

/// CORS for the endpoints browser-based MCP clients call directly (DESIGN.md §5): any origin,
/// no credentials.
fn public_cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("dpop"),
            HeaderName::from_static("mcp-protocol-version"),
        ])
        .expose_headers([
            header::WWW_AUTHENTICATE,
            header::RETRY_AFTER,
            HeaderName::from_static("dpop-nonce"),
        ])
}

/// Build the router. `issuer_path` is the issuer URL's path ("" for an issuer at the root):
/// endpoints live under it, and the well-known documents are also served in the
/// path-inserted form (RFC 8414 §3.1) and the appended form (OpenID Connect Discovery §4).
pub fn build(state: AppState, issuer_path: &str) -> Router {
    // The admin API (/admin/v1): every route behind the admin token check.
    let (admin, _) = crate::admin::router().split_for_parts();
    let admin = admin.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        crate::admin::auth::require_admin,
    ));
    let api = Router::new()
        .route("/jwks", get(jwks::jwks))
        .route(
            "/authorize",
            get(authorize::authorize_get).post(authorize::authorize_post),
        )
        .route(
            "/authorize/decision",
            axum::routing::post(authorize::decision),
        )
        .route("/signin", get(signin::page).post(signin::submit))
        .route("/signout", axum::routing::post(signin::signout))
        .route("/account/apps", get(account::apps))
        .route("/account/apps/revoke", axum::routing::post(account::revoke))
        .route("/userinfo", get(userinfo::get).post(userinfo::post))
        .route("/static/concierge.css", get(stylesheet))
        .route("/token", axum::routing::post(token::token))
        .route("/introspect", axum::routing::post(introspect::introspect))
        .route(
            "/device_authorization",
            axum::routing::post(device::authorization),
        )
        .route("/device", get(device::page).post(device::enter))
        .route("/device/decision", axum::routing::post(device::decision))
        .route("/revoke", axum::routing::post(revoke::revoke))
        .route("/register", axum::routing::post(register::register))
        .route(
            "/register/{client_id}",
            get(register::read)
                .put(register::update)
                .delete(register::delete),
        )
        .route(
            "/.well-known/openid-configuration",
            get(well_known::metadata),
        )
        .route("/openapi.json", get(crate::admin::openapi::serve))
        .merge(admin)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));

    let mut app = Router::new();
    if issuer_path.is_empty() {
        app = app.merge(api).route(
            "/.well-known/oauth-authorization-server",
            get(well_known::metadata),
        );
    } else {
        app = app
            .nest(issuer_path, api)
            .route(
                &format!("/.well-known/oauth-authorization-server{issuer_path}"),
                get(well_known::metadata),
            )
            .route(
                &format!("/.well-known/openid-configuration{issuer_path}"),
                get(well_known::metadata),
            );
    }
    let app = app
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(crate::metrics::endpoint));
    app.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        crate::metrics::track,
    ))
    .layer(public_cors())
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
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
        .with_state(state)
}
