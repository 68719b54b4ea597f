//! The scale benchmark: `cargo run --release --bin forgeops-bench -- --installations 1000`.
//! Local tooling (see `forgeops::bench`), not part of the operator.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    forgeops::telemetry::init_logging(forgeops::telemetry::LogFormat::Text);
    let options = forgeops::bench::Options::parse();
    let report = forgeops::bench::run(options).await?;
    println!("{}", report.table());
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
