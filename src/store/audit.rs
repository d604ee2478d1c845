//! The audit log's rows: one per security event, appended in batches by `crate::audit`.

use async_trait::async_trait;
use serde::Serialize;
use sqlx::postgres::PgArguments;
use sqlx::sqlite::SqliteArguments;

use super::StoreError;

/// One security event: what happened, to whom, from where. `detail` never holds a secret or
/// a token; it names them by `jti`, family or client instead.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    /// Assigned by the database; 0 until stored. Newer events have larger ids.
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    /// Dotted kind, e.g. `token.issued` (see `crate::audit::Kind`).
    pub kind: String,
    pub client_id: Option<String>,
    pub user_id: Option<String>,
    /// The caller's address, when the event came from a request.
    pub ip: Option<String>,
    /// A JSON object with the event's particulars.
    pub detail: serde_json::Value,
}

/// A security event to append: [`AuditEvent`] before the database gives it an id, with its
/// `detail` already serialised (events are built on request paths and only written later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEvent {
    /// Unix seconds.
    pub at: i64,
    /// Dotted kind, e.g. `token.issued` (see `crate::audit::Kind`).
    pub kind: &'static str,
    pub client_id: Option<String>,
    pub user_id: Option<String>,
    pub ip: Option<String>,
    /// The text of a JSON object with the event's particulars.
    pub detail: String,
}

/// Which audit events to list, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Events at or after this time.
    pub since: Option<i64>,
    /// Events before this time.
    pub until: Option<i64>,
    /// A kind (`token.issued`) or a kind's first part (`token` matches `token.*`).
    pub kind: Option<String>,
    pub client_id: Option<String>,
    pub user_id: Option<String>,
    /// Pagination cursor: only events with a smaller id.
    pub before_id: Option<i64>,
    pub limit: i64,
}

#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Append events (their `id` is ignored), a few hundred to a statement.
    async fn append_audit(&self, events: &[NewAuditEvent]) -> Result<(), StoreError>;
    /// Events matching `q`, newest (largest id) first, at most `q.limit`.
    async fn list_audit(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError>;
    /// Delete events older than `before`; returns how many.
    async fn purge_audit(&self, before: i64) -> Result<u64, StoreError>;
}

#[derive(sqlx::FromRow)]
pub(super) struct AuditRow {
    id: i64,
    at: i64,
    kind: String,
    client_id: Option<String>,
    user_id: Option<String>,
    ip: Option<String>,
    detail: String,
}

impl TryFrom<AuditRow> for AuditEvent {
    type Error = StoreError;
    fn try_from(r: AuditRow) -> Result<Self, StoreError> {
        Ok(Self {
            detail: super::sql::from_json(&r.detail, &format!("audit event {} detail", r.id))?,
            id: r.id,
            at: r.at,
            kind: r.kind,
            client_id: r.client_id,
            user_id: r.user_id,
            ip: r.ip,
        })
    }
}

/// [`AuditStore::list_audit`]'s statement for `q`, on either backend. Only the filters given
/// are in it, so each can use its index (a listing by client or user walks that index, newest
/// first); a filter written as `($n IS NULL OR column = $n)` would leave every plan a walk
/// through the whole log.
pub fn listing<DB>(q: &AuditQuery) -> sqlx::QueryBuilder<DB>
where
    DB: sqlx::Database,
    DB::Arguments: Default,
    for<'a> i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    for<'a> &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    for<'a> String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut select = sqlx::QueryBuilder::new(
        "SELECT id, at, kind, client_id, user_id, ip, detail FROM audit_events WHERE TRUE",
    );
    // Time bounds filter the walk; they do not pick the `at` index (`+at` is no column to
    // an index): a listing reads the newest events first and stops at a page, where a range
    // over `at` would read and sort every event since `since` first. That index serves the
    // retention sweep.
    if let Some(since) = q.since {
        select.push(" AND +at >= ").push_bind(since);
    }
    if let Some(until) = q.until {
        select.push(" AND +at < ").push_bind(until);
    }
    if let Some(kind) = &q.kind {
        // A kind matches itself or, as a prefix, every `kind.*` under it. This walks the log
        // newest first until the page is full, as the kinds listed are the common ones
        // (`token` is most of the log): a range over the kind index would read and sort
        // every match before the first page.
        select
            .push(" AND (kind = ")
            .push_bind(kind.as_str())
            .push(" OR substr(kind, 1, length(")
            .push_bind(kind.as_str())
            .push(") + 1) = ")
            .push_bind(format!("{kind}."))
            .push(")");
    }
    if let Some(client_id) = &q.client_id {
        select
            .push(" AND client_id = ")
            .push_bind(client_id.as_str());
    }
    if let Some(user_id) = &q.user_id {
        select.push(" AND user_id = ").push_bind(user_id.as_str());
    }
    if let Some(before_id) = q.before_id {
        select.push(" AND id < ").push_bind(before_id);
    }
    select.push(" ORDER BY id DESC LIMIT ").push_bind(q.limit);
    select
}

/// A batch of events as SQLite's append binds it: one JSON array of `[at, kind, client_id,
/// user_id, ip, detail]` rows, read back by `jsonb_each` in the array's order.
///
/// One statement of one shape, whatever the batch's size. A multi-row `VALUES` list has a
/// shape per size: each size seen became a statement prepared and cached on the writer's
/// connection (and, on PostgreSQL, in its server process), hundreds of kilobytes apiece for
/// the large ones, so memory grew for as long as new sizes came (`bench/soak.sh`), and each
/// new one was parsed and planned with its 1,500 parameters under load.
///
/// An `Arc`: sqlx binds it by sharing the text, where a `&str` would be copied each time the
/// job runs.
pub(super) struct JsonRows(std::sync::Arc<str>);

impl JsonRows {
    /// The rows of `events` (a slice, or references gathered from the writes that carry
    /// them: nothing is copied before it is serialised).
    pub(super) fn of<'a>(
        events: impl IntoIterator<Item = &'a NewAuditEvent>,
    ) -> Result<Self, StoreError> {
        let rows: Vec<_> = events
            .into_iter()
            .map(|e| (e.at, e.kind, &e.client_id, &e.user_id, &e.ip, &e.detail))
            .collect();
        serde_json::to_string(&rows)
            .map(|json| Self(json.into()))
            .map_err(|e| StoreError::Corrupt(format!("audit events: {e}")))
    }

    /// The INSERT of these rows ([`append_json!`]).
    pub(super) fn insert(&self) -> sqlx::query::Query<'static, sqlx::Sqlite, SqliteArguments> {
        sqlx::query(append_json!("$1")).bind(self.text())
    }

    /// The rows' JSON array, to bind where a statement appends them with [`append_json!`].
    pub(super) fn text(&self) -> std::sync::Arc<str> {
        self.0.clone()
    }
}

/// SQLite's INSERT of the audit events of a [`JsonRows`] bound as `$param`, in the array's
/// order. `jsonb_each`: each row's `value` is the element as SQLite's binary JSON, which
/// `->>` reads without parsing; with `json_each` it was the element's text, parsed again by
/// each of the six `->>` (the append was about 3% of the server's samples under client
/// credentials, most of it in SQLite's JSON parser).
///
/// With a condition (`where`), only the rows for which it holds (it reads the row's columns
/// as `value ->> 0` … `value ->> 5`), and what follows `ORDER BY key` (a `RETURNING`).
macro_rules! append_json {
    ($param:literal) => {
        $crate::store::audit::append_json!($param, where "true", then "")
    };
    ($param:literal, where $condition:literal, then $tail:literal) => {
        concat!(
            "INSERT INTO audit_events (at, kind, client_id, user_id, ip, detail) \
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5 \
             FROM jsonb_each(",
            $param,
            ") WHERE ",
            $condition,
            " ORDER BY key",
            $tail
        )
    };
}
pub(crate) use append_json;

/// A batch of events as PostgreSQL's append binds it: one array per column, sent in binary
/// and read back by `UNNEST` in order. One statement of one shape whatever the batch's size,
/// as [`JsonRows`] is on SQLite, and nothing to parse: the same batch as one JSON array, taken
/// apart by `json_array_elements` and six `->>` per row, cost PostgreSQL 10.5 to 13.9 µs of
/// CPU per event, the arrays 4.6 to 6.0 (batches of 512, with the log's indexes; bench/README,
/// "The audit log's appends on PostgreSQL").
pub(super) struct ColumnRows {
    at: Vec<i64>,
    kind: Vec<&'static str>,
    client_id: Vec<Option<String>>,
    user_id: Vec<Option<String>>,
    ip: Vec<Option<String>>,
    detail: Vec<String>,
}

impl ColumnRows {
    /// Never fails; a `Result` as [`JsonRows::of`] is, so the append reads alike for both.
    pub(super) fn of(events: &[NewAuditEvent]) -> Result<Self, StoreError> {
        Ok(Self {
            at: events.iter().map(|e| e.at).collect(),
            kind: events.iter().map(|e| e.kind).collect(),
            client_id: events.iter().map(|e| e.client_id.clone()).collect(),
            user_id: events.iter().map(|e| e.user_id.clone()).collect(),
            ip: events.iter().map(|e| e.ip.clone()).collect(),
            detail: events.iter().map(|e| e.detail.clone()).collect(),
        })
    }

    /// The INSERT of these rows, in their order.
    pub(super) fn insert(&self) -> sqlx::query::Query<'static, sqlx::Postgres, PgArguments> {
        sqlx::query(
            "INSERT INTO audit_events (at, kind, client_id, user_id, ip, detail) \
             SELECT at, kind, client_id, user_id, ip, detail \
             FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) \
             WITH ORDINALITY AS rows(at, kind, client_id, user_id, ip, detail, n) ORDER BY n",
        )
        .bind(&self.at)
        .bind(&self.kind)
        .bind(&self.client_id)
        .bind(&self.user_id)
        .bind(&self.ip)
        .bind(&self.detail)
    }
}

/// The type of a batch of events as `$dialect`'s append binds it.
macro_rules! append_rows {
    ("postgres") => {
        $crate::store::audit::ColumnRows
    };
    ("sqlite") => {
        $crate::store::audit::JsonRows
    };
}
pub(crate) use append_rows;

macro_rules! sql_impl {
    ($ty:ty, $dialect:tt) => {
        #[async_trait::async_trait]
        impl $crate::store::AuditStore for $ty {
            async fn append_audit(
                &self,
                events: &[$crate::store::NewAuditEvent],
            ) -> Result<(), $crate::store::StoreError> {
                // One INSERT per chunk: the log grows with every token issued, so this costs
                // one statement per batch rather than one per event. On SQLite it is a job
                // for the writer's group commit, committed with the requests' writes queued
                // beside it instead of taking the writer for a turn and a commit of its own.
                type Rows = $crate::store::audit::append_rows!($dialect);
                for chunk in events.chunks(1024) {
                    let rows = std::sync::Arc::new(Rows::of(chunk)?);
                    self.writer
                        .write(Box::new(move |on| {
                            let rows = rows.clone();
                            Box::pin(async move {
                                rows.insert().execute(on).await?;
                                Ok(())
                            })
                        }))
                        .await?;
                }
                Ok(())
            }

            async fn list_audit(
                &self,
                q: &$crate::store::AuditQuery,
            ) -> Result<Vec<$crate::store::AuditEvent>, $crate::store::StoreError> {
                let mut select = $crate::store::audit::listing(q);
                let rows: Vec<$crate::store::audit::AuditRow> =
                    select.build_query_as().fetch_all(&self.pool).await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn purge_audit(&self, before: i64) -> Result<u64, $crate::store::StoreError> {
                // Events are appended in the order they happen, so the oldest (by id, the
                // primary key) says whether any is due. Most passes find none, and to say so
                // the DELETE would read, on PostgreSQL, every page appended since its BRIN
                // index was last summarized.
                let oldest: Option<i64> =
                    sqlx::query_scalar("SELECT at FROM audit_events ORDER BY id LIMIT 1")
                        .fetch_optional(&self.pool)
                        .await?;
                if oldest.is_none_or(|at| at >= before) {
                    return Ok(0);
                }
                let r = sqlx::query("DELETE FROM audit_events WHERE at < $1")
                    .bind(before)
                    .execute(&self.writer)
                    .await?;
                Ok(r.rows_affected())
            }
        }
    };
}
pub(crate) use sql_impl;
