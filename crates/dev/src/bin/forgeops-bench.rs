//! The scale benchmark: `cargo bench-scale -- --installations 1000` (see `.cargo/config.toml`).
//! Local tooling (see `forgeops_dev::bench`), not part of the operator.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    forgeops::telemetry::init_logging(forgeops::telemetry::LogFormat::Text);
    let options = forgeops_dev::bench::Options::parse();
    let report = forgeops_dev::bench::run(options).await?;
    println!("{}", report.table());
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
