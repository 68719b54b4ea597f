use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
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
}

impl RunArgs {
    fn settings(&self) -> operator::Settings {
        operator::Settings {
            namespace: self.namespace.clone(),
            metrics_addr: Some(self.metrics_addr),
            instance: self.instance.clone(),
        }
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
            operator::run(client, metrics, args.settings(), operator::shutdown_signal()).await?;
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
    let result = operator::run(client, metrics, run.settings(), operator::shutdown_signal()).await;
    drop(cluster);
    result.map_err(Into::into)
}
