use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::Product;

/// The platform's limit on environments per app.
pub const MAX_ENVIRONMENTS: usize = 25;

/// A Forge app, the environments it is deployed to and the versions deployed in each.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "forgeops.dev",
    version = "v1alpha1",
    kind = "ForgeApp",
    namespaced,
    status = "ForgeAppStatus",
    shortname = "fapp",
    category = "forge",
    doc = "A Forge app, its environments and the versions deployed in each. The operator reports the latest versions and whether every major version is consistent in its permissions.",
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
    /// The Forge app ID, as in the app's manifest (for example `ari:cloud:ecosystem::app/0b7f...`).
    #[schemars(length(min = 1, max = 256))]
    pub app_id: String,

    /// The Atlassian developer account that owns the app. Bulk upgrades are limited per account.
    #[schemars(length(min = 1, max = 256))]
    pub developer_account: String,

    /// The Secret, in this namespace, holding the platform credentials the operator acts with for
    /// this app: keys `email` (the Atlassian account) and `apiToken` (an Atlassian API token). Unset:
    /// the operator-wide default Secret (`--credentials-secret` in the operator's namespace). A
    /// rotated token is picked up without a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,

    /// Whether the app is listed on the Atlassian Marketplace. A listed app cannot be shared by
    /// installation link.
    #[serde(default)]
    pub listed_on_marketplace: bool,

    /// The environments the app is deployed to, keyed by name (at most 25, the platform's limit).
    #[serde(default)]
    #[schemars(length(max = 25))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    pub environments: Vec<Environment>,
}

impl ForgeApp {
    /// The versions deployed in `environment` (none if the environment does not exist).
    pub fn deployed(&self, environment: &str) -> &[AppVersion] {
        self.spec.environments.iter().find(|e| e.name == environment).map(|e| e.versions.as_slice()).unwrap_or_default()
    }
}

/// A reference to a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
pub struct SecretRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// One environment of a Forge app and the versions deployed in it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Environment {
    /// The environment name, a DNS label: `development`, `staging`, `production` or a custom name.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,

    /// The versions deployed in this environment, keyed by (major, minor). Within one major
    /// version every minor must carry the same scopes, egress and licensing.
    #[serde(default)]
    #[schemars(length(max = 200))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["major".into(), "minor".into()]))]
    pub versions: Vec<AppVersion>,
}

/// A version of the app deployed in an environment, with what it is allowed to do.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppVersion {
    /// The major version (1 or more). A new major is needed whenever permissions or licensing change.
    #[schemars(range(min = 1, max = 100000))]
    pub major: u32,

    /// The minor version within the major (0 or more). Minor versions roll out to installations
    /// without the site admin's consent.
    #[schemars(range(min = 0, max = 100000))]
    pub minor: u32,

    /// The OAuth scopes the version requests, for example `read:jira-work`.
    #[serde(default)]
    #[schemars(length(max = 200), inner(length(min = 1, max = 256)))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub scopes: Vec<String>,

    /// The external domains the version may call (egress permissions), for example `api.example.com`.
    #[serde(default)]
    #[schemars(length(max = 200), inner(length(min = 1, max = 256)))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub egress: Vec<String>,

    /// Whether the version uses the Forge SQL module.
    #[serde(default)]
    pub sql_module: bool,

    /// Whether the version's manifest enables licensing. A licensed app cannot be shared by link.
    #[serde(default)]
    pub licensing: bool,

    /// The Atlassian products the version works with.
    pub compatibility: Compatibility,
}

/// The products a version is compatible with.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!self.optional.exists(p, p == self.required)").message("a product cannot be both required and optional"))]
pub struct Compatibility {
    /// The product every installation must include.
    pub required: Product,

    /// Further products the app can also be installed into.
    #[serde(default)]
    #[schemars(length(max = 5))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub optional: Vec<Product>,
}

/// What the operator observed about a ForgeApp.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForgeAppStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The app's conditions. `Ready` summarises them: `False` with reason
    /// `PermissionChangeWithoutMajor` when a minor version changes permissions within its major.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The latest versions in each environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    pub environments: Vec<EnvironmentStatus>,

    /// How many Installations of this app exist, across environments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installations: Option<i64>,
}

/// The versions deployed in one environment, as the operator sees them.
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

    /// How many installations run each version in this environment, oldest version first.
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

    /// Whether every minor of this major carries the same scopes, egress and licensing. An
    /// inconsistent major is reported on the `Ready` condition, and a minor that changes
    /// permissions is never rolled out to installations.
    pub consistent: bool,
}
