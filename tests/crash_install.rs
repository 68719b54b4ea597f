//! The operator process is killed (SIGKILL) in the middle of installing 100 sites through the HTTP
//! platform and started again: every site must end installed exactly once.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use forgeops::api::{ForgeApp, Installation};
use kube::api::{Api, ListParams};
use serde_json::json;
use support::endpoint::Endpoint;
use support::{TestNs, create, kill_hard};

const SITES: usize = 100;

async fn installed(insts: &Api<Installation>) -> usize {
    let list = insts.list(&ListParams::default()).await.unwrap().items;
    list.iter().filter(|i| i.status.as_ref().and_then(|s| s.installed_version.as_deref()) == Some("1.0")).count()
}

#[tokio::test]
async fn sigkill_while_installing_100_sites_installs_each_exactly_once() {
    let t = TestNs::new("crash-install").await;
    t.prepare_http_platform().await;
    // 50 ms to 1.5 s per site, so that at any moment some sites are done and others in flight.
    let endpoint = Endpoint::start(support::PLATFORM_KEY, Duration::from_millis(50), Duration::from_millis(1450)).await;

    let apps: Api<ForgeApp> = t.api();
    create(
        &apps,
        json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "ForgeApp", "metadata": {"name": "insights"},
        "spec": {"appId": "ari:app/insights", "developerAccount": "dev", "environments": [{"name": "production",
            "versions": [{"major": 1, "minor": 0, "compatibility": {"required": "jira"}}]}]}}),
    )
    .await;
    let insts: Api<Installation> = t.api();
    for i in 0..SITES {
        create(&insts, json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "Installation", "metadata": {"name": format!("site-{i}")},
            "spec": {"appRef": {"name": "insights"}, "site": format!("site-{i}.atlassian.net"), "products": ["jira"]}}))
        .await;
    }

    let first = t.spawn_operator_process(&endpoint.url, 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    while endpoint.performed("install").len() < 20 {
        assert!(Instant::now() < deadline, "the operator installed nothing:\n{}", first.log_tail());
        assert!(!first.has_exited(), "the operator exited:\n{}", first.log_tail());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kill_hard(&first).await;
    let recorded_before_restart = installed(&insts).await;
    assert!(recorded_before_restart < SITES, "the kill came too late to test anything");

    let second = t.spawn_operator_process(&endpoint.url, 2);
    let deadline = Instant::now() + Duration::from_secs(120);
    while installed(&insts).await < SITES {
        assert!(Instant::now() < deadline, "not every site was installed:\n{}", second.log_tail());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(second);

    let performed = endpoint.performed("install");
    let twice: BTreeMap<&String, &u32> = performed.iter().filter(|(_, n)| **n != 1).collect();
    assert_eq!(performed.len(), SITES, "every site was installed");
    assert!(twice.is_empty(), "sites installed more than once: {twice:?}");
    let counts = endpoint.counts.lock().unwrap();
    assert_eq!(counts.bad_signatures, 0);
    eprintln!(
        "crash test: {recorded_before_restart} of {SITES} installs recorded when killed; {} requests, {} repeats answered by idempotency key",
        counts.requests, counts.repeats
    );
}
