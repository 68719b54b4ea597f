//! A circuit breaker for the platform: after [`Breaker::THRESHOLD`] failures in a row (5xx answers,
//! the gateway unreachable, `TOO_MANY_REQUESTS`), requests stop going out for a while (1 s, doubling to
//! [`Breaker::MAX_OPEN`]); then one probe is let through, and its answer closes the breaker or
//! opens it again for longer. While it is open, calls fail at once with `Unavailable`, so
//! reconciles free their slots and back off per object instead of all waiting out their retries
//! against a platform that is down. Hand-written: the well-known crates for this (failsafe,
//! tower's retry budget) either bring a runtime model of their own or count differently from the
//! per-call retries the adapter already does; this is forty lines.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct State {
    /// Failures in a row.
    failures: u32,
    /// How often it opened in a row (the next open lasts longer).
    opened: u32,
    /// Open until then.
    open_until: Option<Instant>,
    /// A probe is out (half-open): others wait for its answer.
    probing: bool,
}

/// See the module doc.
#[derive(Debug, Default)]
pub struct Breaker {
    state: Mutex<State>,
}

impl Breaker {
    /// Failures in a row that open the breaker.
    pub const THRESHOLD: u32 = 10;
    /// The first open period; it doubles each time a probe fails.
    pub const MIN_OPEN: Duration = Duration::from_secs(1);
    /// The longest open period.
    pub const MAX_OPEN: Duration = Duration::from_secs(10);

    /// Whether a request may go out at `now`; if not, how long until the next probe.
    pub fn admit(&self, now: Instant) -> Result<(), Duration> {
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match s.open_until {
            None => Ok(()),
            Some(until) if now < until => Err(until - now),
            Some(_) if s.probing => Err(Self::MIN_OPEN),
            Some(_) => {
                s.probing = true;
                Ok(())
            }
        }
    }

    /// A request was answered (any answer but a 5xx or no answer at all): closes the breaker.
    /// Answers whether it was open.
    pub fn succeeded(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let was_open = s.open_until.is_some();
        *s = State::default();
        was_open
    }

    /// A request failed (5xx, unreachable) at `now`. Answers how long the breaker opens, if it
    /// does now.
    pub fn failed(&self, now: Instant) -> Option<Duration> {
        self.failed_holding(now, None)
    }

    /// The platform answered `TOO_MANY_REQUESTS` at `now`, asking to wait `retry_after`: a failure
    /// in a row like any, but when it opens the breaker, it opens for what the platform asked
    /// (at least [`Breaker::MIN_OPEN`], at most [`Breaker::MAX_OPEN`]), not for longer each time:
    /// the platform is up, and says when to come back.
    pub fn rate_limited(&self, now: Instant, retry_after: Option<Duration>) -> Option<Duration> {
        let hold = retry_after.unwrap_or(Self::MIN_OPEN).clamp(Self::MIN_OPEN, Self::MAX_OPEN);
        self.failed_holding(now, Some(hold))
    }

    fn failed_holding(&self, now: Instant, hold: Option<Duration>) -> Option<Duration> {
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        s.failures = s.failures.saturating_add(1);
        let probe_failed = s.probing;
        s.probing = false;
        if s.failures < Self::THRESHOLD && !probe_failed {
            return None;
        }
        let open = match hold {
            Some(hold) => hold,
            None => {
                let open = Self::MIN_OPEN.saturating_mul(1u32 << s.opened.min(10)).min(Self::MAX_OPEN);
                s.opened = s.opened.saturating_add(1);
                open
            }
        };
        s.open_until = Some(now + open);
        Some(open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limiting_in_a_row_opens_it_for_what_the_platform_asked_not_longer_each_time() {
        let b = Breaker::default();
        let t0 = Instant::now();
        for _ in 0..Breaker::THRESHOLD - 1 {
            assert_eq!(b.rate_limited(t0, Some(Duration::from_secs(2))), None);
        }
        assert_eq!(b.rate_limited(t0, Some(Duration::from_secs(2))), Some(Duration::from_secs(2)));
        assert!(b.admit(t0 + Duration::from_secs(2)).is_ok(), "a probe once the platform's wait is over");
        assert_eq!(b.rate_limited(t0, None), Some(Breaker::MIN_OPEN), "a limited probe: the same hold again");
        assert!(b.admit(t0 + Duration::from_secs(1)).is_ok());
        assert_eq!(b.rate_limited(t0, Some(Duration::from_secs(300))), Some(Breaker::MAX_OPEN), "at most MAX_OPEN");
        assert!(b.succeeded(), "an answer closes it");
    }

    #[test]
    fn it_opens_after_failures_in_a_row_probes_once_and_closes_on_an_answer() {
        let b = Breaker::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        for _ in 0..Breaker::THRESHOLD - 1 {
            assert_eq!(b.failed(at(0)), None);
        }
        assert!(!b.succeeded(), "an answer resets the count; it was not open");
        for _ in 0..Breaker::THRESHOLD - 1 {
            assert_eq!(b.failed(at(0)), None);
            assert!(b.admit(at(0)).is_ok());
        }
        assert_eq!(b.failed(at(0)), Some(Duration::from_secs(1)), "the tenth failure in a row opens it");
        assert_eq!(b.admit(at(400)), Err(Duration::from_millis(600)));
        assert!(b.admit(at(1000)).is_ok(), "one probe after the open period");
        assert!(b.admit(at(1001)).is_err(), "only one probe at a time");
        assert_eq!(b.failed(at(1100)), Some(Duration::from_secs(2)), "a failed probe opens it for longer");
        assert!(b.admit(at(2000)).is_err());
        assert!(b.admit(at(3100)).is_ok());
        assert_eq!(b.failed(at(3100)), Some(Duration::from_secs(4)));
        assert!(b.admit(at(7100)).is_ok());
        assert!(b.succeeded(), "the probe was answered: closed");
        assert!(b.admit(at(7101)).is_ok());
        assert_eq!(b.failed(at(7200)), None, "counting starts again");
    }

    #[test]
    fn the_open_period_is_bounded() {
        let b = Breaker::default();
        let mut now = Instant::now();
        let mut last = Duration::ZERO;
        for _ in 0..Breaker::THRESHOLD + 40 {
            if let Some(open) = b.failed(now) {
                last = open;
                now += open;
                assert!(b.admit(now).is_ok());
            }
        }
        assert_eq!(last, Breaker::MAX_OPEN);
    }
}
