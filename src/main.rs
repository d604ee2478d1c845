//! The `concierge` command: the server and its administration. Parsing and printing only;
//! the work is in the library.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use concierge::admin::clients::ClientView;
use concierge::admin::resources::ResourceView;
use concierge::admin::users::{IdentityView, UserView};
use concierge::config::Config;
use concierge::keys::{Activation, Alg, KeyManager, KeyPolicy, KeyState};
use concierge::manage;
use concierge::oauth::admin_token;
use concierge::oauth::cimd::CimdResolver;
use concierge::oauth::client_metadata::ClientMetadata;
use concierge::oauth::clients::{ClientDirectory, ClientSource};
use concierge::oauth::grants::GrantRegistry;
use concierge::oauth::registration::client_information;
use concierge::oauth::resource::ScopeDef;
use concierge::startup::{
    App, load_kek, open_cli_store, open_cli_store_schema, open_store_as, redact_url,
    shutdown_signal,
};
use concierge::store::Open;
use concierge::store::{ClientKind, Store};
use concierge::util;

/// Concierge: an OAuth 2.1 / OpenID Connect authorization server for AI agents and MCP servers.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (default: ./concierge.toml when it exists).
    #[arg(long, global = true, env = "CONCIERGE_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory for the SQLite database and generated key material.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// sqlite://… or postgres://…
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// The issuer URL, e.g. https://auth.example.com: the server's, for `serve`; the one the
    /// server runs with, for the other commands (the admin API's resource derives from it).
    #[arg(long, global = true)]
    issuer: Option<String>,
    /// Create the database if it does not exist and bring its schema up to date. Without it,
    /// operator commands use only an existing database, as it is.
    #[arg(long, global = true)]
    init: bool,
    /// How listings are printed: text for people, or json (the admin API's shapes) for
    /// scripts.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Protected resources (MCP servers) and their scopes.
    #[command(subcommand)]
    Resource(ResourceCmd),
    /// Pre-registered clients, and a look at registered or document clients.
    #[command(subcommand)]
    Client(ClientCmd),
    /// Signing keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Local user accounts.
    #[command(subcommand)]
    User(UserCmd),
    /// Clients of the admin API (`/admin/v1`).
    #[command(subcommand)]
    AdminClient(AdminClientCmd),
    /// ID-JAG issuing policy (as an enterprise IdP for MCP enterprise-managed authorization).
    #[command(subcommand)]
    IdJag(IdJagCmd),
    /// Upstream identity providers ("Sign in with …" buttons): OpenID Connect or GitHub.
    #[command(subcommand)]
    Idp(IdpCmd),
    /// The configuration.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Bring the database's schema up to date (creating the database if missing); servers
    /// do it when they start. See UPGRADE.md.
    Migrate {
        /// Only say where the schema stands; exit with status 1 when migrations are pending.
        #[arg(long)]
        check: bool,
    },
    /// Write the whole configuration and data set as one JSON document (standard output, or
    /// a file created readable by its owner only). Signing keys stay encrypted under the
    /// key-encryption key; secrets stay hashed. Flows in flight (codes, device codes) and
    /// throttling counters are left out. See UPGRADE.md.
    Export {
        /// The file to write (default, or `-`: standard output). A positional argument, as
        /// `import`'s is: `--output` is the listings' format.
        file: Option<PathBuf>,
        /// Leave out the audit log.
        #[arg(long)]
        no_audit: bool,
    },
    /// Load an export into this database, in one transaction: an empty one (`--init`
    /// creates it), or one a server has only been started on. Its servers need the source's
    /// key-encryption key. See UPGRADE.md.
    Import {
        /// The export (`-` for standard input).
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum AdminClientCmd {
    /// Create a confidential client allowed the `admin` scope on the admin API; prints its
    /// id and secret once. It gets admin tokens with client credentials
    /// (`resource=<issuer>/admin/v1`, `scope=admin`).
    Create {
        /// The name shown in listings and the audit log.
        #[arg(long, default_value = "admin")]
        name: String,
    },
    /// List the admin clients.
    List,
    /// Remove an admin client: its admin tokens stop working at once on this replica and
    /// within `clients.cache_secs` on the others.
    Revoke {
        #[arg(allow_hyphen_values = true)]
        client_id: String,
    },
}

#[derive(Subcommand)]
enum IdJagCmd {
    /// Let one of our clients exchange its users' ID tokens for ID-JAGs toward one resource
    /// at one authorization server. Again for the same (client, audience, resource) replaces.
    Allow {
        /// Our client that asks.
        #[arg(long)]
        client: String,
        /// The target authorization server's issuer (the ID-JAG's `aud`).
        #[arg(long)]
        audience: String,
        /// The resource (MCP server) at that authorization server.
        #[arg(long)]
        resource: String,
        /// The client's id at that authorization server (the ID-JAG's `client_id`).
        #[arg(long)]
        target_client_id: String,
        /// A scope the ID-JAG may carry; repeat for more.
        #[arg(long = "scope")]
        scopes: Vec<String>,
    },
    /// List ID-JAG policies and trusted IdPs: the configuration file's and the database's.
    List,
    /// As an MCP server's authorization server: redeem ID-JAGs from this enterprise IdP
    /// (with the jwt-bearer grant). Again for the same issuer replaces its keys.
    Trust {
        /// The IdP's issuer identifier (the ID-JAG's `iss`).
        #[arg(long)]
        issuer: String,
        /// Where the IdP publishes its keys.
        #[arg(
            long,
            conflicts_with = "jwks_file",
            required_unless_present = "jwks_file"
        )]
        jwks_uri: Option<String>,
        /// A file holding the IdP's JWK Set.
        #[arg(long)]
        jwks_file: Option<std::path::PathBuf>,
        /// Link an IdP user without a linked account to the one local account with the same
        /// verified email address. Only for an IdP that vouches for its users' addresses.
        #[arg(long)]
        link_by_email: bool,
        /// Refuse ID-JAGs for IdP users without a linked account instead of provisioning an
        /// account for them (link them with `concierge user link`).
        #[arg(long)]
        no_provision: bool,
    },
    /// Stop redeeming ID-JAGs from an IdP added with `trust`.
    Distrust {
        #[arg(long)]
        issuer: String,
    },
    /// Remove an ID-JAG policy made with `allow`.
    Deny {
        #[arg(long)]
        client: String,
        #[arg(long)]
        audience: String,
        #[arg(long)]
        resource: String,
    },
}

#[derive(Subcommand)]
enum IdpCmd {
    /// Add a provider. Register `<issuer>/signin/upstream/<id>/callback` as the redirect
    /// URI at the provider. The client secret is read from an environment variable (never an
    /// argument) and stored encrypted under the key-encryption key.
    Add(Box<IdpAdd>),
    /// List the providers: the configuration file's and the database's.
    List,
    /// Remove a provider added with `add` (its users keep their accounts and links).
    Remove {
        #[arg(long)]
        id: String,
    },
}

/// `concierge idp add`'s arguments.
#[derive(Args)]
struct IdpAdd {
    /// Our name for it, in its URLs: lowercase letters, digits and '-'.
    #[arg(long)]
    id: String,
    /// The button's label ("Sign in with <name>").
    #[arg(long)]
    name: String,
    /// `oidc` (any OpenID Connect provider, by discovery) or `github`.
    #[arg(long, default_value = "oidc")]
    kind: String,
    /// The provider's issuer (OpenID Connect; for GitHub Enterprise Server, the issuer its
    /// identities are linked under).
    #[arg(long)]
    issuer: Option<String>,
    /// Our client id at the provider.
    #[arg(long)]
    client_id: String,
    /// The environment variable holding our client secret at the provider.
    #[arg(long)]
    client_secret_env: Option<String>,
    /// A scope to ask for; repeat for more (default: the kind's).
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// Link a provider user to the one local account with the same verified email
    /// address. Only for a provider that vouches for its users' addresses.
    #[arg(long)]
    link_by_email: bool,
    /// Refuse provider users without a linked account instead of provisioning one.
    #[arg(long)]
    no_provision: bool,
    /// GitHub Enterprise Server: the authorization endpoint.
    #[arg(long)]
    authorization_endpoint: Option<String>,
    /// GitHub Enterprise Server: the token endpoint.
    #[arg(long)]
    token_endpoint: Option<String>,
    /// GitHub Enterprise Server: the REST API's base URL.
    #[arg(long)]
    api: Option<String>,
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Validate the configuration (file, environment and global options) without starting or
    /// opening the database; print what it resolves to and any warnings. Exit status 1 when
    /// it is invalid.
    Check,
}

#[derive(Subcommand)]
enum UserCmd {
    /// Add a user; the password is read from standard input (one line).
    Add {
        username: String,
        #[arg(long)]
        email: Option<String>,
        /// The address is known to be the user's (only verified addresses link accounts).
        #[arg(long, requires = "email")]
        email_verified: bool,
        #[arg(long)]
        name: Option<String>,
        /// Read the password from standard input (the default; accepted for scripts).
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    List,
    /// Remove a user, with their sessions, consents and tokens.
    Remove { username: String },
    /// Set a new password (from standard input); signs the user out everywhere.
    SetPassword {
        username: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Change a user's email address, its verified mark, or name. A new address is
    /// unverified unless `--email-verified true` is given too.
    Update {
        username: String,
        /// The new address ("" clears it).
        #[arg(long)]
        email: Option<String>,
        /// Whether the address is known to be the user's.
        #[arg(long)]
        email_verified: Option<bool>,
        /// The new display name ("" clears it).
        #[arg(long)]
        name: Option<String>,
    },
    /// Link an identity at another issuer (an enterprise IdP's user) to this user: that
    /// issuer's ID-JAGs for it then name this user.
    Link {
        username: String,
        /// The issuer's identifier (an ID-JAG's `iss`).
        #[arg(long)]
        issuer: String,
        /// The user's `sub` at that issuer.
        #[arg(long)]
        subject: String,
    },
    /// Remove a linked identity from this user.
    Unlink {
        username: String,
        #[arg(long)]
        issuer: String,
        #[arg(long)]
        subject: String,
    },
    /// List the identities at other issuers linked to this user.
    Identities { username: String },
    /// Disable a user: they cannot sign in, their sessions end, their refresh tokens are
    /// revoked, and nothing more is issued for them until `enable`.
    Disable { username: String },
    /// Enable a disabled user again.
    Enable { username: String },
    /// Make the user choose a new password at their next sign-in; signs them out everywhere
    /// and revokes their refresh tokens now.
    RequirePasswordChange { username: String },
    /// Forget the user's failed sign-ins, so they may try again at once (the waits after
    /// failures, and the failures counted against the addresses they came from).
    Unlock { username: String },
    /// Forget the user's authenticator app and recovery codes (a lost phone): they sign in
    /// with the password alone until they set up another.
    ResetFactors { username: String },
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on, e.g. 127.0.0.1:8080.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Development: allow Client ID Metadata Documents on loopback addresses.
    #[arg(long)]
    dev_allow_loopback_cimd: bool,
}

#[derive(Subcommand)]
enum ResourceCmd {
    /// Register a protected resource.
    Add {
        /// The resource URI clients send as `resource` (RFC 8707), e.g. https://mcp.example.com/mcp.
        #[arg(long)]
        uri: String,
        /// The name users see on the consent screen.
        #[arg(long)]
        name: String,
        /// A scope and its description: `notes:read=Read your notes`. Repeat for more.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// A tool of the resource, the scope it needs and its description:
        /// `delete_note=notes:write=Delete one note`. Shown to users on the consent and
        /// connected-apps pages. Repeat for more.
        #[arg(long = "tool")]
        tools: Vec<String>,
        /// An RFC 9396 authorization details type it accepts, as JSON: `{"type":
        /// "notes_share", "schema": {"type": "object", "properties": {"note": {"type":
        /// "string"}}, "required": ["note"]}, "sentence": "Share the note {note}"}`. Repeat
        /// for more.
        #[arg(long = "details-type")]
        details_types: Vec<String>,
        /// Another URI that names this resource (an old host name, say); tokens still carry
        /// `--uri`. Case, default ports and a trailing slash need none. Repeat for more.
        #[arg(long = "alias")]
        aliases: Vec<String>,
        /// How its access tokens are signed: ES256 (default), or RS256 for resource servers
        /// whose verifier knows only RS256 (FastMCP's JWTVerifier by default).
        #[arg(long = "token-alg")]
        token_alg: Option<String>,
        /// Whether it takes DPoP-bound tokens: off (it knows only Bearer; clients sending a
        /// proof get a Bearer token), optional (default) or required.
        #[arg(long)]
        dpop: Option<String>,
        /// Every user signing in for it must use a second factor (an authenticator code or
        /// a passkey); one who has none sets one up at that sign-in.
        #[arg(long = "require-mfa", conflicts_with = "require_acr")]
        require_mfa: bool,
        /// The authentication context every sign-in for it must reach:
        /// urn:concierge:acr:mfa or phr (a passkey).
        #[arg(long = "require-acr")]
        require_acr: Option<String>,
    },
    /// Change a resource's name, scopes or token settings (its URI and aliases stay).
    Update {
        uri: String,
        #[arg(long)]
        name: Option<String>,
        /// The whole new list of scopes (`name=Description`, repeat for more); scopes left out
        /// are no longer granted. Without it the scopes stay.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// The whole new list of tools (`tool=scope=Description`), with `--scope`.
        #[arg(long = "tool", requires = "scopes")]
        tools: Vec<String>,
        /// The whole new list of RFC 9396 authorization details types (JSON, as for `add`);
        /// without it they stay.
        #[arg(long = "details-type")]
        details_types: Vec<String>,
        #[arg(long = "token-alg")]
        token_alg: Option<String>,
        #[arg(long)]
        dpop: Option<String>,
        /// Require a second factor of every user signing in for it.
        #[arg(long = "require-mfa", conflicts_with = "require_acr")]
        require_mfa: bool,
        /// The authentication context every sign-in for it must reach
        /// (urn:concierge:acr:mfa, phr), or none.
        #[arg(long = "require-acr")]
        require_acr: Option<String>,
    },
    /// List resources.
    List,
    /// Remove a resource.
    Remove { uri: String },
    /// Let a client exchange tokens for one resource into tokens for another (RFC 8693).
    AllowExchange {
        /// The resource the new tokens are for.
        #[arg(long)]
        target: String,
        /// The client allowed to exchange (e.g. the MCP server that calls the target).
        #[arg(long)]
        client: String,
        /// The resource the presented (subject) tokens are for.
        #[arg(long)]
        from: String,
        /// `source-scope=target-scope[,target-scope…]`; repeat for more. Unmapped scopes are
        /// never granted.
        #[arg(long = "map", required = true)]
        maps: Vec<String>,
    },
    /// List exchange policies.
    Exchanges,
    /// Remove an exchange policy.
    DenyExchange {
        #[arg(long)]
        target: String,
        #[arg(long)]
        client: String,
        #[arg(long)]
        from: String,
    },
}

#[derive(Subcommand)]
enum ClientCmd {
    /// Pre-register a client. A confidential client's secret is printed once.
    Add {
        /// The name users see.
        #[arg(long)]
        name: String,
        /// Client id (default: generated).
        #[arg(long)]
        id: Option<String>,
        /// Redirect URI; repeat for more.
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        /// Grant type; repeat for more (default: authorization_code, plus refresh_token).
        #[arg(long = "grant-type")]
        grant_types: Vec<String>,
        /// none, client_secret_basic (default), client_secret_post or private_key_jwt.
        #[arg(long)]
        auth_method: Option<String>,
        /// Scopes this client may ask for (space-separated).
        #[arg(long)]
        scope: Option<String>,
        /// The client's public keys for private_key_jwt, as a JWK Set URL.
        #[arg(long, conflicts_with = "jwks_file")]
        jwks_uri: Option<String>,
        /// The client's public keys for private_key_jwt: a file holding its JWK Set.
        #[arg(long)]
        jwks_file: Option<std::path::PathBuf>,
        /// Development and benchmarks: take the client secret from this environment variable
        /// (at least 32 characters) instead of generating one. Stored only as a hash.
        #[arg(long, value_name = "VAR", hide = true)]
        secret_from_env: Option<String>,
        /// Allow this client (a resource server) to call the introspection endpoint.
        #[arg(long)]
        may_introspect: bool,
    },
    /// List clients: pre-registered, and dynamically registered ones with where from.
    List,
    /// Show one client; an https client_id is fetched as a Client ID Metadata Document.
    Show {
        #[arg(allow_hyphen_values = true)]
        client_id: String,
    },
    /// Remove a client.
    Remove {
        #[arg(allow_hyphen_values = true)]
        client_id: String,
    },
    /// Change a pre-registered client (checked as a new one is); options left out stay.
    Update {
        #[arg(allow_hyphen_values = true)]
        client_id: String,
        #[arg(long)]
        name: Option<String>,
        /// The whole new list of redirect URIs; repeat for more.
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        /// The whole new list of grant types; repeat for more.
        #[arg(long = "grant-type")]
        grant_types: Vec<String>,
        /// Space-separated scopes it may ask for ("" clears the restriction).
        #[arg(long)]
        scope: Option<String>,
        #[arg(long, conflicts_with = "jwks_file")]
        jwks_uri: Option<String>,
        /// A file holding its JWK Set (replaces a jwks_uri).
        #[arg(long)]
        jwks_file: Option<std::path::PathBuf>,
    },
    /// Give a client a new secret (printed once). The old one keeps working for
    /// `--overlap-secs` (default an hour; 0 ends it at once) so the client can switch without
    /// downtime; other replicas learn the new one within `clients.cache_secs`.
    RotateSecret {
        #[arg(allow_hyphen_values = true)]
        client_id: String,
        #[arg(long, default_value_t = 3600)]
        overlap_secs: i64,
    },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// List signing keys with their state.
    List,
    /// Add a new key (default: for every algorithm). It is published at once and signs after
    /// `keys.activation_delay_secs`, once every server publishes it; the previous key then
    /// retires and stays published until the tokens it signed have expired.
    Rotate {
        /// ES256 or RS256.
        #[arg(long)]
        alg: Option<String>,
        /// Emergency: the new key signs at once. Servers that have not reread keys yet (up to
        /// `keys.refresh_secs`) do not publish it meanwhile, so its tokens may be refused there.
        #[arg(long)]
        now: bool,
    },
    /// Withdraw a key at once (a compromised key): out of the JWKS, and tokens it signed stop
    /// verifying at every server within `keys.refresh_secs`. If it was signing, a new key
    /// replaces it at once.
    Revoke {
        #[arg(allow_hyphen_values = true)]
        kid: String,
    },
    /// Re-encrypt every signing key under the current key-encryption key (after changing it,
    /// with the old one in `previous_key_encryption_keys`); see deploy/README.md.
    Rekey,
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = Config::load(cli.config.as_deref(), std::env::vars())?;
    if let Some(d) = &cli.data_dir {
        config.data_dir = d.clone();
    }
    if let Some(u) = &cli.database_url {
        config.database_url = Some(u.clone());
    }
    if let Some(i) = &cli.issuer {
        config.issuer = i.clone();
    }
    Ok(config)
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How listings are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Text,
    Json,
}

/// The `--output` of this run, set once in `main`.
static OUTPUT: std::sync::OnceLock<Output> = std::sync::OnceLock::new();

/// With `--output json`, print `value` as JSON and say so (the caller prints nothing else).
fn json_output(value: &impl serde::Serialize) -> anyhow::Result<bool> {
    if OUTPUT.get() != Some(&Output::Json) {
        return Ok(false);
    }
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(true)
}

/// How operator commands open the database (`--init` or not), set once in `main`.
static OPEN: std::sync::OnceLock<Open> = std::sync::OnceLock::new();

/// The database for an operator command (never created or migrated without `--init`).
async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    open_cli_store(config, *OPEN.get().unwrap_or(&Open::Existing)).await
}

/// `concierge config check`: the configuration as loaded, validated like `serve` does.
fn config_check(config: &Config) -> anyhow::Result<()> {
    let checked = config
        .validate()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .and_then(|()| {
            concierge::oauth::id_jag::check_config(&config.id_jag)
                .map_err(|e| anyhow::anyhow!("{e}"))
        })
        .and_then(|()| {
            concierge::audit::Push::from_config(&config.audit)
                .map(drop)
                .map_err(|e| anyhow::anyhow!("{e}"))
        });
    if let Err(e) = checked {
        bail!("the configuration is invalid: {e}");
    }
    println!("issuer:   {}", config.issuer);
    println!("listen:   {}", config.listen);
    println!("database: {}", redact_url(&config.database_url()));
    println!(
        "keys:     {}",
        if config.key_encryption_key.is_some() {
            "key-encryption key from the configuration"
        } else {
            "key-encryption key file in the data directory"
        }
    );
    for w in config.warnings() {
        println!("warning:  {w}");
    }
    println!("the configuration is valid");
    Ok(())
}

/// `concierge migrate [--check]`.
async fn migrate(config: &Config, check: bool) -> anyhow::Result<()> {
    let how = if check { Open::Existing } else { Open::Migrate };
    let url = redact_url(&config.database_url());
    let before = if check {
        None
    } else {
        // What was pending before, to say what was applied (a missing database has it all).
        open_store_as(config, Open::Existing)
            .await
            .ok()
            .map(|(_, schema)| schema.pending)
    };
    let (_, schema) = open_store_as(config, how).await?;
    if check {
        println!(
            "database {url}: {} migration(s) applied, {} pending{}",
            schema.applied.len(),
            schema.pending.len(),
            if schema.pending.is_empty() {
                String::new()
            } else {
                format!(" ({})", schema.pending.join(", "))
            }
        );
        if !schema.unknown.is_empty() {
            println!(
                "the database has {} migration(s) newer than this binary ({})",
                schema.unknown.len(),
                schema.unknown.join(", ")
            );
        }
        if !schema.pending.is_empty() {
            std::process::exit(1);
        }
        return Ok(());
    }
    if !schema.unknown.is_empty() {
        println!(
            "database {url}: has {} migration(s) newer than this binary ({})",
            schema.unknown.len(),
            schema.unknown.join(", ")
        );
    }
    match before {
        Some(done) if done.is_empty() => println!("database {url}: up to date"),
        Some(done) => println!("database {url}: applied {}", done.join(", ")),
        None => println!(
            "database {url}: created, {} migration(s) applied",
            schema.applied.len()
        ),
    }
    Ok(())
}

/// `concierge export`.
async fn export(
    config: &Config,
    output: Option<&std::path::Path>,
    audit: bool,
) -> anyhow::Result<()> {
    let (store, schema) = open_cli_store_schema(config, Open::Existing).await?;
    // The key-encryption key's fingerprint goes in the header when there is one to name
    // (never a key generated here, and no data directory made for one).
    let configured = config.key_encryption_key.is_some()
        || config
            .data_dir
            .join(concierge::keys::encryption::KEK_FILE)
            .exists();
    let kek = match configured.then(|| load_kek(config)) {
        Some(Ok(k)) if !k.is_unsaved() => Some(k),
        _ => None,
    };
    let doc =
        concierge::export::export(store.as_ref(), &schema, &config.issuer, kek.as_ref(), audit)
            .await?;
    let mut text = serde_json::to_vec_pretty(&doc)?;
    text.push(b'\n');
    match output {
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(&text)?;
            out.flush()?;
        }
        Some(path) => util::write_private(path, &text)
            .with_context(|| format!("writing {}", path.display()))?,
    }
    let rows: usize = doc.tables.values().map(Vec::len).sum();
    eprintln!(
        "exported {rows} row(s) of {} table(s){}, schema {}",
        doc.tables.len(),
        output.map_or(String::new(), |p| format!(" to {}", p.display())),
        doc.schema
    );
    for (table, list) in &doc.tables {
        eprintln!("  {table:<24} {}", list.len());
    }
    if !audit {
        eprintln!("  (the audit log was left out)");
    }
    match &doc.key_encryption_key {
        Some(f) => eprintln!(
            "signing keys are encrypted under the key-encryption key {f}: the target's \
             servers need the same key"
        ),
        None => eprintln!(
            "signing keys are encrypted under the source's key-encryption key: the target's \
             servers need the same key"
        ),
    }
    Ok(())
}

/// `concierge import FILE`.
async fn import(config: &Config, file: &std::path::Path) -> anyhow::Result<()> {
    let text = if file.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
            .context("reading the export from standard input")?;
        buf
    } else {
        std::fs::read(file).with_context(|| format!("reading {}", file.display()))?
    };
    let doc = concierge::export::parse(&text)?;
    let how = *OPEN.get().unwrap_or(&Open::Existing);
    let (store, schema) = open_cli_store_schema(config, how).await?;
    let kek = load_kek(config)?;
    let done = concierge::export::import(store.as_ref(), &schema, &kek, &doc).await?;
    let url = redact_url(&config.database_url());
    println!(
        "imported the export of {} (schema {}, {}) into {url}:",
        doc.issuer, doc.schema, doc.exported_at
    );
    for (table, n) in &done.counts {
        println!("  {table:<24} {n}");
    }
    for table in &done.absent {
        println!("  {table:<24} not in the export");
    }
    let r = &done.replaced;
    if !(r.resources.is_empty() && r.signing_keys.is_empty() && r.audit_events.is_empty()) {
        println!(
            "replaced what a server had made by itself: {} admin resource(s), {} signing \
             key(s), {} audit event(s)",
            r.resources.len(),
            r.signing_keys.len(),
            r.audit_events.len()
        );
    }
    if doc.issuer.trim_end_matches('/') != config.issuer.trim_end_matches('/') {
        println!(
            "warning: the export's issuer is {} but this configuration's is {}: tokens, \
             clients and the admin API resource name the export's; run the servers with it \
             unless you mean to move the issuer",
            doc.issuer, config.issuer
        );
    }
    let counts: serde_json::Map<String, serde_json::Value> = done
        .counts
        .iter()
        .map(|(t, n)| (t.clone(), serde_json::Value::from(*n)))
        .collect();
    let event = concierge::audit::Event::new(concierge::audit::Kind::AdminChange)
        .detail(serde_json::json!({
            "action": "import",
            "from_issuer": doc.issuer,
            "exported_at": doc.exported_at,
            "rows": counts,
        }))
        .into_inner();
    if let Err(e) = store.append_audit(&[event]).await {
        eprintln!("warning: imported, but the import could not be recorded in the audit log: {e}");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _ = OPEN.set(if cli.init {
        Open::Migrate
    } else {
        Open::Existing
    });
    let _ = OUTPUT.set(cli.output);
    let mut config = load_config(&cli)?;
    // Telemetry starts outside the async runtime: the OTLP exporter runs its own thread with a
    // blocking HTTP client, and flushes when `_telemetry` drops after the runtime is done.
    let _telemetry = match &cli.command {
        Command::Serve(args) => {
            if let Some(l) = args.listen {
                config.listen = l;
            }
            if args.dev_allow_loopback_cimd {
                config.cimd.allow_loopback = true;
            }
            Some(concierge::telemetry::init(config.log_format))
        }
        _ => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        match &cli.command {
            Command::Serve(_) => return serve(config).await,
            Command::Resource(cmd) => resource(cmd, &config).await,
            Command::Client(cmd) => client(cmd, &config).await,
            Command::Keys(cmd) => keys(cmd, &config).await,
            Command::User(cmd) => user(cmd, &config).await,
            Command::AdminClient(AdminClientCmd::Create { name }) => {
                let store = open_store(&config).await?;
                let (record, secret) =
                    manage::create_admin_client(store.as_ref(), &config.issuer, name).await?;
                println!("added admin client {}", record.client_id);
                println!("client_secret: {secret}");
                println!("(shown once: it is stored only as a hash)");
                println!(
                    "get a token: POST {}/token grant_type=client_credentials resource={} scope={}",
                    config.issuer.trim_end_matches('/'),
                    admin_token::admin_resource_uri(&config.issuer),
                    admin_token::ADMIN_SCOPE
                );
                Ok(())
            }
            Command::AdminClient(AdminClientCmd::List) => {
                let store = open_store(&config).await?;
                let admins: Vec<_> = store
                    .list_clients(util::now())
                    .await?
                    .into_iter()
                    .filter(|c| c.metadata.admin)
                    .collect();
                let views: Vec<ClientView> = admins.iter().map(ClientView::from).collect();
                if json_output(&views)? {
                    return Ok(());
                }
                if admins.is_empty() {
                    println!("no admin clients; add one with `concierge admin-client create`");
                }
                for c in admins {
                    println!(
                        "{}  {}  created {}  last used {}",
                        c.client_id,
                        c.metadata.client_name.as_deref().unwrap_or("-"),
                        util::rfc3339(c.created_at),
                        c.last_used_at.map_or("never".into(), util::rfc3339)
                    );
                }
                Ok(())
            }
            Command::AdminClient(AdminClientCmd::Revoke { client_id }) => {
                let store = open_store(&config).await?;
                match store.get_client(client_id, util::now()).await? {
                    Some(c) if c.metadata.admin => {}
                    Some(_) => bail!(
                        "{client_id} is not an admin client (remove it with `concierge client remove`)"
                    ),
                    None => bail!("no client {client_id}"),
                }
                store.delete_client(client_id).await?;
                println!("revoked admin client {client_id}: its admin tokens no longer work");
                Ok(())
            }
            Command::IdJag(cmd) => id_jag(cmd, &config).await,
            Command::Idp(cmd) => idp(cmd, &config).await,
            Command::Migrate { check } => return migrate(&config, *check).await,
            Command::Export { file, no_audit } => {
                let file = file.as_deref().filter(|f| f.as_os_str() != "-");
                return export(&config, file, !no_audit).await;
            }
            Command::Import { file } => return import(&config, file).await,
            Command::Config(ConfigCmd::Check) => return config_check(&config),
        }?;
        record_cli_change(&config).await;
        Ok(())
    })
}

/// Subcommands that change what the server decides (key changes are recorded by the key
/// manager itself).
const CHANGING: &[&str] = &[
    "add",
    "remove",
    "allow-exchange",
    "deny-exchange",
    "set-password",
    "unlock",
    "reset-factors",
    "disable",
    "revoke",
    "rotate-secret",
    "require-password-change",
    "enable",
    "allow",
    "deny",
    "create",
    "trust",
    "distrust",
    "update",
    "link",
    "unlink",
];

/// Who ran an operator command, as far as this machine says: the login name and the host.
/// (The admin API's changes name the admin client and the caller's address instead.)
fn cli_actor() -> serde_json::Value {
    let user = ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()));
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty());
    serde_json::json!({ "via": "cli", "user": user, "host": host })
}

/// Put an operator's change made with this command in the audit log, as the admin API does
/// for its own. The command line is recorded without the global options (a database URL can
/// hold a password); the CLI takes no secret as an argument (passwords come on stdin, client
/// secrets from a named environment variable).
async fn record_cli_change(config: &Config) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut words = Vec::new();
    let mut skip_value = false;
    for a in &args {
        if skip_value {
            skip_value = false;
            continue;
        }
        match a.split_once('=').map_or(a.as_str(), |(k, _)| k) {
            "--config" | "--data-dir" | "--database-url" => skip_value = !a.contains('='),
            "--init" => {}
            _ => words.push(a.clone()),
        }
    }
    let changing = words.get(1).is_some_and(|w| CHANGING.contains(&w.as_str()))
        && words.first().is_some_and(|w| w != "keys");
    if !changing {
        return;
    }
    let event = concierge::audit::Event::new(concierge::audit::Kind::AdminChange)
        .detail(serde_json::json!({
            "action": "cli",
            "command": words.join(" "),
            "actor": cli_actor(),
        }))
        .into_inner();
    let stored = match open_store(config).await {
        Ok(store) => store
            .append_audit(&[event])
            .await
            .map_err(anyhow::Error::from),
        Err(e) => Err(e),
    };
    if let Err(e) = stored {
        eprintln!("warning: the change was made but could not be recorded in the audit log: {e}");
    }
}

async fn idp(cmd: &IdpCmd, config: &Config) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    match cmd {
        IdpCmd::Add(add) => {
            let IdpAdd {
                id,
                name,
                kind,
                issuer,
                client_id,
                client_secret_env,
                scopes,
                link_by_email,
                no_provision,
                authorization_endpoint,
                token_endpoint,
                api,
            } = add.as_ref();
            let kind = concierge::store::UpstreamKind::parse(kind)
                .ok_or_else(|| anyhow::anyhow!("--kind is oidc or github, not {kind:?}"))?;
            if config.upstream.iter().any(|u| &u.id == id) {
                bail!("the configuration file already has a provider {id:?}");
            }
            let secret = match client_secret_env {
                Some(var) => Some(std::env::var(var).with_context(|| {
                    format!("the environment variable {var} (--client-secret-env) is not set")
                })?),
                None => None,
            };
            let provider = concierge::store::UpstreamProvider {
                id: id.clone(),
                name: name.clone(),
                kind,
                issuer: issuer.clone(),
                client_id: client_id.clone(),
                client_secret: None,
                scopes: scopes.clone(),
                link_by_email: *link_by_email,
                provision: !no_provision,
                authorization_endpoint: authorization_endpoint.clone(),
                token_endpoint: token_endpoint.clone(),
                userinfo_endpoint: api.clone(),
            };
            let kek = load_kek(config)?;
            manage::add_upstream(store.as_ref(), &kek, provider, secret.as_deref()).await?;
            println!(
                "added {id}: register {}/signin/upstream/{id}/callback as the redirect URI there",
                config.issuer
            );
        }
        IdpCmd::List => {
            let stored = store.list_upstreams().await?;
            let all: Vec<_> = config
                .upstream
                .iter()
                .map(|u| (u, "config", u.client_secret.is_some()))
                .chain(
                    stored
                        .iter()
                        .map(|s| (&s.provider, "database", s.secret_sealed.is_some())),
                )
                .collect();
            let listing: Vec<serde_json::Value> = all
                .iter()
                .map(|(u, origin, secret)| {
                    serde_json::json!({
                        "id": u.id, "name": u.name, "kind": u.kind.as_str(), "issuer": u.issuer,
                        "client_id": u.client_id, "client_secret": secret, "scopes": u.scopes,
                        "link_by_email": u.link_by_email, "provision": u.provision,
                        "origin": origin,
                    })
                })
                .collect();
            if json_output(&listing)? {
                return Ok(());
            }
            if all.is_empty() {
                println!("no upstream providers; add one with `concierge idp add`");
            }
            for (u, origin, _) in all {
                println!(
                    "{}  {}  {}  {}  client {}  ({origin})",
                    u.id,
                    u.kind.as_str(),
                    u.name,
                    u.issuer.as_deref().unwrap_or("-"),
                    u.client_id
                );
            }
        }
        IdpCmd::Remove { id } => {
            if !store.delete_upstream(id).await? {
                bail!(
                    "no provider {id} in the database (the configuration file's are changed there)"
                );
            }
            println!("removed {id}; its users keep their accounts and linked identities");
        }
    }
    Ok(())
}

async fn id_jag(cmd: &IdJagCmd, config: &Config) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    match cmd {
        IdJagCmd::Allow {
            client,
            audience,
            resource,
            target_client_id,
            scopes,
        } => {
            let policy = concierge::store::IdJagPolicy {
                client_id: client.clone(),
                audience: audience.clone(),
                resource: resource.clone(),
                target_client_id: target_client_id.clone(),
                scopes: scopes.clone(),
            };
            concierge::oauth::id_jag::check_policy(&policy).map_err(|e| anyhow::anyhow!("{e}"))?;
            store.save_id_jag_policy(&policy, util::now()).await?;
            println!(
                "client {client} may obtain ID-JAGs for {resource} at {audience} \
                 (as {target_client_id} there)"
            );
        }
        IdJagCmd::Trust {
            issuer,
            jwks_uri,
            jwks_file,
            link_by_email,
            no_provision,
        } => {
            let jwks = match jwks_file {
                Some(path) => Some(read_jwk_set(path)?),
                None => None,
            };
            let t = concierge::store::TrustedIssuer {
                issuer: issuer.clone(),
                jwks_uri: jwks_uri.clone(),
                jwks,
                link_by_email: *link_by_email,
                provision: !no_provision,
            };
            manage::trust_id_jag_issuer(store.as_ref(), &t).await?;
            println!("ID-JAGs from {issuer} are redeemed here");
        }
        IdJagCmd::Distrust { issuer } => {
            manage::distrust_id_jag_issuer(store.as_ref(), issuer).await?;
            println!("ID-JAGs from {issuer} are no longer redeemed here");
        }
        IdJagCmd::List => {
            let trusted = store.list_trusted_issuers().await?;
            let stored = store.list_id_jag_policies().await?;
            let with_origin = |v: serde_json::Value, origin: &str| {
                let mut v = v;
                if let Some(o) = v.as_object_mut() {
                    o.insert("origin".into(), origin.into());
                }
                v
            };
            let listing = serde_json::json!({
                "trusted_issuers": config.id_jag.trusted_issuers.iter().map(|t| (t, "config"))
                    .chain(trusted.iter().map(|t| (t, "database")))
                    .map(|(t, o)| serde_json::to_value(t).map(|v| with_origin(v, o)))
                    .collect::<Result<Vec<_>, _>>()?,
                "policies": config.id_jag.policies.iter().map(|p| (p, "config"))
                    .chain(stored.iter().map(|p| (p, "database")))
                    .map(|(p, o)| serde_json::to_value(p).map(|v| with_origin(v, o)))
                    .collect::<Result<Vec<_>, _>>()?,
            });
            if json_output(&listing)? {
                return Ok(());
            }
            let issuers = config
                .id_jag
                .trusted_issuers
                .iter()
                .map(|t| (t, "config"))
                .chain(trusted.iter().map(|t| (t, "database")));
            for (t, origin) in issuers {
                let keys = t.jwks_uri.as_deref().unwrap_or("inline jwks");
                let accounts = match (t.link_by_email, t.provision) {
                    (true, true) => "linked by email, else provisioned",
                    (true, false) => "linked by email, else refused",
                    (false, true) => "provisioned",
                    (false, false) => "linked by an operator only",
                };
                println!(
                    "trusted IdP {}  keys: {keys}  accounts: {accounts}  ({origin})",
                    t.issuer
                );
            }
            let from_file = config.id_jag.policies.iter().map(|p| (p, "config"));
            let all: Vec<_> = from_file
                .chain(stored.iter().map(|p| (p, "database")))
                .collect();
            if all.is_empty() {
                println!("no ID-JAG policies: ID-JAGs are denied to every client");
            }
            for (p, origin) in all {
                println!(
                    "{}  -> {} at {}  as {}  scopes: {}  ({origin})",
                    p.client_id,
                    p.resource,
                    p.audience,
                    p.target_client_id,
                    p.scopes.join(" ")
                );
            }
        }
        IdJagCmd::Deny {
            client,
            audience,
            resource,
        } => {
            if !store
                .delete_id_jag_policy(client, audience, resource)
                .await?
            {
                bail!("no such ID-JAG policy in the database");
            }
            println!("removed the ID-JAG policy");
        }
    }
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.listen;
    let issuer = config.issuer.clone();
    let log_format = config.log_format;
    let app = App::build(config).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let bound = listener.local_addr()?;
    let issuer_url = url::Url::parse(&issuer)?;
    let metadata = format!(
        "{}/.well-known/oauth-authorization-server{}",
        issuer_url.origin().ascii_serialization(),
        issuer_url.path().trim_end_matches('/')
    );
    let database = app.state.store.backend();
    // Before the announcement: from then on a SIGTERM stops the server gracefully.
    let shutdown = shutdown_signal();
    match log_format {
        // One log line like every other, for log pipelines that parse JSON.
        concierge::config::LogFormat::Json => tracing::info!(
            listen = %format!("http://{bound}"),
            issuer = %issuer,
            metadata = %metadata,
            database,
            "Concierge listening"
        ),
        // A closed stdout (a supervisor that stopped reading) must not stop the server.
        concierge::config::LogFormat::Text => {
            let _ = writeln!(
                std::io::stdout(),
                "Concierge listening on http://{bound}\n  issuer:   {issuer}\n  metadata: {metadata}\n  database: {database}",
            )
            .and_then(|()| std::io::stdout().flush());
        }
    }
    app.serve(listener, shutdown).await
}

/// `--details-type` arguments: each a JSON declaration (checked when the resource is saved).
fn details_type_args(args: &[String]) -> anyhow::Result<Vec<concierge::store::DetailsTypeDef>> {
    args.iter()
        .map(|a| {
            serde_json::from_str(a).map_err(|e| {
                anyhow::anyhow!(
                    "--details-type {a:?}: {e}; expected {{\"type\": …, \"schema\": …, \"sentence\": …}}"
                )
            })
        })
        .collect()
}

/// `--require-mfa` or `--require-acr VALUE` as the required `acr` to store.
fn required_acr_arg(require_mfa: bool, require_acr: &Option<String>) -> Option<String> {
    if require_mfa {
        Some(concierge::oauth::authn::acr::ACR_MULTI_FACTOR.to_string())
    } else {
        require_acr.clone()
    }
}

async fn resource(cmd: &ResourceCmd, config: &Config) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    match cmd {
        ResourceCmd::Add {
            uri,
            name,
            scopes,
            tools,
            details_types,
            aliases,
            token_alg,
            dpop,
            require_mfa,
            require_acr,
        } => {
            let scopes = scopes
                .iter()
                .map(|s| ScopeDef::parse(s))
                .collect::<Result<Vec<_>, _>>()
                .and_then(|s| ScopeDef::with_tools(s, tools))
                .map_err(anyhow::Error::msg)?;
            let options = manage::ResourceOptions {
                aliases: aliases.clone(),
                token_alg: token_alg.clone(),
                dpop: dpop.clone(),
                required_acr: required_acr_arg(*require_mfa, require_acr),
                details_types: details_type_args(details_types)?,
            };
            let r = manage::create_resource(store.as_ref(), uri, name, scopes, &options).await?;
            println!("added resource {} ({})", r.uri, r.name);
            for s in &r.scopes {
                println!("  {}  {}", s.name, s.description);
                for t in &s.tools {
                    println!("    tool {}  {}", t.name, t.description);
                }
            }
            for a in &r.aliases {
                println!("  also named {a}");
            }
            println!(
                "  access tokens {}, DPoP {}",
                r.token_alg.as_str(),
                r.dpop.as_str()
            );
            if let Some(level) = r.required_acr {
                println!("  sign-ins need {} ({})", level.words(), level.acr());
            }
            for t in &r.details_types {
                println!("  accepts authorization details of type {}", t.name);
            }
        }
        ResourceCmd::Update {
            uri,
            name,
            scopes,
            tools,
            details_types,
            token_alg,
            dpop,
            require_mfa,
            require_acr,
        } => {
            let scopes = if scopes.is_empty() {
                None
            } else {
                Some(
                    scopes
                        .iter()
                        .map(|s| {
                            ScopeDef::parse(s).map_err(|e| anyhow::anyhow!("--scope {s:?}: {e}"))
                        })
                        .collect::<anyhow::Result<Vec<_>>>()
                        .and_then(|s| ScopeDef::with_tools(s, tools).map_err(anyhow::Error::msg))?,
                )
            };
            let change = manage::ResourceChange {
                name: name.clone(),
                scopes,
                token_alg: token_alg.clone(),
                dpop: dpop.clone(),
                required_acr: required_acr_arg(*require_mfa, require_acr),
                details_types: if details_types.is_empty() {
                    None
                } else {
                    Some(details_type_args(details_types)?)
                },
            };
            let r = manage::update_resource(store.as_ref(), &config.issuer, uri, change).await?;
            let names: Vec<&str> = r.scopes.iter().map(|s| s.name.as_str()).collect();
            println!("updated resource {}: scopes {}", r.uri, names.join(" "));
        }
        ResourceCmd::List => {
            let list = store.list_resources().await?;
            let views: Vec<ResourceView> = list.iter().map(ResourceView::from).collect();
            if json_output(&views)? {
                return Ok(());
            }
            if list.is_empty() {
                println!("no resources; add one with `concierge resource add`");
            }
            for r in list {
                println!("{}  {}", r.uri, r.name);
                for s in &r.scopes {
                    println!("  {}  {}", s.name, s.description);
                }
                for a in &r.aliases {
                    println!("  also named {a}");
                }
                println!("  access tokens {}, DPoP {}", r.access_token_alg, r.dpop);
                if let Some(acr) = &r.required_acr {
                    println!("  sign-ins need {acr}");
                }
            }
        }
        ResourceCmd::AllowExchange {
            target,
            client,
            from,
            maps,
        } => {
            let mut scope_map = std::collections::BTreeMap::new();
            for m in maps {
                let (src, targets) = m
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--map {m:?}: use source-scope=target-scope"))?;
                let targets: Vec<String> =
                    targets.split(',').map(|t| t.trim().to_string()).collect();
                scope_map.insert(src.to_string(), targets);
            }
            manage::allow_exchange(store.as_ref(), target, client, from, scope_map).await?;
            println!("client {client} may exchange tokens for {from} into tokens for {target}");
        }
        ResourceCmd::Exchanges => {
            let list = store.list_exchange_policies().await?;
            if list.is_empty() {
                println!("no exchange policies: token exchange is denied everywhere");
            }
            for p in list {
                let maps: Vec<String> = p
                    .scope_map
                    .iter()
                    .map(|(k, v)| format!("{k}={}", v.join(",")))
                    .collect();
                println!(
                    "{} -> {}  client={}  {}",
                    p.source,
                    p.target,
                    p.client_id,
                    maps.join(" ")
                );
            }
        }
        ResourceCmd::DenyExchange {
            target,
            client,
            from,
        } => {
            manage::deny_exchange(store.as_ref(), target, client, from).await?;
            println!("removed the exchange policy");
        }
        ResourceCmd::Remove { uri } => {
            let uri = manage::delete_resource(store.as_ref(), uri).await?;
            println!("removed resource {uri}");
        }
    }
    Ok(())
}

async fn client(cmd: &ClientCmd, config: &Config) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    match cmd {
        ClientCmd::Add {
            name,
            id,
            redirect_uris,
            grant_types,
            auth_method,
            scope,
            jwks_uri,
            jwks_file,
            secret_from_env,
            may_introspect,
        } => {
            let jwks = jwks_file.as_deref().map(read_jwk_set).transpose()?;
            let given = match secret_from_env {
                Some(var) => Some(
                    std::env::var(var)
                        .with_context(|| format!("--secret-from-env: {var} is not set"))?,
                ),
                None => None,
            };
            let from_env = given.is_some();
            let (record, secret) = manage::create_client(
                store.as_ref(),
                &GrantRegistry::standard(),
                manage::NewClient {
                    name: name.clone(),
                    client_id: id.clone(),
                    redirect_uris: redirect_uris.clone(),
                    grant_types: grant_types.clone(),
                    auth_method: auth_method.clone(),
                    scope: scope.clone(),
                    jwks_uri: jwks_uri.clone(),
                    jwks,
                    may_introspect: *may_introspect,
                    admin: false,
                },
                given,
            )
            .await?;
            if from_env {
                println!("client_secret: taken from the environment (stored only as a hash)");
            }
            println!("added client {}", record.client_id);
            if let Some(secret) = secret {
                println!("client_secret: {secret}");
                println!("(shown once: it is stored only as a hash)");
            }
        }
        ClientCmd::List => {
            let now = util::now();
            let list = store.list_clients(now).await?;
            let views: Vec<ClientView> = list.iter().map(ClientView::from).collect();
            if json_output(&views)? {
                return Ok(());
            }
            if list.is_empty() {
                println!("no clients");
            }
            for c in list {
                let used = c
                    .last_used_at
                    .map(util::rfc3339)
                    .unwrap_or_else(|| "never".into());
                let mut line = format!(
                    "{}  {}  {}  auth={}  created={}  used={}",
                    c.client_id,
                    c.kind.as_str(),
                    c.metadata.client_name.as_deref().unwrap_or("-"),
                    c.metadata.token_endpoint_auth_method.as_str(),
                    util::rfc3339(c.created_at),
                    used,
                );
                if let Some(from) = &c.registered_from {
                    line.push_str(&format!("  from={from}"));
                }
                if let Some(exp) = c.expires_at {
                    line.push_str(&format!("  expires-unless-used={}", util::rfc3339(exp)));
                }
                println!("{line}");
            }
        }
        ClientCmd::Show { client_id } => {
            let cimd = if config.cimd.enabled {
                Some(Arc::new(CimdResolver::new(
                    config.cimd.clone(),
                    Arc::new(GrantRegistry::standard()),
                )?))
            } else {
                None
            };
            let directory = ClientDirectory::new(store.clone(), cimd, 0);
            let Some(c) = directory.find(client_id).await? else {
                bail!("no client {client_id}");
            };
            let kind = match c.source {
                ClientSource::MetadataDocument => "metadata document",
                ClientSource::Stored(k) => k.as_str(),
            };
            println!("client {}  ({kind})", c.client_id);
            println!("shown to users as: {}", c.display_name());
            print_metadata(&c.metadata, &c.client_id)?;
        }
        ClientCmd::Update {
            client_id,
            name,
            redirect_uris,
            grant_types,
            scope,
            jwks_uri,
            jwks_file,
        } => {
            let jwks = jwks_file.as_deref().map(read_jwk_set).transpose()?;
            let change = manage::ClientChange {
                name: name.clone(),
                redirect_uris: (!redirect_uris.is_empty()).then(|| redirect_uris.clone()),
                grant_types: (!grant_types.is_empty()).then(|| grant_types.clone()),
                scope: scope
                    .as_ref()
                    .map(|s| Some(s.clone()).filter(|s| !s.trim().is_empty())),
                // Keys given one way replace keys given the other.
                jwks_uri: match (&jwks_uri, &jwks) {
                    (Some(u), _) => Some(Some(u.clone())),
                    (None, Some(_)) => Some(None),
                    (None, None) => None,
                },
                jwks: match (&jwks, &jwks_uri) {
                    (Some(j), _) => Some(Some(j.clone())),
                    (None, Some(_)) => Some(None),
                    (None, None) => None,
                },
            };
            let grants = GrantRegistry::standard();
            let record = manage::update_client(store.as_ref(), &grants, client_id, change).await?;
            println!("updated client {}", record.client_id);
            print_metadata(&record.metadata, &record.client_id)?;
        }
        ClientCmd::RotateSecret {
            client_id,
            overlap_secs,
        } => {
            let (record, secret) =
                manage::rotate_client_secret(store.as_ref(), client_id, *overlap_secs).await?;
            println!("client_secret: {secret}");
            println!("(shown once: it is stored only as a hash)");
            match record.previous_secret {
                Some(p) => println!(
                    "the previous secret works until {}",
                    util::rfc3339(p.expires_at)
                ),
                None => println!("the previous secret no longer works"),
            }
        }
        ClientCmd::Remove { client_id } => {
            if !store.delete_client(client_id).await? {
                bail!("no client {client_id}");
            }
            println!("removed client {client_id}");
        }
    }
    Ok(())
}

fn print_metadata(m: &ClientMetadata, client_id: &str) -> anyhow::Result<()> {
    let record = concierge::store::ClientRecord {
        client_id: client_id.to_string(),
        kind: ClientKind::Static,
        secret_hash: None,
        previous_secret: None,
        metadata: m.clone(),
        registration_token_hash: None,
        registered_from: None,
        created_at: 0,
        updated_at: 0,
        last_used_at: None,
        expires_at: None,
    };
    let mut info = client_information(&record, None, None, "");
    if let Some(o) = info.as_object_mut() {
        o.remove("client_id_issued_at");
    }
    println!("{}", serde_json::to_string_pretty(&info)?);
    Ok(())
}

/// One line of standard input, without its line ending.
fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

async fn user(cmd: &UserCmd, config: &Config) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    match cmd {
        UserCmd::Add {
            username,
            email,
            email_verified,
            name,
            ..
        } => {
            let hash = manage::hash_new_password(&read_password()?)?;
            let profile = manage::Profile {
                email: email.clone(),
                email_verified: *email_verified,
                name: name.clone(),
            };
            let user = manage::create_user(store.as_ref(), username, profile, hash).await?;
            println!("added user {} ({})", user.username, user.id);
        }
        UserCmd::List => {
            let users = store.list_users().await?;
            let views: Vec<UserView> = users.iter().map(UserView::from).collect();
            if json_output(&views)? {
                return Ok(());
            }
            if users.is_empty() {
                println!("no users; add one with `concierge user add <username>`");
            }
            for u in users {
                println!(
                    "{}  {}  {}  {}{}",
                    u.username,
                    u.id,
                    u.email.as_deref().unwrap_or("-"),
                    u.name.as_deref().unwrap_or("-"),
                    if u.is_disabled() { "  (disabled)" } else { "" }
                );
            }
        }
        UserCmd::Remove { username } => {
            if !store.delete_user(username).await? {
                bail!("no user {username}");
            }
            println!("removed user {username}");
        }
        UserCmd::SetPassword { username, .. } => {
            let hash = manage::hash_new_password(&read_password()?)?;
            if !store.set_password(username, &hash, util::now()).await? {
                bail!("no user {username}");
            }
            println!("password changed for {username}; their sessions ended");
        }
        UserCmd::Update {
            username,
            email,
            email_verified,
            name,
        } => {
            let user = find_user(store.as_ref(), username).await?;
            let clearable = |v: &Option<String>| {
                v.as_ref()
                    .map(|v| Some(v.clone()).filter(|v| !v.trim().is_empty()))
            };
            let change = manage::ProfileChange {
                email: clearable(email),
                email_verified: *email_verified,
                name: clearable(name),
            };
            let u = manage::update_user(store.as_ref(), &user.id, change).await?;
            let verified = if u.email_verified {
                "verified"
            } else {
                "unverified"
            };
            match &u.email {
                Some(e) => println!("updated {username}: email {e} ({verified})"),
                None => println!("updated {username}: no email address"),
            }
        }
        UserCmd::Link {
            username,
            issuer,
            subject,
        } => {
            let user = find_user(store.as_ref(), username).await?;
            manage::link_identity(store.as_ref(), &user, issuer, subject).await?;
            println!("{subject} at {issuer} is now {username} here");
        }
        UserCmd::Unlink {
            username,
            issuer,
            subject,
        } => {
            let user = find_user(store.as_ref(), username).await?;
            manage::unlink_identity(store.as_ref(), &user, issuer, subject).await?;
            println!("{subject} at {issuer} is no longer linked to {username}");
        }
        UserCmd::Identities { username } => {
            let user = find_user(store.as_ref(), username).await?;
            let links = store.identities_of(&user.id).await?;
            let views: Vec<IdentityView> = links.iter().map(IdentityView::from).collect();
            if json_output(&views)? {
                return Ok(());
            }
            if links.is_empty() {
                println!("{username} has no linked identities");
            }
            for l in links {
                println!(
                    "{}  {}  linked by {}  {}",
                    l.issuer,
                    l.subject,
                    l.linked_by.as_str(),
                    util::rfc3339(l.created_at)
                );
            }
        }
        UserCmd::Disable { username } | UserCmd::Enable { username } => {
            let disable = matches!(cmd, UserCmd::Disable { .. });
            let user = find_user(store.as_ref(), username).await?;
            manage::set_user_disabled(store.as_ref(), &user, disable).await?;
            if disable {
                println!("disabled {username}: signed out everywhere, refresh tokens revoked");
            } else {
                println!("enabled {username}");
            }
        }
        UserCmd::RequirePasswordChange { username } => {
            let user = find_user(store.as_ref(), username).await?;
            manage::require_password_change(store.as_ref(), &user).await?;
            println!(
                "{username} must choose a new password at their next sign-in; signed out everywhere"
            );
        }
        UserCmd::Unlock { username } => {
            let kek = load_kek(config)?;
            let (user, cleared) = manage::unlock_user(store.as_ref(), &kek, username).await?;
            if cleared == 0 {
                println!("{} had no failed sign-ins to forget", user.username);
            } else {
                println!(
                    "unlocked {}: their failed sign-ins are forgotten",
                    user.username
                );
            }
        }
        UserCmd::ResetFactors { username } => {
            let (user, had) = manage::reset_factors(store.as_ref(), username).await?;
            if had {
                println!(
                    "reset {}: authenticator app and recovery codes removed; the password alone signs in",
                    user.username
                );
            } else {
                println!("{} had no second factor to reset", user.username);
            }
        }
    }
    Ok(())
}

/// A JWK Set read from a file (`--jwks-file`).
fn read_jwk_set(path: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// The user with this username, or an error saying there is none.
async fn find_user(store: &dyn Store, username: &str) -> anyhow::Result<concierge::store::User> {
    store
        .find_user(username)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no user {username}"))
}

async fn keys(cmd: &KeysCmd, config: &Config) -> anyhow::Result<()> {
    let store: Arc<dyn Store> = open_store(config).await?;
    match cmd {
        KeysCmd::List => {
            let now = util::now();
            let list = store.list_keys().await?;
            let policy = KeyPolicy::from_config(config);
            let states = concierge::keys::row_states(&list, now, policy.retention_secs);
            let views: Vec<concierge::admin::keys::KeyView> = list
                .iter()
                .cloned()
                .zip(states.iter().cloned())
                .map(|(k, s)| concierge::admin::keys::KeyView::new(k, s))
                .collect();
            if json_output(&views)? {
                return Ok(());
            }
            if list.is_empty() {
                println!("no keys yet; they are generated when the server first starts");
            }
            for (k, state) in list.iter().zip(states) {
                let t = util::rfc3339;
                let state = match state {
                    KeyState::Pending { activates_at } => {
                        format!("pending: published, signs from {}", t(activates_at))
                    }
                    KeyState::Active { since } => format!("active since {}", t(since)),
                    KeyState::Retired {
                        since,
                        published_until,
                    } => format!(
                        "retired at {}, published until {}",
                        t(since),
                        t(published_until)
                    ),
                    KeyState::Revoked { at } => format!("revoked at {}", t(at)),
                    KeyState::Expired => "expired".to_string(),
                };
                println!("{}  {}  created={}  {state}", k.kid, k.alg, t(k.created_at));
            }
        }
        KeysCmd::Rekey => {
            let kek = load_kek(config)?;
            let mut resealed = Vec::new();
            for k in store.list_keys().await? {
                if kek.is_current(&k.kid, &k.private_key) {
                    continue;
                }
                let plain = kek.open(&k.kid, &k.private_key).with_context(|| {
                    format!(
                        "key {} opens with neither the current nor a previous key-encryption key",
                        k.kid
                    )
                })?;
                resealed.push((k.kid.clone(), kek.seal(&k.kid, &plain)?));
            }
            let n = store.reseal_keys(&resealed).await?;
            // Users' authenticator secrets are sealed under the KEK too.
            let mut factors = Vec::new();
            for (user_id, sealed) in store.list_sealed_totp().await? {
                let kid = concierge::oauth::authn::totp_kid(&user_id);
                if kek.is_current(&kid, &sealed) {
                    continue;
                }
                let plain = kek.open(&kid, &sealed).with_context(|| {
                    format!(
                        "the authenticator secret of user {user_id} opens with neither the \
                         current nor a previous key-encryption key"
                    )
                })?;
                let new = kek.seal(&kid, &plain)?;
                factors.push((user_id, sealed, new));
            }
            let m = store.reseal_totp(&factors).await?;
            // Upstream providers' client secrets are sealed under the KEK too.
            let mut secrets = Vec::new();
            for u in store.list_upstreams().await? {
                let Some(sealed) = u.secret_sealed else {
                    continue;
                };
                let kid = concierge::oauth::authn::upstream::secret_kid(&u.provider.id);
                if kek.is_current(&kid, &sealed) {
                    continue;
                }
                let plain = kek.open(&kid, &sealed).with_context(|| {
                    format!(
                        "the client secret of provider {} opens with neither the current nor a \
                         previous key-encryption key",
                        u.provider.id
                    )
                })?;
                secrets.push((u.provider.id.clone(), kek.seal(&kid, &plain)?));
            }
            let u = store.reseal_upstream_secrets(&secrets).await?;
            let event = concierge::audit::Event::new(concierge::audit::Kind::AdminChange)
                .detail(serde_json::json!({
                    "action": "keys.rekey",
                    "keys": n,
                    "authenticators": m,
                    "provider_secrets": u,
                    "kek": kek.fingerprint(),
                    "actor": cli_actor(),
                }))
                .into_inner();
            store.append_audit(&[event]).await?;
            println!(
                "{n} signing key(s), {m} authenticator secret(s) and {u} provider secret(s) \
                 re-encrypted under the key-encryption key {}; previous_key_encryption_keys can \
                 now be removed",
                kek.fingerprint()
            );
        }
        KeysCmd::Rotate { alg, now } => {
            let algs = match alg {
                None => Alg::ALL.to_vec(),
                Some(a) => vec![
                    Alg::parse(a).ok_or_else(|| anyhow::anyhow!("--alg must be ES256 or RS256"))?,
                ],
            };
            let kek = load_kek(config)?;
            let manager = KeyManager::open(store, kek, KeyPolicy::from_config(config)).await?;
            let when = if *now {
                Activation::Now
            } else {
                Activation::Delayed
            };
            let refresh = config.keys.refresh_secs;
            // Whether a key signs at once is decided as it is made: comparing its activation
            // with a time taken here would call one made a second later "delayed".
            for k in manager.rotate(&algs, when).await? {
                if !k.immediate {
                    println!(
                        "new {} key {}: published now, signs from {} (servers reread keys \
                         every {refresh} s, so all of them publish it first)",
                        k.alg,
                        k.kid,
                        util::rfc3339(k.activates_at)
                    );
                } else {
                    println!("new {} key {}: signs now", k.alg, k.kid);
                }
            }
            if *now {
                println!(
                    "emergency rotation: servers that have not reread keys yet (up to {refresh} s) \
                     do not publish the new key meanwhile, and may refuse tokens it signs"
                );
            }
            println!("retired keys stay published until their tokens expire");
        }
        KeysCmd::Revoke { kid } => {
            let kek = load_kek(config)?;
            let manager = KeyManager::open(store, kek, KeyPolicy::from_config(config)).await?;
            let r = manager.revoke(kid).await?;
            let refresh = config.keys.refresh_secs;
            println!(
                "revoked {} key {}: withdrawn from the JWKS; tokens it signed stop verifying at \
                 every server within {refresh} s",
                r.alg, r.kid
            );
            if let Some(new) = &r.replacement {
                println!(
                    "it was the active {} key: the new key {new} signs now (emergency: servers \
                     that have not reread keys yet, up to {refresh} s, do not publish it \
                     meanwhile)",
                    r.alg
                );
            }
        }
    }
    Ok(())
}
