//! Checks answers against the OpenAPI document: every successful JSON answer the end-to-end
//! tests receive must match the schema documented for its operation and status, so the document
//! cannot drift from what the server sends. Objects are held strictly: a property the schema
//! does not list is an error, as is a listed required one that is missing.

use std::sync::LazyLock;

use serde_json::Value;

static DOC: LazyLock<Value> =
    LazyLock::new(|| serde_json::to_value(tally_api::openapi()).expect("the document is JSON"));

/// Panics unless `body` matches the schema documented for `method path` answering `status`
/// (`path` as requested, with its ids and query).
pub fn conforms(method: &str, path: &str, status: u16, body: &Value) {
    let path = path.split('?').next().unwrap_or(path);
    let (template, op) =
        operation(method, path).unwrap_or_else(|| panic!("{method} {path} is not documented"));
    let response = op["responses"]
        .get(status.to_string())
        .unwrap_or_else(|| panic!("{method} {template}: status {status} is not documented"));
    let Some(schema) = response.pointer("/content/application~1json/schema") else {
        return;
    };
    let mut errors = Vec::new();
    check(schema, body, "$", &mut errors);
    assert!(
        errors.is_empty(),
        "{method} {template} answered {status} with a body that does not match its schema:\n{}\n{body:#}",
        errors.join("\n")
    );
}

/// The documented operation a concrete path belongs to: the template with the same segments,
/// preferring literal segments over parameters (`/test_clock/advance` over `/{id}/advance`);
/// literal segments match in any case, as billwerk's routes do.
fn operation(method: &str, path: &str) -> Option<(String, &'static Value)> {
    let want: Vec<&str> = path.split('/').collect();
    let mut best: Option<(usize, &String, &Value)> = None;
    for (template, item) in DOC["paths"].as_object()? {
        let segs: Vec<&str> = template.split('/').collect();
        if segs.len() != want.len() {
            continue;
        }
        let mut literal = 0;
        let fits = segs.iter().zip(&want).all(|(s, w)| {
            if s.starts_with('{') {
                true
            } else {
                literal += 1;
                s.eq_ignore_ascii_case(w)
            }
        });
        let Some(op) = item.get(method.to_ascii_lowercase()) else {
            continue;
        };
        if fits && best.is_none_or(|(l, _, _)| literal > l) {
            best = Some((literal, template, op));
        }
    }
    best.map(|(_, t, op)| (t.clone(), op))
}

fn resolve(schema: &Value) -> &Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.trim_start_matches("#/components/schemas/");
            resolve(&DOC["components"]["schemas"][name])
        }
        None => schema,
    }
}

fn type_fits(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => false,
    }
}

/// A schema with its `allOf` parts merged into one object schema (how a flattened struct is
/// documented), so that an object is held to the union of their properties.
fn merged(schema: &Value) -> Value {
    let schema = resolve(schema);
    let Some(parts) = schema.get("allOf").and_then(Value::as_array) else {
        return schema.clone();
    };
    let mut out = schema.clone();
    let obj = out.as_object_mut().expect("a schema is an object");
    obj.remove("allOf");
    for part in parts.iter().map(merged) {
        for key in ["properties", "required"] {
            match (obj.get_mut(key), part.get(key)) {
                (Some(Value::Object(mine)), Some(Value::Object(theirs))) => {
                    mine.extend(theirs.clone());
                }
                (Some(Value::Array(mine)), Some(Value::Array(theirs))) => {
                    mine.extend(theirs.iter().cloned());
                }
                (None, Some(theirs)) => {
                    obj.insert(key.to_string(), theirs.clone());
                }
                _ => {}
            }
        }
        if let Some(t) = part.get("type") {
            obj.entry("type").or_insert(t.clone());
        }
    }
    out
}

/// Appends to `errors` every way `v` (at `at`) fails `schema`.
fn check(schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = &merged(schema);
    for (key, need) in [("oneOf", 1), ("anyOf", 1)] {
        if let Some(options) = schema.get(key).and_then(Value::as_array) {
            let fits = options
                .iter()
                .filter(|o| {
                    let mut e = Vec::new();
                    check(o, v, at, &mut e);
                    e.is_empty()
                })
                .count();
            if fits < need {
                errors.push(format!("{at}: matches none of the {key} alternatives"));
            }
        }
    }
    match schema.get("type") {
        Some(Value::String(t)) if !type_fits(t, v) => {
            errors.push(format!("{at}: {v} is not of type {t}"));
            return;
        }
        Some(Value::Array(ts))
            if !ts
                .iter()
                .any(|t| t.as_str().is_some_and(|t| type_fits(t, v))) =>
        {
            errors.push(format!("{at}: {v} is none of the types {ts:?}"));
            return;
        }
        _ => {}
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array)
        && !values.contains(v)
    {
        errors.push(format!("{at}: {v} is not one of {values:?}"));
    }
    if let (Some(items), Some(list)) = (schema.get("items"), v.as_array()) {
        for (i, item) in list.iter().enumerate() {
            check(items, item, &format!("{at}[{i}]"), errors);
        }
    }
    let Some(object) = v.as_object() else {
        return;
    };
    for required in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !object.contains_key(required) {
            errors.push(format!("{at}: required property `{required}` is missing"));
        }
    }
    let properties = schema.get("properties").and_then(Value::as_object);
    let extra = schema.get("additionalProperties");
    for (k, value) in object {
        let here = format!("{at}.{k}");
        match (properties.and_then(|p| p.get(k)), extra) {
            (Some(s), _) => check(s, value, &here, errors),
            (None, Some(Value::Bool(true))) => {}
            (None, Some(s)) if s.is_object() => check(s, value, &here, errors),
            // A free-form object (no properties listed) takes anything; a described one holds
            // its answer to what it lists.
            (None, _) if properties.is_none() => {}
            (None, _) => errors.push(format!("{here}: not in the schema")),
        }
    }
}
