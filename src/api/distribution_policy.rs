use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{AppRef, Product, default_environment};

/// How a Forge app is shared: by installation link or not at all, and onto which products.
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
    doc = "How a Forge app environment is distributed: whether it is shared by installation link, onto which products, and which link revision is current.",
    printcolumn(name = "App", type_ = "string", json_path = ".spec.appRef.name"),
    printcolumn(name = "Environment", type_ = "string", json_path = ".spec.environment"),
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
    /// The ForgeApp this policy distributes. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("appRef is immutable"))]
    pub app_ref: AppRef,

    /// The environment of the app that is distributed. Immutable.
    #[serde(default = "default_environment")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("environment is immutable"))]
    pub environment: String,

    /// `Enabled` shares the app by installation link; `Disabled` stops new installations by link
    /// (existing installations keep working).
    #[serde(default)]
    pub sharing: Sharing,

    /// The products users must install the app onto. Must include the app's required product and
    /// only products the app supports.
    #[schemars(length(min = 1, max = 5))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub products: Vec<Product>,

    /// The revision of the installation link. Raising it rotates the link: the previous link stops
    /// admitting new installations. It may only increase, so a rotation cannot be undone.
    #[serde(default = "default_link_revision")]
    #[schemars(range(min = 1))]
    #[x_kube(validation = Rule::new("self >= oldSelf").message("linkRevision may only increase: a rotated link cannot be restored"))]
    pub link_revision: i64,
}

fn default_link_revision() -> i64 {
    1
}

/// Whether an app is shared by installation link.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum Sharing {
    Enabled,
    #[default]
    Disabled,
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

    /// The `spec.linkRevision` the current link was generated for. Raising `spec.linkRevision` above
    /// it generates a new link on the platform, and the old one stops admitting installations.
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
}
