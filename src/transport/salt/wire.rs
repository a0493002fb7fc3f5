//! msgpack as `salt.payload` writes it on the request channel: `dumps(use_bin_type=False)`,
//! so `bytes` and `str` both travel as msgpack *str* (raw); readers tell them apart by
//! whether the contents decode as UTF-8. And the shapes of the loads beacond sends.

use crate::event::Event;
use rmpv::Value;
use serde_json::Value as Json;

/// msgpack encoding as `salt.payload.dumps`: minimal integer forms, float64, and
/// [`Value::Binary`] written as raw str like Python `bytes` with `use_bin_type=False`.
pub fn pack(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write(&mut out, v);
    out
}

fn write(out: &mut Vec<u8>, v: &Value) {
    use rmp::encode as e;
    // Writes into a Vec<u8> cannot fail (rmp only reports I/O errors), hence the `.ok()`s.
    match v {
        Value::Nil => {
            e::write_nil(out).ok();
        }
        Value::Boolean(b) => {
            e::write_bool(out, *b).ok();
        }
        Value::Integer(i) => {
            if let Some(u) = i.as_u64() {
                e::write_uint(out, u).ok();
            } else if let Some(s) = i.as_i64() {
                e::write_sint(out, s).ok();
            }
        }
        Value::F32(f) => {
            e::write_f32(out, *f).ok();
        }
        Value::F64(f) => {
            e::write_f64(out, *f).ok();
        }
        Value::String(s) => raw(out, s.as_bytes()),
        Value::Binary(b) => raw(out, b),
        Value::Array(a) => {
            e::write_array_len(out, a.len() as u32).ok();
            for x in a {
                write(out, x);
            }
        }
        Value::Map(m) => {
            e::write_map_len(out, m.len() as u32).ok();
            for (k, x) in m {
                write(out, k);
                write(out, x);
            }
        }
        Value::Ext(t, d) => {
            e::write_ext_meta(out, d.len() as u32, *t).ok();
            out.extend_from_slice(d);
        }
    }
}

/// Old-spec raw: with `use_bin_type=False` msgpack-python never writes str8 (0xd9), only
/// fixstr, str16 and str32.
fn raw(out: &mut Vec<u8>, b: &[u8]) {
    let n = b.len();
    if n < 32 {
        out.push(0xa0 | n as u8);
    } else if n <= 0xffff {
        out.push(0xda);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    out.extend_from_slice(b);
}

/// Decode exactly one msgpack value that spans the whole input.
pub fn unpack(mut data: &[u8]) -> Result<Value, String> {
    let v = rmpv::decode::read_value(&mut data).map_err(|e| e.to_string())?;
    if !data.is_empty() {
        return Err(format!(
            "{} trailing bytes after the msgpack value",
            data.len()
        ));
    }
    Ok(v)
}

/// JSON data → msgpack, as Python would pack the same dict after `json.loads`.
pub fn from_json(j: &Json) -> Value {
    match j {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::from(u)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                Value::F64(n.as_f64().unwrap_or(0.0))
            }
        }
        Json::String(s) => Value::from(s.as_str()),
        Json::Array(a) => Value::Array(a.iter().map(from_json).collect()),
        Json::Object(o) => Value::Map(
            o.iter()
                .map(|(k, v)| (Value::from(k.as_str()), from_json(v)))
                .collect(),
        ),
    }
}

/// msgpack → JSON, for logs and tests (bins become lists of numbers).
pub fn to_json(v: &Value) -> Json {
    match v {
        Value::Nil => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Integer(i) => {
            if let Some(u) = i.as_u64() {
                Json::from(u)
            } else {
                Json::from(i.as_i64().unwrap_or(0))
            }
        }
        Value::F32(f) => Json::from(f64::from(*f)),
        Value::F64(f) => Json::from(*f),
        Value::String(s) => Json::String(
            s.as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(s.as_bytes()).into_owned()),
        ),
        Value::Binary(b) => Json::Array(b.iter().map(|x| Json::from(*x)).collect()),
        Value::Array(a) => Json::Array(a.iter().map(to_json).collect()),
        Value::Map(m) => Json::Object(
            m.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Value::String(s) => s.as_str().unwrap_or("").to_owned(),
                        other => other.to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Value::Ext(_, b) => Json::Array(b.iter().map(|x| Json::from(*x)).collect()),
    }
}

/// Build a msgpack map from (key, value) pairs, keeping their order.
pub fn map<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    Value::Map(
        pairs
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    )
}

/// Look up a string key in a msgpack map.
pub fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Map(m) => m
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v),
        _ => None,
    }
}

/// A string or bin field's bytes (Salt's replies mix both for keys and tokens).
pub fn bytes_of(v: &Value) -> Option<&[u8]> {
    match v {
        Value::Binary(b) => Some(b),
        Value::String(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// The `events` list of a `_minion_event` load: `[{"tag": ..., "data": {...}}, ...]`, the
/// shape `Minion._fire_master(events=...)` sends for beacon returns.
pub fn events_value(batch: &[Event]) -> Value {
    Value::Array(
        batch
            .iter()
            .map(|e| {
                map([
                    ("tag", Value::from(e.tag.as_str())),
                    ("data", from_json(&Json::Object(e.data.clone()))),
                ])
            })
            .collect(),
    )
}

/// The inner `_minion_event` load, before encryption, in the key order salt-minion uses:
/// `_fire_master_prepare` (`id`, `cmd`, `pretag`, `tok`, `events`) then `_package_load`
/// (`nonce`, `ts`, `tok`, `id` — the last two overwrite, keeping their first position).
pub fn minion_event_load(id: &str, tok: &[u8], events: Value, nonce: &str, ts: i64) -> Value {
    map([
        ("id", Value::from(id)),
        ("cmd", Value::from("_minion_event")),
        ("pretag", Value::Nil),
        ("tok", Value::Binary(tok.to_vec())),
        ("events", events),
        ("nonce", Value::from(nonce)),
        ("ts", Value::from(ts)),
    ])
}

/// The outer request frame for an encrypted load (protocol version 3).
pub fn aes_envelope(id: &str, load: Vec<u8>, enc_algo: &str, sig_algo: &str, version: u8) -> Value {
    if version >= 3 {
        map([
            ("enc", Value::from("aes")),
            ("load", Value::Binary(load)),
            ("version", Value::from(version)),
            ("id", Value::from(id)),
            ("enc_algo", Value::from(enc_algo)),
            ("sig_algo", Value::from(sig_algo)),
        ])
    } else {
        map([
            ("enc", Value::from("aes")),
            ("load", Value::Binary(load)),
            ("version", Value::from(version)),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_round_trip() {
        let j = json!({"a": 1, "b": -2, "c": 1.5, "d": [true, null, "x"], "e": {"f": u64::MAX}});
        let v = from_json(&j);
        assert_eq!(to_json(&unpack(&pack(&v)).expect("unpack")), j);
    }

    #[test]
    fn unpack_rejects_trailing_garbage() {
        let mut b = pack(&Value::from(1));
        b.push(0);
        assert!(unpack(&b).is_err());
        assert!(unpack(&[0x92, 0x01]).is_err());
    }
}
