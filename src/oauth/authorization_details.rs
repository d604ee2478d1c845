//! Rich authorization requests (RFC 9396): `authorization_details`, a JSON array of objects
//! whose `type` says what they mean. This server knows one type, [`MCP_TOOL_CALL`]: one call
//! of one tool on an MCP server (a registered resource), with a summary of its arguments;
//! resources declare their own (`details_type`), with a schema and a sentence.
//! Details are validated here (RFC 9396 §5: an unknown type or a detail that does not conform
//! to its type is refused with `invalid_authorization_details`), shown to the user in plain
//! words ([`sentences`]), and carried into the access token and introspection (§9.1, §9.2).

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::error::{ErrorCode, OAuthError};
use crate::oauth::details_type;
use crate::oauth::resource::{Resource, ResourceUri, is_tool_name};

/// One call of one MCP tool: `{"type": "mcp_tool_call", "locations": ["<MCP server>"],
/// "tool": "delete_note", "summary": "Delete the note “groceries”", "arguments": {…}}`.
/// `locations` may be left out when the request names exactly one resource.
pub const MCP_TOOL_CALL: &str = "mcp_tool_call";

/// The types this server accepts (`authorization_details_types_supported`, RFC 9396 §10).
pub const TYPES_SUPPORTED: &[&str] = &[MCP_TOOL_CALL];

/// The fields an [`MCP_TOOL_CALL`] detail may have.
const TOOL_CALL_FIELDS: &[&str] = &["type", "locations", "tool", "summary", "arguments"];

const MAX_DETAILS: usize = 10;
const MAX_RAW_BYTES: usize = 16 * 1024;
const MAX_ARGUMENTS_BYTES: usize = 4 * 1024;
const MAX_SUMMARY: usize = 200;

fn invalid(why: impl Into<String>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidAuthorizationDetails, why.into())
}

/// Details as a code or an approval request stored them (checked JSON text), parsed back.
pub fn stored(raw: Option<&str>) -> Result<Option<Value>, OAuthError> {
    raw.map(serde_json::from_str)
        .transpose()
        .map_err(OAuthError::internal)
}

/// The types a metadata document lists: the built-in ones and those `resources` declare.
pub fn types_supported<'a>(resources: impl Iterator<Item = &'a Resource>) -> Vec<String> {
    let mut all: Vec<String> = TYPES_SUPPORTED.iter().map(|t| t.to_string()).collect();
    for r in resources {
        for t in &r.details_types {
            if !all.contains(&t.name) {
                all.push(t.name.clone());
            }
        }
    }
    all
}

/// Parse and check the `authorization_details` parameter of a request for `resources` (the
/// resources it names). Returns the details as they will be carried: each with its
/// `locations` filled in.
pub fn parse(raw: &str, resources: &[Arc<Resource>]) -> Result<Value, OAuthError> {
    if raw.len() > MAX_RAW_BYTES {
        return Err(invalid(format!(
            "authorization_details is longer than {MAX_RAW_BYTES} bytes"
        )));
    }
    let value: Value = serde_json::from_str(raw)
        .map_err(|e| invalid(format!("authorization_details is not JSON: {e}")))?;
    let Value::Array(items) = value else {
        return Err(invalid("authorization_details must be a JSON array"));
    };
    if items.is_empty() || items.len() > MAX_DETAILS {
        return Err(invalid(format!(
            "authorization_details must hold 1 to {MAX_DETAILS} objects"
        )));
    }
    let checked = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| check_one(i, item, resources))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Value::Array(checked))
}

fn check_one(i: usize, item: Value, resources: &[Arc<Resource>]) -> Result<Value, OAuthError> {
    let Value::Object(mut d) = item else {
        return Err(invalid(format!(
            "authorization_details[{i}] is not an object"
        )));
    };
    let kind = match d.get("type") {
        Some(Value::String(t)) => t.clone(),
        _ => {
            return Err(invalid(format!(
                "authorization_details[{i}].type is missing or not a string"
            )));
        }
    };
    if kind == MCP_TOOL_CALL {
        check_tool_call(i, &d)?;
        let all: Vec<String> = resources.iter().map(|r| r.uri.to_string()).collect();
        let locations = locations(i, d.remove("locations"), &all, "the MCP server")?;
        d.insert("locations".into(), Value::from(locations));
        return Ok(Value::Object(d));
    }
    // A type some requested resource declares: where it may go, and what it must look like
    // there.
    let declaring: Vec<&Arc<Resource>> = resources
        .iter()
        .filter(|r| r.details_type(&kind).is_some())
        .collect();
    if declaring.is_empty() {
        return Err(invalid(format!(
            "authorization_details[{i}].type {kind:?} is not a type this server knows for \
             the requested resources (it knows {})",
            types_supported(resources.iter().map(|r| r.as_ref())).join(", ")
        )));
    }
    let uris: Vec<String> = declaring.iter().map(|r| r.uri.to_string()).collect();
    let locations = locations(
        i,
        d.remove("locations"),
        &uris,
        "a resource that accepts this type",
    )?;
    for r in declaring
        .iter()
        .filter(|r| locations.contains(&r.uri.to_string()))
    {
        if let Some(def) = r.details_type(&kind) {
            details_type::validate(def, &d)
                .map_err(|e| invalid(format!("authorization_details[{i}].{e}")))?;
        }
    }
    d.insert("locations".into(), Value::from(locations));
    Ok(Value::Object(d))
}

/// The fields of an [`MCP_TOOL_CALL`] detail.
fn check_tool_call(i: usize, d: &Map<String, Value>) -> Result<(), OAuthError> {
    if let Some(field) = d.keys().find(|k| !TOOL_CALL_FIELDS.contains(&k.as_str())) {
        return Err(invalid(format!(
            "authorization_details[{i}].{field} is not a field of {MCP_TOOL_CALL} \
             (its fields: {})",
            TOOL_CALL_FIELDS.join(", ")
        )));
    }
    match d.get("tool") {
        Some(Value::String(t)) if is_tool_name(t) => {}
        _ => {
            return Err(invalid(format!(
                "authorization_details[{i}].tool must name a tool: 1 to 128 letters, digits, \
                 '_', '-' or '.'"
            )));
        }
    }
    match d.get("summary") {
        None => {}
        Some(Value::String(s))
            if !s.trim().is_empty()
                && s.chars().count() <= MAX_SUMMARY
                && !s.chars().any(char::is_control) => {}
        Some(_) => {
            return Err(invalid(format!(
                "authorization_details[{i}].summary must be 1 to {MAX_SUMMARY} characters of \
                 plain text"
            )));
        }
    }
    match d.get("arguments") {
        None => {}
        Some(a @ Value::Object(_)) if a.to_string().len() <= MAX_ARGUMENTS_BYTES => {}
        Some(_) => {
            return Err(invalid(format!(
                "authorization_details[{i}].arguments must be a JSON object of at most \
                 {MAX_ARGUMENTS_BYTES} bytes"
            )));
        }
    }
    Ok(())
}

/// A detail's `locations` (RFC 9396 §2.2): the resources among `allowed` it names,
/// normalised, or the only one when it names none. `what` says what a location must be.
fn locations(
    i: usize,
    given: Option<Value>,
    allowed: &[String],
    what: &str,
) -> Result<Vec<String>, OAuthError> {
    let resources = allowed;
    let locations = match given {
        None => match resources {
            [one] => vec![one.clone()],
            _ => {
                return Err(invalid(format!(
                    "authorization_details[{i}].locations must name {what}: the request \
                     names {} such resources",
                    resources.len()
                )));
            }
        },
        Some(Value::Array(list)) if !list.is_empty() => {
            let mut out = Vec::new();
            for l in list {
                let uri = l
                    .as_str()
                    .and_then(|s| ResourceUri::parse(s).ok())
                    .map(|u| u.to_string())
                    .filter(|u| resources.contains(u))
                    .ok_or_else(|| {
                        invalid(format!(
                            "authorization_details[{i}].locations must list {what} the \
                             request names ({})",
                            resources.join(", ")
                        ))
                    })?;
                if !out.contains(&uri) {
                    out.push(uri);
                }
            }
            out
        }
        Some(_) => {
            return Err(invalid(format!(
                "authorization_details[{i}].locations must be a non-empty array of resource URIs"
            )));
        }
    };
    Ok(locations)
}

/// One detail in plain words, for the approval and consent pages and notifications:
/// "Use the tool “delete_note” on Notes: Delete the note “groceries”", with the arguments
/// after it as `name = value` lines. `name_of` gives a resource's display name.
pub struct Sentence {
    pub text: String,
    pub arguments: Vec<String>,
}

/// [`Sentence`]s for checked details of a request for `resources` (which name the
/// locations and declare their types).
pub fn sentences(details: &Value, resources: &[Arc<Resource>]) -> Vec<Sentence> {
    let Some(items) = details.as_array() else {
        return Vec::new();
    };
    let name_of = |uri: &str| {
        resources
            .iter()
            .find(|r| r.uri.as_str() == uri)
            .map_or_else(|| uri.to_string(), |r| r.name.clone())
    };
    items
        .iter()
        .filter_map(Value::as_object)
        .map(|d| match d.get("type").and_then(Value::as_str) {
            Some(MCP_TOOL_CALL) | None => one_sentence(d, &name_of),
            Some(kind) => declared_sentence(d, kind, resources, &name_of),
        })
        .collect()
}

/// A declared type's sentence, after where it applies ("On Notes: Share the note …"); the
/// fields the sentence does not show follow as `name = value` lines.
fn declared_sentence(
    d: &Map<String, Value>,
    kind: &str,
    resources: &[Arc<Resource>],
    name_of: &impl Fn(&str) -> String,
) -> Sentence {
    let places: Vec<&str> = d
        .get("locations")
        .and_then(Value::as_array)
        .map(|l| l.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let def = places
        .iter()
        .find_map(|uri| resources.iter().find(|r| r.uri.as_str() == *uri))
        .and_then(|r| r.details_type(kind));
    let names: Vec<String> = places.iter().map(|p| name_of(p)).collect();
    let Some(def) = def else {
        // The resource no longer declares it: say what is known.
        return Sentence {
            text: format!("“{kind}” on {}", names.join(" and ")),
            arguments: fields(d, |_| true),
        };
    };
    Sentence {
        text: format!(
            "On {}: {}",
            names.join(" and "),
            details_type::sentence(def, d)
        ),
        arguments: fields(d, |f| !def.sentence.contains(&format!("{{{f}}}"))),
    }
}

/// `name = value` lines for a detail's own fields that `show` picks.
fn fields(d: &Map<String, Value>, show: impl Fn(&str) -> bool) -> Vec<String> {
    d.iter()
        .filter(|(k, _)| !details_type::COMMON_FIELDS.contains(&k.as_str()) && show(k))
        .map(|(k, v)| format!("{k} = {}", details_type::shown(Some(v))))
        .collect()
}

fn one_sentence(d: &Map<String, Value>, name_of: &impl Fn(&str) -> String) -> Sentence {
    let tool = d.get("tool").and_then(Value::as_str).unwrap_or("?");
    let places: Vec<String> = d
        .get("locations")
        .and_then(Value::as_array)
        .map(|l| l.iter().filter_map(Value::as_str).map(name_of).collect())
        .unwrap_or_default();
    let mut text = format!("Use the tool “{tool}” on {}", places.join(" and "));
    if let Some(summary) = d.get("summary").and_then(Value::as_str) {
        text.push_str(": ");
        text.push_str(summary);
    }
    let arguments = d
        .get("arguments")
        .and_then(Value::as_object)
        .map(|args| fields(args, |_| true))
        .unwrap_or_default();
    Sentence { text, arguments }
}

/// The details a token exchange carries on (RFC 9396 §7 with RFC 8693): the subject token's
/// (`held`), or those of them the request names (`asked`, each equal to one held). A request
/// may drop details, never add or change one; a subject token without details gets none.
pub fn narrowed(held: Option<&Value>, asked: Option<&str>) -> Result<Option<Value>, OAuthError> {
    let Some(raw) = asked else {
        return Ok(held.cloned());
    };
    let asked: Value = serde_json::from_str(raw)
        .map_err(|e| invalid(format!("authorization_details is not JSON: {e}")))?;
    let kept = match (asked.as_array(), held.and_then(Value::as_array)) {
        (Some(a), Some(h)) => !a.is_empty() && a.iter().all(|d| h.contains(d)),
        _ => false,
    };
    if !kept {
        return Err(invalid(
            "authorization_details may only keep details the subject_token carries, \
             unchanged (RFC 9396 §7): an exchange narrows, never widens",
        ));
    }
    Ok(Some(asked))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOTES: &str = "https://notes.example/mcp";

    fn resource(uri: &str) -> Arc<Resource> {
        Arc::new(Resource::new(uri, "Notes", Vec::new(), 0).expect("resource"))
    }

    fn ok(raw: Value) -> Value {
        parse(&raw.to_string(), &[resource(NOTES)]).expect("valid")
    }

    fn refused(raw: &str, resources: &[&str]) -> String {
        let r: Vec<Arc<Resource>> = resources.iter().map(|u| resource(u)).collect();
        let e = parse(raw, &r).expect_err("refused");
        assert_eq!(e.code.as_str(), "invalid_authorization_details");
        e.description.to_string()
    }

    #[test]
    fn a_tool_call_gets_its_location_and_reads_as_a_sentence() {
        let d = ok(json!([{"type": "mcp_tool_call", "tool": "delete_note",
            "summary": "Delete the note “groceries”", "arguments": {"id": "n1", "force": true}}]));
        assert_eq!(d[0]["locations"], json!([NOTES]));
        let s = sentences(&d, &[resource(NOTES)]);
        assert_eq!(
            s[0].text,
            "Use the tool “delete_note” on Notes: Delete the note “groceries”"
        );
        assert_eq!(s[0].arguments, ["force = true", "id = n1"]);
        // Explicit locations are normalised and must be requested resources.
        let d = ok(json!([{"type": "mcp_tool_call", "tool": "t", "locations": [NOTES]}]));
        assert_eq!(d[0]["locations"], json!([NOTES]));
    }

    #[test]
    fn what_does_not_conform_is_refused() {
        let n = &[NOTES];
        assert!(refused("{", n).contains("not JSON"));
        assert!(refused(r#"{"type":"mcp_tool_call"}"#, n).contains("array"));
        assert!(refused("[]", n).contains("1 to"));
        assert!(refused(r#"[{"type":"payment_initiation"}]"#, n).contains("not a type"));
        assert!(refused(r#"[{"tool":"t"}]"#, n).contains("type is missing"));
        assert!(refused(r#"[{"type":"mcp_tool_call"}]"#, n).contains("tool must"));
        assert!(refused(r#"[{"type":"mcp_tool_call","tool":"a b"}]"#, n).contains("tool must"));
        assert!(
            refused(r#"[{"type":"mcp_tool_call","tool":"t","amount":1}]"#, n)
                .contains("amount is not a field")
        );
        assert!(
            refused(
                r#"[{"type":"mcp_tool_call","tool":"t","arguments":[1]}]"#,
                n
            )
            .contains("arguments")
        );
        assert!(
            refused(
                r#"[{"type":"mcp_tool_call","tool":"t","summary":"a\nb"}]"#,
                n
            )
            .contains("summary")
        );
        assert!(
            refused(
                r#"[{"type":"mcp_tool_call","tool":"t","locations":["https://other.example"]}]"#,
                n
            )
            .contains("locations")
        );
        // Without locations, the request must name exactly one resource.
        assert!(refused(r#"[{"type":"mcp_tool_call","tool":"t"}]"#, &[]).contains("locations"));
    }

    #[test]
    fn declared_types_are_checked_where_they_are_declared() {
        let share = crate::store::DetailsTypeDef {
            name: "notes_share".into(),
            sentence: "Share the note “{note}” with {with}".into(),
            schema: json!({"type": "object", "required": ["note"], "properties": {
                "note": {"type": "string"},
                "with": {"type": "array", "items": {"type": "string"}},
                "days": {"type": "integer"},
            }}),
        };
        let notes = Arc::new(
            Resource::new(NOTES, "Notes", Vec::new(), 0)
                .unwrap()
                .accepting(vec![share])
                .unwrap(),
        );
        let other = resource("https://calendar.example/mcp");
        let both = [notes.clone(), other.clone()];
        let d = parse(
            &json!([{"type": "notes_share", "note": "groceries", "with": ["bob"], "days": 2}])
                .to_string(),
            &both,
        )
        .expect("valid");
        // The only resource declaring it is its location.
        assert_eq!(d[0]["locations"], json!([NOTES]));
        let s = sentences(&d, &both);
        assert_eq!(s[0].text, "On Notes: Share the note “groceries” with bob");
        assert_eq!(s[0].arguments, ["days = 2"]);
        assert!(types_supported(both.iter().map(|r| r.as_ref())).contains(&"notes_share".into()));
        let refuse = |raw: Value, rs: &[Arc<Resource>]| {
            parse(&raw.to_string(), rs)
                .expect_err("refused")
                .description
                .to_string()
        };
        assert!(refuse(json!([{"type": "notes_share", "note": 1}]), &both).contains("note"));
        assert!(refuse(json!([{"type": "notes_share", "with": []}]), &both).contains("required"));
        assert!(
            refuse(
                json!([{"type": "notes_share", "note": "n"}]),
                std::slice::from_ref(&other)
            )
            .contains("not a type")
        );
        let elsewhere = json!([{"type": "notes_share", "note": "n",
            "locations": ["https://calendar.example/mcp"]}]);
        assert!(refuse(elsewhere, &both).contains("locations"));
    }

    #[test]
    fn exchange_may_drop_details_but_not_add_or_change_them() {
        let a = json!({"type": "mcp_tool_call", "tool": "a", "locations": [NOTES]});
        let b = json!({"type": "mcp_tool_call", "tool": "b", "locations": [NOTES]});
        let both = json!([a.clone(), b.clone()]);
        let keep = |asked: &Value| narrowed(Some(&both), Some(&asked.to_string()));
        assert_eq!(narrowed(Some(&both), None).unwrap(), Some(both.clone()));
        assert_eq!(narrowed(None, None).unwrap(), None);
        assert_eq!(keep(&json!([a.clone()])).unwrap(), Some(json!([a.clone()])));
        assert!(keep(&json!([{"type": "mcp_tool_call", "tool": "c"}])).is_err());
        assert!(keep(&json!([])).is_err());
        assert!(narrowed(None, Some(&json!([a]).to_string())).is_err());
    }
}
