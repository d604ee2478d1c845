//! PostgreSQL: the scale-out store that several stateless replicas share.

use std::str::FromStr;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::{Open, PoolStats, Schema, StoreError};

pub struct PgStore {
    pool: PgPool,
    /// The same pool as `pool`: PostgreSQL's writers do not contend as SQLite's do (see
    /// `SqliteStore`), so the statements that write share the one pool.
    writer: PgPool,
}

/// This binary's migrations. Applied migrations it does not know (a newer release's, during
/// a rolling update or after a rollback) are not an error: under the expand-then-contract
/// rule (UPGRADE.md) this binary still runs on that schema; the caller warns.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate::Migrator {
    ignore_missing: true,
    ..sqlx::migrate!("./migrations/postgres")
};

/// A pooled connection idle this long is pinged before it is used again.
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(1);

/// The newest migration this binary has.
pub(super) fn latest_migration() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

impl PgStore {
    pub async fn open(url: &str, how: Open) -> Result<(Self, Schema), StoreError> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            // sqlx pings every pooled connection before handing it out: a round trip to the
            // server before each statement. Only a connection idle for a while can have been
            // dropped (a server restart, a failover, an idle timeout in between); one in
            // steady use would show a break on its next statement anyway. So only those
            // idle longer than `CHECK_IDLE_AFTER` are pinged, and one that fails is replaced.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= CHECK_IDLE_AFTER {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(options)
            .await?;
        if how == Open::Migrate {
            // sqlx takes a PostgreSQL advisory lock while migrating, so replicas starting
            // together apply each migration once.
            MIGRATOR.run(&pool).await?;
        }
        let applied = super::sql::applied_migrations!(
            &pool,
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_name = '_sqlx_migrations' AND table_schema = current_schema()"
        );
        Ok((
            Self {
                writer: pool.clone(),
                pool,
            },
            Schema::compare(&MIGRATOR, applied),
        ))
    }

    /// The one pool.
    fn stats(&self) -> PoolStats {
        PoolStats::of(&self.pool)
    }
}

/// Export and import: the export reads one snapshot (REPEATABLE READ); the audit log's ids
/// are an identity column, so keeping them needs OVERRIDING SYSTEM VALUE and moving its
/// sequence past them.
const TRANSFER: super::transfer::Dialect = super::transfer::Dialect {
    snapshot: Some("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"),
    keep_ids: "OVERRIDING SYSTEM VALUE",
    after_audit: Some(
        "SELECT setval(pg_get_serial_sequence('audit_events', 'id'), \
         COALESCE((SELECT MAX(id) FROM audit_events), 0) + 1, false)",
    ),
    columns: "SELECT c.table_name::text, c.column_name::text FROM information_schema.columns c \
              JOIN information_schema.tables t ON t.table_schema = c.table_schema \
              AND t.table_name = c.table_name AND t.table_type = 'BASE TABLE' \
              WHERE c.table_schema = current_schema() AND c.table_name <> '_sqlx_migrations' \
              ORDER BY c.table_name, c.ordinal_position",
};

super::sql::sql_store!(PgStore, "postgres", TRANSFER);
