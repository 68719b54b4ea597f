use super::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::Product;

/// The platform's limit on environments per app.
pub const MAX_ENVIRONMENTS: usize = 25;

/// A Forge app and the environments forgeops manages. The versions deployed in each environment,
/// with their permissions, are read from the platform (`forge deploy` makes them) and reported in
/// status; they are never declared here.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "forgeops.dev",
    version = "v1alpha1",
    kind = "ForgeApp",
    namespaced,
    status = "ForgeAppStatus",
    shortname = "fapp",
    category = "forge",
    doc = "A Forge app and the environments forgeops manages. The versions deployed in each environment, with their scopes, egress, licensing and installation counts, are read from the Forge platform and reported in status.",
    printcolumn(name = "App ID", type_ = "string", json_path = ".spec.appId"),
    printcolumn(
        name = "Production",
        type_ = "string",
        description = "Latest version deployed in production",
        json_path = ".status.environments[?(@.name==\"production\")].latestVersion"
    ),
    printcolumn(
        name = "Installs",
        type_ = "integer",
        description = "Installations of this app across environments",
        json_path = ".status.installations"
    ),
    printcolumn(name = "Account", type_ = "string", priority = 1, json_path = ".status.account.name"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(
        name = "Reason",
        type_ = "string",
        priority = 1,
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ForgeAppSpec {
    /// The Forge app ID, as in the app's manifest: `ari:cloud:ecosystem::app/` followed by the
    /// app's UUID (for example `ari:cloud:ecosystem::app/0b7f...`). Immutable: the app's
    /// Installations, policies and bulk upgrades act on the app they were made for; to manage
    /// another app, create another ForgeApp.
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^ari:cloud:ecosystem::app/[A-Za-z0-9][-A-Za-z0-9]*$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("appId is immutable: the objects of this ForgeApp act on the app they were made for; to manage another app, create another ForgeApp"))]
    pub app_id: String,

    /// The Secret, in this namespace, holding the platform credentials the operator acts with for
    /// this app: keys `email` (the Atlassian account) and `apiToken` (an Atlassian API token). Unset:
    /// the operator-wide default Secret (`--credentials-secret` in the operator's namespace). A
    /// rotated token is picked up without a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,

    /// The environments forgeops manages: `production`, `staging`, `development` or custom ones (at
    /// most 25, the platform's limit). Default: `production`.
    #[serde(default = "default_environments")]
    #[schemars(
        length(min = 1, max = 25),
        inner(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))
    )]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub environments: Vec<String>,

    /// How often the versions are read from the platform, as a duration (`30s`, `10m`, `1h`).
    /// Default `10m`. Set the annotation `forgeops.dev/refresh` to a new value (for example from a
    /// CI job after `forge deploy`) to have them read at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(s|m|h))+$"))]
    pub refresh_interval: Option<String>,
}

fn default_environments() -> Vec<String> {
    vec!["production".to_string()]
}

/// The annotation that asks for the versions to be read from the platform at once (any new value).
pub const REFRESH_ANNOTATION: &str = "forgeops.dev/refresh";

/// The refresh interval when `spec.refreshInterval` is unset.
pub const DEFAULT_REFRESH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);

impl ForgeApp {
    /// The versions deployed in `environment`, as last read from the platform (none if unknown).
    pub fn deployed(&self, environment: &str) -> &[AppVersion] {
        self.status
            .as_ref()
            .and_then(|s| s.environments.iter().find(|e| e.name == environment))
            .map(|e| e.versions.as_slice())
            .unwrap_or_default()
    }

    /// `spec.refreshInterval`, parsed (the default when unset; at least 5 seconds).
    pub fn refresh_interval(&self) -> std::time::Duration {
        self.spec
            .refresh_interval
            .as_deref()
            .and_then(parse_duration)
            .unwrap_or(DEFAULT_REFRESH_INTERVAL)
            .max(std::time::Duration::from_secs(5))
    }

    /// The account bulk upgrades are limited by: the one the credentials act as, as the platform
    /// said when the app was read (`status.account.accountId`), never one a user writes.
    pub fn account(&self) -> Option<&str> {
        self.status.as_ref().and_then(|s| s.account.as_ref()).map(|a| a.account_id.as_str())
    }
}

impl ForgeAppStatus {
    /// This status without its installation counts (the cluster's and the platform's), which
    /// change with every install: what the app's dependents decide on, and what tells a change of
    /// substance from a recount.
    pub fn without_counts(&self) -> ForgeAppStatus {
        let mut status = self.clone();
        status.installations = None;
        for e in &mut status.environments {
            e.installed_versions.clear();
            for m in &mut e.majors {
                m.installations = None;
            }
            for v in &mut e.versions {
                v.installations = None;
            }
        }
        status
    }
}

impl ForgeApp {
    /// A hash of what the app's Installations, policies and bulk upgrades decide on: its identity,
    /// spec, deletion, and status without counts or condition timestamps. Unchanged by a recount,
    /// so thousands of installs do not re-trigger thousands of dependents.
    pub fn dependents_fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut status = self.status.as_ref().map(ForgeAppStatus::without_counts).unwrap_or_default();
        let conditions: Vec<_> = std::mem::take(&mut status.conditions)
            .into_iter()
            .map(|c| (c.type_, c.status, c.reason, c.message, c.observed_generation))
            .collect();
        let seen = serde_json::json!({
            "uid": self.metadata.uid,
            "generation": self.metadata.generation,
            "deleting": self.metadata.deletion_timestamp.is_some(),
            "spec": self.spec,
            "status": status,
            "conditions": conditions,
        });
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        seen.to_string().hash(&mut hasher);
        hasher.finish()
    }
}

/// Parses `1h30m`, `10m`, `45s`.
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let mut total = 0u64;
    let mut digits = String::new();
    for c in text.chars() {
        match c {
            '0'..='9' => digits.push(c),
            's' | 'm' | 'h' => {
                let n: u64 = digits.parse().ok()?;
                digits.clear();
                total = total.checked_add(n.checked_mul(match c {
                    's' => 1,
                    'm' => 60,
                    _ => 3600,
                })?)?;
            }
            _ => return None,
        }
    }
    (digits.is_empty() && !text.is_empty()).then(|| std::time::Duration::from_secs(total))
}

/// A reference to a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
pub struct SecretRef {
    /// The Secret's name (a Kubernetes object name: lower-case letters, digits, `-` and `.`).
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
}

/// A version of the app deployed in an environment, as the platform reports it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppVersion {
    /// The major version (the first component of the platform's version).
    pub major: u32,

    /// The minor version within the major (its second component). On the platform a new minor
    /// never changes permissions (a permission change always makes a new major), and minors roll
    /// out to installations by themselves.
    pub minor: u32,

    /// The platform's version string (for example `2.1.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,

    /// The platform's id of the version (what installs, upgrades and rollouts name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,

    /// When the version was deployed, as the platform says (epoch milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,

    /// Whether this is the environment's latest version.
    #[serde(default)]
    pub latest: bool,

    /// The OAuth scopes the version requests, for example `read:jira-work`.
    #[serde(default)]
    pub scopes: Vec<String>,

    /// The external domains the version may call (egress permissions), for example `api.example.com`.
    #[serde(default)]
    pub egress: Vec<String>,

    /// Each egress permission: its address, type, category and whether it is in scope of end-user
    /// data. Adding one, or changing its type, category or end-user-data scope, needs the site
    /// admin's consent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress_permissions: Vec<EgressPermission>,

    /// The remote back ends the version calls (`key baseUrl`); a new one needs consent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remotes: Vec<String>,

    /// The content security policies the version declares (`type policy`); a new one needs consent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_policies: Vec<String>,

    /// Whether the version uses the Forge SQL module (one of its extensions is an `sql` module).
    #[serde(default)]
    pub sql_module: bool,

    /// Whether the version requires a license (the platform's `requiresLicense`). A licensed app
    /// cannot be shared by link, and enabling licensing needs the site admin's consent.
    #[serde(default)]
    pub licensing: bool,

    /// The Atlassian products the version works with.
    pub compatibility: Compatibility,

    /// How many installations run this version, as the platform counts them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installations: Option<i64>,
}

/// The products a version is compatible with.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Compatibility {
    /// The products every installation must include (the platform's `requiredProducts`): a
    /// cross-product app, installed into each of them. Empty: a single-app app, whose product is
    /// that of its modules.
    #[serde(default)]
    pub required_products: Vec<Product>,

    /// The other products the app can be installed into: for a cross-product app, the products
    /// the platform supports for cross-product apps that it does not require (Jira, Confluence,
    /// Compass); for a single-app app, the products its modules extend (empty when the platform
    /// does not say).
    #[serde(default)]
    pub optional: Vec<Product>,
}

/// One egress permission of a version, as the platform returns it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressPermission {
    /// The address (a host name or URL, possibly with a wildcard).
    pub address: String,
    /// The egress type, for example `FETCH_BACKEND_SIDE`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// The category, for example `ANALYTICS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Whether the egress is in scope of end-user data.
    #[serde(default, rename = "inScopeEUD")]
    pub in_scope_eud: bool,
}

/// What the operator observed about a ForgeApp.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForgeAppStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The app's conditions: `Ready` (the app is readable on the platform and nothing holds it),
    /// `Reconciling` and `Stalled` (kstatus).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The account the credentials act as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<AccountStatus>,

    /// Each managed environment with the versions the platform reports. Kept as last known while
    /// the platform cannot be read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    pub environments: Vec<EnvironmentStatus>,

    /// How many Installations of this app exist in the cluster, across environments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installations: Option<i64>,

    /// The value of the `forgeops.dev/refresh` annotation the versions were last read for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_refresh: Option<String>,
}

/// A platform account.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountStatus {
    /// The Atlassian account id.
    pub account_id: String,
    /// The account's display name.
    pub name: String,
}

/// One environment as the platform reports it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentStatus {
    /// The environment name.
    pub name: String,

    /// The newest version deployed in the environment, as `major.minor` (for example `3.2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_version: Option<String>,

    /// Every major version deployed in the environment, oldest first, with its latest minor.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub majors: Vec<MajorStatus>,

    /// The versions deployed, oldest first, as the platform reports them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<AppVersion>,

    /// How many of the cluster's Installations run each version, oldest version first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub installed_versions: Vec<VersionCount>,
}

/// How many installations run one version.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionCount {
    /// The version, as `major.minor`.
    pub version: String,
    /// Installations that have it installed.
    pub installations: i64,
}

/// One major version deployed in an environment.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MajorStatus {
    /// The major version.
    pub major: u32,

    /// The newest minor version deployed within this major.
    pub latest_minor: u32,

    /// Installations of this major on the platform (those made through the link included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installations: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn app(installs: i64, latest_minor: u32, transition: &str) -> ForgeApp {
        serde_json::from_value(json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "ForgeApp",
            "metadata": {"name": "a", "namespace": "n", "uid": "u1", "generation": 1},
            "spec": {"appId": "ari:cloud:ecosystem::app/x"},
            "status": {"installations": installs, "conditions": [{"type": "Ready", "status": "True",
                "reason": "Ready", "message": "ok", "lastTransitionTime": transition}],
                "environments": [{"name": "production", "latestVersion": format!("1.{latest_minor}"),
                    "installedVersions": [{"version": "1.0", "installations": installs}],
                    "majors": [{"major": 1, "latestMinor": latest_minor, "installations": installs}],
                    "versions": [{"major": 1, "minor": latest_minor, "installations": installs,
                        "compatibility": {"required": "jira"}}]}]}}))
        .expect("a valid ForgeApp")
    }

    #[test]
    fn the_dependents_fingerprint_ignores_counts_and_condition_times_only() {
        let base = app(1, 0, "2026-01-01T00:00:00Z").dependents_fingerprint();
        assert_eq!(base, app(9000, 0, "2026-01-01T00:00:00Z").dependents_fingerprint(), "a recount");
        assert_eq!(base, app(1, 0, "2026-06-01T00:00:00Z").dependents_fingerprint(), "a condition's time");
        assert_ne!(base, app(1, 1, "2026-01-01T00:00:00Z").dependents_fingerprint(), "a new minor");
        let mut deleting = app(1, 0, "2026-01-01T00:00:00Z");
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH));
        assert_ne!(base, deleting.dependents_fingerprint(), "deletion");
        let mut unready = app(1, 0, "2026-01-01T00:00:00Z");
        unready.status.as_mut().unwrap().conditions[0].status = "False".into();
        assert_ne!(base, unready.dependents_fingerprint(), "a condition's status");
    }

    #[test]
    fn without_counts_keeps_everything_else() {
        let s = app(5, 2, "2026-01-01T00:00:00Z").status.unwrap().without_counts();
        assert_eq!(s.installations, None);
        let e = &s.environments[0];
        assert!(e.installed_versions.is_empty());
        assert_eq!((e.majors[0].installations, e.majors[0].latest_minor), (None, 2));
        assert_eq!((e.versions[0].installations, e.versions[0].minor), (None, 2));
        assert_eq!(e.latest_version.as_deref(), Some("1.2"));
    }
}
