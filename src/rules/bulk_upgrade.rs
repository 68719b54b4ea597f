//! The BulkUpgrade rules. A bulk upgrade runs as platform rollouts (`createAppVersionRollout`), in
//! the progressive steps of `spec.steps`, under the cluster's Leases and the platform's own limits.
//!
//! [`decide`] is the whole state machine, and pure: from the spec, the previous status, what the
//! platform and the Leases look like now, it returns the next status (conditions included), the
//! effects to carry out (take or release the Leases, start or cancel a rollout, refresh the
//! installations, delete) and when to look again. The controller only gathers the inputs and
//! carries out the effects; [`after_start`] folds the platform's answer to a start into the
//! status.
//!
//! States: `Pending` (the app is not read yet), `Ineligible`, `Queued` (a Lease or the platform's
//! own limit), `Running`, `Paused`, and the final `Complete`, `Cancelled` and `Failed`.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::api::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};

use super::conditions::{self as conds, Outcome};
use super::versions::{self, Version};
use crate::api::{
    AnalysisSpec, AnalysisVerdict, BulkUpgradeSpec, BulkUpgradeState, BulkUpgradeStatus, ForgeApp, Ineligibility,
    IneligibleReason, Installation, OnFailure, RolloutPhase, RolloutRecord, StartingRollout,
};
use crate::platform::{ErrorKind, Rollout, RolloutStarted, RolloutStatus};

crate::named! {
    /// The condition types a BulkUpgrade reports.
    pub enum Type { Eligible, Admitted, Progressing, Complete, Ready, Reconciling, Stalled }
}

crate::named! {
    /// Every reason a BulkUpgrade condition can give.
    pub enum Reason {
        // Eligibility.
        Eligible,
        AppNotFound,
        EnvironmentNotManaged,
        AppNotRead,
        MajorNotDeployed,
        ToMajorNotNewer,
        AddsScopes,
        AddsEgress,
        AddsPermissions,
        LicensingChanged,
        PlatformRefused,
        PinnedInstallations,
        /// Another namespace's ForgeApp owns the app.
        Conflict,
        // Admission: the cluster's Leases, then the platform's own limits.
        EnvironmentBusy,
        AccountBusy,
        GlobalLimitReached,
        AppRolloutRunning,
        AccountRolloutRunning,
        RolloutsUnavailable,
        Admitted,
        Released,
        // Progress.
        Pending,
        Queued,
        Ineligible,
        Starting,
        Running,
        PauseRequested,
        Cancelling,
        Paused,
        /// A step's bake time runs before the next step.
        Baking,
        /// The next step waits for its approval annotation.
        AwaitingApproval,
        /// Stopped by the emergency-stop annotation.
        EmergencyStop,
        /// A step's analysis window is measured.
        Analyzing,
        /// A step's analysis failed (stops, or waits for approval with `onFailure: Pause`).
        AnalysisFailed,
        /// A step's analysis had too little traffic to judge: waits for approval.
        AnalysisInconclusive,
        /// A rollout window holds the next rollout.
        OutsideWindow,
        Complete,
        LimitReached,
        NothingToUpgrade,
        Cancelled,
        CancelledOnPlatform,
        /// The upgrade's ForgeApp is gone while its rollout runs: nothing to follow or cancel it with.
        AppGone,
        MaxFailuresExceeded,
        // The platform could not be used.
        BadCredentials,
        PlatformError,
        AsExpected,
    }
}

crate::summarized!(Type, Reason);

type Decided = conds::Decided<Type, Reason>;

/// The condition reason of an eligibility rule.
pub fn reason_of(rule: Ineligibility) -> Reason {
    match rule {
        Ineligibility::AppNotFound => Reason::AppNotFound,
        Ineligibility::EnvironmentNotManaged => Reason::EnvironmentNotManaged,
        Ineligibility::MajorNotDeployed => Reason::MajorNotDeployed,
        Ineligibility::ToMajorNotNewer => Reason::ToMajorNotNewer,
        Ineligibility::AddsScopes => Reason::AddsScopes,
        Ineligibility::AddsEgress => Reason::AddsEgress,
        Ineligibility::AddsPermissions => Reason::AddsPermissions,
        Ineligibility::LicensingChanged => Reason::LicensingChanged,
        Ineligibility::PlatformRefused => Reason::PlatformRefused,
        Ineligibility::PinnedInstallations => Reason::PinnedInstallations,
        Ineligibility::Conflict => Reason::Conflict,
    }
}

fn ineligible(reason: Ineligibility, detail: String) -> IneligibleReason {
    IneligibleReason { reason, detail }
}

fn added<'a>(from: &'a [String], to: &'a [String]) -> Vec<&'a str> {
    let have: BTreeSet<&str> = from.iter().map(String::as_str).collect();
    to.iter().map(String::as_str).filter(|s| !have.contains(s)).collect::<BTreeSet<_>>().into_iter().collect()
}

/// Every eligibility rule the upgrade fails, comparing the latest minor of `fromMajor` with the
/// latest minor of `toMajor` as the app's status reports them. The platform decides
/// (`upgradeableByRollout`); this explains its refusal precisely. Removing scopes or egress and
/// adding the SQL module stay allowed. Empty means eligible.
pub fn eligibility(app: Option<&ForgeApp>, spec: &BulkUpgradeSpec) -> Vec<IneligibleReason> {
    let Some(app) = app else {
        return vec![ineligible(
            Ineligibility::AppNotFound,
            format!("ForgeApp {} does not exist in this namespace", spec.app_ref.name),
        )];
    };
    if !app.spec.environments.contains(&spec.environment) {
        return vec![ineligible(
            Ineligibility::EnvironmentNotManaged,
            format!(
                "ForgeApp {} does not manage environment {} (it manages {}): fix spec.environment, or add the \
                 environment to the ForgeApp's spec.environments",
                spec.app_ref.name,
                spec.environment,
                app.spec.environments.join(", ")
            ),
        )];
    }
    let deployed = app.deployed(&spec.environment);
    let mut out = Vec::new();
    if spec.to_major <= spec.from_major {
        out.push(ineligible(
            Ineligibility::ToMajorNotNewer,
            format!("toMajor {} is not newer than fromMajor {}", spec.to_major, spec.from_major),
        ));
    }
    let from = versions::latest_of_major(deployed, spec.from_major);
    let to = versions::latest_of_major(deployed, spec.to_major);
    for (major, v) in [(spec.from_major, from), (spec.to_major, to)] {
        if v.is_none() {
            out.push(ineligible(
                Ineligibility::MajorNotDeployed,
                format!("major {major} is not deployed in environment {}", spec.environment),
            ));
        }
    }
    let (Some(from), Some(to)) = (from, to) else { return out };
    let scopes = added(&from.scopes, &to.scopes);
    if !scopes.is_empty() {
        let detail = scopes.iter().map(|s| format!("adds scope {s}")).collect::<Vec<_>>().join(", ");
        out.push(ineligible(Ineligibility::AddsScopes, detail));
    }
    // Egress and what else needs consent, from the whole permission set (scopes and licensing
    // are told above).
    let changes = super::permissions::difference(Some(from), to);
    let egress: Vec<String> = changes.iter().filter(|c| c.is_egress()).map(|c| format!("adds {c}")).collect();
    if !egress.is_empty() {
        out.push(ineligible(Ineligibility::AddsEgress, egress.join(", ")));
    }
    let other: Vec<String> = changes
        .iter()
        .filter(|c| matches!(c, super::permissions::Change::Remote(_) | super::permissions::Change::SecurityPolicy(_)))
        .map(|c| format!("adds {c}"))
        .collect();
    if !other.is_empty() {
        out.push(ineligible(Ineligibility::AddsPermissions, other.join(", ")));
    }
    if from.licensing != to.licensing {
        let on_off = |b: bool| if b { "enabled" } else { "disabled" };
        out.push(ineligible(
            Ineligibility::LicensingChanged,
            format!(
                "licensing is {} in {} but {} in {}",
                on_off(from.licensing),
                Version::of(from),
                on_off(to.licensing),
                Version::of(to)
            ),
        ));
    }
    out
}

/// Installations declared in the cluster that a rollout would move although their spec pins
/// them to another major: on the source major, with `spec.majorVersion` set to neither major of
/// the upgrade's target. A platform rollout cannot leave them out, so the upgrade waits for them.
pub fn pinned<'a>(spec: &BulkUpgradeSpec, installations: impl IntoIterator<Item = &'a Installation>) -> Vec<String> {
    let mut out: Vec<String> = installations
        .into_iter()
        .filter(|i| i.spec.app_ref == spec.app_ref && i.spec.environment == spec.environment)
        .filter(|i| i.metadata.deletion_timestamp.is_none())
        .filter(|i| i.status.as_ref().and_then(|s| s.installed_major) == Some(spec.from_major))
        .filter(|i| i.spec.major_version.is_some_and(|m| m != spec.to_major))
        .filter_map(|i| i.metadata.name.clone())
        .collect();
    out.sort();
    out
}

/// A version the platform knows by id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionRef {
    pub id: String,
    /// The platform's dotted version string.
    pub version: String,
}

/// What the cluster says about the upgrade's app.
#[derive(Clone, Debug, PartialEq)]
pub enum AppView {
    /// No ForgeApp of that name in the namespace.
    Missing,
    /// The upgrade cannot start because of its own spec or its app's owner (the ForgeApp does not
    /// manage the environment, or another namespace's ForgeApp owns the app): only a change fixes it.
    Unmanaged(Vec<IneligibleReason>),
    /// The ForgeApp has not been read from the platform yet.
    NotRead,
    Read(AppFacts),
}

/// The upgrade's app as read from the platform.
#[derive(Clone, Debug, PartialEq)]
pub struct AppFacts {
    /// The platform's app (its appId), for the environment Lease.
    pub app_id: String,
    /// The developer account, for the account Lease.
    pub account: String,
    /// The latest version of fromMajor (what rollouts upgrade from).
    pub source: Option<VersionRef>,
    /// The latest version of toMajor (what rollouts upgrade to).
    pub target: Option<VersionRef>,
    /// [`eligibility`]: every rule the upgrade fails, as the app's status shows.
    pub reasons: Vec<IneligibleReason>,
    /// [`pinned`] installations.
    pub pinned: Vec<String>,
}

/// Builds the [`AppView`] of `spec` from the ForgeApp (if any), whether it owns the app (`claim`)
/// and the pinned installations. Only the owner's upgrades may start: another's is ineligible, and
/// one whose app is not claimed yet waits as not read.
pub fn app_view(
    app: Option<&ForgeApp>,
    spec: &BulkUpgradeSpec,
    pinned: Vec<String>,
    claim: &crate::ownership::Claim,
) -> AppView {
    let Some(app) = app else { return AppView::Missing };
    match claim {
        crate::ownership::Claim::Ours => {}
        crate::ownership::Claim::Theirs(owner) => {
            let detail = format!(
                "app {} belongs to ForgeApp {owner}, not to ForgeApp {} of this namespace: upgrade it from the owner's \
                 namespace, or delete this BulkUpgrade",
                app.spec.app_id, spec.app_ref.name
            );
            return AppView::Unmanaged(vec![ineligible(Ineligibility::Conflict, detail)]);
        }
        crate::ownership::Claim::Unclaimed => return AppView::NotRead,
    }
    if !app.spec.environments.contains(&spec.environment) {
        return AppView::Unmanaged(eligibility(Some(app), spec));
    }
    let read = app.status.as_ref().is_some_and(|s| s.environments.iter().any(|e| e.name == spec.environment));
    let Some(account) = app.account().filter(|_| read) else {
        // Never read, and stalled on what only a change fixes (credentials, the appId, an
        // environment missing on the platform): the upgrade says so and holds no place.
        let stalled =
            app.status.as_ref().and_then(|s| conds::find(&s.conditions, crate::rules::forge_app::Type::Stalled));
        if let Some(c) = stalled.filter(|c| c.status == crate::api::TRUE) {
            let detail = format!(
                "ForgeApp {} cannot be read from the platform ({}: {}): fix that first",
                spec.app_ref.name, c.reason, c.message
            );
            return AppView::Unmanaged(vec![ineligible(Ineligibility::AppNotFound, detail)]);
        }
        return AppView::NotRead;
    };
    let deployed = app.deployed(&spec.environment);
    let version_ref = |major| {
        versions::latest_of_major(deployed, major).and_then(|v| {
            Some(VersionRef {
                id: v.id.clone()?,
                version: v.version.clone().unwrap_or_else(|| Version::of(v).to_string()),
            })
        })
    };
    AppView::Read(AppFacts {
        app_id: app.spec.app_id.clone(),
        account: account.to_string(),
        source: version_ref(spec.from_major),
        target: version_ref(spec.to_major),
        reasons: eligibility(Some(app), spec),
        pinned,
    })
}

/// The running rollout of the status, as the platform reports it now.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Current {
    /// Not asked (no rollout is running).
    #[default]
    NotAsked,
    Seen(Rollout),
    /// The platform no longer returns it: it finished and was forgotten.
    Gone,
}

/// What the platform says now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlatformView {
    /// `upgradeableByRollout` of the target from the source; `None` when not asked.
    pub upgradeable: Option<bool>,
    /// The running rollout recorded in status.
    pub current: Current,
    /// Rollouts with the upgrade's source and target, created since `status.starting.since`, that
    /// the status does not record: the rollout a killed process had started.
    pub adoptable: Vec<Rollout>,
    /// Installations on the source version now; `None` when not asked.
    pub on_source: Option<u32>,
    /// Installations per version of the environment, as the platform counts them (for the
    /// preview); `None` when not asked.
    pub counts: Option<Vec<crate::platform::VersionCount>>,
    /// The platform's cap of installations per rollout, as it answered; `None` when not asked.
    pub upgrade_limit: Option<u32>,
}

/// The preview of an upgrade that has not started: what the platform counts, and what the steps
/// and limit will take of it, in how many rollouts at the platform's cap (the documented 500
/// when it has not said), and the least time the gates between steps take.
pub fn preview(
    spec: &BulkUpgradeSpec,
    counts: &[crate::platform::VersionCount],
    source_version: &str,
    pinned: usize,
    upgradeable: Option<bool>,
    upgrade_limit: Option<u32>,
) -> crate::api::Preview {
    let of_major = |v: &str| Version::parse(v).is_some_and(|v| v.major == spec.from_major);
    let mut by_version: Vec<crate::api::VersionInstallations> = counts
        .iter()
        .filter(|c| of_major(&c.version) && c.installations > 0)
        .map(|c| crate::api::VersionInstallations { version: c.version.clone(), installations: count(c.installations) })
        .collect();
    by_version.sort_by_key(|v| Version::parse(&v.version));
    let eligible = counts.iter().filter(|c| c.version == source_version).map(|c| count(c.installations)).sum::<u32>();
    let consent_required = upgradeable == Some(false);
    let cap = upgrade_limit.unwrap_or(500).max(1);
    let steps: Vec<Option<u32>> =
        if spec.steps.is_empty() { vec![None] } else { spec.steps.iter().map(|s| s.limit).collect() };
    let mut left = if consent_required { 0 } else { spec.limit.map_or(eligible, |l| l.min(eligible)) };
    let (mut planned, mut rollouts) = (0u32, 0u32);
    for step in &steps {
        let take = step.map_or(left, |l| l.min(left));
        planned += take;
        rollouts += take.div_ceil(cap);
        left -= take;
    }
    let last = spec.steps.len().max(1) as u32;
    let gates: u64 = (1..last)
        .map(|step| {
            let bake = spec.steps[step as usize - 1]
                .pause
                .as_ref()
                .and_then(|p| pause_duration(&p.duration))
                .unwrap_or_default();
            let window = analysis_after(spec, step)
                .map(|a| pause_duration(&a.window).unwrap_or(MAX_WINDOW).min(MAX_WINDOW))
                .unwrap_or_default();
            bake.max(window).as_secs()
        })
        .sum();
    crate::api::Preview {
        eligible,
        by_version,
        pinned: u32::try_from(pinned).unwrap_or(u32::MAX),
        consent_required,
        planned,
        rollouts,
        rollout_cap: upgrade_limit,
        minimum_duration_seconds: gates,
    }
}

/// Who holds one Lease, as the Lease cache shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseHold {
    /// The holder's UID.
    pub holder: String,
    /// The holder's `namespace/name`, for `blockedBy`.
    pub name: String,
    /// Whether the holder renewed it within its duration.
    pub live: bool,
}

/// The Leases this upgrade needs, as the cache shows them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leases {
    pub environment: Option<LeaseHold>,
    pub account: Option<LeaseHold>,
    /// One entry per global slot.
    pub slots: Vec<Option<LeaseHold>>,
}

/// Whether the upgrade may run now, as far as the cluster's Leases say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    Free,
    Busy { reason: Reason, holder: String },
}

/// Admission from the Leases and the oldest upgrade waiting ahead of this one (first come, first
/// served): an upgrade that holds all its Leases keeps them; otherwise it waits for an older one
/// waiting for the same environment or account, then for any live holder of its Leases.
pub fn admission(me: &str, leases: &Leases, older_waiting: Option<(Reason, String)>) -> Admission {
    let mine = |l: &Option<LeaseHold>| l.as_ref().is_some_and(|l| l.holder == me && l.live);
    let busy = |l: &Option<LeaseHold>| l.as_ref().filter(|l| l.holder != me && l.live).map(|l| l.name.clone());
    if mine(&leases.environment) && mine(&leases.account) && leases.slots.iter().any(mine) {
        return Admission::Free;
    }
    if let Some((reason, holder)) = older_waiting {
        return Admission::Busy { reason, holder };
    }
    if let Some(holder) = busy(&leases.environment) {
        return Admission::Busy { reason: Reason::EnvironmentBusy, holder };
    }
    if let Some(holder) = busy(&leases.account) {
        return Admission::Busy { reason: Reason::AccountBusy, holder };
    }
    if !leases.slots.is_empty() && leases.slots.iter().all(|s| busy(s).is_some()) {
        let holder = leases.slots.iter().find_map(busy).unwrap_or_default();
        return Admission::Busy { reason: Reason::GlobalLimitReached, holder };
    }
    if leases.slots.is_empty() {
        return Admission::Busy { reason: Reason::GlobalLimitReached, holder: "the global limit of 0".into() };
    }
    Admission::Free
}

/// Whether an upgrade in `state` holds a place in the queue for the Leases: only one waiting for a
/// Lease (`Queued`), neither cancelled nor being deleted. A `Pending` one (its app not read yet,
/// or the platform's count not in) and an `Ineligible` one (a typo, another namespace's app) hold
/// no one up.
pub fn holds_a_place(state: BulkUpgradeState, cancelled: bool, deleting: bool) -> bool {
    state == BulkUpgradeState::Queued && !cancelled && !deleting
}

/// Another BulkUpgrade, as [`older_waiting`] needs it.
#[derive(Clone, Debug)]
pub struct Other {
    pub name: String,
    pub created: jiff::Timestamp,
    /// Queued or pending, neither cancelled nor being deleted.
    pub waiting: bool,
    pub same_environment: bool,
    pub same_account: bool,
    /// Waiting for a global slot only.
    pub for_slot: bool,
}

/// The oldest upgrade created in an earlier second than `created` that waits for the same
/// environment or account, or only for a global slot. Creation timestamps have one-second
/// precision, so upgrades created in the same second have no order and race for the Leases.
pub fn older_waiting(created: jiff::Timestamp, others: &[Other]) -> Option<(Reason, String)> {
    let mut older: Vec<&Other> = others.iter().filter(|o| o.waiting && o.created < created).collect();
    older.sort_by_key(|o| o.created);
    older.into_iter().find_map(|o| {
        if o.same_environment {
            Some((Reason::EnvironmentBusy, o.name.clone()))
        } else if o.same_account {
            Some((Reason::AccountBusy, o.name.clone()))
        } else if o.for_slot {
            Some((Reason::GlobalLimitReached, o.name.clone()))
        } else {
            None
        }
    })
}

/// A rollout to ask the platform for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutRequest {
    pub step: u32,
    pub source: VersionRef,
    pub target: VersionRef,
    /// At most this many installations (the platform also caps at its `upgradeLimit`).
    pub limit: Option<u32>,
}

/// What the controller carries out, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Take or renew the environment, account and global-slot Leases (all or none).
    TakeLeases,
    /// Take or renew the environment and account Leases, and release any global slot (paused
    /// between rollouts).
    TakeLeasesWithoutSlot,
    /// Release every Lease this upgrade holds.
    ReleaseLeases,
    /// Create a rollout (`status.starting` is already recorded), then fold the answer in with
    /// [`after_start`].
    StartRollout(RolloutRequest),
    /// Cancel the running rollout on the platform.
    CancelRollout(String),
    /// Re-list the app's installations on the platform, so the Installations it moved show it.
    RefreshInstallations,
    /// Measure a step's analysis window with the App metrics API, then fold the counts in with
    /// [`after_analysis`].
    Analyze(AnalysisRequest),
    /// Delete the BulkUpgrade: its `ttlSecondsAfterFinished` has passed.
    Delete,
}

/// When to look again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requeue {
    /// At once, once the status (with `starting`) is written.
    Now,
    /// A rollout runs: poll it (and renew the Leases).
    Poll,
    /// Waiting for a Lease.
    Queued,
    /// Waiting for the platform (its own limits, or an answer it could not give).
    Platform,
    /// Paused: renew the Leases.
    Renew,
    /// Baking: renew the Leases, and look again when the bake time is over.
    Bake(Duration),
    /// Something may change that no watch of this controller reports in time (pinned
    /// installations, the platform's eligibility, an app change the shared cache has not shown
    /// yet when the app's own watch fired).
    Recheck,
    /// After this long (the TTL).
    After(Duration),
    /// Only when the object or its app changes.
    AwaitChange,
}

/// What [`decide`] returns.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub status: BulkUpgradeStatus,
    pub effects: Vec<Effect>,
    pub requeue: Requeue,
    /// What the conditions were rendered from (kept to re-render after a start).
    pub situation: Situation,
}

/// Everything the upgrade decides from.
#[derive(Clone, Debug)]
pub struct Inputs<'a> {
    pub spec: &'a BulkUpgradeSpec,
    pub generation: Option<i64>,
    pub previous: &'a BulkUpgradeStatus,
    /// Now, to the second (the precision of status times).
    pub now: Time,
    /// Now, to the microsecond (for `status.starting.since`).
    pub instant: jiff::Timestamp,
    pub app: AppView,
    pub platform: PlatformView,
    pub admission: Admission,
    /// What the upgrade's annotations ask ([`asked`]).
    pub asked: Asked,
}

/// The annotation that approves step N (`forgeops.dev/approve-step-N`; its value: who approves).
pub const APPROVE_STEP_PREFIX: &str = "forgeops.dev/approve-step-";
/// The annotation that stops the upgrade for good (its value: who, or why).
pub const EMERGENCY_STOP: &str = "forgeops.dev/emergency-stop";
/// The longest bake time.
pub const MAX_PAUSE: Duration = Duration::from_secs(7 * 24 * 3600);

/// What a BulkUpgrade's annotations ask: annotations, not spec fields, so that a GitOps sync of
/// the manifest neither reverts nor repeats them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Asked {
    /// Approved steps, and who approved each.
    pub approved: std::collections::BTreeMap<u32, String>,
    /// The emergency stop, and who asked for it.
    pub stop: Option<String>,
}

/// Reads the approvals and the emergency stop from an object's annotations (an empty value names
/// nobody: `unnamed`).
pub fn asked(annotations: Option<&std::collections::BTreeMap<String, String>>) -> Asked {
    let name =
        |v: &String| if v.trim().is_empty() { "unnamed".to_string() } else { v.trim().chars().take(253).collect() };
    let mut out = Asked::default();
    for (k, v) in annotations.into_iter().flatten() {
        if k == EMERGENCY_STOP {
            out.stop = Some(name(v));
        } else if let Some(step) = k.strip_prefix(APPROVE_STEP_PREFIX).and_then(|n| n.parse::<u32>().ok()) {
            out.approved.insert(step, name(v));
        }
    }
    out
}

/// A step pause's duration (`30m`, `1h30m`, `90s`), at most [`MAX_PAUSE`]; `None` when it does not
/// read (admission refuses such a value).
pub fn pause_duration(text: &str) -> Option<Duration> {
    let mut total = 0u64;
    let mut digits = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: u64 = digits.parse().ok()?;
        digits.clear();
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    (digits.is_empty() && total > 0).then(|| Duration::from_secs(total).min(MAX_PAUSE))
}

/// A step's analysis to measure: the window, and the versions compared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnalysisRequest {
    /// The step measured.
    pub step: u32,
    pub start: Time,
    pub end: Time,
}

/// What holds step `step` (counted from 1) before its first rollout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepGate {
    /// The previous step's bake time: how long is left.
    Baking(Duration),
    /// The previous step's analysis window is still open: how long is left.
    Measuring(Duration),
    /// The previous step's window is over: measure it.
    Analyze(AnalysisRequest),
    /// The previous step's analysis failed and stops the upgrade (its message).
    AnalysisStop(String),
    /// Waits for `forgeops.dev/approve-step-<step>`: why, and what to do.
    AwaitingApproval(Reason, String),
}

/// The analysis after `step`: its own, else the upgrade's; none after the last step.
pub fn analysis_after(spec: &BulkUpgradeSpec, step: u32) -> Option<&AnalysisSpec> {
    let index = (step as usize).checked_sub(1)?;
    if index + 1 >= spec.steps.len() {
        return None;
    }
    spec.steps.get(index).and_then(|s| s.analysis.as_ref()).or(spec.analysis.as_ref())
}

/// The most one App metrics call returns, and so the longest analysis window.
pub const MAX_WINDOW: Duration = Duration::from_secs(15 * 60);

/// The gate before `step`'s first rollout, in order: the previous step's bake time, its analysis
/// (window, measure, verdict), then this step's approval. `None` once the step has a rollout.
pub fn step_gate(spec: &BulkUpgradeSpec, status: &BulkUpgradeStatus, step: u32, now: &Time) -> Option<StepGate> {
    let records = &status.rollouts;
    if records.iter().any(|r| r.step == step) {
        return None;
    }
    let index = step.checked_sub(1)? as usize;
    let approved = status.approvals.iter().any(|a| a.step == step);
    let previous = step - 1;
    let done = records.iter().filter(|r| r.step == previous).filter_map(|r| r.completed_at.as_ref()).map(|t| t.0).max();
    if let Some(done) = done {
        let since = |t: jiff::Timestamp| Duration::from_secs(now.0.duration_since(t).as_secs().max(0) as u64);
        let elapsed = since(done);
        let bake = index
            .checked_sub(1)
            .and_then(|p| spec.steps.get(p))
            .and_then(|p| p.pause.as_ref())
            .and_then(|p| pause_duration(&p.duration))
            .unwrap_or_default();
        if elapsed < bake {
            return Some(StepGate::Baking(bake - elapsed));
        }
        if let Some(analysis) = analysis_after(spec, previous) {
            let window = pause_duration(&analysis.window).unwrap_or(MAX_WINDOW).min(MAX_WINDOW);
            let span = window.max(bake);
            if elapsed < span {
                return Some(StepGate::Measuring(span - elapsed));
            }
            let end = done + jiff::SignedDuration::try_from(span).unwrap_or_default();
            let start = end - jiff::SignedDuration::try_from(window).unwrap_or_default();
            let Some(record) = status.analyses.iter().find(|a| a.step == previous) else {
                return Some(StepGate::Analyze(AnalysisRequest { step: previous, start: Time(start), end: Time(end) }));
            };
            let message = &record.message;
            match (record.verdict, analysis.on_failure) {
                (AnalysisVerdict::Passed, _) => {}
                (AnalysisVerdict::Failed, OnFailure::Stop) => {
                    return Some(StepGate::AnalysisStop(format!("step {previous}'s analysis failed: {message}")));
                }
                (verdict, _) if !approved => {
                    let reason = if verdict == AnalysisVerdict::Failed {
                        Reason::AnalysisFailed
                    } else {
                        Reason::AnalysisInconclusive
                    };
                    return Some(StepGate::AwaitingApproval(
                        reason,
                        format!(
                            "step {previous}'s analysis was {verdict:?} ({message}); to go on anyway, annotate this \
                             BulkUpgrade {APPROVE_STEP_PREFIX}{step}=<who approves>; to stop, set cancelled: true"
                        ),
                    ));
                }
                _ => {}
            }
        }
    }
    let needs = spec.steps.get(index).is_some_and(|s| s.require_approval);
    (needs && !approved).then(|| {
        StepGate::AwaitingApproval(
            Reason::AwaitingApproval,
            format!(
                "step {step} waits for approval: annotate this BulkUpgrade {APPROVE_STEP_PREFIX}{step}=<who approves>"
            ),
        )
    })
}

/// Folds a step's measured counts (`invocations` and `errors` from the App metrics API, by
/// version and context) into the status as its analysis record: the cohort is every context on
/// the target version, the baseline every context on the source version.
pub fn after_analysis(
    status: &BulkUpgradeStatus,
    spec: &BulkUpgradeSpec,
    request: &AnalysisRequest,
    invocations: &[crate::platform::MetricsValue],
    errors: &[crate::platform::MetricsValue],
) -> BulkUpgradeStatus {
    use super::analysis;
    let mut next = status.clone();
    let version = |v: &Option<String>| v.as_deref().and_then(Version::parse);
    let (Some(source), Some(target)) = (version(&status.source_version), version(&status.target_version)) else {
        return next;
    };
    let Some(a) = analysis_after(spec, request.step) else { return next };
    let on_target: BTreeSet<String> =
        invocations.iter().filter(|v| Version::parse(&v.version) == Some(target)).map(|v| v.context.clone()).collect();
    let (cohort, baseline) = analysis::figures(invocations, errors, &on_target, source, target);
    let thresholds = analysis::Thresholds {
        min_success_percent: a.min_success_rate,
        max_drop_percent: a.max_drop_from_baseline,
        min_invocations: a.min_invocations,
    };
    let (verdict, message) = analysis::judge(&thresholds, &cohort, &baseline);
    let figures = |f: &analysis::Figures| crate::api::CohortFigures {
        sites: f.sites,
        invocations: f.invocations,
        errors: f.errors,
        success_rate: f.success_percent().map(|r| (r * 100.0).round() / 100.0),
    };
    next.analyses.retain(|r| r.step != request.step);
    next.analyses.push(crate::api::AnalysisRecord {
        step: request.step,
        verdict: match verdict {
            analysis::Verdict::Passed => AnalysisVerdict::Passed,
            analysis::Verdict::Failed => AnalysisVerdict::Failed,
            analysis::Verdict::Inconclusive => AnalysisVerdict::Inconclusive,
        },
        window_start: request.start.clone(),
        window_end: request.end.clone(),
        cohort: figures(&cohort),
        baseline: figures(&baseline),
        message,
    });
    next
}

/// What the conditions say beyond the state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Situation {
    pub state: BulkUpgradeState,
    /// The first failed eligibility rule and its detail.
    pub ineligible: Option<(Reason, String)>,
    /// Why admission waits, and for whom or what.
    pub waiting: Option<(Reason, String)>,
    /// The reason within the state (for example `PauseRequested` while running, `LimitReached`
    /// when complete).
    pub detail: Reason,
    pub summary: String,
}

fn finished(state: BulkUpgradeState) -> bool {
    matches!(state, BulkUpgradeState::Complete | BulkUpgradeState::Cancelled | BulkUpgradeState::Failed)
}

fn time_of_millis(text: Option<&str>) -> Option<Time> {
    jiff::Timestamp::from_millisecond(crate::platform::time_millis(text?)?).ok().map(Time)
}

fn count(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn phase(status: RolloutStatus) -> RolloutPhase {
    match status {
        RolloutStatus::Running => RolloutPhase::Running,
        RolloutStatus::Complete => RolloutPhase::Complete,
        RolloutStatus::Cancelled => RolloutPhase::Cancelled,
    }
}

/// Copies what the platform reports of a rollout into its record; answers whether progress moved.
fn mirror(record: &mut RolloutRecord, seen: &Rollout) -> bool {
    let before = (record.status, record.completed, record.failed, record.pending);
    record.status = phase(seen.status);
    record.completed = count(seen.completed);
    record.failed = count(seen.failed);
    record.pending = count(seen.pending);
    if record.status != RolloutPhase::Running {
        record.pending = 0;
        record.completed_at = record.completed_at.take().or_else(|| time_of_millis(seen.completed_at.as_deref()));
    }
    record.upgrade_limit = record.upgrade_limit.or(seen.upgrade_limit);
    before != (record.status, record.completed, record.failed, record.pending)
}

fn adopted_record(seen: &Rollout, step: u32, facts: Option<&AppFacts>) -> RolloutRecord {
    let name = |id: &str, v: Option<&VersionRef>| {
        v.filter(|v| v.id == id).map(|v| v.version.clone()).unwrap_or_else(|| id.to_string())
    };
    let mut record = RolloutRecord {
        id: seen.id.clone(),
        step,
        source_version: name(&seen.source_version_id, facts.and_then(|f| f.source.as_ref())),
        target_version: name(&seen.target_version_id, facts.and_then(|f| f.target.as_ref())),
        source_version_id: seen.source_version_id.clone(),
        target_version_id: seen.target_version_id.clone(),
        limit: None,
        upgrade_limit: seen.upgrade_limit,
        status: RolloutPhase::Running,
        started_at: time_of_millis(seen.created_at.as_deref()),
        completed_at: None,
        completed: 0,
        failed: 0,
        pending: 0,
        remaining: None,
        adopted: true,
        forgotten: false,
        reconstructed: false,
    };
    mirror(&mut record, seen);
    record
}

/// What comes after the rollouts recorded so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Start a rollout for `step` (counted from 1) of at most `limit` installations.
    Start { step: u32, limit: Option<u32> },
    /// Nothing more to start; the reason is `Complete`, `LimitReached` or `NothingToUpgrade`.
    Done(Reason),
}

fn taken(r: &RolloutRecord) -> u32 {
    r.completed.saturating_add(r.failed).saturating_add(r.pending)
}

/// The next rollout, given the finished ones and how many installations are on the source version
/// now. A step goes on with a further rollout while the platform left installations for later
/// (its `upgradeLimit`) and the step's limit is not reached; then the next step starts.
pub fn plan(spec: &BulkUpgradeSpec, records: &[RolloutRecord], on_source: u32) -> Plan {
    let steps: Vec<Option<u32>> =
        if spec.steps.is_empty() { vec![None] } else { spec.steps.iter().map(|s| s.limit).collect() };
    let overall_left = spec.limit.map(|l| l.saturating_sub(records.iter().map(taken).sum()));
    if overall_left == Some(0) {
        return Plan::Done(Reason::LimitReached);
    }
    if on_source == 0 {
        return Plan::Done(if records.is_empty() { Reason::NothingToUpgrade } else { Reason::Complete });
    }
    let step_taken = |step: u32| records.iter().filter(|r| r.step == step).map(taken).sum::<u32>();
    let step_limit = |step: u32| steps.get(step as usize - 1).copied().flatten();
    let step = match records.last() {
        None => 1,
        Some(last) => {
            let full = step_limit(last.step).is_some_and(|l| step_taken(last.step) >= l);
            let more = match last.remaining {
                Some(n) => n > 0,
                None => on_source > last.failed,
            };
            if full || !more || last.status == RolloutPhase::Cancelled { last.step + 1 } else { last.step }
        }
    };
    if step as usize > steps.len() {
        return Plan::Done(Reason::Complete);
    }
    let step_left = step_limit(step).map(|l| l.saturating_sub(step_taken(step)));
    let limit = match (step_left, overall_left) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Plan::Start { step, limit }
}

/// The failure gate: why the upgrade must stop, if it must.
pub fn gate(spec: &BulkUpgradeSpec, upgraded: u32, failed: u32) -> Option<String> {
    if let Some(max) = spec.max_failures.filter(|max| failed > *max) {
        return Some(format!("{failed} upgrades failed, more than maxFailures {max}"));
    }
    let ran = upgraded + failed;
    if let Some(pct) =
        spec.max_failure_percent.filter(|pct| ran > 0 && u64::from(failed) * 100 > u64::from(*pct) * u64::from(ran))
    {
        return Some(format!("{failed} of {ran} upgrades failed, more than maxFailurePercent {pct}%"));
    }
    None
}

fn sum_counts(status: &mut BulkUpgradeStatus) {
    status.upgraded = status.rollouts.iter().map(|r| r.completed).sum();
    status.failed = status.rollouts.iter().map(|r| r.failed).sum();
    status.pending = status.rollouts.iter().filter(|r| r.status == RolloutPhase::Running).map(|r| r.pending).sum();
}

fn summary(status: &BulkUpgradeStatus, spec: &BulkUpgradeSpec) -> String {
    let steps = spec.steps.len().max(1);
    let step = status.step.map(|s| format!("step {s} of {steps}: ")).unwrap_or_default();
    let rollout = status.rollouts.last().map(|r| format!("; rollout {} ({:?})", r.id, r.status)).unwrap_or_default();
    format!(
        "{step}{} upgraded, {} failed, {} pending, {} unprocessed{rollout}",
        status.upgraded, status.failed, status.pending, status.unprocessed
    )
}

/// The conditions of each state, following the kstatus conventions (so `kubectl wait
/// --for=condition=Complete` and GitOps health checks work): `Eligible`, `Admitted`,
/// `Progressing`, `Complete`, then the summary of the state's [`Outcome`].
pub fn conditions(s: &Situation) -> Vec<Decided> {
    use BulkUpgradeState::*;
    let summary = s.summary.as_str();
    let eligible = match &s.ineligible {
        Some((reason, detail)) => Decided::new(Type::Eligible, false, *reason, detail.as_str()),
        None if s.state == Pending => Decided::new(Type::Eligible, false, Reason::Pending, "not checked yet"),
        None => {
            Decided::new(Type::Eligible, true, Reason::Eligible, "the platform upgrades these installations by rollout")
        }
    };
    let (waiting_reason, waiting) =
        s.waiting.as_ref().map(|(r, w)| (*r, format!("waiting for {w}"))).unwrap_or((Reason::Pending, String::new()));
    let released = "the Leases were released";
    type Set = (bool, Reason, String);
    let (admitted, progressing, complete, outcome): (Set, Set, Set, Outcome<Reason>) = match s.state {
        Ineligible => {
            let (reason, detail) = s.ineligible.clone().unwrap_or((Reason::Ineligible, String::new()));
            (
                (false, Reason::Ineligible, "not admitted: the upgrade is ineligible".into()),
                (false, Reason::Ineligible, detail.clone()),
                (false, Reason::Ineligible, detail.clone()),
                Outcome::Stalled(reason, detail),
            )
        }
        Pending | Queued => (
            (false, waiting_reason, waiting.clone()),
            (false, s.detail, waiting.clone()),
            (false, s.detail, waiting.clone()),
            Outcome::InProgress(s.detail, waiting),
        ),
        Running => (
            (true, Reason::Admitted, "holding the concurrency Leases".into()),
            (true, s.detail, summary.into()),
            (false, Reason::Running, summary.into()),
            Outcome::InProgress(s.detail, summary.into()),
        ),
        Paused => (
            (
                true,
                Reason::Admitted,
                "holding the environment and account Leases while paused (no global slot: other upgrades may run)"
                    .into(),
            ),
            (false, Reason::Paused, summary.into()),
            (false, Reason::Paused, summary.into()),
            Outcome::Waiting(Reason::Paused, summary.into()),
        ),
        // Goes on by itself once the bake time is over, a window opens or the step is measured.
        Baking | OutsideWindow | Analyzing => {
            let why = match s.state {
                Baking => "while the step bakes",
                OutsideWindow => "outside the rollout windows",
                _ => "while the step is analyzed",
            };
            (
                (true, Reason::Admitted, format!("holding the environment and account Leases {why}")),
                (true, s.detail, summary.into()),
                (false, s.detail, summary.into()),
                Outcome::InProgress(s.detail, summary.into()),
            )
        }
        // Waits for a person.
        AwaitingApproval => (
            (true, Reason::Admitted, "holding the environment and account Leases while awaiting approval".into()),
            (false, s.detail, summary.into()),
            (false, s.detail, summary.into()),
            Outcome::Waiting(s.detail, summary.into()),
        ),
        Complete => (
            (false, Reason::Released, released.into()),
            (false, s.detail, summary.into()),
            (true, s.detail, summary.into()),
            Outcome::Done(s.detail, summary.into()),
        ),
        // Stopped as the user asked: done, so Ready (kstatus and GitOps tools see it Current).
        Cancelled => (
            (false, Reason::Released, released.into()),
            (false, s.detail, summary.into()),
            (false, s.detail, summary.into()),
            Outcome::Done(s.detail, summary.into()),
        ),
        Failed => (
            (false, Reason::Released, released.into()),
            (false, s.detail, summary.into()),
            (false, s.detail, summary.into()),
            Outcome::Stalled(s.detail, summary.into()),
        ),
    };
    let mut out = vec![eligible];
    for (t, (status, reason, message)) in
        [(Type::Admitted, admitted), (Type::Progressing, progressing), (Type::Complete, complete)]
    {
        out.push(Decided::new(t, status, reason, message));
    }
    out.extend(conds::summary(&outcome, None));
    out
}

fn render(
    mut status: BulkUpgradeStatus,
    s: &Situation,
    previous: &[Condition],
    generation: Option<i64>,
    now: &Time,
) -> BulkUpgradeStatus {
    status.state = Some(s.state);
    status.observed_generation = generation;
    status.conditions = conds::merge(previous, &conditions(s), generation, now);
    status
}

/// Why the platform could not be used for a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The credentials were refused, or the Secret is missing or incomplete: only the user can fix
    /// the Secret.
    Credentials,
    /// Unavailable, slow or rate limiting: retried by itself.
    Transient,
    /// Any other refusal: retrying the same request will not help.
    Refused,
}

/// The status while the platform cannot be used: the state, counts and rollout records are kept,
/// and Ready, Reconciling and Stalled say why and what to change. The next decision that reaches
/// the platform renders the state's own conditions again.
pub fn platform_failed(
    previous: &BulkUpgradeStatus,
    kind: FailureKind,
    what: &str,
    generation: Option<i64>,
    now: &Time,
) -> BulkUpgradeStatus {
    let (reason, message, stalled) = match kind {
        FailureKind::Credentials => (
            Reason::BadCredentials,
            format!(
                "{what}; the upgrade waits, without calling the platform, until the Secret holds valid credentials"
            ),
            true,
        ),
        FailureKind::Transient => (Reason::PlatformError, format!("{what}; retrying with backoff"), false),
        FailureKind::Refused => {
            (Reason::PlatformRefused, format!("{what}; looked at again after a while or when the spec changes"), true)
        }
    };
    let outcome = if stalled { Outcome::Stalled(reason, message) } else { Outcome::Retrying(reason, message) };
    let decided: [Decided; 3] = conds::summary(&outcome, None);
    let replaced = conds::merge(&previous.conditions, &decided, generation, now);
    let mut status = previous.clone();
    for c in replaced {
        match status.conditions.iter_mut().find(|p| p.type_ == c.type_) {
            Some(p) => *p = c,
            None => status.conditions.push(c),
        }
    }
    status
}

/// The Warning to record after [`platform_failed`] wrote `status` over `previous`: only for what
/// needs the user (transient failures come and go with retries), and only when `Ready`'s reason
/// is new.
pub fn failure_event(
    previous: &BulkUpgradeStatus,
    status: &BulkUpgradeStatus,
    kind: FailureKind,
) -> Option<(Reason, String)> {
    if kind == FailureKind::Transient {
        return None;
    }
    let (_, reason, message) = conds::read::<Reason>(&status.conditions, Type::Ready)?;
    let reason = reason?;
    let before = conds::read::<Reason>(&previous.conditions, Type::Ready).and_then(|(_, r, _)| r);
    (before != Some(reason)).then(|| (reason, message.to_string()))
}

/// The BulkUpgrade state machine.
pub fn decide(i: &Inputs) -> Decision {
    let prev = i.previous;
    let state = prev.state.unwrap_or_default();
    if finished(state) {
        return decide_finished(i);
    }
    let mut next = prev.clone();
    let mut effects = Vec::new();
    // The emergency stop cancels as `spec.cancelled` does, and is recorded once.
    let cancelled = i.spec.cancelled || i.asked.stop.is_some();
    if let (Some(by), None) = (&i.asked.stop, &next.emergency_stop) {
        next.emergency_stop =
            Some(crate::api::Approval { step: next.step.unwrap_or(0), by: by.clone(), at: i.now.clone() });
    }
    let cancelled_reason = if i.asked.stop.is_some() { Reason::EmergencyStop } else { Reason::Cancelled };
    // Approvals seen for the first time are recorded, with who approved and when.
    for (step, by) in &i.asked.approved {
        if !next.approvals.iter().any(|a| a.step == *step) {
            next.approvals.push(crate::api::Approval { step: *step, by: by.clone(), at: i.now.clone() });
        }
    }
    let facts = match &i.app {
        AppView::Read(f) => Some(f),
        _ => None,
    };

    // Mirror the running rollout; adopt the one a killed process started.
    let mut moved = false;
    let others_completed: u32 = next.rollouts.iter().rev().skip(1).map(|r| r.completed).sum();
    let total = next.total;
    if let Some(last) = next.rollouts.last_mut().filter(|r| r.status == RolloutPhase::Running) {
        match &i.platform.current {
            Current::Seen(seen) => moved |= mirror(last, seen),
            Current::Gone => {
                // Forgotten before it was seen to finish: what left the source version is what
                // this rollout moved (less what earlier rollouts moved); the rest of what it took
                // failed or stays. Never less than last seen, never more than it took.
                last.forgotten = true;
                last.status = RolloutPhase::Complete;
                if let Some(on_source) = i.platform.on_source {
                    let taken = last.completed + last.failed + last.pending;
                    let moved_by_it = total.saturating_sub(on_source).saturating_sub(others_completed);
                    last.completed = moved_by_it.clamp(last.completed, taken.max(last.completed));
                    last.failed = taken.saturating_sub(last.completed);
                    last.reconstructed = true;
                }
                last.pending = 0;
                moved = true;
            }
            Current::NotAsked => {}
        }
    }
    let running_now = next.rollouts.last().is_some_and(|r| r.status == RolloutPhase::Running);
    if let (Some(starting), false) = (next.starting.clone(), running_now) {
        let mut adoptable = i.platform.adoptable.clone();
        adoptable.retain(|r| !next.rollouts.iter().any(|known| known.id == r.id));
        adoptable.sort_by_key(|r| r.created_at.as_deref().and_then(crate::platform::time_millis));
        if !adoptable.is_empty() {
            let first = next.rollouts.is_empty();
            for seen in &adoptable {
                next.rollouts.push(adopted_record(seen, starting.step, facts));
            }
            if let (true, Some(on_source)) = (first, i.platform.on_source) {
                // What was on the source version before: what is there now, and what left it.
                next.total = on_source + next.rollouts.iter().map(|r| r.completed).sum::<u32>();
            }
            next.starting = None;
            next.step = Some(starting.step);
            next.started_at.get_or_insert_with(|| i.now.clone());
            moved = true;
        }
    }
    sum_counts(&mut next);
    if moved {
        effects.push(Effect::RefreshInstallations);
    }
    let situation = |state, detail, next: &BulkUpgradeStatus| Situation {
        state,
        ineligible: None,
        waiting: None,
        detail,
        summary: summary(next, i.spec),
    };
    let done = |mut next: BulkUpgradeStatus, mut effects: Vec<Effect>, state, detail: Reason, ttl_from_now: bool| {
        next.starting = None;
        next.blocked_by = None;
        next.completed_at = Some(i.now.clone());
        effects.push(Effect::ReleaseLeases);
        let s = situation(state, detail, &next);
        let requeue = match i.spec.ttl_seconds_after_finished {
            Some(ttl) if ttl_from_now => Requeue::After(Duration::from_secs(ttl.max(0) as u64 + 1)),
            _ => Requeue::AwaitChange,
        };
        Decision { status: render(next, &s, &prev.conditions, i.generation, &i.now), effects, requeue, situation: s }
    };

    // A rollout runs, and the app it runs for is gone (deleted under it): there are no credentials
    // to follow or cancel it with. Cancelling finishes the object; the rollout is the platform's.
    // The same for an app another ForgeApp owns (a rollout recorded before ownership was
    // checked): nothing is sent for it.
    if let (Some(running), AppView::Missing | AppView::Unmanaged(_)) =
        (next.rollouts.last().filter(|r| r.status == RolloutPhase::Running).cloned(), &i.app)
    {
        let app = &i.spec.app_ref.name;
        let id = &running.id;
        let (state, message, requeue) = if cancelled {
            next.completed_at = Some(i.now.clone());
            next.blocked_by = None;
            effects.push(Effect::ReleaseLeases);
            let message = format!(
                "cancelled in the cluster; ForgeApp {app} is gone, so rollout {id} could not be cancelled on the \
                 platform and may run on: cancel it there with `forge version bulk-upgrade cancel` if it must stop"
            );
            (BulkUpgradeState::Cancelled, message, Requeue::AwaitChange)
        } else {
            let message = format!(
                "ForgeApp {app} is gone while rollout {id} runs: forgeops cannot follow or cancel it; recreate the \
                 ForgeApp, or set cancelled: true (or delete this object) to let it go"
            );
            (BulkUpgradeState::Running, message, Requeue::Recheck)
        };
        let mut s = situation(state, Reason::AppGone, &next);
        s.summary = message;
        return Decision {
            status: render(next, &s, &prev.conditions, i.generation, &i.now),
            effects,
            requeue,
            situation: s,
        };
    }

    // A rollout runs: poll it, renew the Leases, cancel it if asked.
    if let Some(running) = next.rollouts.last().filter(|r| r.status == RolloutPhase::Running).cloned() {
        next.step = Some(running.step);
        next.blocked_by = None;
        if let Some(remaining) = running.remaining {
            next.unprocessed = remaining;
        }
        effects.insert(0, Effect::TakeLeases);
        let detail = if cancelled {
            effects.push(Effect::CancelRollout(running.id.clone()));
            Reason::Cancelling
        } else if i.spec.paused {
            Reason::PauseRequested
        } else {
            Reason::Running
        };
        let s = situation(BulkUpgradeState::Running, detail, &next);
        return Decision {
            status: render(next, &s, &prev.conditions, i.generation, &i.now),
            effects,
            requeue: Requeue::Poll,
            situation: s,
        };
    }

    // No rollout runs.
    if let Some(on) = i.platform.on_source {
        next.unprocessed = on;
        if !next.rollouts.is_empty() {
            // Exact between rollouts: what is still on the source version, and what left it.
            next.total = on + next.upgraded;
        }
    }
    if cancelled {
        return done(next, effects, BulkUpgradeState::Cancelled, cancelled_reason, true);
    }
    if next.rollouts.last().is_some_and(|r| r.status == RolloutPhase::Cancelled) {
        return done(next, effects, BulkUpgradeState::Cancelled, Reason::CancelledOnPlatform, true);
    }
    if !next.rollouts.is_empty() && gate(i.spec, next.upgraded, next.failed).is_some() {
        return done(next, effects, BulkUpgradeState::Failed, Reason::MaxFailuresExceeded, true);
    }

    // The preview, kept fresh until the first rollout starts.
    if let (true, Some(counts), AppView::Read(f)) = (next.rollouts.is_empty(), &i.platform.counts, &i.app)
        && let Some(source) = &f.source
    {
        next.preview = Some(preview(
            i.spec,
            counts,
            &source.version,
            f.pinned.len(),
            i.platform.upgradeable,
            i.platform.upgrade_limit,
        ));
    }

    // Eligibility of the next rollout.
    let not_ready = |mut next: BulkUpgradeStatus,
                     mut effects: Vec<Effect>,
                     state: BulkUpgradeState,
                     reasons: Vec<IneligibleReason>,
                     waiting: Option<(Reason, String)>,
                     requeue: Requeue| {
        effects.push(Effect::ReleaseLeases);
        next.blocked_by = None;
        next.ineligible_reasons = reasons.clone();
        let first = reasons.first().map(|r| (reason_of(r.reason), r.detail.clone()));
        let detail = if state == BulkUpgradeState::Pending { Reason::Pending } else { Reason::Ineligible };
        let s = Situation { state, ineligible: first, waiting, detail, summary: summary(&next, i.spec) };
        Decision { status: render(next, &s, &prev.conditions, i.generation, &i.now), effects, requeue, situation: s }
    };
    let facts = match &i.app {
        AppView::Missing => {
            let reasons = eligibility(None, i.spec);
            return not_ready(next, effects, BulkUpgradeState::Ineligible, reasons, None, Requeue::Recheck);
        }
        AppView::Unmanaged(reasons) => {
            // Holds no place in any queue: Ineligible, until the spec (or the app's) changes.
            return not_ready(next, effects, BulkUpgradeState::Ineligible, reasons.clone(), None, Requeue::Recheck);
        }
        AppView::NotRead => {
            let waiting =
                Some((Reason::AppNotRead, format!("ForgeApp {} to be read from the platform", i.spec.app_ref.name)));
            return not_ready(next, effects, BulkUpgradeState::Pending, vec![], waiting, Requeue::Queued);
        }
        AppView::Read(f) => f,
    };
    let blocking: Vec<IneligibleReason> = facts
        .reasons
        .iter()
        .filter(|r| matches!(r.reason, Ineligibility::MajorNotDeployed | Ineligibility::ToMajorNotNewer))
        .cloned()
        .collect();
    let (Some(source), Some(target)) = (facts.source.clone(), facts.target.clone()) else {
        let reasons = if blocking.is_empty() {
            vec![ineligible(
                Ineligibility::MajorNotDeployed,
                "the platform did not report the versions' ids yet".into(),
            )]
        } else {
            blocking
        };
        return not_ready(next, effects, BulkUpgradeState::Ineligible, reasons, None, Requeue::Recheck);
    };
    if !blocking.is_empty() {
        return not_ready(next, effects, BulkUpgradeState::Ineligible, blocking, None, Requeue::Recheck);
    }
    next.source_version = Some(source.version.clone());
    next.target_version = Some(target.version.clone());
    if let (Admission::Busy { reason, holder }, None) = (&i.admission, i.platform.upgradeable) {
        // Waiting for a Lease: the platform is asked nothing until the upgrade is admitted.
        let unchecked = Some((Reason::Pending, "checked with the platform once admitted".to_string()));
        return queued(i, next, effects, (*reason, holder.clone()), unchecked);
    }
    let pinned = (!facts.pinned.is_empty()).then(|| {
        let names = facts.pinned.iter().take(10).cloned().collect::<Vec<_>>().join(", ");
        ineligible(
            Ineligibility::PinnedInstallations,
            format!(
                "{} installation(s) on major {} are pinned to another major by spec.majorVersion ({names}): a platform rollout would upgrade them too; unpin them, or set their majorVersion to {}",
                facts.pinned.len(),
                i.spec.from_major,
                i.spec.to_major
            ),
        )
    });
    match i.platform.upgradeable {
        Some(false) => {
            let mut reasons = facts.reasons.clone();
            if reasons.is_empty() {
                reasons.push(ineligible(
            Ineligibility::PlatformRefused,
                    format!(
                        "the platform does not offer {} as a rollout target from {}: the installations need the site admins' consent (upgrade them one by one with an Installation's approvedMajor)",
                        target.version, source.version
                    ),
                ));
            }
            reasons.extend(pinned);
            return not_ready(next, effects, BulkUpgradeState::Ineligible, reasons, None, Requeue::Recheck);
        }
        None => {
            let waiting = Some((Reason::Pending, "the platform to answer whether the target is eligible".into()));
            return not_ready(next, effects, BulkUpgradeState::Pending, vec![], waiting, Requeue::Platform);
        }
        Some(true) => {}
    }
    if let Some(reason) = pinned {
        return not_ready(next, effects, BulkUpgradeState::Ineligible, vec![reason], None, Requeue::Recheck);
    }
    next.ineligible_reasons = vec![];

    // What comes next.
    let Some(on_source) = i.platform.on_source else {
        let waiting = Some((Reason::Pending, "the platform to count the installations on the source version".into()));
        return not_ready(next, effects, BulkUpgradeState::Pending, vec![], waiting, Requeue::Platform);
    };
    let (step, limit) = match plan(i.spec, &next.rollouts, on_source) {
        Plan::Done(reason) => return done(next, effects, BulkUpgradeState::Complete, reason, true),
        Plan::Start { step, limit } => (step, limit),
    };
    // A paused upgrade waits for its environment and account only: it holds no global slot, so
    // it keeps no one else's rollout from running.
    let busy = match &i.admission {
        Admission::Busy { reason: Reason::GlobalLimitReached, .. } if i.spec.paused => None,
        Admission::Busy { reason, holder } => Some((*reason, holder.clone())),
        Admission::Free => None,
    };
    if let Some(busy) = busy {
        return queued(i, next, effects, busy, None);
    }
    if i.spec.paused {
        // Admitted, holding the environment and account Leases, before the next rollout.
        effects.push(Effect::TakeLeasesWithoutSlot);
        next.blocked_by = None;
        let s = situation(BulkUpgradeState::Paused, Reason::Paused, &next);
        return Decision {
            status: render(next, &s, &prev.conditions, i.generation, &i.now),
            effects,
            requeue: Requeue::Renew,
            situation: s,
        };
    }
    // Held before the next rollout (a gate between steps, a closed window): the environment and
    // account Leases are kept, no global slot.
    let hold = |mut next: BulkUpgradeStatus,
                mut effects: Vec<Effect>,
                state: BulkUpgradeState,
                reason: Reason,
                what: String,
                requeue: Requeue,
                then: Option<Effect>| {
        effects.push(Effect::TakeLeasesWithoutSlot);
        effects.extend(then);
        next.blocked_by = None;
        let mut s = situation(state, reason, &next);
        s.summary = format!("{what}; {}", s.summary);
        Decision { status: render(next, &s, &prev.conditions, i.generation, &i.now), effects, requeue, situation: s }
    };
    // Between steps: the previous step's bake time and analysis, then this step's approval.
    if let Some(gate) = step_gate(i.spec, &next, step, &i.now) {
        let mut analyze = None;
        let (state, reason, requeue, what) = match gate {
            StepGate::AnalysisStop(message) => {
                let mut d = done(next, effects, BulkUpgradeState::Failed, Reason::AnalysisFailed, true);
                d.situation.summary = message;
                d.status = render(d.status, &d.situation, &prev.conditions, i.generation, &i.now);
                return d;
            }
            StepGate::Baking(left) => (
                BulkUpgradeState::Baking,
                Reason::Baking,
                Requeue::Bake(left),
                format!("step {} bakes for {} s more before step {step} starts", step - 1, left.as_secs()),
            ),
            StepGate::Measuring(left) => (
                BulkUpgradeState::Analyzing,
                Reason::Analyzing,
                Requeue::Bake(left),
                format!("step {}'s analysis window closes in {} s", step - 1, left.as_secs()),
            ),
            StepGate::Analyze(request) => {
                analyze = Some(request);
                (
                    BulkUpgradeState::Analyzing,
                    Reason::Analyzing,
                    Requeue::Now,
                    format!("measuring step {}'s analysis window", step - 1),
                )
            }
            StepGate::AwaitingApproval(reason, what) => {
                (BulkUpgradeState::AwaitingApproval, reason, Requeue::Renew, what)
            }
        };
        next.step = Some(step);
        return hold(next, effects, state, reason, what, requeue, analyze.map(Effect::Analyze));
    }
    // A rollout window holds the start of the next rollout (an intent already recorded waits too).
    if !i.spec.windows.is_empty() {
        let what = match super::windows::next_open(&i.spec.windows, i.instant) {
            Ok(Some(at)) if at <= i.instant => None,
            Ok(Some(at)) => {
                let left = Duration::from_secs(at.duration_since(i.instant).as_secs().max(1) as u64);
                Some((format!("outside the rollout windows until {at}"), Requeue::Bake(left)))
            }
            Ok(None) => Some(("the rollout windows do not open within eight days".to_string(), Requeue::Renew)),
            Err(why) => Some((format!("{why}; fix spec.windows"), Requeue::Renew)),
        };
        if let Some((what, requeue)) = what {
            return hold(next, effects, BulkUpgradeState::OutsideWindow, Reason::OutsideWindow, what, requeue, None);
        }
    }
    effects.push(Effect::TakeLeases);
    next.blocked_by = None;
    let requeue = match &next.starting {
        // Written first, so that a restart finds the rollout the platform created.
        None => {
            next.starting = Some(StartingRollout { step, since: MicroTime(i.instant) });
            Requeue::Now
        }
        Some(_) => {
            effects.push(Effect::StartRollout(RolloutRequest { step, source, target, limit }));
            Requeue::Poll
        }
    };
    next.step = Some(step);
    // A retry after the platform's refusal stays queued until the platform takes the rollout.
    let s = match platform_refusal(prev) {
        Some(reason) => {
            next.blocked_by = prev.blocked_by.clone();
            Situation {
                state: BulkUpgradeState::Queued,
                ineligible: None,
                waiting: Some((reason, prev.blocked_by.clone().unwrap_or_default())),
                detail: Reason::Queued,
                summary: summary(&next, i.spec),
            }
        }
        None => situation(BulkUpgradeState::Running, Reason::Starting, &next),
    };
    Decision { status: render(next, &s, &prev.conditions, i.generation, &i.now), effects, requeue, situation: s }
}

/// The platform's limit a queued upgrade waits for, read back from its `Admitted` condition (the
/// start is retried; `status.blockedBy` says what the platform said).
fn platform_refusal(prev: &BulkUpgradeStatus) -> Option<Reason> {
    if prev.state != Some(BulkUpgradeState::Queued) {
        return None;
    }
    let (_, reason, _) = conds::read::<Reason>(&prev.conditions, Type::Admitted)?;
    reason.filter(|r| {
        matches!(r, Reason::AppRolloutRunning | Reason::AccountRolloutRunning | Reason::RolloutsUnavailable)
    })
}

/// Whether an upgrade waits only for a global slot (as its `Admitted` condition says).
pub fn waits_for_slot(status: &BulkUpgradeStatus) -> bool {
    conds::read::<Reason>(&status.conditions, Type::Admitted)
        .is_some_and(|(_, r, _)| r == Some(Reason::GlobalLimitReached))
}

/// Waiting for a Lease held by `waiting.1`: none held meanwhile (all or nothing).
fn queued(
    i: &Inputs,
    mut next: BulkUpgradeStatus,
    mut effects: Vec<Effect>,
    waiting: (Reason, String),
    ineligible: Option<(Reason, String)>,
) -> Decision {
    effects.push(Effect::ReleaseLeases);
    next.blocked_by = Some(waiting.1.clone());
    let s = Situation {
        state: BulkUpgradeState::Queued,
        ineligible,
        waiting: Some(waiting),
        detail: Reason::Queued,
        summary: summary(&next, i.spec),
    };
    Decision {
        status: render(next, &s, &i.previous.conditions, i.generation, &i.now),
        effects,
        requeue: Requeue::Queued,
        situation: s,
    }
}

fn decide_finished(i: &Inputs) -> Decision {
    let prev = i.previous;
    let mut next = prev.clone();
    // Nothing changes a finished upgrade, `cancelled` included; a spec edit is still acknowledged,
    // so GitOps tools do not wait on a stale observedGeneration.
    next.observed_generation = i.generation;
    next.conditions.iter_mut().for_each(|c| c.observed_generation = i.generation);
    let mut effects = vec![Effect::ReleaseLeases];
    let requeue = match (i.spec.ttl_seconds_after_finished, &prev.completed_at) {
        (Some(ttl), Some(done)) => {
            let expiry = done.0 + jiff::SignedDuration::from_secs(ttl);
            if i.now.0 >= expiry {
                effects.push(Effect::Delete);
                Requeue::AwaitChange
            } else {
                Requeue::After(Duration::from_secs(expiry.duration_since(i.now.0).as_secs().max(0) as u64 + 1))
            }
        }
        _ => Requeue::AwaitChange,
    };
    let state = prev.state.unwrap_or_default();
    let s =
        Situation { state, ineligible: None, waiting: None, detail: Reason::Complete, summary: summary(prev, i.spec) };
    Decision { status: next, effects, requeue, situation: s }
}

/// How the platform answered a start.
#[derive(Clone, Debug, PartialEq)]
pub enum StartAnswer {
    Started {
        started: RolloutStarted,
        request: RolloutRequest,
    },
    /// One of the platform's own limits: wait, never a failure.
    Refused {
        reason: Reason,
        message: String,
    },
}

/// The platform's limits that make an upgrade wait (`APP_ROLLOUT_RUNNING`,
/// `TOO_MANY_APP_ROLLOUTS_RUNNING_FOR_ACCOUNT`, `APP_ROLLOUTS_UNAVAILABLE`), as reasons.
pub fn refusal(kind: ErrorKind) -> Option<Reason> {
    match kind {
        ErrorKind::RolloutRunning => Some(Reason::AppRolloutRunning),
        ErrorKind::AccountBusy => Some(Reason::AccountRolloutRunning),
        ErrorKind::GlobalLimit => Some(Reason::RolloutsUnavailable),
        _ => None,
    }
}

/// Folds the platform's answer to a start into the decided status: the rollout's record (written
/// at once), or `Queued` with the platform's reason (the start is retried later, and
/// `status.starting` stays so the retry may still find a rollout that was created).
pub fn after_start(
    decision: &Decision,
    answer: StartAnswer,
    previous: &[Condition],
    spec: &BulkUpgradeSpec,
    generation: Option<i64>,
    now: &Time,
) -> (BulkUpgradeStatus, Requeue) {
    let mut next = decision.status.clone();
    match answer {
        StartAnswer::Started { started, request } => {
            let total = started.total_eligible_upgrades.map(count);
            let remaining = started.expected_remaining_upgrades.map(count);
            let pending = match (total, remaining) {
                (Some(t), Some(r)) => t.saturating_sub(r),
                _ => 0,
            };
            if next.rollouts.is_empty() {
                next.total = total.unwrap_or(next.unprocessed);
            }
            next.rollouts.push(RolloutRecord {
                id: started.rollout_id,
                step: request.step,
                source_version: request.source.version,
                target_version: request.target.version,
                source_version_id: request.source.id,
                target_version_id: request.target.id,
                limit: request.limit,
                upgrade_limit: started.upgrade_limit,
                status: RolloutPhase::Running,
                started_at: Some(now.clone()),
                completed_at: None,
                completed: 0,
                failed: 0,
                pending,
                remaining,
                adopted: false,
                forgotten: false,
                reconstructed: false,
            });
            next.starting = None;
            next.step = Some(request.step);
            next.blocked_by = None;
            next.started_at.get_or_insert_with(|| now.clone());
            if let Some(r) = remaining {
                next.unprocessed = r;
            }
            sum_counts(&mut next);
            let s = Situation {
                state: BulkUpgradeState::Running,
                ineligible: None,
                waiting: None,
                detail: Reason::Running,
                summary: summary(&next, spec),
            };
            (render(next, &s, previous, generation, now), Requeue::Poll)
        }
        StartAnswer::Refused { reason, message } => {
            next.blocked_by = Some(message.clone());
            let s = Situation {
                state: BulkUpgradeState::Queued,
                ineligible: None,
                waiting: Some((reason, message)),
                detail: Reason::Queued,
                summary: summary(&next, spec),
            };
            (render(next, &s, previous, generation, now), Requeue::Platform)
        }
    }
}

#[cfg(test)]
#[path = "bulk_upgrade_tests.rs"]
mod tests;
