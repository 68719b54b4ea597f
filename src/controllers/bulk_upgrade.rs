//! The BulkUpgrade controller: checks eligibility, takes the concurrency Leases (app environment,
//! developer account, a global slot), upgrades the installations in waves of at most
//! `maxConcurrent` through the platform port, and reports counts derived from the installations'
//! own records, so a restart at any instant neither repeats nor forgets an upgrade.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{DeleteParams, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::Store;
use kube::runtime::{Controller, watcher};
use kube::{Api, ResourceExt};
use tracing::info;

use super::site;
use super::{
    Context, Error, apply_status, apply_status_guarded, instrumented, objects_of_app, publish_event, retry_later,
};
use crate::api::TaskAction;
use crate::api::{
    BulkUpgrade, BulkUpgradeOutcome, BulkUpgradeRecord, BulkUpgradeState, BulkUpgradeStatus, ForgeApp, Installation,
};
use crate::leases::{self, Claim, Holder};
use crate::platform::ErrorKind;
use crate::rules::bulk_upgrade::states::{Situation, conditions};
use crate::rules::bulk_upgrade::{Census, census, eligibility};
use crate::rules::conditions as conds;
use crate::rules::versions::{self, Version};

const NAME: &str = "bulkupgrade";
/// Releases the Leases before a BulkUpgrade object goes away.
pub const FINALIZER: &str = "forgeops.dev/leases";
/// How often a waiting upgrade tries again for its Leases.
const QUEUED_RETRY: Duration = Duration::from_secs(2);

/// The concurrency limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// At most this many bulk upgrades run at once.
    pub global: u32,
    /// A Lease whose holder has not renewed it for this long is taken over.
    pub lease_duration: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { global: 3, lease_duration: Duration::from_secs(30) }
    }
}

pub struct BulkContext {
    pub ctx: Arc<Context>,
    pub limits: Limits,
    upgrades: Store<BulkUpgrade>,
}

pub async fn reconcile(bu: Arc<BulkUpgrade>, bctx: Arc<BulkContext>) -> Result<Action, Error> {
    let ctx = &bctx.ctx;
    let api: Api<BulkUpgrade> = Api::namespaced(ctx.client.clone(), &bu.namespace().unwrap_or_default());
    instrumented(ctx, NAME, bu.as_ref(), async {
        finalizer(&api, FINALIZER, bu.clone(), |event| async {
            match event {
                Finalizer::Apply(bu) => apply(&bu, &bctx).await,
                Finalizer::Cleanup(bu) => release_all(ctx, &uid(&bu)).await.map(|_| Action::await_change()),
            }
        })
        .await
        .map_err(Error::from)
    })
    .await
}

fn uid(bu: &BulkUpgrade) -> String {
    bu.metadata.uid.clone().unwrap_or_default()
}

fn full_name(bu: &BulkUpgrade) -> String {
    format!("{}/{}", bu.namespace().unwrap_or_default(), bu.name_any())
}

fn finished(state: BulkUpgradeState) -> bool {
    matches!(state, BulkUpgradeState::Complete | BulkUpgradeState::Cancelled | BulkUpgradeState::Failed)
}

async fn apply(bu: &BulkUpgrade, bctx: &BulkContext) -> Result<Action, Error> {
    let ctx = &bctx.ctx;
    let previous = bu.status.clone().unwrap_or_default();
    let state = previous.state.unwrap_or_default();
    if finished(state) {
        // Nothing changes a finished upgrade, `cancelled` included; only its record expires. A spec
        // edit is still acknowledged, so GitOps tools do not wait on a stale observedGeneration.
        release_all(ctx, &uid(bu)).await?;
        if previous.observed_generation != bu.metadata.generation {
            let mut next = previous.clone();
            next.observed_generation = bu.metadata.generation;
            next.conditions.iter_mut().for_each(|c| c.observed_generation = bu.metadata.generation);
            apply_status(&ctx.client, bu, &next).await?;
        }
        return expire(bu, ctx).await;
    }

    // Observe.
    let ns = bu.namespace().unwrap_or_default();
    let app = Api::<ForgeApp>::namespaced(ctx.client.clone(), &ns).get_opt(&bu.spec.app_ref.name).await?;
    let installations = list_installations(ctx, bu).await?;

    // Decide.
    let ineligible = eligibility(app.as_ref(), &bu.spec);
    let counted = census(&uid(bu), &bu.spec, &installations);
    let mut next = BulkUpgradeStatus { started_at: previous.started_at.clone(), ..Default::default() };
    fill_counts(&mut next, &counted);
    next.ineligible_reasons = ineligible.clone();
    let first_reason = ineligible.first().map(|r| (r.reason.as_str(), r.detail.as_str()));

    let (state, waiting, action) = if !ineligible.is_empty() {
        release_all(ctx, &uid(bu)).await?;
        (BulkUpgradeState::Ineligible, None, Action::await_change())
    } else if bu.spec.cancelled {
        release_all(ctx, &uid(bu)).await?;
        (BulkUpgradeState::Cancelled, None, Action::await_change())
    } else if bu.spec.max_failures.is_some_and(|max| counted.failed > max) {
        release_all(ctx, &uid(bu)).await?;
        (BulkUpgradeState::Failed, None, Action::await_change())
    } else {
        let app = app.as_ref().expect("an eligible upgrade has its app");
        match admit(bu, app, bctx).await? {
            Some((reason, blocked_by)) => {
                (BulkUpgradeState::Queued, Some((reason, blocked_by)), Action::requeue(QUEUED_RETRY))
            }
            None if counted.pending.is_empty() => {
                release_all(ctx, &uid(bu)).await?;
                (BulkUpgradeState::Complete, None, Action::await_change())
            }
            None if bu.spec.paused => (BulkUpgradeState::Paused, None, Action::requeue(bctx.limits.lease_duration / 3)),
            None => (BulkUpgradeState::Running, None, Action::requeue(Duration::ZERO)),
        }
    };

    if matches!(state, BulkUpgradeState::Running | BulkUpgradeState::Paused | BulkUpgradeState::Complete) {
        next.started_at.get_or_insert_with(super::now);
    }
    if finished(state) {
        next.completed_at = Some(super::now());
    }
    next.blocked_by = waiting.as_ref().map(|(_, who)| who.clone());
    next.state = Some(state);
    report(bu, ctx, &previous, next, state, first_reason, &waiting, &counted).await?;

    if state == BulkUpgradeState::Running {
        let app = app.as_ref().expect("a running upgrade has its app");
        run_wave(bu, app, ctx, &counted).await?;
    }
    if finished(state) {
        return expire(bu, ctx).await;
    }
    Ok(action)
}

fn fill_counts(status: &mut BulkUpgradeStatus, c: &Census) {
    status.total = c.total();
    status.upgraded = c.upgraded;
    status.failed = c.failed;
    status.pending = c.pending.len() as u32;
    status.skipped = c.skipped;
    status.unprocessed = c.unprocessed;
    status.failures = c.failures.clone();
}

#[allow(clippy::too_many_arguments)]
async fn report(
    bu: &BulkUpgrade,
    ctx: &Context,
    previous: &BulkUpgradeStatus,
    mut next: BulkUpgradeStatus,
    state: BulkUpgradeState,
    ineligible: Option<(&str, &str)>,
    waiting: &Option<(&'static str, String)>,
    counted: &Census,
) -> Result<(), Error> {
    let summary = format!(
        "{} of {} upgraded, {} failed, {} pending, {} skipped, {} unprocessed",
        counted.upgraded,
        counted.total(),
        counted.failed,
        counted.pending.len(),
        counted.skipped,
        counted.unprocessed
    );
    let situation = Situation { ineligible, waiting: waiting.as_ref().map(|(r, w)| (*r, w.as_str())), summary };
    let decided = conditions(state, &situation);
    next.observed_generation = bu.metadata.generation;
    if next.completed_at.is_some() && previous.completed_at.is_some() {
        next.completed_at = previous.completed_at.clone();
    }
    next.conditions = conds::merge(&previous.conditions, &decided, bu.metadata.generation, &super::now());
    if &next == previous {
        return Ok(());
    }
    apply_status(&ctx.client, bu, &next).await?;
    if previous.state != Some(state) {
        info!(bulk_upgrade = %full_name(bu), ?state, "bulk upgrade state changed");
        let (warning, reason) = match state {
            BulkUpgradeState::Running if previous.state != Some(BulkUpgradeState::Paused) => (false, "Admitted"),
            BulkUpgradeState::Complete => (false, "Completed"),
            BulkUpgradeState::Cancelled => (false, "Cancelled"),
            BulkUpgradeState::Failed => (true, "MaxFailuresExceeded"),
            BulkUpgradeState::Ineligible => (true, ineligible.map(|i| i.0).unwrap_or("Ineligible")),
            _ => return Ok(()),
        };
        let note = conds::find(&next.conditions, "Progressing").map(|c| c.message.clone()).unwrap_or_default();
        publish_event(ctx, bu, warning, reason, note, "Reconcile").await;
    }
    Ok(())
}

async fn list_installations(ctx: &Context, bu: &BulkUpgrade) -> Result<Vec<Installation>, Error> {
    let params = ListParams::default().fields(&format!("spec.appRef.name={}", bu.spec.app_ref.name));
    Ok(Api::<Installation>::namespaced(ctx.client.clone(), &bu.namespace().unwrap_or_default())
        .list(&params)
        .await?
        .items)
}

/// Deletes a finished upgrade once `ttlSecondsAfterFinished` has passed.
async fn expire(bu: &BulkUpgrade, ctx: &Context) -> Result<Action, Error> {
    let (Some(ttl), Some(done)) =
        (bu.spec.ttl_seconds_after_finished, bu.status.as_ref().and_then(|s| s.completed_at.clone()))
    else {
        return Ok(Action::await_change());
    };
    let expiry = done.0 + jiff::SignedDuration::from_secs(ttl);
    let now = jiff::Timestamp::now();
    if now < expiry {
        let wait = expiry.duration_since(now).as_secs().max(0) as u64;
        return Ok(Action::requeue(Duration::from_secs(wait + 1)));
    }
    info!(bulk_upgrade = %full_name(bu), "deleting the finished bulk upgrade: its TTL has passed");
    let api: Api<BulkUpgrade> = Api::namespaced(ctx.client.clone(), &bu.namespace().unwrap_or_default());
    match api.delete(&bu.name_any(), &DeleteParams::default()).await {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

/// Releases every Lease the upgrade holds. Idempotent.
async fn release_all(ctx: &Context, holder: &str) -> Result<(), Error> {
    let api: Api<Lease> = Api::namespaced(ctx.client.clone(), &ctx.operator_namespace);
    for lease in api.list(&ListParams::default()).await?.items {
        if lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(holder) {
            leases::release(&api, &lease.name_any(), holder).await?;
        }
    }
    Ok(())
}

/// The Lease that admits one running bulk upgrade per app environment.
pub fn env_lease_name(namespace: &str, app: &str, environment: &str) -> String {
    leases::lease_name("forgeops-bulkupgrade-env", &format!("{namespace}/{app}/{environment}"))
}

fn env_lease(bu: &BulkUpgrade) -> String {
    env_lease_name(&bu.namespace().unwrap_or_default(), &bu.spec.app_ref.name, &bu.spec.environment)
}

fn account_lease(account: &str) -> String {
    leases::lease_name("forgeops-bulkupgrade-account", account)
}

fn slot_lease(i: u32) -> String {
    format!("forgeops-bulkupgrade-slot-{i}")
}

/// Takes the upgrade's Leases in a fixed order (environment, account, a global slot). Returns the
/// reason it must wait and for whom, or `None` once it holds all three. Waiting upgrades go first
/// come, first served: an older one waiting for the same environment or account goes first.
async fn admit(bu: &BulkUpgrade, app: &ForgeApp, bctx: &BulkContext) -> Result<Option<(&'static str, String)>, Error> {
    let ctx = &bctx.ctx;
    let me = Holder { uid: uid(bu), name: full_name(bu) };
    let account = app.account().unwrap_or("unknown");
    if let Some(wait) = older_waiting(bu, account, bctx).await? {
        release_all(ctx, &me.uid).await?;
        return Ok(Some(wait));
    }
    let api: Api<Lease> = Api::namespaced(ctx.client.clone(), &ctx.operator_namespace);
    let duration = bctx.limits.lease_duration;
    let mut blocked = None;
    if let Claim::Busy(who) = leases::claim(&api, &env_lease(bu), &me, duration).await? {
        blocked = Some(("EnvironmentBusy", who));
    } else if let Claim::Busy(who) = leases::claim(&api, &account_lease(account), &me, duration).await? {
        blocked = Some(("AccountBusy", who));
    } else if let Some(who) = claim_slot(&api, &me, bctx.limits, duration).await? {
        blocked = Some(("GlobalLimitReached", who));
    }
    if blocked.is_some() {
        // All or nothing: never sit on part of the Leases while waiting for the rest.
        release_all(ctx, &me.uid).await?;
    }
    Ok(blocked)
}

/// Takes (or renews) one global slot; returns who holds the first slot if none is free.
async fn claim_slot(
    api: &Api<Lease>,
    me: &Holder,
    limits: Limits,
    duration: Duration,
) -> Result<Option<String>, Error> {
    for i in 0..limits.global {
        if leases::holds(api, &slot_lease(i), &me.uid).await? {
            leases::claim(api, &slot_lease(i), me, duration).await?;
            return Ok(None);
        }
    }
    let mut first_holder = None;
    for i in 0..limits.global {
        match leases::claim(api, &slot_lease(i), me, duration).await? {
            Claim::Held => return Ok(None),
            Claim::Busy(who) => {
                first_holder.get_or_insert(who);
            }
        }
    }
    Ok(Some(first_holder.unwrap_or_else(|| "the global limit of 0".into())))
}

/// An older, eligible upgrade still waiting for the same environment or account, or (when this one
/// would take a global slot) one waiting only for a slot. "Older" means created in an earlier
/// second: creation timestamps have one-second precision, so upgrades created in the same second
/// have no order and simply race for the Leases.
async fn older_waiting(
    bu: &BulkUpgrade,
    account: &str,
    bctx: &BulkContext,
) -> Result<Option<(&'static str, String)>, Error> {
    let created = |b: &BulkUpgrade| b.metadata.creation_timestamp.clone().map(|t| t.0);
    let waiting = |b: &BulkUpgrade| {
        let s = b.status.as_ref().and_then(|s| s.state).unwrap_or_default();
        matches!(s, BulkUpgradeState::Queued | BulkUpgradeState::Pending)
            && !b.spec.cancelled
            && b.metadata.deletion_timestamp.is_none()
    };
    let Some(mine) = created(bu) else { return Ok(None) };
    let mut older: Vec<Arc<BulkUpgrade>> = bctx
        .upgrades
        .state()
        .into_iter()
        .filter(|o| uid(o) != uid(bu) && waiting(o) && created(o).is_some_and(|c| c < mine))
        .collect();
    older.sort_by_key(|o| created(o));
    for other in older {
        if other.namespace() == bu.namespace()
            && other.spec.app_ref == bu.spec.app_ref
            && other.spec.environment == bu.spec.environment
        {
            return Ok(Some(("EnvironmentBusy", full_name(&other))));
        }
        let other_app = Api::<ForgeApp>::namespaced(bctx.ctx.client.clone(), &other.namespace().unwrap_or_default())
            .get_opt(&other.spec.app_ref.name)
            .await?;
        if other_app.is_some_and(|a| a.account() == Some(account)) {
            return Ok(Some(("AccountBusy", full_name(&other))));
        }
        let only_slot = other
            .status
            .as_ref()
            .and_then(|s| conds::find(&s.conditions, "Admitted"))
            .is_some_and(|c| c.reason == "GlobalLimitReached");
        if only_slot {
            return Ok(Some(("GlobalLimitReached", full_name(&other))));
        }
    }
    Ok(None)
}

/// Upgrades a wave of pending installations, at most `maxConcurrent` at a time.
async fn run_wave(bu: &BulkUpgrade, app: &ForgeApp, ctx: &Context, counted: &Census) -> Result<(), Error> {
    let Some(target) = versions::latest_of_major(app.deployed(&bu.spec.environment), bu.spec.to_major).map(Version::of)
    else {
        return Ok(());
    };
    let concurrency = bu.spec.max_concurrent.max(1) as usize;
    let wave: Vec<String> = counted.pending.iter().take(concurrency * 4).cloned().collect();
    // Failures so far, so that no new upgrade starts once there are more than maxFailures.
    let failed = AtomicU32::new(counted.failed);
    let (failed, max_failures) = (&failed, bu.spec.max_failures);
    let results: Vec<Result<(), Error>> = futures::stream::iter(wave)
        .map(|name| async move {
            if max_failures.is_some_and(|max| failed.load(Ordering::SeqCst) > max) || !still_wanted(bu, ctx).await? {
                return Ok(());
            }
            let outcome = upgrade_one(bu, app, ctx, &name, target).await;
            if matches!(outcome, Ok(Some(BulkUpgradeOutcome::Failed))) {
                failed.fetch_add(1, Ordering::SeqCst);
            }
            outcome.map(|_| ())
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Whether the upgrade should still start new installation upgrades: read afresh, so that pausing,
/// cancelling or deleting it takes effect within a wave.
async fn still_wanted(bu: &BulkUpgrade, ctx: &Context) -> Result<bool, Error> {
    let api: Api<BulkUpgrade> = Api::namespaced(ctx.client.clone(), &bu.namespace().unwrap_or_default());
    Ok(api
        .get_opt(&bu.name_any())
        .await?
        .is_some_and(|b| !b.spec.paused && !b.spec.cancelled && b.metadata.deletion_timestamp.is_none()))
}

/// Upgrades one installation; returns the outcome it recorded, if it recorded one.
async fn upgrade_one(
    bu: &BulkUpgrade,
    app: &ForgeApp,
    ctx: &Context,
    name: &str,
    target: Version,
) -> Result<Option<BulkUpgradeOutcome>, Error> {
    let api: Api<Installation> = Api::namespaced(ctx.client.clone(), &bu.namespace().unwrap_or_default());
    // Re-read: the record, not a cache, says whether this installation still needs upgrading.
    let Some(inst) = api.get_opt(name).await? else { return Ok(None) };
    let mut status = inst.status.clone().unwrap_or_default();
    if status.installed_major != Some(bu.spec.from_major)
        || status.bulk_upgrade.as_ref().is_some_and(|r| r.uid == uid(bu))
    {
        return Ok(None);
    }
    let record = |outcome, message| Some(BulkUpgradeRecord { name: bu.name_any(), uid: uid(bu), outcome, message });
    let creds = ctx.credentials_for(app).await?;
    let site_target = site::target(&inst, app);
    let upgraded = match site::start(ctx, &creds, &site_target, TaskAction::Upgrade, target).await {
        Ok(site::Started::AlreadyDone) => Ok(()),
        Ok(site::Started::Task(task)) => site::finish(ctx, &creds, &task, "upgrade").await,
        Err(e) => Err(e),
    };
    if let Err(e) = &upgraded {
        ctx.saw_platform_error(&creds, e);
        if matches!(e.kind, ErrorKind::BadCredentials | ErrorKind::RateLimited) {
            // Not this site's fault: stop the wave and retry the whole upgrade with backoff.
            return Err(e.clone().into());
        }
    }
    match upgraded {
        Ok(()) => {
            status.installed_version = Some(target.to_string());
            status.installed_major = Some(target.major);
            status.bulk_upgrade = record(BulkUpgradeOutcome::Upgraded, None);
            let note = format!("upgraded to {target} by BulkUpgrade {}", bu.name_any());
            if write_installation(ctx, &inst, &status).await? {
                publish_event(ctx, &inst, false, "Upgraded", note, "BulkUpgrade").await;
                return Ok(Some(BulkUpgradeOutcome::Upgraded));
            }
        }
        Err(e) => {
            status.bulk_upgrade = record(BulkUpgradeOutcome::Failed, Some(e.to_string()));
            if write_installation(ctx, &inst, &status).await? {
                return Ok(Some(BulkUpgradeOutcome::Failed));
            }
        }
    }
    Ok(None)
}

/// Writes an installation's status unless it changed since it was read (then the next wave sees
/// the change and decides again). Returns whether it was written.
async fn write_installation(
    ctx: &Context,
    inst: &Installation,
    status: &crate::api::InstallationStatus,
) -> Result<bool, Error> {
    match apply_status_guarded(&ctx.client, inst, status).await {
        Ok(()) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

pub fn error_policy(bu: Arc<BulkUpgrade>, error: &Error, bctx: Arc<BulkContext>) -> Action {
    retry_later(NAME, bu.as_ref(), error, &bctx.ctx)
}

/// Runs the BulkUpgrade controller until `shutdown` resolves. An upgrade is re-evaluated when its
/// app changes (an ineligible one may become eligible).
pub async fn run(
    api: Api<BulkUpgrade>,
    apps: Api<ForgeApp>,
    ctx: Arc<Context>,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let controller = Controller::new(api, watcher::Config::default().any_semantic())
        .with_config(kube::runtime::controller::Config::default().concurrency(super::concurrency::SMALL));
    let upgrades = controller.store();
    let by_app = controller.store();
    let bctx = Arc::new(BulkContext { ctx, limits, upgrades });
    controller
        .watches(apps, watcher::Config::default().any_semantic(), move |app: ForgeApp| {
            objects_of_app(&by_app, app.namespace(), &app.name_any())
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, bctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}
