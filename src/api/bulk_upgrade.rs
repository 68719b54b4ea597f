use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::AppRef;

/// The most failures a BulkUpgrade status keeps.
pub const MAX_RECORDED_FAILURES: usize = 50;

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
    printcolumn(name = "Upgraded", type_ = "integer", json_path = ".status.upgraded"),
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

    /// The most installation upgrades in flight at once.
    #[serde(default = "default_max_concurrent")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_concurrent: u32,

    /// Stop starting new upgrades once more installations than this have failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_failures: Option<u32>,

    /// Upgrade at most this many installations in this request; the rest are counted as unprocessed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub limit: Option<u32>,

    /// Stop starting new upgrades while true; in-flight ones finish. The concurrency Leases stay held.
    #[serde(default)]
    pub paused: bool,

    /// Stop for good: keeps what was upgraded and releases the concurrency Leases. Has no effect on a
    /// finished upgrade.
    #[serde(default)]
    pub cancelled: bool,

    /// Delete this record that many seconds after it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i64>,
}

fn default_max_concurrent() -> u32 {
    10
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
    /// kstatus `Reconciling` and `Stalled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Where the upgrade is in its life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<BulkUpgradeState>,

    /// Installations in scope: installed on fromMajor in the environment.
    #[serde(default)]
    pub total: u32,

    /// Installations upgraded to toMajor.
    #[serde(default)]
    pub upgraded: u32,

    /// Installations whose upgrade failed.
    #[serde(default)]
    pub failed: u32,

    /// Installations still to upgrade.
    #[serde(default)]
    pub pending: u32,

    /// Installations pinned to another major by `spec.majorVersion`, left alone.
    #[serde(default)]
    pub skipped: u32,

    /// Installations left out by `spec.limit`.
    #[serde(default)]
    pub unprocessed: u32,

    /// When the upgrade started running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,

    /// When the upgrade finished (complete, cancelled or failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,

    /// The first failed installations (at most 50) with the platform's message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub failures: Vec<UpgradeFailure>,

    /// Every eligibility rule the upgrade fails, with its detail (for example `adds scope write:confluence-content`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ineligible_reasons: Vec<IneligibleReason>,

    /// The upgrade this one waits for while queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_by: Option<String>,
}

/// One installation whose upgrade failed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeFailure {
    /// The Installation object's name.
    pub installation: String,
    /// The site the installation is on.
    pub site: String,
    /// What the platform said.
    pub message: String,
}

/// One eligibility rule the upgrade fails.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IneligibleReason {
    /// The rule, for example `AddsScopes`, `AddsEgress`, `LicensingChanged` or `MajorNotDeployed`.
    pub reason: String,
    /// What exactly fails the rule, for example `adds scope write:confluence-content`.
    pub detail: String,
}
