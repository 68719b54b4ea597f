//! Safe on real sites (issue 18), against the real kube-apiserver and the emulator over HTTP: what
//! forgeops does on sites the account administers and on customers' sites, and how it keeps a
//! request from being carried out twice when its answer is lost or the object goes mid-way.

mod support;

use std::time::Duration;

use forgeops::api::{ForgeApp, Installation};
use forgeops_emulator::EmulatorConfig;
use kube::api::{Api, DeleteParams};
use serde_json::{Value, json};
use support::{TestNs, create, wait_for};

const WAIT: Duration = Duration::from_secs(60);
const APP_ID: &str = "ari:cloud:ecosystem::app/insights";

fn version(major: u32, minor: u32, scopes: &[&str]) -> Value {
    json!({"major": major, "minor": minor, "scopes": scopes, "compatibility": {"required": "jira"}})
}

fn app(versions: Value) -> Value {
    json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "ForgeApp", "metadata": {"name": "insights"},
        "spec": {"appId": APP_ID, "developerAccount": "dev@acme.example",
                 "environments": [{"name": "production", "versions": versions}]}})
}

fn installation(name: &str, site: &str, extra: Value) -> Value {
    let mut spec = json!({"appRef": {"name": "insights"}, "site": site, "products": ["jira"]});
    spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "Installation", "metadata": {"name": name}, "spec": spec})
}

async fn wait_gone(api: &Api<Installation>, name: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    while api.get_opt(name).await.unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline, "Installation {name} was not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn deleting_during_an_install_task_waits_for_it_and_leaves_nothing_on_the_site() {
    let t = TestNs::new("delete-mid-task").await;
    // Tasks slow enough to delete the object while one runs.
    let config = EmulatorConfig { task_duration: Duration::from_secs(3), ..Default::default() };
    let operator = t.start_operator_with(config).await;
    let platform = operator.platform.clone();
    let (apps, insts): (Api<ForgeApp>, Api<Installation>) = (t.api(), t.api());
    create(&apps, app(json!([version(1, 0, &["read"])]))).await;
    wait_for(&apps, "insights", WAIT, "1.0 read", |a| a.deployed("production").len() == 1).await;
    create(&insts, installation("acme", "acme.atlassian.net", json!({}))).await;
    wait_for(&insts, "acme", WAIT, "an install task recorded", |i| i.status.as_ref().is_some_and(|s| s.task.is_some()))
        .await;

    insts.delete("acme", &DeleteParams::default()).await.unwrap();
    // Held while the task runs: the finalizer stays until it ends.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(insts.get_opt("acme").await.unwrap().is_some(), "the object went before its install task ended");
    wait_gone(&insts, "acme").await;

    assert_eq!(platform.installed_version(APP_ID, "acme.atlassian.net"), None, "the app was left on the site");
    assert_eq!(platform.every_task("install").into_iter().collect::<Vec<_>>(), [("acme.atlassian.net".into(), 1)]);
    assert_eq!(platform.every_task("uninstall").into_iter().collect::<Vec<_>>(), [("acme.atlassian.net".into(), 1)]);
    assert_eq!(platform.calls("forge_cli_installApplication"), 1);
    assert_eq!(platform.calls("forge_cli_uninstallApplication"), 1);
}
