//! The OpenAPI 3.1 document's frame: its description, tags and security schemes ([`Doc`]),
//! and the finishing touches [`finish`] gives the paths `crate::router` collects (the admin
//! token requirement, unique operation ids). Served at `GET /openapi.json` and committed as
//! `openapi/concierge.json` (a test fails when the two drift).
//!
//! Paths are relative to the issuer URL (an issuer with a path serves them under it).

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::oauth::admin_token::ADMIN_SCOPE;

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
        (name = "id-jag", description = "Enterprise IdPs whose ID-JAGs this server redeems (MCP enterprise-managed authorization)"),
        (name = "clients", description = "Pre-registered and dynamically registered clients; cached metadata documents"),
        (name = "users", description = "Local accounts and their consents"),
        (name = "keys", description = "Signing keys"),
        (name = "audit", description = "The audit log"),
        (name = "oauth", description = "The public OAuth 2.1 / OpenID Connect endpoints"),
    )
)]
pub struct Doc;

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

/// Finish the collected document: every `/admin/v1` operation requires an admin token, the
/// discovery document is listed under both of its names, operation ids are unique.
pub fn finish(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
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
    // One handler serves both discovery documents.
    if let Some(item) = doc
        .paths
        .paths
        .get("/.well-known/oauth-authorization-server")
        .cloned()
    {
        doc.paths
            .paths
            .insert("/.well-known/openid-configuration".into(), item);
    }
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
