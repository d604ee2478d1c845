//! `/admin/v1/audit`: the audit log, newest first, filtered and paged by cursor.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiQuery, Page, PageQuery, cursor_for, time};
use crate::audit::Kind;
use crate::error::{ApiError, ApiErrorBody};
use crate::state::AppState;
use crate::store::{AuditEvent, AuditQuery};

/// Filters; all optional. An unknown parameter or event kind is refused, so a misspelt filter
/// cannot pass for "no such events".
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditFilter {
    /// Events at or after this time: RFC 3339 or Unix seconds.
    pub since: Option<String>,
    /// Events before this time: RFC 3339 or Unix seconds.
    pub until: Option<String>,
    /// A kind (`token.issued`) or its first part (`token` matches `token.*`).
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub kind: Option<String>,
    pub client_id: Option<String>,
    pub user_id: Option<String>,
    /// Most events per page: 1 to 200, default 50.
    pub limit: Option<String>,
    /// The `next` value of the previous page.
    pub cursor: Option<String>,
}

/// One security event.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventView {
    pub id: i64,
    /// RFC 3339.
    pub at: String,
    /// Dotted kind, e.g. `token.issued`, `admin.change`.
    #[serde(rename = "type")]
    pub kind: String,
    pub client_id: Option<String>,
    pub user_id: Option<String>,
    pub ip: Option<String>,
    /// The event's particulars; never a secret or a token.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

impl From<AuditEvent> for AuditEventView {
    fn from(e: AuditEvent) -> Self {
        Self {
            id: e.id,
            at: time(e.at),
            kind: e.kind,
            client_id: e.client_id,
            user_id: e.user_id,
            ip: e.ip,
            detail: e.detail,
        }
    }
}

/// RFC 3339 or Unix seconds.
fn parse_time(field: &str, raw: &str) -> Result<i64, ApiError> {
    if let Ok(n) = raw.parse::<i64>() {
        return Ok(n);
    }
    time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| {
            ApiError::validation(
                field,
                "must be an RFC 3339 time (2026-01-31T12:00:00Z) or Unix seconds",
            )
        })
}

fn check_kind(kind: &str) -> Result<(), ApiError> {
    if Kind::is_filter(kind) {
        Ok(())
    } else {
        Err(ApiError::validation(
            "type",
            "is not an event kind such as token.issued, or its first part such as token",
        ))
    }
}

impl AuditFilter {
    fn query(&self) -> Result<AuditQuery, ApiError> {
        let page = PageQuery {
            limit: self.limit.clone(),
            cursor: self.cursor.clone(),
        };
        let before_id = match page.after()? {
            Some(c) => Some(c.parse::<i64>().map_err(|_| {
                ApiError::validation("cursor", "is not a cursor this API handed out (use `next`)")
            })?),
            None => None,
        };
        if let Some(k) = &self.kind {
            check_kind(k)?;
        }
        Ok(AuditQuery {
            since: self
                .since
                .as_deref()
                .map(|s| parse_time("since", s))
                .transpose()?,
            until: self
                .until
                .as_deref()
                .map(|s| parse_time("until", s))
                .transpose()?,
            kind: self.kind.clone(),
            client_id: self.client_id.clone(),
            user_id: self.user_id.clone(),
            before_id,
            limit: page.limit()?,
        })
    }
}

/// List audit events, newest first.
#[utoipa::path(get, path = "/admin/v1/audit", tag = "audit",
    params(AuditFilter),
    responses(
        (status = 200, description = "A page of events", body = Page<AuditEventView>),
        (status = 400, description = "Invalid filter; `field` names it", body = ApiErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(filter): ApiQuery<AuditFilter>,
) -> Result<Json<Page<AuditEventView>>, ApiError> {
    let mut q = filter.query()?;
    let limit = q.limit as usize;
    // One more than asked for tells whether there is a next page.
    q.limit += 1;
    // Events recorded just now are still queued for the writer: store them first.
    state.oauth.audit.flush().await;
    let mut events = state.store.list_audit(&q).await?;
    let more = events.len() > limit;
    events.truncate(limit);
    let next = if more {
        events.last().map(|e| cursor_for(&e.id.to_string()))
    } else {
        None
    };
    Ok(Json(Page {
        items: events.into_iter().map(AuditEventView::from).collect(),
        next,
    }))
}
