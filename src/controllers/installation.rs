//! The Installation controller: installs an app on a site through the platform port, rolls out
//! minors, upgrades majors when allowed, uninstalls on deletion (finalizer), and records in status
//! what is installed. Status is the record: the platform task of an install or upgrade is recorded
//! before it is waited on, so an operator killed mid-way resumes the task instead of starting a
//! second, and an install the platform reports as already done counts as done.

use std::sync::Arc;
use std::time::Duration;

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
    /// The app's installation link, from a DistributionPolicy of the app in this namespace.
    link: Option<String>,
}

/// How long a lost answer is given to show in the platform's installations before the request
/// is sent again (the platform's tasks take seconds).
pub const CONFIRM_WINDOW: Duration = Duration::from_secs(20);
/// How often the platform is read while a lost answer is confirmed.
const CONFIRM_POLL: Duration = Duration::from_secs(2);
/// How often a customer's site is looked at for the install its admin makes through the link.
const LINK_POLL: Duration = Duration::from_secs(60);

fn observe(inst: &Installation, ctx: &Context) -> Observed {
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
    let link = ctx
        .caches
        .policies_of_app(&ns, &spec.app_ref.name)
        .iter()
        .find_map(|p| p.status.as_ref().and_then(|s| s.installation_link.clone()));
    Observed { app, duplicate_of, link }
}

fn installed_version(status: &InstallationStatus) -> Option<Version> {
    status.installed_version.as_deref().and_then(Version::parse)
}

/// The facts the rules read, with what `status` says now about the site.
fn facts<'a>(observed: &'a Observed, inst: &Installation, status: &InstallationStatus) -> Facts<'a> {
    let mut with_status = inst.clone();
    with_status.status = Some(status.clone());
    Facts {
        app: observed.app.as_ref(),
        duplicate_of: observed.duplicate_of.clone(),
        customer_site: with_status.on_customer_site(),
        link: observed.link.clone(),
    }
}

/// The watch cache can lag behind this process's own last status write. Before acting on the
/// platform, make sure the decision rests on the latest record, so a cached, stale status never
/// repeats an action. The cache is known to hold our last write when it shows the resourceVersion
/// that write returned; only otherwise is the object read afresh.
async fn latest(cached: &Installation, ctx: &Context) -> Result<Installation, Error> {
    if !ctx.may_be_stale(cached) {
        return Ok(cached.clone());
    }
    let api: Api<Installation> = Api::namespaced(ctx.client.clone(), &cached.namespace().unwrap_or_default());
    Ok(api.get(&cached.name_any()).await?)
}

async fn apply(cached: &Installation, ctx: &Context) -> Result<Action, Error> {
    let observed = observe(cached, ctx);
    let inst = latest(cached, ctx).await?;
    act_and_report(&inst, &observed, ctx).await
}

fn elapsed_since(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> Duration {
    let now = super::now();
    Duration::try_from(now.0.duration_since(t.0)).unwrap_or_default()
}

/// What an action on the platform ended in, for the report.
#[derive(Default)]
struct Acted {
    platform_error: Option<(Step, PlatformError)>,
    requeue: Option<Action>,
    /// The object as written before a request was sent (its pre-send record); later writes
    /// start from it.
    written: Option<Installation>,
    /// The pre-send record could not be written: nothing was sent.
    not_sent: Option<Error>,
}

impl Acted {
    /// The object as it is on the API server now.
    fn base<'a>(&'a self, inst: &'a Installation) -> &'a Installation {
        self.written.as_ref().unwrap_or(inst)
    }
}

/// Records `request` in status before it is sent, so a process stopped between the send and the
/// record of its answer confirms from the platform's installations instead of sending it again.
/// Answers false (with the error in `acted`) when the record could not be written: then nothing
/// may be sent.
async fn record_before_sending(
    ctx: &Context,
    inst: &Installation,
    status: &mut InstallationStatus,
    request: crate::api::UnconfirmedRequest,
    acted: &mut Acted,
) -> bool {
    status.unconfirmed = Some(request);
    match write_status(ctx, acted.base(inst), status).await {
        Ok(written) => {
            acted.written = Some(written);
            true
        }
        Err(e) => {
            status.unconfirmed = None;
            acted.not_sent = Some(e);
            false
        }
    }
}

async fn act_and_report(inst: &Installation, observed: &Observed, ctx: &Context) -> Result<Action, Error> {
    let previous = inst.status.clone().unwrap_or_default();
    let mut status = previous.clone();
    if let Some(app) = &observed.app {
        follow_the_platform(ctx, inst, app, &mut status).await;
    }
    let decision = rules::decide(inst, installed_version(&status), &facts(observed, inst, &status));
    let mut acted = Acted::default();

    if let Some(app) = &observed.app {
        let acting = matches!(decision.step, Step::Install(_) | Step::UpgradeMajor(_) | Step::AwaitLinkInstall);
        if status.task.is_some() || status.unconfirmed.is_some() || acting {
            match ctx.credentials_for(app).await {
                Ok(creds) => acted = act(ctx, inst, app, &creds, &decision, &mut status).await,
                Err(e) => {
                    // No usable credentials: reported on the conditions (what to fix), retried with backoff.
                    let step = status.task.as_ref().map(step_of).unwrap_or(decision.step);
                    let error = PlatformError::new(ErrorKind::BadCredentials, "credentials", e.to_string());
                    acted.platform_error = Some((step, error));
                }
            }
        }
    }

    // Report: the conditions follow from what is installed now.
    let now_installed = rules::decide(inst, installed_version(&status), &facts(observed, inst, &status));
    let failure = acted.platform_error.as_ref().map(|(step, e)| (*step, e));
    let report = rules::report(
        &now_installed,
        status.installed_version.is_some(),
        status.task.as_ref(),
        status.unconfirmed.as_ref(),
        failure,
    );
    status.available_version = now_installed.available.map(|v| v.to_string());
    status.permissions_up_to_date = report.permissions_up_to_date;
    status.observed_generation = inst.metadata.generation;
    let blocker = rules::new_blocker(&previous.conditions, &report.conditions);
    status.conditions =
        conditions::merge(&previous.conditions, &report.conditions, inst.metadata.generation, &super::now());
    if let Some(e) = acted.not_sent.take() {
        return Err(e);
    }
    let base = acted.base(inst);
    if base.status.as_ref() != Some(&status) {
        let written = apply_status_guarded(&ctx.client, base, &status).await?;
        ctx.wrote(&written);
        if let Some((reason, message)) = blocker {
            publish_event(ctx, inst, true, reason.as_str(), message, "Reconcile").await;
        }
    }
    if now_installed.step == Step::AwaitLinkInstall && acted.requeue.is_none() {
        acted.requeue = Some(Action::requeue(LINK_POLL));
    }
    // A platform failure is an error, so the object is retried with its growing backoff.
    match acted.platform_error {
        Some((_, error)) => Err(error.into()),
        None => Ok(acted.requeue.unwrap_or_else(Action::await_change)),
    }
}

/// Carries out one step on the platform: wait for a recorded task, confirm a lost answer, or
/// start what the decision asks for. Changes `status` to what the platform shows.
async fn act(
    ctx: &Context,
    inst: &Installation,
    app: &ForgeApp,
    creds: &crate::platform::Credentials,
    decision: &rules::Decision,
    status: &mut InstallationStatus,
) -> Acted {
    let mut acted = Acted::default();
    let target = site::target(inst, app);
    let failed = |acted: &mut Acted, step: Step, e: PlatformError| {
        ctx.saw_platform_error(creds, &e);
        acted.platform_error = Some((step, e));
    };
    if let Some(task) = status.task.clone() {
        // A task recorded earlier (perhaps by a process that was killed): wait for it.
        let step = step_of(&task);
        match site::poll(ctx, creds, &task.id).await {
            Ok(site::TaskOutcome::Complete) => {
                status.task = None;
                record_done(ctx, inst, status, step).await;
                if task.action == TaskAction::Install {
                    status.site_administered = Some(true);
                }
                if let Ok(Some(found)) = site::find_installation(ctx, creds, &target).await {
                    status.installation_id = Some(found.id);
                }
            }
            Ok(site::TaskOutcome::AlreadyDone) => {
                // The site had it already: what is there is read, not assumed.
                status.task = None;
                match site::find_installation(ctx, creds, &target).await {
                    Ok(Some(found)) => take_what_is_there(ctx, inst, status, found, task.action).await,
                    Ok(None) => {}
                    Err(e) => failed(&mut acted, step, e),
                }
            }
            // Polled again soon, without holding one of the controller's slots meanwhile.
            Ok(site::TaskOutcome::StillRunning) => acted.requeue = Some(Action::requeue(site::TASK_POLL)),
            Ok(site::TaskOutcome::Failed(said)) => {
                // Dropped: the next attempt decides afresh (with backoff).
                status.task = None;
                let message = format!("{} of {} failed on the platform: {said}", task.action_str(), inst.spec.site);
                acted.platform_error =
                    Some((step, PlatformError::new(ErrorKind::Unavailable, "forge_cli_getInstallationTask", message)));
            }
            Err(e) => failed(&mut acted, step, e),
        }
        return acted;
    }
    if let Some(lost) = status.unconfirmed.clone() {
        // A request whose answer was lost: read what the platform did before anything is sent again.
        let step = step_of(&TaskRecord {
            id: String::new(),
            action: lost.action,
            version: lost.version.clone(),
            started_at: lost.sent_at.clone(),
        });
        let wanted = lost.version.as_deref().and_then(Version::parse);
        match site::find_installation(ctx, creds, &target).await {
            Ok(found) => {
                let now = found.as_ref().and_then(|f| f.version.as_deref()).and_then(Version::parse);
                let carried_out = match lost.action {
                    TaskAction::Install => found.is_some(),
                    _ => now.is_some() && wanted.is_some_and(|w| now >= Some(w)),
                };
                if let (true, Some(found)) = (carried_out, found) {
                    status.unconfirmed = None;
                    info!(installation = %inst.name_any(), site = %inst.spec.site, "a lost answer was confirmed from the platform");
                    record_confirmed(ctx, inst, status, found, lost.action).await;
                } else if elapsed_since(&lost.sent_at) < CONFIRM_WINDOW {
                    acted.requeue = Some(Action::requeue(CONFIRM_POLL));
                } else {
                    // Not carried out: the next round decides afresh and may send it again.
                    status.unconfirmed = None;
                    info!(installation = %inst.name_any(), site = %inst.spec.site, "a lost request was not carried out");
                    acted.requeue = Some(Action::requeue(Duration::from_millis(100)));
                }
            }
            Err(e) => failed(&mut acted, step, e),
        }
        return acted;
    }
    match decision.step {
        Step::Nothing => {}
        Step::AwaitLinkInstall => match site::find_installation(ctx, creds, &target).await {
            Ok(Some(found)) => adopt(ctx, inst, status, found).await,
            Ok(None) => acted.requeue = Some(Action::requeue(LINK_POLL)),
            Err(e) => failed(&mut acted, decision.step, e),
        },
        Step::Install(to) | Step::UpgradeMajor(to) => {
            let action =
                if matches!(decision.step, Step::Install(_)) { TaskAction::Install } else { TaskAction::Upgrade };
            // A site that already has the app (a customer installed it through the link, someone
            // ran `forge install`, or a task of ours finished before we could record it) is adopted.
            let existing = match action {
                TaskAction::Install => site::find_installation(ctx, creds, &target).await,
                _ => Ok(None),
            };
            let started = match existing {
                Ok(Some(found)) => {
                    adopt(ctx, inst, status, found).await;
                    return acted;
                }
                Ok(None) => {
                    let request =
                        crate::api::UnconfirmedRequest { action, version: Some(to.to_string()), sent_at: super::now() };
                    if !record_before_sending(ctx, inst, status, request, &mut acted).await {
                        return acted;
                    }
                    site::start(ctx, creds, &target, action, to).await
                }
                Err(e) => Err(e),
            };
            if !matches!(&started, Err(e) if e.unconfirmed) {
                // Answered: the pre-send record gives way to what the answer says.
                status.unconfirmed = None;
            }
            match started {
                Ok(site::Started::Task(id)) => {
                    // Record the task before waiting on it: a restart resumes it, never starts a second.
                    status.task =
                        Some(TaskRecord { id, action, version: Some(to.to_string()), started_at: super::now() });
                    acted.requeue = Some(Action::requeue(site::TASK_POLL));
                }
                Ok(site::Started::AlreadyDone) => match site::find_installation(ctx, creds, &target).await {
                    Ok(Some(found)) => take_what_is_there(ctx, inst, status, found, action).await,
                    Ok(None) => {}
                    Err(e) => failed(&mut acted, decision.step, e),
                },
                Err(e) if e.unconfirmed => {
                    // Sent, answer lost: maybe carried out. The pre-send record stays, so nothing
                    // is sent again until the platform's installations say whether it was.
                    ctx.saw_platform_error(creds, &e);
                    acted.requeue = Some(Action::requeue(CONFIRM_POLL));
                }
                Err(e) if e.kind == ErrorKind::PermissionDenied && action == TaskAction::Install => {
                    // A customer's site: forgeops never installs there; it waits for the link install.
                    info!(installation = %inst.name_any(), site = %inst.spec.site, "the account does not administer the site");
                    status.site_administered = Some(false);
                    acted.requeue = Some(Action::requeue(LINK_POLL));
                }
                Err(e) => failed(&mut acted, decision.step, e),
            }
        }
    }
    acted
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
        (
            "UpgradedOnThePlatform",
            format!("the platform moved {current} to {now} (a bulk-upgrade rollout, or the site's admin)"),
        )
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
    let policy = match inst.spec.deletion_policy {
        Some(p) => format!("deletionPolicy {p:?}"),
        None => "deleting this object leaves it there (deletionPolicy Orphan unless set)".to_string(),
    };
    let note = format!(
        "adopted the installation already on {} (version {}); {policy}",
        inst.spec.site,
        version.map(|v| v.to_string()).unwrap_or_else(|| "unknown".into())
    );
    info!(installation = %inst.name_any(), site = %inst.spec.site, "adopted an existing installation");
    publish_event(ctx, inst, false, "Adopted", note, "Reconcile").await;
}

/// The platform said the site already has what was asked (`APP_ALREADY_INSTALLED`,
/// `INSTALLATION_ALREADY_UPGRADED`): records what is installed there, read from the platform.
async fn take_what_is_there(
    ctx: &Context,
    inst: &Installation,
    status: &mut InstallationStatus,
    found: crate::platform::InstallationInfo,
    action: TaskAction,
) {
    if action == TaskAction::Install && status.installed_version.is_none() {
        // Someone else's install got there first: it is adopted, not ours.
        adopt(ctx, inst, status, found).await;
        return;
    }
    status.installation_id = Some(found.id);
    if let Some(now) = found.version.as_deref().and_then(Version::parse)
        && installed_version(status) != Some(now)
    {
        record_done(ctx, inst, status, Step::UpgradeMajor(now)).await;
    }
}

/// A lost answer turned out to have been carried out: records what the platform shows, as done by
/// forgeops.
async fn record_confirmed(
    ctx: &Context,
    inst: &Installation,
    status: &mut InstallationStatus,
    found: crate::platform::InstallationInfo,
    action: TaskAction,
) {
    let Some(now) = found.version.as_deref().and_then(Version::parse) else { return };
    status.installation_id = Some(found.id);
    let step = if action == TaskAction::Install {
        status.site_administered = Some(true);
        Step::Install(now)
    } else {
        Step::UpgradeMajor(now)
    };
    record_done(ctx, inst, status, step).await;
}

/// Records in `status` that `step` is done on the site, with an Event.
async fn record_done(ctx: &Context, inst: &Installation, status: &mut InstallationStatus, step: Step) {
    let (Step::Install(to) | Step::UpgradeMajor(to)) = step else { return };
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
            ("MinorVersionRolledOut", format!("the platform rolled out {to} (from {})", from.unwrap_or_default()))
        }
        _ => ("Upgraded", format!("upgraded to {to} (from {})", from.unwrap_or_default())),
    };
    info!(installation = %inst.name_any(), site = %inst.spec.site, version = %to, reason, "platform action done");
    publish_event(ctx, inst, false, reason, note, "Reconcile").await;
}

/// Writes `status` while the object is being deleted (the finalizer holds it).
/// Answers the object as written (unchanged when the status is).
async fn write_status(ctx: &Context, inst: &Installation, status: &InstallationStatus) -> Result<Installation, Error> {
    if inst.status.as_ref() == Some(status) {
        return Ok(inst.clone());
    }
    let written = apply_status_guarded(&ctx.client, inst, status).await?;
    ctx.wrote(&written);
    Ok(written)
}

fn not_yet(what: String, after: Duration) -> Error {
    Error::NotYet { what, after }
}

/// Before the object goes: waits for a task under way, then uninstalls or leaves the app as the
/// deletion policy says. Each step is recorded in status first, so a restart resumes it.
async fn uninstall(cached: &Installation, ctx: &Context) -> Result<Action, Error> {
    let inst = &latest(cached, ctx).await?;
    let Some(mut status) =
        inst.status.clone().filter(|s| s.installed_version.is_some() || s.task.is_some() || s.unconfirmed.is_some())
    else {
        return Ok(Action::await_change());
    };
    let site = &inst.spec.site;
    // The app's finalizer keeps it while installations exist, so it is normally still here.
    let ns = inst.namespace().unwrap_or_default();
    let app = match ctx.caches.app(&ns, &inst.spec.app_ref.name) {
        Some(app) => Some(app),
        None => {
            Api::<ForgeApp>::namespaced(ctx.client.clone(), &ns).get_opt(&inst.spec.app_ref.name).await?.map(Arc::new)
        }
    };
    let Some(app) = app else {
        let note =
            format!("the ForgeApp {} is gone: nothing to act on {site} with; left as it is", inst.spec.app_ref.name);
        tracing::warn!(installation = %inst.name_any(), "{note}");
        publish_event(ctx, inst, true, "LeftOnSite", note, "Delete").await;
        return Ok(Action::await_change());
    };
    let pending_install_or_upgrade = status.task.as_ref().is_some_and(|t| t.action != TaskAction::Uninstall)
        || status.unconfirmed.as_ref().is_some_and(|u| u.action != TaskAction::Uninstall);
    if !pending_install_or_upgrade && inst.deletion_policy() == DeletionPolicy::Orphan {
        return Ok(orphan(ctx, inst).await);
    }
    let creds = ctx.credentials_for(&app).await?;
    let target = site::target(inst, &app);
    // An install or upgrade under way ends first: otherwise the app would land on the site after
    // the object is gone, with nothing tracking it.
    if pending_install_or_upgrade {
        let mut observed = observe(inst, ctx);
        observed.app = Some(app.as_ref().clone());
        let decision = rules::decide(inst, installed_version(&status), &facts(&observed, inst, &status));
        let mut acted = act(ctx, inst, &app, &creds, &decision, &mut status).await;
        if let Some(e) = acted.not_sent.take() {
            return Err(e);
        }
        let written = write_status(ctx, acted.base(inst), &status).await?;
        if let Some((_, e)) = acted.platform_error {
            return Err(e.into());
        }
        if status.task.is_some() || status.unconfirmed.is_some() {
            return Err(not_yet(
                format!("waiting for the platform task on {site} to end before deleting"),
                site::TASK_POLL,
            ));
        }
        // Ended: what is installed now is uninstalled (or left, as the policy says).
        return uninstall_now(&written, ctx, &creds, &target).await;
    }
    uninstall_now(inst, ctx, &creds, &target).await
}

/// Leaves the app on the site, with an Event.
async fn orphan(ctx: &Context, inst: &Installation) -> Action {
    let status = inst.status.clone().unwrap_or_default();
    let note = format!(
        "left version {} installed on {} (deletionPolicy Orphan{})",
        status.installed_version.as_deref().unwrap_or("?"),
        inst.spec.site,
        if inst.spec.deletion_policy.is_none() { ", the default for an adopted installation" } else { "" }
    );
    info!(installation = %inst.name_any(), site = %inst.spec.site, "orphaned");
    publish_event(ctx, inst, false, "Orphaned", note, "Delete").await;
    Action::await_change()
}

/// Uninstalls (or orphans) once no install or upgrade is under way.
async fn uninstall_now(
    inst: &Installation,
    ctx: &Context,
    creds: &crate::platform::Credentials,
    target: &crate::platform::Target,
) -> Result<Action, Error> {
    let mut status = inst.status.clone().unwrap_or_default();
    let site = &inst.spec.site;
    if status.installed_version.is_none() && status.task.is_none() && status.unconfirmed.is_none() {
        return Ok(Action::await_change());
    }
    if inst.deletion_policy() == DeletionPolicy::Orphan {
        return Ok(orphan(ctx, inst).await);
    }
    let done = |status: &InstallationStatus| {
        format!("uninstalled version {} from {site}", status.installed_version.as_deref().unwrap_or("?"))
    };
    // An uninstall task recorded earlier: wait for it.
    if let Some(task) = status.task.clone() {
        return match site::poll(ctx, creds, &task.id).await? {
            site::TaskOutcome::StillRunning => {
                Err(not_yet(format!("uninstall task {} on {site} is under way", task.id), site::TASK_POLL))
            }
            site::TaskOutcome::Complete | site::TaskOutcome::AlreadyDone => {
                info!(installation = %inst.name_any(), %site, "uninstalled");
                publish_event(ctx, inst, false, "Uninstalled", done(&status), "Delete").await;
                Ok(Action::await_change())
            }
            site::TaskOutcome::Failed(said) => {
                status.task = None;
                write_status(ctx, inst, &status).await?;
                Err(PlatformError::new(
                    ErrorKind::Unavailable,
                    "forge_cli_getInstallationTask",
                    format!("uninstall from {site} failed on the platform: {said}"),
                )
                .into())
            }
        };
    }
    if let Some(lost) = status.unconfirmed.clone() {
        let still = match status.installation_id.as_deref() {
            Some(id) => site::installation_by_id(ctx, creds, target, id).await?,
            None => site::find_installation(ctx, creds, target).await?,
        };
        if still.is_none() {
            info!(installation = %inst.name_any(), %site, "a lost uninstall answer was confirmed from the platform");
            publish_event(ctx, inst, false, "Uninstalled", done(&status), "Delete").await;
            return Ok(Action::await_change());
        }
        if elapsed_since(&lost.sent_at) < CONFIRM_WINDOW {
            return Err(not_yet(format!("confirming whether the uninstall from {site} was carried out"), CONFIRM_POLL));
        }
        status.unconfirmed = None;
    }
    // Recorded before it is sent (see `record_before_sending`).
    status.unconfirmed =
        Some(crate::api::UnconfirmedRequest { action: TaskAction::Uninstall, version: None, sent_at: super::now() });
    let inst = &write_status(ctx, inst, &status).await?;
    let sent = site::start_uninstall(ctx, creds, inst, target, status.installation_id.as_deref()).await;
    if !matches!(&sent, Err(e) if e.unconfirmed) {
        status.unconfirmed = None;
    }
    match sent {
        Ok(None) => {
            // The finalizer goes next: the record needs no clearing.
            publish_event(
                ctx,
                inst,
                false,
                "Uninstalled",
                format!("nothing was installed on {site} any more"),
                "Delete",
            )
            .await;
            Ok(Action::await_change())
        }
        Ok(Some(id)) => {
            status.task =
                Some(TaskRecord { id, action: TaskAction::Uninstall, version: None, started_at: super::now() });
            write_status(ctx, inst, &status).await?;
            Err(not_yet(format!("uninstalling from {site}"), site::TASK_POLL))
        }
        Err(e) if e.kind == ErrorKind::PermissionDenied => {
            // A customer's site: only its admin uninstalls. The object goes; the app stays.
            let note = format!(
                "the platform refused to uninstall from {site} ({}): only the site's admin can remove the app from a \
                 customer's site; it stays installed there",
                e.message
            );
            tracing::warn!(installation = %inst.name_any(), %site, "uninstall refused: left on the site");
            publish_event(ctx, inst, true, "UninstallRefused", note, "Delete").await;
            Ok(Action::await_change())
        }
        Err(e) if e.unconfirmed => {
            // The pre-send record stays: the platform's installations tell whether it was done.
            ctx.saw_platform_error(creds, &e);
            Err(not_yet(format!("the answer to the uninstall from {site} was lost; confirming"), CONFIRM_POLL))
        }
        Err(e) => {
            // Refused: nothing to confirm, the next attempt may send it again.
            ctx.saw_platform_error(creds, &e);
            write_status(ctx, inst, &status).await?;
            Err(e.into())
        }
    }
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
