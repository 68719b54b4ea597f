//! The ForgeApp controller: reports latest versions and installation counts per environment and the
//! `PermissionChangeWithoutMajor` rule, and holds an app (finalizer) while installations use it.

use std::sync::Arc;

use kube::api::ListParams;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, ResourceExt};
use tracing::info;

use super::{Context, Error, apply_status, instrumented, publish_event, retry_later};
use crate::api::{ForgeApp, ForgeAppStatus, Installation};
use crate::rules::conditions;
use crate::rules::forge_app::{InstallationSummary, READY, desired_status};
use crate::rules::versions::Version;

const NAME: &str = "forgeapp";
/// Holds a ForgeApp until no Installation uses it.
pub const FINALIZER: &str = "forgeops.dev/installations";

/// Observes one ForgeApp and its installations, decides its status, and reports it if it changed.
pub async fn reconcile(app: Arc<ForgeApp>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api: Api<ForgeApp> = Api::namespaced(ctx.client.clone(), &app.namespace().unwrap_or_default());
    instrumented(&ctx, NAME, app.as_ref(), async {
        finalizer(&api, FINALIZER, app.clone(), |event| async {
            match event {
                Finalizer::Apply(app) => report(&app, &ctx).await.map(|_| Action::await_change()),
                Finalizer::Cleanup(app) => match report(&app, &ctx).await? {
                    0 => Ok(Action::await_change()),
                    n => Err(Error::InstallationsExist(format!(
                        "{n} installation(s) still use ForgeApp {}",
                        app.name_any()
                    ))),
                },
            }
        })
        .await
        .map_err(Error::from)
    })
    .await
}

/// Observes the app's installations, decides and reports status; returns how many installations use it.
async fn report(app: &ForgeApp, ctx: &Context) -> Result<usize, Error> {
    // Observe: the Installations of this app (the field is selectable, so the server filters).
    let installations: Api<Installation> = Api::namespaced(ctx.client.clone(), &app.namespace().unwrap_or_default());
    let params = ListParams::default().fields(&format!("spec.appRef.name={}", app.name_any()));
    let summaries: Vec<InstallationSummary> = installations
        .list(&params)
        .await?
        .items
        .into_iter()
        .map(|i| InstallationSummary {
            environment: i.spec.environment,
            installed: i.status.and_then(|s| s.installed_version).and_then(|v| parse_version(&v)),
        })
        .collect();

    // Decide: a pure function of the object, its installations and what was reported before.
    let previous = app.status.as_ref();
    let desired = desired_status(app, previous, &summaries, &super::now());

    // Report: write only when something changed, so an idle operator sends no writes.
    if previous != Some(&desired) {
        apply_status(&ctx.client, app, &desired).await?;
        report_ready_transition(ctx, app, previous, &desired).await;
    }
    Ok(summaries.len())
}

/// Parses `major.minor`.
pub fn parse_version(text: &str) -> Option<Version> {
    let (major, minor) = text.split_once('.')?;
    Some(Version { major: major.parse().ok()?, minor: minor.parse().ok()? })
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

pub fn error_policy(app: Arc<ForgeApp>, error: &Error, ctx: Arc<Context>) -> Action {
    retry_later(NAME, app.as_ref(), error, &ctx)
}

/// Runs the ForgeApp controller until `shutdown` resolves. An app is reconciled again whenever one
/// of its Installations changes.
pub async fn run(
    api: Api<ForgeApp>,
    installations: Api<Installation>,
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    use futures::StreamExt;
    Controller::new(api, watcher::Config::default().any_semantic())
        .watches(installations, watcher::Config::default().any_semantic(), |inst: Installation| {
            inst.namespace().map(|ns| ObjectRef::new(&inst.spec.app_ref.name).within(&ns))
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_parse() {
        assert_eq!(super::parse_version("2.13").map(|v| (v.major, v.minor)), Some((2, 13)));
        assert_eq!(super::parse_version("2"), None);
        assert_eq!(super::parse_version("x.1"), None);
    }
}
