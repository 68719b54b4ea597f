//! The operator's binary: `forgeops run`, `forgeops crd` and `forgeops reference`. The quick start, the platform
//! emulator and the benchmark are in `crates/dev` (`forgeops-dev`, `forgeops-bench`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use forgeops::cli::RunArgs;
use forgeops::telemetry::{self, LogFormat, Metrics};
use forgeops::{api, operator};

/// jemalloc, which gives freed memory back (see Cargo.toml).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions as YAML, or write them to a file.
    Crd {
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Print the API reference (Markdown, generated from the CRDs), or write it to a file.
    Reference {
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
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
        Command::Reference { output: None } => print!("{}", api::reference::markdown()),
        Command::Reference { output: Some(path) } => {
            std::fs::write(&path, api::reference::markdown()).with_context(|| format!("writing {}", path.display()))?
        }
        Command::Run(args) => {
            let metrics = Arc::new(Metrics::default());
            let config = kube::Config::infer().await.context("no Kubernetes configuration found")?;
            let settings = args.settings(&metrics)?;
            operator::run(config, metrics, settings, operator::shutdown_signal()).await?;
        }
    }
    Ok(())
}
