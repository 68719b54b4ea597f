//! The platform port: the operations of the Forge GraphQL gateway that forgeops uses, at the
//! gateway's own level (the same operations the `forge` CLI sends), with typed results and a typed
//! error whose [`ErrorKind`] the controllers branch on.
//!
//! One backend implements it: [`forge::ForgeGateway`], GraphQL over HTTPS to the real gateway, or
//! to the local emulator (`forgeops-dev platform serve`) in development and tests. The platform takes
//! no idempotency key: an install or upgrade is made safe to repeat by recording its task id before
//! waiting on it and by treating `APP_ALREADY_INSTALLED` / `INSTALLATION_ALREADY_UPGRADED` as done.

pub mod breaker;
pub mod coalesce;
pub mod credentials;
pub mod forge;
pub mod limiter;
pub mod ops;
pub mod site;

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

pub use credentials::Credentials;
pub use forge::{ForgeGateway, GatewayOptions};

/// Which count the App metrics API is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetricKind {
    /// `invocationsValue`.
    Invocations,
    /// `errorsValue`.
    Errors,
}

/// One App metrics API call: a count of an app's functions over an interval of at most 15
/// minutes (the API's limit), grouped by version and installation context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsQuery {
    pub app_id: String,
    /// The environment's platform id (none: every environment).
    pub environment_id: Option<String>,
    pub kind: MetricKind,
    /// Epoch milliseconds, the start included.
    pub start_ms: i64,
    /// Epoch milliseconds, the end excluded.
    pub end_ms: i64,
}

/// One value of an App metrics answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsValue {
    /// The version, as the platform's dotted string.
    pub version: String,
    /// The installation context (a workspace or site ARI).
    pub context: String,
    pub count: u64,
}

/// The account the credentials act as (`me { user }`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub account_id: String,
    pub name: String,
    /// `active` for an account that may use the platform.
    pub status: String,
}

/// One environment of an app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentInfo {
    pub id: String,
    pub key: String,
    /// `PRODUCTION`, `STAGING` or `DEVELOPMENT`.
    pub type_: String,
    /// Epoch milliseconds, as the platform reports it.
    pub created_at: Option<String>,
}

/// An egress permission of a version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Egress {
    pub type_: Option<String>,
    pub addresses: Vec<String>,
    pub category: Option<String>,
    /// Whether the egress is in scope of end-user data (`inScopeEUD`).
    pub in_scope_eud: bool,
}

/// A deployed version of an app environment, as the platform reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct VersionInfo {
    /// The platform's id of the version: what install, upgrade and rollouts take.
    pub id: String,
    /// The dotted version string (`2.1.0`); its first component is the major.
    pub version: String,
    /// Epoch milliseconds.
    pub created_at: Option<String>,
    pub is_latest: bool,
    pub requires_license: bool,
    pub scopes: Vec<String>,
    pub egress: Vec<Egress>,
    pub required_products: Vec<String>,
    /// Remote back ends the version calls (`storage.remotes`), as `key baseUrl`.
    pub remotes: Vec<String>,
    /// Content security policies (`permissions.securityPolicies`), as `type policy`.
    pub security_policies: Vec<String>,
    /// Whether one of the version's extensions is a Forge SQL module.
    pub sql_module: bool,
    /// The products the version's modules extend (the part before `:` of each extension type,
    /// `confluence` for `confluence:contentBylineItem`): a single-app app's product.
    #[serde(default)]
    pub module_products: Vec<String>,
}

/// The product of the installation context a product installs into: Jira Service Management
/// apps install into the site's Jira context; every other product into its own.
pub fn context_product(product: &str) -> &str {
    match product {
        "jira-service-management" => "jira",
        other => other,
    }
}

/// The platform's key of an environment: the development environment is called `development` in
/// forgeops (and by the CLI's `-e` option) but its key on the platform is `default`, as the CLI
/// translates it (`@forge/cli-shared` `optionToEnvironment`). Other names are keys already.
pub fn environment_key(name: &str) -> &str {
    match name {
        "development" => "default",
        other => other,
    }
}

/// Every installation of `app_id` that `filter` selects, page after page.
pub async fn every_installation<P: Platform + ?Sized>(
    platform: &P,
    creds: &Credentials,
    app_id: &str,
    filter: &InstallationFilter,
) -> PlatformResult<Vec<InstallationInfo>> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = platform.installations(creds, app_id, filter, after.as_deref()).await?;
        out.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(out),
        }
    }
}

/// The platform's type of the environment with key `key`: `production` and `staging` are their
/// own types; `default` (development) and every custom environment are `DEVELOPMENT`.
pub fn environment_type(key: &str) -> &'static str {
    match key {
        "production" => "PRODUCTION",
        "staging" => "STAGING",
        _ => "DEVELOPMENT",
    }
}

/// (major, minor) of a dotted version string (`2.1.0` → (2, 1); `3` → (3, 0)), as
/// [`crate::rules::versions::Version::parse`] reads it.
pub fn parse_major_minor(version: &str) -> Option<(u32, u32)> {
    crate::rules::versions::Version::parse(version).map(|v| (v.major, v.minor))
}

/// How many installations run one version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionCount {
    pub id: String,
    pub version: String,
    pub installations: u64,
}

/// One installation of an app, as the platform lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallationInfo {
    pub id: String,
    /// The workspace ARI the app is installed into.
    pub installation_context: String,
    /// The site's host name, when resolved.
    pub site: Option<String>,
    /// The product of the installation context (`jira`, `confluence`, ...).
    pub product: Option<String>,
    pub environment_key: String,
    pub environment_type: Option<String>,
    pub version: Option<String>,
    /// Whether the installed version is the environment's latest.
    pub version_is_latest: bool,
    /// The version whose code runs there (`computeVersion`): the installed (permissions) version,
    /// or a newer one after a code-only upgrade.
    pub compute_version: Option<String>,
}

/// A page of a cursor-paginated list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The cursor of the next page; none on the last page.
    pub next: Option<String>,
}

/// Which installations to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstallationFilter {
    /// Environment types (`PRODUCTION`, ...); all when empty.
    pub environment_types: Vec<String>,
    /// Installation contexts; all when empty.
    pub contexts: Vec<String>,
    /// Installation ids; all when empty.
    pub ids: Vec<String>,
}

/// The state of an asynchronous installation task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskState {
    Pending,
    Running,
    Complete,
    Failed,
}

impl TaskState {
    pub fn finished(self) -> bool {
        matches!(self, TaskState::Complete | TaskState::Failed)
    }
}

/// An installation task as last seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    pub state: TaskState,
    /// What the platform said about a failure: each message with its category.
    pub errors: Vec<(ErrorKind, String)>,
}

impl Task {
    /// The messages of the task's errors, joined.
    pub fn messages(&self) -> String {
        if self.errors.is_empty() {
            return "no reason given".into();
        }
        self.errors.iter().map(|(_, m)| m.as_str()).collect::<Vec<_>>().join("; ")
    }

    /// Whether the task failed only because the site already had what it asked for
    /// (`APP_ALREADY_INSTALLED`, `INSTALLATION_ALREADY_UPGRADED`): the outcome wanted is there.
    pub fn already_done(&self) -> bool {
        self.state == TaskState::Failed
            && !self.errors.is_empty()
            && self.errors.iter().all(|(k, _)| matches!(k, ErrorKind::AlreadyInstalled | ErrorKind::AlreadyUpgraded))
    }
}

/// Where an app is to be installed, upgraded or uninstalled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub app_id: String,
    pub environment_key: String,
    /// The site's host name (`acme.atlassian.net`).
    pub site: String,
    /// The product to install into (`jira`, ...).
    pub product: String,
}

/// Whether a version can be reached from a source version by a rollout (no consent needed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpgradeTarget {
    pub version_id: String,
    pub version: String,
    pub upgradeable_by_rollout: bool,
    pub upgrade_limit: Option<u32>,
}

/// What creating a rollout answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutStarted {
    pub rollout_id: String,
    pub upgrade_limit: Option<u32>,
    pub total_eligible_upgrades: Option<u64>,
    pub expected_remaining_upgrades: Option<u64>,
}

/// The status of a rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RolloutStatus {
    Running,
    Complete,
    Cancelled,
}

/// A bulk-upgrade rollout, as the platform reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rollout {
    pub id: String,
    pub status: RolloutStatus,
    pub source_version_id: String,
    pub target_version_id: String,
    pub created_at: Option<String>,
    pub completed_at: Option<String>,
    pub completed: u64,
    pub failed: u64,
    pub pending: u64,
    pub upgrade_limit: Option<u32>,
}

/// The app's active installation link (distribution capability).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DistributionLink {
    pub url: String,
    pub products: Vec<String>,
}

/// An app's sharing state on the platform (distribution capability): one read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SharingState {
    /// `distributionStatus` is `PUBLIC`.
    pub shared: bool,
    /// `marketplaceApp` is present: the app is listed on (or submitted to) the Marketplace.
    pub listed_on_marketplace: bool,
    /// The active installation link, if any.
    pub link: Option<DistributionLink>,
}

/// The app details sent when sharing is turned on (`UpdateAppDetailsInput`); unset ones are not sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppDetails {
    pub vendor_name: Option<String>,
    pub privacy_policy: Option<String>,
    pub terms_of_service: Option<String>,
    pub contact_link: Option<String>,
}

/// A time the platform reports, as epoch milliseconds: it answers epoch milliseconds as a string
/// for versions and an RFC 3339 date-time for rollouts and installations.
pub fn time_millis(text: &str) -> Option<i64> {
    text.parse::<i64>().ok().or_else(|| text.parse::<jiff::Timestamp>().ok().map(|t| t.as_millisecond()))
}

/// The stable categories of platform failures, which controllers, `error_policy` and metrics use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The credentials were refused (HTTP 401), or the account is not active.
    BadCredentials,
    /// The account may not do this to this app or site.
    PermissionDenied,
    /// The app, environment, version, site, installation, task or rollout does not exist.
    NotFound,
    /// `APP_ALREADY_INSTALLED`: the app environment is already installed in that context.
    AlreadyInstalled,
    /// `INSTALLATION_ALREADY_UPGRADED`: the installation already runs the target.
    AlreadyUpgraded,
    /// `INSTALLATION_LIMIT_REACHED`.
    InstallationLimitReached,
    /// `APP_ROLLOUT_RUNNING`: a rollout already runs for the app environment.
    RolloutRunning,
    /// `TOO_MANY_APP_ROLLOUTS_RUNNING_FOR_ACCOUNT`.
    AccountBusy,
    /// `APP_ROLLOUTS_UNAVAILABLE`: the platform-wide limit.
    GlobalLimit,
    /// `TOO_MANY_REQUESTS` / HTTP 429, after the retries.
    RateLimited,
    /// 5xx, time-outs and transport failures, after the retries.
    Unavailable,
    /// Any other refusal: retrying the same request will not help.
    Refused,
    /// The backend or platform does not offer this capability.
    Unsupported,
}

impl ErrorKind {
    /// Whether the same request may succeed later without any change.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::RateLimited
                | ErrorKind::Unavailable
                | ErrorKind::RolloutRunning
                | ErrorKind::AccountBusy
                | ErrorKind::GlobalLimit
        )
    }

    /// A stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadCredentials => "bad_credentials",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyInstalled => "already_installed",
            ErrorKind::AlreadyUpgraded => "already_upgraded",
            ErrorKind::InstallationLimitReached => "installation_limit_reached",
            ErrorKind::RolloutRunning => "rollout_running",
            ErrorKind::AccountBusy => "account_busy",
            ErrorKind::GlobalLimit => "global_limit",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Refused => "refused",
            ErrorKind::Unsupported => "unsupported",
        }
    }

    /// The category of a gateway `errorType` (with its HTTP-like `statusCode`, when given).
    pub fn from_error_type(error_type: &str, status: Option<u16>) -> ErrorKind {
        match error_type {
            "APP_ALREADY_INSTALLED" => ErrorKind::AlreadyInstalled,
            "INSTALLATION_ALREADY_UPGRADED" => ErrorKind::AlreadyUpgraded,
            "INSTALLATION_LIMIT_REACHED" => ErrorKind::InstallationLimitReached,
            "APP_ROLLOUT_RUNNING" => ErrorKind::RolloutRunning,
            "TOO_MANY_APP_ROLLOUTS_RUNNING_FOR_ACCOUNT" => ErrorKind::AccountBusy,
            "APP_ROLLOUTS_UNAVAILABLE" => ErrorKind::GlobalLimit,
            "TOO_MANY_REQUESTS" | "RATE_LIMITED" => ErrorKind::RateLimited,
            "PERMISSION_DENIED" | "PermissionDeniedError" | "FORBIDDEN" => ErrorKind::PermissionDenied,
            "UNAUTHORIZED" | "UNAUTHENTICATED" => ErrorKind::BadCredentials,
            "APP_NOT_FOUND" | "NOT_FOUND" | "APP_ROLLOUT_NOT_FOUND" => ErrorKind::NotFound,
            "UNSUPPORTED" | "NOT_IMPLEMENTED" => ErrorKind::Unsupported,
            "SERVICE_UNAVAILABLE" | "INTERNAL_SERVER_ERROR" | "GATEWAY_TIMEOUT" => ErrorKind::Unavailable,
            _ => match status {
                Some(401) => ErrorKind::BadCredentials,
                Some(403) => ErrorKind::PermissionDenied,
                Some(404) => ErrorKind::NotFound,
                Some(429) => ErrorKind::RateLimited,
                Some(s) if s >= 500 => ErrorKind::Unavailable,
                _ => ErrorKind::Refused,
            },
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed platform operation. Its message never contains credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{operation}: {message}{}", request_id.as_ref().map(|r| format!(" (request id {r})")).unwrap_or_default())]
pub struct PlatformError {
    pub kind: ErrorKind,
    /// The gateway operation (or step) that failed.
    pub operation: &'static str,
    /// What the platform said, or what went wrong on the way.
    pub message: String,
    /// How long the platform asked to wait (`Retry-After`).
    pub retry_after: Option<Duration>,
    /// The gateway's request id, for support.
    pub request_id: Option<String>,
    /// A mutation was sent and its answer lost (a time-out, a broken connection, a 5xx other than
    /// 503): the platform may have carried it out. Sending it again could do it twice, so the caller
    /// reads the platform's record before anything is sent again.
    pub unconfirmed: bool,
}

impl PlatformError {
    pub fn new(kind: ErrorKind, operation: &'static str, message: impl Into<String>) -> Self {
        PlatformError {
            kind,
            operation,
            message: message.into(),
            retry_after: None,
            request_id: None,
            unconfirmed: false,
        }
    }

    pub fn retryable(&self) -> bool {
        self.kind.retryable()
    }
}

pub type PlatformResult<T> = Result<T, PlatformError>;

/// The Forge platform, as the gateway offers it. Every call acts as the given credentials.
pub trait Platform: Send + Sync {
    /// Who the credentials act as (`forge_cli_getUserDetails`).
    fn whoami<'a>(&'a self, creds: &'a Credentials) -> BoxFuture<'a, PlatformResult<Account>>;

    /// The app's environments (`forge_cli_listEnvironment`, every page).
    fn environments<'a>(
        &'a self,
        creds: &'a Credentials,
        app_id: &'a str,
    ) -> BoxFuture<'a, PlatformResult<Vec<EnvironmentInfo>>>;

    /// Every deployed version of an app environment, newest first, with ids, permissions,
    /// licensing and required products.
    fn versions<'a>(
        &'a self,
        creds: &'a Credentials,
        app_id: &'a str,
        environment_key: &'a str,
    ) -> BoxFuture<'a, PlatformResult<Vec<VersionInfo>>>;

    /// Installations per version (`forge_cli_getAppUpgradeVersionsList`).
    fn installation_counts<'a>(
        &'a self,
        creds: &'a Credentials,
        app_id: &'a str,
        environment_key: &'a str,
    ) -> BoxFuture<'a, PlatformResult<Vec<VersionCount>>>;

    /// One page of the app's installations (`forge_cli_getEcosystemInstallationsByApp`).
    fn installations<'a>(
        &'a self,
        creds: &'a Credentials,
        app_id: &'a str,
        filter: &'a InstallationFilter,
        after: Option<&'a str>,
    ) -> BoxFuture<'a, PlatformResult<Page<InstallationInfo>>>;

    /// The installation context (workspace ARI) of a product on a site (`getTenantContextDetails`).
    fn installation_context<'a>(
        &'a self,
        creds: &'a Credentials,
        site: &'a str,
        product: &'a str,
    ) -> BoxFuture<'a, PlatformResult<String>>;

    /// The app's installations in one installation context, every environment
    /// (`forge_cli_getEcosystemInstallationsByApp` filtered by the context, every page). A backend
    /// may answer many such lookups with one request.
    fn installations_in<'a>(
        &'a self,
        creds: &'a Credentials,
        app_id: &'a str,
        context: &'a str,
    ) -> BoxFuture<'a, PlatformResult<Vec<InstallationInfo>>> {
        async move {
            let filter = InstallationFilter { contexts: vec![context.to_string()], ..Default::default() };
            every_installation(self, creds, app_id, &filter).await
        }
        .boxed()
    }

    /// The app's installation with this id, if the platform still has it
    /// (`forge_cli_getEcosystemInstallationsByApp` filtered by the id). A backend may answer many
    /// such lookups with one request.
    fn installation_with_id<'a>(
        &'a self,
        creds: &'a Credentials,
        app_id: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, PlatformResult<Option<InstallationInfo>>> {
        async move {
            let filter = InstallationFilter { ids: vec![id.to_string()], ..Default::default() };
            let page = self.installations(creds, app_id, &filter, None).await?;
            Ok(page.items.into_iter().find(|i| i.id == id))
        }
        .boxed()
    }

    /// Starts installing; returns the task id (`forge_cli_installApplication`).
    fn start_install<'a>(
        &'a self,
        creds: &'a Credentials,
        target: &'a Target,
        version_id: Option<&'a str>,
    ) -> BoxFuture<'a, PlatformResult<String>>;

    /// Starts upgrading; returns the task id (`forge_cli_upgradeApplication`).
    fn start_upgrade<'a>(
        &'a self,
        creds: &'a Credentials,
        target: &'a Target,
        version_id: Option<&'a str>,
    ) -> BoxFuture<'a, PlatformResult<String>>;

    /// Starts uninstalling an installation (by id, with its context when known, as the CLI sends
    /// them); returns the task id (`forge_cli_uninstallApplication`).
    fn start_uninstall<'a>(
        &'a self,
        creds: &'a Credentials,
        app_id: &'a str,
        environment_key: &'a str,
        installation_id: &'a str,
        installation_context: Option<&'a str>,
    ) -> BoxFuture<'a, PlatformResult<String>>;

    /// The state of a task (`forge_cli_getInstallationTask`).
    fn task<'a>(&'a self, creds: &'a Credentials, task_id: &'a str) -> BoxFuture<'a, PlatformResult<Task>>;

    /// The versions a rollout from `source_version_id` could target (`forge_cli_getAppUpgradableToList`).
    fn upgrade_targets<'a>(
        &'a self,
        creds: &'a Credentials,
        app_id: &'a str,
        environment_key: &'a str,
        source_version_id: &'a str,
    ) -> BoxFuture<'a, PlatformResult<Vec<UpgradeTarget>>>;

    /// Creates a rollout (`forge_cli_createAppVersionUpgradeRollout`).
    fn create_rollout<'a>(
        &'a self,
        creds: &'a Credentials,
        source_version_id: &'a str,
        target_version_id: &'a str,
        limit: Option<u32>,
    ) -> BoxFuture<'a, PlatformResult<RolloutStarted>>;

    /// One rollout (`forge_cli_getAppVersionRollout`); `None` when the platform no longer has it.
    fn rollout<'a>(
        &'a self,
        creds: &'a Credentials,
        rollout_id: &'a str,
    ) -> BoxFuture<'a, PlatformResult<Option<Rollout>>>;

    /// The rollouts of an app environment (`forge_cli_getAppVersionRolloutsList`).
    fn rollouts<'a>(
        &'a self,
        creds: &'a Credentials,
        app_id: &'a str,
        environment_key: &'a str,
    ) -> BoxFuture<'a, PlatformResult<Vec<Rollout>>>;

    /// Cancels a running rollout (`forge_cli_cancelAppVersionUpgradeRollout`).
    fn cancel_rollout<'a>(&'a self, creds: &'a Credentials, rollout_id: &'a str) -> BoxFuture<'a, PlatformResult<()>>;

    /// The App metrics API (`forgeMetrics`): invocations or failed invocations of an app's
    /// functions over `window`, one value per (version, installation context). Five calls a
    /// minute per user: the client's limiter spaces them ([`limiter`]).
    fn app_metrics<'a>(
        &'a self,
        creds: &'a Credentials,
        query: &'a MetricsQuery,
    ) -> BoxFuture<'a, PlatformResult<Vec<MetricsValue>>>;

    /// Distribution capability: turns sharing by link on (sending `details`) or off. `Unsupported`
    /// without it.
    fn set_sharing<'a>(
        &'a self,
        creds: &'a Credentials,
        app_id: &'a str,
        enabled: bool,
        details: &'a AppDetails,
    ) -> BoxFuture<'a, PlatformResult<()>>;

    /// Distribution capability: generates a new installation link (the old one stops working).
    fn generate_link<'a>(
        &'a self,
        creds: &'a Credentials,
        app_id: &'a str,
        products: &'a [String],
    ) -> BoxFuture<'a, PlatformResult<DistributionLink>>;

    /// Distribution capability: whether the app is shared, whether it is listed on the Marketplace,
    /// and its active installation link, in one request.
    fn sharing_state<'a>(
        &'a self,
        creds: &'a Credentials,
        app_id: &'a str,
    ) -> BoxFuture<'a, PlatformResult<SharingState>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_development_environment_has_the_key_default() {
        assert_eq!(environment_key("development"), "default");
        assert_eq!(environment_key("production"), "production");
        assert_eq!(environment_key("staging"), "staging");
        assert_eq!(environment_key("perf-eu"), "perf-eu");
    }

    #[test]
    fn times_parse_from_millis_or_rfc3339() {
        assert_eq!(time_millis("1800000000500"), Some(1_800_000_000_500));
        assert_eq!(time_millis("2027-01-15T08:00:00.500Z"), Some(1_800_000_000_500));
        assert_eq!(time_millis("yesterday"), None);
    }

    #[test]
    fn versions_parse_to_major_and_minor() {
        assert_eq!(parse_major_minor("2.1.0"), Some((2, 1)));
        assert_eq!(parse_major_minor("3"), Some((3, 0)));
        assert_eq!(parse_major_minor("10.22.4"), Some((10, 22)));
        assert_eq!(parse_major_minor("x.1"), None);
        assert_eq!(parse_major_minor(""), None);
    }

    #[test]
    fn error_types_map_to_stable_categories() {
        assert_eq!(ErrorKind::from_error_type("APP_ALREADY_INSTALLED", Some(409)), ErrorKind::AlreadyInstalled);
        assert_eq!(ErrorKind::from_error_type("INSTALLATION_ALREADY_UPGRADED", None), ErrorKind::AlreadyUpgraded);
        assert_eq!(ErrorKind::from_error_type("APP_ROLLOUT_RUNNING", None), ErrorKind::RolloutRunning);
        assert_eq!(
            ErrorKind::from_error_type("TOO_MANY_APP_ROLLOUTS_RUNNING_FOR_ACCOUNT", None),
            ErrorKind::AccountBusy
        );
        assert_eq!(ErrorKind::from_error_type("APP_ROLLOUTS_UNAVAILABLE", None), ErrorKind::GlobalLimit);
        assert_eq!(ErrorKind::from_error_type("TOO_MANY_REQUESTS", Some(429)), ErrorKind::RateLimited);
        assert_eq!(ErrorKind::from_error_type("PermissionDeniedError", None), ErrorKind::PermissionDenied);
        assert_eq!(ErrorKind::from_error_type("SOMETHING_NEW", Some(503)), ErrorKind::Unavailable);
        assert_eq!(ErrorKind::from_error_type("SOMETHING_NEW", Some(401)), ErrorKind::BadCredentials);
        assert_eq!(ErrorKind::from_error_type("SOMETHING_NEW", Some(400)), ErrorKind::Refused);
        assert_eq!(ErrorKind::from_error_type("SOMETHING_NEW", None), ErrorKind::Refused);
        assert!(ErrorKind::RateLimited.retryable() && ErrorKind::Unavailable.retryable());
        assert!(!ErrorKind::Refused.retryable() && !ErrorKind::BadCredentials.retryable());
    }
}
