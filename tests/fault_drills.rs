//! Fault drills: the control plane and the platform fail in the middle of work, and nothing is
//! lost or done twice. Each drill runs the operator binary as a process against the shared real
//! control plane and the platform emulator (loopback only), injects one fault, and checks the end
//! state on the platform itself: every site installed or upgraded exactly once, one rollout per
//! step, exact counts, and the operator still running. The drills take turns: a restarted API
//! server or a paused etcd would disturb a drill running beside it.

mod support;

use std::future::Future;
use std::time::{Duration, Instant};

use forgeops::api::{BulkUpgrade, BulkUpgradeState, ForgeApp, Installation};
use forgeops_emulator::Faults;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use support::platform::{TestPlatform, seeded};
use support::{TestNs, create};

/// One drill at a time.
static DRILL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const INSTALL_APP: &str = "ari:cloud:ecosystem::app/insights";
const BULK_APP: &str = "ari:cloud:ecosystem::app/legacy";
const CREATE_ROLLOUT: &str = "forge_cli_createAppVersionUpgradeRollout";
const INSTALL: &str = "forge_cli_installApplication";

fn installation(i: usize) -> serde_json::Value {
    json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "Installation", "metadata": {"name": format!("site-{i}")},
        "spec": {"appRef": {"name": "insights"}, "site": format!("site-{i}.atlassian.net"), "products": ["jira"]}})
}

async fn installed(insts: &Api<Installation>) -> Vec<Installation> {
    let list = insts.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default();
    list.into_iter().filter(|i| i.status.as_ref().and_then(|s| s.installed_version.as_deref()) == Some("1.0")).collect()
}

/// The platform for a drill: the install app (mirrored from the namespace, versions declared the
/// test way) and the bulk app, already installed on 1.0.0 on `bulk_sites` sites, with 2.0.0
/// deployed (same permissions, so a rollout may move them).
async fn platform(t: &TestNs, bulk_sites: usize, task: Duration) -> std::sync::Arc<TestPlatform> {
    platform_stepping(t, bulk_sites, task, Duration::from_millis(20)).await
}

/// [`platform`] whose rollouts take `step` per installation.
async fn platform_stepping(
    t: &TestNs,
    bulk_sites: usize,
    task: Duration,
    step: Duration,
) -> std::sync::Arc<TestPlatform> {
    let mut config = seeded(
        BULK_APP,
        &[("1.0.0", &["read:jira-work"]), ("2.0.0", &["read:jira-work"])],
        "legacy",
        bulk_sites,
        "1.0.0",
    );
    config.task_duration = task;
    config.rollout_step = step;
    let platform = t.start_platform(config).await;
    let apps: Api<ForgeApp> = t.api();
    create(
        &apps,
        json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "ForgeApp", "metadata": {"name": "insights"},
        "spec": {"appId": INSTALL_APP, "environments": [{"name": "production",
            "versions": [{"major": 1, "minor": 0, "compatibility": {"required": "jira"}}]}]}}),
    )
    .await;
    create(
        &apps,
        json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "ForgeApp", "metadata": {"name": "legacy"},
        "spec": {"appId": BULK_APP, "environments": ["production"]}}),
    )
    .await;
    platform
}

async fn wait_until(
    what: &str,
    timeout: Duration,
    operator: &forgeops_testenv::localcluster::KeptProcess,
    mut done: impl AsyncFnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}:\n{}", operator.log_tail());
        assert!(!operator.has_exited(), "the operator exited:\n{}", operator.log_tail());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every one of `n` sites has exactly one completed install task.
fn installed_once(platform: &TestPlatform, n: usize) {
    // Every task the platform accepted, whatever its end: a doubled request is a second task.
    let completed = platform.every_task("install");
    assert_eq!(completed, platform.completed_tasks("install"), "an install task failed (a doubled request?)");
    let not_once: Vec<_> = completed.iter().filter(|(_, c)| **c != 1).collect();
    assert_eq!(completed.len(), n, "every site was installed: {completed:?}");
    assert!(not_once.is_empty(), "sites installed more than once: {not_once:?}");
}

/// A stepped bulk upgrade of the bulk app's `sites` installations, completed: one rollout per step,
/// each installation upgraded once, exact counts.
async fn upgraded_once(
    platform: &TestPlatform,
    bus: &Api<BulkUpgrade>,
    sites: u32,
    operator: &forgeops_testenv::localcluster::KeptProcess,
) {
    wait_until("the bulk upgrade to complete", Duration::from_secs(240), operator, async || {
        let b = bus.get("to-2").await.ok();
        b.and_then(|b| b.status).and_then(|s| s.state) == Some(BulkUpgradeState::Complete)
    })
    .await;
    let rollouts = platform.rollouts(BULK_APP);
    let limits: Vec<i64> = rollouts.iter().map(|r| r["upgradeLimit"].as_i64().unwrap()).collect();
    assert_eq!(limits, vec![30, 100, 500], "exactly one rollout per step: {rollouts:#?}");
    let by = platform.upgraded_by(BULK_APP);
    assert_eq!(by.len(), sites as usize);
    let not_once: Vec<_> = by.iter().filter(|(_, r)| r.len() != 1).collect();
    assert!(not_once.is_empty(), "installations not upgraded exactly once: {not_once:?}");
    let s = bus.get("to-2").await.unwrap().status.unwrap();
    assert_eq!((s.total, s.upgraded, s.failed, s.pending, s.unprocessed), (sites, sites, 0, 0, 0));
}

async fn start_bulk_upgrade(bus: &Api<BulkUpgrade>) {
    create(
        bus,
        json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "BulkUpgrade", "metadata": {"name": "to-2"},
        "spec": {"appRef": {"name": "legacy"}, "environment": "production", "fromMajor": 1, "toMajor": 2,
            "steps": [{"limit": 30}, {"limit": 100}, {}]}}),
    )
    .await;
}

/// The drill for a control-plane fault: `fault` strikes once 40 of 200 installs were asked for,
/// and again once the second step of a stepped 300-site bulk upgrade was asked for.
async fn control_plane_drill<F, Fut>(prefix: &str, fault: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    const INSTALLS: usize = 200;
    const BULK: u32 = 300;
    let _turn = DRILL.lock().await;
    let t = TestNs::new(prefix).await;
    let platform = platform(&t, BULK as usize, Duration::from_millis(800)).await;
    let insts: Api<Installation> = t.api();
    for i in 0..INSTALLS {
        create(&insts, installation(i)).await;
    }
    let operator = t.spawn_operator_process(&platform.emulator.graphql_url(), 1);
    wait_until("40 install requests", Duration::from_secs(120), &operator, async || platform.calls(INSTALL) >= 40)
        .await;
    let struck = Instant::now();
    fault().await;
    eprintln!("{prefix}: fault over after {:?}, {} install requests so far", struck.elapsed(), platform.calls(INSTALL));
    wait_until("every site installed", Duration::from_secs(240), &operator, async || {
        installed(&insts).await.len() == INSTALLS
    })
    .await;
    installed_once(&platform, INSTALLS);
    eprintln!("{prefix}: {INSTALLS} installed {:?} after the fault struck", struck.elapsed());

    let bus: Api<BulkUpgrade> = t.api();
    start_bulk_upgrade(&bus).await;
    wait_until("the second rollout request", Duration::from_secs(120), &operator, async || {
        platform.calls(CREATE_ROLLOUT) >= 2
    })
    .await;
    fault().await;
    upgraded_once(&platform, &bus, BULK, &operator).await;
    assert!(!operator.has_exited(), "the operator is still running");
    eprintln!("{prefix}: {} rollout requests in all", platform.calls(CREATE_ROLLOUT));
}

#[tokio::test]
async fn the_api_server_restarts_during_installs_and_a_stepped_bulk_upgrade_and_nothing_repeats() {
    control_plane_drill("drill-apiserver", || support::restart_apiserver(Duration::from_secs(5))).await;
}

#[tokio::test]
async fn etcd_is_gone_for_10_s_during_installs_and_a_stepped_bulk_upgrade_and_nothing_repeats() {
    control_plane_drill("drill-etcd", || async {
        support::signal_etcd(forgeops_testenv::sys::SIGSTOP);
        tokio::time::sleep(Duration::from_secs(10)).await;
        support::signal_etcd(forgeops_testenv::sys::SIGCONT);
    })
    .await;
}

/// Platform requests the emulator received in the window `[from, to)` (epoch milliseconds).
fn requests_between(platform: &TestPlatform, from: i64, to: i64) -> usize {
    platform.emulator.requests().iter().filter(|r| r.at_ms >= from && r.at_ms < to).count()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test]
async fn platform_errors_an_outage_rate_limits_and_latency_lose_nothing_and_the_operator_backs_off() {
    const INSTALLS: usize = 300;
    const BULK: u32 = 300;
    let _turn = DRILL.lock().await;
    let t = TestNs::new("drill-platform").await;
    let platform = platform(&t, BULK as usize, Duration::from_millis(300)).await;
    let insts: Api<Installation> = t.api();
    // 20% of every request answered 500 or 503 from the start.
    platform.set_faults(Faults { error_rate: 0.2, ..Default::default() });
    for i in 0..INSTALLS {
        create(&insts, installation(i)).await;
    }
    let operator = t.spawn_operator_process(&platform.emulator.graphql_url(), 1);
    wait_until("100 sites installed through 20% errors", Duration::from_secs(180), &operator, async || {
        installed(&insts).await.len() >= 100
    })
    .await;

    // A 30 s outage: every request answered 503.
    platform.set_faults(Faults { down: true, ..Default::default() });
    let down_at = now_ms();
    tokio::time::sleep(Duration::from_secs(12)).await;
    // Failures are reported per object, with the platform's reason.
    let waiting: Vec<Installation> = insts
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|i| i.status.as_ref().and_then(|s| s.installed_version.as_ref()).is_none())
        .collect();
    let reported = waiting
        .iter()
        .filter(|i| {
            support::condition(*i, "Ready").is_some_and(|(status, reason, message)| {
                status == "False" && reason == "PlatformError" && message.contains("retrying")
            })
        })
        .count();
    assert!(reported > 0, "no waiting Installation says PlatformError: {:#?}", waiting.first().map(|i| &i.status));
    tokio::time::sleep(Duration::from_secs(18)).await;
    let up_at = now_ms();
    let (first, last) =
        (requests_between(&platform, down_at, down_at + 10_000), requests_between(&platform, up_at - 10_000, up_at));
    eprintln!(
        "drill-platform: during the 30 s outage {} requests in the first 10 s, {} in the last 10 s; {reported} of {} waiting Installations said PlatformError at 12 s",
        first,
        last,
        waiting.len()
    );
    // The breaker holds requests after failures in a row; what goes out is the odd probe.
    assert!(last * 2 <= first, "the request rate did not back off during the outage: {first} then {last} per 10 s");
    assert!(last <= 30, "more than 3 requests a second at the end of a 30 s outage: {last} in 10 s");
    assert!(first < 1000, "a hot loop: {first} requests in 10 s for {} objects", waiting.len());

    // A burst of rate limiting, and 2 s of latency on every answer for 20 s; then the platform is
    // well again and every site gets installed.
    let before_slow = installed(&insts).await.len();
    platform.set_faults(Faults { rate_limit_burst: 60, latency_ms: 2000, ..Default::default() });
    tokio::time::sleep(Duration::from_secs(20)).await;
    let during_slow = installed(&insts).await.len() - before_slow;
    platform.set_faults(Faults::default());
    wait_until("every site installed after 429s and 2 s latency", Duration::from_secs(240), &operator, async || {
        installed(&insts).await.len() == INSTALLS
    })
    .await;
    eprintln!("drill-platform: {during_slow} sites installed during 20 s of 2 s latency; all {INSTALLS} installed");
    installed_once(&platform, INSTALLS);

    // A stepped bulk upgrade through 20% errors and a burst of rate limiting.
    platform.set_faults(Faults { error_rate: 0.2, rate_limit_burst: 30, ..Default::default() });
    let bus: Api<BulkUpgrade> = t.api();
    start_bulk_upgrade(&bus).await;
    upgraded_once(&platform, &bus, BULK, &operator).await;
    platform.set_faults(Faults::default());
    let log = std::fs::read_to_string(t.operator_log(1)).unwrap_or_default();
    assert!(!log.contains("panicked"), "the operator panicked:\n{}", operator.log_tail());
    eprintln!("drill-platform: {} platform requests in all", platform.emulator.requests().len());
}

/// One operator replica with leader election, as a Deployment with two replicas runs it.
struct Replica {
    process: forgeops_testenv::localcluster::KeptProcess,
    port: u16,
}

const LEASE_SECS: u64 = 4;

fn replica(t: &TestNs, url: &str, run: usize) -> Replica {
    let port = support::free_port();
    let (metrics, instance, lease) = (format!("127.0.0.1:{port}"), format!("replica-{run}"), LEASE_SECS.to_string());
    let args = ["--metrics-addr", &metrics, "--leader-elect", "--lease-duration-secs", &lease, "--instance", &instance];
    Replica { process: t.spawn_operator_process_with(url, run, "info", &args), port }
}

async fn leads(r: &Replica) -> bool {
    support::probe(r.port, "/readyz").await.is_some_and(|(code, body)| code == 200 && body.starts_with("leader"))
}

/// Waits until one of `replicas` leads, and answers which.
async fn leader_of(replicas: &[Replica], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        for (i, r) in replicas.iter().enumerate() {
            if leads(r).await {
                return i;
            }
        }
        let logs: Vec<String> = replicas.iter().map(|r| r.process.log_tail()).collect();
        assert!(Instant::now() < deadline, "no replica leads:\n{}", logs.join("\n---\n"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_leader_is_killed_twice_during_a_stepped_bulk_upgrade_and_no_step_starts_twice() {
    const BULK: u32 = 300;
    let _turn = DRILL.lock().await;
    let t = TestNs::new("drill-leader").await;
    let platform = platform_stepping(&t, BULK as usize, Duration::from_millis(300), Duration::from_millis(40)).await;
    let url = platform.emulator.graphql_url();
    let mut replicas = vec![replica(&t, &url, 0), replica(&t, &url, 1)];
    let mut leader = leader_of(&replicas, Duration::from_secs(60)).await;
    let bus: Api<BulkUpgrade> = t.api();
    start_bulk_upgrade(&bus).await;
    for kill in 1..=2 {
        // The leader dies right after it asked the platform for step `kill`'s rollout.
        wait_until(
            &format!("rollout request {kill}"),
            Duration::from_secs(120),
            &replicas[leader].process,
            async || platform.calls(CREATE_ROLLOUT) >= kill,
        )
        .await;
        support::kill_hard(&replicas[leader].process).await;
        let killed = Instant::now();
        // The killed replica comes back as a new process, as its Deployment would restart it.
        replicas[leader] = replica(&t, &url, 2 * kill + leader);
        leader = leader_of(&replicas, Duration::from_secs(30)).await;
        eprintln!(
            "drill-leader: kill {kill} after {} rollout request(s); replica {leader} led {:.2} s later",
            platform.calls(CREATE_ROLLOUT),
            killed.elapsed().as_secs_f64()
        );
    }
    upgraded_once(&platform, &bus, BULK, &replicas[leader].process).await;
    let lease: Lease = t.api::<Lease>().get(forgeops::operator::LEADER_LEASE).await.unwrap();
    let transitions = lease.spec.and_then(|s| s.lease_transitions).unwrap_or(0);
    assert!(transitions >= 3, "the leader Lease changed hands twice after its first holder: {transitions}");
    for r in &replicas {
        assert!(!r.process.has_exited(), "a replica exited:\n{}", r.process.log_tail());
    }
    eprintln!("drill-leader: {} rollout requests, Lease transitions {transitions}", platform.calls(CREATE_ROLLOUT));
}

/// A leader frozen (SIGSTOP, as a paused VM or a long GC pause would) past its Lease while a stepped
/// bulk upgrade runs: the standby takes over; when the old leader wakes it sends no platform
/// mutation (its renewal is older than the renew deadline, so it is fenced) and exits within the
/// renew deadline; each step's rollout is asked for once, counted from the emulator's request log.
#[tokio::test]
async fn a_leader_frozen_past_its_lease_sends_nothing_when_it_wakes_and_exits() {
    const BULK: u32 = 300;
    let _turn = DRILL.lock().await;
    let t = TestNs::new("drill-frozen").await;
    let platform = platform_stepping(&t, BULK as usize, Duration::from_millis(300), Duration::from_millis(40)).await;
    let url = platform.emulator.graphql_url();
    let mut replicas = vec![replica(&t, &url, 0), replica(&t, &url, 1)];
    let frozen = leader_of(&replicas, Duration::from_secs(60)).await;
    let bus: Api<BulkUpgrade> = t.api();
    start_bulk_upgrade(&bus).await;
    wait_until("the first rollout request", Duration::from_secs(120), &replicas[frozen].process, async || {
        platform.calls(CREATE_ROLLOUT) >= 1
    })
    .await;
    replicas[frozen].process.signal(forgeops_testenv::sys::SIGSTOP);
    let stopped = Instant::now();
    let others: Vec<Replica> = vec![replicas.remove(1 - frozen)];
    let old = replicas.remove(0);
    let leader = leader_of(&others, Duration::from_secs(30)).await;
    eprintln!("drill-frozen: the standby led {:.2} s after the freeze", stopped.elapsed().as_secs_f64());
    // Frozen well past its Lease, while the new leader works on.
    tokio::time::sleep(Duration::from_secs(2 * LEASE_SECS)).await;
    let mutations_before: usize = MUTATIONS.iter().map(|op| platform.calls(op)).sum();
    old.process.signal(forgeops_testenv::sys::SIGCONT);
    let woke = Instant::now();
    let deadline = forgeops::operator::renew_deadline(Duration::from_secs(LEASE_SECS)) + Duration::from_secs(2);
    while !old.process.has_exited() {
        assert!(
            woke.elapsed() < deadline,
            "the old leader did not exit after waking:
{}",
            old.process.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("drill-frozen: the old leader exited {:.2} s after waking", woke.elapsed().as_secs_f64());
    let log = old.process.log();
    assert!(log.contains("stopping at once") && !log.contains("panicked"), "{log}");
    upgraded_once(&platform, &bus, BULK, &others[leader].process).await;
    // Every mutation request on the platform's log: three rollouts, one per step, whoever sent them.
    assert_eq!(platform.calls(CREATE_ROLLOUT), 3, "a rollout asked for twice");
    let mutations_after: usize = MUTATIONS.iter().map(|op| platform.calls(op)).sum();
    eprintln!("drill-frozen: mutation requests {mutations_before} before the wake, {mutations_after} at the end");
}

/// A leader frozen (SIGSTOP) past its Lease while it installs 200 sites, then woken: the
/// standby finishes, the old leader sends nothing and exits within its renew deadline, and the
/// platform's request log shows one install request per site (requests, not only tasks).
#[tokio::test]
async fn a_leader_frozen_past_its_lease_during_200_installs_sends_no_install_twice() {
    const INSTALLS: usize = 200;
    let _turn = DRILL.lock().await;
    let t = TestNs::new("drill-frozen-installs").await;
    let platform = platform(&t, 0, Duration::from_millis(300)).await;
    let url = platform.emulator.graphql_url();
    let mut replicas = vec![replica(&t, &url, 0), replica(&t, &url, 1)];
    let frozen = leader_of(&replicas, Duration::from_secs(60)).await;
    let insts: Api<Installation> = t.api();
    for i in 0..INSTALLS {
        create(&insts, installation(i)).await;
    }
    wait_until("40 install requests", Duration::from_secs(120), &replicas[frozen].process, async || {
        platform.calls("forge_cli_installApplication") >= 40
    })
    .await;
    replicas[frozen].process.signal(forgeops_testenv::sys::SIGSTOP);
    let stopped = Instant::now();
    let others: Vec<Replica> = vec![replicas.remove(1 - frozen)];
    let old = replicas.remove(0);
    leader_of(&others, Duration::from_secs(30)).await;
    eprintln!("drill-frozen-installs: the standby led {:.2} s after the freeze", stopped.elapsed().as_secs_f64());
    tokio::time::sleep(Duration::from_secs(2 * LEASE_SECS)).await;
    let sent_by_then = platform.calls("forge_cli_installApplication");
    old.process.signal(forgeops_testenv::sys::SIGCONT);
    let woke = Instant::now();
    let deadline = forgeops::operator::renew_deadline(Duration::from_secs(LEASE_SECS)) + Duration::from_secs(2);
    while !old.process.has_exited() {
        assert!(woke.elapsed() < deadline, "the old leader did not exit after waking:\n{}", old.process.log_tail());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("drill-frozen-installs: the old leader exited {:.2} s after waking", woke.elapsed().as_secs_f64());
    wait_until("every site installed", Duration::from_secs(240), &others[0].process, async || {
        installed(&insts).await.len() == INSTALLS
    })
    .await;
    // One install request per site on the platform's own log, whoever sent it.
    let mut per_site: std::collections::BTreeMap<String, usize> = Default::default();
    for r in platform.emulator.requests() {
        if r.operation_name.as_deref() == Some("forge_cli_installApplication") {
            let input = &r.variables["input"];
            let site = input["installationContext"].as_str().unwrap_or_default().to_string();
            *per_site.entry(site).or_default() += 1;
        }
    }
    let twice: Vec<_> = per_site.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "install requests sent twice for a site: {twice:?}");
    assert_eq!(per_site.len(), INSTALLS, "one install request for each site");
    let doubled: Vec<_> = platform.every_task("install").into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(doubled.is_empty(), "a site installed twice: {doubled:?}");
    eprintln!(
        "drill-frozen-installs: {sent_by_then} install requests before the wake, {} in all, one per site",
        platform.calls("forge_cli_installApplication")
    );
}

/// A lifecycle sequence with random edits: a second ForgeApp for the same appId (a non-owner) with
/// Installations of its own, random edits of existing objects (valid and not), Installations
/// deleted mid-task, then everything deleted. The operator never exits, nothing is done on a site
/// for the non-owner (the platform's own log and tasks), and every delete finishes within a bound.
#[tokio::test]
async fn random_edits_and_deletes_mid_task_never_stop_the_operator_and_every_delete_finishes() {
    const SITES: usize = 30;
    const BOUND: Duration = Duration::from_secs(120);
    let _turn = DRILL.lock().await;
    let t = TestNs::new("drill-lifecycle").await;
    let platform = platform(&t, 0, Duration::from_millis(1500)).await;
    let operator = t.spawn_operator_process(&platform.emulator.graphql_url(), 1);
    let (apps, insts): (Api<ForgeApp>, Api<Installation>) = (t.api(), t.api());
    // The owner ("insights", created with the platform) is read first; "shadow" declares its appId.
    wait_until("the owner read", Duration::from_secs(60), &operator, async || {
        apps.get("insights").await.ok().and_then(|a| support::condition(&a, "Ready")).is_some_and(|c| c.0 == "True")
    })
    .await;
    create(
        &apps,
        json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "ForgeApp", "metadata": {"name": "shadow"},
        "spec": {"appId": INSTALL_APP, "environments": ["production"]}}),
    )
    .await;
    for i in 0..SITES {
        create(&insts, installation(i)).await;
        let shadow = json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "Installation",
            "metadata": {"name": format!("shadow-{i}")},
            "spec": {"appRef": {"name": "shadow"}, "site": format!("shadow-{i}.atlassian.net"), "products": ["jira"]}});
        create(&insts, shadow).await;
    }

    // Random edits of existing objects, from a fixed seed (so a failure can be replayed).
    let mut seed: u64 = 0x5eed_f0a9;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let installation_edits = [
        json!({"spec": {"majorVersion": 1}}),
        json!({"spec": {"majorVersion": 0}}),
        json!({"spec": {"majorVersion": 7}}),
        json!({"spec": {"deletionPolicy": "Orphan"}}),
        json!({"spec": {"deletionPolicy": "Uninstall"}}),
        json!({"spec": {"deletionPolicy": "Sometimes"}}),
        json!({"spec": {"products": ["jira", "confluence"]}}),
        json!({"spec": {"products": []}}),
        json!({"spec": {"site": "elsewhere.atlassian.net"}}),
        json!({"metadata": {"annotations": {"forgeops.dev/refresh": "now"}, "labels": {"team": "x"}}}),
    ];
    let app_edits = [
        json!({"spec": {"refreshInterval": "1s"}}),
        json!({"spec": {"refreshInterval": "soon"}}),
        json!({"spec": {"environments": ["production", "staging"]}}),
        json!({"spec": {"environments": []}}),
        json!({"spec": {"appId": "ari:cloud:ecosystem::app/another"}}),
        json!({"metadata": {"annotations": {"forgeops.dev/refresh": "again"}}}),
    ];
    let (mut accepted, mut refused) = (0, 0);
    let params = kube::api::PatchParams::default();
    for round in 0..120 {
        let result = if round % 4 == 0 {
            let name = ["insights", "shadow"][next(2)];
            apps.patch(name, &params, &kube::api::Patch::Merge(&app_edits[next(app_edits.len())])).await.map(|_| ())
        } else {
            let i = next(SITES);
            let name = if next(2) == 0 { format!("site-{i}") } else { format!("shadow-{i}") };
            let edit = &installation_edits[next(installation_edits.len())];
            insts.patch(&name, &params, &kube::api::Patch::Merge(edit)).await.map(|_| ())
        };
        if result.is_ok() {
            accepted += 1
        } else {
            refused += 1
        }
        // Deletes mid-task: a third of the owner's Installations while their installs run.
        if round % 12 == 5 {
            let _ = insts.delete(&format!("site-{}", next(SITES)), &Default::default()).await;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        assert!(!operator.has_exited(), "the operator exited:\n{}", operator.log_tail());
    }
    eprintln!("drill-lifecycle: {accepted} edits accepted, {refused} refused at admission");

    // Everything goes; each kind within the bound.
    for i in 0..SITES {
        let _ = insts.delete(&format!("site-{i}"), &Default::default()).await;
        let _ = insts.delete(&format!("shadow-{i}"), &Default::default()).await;
    }
    let _ = apps.delete("shadow", &Default::default()).await;
    let started = Instant::now();
    wait_until("every Installation and the shadow app deleted", BOUND, &operator, async || {
        insts.list(&ListParams::default()).await.is_ok_and(|l| l.items.is_empty())
            && apps.get_opt("shadow").await.is_ok_and(|a| a.is_none())
    })
    .await;
    eprintln!(
        "drill-lifecycle: every delete finished {:.1} s after the last was asked",
        started.elapsed().as_secs_f64()
    );

    // Nothing was done for the ForgeApp that does not own the app: no task on its sites, and no
    // mutation request naming one of them.
    for kind in ["install", "upgrade", "uninstall"] {
        let touched: Vec<_> = platform.every_task(kind).into_keys().filter(|h| h.starts_with("shadow-")).collect();
        assert!(touched.is_empty(), "{kind} tasks on the non-owner's sites: {touched:?}");
    }
    let state = platform.emulator.state();
    let shadow_clouds: Vec<String> = state["sites"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["hostName"].as_str().is_some_and(|h| h.starts_with("shadow-")))
        .filter_map(|s| s["cloudId"].as_str().map(String::from))
        .collect();
    assert!(!shadow_clouds.is_empty(), "the non-owner's sites exist on the platform (so they could be acted on)");
    let named: Vec<_> = platform
        .emulator
        .requests()
        .into_iter()
        .filter(|r| MUTATIONS.contains(&r.operation_name.as_deref().unwrap_or_default()))
        .filter(|r| {
            let vars = r.variables.to_string();
            shadow_clouds.iter().any(|c| vars.contains(c.as_str()))
        })
        .collect();
    assert!(named.is_empty(), "mutation requests for the non-owner's sites: {}", named.len());
    let log = operator.log();
    assert!(!log.contains("panicked"), "a panic:\n{log}");
}

/// The platform mutations the operator can send.
const MUTATIONS: [&str; 6] = [
    "forge_cli_installApplication",
    "forge_cli_upgradeApplication",
    "forge_cli_uninstallApplication",
    CREATE_ROLLOUT,
    "forge_cli_cancelAppVersionUpgradeRollout",
    "forgeops_updateAppDetails",
];

fn leader_lease(holder: &str, renewed: jiff::Timestamp) -> serde_json::Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": forgeops::operator::LEADER_LEASE},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": LEASE_SECS, "leaseTransitions": 1,
            "renewTime": MicroTime(renewed), "acquireTime": MicroTime(renewed)}})
}

/// Writes the leader Lease as a replica whose clock is off would: `holder`, renewed at `renewed`.
async fn write_leader_lease(leases: &Api<Lease>, holder: &str, renewed: jiff::Timestamp) {
    let mut lease: Lease = serde_json::from_value(leader_lease(holder, renewed)).unwrap();
    match leases.get_opt(forgeops::operator::LEADER_LEASE).await.unwrap() {
        Some(old) => {
            lease.metadata.resource_version = old.metadata.resource_version;
            leases.replace(forgeops::operator::LEADER_LEASE, &PostParams::default(), &lease).await.unwrap();
        }
        None => {
            leases.create(&PostParams::default(), &lease).await.unwrap();
        }
    }
}

/// client-go judges a Lease by when this process last saw its record change, by its own clock,
/// not by the holder's `renewTime`: a live holder whose clock runs behind keeps its Lease, and a
/// dead one whose clock ran ahead loses it one lease duration after it was first seen.
#[tokio::test]
async fn a_leader_lease_written_by_a_skewed_clock_is_judged_by_when_it_last_changed() {
    let _turn = DRILL.lock().await;
    let t = TestNs::new("drill-skew").await;
    let platform = t.start_platform(forgeops_emulator::EmulatorConfig::default()).await;
    let url = platform.emulator.graphql_url();
    let leases: Api<Lease> = t.api();
    let minute = jiff::SignedDuration::from_secs(60);

    // A live holder whose clock is a minute behind renews every second: its renewTime always looks
    // long expired, yet the replica must stand by.
    write_leader_lease(&leases, "skewed-behind", jiff::Timestamp::now() - minute).await;
    let standby = replica(&t, &url, 0);
    let renewing_until = Instant::now() + Duration::from_secs(12);
    let mut answers = 0;
    while Instant::now() < renewing_until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        write_leader_lease(&leases, "skewed-behind", jiff::Timestamp::now() - minute).await;
        if let Some((_, body)) = support::probe(standby.port, "/readyz").await {
            answers += 1;
            assert!(body.starts_with("standby") && body.contains("skewed-behind"), "took a live Lease: {body}");
        }
    }
    assert!(answers >= 8, "the replica answered /readyz {answers} times in 12 s:\n{}", standby.process.log_tail());
    let stopped = Instant::now();
    leader_of(std::slice::from_ref(&standby), Duration::from_secs(30)).await;
    let took = stopped.elapsed();
    eprintln!("drill-skew: holder 60 s behind stopped renewing; the replica led {:.2} s later", took.as_secs_f64());
    // Not before a lease duration after the last renewal it saw (at most a second before `stopped`),
    // and within a duration after seeing it, plus one look (a third) and the watches' first list.
    let lease = Duration::from_secs(LEASE_SECS);
    assert!(took + Duration::from_secs(1) >= lease, "took the Lease before it expired: {took:?}");
    assert!(took <= lease + lease / 3 + Duration::from_millis(1500), "took over after {took:?}");

    // A dead holder whose clock ran a minute ahead: its renewTime is in the future. A new replica
    // takes over one lease duration after first seeing it, not a minute later.
    support::kill_hard(&standby.process).await;
    write_leader_lease(&leases, "skewed-ahead", jiff::Timestamp::now() + minute).await;
    let started = Instant::now();
    let fresh = replica(&t, &url, 1);
    leader_of(std::slice::from_ref(&fresh), Duration::from_secs(50)).await;
    let took = started.elapsed();
    eprintln!("drill-skew: holder 60 s ahead, dead; a new replica led {:.2} s after starting", took.as_secs_f64());
    assert!(took >= lease, "took the Lease before a lease duration passed: {took:?}");
    assert!(took <= lease + lease / 3 + Duration::from_secs(3), "took over after {took:?} (start-up included)");
    let holder = leases.get(forgeops::operator::LEADER_LEASE).await.unwrap().spec.unwrap().holder_identity.unwrap();
    assert!(holder.starts_with("replica-1-"), "{holder}");
}

/// Requests the platform refused for their credentials since `from` (epoch milliseconds).
fn refused_since(platform: &TestPlatform, from: i64) -> usize {
    platform.emulator.requests().iter().filter(|r| r.at_ms >= from && r.account_id.is_none()).count()
}

#[tokio::test]
async fn credentials_rotated_and_revoked_during_a_stepped_bulk_upgrade_lose_nothing() {
    use support::platform::{CREDENTIALS_SECRET, EMAIL, TOKEN};
    const BULK: u32 = 300;
    const ROTATED: &str = "rotated-token-77a1";
    const FIXED: &str = "fixed-token-0c42";
    let _turn = DRILL.lock().await;
    let t = TestNs::new("drill-creds").await;
    // Rollouts of about 3, 10 and 17 s, so the upgrade runs while the token changes.
    let platform = platform_stepping(&t, BULK as usize, Duration::from_millis(300), Duration::from_millis(100)).await;
    let operator = t.spawn_operator_process(&platform.emulator.graphql_url(), 1);
    let bus: Api<BulkUpgrade> = t.api();
    start_bulk_upgrade(&bus).await;
    wait_until("the first rollout request", Duration::from_secs(120), &operator, async || {
        platform.calls(CREATE_ROLLOUT) >= 1
    })
    .await;

    // Rotation: the Secret gets a new token and the old one is revoked at once. The running
    // operator is refused at most for what it had in flight, then reads the Secret again.
    t.put_credentials(CREDENTIALS_SECRET, EMAIL, ROTATED).await;
    assert!(platform.emulator.add_api_token(EMAIL, ROTATED));
    let rotated_at = now_ms();
    assert!(platform.emulator.revoke_api_token(EMAIL, TOKEN));
    wait_until("the second rollout request, with the rotated token", Duration::from_secs(120), &operator, async || {
        platform.calls(CREATE_ROLLOUT) >= 2
    })
    .await;
    let refused = refused_since(&platform, rotated_at);
    eprintln!("drill-creds: rotated mid-upgrade; {refused} request(s) refused before the new token was used");
    assert!(refused <= 10, "{refused} requests refused after a rotation");

    // Revocation without a replacement while step 2 runs: a clear condition, and no more
    // platform requests with the refused token.
    let revoked_at = now_ms();
    assert!(platform.emulator.revoke_api_token(EMAIL, ROTATED));
    wait_until("a BadCredentials condition", Duration::from_secs(60), &operator, async || {
        let b = bus.get("to-2").await.unwrap();
        support::condition(&b, "Ready").is_some_and(|(s, r, _)| s == "False" && r == "BadCredentials")
    })
    .await;
    let b = bus.get("to-2").await.unwrap();
    let (_, _, message) = support::condition(&b, "Ready").unwrap();
    assert!(message.contains(CREDENTIALS_SECRET) && message.contains("apiToken"), "{message}");
    assert_eq!(
        support::condition(&b, "Stalled").map(|c| c.0).as_deref(),
        Some("True"),
        "only a fix of the Secret helps"
    );
    assert!(!b.status.as_ref().unwrap().rollouts.is_empty(), "the records are kept");
    let reported_at = now_ms();
    eprintln!(
        "drill-creds: revoked; BadCredentials reported after {} ms, {} refused request(s) so far",
        reported_at - revoked_at,
        refused_since(&platform, revoked_at)
    );
    tokio::time::sleep(Duration::from_secs(20)).await;
    let quiet = refused_since(&platform, reported_at + 1000);
    eprintln!("drill-creds: {quiet} refused request(s) in the 19 s after the report");
    assert!(quiet <= 2, "requests kept going out with a refused token: {quiet}");

    // Fixed: a new token in the Secret; the upgrade resumes by itself and ends exactly once.
    assert!(platform.emulator.add_api_token(EMAIL, FIXED));
    t.put_credentials(CREDENTIALS_SECRET, EMAIL, FIXED).await;
    let fixed = Instant::now();
    wait_until("the upgrade to resume", Duration::from_secs(90), &operator, async || {
        let b = bus.get("to-2").await.unwrap();
        support::condition(&b, "Ready").is_some_and(|(_, r, _)| r != "BadCredentials")
    })
    .await;
    eprintln!("drill-creds: resumed {:.1} s after the Secret was fixed", fixed.elapsed().as_secs_f64());
    upgraded_once(&platform, &bus, BULK, &operator).await;
    let log = std::fs::read_to_string(t.operator_log(1)).unwrap_or_default();
    for token in [TOKEN, ROTATED, FIXED] {
        assert!(!log.contains(token), "token text in the operator log");
    }
    assert!(!log.contains("panicked"), "the operator panicked:\n{}", operator.log_tail());
}
