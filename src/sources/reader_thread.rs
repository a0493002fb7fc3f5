//! A dedicated thread that reads one kernel source (the proc connector, the eBPF ring buffer)
//! and hands its messages to a beacon in order through a bounded channel. A process that lives
//! a few milliseconds must be read before it exits, even while the agent's own thread is busy
//! with other beacons; when the beacon falls behind, the thread waits, the kernel's buffer fills
//! and the source reports the loss (never silent). Dropping the reader stops and joins the
//! thread.

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use tokio::sync::mpsc::{Receiver, Sender};

/// The receiving end, held by the beacon.
pub struct ReaderThread<M> {
    rx: Option<Receiver<M>>,
    /// The write end of the stop pipe: closing it wakes the thread (POLLHUP).
    stop: Option<OwnedFd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the thread waits on besides its source: the read end of the stop pipe.
pub struct Stop {
    fd: OwnedFd,
}

/// Why `Stop::wait` returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Woke {
    /// The source has something to read.
    Readable,
    /// The timeout passed with nothing to read.
    Timeout,
    /// The reader was dropped: the thread should return.
    Stopped,
}

impl Stop {
    /// Wait until `source` is readable, the reader is dropped, or `timeout` passes. EINTR is
    /// retried.
    pub fn wait(&self, source: BorrowedFd<'_>, timeout: PollTimeout) -> io::Result<Woke> {
        loop {
            let mut fds = [
                PollFd::new(source, PollFlags::POLLIN),
                PollFd::new(self.fd.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, timeout) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
                Ok(0) => return Ok(Woke::Timeout),
                Ok(_) => {
                    if fds[1].revents().is_some_and(|r| !r.is_empty()) {
                        return Ok(Woke::Stopped);
                    }
                    return Ok(Woke::Readable);
                }
            }
        }
    }
}

impl<M: Send + 'static> ReaderThread<M> {
    /// Start thread `name` running `body` with the stop signal and the channel's sending end
    /// (`capacity` messages).
    pub fn spawn<F>(name: &str, capacity: usize, body: F) -> io::Result<Self>
    where
        F: FnOnce(Stop, Sender<M>) + Send + 'static,
    {
        let (stop_r, stop_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || body(Stop { fd: stop_r }, tx))?;
        Ok(ReaderThread {
            rx: Some(rx),
            stop: Some(stop_w),
            thread: Some(thread),
        })
    }
}

impl<M> ReaderThread<M> {
    /// Wait for the next message (None when the thread has ended).
    pub async fn recv(&mut self) -> Option<M> {
        self.rx.as_mut()?.recv().await
    }

    /// The next message if one is queued.
    pub fn try_recv(&mut self) -> Option<M> {
        self.rx.as_mut()?.try_recv().ok()
    }
}

impl<M> Drop for ReaderThread<M> {
    fn drop(&mut self) {
        // Closing the pipe's write end wakes the thread's poll (POLLHUP); closing the channel
        // releases a thread waiting to send.
        self.stop.take();
        self.rx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
