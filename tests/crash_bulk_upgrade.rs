//! A stepped bulk upgrade of 300 installations through the platform emulator (over HTTP), with the
//! operator process killed (SIGKILL) and started again three times, each time right after it asked
//! the platform for a rollout (before or while it records the answer): exactly one rollout per step
//! must exist on the platform, every installation must be upgraded exactly once, and the counts in
//! status must be exact.

mod support;

use std::time::{Duration, Instant};

use forgeops::api::{BulkUpgrade, BulkUpgradeState, ForgeApp};
use kube::api::Api;
use serde_json::json;
use support::platform::seeded;
use support::{TestNs, create, kill_hard};

const SITES: usize = 300;
const APP_ID: &str = "ari:cloud:ecosystem::app/insights";
const CREATE: &str = "forge_cli_createAppVersionUpgradeRollout";

#[tokio::test]
async fn three_sigkills_during_a_stepped_300_site_bulk_upgrade_start_one_rollout_per_step() {
    let t = TestNs::new("crash-bulk").await;
    let mut config =
        seeded(APP_ID, &[("1.0.0", &["read:jira-work"]), ("2.0.0", &["read:jira-work"])], "site", SITES, "1.0.0");
    config.rollout_step = Duration::from_millis(15);
    let platform = t.start_platform(config).await;
    let url = platform.emulator.graphql_url();
    let (apps, bus): (Api<ForgeApp>, Api<BulkUpgrade>) = (t.api(), t.api());
    create(
        &apps,
        json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "ForgeApp", "metadata": {"name": "insights"},
        "spec": {"appId": APP_ID, "environments": ["production"]}}),
    )
    .await;
    let mut operator = t.spawn_operator_process(&url, 0);
    create(
        &bus,
        json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "BulkUpgrade", "metadata": {"name": "to-2"},
        "spec": {"appRef": {"name": "insights"}, "environment": "production", "fromMajor": 1, "toMajor": 2,
            "steps": [{"limit": 30}, {"limit": 100}, {}]}}),
    )
    .await;

    for (run, creates) in [1usize, 2, 3].into_iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(120);
        while platform.calls(CREATE) < creates {
            assert!(Instant::now() < deadline, "rollout {creates} was not asked for:\n{}", operator.log_tail());
            assert!(!operator.has_exited(), "the operator exited:\n{}", operator.log_tail());
            tokio::time::sleep(Duration::from_millis(2)).await;
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

    let rollouts = platform.rollouts(APP_ID);
    let limits: Vec<i64> = rollouts.iter().map(|r| r["upgradeLimit"].as_i64().unwrap()).collect();
    assert_eq!(limits, vec![30, 100, 500], "exactly one rollout per step: {rollouts:#?}");
    let by = platform.upgraded_by(APP_ID);
    assert_eq!(by.len(), SITES);
    let not_once: Vec<_> = by.iter().filter(|(_, r)| r.len() != 1).collect();
    assert!(not_once.is_empty(), "installations not upgraded exactly once: {not_once:?}");
    let s = done.status.unwrap();
    assert_eq!((s.total, s.upgraded, s.failed, s.pending, s.unprocessed), (300, 300, 0, 0, 0));
    let recorded: Vec<(u32, u32)> = s.rollouts.iter().map(|r| (r.step, r.completed)).collect();
    assert_eq!(recorded, vec![(1, 30), (2, 100), (3, 170)]);
    let ids: Vec<&str> = rollouts.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(s.rollouts.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ids);
    eprintln!(
        "crash test: {} rollout requests, {} adopted after a kill",
        platform.calls(CREATE),
        s.rollouts.iter().filter(|r| r.adopted).count()
    );
}
