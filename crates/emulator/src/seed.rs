//! The emulator's initial content (a [`Seed`]) and the inputs of its admin operations.
//!
//! A seed is read from YAML or JSON (camelCase keys). Everything that has an identifier on the
//! real platform (account ids, environment ids, version ids, cloud ids, activation ids) may be
//! given; when left out it is derived from the names, so the same seed always yields the same
//! identifiers (a restarted emulator answers with the same version ids).
//!
//! ```yaml
//! accounts:
//!   - email: platform-team@acme.example
//!     apiToken: local-dev-token          # Basic auth: base64(email:apiToken)
//!     name: Platform Team                # optional (default: the part before @)
//!     accountId: 712020:...              # optional (default: derived from the email)
//!     status: active                     # optional: active | inactive | closed
//! apps:
//!   - id: ari:cloud:ecosystem::app/6f1c2d3e-0000-4000-8000-000000000001
//!     name: issue-tracker-insights
//!     owner: platform-team@acme.example  # an account's email or account id
//!     distributionStatus: DEVELOPMENT    # DEVELOPMENT (sharing off) | PUBLIC (sharing on)
//!     listedOnMarketplace: false         # listed on (or submitted to) the Marketplace: never shared by link
//!     distributionLink: {products: [jira], signature: abc}   # optional: the current link
//!     vendorName: Acme                   # optional app details; sharing (PUBLIC) needs vendorName,
//!     privacyPolicy: https://acme.example/privacy          # privacyPolicy and termsOfService
//!     termsOfService: https://acme.example/terms
//!     contactLink: https://acme.example/support           # optional
//!     environments:
//!       - key: production                # type defaults from the key (PRODUCTION, STAGING, else DEVELOPMENT)
//!         versions:
//!           - version: 1.0.0             # "1.0" is read as 1.0.0
//!             scopes: [read:jira-work]
//!             egress: [api.example.com]  # or {type: FETCH_BACKEND_SIDE, addresses: [..], category: ANALYTICS, inScopeEUD: false}
//!             requiresLicense: false
//!             requiredProducts: [jira]       # a cross-product app (empty: a single-product app)
//!             modules: [jira:issuePanel, sql]   # extension type keys; a single-product app installs
//!                                        # only into its modules' products (the part before `:`)
//!             remotes: [{key: api-backend, baseUrl: "https://api.example.com"}]   # storage.remotes
//!             securityPolicies: [{type: scripts, policies: [unsafe-inline]}]     # permissions.content
//!                                        # (type: scripts | styles, or SCRIPTS | STYLES)
//! sites:
//!   - hostName: acme.atlassian.net
//!     products: [jira, confluence]       # activation ids derived unless given in activationIds
//!     appLimit: 100                      # optional: INSTALLATION_LIMIT_REACHED beyond this many installations
//!     admins: [platform-team@acme.example]   # optional: accounts (emails or account ids) administering the site;
//!                                        # only they install/upgrade/uninstall there (else PERMISSION_DENIED).
//!                                        # Default []: a customer's site, reached through an installation link only
//!     productAdmins: {jira: [admin@acme.example]}   # optional: the customer's admins of each product (e-mails
//!                                        # or account ids): only they (or an account of `admins`) install
//!                                        # through an installation link
//! installations:
//!   - appId: ari:cloud:ecosystem::app/6f1c2d3e-0000-4000-8000-000000000001
//!     environment: production
//!     site: acme.atlassian.net
//!     product: jira
//!     version: 1.1.0                     # optional (default: the latest)
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::model::{AccountStatus, DistributionStatus, Egress, EgressType, EnvironmentType, Remote, SecurityPolicy};

/// The platform's initial content: accounts, apps (with environments and versions), sites and
/// installations.
#[derive(Deserialize, Serialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Seed {
    /// Developer accounts that can authenticate with an API token.
    pub accounts: Vec<SeedAccount>,
    /// Forge apps, each owned by one account.
    pub apps: Vec<SeedApp>,
    /// Atlassian sites and the products active on them.
    pub sites: Vec<SeedSite>,
    /// Installations present at start.
    pub installations: Vec<SeedInstallation>,
}

impl Seed {
    /// Reads a seed from YAML (JSON is accepted too, as it is YAML).
    pub fn from_yaml_str(text: &str) -> anyhow::Result<Seed> {
        Ok(serde_yaml_ng::from_str(text)?)
    }

    /// Reads a seed file (YAML or JSON).
    pub fn load(path: &Path) -> anyhow::Result<Seed> {
        let text =
            std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading seed {}: {e}", path.display()))?;
        Seed::from_yaml_str(&text).map_err(|e| anyhow::anyhow!("parsing seed {}: {e}", path.display()))
    }
}

/// A developer account.
#[derive(Deserialize, Serialize, Clone, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedAccount {
    /// The login email (the user part of Basic auth).
    pub email: String,
    /// The API token (the password part of Basic auth). Never logged.
    pub api_token: String,
    /// The Atlassian account id; derived from the email when absent.
    #[serde(default)]
    pub account_id: Option<String>,
    /// The display name; the part of the email before `@` when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// `active` (default), `inactive` or `closed`; the CLI refuses to work unless `active`.
    #[serde(default)]
    pub status: Option<AccountStatus>,
}

/// A Forge app.
#[derive(Deserialize, Serialize, Clone, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedApp {
    /// `ari:cloud:ecosystem::app/<uuid>`.
    pub id: String,
    /// The app's name (default: the uuid).
    #[serde(default)]
    pub name: Option<String>,
    /// The owner: an account's email or account id.
    pub owner: String,
    /// `DEVELOPMENT` (sharing off, the default) or `PUBLIC` (sharing on).
    #[serde(default)]
    pub distribution_status: DistributionStatus,
    /// Listed on (or submitted to) the Atlassian Marketplace: such an app can be neither shared by
    /// link (its link admits nobody) nor made private.
    #[serde(default)]
    pub listed_on_marketplace: bool,
    /// The current installation link, if one was generated.
    #[serde(default)]
    pub distribution_link: Option<SeedLink>,
    /// App details: the vendor's name (required to share the app).
    #[serde(default)]
    pub vendor_name: Option<String>,
    /// App details: the privacy policy's URL (required to share the app).
    #[serde(default)]
    pub privacy_policy: Option<String>,
    /// App details: the terms of service's URL (required to share the app).
    #[serde(default)]
    pub terms_of_service: Option<String>,
    /// App details: a contact link (optional).
    #[serde(default)]
    pub contact_link: Option<String>,
    /// The app's environments.
    #[serde(default)]
    pub environments: Vec<SeedEnvironment>,
}

/// An installation (distribution) link.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedLink {
    /// Products the link installs into (`jira`, `confluence`, `compass`).
    pub products: Vec<String>,
    /// The link's signature (the `signature=` query parameter of the real link).
    pub signature: String,
}

/// An app environment.
#[derive(Deserialize, Serialize, Clone, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedEnvironment {
    /// `production`, `staging`, `development` or a custom key.
    pub key: String,
    /// `PRODUCTION`, `STAGING` or `DEVELOPMENT`; derived from the key when absent.
    #[serde(default, rename = "type")]
    pub env_type: Option<EnvironmentType>,
    /// The environment id (uuid); derived when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// Versions deployed to this environment (any order; the highest is the latest): its whole
    /// history. None: a new environment, which has only its skeleton 1.1.0, as on the platform.
    #[serde(default)]
    pub versions: Vec<SeedVersion>,
}

/// A deployed version of an app environment.
#[derive(Deserialize, Serialize, Clone, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedVersion {
    /// `major.minor.patch` (`1.0` is read as `1.0.0`).
    pub version: String,
    /// The version id (uuid); derived when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// OAuth scopes (`read:jira-work`, ...).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Egress permissions: plain addresses (backend fetch) or full permissions.
    #[serde(default)]
    pub egress: Vec<SeedEgress>,
    /// Whether the version requires a license (paid apps).
    #[serde(default)]
    pub requires_license: bool,
    /// Products required by the version (`jira`, `confluence`, `compass`).
    #[serde(default)]
    pub required_products: Vec<String>,
    /// The version's modules, by extension type key (`confluence:contentBylineItem`, `sql`, ...).
    /// Without required products they decide the products it installs into.
    #[serde(default)]
    pub modules: Vec<String>,
    /// The version's remotes (`{key, baseUrl}`, an `https://` base URL).
    #[serde(default)]
    pub remotes: Vec<Remote>,
    /// Its content security policies (`{type: scripts | styles, policies: [...]}`).
    #[serde(default)]
    pub security_policies: Vec<SecurityPolicy>,
    /// Creation time, epoch milliseconds (default: the emulator's start, in version order).
    #[serde(default)]
    pub created_at: Option<i64>,
}

/// An egress permission as written in a seed or a deploy request.
#[derive(Deserialize, Serialize, Clone, Debug)]
#[serde(untagged)]
pub enum SeedEgress {
    /// A plain address, read as a backend fetch permission.
    Address(String),
    /// A full permission.
    Permission(Egress),
}

impl SeedEgress {
    pub(crate) fn into_egress(self) -> Egress {
        match self {
            SeedEgress::Address(a) => {
                Egress { kind: EgressType::FetchBackendSide, addresses: vec![a], category: None, in_scope_eud: false }
            }
            SeedEgress::Permission(e) => e,
        }
    }
}

/// An Atlassian site.
#[derive(Deserialize, Serialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedSite {
    /// `acme.atlassian.net`.
    pub host_name: String,
    /// The site's cloud id (uuid); derived from the host name when absent.
    #[serde(default)]
    pub cloud_id: Option<String>,
    /// Products active on the site (`jira`, `confluence`, `compass`).
    #[serde(default)]
    pub products: Vec<String>,
    /// Activation ids by product; derived when absent.
    #[serde(default)]
    pub activation_ids: BTreeMap<String, String>,
    /// At most this many installations on the site (any app); beyond: INSTALLATION_LIMIT_REACHED.
    #[serde(default)]
    pub app_limit: Option<u32>,
    /// The developer accounts (emails or account ids) that administer the site: only they may
    /// install, upgrade or uninstall apps there through the gateway (else PERMISSION_DENIED).
    /// Empty (the default): a customer's site, reached through an installation link only.
    #[serde(default)]
    pub admins: Vec<String>,
    /// The customer's admins of each product of the site (product to e-mails or account ids):
    /// who may install it through an installation link (besides the accounts of `admins`, which
    /// administer every product). Only products of the site.
    #[serde(default)]
    pub product_admins: BTreeMap<String, Vec<String>>,
}

/// An installation present at start.
#[derive(Deserialize, Serialize, Clone, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedInstallation {
    /// The installation id (uuid); derived when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// The app's ARI.
    pub app_id: String,
    /// The environment key (default `production`).
    #[serde(default = "production")]
    pub environment: String,
    /// The site's host name.
    pub site: String,
    /// The product (`jira`, `confluence`, `compass`).
    pub product: String,
    /// The installed version string (default: the latest).
    #[serde(default)]
    pub version: Option<String>,
}

pub(crate) fn production() -> String {
    "production".to_string()
}

/// A new version of an app environment (admin `POST /admin/deploy`).
#[derive(Deserialize, Serialize, Clone, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeployRequest {
    /// The app's ARI.
    pub app_id: String,
    /// The environment key (default `production`; created if missing).
    #[serde(default = "production")]
    pub environment: String,
    /// `major.minor.patch`, higher than every version of the same major in the environment.
    pub version: String,
    /// OAuth scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Egress permissions.
    #[serde(default)]
    pub egress: Vec<SeedEgress>,
    /// Whether the version requires a license.
    #[serde(default)]
    pub requires_license: bool,
    /// Required products.
    #[serde(default)]
    pub required_products: Vec<String>,
    /// The version's modules, by extension type key (`jira:issuePanel`, `sql`, ...). Without
    /// required products they decide the products it installs into.
    #[serde(default)]
    pub modules: Vec<String>,
    /// The version's remotes (`{key, baseUrl}`). A remote the newest version of the same major
    /// lacks (or a new base URL for a key) makes a minor a new major.
    #[serde(default)]
    pub remotes: Vec<Remote>,
    /// Its content security policies (`{type: scripts | styles, policies: [...]}`). A new option
    /// makes a minor a new major.
    #[serde(default)]
    pub security_policies: Vec<SecurityPolicy>,
}

/// What a deploy did.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DeployOutcome {
    /// The new version's id.
    pub version_id: String,
    /// The new version (`M.m.p`).
    pub version: String,
    /// Installations moved to it at once (a minor of their installed major; only when the
    /// emulator's minor rollout window is 0).
    pub upgraded_installations: Vec<String>,
    /// Installations that will be moved to it within the minor rollout window (minors are
    /// released progressively; each gets a `pendingMinor` in the state until it moves).
    #[serde(default)]
    pub scheduled_installations: Vec<String>,
}

/// A site as the emulator knows it (answer of `POST /admin/sites`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SiteInfo {
    /// The host name.
    pub host_name: String,
    /// The cloud id.
    pub cloud_id: String,
    /// Activation id by product.
    pub activation_ids: BTreeMap<String, String>,
    /// Installation context (workspace ARI) by product.
    pub installation_contexts: BTreeMap<String, String>,
    /// Account ids of the developer accounts that administer the site (empty: a customer's site).
    #[serde(default)]
    pub admins: Vec<String>,
    /// The customer's admins of each product (lowercase product to e-mails or account ids).
    #[serde(default)]
    pub product_admins: BTreeMap<String, Vec<String>>,
}

/// A customer's admin installing an app through its installation link (admin
/// `POST /admin/link-install`).
#[derive(Deserialize, Serialize, Clone, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LinkInstallRequest {
    /// The app's ARI.
    pub app_id: String,
    /// The environment: a link installs `production`, the only value accepted (default).
    #[serde(default)]
    pub environment: Option<String>,
    /// The customer's site (host name). It must have every product of the link.
    pub site: String,
    /// The product to install into: one of the link's.
    pub product: String,
    /// The signature of the link the customer followed.
    pub signature: String,
    /// Who follows the link (an e-mail or account id): an admin of `product` on the site (one of
    /// its product admins, or a developer account administering it).
    pub admin: String,
}

/// What the app's owner does in the developer console (admin `POST /admin/console`).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum ConsoleAction {
    /// `stopSharing`: sharing off (DEVELOPMENT); the link stays, admitting nobody meanwhile.
    StopSharing,
    /// `startSharing`: sharing on (PUBLIC), as `updateAppDetails` would (the app details given or
    /// stored before must be complete); the link, if any, admits again.
    StartSharing,
    /// `generateLink`: a new link for `products`; the previous one never admits anyone again.
    GenerateLink,
    /// `saveDetails`: the app details given are saved (a blank one is cleared).
    SaveDetails,
}

/// A developer console action (admin `POST /admin/console`), acting as the app's owner whether or
/// not the distribution capability of the API is on.
#[derive(Deserialize, Serialize, Clone, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsoleRequest {
    /// The app's ARI.
    pub app_id: String,
    /// What is done.
    pub action: ConsoleAction,
    /// The products of the new link (`generateLink` only).
    #[serde(default)]
    pub products: Vec<String>,
    /// App details (`startSharing` and `saveDetails` only).
    #[serde(default)]
    pub vendor_name: Option<String>,
    /// App details (`startSharing` and `saveDetails` only).
    #[serde(default)]
    pub privacy_policy: Option<String>,
    /// App details (`startSharing` and `saveDetails` only).
    #[serde(default)]
    pub terms_of_service: Option<String>,
    /// App details (`startSharing` and `saveDetails` only).
    #[serde(default)]
    pub contact_link: Option<String>,
}

impl ConsoleRequest {
    /// An `action` on app `app_id`, with nothing else.
    pub fn new(app_id: impl Into<String>, action: ConsoleAction) -> Self {
        ConsoleRequest {
            app_id: app_id.into(),
            action,
            products: Vec::new(),
            vendor_name: None,
            privacy_policy: None,
            terms_of_service: None,
            contact_link: None,
        }
    }
}

/// An app's sharing state, as the developer console shows it (the answer of
/// `POST /admin/console` and `POST /admin/marketplace`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ConsoleOutcome {
    /// `DEVELOPMENT` (sharing off) or `PUBLIC` (sharing on).
    pub distribution_status: DistributionStatus,
    /// Listed on (or submitted to) the Marketplace.
    pub listed_on_marketplace: bool,
    /// The current link (kept while sharing is off), if one was generated.
    pub link: Option<SeedLink>,
}

/// The app is listed on (or submitted to) the Marketplace, or no longer (admin
/// `POST /admin/marketplace`).
#[derive(Deserialize, Serialize, Clone, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MarketplaceRequest {
    /// The app's ARI.
    pub app_id: String,
    /// Listed (or submitted) or not.
    pub listed: bool,
}

/// The installation a link install made.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LinkInstallOutcome {
    /// The new installation's id.
    pub installation_id: String,
    /// Its installation context (workspace ARI).
    pub installation_context: String,
    /// The installed version (the latest).
    pub version: String,
}

/// A customer's site admin moving their installation to a newer version, consenting to whatever it
/// asks (admin `POST /admin/site-upgrade`).
#[derive(Deserialize, Serialize, Clone, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SiteUpgradeRequest {
    /// The app's ARI.
    pub app_id: String,
    /// The environment key (default `production`).
    #[serde(default = "production")]
    pub environment: String,
    /// The site (host name).
    pub site: String,
    /// The product the app is installed into.
    pub product: String,
    /// The version to move to (`M.m.p`; default: the latest), newer than the installed one.
    #[serde(default)]
    pub version: Option<String>,
}

/// What a site admin's upgrade did.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SiteUpgradeOutcome {
    /// The installation moved.
    pub installation_id: String,
    /// Its version now (`M.m.p`).
    pub version: String,
}

/// Many additions in one request (admin `POST /admin/batch`): sites, then installations (made
/// complete at once, as a seed's), then link installs, each checked as on its own (`POST
/// /admin/sites`, a seed's `installations`, `POST /admin/link-install`) and seeing those before
/// it. All or nothing: when one is refused, none is applied.
#[derive(Deserialize, Serialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct BatchRequest {
    /// Sites to add.
    pub sites: Vec<SeedSite>,
    /// Installations to add, complete (no task).
    pub installations: Vec<SeedInstallation>,
    /// Customers' admins following installation links.
    pub link_installs: Vec<LinkInstallRequest>,
}

/// What a batch added: how many of each.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BatchOutcome {
    /// Sites added.
    pub sites: usize,
    /// Installations added.
    pub installations: usize,
    /// Link installs made.
    pub link_installs: usize,
}
