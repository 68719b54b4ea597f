//! The emulated platform's state and rules: pure and in memory, no I/O. Time is always passed in
//! (epoch milliseconds) and asynchronous work (installation tasks, rollouts) progresses when
//! [`Model::advance`] is called with a later time.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use super::indexed::{Installations, Seq, Sites};

use super::seed::{
    BatchOutcome, BatchRequest, ConsoleAction, ConsoleOutcome, ConsoleRequest, DeployOutcome, DeployRequest,
    LinkInstallOutcome, LinkInstallRequest, Seed, SeedAccount, SeedApp, SeedInstallation, SeedLink, SeedSite, SiteInfo,
    SiteUpgradeOutcome, SiteUpgradeRequest,
};

/// Epoch milliseconds.
pub type Millis = i64;

/// Error types, as the platform names them in `extensions.errorType`.
pub mod error_type {
    pub const APP_NOT_FOUND: &str = "APP_NOT_FOUND";
    pub const PERMISSION_DENIED: &str = "PERMISSION_DENIED";
    /// The spelling the rollout mutations use.
    pub const PERMISSION_DENIED_ERROR: &str = "PermissionDeniedError";
    pub const APP_ALREADY_INSTALLED: &str = "APP_ALREADY_INSTALLED";
    pub const INSTALLATION_ALREADY_UPGRADED: &str = "INSTALLATION_ALREADY_UPGRADED";
    pub const INSTALLATION_LIMIT_REACHED: &str = "INSTALLATION_LIMIT_REACHED";
    pub const INSTALLATION_NOT_FOUND: &str = "INSTALLATION_NOT_FOUND";
    pub const APP_ROLLOUT_RUNNING: &str = "APP_ROLLOUT_RUNNING";
    pub const TOO_MANY_APP_ROLLOUTS_RUNNING_FOR_ACCOUNT: &str = "TOO_MANY_APP_ROLLOUTS_RUNNING_FOR_ACCOUNT";
    pub const APP_ROLLOUTS_UNAVAILABLE: &str = "APP_ROLLOUTS_UNAVAILABLE";
    pub const APP_ROLLOUT_NOT_RUNNING: &str = "APP_ROLLOUT_NOT_RUNNING";
    pub const APP_ROLLOUT_NOT_ELIGIBLE: &str = "APP_ROLLOUT_NOT_ELIGIBLE";
    pub const NOT_FOUND: &str = "NOT_FOUND";
    pub const BAD_REQUEST: &str = "BAD_REQUEST";
    pub const CONFLICT: &str = "CONFLICT";
    pub const UNSUPPORTED: &str = "UNSUPPORTED";
    pub const SITE_FAILURE: &str = "INTERNAL_SERVER_ERROR";
    pub const DISTRIBUTION_LINK_INVALID: &str = "DISTRIBUTION_LINK_INVALID";
    pub const APP_NOT_SHARED: &str = "APP_NOT_SHARED";
    /// The app is listed on (or submitted to) the Marketplace: it cannot be shared by link.
    pub const APP_LISTED_ON_MARKETPLACE: &str = "APP_LISTED_ON_MARKETPLACE";
    /// The latest version deployed to production requires a license: the app cannot be shared by
    /// link.
    pub const APP_LICENSED: &str = "APP_LICENSED";
    /// Nothing is deployed to the production environment, which an installation link installs.
    pub const APP_NOT_DEPLOYED: &str = "APP_NOT_DEPLOYED";
    /// An input field is missing or invalid (the app details sharing needs).
    pub const VALIDATION_ERROR: &str = "VALIDATION_ERROR";
    pub const UNAUTHORIZED: &str = "UNAUTHORIZED";
    /// A code-only upgrade to code older than the installation's permissions version (the CLI's
    /// `VERSION_DECREASES_ROLLING_RELEASE`).
    pub const VERSION_DECREASES_ROLLING_RELEASE: &str = "VERSION_DECREASES_ROLLING_RELEASE";
    /// A code-only upgrade to a version whose licensing differs from the permissions version's
    /// (the CLI's `LICENSE_CHANGE_ROLLING_RELEASE`).
    pub const LICENSE_CHANGE_ROLLING_RELEASE: &str = "LICENSE_CHANGE_ROLLING_RELEASE";
}

use error_type as et;

/// An error as the platform reports it: `{ message, extensions { errorType, statusCode } }`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[error("{error_type} ({status_code}): {message}")]
pub struct PlatformError {
    /// `extensions.errorType`.
    pub error_type: String,
    /// `extensions.statusCode`.
    pub status_code: u16,
    /// `message`.
    pub message: String,
}

impl PlatformError {
    /// An error of `error_type` with an HTTP-like status code.
    pub fn new(error_type: &str, status_code: u16, message: impl Into<String>) -> Self {
        PlatformError { error_type: error_type.to_string(), status_code, message: message.into() }
    }
    fn app_not_found(id: &str) -> Self {
        Self::new(et::APP_NOT_FOUND, 404, format!("App {id} was not found"))
    }
    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(et::BAD_REQUEST, 400, message)
    }
}

/// An account's status, as `me { user { accountStatus } }` answers it.
#[derive(async_graphql::Enum, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
#[graphql(rename_items = "lowercase")]
pub enum AccountStatus {
    #[default]
    Active,
    Inactive,
    Closed,
}

/// An environment's type.
#[derive(async_graphql::Enum, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[graphql(name = "AppEnvironmentType")]
pub enum EnvironmentType {
    Development,
    Production,
    Staging,
}

impl EnvironmentType {
    /// The type the platform gives an environment of this key.
    pub fn for_key(key: &str) -> Self {
        match key {
            "production" => EnvironmentType::Production,
            "staging" => EnvironmentType::Staging,
            _ => EnvironmentType::Development,
        }
    }
}

/// Sharing: `DEVELOPMENT` (off) or `PUBLIC` (on, installation links work).
#[derive(async_graphql::Enum, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DistributionStatus {
    #[default]
    Development,
    Public,
}

/// The kind of an egress permission.
#[derive(async_graphql::Enum, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[graphql(name = "AppNetworkPermissionType")]
pub enum EgressType {
    FetchBackendSide,
    FetchClientSide,
    Fonts,
    Frames,
    Images,
    Media,
    Navigation,
    Scripts,
    Styles,
}

/// An egress permission's category.
#[derive(async_graphql::Enum, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[graphql(name = "AppNetworkEgressCategory")]
pub enum EgressCategory {
    Analytics,
}

/// An egress permission of a version.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Egress {
    /// `type`.
    #[serde(rename = "type", default = "default_egress_type")]
    pub kind: EgressType,
    /// Addresses (host names or URLs, possibly with wildcards).
    #[serde(default)]
    pub addresses: Vec<String>,
    /// `ANALYTICS` or none.
    #[serde(default)]
    pub category: Option<EgressCategory>,
    /// In scope of end-user data.
    #[serde(default, rename = "inScopeEUD")]
    pub in_scope_eud: bool,
}

fn default_egress_type() -> EgressType {
    EgressType::FetchBackendSide
}

/// A remote a version declares (`remotes` in the manifest): a backend outside Atlassian that the
/// app's code or UI calls (the gateway answers it under `storage { remotes }`). A new remote, or a
/// new base URL for a key, needs the site admin's consent: a new major.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Remote {
    /// The remote's key (unique in a version).
    pub key: String,
    /// Its base URL (`https://...`).
    pub base_url: String,
}

/// The type of a content security policy (`permissions.content` in the manifest), as the gateway's
/// `AppSecurityPoliciesPermissionType` has them: `SCRIPTS` and `STYLES` (a seed or deploy may also
/// write them as the manifest does, `scripts` and `styles`).
#[derive(async_graphql::Enum, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[graphql(name = "AppSecurityPoliciesPermissionType")]
pub enum SecurityPolicyType {
    /// `script-src` options (`unsafe-inline`, `unsafe-hashes`, ...).
    #[serde(alias = "scripts")]
    Scripts,
    /// `style-src` options (`unsafe-inline`, ...).
    #[serde(alias = "styles")]
    Styles,
}

impl SecurityPolicyType {
    /// The manifest's name of the type (`scripts`, `styles`).
    pub fn manifest_name(self) -> &'static str {
        match self {
            SecurityPolicyType::Scripts => "scripts",
            SecurityPolicyType::Styles => "styles",
        }
    }
}

/// A version's content security policy options of one type (the gateway's
/// `AppSecurityPoliciesPermission`). A new option needs the site admin's consent: a new major.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecurityPolicy {
    /// `type`: `SCRIPTS` or `STYLES`.
    #[serde(rename = "type")]
    pub kind: SecurityPolicyType,
    /// The options (`unsafe-inline`, `unsafe-hashes`, `'sha256-...'`, ...).
    #[serde(default)]
    pub policies: Vec<String>,
}

/// A developer account. Its tokens are never serialized.
#[derive(Serialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    pub email: String,
    /// Its API tokens: an Atlassian account may hold several, each revoked on its own.
    #[serde(skip)]
    pub api_tokens: Vec<String>,
    pub account_id: String,
    pub name: String,
    pub status: AccountStatus,
}

/// A deployed version.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Version {
    pub id: String,
    /// `M.m.p`.
    pub version: String,
    pub created_at: Millis,
    pub scopes: Vec<String>,
    pub egress: Vec<Egress>,
    pub requires_license: bool,
    /// Lowercase product names. Non-empty: a cross-product app, installed into every one of
    /// them on a site (and optionally into the other [`CROSS_PRODUCT_PRODUCTS`]).
    pub required_products: Vec<String>,
    /// The version's modules, by extension type key (`jira:issuePanel`,
    /// `confluence:contentBylineItem`, `sql`, ...), in manifest order. Without required products
    /// the version is a single-product app: installable only into the products of its modules.
    #[serde(default)]
    pub modules: Vec<String>,
    /// The version's remotes (the gateway's `storage { remotes }`), in manifest order.
    #[serde(default)]
    pub remotes: Vec<Remote>,
    /// Its content security policies (the gateway's `permissions { securityPolicies }`): at most
    /// one entry per type.
    #[serde(default)]
    pub security_policies: Vec<SecurityPolicy>,
}

impl Version {
    /// Whether it is an environment's skeleton (see [`SKELETON_VERSION`]): 1.1.0 with nothing in it.
    pub fn is_skeleton(&self) -> bool {
        self.version == SKELETON_VERSION
            && self.scopes.is_empty()
            && self.egress.is_empty()
            && self.required_products.is_empty()
            && self.modules.is_empty()
            && self.remotes.is_empty()
            && self.security_policies.is_empty()
            && !self.requires_license
    }
    /// `(major, minor, patch)`.
    pub fn triple(&self) -> (u64, u64, u64) {
        parse_version(&self.version).unwrap_or((0, 0, 0))
    }
    /// The major version.
    pub fn major(&self) -> u64 {
        self.triple().0
    }
    /// The products its modules belong to (each once, in module order): see [`module_product`].
    pub fn module_products(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for p in self.modules.iter().filter_map(|m| module_product(m)) {
            if !out.contains(&p) {
                out.push(p);
            }
        }
        out
    }
    /// The products it may be installed into: a cross-product app's required products, then its
    /// optional ones; a single-product app's module products.
    pub fn supported_products(&self) -> Vec<String> {
        if self.required_products.is_empty() {
            return self.module_products().iter().map(|p| p.to_string()).collect();
        }
        let mut out = self.required_products.clone();
        out.extend(self.optional_products());
        out
    }
    /// A cross-product app's optional products: the [`CROSS_PRODUCT_PRODUCTS`] it does not
    /// require (none for a single-product app).
    pub fn optional_products(&self) -> Vec<String> {
        if self.required_products.is_empty() {
            return Vec::new();
        }
        CROSS_PRODUCT_PRODUCTS
            .iter()
            .filter(|p| !self.required_products.iter().any(|r| r == *p))
            .map(|p| p.to_string())
            .collect()
    }
    /// Why it may not be installed into `product` (lowercase) at all, or `None` when it may. An
    /// optional product of a cross-product app also needs the required ones installed first,
    /// which depends on the site: see [`Model::install`].
    pub fn product_refusal(&self, product: &str) -> Option<String> {
        let list = |ps: &[String]| if ps.is_empty() { "none".to_string() } else { ps.join(", ") };
        if !self.required_products.is_empty() {
            if self.supported_products().iter().any(|p| p == product) {
                return None;
            }
            let why = if WORKSPACE_PRODUCTS.contains(&product) {
                format!("{product} is a workspace product, which cross-product apps do not support")
            } else {
                format!("{product} is neither a required nor an optional product of this cross-product app")
            };
            return Some(format!(
                "App version {} cannot be installed into {product}: {why} (required: {}; optional: {})",
                self.version,
                list(&self.required_products),
                list(&self.optional_products()),
            ));
        }
        let products: Vec<String> = self.module_products().iter().map(|p| p.to_string()).collect();
        if products.iter().any(|p| p == product) {
            return None;
        }
        let supports = if products.is_empty() {
            "it declares no product modules at all, so it supports no product".to_string()
        } else {
            format!("it supports {}", products.join(", "))
        };
        Some(format!(
            "App version {} cannot be installed into {product}: it declares no modules for {product}; {supports}",
            self.version
        ))
    }
}

/// The sited products a cross-product app may add as optional products
/// (`supportedByCrossProductApps` in `@forge/cli` 13.3.0).
pub const CROSS_PRODUCT_PRODUCTS: [&str; 3] = ["jira", "confluence", "compass"];

/// Products whose installation context is a workspace of their own, not a site. The emulator's
/// sites have none of them.
pub const WORKSPACE_PRODUCTS: [&str; 1] = ["bitbucket"];

/// The product a module's extension type key belongs to: the part before `:` when it names a
/// product (`jira:issuePanel` and `jiraServiceManagement:portalFooter` are jira's,
/// `confluence:contentBylineItem` confluence's, `compass:adminPage` compass's,
/// `bitbucket:repoPullRequestCard` bitbucket's); `None` for modules of no product (`sql`,
/// `core:function`, `webtrigger`, ...).
pub fn module_product(extension_type: &str) -> Option<&'static str> {
    let (prefix, _) = extension_type.split_once(':')?;
    match prefix {
        "jira" | "jiraServiceManagement" => Some("jira"),
        "confluence" => Some("confluence"),
        "compass" => Some("compass"),
        "bitbucket" => Some("bitbucket"),
        _ => None,
    }
}

/// Checks and trims module extension type keys (as a seed or a deploy gives them).
fn normalize_modules(modules: &[String]) -> Result<Vec<String>, PlatformError> {
    modules
        .iter()
        .map(|m| {
            let t = m.trim();
            if t.is_empty() || t.chars().any(char::is_whitespace) {
                Err(PlatformError::bad_request(format!("bad module type {m:?}")))
            } else {
                Ok(t.to_string())
            }
        })
        .collect()
}

/// Checks remotes (as a seed or a deploy gives them): a key of no whitespace, used once, and an
/// `https://` base URL with a host.
fn normalize_remotes(remotes: &[Remote]) -> Result<Vec<Remote>, PlatformError> {
    let mut out: Vec<Remote> = Vec::new();
    for r in remotes {
        let key = r.key.trim();
        if key.is_empty() || key.chars().any(char::is_whitespace) {
            return Err(PlatformError::bad_request(format!("bad remote key {:?}", r.key)));
        }
        let base_url = r.base_url.trim();
        let host = base_url.strip_prefix("https://").unwrap_or_default();
        if host.is_empty() || host.starts_with('/') || base_url.chars().any(char::is_whitespace) {
            return Err(PlatformError::bad_request(format!(
                "remote {key}: bad baseUrl {:?} (an https:// URL)",
                r.base_url
            )));
        }
        if out.iter().any(|o| o.key == key) {
            return Err(PlatformError::bad_request(format!("remote {key} appears twice")));
        }
        out.push(Remote { key: key.to_string(), base_url: base_url.to_string() });
    }
    Ok(out)
}

/// Checks content security policies (as a seed or a deploy gives them): entries of the same type
/// are merged (in order of first appearance), each option once, none empty; a type without options
/// is left out.
fn normalize_security_policies(policies: &[SecurityPolicy]) -> Result<Vec<SecurityPolicy>, PlatformError> {
    let mut out: Vec<SecurityPolicy> = Vec::new();
    for p in policies {
        let idx = match out.iter().position(|o| o.kind == p.kind) {
            Some(i) => i,
            None => {
                out.push(SecurityPolicy { kind: p.kind, policies: Vec::new() });
                out.len() - 1
            }
        };
        for policy in &p.policies {
            let t = policy.trim();
            if t.is_empty() {
                return Err(PlatformError::bad_request(format!("empty {} security policy", p.kind.manifest_name())));
            }
            if !out[idx].policies.iter().any(|x| x == t) {
                out[idx].policies.push(t.to_string());
            }
        }
    }
    out.retain(|p| !p.policies.is_empty());
    Ok(out)
}

/// An app environment; `versions` are in ascending version order (the last is the latest).
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Environment {
    pub id: String,
    pub key: String,
    #[serde(rename = "type")]
    pub env_type: EnvironmentType,
    pub created_at: Millis,
    pub versions: Vec<Version>,
}

/// The version every new environment starts with, as on the platform ("Forge apps created via the
/// Developer Console or Forge CLI will initially have a version of 1.1"). It has no scopes, egress,
/// products or modules (so it installs into no product); the CLI treats it, or an environment with fewer than two versions, as "no
/// deployments" (`NO_DEPLOYMENTS_VERSION` in `@forge/cli` 13.3.0).
pub const SKELETON_VERSION: &str = "1.1.0";

impl Environment {
    /// A new environment of app `app_id`, with its skeleton version (created at `now`).
    pub fn new(app_id: &str, id: Option<String>, key: &str, env_type: EnvironmentType, now: Millis) -> Environment {
        let skeleton = Version {
            id: stable_uuid(&format!("{app_id}/{key}/{SKELETON_VERSION}")),
            version: SKELETON_VERSION.to_string(),
            created_at: now,
            scopes: Vec::new(),
            egress: Vec::new(),
            requires_license: false,
            required_products: Vec::new(),
            modules: Vec::new(),
            remotes: Vec::new(),
            security_policies: Vec::new(),
        };
        Environment {
            id: id.unwrap_or_else(|| stable_uuid(&format!("{app_id}/{key}"))),
            key: key.to_string(),
            env_type,
            created_at: now,
            versions: vec![skeleton],
        }
    }

    /// The latest version.
    pub fn latest(&self) -> Option<&Version> {
        self.versions.last()
    }
    /// The latest version deployed to it: its skeleton does not count (`None`: nothing deployed).
    pub fn latest_deployed(&self) -> Option<&Version> {
        self.versions.iter().rev().find(|v| !v.is_skeleton())
    }
    /// A version by id.
    pub fn version(&self, id: &str) -> Option<&Version> {
        self.versions.iter().find(|v| v.id == id)
    }
}

/// An installation link.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DistributionLink {
    pub products: Vec<String>,
    pub signature: String,
    pub created_at: Millis,
}

/// A Forge app.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct App {
    pub id: String,
    pub name: String,
    /// The owner's account id.
    pub owner: String,
    pub created_at: Millis,
    pub distribution_status: DistributionStatus,
    /// Listed on (or submitted to) the Marketplace: such an app cannot be shared by link (its
    /// link admits nobody), nor made private.
    pub listed_on_marketplace: bool,
    pub distribution_link: Option<DistributionLink>,
    /// Signatures of links that were replaced (they admit no install).
    #[serde(default)]
    pub retired_link_signatures: Vec<String>,
    /// App details (`vendorName`): required before the app is shared.
    #[serde(default)]
    pub vendor_name: Option<String>,
    /// App details (`privacyPolicy`, a URL): required before the app is shared.
    #[serde(default)]
    pub privacy_policy: Option<String>,
    /// App details (`termsOfService`, a URL): required before the app is shared.
    #[serde(default)]
    pub terms_of_service: Option<String>,
    /// App details (`contactLink`): optional.
    #[serde(default)]
    pub contact_link: Option<String>,
    pub environments: Vec<Environment>,
}

impl App {
    /// An environment by key.
    pub fn environment(&self, key: &str) -> Option<&Environment> {
        self.environments.iter().find(|e| e.key == key)
    }
    fn environment_mut(&mut self, key: &str) -> Option<&mut Environment> {
        self.environments.iter_mut().find(|e| e.key == key)
    }
    /// The latest version deployed to the production environment (its skeleton is no deployment),
    /// which an installation link installs.
    pub fn production_latest(&self) -> Option<&Version> {
        self.environment(PRODUCTION).and_then(Environment::latest_deployed)
    }
    /// Why the app cannot be shared by link now (listed on the Marketplace, or its production
    /// version requires a license), answered with `status_code`; `None` when it can.
    pub fn link_sharing_refusal(&self, status_code: u16) -> Option<PlatformError> {
        if self.listed_on_marketplace {
            return Some(PlatformError::new(
                et::APP_LISTED_ON_MARKETPLACE,
                status_code,
                "The app is listed on (or was submitted for listing on) the Marketplace: apps listed or submitted \
                 for listing on Marketplace can't be shared via installation link",
            ));
        }
        if let Some(v) = self.production_latest().filter(|v| v.requires_license) {
            return Some(PlatformError::new(
                et::APP_LICENSED,
                status_code,
                format!(
                    "Version {} in production requires a license: apps that have a license in the app manifest \
                     can't be shared via installation link",
                    v.version
                ),
            ));
        }
        None
    }
    /// Its sharing state, as the developer console shows it.
    pub fn sharing_outcome(&self) -> ConsoleOutcome {
        ConsoleOutcome {
            distribution_status: self.distribution_status,
            listed_on_marketplace: self.listed_on_marketplace,
            link: self
                .distribution_link
                .as_ref()
                .map(|l| SeedLink { products: l.products.clone(), signature: l.signature.clone() }),
        }
    }
    /// The Marketplace's key of the app when it is listed: the emulator uses the app's uuid.
    pub fn marketplace_app_key(&self) -> Option<&str> {
        if self.listed_on_marketplace { app_uuid(&self.id) } else { None }
    }
}

/// The environment an installation link installs.
pub const PRODUCTION: &str = "production";

/// An Atlassian site.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Site {
    pub host_name: String,
    pub cloud_id: String,
    /// Activation id by lowercase product.
    pub products: BTreeMap<String, String>,
    pub app_limit: Option<u32>,
    /// Account ids of the developer accounts that administer the site (empty: a customer's site,
    /// which no developer account administers).
    #[serde(default)]
    pub admins: Vec<String>,
    /// The site's product admins (the customer's people, not developer accounts): lowercase
    /// product to e-mails or account ids. A developer account of [`Site::admins`] is an admin of
    /// every product besides.
    #[serde(default)]
    pub product_admins: BTreeMap<String, Vec<String>>,
}

impl Site {
    /// Whether the account administers this site.
    pub fn administered_by(&self, account_id: &str) -> bool {
        self.admins.iter().any(|a| a == account_id)
    }
    /// The installation context (workspace ARI) of `product` on this site.
    pub fn context(&self, product: &str) -> Option<String> {
        self.products.get(product).map(|activation| workspace_ari(product, &self.cloud_id, activation))
    }
    /// What the admin API answers about the site.
    pub fn info(&self) -> SiteInfo {
        SiteInfo {
            admins: self.admins.clone(),
            product_admins: self.product_admins.clone(),
            host_name: self.host_name.clone(),
            cloud_id: self.cloud_id.clone(),
            activation_ids: self.products.clone(),
            installation_contexts: self
                .products
                .iter()
                .map(|(p, a)| (p.clone(), workspace_ari(p, &self.cloud_id, a)))
                .collect(),
        }
    }
}

/// The product an installation context names (`ari:cloud:<product>:...`), lowercase; `None` when
/// it is no ARI.
pub fn context_product(context: &str) -> Option<String> {
    let rest = context.strip_prefix("ari:cloud:")?;
    let (product, _) = rest.split_once(':')?;
    (!product.is_empty()).then(|| product.to_ascii_lowercase())
}

/// The workspace ARI the CLI builds for a product on a site (`createWorkspaceAriByProduct`).
pub fn workspace_ari(product: &str, cloud_id: &str, activation_id: &str) -> String {
    format!("ari:cloud:{product}:{cloud_id}:workspace/{activation_id}")
}

/// An app environment installed on a site's product.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct Installation {
    pub id: String,
    pub app_id: String,
    pub environment_key: String,
    pub cloud_id: String,
    pub product: String,
    /// The installation context (workspace ARI).
    pub context: String,
    /// The permissions version: what the site admin consented to (the gateway's
    /// `appEnvironmentVersion`).
    pub version_id: String,
    /// The version whose code runs (the gateway's `computeVersion`) when it is not `version_id`:
    /// after a code-only upgrade (`upgradeApp` with `computeOnly`). `None`: the code of
    /// `version_id` runs. See [`Installation::compute_version`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_version_id: Option<String>,
    pub created_at: Millis,
    /// When the code that runs moved to its version (unset: since `created_at`); the App metrics
    /// API counts the installation's traffic on that version from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_since: Option<Millis>,
    /// The rollouts that upgraded this installation, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upgraded_by: Vec<String>,
    /// The site's admin last moved it to its version (with consent, any major: `POST
    /// /admin/site-upgrade`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub upgraded_by_admin: bool,
    /// A newer minor of its major that the platform will move it to (minors are released
    /// progressively, without consent), and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_minor: Option<PendingMinor>,
}

impl Installation {
    /// The id of the version whose code runs: its compute version, else its (permissions) version.
    pub fn compute_version(&self) -> &str {
        self.compute_version_id.as_deref().unwrap_or(&self.version_id)
    }

    /// Since when the code of [`Installation::compute_version`] runs.
    pub fn code_since(&self) -> Millis {
        self.code_since.unwrap_or(self.created_at)
    }
}

/// A scheduled automatic move of an installation to a newer minor of its major.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PendingMinor {
    /// The version it moves to.
    pub version_id: String,
    /// When, epoch milliseconds.
    pub due_at: Millis,
}

/// What a task does.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    Install,
    Upgrade,
    Uninstall,
}

/// A task's state.
#[derive(async_graphql::Enum, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[graphql(name = "AppTaskState")]
pub enum TaskState {
    Complete,
    Failed,
    Pending,
    Running,
}

impl TaskState {
    /// COMPLETE or FAILED.
    pub fn is_finished(self) -> bool {
        matches!(self, TaskState::Complete | TaskState::Failed)
    }
}

/// An asynchronous install, upgrade or uninstall.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub id: String,
    pub kind: TaskKind,
    pub account_id: String,
    pub app_id: String,
    pub environment_key: String,
    pub cloud_id: String,
    pub product: String,
    pub context: String,
    pub installation_id: Option<String>,
    pub version_id: Option<String>,
    pub created_at: Millis,
    pub due_at: Millis,
    pub state: TaskState,
    pub errors: Vec<PlatformError>,
    /// A failure decided when the task was accepted, reported when it finishes.
    pub preset_failure: Option<PlatformError>,
    /// An upgrade of the code only (`upgradeApp` with `computeOnly`): the installation's permissions
    /// version stays.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub compute_only: bool,
}

/// A rollout's status.
#[derive(async_graphql::Enum, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[graphql(name = "AppVersionRolloutStatus")]
pub enum RolloutStatus {
    Cancelled,
    Complete,
    Running,
}

/// A bulk upgrade of the installations on one version to a newer one.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    pub id: String,
    pub app_id: String,
    pub environment_id: String,
    pub environment_key: String,
    pub source_version_id: String,
    pub target_version_id: String,
    pub created_at: Millis,
    pub completed_at: Option<Millis>,
    pub status: RolloutStatus,
    pub upgrade_limit: u32,
    pub created_by: String,
    pub cancelled_by: Option<String>,
    /// Installations still to upgrade, in order.
    pub pending: VecDeque<String>,
    pub completed: u32,
    pub failed: u32,
    /// When the next installation is upgraded, epoch microseconds.
    pub next_step_at_us: i64,
}

/// The model's tunables.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How long an install/upgrade/uninstall task takes.
    pub task_duration_ms: i64,
    /// A rollout upgrades one installation per step, in microseconds.
    pub rollout_step_us: i64,
    /// The most installations one rollout takes (default 500, the documented per-request cap).
    pub upgrade_limit: u32,
    /// The most rollouts running at once on the whole platform.
    pub global_rollout_limit: u32,
    /// Finished rollouts are forgotten this long after they finish (none: kept).
    pub rollout_retention_ms: Option<i64>,
    /// Sharing and installation links are available.
    pub distribution: bool,
    /// A new minor reaches the installations on older versions of its major progressively: each
    /// at a time spread evenly over this window from the deploy (0: all at once, in the deploy).
    pub minor_rollout_ms: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            task_duration_ms: 300,
            rollout_step_us: 10_000,
            upgrade_limit: 500,
            global_rollout_limit: 3,
            rollout_retention_ms: None,
            distribution: true,
            minor_rollout_ms: 2000,
        }
    }
}

/// What an install or upgrade asks for.
#[derive(Clone, Debug, Default)]
pub struct InstallInput {
    pub app_id: String,
    pub environment_key: String,
    pub context: String,
    pub version_id: Option<String>,
    /// `upgradeApp`'s `computeOnly`: move only the code (see [`Model::upgrade`]).
    pub compute_only: bool,
}

/// What an uninstall asks for.
#[derive(Clone, Debug, Default)]
pub struct UninstallInput {
    pub app_id: String,
    pub environment_key: String,
    pub installation_id: Option<String>,
    pub context: Option<String>,
}

/// What `updateAppDetails` (or the developer console) asks to change: `None` leaves a field as it
/// is; a blank app detail clears it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppDetailsUpdate {
    /// `distributionStatus`: sharing on (PUBLIC) or off (DEVELOPMENT).
    pub distribution_status: Option<DistributionStatus>,
    /// `name` (not blank).
    pub name: Option<String>,
    /// `vendorName` (required to share).
    pub vendor_name: Option<String>,
    /// `privacyPolicy` (required to share).
    pub privacy_policy: Option<String>,
    /// `termsOfService` (required to share).
    pub terms_of_service: Option<String>,
    /// `contactLink`.
    pub contact_link: Option<String>,
}

/// The installations filter of `appInstallationsByApp`.
#[derive(Clone, Debug, Default)]
pub struct InstallationFilter {
    pub app_ids: Vec<String>,
    pub environment_types: Option<Vec<EnvironmentType>>,
    pub contexts: Option<Vec<String>>,
    pub ids: Option<Vec<String>>,
}

/// The answer to a rollout creation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutCreated {
    pub id: String,
    pub upgrade_limit: u32,
    pub total_eligible: u32,
    pub expected_remaining: u32,
}

/// The whole platform state. Accounts and settings are not serialized (tokens never leave memory;
/// they come from the seed and the configuration at start).
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct Model {
    #[serde(skip)]
    pub accounts: Vec<Account>,
    pub apps: Vec<App>,
    /// In the order they were added, indexed by host name, cloud id and activation id.
    pub sites: Sites,
    /// In creation order, indexed by id, site, app and context.
    pub installations: Installations,
    /// By id (shared, so a snapshot for the state file copies no task).
    pub tasks: BTreeMap<String, Arc<Task>>,
    pub rollouts: Vec<Rollout>,
    #[serde(skip)]
    pub settings: Settings,
    /// Sites (host names or cloud ids) whose tasks fail.
    #[serde(skip)]
    pub failing_sites: Vec<String>,
    /// Incremented on every change (for persistence).
    #[serde(skip)]
    pub revision: u64,
    /// The ids of the tasks not finished (PENDING or RUNNING), which [`Model::advance`] moves.
    #[serde(skip)]
    unfinished: BTreeSet<String>,
    /// The App metrics API's traffic model (`PUT /admin/traffic`).
    #[serde(skip)]
    pub traffic: crate::metrics::Traffic,
    /// Calls to the App metrics API, for its limit per user.
    #[serde(skip)]
    pub metrics_calls: crate::metrics::CallLog,
}

/// What the state file holds of a [`Model`], taken under the model's lock in a moment (its items
/// are shared with the model, which copies one only when it changes it) and serialized after,
/// outside the lock: the same JSON as the model's.
#[derive(Serialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    apps: Vec<App>,
    sites: Vec<Arc<Site>>,
    installations: Vec<Arc<Installation>>,
    #[serde(serialize_with = "tasks_by_id")]
    tasks: Vec<Arc<Task>>,
    rollouts: Vec<Rollout>,
}

impl Snapshot {
    /// The JSON dump of [`Model::dump`], from a snapshot and the accounts (tokens left out), so it
    /// can be built outside the model's lock.
    pub fn dump(&self, accounts: &[Account]) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(obj) = v.as_object_mut() {
            obj.insert("accounts".into(), serde_json::to_value(accounts).unwrap_or_default());
        }
        v
    }
}

fn tasks_by_id<S: serde::Serializer>(tasks: &[Arc<Task>], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_map(tasks.iter().map(|t| (&t.id, &**t)))
}

/// Parses `M`, `M.m` or `M.m.p`.
pub fn parse_version(s: &str) -> Option<(u64, u64, u64)> {
    let parts: Vec<&str> = s.trim().split('.').collect();
    if parts.is_empty() || parts.len() > 3 {
        return None;
    }
    let mut out = [0u64; 3];
    for (i, p) in parts.iter().enumerate() {
        out[i] = p.parse().ok()?;
    }
    Some((out[0], out[1], out[2]))
}

fn normalize_version(s: &str) -> Option<String> {
    parse_version(s).map(|(a, b, c)| format!("{a}.{b}.{c}"))
}

const PRODUCTS: [&str; 3] = ["jira", "confluence", "compass"];

fn normalize_product(p: &str) -> Result<String, PlatformError> {
    let lower = p.trim().to_ascii_lowercase();
    if PRODUCTS.contains(&lower.as_str()) {
        Ok(lower)
    } else {
        Err(PlatformError::bad_request(format!("unknown product {p:?} (jira, confluence or compass)")))
    }
}

fn fnv(data: &str, salt: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ salt;
    for b in data.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn format_uuid(v: u128) -> String {
    // Version 4 layout, variant 1.
    let v = (v & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let h = format!("{v:032x}");
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// A uuid derived from a name: the same name always gives the same uuid.
pub fn stable_uuid(name: &str) -> String {
    format_uuid((u128::from(fnv(name, 1)) << 64) | u128::from(fnv(name, 0x9e37_79b9)))
}

/// The Marketplace's (numeric) id of a listed app, derived from the app's id.
pub fn stable_marketplace_id(app_id: &str) -> String {
    (1_000_000 + fnv(app_id, 7) % 9_000_000).to_string()
}

/// A random uuid.
pub fn random_uuid() -> String {
    format_uuid(rand::random::<u128>())
}

/// A random link signature (url-safe).
fn random_signature() -> String {
    use base64::Engine as _;
    let bytes: [u8; 24] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn same_site(site: &Site, names: &[String]) -> bool {
    names.iter().any(|n| n.eq_ignore_ascii_case(&site.host_name) || n == &site.cloud_id)
}

/// Whether a version may be reached from another by a rollout, and if not why.
pub fn rollout_ineligibility(source: &Version, target: &Version) -> Option<String> {
    if target.triple() <= source.triple() {
        return Some(format!("version {} is not newer than {}", target.version, source.version));
    }
    let scopes: BTreeSet<&String> = source.scopes.iter().collect();
    let added: Vec<&String> = target.scopes.iter().filter(|s| !scopes.contains(s)).collect();
    if !added.is_empty() {
        return Some(format!("version {} adds scopes {added:?}", target.version));
    }
    let mut source_egress: BTreeMap<(EgressType, &str), Option<EgressCategory>> = BTreeMap::new();
    for e in &source.egress {
        for a in &e.addresses {
            source_egress.insert((e.kind, a.as_str()), e.category);
        }
    }
    for e in &target.egress {
        for a in &e.addresses {
            match source_egress.get(&(e.kind, a.as_str())) {
                None => return Some(format!("version {} adds egress to {a}", target.version)),
                Some(c) if *c != e.category => {
                    return Some(format!("version {} changes the egress category of {a}", target.version));
                }
                Some(_) => {}
            }
        }
    }
    if let Some(r) = target.remotes.iter().find(|r| !source.remotes.contains(r)) {
        return Some(format!("version {} adds remote {} {}", target.version, r.key, r.base_url));
    }
    for p in &target.security_policies {
        let known = source.security_policies.iter().find(|s| s.kind == p.kind).map(|s| &s.policies);
        if let Some(policy) = p.policies.iter().find(|x| known.is_none_or(|k| !k.contains(x))) {
            return Some(format!(
                "version {} adds the {} content security policy {policy}",
                target.version,
                p.kind.manifest_name()
            ));
        }
    }
    if target.requires_license != source.requires_license {
        return Some(format!("version {} changes licensing", target.version));
    }
    None
}

/// What a version drops from, or makes stricter than, the newest of its major, which makes it a
/// new major on the platform though a rollout needs no consent for it: a removed scope or egress
/// address, or egress becoming in scope of end-user data.
fn minor_removal(prev: &Version, new: &Version) -> Option<String> {
    let removed: Vec<&String> = prev.scopes.iter().filter(|s| !new.scopes.contains(s)).collect();
    if !removed.is_empty() {
        return Some(format!("version {} removes scopes {removed:?}", new.version));
    }
    let kept: BTreeSet<(EgressType, &str)> =
        new.egress.iter().flat_map(|e| e.addresses.iter().map(move |a| (e.kind, a.as_str()))).collect();
    for e in &prev.egress {
        if let Some(a) = e.addresses.iter().find(|a| !kept.contains(&(e.kind, a.as_str()))) {
            return Some(format!("version {} removes egress to {a}", new.version));
        }
    }
    let eud: BTreeSet<(EgressType, &str)> = prev
        .egress
        .iter()
        .filter(|e| e.in_scope_eud)
        .flat_map(|e| e.addresses.iter().map(move |a| (e.kind, a.as_str())))
        .collect();
    for e in new.egress.iter().filter(|e| e.in_scope_eud) {
        if let Some(a) = e.addresses.iter().find(|a| !eud.contains(&(e.kind, a.as_str()))) {
            return Some(format!("version {} puts egress to {a} in scope of end-user data", new.version));
        }
    }
    None
}

impl Model {
    /// Builds the model from a seed. Unknown references in the seed are errors.
    pub fn from_seed(seed: &Seed, settings: Settings, now: Millis) -> Result<Model, PlatformError> {
        let mut model = Model { settings, ..Model::default() };
        model.accounts = accounts_from_seed(seed);
        for s in &seed.sites {
            model.add_site(s.clone())?;
        }
        for a in &seed.apps {
            model.add_app(a, now)?;
        }
        for i in &seed.installations {
            model.seed_installation(i, now)?;
        }
        Ok(model)
    }

    /// Adds an installation as a seed describes it (complete, without a task): the site must have
    /// the product, the app the environment and version (default: the latest), which must support
    /// the product; an app environment is installed once per site's product. Answers its id.
    pub fn seed_installation(&mut self, i: &SeedInstallation, now: Millis) -> Result<String, PlatformError> {
        let product = normalize_product(&i.product)?;
        let site = self
            .site_by_host(&i.site)
            .ok_or_else(|| PlatformError::bad_request(format!("installation: unknown site {}", i.site)))?;
        let context = site
            .context(&product)
            .ok_or_else(|| PlatformError::bad_request(format!("installation: {} has no {product}", i.site)))?;
        let cloud_id = site.cloud_id.clone();
        let app = self.app(&i.app_id).ok_or_else(|| PlatformError::app_not_found(&i.app_id))?;
        let env = app.environment(&i.environment).ok_or_else(|| {
            PlatformError::bad_request(format!("installation: {} has no environment {}", i.app_id, i.environment))
        })?;
        let version = match &i.version {
            None => env.latest(),
            Some(v) => {
                let v = normalize_version(v).unwrap_or_default();
                env.versions.iter().find(|x| x.version == v)
            }
        }
        .ok_or_else(|| PlatformError::bad_request(format!("installation: no such version {:?}", i.version)))?;
        Self::require_supported(version, &product)
            .map_err(|e| PlatformError::bad_request(format!("installation of {}: {}", i.app_id, e.message)))?;
        let id = i.id.clone().unwrap_or_else(|| {
            stable_uuid(&format!("installation/{}/{}/{cloud_id}/{product}", i.app_id, i.environment))
        });
        let installation = Installation {
            id: id.clone(),
            app_id: i.app_id.clone(),
            environment_key: i.environment.clone(),
            cloud_id,
            product,
            context,
            version_id: version.id.clone(),
            created_at: now,
            upgraded_by: Vec::new(),
            ..Default::default()
        };
        if self.installed(
            &installation.app_id,
            &installation.environment_key,
            &installation.cloud_id,
            &installation.product,
        ) {
            return Err(PlatformError::bad_request(format!(
                "installation of {} {} on {} {} appears twice",
                i.app_id, i.environment, i.site, installation.product
            )));
        }
        self.installations.push(installation);
        self.touch();
        Ok(id)
    }

    /// Restores a persisted model, with the accounts of the seed and the given settings.
    pub fn restore(json: &str, seed: &Seed, settings: Settings) -> Result<Model, serde_json::Error> {
        let mut model: Model = serde_json::from_str(json)?;
        model.accounts = accounts_from_seed(seed);
        model.settings = settings;
        model.unfinished =
            model.tasks.iter().filter(|(_, t)| !t.state.is_finished()).map(|(id, _)| id.clone()).collect();
        Ok(model)
    }

    /// What the state file holds, taken in a moment (see [`Snapshot`]).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            apps: self.apps.clone(),
            sites: self.sites.snapshot(),
            installations: self.installations.snapshot(),
            tasks: self.tasks.values().cloned().collect(),
            rollouts: self.rollouts.clone(),
        }
    }

    /// A JSON dump of everything (tokens left out).
    pub fn dump(&self) -> serde_json::Value {
        self.snapshot().dump(&self.accounts)
    }

    fn touch(&mut self) {
        self.revision += 1;
    }

    /// The account with these credentials.
    pub fn authenticate(&self, email: &str, token: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.email.eq_ignore_ascii_case(email) && a.api_tokens.iter().any(|t| t == token))
    }

    /// Adds a developer account (as a seed describes it); CONFLICT if one with that email or
    /// account id exists. Answers the account (its tokens are never serialized).
    pub fn add_account(&mut self, a: &SeedAccount) -> Result<Account, PlatformError> {
        if a.email.trim().is_empty() || !a.email.contains('@') {
            return Err(PlatformError::bad_request(format!("bad email {:?}", a.email)));
        }
        if a.api_token.is_empty() {
            return Err(PlatformError::bad_request("apiToken must not be empty"));
        }
        let account = account_of(a);
        if self
            .accounts
            .iter()
            .any(|x| x.email.eq_ignore_ascii_case(&account.email) || x.account_id == account.account_id)
        {
            return Err(PlatformError::new(et::CONFLICT, 409, format!("account {} exists", account.email)));
        }
        self.accounts.push(account.clone());
        Ok(account)
    }

    /// Creates another API token for the account of `email`; false if there is no such account.
    pub fn add_api_token(&mut self, email: &str, token: &str) -> bool {
        let Some(account) = self.accounts.iter_mut().find(|a| a.email.eq_ignore_ascii_case(email)) else {
            return false;
        };
        if !account.api_tokens.iter().any(|t| t == token) {
            account.api_tokens.push(token.to_string());
        }
        true
    }

    /// Revokes one API token of the account of `email`: requests with it are refused from now on.
    /// False if the account has no such token.
    pub fn revoke_api_token(&mut self, email: &str, token: &str) -> bool {
        let Some(account) = self.accounts.iter_mut().find(|a| a.email.eq_ignore_ascii_case(email)) else {
            return false;
        };
        let before = account.api_tokens.len();
        account.api_tokens.retain(|t| t != token);
        account.api_tokens.len() != before
    }

    /// The account id of an account given by email (case-insensitive) or account id.
    pub fn resolve_account(&self, email_or_id: &str) -> Option<String> {
        self.accounts
            .iter()
            .find(|a| a.email.eq_ignore_ascii_case(email_or_id) || a.account_id == email_or_id)
            .map(|a| a.account_id.clone())
    }

    /// PERMISSION_DENIED unless the caller administers the site: the gateway installs, upgrades
    /// and uninstalls only on sites the calling account administers.
    fn require_site_admin(&self, caller: &str, cloud_id: &str, action: &str) -> Result<(), PlatformError> {
        let site = self
            .site_by_cloud_id(cloud_id)
            .ok_or_else(|| PlatformError::new(et::NOT_FOUND, 404, format!("Site {cloud_id} was not found")))?;
        if site.administered_by(caller) {
            return Ok(());
        }
        let rest = if action == "install" {
            "To install on any other site, generate an installation link in the developer console and share it \
             with the site admin"
                .to_string()
        } else {
            format!("On any other site, only the site admin can {action} the app")
        };
        Err(PlatformError::new(
            et::PERMISSION_DENIED,
            403,
            format!("You must be an admin of {} to {action} apps there. {rest}", site.host_name),
        ))
    }

    /// An account by id.
    pub fn account(&self, account_id: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.account_id == account_id)
    }

    /// An app by id.
    pub fn app(&self, id: &str) -> Option<&App> {
        self.apps.iter().find(|a| a.id == id)
    }

    fn app_mut(&mut self, id: &str) -> Option<&mut App> {
        self.apps.iter_mut().find(|a| a.id == id)
    }

    /// An app the caller owns: APP_NOT_FOUND if there is none, PERMISSION_DENIED if another
    /// account owns it.
    pub fn owned_app(&self, caller: &str, id: &str) -> Result<&App, PlatformError> {
        let app = self.app(id).ok_or_else(|| PlatformError::app_not_found(id))?;
        if app.owner != caller {
            return Err(PlatformError::new(
                et::PERMISSION_DENIED,
                403,
                format!("You don't have permission to access app {id}"),
            ));
        }
        Ok(app)
    }

    /// A version anywhere, with its app and environment.
    pub fn version(&self, id: &str) -> Option<(&App, &Environment, &Version)> {
        self.apps.iter().find_map(|a| a.environments.iter().find_map(|e| e.version(id).map(|v| (a, e, v))))
    }

    /// A site by host name (case-insensitive, scheme and path ignored).
    pub fn site_by_host(&self, host: &str) -> Option<&Site> {
        let host = host.trim().trim_start_matches("https://").trim_start_matches("http://");
        let host = host.split('/').next().unwrap_or(host);
        self.sites.by_host(host)
    }

    /// A site by cloud id.
    pub fn site_by_cloud_id(&self, cloud_id: &str) -> Option<&Site> {
        self.sites.by_cloud_id(cloud_id)
    }

    /// A site by one of its activation ids.
    pub fn site_by_activation_id(&self, activation_id: &str) -> Option<&Site> {
        self.sites.by_activation_id(activation_id)
    }

    /// Reads an installation context: `ari:cloud:<product>:<cloudId>:workspace/<activationId>`,
    /// `ari:cloud:<product>::workspace/<activationId>` or `ari:cloud:<product>::site/<cloudId>`.
    /// Answers the site and the product.
    pub fn resolve_context(&self, context: &str) -> Result<(&Site, String), PlatformError> {
        let bad = || PlatformError::bad_request(format!("installation context {context} is not a known site"));
        let rest = context.strip_prefix("ari:cloud:").ok_or_else(bad)?;
        let mut parts = rest.splitn(3, ':');
        let product = parts.next().ok_or_else(bad)?.to_string();
        let cloud_id = parts.next().ok_or_else(bad)?;
        let resource = parts.next().ok_or_else(bad)?;
        let (kind, id) = resource.split_once('/').ok_or_else(bad)?;
        if WORKSPACE_PRODUCTS.contains(&product.as_str()) {
            return Err(PlatformError::bad_request(format!(
                "installation context {context} is a {product} workspace: {product} is a workspace product, \
                 and the emulator has no {product} workspaces (only sites with jira, confluence or compass)"
            )));
        }
        if !PRODUCTS.contains(&product.as_str()) {
            return Err(bad());
        }
        let site = match kind {
            "site" => self.site_by_cloud_id(id),
            "workspace" => {
                let site =
                    if cloud_id.is_empty() { self.site_by_activation_id(id) } else { self.site_by_cloud_id(cloud_id) };
                site.filter(|s| s.products.get(&product).map(String::as_str) == Some(id))
            }
            _ => None,
        }
        .ok_or_else(bad)?;
        if !site.products.contains_key(&product) {
            return Err(bad());
        }
        Ok((site, product))
    }

    /// Whether this app environment is installed on the site's product.
    pub fn installed(&self, app_id: &str, env_key: &str, cloud_id: &str, product: &str) -> bool {
        self.find_installation(app_id, env_key, cloud_id, product).is_some()
    }

    fn find_installation(&self, app_id: &str, env_key: &str, cloud_id: &str, product: &str) -> Option<&Installation> {
        self.installations.find(app_id, env_key, cloud_id, product)
    }

    /// An installation by id.
    pub fn installation(&self, id: &str) -> Option<&Installation> {
        self.installations.get(id)
    }

    /// The compute version an installation keeps when its permissions version moves to `target`
    /// without a code-only upgrade (a minor reaching it, a rollout, its site admin's upgrade): the
    /// code moves with the permissions, unless it already runs a newer version (after a code-only
    /// upgrade), which it keeps, as the code never runs older than the permissions.
    fn compute_after_move(&self, installation: &Installation, target: &str) -> Option<String> {
        let running = installation.compute_version_id.as_deref()?;
        let newer = match (self.version(running), self.version(target)) {
            (Some((_, _, r)), Some((_, _, t))) => r.triple() > t.triple(),
            _ => false,
        };
        newer.then(|| running.to_string())
    }

    /// A task by id.
    pub fn task(&self, id: &str) -> Option<&Task> {
        self.tasks.get(id).map(|t| &**t)
    }

    fn unfinished_tasks(&self) -> impl Iterator<Item = &Task> {
        self.unfinished.iter().filter_map(|id| self.task(id)).filter(|t| !t.state.is_finished())
    }

    fn new_task(&mut self, mut task: Task, now: Millis) -> String {
        task.id = random_uuid();
        task.created_at = now;
        task.due_at = now + self.settings.task_duration_ms.max(0);
        task.state = TaskState::Pending;
        let id = task.id.clone();
        self.tasks.insert(id.clone(), Arc::new(task));
        self.unfinished.insert(id.clone());
        self.touch();
        id
    }

    /// Refuses, as BAD_REQUEST (400), installing `version` into a product it does not support
    /// (see [`Version::product_refusal`]).
    fn require_supported(version: &Version, product: &str) -> Result<(), PlatformError> {
        match version.product_refusal(product) {
            Some(why) => Err(PlatformError::bad_request(why)),
            None => Ok(()),
        }
    }

    /// Refuses, as BAD_REQUEST (400), installing a cross-product app into one of its optional
    /// products on a site before the app environment is installed there into every required
    /// product (the CLI installs the required products first).
    fn require_required_installed(
        &self,
        app_id: &str,
        env_key: &str,
        cloud_id: &str,
        version: &Version,
        product: &str,
    ) -> Result<(), PlatformError> {
        if version.required_products.is_empty() || version.required_products.iter().any(|p| p == product) {
            return Ok(());
        }
        let missing: Vec<&str> = version
            .required_products
            .iter()
            .filter(|p| !self.installed(app_id, env_key, cloud_id, p))
            .map(String::as_str)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(PlatformError::bad_request(format!(
            "App version {} cannot be installed into {product} yet: {product} is an optional product of this \
             cross-product app, which must first be installed on the site into its required products {} \
             (not installed: {})",
            version.version,
            version.required_products.join(", "),
            missing.join(", "),
        )))
    }

    /// The id of the version an install or upgrade asks for: the one given, else the latest.
    fn target_version(&self, caller: &str, input: &InstallInput) -> Result<String, PlatformError> {
        let app = self.owned_app(caller, &input.app_id)?;
        let env = app.environment(&input.environment_key).ok_or_else(|| {
            PlatformError::new(et::APP_NOT_FOUND, 404, format!("Environment {} was not found", input.environment_key))
        })?;
        let version = match &input.version_id {
            Some(v) => env.version(v).ok_or_else(|| {
                PlatformError::new(et::APP_NOT_FOUND, 404, format!("Version {v} was not found in {}", env.key))
            })?,
            None => env.latest().ok_or_else(|| {
                PlatformError::new(et::APP_NOT_FOUND, 404, format!("Nothing is deployed to {}", env.key))
            })?,
        };
        Ok(version.id.clone())
    }

    /// `installApp`: accepted as a task (whose id is answered) or refused at once. Installing an
    /// app environment already installed (or being installed) on the context, or beyond the
    /// site's app limit, is accepted and the task fails with APP_ALREADY_INSTALLED or
    /// INSTALLATION_LIMIT_REACHED, as on the real platform.
    ///
    /// Refused at once (BAD_REQUEST, 400) when the version does not support the context's product:
    /// a cross-product app (required products) installs into a required product, or into an
    /// optional one ([`CROSS_PRODUCT_PRODUCTS`] not required) once it is installed on the site
    /// into every required product; a single-product app only into its modules' products.
    pub fn install(&mut self, caller: &str, input: &InstallInput, now: Millis) -> Result<String, PlatformError> {
        let version_id = self.target_version(caller, input)?;
        let version = self
            .version(&version_id)
            .map(|(_, _, v)| v.clone())
            .ok_or_else(|| PlatformError::new(et::APP_NOT_FOUND, 404, format!("Version {version_id} was not found")))?;
        if let Some(product) = context_product(&input.context) {
            Self::require_supported(&version, &product)?;
        }
        let (site, product) = self.resolve_context(&input.context)?;
        let (cloud_id, app_limit) = (site.cloud_id.clone(), site.app_limit);
        self.require_site_admin(caller, &cloud_id, "install")?;
        self.require_required_installed(&input.app_id, &input.environment_key, &cloud_id, &version, &product)?;
        let pending_same = self.unfinished_tasks().any(|t| {
            t.kind == TaskKind::Install
                && t.preset_failure.is_none()
                && t.app_id == input.app_id
                && t.environment_key == input.environment_key
                && t.cloud_id == cloud_id
                && t.product == product
        });
        let preset_failure =
            if pending_same || self.installed(&input.app_id, &input.environment_key, &cloud_id, &product) {
                Some(PlatformError::new(et::APP_ALREADY_INSTALLED, 409, "App is already installed on this site"))
            } else if let Some(limit) = app_limit {
                let on_site = self.installations.seqs_on_site(&cloud_id).len()
                    + self
                        .unfinished_tasks()
                        .filter(|t| t.kind == TaskKind::Install && t.preset_failure.is_none() && t.cloud_id == cloud_id)
                        .count();
                (on_site >= limit as usize).then(|| {
                    PlatformError::new(
                        et::INSTALLATION_LIMIT_REACHED,
                        400,
                        format!("The site already has the maximum number of apps installed ({limit})"),
                    )
                })
            } else {
                None
            };
        let task = Task {
            id: String::new(),
            kind: TaskKind::Install,
            account_id: caller.to_string(),
            app_id: input.app_id.clone(),
            environment_key: input.environment_key.clone(),
            cloud_id,
            product,
            context: input.context.clone(),
            installation_id: None,
            version_id: Some(version_id),
            created_at: now,
            due_at: now,
            state: TaskState::Pending,
            errors: Vec::new(),
            preset_failure,
            compute_only: false,
        };
        Ok(self.new_task(task, now))
    }

    /// `upgradeApp`: refused at once when the installation is missing or already on the target
    /// version (INSTALLATION_ALREADY_UPGRADED), or when the target version does not support the
    /// installation's product (BAD_REQUEST, as for `installApp`); otherwise a task. Without a
    /// version, the latest. A full upgrade moves both the permissions version and the code to the
    /// target.
    ///
    /// With `computeOnly` (`forge install --upgrade code`), only the code moves: the installation
    /// keeps its permissions version (what its site admin consented to) and runs the target's code
    /// (its `computeVersion`). The target may be of another major, and may ask for permissions the
    /// installation was never granted (scopes, egress, remotes, content security policies): as on
    /// the platform's rolling releases, the code then runs with the permissions of the installed
    /// version until the admin consents to the new ones (a full upgrade or a site admin's upgrade),
    /// so nothing new is granted. Refused at once, as the platform refuses such a code-only
    /// upgrade: when the installation already runs the target's code (INSTALLATION_ALREADY_UPGRADED),
    /// when the target is older than the permissions version (VERSION_DECREASES_ROLLING_RELEASE:
    /// the code never runs older than the permissions), or when it changes licensing
    /// (LICENSE_CHANGE_ROLLING_RELEASE). A code-only upgrade back to the permissions version makes
    /// code and permissions one version again.
    pub fn upgrade(&mut self, caller: &str, input: &InstallInput, now: Millis) -> Result<String, PlatformError> {
        let target_id = self.target_version(caller, input)?;
        let (site, product) = self.resolve_context(&input.context)?;
        let cloud_id = site.cloud_id.clone();
        self.require_site_admin(caller, &cloud_id, "upgrade")?;
        let installation =
            self.find_installation(&input.app_id, &input.environment_key, &cloud_id, &product).ok_or_else(|| {
                PlatformError::new(et::INSTALLATION_NOT_FOUND, 404, "The app is not installed on this site")
            })?;
        if input.compute_only && installation.compute_version() == target_id {
            return Err(PlatformError::new(
                et::INSTALLATION_ALREADY_UPGRADED,
                409,
                "The installation already runs this version's code",
            ));
        }
        if !input.compute_only && installation.version_id == target_id {
            return Err(PlatformError::new(
                et::INSTALLATION_ALREADY_UPGRADED,
                409,
                "The installation is already on this version",
            ));
        }
        let target = self
            .version(&target_id)
            .map(|(_, _, v)| v)
            .ok_or_else(|| PlatformError::new(et::APP_NOT_FOUND, 404, format!("Version {target_id} was not found")))?;
        Self::require_supported(target, &product)?;
        if input.compute_only
            && let Some((_, _, permissions)) = self.version(&installation.version_id)
        {
            if target.triple() < permissions.triple() {
                return Err(PlatformError::new(
                    et::VERSION_DECREASES_ROLLING_RELEASE,
                    400,
                    format!(
                        "The permissions version ({}) cannot be greater than the app's code version ({})",
                        permissions.version, target.version
                    ),
                ));
            }
            if target.requires_license != permissions.requires_license {
                return Err(PlatformError::new(
                    et::LICENSE_CHANGE_ROLLING_RELEASE,
                    400,
                    format!(
                        "Version {} changes licensing from the permissions version {}: it is not eligible for a \
                         code-only upgrade",
                        target.version, permissions.version
                    ),
                ));
            }
        }
        let task = Task {
            id: String::new(),
            kind: TaskKind::Upgrade,
            account_id: caller.to_string(),
            app_id: input.app_id.clone(),
            environment_key: input.environment_key.clone(),
            cloud_id,
            product,
            context: installation.context.clone(),
            installation_id: Some(installation.id.clone()),
            version_id: Some(target_id),
            created_at: now,
            due_at: now,
            state: TaskState::Pending,
            errors: Vec::new(),
            preset_failure: None,
            compute_only: input.compute_only,
        };
        Ok(self.new_task(task, now))
    }

    /// `uninstallApp` by installation id (or context): a task.
    pub fn uninstall(&mut self, caller: &str, input: &UninstallInput, now: Millis) -> Result<String, PlatformError> {
        let app = self.owned_app(caller, &input.app_id)?;
        if app.environment(&input.environment_key).is_none() {
            return Err(PlatformError::new(
                et::APP_NOT_FOUND,
                404,
                format!("Environment {} was not found", input.environment_key),
            ));
        }
        let installation = match (&input.installation_id, &input.context) {
            (Some(id), _) => self.installation(id),
            (None, Some(ctx)) => {
                let (site, product) = self.resolve_context(ctx)?;
                self.require_site_admin(caller, &site.cloud_id, "uninstall")?;
                self.find_installation(&input.app_id, &input.environment_key, &site.cloud_id, &product)
            }
            (None, None) => {
                return Err(PlatformError::bad_request("installationId or installationContext is required"));
            }
        }
        .filter(|i| i.app_id == input.app_id && i.environment_key == input.environment_key)
        .ok_or_else(|| PlatformError::new(et::INSTALLATION_NOT_FOUND, 404, "Installation not found"))?
        .clone();
        self.require_site_admin(caller, &installation.cloud_id, "uninstall")?;
        let task = Task {
            id: String::new(),
            kind: TaskKind::Uninstall,
            account_id: caller.to_string(),
            app_id: input.app_id.clone(),
            environment_key: input.environment_key.clone(),
            cloud_id: installation.cloud_id.clone(),
            product: installation.product.clone(),
            context: installation.context.clone(),
            installation_id: Some(installation.id.clone()),
            version_id: None,
            created_at: now,
            due_at: now,
            state: TaskState::Pending,
            errors: Vec::new(),
            preset_failure: None,
            compute_only: false,
        };
        Ok(self.new_task(task, now))
    }

    fn site_failing(&self, cloud_id: &str) -> bool {
        !self.failing_sites.is_empty()
            && self.site_by_cloud_id(cloud_id).is_some_and(|s| same_site(s, &self.failing_sites))
    }

    /// Moves tasks and rollouts forward to `now`. Answers whether anything changed.
    pub fn advance(&mut self, now: Millis) -> bool {
        let before = self.revision;
        let mut due: Vec<(Millis, String)> = Vec::new();
        let mut gone: Vec<String> = Vec::new();
        for id in &self.unfinished {
            match self.tasks.get(id) {
                Some(t) if !t.state.is_finished() => due.push((t.due_at, t.id.clone())),
                _ => gone.push(id.clone()),
            }
        }
        for id in gone {
            self.unfinished.remove(&id);
        }
        due.sort();
        for (_, id) in due {
            let Some(task) = self.tasks.get(&id) else { continue };
            if now >= task.due_at {
                self.finish_task(&id);
            } else if task.state == TaskState::Pending && now >= task.created_at + (task.due_at - task.created_at) / 3 {
                if let Some(t) = self.tasks.get_mut(&id) {
                    Arc::make_mut(t).state = TaskState::Running;
                }
                self.touch();
            }
        }
        self.advance_minors(now);
        self.advance_rollouts(now);
        if let Some(retention) = self.settings.rollout_retention_ms {
            let n = self.rollouts.len();
            self.rollouts.retain(|r| r.completed_at.is_none_or(|c| c + retention > now));
            if self.rollouts.len() != n {
                self.touch();
            }
        }
        self.revision != before
    }

    fn finish_task(&mut self, id: &str) {
        let Some(task) = self.tasks.get(id).map(|t| Task::clone(t)) else { return };
        let outcome = if let Some(f) = task.preset_failure.clone() {
            Err(f)
        } else if self.site_failing(&task.cloud_id) {
            Err(PlatformError::new(et::SITE_FAILURE, 500, "The site failed to process the request"))
        } else {
            self.apply_task(&task)
        };
        self.unfinished.remove(id);
        if let Some(t) = self.tasks.get_mut(id) {
            let t = Arc::make_mut(t);
            match outcome {
                Ok(installation_id) => {
                    t.state = TaskState::Complete;
                    if installation_id.is_some() {
                        t.installation_id = installation_id;
                    }
                }
                Err(e) => {
                    t.state = TaskState::Failed;
                    t.errors = vec![e];
                }
            }
        }
        self.touch();
    }

    fn apply_task(&mut self, task: &Task) -> Result<Option<String>, PlatformError> {
        match task.kind {
            TaskKind::Install => {
                if self.installed(&task.app_id, &task.environment_key, &task.cloud_id, &task.product) {
                    return Err(PlatformError::new(et::APP_ALREADY_INSTALLED, 409, "App is already installed"));
                }
                let version_id = task.version_id.clone().unwrap_or_default();
                if self.version(&version_id).is_none() {
                    return Err(PlatformError::new(et::APP_NOT_FOUND, 404, "The version no longer exists"));
                }
                let id = random_uuid();
                self.installations.push(Installation {
                    id: id.clone(),
                    app_id: task.app_id.clone(),
                    environment_key: task.environment_key.clone(),
                    cloud_id: task.cloud_id.clone(),
                    product: task.product.clone(),
                    context: task.context.clone(),
                    version_id,
                    created_at: task.due_at,
                    upgraded_by: Vec::new(),
                    ..Default::default()
                });
                Ok(Some(id))
            }
            TaskKind::Upgrade => {
                let target = task.version_id.clone().unwrap_or_default();
                let inst = task
                    .installation_id
                    .as_deref()
                    .and_then(|id| self.installations.get_mut(id))
                    .ok_or_else(|| PlatformError::new(et::INSTALLATION_NOT_FOUND, 404, "Installation not found"))?;
                inst.code_since = Some(task.due_at);
                if task.compute_only {
                    inst.compute_version_id = (inst.version_id != target).then_some(target);
                } else {
                    inst.version_id = target;
                    inst.compute_version_id = None;
                    inst.upgraded_by_admin = false;
                }
                Ok(None)
            }
            TaskKind::Uninstall => {
                let removed = task.installation_id.as_deref().map_or(0, |id| self.installations.remove(id));
                if removed == 0 {
                    return Err(PlatformError::new(et::INSTALLATION_NOT_FOUND, 404, "Installation not found"));
                }
                Ok(None)
            }
        }
    }

    /// Moves the installations whose pending minor is due; a pending minor that is no longer newer
    /// than the installed version of the same major (the installation moved meanwhile) is dropped.
    fn advance_minors(&mut self, now: Millis) {
        let mut due: Vec<(Seq, String)> = Vec::new();
        let mut stale: Vec<Seq> = Vec::new();
        for k in self.installations.with_pending_minor() {
            match self.installations.at(k).and_then(|i| i.pending_minor.as_ref()) {
                Some(p) if p.due_at <= now => due.push((k, p.version_id.clone())),
                Some(_) => {}
                None => stale.push(k),
            }
        }
        for k in stale {
            self.installations.set_pending_minor(k, None);
        }
        for (k, target) in due {
            let Some(installation) = self.installations.at(k) else { continue };
            let current = self.version(&installation.version_id).map(|(_, _, v)| v.triple());
            let pending = self.version(&target).map(|(_, _, v)| v.triple());
            let applies = matches!((current, pending), (Some(c), Some(p)) if c.0 == p.0 && c < p);
            let compute = self.compute_after_move(installation, &target);
            self.installations.set_pending_minor(k, None);
            if applies && let Some(i) = self.installations.at_mut(k) {
                i.version_id = target;
                i.compute_version_id = compute;
                i.code_since = Some(now);
                i.upgraded_by_admin = false;
            }
            self.touch();
        }
    }

    fn advance_rollouts(&mut self, now: Millis) {
        let now_us = now.saturating_mul(1000);
        let step = self.settings.rollout_step_us.max(0);
        for idx in 0..self.rollouts.len() {
            if self.rollouts[idx].status != RolloutStatus::Running {
                continue;
            }
            let mut changed = false;
            let mut last_step_us = None;
            while self.rollouts[idx].next_step_at_us <= now_us {
                let Some(inst_id) = self.rollouts[idx].pending.pop_front() else { break };
                let (source, target) =
                    (self.rollouts[idx].source_version_id.clone(), self.rollouts[idx].target_version_id.clone());
                let failing = self.installation(&inst_id).is_some_and(|i| self.site_failing(&i.cloud_id));
                let compute = self.installation(&inst_id).and_then(|i| self.compute_after_move(i, &target));
                let step_at_us = self.rollouts[idx].next_step_at_us;
                let ok = match self.installations.get_mut(&inst_id) {
                    Some(i) if i.version_id == target => true,
                    Some(i) if i.version_id == source && !failing => {
                        i.version_id = target;
                        i.compute_version_id = compute;
                        i.code_since = Some(step_at_us / 1000);
                        i.upgraded_by_admin = false;
                        i.upgraded_by.push(self.rollouts[idx].id.clone());
                        true
                    }
                    _ => false,
                };
                let r = &mut self.rollouts[idx];
                if ok {
                    r.completed += 1;
                } else {
                    r.failed += 1;
                }
                last_step_us = Some(r.next_step_at_us);
                r.next_step_at_us += step;
                changed = true;
            }
            let r = &mut self.rollouts[idx];
            if r.pending.is_empty() {
                r.status = RolloutStatus::Complete;
                r.completed_at = Some(last_step_us.map_or(now, |us| us / 1000).max(r.created_at));
                changed = true;
            }
            if changed {
                self.touch();
            }
        }
    }

    /// `upgradeableByRolloutFromVersion`: whether installations on `source` may be moved to
    /// `target` by a rollout.
    pub fn upgradeable(&self, source_id: &str, target_id: &str) -> Result<bool, PlatformError> {
        let (_, source_env, source) = self
            .version(source_id)
            .ok_or_else(|| PlatformError::new(et::APP_NOT_FOUND, 404, format!("Version {source_id} was not found")))?;
        let (_, target_env, target) = self
            .version(target_id)
            .ok_or_else(|| PlatformError::new(et::APP_NOT_FOUND, 404, format!("Version {target_id} was not found")))?;
        Ok(source_env.id == target_env.id && rollout_ineligibility(source, target).is_none())
    }

    fn running_rollouts(&self) -> impl Iterator<Item = &Rollout> {
        self.rollouts.iter().filter(|r| r.status == RolloutStatus::Running)
    }

    /// `createAppVersionRollout`.
    pub fn create_rollout(
        &mut self,
        caller: &str,
        source_id: &str,
        target_id: &str,
        limit: Option<i64>,
        now: Millis,
    ) -> Result<RolloutCreated, PlatformError> {
        let (app, env, source) = self
            .version(source_id)
            .ok_or_else(|| PlatformError::new(et::APP_NOT_FOUND, 404, format!("Version {source_id} was not found")))?;
        if app.owner != caller {
            return Err(PlatformError::new(
                et::PERMISSION_DENIED_ERROR,
                403,
                format!("You don't have permission to upgrade installations of app {}", app.id),
            ));
        }
        let target = env.version(target_id).ok_or_else(|| {
            PlatformError::new(et::APP_NOT_FOUND, 404, format!("Version {target_id} was not found in {}", env.key))
        })?;
        if let Some(reason) = rollout_ineligibility(source, target) {
            return Err(PlatformError::new(
                et::APP_ROLLOUT_NOT_ELIGIBLE,
                400,
                format!("Installations on {} cannot be upgraded to it by a rollout: {reason}", source.version),
            ));
        }
        if let Some(l) = limit
            && l <= 0
        {
            return Err(PlatformError::bad_request("limit must be positive"));
        }
        let (app_id, env_id, env_key) = (app.id.clone(), env.id.clone(), env.key.clone());
        if self.running_rollouts().any(|r| r.environment_id == env_id) {
            return Err(PlatformError::new(
                et::APP_ROLLOUT_RUNNING,
                409,
                "A rollout is already running for this app environment",
            ));
        }
        // Counted per calling account (the one that started the rollout), not per app owner.
        if self.running_rollouts().any(|r| r.created_by == caller) {
            return Err(PlatformError::new(
                et::TOO_MANY_APP_ROLLOUTS_RUNNING_FOR_ACCOUNT,
                429,
                "A rollout is already running for an app of this account",
            ));
        }
        if self.running_rollouts().count() >= self.settings.global_rollout_limit as usize {
            return Err(PlatformError::new(
                et::APP_ROLLOUTS_UNAVAILABLE,
                503,
                "Rollouts are unavailable right now, try again later",
            ));
        }
        let mut eligible: Vec<&Installation> = self
            .installations
            .of_app(&app_id)
            .filter(|i| i.environment_key == env_key && i.version_id == source_id)
            .collect();
        eligible.sort_by_key(|i| i.created_at);
        let upgrade_limit = match limit {
            Some(l) => (l.min(i64::from(self.settings.upgrade_limit))) as u32,
            None => self.settings.upgrade_limit,
        };
        let total = eligible.len() as u32;
        let taken: VecDeque<String> = eligible.iter().take(upgrade_limit as usize).map(|i| i.id.clone()).collect();
        let expected_remaining = total - taken.len() as u32;
        let id = random_uuid();
        self.rollouts.push(Rollout {
            id: id.clone(),
            app_id,
            environment_id: env_id,
            environment_key: env_key,
            source_version_id: source_id.to_string(),
            target_version_id: target_id.to_string(),
            created_at: now,
            completed_at: None,
            status: RolloutStatus::Running,
            upgrade_limit,
            created_by: caller.to_string(),
            cancelled_by: None,
            pending: taken,
            completed: 0,
            failed: 0,
            next_step_at_us: now * 1000 + self.settings.rollout_step_us.max(0),
        });
        self.touch();
        Ok(RolloutCreated { id, upgrade_limit, total_eligible: total, expected_remaining })
    }

    /// A rollout by id.
    pub fn rollout(&self, id: &str) -> Option<&Rollout> {
        self.rollouts.iter().find(|r| r.id == id)
    }

    /// `cancelAppVersionRollout`: only a RUNNING rollout; the installations not yet upgraded stay.
    pub fn cancel_rollout(&mut self, caller: &str, id: &str, now: Millis) -> Result<(), PlatformError> {
        let r = self
            .rollout(id)
            .ok_or_else(|| PlatformError::new(et::NOT_FOUND, 404, format!("Rollout {id} was not found")))?;
        if self.app(&r.app_id).is_none_or(|a| a.owner != caller) {
            return Err(PlatformError::new(et::PERMISSION_DENIED_ERROR, 403, "You don't have permission to cancel it"));
        }
        if r.status != RolloutStatus::Running {
            return Err(PlatformError::new(et::APP_ROLLOUT_NOT_RUNNING, 409, "The rollout is not running"));
        }
        if let Some(r) = self.rollouts.iter_mut().find(|r| r.id == id) {
            r.status = RolloutStatus::Cancelled;
            r.cancelled_by = Some(caller.to_string());
            r.completed_at = Some(now);
            r.pending.clear();
        }
        self.touch();
        Ok(())
    }

    /// Forgets finished (COMPLETE or CANCELLED) rollouts; answers how many.
    pub fn forget_finished_rollouts(&mut self) -> usize {
        let n = self.rollouts.len();
        self.rollouts.retain(|r| r.status == RolloutStatus::Running);
        let forgotten = n - self.rollouts.len();
        if forgotten > 0 {
            self.touch();
        }
        forgotten
    }

    fn require_distribution(&self) -> Result<(), PlatformError> {
        if self.settings.distribution {
            Ok(())
        } else {
            Err(PlatformError::new(
                et::UNSUPPORTED,
                403,
                "Distribution settings are not available for API-token authentication",
            ))
        }
    }

    /// `updateAppDetails(distributionStatus, name)`: sharing on (PUBLIC) or off (DEVELOPMENT), and
    /// the app's name (see [`Model::update_app_details`], which sets the app details too).
    pub fn set_distribution_status(
        &mut self,
        caller: &str,
        app_id: &str,
        status: Option<DistributionStatus>,
        name: Option<String>,
    ) -> Result<(), PlatformError> {
        let update = AppDetailsUpdate { distribution_status: status, name, ..AppDetailsUpdate::default() };
        self.update_app_details(caller, app_id, &update)
    }

    /// `updateAppDetails`: the app details given are stored (a blank one is cleared), and sharing
    /// turned on or off, all or nothing. Needs the distribution capability and the caller's
    /// ownership. Turning sharing on (PUBLIC) is refused (409) when the app is listed on the
    /// Marketplace (APP_LISTED_ON_MARKETPLACE), its production version requires a license
    /// (APP_LICENSED) or nothing is deployed to production (APP_NOT_DEPLOYED); and (400
    /// VALIDATION_ERROR) when `vendorName`, `privacyPolicy` or `termsOfService` would be missing
    /// afterwards (the same for a call that blanks one of them while the app is shared). A listed
    /// app cannot be made DEVELOPMENT (CONFLICT).
    pub fn update_app_details(
        &mut self,
        caller: &str,
        app_id: &str,
        update: &AppDetailsUpdate,
    ) -> Result<(), PlatformError> {
        self.require_distribution()?;
        self.owned_app(caller, app_id)?;
        self.apply_app_details(app_id, update)
    }

    /// [`Model::update_app_details`] as the app's owner, whether or not the distribution
    /// capability is on (what the developer console does).
    fn apply_app_details(&mut self, app_id: &str, update: &AppDetailsUpdate) -> Result<(), PlatformError> {
        let app = self.app(app_id).ok_or_else(|| PlatformError::app_not_found(app_id))?;
        if update.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
            return Err(PlatformError::new(et::VALIDATION_ERROR, 400, "name: must not be blank"));
        }
        match update.distribution_status {
            Some(DistributionStatus::Development) if app.listed_on_marketplace => {
                return Err(PlatformError::new(
                    et::CONFLICT,
                    409,
                    "A Marketplace-listed app cannot be made private (DEVELOPMENT)",
                ));
            }
            Some(DistributionStatus::Public) => {
                if let Some(e) = app.link_sharing_refusal(409) {
                    return Err(e);
                }
                if app.production_latest().is_none() {
                    return Err(PlatformError::new(
                        et::APP_NOT_DEPLOYED,
                        409,
                        "Nothing is deployed to the production environment, which an installation link installs: \
                         deploy the app to production first",
                    ));
                }
            }
            _ => {}
        }
        let merged = |given: &Option<String>, stored: &Option<String>| -> Option<String> {
            match given {
                Some(v) => Some(v.trim().to_string()).filter(|v| !v.is_empty()),
                None => stored.clone(),
            }
        };
        let vendor_name = merged(&update.vendor_name, &app.vendor_name);
        let privacy_policy = merged(&update.privacy_policy, &app.privacy_policy);
        let terms_of_service = merged(&update.terms_of_service, &app.terms_of_service);
        let contact_link = merged(&update.contact_link, &app.contact_link);
        let status = update.distribution_status.unwrap_or(app.distribution_status);
        let touches_required =
            update.vendor_name.is_some() || update.privacy_policy.is_some() || update.terms_of_service.is_some();
        if status == DistributionStatus::Public
            && (update.distribution_status == Some(DistributionStatus::Public) || touches_required)
        {
            let missing: Vec<&str> = [
                ("vendorName", &vendor_name),
                ("privacyPolicy", &privacy_policy),
                ("termsOfService", &terms_of_service),
            ]
            .into_iter()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k)
            .collect();
            if !missing.is_empty() {
                return Err(PlatformError::new(
                    et::VALIDATION_ERROR,
                    400,
                    format!("{}: required to share the app", missing.join(", ")),
                ));
            }
        }
        if let Some(app) = self.app_mut(app_id) {
            app.distribution_status = status;
            app.vendor_name = vendor_name;
            app.privacy_policy = privacy_policy;
            app.terms_of_service = terms_of_service;
            app.contact_link = contact_link;
            if let Some(n) = &update.name {
                app.name = n.trim().to_string();
            }
        }
        self.touch();
        Ok(())
    }

    /// `generateDistributionLink`: a new link (new signature) replacing the current one, which
    /// then admits no install, ever. Sharing must be on (APP_NOT_SHARED), and the app shareable
    /// by link (APP_LISTED_ON_MARKETPLACE, APP_LICENSED: 409).
    pub fn generate_link(
        &mut self,
        caller: &str,
        app_id: &str,
        products: &[String],
        now: Millis,
    ) -> Result<DistributionLink, PlatformError> {
        self.require_distribution()?;
        self.owned_app(caller, app_id)?;
        self.new_link(app_id, products, now)
    }

    /// [`Model::generate_link`] as the app's owner, whether or not the distribution capability is
    /// on (what the developer console does).
    fn new_link(&mut self, app_id: &str, products: &[String], now: Millis) -> Result<DistributionLink, PlatformError> {
        let app = self.app(app_id).ok_or_else(|| PlatformError::app_not_found(app_id))?;
        if let Some(e) = app.link_sharing_refusal(409) {
            return Err(e);
        }
        if app.distribution_status != DistributionStatus::Public {
            return Err(PlatformError::new(
                et::APP_NOT_SHARED,
                409,
                "Turn sharing on (distributionStatus PUBLIC) before generating an installation link",
            ));
        }
        if products.is_empty() {
            return Err(PlatformError::bad_request("at least one product is required"));
        }
        let mut normalized = Vec::new();
        for p in products {
            let p = normalize_product(p)?;
            if !normalized.contains(&p) {
                normalized.push(p);
            }
        }
        let link = DistributionLink { products: normalized, signature: random_signature(), created_at: now };
        if let Some(app) = self.app_mut(app_id)
            && let Some(old) = app.distribution_link.replace(link.clone())
        {
            app.retired_link_signatures.push(old.signature);
        }
        self.touch();
        Ok(link)
    }

    /// What the app's owner does in the developer console (admin `POST /admin/console`), whether
    /// or not the distribution capability is on: `stopSharing` (DEVELOPMENT), `startSharing`
    /// (PUBLIC, refused as [`Model::update_app_details`] refuses it: the details given here or
    /// stored before must be complete), `generateLink` (a new link for `products`, as
    /// [`Model::generate_link`]; the previous one never admits anyone again) and `saveDetails`
    /// (the app details given). The link stays while sharing is off and works again when it is on.
    /// Answers the app's sharing state.
    pub fn console(&mut self, req: &ConsoleRequest, now: Millis) -> Result<ConsoleOutcome, PlatformError> {
        self.app(&req.app_id).ok_or_else(|| PlatformError::app_not_found(&req.app_id))?;
        let details_given = req.vendor_name.is_some()
            || req.privacy_policy.is_some()
            || req.terms_of_service.is_some()
            || req.contact_link.is_some();
        if req.action != ConsoleAction::GenerateLink && !req.products.is_empty() {
            return Err(PlatformError::bad_request("products: only for the generateLink action"));
        }
        if details_given && !matches!(req.action, ConsoleAction::StartSharing | ConsoleAction::SaveDetails) {
            return Err(PlatformError::bad_request("app details: only for the startSharing and saveDetails actions"));
        }
        let details = |status| AppDetailsUpdate {
            distribution_status: status,
            name: None,
            vendor_name: req.vendor_name.clone(),
            privacy_policy: req.privacy_policy.clone(),
            terms_of_service: req.terms_of_service.clone(),
            contact_link: req.contact_link.clone(),
        };
        match req.action {
            ConsoleAction::StopSharing => {
                self.apply_app_details(&req.app_id, &details(Some(DistributionStatus::Development)))?
            }
            ConsoleAction::StartSharing => {
                self.apply_app_details(&req.app_id, &details(Some(DistributionStatus::Public)))?
            }
            ConsoleAction::SaveDetails => self.apply_app_details(&req.app_id, &details(None))?,
            ConsoleAction::GenerateLink => {
                self.new_link(&req.app_id, &req.products, now)?;
            }
        }
        self.sharing_of(&req.app_id)
    }

    /// The app is listed on (or submitted to) the Marketplace, or no longer (admin
    /// `POST /admin/marketplace`). Sharing stays as it is: a listed app's link admits nobody, and it
    /// can be neither shared again nor made private. Answers the app's sharing state.
    pub fn set_listed(&mut self, app_id: &str, listed: bool) -> Result<ConsoleOutcome, PlatformError> {
        let app = self.app_mut(app_id).ok_or_else(|| PlatformError::app_not_found(app_id))?;
        app.listed_on_marketplace = listed;
        self.touch();
        self.sharing_of(app_id)
    }

    /// The app's sharing state, as the developer console shows it.
    pub fn sharing_of(&self, app_id: &str) -> Result<ConsoleOutcome, PlatformError> {
        Ok(self.app(app_id).ok_or_else(|| PlatformError::app_not_found(app_id))?.sharing_outcome())
    }

    /// `getActiveDistributionLink`.
    pub fn active_link(&self, caller: &str, app_id: &str) -> Result<Option<DistributionLink>, PlatformError> {
        self.require_distribution()?;
        Ok(self.owned_app(caller, app_id)?.distribution_link.clone())
    }

    /// A customer's admin installs through an installation link, into its production environment
    /// (BAD_REQUEST for any other `environment`). Refused (403) when the app is listed on the
    /// Marketplace (APP_LISTED_ON_MARKETPLACE) or its production version requires a license
    /// (APP_LICENSED), when sharing is off (APP_NOT_SHARED), when the signature is not the current
    /// link's, the product is not one of the link's or the site lacks one of the link's products
    /// (DISTRIBUTION_LINK_INVALID), and when `admin` is not an admin of the product on the site
    /// (PERMISSION_DENIED): one of the site's product admins of it, or a developer account
    /// administering the site. Immediate.
    pub fn link_install(&mut self, req: &LinkInstallRequest, now: Millis) -> Result<LinkInstallOutcome, PlatformError> {
        if req.environment.as_deref().is_some_and(|e| e != PRODUCTION) {
            return Err(PlatformError::bad_request(format!(
                "environment {:?}: an installation link installs the production environment",
                req.environment.as_deref().unwrap_or_default()
            )));
        }
        let app = self.app(&req.app_id).ok_or_else(|| PlatformError::app_not_found(&req.app_id))?;
        if let Some(e) = app.link_sharing_refusal(403) {
            return Err(e);
        }
        if app.distribution_status != DistributionStatus::Public {
            return Err(PlatformError::new(et::APP_NOT_SHARED, 403, "The app is not shared"));
        }
        let link = app.distribution_link.as_ref().filter(|l| l.signature == req.signature).ok_or_else(|| {
            PlatformError::new(et::DISTRIBUTION_LINK_INVALID, 403, "The installation link is not valid any more")
        })?;
        let product = normalize_product(&req.product)?;
        if !link.products.contains(&product) {
            return Err(PlatformError::new(
                et::DISTRIBUTION_LINK_INVALID,
                403,
                format!("The installation link does not cover {product}"),
            ));
        }
        let env = app.environment(PRODUCTION).ok_or_else(|| {
            PlatformError::new(et::APP_NOT_FOUND, 404, format!("Environment {PRODUCTION} was not found"))
        })?;
        let version =
            env.latest().ok_or_else(|| PlatformError::new(et::APP_NOT_FOUND, 404, "Nothing is deployed"))?.clone();
        let site = self
            .site_by_host(&req.site)
            .ok_or_else(|| PlatformError::new(et::NOT_FOUND, 404, format!("Site {} was not found", req.site)))?;
        let missing: Vec<&str> =
            link.products.iter().filter(|p| !site.products.contains_key(p.as_str())).map(String::as_str).collect();
        if !missing.is_empty() {
            return Err(PlatformError::new(
                et::DISTRIBUTION_LINK_INVALID,
                403,
                format!(
                    "The installation link is for {}: {} has no {}",
                    link.products.join(", "),
                    site.host_name,
                    missing.join(", ")
                ),
            ));
        }
        let admin = req.admin.trim();
        if admin.is_empty() {
            return Err(PlatformError::bad_request("admin: the person following the link is required"));
        }
        if !self.product_admin(site, &product, admin) {
            return Err(PlatformError::new(
                et::PERMISSION_DENIED,
                403,
                format!("{admin} is not an admin of {product} on {}", site.host_name),
            ));
        }
        let context = site
            .context(&product)
            .ok_or_else(|| PlatformError::bad_request(format!("{} has no {product}", site.host_name)))?;
        let cloud_id = site.cloud_id.clone();
        Self::require_supported(&version, &product)?;
        self.require_required_installed(&req.app_id, PRODUCTION, &cloud_id, &version, &product)?;
        if self.installed(&req.app_id, PRODUCTION, &cloud_id, &product) {
            return Err(PlatformError::new(et::APP_ALREADY_INSTALLED, 409, "App is already installed on this site"));
        }
        if let Some(limit) = site.app_limit
            && self.installations.seqs_on_site(&cloud_id).len() >= limit as usize
        {
            return Err(PlatformError::new(et::INSTALLATION_LIMIT_REACHED, 400, "The site has too many apps"));
        }
        let id = random_uuid();
        self.installations.push(Installation {
            id: id.clone(),
            app_id: req.app_id.clone(),
            environment_key: PRODUCTION.to_string(),
            cloud_id,
            product,
            context: context.clone(),
            version_id: version.id.clone(),
            created_at: now,
            upgraded_by: Vec::new(),
            ..Default::default()
        });
        self.touch();
        Ok(LinkInstallOutcome { installation_id: id, installation_context: context, version: version.version })
    }

    /// Whether `who` (an e-mail or account id) is an admin of `product` on the site: one of its
    /// product admins of it, or a developer account administering the site (an admin of every
    /// product there).
    pub fn product_admin(&self, site: &Site, product: &str, who: &str) -> bool {
        let account = self.resolve_account(who);
        if account.as_deref().is_some_and(|a| site.administered_by(a)) {
            return true;
        }
        site.product_admins.get(product).is_some_and(|admins| {
            admins
                .iter()
                .any(|a| a.eq_ignore_ascii_case(who) || account.is_some() && self.resolve_account(a) == account)
        })
    }

    /// A customer's site admin moves their installation to a newer version (the latest unless
    /// given), of any major: the admin consents. Immediate. Refused unless the app environment is
    /// installed on the site's product and the version is newer than the installed one.
    pub fn site_admin_upgrade(
        &mut self,
        req: &SiteUpgradeRequest,
        now: Millis,
    ) -> Result<SiteUpgradeOutcome, PlatformError> {
        let app = self.app(&req.app_id).ok_or_else(|| PlatformError::app_not_found(&req.app_id))?;
        let env = app.environment(&req.environment).ok_or_else(|| {
            PlatformError::new(et::APP_NOT_FOUND, 404, format!("Environment {} was not found", req.environment))
        })?;
        let target = match &req.version {
            None => env.latest(),
            Some(v) => {
                let v = normalize_version(v).ok_or_else(|| PlatformError::bad_request(format!("bad version {v:?}")))?;
                env.versions.iter().find(|x| x.version == v)
            }
        }
        .ok_or_else(|| {
            PlatformError::new(
                et::APP_NOT_FOUND,
                404,
                format!("Version {:?} was not found in {}", req.version, env.key),
            )
        })?
        .clone();
        let product = normalize_product(&req.product)?;
        let site = self
            .site_by_host(&req.site)
            .ok_or_else(|| PlatformError::new(et::NOT_FOUND, 404, format!("Site {} was not found", req.site)))?;
        let cloud_id = site.cloud_id.clone();
        let installation =
            self.find_installation(&req.app_id, &req.environment, &cloud_id, &product).ok_or_else(|| {
                PlatformError::new(et::INSTALLATION_NOT_FOUND, 404, "The app is not installed on this site")
            })?;
        let current = self.version(&installation.version_id).map(|(_, _, v)| v.clone());
        if current.as_ref().is_some_and(|c| c.triple() >= target.triple()) {
            return Err(PlatformError::new(
                et::INSTALLATION_ALREADY_UPGRADED,
                409,
                format!(
                    "The installation is on {}, not older than {}",
                    current.map(|c| c.version).unwrap_or_default(),
                    target.version
                ),
            ));
        }
        Self::require_supported(&target, &product)?;
        let id = installation.id.clone();
        let compute = self.compute_after_move(installation, &target.id);
        if let Some(i) = self.installations.get_mut(&id) {
            i.version_id = target.id.clone();
            i.compute_version_id = compute;
            i.code_since = Some(now);
            i.upgraded_by_admin = true;
        }
        self.touch();
        Ok(SiteUpgradeOutcome { installation_id: id, version: target.version })
    }

    /// Adds an app (as a seed describes it): what `forge register` and `forge deploy` stand in for.
    pub fn add_app(&mut self, a: &SeedApp, now: Millis) -> Result<(), PlatformError> {
        let owner = self
            .accounts
            .iter()
            .find(|acc| acc.email.eq_ignore_ascii_case(&a.owner) || acc.account_id == a.owner)
            .map(|acc| acc.account_id.clone())
            .ok_or_else(|| PlatformError::bad_request(format!("app {}: unknown owner {}", a.id, a.owner)))?;
        let uuid = app_uuid(&a.id).ok_or_else(|| {
            PlatformError::bad_request(format!("app id {} is not ari:cloud:ecosystem::app/<uuid>", a.id))
        })?;
        if self.app(&a.id).is_some() {
            return Err(PlatformError::new(et::CONFLICT, 409, format!("app {} exists (appears twice)", a.id)));
        }
        let mut app = App {
            id: a.id.clone(),
            name: a.name.clone().unwrap_or_else(|| uuid.to_string()),
            owner,
            created_at: now,
            distribution_status: a.distribution_status,
            listed_on_marketplace: a.listed_on_marketplace,
            distribution_link: None,
            retired_link_signatures: Vec::new(),
            vendor_name: detail(&a.vendor_name),
            privacy_policy: detail(&a.privacy_policy),
            terms_of_service: detail(&a.terms_of_service),
            contact_link: detail(&a.contact_link),
            environments: Vec::new(),
        };
        if let Some(link) = &a.distribution_link {
            let products = link.products.iter().map(|p| normalize_product(p)).collect::<Result<Vec<_>, _>>()?;
            app.distribution_link =
                Some(DistributionLink { products, signature: link.signature.clone(), created_at: now });
        }
        for e in &a.environments {
            // An environment declared without versions is a new one: it has its skeleton. One
            // declared with versions has exactly those (the seed describes its whole history).
            let env_type = e.env_type.unwrap_or_else(|| EnvironmentType::for_key(&e.key));
            let mut env = Environment::new(&a.id, e.id.clone(), &e.key, env_type, now);
            if e.versions.is_empty() {
                app.environments.push(env);
                continue;
            }
            let mut versions = Vec::new();
            for v in &e.versions {
                let version = normalize_version(&v.version).ok_or_else(|| {
                    PlatformError::bad_request(format!("app {} {}: bad version {:?}", a.id, e.key, v.version))
                })?;
                versions.push(Version {
                    id: v.id.clone().unwrap_or_else(|| stable_uuid(&format!("{}/{}/{version}", a.id, e.key))),
                    version,
                    created_at: v.created_at.unwrap_or(0),
                    scopes: v.scopes.clone(),
                    egress: v.egress.iter().cloned().map(|x| x.into_egress()).collect(),
                    requires_license: v.requires_license,
                    required_products: v
                        .required_products
                        .iter()
                        .map(|p| normalize_product(p))
                        .collect::<Result<_, _>>()?,
                    modules: normalize_modules(&v.modules)?,
                    remotes: normalize_remotes(&v.remotes)?,
                    security_policies: normalize_security_policies(&v.security_policies)?,
                });
            }
            versions.sort_by_key(|v| v.triple());
            let n = versions.len() as i64;
            for (i, v) in versions.iter_mut().enumerate() {
                if v.created_at == 0 {
                    // Older versions a little earlier, in order.
                    v.created_at = now - (n - i as i64) * 60_000;
                }
            }
            for w in versions.windows(2) {
                if w[0].version == w[1].version {
                    return Err(PlatformError::bad_request(format!(
                        "{} {}: version {} twice",
                        a.id, e.key, w[0].version
                    )));
                }
            }
            env.versions = versions;
            app.environments.push(env);
        }
        self.apps.push(app);
        self.touch();
        Ok(())
    }

    /// Deploys a new version (the latest unless it is a minor of an older major). A minor of an
    /// existing major may not add or remove scopes or egress, put egress in scope of end-user
    /// data, add a remote (or change a remote's base URL) or a content security policy option, or
    /// change licensing (the real platform makes such a deployment a new major; removing a remote
    /// or a content security policy option needs no consent, so a minor may).
    /// Installations on an older version of the same major are moved to it without consent,
    /// progressively: each at a time spread evenly over [`Settings::minor_rollout_ms`] from now
    /// (a later minor replaces a pending one), or at once when that is 0. Permissions and code move
    /// together, unless a code-only upgrade runs newer code already, which stays.
    pub fn deploy(&mut self, req: &DeployRequest, now: Millis) -> Result<DeployOutcome, PlatformError> {
        let version = normalize_version(&req.version)
            .ok_or_else(|| PlatformError::bad_request(format!("bad version {:?}", req.version)))?;
        let app = self.app(&req.app_id).ok_or_else(|| PlatformError::app_not_found(&req.app_id))?;
        let required_products =
            req.required_products.iter().map(|p| normalize_product(p)).collect::<Result<Vec<_>, _>>()?;
        let new = Version {
            id: stable_uuid(&format!("{}/{}/{version}", req.app_id, req.environment)),
            version: version.clone(),
            created_at: now,
            scopes: req.scopes.clone(),
            egress: req.egress.iter().cloned().map(|e| e.into_egress()).collect(),
            requires_license: req.requires_license,
            required_products,
            modules: normalize_modules(&req.modules)?,
            remotes: normalize_remotes(&req.remotes)?,
            security_policies: normalize_security_policies(&req.security_policies)?,
        };
        // A deploy into a new environment creates it with its skeleton, as `forge deploy -e` does:
        // what is deployed is checked against that skeleton too.
        let fresh =
            Environment::new(&req.app_id, None, &req.environment, EnvironmentType::for_key(&req.environment), now);
        let existing = app.environment(&req.environment);
        let created = existing.is_none();
        {
            let env = existing.unwrap_or(&fresh);
            // As with `forge deploy`, a major's versions only go up; an older major may still get a
            // new minor (the platform keeps every major usable).
            if let Some(newest) = env.versions.iter().filter(|v| v.major() == new.major()).max_by_key(|v| v.triple())
                && newest.triple() >= new.triple()
            {
                return Err(PlatformError::new(
                    et::CONFLICT,
                    409,
                    format!("version {version} is not newer than {} of the same major", newest.version),
                ));
            }
            if let Some(prev) = env.versions.iter().filter(|v| v.major() == new.major()).max_by_key(|v| v.triple()) {
                let mut as_minor = new.clone();
                as_minor.version = format!("{}.{}.{}", new.major() + 1, 0, 0);
                if let Some(reason) = rollout_ineligibility(prev, &as_minor).or_else(|| minor_removal(prev, &new)) {
                    return Err(PlatformError::bad_request(format!(
                        "{version} cannot be a minor of {}: {reason}; deploy it as a new major",
                        prev.version
                    )));
                }
            }
        }
        let (app_id, env_key) = (req.app_id.clone(), req.environment.clone());
        let Some(app) = self.app_mut(&app_id) else { return Err(PlatformError::app_not_found(&app_id)) };
        if created {
            app.environments.push(fresh);
        }
        let Some(env) = app.environment_mut(&env_key) else { return Err(PlatformError::app_not_found(&app_id)) };
        let same_major: Vec<String> =
            env.versions.iter().filter(|v| v.major() == new.major()).map(|v| v.id.clone()).collect();
        env.versions.push(new.clone());
        env.versions.sort_by_key(|v| v.triple());
        let window = self.settings.minor_rollout_ms.max(0);
        let (mut upgraded, mut scheduled) = (Vec::new(), Vec::new());
        let reached: Vec<Seq> = self
            .installations
            .seqs_of_app(&app_id)
            .filter(|&k| {
                self.installations
                    .at(k)
                    .is_some_and(|i| i.environment_key == env_key && same_major.contains(&i.version_id))
            })
            .collect();
        let n = reached.len() as i64;
        for (k, idx) in reached.into_iter().enumerate() {
            let Some(installation) = self.installations.at(idx) else { continue };
            let compute = self.compute_after_move(installation, &new.id);
            if window == 0 {
                self.installations.set_pending_minor(idx, None);
                if let Some(i) = self.installations.at_mut(idx) {
                    i.version_id = new.id.clone();
                    i.compute_version_id = compute;
                    i.code_since = Some(now);
                    i.upgraded_by_admin = false;
                    upgraded.push(i.id.clone());
                }
            } else {
                let due_at = now + window * (k as i64 + 1) / n;
                self.installations.set_pending_minor(idx, Some(PendingMinor { version_id: new.id.clone(), due_at }));
                if let Some(i) = self.installations.at(idx) {
                    scheduled.push(i.id.clone());
                }
            }
        }
        self.touch();
        Ok(DeployOutcome {
            version_id: new.id,
            version,
            upgraded_installations: upgraded,
            scheduled_installations: scheduled,
        })
    }

    /// Applies a batch (admin `POST /admin/batch`): its sites, then its installations, then its
    /// link installs, each refused as on its own. All or nothing: on a refusal nothing of the
    /// batch stays, and the error names the entry (`sites[3]: ...`) with that entry's error type
    /// and status.
    pub fn batch(&mut self, req: &BatchRequest, now: Millis) -> Result<BatchOutcome, PlatformError> {
        let (sites, installations, revision) = (self.sites.len(), self.installations.mark(), self.revision);
        let result = self.apply_batch(req, now);
        if result.is_err() {
            self.installations.remove_since(installations);
            self.sites.truncate(sites);
            self.revision = revision;
        }
        result
    }

    fn apply_batch(&mut self, req: &BatchRequest, now: Millis) -> Result<BatchOutcome, PlatformError> {
        fn at(what: &'static str, k: usize) -> impl Fn(PlatformError) -> PlatformError {
            move |e| PlatformError { message: format!("{what}[{k}]: {}", e.message), ..e }
        }
        for (k, site) in req.sites.iter().enumerate() {
            self.add_site(site.clone()).map_err(at("sites", k))?;
        }
        for (k, i) in req.installations.iter().enumerate() {
            self.seed_installation(i, now).map_err(at("installations", k))?;
        }
        for (k, l) in req.link_installs.iter().enumerate() {
            self.link_install(l, now).map_err(at("linkInstalls", k))?;
        }
        Ok(BatchOutcome {
            sites: req.sites.len(),
            installations: req.installations.len(),
            link_installs: req.link_installs.len(),
        })
    }

    /// Adds a site (or answers the existing one with that host name unchanged).
    pub fn add_site(&mut self, s: SeedSite) -> Result<SiteInfo, PlatformError> {
        let host = s.host_name.trim().to_ascii_lowercase();
        if host.is_empty() || host.contains('/') {
            return Err(PlatformError::bad_request(format!("bad host name {:?}", s.host_name)));
        }
        if let Some(existing) = self.site_by_host(&host) {
            return Err(PlatformError::new(et::CONFLICT, 409, format!("site {} exists", existing.host_name)));
        }
        let cloud_id = s.cloud_id.clone().unwrap_or_else(|| stable_uuid(&format!("site/{host}")));
        if self.site_by_cloud_id(&cloud_id).is_some() {
            return Err(PlatformError::new(et::CONFLICT, 409, format!("cloud id {cloud_id} exists")));
        }
        let mut products = BTreeMap::new();
        for p in &s.products {
            let p = normalize_product(p)?;
            let activation =
                s.activation_ids.get(&p).cloned().unwrap_or_else(|| stable_uuid(&format!("activation/{host}/{p}")));
            products.insert(p, activation);
        }
        let mut admins = Vec::new();
        for a in &s.admins {
            let id = self
                .resolve_account(a)
                .ok_or_else(|| PlatformError::bad_request(format!("site {host}: admin {a} is not a known account")))?;
            if !admins.contains(&id) {
                admins.push(id);
            }
        }
        let mut product_admins: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (p, people) in &s.product_admins {
            let p = normalize_product(p)?;
            if !products.contains_key(&p) {
                return Err(PlatformError::bad_request(format!("site {host}: productAdmins of {p}, which it lacks")));
            }
            let entry = product_admins.entry(p.clone()).or_default();
            for who in people {
                let who = who.trim();
                if who.is_empty() {
                    return Err(PlatformError::bad_request(format!("site {host}: a blank product admin of {p}")));
                }
                if !entry.iter().any(|x| x.eq_ignore_ascii_case(who)) {
                    entry.push(who.to_string());
                }
            }
        }
        let site = Site { host_name: host, cloud_id, products, app_limit: s.app_limit, admins, product_admins };
        let info = site.info();
        self.sites.push(site);
        self.touch();
        Ok(info)
    }

    /// Installations matching the filter (in creation order). Every app must be the caller's.
    pub fn installations_by_app(
        &self,
        caller: &str,
        filter: &InstallationFilter,
    ) -> Result<Vec<&Installation>, PlatformError> {
        let mut env_types: BTreeMap<(&str, &str), EnvironmentType> = BTreeMap::new();
        for id in &filter.app_ids {
            let app = self.owned_app(caller, id)?;
            for e in &app.environments {
                env_types.insert((app.id.as_str(), e.key.as_str()), e.env_type);
            }
        }
        let contexts: Option<Vec<(String, String)>> = filter.contexts.as_ref().map(|cs| {
            cs.iter().filter_map(|c| self.resolve_context(c).ok().map(|(s, p)| (s.cloud_id.clone(), p))).collect()
        });
        // The candidates, from the narrowest index the filter allows (the filters below decide).
        let mut seqs: Vec<Seq> = match (&filter.ids, &contexts, &filter.contexts) {
            (Some(ids), _, _) => ids.iter().flat_map(|id| self.installations.seqs_of_id(id)).copied().collect(),
            (None, Some(resolved), Some(raw)) => resolved
                .iter()
                .flat_map(|(cloud_id, _)| self.installations.seqs_on_site(cloud_id))
                .chain(raw.iter().flat_map(|c| self.installations.seqs_with_context(c)))
                .copied()
                .collect(),
            _ => filter.app_ids.iter().flat_map(|a| self.installations.seqs_of_app(a)).collect(),
        };
        seqs.sort_unstable();
        seqs.dedup();
        Ok(seqs
            .into_iter()
            .filter_map(|k| self.installations.at(k))
            .filter(|i| filter.app_ids.contains(&i.app_id))
            .filter(|i| {
                filter.environment_types.as_ref().is_none_or(|types| {
                    env_types.get(&(i.app_id.as_str(), i.environment_key.as_str())).is_some_and(|t| types.contains(t))
                })
            })
            .filter(|i| {
                contexts.as_ref().is_none_or(|cs| {
                    cs.iter().any(|(c, p)| c == &i.cloud_id && p == &i.product)
                        || filter.contexts.as_ref().is_some_and(|raw| raw.contains(&i.context))
                })
            })
            .filter(|i| filter.ids.as_ref().is_none_or(|ids| ids.contains(&i.id)))
            .collect())
    }
}

/// An app detail as a seed gives it: trimmed, blank is none.
fn detail(v: &Option<String>) -> Option<String> {
    v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_string)
}

fn app_uuid(id: &str) -> Option<&str> {
    id.strip_prefix("ari:cloud:ecosystem::app/").filter(|u| !u.is_empty())
}

fn account_of(a: &SeedAccount) -> Account {
    Account {
        email: a.email.clone(),
        api_tokens: vec![a.api_token.clone()],
        account_id: a.account_id.clone().unwrap_or_else(|| format!("712020:{}", stable_uuid(&a.email))),
        name: a.name.clone().unwrap_or_else(|| a.email.split('@').next().unwrap_or_default().to_string()),
        status: a.status.unwrap_or_default(),
    }
}

fn accounts_from_seed(seed: &Seed) -> Vec<Account> {
    seed.accounts.iter().map(account_of).collect()
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
