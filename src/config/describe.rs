//! `beacond --describe [BEACON]`: each option of a beacon kind with its type, default and doc
//! text, taken from the kind's typed config (its JSON schema: serde's field names and
//! defaults, the `///` comments as descriptions). The README's option tables come from here.

use crate::beacons::{Options, KINDS};
use serde_json::Value;
use std::fmt::Write;

/// The text `--describe` prints: every kind with its first doc line (`kind` empty), or one
/// kind's options. `Err` names the unknown kind and the nearest known one.
pub fn describe(kind: &str) -> Result<String, String> {
    if kind.is_empty() {
        return Ok(list_kinds());
    }
    let Some(k) = KINDS.iter().find(|k| k.name == kind) else {
        let names: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
        let near = super::beacon::nearest(kind, &names)
            .map(|n| format!(" (did you mean '{n}'?)"))
            .unwrap_or_default();
        return Err(format!(
            "unknown beacon '{kind}'{near}; beacond provides: {}",
            names.join(", ")
        ));
    };
    let mut out = String::new();
    match &k.options {
        Options::Typed { schema, .. } => {
            let root = schema().to_value();
            let _ = writeln!(out, "{}", k.name);
            if let Some(d) = root.get("description").and_then(Value::as_str) {
                out.push_str(&indent(d, "  "));
            }
            out.push_str("\nOptions:\n");
            options(&mut out, &root, &root);
            if let Some(defs) = root.get("$defs").and_then(Value::as_object) {
                for (name, def) in defs {
                    if def.get("properties").is_none() {
                        continue;
                    }
                    let _ = writeln!(out, "\n{name}:");
                    if let Some(d) = def.get("description").and_then(Value::as_str) {
                        out.push_str(&indent(d, "  "));
                    }
                    options(&mut out, def, &root);
                }
            }
        }
        other => {
            let _ = writeln!(
                out,
                "{}\n\nOptions (not yet described by a typed config):",
                k.name
            );
            for name in other.known() {
                let _ = writeln!(out, "  {name}");
            }
        }
    }
    Ok(out)
}

fn list_kinds() -> String {
    let mut out = String::from("Beacon kinds (beacond --describe KIND for its options):\n");
    let width = KINDS.iter().map(|k| k.name.len()).max().unwrap_or(0);
    for k in KINDS {
        let summary = match &k.options {
            Options::Typed { schema, .. } => schema()
                .to_value()
                .get("description")
                .and_then(Value::as_str)
                .map(|d| {
                    let para = d.split("\n\n").next().unwrap_or_default();
                    para.split_whitespace().collect::<Vec<_>>().join(" ")
                })
                .unwrap_or_default(),
            _ => String::new(),
        };
        let line = format!("  {:width$}  {summary}", k.name);
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

/// One line per property (`name: type, default X` or `required`), its doc text below.
fn options(out: &mut String, schema: &Value, root: &Value) {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        out.push_str("  (none)\n");
        return;
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (name, prop) in props {
        let need = if required.contains(&name.as_str()) {
            ", required".to_owned()
        } else {
            match prop.get("default") {
                Some(Value::Null) | None => String::new(),
                Some(d) => format!(", default {d}"),
            }
        };
        let _ = writeln!(out, "  {name}: {}{need}", type_name(prop, root));
        if let Some(d) = prop.get("description").and_then(Value::as_str) {
            out.push_str(&indent(d, "      "));
        }
    }
}

/// A schema's type in words: `boolean`, `list of string`, `map of name to Service`; a
/// reference to a struct by its name (described below it), to anything else by its type.
pub fn type_name(s: &Value, root: &Value) -> String {
    if let Some(t) = s.get("x-type").and_then(Value::as_str) {
        return t.to_owned();
    }
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or(r);
        return match root.get("$defs").and_then(|d| d.get(name)) {
            Some(def) if def.get("properties").is_none() => type_name(def, root),
            _ => name.to_owned(),
        };
    }
    if let Some(any) = s
        .get("anyOf")
        .or_else(|| s.get("oneOf"))
        .and_then(Value::as_array)
    {
        let parts: Vec<String> = any
            .iter()
            .filter(|v| v.get("type").and_then(Value::as_str) != Some("null"))
            .map(|v| type_name(v, root))
            .collect();
        return parts.join(" or ");
    }
    if let Some(values) = s.get("enum").and_then(Value::as_array) {
        let names: Vec<String> = values.iter().map(Value::to_string).collect();
        return format!("one of {}", names.join(", "));
    }
    if let Some(c) = s.get("const") {
        return c.to_string();
    }
    match s.get("type") {
        Some(Value::String(t)) if t == "array" => match s.get("items") {
            Some(items) => format!("list of {}", type_name(items, root)),
            None => "list".to_owned(),
        },
        Some(Value::String(t)) if t == "object" => match s.get("additionalProperties") {
            Some(v @ Value::Object(_)) => format!("map of name to {}", type_name(v, root)),
            _ => "map".to_owned(),
        },
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => {
            let names: Vec<&str> = ts
                .iter()
                .filter_map(Value::as_str)
                .filter(|t| *t != "null")
                .collect();
            names.join(" or ")
        }
        _ => "any".to_owned(),
    }
}

fn indent(text: &str, by: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            out.push('\n');
        } else {
            let _ = writeln!(out, "{by}{line}");
        }
    }
    out
}
