//! The embedded platform, the default: it performs actions in memory and reports success, and can
//! be told to add latency and to fail (every call, a fraction of calls, or chosen sites) so that the
//! demo, tests and benchmarks exercise slow and failing sites.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{Action, ActionKind, Platform, PlatformError};

/// Faults to inject.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// Added to every call.
    pub latency: Duration,
    /// Every call fails.
    pub fail_all: bool,
    /// This fraction (0 to 1) of calls fails, chosen deterministically by call number.
    pub fail_fraction: f64,
    /// Calls for these sites fail.
    pub fail_sites: BTreeSet<String>,
}

#[derive(Default)]
pub struct EmbeddedPlatform {
    faults: Mutex<Faults>,
    calls: AtomicU64,
    /// Installation → installed version, as the platform sees it.
    installed: Mutex<HashMap<String, String>>,
    /// Idempotency keys already carried out.
    done: Mutex<HashSet<String>>,
    /// Every action carried out (repeats by key are not), in order.
    performed: Mutex<Vec<Action>>,
}

impl EmbeddedPlatform {
    pub fn new(faults: Faults) -> Self {
        EmbeddedPlatform { faults: Mutex::new(faults), ..Default::default() }
    }

    /// Replaces the faults, for example to lift a failure.
    pub fn set_faults(&self, faults: Faults) {
        *self.faults.lock().unwrap() = faults;
    }

    /// The actions carried out so far (an action repeated with the same key counts once).
    pub fn performed(&self) -> Vec<Action> {
        self.performed.lock().unwrap().clone()
    }

    /// The version installed for an Installation (`namespace/name`), if any.
    pub fn installed_version(&self, installation: &str) -> Option<String> {
        self.installed.lock().unwrap().get(installation).cloned()
    }

    fn fails(&self, faults: &Faults, action: &Action, call: u64) -> bool {
        // A fixed multiplicative hash of the call number spreads failures evenly and repeatably.
        let draw = (call.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64;
        faults.fail_all || faults.fail_sites.contains(&action.site) || draw < faults.fail_fraction
    }
}

impl Platform for EmbeddedPlatform {
    fn perform<'a>(&'a self, action: &'a Action) -> BoxFuture<'a, Result<(), PlatformError>> {
        async move {
            let faults = self.faults.lock().unwrap().clone();
            let call = self.calls.fetch_add(1, Ordering::Relaxed);
            if !faults.latency.is_zero() {
                tokio::time::sleep(faults.latency).await;
            }
            if self.fails(&faults, action, call) {
                return Err(PlatformError::Unavailable {
                    action: action.action.as_str(),
                    site: action.site.clone(),
                    message: "injected fault: the site did not respond".into(),
                });
            }
            if !self.done.lock().unwrap().insert(action.idempotency_key.clone()) {
                return Ok(()); // already carried out: idempotent
            }
            let mut installed = self.installed.lock().unwrap();
            match action.action {
                ActionKind::Install | ActionKind::Upgrade => {
                    installed.insert(action.installation.clone(), action.version.clone().unwrap_or_default());
                }
                ActionKind::Uninstall => {
                    installed.remove(&action.installation);
                }
            }
            self.performed.lock().unwrap().push(action.clone());
            Ok(())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(kind: ActionKind, site: &str, version: Option<&str>) -> Action {
        Action {
            action: kind,
            installation: format!("ns/{site}"),
            app_id: "app".into(),
            environment: "production".into(),
            site: site.into(),
            products: vec![],
            version: version.map(str::to_string),
            idempotency_key: Action::idempotency_key(site, kind, version),
        }
    }

    #[tokio::test]
    async fn repeated_actions_are_carried_out_once() {
        let p = EmbeddedPlatform::default();
        let install = action(ActionKind::Install, "a.example", Some("1.0"));
        p.perform(&install).await.unwrap();
        p.perform(&install).await.unwrap();
        assert_eq!(p.performed().len(), 1);
        assert_eq!(p.installed_version("ns/a.example").as_deref(), Some("1.0"));
        p.perform(&action(ActionKind::Uninstall, "a.example", None)).await.unwrap();
        assert_eq!(p.installed_version("ns/a.example"), None);
    }

    #[tokio::test]
    async fn chosen_sites_fail_until_the_fault_is_lifted() {
        let p = EmbeddedPlatform::new(Faults { fail_sites: ["bad.example".to_string()].into(), ..Default::default() });
        let bad = action(ActionKind::Install, "bad.example", Some("1.0"));
        assert!(matches!(p.perform(&bad).await, Err(PlatformError::Unavailable { .. })));
        p.perform(&action(ActionKind::Install, "good.example", Some("1.0"))).await.unwrap();
        p.set_faults(Faults::default());
        p.perform(&bad).await.unwrap();
        assert_eq!(p.performed().len(), 2);
    }

    #[tokio::test]
    async fn a_fraction_of_calls_fails() {
        let p = EmbeddedPlatform::new(Faults { fail_fraction: 0.25, ..Default::default() });
        let mut failures = 0;
        for i in 0..400 {
            let a = action(ActionKind::Install, &format!("s{i}.example"), Some("1.0"));
            failures += p.perform(&a).await.is_err() as u32;
        }
        assert!((60..140).contains(&failures), "{failures} of 400 failed");
    }
}
