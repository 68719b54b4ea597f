//! A local stand-in for the Forge GraphQL gateway (`https://api.atlassian.com/graphql`), which the
//! real `forge` CLI (pointed at it with `FORGE_GRAPHQL_GATEWAY`) and forgeops' own adapter talk to.
//!
//! - [`model`]: the platform's state and rules (accounts, apps, environments, versions, sites,
//!   installations, asynchronous tasks, bulk upgrades, sharing and installation links), pure.
//!   A version installs only into the products it supports: a cross-product app's required
//!   products (then its optional ones), a single-product app's module products.
//! - [`schema`]: the GraphQL schema over it, with the gateway's own type and field names.
//! - This module: the HTTP server. `POST /graphql` (Basic auth `email:apiToken`) and a separate
//!   admin API under `/admin/` (JSON, no auth, loopback clients only):
//!
//! | endpoint | body | answer |
//! |---|---|---|
//! | `POST /admin/accounts` | [`SeedAccount`] `{email, apiToken, name?, accountId?, status?}` | the account (no token); 409 if the email or account id exists |
//! | `POST /admin/api-tokens` | `{email, apiToken}` | `{email}`: another token of the account; 404 if no such account |
//! | `DELETE /admin/api-tokens` | `{email, apiToken}` | `{email}`: that token revoked; 404 if the account has no such token |
//! | `POST /admin/apps` | [`SeedApp`] (owner: an account's email or id) | the app as in the state; 409 if it exists |
//! | `POST /admin/deploy` | [`DeployRequest`] (with `requiredProducts`, `modules`, `remotes`, `securityPolicies`) | [`DeployOutcome`]; a minor reaches its major within the minor rollout window (a minor adding a remote or a content security policy option is refused: a new major); a new environment starts with its skeleton 1.1.0 |
//! | `POST /admin/sites` | [`SeedSite`] (with `admins`, `productAdmins`) | [`SiteInfo`]; 409 if the host name exists |
//! | `GET /admin/sites` | | `[SiteInfo]` (with `admins`, account ids, and `productAdmins`) |
//! | `POST /admin/batch` | [`BatchRequest`] `{sites: [SeedSite], installations: [SeedInstallation], linkInstalls: [LinkInstallRequest]}` (each optional) | [`BatchOutcome`] `{sites, installations, linkInstalls}` (how many added): sites, then installations (complete at once, as a seed's: `{appId, environment?, site, product, version?, id?}`), then link installs, each refused as on its own, in one step; all or nothing: a refusal answers that entry's status with the entry named (`installations[12]: ...`) and applies none of the batch; a body of up to 512 MB (other admin bodies: 2 MB) |
//! | `POST /admin/link-install` | [`LinkInstallRequest`] `{appId, site, product, signature, admin, environment?}` | [`LinkInstallOutcome`]: a customer's admin of `product` follows an installation link (always production; 403 when the app is listed or licensed, sharing is off, the link is not the current one or the site lacks one of its products, or `admin` is not an admin of the product there) |
//! | `POST /admin/console` | [`ConsoleRequest`] `{appId, action: stopSharing \| startSharing \| generateLink \| saveDetails, products?, vendorName?, privacyPolicy?, termsOfService?, contactLink?}` | [`ConsoleOutcome`] `{distributionStatus, listedOnMarketplace, link: {products, signature} \| null}`: the app's owner in the developer console, whatever the distribution capability; refused as `updateAppDetails` and `generateDistributionLink` are |
//! | `POST /admin/marketplace` | [`MarketplaceRequest`] `{appId, listed}` | [`ConsoleOutcome`]: the app listed on (or submitted to) the Marketplace, or no longer; sharing stays as it is, but a listed app's link admits nobody |
//! | `POST /admin/site-upgrade` | [`SiteUpgradeRequest`] `{appId, environment?, site, product, version?}` | [`SiteUpgradeOutcome`] `{installationId, version}`: a customer's admin moves their installation to a newer version, any major |
//! | `PUT /admin/faults`, `GET /admin/faults` | [`Faults`] (with `mutations`, `hangMs`, `unauthorizedOperations`) | [`Faults`] (counts left) |
//! | `PUT /admin/settings`, `GET /admin/settings` | [`RuntimeSettings`] `{minorRolloutMs?}` | [`RuntimeSettings`] |
//! | `GET /admin/requests`, `DELETE /admin/requests` | | `[RecordedRequest]` (with the `fault` injected), 204 |
//! | `GET /admin/state` | | the model as JSON (no tokens) |
//! | `POST /admin/forget-finished-rollouts` | | `{"forgotten": n}` |
//!
//! API tokens are never logged, recorded or serialized. Accounts are not persisted in the state
//! file: after a restart only the seed's accounts exist. The state file is written behind the
//! requests (at most every [`PERSIST_INTERVAL`], serialized outside the model's lock, and once
//! more when the emulator stops), never by a request itself.
//!
//! Admin errors answer `{"error": {"errorType", "statusCode", "message"}}` with that status.

mod indexed;
pub mod metrics;
pub mod model;
pub mod schema;
mod schema_metrics;
mod seed;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

pub use model::PlatformError;
pub use seed::{
    BatchOutcome, BatchRequest, ConsoleAction, ConsoleOutcome, ConsoleRequest, DeployOutcome, DeployRequest,
    LinkInstallOutcome, LinkInstallRequest, MarketplaceRequest, Seed, SeedAccount, SeedApp, SeedEgress,
    SeedEnvironment, SeedInstallation, SeedLink, SeedSite, SeedVersion, SiteInfo, SiteUpgradeOutcome,
    SiteUpgradeRequest,
};

use model::{Model, Settings};
use schema::{Caller, EmulatorSchema, SharedModel, now_ms};

/// How the emulator starts.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    /// The initial content (ignored, except for accounts, when `state_file` exists).
    pub seed: Seed,
    /// How long an install, upgrade or uninstall task takes (PENDING, then RUNNING from a third
    /// of it, then COMPLETE or FAILED).
    pub task_duration: Duration,
    /// A bulk upgrade upgrades one installation per step (so 10 ms is 10 per 100 ms).
    pub rollout_step: Duration,
    /// The most installations one bulk upgrade takes (default 500, the cap the CLI reference
    /// documents per request); a larger `limit` is reduced to it and the rest left for a later
    /// bulk upgrade.
    pub upgrade_limit: u32,
    /// The most bulk upgrades running at once on the whole platform (APP_ROLLOUTS_UNAVAILABLE).
    pub global_rollout_limit: u32,
    /// Sharing and installation links are available (`updateAppDetails`,
    /// `generateDistributionLink`, `getActiveDistributionLink`); when off they answer an error
    /// with errorType UNSUPPORTED. The developer console (`POST /admin/console`) works either way.
    pub distribution: bool,
    /// Faults injected from the start.
    pub faults: Faults,
    /// Persist the model here (JSON) and restore it at start if present. Written behind: at most
    /// every [`PERSIST_INTERVAL`] while the model changes (serialized outside the model's lock),
    /// and once more when the emulator stops, so the file holds the last state.
    pub state_file: Option<PathBuf>,
    /// Finished bulk upgrades are forgotten this long after they finish (None: kept).
    pub rollout_retention: Option<Duration>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            seed: Seed::default(),
            task_duration: Duration::from_millis(300),
            rollout_step: Duration::from_millis(10),
            upgrade_limit: 500,
            global_rollout_limit: 3,
            distribution: true,
            faults: Faults::default(),
            state_file: None,
            rollout_retention: None,
        }
    }
}

/// Faults injected into `POST /graphql` (the admin API is never affected).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Faults {
    /// Added to every answer.
    pub latency_ms: u64,
    /// The fraction (0 to 1) of requests answered HTTP 500 or 503.
    pub error_rate: f64,
    /// Sites (host names or cloud ids) whose tasks and bulk-upgrade steps fail.
    pub failing_sites: Vec<String>,
    /// The next this many requests are answered HTTP 429 (`Retry-After: 1`, errorType
    /// TOO_MANY_REQUESTS).
    pub rate_limit_burst: u32,
    /// The gateway is down: HTTP 503 for every request until lifted.
    pub down: bool,
    /// Faults of requests that are executed (the model changes) but whose answer the client
    /// never gets right: the first entry naming a request's operation with `count` left applies
    /// (and its `count` goes down by one). Only requests that get through the faults above, are
    /// authenticated and parse are counted.
    pub mutations: Vec<MutationFault>,
    /// How long a [`MutationFaultMode::Hang`] request waits, after it was applied, before it is
    /// answered (default 60000).
    pub hang_ms: u64,
    /// Operations (by `operationName`) answered HTTP 401 (errorType UNAUTHORIZED) without being
    /// executed, though the credentials are good: what the gateway answers when it does not let
    /// these credentials use an operation. Only authenticated requests that parse are refused so.
    pub unauthorized_operations: Vec<String>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            latency_ms: 0,
            error_rate: 0.0,
            failing_sites: Vec::new(),
            rate_limit_burst: 0,
            down: false,
            mutations: Vec::new(),
            hang_ms: 60_000,
            unauthorized_operations: Vec::new(),
        }
    }
}

/// A fault of the answers to one operation (see [`Faults::mutations`]).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MutationFault {
    /// The `operationName`, e.g. `forge_cli_installApplication`.
    pub operation: String,
    /// What happens to the answer.
    pub mode: MutationFaultMode,
    /// How many matching requests get it (default 1); counts down as they do.
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

/// What a [`MutationFault`] does. In every mode the request is executed first: the platform
/// state changes as if it had been answered normally.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum MutationFaultMode {
    /// `applyThen504`: answered HTTP 504 with a gateway error body (errorType GATEWAY_TIMEOUT).
    ApplyThen504,
    /// `applyThenDrop`: HTTP 200 whose body breaks off (the connection is cut), so the client
    /// sees a transport error and no answer.
    ApplyThenDrop,
    /// `hang`: the real answer, after [`Faults::hang_ms`], so a client with a shorter timeout
    /// gives up.
    Hang,
}

impl MutationFaultMode {
    /// The name as written in [`Faults`] (and in [`RecordedRequest::fault`]).
    pub fn name(self) -> &'static str {
        match self {
            MutationFaultMode::ApplyThen504 => "applyThen504",
            MutationFaultMode::ApplyThenDrop => "applyThenDrop",
            MutationFaultMode::Hang => "hang",
        }
    }
}

/// Settings that may change while the emulator runs (`GET`/`PUT /admin/settings`): a field left
/// out of a `PUT` stays as it is; the answer has every field.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct RuntimeSettings {
    /// The window over which a new minor reaches the installations of its major, in
    /// milliseconds (0: at once). Default 2000.
    pub minor_rollout_ms: Option<u64>,
}

/// One GraphQL request as received (the API token is never recorded).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecordedRequest {
    /// `operationName`, or the name in the query text.
    pub operation_name: Option<String>,
    /// The variables (null if none).
    pub variables: serde_json::Value,
    /// The authenticated account, if the credentials were valid.
    pub account_id: Option<String>,
    /// When it was received, epoch milliseconds.
    pub at_ms: i64,
    /// The fault injected into it, if any: `down`, `rateLimitBurst`, `errorRate`, `unauthorized`
    /// (see [`Faults::unauthorized_operations`]), or a [`MutationFaultMode`] name (`applyThen504`,
    /// `applyThenDrop`, `hang`).
    #[serde(default)]
    pub fault: Option<String>,
}

struct FaultState {
    faults: Faults,
    burst_left: u32,
}

/// How often, at most, the state file is written while the model changes.
pub const PERSIST_INTERVAL: Duration = Duration::from_millis(250);

struct Shared {
    model: SharedModel,
    schema: EmulatorSchema,
    faults: Mutex<FaultState>,
    requests: Mutex<Vec<RecordedRequest>>,
    state_file: Option<PathBuf>,
    /// The model revision last written to the state file; held while writing, so one write
    /// happens at a time and in order.
    persisted: Mutex<u64>,
    /// How many times the state file was written.
    writes: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn new(config: &EmulatorConfig) -> anyhow::Result<Arc<Shared>> {
        let settings = Settings {
            task_duration_ms: i64::try_from(config.task_duration.as_millis()).unwrap_or(i64::MAX / 4),
            rollout_step_us: i64::try_from(config.rollout_step.as_micros()).unwrap_or(i64::MAX / 4),
            upgrade_limit: config.upgrade_limit,
            global_rollout_limit: config.global_rollout_limit,
            rollout_retention_ms: config
                .rollout_retention
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)),
            distribution: config.distribution,
            ..Settings::default()
        };
        let mut model = match &config.state_file {
            Some(path) if path.exists() => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("reading state {}: {e}", path.display()))?;
                Model::restore(&text, &config.seed, settings)
                    .map_err(|e| anyhow::anyhow!("parsing state {}: {e}", path.display()))?
            }
            _ => Model::from_seed(&config.seed, settings, now_ms()).map_err(|e| anyhow::anyhow!("seed: {e}"))?,
        };
        model.failing_sites = config.faults.failing_sites.clone();
        let model: SharedModel = Arc::new(Mutex::new(model));
        let shared = Arc::new(Shared {
            schema: schema::build_schema(model.clone()),
            model,
            faults: Mutex::new(FaultState {
                faults: config.faults.clone(),
                burst_left: config.faults.rate_limit_burst,
            }),
            requests: Mutex::new(Vec::new()),
            state_file: config.state_file.clone(),
            persisted: Mutex::new(u64::MAX),
            writes: AtomicU64::new(0),
        });
        shared.persist();
        Ok(shared)
    }

    fn advance(&self) {
        lock(&self.model).advance(now_ms());
    }

    /// [`model::Model::dump`], serialized outside the model's lock (from a snapshot).
    fn dump(&self) -> serde_json::Value {
        let (snapshot, accounts) = {
            let model = lock(&self.model);
            (model.snapshot(), model.accounts.clone())
        };
        snapshot.dump(&accounts)
    }

    /// Whether the model changed since the state file was last written.
    fn dirty(&self) -> bool {
        if self.state_file.is_none() {
            return false;
        }
        // One lock at a time: `persist` takes `persisted` before the model.
        let revision = lock(&self.model).revision;
        revision != *lock(&self.persisted)
    }

    /// Writes the model to the state file if it changed (temp file, then rename). The model's
    /// lock is held only to take a [`model::Snapshot`] (which shares the model's items); it is
    /// serialized and written after.
    fn persist(&self) {
        let Some(path) = &self.state_file else { return };
        let mut persisted = lock(&self.persisted);
        let (revision, snapshot) = {
            let model = lock(&self.model);
            if model.revision == *persisted {
                return;
            }
            (model.revision, model.snapshot())
        };
        let json = match serde_json::to_vec(&snapshot) {
            Ok(json) => json,
            Err(e) => {
                tracing::warn!(error = %e, "emulator: could not serialize the state");
                return;
            }
        };
        drop(snapshot);
        let tmp = path.with_extension("tmp");
        let written = std::fs::write(&tmp, &json).and_then(|()| std::fs::rename(&tmp, path));
        match written {
            Ok(()) => {
                *persisted = revision;
                self.writes.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "emulator: could not write the state file"),
        }
    }

    fn set_faults(&self, f: Faults) {
        lock(&self.model).failing_sites = f.failing_sites.clone();
        let mut state = lock(&self.faults);
        state.burst_left = f.rate_limit_burst;
        state.faults = f;
    }

    fn faults(&self) -> Faults {
        let state = lock(&self.faults);
        Faults { rate_limit_burst: state.burst_left, ..state.faults.clone() }
    }

    fn set_settings(&self, s: &RuntimeSettings) {
        let mut model = lock(&self.model);
        if let Some(ms) = s.minor_rollout_ms {
            model.settings.minor_rollout_ms = i64::try_from(ms).unwrap_or(i64::MAX / 4);
        }
    }

    fn settings(&self) -> RuntimeSettings {
        let model = lock(&self.model);
        RuntimeSettings { minor_rollout_ms: Some(u64::try_from(model.settings.minor_rollout_ms).unwrap_or(0)) }
    }

    fn mutate<T>(&self, f: impl FnOnce(&mut Model, i64) -> Result<T, PlatformError>) -> Result<T, PlatformError> {
        let now = now_ms();
        let mut model = lock(&self.model);
        model.advance(now);
        f(&mut model, now)
    }
}

/// An emulator serving on loopback until dropped.
pub struct RunningEmulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
    ticker: tokio::task::JoinHandle<()>,
    persister: tokio::task::JoinHandle<()>,
}

impl RunningEmulator {
    /// `http://127.0.0.1:<port>/graphql` (for `FORGE_GRAPHQL_GATEWAY`).
    pub fn graphql_url(&self) -> String {
        format!("http://{}/graphql", self.addr)
    }
    /// `http://127.0.0.1:<port>/admin`.
    pub fn admin_url(&self) -> String {
        format!("http://{}/admin", self.addr)
    }
    /// The address served.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
    /// Every GraphQL request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }
    /// Sets one rule of the App metrics API's traffic model (as `PUT /admin/traffic`).
    pub fn set_traffic(&self, rule: metrics::TrafficRule) -> Result<(), PlatformError> {
        lock(&self.shared.model).set_traffic(rule)
    }
    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        lock(&self.shared.requests).clear();
    }
    /// Replaces the injected faults (the 429 burst counts from now).
    pub fn set_faults(&self, f: Faults) {
        self.shared.set_faults(f);
    }
    /// Creates another API token for the account of `email` (see [`model::Model::add_api_token`]).
    pub fn add_api_token(&self, email: &str, token: &str) -> bool {
        lock(&self.shared.model).add_api_token(email, token)
    }
    /// Revokes an API token (see [`model::Model::revoke_api_token`]).
    pub fn revoke_api_token(&self, email: &str, token: &str) -> bool {
        lock(&self.shared.model).revoke_api_token(email, token)
    }
    /// The injected faults (`rateLimitBurst` is what is left of the burst).
    pub fn faults(&self) -> Faults {
        self.shared.faults()
    }
    /// The model as JSON (what `GET /admin/state` answers; no tokens).
    pub fn state(&self) -> serde_json::Value {
        self.shared.advance();
        self.shared.dump()
    }
    /// Deploys a new version (see [`model::Model::deploy`]).
    pub fn deploy(&self, req: DeployRequest) -> Result<DeployOutcome, PlatformError> {
        self.shared.mutate(|m, now| m.deploy(&req, now))
    }
    /// Adds a developer account (see [`model::Model::add_account`]); its token is never logged.
    pub fn add_account(&self, account: SeedAccount) -> Result<model::Account, PlatformError> {
        self.shared.mutate(|m, _| m.add_account(&account))
    }
    /// Adds an app with its environments and versions (see [`model::Model::add_app`]).
    pub fn add_app(&self, app: SeedApp) -> Result<(), PlatformError> {
        self.shared.mutate(|m, now| m.add_app(&app, now))
    }
    /// Adds a site.
    pub fn add_site(&self, site: SeedSite) -> Result<SiteInfo, PlatformError> {
        self.shared.mutate(|m, _| m.add_site(site))
    }
    /// A customer's admin installs the app through its installation link (see
    /// [`model::Model::link_install`]).
    pub fn link_install(&self, req: LinkInstallRequest) -> Result<LinkInstallOutcome, PlatformError> {
        self.shared.mutate(|m, now| m.link_install(&req, now))
    }
    /// The app's owner acts in the developer console (see [`model::Model::console`]); answers the
    /// app's sharing state.
    pub fn console(&self, req: ConsoleRequest) -> Result<ConsoleOutcome, PlatformError> {
        self.shared.mutate(|m, now| m.console(&req, now))
    }
    /// The app is listed on (or submitted to) the Marketplace, or no longer (see
    /// [`model::Model::set_listed`]); answers the app's sharing state.
    pub fn set_listed(&self, app_id: &str, listed: bool) -> Result<ConsoleOutcome, PlatformError> {
        self.shared.mutate(|m, _| m.set_listed(app_id, listed))
    }
    /// A customer's site admin moves their installation to a newer version (any major).
    pub fn site_upgrade(&self, req: SiteUpgradeRequest) -> Result<SiteUpgradeOutcome, PlatformError> {
        self.shared.mutate(|m, now| m.site_admin_upgrade(&req, now))
    }
    /// The window over which a new minor reaches the installations of its major (default 2 s;
    /// zero: in the deploy itself). [`EmulatorConfig`] has no field for it (yet): set it here.
    pub fn set_minor_rollout(&self, window: Duration) {
        self.shared.set_settings(&RuntimeSettings {
            minor_rollout_ms: Some(u64::try_from(window.as_millis()).unwrap_or(u64::MAX)),
        });
    }
    /// The settings that may change while the emulator runs.
    pub fn settings(&self) -> RuntimeSettings {
        self.shared.settings()
    }
    /// Forgets finished bulk upgrades; answers how many.
    pub fn forget_finished_rollouts(&self) -> usize {
        self.shared.mutate(|m, _| Ok(m.forget_finished_rollouts())).unwrap_or(0)
    }
    /// Adds many sites, installations and link installs at once, all or nothing (see
    /// [`model::Model::batch`] and `POST /admin/batch`).
    pub fn batch(&self, req: &BatchRequest) -> Result<BatchOutcome, PlatformError> {
        self.shared.mutate(|m, now| m.batch(req, now))
    }
    /// How many times the state file was written so far (with a [`EmulatorConfig::state_file`]):
    /// once at start, then at most every [`PERSIST_INTERVAL`] while the model changes, and once
    /// when the emulator stops.
    pub fn persist_writes(&self) -> u64 {
        self.shared.writes.load(Ordering::Relaxed)
    }
    /// Whether the state file holds the model as it is now (true without a state file).
    pub fn persisted(&self) -> bool {
        !self.shared.dirty()
    }
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.ticker.abort();
        self.persister.abort();
        self.server.abort();
        // The last state, whatever the persister had written (this waits for a write under way).
        self.shared.persist();
    }
}

fn spawn_ticker(shared: Arc<Shared>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_millis(25));
        loop {
            interval.tick().await;
            shared.advance();
        }
    })
}

/// Writes the state file behind the requests: at most every [`PERSIST_INTERVAL`], when the
/// model changed, on a blocking thread (serializing a large platform takes a while).
fn spawn_persister(shared: Arc<Shared>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if shared.state_file.is_none() {
            return;
        }
        let mut interval = tokio::time::interval(PERSIST_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            if shared.dirty() {
                let s = shared.clone();
                if let Err(e) = tokio::task::spawn_blocking(move || s.persist()).await {
                    tracing::warn!(error = %e, "emulator: the state writer failed");
                }
            }
        }
    })
}

/// Starts an emulator on `listen` (use `127.0.0.1:0` for a random port) in the current tokio
/// runtime; it serves until the returned handle is dropped.
pub async fn start(config: EmulatorConfig, listen: SocketAddr) -> anyhow::Result<RunningEmulator> {
    let shared = Shared::new(&config)?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let app = router(shared.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let server = tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "emulator: server stopped");
        }
    });
    let ticker = spawn_ticker(shared.clone());
    let persister = spawn_persister(shared.clone());
    Ok(RunningEmulator { shared, addr, shutdown: Some(tx), server, ticker, persister })
}

/// Serves an emulator on `listen` until `shutdown` completes (`forgeops-dev platform serve`).
pub async fn serve(
    config: EmulatorConfig,
    listen: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let shared = Shared::new(&config)?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(
        graphql = %format!("http://{addr}/graphql"),
        admin = %format!("http://{addr}/admin"),
        "emulator: serving the Forge GraphQL gateway"
    );
    let ticker = spawn_ticker(shared.clone());
    let persister = spawn_persister(shared.clone());
    let app = router(shared.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let result = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    ticker.abort();
    persister.abort();
    let last = shared.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || last.persist()).await {
        tracing::warn!(error = %e, "emulator: could not write the last state");
    }
    result.map_err(Into::into)
}

fn router(shared: Arc<Shared>) -> Router {
    let admin = Router::new()
        .route("/deploy", post(admin_deploy))
        .route("/accounts", post(admin_add_account))
        .route("/api-tokens", post(admin_add_token).delete(admin_revoke_token))
        .route("/apps", post(admin_add_app))
        .route("/sites", post(admin_add_site).get(admin_sites))
        .route("/link-install", post(admin_link_install))
        .route("/batch", post(admin_batch).layer(DefaultBodyLimit::max(BATCH_BODY_LIMIT)))
        .route("/console", post(admin_console))
        .route("/marketplace", post(admin_marketplace))
        .route("/site-upgrade", post(admin_site_upgrade))
        .route("/faults", get(admin_get_faults).put(admin_put_faults))
        .route("/requests", get(admin_requests).delete(admin_clear_requests))
        .route("/state", get(admin_state))
        .route("/settings", get(admin_get_settings).put(admin_put_settings))
        .route("/traffic", get(admin_get_traffic).put(admin_put_traffic))
        .route("/forget-finished-rollouts", post(admin_forget))
        .layer(middleware::from_fn(loopback_only));
    Router::new().route("/graphql", post(graphql)).nest("/admin", admin).with_state(shared)
}

fn json_response(status: StatusCode, value: &impl Serialize) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

fn gateway_error(status: StatusCode, error_type: &str, message: &str) -> Response {
    json_response(
        status,
        &serde_json::json!({"errors": [{"message": message, "extensions": {"errorType": error_type, "statusCode": status.as_u16()}}]}),
    )
}

fn admin_error(e: &PlatformError) -> Response {
    let status = StatusCode::from_u16(e.status_code).unwrap_or(StatusCode::BAD_REQUEST);
    json_response(status, &serde_json::json!({"error": e}))
}

fn admin_result<T: Serialize>(r: Result<T, PlatformError>) -> Response {
    match r {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => admin_error(&e),
    }
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, PlatformError> {
    serde_json::from_slice(body)
        .map_err(|e| PlatformError::new(model::error_type::BAD_REQUEST, 400, format!("bad JSON body: {e}")))
}

async fn loopback_only(ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request, next: Next) -> Response {
    if peer.ip().is_loopback() {
        next.run(req).await
    } else {
        json_response(StatusCode::FORBIDDEN, &serde_json::json!({"error": {"message": "admin API: loopback only"}}))
    }
}

async fn admin_deploy(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    admin_result(parse_body::<DeployRequest>(&body).and_then(|req| s.mutate(|m, now| m.deploy(&req, now))))
}

async fn admin_add_account(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    admin_result(parse_body::<SeedAccount>(&body).and_then(|a| s.mutate(|m, _| m.add_account(&a))))
}

/// The body of `POST`/`DELETE /admin/api-tokens`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TokenRequest {
    email: String,
    api_token: String,
}

fn no_account(email: &str) -> PlatformError {
    PlatformError::new(model::error_type::NOT_FOUND, 404, format!("no account {email} (or no such token)"))
}

async fn admin_add_token(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    admin_result(parse_body::<TokenRequest>(&body).and_then(|t| {
        if t.api_token.is_empty() {
            return Err(PlatformError::new(model::error_type::BAD_REQUEST, 400, "apiToken must not be empty"));
        }
        let added = lock(&s.model).add_api_token(&t.email, &t.api_token);
        if added { Ok(serde_json::json!({"email": t.email})) } else { Err(no_account(&t.email)) }
    }))
}

async fn admin_revoke_token(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    admin_result(parse_body::<TokenRequest>(&body).and_then(|t| {
        let revoked = lock(&s.model).revoke_api_token(&t.email, &t.api_token);
        if revoked { Ok(serde_json::json!({"email": t.email})) } else { Err(no_account(&t.email)) }
    }))
}

async fn admin_add_app(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    admin_result(parse_body::<SeedApp>(&body).and_then(|a| {
        s.mutate(|m, now| {
            m.add_app(&a, now)?;
            Ok(m.app(&a.id).cloned())
        })
    }))
}

async fn admin_add_site(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    admin_result(parse_body::<SeedSite>(&body).and_then(|site| s.mutate(|m, _| m.add_site(site))))
}

async fn admin_sites(State(s): State<Arc<Shared>>) -> Response {
    let sites: Vec<SiteInfo> = lock(&s.model).sites.iter().map(model::Site::info).collect();
    json_response(StatusCode::OK, &sites)
}

async fn admin_link_install(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    admin_result(parse_body::<LinkInstallRequest>(&body).and_then(|req| s.mutate(|m, now| m.link_install(&req, now))))
}

/// The largest `POST /admin/batch` body (other admin bodies keep axum's default of 2 MB).
const BATCH_BODY_LIMIT: usize = 512 * 1024 * 1024;

async fn admin_batch(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    admin_result(parse_body::<BatchRequest>(&body).and_then(|req| s.mutate(|m, now| m.batch(&req, now))))
}

async fn admin_console(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    admin_result(parse_body::<ConsoleRequest>(&body).and_then(|req| s.mutate(|m, now| m.console(&req, now))))
}

async fn admin_marketplace(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    admin_result(
        parse_body::<MarketplaceRequest>(&body).and_then(|req| s.mutate(|m, _| m.set_listed(&req.app_id, req.listed))),
    )
}

async fn admin_site_upgrade(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    admin_result(
        parse_body::<SiteUpgradeRequest>(&body).and_then(|req| s.mutate(|m, now| m.site_admin_upgrade(&req, now))),
    )
}

async fn admin_get_faults(State(s): State<Arc<Shared>>) -> Response {
    json_response(StatusCode::OK, &s.faults())
}

async fn admin_put_faults(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    match parse_body::<Faults>(&body) {
        Ok(f) => {
            s.set_faults(f);
            json_response(StatusCode::OK, &s.faults())
        }
        Err(e) => admin_error(&e),
    }
}

async fn admin_get_settings(State(s): State<Arc<Shared>>) -> Response {
    json_response(StatusCode::OK, &s.settings())
}

async fn admin_put_settings(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    match parse_body::<RuntimeSettings>(&body) {
        Ok(settings) => {
            s.set_settings(&settings);
            json_response(StatusCode::OK, &s.settings())
        }
        Err(e) => admin_error(&e),
    }
}

/// Sets one rule of the App metrics API's traffic model ([`metrics::TrafficRule`]).
async fn admin_put_traffic(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let rule = match parse_body::<metrics::TrafficRule>(&body) {
        Ok(rule) => rule,
        Err(e) => return admin_error(&e),
    };
    let mut model = lock(&s.model);
    match model.set_traffic(rule) {
        Ok(()) => json_response(StatusCode::OK, &model.traffic.rules()),
        Err(e) => admin_error(&e),
    }
}

async fn admin_get_traffic(State(s): State<Arc<Shared>>) -> Response {
    json_response(StatusCode::OK, &lock(&s.model).traffic.rules())
}

async fn admin_requests(State(s): State<Arc<Shared>>) -> Response {
    json_response(StatusCode::OK, &*lock(&s.requests))
}

async fn admin_clear_requests(State(s): State<Arc<Shared>>) -> Response {
    lock(&s.requests).clear();
    StatusCode::NO_CONTENT.into_response()
}

async fn admin_state(State(s): State<Arc<Shared>>) -> Response {
    s.advance();
    let dump = s.dump();
    json_response(StatusCode::OK, &dump)
}

async fn admin_forget(State(s): State<Arc<Shared>>) -> Response {
    let n = s.mutate(|m, _| Ok(m.forget_finished_rollouts())).unwrap_or(0);
    json_response(StatusCode::OK, &serde_json::json!({"forgotten": n}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphqlBody {
    query: String,
    #[serde(default)]
    variables: Option<serde_json::Value>,
    #[serde(default)]
    operation_name: Option<String>,
}

/// The name of the operation in a query text, when there is exactly one named operation.
fn operation_name_of(query: &str) -> Option<String> {
    let doc = async_graphql::parser::parse_query(query).ok()?;
    match doc.operations {
        async_graphql::parser::types::DocumentOperations::Single(_) => None,
        async_graphql::parser::types::DocumentOperations::Multiple(ops) => {
            if ops.len() == 1 {
                ops.keys().next().map(|k| k.to_string())
            } else {
                None
            }
        }
    }
}

/// The account of `Authorization: Basic base64(email:token)`.
fn authenticate(model: &Model, headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (email, token) = text.split_once(':')?;
    model.authenticate(email, token).map(|a| a.account_id.clone())
}

async fn graphql(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let now = now_ms();
    let parsed: Result<GraphqlBody, _> = serde_json::from_slice(&body);
    let account_id = authenticate(&lock(&s.model), &headers);
    let (operation_name, variables) = match &parsed {
        Ok(b) => (
            b.operation_name.clone().filter(|n| !n.is_empty()).or_else(|| operation_name_of(&b.query)),
            b.variables.clone().unwrap_or(serde_json::Value::Null),
        ),
        Err(_) => (None, serde_json::Value::Null),
    };
    enum Injected {
        Down,
        RateLimited,
        Error,
        Unauthorized,
        Mutation(MutationFaultMode),
    }
    let (faults, injected) = {
        let mut state = lock(&s.faults);
        let injected = if state.faults.down {
            Some(Injected::Down)
        } else if state.burst_left > 0 {
            state.burst_left -= 1;
            Some(Injected::RateLimited)
        } else if state.faults.error_rate > 0.0 && rand::random::<f64>() < state.faults.error_rate {
            Some(Injected::Error)
        } else if account_id.is_some()
            && parsed.is_ok()
            && state.faults.unauthorized_operations.iter().any(|o| Some(o.as_str()) == operation_name.as_deref())
        {
            Some(Injected::Unauthorized)
        } else if account_id.is_some() && parsed.is_ok() {
            let name = operation_name.as_deref().unwrap_or_default();
            state.faults.mutations.iter_mut().find(|f| f.count > 0 && f.operation == name).map(|f| {
                f.count -= 1;
                Injected::Mutation(f.mode)
            })
        } else {
            None
        };
        (state.faults.clone(), injected)
    };
    lock(&s.requests).push(RecordedRequest {
        operation_name: operation_name.clone(),
        variables: variables.clone(),
        account_id: account_id.clone(),
        at_ms: now,
        fault: injected.as_ref().map(|i| {
            match i {
                Injected::Down => "down",
                Injected::RateLimited => "rateLimitBurst",
                Injected::Error => "errorRate",
                Injected::Unauthorized => "unauthorized",
                Injected::Mutation(m) => m.name(),
            }
            .to_string()
        }),
    });
    let mutation_fault = match injected {
        Some(Injected::Down) => {
            return gateway_error(StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE", "Service Unavailable");
        }
        Some(Injected::RateLimited) => {
            let mut r = gateway_error(StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_REQUESTS", "Too many requests");
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        }
        Some(Injected::Error) => {
            return if rand::random::<bool>() {
                gateway_error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_SERVER_ERROR", "Internal Server Error")
            } else {
                gateway_error(StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE", "Service Unavailable")
            };
        }
        Some(Injected::Unauthorized) => {
            return gateway_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "Unauthorized");
        }
        Some(Injected::Mutation(mode)) => Some(mode),
        None => None,
    };
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    let Some(account_id) = account_id else {
        return gateway_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "Unauthorized");
    };
    let body = match parsed {
        Ok(b) => b,
        Err(e) => {
            return gateway_error(StatusCode::BAD_REQUEST, "BAD_REQUEST", &format!("bad GraphQL request body: {e}"));
        }
    };
    s.advance();
    let mut request = async_graphql::Request::new(body.query)
        .variables(async_graphql::Variables::from_json(variables))
        .data(Caller(account_id))
        .data(schema_metrics::ExperimentalApi(headers.contains_key(metrics::EXPERIMENTAL_HEADER)));
    if let Some(name) = operation_name {
        request = request.operation_name(name);
    }
    let response = s.schema.execute(request).await;
    match mutation_fault {
        Some(MutationFaultMode::ApplyThen504) => {
            return gateway_error(StatusCode::GATEWAY_TIMEOUT, "GATEWAY_TIMEOUT", "Gateway Timeout");
        }
        Some(MutationFaultMode::ApplyThenDrop) => {
            // Half of the real answer, then the body fails: hyper cuts the connection.
            let body = serde_json::to_vec(&response).unwrap_or_default();
            let half = Bytes::from(body[..body.len() / 2].to_vec());
            let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
                Ok(half),
                Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "emulator: applyThenDrop fault")),
            ];
            let stream = async_graphql::futures_util::stream::iter(chunks);
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
                axum::body::Body::from_stream(stream),
            )
                .into_response();
        }
        Some(MutationFaultMode::Hang) => tokio::time::sleep(Duration::from_millis(faults.hang_ms)).await,
        None => {}
    }
    let mut r = json_response(StatusCode::OK, &response);
    if let Ok(v) = HeaderValue::from_str(&model::random_uuid()) {
        r.headers_mut().insert("x-request-id", v);
    }
    r
}

#[cfg(test)]
mod tests;
