//! The replay pace: how many events per second one agent sends while a backlog drains.
//!
//! AIMD, as TCP does for its window: every acknowledged batch whose answer came back about
//! as fast as the master's usual answer time raises the rate by a sixteenth of the ceiling
//! (`beacond_replay_rate`); an answer that took more than twice the usual time plus 50 ms
//! halves it (down to a sixty-fourth of the ceiling). After an outage the pace starts at a
//! quarter of the ceiling, so thousands of agents replaying at once ramp up instead of
//! arriving at full speed on a master that just came back.
//!
//! The usual answer time is the fastest recent one: it follows a faster master at once and
//! a slower one by 1/32 of the gap per answer, so a master that is permanently slower
//! becomes the new normal instead of keeping every agent throttled.

use std::time::Duration;

/// Added to twice the usual answer time before an answer counts as slow (absorbs scheduler
/// noise on a master answering in a few milliseconds).
const SLOW_MARGIN: Duration = Duration::from_millis(50);

#[derive(Debug, Clone)]
pub struct Pace {
    ceiling: f64,
    floor: f64,
    rate: f64,
    usual: Option<Duration>,
}

impl Pace {
    /// A pace at the ceiling `max_rate` (events/s).
    pub fn new(max_rate: f64) -> Self {
        let ceiling = max_rate.max(1e-3);
        Pace {
            ceiling,
            floor: (ceiling / 64.0).max(1e-3),
            rate: ceiling,
            usual: None,
        }
    }

    /// Events per second allowed now.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// A batch was acknowledged after `answer` (request sent → reply received).
    pub fn on_ack(&mut self, answer: Duration) {
        let usual = *self.usual.get_or_insert(answer);
        if answer > usual * 2 + SLOW_MARGIN {
            self.rate = (self.rate / 2.0).max(self.floor);
            tracing::debug!(
                answer_ms = answer.as_millis() as u64,
                usual_ms = usual.as_millis() as u64,
                rate = self.rate,
                "master answers slowly; replay pace halved"
            );
        } else {
            self.rate = (self.rate + self.ceiling / 16.0).min(self.ceiling);
        }
        self.usual = Some(if answer < usual {
            answer
        } else {
            usual + (answer - usual) / 32
        });
    }

    /// A delivery failed (master down): the next replay starts slowly.
    pub fn on_outage(&mut self) {
        self.rate = (self.ceiling / 4.0).max(self.floor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn halves_on_slow_answers_and_climbs_back() {
        let mut p = Pace::new(1000.0);
        for _ in 0..5 {
            p.on_ack(10 * MS);
        }
        assert_eq!(p.rate(), 1000.0);
        p.on_ack(400 * MS);
        assert_eq!(p.rate(), 500.0);
        p.on_ack(400 * MS);
        assert_eq!(p.rate(), 250.0);
        for _ in 0..20 {
            p.on_ack(10 * MS);
        }
        assert_eq!(p.rate(), 1000.0);
    }

    #[test]
    fn never_below_the_floor_and_slow_start_after_outage() {
        let mut p = Pace::new(1000.0);
        p.on_ack(10 * MS);
        for _ in 0..20 {
            p.on_ack(5000 * MS);
        }
        assert!(p.rate() >= 1000.0 / 64.0);
        p.on_outage();
        assert_eq!(p.rate(), 250.0);
    }

    #[test]
    fn a_permanently_slower_master_becomes_normal() {
        let mut p = Pace::new(1000.0);
        p.on_ack(10 * MS);
        for _ in 0..400 {
            p.on_ack(300 * MS);
        }
        assert_eq!(p.rate(), 1000.0);
    }
}
