//! YAML as Salt reads it: PyYAML's YAML 1.1 scalar rules (`yes`/`on` are booleans, `1e3` is a
//! string, `0755` is 755 under Salt's loader), duplicate keys rejected as Salt's loader does, and
//! every node keeps its file, line and column so errors can point at it.

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

/// Where a node starts: file, 1-based line, 1-based column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pos {
    pub file: Arc<str>,
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// A YAML value with its position.
#[derive(Debug, Clone)]
pub struct Node {
    pub value: Yaml,
    pub pos: Pos,
    /// For a value in a map: where its key stands (errors about a whole entry point there).
    pub key_pos: Option<Pos>,
}

/// The value of a node, typed as PyYAML's SafeLoader would construct it.
#[derive(Debug, Clone)]
pub enum Yaml {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Keys in document order; keys are the Python `str()` of the key.
    Map(Vec<(String, Node)>),
}

impl PartialEq for Node {
    /// Value equality, positions ignored (Salt de-duplicates merged lists by value).
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl PartialEq for Yaml {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Yaml::Null, Yaml::Null) => true,
            (Yaml::Bool(a), Yaml::Bool(b)) => a == b,
            (Yaml::Int(a), Yaml::Int(b)) => a == b,
            (Yaml::Float(a), Yaml::Float(b)) => a == b,
            (Yaml::Int(a), Yaml::Float(b)) | (Yaml::Float(b), Yaml::Int(a)) => (*a as f64) == *b,
            (Yaml::Str(a), Yaml::Str(b)) => a == b,
            (Yaml::Seq(a), Yaml::Seq(b)) => a == b,
            (Yaml::Map(a), Yaml::Map(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .all(|(k, v)| b.iter().any(|(k2, v2)| k == k2 && v == v2))
            }
            _ => false,
        }
    }
}

/// A YAML document that could not be read.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{pos}: {message}")]
pub struct YamlError {
    pub pos: Pos,
    pub message: String,
}

impl Node {
    /// What the node is, for error messages: the value itself for scalars.
    pub fn kind(&self) -> String {
        match &self.value {
            Yaml::Null => "nothing (null)".into(),
            Yaml::Bool(b) => format!("the boolean {}", if *b { "True" } else { "False" }),
            Yaml::Int(i) => format!("the integer {i}"),
            Yaml::Float(f) => format!("the number {f}"),
            Yaml::Str(s) if s.chars().count() <= 60 => format!("the string '{s}'"),
            Yaml::Str(_) => "a long string".into(),
            Yaml::Seq(_) => "a list".into(),
            Yaml::Map(_) => "a map".into(),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Yaml::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A number: int or float (not bool, although Python would accept it).
    pub fn as_f64(&self) -> Option<f64> {
        match self.value {
            Yaml::Int(i) => Some(i as f64),
            Yaml::Float(f) => Some(f),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(String, Node)]> {
        match &self.value {
            Yaml::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Yaml::Seq(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, Yaml::Null)
    }

    /// A key of a map node.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// Plain JSON, as the Python beacon would see the value.
    pub fn to_json(&self) -> Value {
        match &self.value {
            Yaml::Null => Value::Null,
            Yaml::Bool(b) => Value::Bool(*b),
            Yaml::Int(i) => Value::from(*i),
            Yaml::Float(f) => Value::from(*f),
            Yaml::Str(s) => Value::String(s.clone()),
            Yaml::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Yaml::Map(entries) => {
                let mut m = Map::new();
                for (k, v) in entries {
                    m.insert(k.clone(), v.to_json());
                }
                Value::Object(m)
            }
        }
    }
}

/// Nodes one document may build (~100 bytes each): a real minion config has thousands.
pub const MAX_NODES: usize = 1_000_000;

/// Nodes aliases may copy in one document: an alias bomb ("billion laughs", 9 anchors of 9
/// aliases each) asks for 387 million, which would take the agent's memory with it.
pub const MAX_ALIAS_NODES: usize = 100_000;

/// Parse the first document of `text` (an empty file gives `None`, as PyYAML's `safe_load`).
pub fn parse(file: &str, text: &str) -> Result<Option<Node>, YamlError> {
    let file: Arc<str> = Arc::from(file);
    let mut builder = Builder {
        file: file.clone(),
        anchors: HashMap::new(),
        stack: Vec::new(),
        root: None,
        nodes: 0,
        alias_nodes: 0,
    };
    let mut parser = Parser::new_from_str(text);
    let mut docs = 0;
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| scan_error(&file, &e))?;
        match event {
            Event::DocumentStart(_) => {
                docs += 1;
                if docs > 1 {
                    // PyYAML's safe_load refuses a stream with several documents.
                    return Err(YamlError {
                        pos: builder.pos(span),
                        message: "expected a single document in the stream, but found another one"
                            .into(),
                    });
                }
            }
            Event::StreamEnd => break,
            other => builder.event(other, span)?,
        }
    }
    Ok(builder.root)
}

fn scan_error(file: &Arc<str>, e: &ScanError) -> YamlError {
    YamlError {
        pos: Pos {
            file: file.clone(),
            line: e.marker().line(),
            col: e.marker().col() + 1,
        },
        message: format!("YAML syntax error: {}", e.info()),
    }
}

enum Frame {
    Seq {
        anchor: usize,
        pos: Pos,
        items: Vec<Node>,
        /// `Builder::nodes` when the collection started (its size is counted from there).
        start: usize,
    },
    Map {
        anchor: usize,
        pos: Pos,
        entries: Vec<(String, Node)>,
        /// The keys of `entries`, so a duplicate is found without a scan (a 10 MB map).
        keys: HashSet<String>,
        start: usize,
        /// A key waiting for its value.
        key: Option<Node>,
        /// Keys taken from `<<` merges, which explicit keys may override.
        merged: Vec<String>,
    },
}

struct Builder {
    file: Arc<str>,
    /// Anchored nodes with the number of nodes each holds.
    anchors: HashMap<usize, (Node, usize)>,
    stack: Vec<Frame>,
    root: Option<Node>,
    /// Nodes built so far, alias copies included (bounded by `MAX_NODES`).
    nodes: usize,
    /// Of which copies made by aliases (bounded by `MAX_ALIAS_NODES`).
    alias_nodes: usize,
}

impl Builder {
    fn pos(&self, span: Span) -> Pos {
        Pos {
            file: self.file.clone(),
            line: span.start.line(),
            col: span.start.col() + 1,
        }
    }

    /// Count `n` more nodes, refusing a document that grows past `MAX_NODES`.
    fn count(&mut self, n: usize, pos: &Pos) -> Result<(), YamlError> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(YamlError {
                pos: pos.clone(),
                message: format!(
                    "document too large: more than {MAX_NODES} values (counting every alias expansion)"
                ),
            });
        }
        Ok(())
    }

    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), YamlError> {
        let pos = self.pos(span);
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let tag = tag.map(|t| format!("{}{}", t.handle, t.suffix));
                let value =
                    resolve_scalar(&text, style, tag.as_deref()).map_err(|message| YamlError {
                        pos: pos.clone(),
                        message,
                    })?;
                self.count(1, &pos)?;
                let node = Node {
                    value,
                    pos,
                    key_pos: None,
                };
                if anchor > 0 {
                    self.anchors.insert(anchor, (node.clone(), 1));
                }
                self.push(node)
            }
            Event::Alias(id) => {
                let size = self
                    .anchors
                    .get(&id)
                    .map(|(_, n)| *n)
                    .ok_or_else(|| YamlError {
                        pos: pos.clone(),
                        message: "found undefined alias".into(),
                    })?;
                // Counted before the copy is made: the bomb is refused, not built.
                self.alias_nodes = self.alias_nodes.saturating_add(size);
                if self.alias_nodes > MAX_ALIAS_NODES {
                    return Err(YamlError {
                        pos,
                        message: format!(
                            "aliases expand to more than {MAX_ALIAS_NODES} values (an alias bomb?)"
                        ),
                    });
                }
                self.count(size, &pos)?;
                let node = self.anchors.get(&id).map(|(n, _)| n.clone());
                match node {
                    Some(node) => self.push(node),
                    None => Ok(()),
                }
            }
            Event::SequenceStart(anchor, _) => {
                self.count(1, &pos)?;
                self.stack.push(Frame::Seq {
                    anchor,
                    pos,
                    items: Vec::new(),
                    start: self.nodes,
                });
                Ok(())
            }
            Event::MappingStart(anchor, _) => {
                self.count(1, &pos)?;
                self.stack.push(Frame::Map {
                    anchor,
                    pos,
                    entries: Vec::new(),
                    keys: HashSet::new(),
                    start: self.nodes,
                    key: None,
                    merged: Vec::new(),
                });
                Ok(())
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let node = match self.stack.pop() {
                    Some(Frame::Seq {
                        anchor,
                        pos,
                        items,
                        start,
                    }) => {
                        let node = Node {
                            value: Yaml::Seq(items),
                            pos,
                            key_pos: None,
                        };
                        if anchor > 0 {
                            let size = self.nodes - start + 1;
                            self.anchors.insert(anchor, (node.clone(), size));
                        }
                        node
                    }
                    Some(Frame::Map {
                        anchor,
                        pos,
                        entries,
                        start,
                        ..
                    }) => {
                        let node = Node {
                            value: Yaml::Map(entries),
                            pos,
                            key_pos: None,
                        };
                        if anchor > 0 {
                            let size = self.nodes - start + 1;
                            self.anchors.insert(anchor, (node.clone(), size));
                        }
                        node
                    }
                    None => return Ok(()),
                };
                self.push(node)
            }
            _ => Ok(()),
        }
    }

    fn push(&mut self, node: Node) -> Result<(), YamlError> {
        match self.stack.last_mut() {
            None => {
                self.root = Some(node);
                Ok(())
            }
            Some(Frame::Seq { items, .. }) => {
                items.push(node);
                Ok(())
            }
            Some(Frame::Map {
                entries,
                keys,
                key,
                merged,
                ..
            }) => {
                let mut node = node;
                let Some(k) = key.take() else {
                    *key = Some(node);
                    return Ok(());
                };
                node.key_pos = Some(k.pos.clone());
                if matches!(&k.value, Yaml::Str(s) if s == "<<") {
                    return merge_key(entries, keys, merged, node);
                }
                let name = key_string(&k).ok_or_else(|| YamlError {
                    pos: k.pos.clone(),
                    message: format!("found unacceptable key ({})", k.kind()),
                })?;
                if !keys.insert(name.clone()) {
                    let slot = entries.iter().position(|(e, _)| *e == name);
                    let from_merge = merged.iter().position(|m| *m == name);
                    if let (Some(i), Some(m)) = (slot, from_merge) {
                        // An explicit key overrides the one a `<<` merge brought in.
                        merged.remove(m);
                        entries[i].1 = node;
                        return Ok(());
                    }
                    return Err(YamlError {
                        pos: k.pos,
                        message: format!("found conflicting ID '{name}' (duplicate key)"),
                    });
                }
                entries.push((name, node));
                Ok(())
            }
        }
    }
}

/// YAML merge keys (`<<: *base`), as PyYAML's SafeLoader flattens them.
fn merge_key(
    entries: &mut Vec<(String, Node)>,
    keys: &mut HashSet<String>,
    merged: &mut Vec<String>,
    value: Node,
) -> Result<(), YamlError> {
    let sources: Vec<Node> = match value.value {
        Yaml::Map(_) => vec![value],
        Yaml::Seq(items) => items,
        _ => {
            return Err(YamlError {
                pos: value.pos,
                message: "expected a mapping or list of mappings for merging".into(),
            })
        }
    };
    for source in sources {
        let Yaml::Map(src) = source.value else {
            return Err(YamlError {
                pos: source.pos,
                message: "expected a mapping for merging".into(),
            });
        };
        for (k, v) in src {
            if keys.insert(k.clone()) {
                merged.push(k.clone());
                entries.push((k, v));
            }
        }
    }
    Ok(())
}

/// Python's `str()` of a scalar key; collections are not hashable keys in Python.
fn key_string(node: &Node) -> Option<String> {
    Some(match &node.value {
        Yaml::Null => "None".into(),
        Yaml::Bool(true) => "True".into(),
        Yaml::Bool(false) => "False".into(),
        Yaml::Int(i) => i.to_string(),
        Yaml::Float(f) => format!("{f:?}"),
        Yaml::Str(s) => s.clone(),
        Yaml::Seq(_) | Yaml::Map(_) => return None,
    })
}

/// Resolve a scalar as PyYAML's implicit resolvers do (plain style only), honouring the
/// standard `!!` tags.
fn resolve_scalar(text: &str, style: ScalarStyle, tag: Option<&str>) -> Result<Yaml, String> {
    match tag {
        Some("tag:yaml.org,2002:str") | Some("!!str") => return Ok(Yaml::Str(text.into())),
        Some("tag:yaml.org,2002:int") | Some("!!int") => {
            return parse_int(text)
                .map(Yaml::Int)
                .ok_or_else(|| format!("'{text}' is not an integer"))
        }
        Some("tag:yaml.org,2002:float") | Some("!!float") => {
            return parse_float(text)
                .or_else(|| parse_int(text).map(|i| i as f64))
                .map(Yaml::Float)
                .ok_or_else(|| format!("'{text}' is not a float"))
        }
        Some("tag:yaml.org,2002:bool") | Some("!!bool") => {
            return parse_bool(text)
                .map(Yaml::Bool)
                .ok_or_else(|| format!("'{text}' is not a boolean"))
        }
        Some("tag:yaml.org,2002:null") | Some("!!null") => return Ok(Yaml::Null),
        _ => {}
    }
    if style != ScalarStyle::Plain {
        return Ok(Yaml::Str(text.into()));
    }
    if matches!(text, "" | "~" | "null" | "Null" | "NULL") {
        return Ok(Yaml::Null);
    }
    if let Some(b) = parse_bool(text) {
        return Ok(Yaml::Bool(b));
    }
    if let Some(i) = parse_int(text) {
        return Ok(Yaml::Int(i));
    }
    if let Some(f) = parse_float(text) {
        return Ok(Yaml::Float(f));
    }
    Ok(Yaml::Str(text.into()))
}

fn parse_bool(t: &str) -> Option<bool> {
    match t {
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => Some(true),
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

fn split_sign(t: &str) -> (i64, &str) {
    match t.as_bytes().first() {
        Some(b'-') => (-1, &t[1..]),
        Some(b'+') => (1, &t[1..]),
        _ => (1, t),
    }
}

/// PyYAML's int forms: `0b1010`, `0x1F`, `1_000`, sexagesimal `1:30`; a leading zero would be
/// octal to PyYAML, but Salt's loader strips the zeros and reads it as decimal.
fn parse_int(t: &str) -> Option<i64> {
    let (sign, body) = split_sign(t);
    if body.is_empty() {
        return None;
    }
    let digits = |s: &str, radix: u32| -> Option<i64> {
        let clean: String = s.chars().filter(|c| *c != '_').collect();
        if clean.is_empty() || s.starts_with('_') && clean.is_empty() {
            return None;
        }
        i64::from_str_radix(&clean, radix).ok()
    };
    let value = if let Some(b) = body.strip_prefix("0b") {
        if !b.chars().all(|c| c == '0' || c == '1' || c == '_') {
            return None;
        }
        digits(b, 2)?
    } else if let Some(h) = body.strip_prefix("0x") {
        if !h.chars().all(|c| c.is_ascii_hexdigit() || c == '_') {
            return None;
        }
        digits(h, 16)?
    } else if body.contains(':') {
        // Sexagesimal: [1-9][0-9_]*(:[0-5]?[0-9])+
        let mut parts = body.split(':');
        let first = parts.next()?;
        if !first.starts_with(|c: char| ('1'..='9').contains(&c))
            || !first.chars().all(|c| c.is_ascii_digit() || c == '_')
        {
            return None;
        }
        let mut v = digits(first, 10)?;
        for p in parts {
            if p.is_empty() || p.len() > 2 || !p.chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let n: i64 = p.parse().ok()?;
            if n > 59 {
                return None;
            }
            v = v.checked_mul(60)?.checked_add(n)?;
        }
        v
    } else {
        if !body.starts_with(|c: char| c.is_ascii_digit())
            || !body.chars().all(|c| c.is_ascii_digit() || c == '_')
        {
            return None;
        }
        if body.starts_with('0') && body.len() > 1 {
            // PyYAML's octal pattern only admits 0-7 after the leading zero.
            if !body.chars().all(|c| ('0'..='7').contains(&c) || c == '_') {
                return None;
            }
        }
        digits(body, 10)?
    };
    Some(sign * value)
}

/// PyYAML's float: a dot is required (`1e3` is a string), exponent needs a sign, plus
/// `.inf`/`.nan` and sexagesimal floats.
fn parse_float(t: &str) -> Option<f64> {
    let (sign, body) = split_sign(t);
    match body {
        ".inf" | ".Inf" | ".INF" => return Some(sign as f64 * f64::INFINITY),
        ".nan" | ".NaN" | ".NAN" if sign == 1 && !t.starts_with('+') => return Some(f64::NAN),
        _ => {}
    }
    if body.contains(':') {
        let (int_part, frac) = body.rsplit_once(':')?;
        let whole = parse_int(&format!("{int_part}:0"))?;
        let last: f64 = frac.replace('_', "").parse().ok()?;
        if !frac.contains('.') {
            return None;
        }
        return Some(sign as f64 * (whole as f64 + last));
    }
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let (int_part, frac_part) = mantissa.split_once('.')?;
    let int_ok = int_part.is_empty()
        || (int_part.starts_with(|c: char| c.is_ascii_digit())
            && int_part.chars().all(|c| c.is_ascii_digit() || c == '_'));
    let frac_ok = frac_part.chars().all(|c| c.is_ascii_digit() || c == '_');
    if !int_ok
        || !frac_ok
        || (int_part.is_empty() && !frac_part.starts_with(|c: char| c.is_ascii_digit()))
    {
        return None;
    }
    if let Some(e) = exponent {
        let digits = e.strip_prefix(['+', '-'])?;
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
    }
    let clean: String = body.chars().filter(|c| *c != '_').collect();
    let clean = if clean.ends_with('.') {
        format!("{clean}0")
    } else {
        clean
    };
    clean.parse::<f64>().ok().map(|f| sign as f64 * f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn load(text: &str) -> Value {
        parse("t.yaml", text)
            .expect("valid yaml")
            .map(|n| n.to_json())
            .unwrap_or(Value::Null)
    }

    #[test]
    fn scalars_resolve_like_pyyaml_under_salt() {
        let v = load(
            "a: yes\nb: On\nc: 'yes'\nd: 1e3\ne: 1.5e+3\nf: 0755\ng: 0x1F\nh: 1_000\ni: 1:30\nj:\nk: ~\nl: .5\nm: 63%\nn: 2.\n",
        );
        assert_eq!(
            v,
            json!({"a": true, "b": true, "c": "yes", "d": "1e3", "e": 1500.0, "f": 755,
                   "g": 31, "h": 1000, "i": 90, "j": null, "k": null, "l": 0.5, "m": "63%", "n": 2.0})
        );
    }

    #[test]
    fn python_regex_strings_survive() {
        let v = load("diskusage:\n  - '^\\/(?!home).*$': 90%\n");
        assert_eq!(v, json!({"diskusage": [{"^\\/(?!home).*$": "90%"}]}));
    }

    #[test]
    fn duplicate_keys_are_refused_with_position() {
        let e = parse("m.conf", "beacons:\n  load: []\n  load: []\n").expect_err("duplicate");
        assert_eq!((e.pos.line, e.pos.col), (3, 3));
        assert!(e.message.contains("conflicting ID 'load'"), "{}", e.message);
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let e = parse("m.conf", "beacons:\n  load:\n    - averages: [1, 2\n").expect_err("bad");
        assert_eq!(&*e.pos.file, "m.conf");
        assert!(e.pos.line >= 3, "{e}");
        assert!(e.to_string().starts_with("m.conf:"), "{e}");
    }

    #[test]
    fn anchors_and_merge_keys() {
        let v = load("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n");
        assert_eq!(
            v,
            json!({"base": {"x": 1, "y": 2}, "other": {"x": 1, "y": 3}})
        );
    }

    #[test]
    fn positions_are_one_based() {
        let n = parse("f", "a:\n  b: [1, 2]\n").expect("ok").expect("doc");
        let b = n.get("a").and_then(|a| a.get("b")).expect("b");
        assert_eq!((b.pos.line, b.pos.col), (2, 6));
    }

    #[test]
    fn empty_document_is_none() {
        assert!(parse("f", "").expect("ok").is_none());
        assert!(parse("f", "# only a comment\n").expect("ok").is_none());
    }
}
