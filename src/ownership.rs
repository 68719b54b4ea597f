//! One owner per app. An app on the platform (its appId) is claimed cluster-wide by one ForgeApp:
//! a Lease in the operator's namespace, named from a hash of the appId, holds the owner's UID
//! (`spec.holderIdentity`) and names it (`forgeops.dev/holder`, `namespace/name`). It does not
//! expire: it is held while the owner exists, released when the owner's deletion finishes, and
//! taken over only once the owner it names is gone (read afresh from the API server, not from a
//! cache). Every other ForgeApp of the same appId reports `Conflict`, naming the owner's
//! namespace, and neither it nor its Installations, DistributionPolicies or BulkUpgrades act on
//! the platform.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::{Api, ResourceExt};

use crate::api::ForgeApp;
use crate::leases::HOLDER_ANNOTATION;

/// The annotation on an owner Lease with the appId it is for (the name holds only a hash).
pub const APP_ID_ANNOTATION: &str = "forgeops.dev/app-id";

/// The name of the Lease that claims `app_id`.
pub fn lease_name(app_id: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, app_id.as_bytes());
    let hash: String = digest.as_ref()[..10].iter().map(|b| format!("{b:02x}")).collect();
    format!("forgeops-app-{hash}")
}

/// Whose an app is, as far as one ForgeApp is concerned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Claim {
    /// This ForgeApp owns the app: it and its dependents may act on the platform.
    #[default]
    Ours,
    /// Another ForgeApp owns it (`namespace/name`).
    Theirs(String),
    /// Nobody has claimed it yet (the ForgeApp has not been read since it was created, or since
    /// the operator started): wait for the ForgeApp to claim it.
    Unclaimed,
}

impl Claim {
    pub fn is_ours(&self) -> bool {
        matches!(self, Claim::Ours)
    }
}

/// What a (cached) owner Lease says about `app`.
pub fn claim_of(lease: Option<&Lease>, app: &ForgeApp) -> Claim {
    let holder = lease.and_then(|l| l.spec.as_ref()).and_then(|s| s.holder_identity.as_deref()).unwrap_or_default();
    match (holder, app.metadata.uid.as_deref()) {
        ("", _) => Claim::Unclaimed,
        (h, Some(uid)) if h == uid => Claim::Ours,
        _ => Claim::Theirs(lease.map(holder_name).unwrap_or_default()),
    }
}

fn holder_name(lease: &Lease) -> String {
    lease.annotations().get(HOLDER_ANNOTATION).cloned().unwrap_or_else(|| "another ForgeApp".into())
}

/// The owner Lease of `app`, held by it.
fn owned_by(app: &ForgeApp, name: &str, mut lease: Lease) -> Lease {
    lease.metadata.name = Some(name.into());
    let annotations = lease.metadata.annotations.get_or_insert_with(Default::default);
    annotations.insert(HOLDER_ANNOTATION.into(), format!("{}/{}", app.namespace().unwrap_or_default(), app.name_any()));
    annotations.insert(APP_ID_ANNOTATION.into(), app.spec.app_id.clone());
    lease.metadata.labels.get_or_insert_with(Default::default).insert("forgeops.dev/lease".into(), "app-owner".into());
    lease.spec = Some(LeaseSpec { holder_identity: app.metadata.uid.clone(), ..Default::default() });
    lease
}

/// Claims `app`'s appId for it (or confirms it holds it): `cached` is the watch cache's copy of
/// the Lease, which answers without a request when it shows this app as the owner. A Lease that
/// names an owner is taken over only when a fresh read shows that owner gone (or another object
/// of the same name). Losing a race is never an error: the next look tells who won.
pub async fn claim(leases: &Api<Lease>, cached: Option<&Lease>, app: &ForgeApp) -> Result<Claim, kube::Error> {
    let name = lease_name(&app.spec.app_id);
    if claim_of(cached, app).is_ours() {
        return Ok(Claim::Ours);
    }
    for _ in 0..3 {
        let current = leases.get_opt(&name).await?;
        let taken = match &current {
            None => leases.create(&PostParams::default(), &owned_by(app, &name, Lease::default())).await,
            Some(lease) => match claim_of(Some(lease), app) {
                Claim::Ours => return Ok(Claim::Ours),
                Claim::Theirs(owner) if owner_exists(leases, lease, &owner).await? => {
                    return Ok(Claim::Theirs(owner));
                }
                // Free, or its owner is gone: take it over; the resourceVersion read is the compare.
                _ => leases.replace(&name, &PostParams::default(), &owned_by(app, &name, lease.clone())).await,
            },
        };
        match taken {
            Ok(_) => return Ok(Claim::Ours),
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(Claim::Unclaimed)
}

/// Whether the owner a Lease names still exists: a ForgeApp of that namespace and name whose UID
/// is the Lease's holder. Read from the API server.
async fn owner_exists(leases: &Api<Lease>, lease: &Lease, owner: &str) -> Result<bool, kube::Error> {
    let Some((namespace, name)) = owner.split_once('/') else { return Ok(false) };
    let apps: Api<ForgeApp> = Api::namespaced(leases.clone().into_client(), namespace);
    let holder = lease.spec.as_ref().and_then(|s| s.holder_identity.clone());
    Ok(apps.get_opt(name).await?.is_some_and(|a| a.metadata.uid == holder))
}

/// Releases `app`'s claim once it is deleted: the Lease goes if this app holds it (the delete is
/// conditional on the resourceVersion read, so a takeover in between is never undone).
pub async fn release(leases: &Api<Lease>, app: &ForgeApp) -> Result<(), kube::Error> {
    let name = lease_name(&app.spec.app_id);
    let Some(lease) = leases.get_opt(&name).await? else { return Ok(()) };
    if !claim_of(Some(&lease), app).is_ours() {
        return Ok(());
    }
    let preconditions = Preconditions { resource_version: lease.resource_version(), uid: lease.uid() };
    match leases.delete(&name, &DeleteParams { preconditions: Some(preconditions), ..Default::default() }).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    // Test-only: the unwraps and panics in this module are the tests' assertions, never on an
    // operator path.
    use super::*;

    fn app(ns: &str, name: &str, uid: &str) -> ForgeApp {
        // Test-only: an assertion.
        let mut a = ForgeApp::new(name, serde_json::from_value(serde_json::json!({"appId": "ari:app/1"})).unwrap());
        a.metadata.namespace = Some(ns.into());
        a.metadata.uid = Some(uid.into());
        a
    }

    #[test]
    fn the_lease_tells_each_forgeapp_whose_the_app_is() {
        let (a, b) = (app("team-a", "insights", "uid-a"), app("team-b", "insights", "uid-b"));
        let name = lease_name("ari:app/1");
        assert!(name.len() <= 63 && name.starts_with("forgeops-app-"), "{name}");
        assert_ne!(name, lease_name("ari:app/2"));
        let held = owned_by(&a, &name, Lease::default());
        assert_eq!(claim_of(Some(&held), &a), Claim::Ours);
        assert_eq!(claim_of(Some(&held), &b), Claim::Theirs("team-a/insights".into()));
        assert_eq!(claim_of(None, &b), Claim::Unclaimed);
        assert_eq!(claim_of(Some(&Lease::default()), &b), Claim::Unclaimed);
        assert_eq!(held.annotations().get(APP_ID_ANNOTATION).map(String::as_str), Some("ari:app/1"));
        // A ForgeApp recreated with the same name is a new object: the old claim is not its own.
        let recreated = app("team-a", "insights", "uid-a2");
        assert_eq!(claim_of(Some(&held), &recreated), Claim::Theirs("team-a/insights".into()));
    }
}
