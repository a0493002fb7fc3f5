//! Small shared pieces for the file-following beacons (`btmp`, `wtmp`, `selinux`, `log`,
//! `journald`, `users`, `pkg`): a
//! non-blocking inotify instance awaited through tokio, and durable JSON state files under
//! `BuildContext::state_dir` written atomically (temp file + rename).

use crate::beacons::BeaconError;
use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use tokio::io::unix::AsyncFd;

/// One inotify event: the watch it belongs to, its mask, and the name within a watched directory.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    pub wd: i32,
    pub mask: u32,
    pub name: Option<OsString>,
}

impl WatchEvent {
    /// The kernel's queue overflowed: events were lost, rescan everything.
    pub fn overflow(&self) -> bool {
        self.mask & libc::IN_Q_OVERFLOW != 0
    }
}

/// Directory events that matter to a file follower: content, creation, removal, rename.
pub const DIR_MASK: u32 = libc::IN_MODIFY
    | libc::IN_CLOSE_WRITE
    | libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_ATTRIB;

/// A non-blocking inotify instance; the fd is closed on drop (reload-safe).
pub struct Inotify {
    owned: Option<OwnedFd>,
    registered: Option<AsyncFd<OwnedFd>>,
}

impl Inotify {
    pub fn new() -> io::Result<Self> {
        // SAFETY: inotify_init1 takes flags only and returns a new fd or -1.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by the kernel and is owned by nothing else.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Inotify {
            owned: Some(owned),
            registered: None,
        })
    }

    fn raw(&self) -> RawFd {
        match (&self.registered, &self.owned) {
            (Some(a), _) => a.get_ref().as_raw_fd(),
            (None, Some(o)) => o.as_raw_fd(),
            (None, None) => -1,
        }
    }

    /// Watch `path` with `mask`; returns the watch descriptor.
    pub fn add_watch(&self, path: &Path, mask: u32) -> io::Result<i32> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
        // SAFETY: `c` is a valid NUL-terminated string that outlives the call; the fd is ours.
        let wd = unsafe { libc::inotify_add_watch(self.raw(), c.as_ptr(), mask) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(wd)
    }

    /// Stop watching `wd` (errors ignored: the watch may already be gone with its inode).
    pub fn rm_watch(&self, wd: i32) {
        // SAFETY: plain syscall on our own fd; an invalid wd only yields EINVAL.
        unsafe { libc::inotify_rm_watch(self.raw(), wd) };
    }

    /// Wait until events can be read. Must run inside the tokio runtime.
    pub async fn readable(&mut self) -> io::Result<()> {
        if self.registered.is_none() {
            let fd = self
                .owned
                .take()
                .ok_or_else(|| io::Error::other("inotify fd already closed"))?;
            // SAFETY: `fd` is an OwnedFd moved into the AsyncFd: it stays open and is the same
            // descriptor until the AsyncFd is dropped, and OwnedFd::as_raw_fd never changes.
            let afd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
                .map_err(io::Error::from)?;
            self.registered = Some(afd);
        }
        let Some(afd) = &self.registered else {
            return Err(io::Error::other("inotify fd not registered"));
        };
        let mut guard = afd.readable().await?;
        // The caller drains everything right after; new events re-arm the edge.
        guard.clear_ready();
        Ok(())
    }

    /// Wait until events are queued, then return them all (an empty list after a spurious
    /// wake-up). Readiness is cleared before draining, so an event that arrives meanwhile
    /// re-arms it instead of being left unnoticed.
    pub async fn wait(&mut self) -> io::Result<Vec<WatchEvent>> {
        self.readable().await?;
        self.drain()
    }

    /// Wait until a batch of events is `relevant` (the batches it rejects are dropped): a
    /// file follower watches a directory but only cares about its own file's name.
    pub async fn wait_until(
        &mut self,
        mut relevant: impl FnMut(&[WatchEvent]) -> bool,
    ) -> io::Result<()> {
        loop {
            let events = self.wait().await?;
            if relevant(&events) {
                return Ok(());
            }
        }
    }

    /// Read every queued event without blocking.
    pub fn drain(&self) -> io::Result<Vec<WatchEvent>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            // SAFETY: `buf` is valid for `buf.len()` writable bytes; the fd is ours.
            let n = unsafe { libc::read(self.raw(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    return Ok(out);
                }
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Ok(out);
            }
            parse_events(&buf[..n as usize], &mut out);
        }
    }
}

/// Decode `struct inotify_event` records (wd i32, mask u32, cookie u32, len u32, name[len]).
fn parse_events(mut b: &[u8], out: &mut Vec<WatchEvent>) {
    const HDR: usize = 16;
    while b.len() >= HDR {
        let word = |i: usize| [b[i], b[i + 1], b[i + 2], b[i + 3]];
        let wd = i32::from_ne_bytes(word(0));
        let mask = u32::from_ne_bytes(word(4));
        let len = u32::from_ne_bytes(word(12)) as usize;
        let end = (HDR + len).min(b.len());
        let raw = &b[HDR..end];
        let name_bytes = &raw[..raw.iter().position(|&c| c == 0).unwrap_or(raw.len())];
        let name = (!name_bytes.is_empty()).then(|| OsString::from_vec(name_bytes.to_vec()));
        out.push(WatchEvent { wd, mask, name });
        b = &b[end..];
    }
}

/// The state file of one beacon instance: `<state_dir>/<kind>-<hash of key>.json`.
pub fn state_path(state_dir: &Path, kind: &str, key: &str) -> PathBuf {
    // FNV-1a: stable across builds and platforms (std's hasher is not).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    state_dir.join(format!("{kind}-{h:016x}.json"))
}

/// Load a state file; a missing or unreadable one is `None` (logged when corrupt).
pub fn load_state(path: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read(path).ok()?;
    match serde_json::from_slice(&text) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!("{}: ignoring corrupt state: {e}", path.display());
            None
        }
    }
}

/// Write a state file atomically (temp file in the same directory, then rename). State can be
/// sensitive (log positions, logins): the directory is made 0700 and the file 0600, whatever the
/// umask, and no symlink is followed: the temporary is created with O_EXCL (a link planted under
/// its name is removed, not written through) and `rename` replaces a link, never its target.
pub fn save_state(path: &Path, value: &serde_json::Value) -> Result<(), BeaconError> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| BeaconError::io(dir, e))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| BeaconError::io(dir, e))?;
    }
    let tmp = path.with_extension("json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .map_err(|e| BeaconError::io(&tmp, e))?;
    f.write_all(value.to_string().as_bytes())
        .map_err(|e| BeaconError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| BeaconError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_packed_events() {
        let mut b = Vec::new();
        for (wd, name) in [(1i32, &b"passwd\0\0"[..]), (2, &b""[..])] {
            b.extend_from_slice(&wd.to_ne_bytes());
            b.extend_from_slice(&libc::IN_MOVED_TO.to_ne_bytes());
            b.extend_from_slice(&0u32.to_ne_bytes());
            b.extend_from_slice(&(name.len() as u32).to_ne_bytes());
            b.extend_from_slice(name);
        }
        let mut out = Vec::new();
        parse_events(&b, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].name.as_deref(), Some(std::ffi::OsStr::new("passwd")));
        assert_eq!(out[1].wd, 2);
        assert!(out[1].name.is_none());
    }
}
