//! The ForgeApp controller: reports latest versions per environment and the
//! `PermissionChangeWithoutMajor` rule. It has nothing to act on yet, only status to report.

use std::sync::Arc;
use std::time::Instant;

use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use kube::{Api, ResourceExt};
use tracing::{info, warn};

use super::{Context, Error, apply_status, object_key, publish_event};
use crate::api::{ForgeApp, ForgeAppStatus};
use crate::rules::conditions;
use crate::rules::forge_app::{READY, desired_status};
use crate::telemetry::{ControllerLabel, ReconcileLabels};

const NAME: &str = "forgeapp";

/// Observes one ForgeApp, decides its status, and reports it if it changed.
pub async fn reconcile(app: Arc<ForgeApp>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&app, &ctx).await;
    ctx.metrics
        .reconcile_seconds
        .get_or_create(&ControllerLabel { controller: NAME })
        .observe(started.elapsed().as_secs_f64());
    let outcome = if result.is_ok() { "success" } else { "error" };
    ctx.metrics.reconciliations.get_or_create(&ReconcileLabels { controller: NAME, result: outcome }).inc();
    if result.is_ok() {
        ctx.backoff.reset(&object_key(app.as_ref()));
    }
    result
}

async fn reconcile_inner(app: &ForgeApp, ctx: &Context) -> Result<Action, Error> {
    // Decide: a pure function of the object and what was reported before.
    let previous = app.status.as_ref();
    let desired = desired_status(app, previous, &super::now());

    // Report: write only when something changed, so an idle operator sends no writes.
    if previous != Some(&desired) {
        apply_status(&ctx.client, app, &desired).await?;
        report_ready_transition(ctx, app, previous, &desired).await;
    }
    Ok(Action::await_change())
}

async fn report_ready_transition(
    ctx: &Context,
    app: &ForgeApp,
    previous: Option<&ForgeAppStatus>,
    desired: &ForgeAppStatus,
) {
    let before = previous.and_then(|s| conditions::find(&s.conditions, READY));
    let Some(after) = conditions::find(&desired.conditions, READY) else { return };
    if before.map(|c| (&c.status, &c.reason)) == Some((&after.status, &after.reason)) {
        return;
    }
    let ready = after.status == crate::api::TRUE;
    info!(app = %app.name_any(), namespace = ?app.namespace(), ready, reason = %after.reason, "ForgeApp readiness changed");
    publish_event(ctx, app, !ready, &after.reason, after.message.clone(), "Reconcile").await;
}

/// On failure, retry with a per-object backoff that grows with each consecutive failure.
pub fn error_policy(app: Arc<ForgeApp>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff.next_delay(&object_key(app.as_ref()));
    warn!(app = %app.name_any(), namespace = ?app.namespace(), %error, retry_in = ?delay, "ForgeApp reconcile failed");
    Action::requeue(delay)
}

/// Runs the ForgeApp controller until `shutdown` resolves.
pub async fn run(
    api: Api<ForgeApp>,
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    use futures::StreamExt;
    Controller::new(api, watcher::Config::default().any_semantic())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}
