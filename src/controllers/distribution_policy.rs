//! The DistributionPolicy controller: decides whether sharing is active, issues the signed
//! installation link of the current revision, and reports conflicts between policies.

use std::sync::Arc;

use kube::api::ListParams;
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use kube::{Api, ResourceExt};

use super::{Context, Error, apply_status, instrumented, objects_of_app, publish_event, retry_later};
use crate::api::{DistributionPolicy, DistributionPolicyStatus, ForgeApp};
use crate::rules::conditions;
use crate::rules::distribution::{self, SHARING};
use crate::rules::link::make_link;

const NAME: &str = "distributionpolicy";

pub async fn reconcile(policy: Arc<DistributionPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    instrumented(&ctx, NAME, policy.as_ref(), async { apply(&policy, &ctx).await.map(|_| Action::await_change()) })
        .await
}

async fn apply(policy: &DistributionPolicy, ctx: &Context) -> Result<(), Error> {
    // Observe: the app, and every policy for the same app (to find the one that governs).
    let ns = policy.namespace().unwrap_or_default();
    let app_name = &policy.spec.app_ref.name;
    let app = Api::<ForgeApp>::namespaced(ctx.client.clone(), &ns).get_opt(app_name).await?;
    let params = ListParams::default().fields(&format!("spec.appRef.name={app_name}"));
    let siblings = Api::<DistributionPolicy>::namespaced(ctx.client.clone(), &ns).list(&params).await?.items;
    let governing = distribution::governing(&siblings, app_name, &policy.spec.environment)
        .map(|p| p.name_any())
        .filter(|name| *name != policy.name_any());

    // Decide.
    let decision = distribution::decide(policy, app.as_ref(), governing.as_deref());
    let link = match &decision.link {
        Some(subject) => Some(make_link(ctx.link_key().await?, subject)),
        None => None,
    };
    let previous = policy.status.clone().unwrap_or_default();
    let status = DistributionPolicyStatus {
        observed_generation: policy.metadata.generation,
        conditions: conditions::merge(
            &previous.conditions,
            &decision.conditions,
            policy.metadata.generation,
            &super::now(),
        ),
        installation_link: link,
        link_revision: decision.link.as_ref().map(|l| l.revision),
    };

    // Report.
    if status != previous {
        apply_status(&ctx.client, policy, &status).await?;
        report_events(ctx, policy, &previous, &status).await;
    }
    Ok(())
}

async fn report_events(
    ctx: &Context,
    policy: &DistributionPolicy,
    before: &DistributionPolicyStatus,
    after: &DistributionPolicyStatus,
) {
    let was = conditions::is_true(&before.conditions, SHARING);
    let is = conditions::is_true(&after.conditions, SHARING);
    let sharing = conditions::find(&after.conditions, SHARING).map(|c| c.message.clone()).unwrap_or_default();
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
    }
}

pub fn error_policy(policy: Arc<DistributionPolicy>, error: &Error, ctx: Arc<Context>) -> Action {
    retry_later(NAME, policy.as_ref(), error, &ctx)
}

/// Runs the DistributionPolicy controller until `shutdown` resolves. A policy is reconciled again
/// when its app changes, and when another policy for the same app changes (conflicts).
pub async fn run(
    api: Api<DistributionPolicy>,
    apps: Api<ForgeApp>,
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    use futures::StreamExt;
    let controller = Controller::new(api.clone(), watcher::Config::default().any_semantic());
    let (by_app, by_sibling) = (controller.store(), controller.store());
    controller
        .watches(apps, watcher::Config::default().any_semantic(), move |app: ForgeApp| {
            objects_of_app(&by_app, app.namespace(), &app.name_any())
        })
        .watches(api, watcher::Config::default().any_semantic(), move |p: DistributionPolicy| {
            objects_of_app(&by_sibling, p.namespace(), &p.spec.app_ref.name)
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}
