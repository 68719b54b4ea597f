//! The emulator's own benchmark: `cargo bench-emulator -- --sites 10000` (see `.cargo/config.toml`).
//! Local tooling, not part of the operator, and on loopback only.
//!
//! Starts the platform emulator in-process (the repository's seed, a state file in a temporary
//! directory, so the write-behind persistence is in the measurement), seeds `--sites` sites each
//! with one installation of the seed's app through `POST /admin/batch`, and times the gateway
//! operations the operator sends most, each request on its own, on a small platform and then on
//! the large one: a tenant context by host name, the installations of the app in one context, an
//! install and its task poll. Prints figures; asserts nothing about time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use serde_json::{Value, json};

use forgeops_emulator::{EmulatorConfig, RunningEmulator, Seed};

const SEED: &str = include_str!("../../../../deploy/emulator/seed.yaml");
const GET_TENANT_CONTEXT_DETAILS: &str = include_str!("../../../../src/platform/ops/getTenantContextDetails.graphql");
const GET_INSTALLATIONS: &str =
    include_str!("../../../../src/platform/ops/forge_cli_getEcosystemInstallationsByApp.graphql");
const INSTALL: &str = include_str!("../../../../src/platform/ops/forge_cli_installApplication.graphql");
const GET_TASK: &str = include_str!("../../../../src/platform/ops/forge_cli_getInstallationTask.graphql");

/// The seed's developer account (Basic auth: e-mail and API token) and its apps.
const EMAIL: &str = "platform-team@acme.example";
const TOKEN: &str = "local-dev-token";
/// issue-tracker-insights (production and `default`, into Jira): the installation every site has.
const APP1: &str = "ari:cloud:ecosystem::app/6f1c2d3e-0000-4000-8000-000000000001";
/// team-dashboard (production, into Confluence): what the install phase installs.
const APP2: &str = "ari:cloud:ecosystem::app/6f1c2d3e-0000-4000-8000-000000000002";

#[derive(clap::Parser, Debug, Clone)]
#[command(about = "forgeops' platform emulator benchmark: batch seeding and request latency, small and large")]
struct Options {
    /// Sites of the large platform, each with one installation.
    #[arg(long, default_value_t = 10_000)]
    sites: usize,
    /// Sites of the small platform.
    #[arg(long, default_value_t = 100)]
    small_sites: usize,
    /// Sites (and their installations) per `POST /admin/batch`.
    #[arg(long, default_value_t = 1_000)]
    chunk: usize,
    /// Requests timed per operation.
    #[arg(long, default_value_t = 200)]
    samples: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
}

/// Latencies of one operation, in milliseconds.
#[derive(Clone, Copy, Debug, Default)]
struct Latency {
    p50: f64,
    p99: f64,
    max: f64,
}

impl Latency {
    fn of(mut ms: Vec<f64>) -> Latency {
        if ms.is_empty() {
            return Latency::default();
        }
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1];
        Latency { p50: at(0.50), p99: at(0.99), max: ms[ms.len() - 1] }
    }
}

const OPERATIONS: [&str; 5] = [
    "getTenantContextDetails",
    "forge_cli_getEcosystemInstallationsByApp",
    "forge_cli_installApplication",
    "forge_cli_getInstallationTask",
    "getTenantContextDetails, state being written",
];

/// What one platform measured.
struct Platform {
    sites: usize,
    seed_s: f64,
    batches: usize,
    slowest_batch_s: f64,
    on_disk_s: f64,
    state_bytes: u64,
    writes_seeding: u64,
    writes_total: u64,
    /// State file writes while the last row was timed.
    writes_churn: u64,
    latency: [Latency; 5],
}

fn host(k: usize) -> String {
    format!("bench-{k:05}.atlassian.net")
}

struct Client {
    http: reqwest::Client,
    emulator: RunningEmulator,
}

impl Client {
    async fn post(&self, url: String, body: &Value, auth: bool) -> anyhow::Result<(u16, Value)> {
        let mut req = self.http.post(url).header("content-type", "application/json").body(serde_json::to_vec(body)?);
        if auth {
            req = req.basic_auth(EMAIL, Some(TOKEN));
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }

    /// One GraphQL operation; answers its `data` and how long it took (ms). Errors are errors.
    async fn gql(&self, query: &str, variables: Value) -> anyhow::Result<(Value, f64)> {
        let started = Instant::now();
        let (status, body) =
            self.post(self.emulator.graphql_url(), &json!({"query": query, "variables": variables}), true).await?;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        if status != 200 || body.get("errors").is_some_and(|e| !e.is_null()) {
            bail!("GraphQL answered {status}: {body}");
        }
        Ok((body["data"].clone(), ms))
    }
}

/// Starts an emulator with a state file in `dir`, seeds `n` sites with an installation each
/// through `POST /admin/batch`, and times the operations.
async fn platform(o: &Options, n: usize, dir: &Path) -> anyhow::Result<Platform> {
    let state = dir.join("state.json");
    let config = EmulatorConfig {
        seed: Seed::from_yaml_str(SEED).context("the seed")?,
        state_file: Some(state.clone()),
        ..Default::default()
    };
    let emulator = forgeops_emulator::start(config, "127.0.0.1:0".parse()?).await?;
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(120)).build()?;
    let c = Client { http, emulator };
    let writes_at_start = c.emulator.persist_writes();

    // Seeding: sites with Jira and Confluence administered by the seed's account, each with
    // issue-tracker-insights installed into Jira.
    let started = Instant::now();
    let (mut batches, mut slowest) = (0, 0.0_f64);
    for from in (0..n).step_by(o.chunk.max(1)) {
        let to = (from + o.chunk.max(1)).min(n);
        let body = json!({
            "sites": (from..to)
                .map(|k| json!({"hostName": host(k), "products": ["jira", "confluence"], "admins": [EMAIL]}))
                .collect::<Vec<_>>(),
            "installations": (from..to)
                .map(|k| json!({"appId": APP1, "site": host(k), "product": "jira"}))
                .collect::<Vec<_>>(),
        });
        let sent = Instant::now();
        let (status, answer) = c.post(format!("{}/batch", c.emulator.admin_url()), &body, false).await?;
        slowest = slowest.max(sent.elapsed().as_secs_f64());
        batches += 1;
        if status != 200 || answer["sites"] != to - from || answer["installations"] != to - from {
            bail!("POST /admin/batch of sites {from}..{to} answered {status}: {answer}");
        }
    }
    let seed_s = started.elapsed().as_secs_f64();
    while !c.emulator.persisted() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let on_disk_s = started.elapsed().as_secs_f64();
    let writes_seeding = c.emulator.persist_writes() - writes_at_start;
    let state_bytes = std::fs::metadata(&state).map(|m| m.len()).unwrap_or(0);

    // Latency, one request at a time, over sites spread across the platform (after a few untimed
    // requests, so neither platform pays for the connection and the first answers).
    let samples = o.samples.max(1);
    let spread = |j: usize| (j * 7919 + 13) % n.max(1);
    for j in 0..20 {
        c.gql(GET_TENANT_CONTEXT_DETAILS, json!({"hostNames": [host(spread(j))], "product": "jira"})).await?;
        c.gql(GET_TASK, json!({"id": "none"})).await?;
    }
    let mut ms: [Vec<f64>; 5] = Default::default();
    for j in 0..samples {
        let (data, t) =
            c.gql(GET_TENANT_CONTEXT_DETAILS, json!({"hostNames": [host(spread(j))], "product": "jira"})).await?;
        if !data["tenantContexts"][0]["cloudId"].is_string() {
            bail!("no tenant context for {}: {data}", host(spread(j)));
        }
        ms[0].push(t);
    }
    let sites: Vec<Value> = {
        let (status, sites) = {
            let resp = c.http.get(format!("{}/sites", c.emulator.admin_url())).send().await?;
            (resp.status().as_u16(), resp.bytes().await?)
        };
        if status != 200 {
            bail!("GET /admin/sites answered {status}");
        }
        serde_json::from_slice(&sites)?
    };
    let by_host: HashMap<&str, &Value> = sites.iter().filter_map(|s| Some((s["hostName"].as_str()?, s))).collect();
    let context = |k: usize, product: &str| -> anyhow::Result<String> {
        by_host
            .get(host(k).as_str())
            .and_then(|s| s["installationContexts"][product].as_str())
            .map(str::to_string)
            .with_context(|| format!("no {product} context for {}", host(k)))
    };
    let contexts: Vec<String> = (0..samples).map(|j| context(spread(j), "jira")).collect::<Result<_, _>>()?;
    for ctx in &contexts {
        let filter =
            json!({"filter": {"apps": {"ids": [APP1]}, "appInstallations": {"contexts": [ctx]}}, "first": 100});
        let (data, t) = c.gql(GET_INSTALLATIONS, filter).await?;
        let found = data["ecosystem"]["appInstallationsByApp"]["nodes"].as_array().map_or(0, Vec::len);
        if found != 1 {
            bail!("{found} installations in {ctx}: {data}");
        }
        ms[1].push(t);
    }
    // Installs on distinct sites' products: team-dashboard into Confluence, then (on a platform of
    // fewer sites than samples) issue-tracker-insights' development environment into Jira.
    let installs = samples.min(2 * n);
    let mut tasks = Vec::with_capacity(installs);
    for j in 0..installs {
        let k = spread(j % n);
        let (app, env, product) = if j < n { (APP2, "production", "confluence") } else { (APP1, "default", "jira") };
        let input = json!({"input": {"installationContext": context(k, product)?, "appId": app,
                                     "environmentKey": env, "async": true}});
        let (data, t) = c.gql(INSTALL, input).await?;
        let task = data["installApp"]["taskId"].as_str().with_context(|| format!("install refused: {data}"))?;
        tasks.push(task.to_string());
        ms[2].push(t);
    }
    for j in 0..samples {
        let (data, t) = c.gql(GET_TASK, json!({"id": tasks[j % tasks.len()]})).await?;
        if !data["appInstallationTask"]["state"].is_string() {
            bail!("no task: {data}");
        }
        ms[3].push(t);
    }
    // Tenant lookups again, spaced out, while a site is added every few milliseconds: the model
    // changes all along, so the state file is written every PERSIST_INTERVAL meanwhile.
    let churn = c.http.clone();
    let sites_url = format!("{}/sites", c.emulator.admin_url());
    let stop = Arc::new(AtomicBool::new(false));
    let changes = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) {
                let site = json!({"hostName": format!("churn-{k:05}.atlassian.net"), "products": ["jira"]});
                let req = churn.post(&sites_url).header("content-type", "application/json");
                req.body(serde_json::to_vec(&site)?).send().await?.error_for_status()?;
                k += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            anyhow::Ok(())
        }
    });
    let writes_before = c.emulator.persist_writes();
    for j in 0..samples {
        let (_, t) =
            c.gql(GET_TENANT_CONTEXT_DETAILS, json!({"hostNames": [host(spread(j))], "product": "jira"})).await?;
        ms[4].push(t);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let writes_churn = c.emulator.persist_writes() - writes_before;
    stop.store(true, Ordering::Relaxed);
    changes.await??;
    let writes_total = c.emulator.persist_writes() - writes_at_start;
    let [a, b, i, t, w] = ms;
    Ok(Platform {
        sites: n,
        seed_s,
        batches,
        slowest_batch_s: slowest,
        on_disk_s,
        state_bytes,
        writes_seeding,
        writes_total,
        writes_churn,
        latency: [Latency::of(a), Latency::of(b), Latency::of(i), Latency::of(t), Latency::of(w)],
    })
}

async fn run(o: &Options, dir: &Path) -> anyhow::Result<(Platform, Platform)> {
    eprintln!("emulator bench: small platform ({} sites)", o.small_sites);
    let small_dir = dir.join("small");
    std::fs::create_dir_all(&small_dir)?;
    let small = platform(o, o.small_sites.max(1), &small_dir).await?;
    eprintln!("emulator bench: large platform ({} sites)", o.sites);
    let large_dir = dir.join("large");
    std::fs::create_dir_all(&large_dir)?;
    let large = platform(o, o.sites.max(1), &large_dir).await?;
    Ok((small, large))
}

fn report(o: &Options, small: &Platform, large: &Platform) -> String {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let mut lines = Vec::new();
    for p in [small, large] {
        lines.push(format!(
            "seeded {:>6} sites + {:>6} installations in {:>3} batch requests: {:>6.2} s ({:>7.0} sites/s, \
             slowest request {:.2} s); on disk after {:.2} s: {:.1} MiB, {} state file writes while seeding, {} \
             in all",
            p.sites,
            p.sites,
            p.batches,
            p.seed_s,
            p.sites as f64 / p.seed_s.max(1e-9),
            p.slowest_batch_s,
            p.on_disk_s,
            mib(p.state_bytes),
            p.writes_seeding,
            p.writes_total,
        ));
    }
    lines.push(String::new());
    lines.push(format!(
        "latency, ms ({} requests each, one at a time)  {:>24}  {:>24}",
        o.samples,
        format!("small ({} sites)", small.sites),
        format!("large ({} sites)", large.sites)
    ));
    lines.push(format!("{:<46}  {:>7} {:>7} {:>8}  {:>7} {:>7} {:>8}", "", "p50", "p99", "max", "p50", "p99", "max"));
    for (k, op) in OPERATIONS.iter().enumerate() {
        let (s, l) = (small.latency[k], large.latency[k]);
        lines.push(format!(
            "{op:<46}  {:>7.3} {:>7.3} {:>8.3}  {:>7.3} {:>7.3} {:>8.3}",
            s.p50, s.p99, s.max, l.p50, l.p99, l.max
        ));
    }
    lines.push(format!(
        "(the last row: {} and {} state file writes meanwhile, {:.1} MiB and {:.1} MiB each)",
        small.writes_churn,
        large.writes_churn,
        mib(small.state_bytes),
        mib(large.state_bytes)
    ));
    lines.join("\n")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = Options::parse();
    let dir: PathBuf = std::env::temp_dir().join(format!("forgeops-emulator-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(o.timeout_secs), run(&o, &dir)).await;
    let _ = std::fs::remove_dir_all(&dir);
    let (small, large) = result.with_context(|| format!("gave up after {} s", o.timeout_secs))??;
    println!("{}", report(&o, &small, &large));
    println!("\n(the whole run: {:.1} s)", started.elapsed().as_secs_f64());
    Ok(())
}
