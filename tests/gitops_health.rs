//! How GitOps tools see live forgeops objects: the real kstatus library
//! (`sigs.k8s.io/cli-utils`, as Flux and kstatus-based tools compute it) and Argo CD's health
//! check (`deploy/argocd/health.lua`, run by gopher-lua, the interpreter Argo CD embeds), both in
//! `hack/healthcheck`, built from pinned Go modules. Each kind is seen failing, in progress and
//! healthy where it should be, and a paused BulkUpgrade is Suspended in Argo CD.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use forgeops::api::{BulkUpgrade, BulkUpgradeState, DistributionPolicy, ForgeApp, Installation};
use forgeops_emulator::EmulatorConfig;
use kube::Api;
use serde_json::{Value, json};
use support::{TestNs, create, repo_path, wait_for};

const WAIT: Duration = Duration::from_secs(60);

/// Builds (once, cached) and returns `hack/healthcheck`.
fn healthcheck() -> std::path::PathBuf {
    let out = Command::new("bash").arg(repo_path("hack/healthcheck/build.sh")).output().expect("running build.sh");
    assert!(out.status.success(), "building hack/healthcheck: {}", String::from_utf8_lossy(&out.stderr));
    std::path::PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// (kstatus, Argo CD health) of each object, by `kind/name`.
fn judge(objects: &[(String, Value)]) -> Vec<(String, String, String, String)> {
    let mut child = Command::new(healthcheck())
        .arg("-lua")
        .arg(repo_path("deploy/argocd/health.lua"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for (_, o) in objects {
            writeln!(stdin, "{o}").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "healthcheck: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .zip(objects)
        .map(|(line, (label, _))| {
            let r: Value = serde_json::from_str(line).unwrap();
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            (label.clone(), s("kstatus"), s("argo"), format!("{} / {}", s("kstatusMessage"), s("argoMessage")))
        })
        .collect()
}

fn snapshot<K: serde::Serialize>(label: &str, obj: &K) -> (String, Value) {
    (label.to_string(), serde_json::to_value(obj).unwrap())
}

fn app(name: &str, versions: Value) -> Value {
    json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "ForgeApp", "metadata": {"name": name},
        "spec": {"appId": format!("ari:cloud:ecosystem::app/{name}"), "environments": [{"name": "production", "versions": versions}]}})
}

fn version(major: u32) -> Value {
    json!({"major": major, "minor": 0, "scopes": ["read"], "compatibility": {"required": "jira"}})
}

fn installation(name: &str, app: &str) -> Value {
    json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "Installation", "metadata": {"name": name},
        "spec": {"appRef": {"name": app}, "site": format!("{name}.atlassian.net"), "products": ["jira"]}})
}

fn bulk(name: &str, app: &str, to: u32, extra: Value) -> Value {
    let mut spec = json!({"appRef": {"name": app}, "environment": "production", "fromMajor": 1, "toMajor": to});
    spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "BulkUpgrade", "metadata": {"name": name}, "spec": spec})
}

fn state(b: &BulkUpgrade) -> Option<BulkUpgradeState> {
    b.status.as_ref().and_then(|s| s.state)
}

fn observed<K: kube::Resource>(obj: &K, generation: Option<i64>) -> bool {
    generation.is_some() && generation == obj.meta().generation
}

#[tokio::test]
async fn kstatus_and_argo_cd_see_each_kind_failing_in_progress_and_healthy() {
    let t = TestNs::new("gitops").await;
    let operator = t
        .start_operator_with(EmulatorConfig {
            task_duration: Duration::from_secs(3),
            rollout_step: Duration::from_secs(3),
            ..Default::default()
        })
        .await;
    let (apps, insts, pols, bus): (Api<ForgeApp>, Api<Installation>, Api<DistributionPolicy>, Api<BulkUpgrade>) =
        (t.api(), t.api(), t.api(), t.api());
    let mut seen: Vec<(String, Value)> = Vec::new();

    // ForgeApp: healthy, and locked out by a bad token.
    create(&apps, app("good", json!([version(1)]))).await;
    let ready = |a: &ForgeApp| {
        a.status.as_ref().is_some_and(|s| {
            observed(a, s.observed_generation) && s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
        })
    };
    seen.push(snapshot("ForgeApp good", &wait_for(&apps, "good", WAIT, "Ready", ready).await));
    t.put_credentials("wrong", support::platform::EMAIL, "not-the-token").await;
    let mut locked = app("locked", json!([version(1)]));
    locked["spec"]["credentialsSecretRef"] = json!({"name": "wrong"});
    create(&apps, locked).await;
    let stalled = |type_: &'static str| {
        move |o: &Value| {
            o["status"]["conditions"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["type"] == type_ && c["status"] == "True"))
        }
    };
    let locked =
        wait_for(&apps, "locked", WAIT, "Stalled", |a| stalled("Stalled")(&serde_json::to_value(a).unwrap())).await;
    seen.push(snapshot("ForgeApp locked", &locked));

    // Installation: being installed (a 3 s task), installed, and failing (its app does not exist).
    create(&insts, installation("site-a", "good")).await;
    let installing = wait_for(&insts, "site-a", WAIT, "a task under way", |i| {
        i.status.as_ref().is_some_and(|s| s.task.is_some() && observed(i, s.observed_generation))
    })
    .await;
    seen.push(snapshot("Installation installing", &installing));
    let installed = wait_for(&insts, "site-a", WAIT, "installed", |i| {
        i.status.as_ref().is_some_and(|s| s.installed_version.is_some() && s.task.is_none())
    })
    .await;
    seen.push(snapshot("Installation installed", &installed));
    // A second app with an installation, for the paused upgrade below.
    create(&apps, app("spare", json!([version(1)]))).await;
    create(&insts, installation("site-b", "spare")).await;
    wait_for(&insts, "site-b", WAIT, "installed", |i| {
        i.status.as_ref().is_some_and(|s| s.installed_version.is_some() && s.task.is_none())
    })
    .await;
    create(&insts, installation("orphan", "no-such-app")).await;
    let orphan =
        wait_for(&insts, "orphan", WAIT, "Stalled", |i| stalled("Stalled")(&serde_json::to_value(i).unwrap())).await;
    seen.push(snapshot("Installation failing", &orphan));

    // DistributionPolicy: healthy, and for an app that does not exist.
    let policy = |name: &str, app: &str| {
        json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "DistributionPolicy", "metadata": {"name": name},
            "spec": {"appRef": {"name": app}, "sharing": "Enabled", "products": ["jira"]}})
    };
    create(&pols, policy("shared", "good")).await;
    let shared = wait_for(&pols, "shared", WAIT, "Ready", |p| {
        let v = serde_json::to_value(p).unwrap();
        stalled("Ready")(&v) && v["status"]["observedGeneration"] == v["metadata"]["generation"]
    })
    .await;
    seen.push(snapshot("DistributionPolicy shared", &shared));
    create(&pols, policy("dangling", "no-such-app")).await;
    let dangling =
        wait_for(&pols, "dangling", WAIT, "Stalled", |p| stalled("Stalled")(&serde_json::to_value(p).unwrap())).await;
    seen.push(snapshot("DistributionPolicy failing", &dangling));

    // BulkUpgrade: ineligible, running (a 3 s rollout step), complete, and paused. Major 2 is
    // deployed once site-a runs 1.0.
    for name in ["good", "spare"] {
        let versions = json!({"environments": [{"name": "production", "versions": [version(1), version(2)]}]});
        support::patch_spec(&apps, name, versions).await;
        wait_for(&apps, name, WAIT, "2.0 read", |a| a.deployed("production").len() == 2).await;
    }
    create(&bus, bulk("to-9", "good", 9, json!({}))).await;
    let ineligible =
        wait_for(&bus, "to-9", WAIT, "Ineligible", |b| state(b) == Some(BulkUpgradeState::Ineligible)).await;
    seen.push(snapshot("BulkUpgrade ineligible", &ineligible));
    create(&bus, bulk("to-2", "good", 2, json!({}))).await;
    let running = wait_for(&bus, "to-2", WAIT, "running", |b| {
        b.status.as_ref().is_some_and(|s| s.pending > 0 && state(b) == Some(BulkUpgradeState::Running))
    })
    .await;
    seen.push(snapshot("BulkUpgrade running", &running));
    let complete = wait_for(&bus, "to-2", WAIT, "Complete", |b| state(b) == Some(BulkUpgradeState::Complete)).await;
    seen.push(snapshot("BulkUpgrade complete", &complete));
    create(&bus, bulk("held", "spare", 2, json!({"paused": true}))).await;
    let paused = wait_for(&bus, "held", WAIT, "Paused", |b| state(b) == Some(BulkUpgradeState::Paused)).await;
    seen.push(snapshot("BulkUpgrade paused", &paused));
    drop(operator);

    let judged = judge(&seen);
    for j in &judged {
        eprintln!("{:28} kstatus {:11} argo {:11} {}", j.0, j.1, j.2, j.3);
    }
    let expected = [
        ("ForgeApp good", "Current", "Healthy"),
        ("ForgeApp locked", "Failed", "Degraded"),
        ("Installation installing", "InProgress", "Progressing"),
        ("Installation installed", "Current", "Healthy"),
        ("Installation failing", "Failed", "Degraded"),
        ("DistributionPolicy shared", "Current", "Healthy"),
        ("DistributionPolicy failing", "Failed", "Degraded"),
        ("BulkUpgrade ineligible", "Failed", "Degraded"),
        ("BulkUpgrade running", "InProgress", "Progressing"),
        ("BulkUpgrade complete", "Current", "Healthy"),
        ("BulkUpgrade paused", "InProgress", "Suspended"),
    ];
    let got: Vec<(&str, &str, &str)> = judged.iter().map(|j| (j.0.as_str(), j.1.as_str(), j.2.as_str())).collect();
    assert_eq!(got, expected);
}
