//! Salt's quirks as small types: each knows what Salt's Python beacon accepts, and says so in
//! its error and its `--describe` line.
//!
//! Booleans need no type of their own: the YAML reader already applies PyYAML's rules
//! (`yes`, `on`, `True` are booleans), and Salt's beacons test `is True`, so a plain `bool`
//! (which takes only a YAML boolean) is exactly Salt's.

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Deserialize, Deserializer, Visitor};
use std::borrow::Cow;
use std::fmt;

/// A percentage as Salt reads it (`float(str(x).strip('%'))`): `63%`, `'63'` or `63`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, serde::Serialize)]
pub struct Percent(pub f64);

const PERCENT: &str = "a percentage such as 90% or 90";

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Percent;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(PERCENT)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Percent, E> {
                Ok(Percent(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Percent, E> {
                Ok(Percent(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Percent, E> {
                Ok(Percent(v))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Percent, E> {
                match s.replace('%', "").trim().parse::<f64>() {
                    Ok(v) if v.is_finite() => Ok(Percent(v)),
                    _ => Err(E::invalid_value(de::Unexpected::Str(s), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Percent {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "Percent".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": ["number", "string"], "x-type": "percentage (63%, '63' or 63)" })
    }
}

/// A number as Python's `float()` takes it: a number or a numeric string (`'0.5'`).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, serde::Serialize)]
pub struct Float(pub f64);

impl<'de> Deserialize<'de> for Float {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Float;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Float, E> {
                Ok(Float(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Float, E> {
                Ok(Float(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Float, E> {
                Ok(Float(v))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Float, E> {
                s.trim()
                    .parse()
                    .map(Float)
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(s), &self))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Float {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "Float".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": ["number", "string"], "x-type": "number" })
    }
}

/// A Python regular expression (Salt's beacons use `re`), compiled when the config is read so
/// that a bad one is a config error with its position. fancy-regex takes Python's syntax,
/// look-arounds and back-references included.
#[derive(Debug, Clone)]
pub struct PyRegex {
    pub pattern: String,
    pub regex: fancy_regex::Regex,
}

impl PyRegex {
    /// Compile `pattern` as Python's `re.compile` would.
    pub fn new(pattern: &str) -> Result<Self, String> {
        fancy_regex::Regex::new(pattern)
            .map(|regex| PyRegex {
                pattern: pattern.to_owned(),
                regex,
            })
            .map_err(|e| format!("'{pattern}' is not a valid regular expression: {e}"))
    }

    /// Python's `re.match`: anchored at the start.
    pub fn anchored(&self) -> Result<fancy_regex::Regex, String> {
        fancy_regex::Regex::new(&format!("^(?:{})", self.pattern))
            .map_err(|e| format!("'{}' is not a valid regular expression: {e}", self.pattern))
    }
}

impl serde::Serialize for PyRegex {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.pattern)
    }
}

impl<'de> Deserialize<'de> for PyRegex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let pattern = String::deserialize(d)?;
        PyRegex::new(&pattern).map_err(de::Error::custom)
    }
}

impl JsonSchema for PyRegex {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "PyRegex".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "x-type": "regular expression (Python's re)" })
    }
}

/// A map whose keys are names the user chose (process names, services), in file order (Salt
/// iterates its dict in insertion order).
#[derive(Debug, Clone)]
pub struct NameMap<T>(pub Vec<(String, T)>);

impl<T> Default for NameMap<T> {
    fn default() -> Self {
        NameMap(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for NameMap<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = NameMap<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<NameMap<T>, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, T>()? {
                    out.push((k, v));
                }
                Ok(NameMap(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

impl<T: JsonSchema> JsonSchema for NameMap<T> {
    fn schema_name() -> Cow<'static, str> {
        format!("NameMap_{}", T::schema_name()).into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "object", "additionalProperties": generator.subschema_for::<T>() })
    }
}

/// A count as Python's `int()` takes it: a non-negative integer or a numeric string (`'100'`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Count(pub u64);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Count, E> {
                u64::try_from(v)
                    .map(Count)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Count, E> {
                Ok(Count(v))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Count, E> {
                s.trim()
                    .parse()
                    .map(Count)
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(s), &self))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Count {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "Count".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": ["integer", "string"], "x-type": "whole number" })
    }
}

/// `procfs` options default to `/proc`.
pub fn default_procfs() -> std::path::PathBuf {
    std::path::PathBuf::from("/proc")
}
