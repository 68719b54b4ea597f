//! Controllers: each observes its objects, asks `crate::rules` what should be, acts, and reports
//! status. Shared plumbing (context, per-object backoff, status writes, events) lives here.

pub mod bulk_upgrade;
pub mod caches;
pub mod decoded;
pub mod distribution_policy;
pub mod events;
pub mod forge_app;
pub mod installation;
pub mod listing;
pub mod notify;
pub mod own_writes;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;

use crate::api::{ForgeApp, Installation};
use crate::platform::credentials::{CredentialStore, CredentialsError};
use crate::platform::{Credentials, ErrorKind, Platform, PlatformError};
use crate::telemetry::{ControllerLabel, Metrics, ReconcileLabels};

/// How many objects each controller reconciles at once, so a burst of objects (or a slow platform)
/// never opens unbounded platform calls and API requests.
pub mod concurrency {
    /// Installations: each may wait on a platform task.
    pub const INSTALLATIONS: u16 = 32;
    /// ForgeApps: each may read several environments from the platform.
    pub const MEDIUM: u16 = 8;
    /// DistributionPolicies and BulkUpgrades.
    pub const SMALL: u16 = 4;
}

/// The field manager the operator writes status with.
pub const FIELD_MANAGER: &str = "forgeops";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Platform(#[from] PlatformError),
    #[error("{0}")]
    Credentials(#[from] CredentialsError),
    #[error("{0}")]
    InstallationsExist(String),
    /// Something under way must end first (a platform task, the confirmation of a lost answer):
    /// look again after `after`. A finalizer held by it stays.
    #[error("{what}")]
    NotYet { what: String, after: Duration },
    #[error("{0}")]
    Finalizer(Box<kube::runtime::finalizer::Error<Error>>),
    /// The reconcile panicked: a defect, reported for this object (with backoff) instead of
    /// stopping the process.
    #[error("the reconcile panicked (a defect in forgeops; please report it): {0}")]
    Panicked(String),
}

/// What kind of failure an [`Error`] is: `error_policy` and the metrics branch on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCategory {
    /// The Kubernetes API failed or conflicted: retry with backoff.
    Kubernetes,
    /// The platform is rate limiting, unavailable, or busy: retry with backoff.
    PlatformRetryable,
    /// The platform refused (not found, permission denied, limit reached, unsupported): retrying the
    /// same request will not help; look again after a long while, or when the object changes.
    PlatformRefused,
    /// No usable credentials: wait for the Secret to change (re-read after a while).
    Credentials,
    /// An expected state the user resolves (installations hold an app): wait for a change.
    Waiting,
    /// A defect in forgeops (a reconcile panicked): retried with backoff, as a failure.
    Defect,
}

impl ErrorCategory {
    /// The label used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCategory::Kubernetes => "kubernetes",
            ErrorCategory::PlatformRetryable => "platform_retryable",
            ErrorCategory::PlatformRefused => "platform_refused",
            ErrorCategory::Credentials => "credentials",
            ErrorCategory::Waiting => "waiting",
            ErrorCategory::Defect => "defect",
        }
    }
}

impl Error {
    /// The category of this failure.
    pub fn category(&self) -> ErrorCategory {
        match self {
            Error::Kube(_) => ErrorCategory::Kubernetes,
            Error::Platform(e) if e.kind == ErrorKind::BadCredentials => ErrorCategory::Credentials,
            Error::Platform(e) if e.retryable() => ErrorCategory::PlatformRetryable,
            Error::Platform(_) => ErrorCategory::PlatformRefused,
            Error::Credentials(_) => ErrorCategory::Credentials,
            Error::InstallationsExist(_) | Error::NotYet { .. } => ErrorCategory::Waiting,
            Error::Panicked(_) => ErrorCategory::Defect,
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e) | kube::runtime::finalizer::Error::CleanupFailed(e) => {
                    e.category()
                }
                _ => ErrorCategory::Kubernetes,
            },
        }
    }
}

impl Error {
    /// For [`Error::NotYet`] (also inside the finalizer helper's wrapping): when to look again.
    pub fn look_again_after(&self) -> Option<Duration> {
        use kube::runtime::finalizer::Error as F;
        match self {
            Error::NotYet { after, .. } => Some(*after),
            Error::Finalizer(inner) => match inner.as_ref() {
                F::ApplyFailed(e) | F::CleanupFailed(e) => e.look_again_after(),
                _ => None,
            },
            _ => None,
        }
    }

    /// A write refused because it was based on an outdated copy: 409 Conflict, or the failed
    /// `test` of the finalizer helper's JSON Patch (422 with no field cause).
    pub fn is_stale_write(&self) -> bool {
        use kube::runtime::finalizer::Error as F;
        let api = |e: &kube::Error, finalizer_patch: bool| match e {
            kube::Error::Api(s) => s.code == 409 || (finalizer_patch && s.code == 422 && s.reason == "Invalid"),
            _ => false,
        };
        match self {
            Error::Kube(e) => api(e, false),
            Error::Finalizer(inner) => match inner.as_ref() {
                F::AddFinalizer(e) | F::RemoveFinalizer(e) => api(e, true),
                F::ApplyFailed(e) | F::CleanupFailed(e) => e.is_stale_write(),
                _ => false,
            },
            _ => false,
        }
    }
}

/// What the finalizer helper's result comes to. An object already gone when its finalizer was to
/// be removed (404: someone else removed the last finalizer, or the object was deleted with it) is
/// what removing the finalizer was for: done, not a failure.
pub fn finalized(result: Result<Action, kube::runtime::finalizer::Error<Error>>) -> Result<Action, Error> {
    match result {
        Err(kube::runtime::finalizer::Error::RemoveFinalizer(kube::Error::Api(s))) if s.code == 404 => {
            Ok(Action::await_change())
        }
        other => other.map_err(Error::from),
    }
}

/// An [`Api`] in `namespace`, or in every namespace when there is none.
pub fn api_in<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

impl From<kube::runtime::finalizer::Error<Error>> for Error {
    fn from(e: kube::runtime::finalizer::Error<Error>) -> Self {
        Error::Finalizer(Box::new(e))
    }
}

/// What every controller shares.
pub struct Context {
    /// Whether this replica may still act on the platform (see [`Fence`]).
    pub fence: Fence,
    pub client: Client,
    /// Events waiting for the background sender (see [`publish_event`]).
    events: tokio::sync::mpsc::Sender<(k8s_openapi::api::core::v1::ObjectReference, Event)>,
    pub metrics: Arc<Metrics>,
    pub platform: Arc<dyn Platform>,
    /// Where the platform credentials of each app are read from.
    pub credentials: Arc<CredentialStore>,
    /// The watch caches reconciles read related objects from.
    pub caches: Arc<caches::Caches>,
    /// Tells about objects a controller's watch cannot decode (see [`decoded`]).
    pub undecodable: decoded::Undecodable,
    /// Where the operator keeps its own objects (the bulk upgrades' concurrency Leases).
    pub operator_namespace: String,
    backoff: Backoff,
    /// When each ForgeApp was last read from the platform by this process.
    refreshed: Mutex<HashMap<String, std::time::Instant>>,
    /// When each ForgeApp's status was last written by this process.
    counted: Mutex<HashMap<String, std::time::Instant>>,
    /// What the platform last listed for each app: installations by (environment key, site).
    platform_installations: Mutex<HashMap<String, PlatformListing>>,
    /// Asks the Installation controller to look again at one Installation (see [`listing`]).
    installation_triggers: tokio::sync::mpsc::UnboundedSender<kube::runtime::reflector::ObjectRef<Installation>>,
    installation_trigger_stream:
        Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<kube::runtime::reflector::ObjectRef<Installation>>>>,
    /// The resourceVersion each object had after this process last wrote its status, and when.
    written: Mutex<own_writes::OwnWrites>,
}

/// An object's namespace, name and resourceVersion, as [`own_writes::OwnWrites`] keys them.
fn key_of<K: Resource>(obj: &K) -> (&str, &str, Option<&str>) {
    let meta = obj.meta();
    (
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
        meta.resource_version.as_deref(),
    )
}

/// How long after its own status write this process waits for the watch to deliver it before
/// reading the object afresh instead.
pub const WATCH_LAG: Duration = Duration::from_secs(2);

/// Whether this replica still leads: with leader election, it may act on the platform only while
/// its last renewal of the leader Lease is younger than the renew deadline. Checked before every
/// platform mutation, so a replica that was frozen (SIGSTOP, a VM pause) past its Lease sends
/// nothing when it wakes, even before its renewal loop notices the Lease is gone. Without leader
/// election it always holds.
#[derive(Clone, Default)]
pub struct Fence(Option<Arc<FenceState>>);

struct FenceState {
    renewed: Mutex<std::time::Instant>,
    deadline: Duration,
}

impl Fence {
    /// A fence renewed now, holding for `deadline` after each renewal.
    pub fn leading(deadline: Duration) -> Fence {
        Fence(Some(Arc::new(FenceState { renewed: Mutex::new(std::time::Instant::now()), deadline })))
    }

    /// Notes a successful renewal of the Lease.
    pub fn renewed(&self) {
        if let Some(state) = &self.0 {
            *state.renewed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = std::time::Instant::now();
        }
    }

    /// Whether this replica may send a platform mutation now.
    pub fn holds(&self) -> bool {
        match &self.0 {
            None => true,
            Some(state) => {
                state.renewed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).elapsed() < state.deadline
            }
        }
    }

    /// [`Error::NotYet`] unless the fence holds: what a mutation returns instead of being sent.
    pub fn check(&self) -> Result<(), Error> {
        if self.holds() {
            return Ok(());
        }
        Err(Error::NotYet {
            what: "this replica has not renewed the leader Lease within its renew deadline: nothing is sent to the \
                   platform until it does"
                .into(),
            after: Duration::from_secs(1),
        })
    }
}

/// One environment's installations by site.
type SiteListing = HashMap<Box<str>, Box<[PlatformInstallation]>>;

/// An app's installations as the platform last listed them, by environment key and site: one per
/// product the app is installed into there. There is an entry per site, so it is kept small:
/// boxed strings and slices (a `Vec` of one 96-byte entry allocates room for four), grouped by
/// environment instead of repeating its key in every entry. At 3,000 sites the former form (a map
/// by (environment key, site) of vectors of `String`s) took about 650 bytes a site, this one about
/// 220; a refresh holds two listings at once, the last one and the new one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlatformListing {
    by_environment: HashMap<Box<str>, SiteListing>,
}

impl PlatformListing {
    /// Adds one installation of `environment_key` on `site`.
    pub fn add(&mut self, environment_key: &str, site: &str, entry: PlatformInstallation) {
        let sites = match self.by_environment.get_mut(environment_key) {
            Some(sites) => sites,
            None => self.by_environment.entry(environment_key.into()).or_default(),
        };
        match sites.get_mut(site) {
            Some(entries) => {
                let mut all = std::mem::take(entries).into_vec();
                all.push(entry);
                // The same listing compares equal whatever order the pages came in.
                all.sort_by(|a, b| (&a.product, &a.id).cmp(&(&b.product, &b.id)));
                *entries = all.into_boxed_slice();
            }
            None => {
                sites.insert(site.into(), Box::new([entry]));
            }
        }
    }

    /// The installations of `environment_key` on `site`.
    pub fn on(&self, environment_key: &str, site: &str) -> &[PlatformInstallation] {
        self.by_environment.get(environment_key).and_then(|s| s.get(site)).map(|e| &e[..]).unwrap_or_default()
    }

    /// Every (environment key, site) with its installations.
    pub fn entries(&self) -> impl Iterator<Item = ((&str, &str), &[PlatformInstallation])> {
        self.by_environment.iter().flat_map(|(env, sites)| sites.iter().map(move |(s, e)| ((&**env, &**s), &e[..])))
    }

    /// The (environment key, site) entries that differ between `self` and `other` (in either).
    pub fn changed_from(&self, other: &PlatformListing) -> Vec<(String, String)> {
        let mut changed: Vec<(String, String)> = self
            .entries()
            .filter(|((env, site), e)| other.on(env, site) != *e)
            .map(|((env, site), _)| (env.to_string(), site.to_string()))
            .collect();
        changed.extend(
            other
                .entries()
                .filter(|((env, site), _)| self.on(env, site).is_empty())
                .map(|((env, site), _)| (env.to_string(), site.to_string())),
        );
        changed
    }
}

/// One installation as the platform last listed it (with the app's other installations, a page
/// of 100 at a time, when the ForgeApp was read), so Installations learn what the platform did on
/// its own (minor roll-outs, bulk-upgrade rollouts) without a request each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformInstallation {
    pub id: Box<str>,
    /// The installed version, as the platform's dotted string.
    pub version: Option<Box<str>>,
    /// The product of its installation context (`jira`, `confluence`, ...).
    pub product: Box<str>,
    /// The version whose code runs there (the platform's `computeVersion`).
    pub compute_version: Option<Box<str>>,
}

impl Context {
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        platform: Arc<dyn Platform>,
        credentials: Arc<CredentialStore>,
        caches: Arc<caches::Caches>,
        operator_namespace: String,
        instance: Option<String>,
    ) -> Self {
        let undecodable = decoded::Undecodable::new(client.clone(), instance.clone());
        let (events, queued) = tokio::sync::mpsc::channel(EVENT_QUEUE);
        let recorder = events::Recorder::new(client.clone(), "forgeops".into(), instance);
        tokio::spawn(send_events(Arc::new(recorder), queued));
        let (installation_triggers, stream) = tokio::sync::mpsc::unbounded_channel();
        Context {
            fence: Fence::default(),
            undecodable,
            installation_triggers,
            installation_trigger_stream: Mutex::new(Some(stream)),
            events,
            client,
            metrics,
            platform,
            credentials,
            caches,
            operator_namespace,
            backoff: Backoff::default(),
            refreshed: Mutex::new(HashMap::new()),
            counted: Mutex::new(HashMap::new()),
            platform_installations: Mutex::new(HashMap::new()),
            written: Mutex::new(own_writes::OwnWrites::default()),
        }
    }

    fn own_writes(&self) -> std::sync::MutexGuard<'_, own_writes::OwnWrites> {
        self.written.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notes the object this process's status write returned (see [`Context::may_be_stale`]).
    pub fn wrote<K: Resource>(&self, written: &K) {
        let (ns, name, rv) = key_of(written);
        self.own_writes().wrote(ns, name, rv, std::time::Instant::now());
    }

    /// Forgets what [`Context::wrote`] noted about an object that is going away.
    pub fn forget_written<K: Resource>(&self, obj: &K) {
        let (ns, name, _) = key_of(obj);
        self.own_writes().forget(ns, name);
    }

    /// Forgets what [`Context::wrote`] noted about `cached` once the cache shows that very write
    /// (see [`own_writes::OwnWrites::forget_delivered`]): for the kind there are thousands of,
    /// which never asks [`Context::knows_latest`].
    pub fn forget_delivered<K: Resource>(&self, cached: &K) {
        let (ns, name, rv) = key_of(cached);
        self.own_writes().forget_delivered(ns, name, rv);
    }

    /// Whether a cached object may predate this process's last status write of it: true when this
    /// process wrote it and the cache does not show the resourceVersion that write returned (the
    /// watch has not delivered it yet, or someone wrote after it). An object this process never
    /// wrote is as fresh in the cache as anywhere: the cache listed it after every earlier writer.
    pub fn may_be_stale<K: Resource>(&self, cached: &K) -> bool {
        let (ns, name, rv) = key_of(cached);
        self.own_writes().may_be_stale(ns, name, rv)
    }

    /// Whether the cache may be stale ([`Context::may_be_stale`]) only because this process wrote
    /// the object less than [`WATCH_LAG`] ago: the watch is about to deliver that write, and a
    /// reconcile of its own follows it. A reconcile set off by an earlier event of the same
    /// reconcile's writes (a pre-send record, then the task) waits for it instead of reading the
    /// object afresh.
    pub fn awaits_own_write<K: Resource>(&self, cached: &K) -> bool {
        let (ns, name, rv) = key_of(cached);
        self.own_writes().awaits_own_write(ns, name, rv, std::time::Instant::now(), WATCH_LAG)
    }

    /// Whether this process knows the cached copy to be the latest: it wrote or read afresh that
    /// very resourceVersion. False for everything after a (re)start or failover until the object is
    /// read afresh, so the first platform mutation for an object never rests on a copy a previous
    /// leader may have outdated (see the DistributionPolicy controller).
    pub fn knows_latest<K: Resource>(&self, cached: &K) -> bool {
        let (ns, name, rv) = key_of(cached);
        self.own_writes().knows_latest(ns, name, rv)
    }

    /// How long since this process last read the object `key` from the platform.
    pub fn since_refresh(&self, key: &str) -> Option<Duration> {
        self.refreshed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(key).map(|t| t.elapsed())
    }

    /// Replaces what the platform lists for app `app_id`; answers the (environment key, site)
    /// entries that changed.
    pub fn set_platform_installations(&self, app_id: &str, listed: PlatformListing) -> Vec<(String, String)> {
        let mut index = self.platform_installations.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let changed = match index.get(app_id) {
            Some(before) => listed.changed_from(before),
            None => listed.changed_from(&PlatformListing::default()),
        };
        index.insert(app_id.to_string(), listed);
        changed
    }

    /// Asks the Installation controller to reconcile `inst` soon.
    pub fn trigger_installation(&self, inst: &Installation) {
        let _ = self.installation_triggers.send(kube::runtime::reflector::ObjectRef::from_obj(inst));
    }

    /// The stream of [`Context::trigger_installation`] requests; the Installation controller takes
    /// it once.
    pub fn installation_trigger_stream(
        &self,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<kube::runtime::reflector::ObjectRef<Installation>>> {
        self.installation_trigger_stream.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }

    /// What the platform last listed for app `app_id` in environment `environment_key` on `site`.
    pub fn platform_installations_on(
        &self,
        app_id: &str,
        environment_key: &str,
        site: &str,
    ) -> Vec<PlatformInstallation> {
        let index = self.platform_installations.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        index.get(app_id).map(|l| l.on(environment_key, site).to_vec()).unwrap_or_default()
    }

    /// Notes that the status of object `key` was just written.
    pub fn counted(&self, key: &str) {
        self.counted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key.to_string(), std::time::Instant::now());
    }

    /// How much longer object `key` should wait before its status is written again, if it was
    /// written less than `every` ago.
    pub fn recount_wait(&self, key: &str, every: Duration) -> Option<Duration> {
        let last = *self.counted.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(key)?;
        every.checked_sub(last.elapsed()).filter(|d| !d.is_zero())
    }

    /// Notes that the object `key` was just read from the platform.
    pub fn mark_refreshed(&self, key: &str) {
        self.refreshed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key.to_string(), std::time::Instant::now());
    }

    /// Whose `app`'s appId is, from the watch cache of the owner Leases (see [`crate::ownership`]).
    pub fn claim_of(&self, app: &ForgeApp) -> crate::ownership::Claim {
        let lease = self.caches.lease(&self.operator_namespace, &crate::ownership::lease_name(&app.spec.app_id));
        crate::ownership::claim_of(lease.as_deref(), app)
    }

    /// Claims `app`'s appId for it, or tells who owns it (see [`crate::ownership::claim`]).
    pub async fn claim(&self, app: &ForgeApp) -> Result<crate::ownership::Claim, Error> {
        let api: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(self.client.clone(), &self.operator_namespace);
        let cached = self.caches.lease(&self.operator_namespace, &crate::ownership::lease_name(&app.spec.app_id));
        Ok(crate::ownership::claim(&api, cached.as_deref(), app).await?)
    }

    /// Gives up `app`'s claim (its deletion is done).
    pub async fn release_claim(&self, app: &ForgeApp) -> Result<(), Error> {
        let api: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(self.client.clone(), &self.operator_namespace);
        Ok(crate::ownership::release(&api, app).await?)
    }

    /// The platform credentials `app` acts with: its own Secret, or the operator's default.
    pub async fn credentials_for(&self, app: &ForgeApp) -> Result<Credentials, Error> {
        let namespace = app.metadata.namespace.as_deref().unwrap_or_default();
        let secret = app.spec.credentials_secret_ref.as_ref().map(|r| r.name.as_str());
        Ok(self.credentials.get(namespace, secret).await?)
    }

    /// Notes a platform failure: refused credentials are re-read from their Secret next time.
    pub fn saw_platform_error(&self, creds: &Credentials, error: &PlatformError) {
        if error.kind == ErrorKind::BadCredentials {
            let label = crate::telemetry::CredentialsLabel { credentials: creds.source.clone() };
            self.metrics.credentials_refused.get_or_create(&label).inc();
            self.credentials.invalidate(creds);
        }
    }
}

/// Per-object exponential backoff for failed reconciliations: 1s, 2s, 4s… up to 5 minutes (30 s
/// after platform failures), reset
/// by a success, so a failing object never hot-loops and never delays the others.
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    pub const MAX: Duration = Duration::from_secs(300);
    /// The longest wait after a retryable platform failure. Shorter than [`Backoff::MAX`]: while
    /// the platform keeps failing, the adapter's circuit breaker answers these retries without a
    /// request, and once it answers again every object is back within this long.
    pub const MAX_PLATFORM: Duration = Duration::from_secs(30);

    pub fn next_delay(&self, key: &str) -> Duration {
        self.next_delay_up_to(key, Self::MAX)
    }

    /// [`Backoff::next_delay`], at most `max`.
    pub fn next_delay_up_to(&self, key: &str, max: Duration) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = failures.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        Duration::from_secs(1u64.checked_shl(*n - 1).unwrap_or(u64::MAX)).min(max)
    }

    pub fn reset(&self, key: &str) {
        self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(key);
    }
}

/// Times a reconciliation and counts its outcome; resets the object's backoff on success.
pub async fn instrumented<K, F>(ctx: &Context, controller: &'static str, obj: &K, run: F) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()>,
    F: std::future::Future<Output = Result<Action, Error>>,
{
    let started = std::time::Instant::now();
    let result = unpanicked(run).await;
    if let Err(Error::Panicked(what)) = &result {
        tracing::error!(controller, object = %object_key(obj), panic = %what, "a reconcile panicked");
    }
    ctx.metrics
        .reconcile_seconds
        .get_or_create(&ControllerLabel { controller })
        .observe(started.elapsed().as_secs_f64());
    let (outcome, category) = match &result {
        Ok(_) => ("success", "none"),
        Err(e) => ("error", e.category().as_str()),
    };
    ctx.metrics.reconciliations.get_or_create(&ReconcileLabels { controller, result: outcome, category }).inc();
    if result.is_ok() {
        ctx.backoff.reset(&object_key(obj));
    }
    result
}

/// Runs a reconcile; a panic in it becomes [`Error::Panicked`] for that object, never the
/// process's end (kube-runtime's controller would pass the panic on, and every restart, and the
/// standby, would meet the same object again).
pub async fn unpanicked<F>(run: F) -> Result<Action, Error>
where
    F: std::future::Future<Output = Result<Action, Error>>,
{
    use futures::FutureExt as _;
    match std::panic::AssertUnwindSafe(run).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".to_string());
            Err(Error::Panicked(what))
        }
    }
}

/// How long to wait before looking again at an object the platform refused, when nothing else
/// changes it.
pub const LOOK_AGAIN: Duration = Duration::from_secs(300);

/// How long to wait before looking again at an object whose credentials are unusable. The Secret is
/// not watched (that would need list and watch on every Secret); a look costs no platform request
/// while the Secret still holds refused credentials (see [`CredentialStore`]), and at most one read
/// of the Secret per cache period, so a fixed Secret is picked up within this plus that period.
pub const LOOK_AGAIN_CREDENTIALS: Duration = Duration::from_secs(30);

/// On failure: retryable failures back off per object (1 s, 2 s, 4 s … 5 min, reset by a success);
/// refusals wait for a change (or look again after [`LOOK_AGAIN`]), unusable credentials look
/// again after [`LOOK_AGAIN_CREDENTIALS`]; an
/// expected state waits for a change. Never a hot loop, and a warning only for real failures.
pub fn retry_later<K: Resource<DynamicType = ()>>(controller: &str, obj: &K, error: &Error, ctx: &Context) -> Action {
    Action::requeue(retry_delay(controller, obj, error, ctx))
}

/// How long [`retry_later`] waits (and logs why).
pub fn retry_delay<K: Resource<DynamicType = ()>>(controller: &str, obj: &K, error: &Error, ctx: &Context) -> Duration {
    let object = object_key(obj);
    if let Some(after) = error.look_again_after() {
        tracing::debug!(controller, %object, %error, retry_in = ?after, "waiting for something under way");
        return after;
    }
    let category = error.category();
    match category {
        ErrorCategory::Kubernetes | ErrorCategory::PlatformRetryable | ErrorCategory::Defect => {
            let max = if category == ErrorCategory::PlatformRetryable { Backoff::MAX_PLATFORM } else { Backoff::MAX };
            let delay = ctx.backoff.next_delay_up_to(&object, max);
            if error.is_stale_write() {
                // Expected now and then: the watch had not delivered the object's last change yet.
                tracing::info!(controller, %object, %error, retry_in = ?delay, "the cached copy was stale; retrying");
            } else {
                tracing::warn!(controller, %object, %error, category = category.as_str(), retry_in = ?delay, "reconcile failed");
            }
            delay
        }
        ErrorCategory::PlatformRefused => {
            tracing::info!(controller, %object, %error, category = category.as_str(), "waiting for a change");
            LOOK_AGAIN
        }
        ErrorCategory::Credentials => {
            tracing::info!(controller, %object, %error, category = category.as_str(), "waiting for the Secret to change");
            LOOK_AGAIN_CREDENTIALS
        }
        ErrorCategory::Waiting => {
            tracing::debug!(controller, %object, %error, "waiting for a change");
            LOOK_AGAIN
        }
    }
}

/// An object that belongs to one ForgeApp (through `spec.appRef`).
pub trait OfApp {
    fn app_name(&self) -> &str;
}

impl OfApp for crate::api::Installation {
    fn app_name(&self) -> &str {
        &self.spec.app_ref.name
    }
}

impl OfApp for crate::api::DistributionPolicy {
    fn app_name(&self) -> &str {
        &self.spec.app_ref.name
    }
}

impl OfApp for crate::api::BulkUpgrade {
    fn app_name(&self) -> &str {
        &self.spec.app_ref.name
    }
}

/// The objects in `store` that belong to app `app` in `namespace`: maps a change of an app (or of a
/// sibling) to the objects to reconcile.
pub fn objects_of_app<K>(
    store: &kube::runtime::reflector::Store<K>,
    namespace: Option<String>,
    app: &str,
) -> Vec<kube::runtime::reflector::ObjectRef<K>>
where
    K: OfApp + Resource<DynamicType = ()> + Clone + 'static,
{
    store
        .state()
        .iter()
        .filter(|o| o.namespace() == namespace && o.app_name() == app)
        .map(|o| kube::runtime::reflector::ObjectRef::from_obj(o.as_ref()))
        .collect()
}

/// The dependents of each app that changed (from [`caches::Caches::take_app_changes`]), mapped
/// to objects by `objects_of`: a trigger stream for `reconcile_on`.
pub fn dependents_of_changed_apps<K, F>(
    changes: Option<tokio::sync::mpsc::UnboundedReceiver<kube::runtime::reflector::ObjectRef<ForgeApp>>>,
    objects_of: F,
) -> futures::stream::BoxStream<'static, kube::runtime::reflector::ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + 'static,
    F: Fn(&str, &str) -> Vec<kube::runtime::reflector::ObjectRef<K>> + Send + 'static,
{
    use futures::StreamExt;
    let Some(rx) = changes else { return futures::stream::empty().boxed() };
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) })
        .flat_map(move |app| {
            let objects = objects_of(app.namespace.as_deref().unwrap_or_default(), &app.name);
            futures::stream::iter(objects)
        })
        .boxed()
}

/// A stable key for an object, for backoff bookkeeping.
pub fn object_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!("{}/{}/{}", K::kind(&()), obj.namespace().unwrap_or_default(), obj.name_any())
}

/// The current time, truncated to whole seconds as the API server stores it, so a status computed
/// now compares equal to the same status read back.
pub fn now() -> Time {
    whole_second(jiff::Timestamp::now())
}

/// `now` truncated to whole seconds (see [`now`]).
pub fn whole_second(now: jiff::Timestamp) -> Time {
    // A whole second of a valid timestamp is valid; should it ever not be, the untruncated time.
    Time(jiff::Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// A namespaced object whose status the operator writes.
pub trait NamespacedObject:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
{
}

impl<K> NamespacedObject for K where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
{
}

/// Writes an object's status with server-side apply. The operator owns status and never writes spec.
/// Answers the object as written.
pub async fn apply_status<K, S>(client: &Client, obj: &K, status: &S) -> Result<K, kube::Error>
where
    K: NamespacedObject,
    S: Serialize,
{
    write_status(client, obj, status).await
}

/// Writes an object's status only if the object is unchanged since it was read: a JSON Patch that
/// tests the resourceVersion, then replaces the whole status (a change answers 409 Conflict and
/// nothing is written). Used where a stale copy must never overwrite a newer record (the
/// Installation's task). A JSON Patch costs the API server far less than a server-side apply,
/// which matters for the kind there are thousands of. Answers the object as written.
pub async fn apply_status_guarded<K, S>(client: &Client, obj: &K, status: &S) -> Result<K, kube::Error>
where
    K: NamespacedObject,
    S: Serialize,
{
    let api: Api<K> = Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
    let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": obj.resource_version()},
        {"op": "add", "path": "/status", "value": status},
    ]))
    .map_err(kube::Error::SerdeError)?;
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    api.patch_status(&obj.name_any(), &params, &Patch::Json::<()>(patch)).await
}

async fn write_status<K, S>(client: &Client, obj: &K, status: &S) -> Result<K, kube::Error>
where
    K: NamespacedObject,
    S: Serialize,
{
    let api: Api<K> = Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(&obj.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body)).await
}

/// How many Events may wait to be sent; past that, new ones are dropped (and counted), as
/// client-go's event broadcaster does, rather than slowing reconciles down.
const EVENT_QUEUE: usize = 4096;
/// How many Events are sent at once.
const EVENT_SENDERS: usize = 4;

/// Sends the queued Events until the queue closes (every [`Context`] is gone).
async fn send_events(
    recorder: Arc<events::Recorder>,
    queued: tokio::sync::mpsc::Receiver<(k8s_openapi::api::core::v1::ObjectReference, Event)>,
) {
    use futures::StreamExt;
    futures::stream::unfold(queued, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })
        .for_each_concurrent(EVENT_SENDERS, |(reference, event)| {
            let recorder = recorder.clone();
            async move {
                if let Err(e) = recorder.publish(&event, &reference).await {
                    tracing::warn!(error = %e, reason = %event.reason, "could not record an event");
                }
            }
        })
        .await;
}

/// Records an Event about `obj`. Events are best effort: they are queued and sent in the
/// background, so a reconcile never waits on one; a failure is logged, never fatal; when the queue
/// is full the Event is dropped and counted in `forgeops_events_dropped_total`.
pub async fn publish_event<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    warning: bool,
    reason: &str,
    note: String,
    action: &str,
) {
    let event = Event {
        type_: if warning { EventType::Warning } else { EventType::Normal },
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if ctx.events.try_send((obj.object_ref(&()), event)).is_err() {
        ctx.metrics.events_dropped.inc();
        tracing::debug!(reason, "the event queue is full: event dropped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(id: &str, product: &str, version: &str) -> PlatformInstallation {
        PlatformInstallation {
            id: id.into(),
            version: Some(version.into()),
            product: product.into(),
            compute_version: None,
        }
    }

    #[test]
    fn a_listing_groups_by_environment_and_site_and_tells_what_changed() {
        let mut before = PlatformListing::default();
        before.add("prod", "a.atlassian.net", listed("1", "jira", "1.0"));
        before.add("prod", "b.atlassian.net", listed("2", "jira", "1.0"));
        before.add("prod", "b.atlassian.net", listed("3", "confluence", "1.0"));
        before.add("stage", "a.atlassian.net", listed("4", "jira", "1.0"));
        assert_eq!(before.on("prod", "a.atlassian.net"), [listed("1", "jira", "1.0")]);
        assert_eq!(before.on("prod", "b.atlassian.net").len(), 2);
        assert!(before.on("prod", "c.atlassian.net").is_empty());
        assert!(before.on("dev", "a.atlassian.net").is_empty());

        // The same installations in another order compare equal.
        let mut again = PlatformListing::default();
        again.add("stage", "a.atlassian.net", listed("4", "jira", "1.0"));
        again.add("prod", "b.atlassian.net", listed("3", "confluence", "1.0"));
        again.add("prod", "b.atlassian.net", listed("2", "jira", "1.0"));
        again.add("prod", "a.atlassian.net", listed("1", "jira", "1.0"));
        assert_eq!(again, before);
        assert!(again.changed_from(&before).is_empty());

        // An upgrade, an uninstall and a new install: each entry named once.
        let mut after = PlatformListing::default();
        after.add("prod", "a.atlassian.net", listed("1", "jira", "2.0"));
        after.add("prod", "b.atlassian.net", listed("2", "jira", "1.0"));
        after.add("prod", "b.atlassian.net", listed("3", "confluence", "1.0"));
        after.add("prod", "c.atlassian.net", listed("5", "jira", "2.0"));
        let mut changed = after.changed_from(&before);
        changed.sort();
        let pair = |e: &str, s: &str| (e.to_string(), s.to_string());
        assert_eq!(
            changed,
            [pair("prod", "a.atlassian.net"), pair("prod", "c.atlassian.net"), pair("stage", "a.atlassian.net")]
        );
    }

    #[test]
    fn a_replica_frozen_past_its_renew_deadline_sends_nothing_until_it_renews() {
        assert!(Fence::default().holds(), "without leader election");
        let fence = Fence::leading(Duration::from_millis(40));
        assert!(fence.holds() && fence.check().is_ok());
        std::thread::sleep(Duration::from_millis(60));
        assert!(!fence.holds(), "frozen past the deadline");
        assert!(matches!(fence.check(), Err(Error::NotYet { .. })));
        fence.renewed();
        assert!(fence.holds());
        assert_eq!(crate::operator::renew_deadline(Duration::from_secs(15)), Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_panicking_reconcile_is_an_error_for_its_object_not_the_end_of_the_process() {
        let panicking = async {
            let creds: Option<u32> = std::hint::black_box(None);
            // Test-only: the panic under test.
            creds.expect("a cancel is decided only with credentials");
            Ok(Action::await_change())
        };
        let result = unpanicked(panicking).await;
        // Test-only (#[cfg(test)]): the assertion's panic.
        let Err(e @ Error::Panicked(_)) = result else { panic!("a panic must come back as an error: {result:?}") };
        assert!(e.to_string().contains("a cancel is decided only with credentials"), "{e}");
        assert_eq!(e.category(), ErrorCategory::Defect);
        assert!(unpanicked(async { Ok(Action::await_change()) }).await.is_ok());
    }

    #[test]
    fn errors_have_categories() {
        use crate::platform::PlatformError;
        let p = |kind| Error::Platform(PlatformError::new(kind, "op", "m"));
        assert_eq!(p(ErrorKind::RateLimited).category(), ErrorCategory::PlatformRetryable);
        assert_eq!(p(ErrorKind::Unavailable).category(), ErrorCategory::PlatformRetryable);
        assert_eq!(p(ErrorKind::InstallationLimitReached).category(), ErrorCategory::PlatformRefused);
        assert_eq!(p(ErrorKind::PermissionDenied).category(), ErrorCategory::PlatformRefused);
        assert_eq!(p(ErrorKind::BadCredentials).category(), ErrorCategory::Credentials);
        assert_eq!(Error::InstallationsExist("x".into()).category(), ErrorCategory::Waiting);
        let wrapped = Error::from(kube::runtime::finalizer::Error::CleanupFailed(p(ErrorKind::Unavailable)));
        assert_eq!(wrapped.category(), ErrorCategory::PlatformRetryable);
    }

    #[test]
    fn a_write_from_an_outdated_copy_is_told_apart_from_other_failures() {
        use kube::runtime::finalizer::Error as F;
        let api = |code, reason: &str| {
            let mut status = kube::core::Status::failure("m", reason);
            status.code = code;
            kube::Error::Api(status.boxed())
        };
        assert!(Error::Kube(api(409, "Conflict")).is_stale_write());
        assert!(Error::from(F::AddFinalizer(api(422, "Invalid"))).is_stale_write(), "the patch's test failed");
        assert!(!Error::Kube(api(422, "Invalid")).is_stale_write(), "a real validation failure");
        assert!(!Error::from(F::AddFinalizer(api(403, "Forbidden"))).is_stale_write());
        assert!(Error::from(F::ApplyFailed(Error::Kube(api(409, "Conflict")))).is_stale_write());
        assert!(
            !Error::Platform(crate::platform::PlatformError::new(ErrorKind::Unavailable, "op", "m")).is_stale_write()
        );
    }

    #[test]
    fn an_object_gone_before_its_finalizer_is_removed_is_done() {
        use kube::runtime::finalizer::Error as F;
        let api = |code, reason: &str| {
            let mut status = kube::core::Status::failure("m", reason);
            status.code = code;
            kube::Error::Api(status.boxed())
        };
        assert!(finalized(Err(F::RemoveFinalizer(api(404, "NotFound")))).is_ok());
        assert!(finalized(Err(F::RemoveFinalizer(api(409, "Conflict")))).is_err());
        assert!(finalized(Err(F::AddFinalizer(api(404, "NotFound")))).is_err(), "only a removal is done by a 404");
        let cleanup = finalized(Err(F::CleanupFailed(Error::Kube(api(404, "NotFound")))));
        assert!(cleanup.is_err(), "a cleanup that failed is a failure");
        assert!(finalized(Ok(Action::requeue(Duration::from_secs(5)))).is_ok());
    }

    #[test]
    fn backoff_grows_per_object_and_resets() {
        let b = Backoff::default();
        assert_eq!(b.next_delay("a"), Duration::from_secs(1));
        assert_eq!(b.next_delay("a"), Duration::from_secs(2));
        assert_eq!(b.next_delay("a"), Duration::from_secs(4));
        assert_eq!(b.next_delay("b"), Duration::from_secs(1), "objects back off independently");
        for _ in 0..100 {
            b.next_delay("a");
        }
        assert_eq!(b.next_delay("a"), Backoff::MAX);
        assert_eq!(b.next_delay_up_to("a", Backoff::MAX_PLATFORM), Backoff::MAX_PLATFORM);
        b.reset("a");
        assert_eq!(b.next_delay("a"), Duration::from_secs(1));
    }
}
