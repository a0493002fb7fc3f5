//! What `checksum: sha256` and `diff: True` add to an event: the file's new hash, and a unified
//! diff against the content beacond saw before.

use std::io::Read;
use std::path::Path;

/// Open a watched file for evidence: never through a symlink (a watched file swapped for a link to
/// `/etc/shadow` must not put the secret in an event), never blocking (a FIFO), regular files only.
/// `Ok(None)`: there, but not a regular file.
fn open_regular(path: &Path) -> std::io::Result<Option<(std::fs::File, std::fs::Metadata)>> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                std::io::Error::other("a symlink: not followed")
            } else {
                e
            }
        })?;
    let meta = file.metadata()?;
    Ok(meta.is_file().then_some((file, meta)))
}

/// SHA-256 of a file, hex; `None` when it cannot be read (deleted, a directory, a symlink, a
/// FIFO, no permission).
pub fn sha256_file(path: &Path) -> Option<String> {
    let (mut file, _) = open_regular(path).ok()??;
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
    Some(hex(hasher.finalize().as_slice()))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

/// The content of a file as diffable text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Text {
    /// UTF-8 text under the size limit.
    Utf8(String),
    /// The file is not there (deleted, or not a regular file).
    Absent,
    /// Not diffable: binary, not UTF-8, too large, unreadable.
    Skipped(String),
}

/// Read a file for `diff`.
pub fn read_text(path: &Path, max: u64) -> Text {
    let (file, meta) = match open_regular(path) {
        Ok(Some(f)) => f,
        Ok(None) => return Text::Absent,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Text::Absent,
        Err(e) => return Text::Skipped(format!("unreadable: {e}")),
    };
    if meta.len() > max {
        return Text::Skipped(format!("larger than diff_max_bytes ({max})"));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    if let Err(e) = file.take(max + 1).read_to_end(&mut bytes) {
        return Text::Skipped(format!("unreadable: {e}"));
    }
    if bytes.len() as u64 > max {
        return Text::Skipped(format!("larger than diff_max_bytes ({max})"));
    }
    if bytes.contains(&0) {
        return Text::Skipped("binary".into());
    }
    match String::from_utf8(bytes) {
        Ok(s) => Text::Utf8(s),
        Err(_) => Text::Skipped("not UTF-8 text".into()),
    }
}

/// A unified diff (`diff -u` style, 3 lines of context) from `old` to `new`.
pub fn unified(path: &str, old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a{path}"), &format!("b{path}"))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_content() {
        let dir = std::env::temp_dir().join(format!("beacond-evidence-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("abc");
        std::fs::write(&f, b"abc").unwrap();
        assert_eq!(
            sha256_file(&f).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(sha256_file(&dir), None);
        std::fs::write(&f, b"a\0b").unwrap();
        assert_eq!(read_text(&f, 100), Text::Skipped("binary".into()));
        std::fs::write(&f, b"hello\n").unwrap();
        assert_eq!(
            read_text(&f, 3),
            Text::Skipped("larger than diff_max_bytes (3)".into())
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unified_diff_shape() {
        let d = unified("/etc/x", "a\nb\nc\n", "a\nB\nc\n");
        assert!(
            d.starts_with("--- a/etc/x\n+++ b/etc/x\n@@ -1,3 +1,3 @@\n"),
            "{d}"
        );
        assert!(d.contains("\n-b\n+B\n"), "{d}");
    }
}
