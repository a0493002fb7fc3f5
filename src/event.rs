//! One beacon event: `tag` + `data`, shaped exactly as Salt's `Beacon.process` builds it.

use serde_json::{Map, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// A beacon event ready to print or to send to a master.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `salt/beacon/<id>/<beacon name>/<sub tag>`
    pub tag: String,
    /// Event data; always carries `id` and `_stamp`.
    pub data: Map<String, Value>,
    /// The configured beacon name (the key under `beacons:`), for accounting and rate limits.
    pub beacon: String,
}

impl Event {
    /// Build an event the way Salt does: tag prefix plus the beacon's `tag` key (popped from the
    /// data), `id` filled in unless the beacon set it, and `_stamp` as the master's event bus adds it.
    pub fn from_beacon(minion_id: &str, beacon: &str, mut data: Map<String, Value>) -> Self {
        let mut tag = format!("salt/beacon/{minion_id}/{beacon}/");
        if let Some(sub) = data.remove("tag") {
            match sub {
                Value::String(s) => tag.push_str(&s),
                other => tag.push_str(&other.to_string()),
            }
        }
        data.entry("id")
            .or_insert_with(|| Value::String(minion_id.to_owned()));
        data.insert("_stamp".into(), Value::String(stamp_now()));
        Event {
            tag,
            data,
            beacon: beacon.to_owned(),
        }
    }

    /// Salt's beacon error event: the beacon's tag prefix and an `error` key.
    pub fn beacon_error(minion_id: &str, beacon: &str, error: &str) -> Self {
        let mut data = Map::new();
        data.insert("error".into(), Value::String(error.to_owned()));
        Self::from_beacon(minion_id, beacon, data)
    }

    /// A report that events were lost or a beacon failed: Salt's error events, and the
    /// sub-tags beacons use for what they could not see (`overflow`: kernel inotify or netlink
    /// queue; `overrun`: proc connector; `lost`: journal entries gone before they were read).
    /// Flood control lets these through, so a loss is always an event of its own, never just
    /// a number inside a summary.
    pub fn is_loss_report(&self) -> bool {
        if self.data.contains_key("error") {
            return true;
        }
        let id = self
            .data
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let prefix = format!("salt/beacon/{id}/{}/", self.beacon);
        self.tag
            .strip_prefix(&prefix)
            .is_some_and(|sub| LOSS_SUBTAGS.contains(&sub))
    }

    /// The public one-line JSON form: `{"tag": ..., "data": {...}}`.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("tag".into(), Value::String(self.tag.clone()));
        m.insert("data".into(), Value::Object(self.data.clone()));
        Value::Object(m)
    }
}

/// Sub-tags by which beacons report what they could not see (see [`Event::is_loss_report`]).
pub const LOSS_SUBTAGS: [&str; 3] = ["overflow", "overrun", "lost"];

/// Current UTC time as Python's `datetime.utcnow().isoformat()` writes it.
pub fn stamp_now() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format_stamp(now.as_secs() as i64, now.subsec_micros())
}

/// `YYYY-MM-DDTHH:MM:SS.ffffff`; like Python, the fraction is left out when it is zero.
pub fn format_stamp(unix_secs: i64, micros: u32) -> String {
    let (y, mo, d) = crate::calendar::civil_from_days(unix_secs.div_euclid(86_400));
    let sod = unix_secs.rem_euclid(86_400);
    let (h, mi, s) = (sod / 3600, (sod % 3600) / 60, sod % 60);
    if micros == 0 {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}")
    } else {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{micros:06}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stamp_matches_python_isoformat() {
        // python3 -c 'import datetime;print(datetime.datetime.utcfromtimestamp(1603885767.177666).isoformat())'
        assert_eq!(
            format_stamp(1_603_885_767, 177_666),
            "2020-10-28T11:49:27.177666"
        );
        assert_eq!(format_stamp(951_782_400, 0), "2000-02-29T00:00:00");
        assert_eq!(format_stamp(0, 5), "1970-01-01T00:00:00.000005");
    }

    #[test]
    fn tag_and_id_follow_salt() {
        let data = json!({"tag": "mode", "mode": "Permissive"});
        let ev = Event::from_beacon(
            "web1",
            "selinux",
            data.as_object().cloned().unwrap_or_default(),
        );
        assert_eq!(ev.tag, "salt/beacon/web1/selinux/mode");
        assert_eq!(ev.data["id"], "web1");
        assert!(ev.data.contains_key("_stamp"));
        assert!(!ev.data.contains_key("tag"));
        let ev = Event::from_beacon("web1", "load", Map::new());
        assert_eq!(ev.tag, "salt/beacon/web1/load/");
    }

    #[test]
    fn loss_reports_are_recognised_by_exact_sub_tag() {
        let ev = |beacon: &str, data: Value| {
            Event::from_beacon("m", beacon, data.as_object().cloned().unwrap_or_default())
        };
        assert!(ev("inotify", json!({"tag": "overflow"})).is_loss_report());
        assert!(ev("sh", json!({"tag": "overrun"})).is_loss_report());
        assert!(ev("journald", json!({"tag": "lost"})).is_loss_report());
        assert!(Event::beacon_error("m", "load", "boom").is_loss_report());
        // A watched file that happens to be named "overflow" is an ordinary change.
        assert!(!ev("inotify", json!({"tag": "/var/log/overflow"})).is_loss_report());
        assert!(!ev("sh", json!({"tag": "1234"})).is_loss_report());
    }
}
