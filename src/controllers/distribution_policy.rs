//! The DistributionPolicy controller: decides whether sharing should be active, and carries that
//! out on the platform through its distribution capability: sharing on or off, the installation
//! link (generated again when `linkRevision` is raised or the products change, reused otherwise,
//! so a re-created policy never brings back a rotated link). Where the capability is off or the
//! platform refuses, the conditions say so and where to do it by hand.

use std::sync::Arc;

use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::{Context, Error, apply_status, instrumented, objects_of_app, publish_event, retry_later};
use crate::api::{DistributionPolicy, DistributionPolicyStatus, ForgeApp};
use crate::platform::{ErrorKind, PlatformError};
use crate::rules::conditions;
use crate::rules::distribution::{self, Carried, LinkState, Type};

const NAME: &str = "distributionpolicy";

pub async fn reconcile(policy: Arc<DistributionPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    instrumented(&ctx, NAME, policy.as_ref(), async { apply(&policy, &ctx).await.map(|_| Action::await_change()) })
        .await
}

async fn apply(cached: &DistributionPolicy, ctx: &Context) -> Result<(), Error> {
    // A copy older than this process's last status write of it would decide from a link record
    // that is gone (and rotate a link twice): read it afresh first.
    let fresh;
    let policy = if ctx.may_be_stale(cached) {
        let api: Api<DistributionPolicy> = Api::namespaced(ctx.client.clone(), &cached.namespace().unwrap_or_default());
        let Some(latest) = api.get_opt(&cached.name_any()).await? else { return Ok(()) };
        fresh = latest;
        &fresh
    } else {
        cached
    };
    // Observe: the app, and every policy for the same app (to find the one that governs).
    let ns = policy.namespace().unwrap_or_default();
    let app_name = &policy.spec.app_ref.name;
    // From the watch caches: no request per reconcile.
    let app = ctx.caches.app(&ns, app_name).map(|a| a.as_ref().clone());
    let siblings = ctx.caches.policies_of_app(&ns, app_name);
    let governing = distribution::governing(siblings.iter().map(|p| p.as_ref()), app_name, &policy.spec.environment)
        .map(|p| p.name_any())
        .filter(|name| *name != policy.name_any());

    // Decide.
    let claim = app.as_ref().map(|a| ctx.claim_of(a)).unwrap_or_default();
    let decision = distribution::decide(policy, app.as_ref(), governing.as_deref(), &claim);
    let previous = policy.status.clone().unwrap_or_default();

    // Act on the platform, where the decision says to.
    let carried = match (app.as_ref(), decision.act) {
        (Some(app), true) => Some(carry_out(policy, app, &decision, &previous, ctx).await),
        _ => None,
    };
    let app_id = app.as_ref().map(|a| a.spec.app_id.as_str()).unwrap_or_default();
    let outcome = match &carried {
        None => Carried::NotAsked,
        Some(Ok(link)) => Carried::Done(link),
        Some(Err(e)) => Carried::Failed(e),
    };
    let status = distribution::status(policy, app_id, &decision, &previous, outcome, &super::now());
    let failure = carried.and_then(Result::err).filter(distribution::retried);

    // Report.
    if status != previous {
        let written = apply_status(&ctx.client, policy, &status).await?;
        ctx.wrote(&written);
        report_events(ctx, policy, &previous, &status).await;
    }
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Sharing on or off on the platform, and the link: the active one is kept unless the revision
/// was raised or the products changed. Returns the link the platform holds now.
async fn carry_out(
    policy: &DistributionPolicy,
    app: &ForgeApp,
    decision: &distribution::PolicyDecision,
    previous: &DistributionPolicyStatus,
    ctx: &Context,
) -> Result<LinkState, PlatformError> {
    if !ctx.fence.holds() {
        // Not leading (or not sure): the sharing mutations below are for the leader to send.
        let why = "this replica has not renewed the leader Lease within its renew deadline";
        return Err(PlatformError::new(ErrorKind::Unavailable, "leader", why));
    }
    let creds = ctx
        .credentials_for(app)
        .await
        .map_err(|e| PlatformError::new(ErrorKind::BadCredentials, "credentials", e.to_string()))?;
    let app_id = app.spec.app_id.as_str();
    let result = async {
        if !decision.sharing_active() {
            if previous.installation_link.is_some() || previous.link_revision.is_some() {
                ctx.platform.set_sharing(&creds, app_id, false).await?;
            }
            return Ok(LinkState::default());
        }
        let products: Vec<String> = policy.spec.products.iter().map(|p| p.as_str().to_string()).collect();
        ctx.platform.set_sharing(&creds, app_id, true).await?;
        let active = ctx.platform.active_link(&creds, app_id).await?;
        let rotate = previous.link_revision.is_some_and(|r| policy.spec.link_revision > r);
        let same_products = |l: &crate::platform::DistributionLink| {
            let mut a = l.products.clone();
            let mut b = products.clone();
            a.sort();
            b.sort();
            a == b
        };
        let link = match active {
            Some(l) if !rotate && same_products(&l) => l,
            _ => ctx.platform.generate_link(&creds, app_id, &products).await?,
        };
        Ok(LinkState { url: Some(link.url), revision: Some(policy.spec.link_revision), products: link.products })
    }
    .await;
    if let Err(e) = &result {
        ctx.saw_platform_error(&creds, e);
    }
    result
}

async fn report_events(
    ctx: &Context,
    policy: &DistributionPolicy,
    before: &DistributionPolicyStatus,
    after: &DistributionPolicyStatus,
) {
    let was = conditions::is_true(&before.conditions, Type::Sharing);
    let is = conditions::is_true(&after.conditions, Type::Sharing);
    let sharing = conditions::find(&after.conditions, Type::Sharing).map(|c| c.message.clone()).unwrap_or_default();
    if is && !was {
        publish_event(ctx, policy, false, "SharingEnabled", sharing.clone(), "Share").await;
    } else if was && !is {
        publish_event(ctx, policy, false, "SharingDisabled", sharing.clone(), "Share").await;
    }
    if let (Some(old), Some(new)) = (before.link_revision, after.link_revision)
        && old != new
    {
        let note = format!(
            "installation link rotated from revision {old} to {new}; the old link no longer admits new installations"
        );
        publish_event(ctx, policy, false, "LinkRotated", note, "Rotate").await;
    } else if before.installation_link.is_some()
        && after.installation_link.is_some()
        && before.installation_link != after.installation_link
        && before.link_products != after.link_products
    {
        let note = format!(
            "the products changed from {} to {}: the platform issued a new installation link, and the old one no \
             longer admits new installations",
            before.link_products.join(", "),
            after.link_products.join(", ")
        );
        publish_event(ctx, policy, false, "LinkRegenerated", note, "Rotate").await;
    }
}

pub fn error_policy(policy: Arc<DistributionPolicy>, error: &Error, ctx: Arc<Context>) -> Action {
    retry_later(NAME, policy.as_ref(), error, &ctx)
}

/// Runs the DistributionPolicy controller until `shutdown` resolves. A policy is reconciled again
/// when its app changes, and when another policy for the same app changes (conflicts).
pub async fn run(
    api: Api<DistributionPolicy>,
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    use futures::StreamExt;
    use kube::runtime::WatchStreamExt;
    let (reader, writer) = kube::runtime::reflector::store();
    let policies = super::decoded::watch(api.clone(), ctx.undecodable.clone()).reflect(writer).applied_objects();
    let controller = Controller::for_stream(policies, reader)
        .with_config(kube::runtime::controller::Config::default().concurrency(super::concurrency::SMALL));
    let (by_app, by_sibling) = (controller.store(), controller.store());
    let app_changes = ctx.caches.take_app_changes(super::caches::Dependents::Policies);
    controller
        .reconcile_on(super::dependents_of_changed_apps(app_changes, move |ns, app| {
            objects_of_app(&by_app, Some(ns.to_string()), app)
        }))
        .watches_stream(
            super::decoded::watch(api, ctx.undecodable.clone()).applied_objects(),
            move |p: DistributionPolicy| objects_of_app(&by_sibling, p.namespace(), &p.spec.app_ref.name),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}
