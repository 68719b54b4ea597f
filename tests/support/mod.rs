//! Test support: one real control plane per test binary, shared by every test, each test in a
//! namespace of its own. The control plane is stopped and its directory removed when the test
//! binary exits (an `atexit` hook), and its processes die with the binary even if it is killed.

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod forge_cli;
pub mod platform;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use forgeops::operator::{self, Settings};
use forgeops::platform::{ForgeGateway, GatewayOptions};
use forgeops::telemetry::Metrics;
use forgeops_emulator::EmulatorConfig;
use forgeops_testenv::localcluster::{self, LocalCluster, OPERATOR_USER};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Config, Resource};
use platform::TestPlatform;
use serde::de::DeserializeOwned;

/// What tests need of the shared control plane.
pub struct Shared {
    pub admin: Config,
    pub operator: Config,
    pub kubeconfig: PathBuf,
    pub operator_kubeconfig: PathBuf,
    pub kubectl: PathBuf,
    /// The control plane's directory, removed at exit: logs of operator processes go here too.
    pub dir: PathBuf,
}

static SHARED: OnceLock<Shared> = OnceLock::new();
static BARE: OnceLock<Shared> = OnceLock::new();
static CLUSTER: Mutex<Option<LocalCluster>> = Mutex::new(None);
static BARE_CLUSTER: Mutex<Option<LocalCluster>> = Mutex::new(None);

extern "C" fn stop_cluster() {
    for cluster in [&CLUSTER, &BARE_CLUSTER] {
        if let Ok(mut cluster) = cluster.lock() {
            cluster.take();
        }
    }
}

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The shared control plane, started on first use with the CRDs installed and the operator's RBAC
/// from `deploy/base/rbac.yaml` bound to the operator's test identity.
pub fn shared() -> &'static Shared {
    SHARED.get_or_init(|| start(true))
}

/// A control plane of its own with nothing installed, as a fresh cluster: no CRDs, no RBAC of
/// the operator's. For what installs forgeops itself (the Helm chart), which would otherwise
/// have to delete the shared one's CRDs first.
pub fn bare() -> &'static Shared {
    BARE.get_or_init(|| start(false))
}

fn start(with_forgeops: bool) -> Shared {
    // Started on a thread of its own: the caller is inside a test's runtime.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let cluster = LocalCluster::start(None).await.expect("starting the local control plane");
            let client = Client::try_from(cluster.admin_config()).unwrap();
            if with_forgeops {
                localcluster::install_crds(&client, &forgeops::api::all_crds()).await.expect("installing the CRDs");
                forgeops_testenv::manifests::apply_path(&client, &repo_path("deploy/base/rbac.yaml"))
                    .await
                    .expect("applying RBAC");
                bind_operator_user(&client).await;
            }
            let shared = Shared {
                admin: cluster.admin_config(),
                operator: cluster.operator_config(),
                kubeconfig: cluster.kubeconfig_path(),
                operator_kubeconfig: cluster.operator_kubeconfig_path(),
                dir: cluster.dir().to_path_buf(),
                kubectl: localcluster::binaries().unwrap().join("kubectl"),
            };
            *(if with_forgeops { &CLUSTER } else { &BARE_CLUSTER }).lock().expect("the cluster lock") = Some(cluster);
            forgeops_testenv::sys::at_exit(stop_cluster);
            shared
        })
    })
    .join()
    .expect("control plane start-up panicked")
}

/// Binds the ClusterRole that `deploy/base/rbac.yaml` binds cluster-wide to the user the operator runs as in tests,
/// so the tests prove that role is enough.
async fn bind_operator_user(client: &Client) {
    for role in ["forgeops-operator"] {
        bind_operator_user_to(client, role).await;
    }
}

async fn bind_operator_user_to(client: &Client, role: &str) {
    let name = format!("{role}-test-user");
    let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": OPERATOR_USER}],
    }))
    .unwrap();
    Api::<ClusterRoleBinding>::all(client.clone())
        .patch(&name, &PatchParams::apply("forgeops-test").force(), &Patch::Apply(&binding))
        .await
        .expect("binding the operator role");
}

/// A namespace of the test's own, and an admin client.
pub struct TestNs {
    pub name: String,
    pub client: Client,
    /// The bulk upgrade limits the operator of this namespace runs with.
    pub bulk_limits: forgeops::controllers::bulk_upgrade::Limits,
    /// Leader election for the operators of this namespace (off unless a test sets it).
    pub leader_election: Option<Duration>,
    /// Whether the operators of this namespace use the platform's distribution capability (on
    /// unless a test turns it off).
    pub distribution: bool,
    /// The namespaces besides this one that may use the default credentials Secret (none unless
    /// a test grants some).
    pub credentials_grant: forgeops::platform::credentials::Grant,
    /// The operators of this namespace watch every namespace (for tenancy tests; one such test
    /// per test binary, or two operators would act on each other's objects).
    pub watch_all: bool,
}

impl TestNs {
    pub async fn new(prefix: &str) -> TestNs {
        let shared = shared();
        let client = Client::try_from(shared.admin.clone()).unwrap();
        let name = format!("{prefix}-{}", std::process::id() % 100_000);
        let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("creating the test namespace");
        TestNs {
            name,
            client,
            bulk_limits: Default::default(),
            leader_election: None,
            distribution: true,
            credentials_grant: Default::default(),
            watch_all: false,
        }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Runs the operator's controllers for this namespace only, as the least-privilege operator
    /// identity, on a fresh platform emulator (see [`platform`]). It stops when the returned
    /// handle is dropped.
    pub async fn start_operator(&self) -> RunningOperator {
        self.start_operator_with(EmulatorConfig { task_duration: Duration::from_millis(100), ..Default::default() })
            .await
    }

    /// [`TestNs::start_operator`] with an emulator configured by the test. The test namespace
    /// doubles as the operator's own namespace (for its Secrets and Leases).
    pub async fn start_operator_with(&self, config: EmulatorConfig) -> RunningOperator {
        let platform = self.start_platform(config).await;
        self.start_operator_on(platform).await
    }

    /// Starts an emulator mirroring this namespace, and creates the credentials Secret for it.
    pub async fn start_platform(&self, config: EmulatorConfig) -> Arc<TestPlatform> {
        let platform = TestPlatform::start(self.client.clone(), &self.name, config).await;
        self.grant_operator_own_namespace().await;
        self.put_credentials(platform::CREDENTIALS_SECRET, platform::EMAIL, platform::TOKEN).await;
        platform
    }

    /// Creates or replaces a credentials Secret in this namespace.
    pub async fn put_credentials(&self, name: &str, email: &str, token: &str) {
        let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name},
            "stringData": {"email": email, "apiToken": token},
        }))
        .unwrap();
        self.api::<k8s_openapi::api::core::v1::Secret>()
            .patch(name, &PatchParams::apply("forgeops-test").force(), &Patch::Apply(&secret))
            .await
            .expect("writing the credentials Secret");
    }

    /// Runs the operator's controllers on an emulator already started.
    pub async fn start_operator_on(&self, platform: Arc<TestPlatform>) -> RunningOperator {
        let metrics = Arc::new(Metrics::default());
        let clock = forgeops::clock::Clock::system();
        let config = shared().operator.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let options = GatewayOptions {
            url: platform.emulator.graphql_url(),
            timeout: Duration::from_secs(10),
            attempts: 3,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(500),
            distribution: self.distribution,
            ..GatewayOptions::default()
        };
        let settings = Settings {
            platform: Arc::new(ForgeGateway::new(options, Some(metrics.clone())).unwrap()),
            credentials_secret: platform::CREDENTIALS_SECRET.into(),
            credentials_grant: self.credentials_grant.clone(),
            operator_namespace: self.name.clone(),
            namespace: (!self.watch_all).then(|| self.name.clone()),
            metrics_addr: None,
            instance: Some("test".into()),
            bulk_limits: self.bulk_limits,
            leader_election: self.leader_election,
            health: Default::default(),
            clock: clock.clone(),
        };
        let task_metrics = metrics.clone();
        let task = tokio::spawn(async move {
            operator::run(config, task_metrics, settings, async move {
                let _ = stopped.await;
            })
            .await
        });
        RunningOperator { stop: Some(stop), task: Some(task), metrics, platform, clock }
    }
}

impl TestNs {
    /// Binds the operator's own-namespace role (from `deploy/base/rbac.yaml`) in this namespace.
    pub async fn grant_operator_own_namespace(&self) {
        let binding: RoleBinding = serde_json::from_value(serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "forgeops-operator-test-user", "namespace": self.name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "forgeops-operator-own-namespace"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": OPERATOR_USER}],
        }))
        .unwrap();
        Api::<RoleBinding>::namespaced(self.client.clone(), &self.name)
            .patch("forgeops-operator-test-user", &PatchParams::apply("forgeops-test").force(), &Patch::Apply(&binding))
            .await
            .expect("binding the operator's own-namespace role");
    }
}

pub struct RunningOperator {
    /// The operator's metrics, including every API request it sent.
    pub metrics: Arc<Metrics>,
    /// The platform it acts on.
    pub platform: Arc<TestPlatform>,
    /// The wall clock its bulk-upgrade rules read: the system's until the test sets it.
    pub clock: forgeops::clock::Clock,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), operator::Error>>>,
}

impl RunningOperator {
    /// Waits until the exported metrics contain `text`: a reconcile's outcome is counted after its status write,
    /// so a test that has seen the status may read the metrics a moment early.
    pub async fn wait_metric(&self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let exported = self.metrics.encode();
            if exported.contains(text) {
                return;
            }
            if Instant::now() > deadline {
                panic!("timed out after {timeout:?} waiting for the metrics to contain {text}; last seen:\n{exported}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether the operator's task ended on its own (a panic passed on by a controller ends it).
    pub fn exited(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Stops the controllers and returns how the operator ended.
    pub async fn shutdown(mut self) -> Result<(), operator::Error> {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.expect("operator task panicked")
    }
}

impl Drop for RunningOperator {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Polls `name` until `done` holds, or panics after `timeout` showing the object as last seen.
pub async fn wait_for<K>(api: &Api<K>, name: &str, timeout: Duration, what: &str, done: impl Fn(&K) -> bool) -> K
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = api.get_opt(name).await.expect("reading the object");
        if let Some(obj) = &last
            && done(obj)
        {
            return obj.clone();
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what} on {name}; last seen:\n{last:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A condition of any object, as (status, reason, message).
pub fn condition<K: serde::Serialize>(obj: &K, type_: &str) -> Option<(String, String, String)> {
    let value = serde_json::to_value(obj).ok()?;
    let found = value["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)?.clone();
    let text = |k: &str| found[k].as_str().unwrap_or_default().to_string();
    Some((text("status"), text("reason"), text("message")))
}

/// Waits until condition `type_` of `name` has `status` and `reason`, at the object's current
/// generation, and returns the object.
pub async fn wait_condition<K>(api: &Api<K>, name: &str, type_: &str, status: &str, reason: &str) -> K
where
    K: Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let what = format!("{type_}={status} ({reason})");
    wait_for(api, name, Duration::from_secs(45), &what, |obj| {
        let value = serde_json::to_value(obj).unwrap();
        let current = value["status"]["observedGeneration"] == value["metadata"]["generation"];
        current && condition(obj, type_).is_some_and(|(s, r, _)| s == status && r == reason)
    })
    .await
}

/// Creates an object from JSON in the test namespace. A ForgeApp may be written with its versions
/// in `spec.environments[].versions` (see [`platform::declared`]): they go to the platform.
pub async fn create<K>(api: &Api<K>, body: serde_json::Value) -> K
where
    K: Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug + Resource<DynamicType = ()>,
{
    let body = if K::kind(&()) == "ForgeApp" { platform::declared(body) } else { body };
    api.create(&PostParams::default(), &serde_json::from_value(body).unwrap()).await.expect("creating a test object")
}

/// Merge-patches an object's spec. For a ForgeApp, `environments` with versions deploys them to
/// the platform (see [`platform::declared`]).
pub async fn patch_spec<K>(api: &Api<K>, name: &str, spec: serde_json::Value) -> K
where
    K: Clone + DeserializeOwned + std::fmt::Debug + Resource<DynamicType = ()>,
{
    let body = serde_json::json!({ "spec": spec });
    let body = if K::kind(&()) == "ForgeApp" { platform::declared(body) } else { body };
    api.patch(name, &PatchParams::default(), &Patch::Merge(body)).await.expect("patching a test object")
}

impl TestNs {
    /// Starts the operator binary as a separate process, watching this namespace as the operator
    /// identity and acting on the platform at `graphql_url` with the credentials Secret of
    /// [`TestNs::start_platform`]. It dies with the test process.
    pub fn spawn_operator_process(&self, graphql_url: &str, run: usize) -> forgeops_testenv::localcluster::KeptProcess {
        self.spawn_operator_process_logging(graphql_url, run, "info")
    }

    /// The log file of operator process `run` of this namespace.
    pub fn operator_log(&self, run: usize) -> PathBuf {
        shared().dir.join(format!("operator-{}-{run}.log", self.name))
    }

    /// [`TestNs::spawn_operator_process`] with the log filter `rust_log`.
    pub fn spawn_operator_process_logging(
        &self,
        graphql_url: &str,
        run: usize,
        rust_log: &str,
    ) -> forgeops_testenv::localcluster::KeptProcess {
        self.spawn_operator_process_with(graphql_url, run, rust_log, &["--metrics-addr", "127.0.0.1:0"])
    }

    /// [`TestNs::spawn_operator_process`] with the log filter `rust_log` and further arguments.
    pub fn spawn_operator_process_with(
        &self,
        graphql_url: &str,
        run: usize,
        rust_log: &str,
        extra: &[&str],
    ) -> forgeops_testenv::localcluster::KeptProcess {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_forgeops"));
        cmd.args(["run", "--namespace", &self.name, "--operator-namespace", &self.name])
            .args(["--platform-url", graphql_url, "--credentials-secret", platform::CREDENTIALS_SECRET])
            .args(extra)
            .env("KUBECONFIG", &shared().operator_kubeconfig)
            .env("RUST_LOG", rust_log);
        let log = self.operator_log(run);
        forgeops_testenv::localcluster::KeptProcess::spawn("forgeops", cmd, &log).expect("starting the operator")
    }
}

/// A free TCP port on loopback (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `GET http://127.0.0.1:<port><path>`: the status code and body, or `None` if nothing answers.
pub async fn probe(port: u16, path: &str) -> Option<(u16, String)> {
    let client = reqwest::Client::builder().timeout(Duration::from_millis(500)).no_proxy().build().ok()?;
    let response = client.get(format!("http://127.0.0.1:{port}{path}")).send().await.ok()?;
    let code = response.status().as_u16();
    Some((code, response.text().await.unwrap_or_default()))
}

/// Sends SIGKILL to a process and waits until it is gone.
pub async fn kill_hard(process: &forgeops_testenv::localcluster::KeptProcess) {
    process.signal(forgeops_testenv::sys::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !process.has_exited() {
        assert!(Instant::now() < deadline, "SIGKILL did not stop the process");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Fault drill: stops the shared control plane's API server, keeps it down for `down`, and starts
/// it again on the same etcd (waiting until it is ready).
pub async fn restart_apiserver(down: Duration) {
    let mut cluster = CLUSTER.lock().unwrap().take().expect("the shared control plane is running");
    let restarted = cluster.restart_apiserver(down).await;
    *CLUSTER.lock().unwrap() = Some(cluster);
    restarted.expect("restarting kube-apiserver");
}

/// Fault drill: sends `signal` (SIGSTOP, SIGCONT) to the shared control plane's etcd.
pub fn signal_etcd(signal: i32) {
    CLUSTER.lock().unwrap().as_ref().expect("the shared control plane is running").etcd().signal(signal);
}

/// The signature of a platform installation link (`...?signature=<s>&product=...`).
pub fn signature_of(url: &str) -> String {
    let raw = url.split("signature=").nth(1).unwrap().split('&').next().unwrap();
    let mut out = Vec::new();
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(&raw[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// The reasons of the Events about the object `name` in the test namespace.
pub async fn event_reasons(t: &TestNs, name: &str) -> Vec<String> {
    let events: Api<k8s_openapi::api::events::v1::Event> = t.api();
    let list = events.list(&kube::api::ListParams::default()).await.expect("listing Events");
    list.items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter_map(|e| e.reason)
        .collect()
}

/// Waits (at most 45 s) for an Event with `reason` about the object `name`.
pub async fn wait_event(t: &TestNs, name: &str, reason: &str) {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let reasons = event_reasons(t, name).await;
        if reasons.iter().any(|r| r == reason) {
            return;
        }
        assert!(Instant::now() < deadline, "no {reason} event on {name}: {reasons:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
