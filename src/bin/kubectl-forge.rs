//! `kubectl forge`: the kubectl plugin (see `forgeops::kubectl_forge`). Put this binary on the
//! PATH and kubectl finds it: `kubectl forge status fbu/NAME -w`.

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = forgeops::kubectl_forge::Cli::parse();
    match forgeops::kubectl_forge::run(cli).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
