//! PostgreSQL: the scale-out store that several stateless replicas share.

use std::str::FromStr;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::{Open, Schema, StoreError};

pub struct PgStore {
    pool: PgPool,
}

/// This binary's migrations. Applied migrations it does not know (a newer release's, during
/// a rolling update or after a rollback) are not an error: under the expand-then-contract
/// rule (UPGRADE.md) this binary still runs on that schema; the caller warns.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate::Migrator {
    ignore_missing: true,
    ..sqlx::migrate!("./migrations/postgres")
};

impl PgStore {
    pub async fn open(url: &str, how: Open) -> Result<(Self, Schema), StoreError> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
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
        Ok((Self { pool }, Schema::compare(&MIGRATOR, applied)))
    }
}

super::sql::sql_store!(PgStore, "postgres");
