//! Concurrency limits enforced with `coordination.k8s.io/v1` Leases, taken and released with
//! compare-and-swap (the API server's resourceVersion check), so two operator replicas, or an
//! operator and its restarted self, can never both believe they hold one.
//!
//! A Lease is held by a UID (`spec.holderIdentity`) and names its holder for people and for
//! `blockedBy` in the `forgeops.dev/holder` annotation. A holder that stops renewing loses the Lease
//! a `leaseDurationSeconds` after this process last saw its record change, by this process's own
//! clock, as client-go's leader election judges it ([`Observer`]): the holder's `renewTime` is
//! written by the holder's clock, which may be off, so it is compared only for change, never with
//! the local time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::PostParams;

/// Annotation with the holder's `namespace/name`.
pub const HOLDER_ANNOTATION: &str = "forgeops.dev/holder";

/// Who wants a Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub uid: String,
    /// `namespace/name`, for people.
    pub name: String,
}

/// The outcome of trying to take a Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    Held,
    /// Held by someone else, named.
    Busy(String),
}

/// What this process has seen of each Lease's record, and since when: client-go's `observedRecord`
/// and `observedTime`. A Lease held by someone else expires a lease duration after its record
/// (holder, renew and acquire times, duration, transitions) last changed as seen from here, so a
/// holder whose clock runs ahead (a `renewTime` in the future) does not keep a dead Lease longer,
/// and one whose clock runs behind does not lose a Lease it keeps renewing. Like client-go, a Lease
/// first seen by a process that just started is given one full duration.
#[derive(Debug, Default)]
pub struct Observer {
    seen: Mutex<HashMap<String, (Record, Instant)>>,
}

/// The parts of a Lease whose change shows that its holder is alive.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    holder: Option<String>,
    renewed: Option<jiff::Timestamp>,
    acquired: Option<jiff::Timestamp>,
    duration: Option<i32>,
    transitions: Option<i32>,
}

impl Record {
    fn of(spec: &LeaseSpec) -> Record {
        Record {
            holder: spec.holder_identity.clone(),
            renewed: spec.renew_time.as_ref().map(|t| t.0),
            acquired: spec.acquire_time.as_ref().map(|t| t.0),
            duration: spec.lease_duration_seconds,
            transitions: spec.lease_transitions,
        }
    }
}

impl Observer {
    /// Whether the Lease `name` is free for `holder` now: unheld, held by `holder`, or expired.
    pub fn available_to(&self, name: &str, lease: &Lease, holder: &str) -> bool {
        self.available_at(name, lease, holder, Instant::now())
    }

    /// [`Observer::available_to`] at `now`.
    pub fn available_at(&self, name: &str, lease: &Lease, holder: &str, now: Instant) -> bool {
        let held_by = lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref());
        held_by == Some(holder) || self.expires_at(name, lease, now).is_none_or(|at| at <= now)
    }

    /// When the Lease `name` expires unless its holder renews it, by this process's clock, as of
    /// the last time it was seen (by [`claim`], which reads it anyway): no read of its own.
    pub fn last_expiry(&self, name: &str) -> Option<Instant> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let (record, since) = seen.get(name)?;
        record.holder.as_deref().filter(|h| !h.is_empty())?;
        Some(*since + Duration::from_secs(record.duration.unwrap_or(0).max(0) as u64))
    }

    /// When the Lease `name` expires unless its holder renews it, by this process's clock, noting
    /// its record as seen at `now`. `None`: nobody holds it.
    pub fn expires_at(&self, name: &str, lease: &Lease, now: Instant) -> Option<Instant> {
        let spec = lease.spec.as_ref()?;
        spec.holder_identity.as_deref().filter(|h| !h.is_empty())?;
        let record = Record::of(spec);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let since = match seen.get(name) {
            Some((r, since)) if *r == record => *since,
            _ => {
                seen.insert(name.to_string(), (record, now));
                now
            }
        };
        Some(since + Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64))
    }
}

fn holder_name(lease: &Lease) -> String {
    lease
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(HOLDER_ANNOTATION).cloned())
        .or_else(|| lease.spec.as_ref().and_then(|s| s.holder_identity.clone()))
        .unwrap_or_else(|| "unknown".into())
}

fn held_by(lease: &mut Lease, holder: &Holder, duration: Duration, now: jiff::Timestamp) {
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.holder_identity.as_deref() != Some(&holder.uid) {
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.holder_identity = Some(holder.uid.clone());
    spec.lease_duration_seconds = Some(duration.as_secs() as i32);
    spec.renew_time = Some(MicroTime(now));
    lease
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(HOLDER_ANNOTATION.into(), holder.name.clone());
}

fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// Takes or renews the Lease `name` for `holder`. Losing a race is `Busy`, never an error.
pub async fn claim(
    api: &Api<Lease>,
    name: &str,
    holder: &Holder,
    duration: Duration,
    observer: &Observer,
) -> Result<Claim, kube::Error> {
    let now = jiff::Timestamp::now();
    match api.get_opt(name).await? {
        None => {
            let mut lease = Lease::default();
            lease.metadata.name = Some(name.into());
            held_by(&mut lease, holder, duration, now);
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Claim::Held),
                Err(e) if conflict(&e) => Ok(Claim::Busy(busy(api, name, observer).await?)),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            if !observer.available_to(name, &lease, &holder.uid) {
                return Ok(Claim::Busy(holder_name(&lease)));
            }
            held_by(&mut lease, holder, duration, now);
            // `replace` sends the resourceVersion we read: the compare in compare-and-swap.
            match api.replace(name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(Claim::Held),
                Err(e) if conflict(&e) => Ok(Claim::Busy(busy(api, name, observer).await?)),
                Err(e) => Err(e),
            }
        }
    }
}

/// Who holds the Lease `name` after a lost race, read once and noted in `observer`.
async fn busy(api: &Api<Lease>, name: &str, observer: &Observer) -> Result<String, kube::Error> {
    let lease = api.get(name).await?;
    observer.expires_at(name, &lease, Instant::now());
    Ok(holder_name(&lease))
}

/// Takes or renews the Lease `name` for `holder` from a copy already at hand (a watch cache), with
/// no read: the copy's resourceVersion is the compare in compare-and-swap. `None` when the copy was
/// stale (409 Conflict): read it and try again with [`claim`].
pub async fn claim_from(
    api: &Api<Lease>,
    name: &str,
    cached: Option<&Lease>,
    holder: &Holder,
    duration: Duration,
    observer: &Observer,
) -> Result<Option<Claim>, kube::Error> {
    let now = jiff::Timestamp::now();
    let result = match cached {
        None => {
            let mut lease = Lease::default();
            lease.metadata.name = Some(name.into());
            held_by(&mut lease, holder, duration, now);
            api.create(&PostParams::default(), &lease).await
        }
        Some(lease) => {
            if !observer.available_to(name, lease, &holder.uid) {
                return Ok(Some(Claim::Busy(holder_name(lease))));
            }
            let mut lease = lease.clone();
            held_by(&mut lease, holder, duration, now);
            api.replace(name, &PostParams::default(), &lease).await
        }
    };
    match result {
        Ok(_) => Ok(Some(Claim::Held)),
        Err(e) if conflict(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Releases the Lease `name` if `holder` holds it. Idempotent.
pub async fn release(api: &Api<Lease>, name: &str, holder: &str) -> Result<(), kube::Error> {
    let Some(mut lease) = api.get_opt(name).await? else { return Ok(()) };
    let Some(spec) = lease.spec.as_mut().filter(|s| s.holder_identity.as_deref() == Some(holder)) else {
        return Ok(());
    };
    spec.holder_identity = None;
    spec.renew_time = None;
    if let Some(a) = lease.metadata.annotations.as_mut() {
        a.remove(HOLDER_ANNOTATION);
    }
    match api.replace(name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(()),
        Err(e) if conflict(&e) => Ok(()), // someone else took it over meanwhile
        Err(e) => Err(e),
    }
}

/// Deletes the Lease `name` if `holder` holds it: for Leases that mean nothing once free (the bulk
/// upgrades'), so none is left behind. Conditional on the resourceVersion read: a Lease taken over
/// meanwhile stays. Idempotent.
pub async fn remove(api: &Api<Lease>, name: &str, holder: &str) -> Result<(), kube::Error> {
    let Some(lease) = api.get_opt(name).await? else { return Ok(()) };
    if lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) != Some(holder) {
        return Ok(());
    }
    let preconditions = kube::api::Preconditions {
        resource_version: lease.metadata.resource_version.clone(),
        uid: lease.metadata.uid.clone(),
    };
    let params = kube::api::DeleteParams { preconditions: Some(preconditions), ..Default::default() };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// A Lease name for `prefix` and `key`: readable, DNS-safe, and unique through a hash of the key.
pub fn lease_name(prefix: &str, key: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let hash: String = digest.as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect();
    let readable: String = key
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect::<String>()
        .trim_matches('-')
        .to_string();
    format!("{prefix}-{readable}-{hash}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed: jiff::Timestamp, duration: i32) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                lease_duration_seconds: Some(duration),
                renew_time: Some(MicroTime(renewed)),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_lease_is_available_when_free_mine_or_unchanged_for_its_duration() {
        let (o, t0, now) = (Observer::default(), Instant::now(), jiff::Timestamp::now());
        assert!(o.available_at("a", &lease(None, now, 30), "me", t0));
        assert!(o.available_at("b", &lease(Some("me"), now, 30), "me", t0));
        assert!(o.available_at("c", &Lease::default(), "me", t0));
        let other = lease(Some("other"), now, 30);
        assert!(!o.available_at("d", &other, "me", t0));
        assert!(!o.available_at("d", &other, "me", t0 + secs(29)));
        assert!(o.available_at("d", &other, "me", t0 + secs(30)), "the holder stopped renewing");
    }

    #[test]
    fn a_renewal_restarts_the_duration_whatever_the_holders_clock_says() {
        let (o, t0, now) = (Observer::default(), Instant::now(), jiff::Timestamp::now());
        // The holder's clock is 60 s behind: its renewTime looks long expired, but it keeps renewing.
        let behind = |s: i64| lease(Some("other"), now - jiff::SignedDuration::from_secs(60 - s), 10);
        assert!(!o.available_at("l", &behind(0), "me", t0));
        assert!(!o.available_at("l", &behind(5), "me", t0 + secs(8)));
        assert!(!o.available_at("l", &behind(10), "me", t0 + secs(16)));
        assert!(!o.available_at("l", &behind(10), "me", t0 + secs(25)));
        assert!(o.available_at("l", &behind(10), "me", t0 + secs(26)), "it stopped renewing at 16 s");
    }

    #[test]
    fn a_holder_whose_clock_runs_ahead_keeps_the_lease_one_duration_not_until_its_renew_time() {
        let (o, t0) = (Observer::default(), Instant::now());
        let ahead = lease(Some("other"), jiff::Timestamp::now() + jiff::SignedDuration::from_secs(60), 10);
        assert_eq!(o.expires_at("l", &ahead, t0), Some(t0 + secs(10)));
        assert_eq!(o.expires_at("l", &ahead, t0 + secs(3)), Some(t0 + secs(10)), "first seen at t0");
        assert!(o.available_at("l", &ahead, "me", t0 + secs(10)));
        assert_eq!(o.last_expiry("l"), Some(t0 + secs(10)), "known without a read");
        assert_eq!(o.last_expiry("never-seen"), None);
        assert_eq!(o.expires_at("free", &lease(Some(""), jiff::Timestamp::now(), 10), t0), None);
    }

    #[test]
    fn lease_names_are_dns_safe_and_distinct() {
        let a = lease_name("forgeops-bulk-env", "team/Insights/production");
        assert!(a.starts_with("forgeops-bulk-env-team-insights-production-"), "{a}");
        assert!(a.len() <= 63);
        assert_ne!(a, lease_name("forgeops-bulk-env", "team/insights/production"));
        let long = lease_name("forgeops-bulk-account", &"x@y.example".repeat(20));
        assert!(long.len() <= 100 && long.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'), "{long}");
    }
}
