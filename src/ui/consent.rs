//! The consent screen: who asks, for which server and which scopes, and where the user goes
//! next. One template for the authorization endpoint and the device flow.

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use minijinja::context;
use url::Url;

use super::Web;
use crate::oauth::authorization_details;
use crate::oauth::authorize::Asked;
use crate::oauth::clients::{Client, ClientSource};
use crate::oauth::redirect_uri::RedirectUri;
use crate::store::User;

/// What the page shows and where its form goes.
pub struct ConsentView<'a> {
    pub asked: Asked<'a>,
    pub client: &'a Client,
    pub user: &'a User,
    /// Where the browser goes after the decision; `None` for the device flow.
    pub redirect_uri: Option<&'a str>,
    /// The device flow's user code, for the user to compare with the device's screen
    /// (RFC 8628 §5.4).
    pub user_code: Option<&'a str>,
    /// The form's path (after the issuer's base path).
    pub action: &'a str,
    /// Hidden fields the form posts back.
    pub params: Vec<(&'a str, String)>,
}

fn identity_description(scope: &str) -> &'static str {
    match scope {
        "openid" => "Know who you are (your account identifier)",
        "profile" => "See your name and username",
        "email" => "See your email address",
        "offline_access" => "Stay connected while you are away",
        _ => "",
    }
}

/// Who asks, as the consent and sign-in pages show it (`asker.html`): the client's name,
/// whether anyone verified it, who published its metadata document, whether it returns only
/// to this computer, and the host the browser goes to next (`redirect_uri`; None for the
/// device flow).
pub fn who_asks(client: &Client, redirect_uri: Option<&str>) -> minijinja::Value {
    let redirect_host = redirect_uri.and_then(|r| Url::parse(r).ok()).map(|u| {
        u.host_str()
            .map_or_else(|| format!("the app ({})", u.scheme()), str::to_string)
    });
    let document_host = match client.source {
        ClientSource::MetadataDocument => Url::parse(&client.client_id)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string)),
        ClientSource::Stored(_) => None,
    };
    // CIMD draft §6 (SHOULD): a document whose redirect URIs all point at this computer can
    // be published by anyone for any program; say so.
    let loopback_only = document_host.is_some()
        && !client.metadata.redirect_uris.is_empty()
        && client
            .metadata
            .redirect_uris
            .iter()
            .all(|r| RedirectUri::parse(r).is_ok_and(|r| r.is_loopback()));
    context! {
        client_name => client.display_name(),
        unverified => client.is_unverified(),
        document_host => document_host,
        loopback_only => loopback_only,
        redirect_host => redirect_host,
    }
}

pub fn render(web: &Web, headers: &HeaderMap, v: ConsentView<'_>) -> Response {
    let browser = web.browser(headers);
    let resources: Vec<minijinja::Value> = v
        .asked
        .resources
        .iter()
        .map(|r| {
            let wanted = v.asked.scopes_for(r);
            let scopes: Vec<minijinja::Value> = r
                .scopes
                .iter()
                .filter(|s| wanted.contains(&s.name))
                .map(
                    |s| context! { name => s.name, description => s.description, tools => s.tools },
                )
                .collect();
            context! { name => r.name, uri => r.uri.as_str(), scopes => scopes }
        })
        .collect();
    // Every resource scope asked for can be unticked (identity scopes cannot: they are how
    // the application knows who signed in).
    let offered: Vec<String> = v
        .asked
        .resources
        .iter()
        .flat_map(|r| v.asked.scopes_for(r))
        .collect();
    let identity: Vec<minijinja::Value> = v
        .asked
        .identity_scopes()
        .iter()
        .map(|s| context! { name => s, description => identity_description(s) })
        .collect();
    // RFC 9396 details in words.
    let details: Vec<minijinja::Value> = v
        .asked
        .details
        .map(|d| authorization_details::sentences(d, v.asked.resources))
        .unwrap_or_default()
        .into_iter()
        .map(|s| context! { text => s.text, arguments => s.arguments })
        .collect();
    let page = web.render(
        StatusCode::OK,
        "consent.html",
        context! {
            base => web.base_path(),
            action => v.action,
            asker => who_asks(v.client, v.redirect_uri),
            username => v.user.username,
            resources => resources,
            identity => identity,
            user_code => v.user_code,
            csrf => web.csrf(&browser),
            params => v.params,
            offered => offered.join(" "),
            details => details,
        },
    );
    browser.apply(page)
}
