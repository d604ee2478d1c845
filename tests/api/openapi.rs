//! `openapi/concierge.json` is what the code generates, and it is valid OpenAPI 3.1 by a
//! validator we did not write.

use std::path::{Path, PathBuf};
use std::process::Command;

fn committed_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi/concierge.json")
}

/// Regenerate with `CONCIERGE_UPDATE_OPENAPI=1 cargo test --test api openapi`.
#[test]
fn committed_document_matches_the_code() {
    let generated = concierge::router::openapi_json();
    if std::env::var("CONCIERGE_UPDATE_OPENAPI").is_ok_and(|v| v == "1") {
        std::fs::write(committed_path(), &generated).unwrap();
        eprintln!("rewrote {}", committed_path().display());
        return;
    }
    let committed = std::fs::read_to_string(committed_path()).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/concierge.json differs from what the code generates; regenerate it with \
         `CONCIERGE_UPDATE_OPENAPI=1 cargo test --test api openapi` and commit it"
    );
}

/// Validated with `@readme/openapi-parser` (npm, in tests/interop). Without Node or the
/// package this skips loudly, except under `CI=true`, where it fails.
#[test]
fn document_is_valid_openapi_3_1() {
    if let Err(why) = crate::interop::npm_ready() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but the OpenAPI validator cannot run: {why}");
        }
        eprintln!("\n!!!! SKIPPING the OpenAPI validation: {why}\n");
        return;
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), concierge::router::openapi_json()).unwrap();
    let out = validate(file.path());
    assert!(
        out.status.success(),
        "the OpenAPI document is not valid:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The validator must be able to fail: a document with a broken operation.
    let mut broken: serde_json::Value =
        serde_json::from_str(&concierge::router::openapi_json()).unwrap();
    broken["paths"]["/token"]["post"]["responses"] = serde_json::json!("not an object");
    std::fs::write(file.path(), broken.to_string()).unwrap();
    let out = validate(file.path());
    assert!(
        !out.status.success(),
        "a broken document must fail validation"
    );
}

/// Run the validator script on `file`.
fn validate(file: &Path) -> std::process::Output {
    Command::new("node")
        .arg("validate_openapi.mjs")
        .arg(file)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop"))
        .output()
        .unwrap()
}
