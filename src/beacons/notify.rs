//! A minimal kernel inotify handle for beacons that follow a few files (`btmp`, `wtmp`,
//! `selinux`): watch the files' directories, await readability on tokio, drain the events.
//!
//! Built on `libc` directly rather than a crate: three syscalls and one record layout.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use tokio::io::unix::AsyncFd;

/// One inotify event: the watch it came from, its mask, and the name (for directory watches).
#[derive(Debug, Clone)]
pub struct Event {
    pub wd: i32,
    pub mask: u32,
    pub name: OsString,
}

/// An inotify instance (non-blocking, close-on-exec). Dropping it closes the fd and so removes
/// every watch.
pub struct Inotify {
    fd: Option<OwnedFd>,
    async_fd: Option<AsyncFd<OwnedFd>>,
}

impl Inotify {
    pub fn new() -> io::Result<Self> {
        // SAFETY: inotify_init1 takes only flags and returns a new fd or -1.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a freshly created fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Inotify {
            fd: Some(fd),
            async_fd: None,
        })
    }

    fn raw(&self) -> i32 {
        match (&self.fd, &self.async_fd) {
            (Some(fd), _) => fd.as_raw_fd(),
            (None, Some(a)) => a.get_ref().as_raw_fd(),
            (None, None) => -1,
        }
    }

    /// Add (or update) a watch; returns the watch descriptor.
    pub fn add_watch(&self, path: &Path, mask: u32) -> io::Result<i32> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
        // SAFETY: the fd is a live inotify fd owned by self and `c` is a valid NUL-terminated
        // string that outlives the call.
        let wd = unsafe { libc::inotify_add_watch(self.raw(), c.as_ptr(), mask) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(wd)
    }

    /// Read every queued event without blocking (an empty list when there are none).
    pub fn read_events(&self) -> io::Result<Vec<Event>> {
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            // SAFETY: `buf` is a writable buffer of the length passed; the fd is owned by self.
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
            let n = n as usize;
            if n == 0 {
                return Ok(out);
            }
            parse_events(&buf[..n], &mut out);
        }
    }

    /// Wait until events are queued (needs a tokio runtime), then return them all. Spurious
    /// wake-ups return an empty list.
    pub async fn wait(&mut self) -> io::Result<Vec<Event>> {
        if self.async_fd.is_none() {
            if let Some(fd) = self.fd.take() {
                // SAFETY: the OwnedFd is moved into the AsyncFd, which owns it from now on; it is
                // neither closed nor replaced while registered.
                let afd =
                    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)? };
                self.async_fd = Some(afd);
            }
        }
        let Some(afd) = &self.async_fd else {
            return Err(io::Error::other("inotify fd is closed"));
        };
        let mut guard = afd.readable().await?;
        let events = self.read_events()?;
        guard.clear_ready();
        Ok(events)
    }
}

fn parse_events(buf: &[u8], out: &mut Vec<Event>) {
    const HDR: usize = 16; // wd i32, mask u32, cookie u32, len u32
    let mut i = 0;
    while i + HDR <= buf.len() {
        let word = |o: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&buf[i + o..i + o + 4]);
            b
        };
        let wd = i32::from_ne_bytes(word(0));
        let mask = u32::from_ne_bytes(word(4));
        let len = u32::from_ne_bytes(word(12)) as usize;
        let end = (i + HDR + len).min(buf.len());
        let raw_name = &buf[i + HDR..end];
        let name_len = raw_name
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(raw_name.len());
        out.push(Event {
            wd,
            mask,
            name: OsString::from_vec(raw_name[..name_len].to_vec()),
        });
        i = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_a_file_created_in_a_watched_dir() {
        let dir = std::env::temp_dir().join(format!("beacond-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let ino = Inotify::new().expect("inotify");
        ino.add_watch(&dir, libc::IN_CREATE).expect("watch");
        std::fs::write(dir.join("x"), b"1").expect("write");
        let events = ino.read_events().expect("read");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(events
            .iter()
            .any(|e| e.name == "x" && e.mask & libc::IN_CREATE != 0));
    }
}
