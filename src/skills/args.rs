//! A skill entry's `args`: checked against the subset of JSON Schema its front matter may use,
//! then turned into the entry's positional arguments.
//!
//! The subset: an `object` schema with `properties` (each of `type` `string`, `integer`,
//! `number` or `boolean`, with optional `enum`, `minimum`, `maximum`, `minLength`,
//! `maxLength`), optional `required`, and `additionalProperties` (only `false` is honoured:
//! a property the schema does not declare is always refused). The positional arguments are the
//! properties' values in the order the front matter declares them; an absent one is an empty
//! string (so a later one keeps its place). No schema: the entry takes no arguments.
//! Must not: accept a value with a NUL byte, or one longer than [`MAX_ARG_BYTES`].

use serde_json::Value;

/// The longest value one argument may have.
pub const MAX_ARG_BYTES: usize = 4096;

/// Checks `args` against `schema` and returns the positional arguments in `order`.
pub fn positional(
    schema: Option<&Value>,
    order: &[String],
    args: &Value,
) -> Result<Vec<String>, String> {
    let given = args
        .as_object()
        .ok_or_else(|| "args must be an object".to_string())?;
    let Some(schema) = schema else {
        return match given.keys().next() {
            None => Ok(Vec::new()),
            Some(k) => Err(format!("this skill's entry takes no arguments (got {k:?})")),
        };
    };
    if schema.get("type").and_then(Value::as_str) != Some("object") {
        return Err("the skill's args schema is not an object schema".into());
    }
    let empty = serde_json::Map::new();
    let props = schema
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    if let Some(k) = given.keys().find(|k| !props.contains_key(*k)) {
        return Err(format!("unknown argument {k:?}"));
    }
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(r) = required.iter().find(|r| !given.contains_key(**r)) {
        return Err(format!("missing argument {r:?}"));
    }
    let mut names: Vec<&String> = order.iter().filter(|n| props.contains_key(*n)).collect();
    for k in props.keys() {
        if !names.contains(&k) {
            names.push(k);
        }
    }
    names
        .into_iter()
        .map(|name| match given.get(name) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(v) => check(name, &props[name], v),
        })
        .collect()
}

fn check(name: &str, schema: &Value, v: &Value) -> Result<String, String> {
    let bad = |why: &str| Err(format!("argument {name:?} {why}"));
    let text = match (schema.get("type").and_then(Value::as_str), v) {
        (Some("string"), Value::String(s)) => {
            let chars = s.chars().count() as u64;
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
                if chars < min {
                    return bad(&format!("is shorter than {min} characters"));
                }
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
                if chars > max {
                    return bad(&format!("is longer than {max} characters"));
                }
            }
            s.clone()
        }
        (Some("integer"), Value::Number(n)) if n.is_i64() || n.is_u64() => {
            bounds(name, schema, n.as_f64().unwrap_or_default())?;
            n.to_string()
        }
        (Some("number"), Value::Number(n)) => {
            bounds(name, schema, n.as_f64().unwrap_or_default())?;
            n.to_string()
        }
        (Some("boolean"), Value::Bool(b)) => b.to_string(),
        (Some(t @ ("string" | "integer" | "number" | "boolean")), _) => {
            return bad(&format!("must be of type {t}"))
        }
        _ => return bad("has a schema type this gateway does not support"),
    };
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(v) {
            return bad("is not one of the schema's enum values");
        }
    }
    if text.contains('\0') || text.len() > MAX_ARG_BYTES {
        return bad(&format!(
            "has a NUL byte or is longer than {MAX_ARG_BYTES} bytes"
        ));
    }
    Ok(text)
}

fn bounds(name: &str, schema: &Value, x: f64) -> Result<(), String> {
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        if x < min {
            return Err(format!("argument {name:?} is below the minimum {min}"));
        }
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        if x > max {
            return Err(format!("argument {name:?} is above the maximum {max}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "days": {"type": "integer", "minimum": 1, "maximum": 365},
            "who": {"type": "string", "maxLength": 5, "enum": ["me", "you"]},
        }, "required": ["days"]})
    }

    #[test]
    fn values_come_in_declared_order_and_absent_ones_are_empty() {
        let order = vec!["who".to_string(), "days".to_string()];
        let got = positional(Some(&schema()), &order, &json!({"days": 7})).unwrap();
        assert_eq!(got, vec!["".to_string(), "7".to_string()]);
        let got = positional(Some(&schema()), &order, &json!({"days": 3, "who": "me"})).unwrap();
        assert_eq!(got, vec!["me".to_string(), "3".to_string()]);
    }

    #[test]
    fn the_schema_subset_refuses_what_it_must() {
        let order = vec!["days".to_string(), "who".to_string()];
        for (args, why) in [
            (json!({}), "missing"),
            (json!({"days": 0}), "minimum"),
            (json!({"days": 366}), "maximum"),
            (json!({"days": "7; rm -rf /"}), "type integer"),
            (json!({"days": 1.5}), "type integer"),
            (json!({"days": 1, "who": "them"}), "enum"),
            (json!({"days": 1, "other": 1}), "unknown"),
            (json!([1]), "object"),
        ] {
            let err = positional(Some(&schema()), &order, &args).unwrap_err();
            assert!(err.contains(why), "{args}: {err}");
        }
        assert!(positional(None, &[], &json!({"x": 1})).is_err());
        assert_eq!(
            positional(None, &[], &json!({})).unwrap(),
            Vec::<String>::new()
        );
    }
}
