//! The OpenAPI 3.1 document: the admin API (collected from its `OpenApiRouter`) and the
//! public OAuth endpoints (annotated on their handlers), served at `GET /openapi.json` and
//! committed as `openapi/concierge.json` (a test fails when the two drift).
//!
//! Paths are relative to the issuer URL (an issuer with a path serves them under it).

use axum::Json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::manage::ADMIN_SCOPE;

/// The admin API's part: description, tags and how it authenticates.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Concierge",
        description = "OAuth 2.1 / OpenID Connect authorization server for AI agents and MCP \
servers. The public OAuth endpoints, and the admin API under `/admin/v1`.\n\n\
Admin API: every call needs an admin access token (`Authorization: Bearer …`): a JWT issued \
by this server with the client credentials grant to a pre-registered admin client, with \
`resource=<issuer>/admin/v1` and `scope=admin` (`concierge admin-client create` makes such a \
client). Without a valid token: 401 with `WWW-Authenticate: Bearer`; with a valid token that \
is not an admin token: 403. Errors are `{\"error\": {\"code\", \"message\", \"field\"}}`; \
lists are `{\"items\": […], \"next\": cursor|null}` with `limit` and `cursor` parameters.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&AdminSecurity),
    tags(
        (name = "resources", description = "Protected resources, their scopes and token exchange policies"),
        (name = "clients", description = "Pre-registered and dynamically registered clients; cached metadata documents"),
        (name = "users", description = "Local accounts and their consents"),
        (name = "keys", description = "Signing keys"),
        (name = "audit", description = "The audit log"),
        (name = "oauth", description = "The public OAuth 2.1 / OpenID Connect endpoints"),
    )
)]
pub struct AdminDoc;

/// The public endpoints.
#[derive(OpenApi)]
#[openapi(paths(
    crate::endpoints::token::token,
    crate::endpoints::authorize::authorize_get,
    crate::endpoints::authorize::authorize_post,
    crate::endpoints::register::register,
    crate::endpoints::register::read,
    crate::endpoints::register::update,
    crate::endpoints::register::delete,
    crate::endpoints::introspect::introspect,
    crate::endpoints::revoke::revoke,
    crate::endpoints::device::authorization,
    crate::endpoints::userinfo::get,
    crate::endpoints::userinfo::post,
    crate::endpoints::jwks::jwks,
    crate::endpoints::well_known::metadata,
))]
pub struct PublicDoc;

const ADMIN_TOKEN: &str = "admin_token";

/// Security schemes, and the admin token requirement on every `/admin/v1` operation.
struct AdminSecurity;

impl Modify for AdminSecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            ADMIN_TOKEN,
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An admin access token: client credentials, resource \
                         <issuer>/admin/v1, scope admin",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "access_token",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "registration_access_token",
            SecurityScheme::Http(Http::builder().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The whole document.
pub fn document() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = super::router().split_for_parts();
    let requirement = SecurityRequirement::new(ADMIN_TOKEN, [ADMIN_SCOPE]);
    for (path, item) in doc.paths.paths.iter_mut() {
        if path.starts_with("/admin/") {
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                op.security = Some(vec![requirement.clone()]);
                op.responses.responses.insert(
                    "401".into(),
                    utoipa::openapi::Response::new(
                        "No admin access token, or not a valid one; `WWW-Authenticate: Bearer`",
                    )
                    .into(),
                );
                op.responses.responses.insert(
                    "403".into(),
                    utoipa::openapi::Response::new(
                        "A valid access token that is not an admin token",
                    )
                    .into(),
                );
            }
        }
    }
    let mut public = PublicDoc::openapi();
    // One handler serves both discovery documents.
    if let Some(item) = public
        .paths
        .paths
        .get("/.well-known/oauth-authorization-server")
        .cloned()
    {
        public
            .paths
            .paths
            .insert("/.well-known/openid-configuration".into(), item);
    }
    doc.merge(public);
    // Handler names repeat across modules (`list`, `get`): derive unique operation ids from
    // method and path instead, e.g. `getAdminV1ResourcesUri`.
    for (path, item) in doc.paths.paths.iter_mut() {
        for (method, op) in [
            ("get", &mut item.get),
            ("put", &mut item.put),
            ("post", &mut item.post),
            ("delete", &mut item.delete),
            ("patch", &mut item.patch),
        ] {
            if let Some(op) = op {
                op.operation_id = Some(operation_id(method, path));
            }
        }
    }
    doc
}

fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_string();
    for word in path.split(|c: char| !c.is_ascii_alphanumeric()) {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            id.push(first.to_ascii_uppercase());
            id.extend(chars);
        }
    }
    id
}

/// The document as the committed file holds it: pretty JSON with a final newline.
pub fn document_json() -> String {
    let mut s = document().to_pretty_json().unwrap_or_default();
    s.push('\n');
    s
}

/// `GET /openapi.json`.
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(document())
}
