//! The platform port: installing, upgrading and uninstalling an app on a site. Every action is
//! idempotent and carries an idempotency key derived from the Installation's UID and the action,
//! so an action repeated after an operator crash is recognised by the platform, not done twice.

pub mod embedded;
pub mod http;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::api::Product;

pub use embedded::{EmbeddedPlatform, Faults};
pub use http::HttpPlatform;

/// What is done to a site.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    Install,
    Upgrade,
    Uninstall,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Install => "install",
            ActionKind::Upgrade => "upgrade",
            ActionKind::Uninstall => "uninstall",
        }
    }
}

/// One action on one site. This is also the JSON body of the HTTP platform's requests.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Action {
    pub action: ActionKind,
    /// The Installation, as `namespace/name`.
    pub installation: String,
    pub app_id: String,
    pub environment: String,
    pub site: String,
    pub products: Vec<Product>,
    /// The version to install or upgrade to (`major.minor`); none for uninstall.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The same action on the same installation always carries the same key.
    pub idempotency_key: String,
}

impl Action {
    /// The key for `kind` of `version` on the Installation with `uid`.
    pub fn idempotency_key(uid: &str, kind: ActionKind, version: Option<&str>) -> String {
        format!("{uid}:{}:{}", kind.as_str(), version.unwrap_or("-"))
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PlatformError {
    #[error("the platform refused {action} on {site}: {message}")]
    Refused { action: &'static str, site: String, message: String },
    #[error("the platform did not answer {action} on {site}: {message}")]
    Unavailable { action: &'static str, site: String, message: String },
}

/// Where actions are carried out.
pub trait Platform: Send + Sync {
    fn perform<'a>(&'a self, action: &'a Action) -> BoxFuture<'a, Result<(), PlatformError>>;
}
