//! Controllers: each observes its objects, asks `crate::rules` what should be, acts, and reports
//! status. Shared plumbing (context, per-object backoff, status writes, events) lives here.

pub mod forge_app;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;

use crate::telemetry::Metrics;

/// The field manager the operator writes status with.
pub const FIELD_MANAGER: &str = "forgeops";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// What every controller shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    backoff: Backoff,
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>, instance: Option<String>) -> Self {
        let reporter = Reporter { controller: "forgeops".into(), instance };
        Context { recorder: Recorder::new(client.clone(), reporter), client, metrics, backoff: Backoff::default() }
    }
}

/// Per-object exponential backoff for failed reconciliations: 1s, 2s, 4s… up to 5 minutes, reset
/// by a success, so a failing object never hot-loops and never delays the others.
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    pub const MAX: Duration = Duration::from_secs(300);

    pub fn next_delay(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap();
        let n = failures.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        Duration::from_secs(1u64.checked_shl(*n - 1).unwrap_or(u64::MAX)).min(Self::MAX)
    }

    pub fn reset(&self, key: &str) {
        self.failures.lock().unwrap().remove(key);
    }
}

/// A stable key for an object, for backoff bookkeeping.
pub fn object_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!("{}/{}/{}", K::kind(&()), obj.namespace().unwrap_or_default(), obj.name_any())
}

/// The current time, truncated to whole seconds as the API server stores it, so a status computed
/// now compares equal to the same status read back.
pub fn now() -> Time {
    Time(jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).expect("now is a valid timestamp"))
}

/// Writes an object's status with server-side apply. The operator owns status and never writes spec.
pub async fn apply_status<K, S>(client: &Client, obj: &K, status: &S) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    S: Serialize,
{
    let api: Api<K> = Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(&obj.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body)).await?;
    Ok(())
}

/// Records an Event about `obj`. Events are best effort: a failure is logged, never fatal.
pub async fn publish_event<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    warning: bool,
    reason: &str,
    note: String,
    action: &str,
) {
    let event = Event {
        type_: if warning { EventType::Warning } else { EventType::Normal },
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(error = %e, reason, "could not record an event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_per_object_and_resets() {
        let b = Backoff::default();
        assert_eq!(b.next_delay("a"), Duration::from_secs(1));
        assert_eq!(b.next_delay("a"), Duration::from_secs(2));
        assert_eq!(b.next_delay("a"), Duration::from_secs(4));
        assert_eq!(b.next_delay("b"), Duration::from_secs(1), "objects back off independently");
        for _ in 0..100 {
            b.next_delay("a");
        }
        assert_eq!(b.next_delay("a"), Backoff::MAX);
        b.reset("a");
        assert_eq!(b.next_delay("a"), Duration::from_secs(1));
    }
}
