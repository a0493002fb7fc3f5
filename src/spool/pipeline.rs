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

use super::limit::Limiter;
use super::pace::Pace;
use super::stats::Stats;
use super::store::{Spool, SpoolError};
use super::Options;
use crate::event::Event;
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
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;
    /// When trying again can succeed (`None`: now).
    fn next_attempt(&self) -> Option<Instant>;
}

impl Deliver for crate::transport::salt::Masters {
    fn deliver<'a>(
        &'a mut self,
        batch: &'a [Event],
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            crate::transport::salt::Masters::deliver(self, batch)
                .await
                .map_err(|e| e.to_string())
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
/// Least wait after a failed delivery.
const RETRY_FLOOR: Duration = Duration::from_millis(100);

struct InFlight {
    /// Last seq read from the backlog (0: none) and how many backlog events were sent.
    backlog_last: u64,
    backlog_n: usize,
    /// Seqs of new events sent ahead of the backlog.
    ahead: Vec<u64>,
    n: usize,
}

type Reply = Result<(), String>;

/// Run until `rx` is closed and the spool is flushed (or `opts.flush_timeout` passed). Returns
/// the spool (what it still holds is sent by the next run).
pub async fn run<D: Deliver>(
    minion_id: String,
    opts: Options,
    mut spool: Spool,
    deliver: D,
    mut rx: mpsc::Receiver<Event>,
    stats: Arc<Stats>,
) -> Spool {
    // The transport runs on its own task so that events keep being spooled while a request
    // waits for a master.
    let (req_tx, mut req_rx) = mpsc::channel::<Vec<Event>>(1);
    let (rep_tx, mut rep_rx) = mpsc::channel::<(Reply, Option<Instant>)>(1);
    let sender = tokio::spawn(async move {
        let mut deliver = deliver;
        while let Some(batch) = req_rx.recv().await {
            let r = deliver.deliver(&batch).await;
            if rep_tx.send((r, deliver.next_attempt())).await.is_err() {
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
            let want = (spool.pending() as usize).min(opts.replay_batch);
            tokens = (tokens
                + now.saturating_duration_since(tokens_at).as_secs_f64() * pace.rate())
                .min(opts.replay_batch as f64);
            tokens_at = now;
            if tokens + 1e-9 < want as f64 {
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

        let mut wake = window_end.min(sync_at);
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
                    for ev in buf.drain(..) {
                        if limiter.admit(&ev, now_std) {
                            append(&mut spool, &mut fresh, fresh_max, opts.replay_batch, ev, &stats);
                        }
                    }
                    report_drops(&minion_id, &mut spool, &mut fresh, fresh_max, opts.replay_batch, &stats);
                    publish(&spool, &stats);
                }
            }
            rep = rep_rx.recv(), if inflight.is_some() => {
                let Some((result, retry_at)) = rep else {
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
                            tracing::info!(backlog = spool.pending(), "master reachable again; replaying the spool");
                        }
                        failures = 0;
                        next_try = Instant::now();
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
                        report_drops(&minion_id, &mut spool, &mut fresh, fresh_max, opts.replay_batch, &stats);
                    }
                    window_end = now + opts.rate_window;
                }
                if status_at.is_some_and(|s| now >= s) {
                    publish(&spool, &stats);
                    append(&mut spool, &mut fresh, fresh_max, opts.replay_batch, Event::from_beacon(&minion_id, "beacond", stats.status_data()), &stats);
                    report_drops(&minion_id, &mut spool, &mut fresh, fresh_max, opts.replay_batch, &stats);
                    status_at = Some(now + opts.status_interval);
                }
                if now >= sync_at {
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

fn append(
    spool: &mut Spool,
    fresh: &mut VecDeque<(u64, Event)>,
    fresh_max: usize,
    replay_batch: usize,
    ev: Event,
    stats: &Stats,
) {
    let backlog = spool.pending() > replay_batch as u64;
    match spool.append(ev) {
        Ok((seq, ev)) => {
            stats.spooled.fetch_add(1, Relaxed);
            if backlog {
                if fresh.len() >= fresh_max {
                    fresh.pop_front();
                }
                fresh.push_back((seq, ev));
            }
        }
        Err(e) => {
            // Counted and visible in the status event; the error is logged once per event.
            stats.dropped.fetch_add(1, Relaxed);
            tracing::error!("event lost: cannot write to the spool: {e}");
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
) {
    // Bounded: a drop event can itself push an old segment out, at most a few rounds.
    for _ in 0..4 {
        let Some(d) = spool.take_dropped() else {
            return;
        };
        stats.dropped.fetch_add(d.fresh, Relaxed);
        fresh.retain(|(s, _)| *s > spool.acked());
        append(
            spool,
            fresh,
            fresh_max,
            replay_batch,
            Event::from_beacon(minion_id, "beacond", d.to_data()),
            stats,
        );
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
