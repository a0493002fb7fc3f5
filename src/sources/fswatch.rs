//! Small shared pieces for the file-watching beacons (`inotify`, `btmp`, `wtmp`, `selinux`,
//! `log`, `journald`, `users`, `pkg`, `state_results`): the `inotify` crate's instance awaited
//! through tokio, and durable JSON state files under `BuildContext::state_dir` written atomically
//! (temp file + rename).

use crate::beacons::BeaconError;
use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use tokio::io::unix::AsyncFd;

pub use inotify::{WatchDescriptor, WatchMask, Watches};

/// One inotify event: the watch it belongs to, its mask, the rename cookie, and the name within
/// a watched directory.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    pub wd: i32,
    pub mask: u32,
    pub cookie: u32,
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

/// A non-blocking inotify instance (the `inotify` crate's), registered with tokio on the first
/// wait; the fd and every watch close on drop (reload-safe).
pub struct Inotify {
    owned: Option<inotify::Inotify>,
    registered: Option<AsyncFd<inotify::Inotify>>,
    watches: Watches,
    /// The descriptors `add_watch` handed out by number, for `rm_watch`.
    by_id: HashMap<i32, WatchDescriptor>,
}

impl Inotify {
    pub fn new() -> io::Result<Self> {
        // `init` opens the fd with IN_NONBLOCK | IN_CLOEXEC.
        let owned = inotify::Inotify::init()?;
        Ok(Inotify {
            watches: owned.watches(),
            owned: Some(owned),
            registered: None,
            by_id: HashMap::new(),
        })
    }

    /// The crate's watch handle, for callers that keep `WatchDescriptor`s themselves.
    pub fn watches(&self) -> Watches {
        self.watches.clone()
    }

    /// Watch `path` with `mask`; returns the watch descriptor's number (as events carry it).
    pub fn add_watch(&mut self, path: &Path, mask: u32) -> io::Result<i32> {
        let wd = self.watches.add(path, WatchMask::from_bits_retain(mask))?;
        let id = wd.get_watch_descriptor_id();
        self.by_id.insert(id, wd);
        Ok(id)
    }

    /// Stop watching `wd` (errors ignored: the watch may already be gone with its inode).
    pub fn rm_watch(&mut self, wd: i32) {
        if let Some(wd) = self.by_id.remove(&wd) {
            let _ = self.watches.remove(wd);
        }
    }

    fn inner(&mut self) -> io::Result<&mut inotify::Inotify> {
        match (&mut self.registered, &mut self.owned) {
            (Some(a), _) => Ok(a.get_mut()),
            (None, Some(o)) => Ok(o),
            (None, None) => Err(io::Error::other("inotify fd already closed")),
        }
    }

    /// Wait until events can be read. Must run inside the tokio runtime.
    pub async fn readable(&mut self) -> io::Result<()> {
        if self.registered.is_none() {
            let fd = self
                .owned
                .take()
                .ok_or_else(|| io::Error::other("inotify fd already closed"))?;
            // SAFETY: the `inotify::Inotify` moves into the AsyncFd and owns its fd, closed only
            // when it and every `Watches` clone are dropped (`close` is never called); its
            // `as_raw_fd` always returns that fd, so it stays open and the same for the
            // AsyncFd's whole lifetime.
            let afd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
                .map_err(io::Error::from)?;
            self.registered = Some(afd);
        }
        let Some(afd) = &mut self.registered else {
            return Err(io::Error::other("inotify fd not registered"));
        };
        let mut guard = afd.readable_mut().await?;
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

    /// One read of queued events into `buf`: `WouldBlock` when none is queued.
    pub fn read_batch(&mut self, buf: &mut [u8]) -> io::Result<Vec<WatchEvent>> {
        let events = self.inner()?.read_events(buf)?;
        Ok(events
            .map(|e| WatchEvent {
                wd: e.wd.get_watch_descriptor_id(),
                mask: e.mask.bits(),
                cookie: e.cookie,
                name: e.name.map(|n| n.to_os_string()),
            })
            .collect())
    }

    /// Read every queued event without blocking.
    pub fn drain(&mut self) -> io::Result<Vec<WatchEvent>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match self.read_batch(&mut buf) {
                Ok(batch) if batch.is_empty() => return Ok(out),
                Ok(batch) => out.extend(batch),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::UnexpectedEof
                    ) =>
                {
                    return Ok(out)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
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
