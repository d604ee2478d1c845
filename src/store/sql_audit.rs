//! The audit log's SQL, shared by both backends (see [`super::sql`]).

use super::{AuditEvent, StoreError};

pub(super) type AuditRow = (
    i64,
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
);

pub(super) fn audit_from_row(r: AuditRow) -> Result<AuditEvent, StoreError> {
    let detail = serde_json::from_str(&r.6)
        .map_err(|e| StoreError::Corrupt(format!("audit event {} detail: {e}", r.0)))?;
    Ok(AuditEvent {
        id: r.0,
        at: r.1,
        kind: r.2,
        client_id: r.3,
        user_id: r.4,
        ip: r.5,
        detail,
    })
}

macro_rules! sql_audit_store {
    ($ty:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::AuditStore for $ty {
            async fn append_audit(
                &self,
                events: &[$crate::store::NewAuditEvent],
            ) -> Result<(), $crate::store::StoreError> {
                // One multi-row INSERT per chunk: the log grows with every token issued, so
                // this costs one statement per batch rather than one per event.
                for chunk in events.chunks(256) {
                    let mut insert = sqlx::QueryBuilder::new(
                        "INSERT INTO audit_events (at, kind, client_id, user_id, ip, detail) ",
                    );
                    insert.push_values(chunk, |mut row, e| {
                        row.push_bind(e.at)
                            .push_bind(e.kind)
                            .push_bind(e.client_id.as_deref())
                            .push_bind(e.user_id.as_deref())
                            .push_bind(e.ip.as_deref())
                            .push_bind(e.detail.as_str());
                    });
                    insert.build().execute(&self.pool).await?;
                }
                Ok(())
            }

            async fn list_audit(
                &self,
                q: &$crate::store::AuditQuery,
            ) -> Result<Vec<$crate::store::AuditEvent>, $crate::store::StoreError> {
                // `kind` matches itself or, as a prefix, every `kind.*` under it.
                let rows: Vec<super::sql_audit::AuditRow> = sqlx::query_as(
                    "SELECT id, at, kind, client_id, user_id, ip, detail FROM audit_events \
                     WHERE ($1 IS NULL OR at >= $1) AND ($2 IS NULL OR at < $2) \
                     AND ($3 IS NULL OR kind = $3 OR substr(kind, 1, length($3) + 1) = $3 || '.') \
                     AND ($4 IS NULL OR client_id = $4) AND ($5 IS NULL OR user_id = $5) \
                     AND ($6 IS NULL OR id < $6) \
                     ORDER BY id DESC LIMIT $7",
                )
                .bind(q.since)
                .bind(q.until)
                .bind(&q.kind)
                .bind(&q.client_id)
                .bind(&q.user_id)
                .bind(q.before_id)
                .bind(q.limit)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(super::sql_audit::audit_from_row)
                    .collect()
            }

            async fn purge_audit(&self, before: i64) -> Result<u64, $crate::store::StoreError> {
                let r = sqlx::query("DELETE FROM audit_events WHERE at < $1")
                    .bind(before)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected())
            }
        }
    };
}
pub(crate) use sql_audit_store;
