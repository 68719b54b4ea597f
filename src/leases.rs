//! Concurrency limits enforced with `coordination.k8s.io/v1` Leases, taken and released with
//! compare-and-swap (the API server's resourceVersion check), so two operator replicas, or an
//! operator and its restarted self, can never both believe they hold one.
//!
//! A Lease is held by a UID (`spec.holderIdentity`) and names its holder for people and for
//! `blockedBy` in the `forgeops.dev/holder` annotation. A holder that stops renewing loses the Lease
//! once `renewTime + leaseDurationSeconds` has passed.

use std::time::Duration;

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

/// Whether a Lease is free for `holder` at `now`: unheld, held by `holder`, or expired.
pub fn available_to(lease: &Lease, holder: &str, now: jiff::Timestamp) -> bool {
    let Some(spec) = &lease.spec else { return true };
    match spec.holder_identity.as_deref() {
        None | Some("") => true,
        Some(h) if h == holder => true,
        Some(_) => {
            let duration = spec.lease_duration_seconds.unwrap_or(0) as i64;
            let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()).map(|t| t.0);
            renewed.is_none_or(|r| r + jiff::SignedDuration::from_secs(duration) < now)
        }
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
pub async fn claim(api: &Api<Lease>, name: &str, holder: &Holder, duration: Duration) -> Result<Claim, kube::Error> {
    let now = jiff::Timestamp::now();
    match api.get_opt(name).await? {
        None => {
            let mut lease = Lease::default();
            lease.metadata.name = Some(name.into());
            held_by(&mut lease, holder, duration, now);
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Claim::Held),
                Err(e) if conflict(&e) => Ok(Claim::Busy(holder_name(&api.get(name).await?))),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            if !available_to(&lease, &holder.uid, now) {
                return Ok(Claim::Busy(holder_name(&lease)));
            }
            held_by(&mut lease, holder, duration, now);
            // `replace` sends the resourceVersion we read: the compare in compare-and-swap.
            match api.replace(name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(Claim::Held),
                Err(e) if conflict(&e) => Ok(Claim::Busy(holder_name(&api.get(name).await?))),
                Err(e) => Err(e),
            }
        }
    }
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
            if !available_to(lease, &holder.uid, now) {
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

/// When the Lease `name` expires unless its holder renews it (`None`: unheld or absent).
pub async fn expiry(api: &Api<Lease>, name: &str) -> Result<Option<jiff::Timestamp>, kube::Error> {
    let Some(spec) = api.get_opt(name).await?.and_then(|l| l.spec) else { return Ok(None) };
    if spec.holder_identity.as_deref().is_none_or(str::is_empty) {
        return Ok(None);
    }
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()).map(|t| t.0);
    let duration = jiff::SignedDuration::from_secs(spec.lease_duration_seconds.unwrap_or(0) as i64);
    Ok(renewed.map(|r| r + duration))
}

/// Whether `holder` currently holds the Lease `name`.
pub async fn holds(api: &Api<Lease>, name: &str, holder: &str) -> Result<bool, kube::Error> {
    Ok(api.get_opt(name).await?.and_then(|l| l.spec).and_then(|s| s.holder_identity).as_deref() == Some(holder))
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

    fn lease(holder: Option<&str>, renewed_secs_ago: i64, duration: i32) -> Lease {
        let now = jiff::Timestamp::now();
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                lease_duration_seconds: Some(duration),
                renew_time: Some(MicroTime(now - jiff::SignedDuration::from_secs(renewed_secs_ago))),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_lease_is_available_when_free_mine_or_expired() {
        let now = jiff::Timestamp::now();
        assert!(available_to(&lease(None, 0, 30), "me", now));
        assert!(available_to(&lease(Some("me"), 0, 30), "me", now));
        assert!(!available_to(&lease(Some("other"), 5, 30), "me", now));
        assert!(available_to(&lease(Some("other"), 31, 30), "me", now), "the holder stopped renewing");
        assert!(available_to(&Lease::default(), "me", now));
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
