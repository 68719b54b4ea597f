//! A client-side rate limit per account: a token bucket (governor's GCRA, which admits what a
//! token bucket of the same rate and size does) for every account forgeops acts as, so many
//! reconciles at once meet the platform's limits in forgeops' queue, not as `TOO_MANY_REQUESTS`.
//!
//! Two limits per account: a bucket for every gateway request, whose rate the platform does not
//! document (so none is set unless asked for: `--platform-rate`), and a window for the App metrics
//! API, documented at five calls a minute per user (`--platform-metrics-rate`, default `5/m`).
//! The metrics limit is a sliding window, not a bucket: a bucket of five refilled at one per 12 s
//! admits six calls within a minute (five at once, one 12 s later), which a platform that counts
//! calls per minute refuses. [`Window`] admits at most `count` calls in any `per` (and a margin),
//! hand-written because governor offers only GCRA. The
//! platform limits per user, so the bucket is the account's (its e-mail), whichever Secret holds
//! its token; the time spent waiting is counted per Secret (`namespace/name`), never by e-mail.

use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// A rate: `count` requests a `per`, in bursts of up to `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub count: NonZeroU32,
    pub per: Duration,
}

impl Rate {
    /// The App metrics API's documented limit: five calls a minute per user.
    pub const METRICS: Rate = Rate { count: NonZeroU32::MIN.saturating_add(4), per: Duration::from_secs(60) };

    fn quota(self) -> Option<Quota> {
        Quota::with_period(self.per / self.count.get()).map(|q| q.allow_burst(self.count))
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "m",
            3600 => "h",
            _ => return write!(f, "{}/{}s", self.count, self.per.as_secs()),
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// `N/s`, `N/m` or `N/h` (`N` at least 1).
impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a rate: write requests per unit, as `20/s`, `300/m` or `5000/h`");
        let (count, unit) = s.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let count = NonZeroU32::new(count).ok_or_else(|| format!("{s:?}: a rate needs at least one request"))?;
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        Ok(Rate { count, per })
    }
}

/// Which bucket an operation draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Any gateway request.
    Gateway,
    /// The App metrics API (`forgeMetrics`), also a gateway request.
    Metrics,
}

impl Class {
    /// The bucket of an operation: the metrics API's operations name metrics.
    pub fn of(operation: &str) -> Class {
        if operation.contains("Metrics") { Class::Metrics } else { Class::Gateway }
    }
}

/// See the module doc.
pub struct Limiter {
    gateway: Option<DefaultKeyedRateLimiter<String>>,
    metrics: Option<Window>,
}

/// At most `rate.count` calls per key in any `rate.per` plus [`Window::MARGIN`] (for the time a
/// request takes to reach the platform, whose clock counts).
pub struct Window {
    rate: Rate,
    calls: std::sync::Mutex<std::collections::HashMap<String, std::collections::VecDeque<Instant>>>,
}

impl Window {
    pub const MARGIN: Duration = Duration::from_millis(500);

    pub fn new(rate: Rate) -> Self {
        Window { rate, calls: std::sync::Mutex::default() }
    }

    /// Admits a call by `key` at `now`, or answers how long until one would be admitted.
    pub fn admit(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let span = self.rate.per + Self::MARGIN;
        let mut calls = self.calls.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let log = calls.entry(key.to_string()).or_default();
        while log.front().is_some_and(|t| now.duration_since(*t) >= span) {
            log.pop_front();
        }
        if log.len() < self.rate.count.get() as usize {
            log.push_back(now);
            return Ok(());
        }
        Err(log.front().map_or(Duration::ZERO, |t| span.saturating_sub(now.duration_since(*t))))
    }

    async fn until_ready(&self, key: &str) {
        while let Err(wait) = self.admit(key, Instant::now()) {
            tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
        }
    }
}

impl Default for Limiter {
    /// The documented limits only: the metrics API's, no gateway-wide rate.
    fn default() -> Self {
        Limiter::new(None, Some(Rate::METRICS))
    }
}

impl Limiter {
    /// A limiter with these rates per account (`None`: not limited).
    pub fn new(gateway: Option<Rate>, metrics: Option<Rate>) -> Self {
        Limiter { gateway: gateway.and_then(Rate::quota).map(RateLimiter::keyed), metrics: metrics.map(Window::new) }
    }

    /// Waits until `account` may send an operation of `class`; answers how long it waited.
    pub async fn wait(&self, account: &str, class: Class) -> Duration {
        let started = Instant::now();
        let key = account.to_string();
        if class == Class::Metrics
            && let Some(m) = &self.metrics
        {
            m.until_ready(&key).await;
        }
        if let Some(g) = &self.gateway {
            g.until_key_ready(&key).await;
        }
        started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_read_as_requests_per_unit_and_bad_ones_say_how_to_write_them() {
        assert_eq!("20/s".parse::<Rate>().map(|r| (r.count.get(), r.per)), Ok((20, Duration::from_secs(1))));
        assert_eq!(Rate::METRICS.count.get(), 5);
        assert_eq!("5/m".parse::<Rate>(), Ok(Rate::METRICS));
        assert_eq!(" 5000 / h ".parse::<Rate>().map(|r| r.to_string()).as_deref(), Ok("5000/h"));
        assert!("0/s".parse::<Rate>().unwrap_err().contains("at least one request"));
        for bad in ["20", "20/d", "x/s", "-1/s"] {
            assert!(bad.parse::<Rate>().unwrap_err().contains("`20/s`"), "{bad}");
        }
    }

    #[test]
    fn metrics_operations_draw_from_their_own_bucket() {
        assert_eq!(Class::of("forgeops_getAppMetrics"), Class::Metrics);
        assert_eq!(Class::of("forge_cli_installApplication"), Class::Gateway);
    }

    /// Whether `wait` ends within a generous bound (a refused request waits minutes here).
    async fn passes(limiter: &Limiter, account: &str, class: Class) -> bool {
        tokio::time::timeout(Duration::from_secs(5), limiter.wait(account, class)).await.is_ok()
    }

    #[tokio::test]
    async fn a_burst_passes_then_the_account_waits_while_another_account_does_not() {
        let limiter = Limiter::new("10/h".parse().ok(), None);
        for _ in 0..10 {
            assert!(passes(&limiter, "a@example.com", Class::Gateway).await);
        }
        // The eleventh waits six minutes for its token.
        assert!(!passes(&limiter, "a@example.com", Class::Gateway).await);
        assert!(passes(&limiter, "b@example.com", Class::Gateway).await);
    }

    #[tokio::test]
    async fn the_metrics_api_allows_five_calls_a_minute_by_default() {
        let limiter = Limiter::default();
        for _ in 0..5 {
            assert!(passes(&limiter, "a@example.com", Class::Metrics).await);
        }
        // A sixth call within the minute waits for the first to be a minute old.
        assert!(!passes(&limiter, "a@example.com", Class::Metrics).await);
        // Other requests of the account are not held by the metrics bucket, nor are others'.
        assert!(passes(&limiter, "a@example.com", Class::Gateway).await);
        assert!(passes(&limiter, "b@example.com", Class::Metrics).await);
        // Without a gateway rate, nothing else waits.
        for _ in 0..100 {
            assert!(passes(&limiter, "a@example.com", Class::Gateway).await);
        }
    }

    #[test]
    fn the_metrics_window_never_admits_more_than_five_calls_in_any_minute() {
        let w = Window::new(Rate::METRICS);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        for s in [0, 1, 2, 3, 4] {
            assert_eq!(w.admit("a", at(s)), Ok(()));
        }
        // Where a bucket refilled at 5/min admits a sixth call 12 s later, the window waits
        // until the first call is a minute (and the margin) old.
        assert_eq!(w.admit("a", at(12)), Err(Duration::from_secs(48) + Window::MARGIN));
        assert_eq!(w.admit("a", at(60)), Err(Window::MARGIN));
        assert_eq!(w.admit("a", at(61)), Ok(()));
        assert!(w.admit("a", at(61)).is_err());
        assert_eq!(w.admit("b", at(12)), Ok(()));
    }
}
