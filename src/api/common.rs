use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// An Atlassian product an app can be installed into.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Product {
    Jira,
    Confluence,
    Compass,
    JiraServiceManagement,
    Bitbucket,
}

impl Product {
    pub fn as_str(self) -> &'static str {
        match self {
            Product::Jira => "jira",
            Product::Confluence => "confluence",
            Product::Compass => "compass",
            Product::JiraServiceManagement => "jira-service-management",
            Product::Bitbucket => "bitbucket",
        }
    }
}

impl std::fmt::Display for Product {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reference to a ForgeApp in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
pub struct AppRef {
    /// Name of the ForgeApp object, in the same namespace as this object (a Kubernetes object
    /// name: lower-case letters, digits, `-` and `.`).
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
}

/// The name of a Forge environment: `development`, `staging`, `production` or a custom one.
pub fn default_environment() -> String {
    "production".to_string()
}

/// The condition status strings of the Kubernetes API conventions.
pub const TRUE: &str = "True";
pub const FALSE: &str = "False";
