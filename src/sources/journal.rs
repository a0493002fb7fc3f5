//! systemd journal files read directly: what is needed of systemd's "Journal File Format" (the
//! header, the entry-array chain, ENTRY and DATA objects in regular and compact mode, zstd/lz4
//! compressed DATA payloads with pure-Rust `ruzstd`/`lz4_flex`). xz-compressed payloads
//! (systemd < 246 defaults) are read as None with a warning. A file with incompatible header
//! flags this reader does not know is refused (as journalctl does), and an entry-array chain
//! that does not move forward in the file (corrupt or crafted) ends the read of that file with
//! an error instead of looping. Linking libsystemd instead would tie the static binary to a
//! shared library (and its lz4/zstd/xz/gcrypt dependencies).

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Largest decompressed DATA payload accepted (journald's own default field limit is 64 KiB;
/// coredumps can be larger).
#[cfg(not(fuzzing))]
const MAX_PAYLOAD: usize = 64 * 1024 * 1024;
/// Under the fuzzer (`cargo fuzz` sets `cfg(fuzzing)`): the same code with a smaller bound, so
/// that inputs reaching it stay fast enough to fuzz.
#[cfg(fuzzing)]
const MAX_PAYLOAD: usize = 1024 * 1024;

/// Largest entry accepted (all its fields, decompressed): one small crafted DATA object that
/// decompresses to `MAX_PAYLOAD`, referenced by every item of an entry, must not become
/// thousands of copies in memory.
const MAX_ENTRY: usize = MAX_PAYLOAD;

/// Decompressed bytes read from one file per evaluation at most (then the budget counts as
/// spent: the rest follows in the next evaluation, as after `entries_per_evaluation`).
const BYTES_PER_EVALUATION: usize = 4 * MAX_PAYLOAD;

/// Where a reader is in one file's entry-array chain.
#[derive(Debug, Clone, Copy, Default)]
pub struct FilePos {
    /// The file's ID from its header (an inode number can be reused by a new file).
    pub file_id: [u8; 16],
    /// Entry array being read (0: start at the header's first array).
    pub array: u64,
    /// Next item index in it.
    pub index: u64,
    /// Entries traversed in this file (skip it while the header counts no more).
    pub count: u64,
}

fn le64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

fn le32(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, |a| u64::from(u32::from_le_bytes(a)))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

const OBJECT_DATA: u8 = 1;
const OBJECT_ENTRY: u8 = 3;
const OBJECT_ENTRY_ARRAY: u8 = 6;
const INCOMPAT_COMPACT: u32 = 16;
/// Incompatible header flags this reader knows: compressed XZ (1), LZ4 (2), keyed hash (4),
/// compressed ZSTD (8), compact (16). Others change the format in ways it cannot read.
const INCOMPAT_KNOWN: u32 = 0x1f;
const COMPRESSED_XZ: u8 = 1;
const COMPRESSED_LZ4: u8 = 2;
const COMPRESSED_ZSTD: u8 = 4;

/// One open journal file.
pub struct Journal {
    pub file: File,
    pub path: PathBuf,
    compact: bool,
    pub file_id: [u8; 16],
    pub seqnum_id: String,
    pub n_entries: u64,
    entry_array_offset: u64,
    pub tail_seqnum: u64,
    /// When its first entry was written (µs since the epoch): orders rotated files.
    pub head_realtime: u64,
    /// Everything before the last object (as of opening) is fully written: ENTRY and DATA
    /// objects there are read through a small block cache (far fewer syscalls on catch-up).
    /// Entry arrays, whose items are filled in place, are always read from the file.
    stable_end: u64,
    cache: std::cell::RefCell<HashMap<u64, Vec<u8>>>,
}

const BLOCK: u64 = 64 * 1024;
const CACHE_BLOCKS: usize = 32;

/// One entry as read.
pub struct Entry {
    /// Its fields' bytes (names and values, decompressed).
    pub size: usize,
    pub seqnum_id: String,
    pub seqnum: u64,
    pub realtime: u64,
    pub monotonic: u64,
    pub boot_id: String,
    pub xor_hash: u64,
    pub fields: Vec<(String, Option<Vec<u8>>)>,
}

impl Journal {
    pub fn open(path: &Path) -> Result<Journal, String> {
        let file = File::open(path).map_err(|e| e.to_string())?;
        let mut h = [0u8; 272];
        let n = file.read_at(&mut h, 0).map_err(|e| e.to_string())?;
        if n < 240 || &h[..8] != b"LPKSHHRH" {
            return Err("not a journal file".into());
        }
        let incompat = le32(&h, 12) as u32;
        if incompat & !INCOMPAT_KNOWN != 0 {
            return Err(format!(
                "unsupported journal format: incompatible header flags {:#x} unknown to beacond (written by a newer systemd?); not reading this file",
                incompat & !INCOMPAT_KNOWN
            ));
        }
        Ok(Journal {
            path: path.to_path_buf(),
            compact: incompat & INCOMPAT_COMPACT != 0,
            file_id: h[24..40].try_into().unwrap_or_default(),
            seqnum_id: hex(&h[72..88]),
            n_entries: le64(&h, 152),
            tail_seqnum: le64(&h, 160),
            head_realtime: le64(&h, 184),
            entry_array_offset: le64(&h, 176),
            stable_end: le64(&h, 136),
            cache: std::cell::RefCell::new(HashMap::new()),
            file,
        })
    }

    /// An object's type, flags and whole bytes (header included).
    /// An immutable object (ENTRY, DATA) through the block cache when it lies in one block of
    /// the stable region; from the file otherwise.
    fn stable_object(&self, offset: u64) -> Result<(u8, u8, Vec<u8>), String> {
        let block = offset / BLOCK;
        let start = block * BLOCK;
        if start + BLOCK > self.stable_end {
            return self.object(offset);
        }
        let mut cache = self.cache.borrow_mut();
        if !cache.contains_key(&block) {
            if cache.len() >= CACHE_BLOCKS {
                cache.clear();
            }
            let mut buf = vec![0u8; BLOCK as usize];
            self.file
                .read_exact_at(&mut buf, start)
                .map_err(|e| format!("block at {start}: {e}"))?;
            cache.insert(block, buf);
        }
        let Some(b) = cache.get(&block) else {
            return self.object(offset);
        };
        let at = (offset - start) as usize;
        let size = le64(b, at + 8) as usize;
        match b.get(at..at.saturating_add(size)) {
            Some(obj) if size >= 16 => Ok((obj[0], obj[1], obj.to_vec())),
            // Crosses the block's end (or is malformed): read it directly.
            _ => {
                drop(cache);
                self.object(offset)
            }
        }
    }

    fn object(&self, offset: u64) -> Result<(u8, u8, Vec<u8>), String> {
        // Most objects are small: one read usually gets the whole of it.
        let mut buf = vec![0u8; 512];
        let got = self
            .file
            .read_at(&mut buf, offset)
            .map_err(|e| format!("object at {offset}: {e}"))?;
        if got < 16 {
            return Err(format!("object at {offset}: past the end of the file"));
        }
        let (kind, flags) = (buf[0], buf[1]);
        let size = le64(&buf, 8) as usize;
        if !(16..=MAX_PAYLOAD).contains(&size) {
            return Err(format!("object at {offset}: bad size {size}"));
        }
        if size <= got {
            buf.truncate(size);
        } else {
            buf.resize(size, 0);
            self.file
                .read_exact_at(&mut buf[got..], offset + got as u64)
                .map_err(|e| format!("object at {offset}: {e}"))?;
        }
        Ok((kind, flags, buf))
    }

    /// A DATA object's field name and value, decompressed up to `limit` bytes.
    fn data(&self, offset: u64, limit: usize) -> Result<(String, Option<Vec<u8>>), String> {
        let (kind, flags, buf) = self.stable_object(offset)?;
        if kind != OBJECT_DATA {
            return Err(format!("object at {offset} is not DATA"));
        }
        let start = if self.compact { 72 } else { 64 };
        let raw = buf.get(start..).unwrap_or_default();
        let payload = if flags & COMPRESSED_ZSTD != 0 {
            let mut out = Vec::new();
            ruzstd::decoding::StreamingDecoder::new(raw)
                .map_err(|e| format!("zstd: {e}"))?
                .take(limit as u64)
                .read_to_end(&mut out)
                .map_err(|e| format!("zstd: {e}"))?;
            Some(out)
        } else if flags & COMPRESSED_LZ4 != 0 {
            let size = (le64(raw, 0) as usize).min(limit);
            Some(
                lz4_flex::decompress(raw.get(8..).unwrap_or_default(), size)
                    .map_err(|e| format!("lz4: {e}"))?,
            )
        } else if flags & COMPRESSED_XZ != 0 {
            None
        } else {
            Some(raw.to_vec())
        };
        match payload {
            Some(p) => {
                let eq = p.iter().position(|&c| c == b'=').unwrap_or(p.len());
                let name = String::from_utf8_lossy(&p[..eq]).into_owned();
                let value = p.get(eq + 1..).unwrap_or_default().to_vec();
                Ok((name, Some(value)))
            }
            // The field name is inside the compressed payload too: unknown.
            None => Ok(("__XZ_COMPRESSED".into(), None)),
        }
    }

    /// The entry at `offset`, unless its sequence number is at most `seen` (then its DATA
    /// objects are not read at all).
    fn entry(&self, offset: u64, seen: Option<u64>) -> Result<Option<Entry>, String> {
        let (kind, _, buf) = self.stable_object(offset)?;
        if kind != OBJECT_ENTRY || buf.len() < 64 {
            return Err(format!("object at {offset} is not an ENTRY"));
        }
        if seen.is_some_and(|s| le64(&buf, 16) <= s) {
            return Ok(None);
        }
        let mut fields = Vec::new();
        let mut size = 0usize;
        let step = if self.compact { 4 } else { 16 };
        let mut at = 64;
        while at + step <= buf.len() {
            let off = if self.compact {
                le32(&buf, at)
            } else {
                le64(&buf, at)
            };
            at += step;
            if off == 0 {
                continue;
            }
            // One byte more than the entry may still take: enough to tell it is too large.
            let limit = (MAX_ENTRY + 1 - size).min(MAX_PAYLOAD);
            let (name, value) = self.data(off, limit)?;
            size += name.len() + value.as_ref().map_or(0, Vec::len);
            if size > MAX_ENTRY {
                return Err(format!(
                    "entry at {offset}: fields larger than {MAX_ENTRY} bytes (corrupt file)"
                ));
            }
            if value.is_none() {
                tracing::warn!(
                    "{}: an xz-compressed field cannot be read (no lean xz decoder)",
                    self.path.display()
                );
            }
            fields.push((name, value));
        }
        Ok(Some(Entry {
            size,
            seqnum_id: self.seqnum_id.clone(),
            seqnum: le64(&buf, 16),
            realtime: le64(&buf, 24),
            monotonic: le64(&buf, 32),
            boot_id: hex(&buf[40..56]),
            xor_hash: le64(&buf, 56),
            fields,
        }))
    }

    fn entry_seqnum(&self, offset: u64) -> Result<u64, String> {
        let mut b = [0u8; 24];
        self.file
            .read_exact_at(&mut b, offset)
            .map_err(|e| format!("entry at {offset}: {e}"))?;
        Ok(le64(&b, 16))
    }

    /// Entries from `pos` on with a sequence number above `seen`, one by one to `each`;
    /// advances `pos`. Whole arrays of already-seen entries are skipped by looking at their last
    /// entry only (the arrays double in size: a large file costs a few reads).
    /// At most `*budget` entries are read (it is decremented); `pos` then says where to go on.
    pub fn read_from(
        &self,
        pos: &mut FilePos,
        seen: Option<u64>,
        budget: &mut u64,
        each: &mut dyn FnMut(Entry),
    ) -> Result<(), String> {
        if pos.array == 0 {
            pos.array = self.entry_array_offset;
            pos.index = 0;
        }
        let step: u64 = if self.compact { 4 } else { 8 };
        let mut bytes = 0usize;
        while pos.array != 0 {
            let (kind, _, buf) = self.object(pos.array)?;
            if kind != OBJECT_ENTRY_ARRAY {
                return Err(format!("object at {} is not an ENTRY_ARRAY", pos.array));
            }
            let n = (buf.len() as u64).saturating_sub(24) / step;
            let item = |i: u64| {
                let at = (24 + i * step) as usize;
                if self.compact {
                    le32(&buf, at)
                } else {
                    le64(&buf, at)
                }
            };
            if let Some(seen) = seen {
                // The last filled item: if even that entry was seen, skip up to it.
                if let Some(last) = (pos.index..n).rev().find(|&i| item(i) != 0) {
                    if self.entry_seqnum(item(last))? <= seen {
                        pos.count += last + 1 - pos.index;
                        pos.index = last + 1;
                    }
                }
            }
            while pos.index < n {
                if *budget == 0 {
                    return Ok(());
                }
                let off = item(pos.index);
                if off == 0 {
                    // Not written yet: continue here next time.
                    return Ok(());
                }
                *budget -= 1;
                let entry = self.entry(off, seen)?;
                pos.index += 1;
                pos.count += 1;
                if let Some(e) = entry {
                    bytes += e.size;
                    each(e);
                    if bytes >= BYTES_PER_EVALUATION {
                        *budget = 0;
                        return Ok(());
                    }
                }
            }
            let next = le64(&buf, 16);
            if next == 0 {
                return Ok(());
            }
            // journald appends arrays: each one lies after the previous. Anything else is a
            // corrupt or crafted chain (a cycle would loop forever).
            if next <= pos.array {
                return Err(format!(
                    "entry-array chain goes back from {} to {next} (corrupt file); stopped reading it",
                    pos.array
                ));
            }
            pos.array = next;
            pos.index = 0;
        }
        Ok(())
    }
}
