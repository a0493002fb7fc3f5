//! A serde `Deserializer` over the position-keeping YAML tree: a beacon's options become a
//! typed struct, and every error still points at file:line:col of the node (or key) at fault.
//!
//! Messages read as the hand-written checks did: `percent must be a percentage such as 90% or
//! 90, found the string 'lots'`, `missing required option 'percent'`, and an unknown option
//! names the nearest known one (the struct's own field list, as serde passes it).

use super::beacon::{unknown_option_message, BeaconConfig, ConfigError};
use super::yaml::{Node, Pos, Yaml};
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};
use std::fmt;

/// Read a beacon's own options (generic keys already taken out) as `T`.
pub fn from_config<T: DeserializeOwned>(cfg: &BeaconConfig) -> Result<T, ConfigError> {
    let root = Node {
        value: Yaml::Map(cfg.options.clone()),
        pos: cfg.pos.clone(),
        key_pos: None,
    };
    from_node(&root).map_err(|e| ConfigError {
        pos: e.pos,
        beacon: Some(cfg.name.clone()),
        message: e.message,
    })
}

/// Read any node as `T`.
pub fn from_node<T: DeserializeOwned>(node: &Node) -> Result<T, DeError> {
    from_node_named(node, "")
}

/// Read a node as `T`; `path` names it in messages (`services.nginx`).
pub fn from_node_named<T: DeserializeOwned>(node: &Node, path: &str) -> Result<T, DeError> {
    let mut e = match T::deserialize(NodeDeserializer::new(node, path.to_owned())) {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    e.finish(node, path);
    Err(e)
}

/// An error while reading a node: where, and what.
#[derive(Debug, Clone, PartialEq)]
pub struct DeError {
    pub pos: Option<Pos>,
    pub message: String,
    /// Not yet given its final wording (which needs the node and its path).
    pending: Option<Pending>,
}

#[derive(Debug, Clone, PartialEq)]
enum Pending {
    /// `must be <expected>, found <the node>`.
    Expected(String),
    /// A required field is absent.
    Missing(&'static str),
    /// A message of a value's own type (a regex that does not compile).
    Text,
}

impl DeError {
    fn expected(what: impl fmt::Display) -> Self {
        DeError {
            pos: None,
            message: String::new(),
            pending: Some(Pending::Expected(what.to_string())),
        }
    }

    fn at(pos: &Pos, message: String) -> Self {
        DeError {
            pos: Some(pos.clone()),
            message,
            pending: None,
        }
    }

    /// Word the error for the innermost node it arose in (the first one to see it).
    fn finish(&mut self, node: &Node, path: &str) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let subject = if path.is_empty() { "value" } else { path };
        self.message = match pending {
            Pending::Expected(what) => format!("{subject} must be {what}, found {}", node.kind()),
            Pending::Missing(field) => format!("missing required option '{}'", join(path, field)),
            Pending::Text if path.is_empty() => std::mem::take(&mut self.message),
            Pending::Text => format!("{path}: {}", self.message),
        };
        if self.pos.is_none() {
            self.pos = Some(node.pos.clone());
        }
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(pos) = &self.pos {
            write!(f, "{pos}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            pos: None,
            message: msg.to_string(),
            pending: Some(Pending::Text),
        }
    }

    fn invalid_type(_unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError::expected(exp)
    }

    fn invalid_value(_unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError::expected(exp)
    }

    fn invalid_length(_len: usize, exp: &dyn de::Expected) -> Self {
        DeError::expected(exp)
    }

    fn unknown_variant(_variant: &str, expected: &'static [&'static str]) -> Self {
        let names: Vec<String> = expected.iter().map(|v| format!("'{v}'")).collect();
        DeError::expected(match names.as_slice() {
            [one] => one.clone(),
            [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
            [] => "nothing (no values allowed)".to_owned(),
        })
    }

    fn missing_field(field: &'static str) -> Self {
        DeError {
            pos: None,
            message: String::new(),
            pending: Some(Pending::Missing(field)),
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// The name [`Located`] asks for: the deserializer answers it with the node's position.
const LOCATED: &str = "$beacond::Located";
const LOCATED_FIELDS: &[&str] = &["$line", "$col", "$file", "$value"];

/// Deserializes one node; `path` is the dotted option name for messages.
pub struct NodeDeserializer<'de> {
    node: &'de Node,
    path: String,
}

impl<'de> NodeDeserializer<'de> {
    pub fn new(node: &'de Node, path: String) -> Self {
        NodeDeserializer { node, path }
    }

    /// Run `f` and word any error it returns for this node.
    fn located<V>(&self, f: impl FnOnce() -> Result<V, DeError>) -> Result<V, DeError> {
        f().map_err(|mut e| {
            e.finish(self.node, &self.path);
            e
        })
    }

    fn wrong(&self, expected: &str) -> DeError {
        let mut e = DeError::expected(expected);
        e.finish(self.node, &self.path);
        e
    }
}

macro_rules! integer {
    ($method:ident, $visit:ident, $ty:ty, $what:literal) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            match &self.node.value {
                Yaml::Int(i) => match <$ty>::try_from(*i) {
                    Ok(v) => self.located(|| visitor.$visit(v)),
                    Err(_) => Err(self.wrong($what)),
                },
                _ => Err(self.wrong($what)),
            }
        }
    };
}

impl<'de> de::Deserializer<'de> for NodeDeserializer<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let node = self.node;
        self.located(|| match &node.value {
            Yaml::Null => visitor.visit_unit(),
            Yaml::Bool(b) => visitor.visit_bool(*b),
            Yaml::Int(i) => visitor.visit_i64(*i),
            Yaml::Float(f) => visitor.visit_f64(*f),
            Yaml::Str(s) => visitor.visit_borrowed_str(s),
            Yaml::Seq(items) => visitor.visit_seq(Seq {
                items: items.iter(),
                path: &self.path,
                index: 0,
            }),
            Yaml::Map(entries) => visitor.visit_map(Entries::new(entries, &self.path, None)),
        })
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        // PyYAML's booleans (`yes`, `on`, `True`) are already booleans in the tree; Salt's
        // beacons test `is True`, so a string is not one.
        match self.node.value {
            Yaml::Bool(b) => self.located(|| visitor.visit_bool(b)),
            _ => Err(self.wrong("True or False")),
        }
    }

    integer!(
        deserialize_u8,
        visit_u8,
        u8,
        "a non-negative integer (0-255)"
    );
    integer!(
        deserialize_u16,
        visit_u16,
        u16,
        "a non-negative integer (0-65535)"
    );
    integer!(deserialize_u32, visit_u32, u32, "a non-negative integer");
    integer!(deserialize_u64, visit_u64, u64, "a non-negative integer");
    integer!(deserialize_i8, visit_i8, i8, "an integer (-128-127)");
    integer!(deserialize_i16, visit_i16, i16, "an integer");
    integer!(deserialize_i32, visit_i32, i32, "an integer");
    integer!(deserialize_i64, visit_i64, i64, "an integer");

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.node.as_f64() {
            Some(f) => self.located(|| visitor.visit_f64(f)),
            None => Err(self.wrong("a number")),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Yaml::Str(s) => self.located(|| visitor.visit_borrowed_str(s)),
            // An unquoted `8080` or `2024` is a fine name or path to Salt (`str()` of it).
            Yaml::Int(i) => self.located(|| visitor.visit_string(i.to_string())),
            _ => Err(self.wrong("a string")),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.node.value {
            Yaml::Null => self.located(|| visitor.visit_none()),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.node.value {
            Yaml::Null => self.located(|| visitor.visit_unit()),
            _ => Err(self.wrong("nothing (null)")),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Yaml::Seq(items) => self.located(|| {
                visitor.visit_seq(Seq {
                    items: items.iter(),
                    path: &self.path,
                    index: 0,
                })
            }),
            _ => Err(self.wrong("a list")),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Yaml::Map(entries) => {
                self.located(|| visitor.visit_map(Entries::new(entries, &self.path, None)))
            }
            // `option:` with nothing after it: an empty map, as Salt's `or {}`.
            Yaml::Null => self.located(|| visitor.visit_map(Entries::new(&[], &self.path, None))),
            _ => Err(self.wrong("a map")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        if name == LOCATED {
            return self.located(|| {
                visitor.visit_map(LocatedAccess {
                    node: self.node,
                    path: &self.path,
                    step: 0,
                })
            });
        }
        let entries: &[(String, Node)] = match &self.node.value {
            Yaml::Map(entries) => entries,
            Yaml::Null => &[],
            _ => return Err(self.wrong("a map of options")),
        };
        // The struct's own field list names the nearest option; `_` keys are Salt's internal.
        for (key, value) in entries {
            if !key.starts_with('_') && !fields.contains(&key.as_str()) {
                let pos = value.key_pos.as_ref().unwrap_or(&value.pos);
                // The nearest option is found for the key itself, named with its path.
                let message = unknown_option_message(key, fields).replacen(
                    &format!("'{key}'"),
                    &format!("'{}'", join(&self.path, key)),
                    1,
                );
                return Err(DeError::at(pos, message));
            }
        }
        self.located(|| visitor.visit_map(Entries::new(entries, &self.path, Some(fields))))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.value {
            Yaml::Str(s) => self.located(|| visitor.visit_enum(s.as_str().into_deserializer())),
            Yaml::Map(entries) if entries.len() == 1 => {
                let (key, value) = &entries[0];
                self.located(|| {
                    visitor.visit_enum(Variant {
                        key,
                        value,
                        path: &self.path,
                    })
                })
            }
            _ => Err(self.wrong("a name, or a map with one key")),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! { i128 u128 bytes byte_buf unit_struct }
}

struct Seq<'a, 'de> {
    items: std::slice::Iter<'de, Node>,
    path: &'a str,
    index: usize,
}

impl<'de> de::SeqAccess<'de> for Seq<'_, 'de> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some(item) = self.items.next() else {
            return Ok(None);
        };
        let path = format!("{}[{}]", self.path, self.index);
        self.index += 1;
        seed.deserialize(NodeDeserializer::new(item, path.clone()))
            .map(Some)
            .map_err(|mut e| {
                e.finish(item, &path);
                e
            })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// A map's entries; for a struct (`fields` known), Salt's internal `_` keys it does not name
/// are skipped.
struct Entries<'a, 'de> {
    entries: std::slice::Iter<'de, (String, Node)>,
    path: &'a str,
    fields: Option<&'static [&'static str]>,
    value: Option<(&'de str, &'de Node)>,
}

impl<'a, 'de> Entries<'a, 'de> {
    fn new(
        entries: &'de [(String, Node)],
        path: &'a str,
        fields: Option<&'static [&'static str]>,
    ) -> Self {
        Entries {
            entries: entries.iter(),
            path,
            fields,
            value: None,
        }
    }
}

impl<'de> de::MapAccess<'de> for Entries<'_, 'de> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        for (key, value) in self.entries.by_ref() {
            if let Some(fields) = self.fields {
                if key.starts_with('_') && !fields.contains(&key.as_str()) {
                    continue;
                }
            }
            self.value = Some((key, value));
            let de: de::value::BorrowedStrDeserializer<'de, DeError> =
                de::value::BorrowedStrDeserializer::new(key);
            return seed.deserialize(de).map(Some).map_err(|mut e| {
                let at = value.key_pos.as_ref().unwrap_or(&value.pos);
                if let Some(Pending::Expected(what)) = &e.pending {
                    e.message = format!(
                        "{} is not a valid name here (expected {what})",
                        join(self.path, key)
                    );
                    e.pending = None;
                }
                e.pos.get_or_insert_with(|| at.clone());
                e
            });
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some((key, value)) = self.value.take() else {
            return Err(de::Error::custom("a map value without its key"));
        };
        // A type that checks its value after reading it (a regex that must compile) fails
        // outside the value's own deserializer: word its error for the value here.
        let path = join(self.path, key);
        seed.deserialize(NodeDeserializer::new(value, path.clone()))
            .map_err(|mut e| {
                e.finish(value, &path);
                e
            })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

struct Variant<'a, 'de> {
    key: &'de str,
    value: &'de Node,
    path: &'a str,
}

impl<'a, 'de> de::EnumAccess<'de> for Variant<'a, 'de> {
    type Error = DeError;
    type Variant = NodeVariant<'de>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, NodeVariant<'de>), DeError> {
        let de: de::value::BorrowedStrDeserializer<'de, DeError> =
            de::value::BorrowedStrDeserializer::new(self.key);
        let v = seed.deserialize(de)?;
        Ok((
            v,
            NodeVariant {
                node: self.value,
                path: join(self.path, self.key),
            },
        ))
    }
}

struct NodeVariant<'de> {
    node: &'de Node,
    path: String,
}

impl<'de> de::VariantAccess<'de> for NodeVariant<'de> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(NodeDeserializer::new(self.node, self.path))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_seq(NodeDeserializer::new(self.node, self.path), visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_struct(
            NodeDeserializer::new(self.node, self.path),
            "",
            fields,
            visitor,
        )
    }
}

/// Hands [`Located`] the node's position, then the node itself.
struct LocatedAccess<'a, 'de> {
    node: &'de Node,
    path: &'a str,
    step: usize,
}

impl<'de> de::MapAccess<'de> for LocatedAccess<'_, 'de> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match LOCATED_FIELDS.get(self.step) {
            Some(name) => seed.deserialize(name.into_deserializer()).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let pos = &self.node.pos;
        self.step += 1;
        match self.step {
            1 => seed.deserialize((pos.line as u64).into_deserializer()),
            2 => seed.deserialize((pos.col as u64).into_deserializer()),
            3 => seed.deserialize(pos.file.as_ref().into_deserializer()),
            _ => seed.deserialize(NodeDeserializer::new(self.node, self.path.to_owned())),
        }
    }
}

/// A value with the position of its node, for checks made after deserializing (a path that
/// must exist, a combination of options) that still point at the right line.
#[derive(Debug, Clone)]
pub struct Located<T> {
    pub pos: Pos,
    pub value: T,
}

impl<T> std::ops::Deref for Located<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<'de, T: de::Deserialize<'de>> de::Deserialize<'de> for Located<T> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: de::Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Located<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value (read from a configuration file)")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Located<T>, A::Error> {
                let (_, line): (String, usize) = map
                    .next_entry()?
                    .ok_or_else(|| de::Error::custom("no position"))?;
                let (_, col): (String, usize) = map
                    .next_entry()?
                    .ok_or_else(|| de::Error::custom("no position"))?;
                let (_, file): (String, String) = map
                    .next_entry()?
                    .ok_or_else(|| de::Error::custom("no position"))?;
                let (_, value): (String, T) = map
                    .next_entry()?
                    .ok_or_else(|| de::Error::custom("no value"))?;
                Ok(Located {
                    pos: Pos {
                        file: file.into(),
                        line,
                        col,
                    },
                    value,
                })
            }
        }
        d.deserialize_struct(LOCATED, LOCATED_FIELDS, V(std::marker::PhantomData))
    }
}

impl<T: schemars::JsonSchema> schemars::JsonSchema for Located<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

/// The option names of a config struct, as serde knows them (its `fields`).
pub fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Catch(Option<&'static [&'static str]>);
    struct Probe<'a>(&'a mut Catch);
    impl<'de> de::Deserializer<'de> for Probe<'_> {
        type Error = DeError;
        fn deserialize_any<V: Visitor<'de>>(self, _v: V) -> Result<V::Value, DeError> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _v: V,
        ) -> Result<V::Value, DeError> {
            self.0 .0 = Some(fields);
            Err(de::Error::custom("fields caught"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut catch = Catch(None);
    let _ = T::deserialize(Probe(&mut catch));
    catch.0.unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::types::{Percent, PyRegex};
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Conf {
        percent: Percent,
        #[serde(default)]
        flag: bool,
        #[serde(default)]
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        regex: PyRegex,
    }

    fn read(text: &str) -> Result<Conf, DeError> {
        let node = crate::config::yaml::parse("f.conf", text)
            .expect("yaml")
            .expect("document");
        from_node(&node)
    }

    #[test]
    fn errors_point_at_the_node_and_name_the_option() {
        assert_eq!(read("percent: 63%\n").map(|c| c.percent.0), Ok(63.0));
        assert_eq!(read("percent: '63'\n").map(|c| c.percent.0), Ok(63.0));
        let e = read("flag: yes\npercent: lots\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "f.conf:2:10: percent must be a percentage such as 90% or 90, found the string 'lots'"
        );
        let e = read("percent: 1\nflag: 'yes'\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "f.conf:2:7: flag must be True or False, found the string 'yes'"
        );
        let e = read("percent: 1\nflga: true\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("f.conf:2:1: unknown option 'flga' (did you mean 'flag'?"),
            "{e}"
        );
        let e = read("flag: true\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "f.conf:1:1: missing required option 'percent'"
        );
        let e = read("percent: 1\ninner:\n  regex: 'a(b'\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("f.conf:3:10: inner.regex: 'a(b' is not a valid"),
            "{e}"
        );
        let e = read("percent: 1\ninner:\n  rgex: a\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("f.conf:3:3: unknown option 'inner.rgex' (did you mean 'regex'?"),
            "{e}"
        );
        // Salt's internal keys pass.
        assert!(read("percent: 1\n_private: x\n").is_ok());
    }

    #[test]
    fn field_names_come_from_serde() {
        assert_eq!(field_names::<Conf>(), &["percent", "flag", "inner"]);
    }
}
