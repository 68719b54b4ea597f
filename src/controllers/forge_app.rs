//! The ForgeApp controller: reads the app from the platform (its account, and the versions deployed in
//! each managed environment with their permissions and installation counts) on an interval and on
//! demand, reports it with installation counts from the cluster, and holds an app (finalizer)
//! while installations use it. Status is written only when something changed.

use std::sync::Arc;

use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, ResourceExt};
use tracing::info;

use super::{Context, Error, apply_status, instrumented, publish_event, retry_later};
use crate::api::{AccountStatus, ForgeApp, ForgeAppStatus};
use crate::ownership::Claim;
use crate::platform::{ErrorKind, PlatformError};
use crate::rules::forge_app::{
    InstallationSummary, Observation, Reason, app_versions, desired_status, next_look, ready_change, refresh_due,
};
use crate::rules::versions::Version;

const NAME: &str = "forgeapp";
/// Holds a ForgeApp until no Installation uses it.
pub const FINALIZER: &str = "forgeops.dev/installations";

/// Observes one ForgeApp and its installations, decides its status, and reports it if it changed.
pub async fn reconcile(app: Arc<ForgeApp>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api: Api<ForgeApp> = Api::namespaced(ctx.client.clone(), &app.namespace().unwrap_or_default());
    instrumented(&ctx, NAME, app.as_ref(), async {
        let result = finalizer(&api, FINALIZER, app.clone(), |event| async {
            match event {
                Finalizer::Apply(app) => report(&app, &ctx).await.map(|(_, next)| Action::requeue(next)),
                Finalizer::Cleanup(app) => match report(&app, &ctx).await?.0 {
                    0 => match rollouts_in_flight(&app, &ctx).await? {
                        none if none.is_empty() => {
                            // Nothing uses the app any more: another ForgeApp may claim it now.
                            ctx.release_claim(&app).await?;
                            Ok(Action::await_change())
                        }
                        names => Err(Error::NotYet {
                            what: format!(
                                "ForgeApp {} is kept while BulkUpgrade {} has a rollout on the platform (without \
                                 the app nothing could follow or cancel it): set spec.cancelled: true on it, or \
                                 wait for it to finish",
                                app.name_any(),
                                names.join(", ")
                            ),
                            after: std::time::Duration::from_secs(5),
                        }),
                    },
                    n => Err(Error::InstallationsExist(format!(
                        "{n} installation(s) still use ForgeApp {}",
                        app.name_any()
                    ))),
                },
            }
        })
        .await;
        super::finalized(result)
    })
    .await
}

/// The BulkUpgrades of `app` whose rollout is under way on the platform (running, or being
/// started): the app's deletion waits for them, since only the app's credentials can follow or
/// cancel a rollout. Read from the API: an app is deleted rarely.
async fn rollouts_in_flight(app: &ForgeApp, ctx: &Context) -> Result<Vec<String>, Error> {
    use crate::api::{BulkUpgrade, RolloutPhase};
    let api: Api<BulkUpgrade> = Api::namespaced(ctx.client.clone(), &app.namespace().unwrap_or_default());
    let list = api.list(&kube::api::ListParams::default()).await?;
    Ok(list
        .items
        .iter()
        .filter(|b| b.spec.app_ref.name == app.name_any())
        .filter(|b| {
            b.status.as_ref().is_some_and(|s| {
                s.starting.is_some() || s.rollouts.last().is_some_and(|r| r.status == RolloutPhase::Running)
            })
        })
        .map(|b| b.name_any())
        .collect())
}

/// Observes the app on the platform (when due) and its installations, decides and reports status;
/// returns how many installations use it and when to look again.
async fn report(app: &ForgeApp, ctx: &Context) -> Result<(usize, std::time::Duration), Error> {
    // Observe: the Installations of this app, from the watch cache.
    let summaries: Vec<InstallationSummary> = ctx
        .caches
        .installations_of_app(&app.namespace().unwrap_or_default(), &app.name_any())
        .into_iter()
        .map(|i| InstallationSummary {
            environment: i.spec.environment.clone(),
            installed: i.status.as_ref().and_then(|s| s.installed_version.as_deref()).and_then(Version::parse),
        })
        .collect();

    // Observe the platform when a refresh is due.
    let key = super::object_key(app);
    let since = ctx.since_refresh(&key);
    let observation = if app.metadata.deletion_timestamp.is_none() && refresh_due(app, since) {
        let observed = observe(app, ctx).await;
        ctx.mark_refreshed(&key);
        observed
    } else {
        Observation::NotRead
    };

    // Decide: a pure function of the object, what the platform said, its installations and what
    // was reported before.
    let previous = app.status.as_ref();
    let desired = desired_status(app, previous, &observation, &summaries, &super::now());

    // Report: write only when something changed, so an idle operator sends no writes; a change of
    // the counts alone (thousands of installs in a row) is written at most once per COUNTS_EVERY.
    if previous != Some(&desired) {
        let recount_only = previous.is_some_and(|p| p.without_counts() == desired.without_counts());
        let wait = if recount_only { ctx.recount_wait(&key, COUNTS_EVERY) } else { None };
        if let Some(wait) = wait {
            return Ok((summaries.len(), wait));
        }
        apply_status(&ctx.client, app, &desired).await?;
        ctx.counted(&key);
        report_ready_transition(ctx, app, previous, &desired).await;
    }
    let interval = crate::rules::forge_app::refresh_interval(&ForgeApp { status: Some(desired), ..app.clone() });
    Ok((summaries.len(), next_look(&observation, interval, ctx.since_refresh(&key))))
}

/// Installation counts alone are written at most this often.
const COUNTS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads the app from the platform: the account, the environments, and each managed environment's
/// versions with their installation counts.
async fn observe(app: &ForgeApp, ctx: &Context) -> Observation {
    let app_id = app.spec.app_id.as_str();
    // One ForgeApp per app in the cluster: only the owner reads or changes it on the platform.
    match ctx.claim(app).await {
        Ok(Claim::Ours) => {}
        Ok(Claim::Theirs(owner)) => {
            let message = format!(
                "app {app_id} belongs to ForgeApp {owner} (namespace {}): an app has one ForgeApp in the cluster, so \
                 nothing is done on the platform for this one, nor for its Installations, DistributionPolicies or \
                 BulkUpgrades. Delete this ForgeApp, or have the owner's namespace manage the app",
                owner.split('/').next().unwrap_or_default()
            );
            return Observation::Failed { reason: Reason::Conflict, message };
        }
        Ok(Claim::Unclaimed) => {
            let message = "another ForgeApp is claiming the same app at the same moment; looking again".to_string();
            return Observation::Failed { reason: Reason::Refreshing, message };
        }
        Err(e) => {
            let message = format!("could not claim the app (its owner Lease): {e}; retrying");
            return Observation::Failed { reason: Reason::PlatformUnavailable, message };
        }
    }
    let creds = match ctx.credentials_for(app).await {
        Ok(creds) => creds,
        Err(e) => {
            use crate::platform::credentials::CredentialsError as C;
            let reason = match &e {
                Error::Credentials(C::NotGranted { .. } | C::NotPermitted { .. }) => Reason::CredentialsNotGranted,
                _ => Reason::BadCredentials,
            };
            return Observation::Failed { reason, message: e.to_string() };
        }
    };
    let result: Result<Observation, PlatformError> = async {
        let me = ctx.platform.whoami(&creds).await?;
        let existing = ctx.platform.environments(&creds, app_id).await?;
        let mut environments = Vec::new();
        for name in &app.spec.environments {
            let key = crate::platform::environment_key(name);
            if !existing.iter().any(|e| e.key == key) {
                environments.push((name.clone(), None));
                continue;
            }
            let versions = ctx.platform.versions(&creds, app_id, key).await?;
            let counts = ctx.platform.installation_counts(&creds, app_id, key).await?;
            environments.push((name.clone(), Some(app_versions(&versions, &counts))));
        }
        // Every installation of the app, a page at a time: what the platform did on its own
        // (minor roll-outs, rollouts) reaches the Installations from here, not a request each.
        super::listing::refresh(ctx, app, &creds).await?;
        Ok(Observation::Read { account: AccountStatus { account_id: me.account_id, name: me.name }, environments })
    }
    .await;
    result.unwrap_or_else(|e| {
        ctx.saw_platform_error(&creds, &e);
        let (reason, message) = match e.kind {
            ErrorKind::BadCredentials => (Reason::BadCredentials, e.to_string()),
            ErrorKind::NotFound | ErrorKind::PermissionDenied => (
                Reason::AppNotFound,
                format!(
                    "app {app_id} not found on the platform, or {} may not see it: check spec.appId, and that the \
                     credentials are those of the app's owner ({e})",
                    creds.who()
                ),
            ),
            _ => (Reason::PlatformUnavailable, format!("the platform could not be read: {e}; retrying")),
        };
        Observation::Failed { reason, message }
    })
}

async fn report_ready_transition(
    ctx: &Context,
    app: &ForgeApp,
    previous: Option<&ForgeAppStatus>,
    desired: &ForgeAppStatus,
) {
    let Some(change) = ready_change(previous, desired) else { return };
    let (ready, reason) = (change.ready, change.reason);
    info!(app = %app.name_any(), namespace = ?app.namespace(), ready, %reason, "ForgeApp readiness changed");
    publish_event(ctx, app, !ready, reason.as_str(), change.message, "Reconcile").await;
}

pub fn error_policy(app: Arc<ForgeApp>, error: &Error, ctx: Arc<Context>) -> Action {
    retry_later(NAME, app.as_ref(), error, &ctx)
}

/// Runs the ForgeApp controller until `shutdown` resolves. An app is reconciled again whenever one
/// of its Installations changes or goes away (told by the shared Installation cache, not a watch of
/// its own: `_installations` is not watched).
pub async fn run(
    api: Api<ForgeApp>,
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    use futures::StreamExt;
    // The shared caches make the feed once, and only this controller takes it.
    let Some(feed) = ctx.caches.take_app_feed() else {
        tracing::error!("the ForgeApp controller's feed was taken already: the controller does not run");
        return;
    };
    use kube::runtime::WatchStreamExt;
    let (reader, writer) = kube::runtime::reflector::store();
    let apps = super::decoded::watch(api, ctx.undecodable.clone()).reflect(writer).applied_objects();
    Controller::for_stream(apps, reader)
        .with_config(kube::runtime::controller::Config::default().concurrency(super::concurrency::MEDIUM))
        .reconcile_on(futures::stream::unfold(feed, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) }))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}
