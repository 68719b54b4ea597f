//! The Installation controller: installs an app on a site through the platform port, rolls out
//! minors, upgrades majors when allowed, uninstalls on deletion (finalizer), and records in status
//! what is installed. Status is the record: the platform task of an install or upgrade is recorded
//! before it is waited on, so an operator killed mid-way resumes the task instead of starting a
//! second, and an install the platform reports as already done counts as done.

use std::sync::Arc;

use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, ResourceExt};
use tracing::info;

use super::site;
use super::{Context, Error, apply_status_guarded, instrumented, publish_event, retry_later};
use crate::api::{DeletionPolicy, ForgeApp, Installation, InstallationStatus, TaskAction, TaskRecord};
use crate::platform::{ErrorKind, PlatformError};
use crate::rules::conditions;
use crate::rules::installation::{self as rules, Facts, Step, step_of};
use crate::rules::versions::Version;

const NAME: &str = "installation";
/// Uninstalls from the site before the Installation object goes away.
pub const FINALIZER: &str = "forgeops.dev/uninstall";

pub async fn reconcile(inst: Arc<Installation>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api: Api<Installation> = Api::namespaced(ctx.client.clone(), &inst.namespace().unwrap_or_default());
    instrumented(&ctx, NAME, inst.as_ref(), async {
        let result = finalizer(&api, FINALIZER, inst.clone(), |event| async {
            match event {
                Finalizer::Apply(inst) => apply(&inst, &ctx).await,
                Finalizer::Cleanup(inst) => {
                    let done = uninstall(&inst, &ctx).await;
                    if done.is_ok() {
                        ctx.forget_written(inst.as_ref());
                    }
                    done
                }
            }
        })
        .await;
        super::finalized(result)
    })
    .await
}

/// What was observed about the world around one Installation.
struct Observed {
    app: Option<ForgeApp>,
    duplicate_of: Option<String>,
}

async fn observe(inst: &Installation, ctx: &Context) -> Result<Observed, Error> {
    let ns = inst.namespace().unwrap_or_default();
    let spec = &inst.spec;
    // From the watch caches: no request per reconcile.
    let app = ctx.caches.app(&ns, &spec.app_ref.name).map(|a| a.as_ref().clone());
    // The oldest Installation of the same app environment on the same site is the one that counts.
    let key = |i: &Installation| (i.metadata.creation_timestamp.clone().map(|t| t.0), i.name_any());
    let duplicate_of = ctx
        .caches
        .installations_on_site(&ns, &spec.site)
        .into_iter()
        .filter(|o| o.spec.app_ref == spec.app_ref && o.spec.environment == spec.environment)
        .filter(|o| o.metadata.deletion_timestamp.is_none() && o.name_any() != inst.name_any())
        .filter(|o| key(o) < key(inst))
        .map(|o| o.name_any())
        .next();
    Ok(Observed { app, duplicate_of })
}

fn installed_version(status: &InstallationStatus) -> Option<Version> {
    status.installed_version.as_deref().and_then(Version::parse)
}

async fn apply(cached: &Installation, ctx: &Context) -> Result<Action, Error> {
    let observed = observe(cached, ctx).await?;
    let facts = Facts { app: observed.app.as_ref(), duplicate_of: observed.duplicate_of.clone() };
    // The watch cache can lag behind this process's own last status write. Before acting on the
    // platform, make sure the decision rests on the latest record, so a cached, stale status never
    // repeats an action. The cache is known to hold our last write when it shows the resourceVersion
    // that write returned; only otherwise is the object read afresh.
    // (A stale copy that shows a task would wait on a task that is already done and recorded.)
    let fresh;
    let mut inst = cached;
    if ctx.may_be_stale(cached) {
        let api: Api<Installation> = Api::namespaced(ctx.client.clone(), &cached.namespace().unwrap_or_default());
        fresh = api.get(&cached.name_any()).await?;
        inst = &fresh;
    }
    act_and_report(inst, &observed, &facts, ctx).await
}

async fn act_and_report(
    inst: &Installation,
    observed: &Observed,
    facts: &Facts<'_>,
    ctx: &Context,
) -> Result<Action, Error> {
    let previous = inst.status.clone().unwrap_or_default();
    let mut status = previous.clone();
    if let Some(app) = &observed.app {
        follow_the_platform(ctx, inst, app, &mut status).await;
    }
    let decision = rules::decide(inst, installed_version(&status), facts);
    let mut platform_error: Option<(Step, PlatformError)> = None;
    let mut requeue = None;

    if let Some(app) = &observed.app {
        let acting = matches!(decision.step, Step::Install(_) | Step::RollOutMinor(_) | Step::UpgradeMajor(_));
        let creds = if status.task.is_some() || acting {
            match ctx.credentials_for(app).await {
                Ok(creds) => Some(creds),
                Err(e) => {
                    // No usable credentials: reported on the conditions (what to fix), retried with backoff.
                    let step = status.task.as_ref().map(step_of).unwrap_or(decision.step);
                    let message = e.to_string();
                    platform_error =
                        Some((step, PlatformError::new(ErrorKind::BadCredentials, "credentials", message)));
                    None
                }
            }
        } else {
            None
        };
        if let Some(creds) = creds {
            let target = site::target(inst, app);
            if let Some(task) = status.task.clone() {
                // A task recorded earlier (perhaps by a process that was killed): wait for it.
                let step = step_of(&task);
                match site::poll(ctx, &creds, &task.id).await {
                    Ok(site::TaskOutcome::Complete) => {
                        status.task = None;
                        record_done(ctx, inst, &mut status, step).await;
                        if let Ok(Some(found)) = site::find_installation(ctx, &creds, &target).await {
                            status.installation_id = Some(found.id);
                        }
                    }
                    // Polled again soon, without holding one of the controller's slots meanwhile.
                    Ok(site::TaskOutcome::StillRunning) => requeue = Some(Action::requeue(site::TASK_POLL)),
                    Ok(site::TaskOutcome::Failed(said)) => {
                        // Dropped: the next attempt decides afresh (with backoff).
                        status.task = None;
                        let message =
                            format!("{} of {} failed on the platform: {said}", task.action_str(), inst.spec.site);
                        platform_error = Some((
                            step,
                            PlatformError::new(ErrorKind::Unavailable, "forge_cli_getInstallationTask", message),
                        ));
                    }
                    Err(e) => {
                        ctx.saw_platform_error(&creds, &e);
                        platform_error = Some((step, e));
                    }
                }
            } else if let Step::Install(to) | Step::RollOutMinor(to) | Step::UpgradeMajor(to) = decision.step {
                let action =
                    if matches!(decision.step, Step::Install(_)) { TaskAction::Install } else { TaskAction::Upgrade };
                // A site that already has the app (a customer installed it through the link, someone
                // ran `forge install`, or a task of ours finished before we could record it) is adopted.
                let existing = match action {
                    TaskAction::Install => site::find_installation(ctx, &creds, &target).await,
                    _ => Ok(None),
                };
                let started = match existing {
                    Ok(Some(found)) => {
                        adopt(ctx, inst, &mut status, found).await;
                        Ok(None)
                    }
                    Ok(None) => site::start(ctx, &creds, &target, action, to).await.map(Some),
                    Err(e) => Err(e),
                };
                match started {
                    Ok(None) => {}
                    Ok(Some(site::Started::Task(id))) => {
                        // Record the task before waiting on it: a restart resumes it, never starts a second.
                        status.task =
                            Some(TaskRecord { id, action, version: Some(to.to_string()), started_at: super::now() });
                        requeue = Some(Action::requeue(site::TASK_POLL));
                    }
                    Ok(Some(site::Started::AlreadyDone)) => record_done(ctx, inst, &mut status, decision.step).await,
                    Err(e) => {
                        ctx.saw_platform_error(&creds, &e);
                        platform_error = Some((decision.step, e));
                    }
                }
            }
        }
    }

    // Report: the conditions follow from what is installed now.
    let now_installed = rules::decide(inst, installed_version(&status), facts);
    let failure = platform_error.as_ref().map(|(step, e)| (*step, e));
    let report = rules::report(&now_installed, status.installed_version.is_some(), status.task.as_ref(), failure);
    status.available_version = now_installed.available.map(|v| v.to_string());
    status.permissions_up_to_date = report.permissions_up_to_date;
    status.observed_generation = inst.metadata.generation;
    let blocker = rules::new_blocker(&previous.conditions, &report.conditions);
    status.conditions =
        conditions::merge(&previous.conditions, &report.conditions, inst.metadata.generation, &super::now());
    if status != previous {
        let written = apply_status_guarded(&ctx.client, inst, &status).await?;
        ctx.wrote(&written);
        if let Some((reason, message)) = blocker {
            publish_event(ctx, inst, true, reason.as_str(), message, "Reconcile").await;
        }
    }
    // A platform failure is an error, so the object is retried with its growing backoff.
    match platform_error {
        Some((_, error)) => Err(error.into()),
        None => Ok(requeue.unwrap_or_else(Action::await_change)),
    }
}

/// What the platform did on its own since the status was written: a minor rolled out, or a
/// bulk-upgrade rollout moved the installation to a newer major. Taken from the app's last
/// platform listing, and only forward (the platform never downgrades; an older listing never
/// undoes a newer record).
async fn follow_the_platform(ctx: &Context, inst: &Installation, app: &ForgeApp, status: &mut InstallationStatus) {
    let (Some(current), None) = (installed_version(status), status.task.as_ref()) else { return };
    let key = crate::platform::environment_key(&inst.spec.environment);
    let Some(listed) = ctx.platform_installation(&app.spec.app_id, key, &inst.spec.site) else { return };
    let Some(now) = listed.version.as_deref().and_then(Version::parse) else { return };
    if now <= current {
        return;
    }
    status.installed_version = Some(now.to_string());
    status.installed_major = Some(now.major);
    status.installation_id = Some(listed.id);
    let (reason, note) = if now.major == current.major {
        ("MinorVersionRolledOut", format!("the platform rolled out {now} (from {current})"))
    } else {
        ("UpgradedByRollout", format!("a bulk-upgrade rollout on the platform upgraded {current} to {now}"))
    };
    info!(installation = %inst.name_any(), site = %inst.spec.site, version = %now, reason, "followed the platform");
    // A rollout moves thousands of installations at once: its BulkUpgrade's Events tell the story,
    // not one Event per Installation.
    if now.major == current.major {
        publish_event(ctx, inst, false, reason, note, "Reconcile").await;
    }
}

/// Records in `status` an installation found on the site, with an Event.
async fn adopt(
    ctx: &Context,
    inst: &Installation,
    status: &mut InstallationStatus,
    found: crate::platform::InstallationInfo,
) {
    let version = found.version.as_deref().and_then(Version::parse);
    status.installed_version = version.map(|v| v.to_string());
    status.installed_major = version.map(|v| v.major);
    status.installed_at = Some(super::now());
    status.installation_id = Some(found.id);
    status.adopted = true;
    let note = format!(
        "adopted the installation already on {} (version {})",
        inst.spec.site,
        version.map(|v| v.to_string()).unwrap_or_else(|| "unknown".into())
    );
    info!(installation = %inst.name_any(), site = %inst.spec.site, "adopted an existing installation");
    publish_event(ctx, inst, false, "Adopted", note, "Reconcile").await;
}

/// Records in `status` that `step` is done on the site, with an Event.
async fn record_done(ctx: &Context, inst: &Installation, status: &mut InstallationStatus, step: Step) {
    let (Step::Install(to) | Step::RollOutMinor(to) | Step::UpgradeMajor(to)) = step else { return };
    let from = status.installed_version.clone();
    if from.as_deref() == Some(to.to_string().as_str()) {
        return;
    }
    status.installed_version = Some(to.to_string());
    status.installed_major = Some(to.major);
    let (reason, note) = match step {
        Step::Install(_) => {
            status.installed_at = Some(super::now());
            ("Installed", format!("installed version {to} on {}", inst.spec.site))
        }
        _ if from.as_deref().and_then(Version::parse).is_some_and(|f| f.major == to.major) => {
            ("MinorVersionRolledOut", format!("rolled out {to} (from {})", from.unwrap_or_default()))
        }
        _ => ("Upgraded", format!("upgraded to {to} (from {})", from.unwrap_or_default())),
    };
    info!(installation = %inst.name_any(), site = %inst.spec.site, version = %to, reason, "platform action done");
    publish_event(ctx, inst, false, reason, note, "Reconcile").await;
}

async fn uninstall(inst: &Installation, ctx: &Context) -> Result<Action, Error> {
    let Some(status) = inst.status.as_ref().filter(|s| s.installed_version.is_some() || s.task.is_some()) else {
        return Ok(Action::await_change());
    };
    if inst.spec.deletion_policy == DeletionPolicy::Orphan {
        let note = format!(
            "left version {} installed on {} (deletionPolicy Orphan)",
            status.installed_version.as_deref().unwrap_or("?"),
            inst.spec.site
        );
        info!(installation = %inst.name_any(), site = %inst.spec.site, "orphaned");
        publish_event(ctx, inst, false, "Orphaned", note, "Delete").await;
        return Ok(Action::await_change());
    }
    // The app's finalizer keeps it while installations exist, so it is normally still here.
    let Some(app) = Api::<ForgeApp>::namespaced(ctx.client.clone(), &inst.namespace().unwrap_or_default())
        .get_opt(&inst.spec.app_ref.name)
        .await?
    else {
        tracing::warn!(installation = %inst.name_any(), "the ForgeApp is gone: nothing to uninstall with");
        return Ok(Action::await_change());
    };
    let creds = ctx.credentials_for(&app).await?;
    if let Err(e) = site::uninstall(ctx, &creds, inst, &site::target(inst, &app)).await {
        if let Error::Platform(p) = &e {
            ctx.saw_platform_error(&creds, p);
        }
        return Err(e);
    }
    let note =
        format!("uninstalled version {} from {}", status.installed_version.as_deref().unwrap_or("?"), inst.spec.site);
    info!(installation = %inst.name_any(), site = %inst.spec.site, "uninstalled");
    publish_event(ctx, inst, false, "Uninstalled", note, "Delete").await;
    Ok(Action::await_change())
}

pub fn error_policy(inst: Arc<Installation>, error: &Error, ctx: Arc<Context>) -> Action {
    retry_later(NAME, inst.as_ref(), error, &ctx)
}

/// Runs the Installation controller until `shutdown` resolves. Installations come from the shared
/// watch cache (no watch of its own); they are re-checked as soon as their app changes in a way
/// that matters to them (watched, never polled; not on every count the app reports). `_api` is not
/// watched.
pub async fn run(ctx: Arc<Context>, shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static) {
    use futures::StreamExt;
    let config = kube::runtime::controller::Config::default().concurrency(super::concurrency::INSTALLATIONS);
    // The shared caches make the feed once, and only this controller takes it.
    let Some(feed) = ctx.caches.take_installation_feed() else {
        tracing::error!("the Installation controller's feed was taken already: the controller does not run");
        return;
    };
    let controller = Controller::for_shared_stream(feed, ctx.caches.installations.clone()).with_config(config);
    // Installations whose platform listing changed (a rollout moved them), from the listing refresh.
    let triggers = ctx
        .installation_trigger_stream()
        .map(|rx| futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) }).boxed());
    let caches = ctx.caches.clone();
    let app_changed = super::dependents_of_changed_apps(
        ctx.caches.take_app_changes(super::caches::Dependents::Installations),
        move |ns, app| caches.installation_refs_of_app(ns, app),
    );
    controller
        .reconcile_on(app_changed)
        .reconcile_on(triggers.unwrap_or_else(|| futures::stream::empty().boxed()))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}
