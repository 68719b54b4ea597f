//! The DistributionPolicy controller: gathers the policy, its app and the policy that governs the
//! app from the watch caches, then runs rounds of [`distribution::decide`], carrying out each round's
//! steps (a read of the platform's sharing state, sharing on or off, a new link, the finalizer) and
//! feeding their answers into the next round. Every decision is in `rules::distribution`.

use std::sync::Arc;

use kube::api::{Patch, PatchParams};
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::{Context, Error, apply_status, instrumented, objects_of_app, publish_event, retry_later};
use crate::api::{DistributionPolicy, ForgeApp};
use crate::platform::{Credentials, ErrorKind, PlatformError};
use crate::rules::distribution::{self, Answer, Answers, Effect, FINALIZER, Inputs};

const NAME: &str = "distributionpolicy";
/// The most rounds one reconcile runs: finalizer, read, sharing on, read, link, done.
const MAX_ROUNDS: usize = 8;

pub async fn reconcile(policy: Arc<DistributionPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    instrumented(&ctx, NAME, policy.as_ref(), apply(&policy, &ctx)).await
}

async fn apply(cached: &DistributionPolicy, ctx: &Context) -> Result<Action, Error> {
    let ns = cached.namespace().unwrap_or_default();
    let api: Api<DistributionPolicy> = Api::namespaced(ctx.client.clone(), &ns);
    // A copy older than this process's last status write of it would decide from a link record
    // that is gone (and rotate a link twice): read it afresh first.
    let mut policy = if ctx.may_be_stale(cached) {
        let Some(latest) = api.get_opt(&cached.name_any()).await? else { return Ok(Action::await_change()) };
        ctx.wrote(&latest);
        latest
    } else {
        cached.clone()
    };
    // From the watch caches: no request per reconcile.
    let app_name = policy.spec.app_ref.name.clone();
    let app = ctx.caches.app(&ns, &app_name).map(|a| a.as_ref().clone());
    let siblings = ctx.caches.policies_of_app(&ns, &app_name);
    let governing = distribution::governing(siblings.iter().map(|p| p.as_ref()), &app_name)
        .map(|p| p.name_any())
        .filter(|name| *name != policy.name_any());
    let claim = app.as_ref().map(|a| ctx.claim_of(a)).unwrap_or_default();

    let mut answers = Answers::default();
    let mut creds: Option<Credentials> = None;
    for _ in 0..MAX_ROUNDS {
        let now = super::now();
        let decision = distribution::decide(&Inputs {
            policy: &policy,
            app: app.as_ref(),
            governing: governing.as_deref(),
            claim: &claim,
            answers: &answers,
            now: &now,
        });
        if decision.effects.is_empty() {
            return finish(&policy, decision, ctx).await;
        }
        // The first sharing mutation after a (re)start or failover rests on a fresh read: a
        // previous leader may have recorded a rotation the watch has not shown this process yet.
        if decision.effects.iter().any(Effect::mutates_platform) && !ctx.knows_latest(&policy) {
            let Some(latest) = api.get_opt(&policy.name_any()).await? else { return Ok(Action::await_change()) };
            ctx.wrote(&latest);
            if latest.resource_version() != policy.resource_version() {
                policy = latest;
                answers = Answers::default();
                continue;
            }
        }
        for effect in decision.effects {
            match effect {
                Effect::AddFinalizer => {
                    policy = set_finalizer(&api, &policy, true).await?;
                    ctx.wrote(&policy);
                    answers.record(Answer::FinalizerAdded);
                }
                Effect::RemoveFinalizer => {
                    let deleting = policy.metadata.deletion_timestamp.is_some();
                    if deleting {
                        // The events of the round that let it go (LeftShared).
                        for e in &decision.events {
                            publish_event(ctx, &policy, e.warning, e.reason.as_str(), e.note.clone(), e.action).await;
                        }
                    }
                    policy = set_finalizer(&api, &policy, false).await?;
                    if deleting {
                        ctx.forget_written(&policy);
                        return Ok(Action::await_change());
                    }
                }
                platform_step => {
                    let Some(app) = app.as_ref() else { break };
                    let answer = carry_out(&platform_step, app, &mut creds, ctx).await;
                    let failed = matches!(answer, Answer::Failed(_));
                    answers.record(answer);
                    if failed {
                        break;
                    }
                }
            }
        }
    }
    let why = "the policy took more rounds than any decision needs";
    Err(PlatformError::new(ErrorKind::Unavailable, "distribution", why).into())
}

/// Writes the status when it changed, publishes the round's Events, and says when to look again.
async fn finish(policy: &DistributionPolicy, decision: distribution::Decision, ctx: &Context) -> Result<Action, Error> {
    let previous = policy.status.clone().unwrap_or_default();
    if decision.status != previous {
        let written = apply_status(&ctx.client, policy, &decision.status).await?;
        ctx.wrote(&written);
    }
    for e in &decision.events {
        publish_event(ctx, policy, e.warning, e.reason.as_str(), e.note.clone(), e.action).await;
    }
    if let Some(e) = decision.retry {
        return Err(e.into());
    }
    Ok(decision.requeue.map(Action::requeue).unwrap_or_else(Action::await_change))
}

/// One platform step. Its failure is the policy's alone: a refused distribution operation never
/// marks the credentials bad for the app's other objects.
async fn carry_out(effect: &Effect, app: &ForgeApp, creds: &mut Option<Credentials>, ctx: &Context) -> Answer {
    if effect.mutates_platform() && !ctx.fence.holds() {
        // Not leading (or not sure): the sharing mutations are for the leader to send.
        let why = "this replica has not renewed the leader Lease within its renew deadline";
        return Answer::Failed(PlatformError::new(ErrorKind::Unavailable, "leader", why));
    }
    let c = match creds {
        Some(c) => c.clone(),
        None => match ctx.credentials_for(app).await {
            Ok(c) => {
                *creds = Some(c.clone());
                c
            }
            Err(e) => return Answer::Failed(PlatformError::new(ErrorKind::Refused, "credentials", e.to_string())),
        },
    };
    let app_id = app.spec.app_id.as_str();
    let result = match effect {
        Effect::Read => ctx.platform.sharing_state(&c, app_id).await.map(Answer::Read),
        Effect::EnableSharing(details) => {
            ctx.platform.set_sharing(&c, app_id, true, details).await.map(|_| Answer::SharingSet(true))
        }
        Effect::DisableSharing => {
            ctx.platform.set_sharing(&c, app_id, false, &Default::default()).await.map(|_| Answer::SharingSet(false))
        }
        Effect::GenerateLink(products) => ctx.platform.generate_link(&c, app_id, products).await.map(Answer::Generated),
        Effect::AddFinalizer | Effect::RemoveFinalizer => {
            return Answer::Failed(PlatformError::new(ErrorKind::Refused, "distribution", "not a platform step"));
        }
    };
    result.unwrap_or_else(Answer::Failed)
}

/// Adds or removes [`FINALIZER`], guarded by the resourceVersion the decision saw.
async fn set_finalizer(
    api: &Api<DistributionPolicy>,
    policy: &DistributionPolicy,
    present: bool,
) -> Result<DistributionPolicy, Error> {
    let mut finalizers: Vec<String> = policy.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
    if present {
        finalizers.push(FINALIZER.to_string());
    }
    let patch = serde_json::json!({
        "metadata": { "finalizers": finalizers, "resourceVersion": policy.resource_version() }
    });
    Ok(api.patch(&policy.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?)
}

pub fn error_policy(policy: Arc<DistributionPolicy>, error: &Error, ctx: Arc<Context>) -> Action {
    retry_later(NAME, policy.as_ref(), error, &ctx)
}

/// Runs the DistributionPolicy controller until `shutdown` resolves. A policy is reconciled again
/// when its app changes, when another policy for the same app changes (conflicts), and when its
/// drift interval is up.
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
