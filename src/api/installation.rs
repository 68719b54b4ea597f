use super::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{AppRef, Product, default_environment};

/// One Forge app installed on one Atlassian site.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "forgeops.dev",
    version = "v1alpha1",
    kind = "Installation",
    namespaced,
    status = "InstallationStatus",
    shortname = "finst",
    category = "forge",
    selectable = ".spec.appRef.name",
    selectable = ".spec.site",
    doc = "One Forge app installed on one Atlassian site: the desired version in spec, what is actually installed in status.",
    printcolumn(name = "Site", type_ = "string", json_path = ".spec.site"),
    printcolumn(name = "App", type_ = "string", json_path = ".spec.appRef.name"),
    printcolumn(name = "Environment", type_ = "string", priority = 1, json_path = ".spec.environment"),
    printcolumn(name = "Installed", type_ = "string", json_path = ".status.installedVersion"),
    printcolumn(name = "Available", type_ = "string", json_path = ".status.availableVersion"),
    printcolumn(name = "Running", type_ = "string", priority = 1, json_path = ".status.runningVersion"),
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
pub struct InstallationSpec {
    /// The ForgeApp to install. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("appRef is immutable"))]
    pub app_ref: AppRef,

    /// The app environment to install from. Immutable.
    #[serde(default = "default_environment")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("environment is immutable"))]
    pub environment: String,

    /// The Atlassian site to install on, a hostname such as `acme.atlassian.net`. Immutable:
    /// to move an app to another site, create another Installation.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)+[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    #[x_kube(validation = Rule::new("self == oldSelf").message("site is immutable"))]
    pub site: String,

    /// The Atlassian products on the site to install into, one installation of the app each. A
    /// cross-product app (one whose versions name required products) is installed into every
    /// product it requires, which this list must name, and into each other product named here
    /// that it supports (Jira, Confluence, Compass). A single-app app is installed into the
    /// product of its modules, which this list names. Products may be added, not removed (to take
    /// the app off a product, the site's admin uninstalls it there, or this object is deleted).
    /// Bitbucket apps install into a Bitbucket workspace, not a site, and are not managed here.
    #[schemars(length(min = 1, max = 5))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    #[x_kube(
        validation = Rule::new("!self.exists(p, p == 'bitbucket')").message("bitbucket apps install into a Bitbucket workspace, not a site: an Installation manages site products only (jira, confluence, compass, jira-service-management)"),
        validation = Rule::new("oldSelf.all(p, p in self)").message("products may be added, not removed: the app stays installed in a product until the site's admin uninstalls it there or this Installation is deleted")
    )]
    pub products: Vec<Product>,

    /// What deleting this Installation does on the site: `Uninstall` uninstalls the app first;
    /// `Orphan` leaves it installed and only forgets it (for example before moving the Installation
    /// to another cluster or namespace, or when Argo CD or Flux prune it by mistake). Unset: `Uninstall`
    /// where forgeops installed the app itself, `Orphan` where it adopted an installation that was
    /// already there (a customer's link install, or one made by hand): a customer's app and its data
    /// are removed only when this field says `Uninstall` on that object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,

    /// Pin a major version. Unset: the latest major at first install, and no major upgrades after.
    /// Raising it upgrades the installation; lowering it below the installed major is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub major_version: Option<u32>,

    /// The highest major version whose permissions the site admin approved. An upgrade that needs
    /// new permissions proceeds only up to this major.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub approved_major: Option<u32>,
}

/// What is installed on the site, as the operator recorded it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstallationStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The installation's conditions: `Installed`, `UpToDate` and the `Ready` summary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The platform's app this Installation acts on (its ForgeApp's `appId` when first seen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,

    /// The version installed on the site, as `major.minor` (for example `2.3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installed_version: Option<String>,

    /// The version whose code runs on the site (the platform's `computeVersion`), when it is not
    /// `installedVersion`: after a code-only upgrade (`forge install --upgrade code`) the code is
    /// newer than the permissions the site's admin granted. Of the first product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_version: Option<String>,

    /// The major version installed on the site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installed_major: Option<u32>,

    /// When the app was first installed on the site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installed_at: Option<Time>,

    /// The newest version deployed in the environment, as `major.minor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_version: Option<String>,

    /// Whether the installed version has the permissions of the environment's latest version
    /// (false: a newer major asks for more, and the site admin's consent is needed to move to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions_up_to_date: Option<bool>,

    /// Whether this Installation adopted an installation that already existed on the site
    /// (installed by a customer through the link, or by hand with `forge install`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopted: bool,

    /// Whether the app's developer account administers the site: true once forgeops installed
    /// there, false once the platform refused to let the account install there (a customer's site:
    /// the app reaches it through the installation link, and only the site's admin or a bulk-upgrade
    /// rollout moves it to a new major). Unset while not known (an adopted installation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_administered: Option<bool>,

    /// A request to the platform whose answer is not recorded: written just before the request is
    /// sent and replaced by `task` once the platform answers, so it remains when the answer was
    /// lost (a time-out, a broken connection) or the operator was stopped mid-send. The platform
    /// may have carried it out: nothing is sent again until the platform's installations show
    /// whether it did, or the confirmation window has passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unconfirmed: Option<UnconfirmedRequest>,

    /// The platform's id of this installation, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installation_id: Option<String>,

    /// The platform task in flight (install, upgrade or uninstall), recorded before it is waited
    /// on, so an operator restarted mid-way resumes waiting on it and never starts a second one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskRecord>,

    /// Each product the app is installed into on the site, one platform installation each (the
    /// platform installs an app once per product). The first is the one the fields above describe
    /// (its task and unrecorded request are `task` and `unconfirmed` above); the others carry their
    /// own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["product".into()]))]
    pub products: Vec<ProductInstallation>,
}

/// The app's installation in one product of the site.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductInstallation {
    /// The product (`jira`, `confluence`, `compass`, ...).
    pub product: Product,

    /// The version installed in this product, as `major.minor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installed_version: Option<String>,

    /// The platform's id of this product's installation, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installation_id: Option<String>,

    /// When the app was installed in this product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installed_at: Option<Time>,

    /// Whether this product's installation existed before forgeops (adopted, not installed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopted: bool,

    /// The platform task in flight for this product (not for the first product: see `task`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskRecord>,

    /// A request for this product whose answer is not recorded (not for the first product: see
    /// `unconfirmed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unconfirmed: Option<UnconfirmedRequest>,
}

impl Installation {
    /// The deletion policy in force: the spec's, else `Orphan` for an adopted installation and
    /// `Uninstall` for one forgeops installed.
    pub fn deletion_policy(&self) -> DeletionPolicy {
        self.spec.deletion_policy_given(&self.status.clone().unwrap_or_default())
    }

    /// Whether the site is a customer's, as far as forgeops knows: the platform refused the account
    /// there, or the installation was adopted and forgeops never installed there itself.
    pub fn on_customer_site(&self) -> bool {
        self.status.as_ref().is_some_and(InstallationStatus::on_customer_site)
    }
}

impl InstallationSpec {
    /// The deletion policy in force with `status`: the spec's, else `Orphan` for an adopted
    /// installation and `Uninstall` for one forgeops installed.
    pub fn deletion_policy_given(&self, status: &InstallationStatus) -> DeletionPolicy {
        self.deletion_policy.unwrap_or(if status.adopted { DeletionPolicy::Orphan } else { DeletionPolicy::Uninstall })
    }
}

impl InstallationStatus {
    /// Whether this status says the site is a customer's (see [`Installation::on_customer_site`]).
    pub fn on_customer_site(&self) -> bool {
        match self.site_administered {
            Some(administered) => !administered,
            None => self.adopted,
        }
    }
}

/// A mutation sent to the platform whose answer is not recorded (lost, or not yet received).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnconfirmedRequest {
    /// `install`, `upgrade` or `uninstall`.
    pub action: TaskAction,
    /// The version asked for, as `major.minor` (install and upgrade).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// When it was sent.
    pub sent_at: Time,
}

/// What deleting an Installation does on the site.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum DeletionPolicy {
    /// Uninstall the app from the site, then let the object go.
    #[default]
    Uninstall,
    /// Leave the app installed on the site; only the object goes.
    Orphan,
}

/// A platform task in flight.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskRecord {
    /// The platform's task id.
    pub id: String,
    /// `install`, `upgrade` or `uninstall`.
    pub action: TaskAction,
    /// The version the task installs or upgrades to, as `major.minor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// When the task was started.
    pub started_at: Time,
}

impl TaskRecord {
    /// `install`, `upgrade` or `uninstall`.
    pub fn action_str(&self) -> &'static str {
        match self.action {
            TaskAction::Install => "install",
            TaskAction::Upgrade => "upgrade",
            TaskAction::Uninstall => "uninstall",
        }
    }
}

/// What a platform task does.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskAction {
    Install,
    Upgrade,
    Uninstall,
}
