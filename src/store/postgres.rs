//! PostgreSQL: the scale-out store that several stateless replicas share.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;

use super::connections::Connections;
use super::{Open, PoolStats, Schema, StoreError};

/// Reads and writes share one set of connections, held by the process (see
/// `connections.rs`): PostgreSQL's writers do not contend as SQLite's do (see `SqliteStore`).
pub struct PgStore {
    pool: Connections<sqlx::Postgres>,
    /// The same connections as `pool`.
    writer: Connections<sqlx::Postgres>,
    /// Requests' settles, run one at a time and shared (`commits::Settles`).
    settles: super::commits::Settles,
}

/// This binary's migrations. Applied migrations it does not know (a newer release's, during
/// a rolling update or after a rollback) are not an error: under the expand-then-contract
/// rule (UPGRADE.md) this binary still runs on that schema; the caller warns.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate::Migrator {
    ignore_missing: true,
    ..sqlx::migrate!("./migrations/postgres")
};

/// How many connections one replica opens at most.
const CONNECTIONS: usize = 16;

/// A connection idle this long is pinged before it is used again. Only a connection idle for
/// a while can have been dropped unnoticed (a server restart, a failover, an idle timeout in a
/// proxy between); one in steady use shows a break on its next statement, and is replaced then.
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(1);

/// The newest migration this binary has.
pub(super) fn latest_migration() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

impl PgStore {
    pub async fn open(url: &str, how: Open) -> Result<(Self, Schema), StoreError> {
        let options = PgConnectOptions::from_str(url)?;
        let mut first = super::connections::connect(&options).await?;
        if how == Open::Migrate {
            // sqlx takes a PostgreSQL advisory lock while migrating, so replicas starting
            // together apply each migration once.
            MIGRATOR.run(&mut first).await?;
        }
        let pool = Connections::shared(options, first, CONNECTIONS, CHECK_IDLE_AFTER);
        let applied = super::sql::applied_migrations!(
            &pool,
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_name = '_sqlx_migrations' AND table_schema = current_schema()"
        );
        Ok((
            Self {
                writer: pool.clone(),
                settles: super::commits::Settles::default(),
                pool,
            },
            Schema::compare(&MIGRATOR, applied),
        ))
    }

    /// The one set of connections.
    fn stats(&self) -> PoolStats {
        self.pool.stats()
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
