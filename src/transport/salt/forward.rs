//! The normal run mode's sender task: events from the beacons' channel, batched, delivered,
//! kept while no master takes them.
//!
//! The [`Backlog`] trait is the seam where a durable on-disk spool replaces the in-memory
//! [`MemQueue`]: `forward_with` only pushes what arrives, asks for the oldest batch, and
//! acknowledges what a master confirmed.

use super::{Masters, TransportError};
use crate::config::minion::MinionOpts;
use crate::event::Event;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::mpsc::Receiver;
use tokio::time::{sleep_until, Instant};
use tracing::{error, info, warn};

/// Events sent in one `_minion_event` at most (keeps requests small and bounded in time).
pub const MAX_BATCH: usize = 500;
/// Events kept in memory while no master takes them; the oldest go first beyond this.
pub const MEM_QUEUE_MAX: usize = 10_000;
/// A batch that the master decrypted and answered, but without the acknowledgement, this
/// many times in a row is dropped (with an error) so that it cannot block every later event.
pub const MAX_REFUSALS: u32 = 3;

/// The master processed the request and answered something else than the acknowledgement.
fn is_refusal(e: &TransportError) -> bool {
    match e {
        TransportError::NotAcknowledged { .. } => true,
        TransportError::AllMasters(all) => !all.is_empty() && all.iter().all(is_refusal),
        _ => false,
    }
}

/// Undelivered events, oldest first.
pub trait Backlog {
    /// Keep an event. Returns how many old events had to be dropped to make room.
    fn push(&mut self, ev: Event) -> usize;
    /// Up to `max` oldest events, not removed.
    fn peek(&mut self, max: usize) -> Vec<Event>;
    /// Remove the `n` oldest events (delivered).
    fn ack(&mut self, n: usize);
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A bounded in-memory backlog.
#[derive(Debug)]
pub struct MemQueue {
    q: VecDeque<Event>,
    max: usize,
}

impl MemQueue {
    pub fn new(max: usize) -> Self {
        MemQueue {
            q: VecDeque::new(),
            max: max.max(1),
        }
    }
}

impl Backlog for MemQueue {
    fn push(&mut self, ev: Event) -> usize {
        let mut dropped = 0;
        while self.q.len() >= self.max {
            self.q.pop_front();
            dropped += 1;
        }
        self.q.push_back(ev);
        dropped
    }
    fn peek(&mut self, max: usize) -> Vec<Event> {
        self.q.iter().take(max).cloned().collect()
    }
    fn ack(&mut self, n: usize) {
        let n = n.min(self.q.len());
        self.q.drain(..n);
    }
    fn len(&self) -> usize {
        self.q.len()
    }
}

/// Run the sender until the channel closes: batch everything ready, deliver, keep what
/// was not delivered (bounded, in memory) and retry with backoff.
pub async fn forward(opts: MinionOpts, rx: Receiver<Event>) {
    let masters = match Masters::new(&opts) {
        Ok(m) => m,
        Err(e) => {
            error!(error = %e, "cannot start the Salt transport: {e}");
            return;
        }
    };
    forward_with(masters, rx, MemQueue::new(MEM_QUEUE_MAX)).await;
}

/// [`forward`] with a given master set and backlog. Returns the backlog at the end (the
/// events it still holds were not delivered).
pub async fn forward_with<B: Backlog>(
    mut masters: Masters,
    mut rx: Receiver<Event>,
    mut backlog: B,
) -> B {
    let mut open = true;
    let mut dropped_total = 0usize;
    let mut failures = 0u32;
    let mut refusals = 0u32;
    loop {
        if backlog.is_empty() {
            if !open {
                return backlog;
            }
            match rx.recv().await {
                Some(ev) => dropped_total += backlog.push(ev),
                None => return backlog,
            }
        }
        // Everything that is ready goes into this round.
        while let Ok(ev) = rx.try_recv() {
            dropped_total += backlog.push(ev);
        }
        if dropped_total > 0 {
            warn!(
                dropped = dropped_total,
                kept = backlog.len(),
                "event backlog full; dropped the oldest events"
            );
            dropped_total = 0;
        }
        let batch = backlog.peek(MAX_BATCH);
        match masters.deliver(&batch).await {
            Ok(()) => {
                backlog.ack(batch.len());
                if failures > 0 {
                    info!(backlog = backlog.len(), "delivering events again");
                }
                failures = 0;
                refusals = 0;
            }
            Err(e) => {
                failures += 1;
                if is_refusal(&e) {
                    refusals += 1;
                    if refusals >= MAX_REFUSALS {
                        error!(
                            events = batch.len(),
                            error = %e,
                            "the master refused this batch {refusals} times; dropping it"
                        );
                        backlog.ack(batch.len());
                        refusals = 0;
                        continue;
                    }
                } else {
                    refusals = 0;
                }
                if !open {
                    warn!(undelivered = backlog.len(), error = %e, "shutting down with undelivered events");
                    return backlog;
                }
                // Wait for the earliest master to be worth trying again, taking new events
                // in meanwhile. The links log their own state changes.
                let floor = Instant::now() + Duration::from_millis(100);
                let wake = masters.next_attempt().unwrap_or(floor).max(floor);
                loop {
                    tokio::select! {
                        _ = sleep_until(wake) => break,
                        ev = rx.recv(), if open => match ev {
                            Some(ev) => dropped_total += backlog.push(ev),
                            None => { open = false; break; }
                        },
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(i: usize) -> Event {
        let mut d = serde_json::Map::new();
        d.insert("i".into(), i.into());
        Event::from_beacon("m", "b", d)
    }

    #[test]
    fn mem_queue_is_bounded_and_drops_oldest() {
        let mut q = MemQueue::new(3);
        for i in 0..3 {
            assert_eq!(q.push(ev(i)), 0);
        }
        assert_eq!(q.push(ev(3)), 1);
        let b = q.peek(10);
        assert_eq!(b.len(), 3);
        assert_eq!(b[0].data["i"], 1);
        q.ack(2);
        assert_eq!(q.len(), 1);
        assert_eq!(q.peek(10)[0].data["i"], 3);
        q.ack(5);
        assert!(q.is_empty());
    }

    #[test]
    fn refusal_needs_an_answer_from_every_master() {
        let refused = TransportError::NotAcknowledged {
            master: "a".into(),
            reply: "{}".into(),
        };
        let down = TransportError::Unreachable {
            master: "b".into(),
            reason: "refused".into(),
        };
        assert!(is_refusal(&refused));
        assert!(!is_refusal(&down));
        assert!(is_refusal(&TransportError::AllMasters(vec![
            refused.clone(),
            refused.clone()
        ])));
        assert!(!is_refusal(&TransportError::AllMasters(vec![
            refused, down
        ])));
    }
}
