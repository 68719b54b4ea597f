//! The quick start as a user runs it: `forgeops-dev dev` started from a directory outside the
//! repository (it embeds what it applies), twice. Each run starts fresh, cluster and emulator
//! alike, so the example Installations are installed each time, not adopted from a platform that
//! remembers the last run. Loopback only; each wait is bounded and the process is stopped with
//! SIGTERM (and dies with the test binary in any case).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use forgeops::api::Installation;
use forgeops_testenv::localcluster::{self, KeptProcess};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

const INSTALLATIONS: [&str; 2] = ["acme-team-dashboard", "globex-issue-tracker-insights"];

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `forgeops-dev dev` in `cwd` and returns it once the control plane is ready.
fn start(cwd: &Path, cluster_dir: &Path, run: usize) -> KeptProcess {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_forgeops-dev"));
    cmd.current_dir(cwd)
        .args(["dev", "--platform-listen", "127.0.0.1:0"])
        .arg("--dir")
        .arg(cluster_dir)
        .args(["--metrics-addr", &format!("127.0.0.1:{}", free_port())])
        .env("RUST_LOG", "info");
    let log = cwd.join(format!("dev-{run}.log"));
    let dev = KeptProcess::spawn("forgeops-dev", cmd, &log).expect("starting forgeops-dev dev");
    let deadline = Instant::now() + Duration::from_secs(180);
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("control plane ready") {
        assert!(!dev.has_exited(), "forgeops-dev dev exited:\n{}", dev.log_tail());
        assert!(Instant::now() < deadline, "not ready in 180 s:\n{}", dev.log_tail());
        std::thread::sleep(Duration::from_millis(200));
    }
    dev
}

async fn client(kubeconfig: &Path) -> kube::Client {
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(kubeconfig).expect("reading the printed kubeconfig"),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// What a run left on an example Installation: the version it installed and whether it adopted
/// an installation the platform already had instead of installing.
#[derive(Debug)]
struct Outcome {
    name: String,
    installed_version: Option<String>,
    adopted: bool,
}

/// Waits until every example Installation is Ready, and returns what each run left on them and
/// the reasons of their Events.
async fn examples_installed(client: &kube::Client, dev: &KeptProcess) -> (Vec<Outcome>, Vec<(String, String)>) {
    let installations: Api<Installation> = Api::namespaced(client.clone(), "forge-demo");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut outcomes = Vec::new();
    for name in INSTALLATIONS {
        loop {
            let status = installations.get_opt(name).await.ok().flatten().and_then(|i| i.status);
            if let Some(status) =
                status.filter(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            {
                outcomes.push(Outcome {
                    name: name.to_string(),
                    installed_version: status.installed_version,
                    adopted: status.adopted,
                });
                break;
            }
            assert!(!dev.has_exited(), "forgeops-dev dev exited:\n{}", dev.log_tail());
            assert!(Instant::now() < deadline, "{name} not Ready in 120 s:\n{}", dev.log_tail());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let events: Api<Event> = Api::namespaced(client.clone(), "forge-demo");
    let mut reasons: Vec<(String, String)> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Installation"))
        .map(|e| (e.regarding.and_then(|r| r.name).unwrap_or_default(), e.reason.unwrap_or_default()))
        .collect();
    reasons.sort();
    (outcomes, reasons)
}

#[tokio::test]
async fn the_quick_start_works_from_any_directory_and_starts_fresh_each_time() {
    // The control plane binaries are built (first use only, unbounded like every test's) before
    // the clock of the quick start starts.
    localcluster::binaries().expect("building the control plane");
    let cwd: PathBuf = std::env::temp_dir().join(format!("forgeops-quick-start-{}", std::process::id()));
    std::fs::create_dir_all(&cwd).unwrap();
    let cluster_dir = cwd.join("cluster");
    for run in 1..=2 {
        let started = Instant::now();
        let dev = start(&cwd, &cluster_dir, run);
        let ready = started.elapsed();
        let client = client(&cluster_dir.join("kubeconfig")).await;
        let (outcomes, reasons) = examples_installed(&client, &dev).await;
        println!(
            "run {run}: control plane ready in {:.1} s, examples Ready in {:.1} s; {outcomes:?}; events {reasons:?}",
            ready.as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
        // An install records no Event (its condition tells it); an adoption records one.
        for outcome in &outcomes {
            assert!(
                outcome.installed_version.is_some() && !outcome.adopted,
                "run {run}: {} was not installed by this run: {outcome:?}",
                outcome.name
            );
        }
        assert!(!reasons.iter().any(|(_, r)| r == "Adopted"), "run {run} adopted: {reasons:?}");
        let stopping = Instant::now();
        dev.stop(Duration::from_secs(30));
        println!("run {run}: stopped in {:.1} s", stopping.elapsed().as_secs_f64());
    }
    std::fs::remove_dir_all(&cwd).ok();
}
