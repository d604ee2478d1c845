//! The device authorization grant's two halves (RFC 8628): `POST /device_authorization`,
//! where a device asks for codes, and `/device`, where its user enters the user code, signs
//! in and sees the same consent screen as the code flow.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use minijinja::context;
use serde::Deserialize;
use serde_json::json;

use super::ClientAddr;
use crate::audit::{Event, Kind};
use crate::error::{ErrorCode, OAuthError};
use crate::oauth::authorize::{Asked, check_scope, requested_resources};
use crate::oauth::consent;
use crate::oauth::device::{new_user_code, normalize_user_code};
use crate::oauth::grants::GrantType;
use crate::oauth::resource::Resource;
use crate::oauth::scope::Scope;
use crate::startup::AppState;
use crate::store::{DeviceCode, StoreError};
use crate::ui::{self, Browser, see_other};
use crate::util;

/// Failed user-code entries allowed per address in a window (guessing codes).
const MAX_WRONG_CODES: i64 = 10;
const WRONG_CODE_WINDOW_SECS: i64 = 600;
/// Device authorization requests allowed per address in a window.
const MAX_REQUESTS: i64 = 60;

/// `POST /device_authorization` (RFC 8628 §3.1–3.2).
#[utoipa::path(post, path = "/device_authorization", tag = "oauth",
    description = "Device authorization (RFC 8628 §3.1).",
    request_body(content = crate::endpoints::schemas::DeviceAuthorizationRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Codes for the device and the user (RFC 8628 §3.2)", body = crate::endpoints::schemas::DeviceAuthorizationResponse),
        (status = 400, description = "RFC 6749 §5.2 error", body = crate::endpoints::schemas::OAuthErrorResponse),
        (status = 401, description = "Client authentication failed", body = crate::endpoints::schemas::OAuthErrorResponse),
    ))]
pub async fn authorization(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OAuthError> {
    let form = super::form_body(&headers, body)?;
    let client = super::authenticated_client(&state, &headers, &form).await?;
    if !client.metadata.grant_types.contains(&GrantType::DeviceCode) {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "this client did not register the device_code grant",
        ));
    }
    let now = util::now();
    let bucket = format!(
        "device-authorization:{}",
        addr.map(|a| a.to_string()).unwrap_or_default()
    );
    if state
        .store
        .hit(&bucket, WRONG_CODE_WINDOW_SECS, now)
        .await?
        > MAX_REQUESTS
    {
        return Err(OAuthError::rate_limited(
            "device authorization requests",
            WRONG_CODE_WINDOW_SECS as u64,
        ));
    }
    let resources = requested_resources(&state, &form.all("resource"))
        .await
        .map_err(|(code, d)| OAuthError::new(code, d))?;
    let scope = check_scope(&client, &resources, form.get("scope"))
        .map_err(|(code, d)| OAuthError::new(code, d))?;
    let tokens = &state.config.tokens;
    let device_code = util::random_secret();
    let ttl = i64::from(tokens.device_code_ttl_secs);
    let interval = i64::from(tokens.device_poll_interval_secs);
    let mut record = DeviceCode {
        device_code_hash: util::secret_hash(&device_code),
        user_code: new_user_code(),
        client_id: client.client_id.clone(),
        resources: resources.iter().map(|r| r.uri.to_string()).collect(),
        scope: scope.to_string(),
        status: "pending".into(),
        user_id: None,
        auth_time: None,
        sid: None,
        interval_secs: interval,
        last_polled_at: None,
        created_at: now,
        expires_at: now + ttl,
    };
    // User codes are short: on the rare collision, draw again.
    let mut attempts = 0;
    loop {
        match state.store.insert_device(&record).await {
            Ok(()) => break,
            Err(StoreError::Conflict(_)) if attempts < 5 => {
                attempts += 1;
                record.user_code = new_user_code();
            }
            Err(e) => return Err(e.into()),
        }
    }
    let verification_uri = format!("{}/device", state.issuer);
    let complete = format!(
        "{verification_uri}?{}",
        serde_urlencoded::to_string([("user_code", &record.user_code)]).unwrap_or_default()
    );
    let mut res = Json(json!({
        "device_code": device_code,
        "user_code": record.user_code,
        "verification_uri": verification_uri,
        "verification_uri_complete": complete,
        "expires_in": ttl,
        "interval": interval,
    }))
    .into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

#[derive(Deserialize)]
pub struct DeviceQuery {
    user_code: Option<String>,
}

fn device_page(
    state: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    user_code: &str,
    error: Option<&str>,
    done: Option<&str>,
) -> Response {
    let browser = Browser::from_headers(state, headers);
    let page = state.pages.render(
        status,
        "device.html",
        context! {
            base => state.base_path.as_ref(),
            csrf => browser.csrf(state),
            user_code => user_code,
            error => error,
            done => done,
        },
    );
    browser.apply(page)
}

/// The resources and scope a pending device request asks for (resources reloaded, so one
/// removed since is refused).
async fn what_it_asks(
    state: &AppState,
    request: &DeviceCode,
) -> Result<(Vec<Resource>, Scope), Box<Response>> {
    let uris: Vec<&str> = request.resources.iter().map(String::as_str).collect();
    let resources = requested_resources(state, &uris)
        .await
        .map_err(|(_, d)| Box::new(ui::error_page(state, StatusCode::BAD_REQUEST, &d)))?;
    Ok((resources, Scope::parse(&request.scope).unwrap_or_default()))
}

/// `GET /device[?user_code=…]`: enter a code, or see what the device asks.
pub async fn page(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    Query(q): Query<DeviceQuery>,
) -> Response {
    let Some((_, user)) = ui::current_session(&state, &headers).await else {
        let mut back = format!("{}/device", state.base_path);
        if let Some(c) = &q.user_code {
            back.push('?');
            back.push_str(&serde_urlencoded::to_string([("user_code", c)]).unwrap_or_default());
        }
        return see_other(&format!(
            "{}/signin?{}",
            state.base_path,
            serde_urlencoded::to_string([("return_to", back)]).unwrap_or_default()
        ));
    };
    let Some(typed) = q.user_code else {
        return device_page(&state, &headers, StatusCode::OK, "", None, None);
    };
    let now = util::now();
    let bucket = format!(
        "device-code-wrong:{}",
        addr.map(|a| a.to_string()).unwrap_or_default()
    );
    if state
        .store
        .hits(&bucket, WRONG_CODE_WINDOW_SECS, now)
        .await
        .unwrap_or(MAX_WRONG_CODES)
        >= MAX_WRONG_CODES
    {
        return device_page(
            &state,
            &headers,
            StatusCode::TOO_MANY_REQUESTS,
            &typed,
            Some("Too many wrong codes. Try again in 10 minutes."),
            None,
        );
    }
    let found = match normalize_user_code(&typed) {
        Some(code) => state.store.pending_device(&code, now).await.ok().flatten(),
        None => None,
    };
    let Some(request) = found else {
        let _ = state.store.hit(&bucket, WRONG_CODE_WINDOW_SECS, now).await;
        return device_page(
            &state,
            &headers,
            StatusCode::BAD_REQUEST,
            &typed,
            Some("That code is not valid, or it expired. Check your device."),
            None,
        );
    };
    let Ok(Some(client)) = state.clients.find(&request.client_id).await else {
        return ui::error_page(
            &state,
            StatusCode::BAD_REQUEST,
            "The application that asked no longer exists.",
        );
    };
    let (resources, scope) = match what_it_asks(&state, &request).await {
        Ok(x) => x,
        Err(page) => return *page,
    };
    ui::consent::render(
        &state,
        &headers,
        ui::consent::ConsentView {
            asked: Asked {
                client_id: &client.client_id,
                resources: &resources,
                scope: &scope,
            },
            client: &client,
            user: &user,
            redirect_uri: None,
            action: "/device/decision",
            params: vec![("user_code".into(), request.user_code.clone())],
        },
    )
}

/// `POST /device`: the code form; on to the consent screen for that code.
pub async fn enter(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let form = match ui::posted_form(&state, &headers, &body) {
        Ok(f) => f,
        Err(page) => return *page,
    };
    let typed = form.get("user_code").unwrap_or("");
    see_other(&format!(
        "{}/device?{}",
        state.base_path,
        serde_urlencoded::to_string([("user_code", typed)]).unwrap_or_default()
    ))
}

/// `POST /device/decision`: the consent form's answer for a device.
pub async fn decision(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let form = match ui::posted_form(&state, &headers, &body) {
        Ok(f) => f,
        Err(page) => return *page,
    };
    let Some((session, user)) = ui::current_session(&state, &headers).await else {
        return ui::error_page(
            &state,
            StatusCode::BAD_REQUEST,
            "You are no longer signed in. Start again.",
        );
    };
    let now = util::now();
    let Some(request) = (match form.get("user_code") {
        Some(c) => state.store.pending_device(c, now).await.ok().flatten(),
        None => None,
    }) else {
        return device_page(
            &state,
            &headers,
            StatusCode::BAD_REQUEST,
            "",
            Some("That code is no longer waiting for a decision."),
            None,
        );
    };
    let approve = match form.get("decision") {
        Some("approve") => true,
        Some("deny") => false,
        _ => return ui::error_page(&state, StatusCode::BAD_REQUEST, "Choose Allow or Deny."),
    };
    if approve {
        let (resources, scope) = match what_it_asks(&state, &request).await {
            Ok(x) => x,
            Err(page) => return *page,
        };
        let asked = Asked {
            client_id: &request.client_id,
            resources: &resources,
            scope: &scope,
        };
        if let Err(e) = consent::save(&state, &user.id, &asked).await {
            tracing::error!(error = %e, "saving consent");
            return ui::error_page(
                &state,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Your decision could not be saved.",
            );
        }
    }
    let by = approve.then_some((user.id.as_str(), session.auth_time, session.sid.as_str()));
    match state.store.decide_device(&request.user_code, by, now).await {
        Ok(true) => {
            tracing::info!(client_id = %request.client_id, approved = approve, "device decision");
            let kind = if approve {
                Kind::DeviceApproved
            } else {
                Kind::DeviceDenied
            };
            state.audit.record(
                Event::new(kind)
                    .client(&request.client_id)
                    .user(&user.id)
                    .detail(serde_json::json!({ "scope": request.scope, "resources": request.resources })),
            );
            let done = if approve {
                "Your device is connected"
            } else {
                "Access denied"
            };
            device_page(&state, &headers, StatusCode::OK, "", None, Some(done))
        }
        Ok(false) => device_page(
            &state,
            &headers,
            StatusCode::BAD_REQUEST,
            "",
            Some("That code is no longer waiting for a decision."),
            None,
        ),
        Err(e) => {
            tracing::error!(error = %e, "recording a device decision");
            ui::error_page(
                &state,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Your decision could not be saved.",
            )
        }
    }
}
