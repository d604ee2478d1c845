//! Authorization details types a resource declares (RFC 9396 §2: "the authorization server
//! … defines the types it supports"): a `type` name, the fields a detail of that type may
//! carry (a small subset of JSON Schema, checked when declared), and the sentence users see,
//! with `{field}` standing for a field's value.
//!
//! The schema subset: `{"type": "object", "properties": {...}, "required": [...]}`, each
//! property `{"type": "string"|"integer"|"number"|"boolean"}` with `maxLength` and `enum`
//! for strings and `minimum`/`maximum` for numbers, or `{"type": "array", "items":
//! {"type": "string"}, "maxItems": n}`, and a `description` anywhere. Nothing else is
//! accepted, so a declaration never means more than this checker enforces; a detail may
//! carry no field its type does not declare (besides `type` and `locations`).

use serde_json::{Map, Value};

use crate::store::DetailsTypeDef;

/// Fields every detail may carry whatever its type (RFC 9396 §2, §2.2).
pub const COMMON_FIELDS: &[&str] = &["type", "locations"];

const MAX_PROPERTIES: usize = 32;
const MAX_SENTENCE: usize = 300;
/// How much of a value a sentence shows.
const SHOWN_CHARS: usize = 120;

/// Is `name` a usable `type` value: 1 to 128 characters of letters, digits and `_-.:/`?
fn is_type_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.:/".contains(c))
}

/// The names of the built-in types (`authorization_details::TYPES_SUPPORTED`), which a
/// resource cannot declare again.
pub const RESERVED: &[&str] = &["mcp_tool_call"];

/// Check a resource's declarations: each one, each named once, none a built-in type.
pub fn check_all(types: &[DetailsTypeDef]) -> Result<(), String> {
    for (i, t) in types.iter().enumerate() {
        check(t)?;
        if RESERVED.contains(&t.name.as_str()) {
            return Err(format!(
                "{:?} is a built-in authorization details type; choose another name",
                t.name
            ));
        }
        if types[..i].iter().any(|o| o.name == t.name) {
            return Err(format!(
                "authorization details type {:?} is listed twice",
                t.name
            ));
        }
    }
    Ok(())
}

/// Check a declaration: its name, its schema (the subset above) and its sentence (which may
/// name only declared fields).
pub fn check(def: &DetailsTypeDef) -> Result<(), String> {
    let name = &def.name;
    if !is_type_name(name) {
        return Err(format!(
            "authorization details type {name:?} must be 1 to 128 letters, digits or _-.:/"
        ));
    }
    let properties = check_schema(&def.schema).map_err(|e| format!("type {name:?}: {e}"))?;
    let sentence = def.sentence.trim();
    if sentence.is_empty() || sentence.chars().count() > MAX_SENTENCE {
        return Err(format!(
            "type {name:?}: the sentence must be 1 to {MAX_SENTENCE} characters"
        ));
    }
    for field in placeholders(sentence) {
        if !properties.contains_key(field) {
            return Err(format!(
                "type {name:?}: the sentence names {{{field}}}, which the schema does not declare"
            ));
        }
    }
    Ok(())
}

/// The schema's properties, once it is known to be of the subset.
fn check_schema(schema: &Value) -> Result<&Map<String, Value>, String> {
    let obj = schema
        .as_object()
        .ok_or("the schema must be a JSON object")?;
    only_keys(
        obj,
        &[
            "type",
            "properties",
            "required",
            "description",
            "additionalProperties",
        ],
        "the schema",
    )?;
    if obj.get("type").and_then(Value::as_str) != Some("object") {
        return Err("the schema's type must be \"object\"".into());
    }
    // Only `false` is meaningful here, and it is what is enforced anyway.
    if obj
        .get("additionalProperties")
        .is_some_and(|a| a != &Value::Bool(false))
    {
        return Err("additionalProperties may only be false: undeclared fields are refused".into());
    }
    let properties = obj
        .get("properties")
        .and_then(Value::as_object)
        .ok_or("the schema needs \"properties\", an object")?;
    if properties.len() > MAX_PROPERTIES {
        return Err(format!(
            "the schema may declare at most {MAX_PROPERTIES} properties"
        ));
    }
    for (field, prop) in properties {
        if COMMON_FIELDS.contains(&field.as_str()) || !is_type_name(field) {
            return Err(format!("{field:?} cannot be declared as a property"));
        }
        check_property(prop).map_err(|e| format!("property {field:?}: {e}"))?;
    }
    if let Some(required) = obj.get("required") {
        let list = required
            .as_array()
            .ok_or("\"required\" must be an array of property names")?;
        for r in list {
            let r = r.as_str().ok_or("\"required\" must list property names")?;
            if !properties.contains_key(r) {
                return Err(format!("{r:?} is required but not declared"));
            }
        }
    }
    Ok(properties)
}

fn only_keys(obj: &Map<String, Value>, allowed: &[&str], what: &str) -> Result<(), String> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "{what} uses {k:?}, which this server does not enforce; use only {}",
            allowed.join(", ")
        )),
        None => Ok(()),
    }
}

fn check_property(prop: &Value) -> Result<(), String> {
    let p = prop.as_object().ok_or("must be a JSON object")?;
    match p.get("type").and_then(Value::as_str) {
        Some("string") => {
            only_keys(p, &["type", "description", "maxLength", "enum"], "it")?;
            if p.get("maxLength").is_some_and(|m| !m.is_u64()) {
                return Err("maxLength must be a whole number".into());
            }
            if let Some(e) = p.get("enum")
                && !e
                    .as_array()
                    .is_some_and(|a| !a.is_empty() && a.iter().all(Value::is_string))
            {
                return Err("enum must be a non-empty array of strings".into());
            }
        }
        Some("integer" | "number") => {
            only_keys(p, &["type", "description", "minimum", "maximum"], "it")?;
            for bound in ["minimum", "maximum"] {
                if p.get(bound).is_some_and(|b| !b.is_number()) {
                    return Err(format!("{bound} must be a number"));
                }
            }
        }
        Some("boolean") => only_keys(p, &["type", "description"], "it")?,
        Some("array") => {
            only_keys(p, &["type", "description", "items", "maxItems"], "it")?;
            let items = p.get("items").and_then(Value::as_object);
            if items.and_then(|i| i.get("type")).and_then(Value::as_str) != Some("string")
                || items.is_some_and(|i| i.len() != 1)
            {
                return Err("an array's items must be {\"type\": \"string\"}".into());
            }
            if p.get("maxItems").is_some_and(|m| !m.is_u64()) {
                return Err("maxItems must be a whole number".into());
            }
        }
        _ => {
            return Err(
                "its type must be string, integer, number, boolean or array (of strings)".into(),
            );
        }
    }
    Ok(())
}

/// The `{field}` names in a sentence.
fn placeholders(sentence: &str) -> impl Iterator<Item = &str> {
    sentence
        .split('{')
        .skip(1)
        .filter_map(|part| part.split_once('}').map(|(name, _)| name))
}

/// Check one detail (an object with a `type`) against its declared type: the fields it
/// carries must be declared and conform, the required ones present. The error says which
/// field and why.
pub fn validate(def: &DetailsTypeDef, detail: &Map<String, Value>) -> Result<(), String> {
    let properties = check_schema(&def.schema)?;
    for (field, value) in detail {
        if COMMON_FIELDS.contains(&field.as_str()) {
            continue;
        }
        let prop = properties
            .get(field)
            .ok_or_else(|| format!("{field} is not a field of the type {:?}", def.name))?;
        conforms(prop, value).map_err(|e| format!("{field} {e}"))?;
    }
    if let Some(required) = def.schema.get("required").and_then(Value::as_array) {
        for r in required.iter().filter_map(Value::as_str) {
            if !detail.contains_key(r) {
                return Err(format!("{r} is required by the type {:?}", def.name));
            }
        }
    }
    Ok(())
}

fn conforms(prop: &Value, value: &Value) -> Result<(), String> {
    let max = |key: &str| prop.get(key).and_then(Value::as_u64).map(|m| m as usize);
    match prop.get("type").and_then(Value::as_str) {
        Some("string") => {
            let s = value.as_str().ok_or("must be a string")?;
            if max("maxLength").is_some_and(|m| s.chars().count() > m) {
                return Err("is too long".into());
            }
            if s.chars().any(char::is_control) {
                return Err("must not hold control characters".into());
            }
            if let Some(allowed) = prop.get("enum").and_then(Value::as_array)
                && !allowed.iter().any(|a| a.as_str() == Some(s))
            {
                return Err("is not one of the allowed values".into());
            }
        }
        Some(kind @ ("integer" | "number")) => {
            let n = value.as_f64().ok_or("must be a number")?;
            if kind == "integer" && !(value.is_i64() || value.is_u64()) {
                return Err("must be a whole number".into());
            }
            if prop
                .get("minimum")
                .and_then(Value::as_f64)
                .is_some_and(|m| n < m)
            {
                return Err("is below its minimum".into());
            }
            if prop
                .get("maximum")
                .and_then(Value::as_f64)
                .is_some_and(|m| n > m)
            {
                return Err("is above its maximum".into());
            }
        }
        Some("boolean") => {
            value.as_bool().ok_or("must be true or false")?;
        }
        Some("array") => {
            let items = value.as_array().ok_or("must be an array")?;
            if max("maxItems").is_some_and(|m| items.len() > m) {
                return Err("has too many items".into());
            }
            if !items.iter().all(Value::is_string) {
                return Err("must hold strings only".into());
            }
        }
        _ => return Err("has a type this server does not check".into()),
    }
    Ok(())
}

/// The declared sentence with each `{field}` replaced by the detail's value (shortened; a
/// missing field reads as "—").
pub fn sentence(def: &DetailsTypeDef, detail: &Map<String, Value>) -> String {
    let mut out = String::new();
    let mut rest = def.sentence.trim();
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            rest = "";
            break;
        };
        out.push_str(&shown(detail.get(&after[..close])));
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

/// A value as a sentence shows it: strings as they are, lists joined, at most
/// [`SHOWN_CHARS`] characters.
pub fn shown(value: Option<&Value>) -> String {
    let text = match value {
        None | Some(Value::Null) => "—".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(", "),
        Some(other) => other.to_string(),
    };
    let mut short: String = text.chars().take(SHOWN_CHARS).collect();
    if text.chars().count() > SHOWN_CHARS {
        short.push('…');
    }
    short
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn share() -> DetailsTypeDef {
        DetailsTypeDef {
            name: "notes_share".into(),
            sentence: "Share the note “{note}” with {with}".into(),
            schema: json!({
                "type": "object",
                "properties": {
                    "note": {"type": "string", "maxLength": 40},
                    "with": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
                    "role": {"type": "string", "enum": ["reader", "editor"]},
                    "days": {"type": "integer", "minimum": 1, "maximum": 30},
                },
                "required": ["note", "with"],
            }),
        }
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn declarations_use_only_what_is_enforced() {
        assert!(check(&share()).is_ok());
        let mut bad = share();
        bad.schema["properties"]["note"]["pattern"] = json!("^a");
        assert!(check(&bad).unwrap_err().contains("pattern"));
        let mut bad = share();
        bad.sentence = "Share {nothing}".into();
        assert!(check(&bad).unwrap_err().contains("{nothing}"));
        let mut bad = share();
        bad.schema["required"] = json!(["ghost"]);
        assert!(check(&bad).is_err());
        let mut bad = share();
        bad.schema["properties"]["locations"] = json!({"type": "string"});
        assert!(check(&bad).is_err());
        let mut bad = share();
        bad.name = "has space".into();
        assert!(check(&bad).is_err());
        let mut bad = share();
        bad.schema["additionalProperties"] = json!(true);
        assert!(check(&bad).is_err());
    }

    #[test]
    fn details_conform_field_by_field() {
        let def = share();
        let ok =
            obj(json!({"type": "notes_share", "note": "groceries", "with": ["bob"], "days": 3}));
        assert!(validate(&def, &ok).is_ok());
        for (bad, why) in [
            (json!({"type": "t", "note": "g"}), "with is required"),
            (
                json!({"type": "t", "note": "g", "with": ["a", "b", "c", "d"]}),
                "too many",
            ),
            (
                json!({"type": "t", "note": "g", "with": [], "extra": 1}),
                "extra is not",
            ),
            (
                json!({"type": "t", "note": "g", "with": [], "role": "owner"}),
                "allowed values",
            ),
            (
                json!({"type": "t", "note": "g", "with": [], "days": 1.5}),
                "whole number",
            ),
            (
                json!({"type": "t", "note": "g", "with": [], "days": 31}),
                "maximum",
            ),
            (
                json!({"type": "t", "note": 7, "with": []}),
                "must be a string",
            ),
            (
                json!({"type": "t", "note": "a\u{7}", "with": []}),
                "control",
            ),
        ] {
            let err = validate(&def, &obj(bad.clone())).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn sentences_fill_in_the_fields() {
        let def = share();
        let d = obj(json!({"note": "groceries", "with": ["bob", "carol"]}));
        assert_eq!(
            sentence(&def, &d),
            "Share the note “groceries” with bob, carol"
        );
        let d = obj(json!({"with": ["x".repeat(200)]}));
        let s = sentence(&def, &d);
        assert!(
            s.starts_with("Share the note “—” with xxx") && s.ends_with('…'),
            "{s}"
        );
    }
}
