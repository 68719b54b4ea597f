use super::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{AppRef, Product};

/// How a Forge app is shared: by installation link or not at all, and onto which products.
///
/// Sharing and the installation link belong to the whole app (the link installs the app's
/// production environment), so one DistributionPolicy governs an app cluster-wide: any other policy
/// for the same app reports `Conflict` and changes nothing on the platform.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "forgeops.dev",
    version = "v1alpha1",
    kind = "DistributionPolicy",
    namespaced,
    status = "DistributionPolicyStatus",
    shortname = "dpol",
    category = "forge",
    selectable = ".spec.appRef.name",
    doc = "How a Forge app is distributed: whether it is shared by installation link (which installs its production environment), onto which products, which link revision is current, what to do when sharing is changed outside the cluster, and what deleting the policy does.",
    printcolumn(name = "App", type_ = "string", json_path = ".spec.appRef.name"),
    printcolumn(name = "Sharing", type_ = "string", json_path = ".spec.sharing"),
    printcolumn(name = "Link Rev", type_ = "integer", json_path = ".spec.linkRevision"),
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
pub struct DistributionPolicySpec {
    /// The ForgeApp this policy distributes. Immutable. The link installs the app's production
    /// environment, as the platform does.
    #[x_kube(validation = Rule::new("self == oldSelf").message("appRef is immutable"))]
    pub app_ref: AppRef,

    /// `Enabled` shares the app by installation link; `Disabled` stops new installations by link
    /// (existing installations keep working). A policy acts on the platform's state whoever set it:
    /// a policy created `Disabled` for an app shared by hand in the developer console turns sharing off.
    #[serde(default)]
    pub sharing: Sharing,

    /// The products users must install the app onto. Must include the app's required product and
    /// only products the app supports. A link for several products admits only sites that have all
    /// of them.
    #[schemars(length(min = 1, max = 5))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub products: Vec<Product>,

    /// The revision of the installation link. Raising it rotates the link: the platform issues a new
    /// one and the previous link never admits an installation again. It may only increase, so a
    /// rotation cannot be undone. Raised while sharing is `Disabled`, the new link is generated when
    /// sharing is enabled again, before anyone can use the old one.
    #[serde(default = "default_link_revision")]
    #[schemars(range(min = 1))]
    #[x_kube(validation = Rule::new("self >= oldSelf").message("linkRevision may only increase: a rotated link cannot be restored"))]
    pub link_revision: i64,

    /// What to do when the platform's sharing state is changed outside the cluster (in the developer
    /// console): `Correct` (default) sets it back to this spec and records what changed; `Report`
    /// only reports it (`Ready=False`, reason `Drifted`) until the spec or the platform agree again.
    /// A link generated outside cannot be undone either way: the policy takes it as the current link.
    #[serde(default)]
    pub on_drift: DriftAction,

    /// How often the platform's sharing state and active link are read again, to see changes made
    /// outside the cluster, as a duration (`30s`, `10m`, `1h`). Default `10m`. Set the annotation
    /// `forgeops.dev/refresh` to a new value to have them read at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(s|m|h))+$"))]
    pub refresh_interval: Option<String>,

    /// What deleting this policy does on the platform: `Keep` (default) leaves sharing and the link
    /// as they are; `StopSharing` turns sharing off first (a finalizer holds the object until the
    /// platform confirms; existing installations keep working either way). Where the platform cannot
    /// be asked (the distribution capability is off, or it refuses), the object goes and a Warning
    /// Event `LeftShared` says so.
    #[serde(default)]
    pub deletion_policy: PolicyDeletion,

    /// The app details the platform asks for before it shares an app (the developer console's
    /// "fill in the app details" step: vendor, privacy policy, terms of service). Sent when sharing
    /// is turned on; details already stored on the platform need not be repeated. A refusal names
    /// the missing field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_details: Option<AppDetails>,
}

fn default_link_revision() -> i64 {
    1
}

/// The app details the platform asks for to share an app (its `UpdateAppDetailsInput`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppDetails {
    /// The vendor's name, shown to the site admins who install the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub vendor_name: Option<String>,
    /// The URL of the app's privacy policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub privacy_policy: Option<String>,
    /// The URL of the app's terms of service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub terms_of_service: Option<String>,
    /// Where the app's users get help (a URL or an e-mail address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub contact_link: Option<String>,
}

/// Whether an app is shared by installation link.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum Sharing {
    Enabled,
    #[default]
    Disabled,
}

/// What a policy does about a change made outside the cluster.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum DriftAction {
    /// Set the platform back to the spec.
    #[default]
    Correct,
    /// Only report it.
    Report,
}

/// What deleting a DistributionPolicy does on the platform.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum PolicyDeletion {
    /// Leave sharing and the link as they are.
    #[default]
    Keep,
    /// Turn sharing off, then let the object go.
    StopSharing,
}

/// What the operator observed about a DistributionPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DistributionPolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The policy's conditions: `Sharing` (is the link active) and the `Ready` summary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The current installation link, as the platform issued it
    /// (`https://developer.atlassian.com/console/install/...`), present only while sharing is active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installation_link: Option<String>,

    /// The `spec.linkRevision` the platform's current link was generated for, kept while sharing is
    /// off. Below `spec.linkRevision`: a rotation is due (done when sharing is on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_revision: Option<i64>,

    /// The products the current link installs into.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub link_products: Vec<String>,

    /// The products of the link the current one replaced because `spec.products` changed: that
    /// link no longer admits installations. Empty unless the current link was issued for a change
    /// of products.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaced_link_products: Vec<String>,

    /// The platform's sharing state as last read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformSharing>,

    /// The last change made outside the cluster that this policy saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_drift: Option<DriftRecord>,

    /// The value of the `forgeops.dev/refresh` annotation the platform was last read for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_refresh: Option<String>,
}

/// The platform's sharing state for an app, as read.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlatformSharing {
    /// Whether the platform shares the app (`distributionStatus` `PUBLIC`).
    pub shared: bool,
    /// Whether the app is listed on (or submitted to) the Marketplace (`marketplaceApp`): a listed app
    /// cannot be shared by link.
    pub listed_on_marketplace: bool,
    /// The products of the platform's active link (empty: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub link_products: Vec<String>,
    /// When it was read.
    pub read_at: Time,
}

/// A change to the app's sharing made outside the cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftRecord {
    /// What changed.
    pub change: DriftChange,
    /// When the policy saw it.
    pub seen_at: Time,
    /// Whether the policy set the platform back to the spec (`onDrift: Correct`).
    pub corrected: bool,
    /// The policy's `metadata.generation` when it saw the change: with `onDrift: Report`, a change of
    /// spec after it is the user's answer, and the policy acts on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// What changed, for people.
    pub message: String,
}

/// What was changed outside the cluster.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum DriftChange {
    /// Sharing was turned off ("Not sharing" in the console).
    SharingTurnedOff,
    /// Sharing was turned on.
    SharingTurnedOn,
    /// A new installation link was generated: the one in status is dead.
    LinkReplaced,
}
