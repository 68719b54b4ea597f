//! The BulkUpgrade controller: gathers what [`rules::decide`] needs (the app and the pinned
//! installations and the Leases from the watch caches; the running rollout, eligibility, the count
//! on the source version and, after a restart, a rollout to adopt, from the platform), calls it,
//! and carries out the effects it returns in order. It writes the status only when it changed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::DeleteParams;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, PredicateConfig, WatchStreamExt};
use kube::{Api, ResourceExt};
use tracing::{info, warn};

use super::{Context, Error, apply_status_guarded, instrumented, objects_of_app, publish_event, retry_delay};
use crate::api::{BulkUpgrade, BulkUpgradeState, BulkUpgradeStatus, ForgeApp, RolloutPhase};
use crate::leases::{self, Claim, Holder};
use crate::platform::{Credentials, ErrorKind, PlatformError, RolloutStatus};
use crate::rules::bulk_upgrade::{
    self as rules, Admission, AppView, Current, Decision, Effect, FailureKind, Inputs, LeaseHold, Leases, Other,
    PlatformView, Reason, Requeue, StartAnswer,
};
use crate::rules::conditions as conds;

const NAME: &str = "bulkupgrade";
/// Releases the Leases before a BulkUpgrade object goes away.
pub const FINALIZER: &str = "forgeops.dev/leases";

/// The concurrency limits and the pace of polling.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// At most this many bulk upgrades run at once.
    pub global: u32,
    /// A Lease whose holder has not renewed it for this long is taken over.
    pub lease_duration: Duration,
    /// How often a running rollout is read from the platform.
    pub poll: Duration,
    /// How often, at most, the app's installations are listed again while a rollout runs (once
    /// more when it finishes).
    pub refresh: Duration,
    /// How often an upgrade held by something outside the watched objects (pinned
    /// installations, the platform's eligibility) looks again.
    pub recheck: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            global: 3,
            lease_duration: Duration::from_secs(30),
            poll: Duration::from_secs(2),
            refresh: Duration::from_secs(10),
            recheck: Duration::from_secs(30),
        }
    }
}

pub struct BulkContext {
    pub ctx: Arc<Context>,
    pub limits: Limits,
    upgrades: Store<BulkUpgrade>,
    /// When each app's installations were last listed for a running rollout.
    refreshed: Mutex<HashMap<String, Instant>>,
    /// The listings under way in the background, per app: `true` when another was asked for
    /// meanwhile (it runs once the one under way ends).
    listing: Arc<Mutex<HashMap<String, bool>>>,
    /// When each Lease's record was last seen to change (expiry by this process's clock).
    observer: leases::Observer,
    /// The webhook notifications' delivery.
    notifier: super::notify::Notifier,
    /// The wall clock the rules read (windows, bake time).
    clock: crate::clock::Clock,
}

pub async fn reconcile(bu: Arc<BulkUpgrade>, bctx: Arc<BulkContext>) -> Result<Action, Error> {
    let ctx = &bctx.ctx;
    let api: Api<BulkUpgrade> = Api::namespaced(ctx.client.clone(), &bu.namespace().unwrap_or_default());
    instrumented(ctx, NAME, bu.as_ref(), async {
        let result = finalizer(&api, FINALIZER, bu.clone(), |event| async {
            match event {
                Finalizer::Apply(bu) => apply(bu, &bctx).await,
                Finalizer::Cleanup(bu) => {
                    cancel_on_delete(&bu, &bctx).await;
                    release_all(&bctx, &uid(&bu), true).await.map(|_| Action::await_change())
                }
            }
        })
        .await;
        super::finalized(result)
    })
    .await
}

/// A BulkUpgrade deleted while its rollout runs cancels the rollout (as deleting a Job stops its
/// pods). Best effort: the deletion does not wait for the platform.
async fn cancel_on_delete(bu: &BulkUpgrade, bctx: &BulkContext) {
    let ctx = &bctx.ctx;
    let Some(rollout) = bu.status.as_ref().and_then(running_rollout) else { return };
    if !ctx.fence.holds() {
        warn!(bulk_upgrade = %full_name(bu), rollout = %rollout.id,
            "deleted while running, but this replica is not sure it still leads: the rollout is not cancelled");
        return;
    }
    let Some(app) = ctx.caches.app(&bu.namespace().unwrap_or_default(), &bu.spec.app_ref.name) else { return };
    if !ctx.claim_of(&app).is_ours() {
        // Another namespace's ForgeApp owns the app: nothing is sent on its behalf.
        warn!(bulk_upgrade = %full_name(bu), rollout = %rollout.id,
            "deleted while running, for an app this namespace does not own: the rollout is not cancelled");
        return;
    }
    let cancelled = match ctx.credentials_for(&app).await {
        Ok(creds) => ctx.platform.cancel_rollout(&creds, &rollout.id).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match cancelled {
        Ok(()) => {
            info!(bulk_upgrade = %full_name(bu), rollout = %rollout.id, "deleted while running: cancelled the rollout")
        }
        Err(error) => warn!(bulk_upgrade = %full_name(bu), rollout = %rollout.id, %error,
            "deleted while running: the rollout could not be cancelled and runs on; cancel it with `forge version bulk-upgrade cancel`"),
    }
}

fn uid(bu: &BulkUpgrade) -> String {
    bu.metadata.uid.clone().unwrap_or_default()
}

fn full_name(bu: &BulkUpgrade) -> String {
    format!("{}/{}", bu.namespace().unwrap_or_default(), bu.name_any())
}

fn finished(state: Option<BulkUpgradeState>) -> bool {
    matches!(state, Some(BulkUpgradeState::Complete | BulkUpgradeState::Cancelled | BulkUpgradeState::Failed))
}

fn running_rollout(status: &BulkUpgradeStatus) -> Option<&crate::api::RolloutRecord> {
    status.rollouts.last().filter(|r| r.status == RolloutPhase::Running)
}

/// What was gathered for one decision.
struct Gathered {
    app: Option<Arc<ForgeApp>>,
    view: AppView,
    platform: PlatformView,
    admission: Admission,
    creds: Option<Credentials>,
}

async fn apply(bu: Arc<BulkUpgrade>, bctx: &BulkContext) -> Result<Action, Error> {
    let ctx = &bctx.ctx;
    let mut current = bu;
    let mut fresh_read = false;
    // A copy older than this process's last status write (the watch lags, or was cut off by an API
    // server restart) would decide from records that are gone, and its write would erase newer
    // ones: read the object afresh first. The write itself is guarded by the resourceVersion too.
    if ctx.may_be_stale(current.as_ref()) {
        let api: Api<BulkUpgrade> = Api::namespaced(ctx.client.clone(), &current.namespace().unwrap_or_default());
        let Some(latest) = api.get_opt(&current.name_any()).await? else { return Ok(Action::await_change()) };
        current = Arc::new(latest);
        fresh_read = true;
    }
    // At most a few rounds: a decision that only records its intent to start is followed at once
    // by the start itself, and a start or cancel first re-reads the object.
    for _ in 0..4 {
        let previous = current.status.clone().unwrap_or_default();
        let gathered = match gather(&current, bctx).await {
            Ok(g) => g,
            Err(e) => {
                // The Leases are renewed while a rollout runs, whatever the platform answers.
                if running_rollout(&previous).is_some()
                    && let Some(facts) = lease_facts(&current, ctx)
                {
                    let _ = take_leases(&current, &facts, true, bctx).await;
                }
                return Err(report_failure(&current, ctx, e).await);
            }
        };
        let inputs = Inputs {
            spec: &current.spec,
            generation: current.metadata.generation,
            previous: &previous,
            now: super::whole_second(bctx.clock.now()),
            instant: bctx.clock.now(),
            app: gathered.view.clone(),
            platform: gathered.platform.clone(),
            admission: gathered.admission.clone(),
            asked: rules::asked(current.metadata.annotations.as_ref()),
        };
        let decision = rules::decide(&inputs);
        let acts_on_platform =
            decision.effects.iter().any(|e| matches!(e, Effect::StartRollout(_) | Effect::CancelRollout(_)));
        if acts_on_platform && !fresh_read {
            // The watch cache can lag behind our own last write: act on the platform only from
            // the latest record, so a stale status never starts a rollout twice.
            fresh_read = true;
            let api: Api<BulkUpgrade> = Api::namespaced(ctx.client.clone(), &current.namespace().unwrap_or_default());
            let Some(latest) = api.get_opt(&current.name_any()).await? else { return Ok(Action::await_change()) };
            if latest.resource_version() != current.resource_version() {
                current = Arc::new(latest);
                continue;
            }
        }
        let executed = match execute(&current, &decision, &inputs, &gathered, bctx).await {
            Ok(executed) => executed,
            Err(e) => return Err(report_failure(&current, ctx, e).await),
        };
        let (mut status, requeue) = match executed {
            Some(done) => done,
            // Lost a Lease to another upgrade meanwhile: decide again once the cache shows it.
            None => return Ok(Action::requeue(Duration::from_secs(1))),
        };
        let target = file_notifications(&current, bctx, &previous, &mut status).await;
        if status != previous {
            let written = apply_status_guarded(&ctx.client, current.as_ref(), &status).await?;
            ctx.wrote(&written);
            report(&current, ctx, &previous, &status).await;
            current = Arc::new(written);
        }
        send_notifications(&current, bctx, &status, &target);
        if matches!(target, Target::Unreadable) && requeue != Requeue::Now {
            return Ok(Action::requeue(Duration::from_secs(10)));
        }
        if requeue == Requeue::Now {
            let mut next = (*current).clone();
            next.status = Some(status);
            current = Arc::new(next);
            continue;
        }
        if requeue == Requeue::Poll
            && let Some(age) = running_rollout(&status)
                .and_then(|r| r.started_at.as_ref())
                .map(|t| bctx.clock.now().duration_since(t.0).unsigned_abs())
        {
            return Ok(Action::requeue(poll_after(age, bctx.limits.poll)));
        }
        return Ok(action(requeue, bctx.limits));
    }
    Ok(Action::requeue(bctx.limits.poll))
}

fn action(requeue: Requeue, limits: Limits) -> Action {
    match requeue {
        Requeue::Now => Action::requeue(Duration::ZERO),
        Requeue::Poll => Action::requeue(limits.poll),
        Requeue::Queued => Action::requeue(Duration::from_secs(2)),
        Requeue::Platform => Action::requeue(Duration::from_secs(10)),
        Requeue::Renew => Action::requeue(limits.lease_duration / 3),
        Requeue::Bake(left) => Action::requeue(left.min(limits.lease_duration / 3)),
        Requeue::Recheck => Action::requeue(limits.recheck),
        Requeue::After(d) => Action::requeue(d),
        Requeue::AwaitChange => Action::await_change(),
    }
}

/// Reports a platform or credentials failure on the upgrade's conditions (written only when they
/// change, with a Warning Event when a failure that needs the user is new), then hands the error
/// on to the retry policy. Kubernetes failures are only handed on.
async fn report_failure(bu: &BulkUpgrade, ctx: &Context, error: Error) -> Error {
    let (kind, what) = match &error {
        Error::Platform(e) if e.kind == ErrorKind::BadCredentials => (FailureKind::Credentials, e.message.clone()),
        // Without the request id: the same failure again is the same condition, and no write.
        Error::Platform(e) if e.retryable() => (FailureKind::Transient, format!("{}: {}", e.operation, e.message)),
        Error::Platform(e) => (FailureKind::Refused, format!("{}: {}", e.operation, e.message)),
        Error::Credentials(e) => (FailureKind::Credentials, e.to_string()),
        _ => return error,
    };
    let previous = bu.status.clone().unwrap_or_default();
    if finished(previous.state) {
        return error;
    }
    let status = rules::platform_failed(&previous, kind, &what, bu.metadata.generation, &super::now());
    if status == previous {
        return error;
    }
    match apply_status_guarded(&ctx.client, bu, &status).await {
        Ok(written) => {
            ctx.wrote(&written);
            if let Some((reason, message)) = rules::failure_event(&previous, &status, kind) {
                publish_event(ctx, bu, true, reason.as_str(), message, "Reconcile").await;
            }
        }
        Err(e) => warn!(bulk_upgrade = %full_name(bu), error = %e, "could not report a platform failure on the status"),
    }
    error
}

/// How soon to read a running rollout again: a quarter of its age, between 250 ms and `poll`, so
/// a short rollout is seen finished at once and a long one costs a read every `poll`.
fn poll_after(age: Duration, poll: Duration) -> Duration {
    (age / 4).clamp(Duration::from_millis(250).min(poll), poll)
}

/// What the Leases of `bu` are keyed by (its app and account), from the caches.
fn lease_facts(bu: &BulkUpgrade, ctx: &Context) -> Option<rules::AppFacts> {
    let app = ctx.caches.app(&bu.namespace().unwrap_or_default(), &bu.spec.app_ref.name)?;
    match rules::app_view(Some(&app), &bu.spec, vec![], &ctx.claim_of(&app)) {
        AppView::Read(facts) => Some(facts),
        _ => None,
    }
}

fn count(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Reads what the decision needs: the cluster's side from the caches, the platform's side only
/// when it matters (a running rollout's progress; before a new rollout, eligibility, the count on
/// the source version and a rollout to adopt).
async fn gather(bu: &BulkUpgrade, bctx: &BulkContext) -> Result<Gathered, Error> {
    let ctx = &bctx.ctx;
    let ns = bu.namespace().unwrap_or_default();
    let status = bu.status.clone().unwrap_or_default();
    let app = ctx.caches.app(&ns, &bu.spec.app_ref.name);
    let installations = ctx.caches.installations_of_app(&ns, &bu.spec.app_ref.name);
    let pinned = rules::pinned(&bu.spec, installations.iter().map(|i| i.as_ref()));
    let claim = app.as_deref().map(|a| ctx.claim_of(a)).unwrap_or_default();
    let view = rules::app_view(app.as_deref(), &bu.spec, pinned, &claim);
    let mut gathered =
        Gathered { app: app.clone(), view, platform: PlatformView::default(), admission: Admission::Free, creds: None };
    let (Some(app), AppView::Read(facts)) = (app, &gathered.view) else { return Ok(gathered) };
    if finished(status.state) {
        return Ok(gathered);
    }
    gathered.admission = admission_of(bu, facts, bctx);
    let admission = &gathered.admission;
    let creds = ctx.credentials_for(&app).await?;
    let platform = &ctx.platform;
    let app_id = app.spec.app_id.as_str();
    let env_key = crate::platform::environment_key(&bu.spec.environment);
    let observed = async {
        let mut view = PlatformView::default();
        if let Some(r) = running_rollout(&status) {
            view.current = match platform.rollout(&creds, &r.id).await? {
                Some(seen) => Current::Seen(seen),
                None => Current::Gone,
            };
        }
        let still_running = matches!(&view.current, Current::Seen(r) if r.status == RolloutStatus::Running);
        // Waiting for a Lease (and not retrying a start): nothing to ask the platform yet.
        let queued =
            matches!(admission, Admission::Busy { .. }) && status.starting.is_none() && status.rollouts.is_empty();
        if let (false, false, Some(source), Some(target)) = (still_running, queued, &facts.source, &facts.target) {
            let targets = platform.upgrade_targets(&creds, app_id, env_key, &source.id).await?;
            let offered = targets.iter().find(|t| t.version_id == target.id);
            view.upgradeable = Some(offered.is_some_and(|t| t.upgradeable_by_rollout));
            view.upgrade_limit = offered.and_then(|t| t.upgrade_limit);
            let counts = platform.installation_counts(&creds, app_id, env_key).await?;
            let on_source = counts.iter().find(|c| c.id == source.id || c.version == source.version);
            view.on_source = Some(on_source.map(|c| count(c.installations)).unwrap_or(0));
            view.counts = Some(counts);
            if let Some(starting) = &status.starting {
                let since = starting.since.0.as_millisecond();
                view.adoptable = platform
                    .rollouts(&creds, app_id, env_key)
                    .await?
                    .into_iter()
                    .filter(|r| r.source_version_id == source.id && r.target_version_id == target.id)
                    .filter(|r| !status.rollouts.iter().any(|known| known.id == r.id))
                    .filter(|r| {
                        r.created_at.as_deref().and_then(crate::platform::time_millis).is_some_and(|c| c >= since)
                    })
                    .collect();
            }
        }
        // Queued before its first rollout: the preview is computed once while it waits.
        if queued && status.preview.is_none() && facts.source.is_some() {
            view.counts = Some(platform.installation_counts(&creds, app_id, env_key).await?);
        }
        Ok::<_, PlatformError>(view)
    }
    .await;
    match observed {
        Ok(view) => gathered.platform = view,
        Err(e) => {
            ctx.saw_platform_error(&creds, &e);
            return Err(e.into());
        }
    }
    gathered.creds = Some(creds);
    Ok(gathered)
}

/// Admission from the Lease cache and the other upgrades in the watch cache.
fn admission_of(bu: &BulkUpgrade, facts: &rules::AppFacts, bctx: &BulkContext) -> Admission {
    let account = facts.account.as_str();
    let ctx = &bctx.ctx;
    let hold = |name: &str| {
        let lease = ctx.caches.lease(&ctx.operator_namespace, name)?;
        let holder = lease.spec.as_ref()?.holder_identity.clone().filter(|h| !h.is_empty())?;
        let live = !bctx.observer.available_to(name, &lease, "");
        let display = lease
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(leases::HOLDER_ANNOTATION).cloned())
            .unwrap_or_else(|| holder.clone());
        Some(LeaseHold { holder, name: display, live })
    };
    let held = Leases {
        environment: hold(&env_lease(&facts.app_id, bu)),
        account: hold(&account_lease(account)),
        slots: (0..bctx.limits.global).map(|i| hold(&slot_lease(i))).collect(),
    };
    let me = uid(bu);
    let ns = bu.namespace();
    let others: Vec<Other> = bctx
        .upgrades
        .state()
        .into_iter()
        .filter(|o| uid(o) != me)
        .filter_map(|o| {
            let created = o.metadata.creation_timestamp.clone()?.0;
            let state = o.status.as_ref().and_then(|s| s.state).unwrap_or_default();
            let waiting = rules::holds_a_place(state, o.spec.cancelled, o.metadata.deletion_timestamp.is_some());
            let same_app = o.namespace() == ns && o.spec.app_ref == bu.spec.app_ref;
            let other_account = ctx
                .caches
                .app(&o.namespace().unwrap_or_default(), &o.spec.app_ref.name)
                .and_then(|a| a.account().map(str::to_string));
            let for_slot = o.status.as_ref().is_some_and(rules::waits_for_slot);
            Some(Other {
                name: full_name(&o),
                created,
                waiting,
                same_environment: same_app && o.spec.environment == bu.spec.environment,
                same_account: other_account.as_deref() == Some(account),
                for_slot,
            })
        })
        .collect();
    let older = bu.metadata.creation_timestamp.as_ref().and_then(|c| rules::older_waiting(c.0, &others));
    rules::admission(&me, &held, older)
}

/// Carries out the effects in order. `None`: a Lease was lost to another upgrade meanwhile (no
/// status is written; the next round decides again).
async fn execute(
    bu: &BulkUpgrade,
    decision: &Decision,
    inputs: &Inputs<'_>,
    gathered: &Gathered,
    bctx: &BulkContext,
) -> Result<Option<(BulkUpgradeStatus, Requeue)>, Error> {
    let ctx = &bctx.ctx;
    let mut status = decision.status.clone();
    let mut requeue = decision.requeue;
    let was_finished = finished(inputs.previous.state);
    for effect in &decision.effects {
        match effect {
            Effect::TakeLeases | Effect::TakeLeasesWithoutSlot => {
                let AppView::Read(facts) = &gathered.view else { continue };
                if !take_leases(bu, facts, *effect == Effect::TakeLeases, bctx).await? {
                    return Ok(None);
                }
            }
            Effect::ReleaseLeases => {
                // On the way to a final state, the API is asked too (the cache may lag behind a
                // Lease just taken); otherwise the cache says whether anything is held.
                let finishing = finished(status.state) && !was_finished;
                release_all(bctx, &uid(bu), finishing).await?;
            }
            Effect::StartRollout(request) => {
                ctx.fence.check()?;
                let Some(creds) = gathered.creds.as_ref() else {
                    // The rules start a rollout only for an app read with credentials; should that
                    // ever not hold, the object reports it and nothing is sent.
                    return Err(Error::NotYet {
                        what: "no credentials to start the rollout with".into(),
                        after: bctx.limits.recheck,
                    });
                };
                let answer = match ctx
                    .platform
                    .create_rollout(creds, &request.source.id, &request.target.id, request.limit)
                    .await
                {
                    Ok(started) => {
                        info!(bulk_upgrade = %full_name(bu), rollout = %started.rollout_id, step = request.step,
                            limit = ?request.limit, "started a rollout on the platform");
                        StartAnswer::Started { started, request: request.clone() }
                    }
                    Err(e) => match rules::refusal(e.kind) {
                        Some(reason) => {
                            info!(bulk_upgrade = %full_name(bu), %reason, "the platform refused the rollout for now");
                            // Name the rollout it waits for, when it is this app environment's.
                            let running = if reason == Reason::AppRolloutRunning {
                                let app_id = gathered.app.as_ref().map(|a| a.spec.app_id.clone()).unwrap_or_default();
                                let env = crate::platform::environment_key(&bu.spec.environment);
                                ctx.platform.rollouts(creds, &app_id, env).await.ok().and_then(|all| {
                                    all.into_iter().find(|r| r.status == RolloutStatus::Running).map(|r| r.id)
                                })
                            } else {
                                None
                            };
                            StartAnswer::Refused { reason, message: refusal_message(reason, running.as_deref(), &e) }
                        }
                        None => {
                            ctx.saw_platform_error(creds, &e);
                            return Err(e.into());
                        }
                    },
                };
                let (folded, after) = rules::after_start(
                    decision,
                    answer,
                    &inputs.previous.conditions,
                    inputs.spec,
                    inputs.generation,
                    &inputs.now,
                );
                status = folded;
                requeue = after;
            }
            Effect::CancelRollout(id) => {
                ctx.fence.check()?;
                let Some(creds) = gathered.creds.as_ref() else {
                    return Err(Error::NotYet {
                        what: "no credentials to cancel the rollout with".into(),
                        after: bctx.limits.recheck,
                    });
                };
                match ctx.platform.cancel_rollout(creds, id).await {
                    Ok(()) => {
                        info!(bulk_upgrade = %full_name(bu), rollout = %id, "cancelled the rollout on the platform")
                    }
                    // Finished or forgotten meanwhile: the next poll shows it.
                    Err(e)
                        if matches!(
                            e.kind,
                            crate::platform::ErrorKind::NotFound | crate::platform::ErrorKind::Refused
                        ) =>
                    {
                        info!(bulk_upgrade = %full_name(bu), rollout = %id, error = %e, "the rollout was no longer running")
                    }
                    Err(e) => {
                        ctx.saw_platform_error(creds, &e);
                        return Err(e.into());
                    }
                }
            }
            Effect::RefreshInstallations => {
                let (Some(app), Some(creds)) = (&gathered.app, &gathered.creds) else { continue };
                let still_running = running_rollout(&status).is_some();
                let key = format!("{}/{}", app.namespace().unwrap_or_default(), app.name_any());
                let due = {
                    let mut last = bctx.refreshed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    let due = !still_running || last.get(&key).is_none_or(|t| t.elapsed() >= bctx.limits.refresh);
                    if due {
                        last.insert(key.clone(), Instant::now());
                    }
                    due
                };
                if due {
                    // Behind the decision: the next rollout starts while the moved sites are
                    // listed (ten thousand installations are a hundred pages).
                    list_behind(bctx, key, app.clone(), creds.clone(), full_name(bu));
                }
            }
            Effect::Analyze(request) => {
                let (Some(app), Some(creds)) = (&gathered.app, &gathered.creds) else {
                    return Err(Error::NotYet {
                        what: "no credentials to read the app's metrics with".into(),
                        after: bctx.limits.recheck,
                    });
                };
                let app_id = app.spec.app_id.clone();
                let key = crate::platform::environment_key(&bu.spec.environment);
                let measured = async {
                    let environment_id = ctx
                        .platform
                        .environments(creds, &app_id)
                        .await?
                        .into_iter()
                        .find(|e| e.key == key)
                        .map(|e| e.id);
                    let query = |kind| crate::platform::MetricsQuery {
                        app_id: app_id.clone(),
                        environment_id: environment_id.clone(),
                        kind,
                        start_ms: request.start.0.as_millisecond(),
                        end_ms: request.end.0.as_millisecond(),
                    };
                    let invocations =
                        ctx.platform.app_metrics(creds, &query(crate::platform::MetricKind::Invocations)).await?;
                    let errors = ctx.platform.app_metrics(creds, &query(crate::platform::MetricKind::Errors)).await?;
                    Ok::<_, crate::platform::PlatformError>((invocations, errors))
                };
                let (invocations, errors) = match measured.await {
                    Ok(m) => m,
                    Err(e) => {
                        ctx.saw_platform_error(creds, &e);
                        return Err(e.into());
                    }
                };
                status = rules::after_analysis(&status, &bu.spec, request, &invocations, &errors);
                if let Some(record) = status.analyses.iter().find(|a| a.step == request.step) {
                    info!(bulk_upgrade = %full_name(bu), step = request.step, verdict = ?record.verdict,
                        message = %record.message, "analysed a step");
                }
            }
            Effect::Delete => {
                info!(bulk_upgrade = %full_name(bu), "deleting the finished bulk upgrade: its TTL has passed");
                let api: Api<BulkUpgrade> = Api::namespaced(ctx.client.clone(), &bu.namespace().unwrap_or_default());
                match api.delete(&bu.name_any(), &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
                return Ok(Some((inputs.previous.clone(), Requeue::AwaitChange)));
            }
        }
    }
    Ok(Some((status, requeue)))
}

/// Lists the app's installations in a task of its own (see [`super::listing::refresh`]), one at a
/// time per app: a listing asked for while one is under way runs once more after it, so what a
/// rollout moved last is always listed after it moved.
fn list_behind(bctx: &BulkContext, key: String, app: Arc<ForgeApp>, creds: Credentials, upgrade: String) {
    let inflight = bctx.listing.clone();
    {
        let mut m = inflight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(again) = m.get_mut(&key) {
            *again = true;
            return;
        }
        m.insert(key.clone(), false);
    }
    let ctx = bctx.ctx.clone();
    tokio::spawn(async move {
        loop {
            if let Err(e) = super::listing::refresh(&ctx, &app, &creds).await {
                // The next refresh (or the ForgeApp's own) catches up.
                warn!(bulk_upgrade = %upgrade, error = %e, "listing the app's installations failed");
            }
            let mut m = inflight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if m.get(&key) == Some(&true) {
                m.insert(key.clone(), false);
            } else {
                m.remove(&key);
                break;
            }
        }
    });
}

fn refusal_message(reason: Reason, rollout: Option<&str>, e: &PlatformError) -> String {
    let what = match (reason, rollout) {
        (Reason::AppRolloutRunning, Some(id)) => {
            format!("rollout {id}, already running on the platform for this app environment")
        }
        (Reason::AppRolloutRunning, None) => {
            "a rollout already running on the platform for this app environment".into()
        }
        (Reason::AccountRolloutRunning, _) => {
            "a rollout already running on the platform for another app of this account".into()
        }
        _ => "the platform's global limit on running rollouts".into(),
    };
    format!("{what} (started outside this cluster?): {}", e.message)
}

/// Events: one per state change, and one per rollout started or adopted.
async fn report(bu: &BulkUpgrade, ctx: &Context, previous: &BulkUpgradeStatus, next: &BulkUpgradeStatus) {
    for r in next.rollouts.iter().skip(previous.rollouts.len()) {
        let verb = if r.adopted { "adopted" } else { "started" };
        let note = format!(
            "{verb} rollout {} for step {}: {} -> {}, {} installation(s){}",
            r.id,
            r.step,
            r.source_version,
            r.target_version,
            r.pending + r.completed + r.failed,
            r.limit.map(|l| format!(" (limit {l})")).unwrap_or_default()
        );
        publish_event(ctx, bu, false, "RolloutStarted", note, "Reconcile").await;
    }
    if previous.state == next.state {
        return;
    }
    let state = next.state.unwrap_or_default();
    info!(bulk_upgrade = %full_name(bu), ?state, "bulk upgrade state changed");
    let progressing = conds::find(&next.conditions, rules::Type::Progressing);
    let admitted = conds::find(&next.conditions, rules::Type::Admitted);
    let eligible = conds::find(&next.conditions, rules::Type::Eligible);
    let (warning, condition) = match state {
        BulkUpgradeState::Ineligible => (true, eligible),
        BulkUpgradeState::Queued | BulkUpgradeState::Pending => (false, admitted),
        BulkUpgradeState::Failed => (true, progressing),
        _ => (false, progressing),
    };
    let Some(c) = condition else { return };
    let reason = if state == BulkUpgradeState::Complete { "Completed".to_string() } else { c.reason.to_string() };
    publish_event(ctx, bu, warning, &reason, c.message.clone(), "Reconcile").await;
}

/// The operator-wide webhook: this Secret in the operator's namespace (keys `url`, and `format`:
/// `json` or `slack`), for every BulkUpgrade without `spec.notifications`.
pub const OPERATOR_NOTIFICATIONS_SECRET: &str = "forgeops-notifications";

/// Where an upgrade's notifications go.
enum Target {
    /// Not looked up: nothing to send.
    NotLooked,
    /// Nowhere (no webhook configured, or its Secret holds no URL).
    Nowhere,
    /// The Secret could not be read: what is told waits in the outbox.
    Unreadable,
    At {
        url: String,
        format: crate::api::NotificationFormat,
    },
}

/// Files in `next`'s outbox the notifications its change from `previous` tells, and takes out
/// those this process delivered or gave up on; answers where to send what it holds, looked up
/// only when there is something to send: the upgrade's webhook, or the operator-wide one
/// ([`OPERATOR_NOTIFICATIONS_SECRET`]) if it has none (the URL read from its Secret each time, so
/// a rotated URL is used at once).
async fn file_notifications(
    bu: &BulkUpgrade,
    bctx: &BulkContext,
    previous: &BulkUpgradeStatus,
    next: &mut BulkUpgradeStatus,
) -> Target {
    let key = ObjectRef::from_obj(bu);
    let told = crate::rules::notify::notices(previous, next);
    let mut settled = bctx.notifier.settled(&key);
    let unsent = previous.outbox.iter().any(|n| bctx.notifier.unsent(&key, n.id));
    let target = if told.is_empty() && !unsent { Target::NotLooked } else { webhook(bu, bctx).await };
    let told = match target {
        Target::Nowhere => {
            // Nowhere to send: nothing waits (a webhook configured later hears what happens then).
            settled.extend(previous.outbox.iter().map(|n| n.id));
            Vec::new()
        }
        _ => told,
    };
    let at = super::whole_second(bctx.clock.now());
    let dropped = crate::rules::notify::file(previous, next, told, &settled, &at);
    if dropped > 0 {
        warn!(bulk_upgrade = %full_name(bu), dropped, "the notification outbox is full: dropped the oldest undelivered");
    }
    target
}

/// Hands the outbox's notifications to the notifier (which skips those it has already), after
/// the status holding them is written; forgets the settled ones no longer in it.
fn send_notifications(bu: &BulkUpgrade, bctx: &BulkContext, status: &BulkUpgradeStatus, target: &Target) {
    let key = ObjectRef::from_obj(bu);
    if let Target::At { url, format } = target {
        let namespace = bu.namespace().unwrap_or_default();
        for pending in &status.outbox {
            let notice = crate::rules::notify::notice_of(pending);
            let at = pending.at.0.to_string();
            let body = crate::rules::notify::payload(*format, &namespace, &bu.name_any(), &notice, &at);
            bctx.notifier.send(&key, pending.id, url.clone(), body, format!("{:?}", notice.kind));
        }
    }
    if matches!(target, Target::Nowhere) {
        for pending in &status.outbox {
            bctx.notifier.give_up(&key, pending.id);
        }
    }
    let kept: Vec<u32> = status.outbox.iter().map(|n| n.id).collect();
    bctx.notifier.forget(&key, &kept);
}

/// The upgrade's webhook (see [`file_notifications`]).
async fn webhook(bu: &BulkUpgrade, bctx: &BulkContext) -> Target {
    let ctx = &bctx.ctx;
    let namespace = bu.namespace().unwrap_or_default();
    let (secret_namespace, name, key) = match &bu.spec.notifications {
        Some(n) => (namespace.clone(), n.webhook_secret_ref.name.clone(), n.webhook_secret_ref.key.clone()),
        None => (ctx.operator_namespace.clone(), OPERATOR_NOTIFICATIONS_SECRET.to_string(), "url".to_string()),
    };
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(ctx.client.clone(), &secret_namespace);
    let secret = match secrets.get_opt(&name).await {
        Ok(secret) => secret,
        // A Secret the operator may not read is a missing one; anything else is retried.
        Err(kube::Error::Api(e)) if e.code == 403 => None,
        Err(e) => {
            warn!(bulk_upgrade = %full_name(bu), error = %e, "could not read the notification webhook's Secret");
            return Target::Unreadable;
        }
    };
    let text = |k: &str| {
        secret
            .as_ref()
            .and_then(|s| s.data.as_ref())
            .and_then(|d| d.get(k))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
    };
    let url =
        text(&key).map(|u| u.trim().to_string()).filter(|u| u.starts_with("https://") || u.starts_with("http://"));
    let Some(url) = url else {
        // Without an operator-wide Secret there is nothing to tell; a BulkUpgrade's own is missing.
        if bu.spec.notifications.is_some() {
            let note = format!(
                "no notification sent: Secret {name} has no key {key} holding an http(s) URL (or cannot be read by the operator)"
            );
            publish_event(ctx, bu, true, "NotificationFailed", note, "Notify").await;
        }
        return Target::Nowhere;
    };
    let format = match &bu.spec.notifications {
        Some(n) => n.format,
        None if text("format").is_some_and(|f| f.trim().eq_ignore_ascii_case("slack")) => {
            crate::api::NotificationFormat::Slack
        }
        None => crate::api::NotificationFormat::Json,
    };
    Target::At { url, format }
}

/// Takes (or renews) the environment, account and (`with_slot`) one global-slot Lease, all or
/// none; without the slot, one it holds is released. Answers whether it holds them all.
async fn take_leases(
    bu: &BulkUpgrade,
    facts: &rules::AppFacts,
    with_slot: bool,
    bctx: &BulkContext,
) -> Result<bool, Error> {
    let ctx = &bctx.ctx;
    let api: Api<Lease> = Api::namespaced(ctx.client.clone(), &ctx.operator_namespace);
    let me = Holder { uid: uid(bu), name: full_name(bu) };
    let duration = bctx.limits.lease_duration;
    let cached = |name: &str| ctx.caches.lease(&ctx.operator_namespace, name);
    for name in [env_lease(&facts.app_id, bu), account_lease(&facts.account)] {
        if !matches!(claim(&api, &name, cached(&name), &me, duration, &bctx.observer).await?, Claim::Held) {
            release_all(bctx, &me.uid, true).await?;
            return Ok(false);
        }
    }
    let slots: Vec<String> = (0..bctx.limits.global).map(slot_lease).collect();
    if !with_slot {
        for slot in &slots {
            let held = cached(slot).and_then(|l| l.spec.clone()).and_then(|s| s.holder_identity);
            if held.as_deref() == Some(me.uid.as_str()) {
                leases::remove(&api, slot, &me.uid).await?;
            }
        }
        return Ok(true);
    }
    let mine = slots.iter().find(|s| {
        cached(s).and_then(|l| l.spec.clone()).and_then(|s| s.holder_identity).as_deref() == Some(me.uid.as_str())
    });
    let order: Vec<&String> = mine.into_iter().chain(slots.iter().filter(|s| Some(*s) != mine)).collect();
    for slot in order {
        let lease = cached(slot);
        if lease.as_ref().is_some_and(|l| !bctx.observer.available_to(slot, l, &me.uid)) {
            continue;
        }
        if matches!(claim(&api, slot, lease, &me, duration, &bctx.observer).await?, Claim::Held) {
            return Ok(true);
        }
    }
    release_all(bctx, &me.uid, true).await?;
    Ok(false)
}

/// Takes or renews one Lease, from the cached copy (no read); a renewal younger than a third of the
/// duration is skipped. On a conflict (the cache was behind) it reads the Lease once and tries again.
async fn claim(
    api: &Api<Lease>,
    name: &str,
    cached: Option<Arc<Lease>>,
    me: &Holder,
    duration: Duration,
    observer: &leases::Observer,
) -> Result<Claim, Error> {
    if let Some(lease) = &cached {
        let spec = lease.spec.as_ref();
        let mine = spec.and_then(|s| s.holder_identity.as_deref()) == Some(me.uid.as_str());
        let renewed = spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0);
        let fresh = renewed.is_some_and(|r| jiff::Timestamp::now().duration_since(r).unsigned_abs() < duration / 3);
        if mine && fresh {
            return Ok(Claim::Held);
        }
    }
    match leases::claim_from(api, name, cached.as_deref(), me, duration, observer).await? {
        Some(claim) => Ok(claim),
        None => Ok(leases::claim(api, name, me, duration, observer).await?),
    }
}

/// Releases every Lease the upgrade holds. With `ask_api`, the upgrade's own Lease names are read
/// from the API too (the cache may not show a Lease just taken yet). Idempotent.
async fn release_all(bctx: &BulkContext, holder: &str, ask_api: bool) -> Result<(), Error> {
    let ctx = &bctx.ctx;
    let api: Api<Lease> = Api::namespaced(ctx.client.clone(), &ctx.operator_namespace);
    let mut names: Vec<String> = ctx
        .caches
        .leases
        .state()
        .into_iter()
        .filter(|l| l.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(holder))
        .map(|l| l.name_any())
        .collect();
    if ask_api {
        for lease in api.list(&Default::default()).await?.items {
            if lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(holder) {
                names.push(lease.name_any());
            }
        }
        names.sort();
        names.dedup();
    }
    for name in names {
        // A free bulk-upgrade Lease means nothing: it is deleted, not left behind.
        leases::remove(&api, &name, holder).await?;
    }
    Ok(())
}

/// The Lease that admits one running bulk upgrade per app environment: keyed by the platform's app
/// (its appId) and the environment, so two objects can never both hold it for one app on the
/// platform, whatever their namespaces or names.
pub fn env_lease_name(app_id: &str, environment: &str) -> String {
    let app = app_id.rsplit('/').next().unwrap_or(app_id);
    leases::lease_name("forgeops-bulkupgrade-env", &format!("{app}/{environment}"))
}

fn env_lease(app_id: &str, bu: &BulkUpgrade) -> String {
    env_lease_name(app_id, &bu.spec.environment)
}

fn account_lease(account: &str) -> String {
    leases::lease_name("forgeops-bulkupgrade-account", account)
}

fn slot_lease(i: u32) -> String {
    format!("forgeops-bulkupgrade-slot-{i}")
}

/// Retries with the object's backoff; while a rollout runs, never later than a third of the Lease
/// duration, so the Leases are renewed through a platform outage.
pub fn error_policy(bu: Arc<BulkUpgrade>, error: &Error, bctx: Arc<BulkContext>) -> Action {
    let delay = retry_delay(NAME, bu.as_ref(), error, &bctx.ctx);
    let running = bu.status.as_ref().is_some_and(|s| running_rollout(s).is_some());
    Action::requeue(if running { delay.min(bctx.limits.lease_duration / 3) } else { delay })
}

/// What a BulkUpgrade's own changes must alter to trigger a reconcile: its generation (the spec),
/// its finalizers, whether it is being deleted, or what its annotations ask (approvals, the
/// emergency stop).
fn spec_or_deletion(bu: &BulkUpgrade) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bu.metadata.generation.hash(&mut h);
    bu.metadata.deletion_timestamp.is_some().hash(&mut h);
    // The finalizer helper waits for the event of its own finalizer being added.
    bu.metadata.finalizers.hash(&mut h);
    let asked = rules::asked(bu.metadata.annotations.as_ref());
    asked.approved.hash(&mut h);
    asked.stop.hash(&mut h);
    Some(h.finish())
}

/// Runs the BulkUpgrade controller until `shutdown` resolves. An upgrade is re-evaluated when its
/// app changes (an ineligible one may become eligible).
pub async fn run(
    api: Api<BulkUpgrade>,
    ctx: Arc<Context>,
    limits: Limits,
    clock: crate::clock::Clock,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    // Only spec changes and deletion trigger a reconcile, not the upgrade's own status writes:
    // those change with every poll while a rollout runs, and would otherwise poll in a loop.
    let (reader, writer) = kube::runtime::reflector::store();
    let changes = super::decoded::watch(api, ctx.undecodable.clone())
        .reflect(writer)
        .applied_objects()
        .predicate_filter(spec_or_deletion, PredicateConfig::default());
    let controller = Controller::for_stream(changes, reader)
        .with_config(kube::runtime::controller::Config::default().concurrency(super::concurrency::SMALL));
    let upgrades = controller.store();
    let by_app = controller.store();
    ctx.metrics.fleet.watch_bulk_upgrades(controller.store());
    let app_changes = ctx.caches.take_app_changes(super::caches::Dependents::BulkUpgrades);
    let (notifier, notified) = super::notify::Notifier::with_defaults();
    let bctx = Arc::new(BulkContext {
        ctx,
        limits,
        upgrades,
        refreshed: Mutex::new(HashMap::new()),
        listing: Arc::default(),
        observer: leases::Observer::default(),
        notifier,
        clock: clock.clone(),
    });
    controller
        .reconcile_on(super::dependents_of_changed_apps(app_changes, move |ns, app| {
            objects_of_app(&by_app, Some(ns.to_string()), app)
        }))
        // Notifications delivered: out of the outbox.
        .reconcile_on(notified)
        // A clock set by a test: every upgrade is decided again by the new time.
        .reconcile_all_on(clock.jumps())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, bctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_young_rollout_is_polled_sooner() {
        let poll = Duration::from_secs(2);
        assert_eq!(poll_after(Duration::ZERO, poll), Duration::from_millis(250));
        assert_eq!(poll_after(Duration::from_secs(2), poll), Duration::from_millis(500));
        assert_eq!(poll_after(Duration::from_secs(60), poll), poll);
        assert_eq!(poll_after(Duration::ZERO, Duration::from_millis(100)), Duration::from_millis(100));
    }
}
