//! `kubectl forge` (the `kubectl-forge` binary, a kubectl plugin): see an app's fleet or a
//! BulkUpgrade's steps, and steer a rollout only through what the operator already honours: the
//! approval and emergency-stop annotations, the refresh annotation, and `spec.paused`. It uses
//! the current kubeconfig, as kubectl does.
//!
//! The rendering is pure ([`render_bulk_upgrade`], [`render_app`], [`render_preview`]) and
//! unit-tested; the commands are end-to-end tested against the real kube-apiserver with the
//! operator running (`tests/kubectl_forge.rs`).

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::StreamExt;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::api::{BulkUpgrade, BulkUpgradeState, ForgeApp, Installation, REFRESH_ANNOTATION};
use crate::rules::bulk_upgrade::{APPROVE_STEP_PREFIX, EMERGENCY_STOP};

/// See and steer forgeops objects (kubectl forge).
#[derive(clap::Parser, Debug)]
#[command(name = "kubectl-forge", bin_name = "kubectl forge", version, about)]
pub struct Cli {
    /// The namespace (default: the kubeconfig context's).
    #[arg(short, long, global = true)]
    pub namespace: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// An app's fleet (`forgeapp/NAME`, or a bare NAME: sites per version in each environment, and
    /// its Installations), or a BulkUpgrade's steps, rollouts and analyses (`bulkupgrade/NAME`, `fbu/NAME`).
    Status {
        /// `forgeapp/NAME` (or NAME), or `bulkupgrade/NAME`.
        target: String,
        /// Print again on every change; for a BulkUpgrade, until it is Complete (exit 0), Failed or
        /// Cancelled (exit 1).
        #[arg(short, long)]
        watch: bool,
    },
    /// Approve the step a BulkUpgrade waits for (annotation `forgeops.dev/approve-step-N=WHO`).
    Approve {
        bulk_upgrade: String,
        /// The step (default: the one it is waiting for).
        #[arg(long)]
        step: Option<u32>,
        /// Who approves (default: the user the API server knows you as).
        #[arg(long = "as-name", value_name = "WHO")]
        by: Option<String>,
    },
    /// Hold a BulkUpgrade before its next rollout (`spec.paused: true`; a running rollout runs on).
    Pause { bulk_upgrade: String },
    /// Let a paused BulkUpgrade go on (`spec.paused: false`).
    Resume { bulk_upgrade: String },
    /// Emergency stop: cancel the running rollout and stop for good (annotation
    /// `forgeops.dev/emergency-stop`, which a GitOps sync does not undo).
    Stop {
        bulk_upgrade: String,
        /// Why, recorded with who.
        #[arg(long)]
        reason: Option<String>,
        /// Who stops it (default: the user the API server knows you as).
        #[arg(long = "as-name", value_name = "WHO")]
        by: Option<String>,
    },
    /// Read a ForgeApp from the platform now (annotation `forgeops.dev/refresh`) and wait for it.
    Refresh {
        forge_app: String,
        /// Seconds to wait for the operator to have read it (0: do not wait).
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// What a BulkUpgrade will do before it starts (`status.preview`).
    Preview { bulk_upgrade: String },
    /// Print a shell completion script: `source <(kubectl forge completion bash)`.
    Completion { shell: clap_complete::Shell },
}

/// What `status` was asked about.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    App(String),
    BulkUpgrade(String),
}

/// `forgeapp/NAME`, `fapp/NAME`, `bulkupgrade/NAME`, `fbu/NAME` or a bare NAME (a ForgeApp).
pub fn parse_target(text: &str) -> anyhow::Result<Target> {
    match text.split_once('/') {
        None => Ok(Target::App(text.to_string())),
        Some((kind, name)) if !name.is_empty() => match kind.to_ascii_lowercase().as_str() {
            "forgeapp" | "forgeapps" | "fapp" | "forgeapp.forgeops.dev" => Ok(Target::App(name.into())),
            "bulkupgrade" | "bulkupgrades" | "fbu" | "bulkupgrade.forgeops.dev" => Ok(Target::BulkUpgrade(name.into())),
            other => bail!("`{other}`: give forgeapp/NAME or bulkupgrade/NAME"),
        },
        Some(_) => bail!("`{text}`: a name is missing after the /"),
    }
}

fn table(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows.iter().map(Vec::len).max().unwrap_or(0))
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row.iter().enumerate().map(|(c, s)| format!("{s:<w$}", w = widths[c])).collect();
        let _ = writeln!(out, "  {}", line.join("  ").trim_end());
    }
    out
}

fn ready_line(conditions: &[crate::api::Condition]) -> String {
    match conditions.iter().find(|c| c.type_ == "Ready") {
        Some(c) => format!("Ready={} {}: {}", c.status, c.reason, c.message),
        None => "Ready: not reported yet".into(),
    }
}

fn percent(rate: Option<f64>) -> String {
    rate.map(|r| format!("{r:.2}%")).unwrap_or_else(|| "-".into())
}

/// A BulkUpgrade: its state, each step with its rollouts and analysis, approvals, the stop.
pub fn render_bulk_upgrade(bu: &BulkUpgrade) -> String {
    let status = bu.status.clone().unwrap_or_default();
    let spec = &bu.spec;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "BulkUpgrade {}/{}: {} {} {} -> {}",
        bu.namespace().unwrap_or_default(),
        bu.name_any(),
        spec.app_ref.name,
        spec.environment,
        spec.from_major,
        spec.to_major
    );
    let steps = spec.steps.len().max(1);
    let state = status.state.map(|s| format!("{s:?}")).unwrap_or_else(|| "Pending".into());
    let step = status.step.map(|s| format!(" (step {s} of {steps})")).unwrap_or_default();
    let paused = if spec.paused { ", paused" } else { "" };
    let _ = writeln!(out, "State: {state}{step}{paused}");
    let _ = writeln!(out, "{}", ready_line(&status.conditions));
    let _ = writeln!(
        out,
        "Sites: {} upgraded, {} failed, {} pending of {}",
        status.upgraded, status.failed, status.pending, status.total
    );
    let mut rows =
        vec![["STEP", "LIMIT", "GATE", "ROLLOUTS", "UPGRADED", "FAILED", "ANALYSIS"].map(String::from).to_vec()];
    for n in 1..=steps as u32 {
        let declared = spec.steps.get(n as usize - 1);
        let limit = declared.and_then(|s| s.limit).map(|l| l.to_string()).unwrap_or_else(|| "rest".into());
        let mut gate = Vec::new();
        if let Some(p) = declared.and_then(|s| s.pause.as_ref()) {
            gate.push(format!("bake {}", p.duration));
        }
        if declared.is_some_and(|s| s.require_approval) {
            let by = status.approvals.iter().find(|a| a.step == n).map(|a| format!(" by {}", a.by)).unwrap_or_default();
            gate.push(format!("approval{by}"));
        }
        let rollouts: Vec<_> = status.rollouts.iter().filter(|r| r.step == n).collect();
        let phases: Vec<String> = rollouts.iter().map(|r| format!("{:?}", r.status)).collect();
        let analysis = status
            .analyses
            .iter()
            .find(|a| a.step == n)
            .map(|a| {
                format!(
                    "{:?}: {} sites {} ({} calls) vs baseline {}",
                    a.verdict,
                    a.cohort.sites,
                    percent(a.cohort.success_rate),
                    a.cohort.invocations,
                    percent(a.baseline.success_rate)
                )
            })
            .unwrap_or_else(|| "-".into());
        rows.push(vec![
            n.to_string(),
            limit,
            if gate.is_empty() { "-".into() } else { gate.join(", ") },
            if phases.is_empty() { "-".into() } else { phases.join(",") },
            rollouts.iter().map(|r| r.completed).sum::<u32>().to_string(),
            rollouts.iter().map(|r| r.failed).sum::<u32>().to_string(),
            analysis,
        ]);
    }
    out.push_str("Steps:\n");
    out.push_str(&table(&rows));
    if let Some(stop) = &status.emergency_stop {
        let _ = writeln!(out, "Emergency stop: {} at {}", stop.by, stop.at.0);
    }
    if status.state == Some(BulkUpgradeState::AwaitingApproval)
        && let Some(step) = status.step
    {
        let _ = writeln!(out, "Next: kubectl forge approve {} --step {step}", bu.name_any());
    }
    out
}

/// An app's fleet: per environment, the latest version and the sites on each version (the
/// platform's counts), then the Installations declared for it here.
pub fn render_app(app: &ForgeApp, installations: &[Installation]) -> String {
    let status = app.status.clone().unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(out, "ForgeApp {}/{}: {}", app.namespace().unwrap_or_default(), app.name_any(), app.spec.app_id);
    let _ = writeln!(out, "{}", ready_line(&status.conditions));
    let mut rows = vec![["ENVIRONMENT", "LATEST", "VERSION", "SITES"].map(String::from).to_vec()];
    for env in &status.environments {
        let latest = env.latest_version.clone().unwrap_or_else(|| "-".into());
        if env.installed_versions.is_empty() {
            rows.push(vec![env.name.clone(), latest.clone(), "-".into(), "0".into()]);
        }
        for (i, v) in env.installed_versions.iter().enumerate() {
            let (name, latest) =
                if i == 0 { (env.name.clone(), latest.clone()) } else { (String::new(), String::new()) };
            rows.push(vec![name, latest, v.version.clone(), v.installations.to_string()]);
        }
    }
    out.push_str("Fleet (the platform's count of sites per version):\n");
    out.push_str(&table(&rows));
    let ready = installations
        .iter()
        .filter(|i| {
            i.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count();
    let _ = writeln!(out, "Installations declared here: {} ({ready} Ready)", installations.len());
    if !installations.is_empty() {
        let mut rows = vec![["NAME", "SITE", "ENVIRONMENT", "INSTALLED", "READY"].map(String::from).to_vec()];
        for i in installations {
            let s = i.status.clone().unwrap_or_default();
            let ready = s.conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.status.to_string());
            rows.push(vec![
                i.name_any(),
                i.spec.site.clone(),
                i.spec.environment.clone(),
                s.installed_version.unwrap_or_else(|| "-".into()),
                ready.unwrap_or_else(|| "-".into()),
            ]);
        }
        out.push_str(&table(&rows));
    }
    out
}

/// `status.preview`, or why there is none.
pub fn render_preview(bu: &BulkUpgrade) -> String {
    let Some(p) = bu.status.as_ref().and_then(|s| s.preview.clone()) else {
        return format!(
            "BulkUpgrade {} has no preview yet: the operator computes it from the platform's counts before the first rollout\n",
            bu.name_any()
        );
    };
    let mut out = format!("Preview of BulkUpgrade {}:\n", bu.name_any());
    let cap = p.rollout_cap.map(|c| c.to_string()).unwrap_or_else(|| "none".into());
    let rows = vec![
        vec!["eligible".to_string(), p.eligible.to_string()],
        vec!["planned".to_string(), p.planned.to_string()],
        vec!["pinned (left alone)".to_string(), p.pinned.to_string()],
        vec!["consent required".to_string(), p.consent_required.to_string()],
        vec!["rollouts".to_string(), format!("{} (the platform's cap per rollout: {cap})", p.rollouts)],
        vec![
            "at least".to_string(),
            format!("{} s of gates (bake time, analysis windows)", p.minimum_duration_seconds),
        ],
    ];
    out.push_str(&table(&rows));
    for v in &p.by_version {
        let _ = writeln!(out, "  on {}: {}", v.version, v.installations);
    }
    out
}

/// Which step `approve` approves: the one asked, or the one the upgrade waits for.
pub fn step_to_approve(bu: &BulkUpgrade, asked: Option<u32>) -> anyhow::Result<u32> {
    if let Some(step) = asked {
        if step == 0 || step as usize > bu.spec.steps.len().max(1) {
            bail!("step {step}: {} has steps 1 to {}", bu.name_any(), bu.spec.steps.len().max(1));
        }
        return Ok(step);
    }
    let status = bu.status.clone().unwrap_or_default();
    match (status.state, status.step) {
        (Some(BulkUpgradeState::AwaitingApproval), Some(step)) => Ok(step),
        (state, _) => bail!(
            "{} is {}, not awaiting approval; give --step N to approve a later step ahead",
            bu.name_any(),
            state.map(|s| format!("{s:?}")).unwrap_or_else(|| "not started".into())
        ),
    }
}

/// Whether a GitOps tool manages the object (so a sync may set a spec change back).
fn gitops_managed(meta: &kube::api::ObjectMeta) -> bool {
    let keys = meta.labels.iter().flatten().chain(meta.annotations.iter().flatten()).map(|(k, _)| k.as_str());
    keys.into_iter().any(|k| k.starts_with("argocd.argoproj.io/") || k.starts_with("kustomize.toolkit.fluxcd.io/"))
}

const MANAGER: &str = "kubectl-forge";

async fn who(client: &Client, asked: Option<String>) -> String {
    if let Some(by) = asked {
        return by;
    }
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let review: SelfSubjectReview =
        serde_json::from_value(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}))
            .unwrap_or_default();
    let reviews: Api<SelfSubjectReview> = Api::all(client.clone());
    let name = reviews
        .create(&Default::default(), &review)
        .await
        .ok()
        .and_then(|r| r.status)
        .and_then(|s| s.user_info)
        .and_then(|u| u.username);
    name.or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "kubectl-forge".into())
}

async fn annotate(api: &Api<BulkUpgrade>, name: &str, key: &str, value: &str) -> anyhow::Result<()> {
    let patch = json!({"metadata": {"annotations": {key: value}}});
    api.patch(name, &PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() }, &Patch::Merge(&patch))
        .await
        .with_context(|| format!("annotating bulkupgrade/{name}"))?;
    Ok(())
}

async fn set_paused(api: &Api<BulkUpgrade>, name: &str, paused: bool) -> anyhow::Result<()> {
    let bu = api.get(name).await.with_context(|| format!("reading bulkupgrade/{name}"))?;
    let patch = json!({"spec": {"paused": paused}});
    api.patch(name, &PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() }, &Patch::Merge(&patch))
        .await
        .with_context(|| format!("setting spec.paused on bulkupgrade/{name}"))?;
    let verb = if paused { "paused (a running rollout runs on to its end)" } else { "resumed" };
    println!("bulkupgrade/{name} {verb}");
    if gitops_managed(&bu.metadata) {
        eprintln!(
            "note: a GitOps tool manages bulkupgrade/{name}: a sync sets spec.paused back to what Git says; change it in Git to keep it"
        );
    }
    Ok(())
}

fn finished(bu: &BulkUpgrade) -> Option<bool> {
    match bu.status.as_ref().and_then(|s| s.state) {
        Some(BulkUpgradeState::Complete) => Some(true),
        Some(BulkUpgradeState::Failed | BulkUpgradeState::Cancelled) => Some(false),
        _ => None,
    }
}

/// Runs one command; answers the process's exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    if let Command::Completion { shell } = cli.command {
        let mut command = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(shell, &mut command, "kubectl-forge", &mut std::io::stdout());
        return Ok(0);
    }
    let client = Client::try_default().await.context("no Kubernetes configuration found (the current kubeconfig)")?;
    let namespace = cli.namespace.clone().unwrap_or_else(|| client.default_namespace().to_string());
    let bus: Api<BulkUpgrade> = Api::namespaced(client.clone(), &namespace);
    let apps: Api<ForgeApp> = Api::namespaced(client.clone(), &namespace);
    match cli.command {
        Command::Status { target, watch } => match parse_target(&target)? {
            Target::BulkUpgrade(name) => {
                let bu = bus.get(&name).await.with_context(|| format!("reading bulkupgrade/{name}"))?;
                print!("{}", render_bulk_upgrade(&bu));
                if !watch {
                    return Ok(0);
                }
                let mut last = render_bulk_upgrade(&bu);
                if let Some(ok) = finished(&bu) {
                    return Ok(if ok { 0 } else { 1 });
                }
                let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
                let mut changes = Box::pin(watcher(bus.clone(), config).applied_objects());
                while let Some(bu) = changes.next().await {
                    let bu = bu.context("watching")?;
                    let text = render_bulk_upgrade(&bu);
                    if text != last {
                        println!();
                        print!("{text}");
                        last = text;
                    }
                    if let Some(ok) = finished(&bu) {
                        return Ok(if ok { 0 } else { 1 });
                    }
                }
                Ok(1)
            }
            Target::App(name) => {
                let installations: Api<Installation> = Api::namespaced(client.clone(), &namespace);
                let mut last = String::new();
                loop {
                    let app = apps.get(&name).await.with_context(|| format!("reading forgeapp/{name}"))?;
                    let list = installations
                        .list(&ListParams::default().fields(&format!("spec.appRef.name={name}")))
                        .await
                        .context("listing the app's Installations")?;
                    let text = render_app(&app, &list.items);
                    if text != last {
                        if !last.is_empty() {
                            println!();
                        }
                        print!("{text}");
                        last = text;
                    }
                    if !watch {
                        return Ok(0);
                    }
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        },
        Command::Approve { bulk_upgrade, step, by } => {
            let bu = bus.get(&bulk_upgrade).await.with_context(|| format!("reading bulkupgrade/{bulk_upgrade}"))?;
            let step = step_to_approve(&bu, step)?;
            let by = who(&client, by).await;
            annotate(&bus, &bulk_upgrade, &format!("{APPROVE_STEP_PREFIX}{step}"), &by).await?;
            println!("bulkupgrade/{bulk_upgrade}: step {step} approved by {by}");
            Ok(0)
        }
        Command::Pause { bulk_upgrade } => set_paused(&bus, &bulk_upgrade, true).await.map(|()| 0),
        Command::Resume { bulk_upgrade } => set_paused(&bus, &bulk_upgrade, false).await.map(|()| 0),
        Command::Stop { bulk_upgrade, reason, by } => {
            bus.get(&bulk_upgrade).await.with_context(|| format!("reading bulkupgrade/{bulk_upgrade}"))?;
            let by = who(&client, by).await;
            let value = match reason {
                Some(reason) => format!("{by}: {reason}"),
                None => by,
            };
            annotate(&bus, &bulk_upgrade, EMERGENCY_STOP, &value).await?;
            println!("bulkupgrade/{bulk_upgrade}: emergency stop asked ({value}); the running rollout is cancelled");
            Ok(0)
        }
        Command::Refresh { forge_app, timeout } => {
            let asked = jiff::Timestamp::now().to_string();
            let patch = json!({"metadata": {"annotations": {REFRESH_ANNOTATION: asked}}});
            let params = PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() };
            apps.patch(&forge_app, &params, &Patch::Merge(&patch))
                .await
                .with_context(|| format!("annotating forgeapp/{forge_app}"))?;
            if timeout == 0 {
                println!("forgeapp/{forge_app}: refresh asked");
                return Ok(0);
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(timeout);
            loop {
                let app = apps.get(&forge_app).await?;
                if app.status.as_ref().and_then(|s| s.observed_refresh.as_deref()) == Some(asked.as_str()) {
                    println!("forgeapp/{forge_app}: read from the platform");
                    return Ok(0);
                }
                if std::time::Instant::now() > deadline {
                    bail!("forgeapp/{forge_app}: not refreshed within {timeout} s (is the operator running?)");
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        Command::Preview { bulk_upgrade } => {
            let bu = bus.get(&bulk_upgrade).await.with_context(|| format!("reading bulkupgrade/{bulk_upgrade}"))?;
            print!("{}", render_preview(&bu));
            Ok(0)
        }
        Command::Completion { .. } => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade(spec: serde_json::Value, status: serde_json::Value) -> BulkUpgrade {
        let mut spec_all =
            json!({"appRef": {"name": "insights"}, "environment": "production", "fromMajor": 1, "toMajor": 2});
        if let (Some(all), Some(more)) = (spec_all.as_object_mut(), spec.as_object()) {
            all.extend(more.clone());
        }
        serde_json::from_value(json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "BulkUpgrade",
            "metadata": {"name": "to-2", "namespace": "team"}, "spec": spec_all, "status": status}))
        .expect("a BulkUpgrade fixture")
    }

    #[test]
    fn completion_scripts_know_every_command() {
        let mut command = <Cli as clap::CommandFactory>::command();
        let mut script = Vec::new();
        clap_complete::generate(clap_complete::Shell::Bash, &mut command, "kubectl-forge", &mut script);
        let script = String::from_utf8_lossy(&script);
        for sub in ["status", "approve", "pause", "resume", "stop", "refresh", "preview"] {
            assert!(script.contains(sub), "{sub}");
        }
    }

    #[test]
    fn targets_are_kind_slash_name_or_an_app_name() {
        assert_eq!(parse_target("insights").ok(), Some(Target::App("insights".into())));
        assert_eq!(parse_target("fbu/to-2").ok(), Some(Target::BulkUpgrade("to-2".into())));
        assert_eq!(parse_target("BulkUpgrade/to-2").ok(), Some(Target::BulkUpgrade("to-2".into())));
        assert_eq!(parse_target("forgeapp/insights").ok(), Some(Target::App("insights".into())));
        assert!(parse_target("pod/x").is_err() && parse_target("fbu/").is_err());
    }

    #[test]
    fn a_waiting_upgrade_shows_its_steps_analysis_and_what_to_do_next() {
        let bu = upgrade(
            json!({"steps": [{"limit": 2, "pause": {"duration": "1h"}}, {"requireApproval": true}]}),
            json!({"state": "AwaitingApproval", "step": 2, "upgraded": 2, "total": 5,
                "rollouts": [{"id": "r1", "step": 1, "sourceVersion": "1.0.0", "targetVersion": "2.0.0",
                    "sourceVersionId": "a", "targetVersionId": "b", "status": "Complete", "completed": 2, "failed": 0, "pending": 0}],
                "analyses": [{"step": 1, "verdict": "Passed", "windowStart": "2026-12-07T10:00:00Z", "windowEnd": "2026-12-07T10:15:00Z",
                    "cohort": {"sites": 2, "invocations": 900, "errors": 1, "successRate": 99.89},
                    "baseline": {"sites": 3, "invocations": 1500, "errors": 3, "successRate": 99.8}, "message": "ok"}]}),
        );
        let text = render_bulk_upgrade(&bu);
        assert!(text.contains("State: AwaitingApproval (step 2 of 2)"), "{text}");
        assert!(text.contains("Passed: 2 sites 99.89% (900 calls) vs baseline 99.80%"), "{text}");
        assert!(text.contains("bake 1h") && text.contains("approval"), "{text}");
        assert!(text.contains("Next: kubectl forge approve to-2 --step 2"), "{text}");
        assert_eq!(step_to_approve(&bu, None).ok(), Some(2));
        assert!(step_to_approve(&bu, Some(3)).is_err(), "no step 3");
    }

    #[test]
    fn approving_a_running_upgrade_needs_the_step_named() {
        let bu = upgrade(
            json!({"steps": [{"limit": 1}, {"requireApproval": true}]}),
            json!({"state": "Running", "step": 1}),
        );
        let err = step_to_approve(&bu, None).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("is Running, not awaiting approval; give --step N"), "{err}");
        assert_eq!(step_to_approve(&bu, Some(2)).ok(), Some(2));
    }

    #[test]
    fn a_preview_reads_as_a_plan_and_its_absence_says_why() {
        let bu = upgrade(
            json!({}),
            json!({"preview": {"eligible": 5, "consentRequired": false, "planned": 4, "pinned": 1, "rollouts": 2,
            "rolloutCap": 2, "minimumDurationSeconds": 60, "byVersion": [{"version": "1.2.0", "installations": 5}]}}),
        );
        let text = render_preview(&bu);
        assert!(
            text.contains("planned")
                && text.contains("2 (the platform's cap per rollout: 2)")
                && text.contains("on 1.2.0: 5"),
            "{text}"
        );
        assert!(render_preview(&upgrade(json!({}), json!({}))).contains("no preview yet"));
    }

    #[test]
    fn gitops_managed_objects_are_recognised_by_their_tools_marks() {
        let mut meta = kube::api::ObjectMeta::default();
        assert!(!gitops_managed(&meta));
        meta.labels = Some([("kustomize.toolkit.fluxcd.io/name".to_string(), "apps".to_string())].into());
        assert!(gitops_managed(&meta));
    }
}
