//! Flood control: per-beacon and global token buckets. What does not pass is counted and
//! summarised in one `salt/beacon/<id>/beacond/suppressed` event per window, never dropped
//! silently; reports of loss (`Event::is_loss_report`) are never held back. Memory: one bucket and one summary entry per configured beacon name.

use crate::event::Event;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: f64, now: Instant) -> Self {
        Bucket {
            tokens: burst(rate),
            last: now,
        }
    }

    fn refill(&mut self, rate: f64, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * rate).min(burst(rate));
        self.last = now;
    }
}

/// Bursts of two seconds' worth pass.
fn burst(rate: f64) -> f64 {
    (rate * 2.0).max(1.0)
}

#[derive(Debug, Clone, Default)]
struct Held {
    count: u64,
    first_tag: String,
    last_tag: String,
}

/// The limiter.
#[derive(Debug)]
pub struct Limiter {
    per_beacon: f64,
    global: f64,
    window: Duration,
    buckets: HashMap<String, Bucket>,
    global_bucket: Bucket,
    window_start: Instant,
    window_stamp: String,
    held: BTreeMap<String, Held>,
    held_total: u64,
}

impl Limiter {
    /// Rates in events/s (`0` = unlimited), summary window.
    pub fn new(per_beacon: f64, global: f64, window: Duration) -> Self {
        let now = Instant::now();
        Limiter {
            per_beacon,
            global,
            window,
            buckets: HashMap::new(),
            global_bucket: Bucket::new(global, now),
            window_start: now,
            window_stamp: crate::event::stamp_now(),
            held: BTreeMap::new(),
            held_total: 0,
        }
    }

    /// Whether `ev` may pass now; if not, it is counted for the window's summary. Loss reports
    /// always pass and take no tokens: they are rare by nature (one per kernel queue overflow,
    /// errors are de-duplicated) and are the evidence that something was missed.
    pub fn admit(&mut self, ev: &Event, now: Instant) -> bool {
        if ev.is_loss_report() {
            return true;
        }
        let mut ok = true;
        if self.per_beacon > 0.0 {
            let rate = self.per_beacon;
            let b = match self.buckets.get_mut(&ev.beacon) {
                Some(b) => b,
                None => self
                    .buckets
                    .entry(ev.beacon.clone())
                    .or_insert_with(|| Bucket::new(rate, now)),
            };
            b.refill(rate, now);
            ok = b.tokens >= 1.0;
        }
        if ok && self.global > 0.0 {
            self.global_bucket.refill(self.global, now);
            ok = self.global_bucket.tokens >= 1.0;
        }
        if ok {
            if self.per_beacon > 0.0 {
                if let Some(b) = self.buckets.get_mut(&ev.beacon) {
                    b.tokens -= 1.0;
                }
            }
            if self.global > 0.0 {
                self.global_bucket.tokens -= 1.0;
            }
            return true;
        }
        self.held_total += 1;
        let h = match self.held.get_mut(&ev.beacon) {
            Some(h) => h,
            None => self.held.entry(ev.beacon.clone()).or_default(),
        };
        if h.count == 0 {
            h.first_tag = ev.tag.clone();
        }
        h.count += 1;
        // Tags are kept as the last seen; cloned only when they change.
        if h.last_tag != ev.tag {
            h.last_tag.clone_from(&ev.tag);
        }
        false
    }

    /// When the current window ends.
    pub fn window_end(&self) -> Instant {
        self.window_start + self.window
    }

    /// Events held back in the current window.
    pub fn held(&self) -> u64 {
        self.held_total
    }

    /// Close the window: the summary event data if anything was held back.
    pub fn close_window(&mut self, now: Instant) -> Option<(u64, Map<String, Value>)> {
        let start = std::mem::replace(&mut self.window_stamp, crate::event::stamp_now());
        self.window_start = now;
        if self.held_total == 0 {
            return None;
        }
        let total = std::mem::take(&mut self.held_total);
        let held = std::mem::take(&mut self.held);
        let mut d = Map::new();
        d.insert("tag".into(), Value::from("suppressed"));
        d.insert("count".into(), Value::from(total));
        d.insert("window_start".into(), Value::from(start));
        d.insert("window_end".into(), Value::from(crate::event::stamp_now()));
        d.insert("rate_per_beacon".into(), Value::from(self.per_beacon));
        d.insert("rate_global".into(), Value::from(self.global));
        let mut first: Option<&str> = None;
        let mut last: Option<&str> = None;
        let mut per = Map::new();
        for (name, h) in &held {
            first.get_or_insert(&h.first_tag);
            last = Some(&h.last_tag);
            let mut m = Map::new();
            m.insert("count".into(), Value::from(h.count));
            m.insert("first_tag".into(), Value::from(h.first_tag.clone()));
            m.insert("last_tag".into(), Value::from(h.last_tag.clone()));
            per.insert(name.clone(), Value::Object(m));
        }
        d.insert("first_tag".into(), Value::from(first.unwrap_or_default()));
        d.insert("last_tag".into(), Value::from(last.unwrap_or_default()));
        d.insert("beacons".into(), Value::Object(per));
        Some((total, d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(beacon: &str, sub: &str) -> Event {
        let mut d = Map::new();
        d.insert("tag".into(), Value::from(sub));
        Event::from_beacon("m", beacon, d)
    }

    #[test]
    fn per_beacon_and_global_limits_count_what_they_hold() {
        let t0 = Instant::now();
        let mut l = Limiter::new(20.0, 25.0, Duration::from_secs(10));
        let mut passed = 0;
        for i in 0..100 {
            if l.admit(&ev("a", &format!("x{i}")), t0) {
                passed += 1;
            }
        }
        // Burst of 2 s at 20/s.
        assert_eq!(passed, 40);
        for _ in 0..100 {
            if l.admit(&ev("b", "y"), t0) {
                passed += 1;
            }
        }
        // The global burst (50) caps b at 10.
        assert_eq!(passed, 50);
        let (n, d) = l.close_window(t0).expect("summary");
        assert_eq!(n, 150);
        assert_eq!(d["beacons"]["a"]["count"], 60);
        assert_eq!(d["beacons"]["a"]["first_tag"], "salt/beacon/m/a/x40");
        assert_eq!(d["beacons"]["a"]["last_tag"], "salt/beacon/m/a/x99");
        assert_eq!(d["beacons"]["b"]["count"], 90);
        assert!(l.close_window(t0).is_none());
        // Tokens come back with time.
        assert!(l.admit(&ev("a", "z"), t0 + Duration::from_secs(1)));
    }

    #[test]
    fn zero_means_unlimited() {
        let t0 = Instant::now();
        let mut l = Limiter::new(0.0, 0.0, Duration::from_secs(1));
        assert!((0..10_000).all(|_| l.admit(&ev("a", "x"), t0)));
    }
}
