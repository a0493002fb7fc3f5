//! The normal mode's event path: flood control, the durable spool, paced delivery.
//!
//! One task owns the spool. It takes events from the beacons' bounded channel, passes them
//! through the [`Limiter`], appends them (each gets its `beacond_uid`), and keeps one batch in
//! flight to the master through a [`Deliver`] (the Salt transport's `Masters`, which answers
//! `Ok` only once a master acknowledged the `_minion_event`). Acknowledged records leave the
//! spool; a failed batch stays and is retried when the transport says a master is worth trying.
//!
//! Paced replay: batches hold at most `beacond_replay_batch` events and leave at most at
//! `beacond_replay_rate` events/s. While a backlog drains, up to half of every batch is made
//! of new events (sent ahead of the backlog and remembered in the spool's ack file), so fresh
//! events are not stuck behind an hour of backlog.
//!
//! A batch the master refuses ([`DeliveryError::Refused`]: it processed the load and declined
//! it, so resending the same batch cannot help) is tried [`MAX_REFUSALS`] times, then halved,
//! until the refused event is alone; that one is moved to the [`quarantine`] file and reported
//! as a `beacond/quarantined` event, and the rest of the spool flows again. A master that is
//! away ([`DeliveryError::Unavailable`]) only delays: nothing is quarantined for it.

use super::limit::Limiter;
use super::pace::Pace;
use super::quarantine;
use super::stats::Stats;
use super::store::{Spool, SpoolError};
use super::Options;
use crate::event::Event;
pub use crate::transport::salt::DeliveryError;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

/// Where batches go: a master set, or a test sink.
pub trait Deliver: Send + 'static {
    /// Deliver one batch; `Ok` only when it was acknowledged.
    fn deliver<'a>(
        &'a mut self,
        batch: &'a [Event],
    ) -> Pin<Box<dyn Future<Output = Result<(), DeliveryError>> + Send + 'a>>;
    /// When trying again can succeed (`None`: now).
    fn next_attempt(&self) -> Option<Instant>;
}

impl Deliver for crate::transport::salt::Masters {
    fn deliver<'a>(
        &'a mut self,
        batch: &'a [Event],
    ) -> Pin<Box<dyn Future<Output = Result<(), DeliveryError>> + Send + 'a>> {
        Box::pin(async move {
            crate::transport::salt::Masters::deliver(self, batch)
                .await
                .map_err(DeliveryError::from)
        })
    }
    fn next_attempt(&self) -> Option<Instant> {
        crate::transport::salt::Masters::next_attempt(self)
    }
}

/// Events read from the channel per wake-up at most (keeps timers and replies served).
const DRAIN_MAX: usize = 1024;
/// Spool data is fsynced at most this often (a crashed process loses nothing without it; a
/// power cut loses at most this much).
const SYNC_EVERY: Duration = Duration::from_secs(1);
/// The longest sleep when no timer is due (a bound, not a tick).
const IDLE_WAKE: Duration = Duration::from_secs(3600);
/// Least wait after a failed delivery.
const RETRY_FLOOR: Duration = Duration::from_millis(100);
/// Refusals of the same batch before it is halved (or, alone, quarantined).
pub const MAX_REFUSALS: u32 = 3;
/// Pause after the second quarantine in a row without a delivery in between, doubled for
/// each further one up to [`QUARANTINE_PAUSE_MAX`]: a master that refuses *every* event (its
/// handler broken) is no poison batch, and must not drain the spool into the quarantine.
pub const QUARANTINE_PAUSE: Duration = Duration::from_secs(1);
pub const QUARANTINE_PAUSE_MAX: Duration = Duration::from_secs(300);

/// How long to wait after the `streak`-th quarantine since the last delivery.
fn quarantine_pause(streak: u32) -> Duration {
    match streak {
        0 | 1 => Duration::ZERO,
        n => QUARANTINE_PAUSE
            .saturating_mul(1 << (n - 2).min(16))
            .min(QUARANTINE_PAUSE_MAX),
    }
}

struct InFlight {
    /// Last seq read from the backlog (0: none) and how many backlog events were sent.
    backlog_last: u64,
    backlog_n: usize,
    /// Seqs of new events sent ahead of the backlog.
    ahead: Vec<u64>,
    n: usize,
}

type Reply = Result<(), DeliveryError>;

/// A pipeline that feeds a sink rather than the master: its `beacond/dropped` events name the
/// sink and are also handed to the master's pipeline (a dead sink's own spool is no place to
/// report that it lost events).
pub struct SinkLink {
    pub name: String,
    pub report_to: mpsc::Sender<Event>,
}

/// Run until `rx` is closed and the spool is flushed (or `opts.flush_timeout` passed). Returns
/// the spool (what it still holds is sent by the next run).
pub async fn run<D: Deliver>(
    minion_id: String,
    opts: Options,
    spool: Spool,
    deliver: D,
    rx: mpsc::Receiver<Event>,
    stats: Arc<Stats>,
) -> Spool {
    run_linked(minion_id, opts, spool, deliver, rx, stats, None).await
}

/// [`run`] for a sink's pipeline (`link`), or the master's (`None`).
pub async fn run_linked<D: Deliver>(
    minion_id: String,
    opts: Options,
    mut spool: Spool,
    deliver: D,
    mut rx: mpsc::Receiver<Event>,
    stats: Arc<Stats>,
    link: Option<SinkLink>,
) -> Spool {
    // The transport runs on its own task so that events keep being spooled while a request
    // waits for a master.
    let (req_tx, mut req_rx) = mpsc::channel::<Vec<Event>>(1);
    // The batch comes back with the reply (a refused one may go to the quarantine).
    let (rep_tx, mut rep_rx) = mpsc::channel::<(Reply, Option<Instant>, Vec<Event>)>(1);
    let sender = tokio::spawn(async move {
        let mut deliver = deliver;
        while let Some(batch) = req_rx.recv().await {
            let r = deliver.deliver(&batch).await;
            if rep_tx
                .send((r, deliver.next_attempt(), batch))
                .await
                .is_err()
            {
                break;
            }
        }
    });

    let mut limiter = Limiter::new(opts.rate_per_beacon, opts.rate_global, opts.rate_window);
    let mut open = true;
    let mut inflight: Option<InFlight> = None;
    let mut next_try = Instant::now();
    let mut failures = 0u32;
    let mut pace = Pace::new(opts.replay_rate);
    let mut sent_at = Instant::now();
    // Refusals of the batch at the head, and the batch size while narrowing one down.
    let mut refusals = 0u32;
    let mut batch_cap = opts.replay_batch;
    // While narrowing: the last seq of the refused batch (small batches until it is passed).
    let mut narrow_through = 0u64;
    // Quarantines since the last delivery.
    let mut quarantine_streak = 0u32;
    let mut tokens = opts.replay_batch as f64;
    let mut tokens_at = Instant::now();
    let mut fresh: VecDeque<(u64, Event)> = VecDeque::new();
    let fresh_max = opts.replay_batch * 2;
    let mut window_end = Instant::now() + opts.rate_window;
    let mut status_at =
        (!opts.status_interval.is_zero()).then(|| Instant::now() + opts.status_interval);
    let mut sync_at = Instant::now() + SYNC_EVERY;
    let mut deadline: Option<Instant> = None;
    let mut buf = Vec::with_capacity(DRAIN_MAX);
    // Damage found when the spool was opened.
    report_drops(
        &minion_id,
        &mut spool,
        &mut fresh,
        fresh_max,
        opts.replay_batch,
        &stats,
        link.as_ref(),
    );
    publish(&spool, &stats);
    if !spool.is_empty() {
        tracing::info!(
            pending = spool.pending(),
            bytes = spool.bytes(),
            "spool holds undelivered events from a previous run"
        );
    }

    loop {
        let now = Instant::now();
        // Start a batch when none is in flight, something is pending, and a master is worth
        // trying.
        let mut send_wake: Option<Instant> = None;
        if inflight.is_none() && !spool.is_empty() && now >= next_try {
            let want = (spool.pending() as usize).min(batch_cap);
            tokens = (tokens
                + now.saturating_duration_since(tokens_at).as_secs_f64() * pace.rate())
            .min(opts.replay_batch as f64);
            tokens_at = now;
            // The shutdown flush is not paced: it is bounded by `flush_timeout`, and what it
            // does not deliver waits for the next start.
            if open && tokens + 1e-9 < want as f64 {
                let wait = (want as f64 - tokens) / pace.rate();
                send_wake = Some(now + Duration::from_secs_f64(wait));
            } else {
                tokens -= want as f64;
                match compose(&mut spool, &mut fresh, want) {
                    Ok((batch, f)) if !batch.is_empty() => {
                        inflight = Some(f);
                        sent_at = Instant::now();
                        if req_tx.send(batch).await.is_err() {
                            tracing::error!("the transport task ended");
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!("{e}");
                        next_try = now + Duration::from_secs(1);
                    }
                }
            }
        } else if inflight.is_none() && !spool.is_empty() {
            send_wake = Some(next_try);
        }
        if !open && (spool.is_empty() || deadline.is_some_and(|d| now >= d)) && inflight.is_none() {
            break;
        }
        if let Some(d) = deadline {
            if now >= d {
                tracing::warn!(
                    undelivered = spool.pending(),
                    "flush timeout: leaving the rest in the spool for the next start"
                );
                break;
            }
        }

        // Idle costs no wake-up: the flood-control window matters only while it holds events
        // back (it is rolled when events next arrive), the fsync only after appends.
        let mut wake = now + IDLE_WAKE;
        if limiter.held() > 0 {
            wake = wake.min(window_end);
        }
        if spool.needs_sync() {
            wake = wake.min(sync_at);
        }
        if let Some(s) = status_at {
            wake = wake.min(s);
        }
        if let Some(s) = send_wake {
            wake = wake.min(s);
        }
        if let Some(d) = deadline {
            wake = wake.min(d);
        }

        tokio::select! {
            n = rx.recv_many(&mut buf, DRAIN_MAX), if open => {
                if n == 0 {
                    open = false;
                    deadline = Some(Instant::now() + opts.flush_timeout);
                    // What flood control held back is reported before stopping.
                    if let Some((n, data)) = limiter.close_window(std::time::Instant::now()) {
                        stats.suppressed.fetch_add(n, Relaxed);
                        append(&mut spool, &mut fresh, fresh_max, opts.replay_batch, Event::from_beacon(&minion_id, "beacond", data), &stats);
                    }
                } else {
                    let now_std = std::time::Instant::now();
                    if limiter.held() == 0 && Instant::now() >= window_end {
                        // The window ended while nothing was held (no wake-up for that): a new
                        // one starts with these events.
                        limiter.close_window(now_std);
                        window_end = Instant::now() + opts.rate_window;
                    }
                    for ev in buf.drain(..) {
                        if limiter.admit(&ev, now_std) {
                            append(&mut spool, &mut fresh, fresh_max, opts.replay_batch, ev, &stats);
                        }
                    }
                    report_drops(&minion_id, &mut spool, &mut fresh, fresh_max, opts.replay_batch, &stats, link.as_ref());
                    publish(&spool, &stats);
                }
            }
            rep = rep_rx.recv(), if inflight.is_some() => {
                let Some((result, retry_at, batch)) = rep else {
                    tracing::error!("the transport task ended");
                    break;
                };
                let Some(f) = inflight.take() else { continue };
                match result {
                    Ok(()) => {
                        pace.on_ack(sent_at.elapsed());
                        if let Err(e) = ack(&mut spool, &f) {
                            tracing::error!("{e}");
                        }
                        stats.sent.fetch_add(f.n as u64, Relaxed);
                        if failures > 0 {
                            match &link {
                                Some(l) => tracing::info!(sink = %l.name, backlog = spool.pending(), "sink reachable again; replaying its spool"),
                                None => tracing::info!(backlog = spool.pending(), "master reachable again; replaying the spool"),
                            }
                        }
                        failures = 0;
                        refusals = 0;
                        quarantine_streak = 0;
                        if spool.acked() >= narrow_through {
                            batch_cap = opts.replay_batch;
                        }
                        next_try = Instant::now();
                    }
                    Err(DeliveryError::Refused { reason }) => {
                        refusals += 1;
                        fresh.clear();
                        let floor = Instant::now() + RETRY_FLOOR;
                        next_try = retry_at.unwrap_or(floor).max(floor);
                        if refusals < MAX_REFUSALS {
                            tracing::warn!(events = f.n, refusals, "the master refused a batch; retrying it: {reason}");
                        } else if f.n > 1 {
                            // Find the refused event: the batch's first half goes alone.
                            batch_cap = (f.n / 2).max(1);
                            narrow_through = narrow_through.max(f.backlog_last);
                            refusals = 0;
                            tracing::warn!(events = f.n, next = batch_cap, "the master keeps refusing a batch; narrowing it down: {reason}");
                        } else {
                            refusals = 0;
                            let file = match quarantine::put(spool.dir(), &batch, &reason) {
                                Ok(p) => Some(p),
                                Err(e) => {
                                    tracing::error!("cannot keep the refused event in the quarantine: {e}");
                                    None
                                }
                            };
                            tracing::error!(events = f.n, file = ?file, "the master refused an event {MAX_REFUSALS} times; quarantined it (beacond/quarantined event): {reason}");
                            if let Err(e) = ack(&mut spool, &f) {
                                tracing::error!("{e}");
                            }
                            stats.quarantined.fetch_add(f.n as u64, Relaxed);
                            if spool.acked() >= narrow_through {
                                batch_cap = opts.replay_batch;
                            }
                            let data = quarantine::report_data(&batch, &reason, file.as_deref());
                            append(&mut spool, &mut fresh, fresh_max, opts.replay_batch, Event::from_beacon(&minion_id, "beacond", data), &stats);
                            quarantine_streak += 1;
                            let pause = quarantine_pause(quarantine_streak);
                            if !pause.is_zero() {
                                tracing::error!(quarantined = quarantine_streak, ?pause, "the master refused every event since the last delivery; pausing before the next");
                            }
                            next_try = Instant::now() + pause;
                        }
                    }
                    Err(e) => {
                        pace.on_outage();
                        failures += 1;
                        if failures == 1 {
                            tracing::warn!(pending = spool.pending(), "cannot deliver events (kept in the spool): {e}");
                        } else {
                            tracing::debug!(pending = spool.pending(), "cannot deliver events: {e}");
                        }
                        let floor = Instant::now() + RETRY_FLOOR;
                        next_try = retry_at.unwrap_or(floor).max(floor);
                        // New events go back to the spool order; they are not lost.
                        fresh.clear();
                    }
                }
                publish(&spool, &stats);
            }
            _ = sleep_until(wake) => {
                let now = Instant::now();
                if now >= window_end {
                    if let Some((n, data)) = limiter.close_window(now.into_std()) {
                        stats.suppressed.fetch_add(n, Relaxed);
                        tracing::warn!(suppressed = n, "flood control held back events (summarised in a beacond/suppressed event)");
                        append(&mut spool, &mut fresh, fresh_max, opts.replay_batch, Event::from_beacon(&minion_id, "beacond", data), &stats);
                        report_drops(&minion_id, &mut spool, &mut fresh, fresh_max, opts.replay_batch, &stats, link.as_ref());
                    }
                    window_end = now + opts.rate_window;
                }
                if status_at.is_some_and(|s| now >= s) {
                    publish(&spool, &stats);
                    append(&mut spool, &mut fresh, fresh_max, opts.replay_batch, Event::from_beacon(&minion_id, "beacond", stats.status_data()), &stats);
                    report_drops(&minion_id, &mut spool, &mut fresh, fresh_max, opts.replay_batch, &stats, link.as_ref());
                    status_at = Some(now + opts.status_interval);
                }
                if now >= sync_at {
                    // Losses waiting for a write that succeeds (a full disk with no new events).
                    if spool.has_losses() {
                        report_drops(&minion_id, &mut spool, &mut fresh, fresh_max, opts.replay_batch, &stats, link.as_ref());
                    }
                    if let Err(e) = spool.sync() {
                        tracing::error!("{e}");
                    }
                    sync_at = now + SYNC_EVERY;
                }
                publish(&spool, &stats);
            }
        }
    }
    drop(req_tx);
    sender.abort();
    if let Err(e) = spool.sync() {
        tracing::error!("{e}");
    }
    publish(&spool, &stats);
    spool
}

fn publish(spool: &Spool, stats: &Stats) {
    stats.queue_depth.store(spool.pending(), Relaxed);
    stats.spool_bytes.store(spool.bytes(), Relaxed);
}

/// Append to the spool; false when the event could not be written (counted, and reported by
/// [`report_drops`] once a write succeeds).
fn append(
    spool: &mut Spool,
    fresh: &mut VecDeque<(u64, Event)>,
    fresh_max: usize,
    replay_batch: usize,
    ev: Event,
    stats: &Stats,
) -> bool {
    let backlog = spool.pending() > replay_batch as u64;
    let is_report = ev.beacon == "beacond" && ev.tag.ends_with("/beacond/dropped");
    match spool.append(ev) {
        Ok((seq, ev)) => {
            stats.spooled.fetch_add(1, Relaxed);
            if backlog {
                if fresh.len() >= fresh_max {
                    fresh.pop_front();
                }
                fresh.push_back((seq, ev));
            }
            true
        }
        Err(e) => {
            // Counted at once (the status event), reported once a write succeeds; logged once
            // per run of failures. A report that cannot be written carries its count over.
            if !is_report {
                stats.dropped.fetch_add(1, Relaxed);
            }
            if spool.write_failures() == 1 {
                tracing::error!("events lost: cannot write to the spool (counted, reported in a beacond/dropped event once a write succeeds): {e}");
            } else {
                tracing::debug!("event lost: cannot write to the spool: {e}");
            }
            false
        }
    }
}

/// Events the spool bound removed become a `beacond/dropped` event.
fn report_drops(
    minion_id: &str,
    spool: &mut Spool,
    fresh: &mut VecDeque<(u64, Event)>,
    fresh_max: usize,
    replay_batch: usize,
    stats: &Stats,
    link: Option<&SinkLink>,
) {
    // Bounded: a drop event can itself push an old segment out, at most a few rounds.
    for _ in 0..4 {
        let Some(d) = spool.take_dropped() else {
            return;
        };
        stats.dropped.fetch_add(d.fresh, Relaxed);
        fresh.retain(|(s, _)| *s > spool.acked());
        let mut data = d.to_data();
        if let Some(l) = link {
            data.insert("sink".into(), l.name.clone().into());
        }
        if let Some(l) = link.filter(|_| d.reason.is_empty()) {
            data.insert(
                "reason".into(),
                format!(
                    "sink spool full (beacond_sinks: {}: spool_max_bytes)",
                    l.name
                )
                .into(),
            );
        }
        let ev = Event::from_beacon(minion_id, "beacond", data);
        if let Some(l) = link {
            // Rare (one per drop round); if the master's queue is full the report still is
            // in the sink's own stream and in the status counters.
            if l.report_to.try_send(ev.clone()).is_err() {
                tracing::warn!(sink = %l.name, "cannot hand the sink's drop report to the master pipeline");
            }
        }
        if !append(spool, fresh, fresh_max, replay_batch, ev, stats) {
            // Not writable yet: the report's count waits in the spool for the next try.
            return;
        }
    }
}

/// The next batch: up to half new events (while a backlog drains), the rest oldest first.
fn compose(
    spool: &mut Spool,
    fresh: &mut VecDeque<(u64, Event)>,
    want: usize,
) -> Result<(Vec<Event>, InFlight), SpoolError> {
    let mut batch = Vec::with_capacity(want);
    let mut ahead = Vec::new();
    let backlog_mode = spool.pending() as usize > want;
    if !backlog_mode {
        // The backlog is gone: the spool's order takes over.
        fresh.clear();
    } else {
        fresh.retain(|(s, _)| *s > spool.acked());
        let k = (want / 2).min(fresh.len()).min(spool.ahead_room());
        for (seq, ev) in fresh.drain(..k) {
            ahead.push(seq);
            batch.push(ev);
        }
    }
    let b = spool.peek(want - batch.len())?;
    let mut backlog_n = 0;
    for r in b.records {
        if !ahead.contains(&r.seq) {
            backlog_n += 1;
            batch.push(r.event);
        }
    }
    let n = batch.len();
    if n == 0 {
        // Nothing left to read: the pending count must say so.
        spool.clear_pending();
    }
    Ok((
        batch,
        InFlight {
            backlog_last: b.last_seq,
            backlog_n,
            ahead,
            n,
        },
    ))
}

fn ack(spool: &mut Spool, f: &InFlight) -> Result<(), SpoolError> {
    if f.backlog_last > 0 {
        // New events sent ahead that the backlog read also covered count as delivered here.
        let covered = f.ahead.iter().filter(|s| **s <= f.backlog_last).count();
        spool.ack_through(f.backlog_last, f.backlog_n + covered)?;
    }
    if !f.ahead.is_empty() {
        spool.ack_ahead(&f.ahead)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarantine_pause_grows_and_is_capped() {
        assert_eq!(quarantine_pause(1), Duration::ZERO);
        assert_eq!(quarantine_pause(2), QUARANTINE_PAUSE);
        assert_eq!(quarantine_pause(3), QUARANTINE_PAUSE * 2);
        assert_eq!(quarantine_pause(40), QUARANTINE_PAUSE_MAX);
        assert_eq!(quarantine_pause(u32::MAX), QUARANTINE_PAUSE_MAX);
    }
}
