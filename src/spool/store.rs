//! The on-disk spool: append-only segment files of length+CRC framed records, an ack pointer
//! replaced atomically by rename, a size bound that drops the oldest events (and says so).
//!
//! Layout of `<cachedir>/beacond/spool/`:
//! - `id`: 16 hex digits, random, created once: the prefix of every `beacond_uid`.
//! - `seg-<first seq, 20 digits>.log`: records `[len: u32 LE][crc32(payload): u32 LE][payload]`,
//!   payload = `[seq: u64 LE][JSON {"b": beacon, "t": tag, "d": data}]`.
//! - `ack`: JSON `{"acked": N, "ahead": [..]}`: every record with `seq <= N` was acknowledged by
//!   a master, and so were the (few) seqs in `ahead` (new events sent ahead of a backlog).
//!   Written to `ack.tmp` and renamed over `ack` (atomic; not fsynced: after a power cut an
//!   older pointer only means a resend). Segment data is fdatasynced once a second.
//!
//! Crash safety: a SIGKILL leaves at worst a torn last record, truncated on open; records are
//! only skipped once the ack file says so, and the ack file is written after the master
//! acknowledged, so a crash resends at most the batch in flight.
//!
//! Loss is counted, never silent ([`Spool::take_dropped`], one `beacond/dropped` event per
//! cause): the size bound; a write that failed (disk full, read-only: the record is cut back
//! off the segment, and the report goes out once a write succeeds again); records found
//! corrupt or cut off at open (the rest is kept: reading resumes at the next valid record,
//! and sequence numbers are contiguous, so the gap is the count).

use crate::event::Event;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Header of one record: length and CRC-32.
const HEADER: usize = 8;
/// A record larger than this is corrupt (an event is at most a few hundred KiB).
pub const MAX_RECORD: usize = 16 << 20;
/// The key carrying the stable unique id in every spooled event's data.
pub const UID_KEY: &str = "beacond_uid";
/// Sequence numbers sent ahead of the backlog remembered at most (bounds the ack file).
pub const MAX_AHEAD: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// CRC-32 (IEEE 802.3, as zlib), table driven.
pub fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    let mut crc = !0u32;
    for &b in data {
        crc = table[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// One record read back.
#[derive(Debug, Clone)]
pub struct Record {
    pub seq: u64,
    pub event: Event,
}

/// Frame an event as a record.
pub fn encode(seq: u64, ev: &Event) -> Vec<u8> {
    let mut body = Map::new();
    body.insert("b".into(), Value::String(ev.beacon.clone()));
    body.insert("t".into(), Value::String(ev.tag.clone()));
    body.insert("d".into(), Value::Object(ev.data.clone()));
    let json = serde_json::to_vec(&Value::Object(body)).unwrap_or_default();
    let mut payload = Vec::with_capacity(8 + json.len());
    payload.extend_from_slice(&seq.to_le_bytes());
    payload.extend_from_slice(&json);
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Decode the record at the start of `buf`: `Ok(Some((record, size)))`, `Ok(None)` when `buf`
/// holds only part of one (a torn tail), `Err` when it is corrupt.
pub fn decode(buf: &[u8]) -> Result<Option<(Record, usize)>, String> {
    if buf.len() < HEADER {
        return Ok(None);
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if !(8..=MAX_RECORD).contains(&len) {
        return Err(format!("bad record length {len}"));
    }
    if buf.len() < HEADER + len {
        return Ok(None);
    }
    let payload = &buf[HEADER..HEADER + len];
    if crc32(payload) != crc {
        return Err("CRC mismatch".into());
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&payload[..8]);
    let seq = u64::from_le_bytes(seq);
    let body: Value =
        serde_json::from_slice(&payload[8..]).map_err(|e| format!("bad record body: {e}"))?;
    let (beacon, tag, data) = match body {
        Value::Object(mut m) => (m.remove("b"), m.remove("t"), m.remove("d")),
        _ => (None, None, None),
    };
    match (beacon, tag, data) {
        (Some(Value::String(beacon)), Some(Value::String(tag)), Some(Value::Object(data))) => {
            Ok(Some((
                Record {
                    seq,
                    event: Event { tag, data, beacon },
                },
                HEADER + len,
            )))
        }
        _ => Err("record body lacks b/t/d".into()),
    }
}

/// Parse the ack file's content: `(acked, ahead)`.
pub fn parse_ack(text: &str) -> Option<(u64, BTreeSet<u64>)> {
    let v: Value = serde_json::from_str(text).ok()?;
    let acked = v.get("acked")?.as_u64()?;
    let ahead = v
        .get("ahead")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_u64)
                .filter(|s| *s > acked)
                .collect()
        })
        .unwrap_or_default();
    Some((acked, ahead))
}

/// Counted gaps remembered at most (bounds the ack file).
const MAX_GAPS: usize = 64;

/// The ack file's `gaps`: seq ranges already counted as lost to damage.
fn parse_gaps(text: &str, acked: u64) -> Vec<(u64, u64)> {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    v.get("gaps")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|g| Some((g.get(0)?.as_u64()?, g.get(1)?.as_u64()?)))
                .filter(|g| g.1 > acked)
                .take(MAX_GAPS)
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    path: PathBuf,
    bytes: u64,
}

/// What a size-bound drop removed (unacknowledged events only).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Dropped {
    /// Beacon events lost (including those earlier drop reports that were dropped had reported).
    pub count: u64,
    /// Of `count`, lost since the previous report (for the agent's counters).
    pub fresh: u64,
    /// Earlier `dropped` events that were themselves pushed out (their counts are in `count`).
    pub reports: u64,
    pub beacons: BTreeMap<String, u64>,
    /// Oldest and newest dropped event: (seq, uid, stamp).
    pub first: Option<(u64, String, String)>,
    pub last: Option<(u64, String, String)>,
    /// Why (empty: the size bound).
    pub reason: String,
}

/// The `reason` of records lost to damage found at open.
pub const REASON_DAMAGED: &str = "spool damaged: records found corrupt or cut off at start";

fn uid_seq(uid: &str) -> u64 {
    uid.rsplit_once('-')
        .and_then(|(_, s)| s.parse().ok())
        .unwrap_or(0)
}

impl Dropped {
    fn note(&mut self, seq: u64, uid: String, stamp: String) {
        if self.first.as_ref().is_none_or(|f| seq < f.0) {
            self.first = Some((seq, uid.clone(), stamp.clone()));
        }
        if self.last.as_ref().is_none_or(|l| seq > l.0) {
            self.last = Some((seq, uid, stamp));
        }
    }

    fn add(&mut self, seq: u64, ev: &Event) {
        let text = |k: &str| {
            ev.data
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        // A drop report that is itself pushed out: what it reported carries over.
        if ev.beacon == "beacond" && ev.tag.ends_with("/beacond/dropped") {
            self.count += ev.data.get("count").and_then(Value::as_u64).unwrap_or(0);
            self.reports += 1 + ev
                .data
                .get("reports_merged")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            if let Some(Value::Object(b)) = ev.data.get("beacons") {
                for (k, v) in b {
                    *self.beacons.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
                }
            }
            for (u, st) in [("first_uid", "first_stamp"), ("last_uid", "last_stamp")] {
                let uid = text(u);
                if !uid.is_empty() {
                    self.note(uid_seq(&uid), uid, text(st));
                }
            }
            return;
        }
        self.count += 1;
        self.fresh += 1;
        *self.beacons.entry(ev.beacon.clone()).or_default() += 1;
        self.note(seq, text(UID_KEY), text("_stamp"));
    }

    /// An event that could not be written: no seq or uid was used up for it.
    fn add_unwritten(&mut self, ev: &Event) {
        if ev.beacon == "beacond" && ev.tag.ends_with("/beacond/dropped") {
            // A report that could not be written: what it reported carries over.
            let fresh = self.fresh;
            self.add(0, ev);
            self.fresh = fresh;
            return;
        }
        let n = self.count + 1;
        let stamp = ev
            .data
            .get("_stamp")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        self.count += 1;
        *self.beacons.entry(ev.beacon.clone()).or_default() += 1;
        self.note(n, String::new(), stamp);
    }

    fn merge(&mut self, other: Dropped) {
        if self.reason.is_empty() {
            self.reason = other.reason;
        }
        self.count += other.count;
        self.fresh += other.fresh;
        self.reports += other.reports;
        for (b, n) in other.beacons {
            *self.beacons.entry(b).or_default() += n;
        }
        for (seq, uid, stamp) in other.first.into_iter().chain(other.last) {
            self.note(seq, uid, stamp);
        }
    }

    /// The `salt/beacon/<id>/beacond/dropped` event data.
    pub fn to_data(&self) -> Map<String, Value> {
        let mut d = Map::new();
        d.insert("tag".into(), Value::from("dropped"));
        d.insert("count".into(), Value::from(self.count));
        d.insert("reports_merged".into(), Value::from(self.reports));
        let reason = if self.reason.is_empty() {
            "spool full (beacond_spool_max_bytes)"
        } else {
            &self.reason
        };
        d.insert("reason".into(), Value::from(reason));
        let beacons: Map<String, Value> = self
            .beacons
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(*v)))
            .collect();
        d.insert("beacons".into(), Value::Object(beacons));
        let pick = |v: &Option<(u64, String, String)>, i: usize| {
            v.as_ref()
                .map(|t| if i == 1 { t.1.clone() } else { t.2.clone() })
                .filter(|s| !s.is_empty())
                .map_or(Value::Null, Value::from)
        };
        d.insert("first_stamp".into(), pick(&self.first, 2));
        d.insert("last_stamp".into(), pick(&self.last, 2));
        d.insert("first_uid".into(), pick(&self.first, 1));
        d.insert("last_uid".into(), pick(&self.last, 1));
        d
    }
}

/// The durable FIFO of events not yet acknowledged by a master.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    id: String,
    max_bytes: u64,
    segment_max: u64,
    segments: Vec<Segment>,
    writer: Option<File>,
    next_seq: u64,
    acked: u64,
    /// Seqs above `acked` already acknowledged (sent ahead of the backlog).
    ahead: BTreeSet<u64>,
    /// Read position: segment index in `segments` and byte offset, at the first record with
    /// `seq > acked` (or the end).
    cursor: (usize, u64),
    /// Unacknowledged records (approximate after drops of ahead-acked records: never below 0).
    pending: u64,
    total_bytes: u64,
    /// Dropped by the size bound and not yet reported.
    unreported: Dropped,
    /// Not written (the write failed) and not yet reported.
    unwritten: Dropped,
    /// Found corrupt or cut off at open and not yet reported.
    damaged: Dropped,
    /// Failed writes since the last one that succeeded.
    write_failures: u64,
    /// Gaps of seqs (first, last) already counted as lost to damage (kept in the ack file so
    /// the next open does not count them again).
    counted_gaps: Vec<(u64, u64)>,
    dirty: bool,
}

/// A batch read from the spool, to acknowledge with [`Spool::ack_through`].
#[derive(Debug, Default)]
pub struct Batch {
    pub records: Vec<Record>,
    /// Seq of the last record read (acknowledging the batch acknowledges through it).
    pub last_seq: u64,
}

impl Spool {
    /// Open (or create) the spool in `dir`, bounded to `max_bytes`. Truncates a torn or corrupt
    /// tail, deletes segments wholly acknowledged.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let _ = fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700));
        let id_path = dir.join("id");
        let id = match fs::read_to_string(&id_path) {
            Ok(s) if s.trim().len() == 16 && s.trim().bytes().all(|b| b.is_ascii_hexdigit()) => {
                s.trim().to_owned()
            }
            _ => {
                let id = random_id();
                write_atomic(&id_path, id.as_bytes(), true)?;
                id
            }
        };
        let ack_text = fs::read_to_string(dir.join("ack")).unwrap_or_default();
        let (acked, ahead) = parse_ack(&ack_text).unwrap_or_default();
        let counted_gaps = parse_gaps(&ack_text, acked);
        let max_bytes = max_bytes.max(4096);
        let segment_max = (max_bytes / 8).clamp(1024, 4 << 20);
        let mut spool = Spool {
            dir: dir.to_owned(),
            id,
            max_bytes,
            segment_max,
            segments: Vec::new(),
            writer: None,
            next_seq: acked + 1,
            acked,
            ahead,
            cursor: (0, 0),
            pending: 0,
            total_bytes: 0,
            unreported: Dropped::default(),
            unwritten: Dropped::default(),
            damaged: Dropped::default(),
            write_failures: 0,
            counted_gaps,
            dirty: false,
        };
        spool.scan()?;
        // The ack file is written now: an unwritable spool directory (read-only) is a clear
        // error at start, not events lost one by one. A full disk is not: the agent runs,
        // counts what it cannot keep and reports it once space returns.
        if let Err(e) = spool.write_ack() {
            let SpoolError::Io { source, .. } = &e;
            match source.raw_os_error() {
                Some(libc::ENOSPC) | Some(libc::EDQUOT) => tracing::warn!("{e}"),
                _ => return Err(e),
            }
        }
        Ok(spool)
    }

    fn scan(&mut self) -> Result<(), SpoolError> {
        let mut names: Vec<(u64, PathBuf)> = fs::read_dir(&self.dir)
            .map_err(io_err(&self.dir))?
            .filter_map(|e| {
                let e = e.ok()?;
                let name = e.file_name().into_string().ok()?;
                let seq = name
                    .strip_prefix("seg-")?
                    .strip_suffix(".log")?
                    .parse()
                    .ok()?;
                Some((seq, e.path()))
            })
            .collect();
        names.sort();
        let _ = fs::remove_file(self.dir.join("ack.tmp"));
        let mut cursor: Option<(usize, u64)> = None;
        let mut max_seq = self.acked;
        // Seq of the last valid record: sequence numbers are contiguous, so a gap after it is
        // what damage took.
        let mut last: Option<u64> = None;
        for (first_seq, path) in &names {
            let buf = fs::read(path).map_err(io_err(path))?;
            // Valid records (offset, size); `kept` = bytes kept before the current one.
            let mut good: Vec<(usize, usize)> = Vec::new();
            let mut kept = 0u64;
            let mut off = 0usize;
            let mut damaged_at: Option<usize> = None;
            while off < buf.len() {
                let rec = match decode(&buf[off..]) {
                    Ok(Some(r)) => Some(r),
                    Ok(None) if buf.len() - off <= HEADER + 8 => None,
                    // A bad header or a length running past the end, in the middle or at the
                    // tail: the next valid record (if any) says.
                    Ok(None) | Err(_) => {
                        damaged_at.get_or_insert(off);
                        match resync(&buf, off + 1, last.unwrap_or(first_seq.saturating_sub(1))) {
                            Some(at) => {
                                off = at;
                                continue;
                            }
                            None => None,
                        }
                    }
                };
                let Some((rec, size)) = rec else { break };
                let expect = last.map_or(*first_seq, |l| l + 1);
                let lost_from = expect.max(self.acked + 1);
                let gap = (lost_from, rec.seq.saturating_sub(1));
                let counted = self
                    .counted_gaps
                    .iter()
                    .any(|g| g.0 <= gap.0 && gap.1 <= g.1);
                if rec.seq > lost_from && !counted {
                    if self.counted_gaps.len() >= MAX_GAPS {
                        self.counted_gaps.remove(0);
                    }
                    self.counted_gaps.push(gap);
                    self.damaged.count += rec.seq - lost_from;
                    self.damaged.fresh += rec.seq - lost_from;
                    let (a, b) = (self.uid(lost_from), self.uid(rec.seq - 1));
                    self.damaged.note(lost_from, a, String::new());
                    self.damaged.note(rec.seq - 1, b, String::new());
                }
                last = Some(rec.seq);
                max_seq = max_seq.max(rec.seq);
                if rec.seq > self.acked && !self.ahead.contains(&rec.seq) {
                    self.pending += 1;
                }
                if rec.seq > self.acked && cursor.is_none() {
                    cursor = Some((self.segments.len(), kept));
                }
                good.push((off, size));
                kept += size as u64;
                off += size;
            }
            let end = good.last().map_or(0, |(o, n)| o + n);
            let damaged_inside = good
                .iter()
                .zip(good.iter().skip(1))
                .any(|(a, b)| a.0 + a.1 != b.0)
                || good.first().is_some_and(|g| g.0 > 0);
            if damaged_inside {
                // Keep the valid records only, so reading never meets the damage again.
                tracing::warn!(
                    "spool {}: corrupt data at offset {}; kept the {} valid records around it",
                    path.display(),
                    damaged_at.unwrap_or(0),
                    good.len()
                );
                let mut data = Vec::with_capacity(kept as usize);
                for (o, n) in &good {
                    data.extend_from_slice(&buf[*o..o + n]);
                }
                write_atomic(path, &data, true)?;
            } else if end < buf.len() {
                tracing::warn!(
                    "spool {}: truncating a torn or corrupt tail of {} bytes",
                    path.display(),
                    buf.len() - end
                );
                let f = OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(path)
                    .map_err(io_err(path))?;
                f.set_len(end as u64).map_err(io_err(path))?;
                let _ = f.sync_all();
            }
            self.segments.push(Segment {
                first_seq: *first_seq,
                path: path.clone(),
                bytes: kept,
            });
            self.total_bytes += kept;
        }
        if self.damaged.count > 0 {
            self.damaged.reason = REASON_DAMAGED.into();
            tracing::error!(
                lost = self.damaged.count,
                "spool: records lost to damage (reported in a beacond/dropped event)"
            );
        }
        self.next_seq = max_seq + 1;
        self.cursor = cursor.unwrap_or((self.segments.len().saturating_sub(1), 0));
        if cursor.is_none() {
            // Nothing pending: every segment is acknowledged.
            self.remove_acked_segments(true);
            self.cursor = (0, 0);
        } else {
            self.remove_acked_segments(false);
        }
        self.ahead.retain(|s| *s > self.acked);
        Ok(())
    }

    /// Delete segments before the cursor's (all their records are acknowledged); with `all`,
    /// every segment (nothing pending).
    fn remove_acked_segments(&mut self, all: bool) {
        let upto = if all {
            self.segments.len()
        } else {
            self.cursor.0.min(self.segments.len())
        };
        if upto == 0 {
            return;
        }
        if all {
            // Keep the file of the current writer out of it: it is reopened on the next append.
            self.writer = None;
        }
        for seg in self.segments.drain(..upto) {
            self.total_bytes = self.total_bytes.saturating_sub(seg.bytes);
            let _ = fs::remove_file(&seg.path);
        }
        self.cursor.0 -= upto.min(self.cursor.0);
        if all {
            self.cursor = (0, 0);
        }
    }

    /// The spool's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every seq up to this one is acknowledged.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Nothing is left to read (the reader found the end).
    pub fn clear_pending(&mut self) {
        self.pending = 0;
    }

    /// The prefix of every `beacond_uid`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Events appended and not acknowledged yet.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    pub fn is_empty(&self) -> bool {
        self.pending == 0
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.total_bytes
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The seq the next appended event gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The uid of a seq.
    pub fn uid(&self, seq: u64) -> String {
        format!("{}-{seq}", self.id)
    }

    /// Append an event: it gets its `beacond_uid` (kept if it already has one) and is written
    /// before this returns. Returns its seq. When the spool is over its bound, the oldest
    /// segments go; [`Spool::take_dropped`] tells what was lost.
    pub fn append(&mut self, mut ev: Event) -> Result<(u64, Event), SpoolError> {
        let seq = self.next_seq;
        if !ev.data.contains_key(UID_KEY) {
            ev.data.insert(UID_KEY.into(), Value::String(self.uid(seq)));
        }
        let rec = encode(seq, &ev);
        let need_new = match self.segments.last() {
            None => true,
            Some(s) => s.bytes > 0 && s.bytes + rec.len() as u64 > self.segment_max,
        };
        if let Err(e) = self.write_record(seq, need_new, &rec) {
            self.unwritten.add_unwritten(&ev);
            self.write_failures += 1;
            if self.unwritten.reason.is_empty() {
                self.unwritten.reason = format!("cannot write the spool: {e}");
            }
            return Err(e);
        }
        if self.write_failures > 0 {
            tracing::info!(
                failed = self.write_failures,
                "spool writable again; the events lost meanwhile are reported"
            );
            self.write_failures = 0;
        }
        if let Some(s) = self.segments.last_mut() {
            s.bytes += rec.len() as u64;
        }
        self.total_bytes += rec.len() as u64;
        self.next_seq += 1;
        self.pending += 1;
        self.dirty = true;
        self.enforce_bound()?;
        Ok((seq, ev))
    }

    /// Write one record at the end of the last segment. A failed write (disk full) is cut back
    /// off, so the segment holds whole records only and later records follow them.
    fn write_record(&mut self, seq: u64, need_new: bool, rec: &[u8]) -> Result<(), SpoolError> {
        if need_new || self.writer.is_none() {
            self.open_writer(seq, need_new)?;
        }
        let (path, bytes) = self
            .segments
            .last()
            .map(|s| (s.path.clone(), s.bytes))
            .unwrap_or_default();
        let Some(w) = self.writer.as_mut() else {
            return Err(SpoolError::Io {
                path,
                source: io::Error::other("no open segment"),
            });
        };
        // One write(2) per record: a SIGKILL leaves it whole or absent.
        if let Err(e) = w.write_all(rec) {
            if let Err(t) = w.set_len(bytes) {
                // The torn bytes stay: the next start cuts them off (the records after them
                // are found again) and counts nothing lost for them.
                tracing::error!(
                    "spool {}: cannot cut back a failed write: {t}",
                    path.display()
                );
                self.writer = None;
            }
            return Err(SpoolError::Io { path, source: e });
        }
        Ok(())
    }

    fn open_writer(&mut self, seq: u64, new_segment: bool) -> Result<(), SpoolError> {
        if new_segment {
            let path = self.dir.join(format!("seg-{seq:020}.log"));
            self.segments.push(Segment {
                first_seq: seq,
                path,
                bytes: 0,
            });
        }
        let Some(seg) = self.segments.last() else {
            return Ok(());
        };
        // Events can be sensitive (logins, file changes): only root reads the spool.
        // Never through a symlink planted under a segment's name.
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&seg.path)
            .map_err(io_err(&seg.path))?;
        self.writer = Some(f);
        Ok(())
    }

    /// Drop the oldest segments (never the one being written) while over the bound.
    fn enforce_bound(&mut self) -> Result<(), SpoolError> {
        while self.total_bytes > self.max_bytes && self.segments.len() > 1 {
            let seg = self.segments.remove(0);
            let mut dropped = Dropped::default();
            let mut removed_pending = 0u64;
            let buf = fs::read(&seg.path).unwrap_or_default();
            let mut off = 0usize;
            while let Ok(Some((rec, size))) = decode(&buf[off..]) {
                off += size;
                if rec.seq > self.acked && !self.ahead.contains(&rec.seq) {
                    removed_pending += 1;
                    dropped.add(rec.seq, &rec.event);
                }
                if rec.seq > self.acked {
                    self.acked = rec.seq;
                }
            }
            self.ahead.retain(|s| *s > self.acked);
            self.pending = self.pending.saturating_sub(removed_pending);
            self.total_bytes = self.total_bytes.saturating_sub(seg.bytes);
            let _ = fs::remove_file(&seg.path);
            // The cursor moves to the start of what is now the first segment.
            if self.cursor.0 == 0 {
                self.cursor = (0, 0);
            } else {
                self.cursor.0 -= 1;
            }
            if self.cursor.0 == 0
                && self
                    .segments
                    .first()
                    .is_some_and(|s| s.first_seq > self.acked)
            {
                self.cursor.1 = 0;
            }
            tracing::warn!(
                dropped = dropped.fresh,
                "spool over beacond_spool_max_bytes ({}); dropped its oldest events",
                self.max_bytes
            );
            self.unreported.merge(dropped);
            self.write_ack()?;
        }
        Ok(())
    }

    /// What was lost since the last call, one cause at a time (to report as an event): the
    /// size bound, failed writes, damage found at open.
    pub fn take_dropped(&mut self) -> Option<Dropped> {
        [&mut self.unreported, &mut self.unwritten, &mut self.damaged]
            .into_iter()
            .find(|d| d.count > 0 || d.reports > 0)
            .map(std::mem::take)
    }

    /// Failed writes since the last one that succeeded.
    pub fn write_failures(&self) -> u64 {
        self.write_failures
    }

    /// Losses not reported yet (a report waits for a write that succeeds).
    pub fn has_losses(&self) -> bool {
        [&self.unreported, &self.unwritten, &self.damaged]
            .iter()
            .any(|d| d.count > 0 || d.reports > 0)
    }

    /// Up to `max` oldest unacknowledged records, from the cursor (not removed).
    pub fn peek(&mut self, max: usize) -> Result<Batch, SpoolError> {
        let mut batch = Batch::default();
        let (mut si, mut off) = self.cursor;
        while batch.records.len() < max && si < self.segments.len() {
            let path = self.segments[si].path.clone();
            let seg_bytes = self.segments[si].bytes;
            if off >= seg_bytes {
                si += 1;
                off = 0;
                continue;
            }
            let mut f = File::open(&path).map_err(io_err(&path))?;
            f.seek(SeekFrom::Start(off)).map_err(io_err(&path))?;
            // Read in chunks, decode whole records.
            let mut buf = Vec::new();
            let want = (seg_bytes - off).min(1 << 20);
            Read::by_ref(&mut f)
                .take(want)
                .read_to_end(&mut buf)
                .map_err(io_err(&path))?;
            let mut pos = 0usize;
            loop {
                if batch.records.len() >= max {
                    break;
                }
                match decode(&buf[pos..]) {
                    Ok(Some((rec, size))) => {
                        pos += size;
                        batch.last_seq = rec.seq;
                        if rec.seq > self.acked && !self.ahead.contains(&rec.seq) {
                            batch.records.push(rec);
                        }
                    }
                    Ok(None) if pos == 0 => {
                        // A record bigger than the chunk: read it whole.
                        let mut hdr = [0u8; 4];
                        hdr.copy_from_slice(buf.get(..4).unwrap_or(&[0; 4]));
                        let len = u32::from_le_bytes(hdr) as usize + HEADER;
                        if len > MAX_RECORD + HEADER || off + len as u64 > seg_bytes {
                            // Cannot happen with a spool we wrote; skip the segment.
                            pos = (seg_bytes - off) as usize;
                            break;
                        }
                        let mut f = File::open(&path).map_err(io_err(&path))?;
                        f.seek(SeekFrom::Start(off)).map_err(io_err(&path))?;
                        buf = vec![0u8; len];
                        f.read_exact(&mut buf).map_err(io_err(&path))?;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!(
                            "spool {}: {e} at {}; skipping the rest",
                            path.display(),
                            off + pos as u64
                        );
                        pos = (seg_bytes - off) as usize;
                        break;
                    }
                }
            }
            off += pos as u64;
            if off >= seg_bytes {
                si += 1;
                off = 0;
            }
        }
        Ok(batch)
    }

    /// Acknowledge every record through `last_seq` (a batch from [`Spool::peek`]): the ack
    /// pointer moves, the file is replaced, fully acknowledged segments are deleted.
    pub fn ack_through(&mut self, last_seq: u64, delivered: usize) -> Result<(), SpoolError> {
        if last_seq <= self.acked {
            return Ok(());
        }
        self.acked = last_seq;
        self.ahead.retain(|s| *s > last_seq);
        self.pending = self.pending.saturating_sub(delivered as u64);
        self.advance_cursor()?;
        self.write_ack()?;
        if self.pending == 0 && self.ahead.is_empty() {
            self.remove_acked_segments(true);
        } else {
            self.remove_acked_segments(false);
        }
        Ok(())
    }

    /// Acknowledge records sent ahead of the backlog (newer than the cursor). Returns false
    /// (and acknowledges nothing) when too many are already remembered: send them in order.
    pub fn ack_ahead(&mut self, seqs: &[u64]) -> Result<bool, SpoolError> {
        if self.ahead.len() + seqs.len() > MAX_AHEAD {
            return Ok(false);
        }
        for s in seqs {
            if *s > self.acked && self.ahead.insert(*s) {
                self.pending = self.pending.saturating_sub(1);
            }
        }
        self.write_ack()?;
        Ok(true)
    }

    /// Room left for acknowledging ahead of the backlog.
    pub fn ahead_room(&self) -> usize {
        MAX_AHEAD.saturating_sub(self.ahead.len())
    }

    fn advance_cursor(&mut self) -> Result<(), SpoolError> {
        // Walk record headers from the cursor while seq <= acked.
        let (mut si, mut off) = self.cursor;
        'segs: while si < self.segments.len() {
            let path = self.segments[si].path.clone();
            let seg_bytes = self.segments[si].bytes;
            let mut f = File::open(&path).map_err(io_err(&path))?;
            while off < seg_bytes {
                let mut hdr = [0u8; HEADER + 8];
                f.seek(SeekFrom::Start(off)).map_err(io_err(&path))?;
                if f.read_exact(&mut hdr).is_err() {
                    break;
                }
                let len = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as u64;
                let mut s = [0u8; 8];
                s.copy_from_slice(&hdr[HEADER..]);
                if u64::from_le_bytes(s) > self.acked {
                    break 'segs;
                }
                off += HEADER as u64 + len;
            }
            si += 1;
            off = 0;
        }
        if si >= self.segments.len() {
            // Everything read: the cursor sits at the end of the last segment.
            let last = self.segments.len().saturating_sub(1);
            self.cursor = (last, self.segments.last().map_or(0, |s| s.bytes));
        } else {
            self.cursor = (si, off);
        }
        Ok(())
    }

    fn write_ack(&mut self) -> Result<(), SpoolError> {
        let ahead: Vec<Value> = self.ahead.iter().map(|s| Value::from(*s)).collect();
        let acked = self.acked;
        self.counted_gaps.retain(|g| g.1 > acked);
        let gaps: Vec<Value> = self
            .counted_gaps
            .iter()
            .map(|g| serde_json::json!([g.0, g.1]))
            .collect();
        let body = serde_json::json!({"acked": self.acked, "ahead": ahead, "gaps": gaps});
        write_atomic(&self.dir.join("ack"), body.to_string().as_bytes(), false)
    }

    /// Flush written records to stable storage (power loss; a process crash needs no sync).
    /// Appends not yet fsynced (an idle spool needs no periodic wake-up).
    pub fn needs_sync(&self) -> bool {
        self.dirty
    }

    pub fn sync(&mut self) -> Result<(), SpoolError> {
        if self.dirty {
            if let Some(w) = &self.writer {
                let path = self
                    .segments
                    .last()
                    .map(|s| s.path.clone())
                    .unwrap_or_default();
                w.sync_data().map_err(io_err(&path))?;
            }
            self.dirty = false;
        }
        Ok(())
    }
}

/// The offset of the next valid record at or after `from` with a seq above `after`. Cheap
/// checks first (a plausible length, seq and JSON start) so that a garbage segment costs a
/// pass over its bytes, not a CRC per offset.
fn resync(buf: &[u8], from: usize, after: u64) -> Option<usize> {
    (from..buf.len().saturating_sub(HEADER + 8)).find(|&p| {
        let b = &buf[p..];
        let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if !(9..=MAX_RECORD).contains(&len) || b.len() < HEADER + len {
            return false;
        }
        let mut sq = [0u8; 8];
        sq.copy_from_slice(&b[HEADER..HEADER + 8]);
        let seq = u64::from_le_bytes(sq);
        seq > after
            && seq - after <= 1 << 32
            && b[HEADER + 8] == b'{'
            && matches!(decode(b), Ok(Some((r, _))) if r.seq == seq)
    })
}

/// Write a file atomically: temp file, rename (a crash leaves the old or the new content).
/// With `durable`, the data is fsynced first (power loss); the ack pointer is not: an older
/// pointer after a power cut only means a resend (at least once), and it saves an fsync per batch.
fn write_atomic(path: &Path, data: &[u8], durable: bool) -> Result<(), SpoolError> {
    let tmp = path.with_extension("tmp");
    // A symlink planted under the temporary's name is removed, never written through.
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(data).map_err(io_err(&tmp))?;
    if durable {
        f.sync_data().map_err(io_err(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_err(path))
}

fn random_id() -> String {
    let mut b = [0u8; 8];
    if File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        b = (t ^ (std::process::id() as u64) << 32).to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(label: &str) -> PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d =
            std::env::temp_dir().join(format!("beacond-spool-{label}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn ev(i: usize) -> Event {
        let mut d = Map::new();
        d.insert("n".into(), Value::from(i));
        d.insert("pad".into(), Value::from("x".repeat(100)));
        Event::from_beacon("m1", if i.is_multiple_of(2) { "even" } else { "odd" }, d)
    }

    fn uids(b: &Batch) -> Vec<String> {
        b.records
            .iter()
            .map(|r| {
                r.event.data[UID_KEY]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn crc32_matches_zlib() {
        // python3 -c 'import zlib;print(zlib.crc32(b"123456789"))'
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn events_survive_a_restart_with_the_same_uid_until_acknowledged() {
        let dir = tmp("restart");
        let mut s = Spool::open(&dir, 1 << 20).expect("open");
        for i in 0..10 {
            s.append(ev(i)).expect("append");
        }
        use std::os::unix::fs::PermissionsExt;
        let seg = s.segments[0].path.clone();
        let mode = fs::metadata(&seg).expect("segment").permissions().mode();
        assert_eq!(mode & 0o077, 0, "the spool is private: {mode:o}");
        let b = s.peek(4).expect("peek");
        assert_eq!(b.records.len(), 4);
        let first = uids(&b);
        s.ack_through(b.last_seq, 4).expect("ack");
        // A batch read but not acknowledged (crash before the master answered).
        let unacked = uids(&s.peek(3).expect("peek"));
        drop(s);
        let mut s = Spool::open(&dir, 1 << 20).expect("reopen");
        assert_eq!(s.pending(), 6);
        let b = s.peek(100).expect("peek");
        assert_eq!(b.records.len(), 6);
        assert_eq!(uids(&b)[..3], unacked[..]);
        assert!(uids(&b).iter().all(|u| !first.contains(u)));
        assert_eq!(b.records[0].event.data["n"], 4);
        // New events continue the sequence.
        let (seq, e) = s.append(ev(10)).expect("append");
        assert_eq!(seq, 11);
        assert_eq!(e.data[UID_KEY], format!("{}-11", s.id()));
        s.ack_through(seq, 7).expect("ack");
        assert!(s.is_empty());
        drop(s);
        let s = Spool::open(&dir, 1 << 20).expect("reopen");
        assert!(s.is_empty());
        assert_eq!(s.next_seq(), 12);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn torn_tail_is_truncated_and_the_spool_goes_on() {
        let dir = tmp("torn");
        let mut s = Spool::open(&dir, 1 << 20).expect("open");
        for i in 0..5 {
            s.append(ev(i)).expect("append");
        }
        let seg = s.segments.last().map(|g| g.path.clone()).expect("segment");
        drop(s);
        // Half a record, as a crash in the middle of a write would leave it.
        let rec = encode(6, &ev(5));
        let mut f = OpenOptions::new()
            .append(true)
            .open(&seg)
            .expect("open seg");
        f.write_all(&rec[..rec.len() / 2]).expect("write");
        drop(f);
        let mut s = Spool::open(&dir, 1 << 20).expect("reopen");
        assert_eq!(s.pending(), 5);
        s.append(ev(5)).expect("append");
        let b = s.peek(100).expect("peek");
        assert_eq!(b.records.len(), 6);
        assert_eq!(b.records[5].event.data["n"], 5);
        // A flipped bit is caught by the CRC: the record and what follows are dropped.
        drop(s);
        let mut bytes = fs::read(&seg).expect("read");
        let last = bytes.len() - 3;
        bytes[last] ^= 0x40;
        fs::write(&seg, &bytes).expect("write");
        let mut s = Spool::open(&dir, 1 << 20).expect("reopen");
        assert_eq!(s.peek(100).expect("peek").records.len(), 5);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_full_spool_drops_the_oldest_and_accounts_for_them() {
        let dir = tmp("full");
        let mut s = Spool::open(&dir, 8192).expect("open");
        let total = 500;
        for i in 0..total {
            s.append(ev(i)).expect("append");
        }
        assert!(s.bytes() <= 8192 + 2048, "spool bytes {}", s.bytes());
        let d = s.take_dropped().expect("dropped");
        assert_eq!(d.count, d.fresh);
        assert!(s.take_dropped().is_none());
        let left = s.peek(usize::MAX).expect("peek");
        assert_eq!(d.count + left.records.len() as u64, total as u64);
        assert_eq!(s.pending(), left.records.len() as u64);
        assert_eq!(d.beacons.values().sum::<u64>(), d.count);
        assert_eq!(
            d.first.as_ref().map(|f| f.1.clone()),
            Some(format!("{}-1", s.id()))
        );
        // The oldest went: what is left is the newest, contiguous.
        assert_eq!(left.records[0].seq, d.count + 1);
        assert_eq!(left.last_seq, total as u64);
        let data = d.to_data();
        assert_eq!(data["count"], d.count);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn events_acknowledged_ahead_are_not_resent_after_a_restart() {
        let dir = tmp("ahead");
        let mut s = Spool::open(&dir, 1 << 20).expect("open");
        for i in 0..10 {
            s.append(ev(i)).expect("append");
        }
        assert!(s.ack_ahead(&[9, 10]).expect("ack ahead"));
        assert_eq!(s.pending(), 8);
        drop(s);
        let mut s = Spool::open(&dir, 1 << 20).expect("reopen");
        assert_eq!(s.pending(), 8);
        let b = s.peek(100).expect("peek");
        assert_eq!(b.records.len(), 8);
        assert_eq!(b.last_seq, 10);
        s.ack_through(b.last_seq, 8).expect("ack");
        assert!(s.is_empty());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn damage_found_at_open_is_cut_out_counted_and_the_rest_kept() {
        let dir = tmp("damage");
        // 1 KiB segments, about 6 records each.
        let mut s = Spool::open(&dir, 1 << 20).expect("open");
        s.segment_max = 1024;
        for i in 0..40 {
            s.append(ev(i)).expect("append");
        }
        let segs: Vec<PathBuf> = s.segments.iter().map(|g| g.path.clone()).collect();
        assert!(segs.len() >= 4, "{} segments", segs.len());
        drop(s);
        // A flipped byte in the second record of the first segment (its CRC fails).
        let mut b = fs::read(&segs[0]).expect("read");
        let (_, first) = decode(&b).expect("decode").expect("record");
        b[first + 20] ^= 0x55;
        fs::write(&segs[0], &b).expect("write");
        // The second segment cut in the middle of its second record.
        let b = fs::read(&segs[1]).expect("read");
        let mut sizes = Vec::new();
        while let Ok(Some((_, n))) = decode(&b[sizes.iter().sum::<usize>()..]) {
            sizes.push(n);
        }
        fs::write(&segs[1], &b[..sizes[0] + 10]).expect("write");
        let per_seg = sizes.len();
        let mut s = Spool::open(&dir, 1 << 20).expect("reopen");
        let d = s.take_dropped().expect("damage reported");
        assert_eq!(d.reason, REASON_DAMAGED);
        // One record of the first segment, all but one of the second.
        assert_eq!(d.count, 1 + (per_seg as u64 - 1), "{d:?}");
        let left = s.peek(usize::MAX).expect("peek");
        assert_eq!(left.records.len() as u64 + d.count, 40);
        assert_eq!(s.pending(), left.records.len() as u64);
        assert_eq!(left.last_seq, 40);
        assert_eq!(d.to_data()["first_uid"], format!("{}-2", s.id()));
        // Cut out for good: the next open finds nothing more.
        drop(s);
        let mut s = Spool::open(&dir, 1 << 20).expect("reopen");
        assert!(s.take_dropped().is_none());
        assert_eq!(s.pending(), left.records.len() as u64);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn decode_rejects_garbage_without_panicking() {
        assert!(decode(&[0xff; 12]).is_err());
        assert!(matches!(decode(&[1, 0]), Ok(None)));
        let mut rec = encode(1, &ev(1));
        let n = rec.len();
        rec[n - 1] ^= 1;
        assert!(decode(&rec).is_err());
    }
}
