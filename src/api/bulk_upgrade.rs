use super::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::AppRef;

/// Move every eligible installation of an app environment from one major version to a newer one.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "forgeops.dev",
    version = "v1alpha1",
    kind = "BulkUpgrade",
    namespaced,
    status = "BulkUpgradeStatus",
    shortname = "fbu",
    category = "forge",
    doc = "A bulk major-version upgrade: moves every eligible installation of an app environment from fromMajor to toMajor, under the platform's eligibility and concurrency rules.",
    validation = Rule::new("self.spec.toMajor > self.spec.fromMajor").message("toMajor must be greater than fromMajor"),
    printcolumn(name = "App", type_ = "string", json_path = ".spec.appRef.name"),
    printcolumn(name = "Environment", type_ = "string", priority = 1, json_path = ".spec.environment"),
    printcolumn(name = "From", type_ = "integer", json_path = ".spec.fromMajor"),
    printcolumn(name = "To", type_ = "integer", json_path = ".spec.toMajor"),
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(name = "Step", type_ = "integer", json_path = ".status.step"),
    printcolumn(name = "Rollout", type_ = "string", json_path = ".status.rollouts[-1:].id"),
    printcolumn(name = "Upgraded", type_ = "integer", json_path = ".status.upgraded"),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.failed"),
    printcolumn(name = "Pending", type_ = "integer", json_path = ".status.pending"),
    printcolumn(name = "Total", type_ = "integer", json_path = ".status.total"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct BulkUpgradeSpec {
    /// The ForgeApp whose installations are upgraded. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("appRef is immutable"))]
    pub app_ref: AppRef,

    /// The app environment whose installations are upgraded; an upgrade never crosses
    /// environments. Immutable.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("environment is immutable"))]
    pub environment: String,

    /// The major version installations are upgraded from. Immutable.
    #[schemars(range(min = 1))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("fromMajor is immutable"))]
    pub from_major: u32,

    /// The major version installations are upgraded to; greater than fromMajor. Immutable.
    #[schemars(range(min = 1))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("toMajor is immutable"))]
    pub to_major: u32,

    /// Progressive steps, run one after the other: each step is one platform rollout (or more,
    /// when it is larger than the platform's `upgradeLimit`) that starts once the previous step's
    /// rollouts have finished and the failure gate (`maxFailures`, `maxFailurePercent`) passed. For
    /// example `[{limit: 10}, {limit: 200}, {}]` upgrades 10 installations, then 200, then the rest.
    /// Empty: one step with every eligible installation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub steps: Vec<UpgradeStep>,

    /// Failure gate, checked whenever a rollout has finished and before the next one starts: stop
    /// with `Failed` once more installations than this have failed to upgrade (over every rollout
    /// of this upgrade).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_failures: Option<u32>,

    /// Failure gate, checked like `maxFailures`: stop with `Failed` once failed upgrades are more
    /// than this percentage of the upgrades that have run so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub max_failure_percent: Option<u32>,

    /// Upgrade at most this many installations over all steps; what remains is reported in
    /// `status.unprocessed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub limit: Option<u32>,

    /// Hold before the next rollout (the next step, or the next part of a step larger than the
    /// platform's `upgradeLimit`) while true. A rollout already running on the platform cannot be
    /// paused mid-way: it runs to its end, then the upgrade waits in `Paused`. A paused upgrade
    /// is admitted first and keeps its concurrency Leases.
    #[serde(default)]
    pub paused: bool,

    /// Stop for good: cancels the running rollout on the platform (installations it already
    /// upgraded keep the new version) and releases the concurrency Leases. Has no effect on a
    /// finished upgrade. Deleting a running BulkUpgrade cancels its rollout too.
    #[serde(default)]
    pub cancelled: bool,

    /// Health analysis after every step but the last (a step's own `analysis` replaces it): once
    /// the step's rollouts have completed, the sites on the target version are measured over
    /// `window` with the platform's App metrics API and compared with the sites still on the
    /// source version over the same window; the verdict gates the next step. See
    /// [`AnalysisSpec`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisSpec>,

    /// When rollouts may start: `Allow` windows (when there is any) and `Deny` windows, each in
    /// its time zone. A closed window holds the start of the next rollout (state `OutsideWindow`,
    /// holding the environment and account Leases); a rollout already running runs on to its end
    /// (the platform cannot pause it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub windows: Vec<RolloutWindow>,

    /// A webhook told of each step started and completed, each analysis verdict, and when the
    /// upgrade awaits approval, fails, is cancelled or completes. Delivered at least once, with
    /// retries and backoff, without holding the upgrade up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<Notifications>,

    /// Delete this record that many seconds after it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i64>,
}

/// One progressive step of a BulkUpgrade.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStep {
    /// How many installations this step upgrades; absent: every eligible installation that
    /// remains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub limit: Option<u32>,

    /// The bake time: once this step's rollouts have completed, hold this long before the next
    /// step starts (state `Baking`, holding the environment and account Leases). No effect on the
    /// last step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<StepPause>,

    /// Wait in `AwaitingApproval` before this step starts (after the previous step's bake time)
    /// until the BulkUpgrade carries the annotation `forgeops.dev/approve-step-<N>` (N: this
    /// step, counted from 1) whose value names who approves, for example `kubectl annotate
    /// bulkupgrade/x forgeops.dev/approve-step-2=alice@acme.example`. An annotation, not a spec
    /// field, so that a GitOps sync does not revert it; who approved and when is kept in
    /// `status.approvals`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_approval: bool,

    /// The health analysis after this step, instead of `spec.analysis`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisSpec>,
}

/// A BulkUpgrade's plan, before it starts.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Preview {
    /// Installations on the source version (the latest minor of fromMajor), as the platform
    /// counts them: what rollouts take.
    pub eligible: u32,
    /// Installations of fromMajor per version, as the platform counts them; those on older
    /// minors are not taken by a rollout (the platform moves them to the latest minor itself).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by_version: Vec<VersionInstallations>,
    /// Installations in the cluster pinned to another major, which hold the upgrade.
    pub pinned: u32,
    /// Whether the target needs the site admins' consent (the platform offers no rollout to it):
    /// then no installation moves by rollout.
    pub consent_required: bool,
    /// Installations the steps and `limit` take.
    pub planned: u32,
    /// The rollouts that takes, one after the other, at the platform's cap.
    pub rollouts: u32,
    /// The most installations the platform takes in one rollout, as it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_cap: Option<u32>,
    /// The least the upgrade takes, in seconds: its bake times and analysis windows between
    /// steps; the rollouts' own time (the platform's pace) comes on top.
    pub minimum_duration_seconds: u64,
}

/// Installations on one version.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionInstallations {
    /// The platform's version string.
    pub version: String,
    /// How many installations run it, as the platform counts them.
    pub installations: u32,
}

/// Where notifications go.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notifications {
    /// The Secret in this namespace whose key holds the webhook URL (a URL often carries a token,
    /// so it is never written in the spec, logs or Events).
    pub webhook_secret_ref: WebhookSecretRef,
    /// `Json` (forgeops' own body; the default) or `Slack` (`{"text": ...}`, for Slack-compatible
    /// incoming webhooks).
    #[serde(default)]
    pub format: NotificationFormat,
}

/// A Secret key holding a webhook URL.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSecretRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key holding the URL.
    #[serde(default = "default_url_key")]
    pub key: String,
}

fn default_url_key() -> String {
    "url".into()
}

/// How a notification is written.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum NotificationFormat {
    #[default]
    Json,
    Slack,
}

/// A time of the week when rollouts may, or may not, start.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutWindow {
    /// `Allow` (rollouts start only inside the allowed windows) or `Deny` (never inside).
    pub kind: WindowKind,
    /// The IANA time zone the days and times are in, for example `Europe/Berlin`.
    #[serde(default = "utc")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$"))]
    pub time_zone: String,
    /// The weekdays (`Mon` .. `Sun`) the window starts on; empty: every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 7))]
    pub days: Vec<WindowDay>,
    /// When it opens, `HH:MM` or `HH:MM:SS`.
    #[schemars(regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$"))]
    pub start: String,
    /// When it closes (not included), `HH:MM` or `HH:MM:SS`; before `start`: the next day.
    #[schemars(regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$"))]
    pub end: String,
}

fn utc() -> String {
    "UTC".into()
}

/// Whether a window allows or denies rollouts.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum WindowKind {
    Allow,
    Deny,
}

/// A weekday.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum WindowDay {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

/// How a step's health is judged from the App metrics API (five calls a minute per user: an
/// analysis makes two, and forgeops spaces every call of the account to stay within the limit).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.minSuccessRate) || has(self.maxDropFromBaseline)").message("set minSuccessRate, maxDropFromBaseline or both"))]
pub struct AnalysisSpec {
    /// How long the cohort is measured, from its step's completion (the last part of the step's
    /// bake time, when that is longer): `10m`; between `10s` and `15m` (the most the API returns
    /// in one call). The platform counts by the minute: a window of a few minutes or more sees
    /// its data whole.
    #[serde(default = "default_window")]
    #[schemars(length(min = 2, max = 16), regex(pattern = r"^([0-9]+[hms])+$"))]
    #[x_kube(validation = Rule::new("duration(self) <= duration('15m') && duration(self) >= duration('10s')").message("window must be between 10s and 15m"))]
    pub window: String,

    /// The least success rate, in percent, of the sites on the target version: `99.5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub min_success_rate: Option<f64>,

    /// The most, in percentage points, that the target version's success rate may be below the
    /// source version's over the same window (the baseline: the sites not upgraded yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub max_drop_from_baseline: Option<f64>,

    /// Fewer invocations on the target version than this make the verdict `Inconclusive`, which
    /// pauses in `AwaitingApproval` (never passes).
    #[serde(default = "default_min_invocations")]
    #[schemars(range(min = 1))]
    pub min_invocations: u64,

    /// What a `Failed` verdict does: `Stop` (state `Failed`; the default) or `Pause` (state
    /// `AwaitingApproval`: approving the next step goes on).
    #[serde(default)]
    pub on_failure: OnFailure,
}

fn default_window() -> String {
    "10m".into()
}

fn default_min_invocations() -> u64 {
    100
}

/// What a failed analysis does.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum OnFailure {
    #[default]
    Stop,
    Pause,
}

/// The verdict of a step's analysis.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum AnalysisVerdict {
    Passed,
    Failed,
    Inconclusive,
}

/// The counts of one cohort over an analysis window.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CohortFigures {
    /// Sites (installation contexts) with invocations.
    pub sites: u32,
    /// Invocations of the app's functions over the window, as the platform counts them.
    pub invocations: u64,
    /// Invocations that failed.
    pub errors: u64,
    /// The share that succeeded, in percent (two decimals); absent without invocations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<f64>,
}

/// A step's health analysis, kept as long as the object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRecord {
    /// The step measured (counted from 1); its verdict gates the next.
    pub step: u32,
    pub verdict: AnalysisVerdict,
    /// The window measured.
    pub window_start: Time,
    pub window_end: Time,
    /// The sites on the target version.
    pub cohort: CohortFigures,
    /// The sites still on the source version.
    pub baseline: CohortFigures,
    /// What was measured and which threshold decided.
    pub message: String,
}

/// A hold between steps.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepPause {
    /// How long, as hours, minutes and seconds: `30m`, `1h30m`, `90s` (at most 7 days).
    #[schemars(length(min = 2, max = 32), regex(pattern = r"^([0-9]+[hms])+$"))]
    pub duration: String,
}

/// A step approved by annotation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    /// The step approved (counted from 1).
    pub step: u32,
    /// Who approved, as the annotation's value names them.
    pub by: String,
    /// When forgeops first saw the approval.
    pub at: Time,
}

/// Where a bulk upgrade is in its life.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum BulkUpgradeState {
    #[default]
    Pending,
    Ineligible,
    Queued,
    Running,
    Paused,
    /// A step's bake time (`steps[].pause`) before the next step.
    Baking,
    /// A step that needs approval (`steps[].requireApproval`), or whose analysis failed with
    /// `onFailure: Pause` or was inconclusive, waits for the next step's approval annotation.
    AwaitingApproval,
    /// A step's health analysis: its window is measured.
    Analyzing,
    /// A rollout window (`spec.windows`) holds the next rollout.
    OutsideWindow,
    Complete,
    Cancelled,
    Failed,
}

/// What the operator observed about a BulkUpgrade.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkUpgradeStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The upgrade's conditions: `Eligible`, `Admitted`, `Progressing`, `Complete`, `Ready`, and the
    /// kstatus `Reconciling` and `Stalled`, each with a reason from a fixed set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Where the upgrade is in its life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<BulkUpgradeState>,

    /// The platform version installations are upgraded from: the latest version of fromMajor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_version: Option<String>,

    /// The platform version installations are upgraded to: the latest version of toMajor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_version: Option<String>,

    /// The step in progress, or the last one run (counted from 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,

    /// Installations on the source version when the first rollout started, as the platform
    /// counted them.
    #[serde(default)]
    pub total: u32,

    /// Installations the rollouts upgraded (the platform's completed count, summed).
    #[serde(default)]
    pub upgraded: u32,

    /// Upgrades that failed (the platform's failed count, summed over rollouts; a failed
    /// installation stays on the source version and a later rollout may take it again).
    #[serde(default)]
    pub failed: u32,

    /// Installations the running rollout has still to upgrade.
    #[serde(default)]
    pub pending: u32,

    /// Installations still on the source version that no running rollout holds, as last counted
    /// on the platform: what a further step, a higher `limit` or another BulkUpgrade would take.
    #[serde(default)]
    pub unprocessed: u32,

    /// When the first rollout started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,

    /// When the upgrade finished (complete, cancelled or failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,

    /// Every platform rollout this upgrade ran, oldest first, as last seen on the platform. Kept
    /// after the platform forgets a finished rollout; removed only with the object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollouts: Vec<RolloutRecord>,

    /// A rollout about to be started: written before the platform is asked, so that a restart
    /// finds the rollout the platform created (same versions, created since) instead of starting
    /// a second one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting: Option<StartingRollout>,

    /// Every eligibility rule the upgrade fails, with its detail (for example `adds scope write:confluence-content`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ineligible_reasons: Vec<IneligibleReason>,

    /// What the upgrade will do, from the platform's counts: computed before admission and kept
    /// fresh until the first rollout starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<Preview>,

    /// Every step's health analysis, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analyses: Vec<AnalysisRecord>,

    /// The steps approved by annotation (`forgeops.dev/approve-step-<N>`), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<Approval>,

    /// Who stopped the upgrade with the emergency-stop annotation (`forgeops.dev/emergency-stop`,
    /// its value), when forgeops saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emergency_stop: Option<Approval>,

    /// The upgrade this one waits for while queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_by: Option<String>,

    /// How many webhook notifications this upgrade has told (the last one's number).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub notifications_told: u32,

    /// The notifications told and not yet delivered to the webhook: kept until it accepts each
    /// (or delivery gives up after ten attempts), so an operator restarted meanwhile sends them.
    /// At most 50, the oldest dropped first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub outbox: Vec<PendingNotification>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A webhook notification told by a status change and not yet delivered.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingNotification {
    /// Its number: an upgrade's notifications are numbered from 1 in the order they are told.
    pub id: u32,
    /// What happened.
    pub event: NotificationEvent,
    /// The step it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
    /// What it says.
    pub message: String,
    /// When it happened (the time the notification carries, however late it is delivered).
    pub at: Time,
}

/// What a notification tells.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum NotificationEvent {
    StepStarted,
    StepCompleted,
    AnalysisVerdict,
    AwaitingApproval,
    Failed,
    Cancelled,
    Completed,
}

/// One platform rollout (`createAppVersionRollout`) run by a BulkUpgrade.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRecord {
    /// The platform's rollout id (what `forge version bulk-upgrade list` shows).
    pub id: String,
    /// The step this rollout belongs to (counted from 1).
    pub step: u32,
    /// The version upgraded from, as the platform's dotted string.
    pub source_version: String,
    /// The version upgraded to.
    pub target_version: String,
    /// The platform's id of the source version.
    pub source_version_id: String,
    /// The platform's id of the target version.
    pub target_version_id: String,
    /// The limit this upgrade asked for (none: as many as the platform takes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// The most installations the platform takes in one rollout, as it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_limit: Option<u32>,
    /// `Running`, `Complete` or `Cancelled`, as last seen.
    pub status: RolloutPhase,
    /// When the platform created the rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the platform finished it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// Installations upgraded, as last seen.
    #[serde(default)]
    pub completed: u32,
    /// Upgrades that failed, as last seen.
    #[serde(default)]
    pub failed: u32,
    /// Installations still to upgrade, as last seen.
    #[serde(default)]
    pub pending: u32,
    /// Installations on the source version the platform left for a later rollout when it
    /// created this one (its `expectedRemainingUpgrades`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u32>,
    /// Whether the rollout was found on the platform (started before a restart, or from outside
    /// the cluster with the same versions) rather than answered to this upgrade's request.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopted: bool,
    /// Whether the platform no longer returns this rollout (its records are time-limited).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forgotten: bool,
    /// Whether the counts of a forgotten rollout were reconstructed from what the platform still
    /// knows (the installations left on the source version) instead of its last poll, so that they
    /// never say less than the platform shows.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reconstructed: bool,
}

/// A rollout's status on the platform.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum RolloutPhase {
    Running,
    Complete,
    Cancelled,
}

/// A rollout this upgrade is about to ask the platform for.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct StartingRollout {
    /// The step it belongs to (counted from 1).
    pub step: u32,
    /// When it was decided (microseconds); a rollout with the same versions created since then
    /// is this one.
    pub since: MicroTime,
}

crate::named! {
    /// An eligibility rule a bulk upgrade can fail: `AppNotFound` (no such ForgeApp),
    /// `MajorNotDeployed` (fromMajor or toMajor is not deployed), `ToMajorNotNewer`, `AddsScopes`,
    /// `AddsEgress`, `LicensingChanged` (the target asks the site admins for more),
    /// `PlatformRefused` (the platform offers no rollout to the target) or `PinnedInstallations`
    /// (Installations pinned to another major would be moved).
    #[derive(Serialize, Deserialize, schemars::JsonSchema)]
    pub enum Ineligibility {
        AppNotFound,
        EnvironmentNotManaged,
        MajorNotDeployed,
        ToMajorNotNewer,
        AddsScopes,
        AddsEgress,
        AddsPermissions,
        LicensingChanged,
        PlatformRefused,
        PinnedInstallations,
        Conflict,
    }
}

/// One eligibility rule the upgrade fails.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IneligibleReason {
    /// The rule: `AppNotFound`, `EnvironmentNotManaged` (the ForgeApp does not manage
    /// `spec.environment`), `MajorNotDeployed`, `ToMajorNotNewer`, `AddsScopes`, `AddsEgress`
    /// (a new egress, or one re-categorised, of another type or newly in scope of end-user data),
    /// `AddsPermissions` (remotes, content security policies), `LicensingChanged`, `PlatformRefused`, `PinnedInstallations` or `Conflict` (another namespace's ForgeApp owns the app).
    pub reason: Ineligibility,
    /// What exactly fails the rule, for example `adds scope write:confluence-content`.
    pub detail: String,
}
