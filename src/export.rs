//! Export and import of the whole configuration and data set (`concierge export`,
//! `concierge import`): one JSON document, which also moves a SQLite installation to
//! PostgreSQL (or back). The document, its checks and what counts as an empty target are
//! decided here; the rows themselves are read and written by the store
//! ([`crate::store::transfer`]), which also says which tables are left out and why.
//!
//! The document: a header (`format`, `version`, `schema`, `exported_at`, `issuer`, the
//! key-encryption key's fingerprint) and `tables`, each a list of rows as stored. Signing
//! keys stay encrypted under the key-encryption key, so the target's servers need the same
//! one; an import checks that it opens every key before it writes anything.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::keys::Kek;
use crate::oauth::admin_token::ADMIN_SCOPE;
use crate::store::transfer::{self, Bootstrap, Tables};
use crate::store::{AuditQuery, Schema, Store, StoreError};
use crate::util;

/// The `format` of an export.
pub const FORMAT: &str = "concierge-export";
/// The `version` of the document's layout this binary writes and reads.
pub const VERSION: u32 = 1;

/// An export.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Document {
    pub format: String,
    pub version: u32,
    /// The newest migration applied to the exported database.
    pub schema: i64,
    /// RFC 3339.
    pub exported_at: String,
    /// The issuer the exporting command was configured with.
    pub issuer: String,
    /// The fingerprint of the key-encryption key the command had (see `keys list`'s and
    /// `keys rekey`'s), to name it when the target's does not open the signing keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_encryption_key: Option<String>,
    /// Rows by table; a table left out (the audit log with `--no-audit`) is not there.
    pub tables: Tables,
}

/// Why an export or an import was refused.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("this is not a Concierge export (format {0:?}, expected {FORMAT:?})")]
    Format(String),
    #[error(
        "this export has format version {0}; this concierge reads version {VERSION}: import it \
         with the release that made it"
    )]
    Version(u32),
    #[error(
        "this export comes from a newer schema (migration {export}) than this concierge knows \
         (up to {binary}): import it with the release that made it, or a newer one"
    )]
    NewerExport { export: i64, binary: i64 },
    #[error(
        "the database has migrations this concierge does not know ({0}): export or import with \
         the release that applied them"
    )]
    NewerDatabase(String),
    #[error(
        "{what} in the export does not open with this key-encryption key ({ours}){theirs}: \
         signing keys and authenticator secrets are exported encrypted, so the target needs \
         the same key_encryption_key as the source (CONCIERGE_KEY_ENCRYPTION_KEY, or the \
         source's data directory's key-encryption-key file); nothing was imported"
    )]
    Kek {
        what: String,
        ours: String,
        theirs: String,
    },
    #[error(
        "the target database is not empty ({0}); import only into a new database \
         (`concierge import --init`, or `concierge migrate` first) or one a server has only \
         been started on; nothing was imported"
    )]
    NotEmpty(String),
    #[error("the export is damaged: {0}; nothing was imported")]
    Damaged(String),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for ExportError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotEmpty(what) => Self::NotEmpty(what),
            StoreError::Corrupt(what) => Self::Damaged(what),
            StoreError::Conflict(what) => Self::Damaged(format!("{what} is there twice")),
            other => Self::Store(other),
        }
    }
}

/// Read an export: its format and version are checked before the rest is read, so an export
/// of another version is refused as such rather than as damaged.
pub fn parse(text: &[u8]) -> Result<Document, ExportError> {
    let value: Value = serde_json::from_slice(text)
        .map_err(|e| ExportError::Damaged(format!("it is not JSON ({e})")))?;
    let format = value.get("format").and_then(Value::as_str).unwrap_or("");
    if format != FORMAT {
        return Err(ExportError::Format(format.to_string()));
    }
    match value.get("version").and_then(Value::as_u64) {
        Some(v) if v == u64::from(VERSION) => {}
        Some(v) => return Err(ExportError::Version(u32::try_from(v).unwrap_or(u32::MAX))),
        None => return Err(ExportError::Damaged("it has no version".into())),
    }
    let doc: Document =
        serde_json::from_value(value).map_err(|e| ExportError::Damaged(e.to_string()))?;
    check_header(&doc)?;
    Ok(doc)
}

/// Everything in `store` as one document. `schema` is where the database stands (a database
/// with migrations this binary does not know is refused: its new columns would be lost).
pub async fn export(
    store: &dyn Store,
    schema: &Schema,
    issuer: &str,
    kek: Option<&Kek>,
    audit: bool,
) -> Result<Document, ExportError> {
    if !schema.unknown.is_empty() {
        return Err(ExportError::NewerDatabase(schema.unknown.join(", ")));
    }
    let tables = store.export_rows(audit).await?;
    Ok(Document {
        format: FORMAT.to_string(),
        version: VERSION,
        schema: schema.latest(),
        exported_at: util::rfc3339(util::now()),
        issuer: issuer.to_string(),
        key_encryption_key: kek.map(|k| k.fingerprint().to_string()),
        tables,
    })
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Imported {
    /// Rows written, by table, in the order they were.
    pub counts: Vec<(String, u64)>,
    /// Tables the export does not have (the audit log of an export made with `--no-audit`).
    pub absent: Vec<String>,
    /// Rows the target's first server made by itself, replaced by the export's.
    pub replaced: Bootstrap,
}

/// Check `doc` against this binary, the target database and `kek`, then write it into
/// `store` in one transaction. Nothing is written when any check fails.
pub async fn import(
    store: &dyn Store,
    schema: &Schema,
    kek: &Kek,
    doc: &Document,
) -> Result<Imported, ExportError> {
    check_header(doc)?;
    if !schema.unknown.is_empty() {
        return Err(ExportError::NewerDatabase(schema.unknown.join(", ")));
    }
    if let Some(name) = doc.tables.keys().find(|n| transfer::table(n).is_none()) {
        return Err(ExportError::Damaged(format!(
            "it has a table {name:?} this concierge does not import"
        )));
    }
    check_keys(doc, kek)?;
    let bootstrap = bootstrap_rows(store).await?;
    let counts = store.import_rows(&doc.tables, &bootstrap).await?;
    Ok(Imported {
        counts: transfer::TABLES
            .iter()
            .filter_map(|t| counts.get(t.name).map(|n| (t.name.to_string(), *n)))
            .collect(),
        absent: transfer::TABLES
            .iter()
            .filter(|t| !doc.tables.contains_key(t.name))
            .map(|t| t.name.to_string())
            .collect(),
        replaced: bootstrap,
    })
}

/// The format, its version and its schema.
pub fn check_header(doc: &Document) -> Result<(), ExportError> {
    if doc.format != FORMAT {
        return Err(ExportError::Format(doc.format.clone()));
    }
    if doc.version != VERSION {
        return Err(ExportError::Version(doc.version));
    }
    let binary = crate::store::latest_migration();
    if doc.schema > binary {
        return Err(ExportError::NewerExport {
            export: doc.schema,
            binary,
        });
    }
    Ok(())
}

/// Every exported signing key and authenticator secret must open with `kek` (or one of its
/// previous keys): the target's servers could not sign, publish or check second factors
/// otherwise.
fn check_keys(doc: &Document, kek: &Kek) -> Result<(), ExportError> {
    // (table, the column naming the row, the sealed column, the associated data, what it is)
    type Aad = fn(&str) -> String;
    let sealed: [(&str, &str, &str, Aad, &str); 2] = [
        (
            "signing_keys",
            "kid",
            "private_key",
            str::to_string,
            "signing key",
        ),
        (
            "totp_factors",
            "user_id",
            "secret_sealed",
            crate::oauth::authn::totp_kid,
            "the authenticator secret of user",
        ),
    ];
    for (table, name, column, aad, what) in sealed {
        for (n, row) in doc.tables.get(table).into_iter().flatten().enumerate() {
            let id = row
                .get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| ExportError::Damaged(format!("{table}[{n}].{name}: missing")))?;
            let bytes = row
                .get(column)
                .and_then(Value::as_str)
                .and_then(util::b64_decode)
                .ok_or_else(|| {
                    ExportError::Damaged(format!("{table}[{n}].{column}: not base64url"))
                })?;
            if kek.open(&aad(id), &bytes).is_err() {
                return Err(ExportError::Kek {
                    what: format!("{what} {id}"),
                    ours: kek.fingerprint().to_string(),
                    theirs: doc
                        .key_encryption_key
                        .as_ref()
                        .map(|f| format!("; the export was made with {f}"))
                        .unwrap_or_default(),
                });
            }
        }
    }
    Ok(())
}

/// Audit events a server writes by itself when it first starts (its first signing keys).
const BOOTSTRAP_AUDIT_KINDS: &[&str] = &["key.rotated"];

/// The rows a server made by itself when it started on the target: its admin API resource
/// (each issuer it ran with registers one), its first signing keys and the audit events
/// recording them. They are all the target may hold: the import replaces them. Anything
/// else makes the target not empty, and the import refuses (inside its transaction too).
async fn bootstrap_rows(store: &dyn Store) -> Result<Bootstrap, ExportError> {
    let counts = store.count_rows().await?;
    let mut bootstrap = Bootstrap::default();
    for r in store.list_resources().await? {
        let admin = r.uri.ends_with("/admin/v1")
            && r.scopes.len() == 1
            && r.scopes[0].name == ADMIN_SCOPE
            && r.aliases.is_empty();
        if admin {
            bootstrap.resources.push(r.uri);
        }
    }
    bootstrap.signing_keys = store
        .list_keys()
        .await?
        .into_iter()
        .map(|k| k.kid)
        .collect();
    let audit = counts.get(transfer::AUDIT_TABLE).copied().unwrap_or(0);
    // A server's start-up writes a handful of events; more than this is a used database.
    if audit > 0 && audit <= 100 {
        let events = store
            .list_audit(&AuditQuery {
                limit: 101,
                ..Default::default()
            })
            .await?;
        if events
            .iter()
            .all(|e| BOOTSTRAP_AUDIT_KINDS.contains(&e.kind.as_str()))
        {
            bootstrap.audit_events = events.iter().map(|e| e.id).collect();
        }
    }
    let replaced: BTreeMap<&str, usize> = [
        ("resources", bootstrap.resources.len()),
        ("signing_keys", bootstrap.signing_keys.len()),
        (transfer::AUDIT_TABLE, bootstrap.audit_events.len()),
    ]
    .into_iter()
    .collect();
    let occupied: Vec<String> = counts
        .iter()
        .filter(|(table, n)| {
            **n > i64::try_from(replaced.get(table.as_str()).copied().unwrap_or(0))
                .unwrap_or(i64::MAX)
        })
        .map(|(table, n)| format!("{n} row(s) in {table}"))
        .collect();
    if !occupied.is_empty() {
        return Err(ExportError::NotEmpty(occupied.join(", ")));
    }
    Ok(bootstrap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Document {
        Document {
            format: FORMAT.into(),
            version: VERSION,
            schema: crate::store::latest_migration(),
            exported_at: util::rfc3339(0),
            issuer: "https://auth.example.com".into(),
            key_encryption_key: None,
            tables: Tables::new(),
        }
    }

    #[test]
    fn the_header_is_checked() {
        check_header(&doc()).unwrap();
        let other = Document {
            format: "keycloak-realm".into(),
            ..doc()
        };
        assert!(matches!(check_header(&other), Err(ExportError::Format(_))));
        let v2 = Document {
            version: 2,
            ..doc()
        };
        let e = check_header(&v2).unwrap_err().to_string();
        assert!(e.contains("format version 2"), "{e}");
        let newer = Document {
            schema: crate::store::latest_migration() + 1,
            ..doc()
        };
        assert!(matches!(
            check_header(&newer),
            Err(ExportError::NewerExport { .. })
        ));
    }

    #[test]
    fn a_key_that_does_not_open_names_both_key_encryption_keys() {
        let source = Kek::from_base64(&util::b64(&[7u8; 32])).unwrap();
        let target = Kek::from_base64(&util::b64(&[9u8; 32])).unwrap();
        let sealed = source.seal("k1", b"private").unwrap();
        let mut d = doc();
        d.key_encryption_key = Some(source.fingerprint().to_string());
        let row = serde_json::json!({ "kid": "k1", "private_key": util::b64(&sealed) });
        d.tables.insert(
            "signing_keys".into(),
            vec![row.as_object().unwrap().clone()],
        );
        check_keys(&d, &source).unwrap();
        let e = check_keys(&d, &target).unwrap_err().to_string();
        assert!(e.contains("signing key k1"), "{e}");
        assert!(e.contains(source.fingerprint()), "{e}");
        assert!(e.contains(target.fingerprint()), "{e}");
        assert!(e.contains("same key_encryption_key"), "{e}");

        // Authenticator secrets too, sealed for their user.
        let sealed = source
            .seal(&crate::oauth::authn::totp_kid("u1"), b"totp")
            .unwrap();
        let row = serde_json::json!({ "user_id": "u1", "secret_sealed": util::b64(&sealed) });
        d.tables.insert(
            "totp_factors".into(),
            vec![row.as_object().unwrap().clone()],
        );
        let only_totp = Document {
            tables: [("totp_factors".to_string(), d.tables["totp_factors"].clone())]
                .into_iter()
                .collect(),
            ..d.clone()
        };
        check_keys(&d, &source).unwrap();
        let e = check_keys(&only_totp, &target).unwrap_err().to_string();
        assert!(e.contains("the authenticator secret of user u1"), "{e}");
    }
}
