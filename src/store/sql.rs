//! What the SQL of every aggregate shares, and the macro that implements every store trait
//! for a backend.
//!
//! Each aggregate module (`clients.rs`, `codes.rs`, …) holds its statements once, in a macro
//! that implements its trait for a type with a `pool` field (an sqlx pool). The statements
//! use only what SQLite (3.35+) and PostgreSQL share: `$n` placeholders,
//! `ON CONFLICT … DO UPDATE`, `RETURNING`, BIGINT times and TEXT JSON. Rows are read into
//! `sqlx::FromRow` structs, which decode alike from either backend.

use super::StoreError;

/// Map a unique-constraint violation to `Conflict(what)`.
pub(super) fn conflict(e: sqlx::Error, what: &str) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(what.to_string())
        }
        _ => StoreError::Database(e),
    }
}

/// Can this text be a stored key? PostgreSQL's TEXT refuses NUL, so no stored key holds one,
/// and a lookup by a key from a request that does (a client_id, a username) must find
/// nothing on either backend rather than fail on one.
pub(super) fn may_be_stored(key: &str) -> bool {
    !key.contains('\0')
}

/// A value stored as JSON text.
pub(super) fn to_json<T: serde::Serialize + ?Sized>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// JSON text read back; `what` names it in the error.
pub(super) fn from_json<T: serde::de::DeserializeOwned>(
    text: &str,
    what: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// Space-separated words (scopes, `amr` values) as stored, split.
pub(super) fn words(s: &str) -> Vec<String> {
    s.split(' ')
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// The migrations applied to the database behind `$pool`, `(version, description)` (none
/// when it has no migrations table yet); `$count_table` counts tables named
/// `_sqlx_migrations`.
macro_rules! applied_migrations {
    ($pool:expr, $count_table:literal) => {{
        let tables: i64 = sqlx::query_scalar($count_table).fetch_one($pool).await?;
        if tables == 0 {
            Vec::new()
        } else {
            sqlx::query_as::<_, (i64, String)>(
                "SELECT version, description FROM _sqlx_migrations WHERE success \
                 ORDER BY version",
            )
            .fetch_all($pool)
            .await?
        }
    }};
}
pub(crate) use applied_migrations;

/// Implement every store trait for `$ty` (a type with a `pool` field), naming the backend;
/// `$transfer` is its [`Dialect`](super::transfer::Dialect) for export and import.
macro_rules! sql_store {
    ($ty:ty, $name:literal, $transfer:expr) => {
        $crate::store::clients::sql_impl!($ty);
        $crate::store::resources::sql_impl!($ty);
        $crate::store::keys::sql_impl!($ty);
        $crate::store::rate_limits::sql_impl!($ty);
        $crate::store::replay::sql_impl!($ty);
        $crate::store::users::sql_impl!($ty);
        $crate::store::identities::sql_impl!($ty);
        $crate::store::sessions::sql_impl!($ty);
        $crate::store::consents::sql_impl!($ty);
        $crate::store::codes::sql_impl!($ty);
        $crate::store::refresh_tokens::sql_impl!($ty);
        $crate::store::devices::sql_impl!($ty);
        $crate::store::exchange_policies::sql_impl!($ty);
        $crate::store::id_jag::sql_impl!($ty);
        $crate::store::audit::sql_impl!($ty);
        $crate::store::transfer::sql_impl!($ty, $transfer);

        #[async_trait::async_trait]
        impl $crate::store::HealthStore for $ty {
            async fn ping(&self) -> Result<(), $crate::store::StoreError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }
        }

        impl $crate::store::Store for $ty {
            fn backend(&self) -> &'static str {
                $name
            }
        }
    };
}
pub(crate) use sql_store;
