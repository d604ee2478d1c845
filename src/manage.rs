//! Administrative operations shared by the CLI (`src/main.rs`) and the admin API
//! (`src/admin/`): the checks and the writes, written once. Errors name the field at fault so
//! both callers can say exactly what is wrong.

use std::collections::BTreeMap;

use crate::error::ApiError;
use crate::oauth::admin_token::{ADMIN_SCOPE, admin_resource_uri};
use crate::oauth::authn::acr::{self, Level};
use crate::oauth::authn::{linking, password, throttle};
use crate::oauth::client_metadata::{self, Origin, RawClientMetadata};
use crate::oauth::grants::GrantRegistry;
use crate::oauth::registration::new_client;
use crate::oauth::resource::{
    Alg, DetailsTypeDef, DpopPolicy, Resource, ResourceUri, ScopeDef, parse_token_alg,
};
use crate::store::{
    ClientKind, ClientRecord, ExchangePolicy, LinkedBy, LinkedIdentity, Store, StoreError,
    TrustedIssuer, User,
};
use crate::util;

/// What went wrong with an administrative operation.
#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    /// The input is wrong; `field` names it (`redirect_uris[0]`, `scopes[1].name`, …).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for ManageError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => Self::Conflict(format!("{what} already exists")),
            other => Self::Store(other),
        }
    }
}

pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> ManageError {
    ManageError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// Register the admin API as a resource with the [`ADMIN_SCOPE`] scope, unless it is there.
pub async fn ensure_admin_resource(store: &dyn Store, issuer: &str) -> Result<(), ManageError> {
    let resource = Resource::new(
        &admin_resource_uri(issuer),
        "Concierge admin API",
        vec![ScopeDef {
            name: ADMIN_SCOPE.to_string(),
            description: "Administer this server: clients, users, resources, keys and the \
                          audit log"
                .to_string(),
            tools: Vec::new(),
        }],
        util::now(),
    )
    .map_err(|e| invalid("issuer", e))?;
    match store.insert_resource(&resource.to_record()).await {
        Ok(()) | Err(StoreError::Conflict(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Does `issuer` agree with the server's? A running server registers its admin API as a
/// resource of its own issuer at start-up; an admin client made for another issuer (a CLI
/// run without the server's `--issuer`, say) would get tokens the server refuses, so that is
/// an error naming the server's issuer.
pub async fn check_admin_issuer(store: &dyn Store, issuer: &str) -> Result<(), ManageError> {
    let wanted = admin_resource_uri(issuer);
    let registered: Vec<String> = store
        .list_resources()
        .await?
        .into_iter()
        .filter(|r| r.uri.ends_with("/admin/v1") && r.scopes.iter().any(|s| s.name == ADMIN_SCOPE))
        .map(|r| r.uri)
        .collect();
    if registered.is_empty() || registered.contains(&wanted) {
        return Ok(());
    }
    let servers: Vec<&str> = registered
        .iter()
        .map(|u| u.trim_end_matches("/admin/v1"))
        .collect();
    Err(invalid(
        "issuer",
        format!(
            "this command's issuer is {issuer}, but the server's is {}: pass --issuer {} (or \
             the same --config as the server)",
            servers.join(" or "),
            servers[0]
        ),
    ))
}

/// What a resource may have besides its URI, name and scopes.
#[derive(Debug, Clone, Default)]
pub struct ResourceOptions {
    /// Other URIs that name it.
    pub aliases: Vec<String>,
    /// `ES256` (default) or `RS256`: how its access tokens are signed.
    pub token_alg: Option<String>,
    /// `off`, `optional` (default) or `required`: whether it takes DPoP-bound tokens.
    pub dpop: Option<String>,
    /// The `acr` every sign-in for it must reach (`urn:concierge:acr:mfa`, `phr`).
    pub required_acr: Option<String>,
    /// RFC 9396 types it accepts (`oauth::details_type`).
    pub details_types: Vec<DetailsTypeDef>,
}

/// A resource's required `acr`: one this server issues, or `none` for no requirement.
fn required_acr(value: &str) -> Result<Option<Level>, ManageError> {
    if value == "none" {
        return Ok(None);
    }
    Level::from_acr(value).map(Some).ok_or_else(|| {
        invalid(
            "required_acr",
            format!(
                "{value:?} is not an authentication context this server issues ({}, or none)",
                acr::SUPPORTED.join(", ")
            ),
        )
    })
}

/// Check and register a resource, with other URIs that name it (`aliases`). No URI may name
/// two resources: neither the URI, an alias, nor either's trailing-slash twin may already name
/// one.
pub async fn create_resource(
    store: &dyn Store,
    uri: &str,
    name: &str,
    scopes: Vec<ScopeDef>,
    options: &ResourceOptions,
) -> Result<Resource, ManageError> {
    let aliases = &options.aliases;
    let token_alg = match &options.token_alg {
        Some(a) => parse_token_alg(a).map_err(|e| invalid("token_alg", e))?,
        None => Alg::ES256,
    };
    let dpop = match &options.dpop {
        Some(d) => DpopPolicy::parse(d).map_err(|e| invalid("dpop", e))?,
        None => DpopPolicy::default(),
    };
    let level = match &options.required_acr {
        Some(a) => required_acr(a)?,
        None => None,
    };
    let normal = resource_uri("uri", uri)?;
    check_scopes(&scopes)?;
    let mut names = vec![("uri".to_string(), normal.clone())];
    let mut alias_uris = Vec::new();
    for (i, a) in aliases.iter().enumerate() {
        let field = format!("aliases[{i}]");
        let a = resource_uri(&field, a)?;
        if names
            .iter()
            .any(|(_, n)| *n == a || n.trailing_slash_twin().as_ref() == Some(&a))
        {
            return Err(invalid(field, format!("{a} is listed twice")));
        }
        names.push((field, a.clone()));
        alias_uris.push(a);
    }
    for (field, n) in &names {
        for candidate in std::iter::once(n.clone()).chain(n.trailing_slash_twin()) {
            let taken = match store.get_resource(candidate.as_str()).await? {
                Some(r) => Some(r.uri),
                None => store.resource_for_alias(candidate.as_str()).await?,
            };
            match taken {
                Some(owner) if owner == candidate.as_str() => {
                    return Err(ManageError::Conflict(format!(
                        "{field}: the resource {owner} already exists"
                    )));
                }
                Some(owner) => {
                    return Err(ManageError::Conflict(format!(
                        "{field}: {candidate} already names the resource {owner}"
                    )));
                }
                None => {}
            }
        }
    }
    let resource = Resource::new(uri, name, scopes, util::now())
        .map_err(|e| invalid("name", e))?
        .with_aliases(alias_uris)
        .with_tokens(token_alg, dpop)
        .requiring(level)
        .accepting(options.details_types.clone())
        .map_err(|e| invalid("authorization_details_types", e))?;
    store.insert_resource(&resource.to_record()).await?;
    Ok(resource)
}

/// Each scope well-formed, none twice.
fn check_scopes(scopes: &[ScopeDef]) -> Result<(), ManageError> {
    for (i, s) in scopes.iter().enumerate() {
        s.check().map_err(|e| invalid(format!("scopes[{i}]"), e))?;
        if scopes[..i].iter().any(|o| o.name == s.name) {
            return Err(invalid(
                format!("scopes[{i}].name"),
                format!("scope {:?} is listed twice", s.name),
            ));
        }
    }
    Ok(())
}

/// A change to a resource: each field given replaces the stored one.
#[derive(Debug, Clone, Default)]
pub struct ResourceChange {
    pub name: Option<String>,
    /// The whole new list: scopes left out are no longer granted (tokens already issued keep
    /// them until they expire).
    pub scopes: Option<Vec<ScopeDef>>,
    pub token_alg: Option<String>,
    pub dpop: Option<String>,
    /// A new required `acr`, or `none` to require nothing beyond the server's policy.
    pub required_acr: Option<String>,
    /// The whole new list of RFC 9396 types it accepts.
    pub details_types: Option<Vec<DetailsTypeDef>>,
}

/// Change a registered resource's name, scopes or token settings. The admin API's own
/// resource is not changed here.
pub async fn update_resource(
    store: &dyn Store,
    issuer: &str,
    uri: &str,
    change: ResourceChange,
) -> Result<Resource, ManageError> {
    let normal = resource_uri("uri", uri)?;
    if normal.as_str() == admin_resource_uri(issuer) {
        return Err(invalid(
            "uri",
            "the admin API's resource is managed by the server",
        ));
    }
    let record = store
        .get_resource(normal.as_str())
        .await?
        .ok_or_else(|| ManageError::NotFound(format!("no resource {normal}")))?;
    let current = Resource::from_record(record.clone())?;
    let scopes = change.scopes.unwrap_or_else(|| record.scopes.clone());
    check_scopes(&scopes)?;
    let token_alg = match &change.token_alg {
        Some(a) => parse_token_alg(a).map_err(|e| invalid("token_alg", e))?,
        None => current.token_alg,
    };
    let dpop = match &change.dpop {
        Some(d) => DpopPolicy::parse(d).map_err(|e| invalid("dpop", e))?,
        None => current.dpop,
    };
    let level = match &change.required_acr {
        Some(a) => required_acr(a)?,
        None => current.required_acr,
    };
    let name = change.name.unwrap_or_else(|| record.name.clone());
    let updated = Resource::new(normal.as_str(), &name, scopes, record.created_at)
        .map_err(|e| invalid("name", e))?
        .with_aliases(current.aliases.clone())
        .with_tokens(token_alg, dpop)
        .requiring(level)
        .accepting(change.details_types.unwrap_or(current.details_types))
        .map_err(|e| invalid("authorization_details_types", e))?;
    if !store.update_resource(&updated.to_record()).await? {
        return Err(ManageError::NotFound(format!("no resource {normal}")));
    }
    Ok(updated)
}

/// Redeem ID-JAGs from an enterprise IdP (insert or replace its keys).
pub async fn trust_id_jag_issuer(store: &dyn Store, t: &TrustedIssuer) -> Result<(), ManageError> {
    t.check().map_err(|e| invalid("issuer", e))?;
    store.save_trusted_issuer(t, util::now()).await?;
    Ok(())
}

/// Add an upstream identity provider, its client secret sealed under the key-encryption
/// key.
pub async fn add_upstream(
    store: &dyn Store,
    kek: &crate::keys::Kek,
    provider: crate::store::UpstreamProvider,
    secret: Option<&str>,
) -> Result<(), ManageError> {
    provider.check().map_err(|e| invalid("provider", e))?;
    let secret_sealed = match secret.filter(|s| !s.is_empty()) {
        Some(s) => Some(
            kek.seal(
                &crate::oauth::authn::upstream::secret_kid(&provider.id),
                s.as_bytes(),
            )
            .map_err(|e| invalid("client_secret", format!("cannot be sealed: {e}")))?,
        ),
        None => None,
    };
    let stored = crate::store::StoredUpstream {
        provider,
        secret_sealed,
        created_at: util::now(),
    };
    store.insert_upstream(&stored).await?;
    Ok(())
}

/// Stop redeeming ID-JAGs from an IdP an operator added.
pub async fn distrust_id_jag_issuer(store: &dyn Store, issuer: &str) -> Result<(), ManageError> {
    if !store.delete_trusted_issuer(issuer).await? {
        return Err(ManageError::NotFound(format!(
            "no trusted IdP {issuer} in the database (the configuration file's are changed there)"
        )));
    }
    Ok(())
}

/// Remove a resource; returns its normalised URI.
pub async fn delete_resource(store: &dyn Store, uri: &str) -> Result<ResourceUri, ManageError> {
    let uri = resource_uri("uri", uri)?;
    if !store.delete_resource(uri.as_str()).await? {
        return Err(ManageError::NotFound(format!("no resource {uri}")));
    }
    Ok(uri)
}

/// A resource URI from input, normalised; `field` names it in the error.
pub fn resource_uri(field: &str, raw: &str) -> Result<ResourceUri, ManageError> {
    ResourceUri::parse(raw).map_err(|e| invalid(field, format!("the resource URI {e}")))
}

/// Let `client_id` exchange tokens for `source` into tokens for `target` with `scope_map`
/// (source scope → target scopes): both resources must exist and every scope must be theirs.
pub async fn allow_exchange(
    store: &dyn Store,
    target: &str,
    client_id: &str,
    source: &str,
    scope_map: BTreeMap<String, Vec<String>>,
) -> Result<ExchangePolicy, ManageError> {
    let target = resource_uri("target", target)?;
    let source = resource_uri("source", source)?;
    if client_id.is_empty() {
        return Err(invalid("client_id", "is required"));
    }
    let Some(target_resource) = store.get_resource(target.as_str()).await? else {
        return Err(invalid("target", format!("no resource {target}")));
    };
    let Some(source_resource) = store.get_resource(source.as_str()).await? else {
        return Err(invalid("source", format!("no resource {source}")));
    };
    if scope_map.is_empty() {
        return Err(invalid(
            "scope_map",
            "map at least one source scope to target scopes; unmapped scopes are never granted",
        ));
    }
    for (src, targets) in &scope_map {
        if !source_resource.scopes.iter().any(|s| &s.name == src) {
            return Err(invalid(
                format!("scope_map.{src}"),
                format!("{src} is not a scope of {source}"),
            ));
        }
        for (i, t) in targets.iter().enumerate() {
            if !target_resource.scopes.iter().any(|s| &s.name == t) {
                return Err(invalid(
                    format!("scope_map.{src}[{i}]"),
                    format!("{t} is not a scope of {target}"),
                ));
            }
        }
    }
    let policy = ExchangePolicy {
        target: target.to_string(),
        client_id: client_id.to_string(),
        source: source.to_string(),
        scope_map,
        created_at: util::now(),
    };
    store.save_exchange_policy(&policy).await?;
    Ok(policy)
}

/// Remove an exchange policy.
pub async fn deny_exchange(
    store: &dyn Store,
    target: &str,
    client_id: &str,
    source: &str,
) -> Result<(), ManageError> {
    let target = resource_uri("target", target)?;
    let source = resource_uri("source", source)?;
    if !store
        .delete_exchange_policy(target.as_str(), client_id, source.as_str())
        .await?
    {
        return Err(ManageError::NotFound("no such exchange policy".into()));
    }
    Ok(())
}

/// A client an operator pre-registers.
#[derive(Debug, Default, Clone)]
pub struct NewClient {
    pub name: String,
    /// Default: generated.
    pub client_id: Option<String>,
    pub redirect_uris: Vec<String>,
    /// Default: authorization_code and refresh_token.
    pub grant_types: Vec<String>,
    /// Default: client_secret_basic (RFC 7591 §2).
    pub auth_method: Option<String>,
    pub scope: Option<String>,
    pub jwks_uri: Option<String>,
    /// The client's public keys inline (a JWK Set), instead of `jwks_uri`.
    pub jwks: Option<serde_json::Value>,
    pub may_introspect: bool,
    /// May get tokens for the admin API (only `create_admin_client` sets this).
    pub admin: bool,
}

/// Check and store a pre-registered client. Returns the record and, for a confidential
/// client, its secret (shown once, stored as a hash). `given_secret` replaces the generated
/// secret (development and benchmarks).
pub async fn create_client(
    store: &dyn Store,
    grants: &GrantRegistry,
    new: NewClient,
    given_secret: Option<String>,
) -> Result<(ClientRecord, Option<String>), ManageError> {
    if let Some(id) = &new.client_id
        && (id.is_empty() || id.contains("://") || id.len() > 200)
    {
        return Err(invalid(
            "client_id",
            "must be 1 to 200 characters and not a URL",
        ));
    }
    if new.name.trim().is_empty() {
        return Err(invalid("client_name", "is required"));
    }
    let grant_types = if new.grant_types.is_empty() {
        vec!["authorization_code".into(), "refresh_token".into()]
    } else {
        new.grant_types
    };
    let raw = RawClientMetadata {
        client_name: Some(new.name),
        redirect_uris: Some(new.redirect_uris),
        grant_types: Some(grant_types),
        token_endpoint_auth_method: new.auth_method,
        scope: new.scope,
        jwks_uri: new.jwks_uri,
        jwks: new.jwks,
        ..Default::default()
    };
    let mut metadata = client_metadata::validate(raw, Origin::Operator, grants).map_err(|e| {
        let field = field_of(&e.description).unwrap_or("metadata").to_string();
        invalid(field, e.description.into_owned())
    })?;
    metadata.may_introspect = new.may_introspect;
    metadata.admin = new.admin;
    let (mut record, secrets) = new_client(
        metadata,
        ClientKind::Static,
        new.client_id,
        None,
        util::now(),
        0,
    );
    let mut secret = secrets.client_secret;
    if let Some(given) = given_secret {
        if !record.metadata.token_endpoint_auth_method.uses_secret() {
            return Err(invalid(
                "token_endpoint_auth_method",
                "a given secret needs client_secret_basic or client_secret_post",
            ));
        }
        if given.chars().count() < 32 {
            return Err(invalid("client_secret", "must have 32 characters or more"));
        }
        record.secret_hash = Some(util::secret_hash(&given));
        secret = None;
    }
    store.insert_client(&record).await?;
    Ok((record, secret))
}

/// The field a client-metadata error description starts with (`redirect_uris[0] is …`).
fn field_of(description: &str) -> Option<&str> {
    let first = description.split([' ', ':']).next()?;
    let name = first.split('[').next()?;
    (!name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_')).then_some(first)
}

/// Create a confidential client that may obtain admin access tokens through client
/// credentials, registering the admin resource first if needed. Returns the client and its
/// secret (shown once).
pub async fn create_admin_client(
    store: &dyn Store,
    issuer: &str,
    name: &str,
) -> Result<(ClientRecord, String), ManageError> {
    check_admin_issuer(store, issuer).await?;
    ensure_admin_resource(store, issuer).await?;
    let (record, secret) = create_client(
        store,
        &GrantRegistry::standard(),
        NewClient {
            name: name.to_string(),
            grant_types: vec!["client_credentials".into()],
            auth_method: Some("client_secret_basic".into()),
            scope: Some(ADMIN_SCOPE.into()),
            admin: true,
            ..Default::default()
        },
        None,
    )
    .await?;
    let secret =
        secret.ok_or_else(|| ManageError::Store(StoreError::Corrupt("no secret issued".into())))?;
    Ok((record, secret))
}

/// Check a username: 1 to 200 printable characters (surrounding space trimmed).
pub fn check_username(username: &str) -> Result<&str, ManageError> {
    let username = username.trim();
    if username.is_empty() || username.len() > 200 || username.chars().any(char::is_control) {
        return Err(invalid("username", "must be 1 to 200 printable characters"));
    }
    Ok(username)
}

/// Hash a new password (argon2id) after checking it. Slow on purpose: call it off the
/// async executor on request paths.
pub fn hash_new_password(password: &str) -> Result<String, ManageError> {
    password::check_new(password).map_err(|e| invalid("password", e))?;
    password::hash(password).map_err(|e| ManageError::Store(StoreError::Corrupt(e)))
}

/// How to reach a user and what to call them.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    pub email: Option<String>,
    /// The address is known to be theirs; needs an address.
    pub email_verified: bool,
    pub name: Option<String>,
}

fn check_profile(p: Profile) -> Result<Profile, ManageError> {
    let email = p
        .email
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty());
    if let Some(e) = &email
        && !linking::looks_like_email(e)
    {
        return Err(invalid("email", "must be an address like name@example.com"));
    }
    if p.email_verified && email.is_none() {
        return Err(invalid(
            "email_verified",
            "there is no email address to verify",
        ));
    }
    let name = p
        .name
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty());
    if name
        .as_deref()
        .is_some_and(|n| n.len() > 200 || n.chars().any(char::is_control))
    {
        return Err(invalid("name", "must be at most 200 printable characters"));
    }
    Ok(Profile {
        email,
        email_verified: p.email_verified,
        name,
    })
}

/// Store a new user with an already hashed password.
pub async fn create_user(
    store: &dyn Store,
    username: &str,
    profile: Profile,
    password_hash: String,
) -> Result<User, ManageError> {
    let username = check_username(username)?;
    let profile = check_profile(profile)?;
    let now = util::now();
    let user = User {
        id: util::random_id(),
        username: username.to_string(),
        email: profile.email,
        email_verified: profile.email_verified,
        name: profile.name,
        password_hash: Some(password_hash),
        disabled_at: None,
        password_change_required: false,
        created_at: now,
        updated_at: now,
    };
    store.insert_user(&user).await?;
    Ok(user)
}

/// A change to a user's profile: each field given replaces the stored one (`Some(None)`
/// clears it). A changed address is unverified unless `email_verified` says otherwise.
#[derive(Debug, Clone, Default)]
pub struct ProfileChange {
    pub email: Option<Option<String>>,
    pub email_verified: Option<bool>,
    pub name: Option<Option<String>>,
}

/// The user after `change` (pure; checked like a new user's profile).
pub fn changed_profile(user: &User, change: ProfileChange) -> Result<User, ManageError> {
    let email = change.email.clone().unwrap_or_else(|| user.email.clone());
    let same_email = email == user.email;
    let profile = check_profile(Profile {
        email,
        email_verified: change
            .email_verified
            .unwrap_or(same_email && user.email_verified),
        name: change.name.unwrap_or_else(|| user.name.clone()),
    })?;
    Ok(User {
        email: profile.email,
        email_verified: profile.email_verified,
        name: profile.name,
        ..user.clone()
    })
}

/// Change a user's profile (the user named by id).
pub async fn update_user(
    store: &dyn Store,
    user_id: &str,
    change: ProfileChange,
) -> Result<User, ManageError> {
    let user = store
        .get_user(user_id)
        .await?
        .ok_or_else(|| ManageError::NotFound(format!("no user with id {user_id}")))?;
    let now = util::now();
    let updated = User {
        updated_at: now,
        ..changed_profile(&user, change)?
    };
    if !store.update_profile(&updated, now).await? {
        return Err(ManageError::NotFound(format!("no user with id {user_id}")));
    }
    Ok(updated)
}

/// A change to a pre-registered client: each field given replaces the stored one
/// (`Some(None)` clears it). How it authenticates, and its secret, are changed elsewhere.
#[derive(Debug, Clone, Default)]
pub struct ClientChange {
    pub name: Option<String>,
    pub redirect_uris: Option<Vec<String>>,
    pub grant_types: Option<Vec<String>>,
    pub scope: Option<Option<String>>,
    pub jwks_uri: Option<Option<String>>,
    pub jwks: Option<Option<serde_json::Value>>,
}

/// Change a pre-registered client's metadata, checked as a new client's is. Dynamically
/// registered clients are changed by their registrant (RFC 7592), not here.
pub async fn update_client(
    store: &dyn Store,
    grants: &GrantRegistry,
    client_id: &str,
    change: ClientChange,
) -> Result<ClientRecord, ManageError> {
    let now = util::now();
    let mut record = store
        .get_client(client_id, now)
        .await?
        .ok_or_else(|| ManageError::NotFound(format!("no client {client_id}")))?;
    if record.kind != ClientKind::Static {
        return Err(invalid(
            "client_id",
            "a dynamically registered client is changed by its registrant (RFC 7592)",
        ));
    }
    // The stored metadata as a client would send it, with the changes over it.
    let as_sent = serde_json::to_value(&record.metadata)
        .map_err(|e| ManageError::Store(StoreError::Corrupt(e.to_string())))?;
    let mut raw: RawClientMetadata = serde_json::from_value(as_sent)
        .map_err(|e| ManageError::Store(StoreError::Corrupt(e.to_string())))?;
    if let Some(name) = change.name {
        if name.trim().is_empty() {
            return Err(invalid("client_name", "is required"));
        }
        raw.client_name = Some(name);
    }
    if let Some(uris) = change.redirect_uris {
        raw.redirect_uris = Some(uris);
    }
    if let Some(g) = change.grant_types {
        raw.grant_types = Some(g);
    }
    if let Some(s) = change.scope {
        raw.scope = s;
    }
    if let Some(u) = change.jwks_uri {
        raw.jwks_uri = u;
    }
    if let Some(j) = change.jwks {
        raw.jwks = j;
    }
    let mut metadata = client_metadata::validate(raw, Origin::Operator, grants).map_err(|e| {
        let field = field_of(&e.description).unwrap_or("metadata").to_string();
        invalid(field, e.description.into_owned())
    })?;
    metadata.may_introspect = record.metadata.may_introspect;
    metadata.admin = record.metadata.admin;
    record.metadata = metadata;
    record.updated_at = now;
    if !store.update_client(&record).await? {
        return Err(ManageError::NotFound(format!("no client {client_id}")));
    }
    Ok(record)
}

/// The longest a rotated-out client secret may keep working.
pub const MAX_SECRET_OVERLAP_SECS: i64 = 30 * 24 * 3600;

/// Give a client that authenticates with a secret a new one; the old one keeps working for
/// `overlap_secs` (0: not at all) so the client can switch without downtime. A secret
/// already being rotated out stops at once. Returns the record and the new secret (shown
/// once; stored only as a hash).
pub async fn rotate_client_secret(
    store: &dyn Store,
    client_id: &str,
    overlap_secs: i64,
) -> Result<(ClientRecord, String), ManageError> {
    if !(0..=MAX_SECRET_OVERLAP_SECS).contains(&overlap_secs) {
        return Err(invalid(
            "overlap_secs",
            format!("must be 0 to {MAX_SECRET_OVERLAP_SECS} seconds (30 days)"),
        ));
    }
    let now = util::now();
    let mut record = store
        .get_client(client_id, now)
        .await?
        .ok_or_else(|| ManageError::NotFound(format!("no client {client_id}")))?;
    let Some(old) = record.secret_hash.take() else {
        return Err(invalid(
            "client_id",
            format!("{client_id} does not authenticate with a secret"),
        ));
    };
    let secret = util::random_secret();
    record.secret_hash = Some(util::secret_hash(&secret));
    record.previous_secret = (overlap_secs > 0).then(|| crate::store::PreviousSecret {
        hash: old,
        expires_at: now + overlap_secs,
    });
    record.updated_at = now;
    if !store.update_client(&record).await? {
        return Err(ManageError::NotFound(format!("no client {client_id}")));
    }
    Ok((record, secret))
}

/// Disable a user (signing them out everywhere and revoking their refresh tokens) or enable
/// them again. Access tokens already issued expire on their own (minutes); `/userinfo`
/// refuses them at once.
pub async fn set_user_disabled(
    store: &dyn Store,
    user: &User,
    disabled: bool,
) -> Result<User, ManageError> {
    let now = util::now();
    let at = disabled.then(|| user.disabled_at.unwrap_or(now));
    if !store.set_disabled(&user.id, at, now).await? {
        return Err(ManageError::NotFound(format!("no user {}", user.username)));
    }
    Ok(User {
        disabled_at: at,
        updated_at: now,
        ..user.clone()
    })
}

/// Ask a user to choose a new password at their next sign-in (they are signed out
/// everywhere and their refresh tokens revoked now).
pub async fn require_password_change(store: &dyn Store, user: &User) -> Result<(), ManageError> {
    if user.password_hash.is_none() {
        return Err(invalid(
            "password",
            format!("{} has no password to change", user.username),
        ));
    }
    if !store.require_password_change(&user.id, util::now()).await? {
        return Err(ManageError::NotFound(format!("no user {}", user.username)));
    }
    Ok(())
}

/// Link an identity at another issuer to a user (as an operator): its ID-JAGs then name this
/// user. `Conflict` when it names another user already.
pub async fn link_identity(
    store: &dyn Store,
    user: &User,
    issuer: &str,
    subject: &str,
) -> Result<LinkedIdentity, ManageError> {
    let issuer = issuer.trim();
    url::Url::parse(issuer).map_err(|e| invalid("issuer", format!("{issuer:?}: {e}")))?;
    if subject.is_empty() || subject.len() > 255 || subject.chars().any(char::is_control) {
        return Err(invalid("subject", "must be 1 to 255 printable characters"));
    }
    let link = LinkedIdentity {
        issuer: issuer.to_string(),
        subject: subject.to_string(),
        user_id: user.id.clone(),
        email: None,
        linked_by: LinkedBy::Operator,
        created_at: util::now(),
    };
    let owner = store.link_identity(&link).await?;
    if owner != user.id {
        return Err(ManageError::Conflict(format!(
            "{subject} at {issuer} is linked to another user; unlink it there first"
        )));
    }
    Ok(store.find_identity(issuer, subject).await?.unwrap_or(link))
}

/// Remove a user's link to an identity at another issuer.
pub async fn unlink_identity(
    store: &dyn Store,
    user: &User,
    issuer: &str,
    subject: &str,
) -> Result<(), ManageError> {
    if !store.unlink_identity(&user.id, issuer, subject).await? {
        return Err(ManageError::NotFound(format!(
            "{} has no linked identity {subject} at {issuer}",
            user.username
        )));
    }
    Ok(())
}

/// Forget a user's failed sign-ins (`oauth::authn::throttle`): the wait between attempts
/// and the failures counted against the addresses they came from. Returns the user and how
/// many records were cleared (0: there was nothing to forget).
pub async fn unlock_user(
    store: &dyn Store,
    kek: &crate::keys::Kek,
    username: &str,
) -> Result<(User, u64), ManageError> {
    let user = store
        .find_user(username)
        .await?
        .ok_or_else(|| ManageError::NotFound(format!("no user {username}")))?;
    let cleared = throttle::unlock(store, &kek.bucket_digest(&user.username)).await?;
    Ok((user, cleared))
}

/// Reset a user's second factors (a lost phone): their authenticator app, recovery codes and
/// passkeys are forgotten, and they sign in with the password alone until they set up another.
/// Returns the user and whether they had anything to reset.
pub async fn reset_factors(store: &dyn Store, username: &str) -> Result<(User, bool), ManageError> {
    let user = store
        .find_user(username)
        .await?
        .ok_or_else(|| ManageError::NotFound(format!("no user {username}")))?;
    let had_codes = store.delete_factors(&user.id).await?;
    let had_passkeys = store.delete_passkeys(&user.id).await? > 0;
    let had = had_codes || had_passkeys;
    tracing::info!(user_id = %user.id, had, "second factors reset by an operator");
    Ok((user, had))
}

impl From<ManageError> for ApiError {
    fn from(e: ManageError) -> Self {
        match e {
            ManageError::Invalid { field, message } => Self::validation(field, message),
            ManageError::NotFound(m) => Self::not_found(m),
            ManageError::Conflict(m) => Self::conflict(m),
            ManageError::Store(e) => Self::internal(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_from_metadata_errors() {
        assert_eq!(
            field_of("redirect_uris[0] must be https"),
            Some("redirect_uris[0]")
        );
        assert_eq!(
            field_of("token_endpoint_auth_method is unknown"),
            Some("token_endpoint_auth_method")
        );
        assert_eq!(field_of("The body"), None);
    }
}
