//! The scale benchmark (local tooling, not part of the operator): starts the local control plane
//! and the platform emulator on loopback, runs the operator binary as a child process, and
//! measures what a platform team would ask about: create-to-Installed latency per object, API
//! requests per installation by verb, memory of the operator, kube-apiserver and etcd, a bulk
//! upgrade of every installation against the floor of the same minimum writes done by a bare
//! client at the same concurrency, requests while idle, and the time from SIGTERM to exit under
//! load. Prints a table and a JSON line.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde::Serialize;
use serde_json::json;

use forgeops::api::{BulkUpgrade, ForgeApp, Installation};
use forgeops_emulator::{EmulatorConfig, Faults, Seed};
use forgeops_testenv::localcluster::{KeptProcess, LocalCluster};

const NAMESPACE: &str = "bench";
const FLOOR_NAMESPACE: &str = "bench-floor";
const APP_ID: &str = "ari:cloud:ecosystem::app/0b5e7c1a-0000-4000-8000-00000000be01";
const EMAIL: &str = "bench@acme.example";
const TOKEN: &str = "bench-token";

/// What to measure.
#[derive(clap::Parser, Debug, Clone)]
#[command(about = "forgeops scale benchmark: the local control plane, the emulator and the operator")]
pub struct Options {
    /// How many Installations (and sites).
    #[arg(long, default_value_t = 1000)]
    pub installations: usize,
    /// Latency the emulator adds to every platform request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// How long an install task takes on the emulator, in milliseconds.
    #[arg(long, default_value_t = 300)]
    pub task_ms: u64,
    /// How many creates (and, for the floor, status writes) the benchmark sends at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// How long to watch the operator's requests with nothing changing, in seconds.
    #[arg(long, default_value_t = 60)]
    pub idle_secs: u64,
    /// The operator binary (default: `forgeops` next to this one).
    #[arg(long)]
    pub operator: Option<PathBuf>,
    /// Keep the operator's log (at RUST_LOG=info) in this file.
    #[arg(long)]
    pub operator_log: Option<PathBuf>,
    /// Give up on a phase after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout_secs: u64,
    /// The operator's client-side rate limit per account (`--platform-rate`, as `N/s`); none by
    /// default, as the operator's own default.
    #[arg(long)]
    pub platform_rate: Option<String>,
    /// The emulator's cap of installations per rollout (the CLI reference documents 500); a lower
    /// cap makes as many rollouts in sequence with fewer installations.
    #[arg(long, default_value_t = 500)]
    pub rollout_cap: u32,
}

/// The figures of one run.
#[derive(Serialize, Debug, Default)]
pub struct Report {
    pub installations: usize,
    pub latency_ms: u64,
    pub task_ms: u64,
    pub concurrency: usize,
    pub install_p50_ms: u64,
    pub install_p99_ms: u64,
    pub install_max_ms: u64,
    pub install_wall_s: f64,
    /// Installation reconciles per installation while installing, and their mean duration.
    pub reconciles_per_installation: f64,
    pub reconcile_mean_ms: f64,
    /// Platform requests per installation while installing, and their mean duration.
    pub platform_requests_per_installation: f64,
    pub platform_request_mean_ms: f64,
    /// The same creates and the operator's minimum writes for an install, by a bare client at the
    /// same concurrency, with no operator at work: what bounds the install phase's wall time.
    pub install_floor_s: f64,
    /// How long creating every Installation took.
    pub create_wall_s: f64,
    /// Kubernetes API requests the operator sent per installation while installing, by verb.
    pub requests_per_installation: BTreeMap<String, f64>,
    pub operator_peak_rss_mib: f64,
    /// The operator's RSS at rest, after the idle period.
    pub operator_rest_rss_mib: f64,
    pub apiserver_rss_mib: f64,
    pub etcd_rss_mib: f64,
    /// kube-apiserver RSS holding the same Installations (same spec, finalizer and status) with no
    /// operator running, on a control plane of its own.
    pub apiserver_baseline_rss_mib: f64,
    pub apiserver_to_baseline: f64,
    /// The same control plane once a bare client has also written the operator's minimum writes
    /// (three install statuses and the upgraded status) to each of those objects, after the
    /// same rest: what the writes alone leave in kube-apiserver's heap.
    pub apiserver_after_writes_rss_mib: f64,
    pub bulk_upgrade_s: f64,
    /// Kubernetes API requests the operator sent per installation during the bulk upgrade, by verb.
    pub bulk_requests_per_installation: BTreeMap<String, f64>,
    pub floor_s: f64,
    pub bulk_to_floor: f64,
    pub idle_secs: u64,
    pub idle_requests: u64,
    pub sigterm_to_exit_ms: u64,
    /// Platform requests per installation while installing, by GraphQL operation (from the
    /// emulator's request log).
    pub platform_install_by_operation: BTreeMap<String, f64>,
    /// Platform requests per moved installation during the bulk upgrade, by operation.
    pub platform_bulk_by_operation: BTreeMap<String, f64>,
    /// The emulator's cap of installations per rollout.
    pub rollout_cap: u32,
    /// The operator's client-side rate limit per account (`none` when not set).
    pub platform_rate: String,
    /// Seconds platform requests waited for that limit, in all (from the operator's /metrics).
    pub limiter_wait_s: f64,
}

impl Report {
    /// The figures as a table.
    pub fn table(&self) -> String {
        [
            format!("installations                {}", self.installations),
            format!("emulator latency / task      {} ms / {} ms", self.latency_ms, self.task_ms),
            format!("concurrency                  {}", self.concurrency),
            format!(
                "create-to-Installed          p50 {} ms, p99 {} ms, max {} ms ({:.1} s for all; creates {:.1} s)",
                self.install_p50_ms, self.install_p99_ms, self.install_max_ms, self.install_wall_s, self.create_wall_s
            ),
            format!(
                "install floor                {:.1} s for the creates and the minimum install writes by a bare client",
                self.install_floor_s
            ),
            format!("API requests / installation  {}", per_verb(&self.requests_per_installation)),
            format!(
                "operator work / installation {:.2} reconciles of {:.1} ms; {:.2} platform requests of {:.1} ms",
                self.reconciles_per_installation,
                self.reconcile_mean_ms,
                self.platform_requests_per_installation,
                self.platform_request_mean_ms
            ),
            format!("platform requests / install  {}", per_verb(&self.platform_install_by_operation)),
            format!(
                "platform requests / moved    {} (rollout cap {})",
                per_verb(&self.platform_bulk_by_operation),
                self.rollout_cap
            ),
            format!(
                "rate-limit waits             {:.1} s in all (client-side rate per account: {})",
                self.limiter_wait_s, self.platform_rate
            ),
            format!(
                "operator RSS                 peak {:.1} MiB, at rest {:.1} MiB",
                self.operator_peak_rss_mib, self.operator_rest_rss_mib
            ),
            format!("bulk-upgrade requests / inst {}", per_verb(&self.bulk_requests_per_installation)),
            format!("kube-apiserver / etcd RSS    {:.1} MiB / {:.1} MiB", self.apiserver_rss_mib, self.etcd_rss_mib),
            format!(
                "kube-apiserver, no operator  {:.1} MiB for the same objects; ratio {:.2}",
                self.apiserver_baseline_rss_mib, self.apiserver_to_baseline
            ),
            format!(
                "  after the minimum writes   {:.1} MiB, no operator; ratio {:.2}",
                self.apiserver_after_writes_rss_mib,
                if self.apiserver_baseline_rss_mib > 0.0 {
                    self.apiserver_after_writes_rss_mib / self.apiserver_baseline_rss_mib
                } else {
                    0.0
                }
            ),
            format!(
                "bulk upgrade of all          {:.1} s; floor {:.1} s; ratio {:.2}",
                self.bulk_upgrade_s, self.floor_s, self.bulk_to_floor
            ),
            format!("requests while idle          {} in {} s", self.idle_requests, self.idle_secs),
            format!("SIGTERM to exit under load   {} ms", self.sigterm_to_exit_ms),
        ]
        .join("\n")
    }
}

/// `4.50 (GET 0.18, PATCH 3.32, POST 1.00)`.
fn per_verb(by_verb: &BTreeMap<String, f64>) -> String {
    let verbs: Vec<String> = by_verb.iter().map(|(v, n)| format!("{v} {n:.2}")).collect();
    format!("{:.2} ({})", by_verb.values().sum::<f64>(), verbs.join(", "))
}

/// Requests in the emulator's log after the first `from`, per installation, by operation.
fn by_operation(requests: &[forgeops_emulator::RecordedRequest], from: usize, n: usize) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for r in requests.iter().skip(from) {
        let op = r.operation_name.clone().unwrap_or_else(|| "?".into());
        *out.entry(op.trim_start_matches("forge_cli_").to_string()).or_insert(0.0) += 1.0 / n.max(1) as f64;
    }
    out
}

fn rss_mib(pid: u32, key: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

/// The operator's /metrics text.
async fn metrics(port: u16) -> anyhow::Result<String> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    Ok(client.get(format!("http://127.0.0.1:{port}/metrics")).send().await?.text().await?)
}

/// The operator's Kubernetes API requests so far, by HTTP method, from its /metrics.
async fn requests(port: u16) -> anyhow::Result<BTreeMap<String, u64>> {
    let text = metrics(port).await?;
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("forgeops_kube_api_requests_total{")) {
        let method = line.split("method=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("?");
        let n = line.rsplit(' ').next().and_then(|n| n.parse::<f64>().ok()).unwrap_or(0.0) as u64;
        out.insert(method.to_string(), n);
    }
    Ok(out)
}

/// From the operator's /metrics: the Installation controller's reconciles (count, seconds in all)
/// and the platform requests (count, seconds in all).
async fn work(port: u16) -> anyhow::Result<[f64; 4]> {
    let text = metrics(port).await?;
    let sum = |prefix: &str| -> f64 {
        text.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
    };
    Ok([
        sum("forgeops_reconcile_duration_seconds_count{controller=\"installation\"}"),
        sum("forgeops_reconcile_duration_seconds_sum{controller=\"installation\"}"),
        sum("forgeops_platform_request_duration_seconds_count{"),
        sum("forgeops_platform_request_duration_seconds_sum{"),
    ])
}

/// From the operator's /metrics: seconds platform requests waited for the client-side rate limit.
async fn limiter_wait(port: u16) -> anyhow::Result<f64> {
    let text = metrics(port).await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("forgeops_platform_rate_limit_wait_seconds_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// By Installation name: when it first showed a version, and when it first showed 2.0.
type Seen = HashMap<String, (Instant, Option<Instant>)>;

fn percentile(sorted: &[Duration], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_millis() as u64
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn installation(name: &str) -> Installation {
    serde_json::from_value(json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "Installation",
        "metadata": {"name": name},
        "spec": {"appRef": {"name": "bench"}, "site": format!("{name}.atlassian.net"), "products": ["jira"]}}))
    .expect("a valid Installation")
}

/// The cheapest status write, the kind the operator sends for Installations: a JSON Patch that
/// replaces the whole status.
fn replace_status(status: &serde_json::Value) -> Patch<()> {
    let ops = json!([{"op": "add", "path": "/status", "value": status}]);
    Patch::Json(serde_json::from_value(ops).expect("a valid JSON Patch"))
}

/// Runs the benchmark.
pub async fn run(o: Options) -> anyhow::Result<Report> {
    let n = o.installations;
    let timeout = Duration::from_secs(o.timeout_secs);
    let mut report = Report {
        installations: n,
        latency_ms: o.latency_ms,
        task_ms: o.task_ms,
        concurrency: o.concurrency,
        idle_secs: o.idle_secs,
        ..Default::default()
    };
    eprintln!("bench: starting the control plane");
    let cluster = LocalCluster::start(None).await?;
    let client = kube::Client::try_from(cluster.admin_config())?;
    forgeops_testenv::localcluster::install_crds(&client, &forgeops::api::all_crds()).await?;
    for ns in [NAMESPACE, FLOOR_NAMESPACE] {
        let body = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
        Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone()).create(&PostParams::default(), &body).await?;
    }

    // The platform: the app with 1.0.0 (2.0.0, with the same permissions, is deployed before the
    // bulk upgrade), and a site per installation.
    let sites: Vec<serde_json::Value> = (0..n)
        .map(|i| json!({"hostName": format!("site-{i:05}.atlassian.net"), "products": ["jira"], "admins": [EMAIL]}))
        .collect();
    let seed: Seed = serde_json::from_value(json!({
        "accounts": [{"email": EMAIL, "apiToken": TOKEN}],
        "apps": [{"id": APP_ID, "owner": EMAIL, "environments": [{"key": "production", "versions": [
            {"version": "1.0.0", "scopes": ["read:jira-work"], "requiredProducts": ["jira"]}]}]}],
        "sites": sites,
    }))?;
    report.rollout_cap = o.rollout_cap;
    report.platform_rate = o.platform_rate.clone().unwrap_or_else(|| "none".into());
    let config = EmulatorConfig {
        seed,
        task_duration: Duration::from_millis(o.task_ms),
        rollout_step: Duration::ZERO,
        upgrade_limit: report.rollout_cap,
        faults: Faults { latency_ms: o.latency_ms, ..Default::default() },
        ..Default::default()
    };
    let emulator = forgeops_emulator::start(config, "127.0.0.1:0".parse()?).await?;
    let secret = serde_json::from_value(json!({"metadata": {"name": "forgeops-credentials"},
        "stringData": {"email": EMAIL, "apiToken": TOKEN}}))?;
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), NAMESPACE)
        .create(&PostParams::default(), &secret)
        .await?;

    let operator_bin = match &o.operator {
        Some(p) => p.clone(),
        None => operator_binary()?,
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut cmd = std::process::Command::new(&operator_bin);
    cmd.args(["run", "--namespace", NAMESPACE, "--operator-namespace", NAMESPACE])
        .args(["--platform-url", &emulator.graphql_url()])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .args(o.platform_rate.iter().flat_map(|r| ["--platform-rate", r.as_str()]))
        .env("KUBECONFIG", cluster.kubeconfig_path())
        .env("RUST_LOG", if o.operator_log.is_some() { "info" } else { "warn" });
    let log = o.operator_log.clone().unwrap_or_else(|| cluster.dir().join("operator.log"));
    let operator =
        KeptProcess::spawn("forgeops", cmd, &log).with_context(|| format!("starting {}", operator_bin.display()))?;

    let apps: Api<ForgeApp> = Api::namespaced(client.clone(), NAMESPACE);
    apps.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "ForgeApp",
            "metadata": {"name": "bench"}, "spec": {"appId": APP_ID, "environments": ["production"]}}))?,
    )
    .await?;
    let deadline = Instant::now() + timeout;
    loop {
        let app = apps.get("bench").await?;
        if app.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")) {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the ForgeApp was not Ready:\n{}", operator.log_tail());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Watch every Installation: when it first shows a version, and when it shows 2.0.
    let installed: Arc<Mutex<Seen>> = Default::default();
    let insts: Api<Installation> = Api::namespaced(client.clone(), NAMESPACE);
    let watch = {
        let installed = installed.clone();
        let stream = watcher(insts.clone(), watcher::Config::default()).applied_objects();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(Ok(inst)) = stream.next().await {
                let Some(version) = inst.status.as_ref().and_then(|s| s.installed_version.clone()) else { continue };
                let name = inst.metadata.name.clone().unwrap_or_default();
                let mut seen = installed.lock().unwrap();
                let entry = seen.entry(name).or_insert((Instant::now(), None));
                if version.starts_with("2.") && entry.1.is_none() {
                    entry.1 = Some(Instant::now());
                }
            }
        })
    };

    // Install: create every Installation, `concurrency` at a time.
    eprintln!("bench: creating {n} Installations");
    let before = requests(port).await?;
    let work_before = work(port).await?;
    let platform_before = emulator.requests().len();
    let created: Arc<Mutex<HashMap<String, Instant>>> = Default::default();
    let started = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let (insts, created) = (insts.clone(), created.clone());
            async move {
                let name = format!("site-{i:05}");
                insts.create(&PostParams::default(), &installation(&name)).await?;
                created.lock().unwrap().insert(name, Instant::now());
                Ok::<_, kube::Error>(())
            }
        })
        .buffer_unordered(o.concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    report.create_wall_s = started.elapsed().as_secs_f64();
    wait_until("every Installation installed", timeout, || installed.lock().unwrap().len() >= n).await?;
    report.install_wall_s = started.elapsed().as_secs_f64();
    report.platform_install_by_operation = by_operation(&emulator.requests(), platform_before, n);
    let after = requests(port).await?;
    let w: Vec<f64> = work(port).await?.iter().zip(work_before).map(|(a, b)| a - b).collect();
    report.reconciles_per_installation = w[0] / n as f64;
    report.reconcile_mean_ms = if w[0] > 0.0 { w[1] / w[0] * 1000.0 } else { 0.0 };
    report.platform_requests_per_installation = w[2] / n as f64;
    report.platform_request_mean_ms = if w[2] > 0.0 { w[3] / w[2] * 1000.0 } else { 0.0 };
    let mut latencies: Vec<Duration> = {
        let (seen, created) = (installed.lock().unwrap(), created.lock().unwrap());
        created
            .iter()
            .filter_map(|(name, at)| seen.get(name).map(|(done, _)| done.saturating_duration_since(*at)))
            .collect()
    };
    latencies.sort();
    report.install_p50_ms = percentile(&latencies, 0.50);
    report.install_p99_ms = percentile(&latencies, 0.99);
    report.install_max_ms = latencies.last().map(|d| d.as_millis() as u64).unwrap_or(0);
    for (verb, count) in &after {
        let delta = count - before.get(verb).copied().unwrap_or(0);
        report.requests_per_installation.insert(verb.clone(), delta as f64 / n as f64);
    }

    // Deploy 2.0.0 (as `forge deploy` would) and have the operator read it.
    let deploy: forgeops_emulator::DeployRequest = serde_json::from_value(json!({"appId": APP_ID,
        "version": "2.0.0", "scopes": ["read:jira-work"], "requiredProducts": ["jira"]}))?;
    emulator.deploy(deploy).map_err(|e| anyhow::anyhow!("deploying 2.0.0: {e:?}"))?;
    let refresh = json!({"metadata": {"annotations": {forgeops::api::REFRESH_ANNOTATION: "bench-2.0.0"}}});
    apps.patch("bench", &PatchParams::default(), &Patch::Merge(&refresh)).await?;
    let deadline = Instant::now() + timeout;
    while apps.get("bench").await?.deployed("production").len() < 2 {
        anyhow::ensure!(Instant::now() < deadline, "the operator did not read 2.0.0");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The Installations learn of 2.0.0 (`UpToDate` False, `UpgradeAvailable`: a status write
    // each, whether a bulk upgrade follows or not): wait until the operator is quiet again, so the
    // bulk upgrade is measured on its own.
    let deadline = Instant::now() + timeout;
    let mut last: u64 = requests(port).await?.values().sum();
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now: u64 = requests(port).await?.values().sum();
        if now == last {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the operator did not settle after 2.0.0 was deployed");
        last = now;
    }

    // Bulk upgrade every installation; time until every Installation shows 2.0.
    eprintln!("bench: bulk upgrade");
    let before = requests(port).await?;
    let platform_before = emulator.requests().len();
    let bus: Api<BulkUpgrade> = Api::namespaced(client.clone(), NAMESPACE);
    let started = Instant::now();
    bus.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "BulkUpgrade",
            "metadata": {"name": "all"}, "spec": {"appRef": {"name": "bench"}, "environment": "production",
            "fromMajor": 1, "toMajor": 2}}))?,
    )
    .await?;
    wait_until("every Installation on 2.0", timeout, || {
        installed.lock().unwrap().values().filter(|(_, two)| two.is_some()).count() >= n
    })
    .await?;
    report.bulk_upgrade_s = started.elapsed().as_secs_f64();
    report.platform_bulk_by_operation = by_operation(&emulator.requests(), platform_before, n);
    let after = requests(port).await?;
    for (verb, count) in &after {
        let delta = count - before.get(verb).copied().unwrap_or(0);
        report.bulk_requests_per_installation.insert(verb.clone(), delta as f64 / n as f64);
    }
    // What one upgraded Installation looks like, for the baseline below.
    let template = insts.get("site-00000").await?;
    report.operator_peak_rss_mib = rss_mib(operator.pid(), "VmHWM:");
    watch.abort();

    // Idle: nothing changes (once the BulkUpgrade has recorded its end and released its Leases).
    let deadline = Instant::now() + timeout;
    while bus.get("all").await?.status.and_then(|s| s.state) != Some(forgeops::api::BulkUpgradeState::Complete) {
        anyhow::ensure!(Instant::now() < deadline, "the BulkUpgrade did not complete");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    report.limiter_wait_s = limiter_wait(port).await?;
    eprintln!("bench: {} s idle", o.idle_secs);
    let before: u64 = requests(port).await?.values().sum();
    tokio::time::sleep(Duration::from_secs(o.idle_secs)).await;
    let after: u64 = requests(port).await?.values().sum();
    report.idle_requests = after.saturating_sub(before);
    // Memory at rest (after the idle period, as for the baseline below): right after a burst of
    // writes a Go heap holds garbage it has not returned yet.
    report.operator_rest_rss_mib = rss_mib(operator.pid(), "VmRSS:");
    report.apiserver_rss_mib = rss_mib(cluster.apiserver().pid(), "VmRSS:");
    report.etcd_rss_mib = rss_mib(cluster.etcd().pid(), "VmRSS:");

    // The floor: the same minimum writes (for the bulk upgrade, one status write per installation)
    // of the same statuses by a bare client at the same concurrency, on objects the operator does
    // not watch.
    eprintln!("bench: the floor");
    // For installs: the create and the operator's minimum writes for one install (the finalizer,
    // the request recorded before it is sent, the task recorded, the installed version; an install
    // records no Event), one object after the other per slot.
    let floor: Api<Installation> = Api::namespaced(client.clone(), FLOOR_NAMESPACE);
    let MinimumWrites { sending, task, done, upgraded } = MinimumWrites::of(&template)?;
    let started = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let (floor, sending, task, done) = (floor.clone(), sending.clone(), task.clone(), done.clone());
            async move {
                let name = format!("site-{i:05}");
                floor.create(&PostParams::default(), &installation(&name)).await?;
                let finalizer = json!({"metadata": {"finalizers": [forgeops::controllers::installation::FINALIZER]}});
                floor.patch(&name, &PatchParams::default(), &Patch::Merge(&finalizer)).await?;
                floor.patch_status(&name, &PatchParams::default(), &replace_status(&sending)).await?;
                floor.patch_status(&name, &PatchParams::default(), &replace_status(&task)).await?;
                floor.patch_status(&name, &PatchParams::default(), &replace_status(&done)).await?;
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(o.concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    report.install_floor_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let (floor, upgraded) = (floor.clone(), upgraded.clone());
            async move {
                floor.patch_status(&format!("site-{i:05}"), &PatchParams::default(), &replace_status(&upgraded)).await
            }
        })
        .buffer_unordered(o.concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    report.floor_s = started.elapsed().as_secs_f64();
    report.bulk_to_floor = if report.floor_s > 0.0 { report.bulk_upgrade_s / report.floor_s } else { 0.0 };

    // SIGTERM under load: every Installation being uninstalled.
    eprintln!("bench: SIGTERM under load");
    futures::stream::iter(0..n)
        .map(|i| {
            let insts = insts.clone();
            async move { insts.delete(&format!("site-{i:05}"), &Default::default()).await }
        })
        .buffer_unordered(o.concurrency)
        .collect::<Vec<_>>()
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stopping = Instant::now();
    operator.signal(forgeops_testenv::sys::SIGTERM);
    wait_until("the operator to exit after SIGTERM", Duration::from_secs(60), || operator.has_exited()).await?;
    report.sigterm_to_exit_ms = stopping.elapsed().as_millis() as u64;
    drop(emulator);
    drop(cluster);

    // The baseline: the same objects on a control plane of their own with no operator.
    eprintln!("bench: kube-apiserver with the same objects and no operator");
    (report.apiserver_baseline_rss_mib, report.apiserver_after_writes_rss_mib) =
        baseline_apiserver_rss(n, o.concurrency, &template, Duration::from_secs(o.idle_secs)).await?;
    report.apiserver_to_baseline = if report.apiserver_baseline_rss_mib > 0.0 {
        report.apiserver_rss_mib / report.apiserver_baseline_rss_mib
    } else {
        0.0
    };
    Ok(report)
}

/// The statuses of the operator's minimum writes, the operator's own (conditions and all), from
/// the upgraded template: the request recorded before it is sent, the task recorded, the installed
/// version, and the upgraded status.
struct MinimumWrites {
    sending: serde_json::Value,
    task: serde_json::Value,
    done: serde_json::Value,
    upgraded: serde_json::Value,
}

impl MinimumWrites {
    fn of(template: &Installation) -> anyhow::Result<Self> {
        let upgraded = serde_json::to_value(&template.status)?;
        let mut done = upgraded.clone();
        done["installedVersion"] = json!("1.0");
        done["installedMajor"] = json!(1);
        let mut task = done.clone();
        if let Some(fields) = task.as_object_mut() {
            fields.remove("installedVersion");
            fields.remove("installedMajor");
        }
        let mut sending = task.clone();
        sending["unconfirmed"] = json!({"action": "install", "version": "1.0", "sentAt": "2026-01-01T00:00:00Z"});
        task["task"] = json!({"id": "t", "action": "install", "startedAt": "2026-01-01T00:00:00Z"});
        Ok(MinimumWrites { sending, task, done, upgraded })
    }
}

/// kube-apiserver's RSS holding `n` Installations shaped like `template` (its finalizers and status),
/// written by a bare client, with no operator running, measured after `rest` with nothing changing;
/// and again once the same client has written the operator's minimum writes to each.
async fn baseline_apiserver_rss(
    n: usize,
    concurrency: usize,
    template: &Installation,
    rest: Duration,
) -> anyhow::Result<(f64, f64)> {
    let cluster = LocalCluster::start(None).await?;
    let client = kube::Client::try_from(cluster.admin_config())?;
    forgeops_testenv::localcluster::install_crds(&client, &forgeops::api::all_crds()).await?;
    let body = serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?;
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone()).create(&PostParams::default(), &body).await?;
    let insts: Api<Installation> = Api::namespaced(client.clone(), NAMESPACE);
    let finalizers = template.metadata.finalizers.clone();
    let status = serde_json::to_value(&template.status)?;
    futures::stream::iter(0..n)
        .map(|i| {
            let (insts, finalizers, status) = (insts.clone(), finalizers.clone(), status.clone());
            async move {
                let name = format!("site-{i:05}");
                let mut obj = installation(&name);
                obj.metadata.finalizers = finalizers;
                insts.create(&PostParams::default(), &obj).await?;
                insts.patch_status(&name, &PatchParams::default(), &replace_status(&status)).await?;
                Ok::<_, kube::Error>(())
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    // The same reads a watcher of the kind causes (the benchmark's own watch ran in the main run).
    let _ = insts.list(&Default::default()).await?;
    tokio::time::sleep(rest).await;
    let at_rest = rss_mib(cluster.apiserver().pid(), "VmRSS:");

    // The operator's minimum writes to each of these objects, by a bare client, then the same rest.
    let writes = MinimumWrites::of(template)?;
    futures::stream::iter(0..n)
        .map(|i| {
            let (insts, writes) = (insts.clone(), &writes);
            async move {
                let name = format!("site-{i:05}");
                for status in [&writes.sending, &writes.task, &writes.done, &writes.upgraded] {
                    insts.patch_status(&name, &PatchParams::default(), &replace_status(status)).await?;
                }
                Ok::<_, kube::Error>(())
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    tokio::time::sleep(rest).await;
    Ok((at_rest, rss_mib(cluster.apiserver().pid(), "VmRSS:")))
}

/// The operator binary beside this one. Run through cargo (`cargo bench-scale`), it is built first
/// with the same profile, since cargo builds only the benchmark's own package for `cargo run`.
fn operator_binary() -> anyhow::Result<PathBuf> {
    let bin = std::env::current_exe()?.with_file_name("forgeops");
    if let Some(cargo) = std::env::var_os("CARGO") {
        let mut build = std::process::Command::new(cargo);
        let manifest = forgeops_testenv::localcluster::repo_root().join("Cargo.toml");
        build.arg("build").arg("--manifest-path").arg(manifest).args(["--package", "forgeops", "--bin", "forgeops"]);
        if !cfg!(debug_assertions) {
            build.arg("--release");
        }
        let status = build.status().context("running cargo build for the operator binary")?;
        anyhow::ensure!(status.success(), "building the operator binary failed ({status})");
    }
    anyhow::ensure!(
        bin.exists(),
        "no operator binary at {}: build it with `cargo build --release -p forgeops`, or name one with --operator",
        bin.display()
    );
    Ok(bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let ms = |v: &[u64]| v.iter().map(|m| Duration::from_millis(*m)).collect::<Vec<_>>();
        let sorted = ms(&[10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
        assert_eq!(percentile(&sorted, 0.50), 50);
        assert_eq!(percentile(&sorted, 0.99), 100);
        assert_eq!(percentile(&ms(&[7]), 0.99), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn the_table_names_every_figure() {
        let mut r = Report { installations: 10, ..Default::default() };
        r.requests_per_installation.insert("PATCH".into(), 2.5);
        r.requests_per_installation.insert("POST".into(), 1.0);
        let table = r.table();
        for needle in ["create-to-Installed", "3.50 (PATCH 2.50, POST 1.00)", "ratio", "idle", "SIGTERM"] {
            assert!(table.contains(needle), "{needle} missing:\n{table}");
        }
    }
}
