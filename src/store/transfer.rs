//! Every durable table as plain rows, out of one database and into another
//! (`concierge export` and `concierge import`, `crate::export`).
//!
//! The tables are described here once, column by column, with what each column holds; both
//! backends read and write them from this description, so a row leaves SQLite and enters
//! PostgreSQL (or the other way) exactly as it was stored: hashes stay hashes, signing keys
//! stay encrypted under the key-encryption key. [`TABLES`] and [`SKIPPED`] together name every
//! table of the schema; a test compares them with the tables a migrated database has, so a
//! new table must be classified before it ships.
//!
//! A row is a JSON object keyed by column name: text as a string, integers (Unix seconds,
//! counts, ids) as numbers, booleans as `true`/`false` (SQLite stores 0/1), bytes (hashes,
//! the encrypted private keys) as base64url without padding, NULL as `null`.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::{Map, Value};

use super::StoreError;

/// What a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Int,
    Bool,
    Bytes,
}

/// One column of an exported table.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub kind: Kind,
    /// May be NULL (and may be left out of an imported row, meaning NULL).
    pub nullable: bool,
    /// The value of a NOT NULL column left out of an imported row: the column's default in
    /// the schema. A column a later migration adds must be nullable or have one here, so
    /// that exports made before it still import.
    pub default: Option<Fill>,
}

/// A column's default, for rows exported before the column existed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    Text(&'static str),
    Int(i64),
    Bool(bool),
}

/// An exported table: its columns, in the order they are written, and the order of its rows.
#[derive(Debug)]
pub struct Table {
    pub name: &'static str,
    pub columns: &'static [Column],
    /// The columns the export's rows are sorted by (the primary key, or a time first), so
    /// two exports of the same data are the same text whatever the backend's collation.
    pub order_by: &'static [&'static str],
}

const fn col(name: &'static str, kind: Kind) -> Column {
    Column {
        name,
        kind,
        nullable: false,
        default: None,
    }
}

const fn opt(name: &'static str, kind: Kind) -> Column {
    Column {
        name,
        kind,
        nullable: true,
        default: None,
    }
}

/// A NOT NULL column with a default (one a migration added to an existing table).
const fn def(name: &'static str, fill: Fill) -> Column {
    Column {
        name,
        kind: match fill {
            Fill::Text(_) => Kind::Text,
            Fill::Int(_) => Kind::Int,
            Fill::Bool(_) => Kind::Bool,
        },
        nullable: false,
        default: Some(fill),
    }
}

use Kind::{Bytes, Int, Text};

/// The tables exported, in the order they are imported (a table after those it refers to).
pub const TABLES: &[Table] = &[
    Table {
        name: "resources",
        columns: &[
            col("uri", Text),
            col("name", Text),
            col("scopes", Text),
            def("access_token_alg", Fill::Text("ES256")),
            def("dpop", Fill::Text("optional")),
            col("created_at", Int),
            opt("required_acr", Text),
            def("details_types", Fill::Text("[]")),
        ],
        order_by: &["uri"],
    },
    Table {
        name: "resource_aliases",
        columns: &[col("alias", Text), col("uri", Text), col("created_at", Int)],
        order_by: &["alias"],
    },
    Table {
        name: "clients",
        columns: &[
            col("client_id", Text),
            col("kind", Text),
            opt("secret_hash", Bytes),
            opt("previous_secret_hash", Bytes),
            opt("previous_secret_expires_at", Int),
            col("metadata", Text),
            opt("registration_token_hash", Bytes),
            opt("registered_from", Text),
            col("created_at", Int),
            col("updated_at", Int),
            opt("last_used_at", Int),
            opt("expires_at", Int),
        ],
        order_by: &["client_id"],
    },
    Table {
        name: "signing_keys",
        columns: &[
            col("kid", Text),
            col("alg", Text),
            col("public_jwk", Text),
            col("private_key", Bytes),
            col("created_at", Int),
            opt("activates_at", Int),
            opt("retired_at", Int),
            opt("expires_at", Int),
            opt("revoked_at", Int),
            opt("supersedes", Text),
        ],
        order_by: &["created_at", "kid"],
    },
    Table {
        name: "users",
        columns: &[
            col("id", Text),
            col("username", Text),
            opt("email", Text),
            def("email_verified", Fill::Bool(false)),
            opt("name", Text),
            col("password_hash", Text),
            opt("disabled_at", Int),
            def("password_change_required", Fill::Bool(false)),
            col("created_at", Int),
            col("updated_at", Int),
        ],
        order_by: &["id"],
    },
    Table {
        name: "linked_identities",
        columns: &[
            col("issuer", Text),
            col("subject", Text),
            col("user_id", Text),
            opt("email", Text),
            col("linked_by", Text),
            col("created_at", Int),
        ],
        order_by: &["issuer", "subject"],
    },
    Table {
        // The authenticator secret sealed under the key-encryption key, like signing keys.
        name: "totp_factors",
        columns: &[
            col("user_id", Text),
            col("secret_sealed", Bytes),
            col("created_at", Int),
            opt("confirmed_at", Int),
            def("last_step", Fill::Int(0)),
        ],
        order_by: &["user_id"],
    },
    Table {
        name: "recovery_codes",
        columns: &[
            col("user_id", Text),
            col("code_hash", Bytes),
            col("created_at", Int),
            opt("used_at", Int),
        ],
        order_by: &["user_id", "code_hash"],
    },
    Table {
        // The WebAuthn user handle of each user with passkeys (random, not the user id).
        name: "passkey_users",
        columns: &[
            col("user_id", Text),
            col("handle", Text),
            col("created_at", Int),
        ],
        order_by: &["user_id"],
    },
    Table {
        // Passkeys: public keys and counters only, no secret.
        name: "passkeys",
        columns: &[
            col("id", Text),
            col("user_id", Text),
            col("credential_id", Text),
            col("credential", Text),
            col("name", Text),
            col("created_at", Int),
            opt("last_used_at", Int),
        ],
        order_by: &["id"],
    },
    Table {
        name: "sessions",
        columns: &[
            col("token_hash", Bytes),
            col("sid", Text),
            col("user_id", Text),
            col("auth_time", Int),
            def("amr", Fill::Text("")),
            opt("acr", Text),
            col("created_at", Int),
            col("expires_at", Int),
        ],
        order_by: &["sid"],
    },
    Table {
        name: "consents",
        columns: &[
            col("user_id", Text),
            col("client_id", Text),
            col("resource", Text),
            col("scopes", Text),
            col("created_at", Int),
            col("updated_at", Int),
            opt("last_used_at", Int),
        ],
        order_by: &["user_id", "client_id", "resource"],
    },
    Table {
        name: "refresh_tokens",
        columns: &[
            col("token_hash", Bytes),
            col("family_id", Text),
            col("client_id", Text),
            col("user_id", Text),
            col("resources", Text),
            col("scope", Text),
            col("auth_time", Int),
            def("amr", Fill::Text("")),
            opt("acr", Text),
            opt("sid", Text),
            opt("dpop_jkt", Text),
            col("created_at", Int),
            col("expires_at", Int),
            col("absolute_expires_at", Int),
            opt("used_at", Int),
            opt("successor_hash", Bytes),
            opt("revoked_at", Int),
        ],
        order_by: &["family_id", "created_at", "token_hash"],
    },
    Table {
        // Delegation chains: a hop the user cut stays cut after a move.
        name: "delegations",
        columns: &[
            col("id", Text),
            col("user_id", Text),
            col("root_client_id", Text),
            col("root_resource", Text),
            col("parent_id", Text),
            col("client_id", Text),
            col("resource", Text),
            col("created_at", Int),
            col("last_used_at", Int),
            col("expires_at", Int),
            opt("revoked_at", Int),
            opt("cut_by", Text),
        ],
        order_by: &["id"],
    },
    Table {
        name: "exchange_policies",
        columns: &[
            col("target", Text),
            col("client_id", Text),
            col("source", Text),
            col("scope_map", Text),
            col("created_at", Int),
        ],
        order_by: &["target", "client_id", "source"],
    },
    Table {
        name: "id_jag_policies",
        columns: &[
            col("client_id", Text),
            col("audience", Text),
            col("resource", Text),
            col("target_client_id", Text),
            col("scopes", Text),
            col("created_at", Int),
        ],
        order_by: &["client_id", "audience", "resource"],
    },
    Table {
        name: "id_jag_trusted_issuers",
        columns: &[
            col("issuer", Text),
            opt("jwks_uri", Text),
            opt("jwks", Text),
            def("link_by_email", Fill::Bool(false)),
            def("provision", Fill::Bool(true)),
            col("created_at", Int),
        ],
        order_by: &["issuer"],
    },
    Table {
        // Upstream identity providers added with the CLI; the client secret stays sealed
        // under the key-encryption key.
        name: "upstream_providers",
        columns: &[
            col("id", Text),
            col("name", Text),
            col("kind", Text),
            opt("issuer", Text),
            col("client_id", Text),
            opt("client_secret_sealed", Bytes),
            col("scopes", Text),
            col("link_by_email", Kind::Bool),
            col("provision", Kind::Bool),
            opt("authorization_endpoint", Text),
            opt("token_endpoint", Text),
            opt("userinfo_endpoint", Text),
            col("created_at", Int),
        ],
        order_by: &["id"],
    },
    Table {
        name: AUDIT_TABLE,
        columns: &[
            col("id", Int),
            col("at", Int),
            col("kind", Text),
            opt("client_id", Text),
            opt("user_id", Text),
            opt("ip", Text),
            col("detail", Text),
        ],
        order_by: &["id"],
    },
];

/// The audit log's table: exported unless asked not to; its ids are kept (they are the
/// admin API's paging cursor).
pub const AUDIT_TABLE: &str = "audit_events";

/// Tables deliberately left out of an export, and why: short-lived rows of flows in flight
/// and counters that protect a running server, all of which expire within minutes or hours.
pub const SKIPPED: &[(&str, &str)] = &[
    (
        "auth_codes",
        "authorization codes live a minute; a flow in flight starts again",
    ),
    (
        "device_codes",
        "device codes live minutes; a device flow in flight starts again",
    ),
    (
        "backchannel_requests",
        "approval requests live minutes; a client whose request was in flight asks again",
    ),
    (
        "rate_limits",
        "rate-limit windows start afresh on the new database",
    ),
    (
        "signin_backoffs",
        "the waits after failed sign-ins start afresh",
    ),
    (
        "webauthn_ceremonies",
        "passkey ceremonies live minutes; one in flight starts again",
    ),
    (
        "used_jtis",
        "spent jtis (client assertions, ID-JAGs, DPoP proofs) are remembered only for those \
         short lifetimes",
    ),
];

/// The table described by `name`.
pub fn table(name: &str) -> Option<&'static Table> {
    TABLES.iter().find(|t| t.name == name)
}

/// Rows of one table, each a JSON object keyed by column name.
pub type Rows = Vec<Map<String, Value>>;

/// Exported tables by name.
pub type Tables = BTreeMap<String, Rows>;

/// Rows in the target of an import that a server made by itself when it first started, and
/// that the import replaces: its admin API resource, its first signing keys and the audit
/// events recording them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bootstrap {
    pub resources: Vec<String>,
    pub signing_keys: Vec<String>,
    pub audit_events: Vec<i64>,
}

#[async_trait]
pub trait TransferStore: Send + Sync {
    /// Every row of the tables of [`TABLES`] (the audit log only with `audit`), read in one
    /// snapshot, so the rows agree with each other.
    async fn export_rows(&self, audit: bool) -> Result<Tables, StoreError>;
    /// How many rows each table of [`TABLES`] has.
    async fn count_rows(&self) -> Result<BTreeMap<String, i64>, StoreError>;
    /// In one transaction: delete the `bootstrap` rows; refuse with `NotEmpty` (changing
    /// nothing) when a table of [`TABLES`] still has a row; insert `tables`. Returns how
    /// many rows each table received. `Corrupt` names the table, row and column of a value
    /// that is not what its column holds.
    async fn import_rows(
        &self,
        tables: &Tables,
        bootstrap: &Bootstrap,
    ) -> Result<BTreeMap<String, u64>, StoreError>;
    /// Every table of the database (without the migrations' own) with its column names.
    async fn schema_tables(&self) -> Result<BTreeMap<String, Vec<String>>, StoreError>;
}

/// What differs between the backends here.
#[derive(Debug)]
pub struct Dialect {
    /// Run first in the export's transaction, so every table is read from one snapshot.
    pub snapshot: Option<&'static str>,
    /// Between the column list and `VALUES` of an INSERT that sets the audit log's ids.
    pub keep_ids: &'static str,
    /// Run after the audit log's rows are inserted, so new events are numbered after them.
    pub after_audit: Option<&'static str>,
    /// `(table, column)` rows of every table but `_sqlx_migrations`, in column order.
    pub columns: &'static str,
}

/// A value to bind, by kind.
pub(super) enum Param {
    Text(Option<String>),
    Int(Option<i64>),
    Bool(Option<bool>),
    Bytes(Option<Vec<u8>>),
}

/// The value of `column` in `row` (row number `n` of `table`), checked against its kind.
pub(super) fn param(
    table: &Table,
    n: usize,
    row: &Map<String, Value>,
    column: &Column,
) -> Result<Param, StoreError> {
    let bad =
        |what: &str| StoreError::Corrupt(format!("{}[{n}].{}: {what}", table.name, column.name));
    let value = row.get(column.name).unwrap_or(&Value::Null);
    if value.is_null() && !row.contains_key(column.name) {
        match column.default {
            Some(Fill::Text(t)) => return Ok(Param::Text(Some(t.to_string()))),
            Some(Fill::Int(i)) => return Ok(Param::Int(Some(i))),
            Some(Fill::Bool(b)) => return Ok(Param::Bool(Some(b))),
            None => {}
        }
    }
    if value.is_null() {
        if !column.nullable {
            return Err(bad("missing"));
        }
        return Ok(match column.kind {
            Kind::Text => Param::Text(None),
            Kind::Int => Param::Int(None),
            Kind::Bool => Param::Bool(None),
            Kind::Bytes => Param::Bytes(None),
        });
    }
    Ok(match column.kind {
        Kind::Text => Param::Text(Some(
            value
                .as_str()
                .ok_or_else(|| bad("not a string"))?
                .to_string(),
        )),
        Kind::Int => Param::Int(Some(value.as_i64().ok_or_else(|| bad("not an integer"))?)),
        Kind::Bool => Param::Bool(Some(value.as_bool().ok_or_else(|| bad("not a boolean"))?)),
        Kind::Bytes => Param::Bytes(Some(
            value
                .as_str()
                .and_then(crate::util::b64_decode)
                .ok_or_else(|| bad("not base64url"))?,
        )),
    })
}

/// Refuse a row with a column its table does not have (a typo, or another schema).
pub(super) fn check_columns(
    table: &Table,
    n: usize,
    row: &Map<String, Value>,
) -> Result<(), StoreError> {
    match row
        .keys()
        .find(|k| !table.columns.iter().any(|c| c.name == k.as_str()))
    {
        Some(k) => Err(StoreError::Corrupt(format!(
            "{}[{n}]: no column {k:?} in this table",
            table.name
        ))),
        None => Ok(()),
    }
}

/// `SELECT <columns> FROM <table>`.
pub(super) fn select_sql(table: &Table) -> String {
    let columns: Vec<&str> = table.columns.iter().map(|c| c.name).collect();
    format!("SELECT {} FROM {}", columns.join(", "), table.name)
}

/// Sort exported rows by the table's `order_by` columns: numbers as numbers, text by its
/// bytes (bytes by their base64url, which is as stable).
pub(super) fn sort_rows(table: &Table, rows: &mut Rows) {
    fn key(v: Option<&Value>) -> (u8, i64, &str) {
        match v {
            Some(Value::Number(n)) => (1, n.as_i64().unwrap_or(0), ""),
            Some(Value::String(s)) => (2, 0, s.as_str()),
            Some(Value::Bool(b)) => (1, i64::from(*b), ""),
            _ => (0, 0, ""),
        }
    }
    rows.sort_by(|a, b| {
        table
            .order_by
            .iter()
            .map(|c| key(a.get(*c)).cmp(&key(b.get(*c))))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
}

/// `INSERT INTO <table> (<columns>) [keep ids] ` (the `VALUES` follow).
pub(super) fn insert_head(table: &Table, dialect: &Dialect) -> String {
    let columns: Vec<&str> = table.columns.iter().map(|c| c.name).collect();
    let keep = if table.name == AUDIT_TABLE {
        dialect.keep_ids
    } else {
        ""
    };
    format!(
        "INSERT INTO {} ({}) {keep} ",
        table.name,
        columns.join(", ")
    )
}

/// Rows to an INSERT statement: PostgreSQL takes at most 65535 bound values in one.
pub(super) fn rows_per_insert(table: &Table) -> usize {
    (4000 / table.columns.len()).max(1)
}

macro_rules! sql_impl {
    ($ty:ty, $dialect:expr) => {
        #[async_trait::async_trait]
        impl $crate::store::transfer::TransferStore for $ty {
            async fn export_rows(
                &self,
                audit: bool,
            ) -> Result<$crate::store::transfer::Tables, $crate::store::StoreError> {
                use sqlx::Row as _;
                use $crate::store::transfer::{Kind, TABLES};
                let dialect: &$crate::store::transfer::Dialect = &$dialect;
                let mut tx = self.pool.begin().await?;
                if let Some(s) = dialect.snapshot {
                    sqlx::query(s).execute(&mut *tx).await?;
                }
                let mut out = $crate::store::transfer::Tables::new();
                for table in TABLES {
                    if !audit && table.name == $crate::store::transfer::AUDIT_TABLE {
                        continue;
                    }
                    let sql = $crate::store::transfer::select_sql(table);
                    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .fetch_all(&mut *tx)
                        .await?;
                    let mut list = Vec::with_capacity(rows.len());
                    for row in rows {
                        let mut object = serde_json::Map::new();
                        for (i, c) in table.columns.iter().enumerate() {
                            let v = match c.kind {
                                Kind::Text => row
                                    .try_get::<Option<String>, _>(i)?
                                    .map_or(serde_json::Value::Null, serde_json::Value::from),
                                Kind::Int => row
                                    .try_get::<Option<i64>, _>(i)?
                                    .map_or(serde_json::Value::Null, serde_json::Value::from),
                                Kind::Bool => row
                                    .try_get::<Option<bool>, _>(i)?
                                    .map_or(serde_json::Value::Null, serde_json::Value::from),
                                Kind::Bytes => row
                                    .try_get::<Option<Vec<u8>>, _>(i)?
                                    .map_or(serde_json::Value::Null, |b| {
                                        serde_json::Value::from($crate::util::b64(&b))
                                    }),
                            };
                            object.insert(c.name.to_string(), v);
                        }
                        list.push(object);
                    }
                    $crate::store::transfer::sort_rows(table, &mut list);
                    out.insert(table.name.to_string(), list);
                }
                tx.commit().await?;
                Ok(out)
            }

            async fn count_rows(
                &self,
            ) -> Result<std::collections::BTreeMap<String, i64>, $crate::store::StoreError> {
                let mut out = std::collections::BTreeMap::new();
                for table in $crate::store::transfer::TABLES {
                    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                        "SELECT COUNT(*) FROM {}",
                        table.name
                    )))
                    .fetch_one(&self.pool)
                    .await?;
                    out.insert(table.name.to_string(), n);
                }
                Ok(out)
            }

            async fn import_rows(
                &self,
                tables: &$crate::store::transfer::Tables,
                bootstrap: &$crate::store::transfer::Bootstrap,
            ) -> Result<std::collections::BTreeMap<String, u64>, $crate::store::StoreError> {
                use $crate::store::transfer::{Param, TABLES};
                let dialect: &$crate::store::transfer::Dialect = &$dialect;
                if let Some(name) = tables
                    .keys()
                    .find(|n| $crate::store::transfer::table(n).is_none())
                {
                    return Err($crate::store::StoreError::Corrupt(format!(
                        "no table {name:?} is imported"
                    )));
                }
                let mut tx = self.writer.begin().await?;
                for uri in &bootstrap.resources {
                    sqlx::query("DELETE FROM resource_aliases WHERE uri = $1")
                        .bind(uri)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("DELETE FROM resources WHERE uri = $1")
                        .bind(uri)
                        .execute(&mut *tx)
                        .await?;
                }
                for kid in &bootstrap.signing_keys {
                    sqlx::query("DELETE FROM signing_keys WHERE kid = $1")
                        .bind(kid)
                        .execute(&mut *tx)
                        .await?;
                }
                for id in &bootstrap.audit_events {
                    sqlx::query("DELETE FROM audit_events WHERE id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                let mut occupied = Vec::new();
                for table in TABLES {
                    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                        "SELECT COUNT(*) FROM {}",
                        table.name
                    )))
                    .fetch_one(&mut *tx)
                    .await?;
                    if n > 0 {
                        occupied.push(format!("{} ({n})", table.name));
                    }
                }
                if !occupied.is_empty() {
                    return Err($crate::store::StoreError::NotEmpty(occupied.join(", ")));
                }
                let mut counts = std::collections::BTreeMap::new();
                for table in TABLES {
                    let Some(rows) = tables.get(table.name) else {
                        continue;
                    };
                    let mut inserted = 0;
                    for (c, chunk) in rows
                        .chunks($crate::store::transfer::rows_per_insert(table))
                        .enumerate()
                    {
                        let first = c * $crate::store::transfer::rows_per_insert(table);
                        let mut params = Vec::with_capacity(chunk.len());
                        for (i, row) in chunk.iter().enumerate() {
                            $crate::store::transfer::check_columns(table, first + i, row)?;
                            let values = table
                                .columns
                                .iter()
                                .map(|col| {
                                    $crate::store::transfer::param(table, first + i, row, col)
                                })
                                .collect::<Result<Vec<_>, _>>()?;
                            params.push(values);
                        }
                        let mut insert = sqlx::QueryBuilder::new(
                            $crate::store::transfer::insert_head(table, dialect),
                        );
                        insert.push_values(params, |mut b, values| {
                            for v in values {
                                match v {
                                    Param::Text(v) => b.push_bind(v),
                                    Param::Int(v) => b.push_bind(v),
                                    Param::Bool(v) => b.push_bind(v),
                                    Param::Bytes(v) => b.push_bind(v),
                                };
                            }
                        });
                        inserted += insert
                            .build()
                            .execute(&mut *tx)
                            .await
                            .map_err(|e| {
                                $crate::store::sql::conflict(e, &format!("a row of {}", table.name))
                            })?
                            .rows_affected();
                    }
                    if table.name == $crate::store::transfer::AUDIT_TABLE {
                        if let Some(s) = dialect.after_audit {
                            sqlx::query(s).execute(&mut *tx).await?;
                        }
                    }
                    counts.insert(table.name.to_string(), inserted);
                }
                tx.commit().await?;
                Ok(counts)
            }

            async fn schema_tables(
                &self,
            ) -> Result<std::collections::BTreeMap<String, Vec<String>>, $crate::store::StoreError>
            {
                let dialect: &$crate::store::transfer::Dialect = &$dialect;
                let rows: Vec<(String, String)> = sqlx::query_as(dialect.columns)
                    .fetch_all(&self.pool)
                    .await?;
                let mut out: std::collections::BTreeMap<String, Vec<String>> =
                    std::collections::BTreeMap::new();
                for (table, column) in rows {
                    out.entry(table).or_default().push(column);
                }
                Ok(out)
            }
        }
    };
}
pub(crate) use sql_impl;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_exported_or_skipped_never_both_and_once() {
        let mut names: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
        names.extend(SKIPPED.iter().map(|(n, _)| *n));
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "a table is listed twice");
    }

    #[test]
    fn a_row_is_checked_column_by_column() {
        let users = table("users").unwrap();
        let mut row: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "id": "u1", "username": "alice", "email": null, "email_verified": true,
            "password_hash": "", "password_change_required": false,
            "created_at": 1, "updated_at": 2
        }))
        .unwrap();
        check_columns(users, 0, &row).unwrap();
        for c in users.columns {
            param(users, 0, &row, c).unwrap();
        }
        row.insert("created_at".into(), Value::from("yesterday"));
        let created = users
            .columns
            .iter()
            .find(|c| c.name == "created_at")
            .unwrap();
        let e = param(users, 3, &row, created).err().unwrap().to_string();
        assert!(e.contains("users[3].created_at: not an integer"), "{e}");
        row.remove("username");
        let username = users.columns.iter().find(|c| c.name == "username").unwrap();
        assert!(param(users, 0, &row, username).is_err());
        // A column added since the export was made takes its default; given as null, it
        // is refused like any other NOT NULL column.
        let flag = users
            .columns
            .iter()
            .find(|c| c.name == "password_change_required")
            .unwrap();
        row.remove("password_change_required");
        assert!(matches!(
            param(users, 0, &row, flag).unwrap(),
            Param::Bool(Some(false))
        ));
        row.insert("password_change_required".into(), Value::Null);
        assert!(param(users, 0, &row, flag).is_err());
        row.insert("colour".into(), Value::from("blue"));
        assert!(check_columns(users, 0, &row).is_err());
    }

    #[test]
    fn bytes_are_base64url() {
        let keys = table("signing_keys").unwrap();
        let private = keys
            .columns
            .iter()
            .find(|c| c.name == "private_key")
            .unwrap();
        let row: Map<String, Value> =
            serde_json::from_value(serde_json::json!({ "private_key": "AQID" })).unwrap();
        assert!(matches!(
            param(keys, 0, &row, private).unwrap(),
            Param::Bytes(Some(b)) if b == [1, 2, 3]
        ));
        let row: Map<String, Value> =
            serde_json::from_value(serde_json::json!({ "private_key": "not base64!" })).unwrap();
        assert!(param(keys, 0, &row, private).is_err());
    }
}
