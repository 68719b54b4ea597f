//! `forgeops-dev`: the quick start (`dev`) and the platform emulator on its own (`platform serve`).
//! Development tooling only: none of it is in the operator's binary or image.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use forgeops::cli::RunArgs;
use forgeops::telemetry::{self, LogFormat, Metrics};
use forgeops::{api, operator};
use forgeops_emulator as emulator;
use forgeops_testenv::{localcluster, manifests};

/// What the quick start applies when no files are named: embedded, so `forgeops-dev dev` works
/// from any directory.
const RBAC: (&str, &str) = ("deploy/base/rbac.yaml", include_str!("../../../deploy/base/rbac.yaml"));
const EXAMPLES: &[(&str, &str)] = &[
    ("deploy/examples/00-namespace.yaml", include_str!("../../../deploy/examples/00-namespace.yaml")),
    ("deploy/examples/10-forgeapp.yaml", include_str!("../../../deploy/examples/10-forgeapp.yaml")),
    ("deploy/examples/20-distributionpolicy.yaml", include_str!("../../../deploy/examples/20-distributionpolicy.yaml")),
    ("deploy/examples/30-installation.yaml", include_str!("../../../deploy/examples/30-installation.yaml")),
    ("deploy/examples/40-bulkupgrade.yaml", include_str!("../../../deploy/examples/40-bulkupgrade.yaml")),
];
const SEED: (&str, &str) = ("deploy/emulator/seed.yaml", include_str!("../../../deploy/emulator/seed.yaml"));

/// forgeops development tooling: the quick start and the local Forge platform emulator.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, env = "FORGEOPS_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Quick start: start the platform emulator and a local control plane (built on first use),
    /// install the CRDs and the operator's RBAC, apply the examples and run the operator in the
    /// foreground. Every run starts fresh: the cluster and the emulator both begin from the seed
    /// and the examples. Ctrl-C stops everything.
    Dev {
        /// Where the local control plane keeps its state, logs and kubeconfig (emptied at start).
        /// Default: `target/dev-cluster` in the repository this tool was built from.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The example manifests to apply (files or directories of YAML). Default: the
        /// repository's `deploy/examples`, as built into this tool.
        #[arg(long)]
        examples: Vec<PathBuf>,
        /// The platform emulator's seed: the example apps, sites and the developer account.
        /// Default: the repository's `deploy/emulator/seed.yaml`, as built into this tool.
        #[arg(long)]
        platform_seed: Option<PathBuf>,
        /// Where the local platform emulator listens (loopback).
        #[arg(long, default_value = "127.0.0.1:8765")]
        platform_listen: SocketAddr,
        #[command(flatten)]
        run: Box<RunArgs>,
    },
    /// A local Forge platform emulator (a stand-in for the Forge GraphQL gateway).
    Platform {
        #[command(subcommand)]
        command: PlatformCommand,
    },
}

#[derive(Subcommand)]
enum PlatformCommand {
    /// Serve the emulator: `POST /graphql` (point the forge CLI at it with FORGE_GRAPHQL_GATEWAY)
    /// and the admin API under `/admin/`. Ctrl-C or SIGTERM stops it.
    Serve(PlatformServeArgs),
}

#[derive(clap::Args)]
struct PlatformServeArgs {
    /// Listen on this address.
    #[arg(long, default_value = "127.0.0.1:8765")]
    listen: SocketAddr,
    /// The seed (YAML or JSON): accounts, apps, sites, installations.
    #[arg(long)]
    seed: Option<PathBuf>,
    /// Persist the platform state here and restore it at start if present.
    #[arg(long)]
    state: Option<PathBuf>,
    /// How long an install, upgrade or uninstall task takes, in milliseconds.
    #[arg(long, default_value_t = 300)]
    task_duration_ms: u64,
    /// A bulk upgrade upgrades one installation every this many milliseconds.
    #[arg(long, default_value_t = 10)]
    rollout_step_ms: u64,
    /// The most installations one bulk upgrade takes.
    #[arg(long, default_value_t = 500)]
    upgrade_limit: u32,
    /// The most bulk upgrades running at once on the platform.
    #[arg(long, default_value_t = 3)]
    global_rollout_limit: u32,
    /// Finished bulk upgrades are forgotten after this many seconds (default: kept).
    #[arg(long)]
    rollout_retention_secs: Option<u64>,
    /// Turn the distribution capability off (sharing and installation links answer UNSUPPORTED).
    #[arg(long)]
    no_distribution: bool,
    /// Latency added to every GraphQL answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// The fraction (0 to 1) of GraphQL requests answered HTTP 500/503.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Sites (host names or cloud ids) whose tasks fail (comma-separated).
    #[arg(long, value_delimiter = ',')]
    failing_sites: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init_logging(cli.log_format);
    match cli.command {
        Command::Dev { dir, examples, platform_seed, platform_listen, mut run } => {
            // The emulator offers sharing and links, so the examples' DistributionPolicy works.
            run.platform_distribution = true;
            let dir = dir.unwrap_or_else(|| localcluster::repo_root().join("target/dev-cluster"));
            dev(dir, examples, (platform_seed, platform_listen), *run).await?
        }
        Command::Platform { command: PlatformCommand::Serve(args) } => platform_serve(args).await?,
    }
    Ok(())
}

async fn platform_serve(args: PlatformServeArgs) -> anyhow::Result<()> {
    let seed = match &args.seed {
        Some(path) => emulator::Seed::load(path)?,
        None => emulator::Seed::default(),
    };
    let config = emulator::EmulatorConfig {
        seed,
        task_duration: Duration::from_millis(args.task_duration_ms),
        rollout_step: Duration::from_millis(args.rollout_step_ms),
        upgrade_limit: args.upgrade_limit,
        global_rollout_limit: args.global_rollout_limit,
        distribution: !args.no_distribution,
        faults: emulator::Faults {
            latency_ms: args.latency_ms,
            error_rate: args.error_rate,
            failing_sites: args.failing_sites,
            ..Default::default()
        },
        state_file: args.state,
        rollout_retention: args.rollout_retention_secs.map(Duration::from_secs),
    };
    eprintln!("forgeops platform serve: GraphQL on http://{0}/graphql, admin on http://{0}/admin", args.listen);
    emulator::serve(config, args.listen, operator::shutdown_signal()).await
}

async fn dev(
    dir: PathBuf,
    examples: Vec<PathBuf>,
    platform: (Option<PathBuf>, SocketAddr),
    mut run: RunArgs,
) -> anyhow::Result<()> {
    let (seed_path, listen) = platform;
    let (seed, seed_name) = match &seed_path {
        Some(path) => (emulator::Seed::load(path)?, path.display().to_string()),
        None => (
            emulator::Seed::from_yaml_str(SEED.1).with_context(|| format!("parsing the built-in {}", SEED.0))?,
            format!("{} (built in)", SEED.0),
        ),
    };
    // The developer account the operator acts as on the emulator: the seed's first.
    let account = seed.accounts.first().cloned().context("the emulator seed has no account")?;
    // No state file: the emulator starts from the seed each time, as the cluster starts empty.
    let config = emulator::EmulatorConfig { seed, state_file: None, ..Default::default() };
    let platform = emulator::start(config, listen).await.context("starting the platform emulator")?;
    // The address it got (`--platform-listen` may ask for port 0).
    run.platform_url = platform.graphql_url();
    eprintln!("forgeops dev: platform emulator at {} (seed {seed_name})", platform.graphql_url());
    let dir = std::path::absolute(&dir)?;
    eprintln!(
        "forgeops dev: starting etcd, kube-apiserver and kube-controller-manager in {} (the first run builds them)",
        dir.display()
    );
    let cluster = localcluster::LocalCluster::start(Some(dir)).await?;
    let metrics = Arc::new(Metrics::default());
    let client = telemetry::counted_client(cluster.admin_config(), metrics.clone())?;
    localcluster::install_crds(&client, &api::all_crds()).await?;
    manifests::apply_text(&client, Path::new(RBAC.0), RBAC.1).await?;
    put_credentials_secret(&client, &run.operator_namespace, &run.credentials_secret, &account).await?;
    let mut applied = Vec::new();
    if examples.is_empty() {
        for (name, text) in EXAMPLES {
            applied.extend(manifests::apply_text(&client, Path::new(name), text).await?);
        }
    }
    for path in &examples {
        applied.extend(manifests::apply_path(&client, path).await?);
    }
    for what in applied {
        eprintln!("forgeops dev: applied {what}");
    }
    let kubectl = localcluster::binaries()?.join("kubectl");
    eprintln!(
        "\nforgeops dev: control plane ready at {}\n  kubeconfig: {}\n  try:        {} --kubeconfig {} get forge -A\n  metrics:    http://{}/metrics\n  Ctrl-C stops the operator and the control plane.\n",
        cluster.server(),
        cluster.kubeconfig_path().display(),
        kubectl.display(),
        cluster.kubeconfig_path().display(),
        run.metrics_addr,
    );
    if run.default_credentials_namespaces.is_empty() && run.default_credentials_namespace_selector.is_none() {
        // A cluster of one developer: every namespace may act with the seed's account. A real
        // cluster grants the default Secret to chosen namespaces only (see docs/security.md);
        // pass --default-credentials-namespaces here to try that.
        run.default_credentials_namespace_selector = Some("kubernetes.io/metadata.name".into());
        eprintln!("forgeops dev: every namespace may use the default credentials Secret (a one-user cluster)");
    }
    let settings = run.settings(&metrics)?;
    let result = operator::run(cluster.admin_config(), metrics, settings, operator::shutdown_signal()).await;
    drop(platform);
    drop(cluster);
    result.map_err(Into::into)
}

/// Writes the default credentials Secret for the emulator's developer account (dev only).
async fn put_credentials_secret(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    account: &emulator::SeedAccount,
) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Secret;
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": {"email": account.email, "apiToken": account.api_token},
    }))?;
    kube::Api::<Secret>::namespaced(client.clone(), namespace)
        .patch(name, &kube::api::PatchParams::apply("forgeops-dev").force(), &kube::api::Patch::Apply(&secret))
        .await
        .with_context(|| format!("writing the credentials Secret {namespace}/{name}"))?;
    eprintln!("forgeops dev: credentials Secret {namespace}/{name} holds the emulator account {}", account.email);
    Ok(())
}
