//! End-to-end tests of bulk major-version upgrades against a real kube-apiserver: eligibility,
//! admission through Leases, pause, cancel, failures, limits, TTL, and Lease takeover.

mod support;

use std::time::Duration;

use forgeops::api::{BulkUpgrade, BulkUpgradeState, ForgeApp, Installation};
use forgeops::controllers::bulk_upgrade::{Limits, env_lease_name};
use forgeops::emulator::Faults;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};
use support::{TestNs, condition, create, patch_spec, wait_condition, wait_for};

const WAIT: Duration = Duration::from_secs(60);

fn version(major: u32, minor: u32, scopes: &[&str]) -> Value {
    json!({"major": major, "minor": minor, "scopes": scopes, "compatibility": {"required": "jira"}})
}

fn app(name: &str, account: &str, versions: Value) -> Value {
    json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "ForgeApp", "metadata": {"name": name},
        "spec": {"appId": format!("ari:cloud:ecosystem::app/{name}"), "developerAccount": account,
            "environments": [{"name": "production", "versions": versions}]}})
}

fn bulk(name: &str, app: &str, from: u32, to: u32, extra: Value) -> Value {
    let mut spec = json!({"appRef": {"name": app}, "environment": "production", "fromMajor": from, "toMajor": to});
    spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "BulkUpgrade", "metadata": {"name": name}, "spec": spec})
}

/// Creates `app` with only major 1 deployed, installs `sites` installations (named `<app>-<i>`) on
/// it, waits until they are installed, then deploys `next` versions.
async fn installed_on_major_1(t: &TestNs, name: &str, account: &str, sites: usize, next: Vec<Value>) {
    let (apps, insts): (Api<ForgeApp>, Api<Installation>) = (t.api(), t.api());
    create(&apps, app(name, account, json!([version(1, 0, &["read"])]))).await;
    for i in 0..sites {
        let body = json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "Installation", "metadata": {"name": format!("{name}-{i}")},
            "spec": {"appRef": {"name": name}, "site": format!("{name}-{i}.atlassian.net"), "products": ["jira"]}});
        create(&insts, body).await;
    }
    for i in 0..sites {
        wait_for(&insts, &format!("{name}-{i}"), WAIT, "installed 1.0", |i| installed_major(i) == Some(1)).await;
    }
    let mut versions = vec![version(1, 0, &["read"])];
    versions.extend(next);
    let count = versions.len();
    patch_spec(&apps, name, json!({"environments": [{"name": "production", "versions": versions}]})).await;
    // Deployed on the platform and read back by the operator, as after `forge deploy` and a refresh.
    wait_for(&apps, name, WAIT, "the new versions read", |a| a.deployed("production").len() == count).await;
}

fn installed_major(i: &Installation) -> Option<u32> {
    i.status.as_ref().and_then(|s| s.installed_major)
}

fn state(b: &BulkUpgrade) -> Option<BulkUpgradeState> {
    b.status.as_ref().and_then(|s| s.state)
}

async fn wait_state(api: &Api<BulkUpgrade>, name: &str, want: BulkUpgradeState) -> BulkUpgrade {
    wait_for(api, name, WAIT, &format!("state {want:?}"), |b| {
        state(b) == Some(want) && b.status.as_ref().unwrap().observed_generation == b.metadata.generation
    })
    .await
}

async fn leases_held(t: &TestNs) -> Vec<String> {
    Api::<Lease>::namespaced(t.client.clone(), &t.name)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|l| l.spec.and_then(|s| s.holder_identity).filter(|h| !h.is_empty()))
        .collect()
}

async fn majors(t: &TestNs, app: &str) -> Vec<Option<u32>> {
    let insts: Api<Installation> = t.api();
    let mut all = insts.list(&ListParams::default()).await.unwrap().items;
    all.retain(|i| i.spec.app_ref.name == app);
    all.sort_by_key(|i| i.metadata.name.clone());
    all.iter().map(installed_major).collect()
}

#[tokio::test]
async fn ineligible_upgrades_touch_nothing_and_are_re_evaluated_when_the_app_is_fixed() {
    let t = TestNs::new("bulk-eligibility").await;
    let _operator = t.start_operator().await;
    let mut licensed = version(4, 0, &["read"]);
    licensed["licensing"] = json!(true);
    let mut egress = version(3, 0, &["read"]);
    egress["egress"] = json!(["api.example.com"]);
    installed_on_major_1(
        &t,
        "insights",
        "dev-a",
        1,
        vec![version(2, 0, &["read", "write:confluence-content"]), egress.clone(), licensed.clone()],
    )
    .await;
    let bus: Api<BulkUpgrade> = t.api();
    let cases = [
        ("scopes", 2, "AddsScopes", "adds scope write:confluence-content"),
        ("egress", 3, "AddsEgress", "adds egress api.example.com"),
        ("licensing", 4, "LicensingChanged", "licensing is disabled in 1.0 but enabled in 4.0"),
        ("missing", 9, "MajorNotDeployed", "major 9 is not deployed in environment production"),
    ];
    for (name, to, reason, detail) in cases {
        create(&bus, bulk(name, "insights", 1, to, json!({}))).await;
        let b = wait_state(&bus, name, BulkUpgradeState::Ineligible).await;
        assert_eq!(condition(&b, "Eligible").unwrap().1, reason);
        assert_eq!(condition(&b, "Stalled").unwrap().0, "True");
        let reasons = &b.status.as_ref().unwrap().ineligible_reasons;
        assert_eq!((reasons[0].reason.as_str(), reasons[0].detail.as_str()), (reason, detail));
    }
    assert_eq!(majors(&t, "insights").await, vec![Some(1)], "an ineligible upgrade touches nothing");
    assert!(leases_held(&t).await.is_empty());

    // A new target minor drops the scope: that upgrade is re-evaluated and runs; the others stay.
    let apps: Api<ForgeApp> = t.api();
    let versions = vec![
        version(1, 0, &["read"]),
        version(2, 0, &["read", "write:confluence-content"]),
        version(2, 1, &["read"]),
        egress,
        licensed,
    ];
    patch_spec(&apps, "insights", json!({"environments": [{"name": "production", "versions": versions}]})).await;
    let b = wait_state(&bus, "scopes", BulkUpgradeState::Complete).await;
    assert_eq!(b.status.as_ref().unwrap().upgraded, 1);
    let inst: Api<Installation> = t.api();
    let upgraded = inst.get("insights-0").await.unwrap();
    assert_eq!(upgraded.status.unwrap().installed_version.as_deref(), Some("2.1"), "the latest minor of the target");
    assert_eq!(state(&bus.get("egress").await.unwrap()), Some(BulkUpgradeState::Ineligible));
}

#[tokio::test]
async fn contention_for_an_environment_an_account_and_the_global_limit() {
    let mut t = TestNs::new("bulk-contention").await;
    t.bulk_limits = Limits { global: 2, ..Default::default() };
    let _operator = t.start_operator().await;
    for (app, account) in [("a1", "dev-x"), ("a2", "dev-x"), ("a3", "dev-y"), ("a4", "dev-z")] {
        installed_on_major_1(&t, app, account, 1, vec![version(2, 0, &["read"])]).await;
    }
    let bus: Api<BulkUpgrade> = t.api();
    let ns = &t.name;
    // A and D hold their Leases while paused.
    create(&bus, bulk("a", "a1", 1, 2, json!({"paused": true}))).await;
    let a = wait_state(&bus, "a", BulkUpgradeState::Paused).await;
    assert_eq!(condition(&a, "Admitted").unwrap().0, "True");
    create(&bus, bulk("b", "a1", 1, 2, json!({}))).await;
    let b = wait_condition(&bus, "b", "Admitted", "False", "EnvironmentBusy").await;
    assert_eq!(b.status.as_ref().unwrap().blocked_by.as_deref(), Some(format!("{ns}/a").as_str()));
    create(&bus, bulk("c", "a2", 1, 2, json!({}))).await;
    let c = wait_condition(&bus, "c", "Admitted", "False", "AccountBusy").await;
    let blocker = c.status.as_ref().unwrap().blocked_by.clone().unwrap();
    // A holds the account's Lease; B, if created in an earlier second, waits for it ahead of C.
    assert!(blocker == format!("{ns}/a") || blocker == format!("{ns}/b"), "{blocker}");
    create(&bus, bulk("d", "a3", 1, 2, json!({"paused": true}))).await;
    wait_state(&bus, "d", BulkUpgradeState::Paused).await;
    create(&bus, bulk("e", "a4", 1, 2, json!({}))).await;
    let e = wait_condition(&bus, "e", "Admitted", "False", "GlobalLimitReached").await;
    assert_eq!(state(&e), Some(BulkUpgradeState::Queued));
    assert!(e.status.as_ref().unwrap().blocked_by.is_some());
    assert_eq!(majors(&t, "a1").await, vec![Some(1)], "nothing runs while A is paused");

    // A finishes; the waiting ones run in turn, then everything is released.
    patch_spec(&bus, "a", json!({"paused": false})).await;
    wait_state(&bus, "a", BulkUpgradeState::Complete).await;
    wait_state(&bus, "b", BulkUpgradeState::Complete).await;
    patch_spec(&bus, "d", json!({"paused": false})).await;
    for name in ["c", "d", "e"] {
        wait_state(&bus, name, BulkUpgradeState::Complete).await;
    }
    for app in ["a1", "a2", "a3", "a4"] {
        assert_eq!(majors(&t, app).await, vec![Some(2)], "{app} upgraded");
    }
    let b = bus.get("b").await.unwrap();
    assert_eq!(b.status.as_ref().unwrap().total, 0, "A had already upgraded the one installation");
    assert!(leases_held(&t).await.is_empty(), "every Lease was released");
}

#[tokio::test]
async fn cancel_in_the_middle_keeps_what_was_upgraded_and_releases_the_leases() {
    let t = TestNs::new("bulk-cancel").await;
    let operator = t.start_operator().await;
    installed_on_major_1(&t, "insights", "dev", 12, vec![version(2, 0, &["read"])]).await;
    operator.platform.set_faults(Faults { latency_ms: 150, ..Default::default() });
    let bus: Api<BulkUpgrade> = t.api();
    create(&bus, bulk("slow", "insights", 1, 2, json!({"maxConcurrent": 1}))).await;
    wait_for(&bus, "slow", WAIT, "two upgraded", |b| b.status.as_ref().is_some_and(|s| s.upgraded >= 2)).await;
    assert!(!leases_held(&t).await.is_empty());
    patch_spec(&bus, "slow", json!({"cancelled": true})).await;
    let b = wait_state(&bus, "slow", BulkUpgradeState::Cancelled).await;
    assert!(b.status.as_ref().unwrap().completed_at.is_some());
    wait_for(&bus, "slow", WAIT, "leases released", |_| true).await;
    let deadline = std::time::Instant::now() + WAIT;
    while !leases_held(&t).await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "the Leases were not released");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The one upgrade in flight finishes; then nothing more moves.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = majors(&t, "insights").await;
    let upgraded = after.iter().filter(|m| **m == Some(2)).count();
    assert!((2..12).contains(&upgraded), "some upgraded, the rest untouched: {after:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(majors(&t, "insights").await, after, "nothing moves after cancel");
    let b = bus.get("slow").await.unwrap();
    assert_eq!(state(&b), Some(BulkUpgradeState::Cancelled));
}

#[tokio::test]
async fn pause_stops_new_upgrades_and_resume_finishes() {
    let t = TestNs::new("bulk-pause").await;
    let _operator = t.start_operator().await;
    installed_on_major_1(&t, "insights", "dev", 4, vec![version(2, 0, &["read"])]).await;
    let bus: Api<BulkUpgrade> = t.api();
    create(&bus, bulk("held", "insights", 1, 2, json!({"paused": true}))).await;
    let b = wait_state(&bus, "held", BulkUpgradeState::Paused).await;
    assert_eq!(condition(&b, "Progressing").unwrap().1, "Paused");
    assert_eq!(b.status.as_ref().unwrap().pending, 4);
    assert_eq!(leases_held(&t).await.len(), 3, "the environment, account and slot Leases stay held");
    assert_eq!(majors(&t, "insights").await, vec![Some(1); 4]);
    patch_spec(&bus, "held", json!({"paused": false})).await;
    let b = wait_state(&bus, "held", BulkUpgradeState::Complete).await;
    let s = b.status.as_ref().unwrap();
    assert_eq!((s.total, s.upgraded, s.pending, s.failed), (4, 4, 0, 0));
    assert_eq!(condition(&b, "Complete").unwrap().0, "True");
    assert_eq!(condition(&b, "Ready").unwrap().0, "True");
    assert!(s.started_at.is_some() && s.completed_at.is_some());

    // Cancelling a finished upgrade changes nothing.
    patch_spec(&bus, "held", json!({"cancelled": true})).await;
    let after = wait_for(&bus, "held", WAIT, "the edit acknowledged", |b| {
        b.status.as_ref().unwrap().observed_generation == b.metadata.generation
    })
    .await;
    assert_eq!(state(&after), Some(BulkUpgradeState::Complete));
    assert_eq!(after.status.as_ref().unwrap().completed_at, b.status.as_ref().unwrap().completed_at);
}

#[tokio::test]
async fn more_failures_than_max_failures_stops_the_upgrade() {
    let t = TestNs::new("bulk-failures").await;
    let operator = t.start_operator().await;
    installed_on_major_1(&t, "insights", "dev", 6, vec![version(2, 0, &["read"])]).await;
    let failing = (0..3).map(|i| format!("insights-{i}.atlassian.net")).collect();
    operator.platform.set_faults(Faults { failing_sites: failing, ..Default::default() });
    let bus: Api<BulkUpgrade> = t.api();
    create(&bus, bulk("fragile", "insights", 1, 2, json!({"maxConcurrent": 1, "maxFailures": 1}))).await;
    let b = wait_state(&bus, "fragile", BulkUpgradeState::Failed).await;
    let s = b.status.as_ref().unwrap();
    assert_eq!((s.failed, s.upgraded, s.pending), (2, 0, 4), "stopped once failures exceeded 1: {s:#?}");
    assert_eq!(s.failures.len(), 2);
    assert!(s.failures[0].message.contains("failed on the platform"), "{s:#?}");
    assert_eq!(
        condition(&b, "Stalled").unwrap(),
        ("True".into(), "MaxFailuresExceeded".into(), condition(&b, "Stalled").unwrap().2)
    );
    assert!(leases_held(&t).await.is_empty());
}

#[tokio::test]
async fn limit_leaves_the_rest_unprocessed_and_pinned_installations_are_skipped() {
    let t = TestNs::new("bulk-limit").await;
    let _operator = t.start_operator().await;
    installed_on_major_1(&t, "insights", "dev", 6, vec![version(2, 0, &["read"])]).await;
    let insts: Api<Installation> = t.api();
    patch_spec(&insts, "insights-5", json!({"majorVersion": 1})).await;
    let bus: Api<BulkUpgrade> = t.api();
    create(&bus, bulk("some", "insights", 1, 2, json!({"limit": 3, "ttlSecondsAfterFinished": 3}))).await;
    let b = wait_state(&bus, "some", BulkUpgradeState::Complete).await;
    let s = b.status.as_ref().unwrap();
    assert_eq!((s.total, s.upgraded, s.skipped, s.unprocessed, s.pending), (3, 3, 1, 2, 0), "{s:#?}");
    assert_eq!(majors(&t, "insights").await, vec![Some(2), Some(2), Some(2), Some(1), Some(1), Some(1)]);

    // The finished record is deleted once its TTL has passed.
    let deadline = std::time::Instant::now() + WAIT;
    while bus.get_opt("some").await.unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline, "the finished BulkUpgrade was not deleted after its TTL");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_lease_whose_holder_stopped_renewing_is_taken_over_after_it_expires() {
    let mut t = TestNs::new("bulk-takeover").await;
    t.bulk_limits = Limits { lease_duration: Duration::from_secs(4), ..Default::default() };
    let _operator = t.start_operator().await;
    installed_on_major_1(&t, "insights", "dev", 1, vec![version(2, 0, &["read"])]).await;
    let now = jiff::Timestamp::now();
    let dead: Lease = serde_json::from_value(json!({
        "metadata": {"name": env_lease_name(&t.name, "insights", "production"), "annotations": {"forgeops.dev/holder": "elsewhere/ghost"}},
        "spec": {"holderIdentity": "a-dead-operator", "leaseDurationSeconds": 4, "renewTime": now.to_string(), "acquireTime": now.to_string()},
    }))
    .unwrap();
    Api::<Lease>::namespaced(t.client.clone(), &t.name).create(&PostParams::default(), &dead).await.unwrap();
    let bus: Api<BulkUpgrade> = t.api();
    create(&bus, bulk("after-ghost", "insights", 1, 2, json!({}))).await;
    let b = wait_condition(&bus, "after-ghost", "Admitted", "False", "EnvironmentBusy").await;
    assert_eq!(b.status.as_ref().unwrap().blocked_by.as_deref(), Some("elsewhere/ghost"));
    let b = wait_state(&bus, "after-ghost", BulkUpgradeState::Complete).await;
    assert_eq!(b.status.as_ref().unwrap().upgraded, 1);
}
