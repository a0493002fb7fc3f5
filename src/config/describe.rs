//! `beacond --describe [BEACON]`: each option of a beacon kind with its type, default and doc
//! text, taken from the kind's typed config (its JSON schema: serde's field names and
//! defaults, the `///` comments as descriptions). The man page's BEACONS section and the
//! README's option reference are rendered from the same model.

use crate::beacons::{Options, KINDS};
use serde_json::Value;
use std::fmt::Write;

/// One beacon kind's options, as its typed config describes them: the model the three
/// renderings (`--describe` text, the man page, the README) are made from.
#[derive(Debug, Clone)]
pub struct KindDescription {
    pub name: &'static str,
    /// The config struct's doc comment (empty for a kind without a typed config).
    pub description: String,
    /// `Options` first, then one group per nested struct (e.g. `Averages`).
    pub groups: Vec<Group>,
    /// False for a kind whose options are known by name only.
    pub typed: bool,
}

/// A struct's options: the top level (`Options`) or a nested struct, by its type name.
#[derive(Debug, Clone)]
pub struct Group {
    pub title: String,
    pub description: String,
    pub options: Vec<Opt>,
}

/// One option: `name: kind, default X` (or `required`), then its doc text.
#[derive(Debug, Clone)]
pub struct Opt {
    pub name: String,
    /// The type in words (`boolean`, `list of string`); empty when not typed.
    pub kind: String,
    /// `, required`, `, default X` or empty.
    pub need: String,
    pub doc: String,
}

impl KindDescription {
    /// The first paragraph of the description on one line.
    pub fn summary(&self) -> String {
        let para = self.description.split("\n\n").next().unwrap_or_default();
        para.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

/// Every beacon kind, in the registry's order.
pub fn kinds() -> Vec<KindDescription> {
    KINDS.iter().map(kind_of).collect()
}

fn kind_of(k: &crate::beacons::BeaconKind) -> KindDescription {
    match &k.options {
        Options::Typed { schema, .. } => {
            let root = schema().to_value();
            let mut groups = vec![Group {
                title: "Options".to_owned(),
                description: String::new(),
                options: options(&root, &root),
            }];
            if let Some(defs) = root.get("$defs").and_then(Value::as_object) {
                for (name, def) in defs {
                    if def.get("properties").is_none() {
                        continue;
                    }
                    groups.push(Group {
                        title: name.clone(),
                        description: text(def),
                        options: options(def, &root),
                    });
                }
            }
            KindDescription {
                name: k.name,
                description: text(&root),
                groups,
                typed: true,
            }
        }
        other => KindDescription {
            name: k.name,
            description: String::new(),
            groups: vec![Group {
                title: "Options".to_owned(),
                description: String::new(),
                options: other
                    .known()
                    .iter()
                    .map(|n| Opt {
                        name: (*n).to_owned(),
                        kind: String::new(),
                        need: String::new(),
                        doc: String::new(),
                    })
                    .collect(),
            }],
            typed: false,
        },
    }
}

fn text(schema: &Value) -> String {
    schema
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

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
    Ok(render_text(&kind_of(k)))
}

fn render_text(k: &KindDescription) -> String {
    let mut out = String::new();
    if !k.typed {
        let _ = writeln!(
            out,
            "{}\n\nOptions (not yet described by a typed config):",
            k.name
        );
        for o in &k.groups[0].options {
            let _ = writeln!(out, "  {}", o.name);
        }
        return out;
    }
    let _ = writeln!(out, "{}", k.name);
    out.push_str(&indent(&k.description, "  "));
    for (i, g) in k.groups.iter().enumerate() {
        let _ = writeln!(out, "\n{}:", g.title);
        if i > 0 {
            out.push_str(&indent(&g.description, "  "));
        }
        if g.options.is_empty() {
            out.push_str("  (none)\n");
        }
        for o in &g.options {
            let _ = writeln!(out, "  {}: {}{}", o.name, o.kind, o.need);
            out.push_str(&indent(&o.doc, "      "));
        }
    }
    out
}

fn list_kinds() -> String {
    let mut out = String::from("Beacon kinds (beacond --describe KIND for its options):\n");
    let width = KINDS.iter().map(|k| k.name.len()).max().unwrap_or(0);
    for k in kinds() {
        let line = format!("  {:width$}  {}", k.name, k.summary());
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

/// The markers around the README's generated option reference.
pub const README_BEGIN: &str =
    "<!-- beacon options: generated by `cargo run --example gen-docs -- --readme README.md` -->";
pub const README_END: &str = "<!-- end of beacon options -->";

/// The README's option reference: per kind, its summary and `--describe` text in a
/// collapsed block (`tests/docs.rs` checks the README holds exactly this).
pub fn markdown() -> String {
    let mut out = String::new();
    for k in kinds() {
        let _ = writeln!(
            out,
            "<details><summary><code>{}</code>: {}</summary>\n\n```text\n{}```\n\n</details>\n",
            k.name,
            html(&k.summary()),
            render_text(&k)
        );
    }
    out
}

/// The man page's BEACONS section (roff): a subsection per kind, a tagged paragraph per option.
pub fn roff() -> String {
    let mut out = String::from(".SH BEACONS\nThe options of each beacon kind, from its typed config (also \\fBbeacond \\-\\-describe\\fR \\fIBEACON\\fR).\n");
    for k in kinds() {
        let _ = writeln!(out, ".SS {}", roff_text(k.name));
        if !k.description.is_empty() {
            let _ = writeln!(out, "{}", roff_para(&k.description));
        }
        for (i, g) in k.groups.iter().enumerate() {
            if i > 0 {
                let _ = writeln!(out, ".PP\n\\fI{}\\fR:", roff_text(&g.title));
                if !g.description.is_empty() {
                    let _ = writeln!(out, "{}", roff_para(&g.description));
                }
            }
            for o in &g.options {
                let _ = writeln!(
                    out,
                    ".TP\n\\fB{}\\fR: {}{}",
                    roff_text(&o.name),
                    roff_text(&o.kind),
                    roff_text(&o.need)
                );
                if !o.doc.is_empty() {
                    let _ = writeln!(out, "{}", roff_para(&o.doc));
                }
            }
        }
    }
    out
}

/// Text safe in a roff line: backslashes and hyphens escaped, anything beyond ASCII as a
/// `\[uXXXX]` glyph (troff reads bytes), Markdown's backticks dropped.
fn roff_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            '-' => out.push_str("\\-"),
            '`' => {}
            c if c.is_ascii() => out.push(c),
            c => {
                let _ = write!(out, "\\[u{:04X}]", u32::from(c));
            }
        }
    }
    out
}

/// A doc comment as roff paragraphs: lines joined, paragraphs split by `.PP`, every line
/// starting with `\&` so a leading `.` or `'` is text.
fn roff_para(s: &str) -> String {
    s.split("\n\n")
        .map(|p| {
            let joined = p.split_whitespace().collect::<Vec<_>>().join(" ");
            format!("\\&{}", roff_text(&joined))
        })
        .collect::<Vec<_>>()
        .join("\n.br\n")
}

fn html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One entry per property (`name: type, default X` or `required`) with its doc text.
fn options(schema: &Value, root: &Value) -> Vec<Opt> {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    props
        .iter()
        .map(|(name, prop)| {
            let need = if required.contains(&name.as_str()) {
                ", required".to_owned()
            } else {
                match prop.get("default") {
                    Some(Value::Null) | None => String::new(),
                    Some(d) => format!(", default {d}"),
                }
            };
            Opt {
                name: name.clone(),
                kind: type_name(prop, root),
                need,
                doc: text(prop),
            }
        })
        .collect()
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
