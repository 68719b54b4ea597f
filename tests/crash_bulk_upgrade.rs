//! A bulk upgrade of 300 installations through the platform emulator (over HTTP), with the
//! operator process killed (SIGKILL) and started again three times along the way: every
//! installation must be upgraded exactly once (one completed upgrade task per site on the platform)
//! and the counts in status must be exact.

mod support;

use std::time::{Duration, Instant};

use forgeops::api::{BulkUpgrade, BulkUpgradeState, ForgeApp, Installation};
use forgeops::emulator::EmulatorConfig;
use kube::api::{Api, ListParams};
use serde_json::json;
use support::{TestNs, create, kill_hard, patch_spec};

const SITES: usize = 300;

fn version(major: u32) -> serde_json::Value {
    json!({"major": major, "minor": 0, "scopes": ["read:jira-work"], "compatibility": {"required": "jira"}})
}

async fn on_major(insts: &Api<Installation>, major: u32) -> usize {
    let list = insts.list(&ListParams::default()).await.unwrap().items;
    list.iter().filter(|i| i.status.as_ref().and_then(|s| s.installed_major) == Some(major)).count()
}

#[tokio::test]
async fn three_sigkills_during_a_300_site_bulk_upgrade_upgrade_each_site_exactly_once() {
    let t = TestNs::new("crash-bulk").await;
    let platform =
        t.start_platform(EmulatorConfig { task_duration: Duration::from_millis(200), ..Default::default() }).await;
    let url = platform.emulator.graphql_url();
    let (apps, insts, bus): (Api<ForgeApp>, Api<Installation>, Api<BulkUpgrade>) = (t.api(), t.api(), t.api());
    create(&apps, json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "ForgeApp", "metadata": {"name": "insights"},
        "spec": {"appId": "ari:cloud:ecosystem::app/insights", "developerAccount": "dev", "environments": [{"name": "production", "versions": [version(1)]}]}}))
    .await;
    for i in 0..SITES {
        create(&insts, json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "Installation", "metadata": {"name": format!("site-{i:03}")},
            "spec": {"appRef": {"name": "insights"}, "site": format!("site-{i:03}.atlassian.net"), "products": ["jira"]}}))
        .await;
    }
    let mut operator = t.spawn_operator_process(&url, 0);
    let deadline = Instant::now() + Duration::from_secs(180);
    while on_major(&insts, 1).await < SITES {
        assert!(Instant::now() < deadline, "the sites were not installed:\n{}", operator.log_tail());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    patch_spec(
        &apps,
        "insights",
        json!({"environments": [{"name": "production", "versions": [version(1), version(2)]}]}),
    )
    .await;
    create(&bus, json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "BulkUpgrade", "metadata": {"name": "to-2"},
        "spec": {"appRef": {"name": "insights"}, "environment": "production", "fromMajor": 1, "toMajor": 2, "maxConcurrent": 20}}))
    .await;

    for (run, threshold) in [40usize, 120, 200].into_iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(120);
        while platform.calls("forge_cli_upgradeApplication") < threshold {
            assert!(Instant::now() < deadline, "the upgrade stalled before {threshold}:\n{}", operator.log_tail());
            assert!(!operator.has_exited(), "the operator exited:\n{}", operator.log_tail());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        kill_hard(&operator).await;
        operator = t.spawn_operator_process(&url, run + 1);
    }

    let deadline = Instant::now() + Duration::from_secs(180);
    let done = loop {
        let b = bus.get("to-2").await.unwrap();
        if b.status.as_ref().and_then(|s| s.state) == Some(BulkUpgradeState::Complete) {
            break b;
        }
        assert!(
            Instant::now() < deadline,
            "the bulk upgrade did not complete:\n{:#?}\n{}",
            b.status,
            operator.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    drop(operator);

    let completed = platform.completed_tasks("upgrade");
    let not_once: Vec<_> = completed.iter().filter(|(_, n)| **n != 1).collect();
    assert_eq!(completed.len(), SITES, "every site was upgraded");
    assert!(not_once.is_empty(), "sites upgraded more than once: {not_once:?}");
    let s = done.status.unwrap();
    assert_eq!((s.total, s.upgraded, s.failed, s.pending, s.skipped, s.unprocessed), (300, 300, 0, 0, 0, 0));
    assert_eq!(on_major(&insts, 2).await, SITES);
    eprintln!("crash test: {} upgrade requests for {SITES} sites", platform.calls("forge_cli_upgradeApplication"));
}
