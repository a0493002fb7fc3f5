//! Readers of `/proc`, once each: load averages, `meminfo`, `net/dev` and the process table.
//! They take the text (or the procfs root) so beacons can point them at fixtures; the
//! interpretation (psutil's or Salt's status module's view) stays with the beacon.

use std::path::Path;

/// `/proc/loadavg`: the 1, 5 and 15 minute averages; None if the text is not that.
pub fn loadavg(text: &str) -> Option<[f64; 3]> {
    let mut fields = text.split_whitespace();
    let mut avgs = [0.0f64; 3];
    for slot in &mut avgs {
        *slot = fields.next()?.parse().ok()?;
    }
    Some(avgs)
}

/// One `/proc/meminfo` line: `MemTotal:  1000 kB` → name `MemTotal`, value `1000`, unit `kB`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeminfoField<'a> {
    pub name: &'a str,
    pub value: &'a str,
    pub unit: Option<&'a str>,
}

impl MeminfoField<'_> {
    /// The value in bytes (`kB` fields are KiB, others are counts).
    pub fn bytes(&self) -> Option<f64> {
        let v: f64 = self.value.parse().ok()?;
        Some(if self.unit == Some("kB") {
            v * 1024.0
        } else {
            v
        })
    }
}

/// The fields of `/proc/meminfo`, in order; malformed lines are skipped.
pub fn meminfo(text: &str) -> impl Iterator<Item = MeminfoField<'_>> {
    text.lines().filter_map(|line| {
        let (name, rest) = line.split_once(':')?;
        let mut words = rest.split_whitespace();
        Some(MeminfoField {
            name: name.trim(),
            value: words.next()?,
            unit: words.next(),
        })
    })
}

/// `/proc/meminfo`, read into a buffer kept between reads, so a beacon's idle tick allocates
/// nothing.
pub struct MeminfoFile {
    path: std::path::PathBuf,
    text: String,
    buf: Vec<u8>,
    /// Kept open when it is on procfs, where a read at offset 0 makes the kernel write the file
    /// anew (2 syscalls a tick instead of 6); a stand-in file is opened on every read, as a test
    /// may replace it.
    file: Option<std::fs::File>,
}

impl MeminfoFile {
    pub fn new(path: std::path::PathBuf) -> Self {
        MeminfoFile {
            path,
            text: String::new(),
            buf: Vec::new(),
            file: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read the file again.
    pub fn refresh(&mut self) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let (file, kept) = match self.file.take() {
            Some(f) => (f, true),
            None => (std::fs::File::open(&self.path)?, false),
        };
        self.buf.clear();
        let mut chunk = [0u8; 4096];
        loop {
            let n = file.read_at(&mut chunk, self.buf.len() as u64)?;
            if n == 0 {
                break;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        self.text.clear();
        self.text.push_str(&String::from_utf8_lossy(&self.buf));
        let on_procfs = kept
            || nix::sys::statfs::fstatfs(&file)
                .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC);
        if on_procfs {
            self.file = Some(file);
        }
        Ok(())
    }

    /// A field in bytes, by name (`MemTotal:  16303004 kB` → 16303004 × 1024).
    pub fn field(&self, name: &str) -> Option<f64> {
        meminfo(&self.text).find(|f| f.name == name)?.bytes()
    }
}

/// `/proc/net/dev`'s sixteen counters per interface, in the kernel's column order: receive
/// bytes, packets, errs, drop, fifo, frame, compressed, multicast; transmit bytes, packets, errs,
/// drop, fifo, colls, carrier, compressed. Unparsable counters read as 0.
pub fn net_dev(text: &str) -> Vec<(String, [u64; 16])> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let mut counters = [0u64; 16];
        let mut n = 0;
        for (slot, field) in counters.iter_mut().zip(rest.split_whitespace()) {
            *slot = field.parse().unwrap_or(0);
            n += 1;
        }
        if n == 16 {
            out.push((name.trim().to_owned(), counters));
        }
    }
    out
}

/// The numeric entries of a procfs directory (the pids).
pub fn pids(procfs: &Path) -> std::io::Result<Vec<u32>> {
    Ok(std::fs::read_dir(procfs)?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .collect())
}

/// The kernel's `comm` of a process from `<procfs>/<pid>/stat` (between the first `(` and the
/// last `)`, since a comm may itself contain parentheses). None if the process is gone.
pub fn comm(procfs: &Path, pid: u32) -> Option<String> {
    let stat = std::fs::read(procfs.join(pid.to_string()).join("stat")).ok()?;
    let open = stat.iter().position(|b| *b == b'(')?;
    let close = stat.iter().rposition(|b| *b == b')')?;
    (close > open).then(|| String::from_utf8_lossy(&stat[open + 1..close]).into_owned())
}

/// psutil's `Process.name()` on Linux: the comm, or argv[0]'s base name where the comm (15
/// bytes at most) is a truncation of it.
pub fn process_name(procfs: &Path, pid: u32) -> Option<String> {
    let name = comm(procfs, pid)?;
    if name.len() < 15 {
        return Some(name);
    }
    let cmdline = std::fs::read(procfs.join(pid.to_string()).join("cmdline")).unwrap_or_default();
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let argv0 = String::from_utf8_lossy(argv0);
    let base = argv0.rsplit('/').next().unwrap_or_default();
    if !base.is_empty() && base.starts_with(&name) {
        Some(base.to_owned())
    } else {
        Some(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loadavg_reads_three_averages() {
        assert_eq!(
            loadavg("0.50 1.25 2.00 1/123 4567\n"),
            Some([0.5, 1.25, 2.0])
        );
        assert_eq!(loadavg("0.50 x"), None);
    }

    #[test]
    fn meminfo_keeps_value_and_unit() {
        let f: Vec<_> = meminfo("MemTotal:  1000 kB\nHugePages_Total:  4\nbroken\n").collect();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].bytes(), Some(1024000.0));
        assert_eq!(f[1].unit, None);
        assert_eq!(f[1].bytes(), Some(4.0));
    }

    #[test]
    fn net_dev_skips_headers_and_short_lines() {
        let text = "Inter-|   Receive\n face |bytes\n  lo: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n eth0: 1 2\n";
        let d = net_dev(text);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].0, "lo");
        assert_eq!(d[0].1[8], 9);
    }
}
