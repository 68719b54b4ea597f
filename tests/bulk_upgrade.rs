//! End-to-end tests of bulk major-version upgrades against a real kube-apiserver: eligibility,
//! admission through Leases, pause, cancel, failures, limits, TTL, and Lease takeover.

mod support;

use std::time::Duration;

use forgeops::api::{BulkUpgrade, BulkUpgradeState, ForgeApp, Installation, NotificationEvent, RolloutPhase};
use forgeops::controllers::bulk_upgrade::{Limits, env_lease_name};
use forgeops_emulator::{EmulatorConfig, Faults};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};
use support::platform::seeded;
use support::{TestNs, condition, create, patch_spec, wait_condition, wait_for};

const WAIT: Duration = Duration::from_secs(60);

fn version(major: u32, minor: u32, scopes: &[&str]) -> Value {
    json!({"major": major, "minor": minor, "scopes": scopes, "compatibility": {"required": "jira"}})
}

/// ForgeApp `name`, owned on the platform by `account`: the test account (`dev`), or one a test
/// added with [`another_account`], whose credentials the app names.
fn app(name: &str, account: &str, versions: Value) -> Value {
    let mut body = json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "ForgeApp", "metadata": {"name": name},
        "spec": {"appId": format!("ari:cloud:ecosystem::app/{name}"),
            "environments": [{"name": "production", "versions": versions}]}});
    if account != "dev" {
        body["spec"]["credentialsSecretRef"] = json!({"name": format!("creds-{account}")});
        body["metadata"]["annotations"] =
            json!({support::platform::OWNER_ANNOTATION: format!("{account}@acme.example")});
    }
    body
}

/// A second developer account on the platform, and its credentials Secret.
async fn another_account(t: &TestNs, operator: &support::RunningOperator, account: &str) {
    let (email, token) = (format!("{account}@acme.example"), format!("token-{account}"));
    operator.platform.add_account(&email, &token);
    t.put_credentials(&format!("creds-{account}"), &email, &token).await;
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

/// The bulk upgrades' concurrency Leases still held (not the apps' owner Leases, held while the
/// ForgeApps exist).
async fn leases_held(t: &TestNs) -> Vec<String> {
    Api::<Lease>::namespaced(t.client.clone(), &t.name)
        .list(&ListParams::default().labels("forgeops.dev/lease!=app-owner"))
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
        "dev",
        1,
        vec![version(2, 0, &["read", "write:confluence-content"]), egress.clone(), licensed.clone()],
    )
    .await;
    let bus: Api<BulkUpgrade> = t.api();
    let cases = [
        ("scopes", 2, "AddsScopes", "adds scope write:confluence-content"),
        ("egress", 3, "AddsEgress", "adds egress api.example.com"),
        ("licensing", 4, "LicensingChanged", "licensing is disabled in 1.0 but enabled in 4.0"),
        ("missing", 5, "MajorNotDeployed", "major 5 is not deployed in environment production"),
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

    // The missing major is deployed, asking for nothing new (a minor could not drop the scope of
    // 2.0: on the platform removing a scope makes a major): that upgrade is re-evaluated and runs;
    // the others stay.
    let apps: Api<ForgeApp> = t.api();
    let versions = vec![
        version(1, 0, &["read"]),
        version(2, 0, &["read", "write:confluence-content"]),
        egress,
        licensed,
        version(5, 0, &["read"]),
        version(5, 1, &["read"]),
    ];
    patch_spec(&apps, "insights", json!({"environments": [{"name": "production", "versions": versions}]})).await;
    let b = wait_state(&bus, "missing", BulkUpgradeState::Complete).await;
    assert_eq!(b.status.as_ref().unwrap().upgraded, 1);
    let inst: Api<Installation> = t.api();
    let upgraded = inst.get("insights-0").await.unwrap();
    assert_eq!(upgraded.status.unwrap().installed_version.as_deref(), Some("5.1"), "the latest minor of the target");
    assert_eq!(state(&bus.get("egress").await.unwrap()), Some(BulkUpgradeState::Ineligible));
    assert_eq!(state(&bus.get("scopes").await.unwrap()), Some(BulkUpgradeState::Ineligible));
}

#[tokio::test]
async fn contention_for_an_environment_an_account_and_the_global_limit() {
    let mut t = TestNs::new("bulk-contention").await;
    t.bulk_limits = Limits { global: 1, ..Default::default() };
    // A rollout moves one installation per 3 s: long enough to be seen running.
    let operator = operator_with_rollout_step(&t, Duration::from_secs(3)).await;
    // The account a bulk upgrade counts against is the one its app's credentials act as, as the
    // platform says: A1 and A2 are the test account's, A3 and A4 two others'.
    another_account(&t, &operator, "dev-y").await;
    another_account(&t, &operator, "dev-z").await;
    for (app, account) in [("a1", "dev"), ("a2", "dev"), ("a3", "dev-y"), ("a4", "dev-z")] {
        installed_on_major_1(&t, app, account, 1, vec![version(2, 0, &["read"])]).await;
    }
    let bus: Api<BulkUpgrade> = t.api();
    let ns = &t.name;
    // A paused upgrade holds its environment's and its account's Leases, not a global slot.
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
    // The one global slot is free while A and D are paused: E runs.
    create(&bus, bulk("e", "a4", 1, 2, json!({}))).await;
    wait_state(&bus, "e", BulkUpgradeState::Running).await;
    // D, resumed while E runs, waits for the slot.
    patch_spec(&bus, "d", json!({"paused": false})).await;
    let d = wait_condition(&bus, "d", "Admitted", "False", "GlobalLimitReached").await;
    assert_eq!(state(&d), Some(BulkUpgradeState::Queued));
    assert_eq!(d.status.as_ref().unwrap().blocked_by.as_deref(), Some(format!("{ns}/e").as_str()));
    assert_eq!(majors(&t, "a1").await, vec![Some(1)], "nothing runs for A while it is paused");
    wait_state(&bus, "d", BulkUpgradeState::Complete).await;

    // A finishes; the waiting ones run in turn, then everything is released.
    patch_spec(&bus, "a", json!({"paused": false})).await;
    wait_state(&bus, "a", BulkUpgradeState::Complete).await;
    wait_state(&bus, "b", BulkUpgradeState::Complete).await;
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

/// An operator whose emulator upgrades one installation per `step` in rollouts.
async fn operator_with_rollout_step(t: &TestNs, step: Duration) -> support::RunningOperator {
    t.start_operator_with(EmulatorConfig {
        task_duration: Duration::from_millis(100),
        rollout_step: step,
        ..Default::default()
    })
    .await
}

fn status(b: &BulkUpgrade) -> &forgeops::api::BulkUpgradeStatus {
    b.status.as_ref().unwrap()
}

const APP_ID: &str = "ari:cloud:ecosystem::app/insights";

#[tokio::test]
async fn cancel_in_the_middle_cancels_the_rollout_keeps_what_was_upgraded_and_releases_the_leases() {
    let t = TestNs::new("bulk-cancel").await;
    let operator = operator_with_rollout_step(&t, Duration::from_millis(700)).await;
    installed_on_major_1(&t, "insights", "dev", 10, vec![version(2, 0, &["read"])]).await;
    let bus: Api<BulkUpgrade> = t.api();
    create(&bus, bulk("slow", "insights", 1, 2, json!({}))).await;
    wait_for(&bus, "slow", WAIT, "two upgraded", |b| b.status.as_ref().is_some_and(|s| s.upgraded >= 2)).await;
    assert!(!leases_held(&t).await.is_empty());
    patch_spec(&bus, "slow", json!({"cancelled": true})).await;
    let b = wait_state(&bus, "slow", BulkUpgradeState::Cancelled).await;
    let s = status(&b);
    assert!(s.completed_at.is_some());
    assert_eq!(s.rollouts.len(), 1);
    assert_eq!(s.rollouts[0].status, RolloutPhase::Cancelled);
    let on_platform = operator.platform.rollouts(APP_ID);
    assert_eq!(on_platform.len(), 1);
    assert_eq!(on_platform[0]["status"], "CANCELLED", "cancelled on the platform");
    assert_eq!(on_platform[0]["id"].as_str(), Some(s.rollouts[0].id.as_str()));
    let upgraded = s.upgraded as usize;
    assert!((2..10).contains(&upgraded), "some upgraded, the rest untouched: {s:#?}");
    assert_eq!(s.unprocessed as usize, 10 - upgraded);
    let deadline = std::time::Instant::now() + WAIT;
    while !leases_held(&t).await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "the Leases were not released");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The Installations show what the rollout did, from the platform's listing.
    let insts: Api<Installation> = t.api();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let on_2 = majors(&t, "insights").await.iter().filter(|m| **m == Some(2)).count();
        if on_2 == upgraded {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "Installations on 2: {on_2}, upgraded {upgraded}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = majors(&t, "insights").await;
    assert_eq!(after.iter().filter(|m| **m == Some(2)).count(), upgraded, "nothing moves after cancel");
    let _ = insts;

    // Deleting a running BulkUpgrade cancels its rollout too.
    create(&bus, bulk("deleted", "insights", 1, 2, json!({}))).await;
    wait_for(&bus, "deleted", WAIT, "running", |b| b.status.as_ref().is_some_and(|s| !s.rollouts.is_empty())).await;
    bus.delete("deleted", &Default::default()).await.unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while bus.get_opt("deleted").await.unwrap().is_some() || !leases_held(&t).await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "the deleted BulkUpgrade did not go, or kept its Leases");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let on_platform = operator.platform.rollouts(APP_ID);
    assert_eq!(on_platform.len(), 2);
    assert_eq!(on_platform[1]["status"], "CANCELLED", "{:#}", on_platform[1]);
}

#[tokio::test]
async fn pause_between_steps_holds_until_resumed() {
    let t = TestNs::new("bulk-pause").await;
    let operator = operator_with_rollout_step(&t, Duration::from_millis(400)).await;
    installed_on_major_1(&t, "insights", "dev", 5, vec![version(2, 0, &["read"])]).await;
    let bus: Api<BulkUpgrade> = t.api();
    create(&bus, bulk("held", "insights", 1, 2, json!({"steps": [{"limit": 2}, {}]}))).await;
    wait_for(&bus, "held", WAIT, "step 1 running", |b| b.status.as_ref().is_some_and(|s| s.rollouts.len() == 1)).await;
    // A platform rollout cannot be paused mid-way: step 1 runs to its end, then the upgrade holds.
    patch_spec(&bus, "held", json!({"paused": true})).await;
    let b = wait_state(&bus, "held", BulkUpgradeState::Paused).await;
    let s = status(&b);
    assert_eq!((s.upgraded, s.pending, s.unprocessed, s.step), (2, 0, 3, Some(1)), "{s:#?}");
    assert_eq!(condition(&b, "Progressing").unwrap().1, "Paused");
    assert_eq!(leases_held(&t).await.len(), 2, "the environment and account Leases stay held, not a global slot");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(operator.platform.rollouts(APP_ID).len(), 1, "no step starts while paused");
    patch_spec(&bus, "held", json!({"paused": false})).await;
    let b = wait_state(&bus, "held", BulkUpgradeState::Complete).await;
    let s = status(&b);
    assert_eq!((s.total, s.upgraded, s.pending, s.failed, s.unprocessed), (5, 5, 0, 0, 0));
    assert_eq!(s.rollouts.iter().map(|r| (r.step, r.completed)).collect::<Vec<_>>(), vec![(1, 2), (2, 3)]);
    assert_eq!(operator.platform.rollouts(APP_ID).len(), 2, "one rollout per step");
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
async fn the_failure_gate_between_steps_stops_the_upgrade() {
    let t = TestNs::new("bulk-failures").await;
    let operator = t.start_operator().await;
    installed_on_major_1(&t, "insights", "dev", 6, vec![version(2, 0, &["read"])]).await;
    // Five sites of six fail: whichever three step 1 takes, at least two fail.
    let failing = (0..5).map(|i| format!("insights-{i}.atlassian.net")).collect();
    operator.platform.set_faults(Faults { failing_sites: failing, ..Default::default() });
    let bus: Api<BulkUpgrade> = t.api();
    create(&bus, bulk("fragile", "insights", 1, 2, json!({"steps": [{"limit": 3}, {}], "maxFailures": 1}))).await;
    let b = wait_state(&bus, "fragile", BulkUpgradeState::Failed).await;
    let s = status(&b);
    assert!(s.failed >= 2, "{s:#?}");
    assert_eq!((s.failed + s.upgraded, s.pending, s.rollouts.len()), (3, 0, 1), "stopped after step 1: {s:#?}");
    let stalled = condition(&b, "Stalled").unwrap();
    assert_eq!((stalled.0.as_str(), stalled.1.as_str()), ("True", "MaxFailuresExceeded"));
    assert_eq!(operator.platform.rollouts(APP_ID).len(), 1, "step 2 never started");
    assert!(leases_held(&t).await.is_empty());
}

#[tokio::test]
async fn limit_leaves_the_rest_unprocessed_pinned_installations_hold_and_ttl_deletes() {
    let mut t = TestNs::new("bulk-limit").await;
    t.bulk_limits = Limits { recheck: Duration::from_secs(2), ..Default::default() };
    let _operator = t.start_operator().await;
    installed_on_major_1(&t, "insights", "dev", 6, vec![version(2, 0, &["read"])]).await;
    let insts: Api<Installation> = t.api();
    // A rollout would move an installation pinned to major 1: the upgrade waits for it.
    patch_spec(&insts, "insights-5", json!({"majorVersion": 1})).await;
    let bus: Api<BulkUpgrade> = t.api();
    create(&bus, bulk("some", "insights", 1, 2, json!({"limit": 3, "ttlSecondsAfterFinished": 3}))).await;
    let b = wait_condition(&bus, "some", "Eligible", "False", "PinnedInstallations").await;
    assert!(condition(&b, "Eligible").unwrap().2.contains("insights-5"), "{:?}", condition(&b, "Eligible"));
    patch_spec(&insts, "insights-5", json!({"majorVersion": null})).await;
    let b = wait_state(&bus, "some", BulkUpgradeState::Complete).await;
    let s = status(&b);
    assert_eq!((s.total, s.upgraded, s.unprocessed, s.pending), (6, 3, 3, 0), "{s:#?}");
    assert_eq!(condition(&b, "Complete").unwrap().1, "LimitReached");
    assert_eq!(s.rollouts[0].limit, Some(3));

    // The finished record is deleted once its TTL has passed.
    let deadline = std::time::Instant::now() + WAIT;
    while bus.get_opt("some").await.unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline, "the finished BulkUpgrade was not deleted after its TTL");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn twenty_five_hundred_installations_take_five_rollouts_and_the_records_outlive_the_platform() {
    const SITES: usize = 2500;
    let t = TestNs::new("bulk-2500").await;
    let mut config = seeded(APP_ID, &[("1.0.0", &["read"]), ("2.0.0", &["read"])], "big", SITES, "1.0.0");
    config.rollout_step = Duration::from_millis(2);
    let platform = t.start_platform(config).await;
    let operator = t.start_operator_on(platform.clone()).await;
    let (apps, insts, bus): (Api<ForgeApp>, Api<Installation>, Api<BulkUpgrade>) = (t.api(), t.api(), t.api());
    create(
        &apps,
        json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "ForgeApp", "metadata": {"name": "insights"},
        "spec": {"appId": APP_ID, "environments": ["production"]}}),
    )
    .await;
    // A few of the sites are declared in the cluster too (adopted as they are).
    let declared = [0usize, 1799, 1800, 2499];
    for i in declared {
        create(&insts, json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "Installation", "metadata": {"name": format!("big-{i:04}")},
            "spec": {"appRef": {"name": "insights"}, "site": format!("big-{i:04}.atlassian.net"), "products": ["jira"]}}))
        .await;
    }
    for i in declared {
        wait_for(&insts, &format!("big-{i:04}"), WAIT, "adopted on 1.0", |i| installed_major(i) == Some(1)).await;
    }
    let requests_before = operator.metrics.encode();
    let started = std::time::Instant::now();
    create(&bus, bulk("all", "insights", 1, 2, json!({}))).await;
    let b =
        wait_for(&bus, "all", Duration::from_secs(120), "complete", |b| state(b) == Some(BulkUpgradeState::Complete))
            .await;
    let elapsed = started.elapsed();
    let s = status(&b);
    assert_eq!((s.total, s.upgraded, s.failed, s.pending, s.unprocessed), (2500, 2500, 0, 0, 0), "{s:#?}");
    let kube_requests = |text: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with("forgeops_kube_api_requests_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let during = kube_requests(&operator.metrics.encode()) - kube_requests(&requests_before);
    eprintln!(
        "2500 installations: Complete {:.1} s after creation (the platform took {} ms), {during} Kubernetes API requests by the operator meanwhile",
        elapsed.as_secs_f64(),
        2 * SITES
    );
    let taken: Vec<(u32, u32, Option<u32>)> =
        s.rollouts.iter().map(|r| (r.step, r.completed, r.upgrade_limit)).collect();
    assert_eq!(taken, vec![(1, 500, Some(500)); 5], "the platform's cap (500 per rollout, read from its answer)");
    assert_eq!(platform.rollouts(APP_ID).len(), 5);
    let by = platform.upgraded_by(APP_ID);
    assert_eq!(by.len(), SITES);
    assert!(by.values().all(|r| r.len() == 1), "every installation upgraded exactly once");
    // The declared Installations show the new version, from the platform's listing.
    for i in declared {
        let name = format!("big-{i:04}");
        wait_for(&insts, &name, WAIT, "shows 2.0", |i| {
            i.status.as_ref().and_then(|s| s.installed_version.as_deref()) == Some("2.0")
        })
        .await;
    }
    // The platform forgets finished rollouts; the BulkUpgrade keeps its records.
    assert_eq!(platform.emulator.forget_finished_rollouts(), 5);
    patch_spec(&bus, "all", json!({"ttlSecondsAfterFinished": 3600})).await;
    let after = wait_for(&bus, "all", WAIT, "the edit acknowledged", |b| {
        b.status.as_ref().unwrap().observed_generation == b.metadata.generation
    })
    .await;
    assert_eq!(status(&after).rollouts, s.rollouts, "the records are kept");
    assert!(platform.rollouts(APP_ID).is_empty());
    let writes = operator.metrics.write_requests();
    eprintln!("2500 installations: {} rollouts, {writes} Kubernetes API writes by the operator", s.rollouts.len());
    let metrics = operator.metrics.encode();
    for line in metrics.lines().filter(|l| {
        l.starts_with("forgeops_kube_api_requests_total") || l.starts_with("forgeops_platform_requests_total")
    }) {
        eprintln!("  {line}");
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
        "metadata": {"name": env_lease_name("ari:cloud:ecosystem::app/insights", "production"), "annotations": {"forgeops.dev/holder": "elsewhere/ghost"}},
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

/// Runs the real `forge` CLI (off the async runtime) against `platform` for app [`APP_ID`].
async fn forge_cli(platform: &support::platform::TestPlatform, args: &[&str]) -> String {
    let env = support::forge_cli::ForgeEnv::new(
        platform.emulator.graphql_url(),
        support::platform::EMAIL,
        support::platform::TOKEN,
    )
    .with_app(APP_ID);
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        support::forge_cli::forge_ok(&args, &env)
    })
    .await
    .unwrap()
}

fn kubectl(args: &[&str]) -> String {
    let shared = support::shared();
    let out = std::process::Command::new(&shared.kubectl)
        .arg("--kubeconfig")
        .arg(&shared.kubeconfig)
        .args(args)
        .output()
        .expect("running kubectl");
    assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_started_with_the_cli_makes_the_upgrade_wait_and_the_cli_lists_what_kubectl_shows() {
    let t = TestNs::new("bulk-cli").await;
    let mut config = seeded(APP_ID, &[("1.0.0", &["read"]), ("2.0.0", &["read"])], "cli", 16, "1.0.0");
    config.rollout_step = Duration::from_millis(500);
    let platform = t.start_platform(config).await;
    let _operator = t.start_operator_on(platform.clone()).await;
    let (apps, bus): (Api<ForgeApp>, Api<BulkUpgrade>) = (t.api(), t.api());
    create(
        &apps,
        json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "ForgeApp", "metadata": {"name": "insights"},
        "spec": {"appId": APP_ID, "environments": ["production"]}}),
    )
    .await;
    wait_for(&apps, "insights", WAIT, "read", |a| a.deployed("production").len() == 2).await;

    // Someone runs a bulk upgrade with the CLI, outside the cluster: 8 sites, 4 s.
    forge_cli(
        &platform,
        &[
            "version",
            "bulk-upgrade",
            "start",
            "--non-interactive",
            "--json",
            "--environment",
            "production",
            "--from-version",
            "1",
            "--to-version",
            "2",
            "--limit",
            "8",
        ],
    )
    .await;
    assert_eq!(platform.rollouts(APP_ID).len(), 1);
    let cli_rollout = platform.rollouts(APP_ID)[0]["id"].as_str().unwrap().to_string();
    create(&bus, bulk("mine", "insights", 1, 2, json!({}))).await;
    let b = wait_condition(&bus, "mine", "Admitted", "False", "AppRolloutRunning").await;
    assert_eq!(state(&b), Some(BulkUpgradeState::Queued));
    assert!(
        status(&b)
            .blocked_by
            .as_deref()
            .is_some_and(|w| w.contains(&format!("rollout {cli_rollout}, already running"))),
        "names the platform's rollout it waits for: {:?}",
        status(&b).blocked_by
    );
    assert!(status(&b).rollouts.is_empty(), "nothing started, nothing counted as failed");
    assert_eq!(status(&b).failed, 0);

    // Once it has finished, ours runs and takes the rest.
    let b =
        wait_for(&bus, "mine", Duration::from_secs(90), "complete", |b| state(b) == Some(BulkUpgradeState::Complete))
            .await;
    let s = status(&b);
    assert_eq!((s.upgraded, s.failed, s.pending, s.rollouts.len()), (8, 0, 0, 1), "{s:#?}");

    // `forge version bulk-upgrade list` shows the rollout with the counts `kubectl get fbu` shows.
    let listed = forge_cli(
        &platform,
        &["version", "bulk-upgrade", "list", "--json", "--environment", "production", "--non-interactive"],
    )
    .await;
    let rows = support::forge_cli::parse_json_output(&listed);
    let rows = rows.as_array().unwrap_or_else(|| panic!("a JSON list:\n{listed}"));
    assert_eq!(rows.len(), 2, "the CLI's and ours: {listed}");
    let table = kubectl(&[
        "get",
        "fbu",
        "-n",
        &t.name,
        "--no-headers",
        "-o",
        "custom-columns=ROLLOUT:.status.rollouts[*].id,STATE:.status.state,UPGRADED:.status.upgraded,FAILED:.status.failed,PENDING:.status.pending",
    ]);
    let cols: Vec<&str> = table.split_whitespace().collect();
    let json_out = kubectl(&["get", "fbu", "mine", "-n", &t.name, "-o", "json"]);
    let fbu: BulkUpgrade = serde_json::from_str(&json_out).unwrap();
    for record in &status(&fbu).rollouts {
        let row = rows
            .iter()
            .find(|r| r["id"] == record.id.as_str())
            .unwrap_or_else(|| panic!("{} not listed: {listed}", record.id));
        assert_eq!(row["status"], "COMPLETE");
        assert_eq!(row["completedUpgradeCount"], record.completed, "{row:#}");
        assert_eq!(row["failedUpgradeCount"], record.failed, "{row:#}");
        assert_eq!(row["pendingUpgradeCount"], record.pending, "{row:#}");
        assert_eq!(row["sourceVersionId"], record.source_version.as_str());
        assert_eq!(row["targetVersionId"], record.target_version.as_str());
    }
    assert_eq!(cols, vec![s.rollouts[0].id.as_str(), "Complete", "8", "0", "0"], "{table}");
    // The default columns of `kubectl get fbu` name the rollout too.
    let wide = kubectl(&["get", "fbu", "mine", "-n", &t.name]);
    assert!(wide.contains(&s.rollouts[0].id) && wide.contains("ROLLOUT"), "{wide}");
}

#[tokio::test]
async fn the_leases_are_renewed_while_a_rollout_runs_longer_than_their_duration() {
    let mut t = TestNs::new("bulk-renew").await;
    t.bulk_limits = Limits { lease_duration: Duration::from_secs(4), ..Default::default() };
    let operator = operator_with_rollout_step(&t, Duration::from_secs(1)).await;
    installed_on_major_1(&t, "insights", "dev", 10, vec![version(2, 0, &["read"])]).await;
    let bus: Api<BulkUpgrade> = t.api();
    create(&bus, bulk("long", "insights", 1, 2, json!({}))).await;
    wait_for(&bus, "long", WAIT, "running", |b| b.status.as_ref().is_some_and(|s| !s.rollouts.is_empty())).await;
    create(&bus, bulk("next", "insights", 1, 2, json!({}))).await;
    // For the 10 s the rollout runs (2.5 lease durations), the second one waits behind it.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let long = bus.get("long").await.unwrap();
        let next = bus.get("next").await.unwrap();
        if state(&long) == Some(BulkUpgradeState::Complete) {
            break;
        }
        let waiting = next.status.as_ref().is_none_or(|s| s.rollouts.is_empty());
        assert!(waiting, "the second upgrade started while the first ran: {:#?}", next.status);
        if let Some(s) = next.status.as_ref().filter(|s| s.state == Some(BulkUpgradeState::Queued)) {
            assert_eq!(s.blocked_by.as_deref(), Some(format!("{}/long", t.name).as_str()));
        }
        assert!(std::time::Instant::now() < deadline, "the first upgrade did not complete");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(status(&bus.get("long").await.unwrap()).upgraded, 10);
    let next = wait_state(&bus, "next", BulkUpgradeState::Complete).await;
    assert_eq!(condition(&next, "Complete").unwrap().1, "NothingToUpgrade");
    assert_eq!(operator.platform.rollouts(APP_ID).len(), 1);
}

#[tokio::test]
async fn a_rollout_whose_creation_answer_was_lost_is_adopted_not_started_twice() {
    const CREATE: &str = "forge_cli_createAppVersionUpgradeRollout";
    let t = TestNs::new("bulk-lost").await;
    let platform =
        t.start_platform(seeded(APP_ID, &[("1.0.0", &["read"]), ("2.0.0", &["read"])], "lost", 20, "1.0.0")).await;
    let _operator = t.start_operator_on(platform.clone()).await;
    let (apps, bus): (Api<ForgeApp>, Api<BulkUpgrade>) = (t.api(), t.api());
    create(
        &apps,
        json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "ForgeApp", "metadata": {"name": "insights"},
        "spec": {"appId": APP_ID, "environments": ["production"]}}),
    )
    .await;
    for (round, mode) in ["applyThen504", "applyThenDrop", "hang"].into_iter().enumerate() {
        let name = format!("lost-{}", mode.to_ascii_lowercase());
        let sent_before = platform.calls(CREATE);
        let faults: Faults =
            // `hang`: past the operator's 10 s client timeout.
            serde_json::from_value(json!({"mutations": [{"operation": CREATE, "mode": mode, "count": 1}], "hangMs": 11_000}))
                .unwrap();
        platform.set_faults(faults);
        let (from, to) = (round as u32 + 1, round as u32 + 2);
        if to >= 3 {
            // A further major for each later round, deployed as `forge deploy` would.
            let deploy = forgeops_emulator::DeployRequest {
                app_id: APP_ID.into(),
                environment: "production".into(),
                version: format!("{to}.0.0"),
                scopes: vec!["read".into()],
                egress: vec![],
                requires_license: false,
                required_products: vec!["jira".into()],
                modules: vec![],
                remotes: vec![],
                security_policies: vec![],
            };
            platform.emulator.deploy(deploy).unwrap();
            let ask = json!({"metadata": {"annotations": {"forgeops.dev/refresh": format!("{to}.0")}}});
            apps.patch("insights", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&ask)).await.unwrap();
            let majors = to as usize;
            wait_for(&apps, "insights", WAIT, "the new major read", |a| a.deployed("production").len() == majors).await;
        }
        create(&bus, bulk(&name, "insights", from, to, json!({}))).await;
        let b = wait_for(&bus, &name, WAIT, "complete", |b| state(b) == Some(BulkUpgradeState::Complete)).await;
        let s = status(&b);
        assert_eq!((s.total, s.upgraded, s.failed), (20, 20, 0), "{mode}: {s:#?}");
        assert_eq!(platform.calls(CREATE) - sent_before, 1, "{mode}: one creation request, its rollout adopted");
        assert_eq!(s.rollouts.len(), 1, "{mode}: {s:#?}");
    }
    assert_eq!(platform.rollouts(APP_ID).len(), 3, "one rollout per BulkUpgrade on the platform");
    let by = platform.upgraded_by(APP_ID);
    assert!(by.values().all(|r| r.len() == 3), "each installation moved once per rollout: {by:?}");
}

#[tokio::test]
async fn a_rollout_the_platform_forgets_mid_way_ends_with_the_counts_the_platform_shows() {
    const SITES: usize = 40;
    let t = TestNs::new("bulk-forgotten").await;
    let mut config = seeded(APP_ID, &[("1.0.0", &["read"]), ("2.0.0", &["read"])], "gone", SITES, "1.0.0");
    // Slow enough to be seen running, and forgotten the moment it finishes.
    config.rollout_step = Duration::from_millis(100);
    config.rollout_retention = Some(Duration::from_millis(1));
    let platform = t.start_platform(config).await;
    let _operator = t.start_operator_on(platform.clone()).await;
    let (apps, bus): (Api<ForgeApp>, Api<BulkUpgrade>) = (t.api(), t.api());
    create(
        &apps,
        json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "ForgeApp", "metadata": {"name": "insights"},
        "spec": {"appId": APP_ID, "environments": ["production"]}}),
    )
    .await;
    create(&bus, bulk("all", "insights", 1, 2, json!({}))).await;
    wait_for(&bus, "all", WAIT, "seen running mid-way", |b| {
        b.status.as_ref().and_then(|s| s.rollouts.first()).is_some_and(|r| r.completed > 0 && r.pending > 0)
    })
    .await;
    let b = wait_for(&bus, "all", WAIT, "complete", |b| state(b) == Some(BulkUpgradeState::Complete)).await;
    assert!(platform.rollouts(APP_ID).is_empty(), "the platform forgot the rollout");
    let on_target = platform.upgraded_by(APP_ID).values().filter(|r| !r.is_empty()).count();
    let s = status(&b);
    let r = &s.rollouts[0];
    assert!(r.forgotten && r.reconstructed, "{s:#?}");
    assert_eq!(on_target, SITES);
    assert_eq!((s.upgraded, s.pending, r.completed), (on_target as u32, 0, on_target as u32), "{s:#?}");
}

#[tokio::test]
async fn an_app_deleted_under_a_running_rollout_waits_for_it_and_a_bulk_upgrade_without_its_app_can_be_cancelled() {
    let t = TestNs::new("bulk-app-gone").await;
    let mut config = seeded(APP_ID, &[("1.0.0", &["read"]), ("2.0.0", &["read"])], "gone-app", 30, "1.0.0");
    config.rollout_step = Duration::from_millis(400);
    let platform = t.start_platform(config).await;
    let operator = t.start_operator_on(platform.clone()).await;
    let (apps, bus): (Api<ForgeApp>, Api<BulkUpgrade>) = (t.api(), t.api());
    let app = json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "ForgeApp", "metadata": {"name": "insights"},
        "spec": {"appId": APP_ID, "environments": ["production"]}});
    create(&apps, app).await;
    create(&bus, bulk("running", "insights", 1, 2, json!({}))).await;
    wait_for(&bus, "running", WAIT, "a rollout running", |b| {
        b.status.as_ref().is_some_and(|s| s.rollouts.last().is_some_and(|r| r.status == RolloutPhase::Running))
    })
    .await;

    // Deleting the app while its rollout runs: the app is kept (only its credentials can follow
    // or cancel the rollout), and its finalizer says why.
    apps.delete("insights", &Default::default()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(apps.get_opt("insights").await.unwrap().is_some(), "the app went while its rollout ran");

    // The app's finalizer is removed by hand (as a user in a hurry would): the BulkUpgrade says
    // its app is gone, and the operator goes on.
    let drop_finalizers = json!({"metadata": {"finalizers": null}});
    apps.patch("insights", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&drop_finalizers))
        .await
        .unwrap();
    let b = wait_condition(&bus, "running", "Progressing", "True", "AppGone").await;
    assert!(condition(&b, "Ready").unwrap().2.contains("set cancelled: true"), "{b:#?}");

    // Cancelled without its app: finished as asked, with what to do about the platform's rollout,
    // and nothing sent (there are no credentials to send it with). The operator did not stop.
    let cancels = platform.calls("forge_cli_cancelAppVersionUpgradeRollout");
    patch_spec(&bus, "running", json!({"cancelled": true})).await;
    let b = wait_state(&bus, "running", BulkUpgradeState::Cancelled).await;
    assert!(condition(&b, "Ready").unwrap().2.contains("could not be cancelled on the platform"), "{b:#?}");
    assert_eq!(platform.calls("forge_cli_cancelAppVersionUpgradeRollout"), cancels);
    assert!(!operator.exited(), "the operator stopped");
    bus.delete("running", &Default::default()).await.unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while bus.get_opt("running").await.unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline, "the BulkUpgrade without its app could not be deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_environment_typo_is_stalled_with_what_to_change_and_holds_no_one_up() {
    let t = TestNs::new("bulk-typo").await;
    let _operator = operator_with_rollout_step(&t, Duration::from_millis(100)).await;
    installed_on_major_1(&t, "insights", "dev", 3, vec![version(2, 0, &["read"])]).await;
    let bus: Api<BulkUpgrade> = t.api();
    create(&bus, bulk("typo", "insights", 1, 2, json!({"environment": "prodution"}))).await;
    let b = wait_condition(&bus, "typo", "Stalled", "True", "EnvironmentNotManaged").await;
    assert_eq!(state(&b), Some(BulkUpgradeState::Ineligible), "{b:#?}");
    let message = condition(&b, "Ready").unwrap().2;
    assert!(message.contains("does not manage environment prodution (it manages production)"), "{message}");
    assert!(message.contains("fix spec.environment"), "{message}");
    // The next upgrade of the same account is not queued behind the typo.
    create(&bus, bulk("real", "insights", 1, 2, json!({}))).await;
    let b = wait_state(&bus, "real", BulkUpgradeState::Complete).await;
    assert!(status(&b).blocked_by.is_none(), "{b:#?}");
    assert_eq!(status(&b).upgraded, 3);
}

async fn annotate(api: &Api<BulkUpgrade>, name: &str, key: &str, value: &str) {
    let patch = json!({"metadata": {"annotations": {key: value}}});
    api.patch(name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(patch)).await.unwrap();
}

#[tokio::test]
async fn bake_time_then_approval_by_annotation_then_an_emergency_stop_that_a_re_apply_keeps() {
    let t = TestNs::new("bulk-gates").await;
    let operator = operator_with_rollout_step(&t, Duration::from_millis(400)).await;
    installed_on_major_1(&t, "insights", "dev", 10, vec![version(2, 0, &["read"])]).await;
    let bus: Api<BulkUpgrade> = t.api();
    let manifest = bulk(
        "gated",
        "insights",
        1,
        2,
        json!({"steps": [{"limit": 2, "pause": {"duration": "3s"}}, {"limit": 2, "requireApproval": true}, {}]}),
    );
    create(&bus, manifest.clone()).await;

    // Step 1 runs, then bakes: measured from when its rollout is seen complete.
    wait_state(&bus, "gated", BulkUpgradeState::Baking).await;
    let baking_seen = std::time::Instant::now();
    assert_eq!(operator.platform.rollouts(APP_ID).len(), 1);
    assert_eq!(leases_held(&t).await.len(), 2, "the environment and account Leases stay held while baking");
    let b = wait_state(&bus, "gated", BulkUpgradeState::AwaitingApproval).await;
    let baked = baking_seen.elapsed();
    let completed = status(&b).rollouts[0].completed_at.clone().unwrap().0;
    let since_completed = jiff::Timestamp::now().duration_since(completed);
    assert!(
        since_completed >= jiff::SignedDuration::from_secs(3),
        "bake held 3 s: {since_completed:?} ({baked:?} seen)"
    );
    assert!(condition(&b, "Ready").unwrap().2.contains("forgeops.dev/approve-step-2"), "{:?}", condition(&b, "Ready"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(operator.platform.rollouts(APP_ID).len(), 1, "no rollout before the approval");

    // Approved by annotation: step 2 starts, and who approved is recorded.
    annotate(&bus, "gated", "forgeops.dev/approve-step-2", "alice@acme.example").await;
    let b = wait_for(&bus, "gated", WAIT, "step 3 running", |b| {
        b.status.as_ref().is_some_and(|s| s.rollouts.len() == 3 && s.rollouts[2].status == RolloutPhase::Running)
    })
    .await;
    let approvals = &status(&b).approvals;
    assert_eq!(approvals.len(), 1);
    assert_eq!((approvals[0].step, approvals[0].by.as_str()), (2, "alice@acme.example"));

    // The emergency stop cancels the running rollout on the platform.
    annotate(&bus, "gated", "forgeops.dev/emergency-stop", "bob: errors on EU sites").await;
    let b = wait_state(&bus, "gated", BulkUpgradeState::Cancelled).await;
    assert_eq!(condition(&b, "Progressing").unwrap().1, "EmergencyStop");
    assert_eq!(status(&b).emergency_stop.as_ref().map(|s| s.by.as_str()), Some("bob: errors on EU sites"));
    let on_platform = operator.platform.rollouts(APP_ID);
    assert_eq!(on_platform.len(), 3);
    assert_eq!(on_platform[2]["status"], "CANCELLED", "{:#}", on_platform[2]);

    // A GitOps re-apply of the same manifest (server-side, its own field manager) keeps the
    // annotation, and nothing starts again.
    let params = kube::api::PatchParams::apply("gitops-sync").force();
    bus.patch("gated", &params, &kube::api::Patch::Apply(manifest)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let b = bus.get("gated").await.unwrap();
    assert!(b.metadata.annotations.as_ref().unwrap().contains_key("forgeops.dev/emergency-stop"));
    assert_eq!(state(&b), Some(BulkUpgradeState::Cancelled));
    assert_eq!(operator.platform.rollouts(APP_ID).len(), 3, "no rollout after the stop");
}

/// A stepped upgrade (2 sites, 2 more, then the rest) with a 10 s analysis after steps 1 and 2;
/// version 1 runs
/// at 60,000 invocations a minute, all successful, and version 2 at `v2_per_minute` with
/// `v2_success`.
async fn analysed(t: &TestNs, v2_per_minute: u32, v2_success: f64, on_failure: &str) -> support::RunningOperator {
    let operator = operator_with_rollout_step(t, Duration::from_millis(200)).await;
    installed_on_major_1(t, "insights", "dev", 6, vec![version(2, 0, &["read"])]).await;
    let rule = |version: &str, per_minute: u32, success: f64| forgeops_emulator::metrics::TrafficRule {
        app_id: APP_ID.into(),
        version: version.into(),
        site: None,
        invocations_per_minute: per_minute,
        success_rate: success,
    };
    operator.platform.emulator.set_traffic(rule("1", 60_000, 1.0)).unwrap();
    operator.platform.emulator.set_traffic(rule("2", v2_per_minute, v2_success)).unwrap();
    let analysis = json!({"window": "10s", "minSuccessRate": 99, "maxDropFromBaseline": 1, "minInvocations": 1000,
        "onFailure": on_failure});
    create(
        &t.api::<BulkUpgrade>(),
        bulk("analysed", "insights", 1, 2, json!({"steps": [{"limit": 2}, {"limit": 2}, {}], "analysis": analysis})),
    )
    .await;
    operator
}

/// No 60 s in the emulator's request log holds more than five App metrics calls.
fn metrics_calls_within_the_limit(operator: &support::RunningOperator) -> usize {
    let at: Vec<i64> = operator
        .platform
        .emulator
        .requests()
        .iter()
        .filter(|r| r.operation_name.as_deref().is_some_and(|o| o.contains("Metrics")))
        .map(|r| r.at_ms)
        .collect();
    for (i, t) in at.iter().enumerate() {
        let in_minute = at[i..].iter().take_while(|u| **u < t + 60_000).count();
        assert!(in_minute <= 5, "{in_minute} metrics calls within a minute: {at:?}");
    }
    at.len()
}

#[tokio::test]
async fn a_healthy_target_passes_analysis_and_completes_with_the_figures_in_status() {
    let t = TestNs::new("bulk-healthy").await;
    let operator = analysed(&t, 60_000, 1.0, "Stop").await;
    let bus: Api<BulkUpgrade> = t.api();
    wait_state(&bus, "analysed", BulkUpgradeState::Analyzing).await;
    let b = wait_state(&bus, "analysed", BulkUpgradeState::Complete).await;
    let s = status(&b);
    assert_eq!(s.upgraded, 6);
    assert_eq!(s.analyses.len(), 2, "after steps 1 and 2 (none after the last step)");
    for (n, a) in s.analyses.iter().enumerate() {
        let step = n as u32 + 1;
        assert_eq!((a.step, a.verdict), (step, forgeops::api::AnalysisVerdict::Passed), "{a:#?}");
        assert_eq!((a.cohort.sites, a.baseline.sites), (2 * step, 6 - 2 * step), "{a:#?}");
        assert!(a.cohort.invocations >= 1000 && a.baseline.invocations >= 1000, "{a:#?}");
        assert_eq!((a.cohort.success_rate, a.baseline.success_rate), (Some(100.0), Some(100.0)));
        let window = a.window_end.0.duration_since(a.window_start.0);
        assert_eq!(window, jiff::SignedDuration::from_secs(10));
        let done = s.rollouts.iter().filter(|r| r.step == step).map(|r| r.completed_at.clone().unwrap().0).max();
        assert!(Some(a.window_start.0) >= done, "measured after step {step} completed");
        let next = s.rollouts.iter().find(|r| r.step == step + 1).unwrap();
        assert!(next.started_at.clone().unwrap().0 >= a.window_end.0, "step {} started after the window", step + 1);
    }
    assert_eq!(metrics_calls_within_the_limit(&operator), 4, "two analyses: invocations and errors each");
}

#[tokio::test]
async fn a_target_that_fails_on_the_moved_sites_stops_after_the_first_step_with_the_figures() {
    let t = TestNs::new("bulk-failing").await;
    let operator = analysed(&t, 60_000, 0.9, "Stop").await;
    let bus: Api<BulkUpgrade> = t.api();
    let b = wait_state(&bus, "analysed", BulkUpgradeState::Failed).await;
    let s = status(&b);
    assert_eq!((s.upgraded, s.rollouts.len()), (2, 1), "only step 1 ran: {s:#?}");
    let a = &s.analyses[0];
    assert_eq!(a.verdict, forgeops::api::AnalysisVerdict::Failed);
    let rate = a.cohort.success_rate.unwrap();
    assert!((89.0..=91.0).contains(&rate), "{a:#?}");
    assert_eq!(condition(&b, "Stalled").unwrap().1, "AnalysisFailed");
    assert!(condition(&b, "Ready").unwrap().2.contains("below minSuccessRate 99%"), "{:?}", condition(&b, "Ready"));
    assert_eq!(operator.platform.rollouts(APP_ID).len(), 1, "no second rollout");
    metrics_calls_within_the_limit(&operator);
}

#[tokio::test]
async fn too_few_invocations_are_inconclusive_and_pause_until_approved() {
    let t = TestNs::new("bulk-quiet").await;
    let operator = analysed(&t, 60, 1.0, "Stop").await;
    let bus: Api<BulkUpgrade> = t.api();
    let b = wait_state(&bus, "analysed", BulkUpgradeState::AwaitingApproval).await;
    assert_eq!(status(&b).analyses[0].verdict, forgeops::api::AnalysisVerdict::Inconclusive);
    assert_eq!(condition(&b, "Progressing").unwrap().1, "AnalysisInconclusive");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(operator.platform.rollouts(APP_ID).len(), 1, "paused, never passed");
    annotate(&bus, "analysed", "forgeops.dev/approve-step-2", "carol").await;
    // Step 2 runs, and its analysis is as quiet: step 3 waits for its own approval.
    let b = wait_for(&bus, "analysed", WAIT, "step 2 analysed", |b| {
        b.status.as_ref().is_some_and(|s| s.analyses.len() == 2)
    })
    .await;
    assert_eq!(status(&b).analyses[1].verdict, forgeops::api::AnalysisVerdict::Inconclusive);
    wait_state(&bus, "analysed", BulkUpgradeState::AwaitingApproval).await;
    annotate(&bus, "analysed", "forgeops.dev/approve-step-3", "carol").await;
    let b = wait_state(&bus, "analysed", BulkUpgradeState::Complete).await;
    assert_eq!(status(&b).upgraded, 6);
    let approvals: Vec<(u32, &str)> = status(&b).approvals.iter().map(|a| (a.step, a.by.as_str())).collect();
    assert_eq!(approvals, [(2, "carol"), (3, "carol")]);
    metrics_calls_within_the_limit(&operator);
}

#[tokio::test]
async fn a_closed_window_makes_the_next_rollout_wait_until_it_opens() {
    let t = TestNs::new("bulk-window").await;
    let operator = operator_with_rollout_step(&t, Duration::from_millis(100)).await;
    installed_on_major_1(&t, "insights", "dev", 3, vec![version(2, 0, &["read"])]).await;
    // Office hours in Berlin; the operator's clock says Friday evening there.
    let berlin = |at: &str| {
        jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M:%S", at)
            .and_then(|d| d.in_tz("Europe/Berlin"))
            .map(|z| z.timestamp())
            .unwrap_or_default()
    };
    operator.clock.set(berlin("2030-01-04 17:30:00"));
    let office = json!({"kind": "Allow", "timeZone": "Europe/Berlin", "days": ["Mon", "Tue", "Wed", "Thu", "Fri"],
        "start": "09:00", "end": "17:00"});
    let bus: Api<BulkUpgrade> = t.api();
    create(&bus, bulk("windowed", "insights", 1, 2, json!({"windows": [office]}))).await;
    let b = wait_state(&bus, "windowed", BulkUpgradeState::OutsideWindow).await;
    let monday_nine = berlin("2030-01-07 09:00:00");
    let ready = condition(&b, "Ready").map(|c| c.2).unwrap_or_default();
    assert!(ready.contains(&format!("outside the rollout windows until {monday_nine}")), "{ready}");
    // Saturday: still closed, and nothing starts while the clock stands there.
    operator.clock.set(berlin("2030-01-05 12:00:00"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let b = wait_state(&bus, "windowed", BulkUpgradeState::OutsideWindow).await;
    assert!(status(&b).rollouts.is_empty() && operator.platform.rollouts(APP_ID).is_empty(), "nothing starts closed");
    // Two seconds before it opens on Monday: the operator wakes by itself when it does.
    operator.clock.set(monday_nine - jiff::SignedDuration::from_secs(2));
    let b = wait_state(&bus, "windowed", BulkUpgradeState::Complete).await;
    let started = status(&b).started_at.clone().map(|t| t.0).unwrap_or_default();
    assert!(started >= monday_nine, "started {started}, the window opens {monday_nine}");
    assert!(started < monday_nine + jiff::SignedDuration::from_secs(30), "started {started}, soon after it opened");
    assert_eq!(status(&b).upgraded, 3);
    assert_eq!(operator.platform.rollouts(APP_ID).len(), 1, "one rollout, once the window opened");
}

/// A loopback webhook receiver that answers 500 to the first request and 200 after: every body it
/// got, refused ones included.
async fn webhook_receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use std::sync::{Arc, Mutex};
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let seen = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                let mut all = seen.lock().unwrap();
                all.push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                if all.len() == 1 { axum::http::StatusCode::INTERNAL_SERVER_ERROR } else { axum::http::StatusCode::OK }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

#[tokio::test]
async fn a_webhook_hears_each_step_the_approval_wait_and_the_end_again_after_a_500() {
    let t = TestNs::new("bulk-notify").await;
    let _operator = operator_with_rollout_step(&t, Duration::from_millis(100)).await;
    installed_on_major_1(&t, "insights", "dev", 4, vec![version(2, 0, &["read"])]).await;
    let (url, got) = webhook_receiver().await;
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hook"}, "stringData": {"url": url}}),
    )
    .unwrap();
    t.api::<k8s_openapi::api::core::v1::Secret>().create(&PostParams::default(), &secret).await.unwrap();
    let bus: Api<BulkUpgrade> = t.api();
    let spec = json!({"steps": [{"limit": 2}, {"requireApproval": true}],
        "notifications": {"webhookSecretRef": {"name": "hook"}}});
    create(&bus, bulk("told", "insights", 1, 2, spec)).await;
    wait_state(&bus, "told", BulkUpgradeState::AwaitingApproval).await;
    annotate(&bus, "told", "forgeops.dev/approve-step-2", "dana").await;
    wait_state(&bus, "told", BulkUpgradeState::Complete).await;
    let events = || -> Vec<(String, Option<u64>)> {
        got.lock()
            .unwrap()
            .iter()
            .map(|b| (b["event"].as_str().unwrap_or("").to_string(), b["step"].as_u64()))
            .collect()
    };
    let deadline = std::time::Instant::now() + WAIT;
    let want: Vec<(String, Option<u64>)> = [
        ("StepStarted", 1),
        ("StepStarted", 1),
        ("StepCompleted", 1),
        ("AwaitingApproval", 2),
        ("StepStarted", 2),
        ("StepCompleted", 2),
        ("Completed", 2),
    ]
    .iter()
    .map(|(e, s)| (e.to_string(), Some(*s)))
    .collect();
    while events() != want {
        assert!(std::time::Instant::now() < deadline, "webhook got {:?}, want {want:?}", events());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The first was refused with 500 and delivered again; the body names the object.
    let first = got.lock().unwrap()[0].clone();
    assert_eq!(first["bulkUpgrade"]["name"], "told");
    assert_eq!(first, got.lock().unwrap()[1]);
}

/// A loopback webhook receiver that refuses (503) until `accepting` is set: every body it got,
/// and whether it accepted it.
async fn switchable_receiver() -> (String, Received, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let got: Received = Arc::default();
    let accepting = Arc::new(AtomicBool::new(false));
    let (seen, open) = (got.clone(), accepting.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let (seen, open) = (seen.clone(), open.clone());
            async move {
                let accepted = open.load(Ordering::SeqCst);
                let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((accepted, body));
                if accepted { axum::http::StatusCode::OK } else { axum::http::StatusCode::SERVICE_UNAVAILABLE }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let url = format!("http://{}/hook", listener.local_addr().expect("its address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got, accepting)
}

type Received = std::sync::Arc<std::sync::Mutex<Vec<(bool, Value)>>>;

#[tokio::test]
async fn notifications_told_before_a_restart_are_delivered_by_the_next_operator() {
    let t = TestNs::new("bulk-outbox").await;
    let operator = operator_with_rollout_step(&t, Duration::from_millis(100)).await;
    let platform = operator.platform.clone();
    installed_on_major_1(&t, "insights", "dev", 2, vec![version(2, 0, &["read"])]).await;
    let (url, got, accepting) = switchable_receiver().await;
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hook"}, "stringData": {"url": url}}),
    )
    .expect("a Secret");
    t.api::<k8s_openapi::api::core::v1::Secret>().create(&PostParams::default(), &secret).await.expect("created");
    let bus: Api<BulkUpgrade> = t.api();
    create(&bus, bulk("outboxed", "insights", 1, 2, json!({"notifications": {"webhookSecretRef": {"name": "hook"}}})))
        .await;
    wait_state(&bus, "outboxed", BulkUpgradeState::Complete).await;
    // The receiver refuses: what was told waits in status, numbered.
    let b = wait_for(&bus, "outboxed", WAIT, "the Completed notification in the outbox", |b| {
        b.status.as_ref().is_some_and(|s| s.outbox.iter().any(|n| n.event == NotificationEvent::Completed))
    })
    .await;
    let waiting: Vec<(u32, NotificationEvent)> = status(&b).outbox.iter().map(|n| (n.id, n.event)).collect();
    let want =
        [(1, NotificationEvent::StepStarted), (2, NotificationEvent::StepCompleted), (3, NotificationEvent::Completed)];
    assert_eq!(waiting, want, "{:#?}", status(&b).outbox);
    let refused = got.lock().map(|g| g.len()).unwrap_or_default();
    assert!(refused >= 1, "the webhook was tried");
    // The operator stops before any is delivered; the webhook recovers; a new operator starts.
    drop(operator);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tried_by_the_first = got.lock().map(|g| g.len()).unwrap_or_default();
    accepting.store(true, std::sync::atomic::Ordering::SeqCst);
    let _operator = t.start_operator_on(platform).await;
    let b =
        wait_for(&bus, "outboxed", WAIT, "an empty outbox", |b| b.status.as_ref().is_some_and(|s| s.outbox.is_empty()))
            .await;
    assert_eq!(status(&b).notifications_told, 3);
    let accepted: Vec<(String, Value)> = got
        .lock()
        .map(|g| {
            g.iter()
                .filter(|(ok, _)| *ok)
                .map(|(_, b)| (b["event"].as_str().unwrap_or("").to_string(), b["time"].clone()))
                .collect()
        })
        .unwrap_or_default();
    let events: Vec<&str> = accepted.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(events, ["StepStarted", "StepCompleted", "Completed"], "each once, in order, by the new operator");
    let completed_at = status(&b).completed_at.clone().map(|t| t.0).unwrap_or_default();
    let told_at: jiff::Timestamp = accepted[2].1.as_str().and_then(|t| t.parse().ok()).unwrap_or_default();
    let late = told_at.duration_since(completed_at);
    assert!(
        late >= jiff::SignedDuration::ZERO && late <= jiff::SignedDuration::from_secs(1),
        "the time it happened ({completed_at}), not when it was delivered: {told_at}"
    );
    let before_restart = got.lock().map(|g| g[..tried_by_the_first].iter().all(|(ok, _)| !ok)).unwrap_or(false);
    assert!(before_restart, "nothing was accepted before the restart");
}

#[tokio::test]
async fn the_preview_before_the_start_matches_what_then_happens() {
    let t = TestNs::new("bulk-preview").await;
    let operator = t
        .start_operator_with(EmulatorConfig {
            task_duration: Duration::from_millis(100),
            rollout_step: Duration::from_millis(100),
            upgrade_limit: 2,
            ..Default::default()
        })
        .await;
    installed_on_major_1(&t, "insights", "dev", 5, vec![version(2, 0, &["read"])]).await;
    let bus: Api<BulkUpgrade> = t.api();
    let spec = json!({"paused": true, "steps": [{"limit": 3, "pause": {"duration": "2s"}}, {}]});
    create(&bus, bulk("previewed", "insights", 1, 2, spec)).await;
    let b = wait_for(&bus, "previewed", WAIT, "a preview", |b| b.status.as_ref().is_some_and(|s| s.preview.is_some()))
        .await;
    let p = status(&b).preview.clone().unwrap();
    assert_eq!((p.eligible, p.planned, p.rollouts, p.rollout_cap, p.pinned), (5, 5, 3, Some(2), 0), "{p:#?}");
    assert!(!p.consent_required);
    assert_eq!(p.minimum_duration_seconds, 2);
    assert_eq!(operator.platform.rollouts(APP_ID).len(), 0, "previewed, nothing started");
    patch_spec(&bus, "previewed", json!({"paused": false})).await;
    let b = wait_state(&bus, "previewed", BulkUpgradeState::Complete).await;
    let s = status(&b);
    assert_eq!((s.upgraded, s.rollouts.len() as u32), (p.planned, p.rollouts), "{s:#?}");
    let first = s.rollouts.iter().filter(|r| r.step == 1).map(|r| r.completed_at.clone().unwrap().0).max().unwrap();
    let second = s.rollouts.iter().find(|r| r.step == 2).unwrap().started_at.clone().unwrap().0;
    assert!(second.duration_since(first) >= jiff::SignedDuration::from_secs(p.minimum_duration_seconds as i64 - 1));
    assert_eq!(s.preview, Some(p), "kept as it was when the first rollout started");
}

#[tokio::test]
async fn the_operator_wide_webhook_hears_upgrades_without_their_own_in_slack_form() {
    let t = TestNs::new("bulk-notify-all").await;
    let _operator = operator_with_rollout_step(&t, Duration::from_millis(100)).await;
    installed_on_major_1(&t, "insights", "dev", 2, vec![version(2, 0, &["read"])]).await;
    let (url, got) = webhook_receiver().await;
    // The test namespace is the operator's own namespace here.
    let secret: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": forgeops::controllers::bulk_upgrade::OPERATOR_NOTIFICATIONS_SECRET},
        "stringData": {"url": url, "format": "slack"}}))
        .unwrap();
    t.api::<k8s_openapi::api::core::v1::Secret>().create(&PostParams::default(), &secret).await.unwrap();
    let bus: Api<BulkUpgrade> = t.api();
    create(&bus, bulk("plain", "insights", 1, 2, json!({}))).await;
    wait_state(&bus, "plain", BulkUpgradeState::Complete).await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let texts: Vec<String> =
            got.lock().unwrap().iter().map(|b| b["text"].as_str().unwrap_or("").to_string()).collect();
        if texts.iter().any(|t| t.starts_with(&format!("BulkUpgrade {}/plain: Completed", t_name(&bus)))) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the operator-wide webhook got {texts:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn t_name(api: &Api<BulkUpgrade>) -> String {
    api.namespace().unwrap_or_default().to_string()
}

/// Runs the `kubectl forge` plugin as a user would, with the cluster admin's kubeconfig, in `ns`.
async fn kubectl_forge(ns: &str, args: &[&str]) -> (i32, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-forge"));
    cmd.args(["-n", ns]).args(args).env("KUBECONFIG", &support::shared().kubeconfig).kill_on_drop(true);
    let out = tokio::time::timeout(WAIT, cmd.output()).await.expect("kubectl forge ended in time").expect("ran");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test]
async fn kubectl_forge_previews_shows_approves_and_watches_a_rollout_to_its_end() {
    let t = TestNs::new("kubectl-forge").await;
    let operator = operator_with_rollout_step(&t, Duration::from_millis(100)).await;
    installed_on_major_1(&t, "insights", "dev", 3, vec![version(2, 0, &["read"])]).await;
    let bus: Api<BulkUpgrade> = t.api();
    create(
        &bus,
        bulk("to-2", "insights", 1, 2, json!({"paused": true, "steps": [{"limit": 1}, {"requireApproval": true}]})),
    )
    .await;
    wait_for(&bus, "to-2", WAIT, "a preview", |b| b.status.as_ref().is_some_and(|s| s.preview.is_some())).await;
    let (code, text) = kubectl_forge(&t.name, &["preview", "to-2"]).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("eligible") && text.contains("3"), "{text}");
    let (code, text) = kubectl_forge(&t.name, &["pause", "to-2"]).await;
    assert!(code == 0 && text.contains("to-2 paused"), "{text}");
    assert!(bus.get("to-2").await.is_ok_and(|b| b.spec.paused));
    // Resume (spec.paused), then the first step runs and the second waits for approval.
    let (code, text) = kubectl_forge(&t.name, &["resume", "to-2"]).await;
    assert!(code == 0 && text.contains("resumed"), "{text}");
    wait_state(&bus, "to-2", BulkUpgradeState::AwaitingApproval).await;
    let (code, text) = kubectl_forge(&t.name, &["status", "fbu/to-2"]).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("State: AwaitingApproval (step 2 of 2)"), "{text}");
    assert!(text.contains("Next: kubectl forge approve to-2 --step 2"), "{text}");
    // Watch in the background while approving: the watch ends, with 0, when the upgrade completes.
    let ns = t.name.clone();
    let watching = tokio::spawn(async move { kubectl_forge(&ns, &["status", "bulkupgrade/to-2", "-w"]).await });
    let (code, text) = kubectl_forge(&t.name, &["approve", "to-2"]).await;
    assert!(code == 0 && text.contains("step 2 approved by"), "{text}");
    let (code, text) = watching.await.expect("the watch ran");
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("State: Complete"), "{text}");
    let b = wait_state(&bus, "to-2", BulkUpgradeState::Complete).await;
    // Approved as the user the API server knows (the admin kubeconfig's), recorded by the operator.
    let by = status(&b).approvals.first().map(|a| a.by.clone()).unwrap_or_default();
    assert_eq!(by, "admin", "the admin kubeconfig's user, from SelfSubjectReview");
    assert_eq!(status(&b).upgraded, 3);
    assert_eq!(operator.platform.rollouts(APP_ID).len(), 2, "one rollout per step");
    // The app's fleet, after a refresh the operator answered.
    let (code, text) = kubectl_forge(&t.name, &["refresh", "insights", "--timeout", "60"]).await;
    assert!(code == 0 && text.contains("read from the platform"), "{text}");
    let (code, text) = kubectl_forge(&t.name, &["status", "insights"]).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("ForgeApp") && text.contains("Fleet") && text.contains("2.0"), "{text}");
}

#[tokio::test]
async fn kubectl_forge_stop_cancels_a_running_rollout_and_a_bad_target_is_a_clear_error() {
    let t = TestNs::new("kubectl-forge-stop").await;
    let operator = operator_with_rollout_step(&t, Duration::from_secs(3)).await;
    installed_on_major_1(&t, "insights", "dev", 4, vec![version(2, 0, &["read"])]).await;
    let bus: Api<BulkUpgrade> = t.api();
    create(&bus, bulk("slow", "insights", 1, 2, json!({}))).await;
    wait_state(&bus, "slow", BulkUpgradeState::Running).await;
    let (code, text) = kubectl_forge(&t.name, &["approve", "slow"]).await;
    assert!(code == 1 && text.contains("not awaiting approval; give --step N"), "{text}");
    let (code, text) =
        kubectl_forge(&t.name, &["stop", "slow", "--reason", "errors on EU sites", "--as-name", "bob"]).await;
    assert!(code == 0 && text.contains("emergency stop asked (bob: errors on EU sites)"), "{text}");
    let b = wait_state(&bus, "slow", BulkUpgradeState::Cancelled).await;
    assert_eq!(status(&b).emergency_stop.as_ref().map(|s| s.by.as_str()), Some("bob: errors on EU sites"));
    let on_platform = operator.platform.rollouts(APP_ID);
    assert_eq!(on_platform.last().map(|r| r["status"].clone()), Some(json!("CANCELLED")), "{on_platform:#?}");
    let (code, text) = kubectl_forge(&t.name, &["status", "fbu/slow", "-w"]).await;
    assert_eq!(code, 1, "a cancelled upgrade ends the watch with 1: {text}");
    let (code, text) = kubectl_forge(&t.name, &["status", "pod/x"]).await;
    assert!(code == 1 && text.contains("give forgeapp/NAME or bulkupgrade/NAME"), "{text}");
}
