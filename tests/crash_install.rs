//! The operator process is killed (SIGKILL) in the middle of installing 100 sites through the
//! platform emulator (over HTTP) and started again: every site must end installed exactly once
//! (one install task per site on the platform, none doubled or failed) and every Installation must report it.

mod support;

use std::time::{Duration, Instant};

use forgeops::api::{ForgeApp, Installation};
use forgeops_emulator::EmulatorConfig;
use kube::api::{Api, ListParams};
use serde_json::json;
use support::{TestNs, create, kill_hard};

const SITES: usize = 100;

async fn installed(insts: &Api<Installation>) -> usize {
    let list = insts.list(&ListParams::default()).await.unwrap().items;
    list.iter().filter(|i| i.status.as_ref().and_then(|s| s.installed_version.as_deref()) == Some("1.0")).count()
}

#[tokio::test]
async fn sigkill_while_installing_100_sites_installs_each_exactly_once() {
    let t = TestNs::new("crash-install").await;
    // Each task takes 800 ms, so that at any moment some sites are done and others in flight.
    let platform =
        t.start_platform(EmulatorConfig { task_duration: Duration::from_millis(800), ..Default::default() }).await;
    let url = platform.emulator.graphql_url();

    let apps: Api<ForgeApp> = t.api();
    create(
        &apps,
        json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "ForgeApp", "metadata": {"name": "insights"},
        "spec": {"appId": "ari:cloud:ecosystem::app/insights", "environments": [{"name": "production",
            "versions": [{"major": 1, "minor": 0, "compatibility": {"required": "jira"}}]}]}}),
    )
    .await;
    let insts: Api<Installation> = t.api();
    for i in 0..SITES {
        create(&insts, json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "Installation", "metadata": {"name": format!("site-{i}")},
            "spec": {"appRef": {"name": "insights"}, "site": format!("site-{i}.atlassian.net"), "products": ["jira"]}}))
        .await;
    }

    let first = t.spawn_operator_process(&url, 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    while platform.calls("forge_cli_installApplication") < 20 {
        assert!(Instant::now() < deadline, "the operator installed nothing:\n{}", first.log_tail());
        assert!(!first.has_exited(), "the operator exited:\n{}", first.log_tail());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kill_hard(&first).await;
    let recorded_before_restart = installed(&insts).await;
    assert!(recorded_before_restart < SITES, "the kill came too late to test anything");

    let started_before_restart = platform.calls("forge_cli_installApplication");
    let second = t.spawn_operator_process(&url, 2);
    let deadline = Instant::now() + Duration::from_secs(120);
    while installed(&insts).await < SITES {
        assert!(Instant::now() < deadline, "not every site was installed:\n{}", second.log_tail());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(second);

    // Every install request the platform saw became a task (a doubled send would show as a second,
    // failed task): the request is recorded before it is sent, so a restart confirms, never resends.
    let doubled: Vec<_> = platform.every_task("install").into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(doubled.is_empty(), "sites sent an install request twice: {doubled:?}");
    let completed = platform.completed_tasks("install");
    let not_once: Vec<_> = completed.iter().filter(|(_, n)| **n != 1).collect();
    assert_eq!(completed.len(), SITES, "every site was installed: {completed:?}");
    assert!(not_once.is_empty(), "sites installed more than once: {not_once:?}");
    for i in 0..SITES {
        let host = format!("site-{i}.atlassian.net");
        assert_eq!(platform.installed_version("ari:cloud:ecosystem::app/insights", &host).as_deref(), Some("1.0"));
    }
    eprintln!(
        "crash test: {recorded_before_restart} of {SITES} installs recorded when killed, {started_before_restart} install requests \
         sent by then; {} install requests in all",
        platform.calls("forge_cli_installApplication")
    );
}
