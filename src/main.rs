use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use forgeops::controllers::bulk_upgrade::Limits;
use forgeops::platform::{ForgeGateway, GatewayOptions, Platform};
use forgeops::telemetry::{self, LogFormat, Metrics};
use forgeops::{api, localcluster, operator};

/// forgeops: declare how Atlassian Forge apps are distributed, in Kubernetes.
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
    /// Run the operator against the cluster of the current kubeconfig (or in-cluster config).
    Run(RunArgs),
    /// Print the CustomResourceDefinitions as YAML, or write them to a file.
    Crd {
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Quick start: build and start a local control plane, install the CRDs, apply the examples
    /// and run the operator in the foreground. Ctrl-C stops everything.
    Dev {
        /// Where the local control plane keeps its state, logs and kubeconfig.
        #[arg(long, default_value = "target/dev-cluster")]
        dir: PathBuf,
        /// The example manifests to apply (files or directories of YAML).
        #[arg(long, default_value = "deploy/examples")]
        examples: Vec<PathBuf>,
        /// The local platform emulator's seed: the example apps, sites and the developer account.
        #[arg(long, default_value = "deploy/emulator/seed.yaml")]
        platform_seed: PathBuf,
        /// Where the local platform emulator listens (loopback).
        #[arg(long, default_value = "127.0.0.1:8765")]
        platform_listen: SocketAddr,
        #[command(flatten)]
        run: RunArgs,
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
    #[arg(long, default_value_t = 1800)]
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

#[derive(clap::Args)]
struct RunArgs {
    /// Watch only this namespace (default: every namespace).
    #[arg(long, env = "FORGEOPS_NAMESPACE")]
    namespace: Option<String>,
    /// Serve /metrics, /healthz and /readyz here.
    #[arg(long, env = "FORGEOPS_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    metrics_addr: SocketAddr,
    /// This replica's name, recorded on Events (set it to the pod name).
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,
    /// The operator's own namespace, where it keeps the installation-link key Secret.
    #[arg(long, env = "POD_NAMESPACE", default_value = "forgeops-system")]
    operator_namespace: String,
    /// The Forge GraphQL gateway (the real platform), or a local emulator's `/graphql` URL. The same
    /// variable as the `forge` CLI's.
    #[arg(long, env = "FORGE_GRAPHQL_GATEWAY", default_value = forgeops::platform::forge::DEFAULT_GATEWAY)]
    platform_url: String,
    /// The default credentials Secret (keys `email`, `apiToken`) in the operator namespace, for
    /// ForgeApps that name none in `spec.credentialsSecretRef`.
    #[arg(long, env = "FORGEOPS_CREDENTIALS_SECRET", default_value = "forgeops-credentials")]
    credentials_secret: String,
    /// Seconds to wait for one platform request.
    #[arg(long, env = "FORGEOPS_PLATFORM_TIMEOUT_SECS", default_value_t = 30)]
    platform_timeout_secs: u64,
    /// Attempts per platform request when it is rate limited or the platform is unavailable.
    #[arg(long, env = "FORGEOPS_PLATFORM_ATTEMPTS", default_value_t = 5)]
    platform_attempts: u32,
    /// A PEM file of extra CA certificates to trust for the platform (for example a proxy's).
    #[arg(long, env = "FORGEOPS_PLATFORM_CA_BUNDLE")]
    platform_ca_bundle: Option<PathBuf>,
    /// Use the platform's distribution operations (sharing by link, installation links). They are
    /// undocumented for API-token auth, so they are off unless asked for.
    #[arg(long, env = "FORGEOPS_PLATFORM_DISTRIBUTION")]
    platform_distribution: bool,
    /// At most this many bulk upgrades run at once, across every namespace the operator watches.
    #[arg(long, env = "FORGEOPS_MAX_RUNNING_BULK_UPGRADES", default_value_t = 3)]
    max_running_bulk_upgrades: u32,
    /// Run the controllers only in the replica that holds the leader Lease (for more than one replica).
    #[arg(long, env = "FORGEOPS_LEADER_ELECT")]
    leader_elect: bool,
    /// Seconds after which a concurrency Lease whose holder stopped renewing it is taken over.
    #[arg(long, default_value_t = 30)]
    lease_duration_secs: u64,

    /// How often a running bulk-upgrade rollout is read from the platform, in seconds.
    #[arg(long, default_value_t = 2, env = "FORGEOPS_ROLLOUT_POLL_SECS")]
    rollout_poll_secs: u64,
}

impl RunArgs {
    fn settings(&self, metrics: &Arc<Metrics>) -> anyhow::Result<operator::Settings> {
        let options = GatewayOptions {
            url: self.platform_url.clone(),
            timeout: Duration::from_secs(self.platform_timeout_secs.max(1)),
            attempts: self.platform_attempts.max(1),
            ca_bundle: self.platform_ca_bundle.clone(),
            distribution: self.platform_distribution,
            ..GatewayOptions::default()
        };
        let platform: Arc<dyn Platform> = Arc::new(ForgeGateway::new(options, Some(metrics.clone()))?);
        Ok(operator::Settings {
            platform,
            credentials_secret: self.credentials_secret.clone(),
            operator_namespace: self.operator_namespace.clone(),
            namespace: self.namespace.clone(),
            metrics_addr: Some(self.metrics_addr),
            instance: self.instance.clone(),
            leader_election: self.leader_elect.then(|| Duration::from_secs(self.lease_duration_secs.clamp(3, 60))),
            health: Default::default(),
            bulk_limits: Limits {
                global: self.max_running_bulk_upgrades,
                lease_duration: Duration::from_secs(self.lease_duration_secs),
                poll: Duration::from_secs(self.rollout_poll_secs.max(1)),
                ..Limits::default()
            },
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init_logging(cli.log_format);
    match cli.command {
        Command::Crd { output: None } => print!("{}", api::crds_yaml()),
        Command::Crd { output: Some(path) } => {
            std::fs::write(&path, api::crds_yaml()).with_context(|| format!("writing {}", path.display()))?
        }
        Command::Run(args) => {
            let metrics = Arc::new(Metrics::default());
            let config = kube::Config::infer().await.context("no Kubernetes configuration found")?;
            let client = telemetry::counted_client(config, metrics.clone())?;
            let settings = args.settings(&metrics)?;
            operator::run(client, metrics, settings, operator::shutdown_signal()).await?;
        }
        Command::Dev { dir, examples, platform_seed, platform_listen, mut run } => {
            run.platform_url = format!("http://{platform_listen}/graphql");
            // The emulator offers sharing and links, so the examples' DistributionPolicy works.
            run.platform_distribution = true;
            dev(dir, examples, (platform_seed, platform_listen), run).await?
        }
        Command::Platform { command: PlatformCommand::Serve(args) } => platform_serve(args).await?,
    }
    Ok(())
}

async fn platform_serve(args: PlatformServeArgs) -> anyhow::Result<()> {
    use forgeops::emulator;
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
    platform: (PathBuf, SocketAddr),
    run: RunArgs,
) -> anyhow::Result<()> {
    use forgeops::emulator;
    let (seed_path, listen) = platform;
    let seed = emulator::Seed::load(&seed_path)?;
    // The developer account the operator acts as on the emulator: the seed's first.
    let account = seed.accounts.first().cloned().context("the emulator seed has no account")?;
    let state = std::path::absolute(&dir)?.join("platform-state.json");
    std::fs::create_dir_all(&dir)?;
    let config = emulator::EmulatorConfig { seed, state_file: Some(state), ..Default::default() };
    let platform = emulator::start(config, listen).await.context("starting the platform emulator")?;
    eprintln!("forgeops dev: platform emulator at {} (seed {})", platform.graphql_url(), seed_path.display());
    let dir = std::path::absolute(&dir)?;
    eprintln!("forgeops dev: starting etcd and kube-apiserver in {} (the first run builds them)", dir.display());
    let cluster = localcluster::LocalCluster::start(Some(dir)).await?;
    let metrics = Arc::new(Metrics::default());
    let client = telemetry::counted_client(cluster.admin_config(), metrics.clone())?;
    localcluster::install_crds(&client, &api::all_crds()).await?;
    forgeops::manifests::apply_path(&client, std::path::Path::new("deploy/base/rbac.yaml")).await?;
    put_credentials_secret(&client, &run.operator_namespace, &run.credentials_secret, &account).await?;
    for path in &examples {
        for applied in forgeops::manifests::apply_path(&client, path).await? {
            eprintln!("forgeops dev: applied {applied}");
        }
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
    let settings = run.settings(&metrics)?;
    let result = operator::run(client, metrics, settings, operator::shutdown_signal()).await;
    drop(platform);
    drop(cluster);
    result.map_err(Into::into)
}

/// Writes the default credentials Secret for the emulator's developer account (dev only).
async fn put_credentials_secret(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    account: &forgeops::emulator::SeedAccount,
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
