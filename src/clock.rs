//! The wall clock the bulk-upgrade rules read (rollout windows, bake time, approvals' times).
//!
//! In production it is the system clock. Tests set it to any moment ([`Clock::set`]): time then
//! flows on from there at the system's pace, and every BulkUpgrade is decided again at once, so a
//! window that opens at 09:00 on a Monday can be tested on any day in seconds. Leases and request
//! timeouts keep the real clock: they coordinate with other processes.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use futures::Stream;
use jiff::{SignedDuration, Timestamp};

/// A wall clock that is the system's, shifted by what [`Clock::set`] asked. Clones share it.
#[derive(Clone, Debug)]
pub struct Clock {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// How far ahead of the system clock this clock is, in nanoseconds (±292 years).
    shift_ns: AtomicI64,
    /// Counts the jumps, so whoever decides by this clock can decide again.
    jumps: tokio::sync::watch::Sender<u64>,
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Clock { inner: Arc::new(Inner { shift_ns: AtomicI64::new(0), jumps: tokio::sync::watch::Sender::new(0) }) }
    }

    /// The time now.
    pub fn now(&self) -> Timestamp {
        let now = Timestamp::now();
        let shift = SignedDuration::from_nanos(self.inner.shift_ns.load(Ordering::Relaxed));
        now.checked_add(shift).unwrap_or(now)
    }

    /// Makes it `at` now (time flows on from there), and tells [`Clock::jumps`]' listeners.
    pub fn set(&self, at: Timestamp) {
        let shift = at.duration_since(Timestamp::now()).as_nanos();
        self.inner.shift_ns.store(i64::try_from(shift).unwrap_or(0), Ordering::Relaxed);
        self.inner.jumps.send_modify(|n| *n += 1);
    }

    /// One item each time the clock is set: whatever was decided by the old time is stale.
    pub fn jumps(&self) -> impl Stream<Item = ()> + Send + 'static {
        let mut seen = self.inner.jumps.subscribe();
        seen.mark_unchanged();
        futures::stream::unfold(seen, |mut seen| async move { seen.changed().await.ok().map(|()| ((), seen)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[test]
    fn the_system_clock_is_the_system_time() {
        let before = Timestamp::now();
        let read = Clock::system().now();
        assert!(read >= before && read <= Timestamp::now());
    }

    #[tokio::test]
    async fn a_set_clock_flows_on_from_the_moment_set_and_says_it_jumped() {
        let clock = Clock::system();
        let mut jumps = Box::pin(clock.jumps());
        let monday: Timestamp = "2030-01-07T08:59:00Z".parse().unwrap_or_default();
        clock.clone().set(monday);
        let read = clock.now();
        assert!(read >= monday && read.duration_since(monday) < SignedDuration::from_secs(5), "{read}");
        let jumped = tokio::time::timeout(std::time::Duration::from_secs(5), jumps.next()).await;
        assert_eq!(jumped.ok().flatten(), Some(()));
        let none = tokio::time::timeout(std::time::Duration::from_millis(50), jumps.next()).await;
        assert!(none.is_err(), "one jump, one item: {none:?}");
    }
}
