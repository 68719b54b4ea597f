use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use forgeops::controllers::bulk_upgrade::Limits;
use forgeops::platform::{EmbeddedPlatform, Faults, HttpPlatform, Platform};
use forgeops::telemetry::{self, LogFormat, Metrics};
use forgeops::{api, localcluster, operator};
use k8s_openapi::api::core::v1::Secret;

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
        #[command(flatten)]
        run: RunArgs,
    },
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
    /// Where installs, upgrades and uninstalls are carried out.
    #[arg(long, env = "FORGEOPS_PLATFORM", value_enum, default_value = "embedded")]
    platform: PlatformKind,
    /// HTTP platform: the URL actions are POSTed to.
    #[arg(long, env = "FORGEOPS_PLATFORM_URL", required_if_eq("platform", "http"))]
    platform_url: Option<http::Uri>,
    /// HTTP platform: the Secret (in the operator namespace) whose `hmac-key` signs requests.
    #[arg(long, env = "FORGEOPS_PLATFORM_SECRET", default_value = "forgeops-platform")]
    platform_secret: String,
    /// HTTP platform: seconds to wait for one answer.
    #[arg(long, default_value_t = 10)]
    platform_timeout_secs: u64,
    /// HTTP platform: attempts per action before it is reported as failed.
    #[arg(long, default_value_t = 4)]
    platform_attempts: u32,
    /// At most this many bulk upgrades run at once, across every namespace the operator watches.
    #[arg(long, env = "FORGEOPS_MAX_RUNNING_BULK_UPGRADES", default_value_t = 3)]
    max_running_bulk_upgrades: u32,
    /// Run the controllers only in the replica that holds the leader Lease (for more than one replica).
    #[arg(long, env = "FORGEOPS_LEADER_ELECT")]
    leader_elect: bool,
    /// Seconds after which a concurrency Lease whose holder stopped renewing it is taken over.
    #[arg(long, default_value_t = 30)]
    lease_duration_secs: u64,
    /// Embedded platform: latency added to every action, in milliseconds.
    #[arg(long, default_value_t = 0)]
    embedded_latency_ms: u64,
    /// Embedded platform: sites whose actions fail (comma-separated).
    #[arg(long, value_delimiter = ',')]
    embedded_fail_sites: Vec<String>,
    /// Embedded platform: the fraction (0 to 1) of actions that fail.
    #[arg(long, default_value_t = 0.0)]
    embedded_fail_fraction: f64,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PlatformKind {
    Embedded,
    Http,
}

impl RunArgs {
    async fn settings(&self, client: &kube::Client) -> anyhow::Result<operator::Settings> {
        let platform: Arc<dyn Platform> = match self.platform {
            PlatformKind::Embedded => Arc::new(EmbeddedPlatform::new(Faults {
                latency: Duration::from_millis(self.embedded_latency_ms),
                fail_all: false,
                fail_fraction: self.embedded_fail_fraction,
                fail_sites: self.embedded_fail_sites.iter().cloned().collect(),
            })),
            PlatformKind::Http => {
                let url = self.platform_url.clone().context("--platform-url is required with --platform http")?;
                let secrets: kube::Api<Secret> = kube::Api::namespaced(client.clone(), &self.operator_namespace);
                let secret = secrets.get(&self.platform_secret).await.with_context(|| {
                    format!("reading Secret {}/{} for the platform key", self.operator_namespace, self.platform_secret)
                })?;
                let key = secret.data.and_then(|d| d.get("hmac-key").map(|k| k.0.clone())).with_context(|| {
                    format!("Secret {}/{} has no hmac-key", self.operator_namespace, self.platform_secret)
                })?;
                let timeout = Duration::from_secs(self.platform_timeout_secs);
                Arc::new(HttpPlatform::new(url, &key, timeout, self.platform_attempts)?)
            }
        };
        Ok(operator::Settings {
            platform,
            operator_namespace: self.operator_namespace.clone(),
            namespace: self.namespace.clone(),
            metrics_addr: Some(self.metrics_addr),
            instance: self.instance.clone(),
            leader_election: self.leader_elect.then(|| Duration::from_secs(self.lease_duration_secs.clamp(3, 60))),
            bulk_limits: Limits {
                global: self.max_running_bulk_upgrades,
                lease_duration: Duration::from_secs(self.lease_duration_secs),
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
            let settings = args.settings(&client).await?;
            operator::run(client, metrics, settings, operator::shutdown_signal()).await?;
        }
        Command::Dev { dir, examples, run } => dev(dir, examples, run).await?,
    }
    Ok(())
}

async fn dev(dir: PathBuf, examples: Vec<PathBuf>, run: RunArgs) -> anyhow::Result<()> {
    let dir = std::path::absolute(&dir)?;
    eprintln!("forgeops dev: starting etcd and kube-apiserver in {} (the first run builds them)", dir.display());
    let cluster = localcluster::LocalCluster::start(Some(dir)).await?;
    let metrics = Arc::new(Metrics::default());
    let client = telemetry::counted_client(cluster.admin_config(), metrics.clone())?;
    localcluster::install_crds(&client, &api::all_crds()).await?;
    forgeops::manifests::apply_path(&client, std::path::Path::new("deploy/rbac.yaml")).await?;
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
    let settings = run.settings(&client).await?;
    let result = operator::run(client, metrics, settings, operator::shutdown_signal()).await;
    drop(cluster);
    result.map_err(Into::into)
}
