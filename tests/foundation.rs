//! End-to-end tests of the foundation against a real kube-apiserver and etcd: the CRDs, their
//! admission rules, the examples, the ForgeApp controller, and `kubectl explain`.

mod support;

use std::time::Duration;

use forgeops::api::{ForgeApp, ForgeAppStatus};
use forgeops_emulator::DeployRequest;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use kube::discovery::ApiResource;
use serde_json::{Value, json};
use support::{TestNs, shared, wait_for};

const WAIT: Duration = Duration::from_secs(30);

fn ready(status: &Option<ForgeAppStatus>) -> Option<(String, String)> {
    let c = status.as_ref()?.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some((c.status.to_string(), c.reason.to_string()))
}

/// A ForgeApp whose production environment has `versions` deployed on the platform (the test
/// platform deploys them; see `support::platform::declared`).
fn app_json(name: &str, versions: Value) -> Value {
    support::platform::declared(json!({
        "apiVersion": "forgeops.dev/v1alpha1",
        "kind": "ForgeApp",
        "metadata": {"name": name},
        "spec": {
            "appId": format!("ari:cloud:ecosystem::app/{name}"),
            "environments": [{"name": "production", "versions": versions}]
        }
    }))
}

/// A ForgeApp with `spec` merged into a valid one, for admission cases.
fn fapp_spec(name: &str, spec: Value) -> Value {
    let mut body = json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "ForgeApp", "metadata": {"name": name},
        "spec": {"appId": "ari:cloud:ecosystem::app/a"}});
    body["spec"].as_object_mut().unwrap().extend(spec.as_object().unwrap().clone());
    body
}

fn version(major: u32, minor: u32, scopes: &[&str]) -> Value {
    json!({"major": major, "minor": minor, "scopes": scopes, "compatibility": {"required": "jira"}})
}

fn dynamic_api(t: &TestNs, kind: &str, plural: &str) -> Api<DynamicObject> {
    let resource = ApiResource {
        group: "forgeops.dev".into(),
        version: "v1alpha1".into(),
        api_version: "forgeops.dev/v1alpha1".into(),
        kind: kind.into(),
        plural: plural.into(),
    };
    Api::namespaced_with(t.client.clone(), &t.name, &resource)
}

async fn create(api: &Api<DynamicObject>, body: Value) -> Result<DynamicObject, kube::Error> {
    api.create(&PostParams::default(), &serde_json::from_value(body).unwrap()).await
}

#[tokio::test]
async fn crds_are_established_and_the_examples_apply() {
    let t = TestNs::new("examples").await;
    let crds: Api<CustomResourceDefinition> = Api::all(t.client.clone());
    for crd in forgeops::api::all_crds() {
        let name = crd.metadata.name.unwrap();
        let live = crds.get(&name).await.unwrap();
        let conditions = live.status.unwrap().conditions.unwrap();
        assert!(conditions.iter().any(|c| c.type_ == "Established" && c.status == "True"), "{name} not Established");
        assert_eq!(live.spec.names.categories, Some(vec!["forge".to_string()]), "{name} is in the forge category");
    }
    let applied =
        forgeops_testenv::manifests::apply_path_in(&t.client, &support::repo_path("deploy/examples"), Some(&t.name))
            .await
            .expect("the examples are valid");
    for kind in ["ForgeApp", "DistributionPolicy", "Installation", "BulkUpgrade"] {
        assert!(
            applied.iter().any(|a| a.starts_with(&format!("{kind}/"))),
            "the examples include a {kind}: {applied:?}"
        );
    }
}

/// Each case: the kind, its plural, an object to create first (for update rules), the object that
/// must be rejected, and a phrase the rejection must contain.
struct Bad {
    kind: &'static str,
    plural: &'static str,
    before: Option<Value>,
    bad: Value,
    message: &'static str,
}

fn policy(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "DistributionPolicy", "metadata": {"name": name}, "spec": spec})
}

fn installation(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "Installation", "metadata": {"name": name}, "spec": spec})
}

fn bulk(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "BulkUpgrade", "metadata": {"name": name}, "spec": spec})
}

fn bad_objects() -> Vec<Bad> {
    let site = |s: &str| json!({"appRef": {"name": "app"}, "site": s, "products": ["jira"]});
    let up = |from: u32, to: u32| json!({"appRef": {"name": "app"}, "environment": "production", "fromMajor": from, "toMajor": to});
    let many_envs: Vec<Value> = (0..26).map(|i| json!(format!("env{i}"))).collect();
    let fapp = "ForgeApp";
    vec![
        Bad {
            kind: fapp,
            plural: "forgeapps",
            before: None,
            bad: fapp_spec("dup", json!({"environments": ["production", "production"]})),
            message: "Duplicate value",
        },
        Bad {
            kind: fapp,
            plural: "forgeapps",
            before: None,
            bad: fapp_spec("envs", json!({"environments": many_envs})),
            message: "must have at most 25 items",
        },
        Bad {
            kind: fapp,
            plural: "forgeapps",
            before: None,
            bad: fapp_spec("envname", json!({"environments": ["Prod_1"]})),
            message: "should match",
        },
        Bad {
            kind: fapp,
            plural: "forgeapps",
            before: None,
            bad: fapp_spec("interval", json!({"refreshInterval": "ten minutes"})),
            message: "should match",
        },
        Bad {
            kind: fapp,
            plural: "forgeapps",
            before: None,
            bad: fapp_spec("noenvs", json!({"environments": []})),
            message: "should have at least 1 items",
        },
        Bad {
            kind: "DistributionPolicy",
            plural: "distributionpolicies",
            before: None,
            bad: policy("noproducts", json!({"appRef": {"name": "app"}, "products": []})),
            message: "should have at least 1 items",
        },
        Bad {
            kind: "DistributionPolicy",
            plural: "distributionpolicies",
            before: Some(policy(
                "rotated",
                json!({"appRef": {"name": "app"}, "products": ["jira"], "linkRevision": 2}),
            )),
            bad: policy("rotated", json!({"appRef": {"name": "app"}, "products": ["jira"], "linkRevision": 1})),
            message: "linkRevision may only increase",
        },
        Bad {
            kind: "DistributionPolicy",
            plural: "distributionpolicies",
            before: Some(policy("moved", json!({"appRef": {"name": "app"}, "products": ["jira"]}))),
            bad: policy("moved", json!({"appRef": {"name": "other"}, "products": ["jira"]})),
            message: "appRef is immutable",
        },
        Bad {
            kind: "Installation",
            plural: "installations",
            before: Some(installation("site", site("acme.atlassian.net"))),
            bad: installation("site", site("other.atlassian.net")),
            message: "site is immutable",
        },
        Bad {
            kind: fapp,
            plural: "forgeapps",
            before: Some(fapp_spec("moved-app", json!({}))),
            bad: fapp_spec("moved-app", json!({"appId": "ari:cloud:ecosystem::app/another"})),
            message: "appId is immutable",
        },
        Bad {
            kind: "Installation",
            plural: "installations",
            before: None,
            bad: installation("badsite", site("not a host!")),
            message: "spec.site: Invalid value",
        },
        Bad {
            kind: "Installation",
            plural: "installations",
            before: None,
            bad: installation(
                "bitbucket",
                json!({"appRef": {"name": "app"}, "site": "bb.atlassian.net", "products": ["bitbucket"]}),
            ),
            message: "bitbucket apps install into a Bitbucket workspace, not a site",
        },
        Bad {
            kind: "Installation",
            plural: "installations",
            before: Some(installation(
                "fewer",
                json!({"appRef": {"name": "app"}, "site": "fewer.atlassian.net", "products": ["jira", "confluence"]}),
            )),
            bad: installation(
                "fewer",
                json!({"appRef": {"name": "app"}, "site": "fewer.atlassian.net", "products": ["jira"]}),
            ),
            message: "products may be added, not removed",
        },
        Bad {
            kind: "Installation",
            plural: "installations",
            before: Some(installation("env", site("env.atlassian.net"))),
            bad: installation(
                "env",
                json!({"appRef": {"name": "app"}, "environment": "staging", "site": "env.atlassian.net", "products": ["jira"]}),
            ),
            message: "environment is immutable",
        },
        Bad {
            kind: "BulkUpgrade",
            plural: "bulkupgrades",
            before: None,
            bad: bulk("backwards", up(2, 2)),
            message: "toMajor must be greater than fromMajor",
        },
        Bad {
            kind: "BulkUpgrade",
            plural: "bulkupgrades",
            before: Some(bulk("retarget", up(1, 2))),
            bad: bulk("retarget", up(1, 3)),
            message: "toMajor is immutable",
        },
        Bad {
            kind: "BulkUpgrade",
            plural: "bulkupgrades",
            before: None,
            bad: bulk(
                "overpercent",
                json!({"appRef": {"name": "app"}, "environment": "production", "fromMajor": 1, "toMajor": 2, "maxFailurePercent": 101}),
            ),
            message: "spec.maxFailurePercent: Invalid value",
        },
        // Past u32: the API server checks no integer format, so the CRD states the bound; else
        // the object would be stored and fail to decode in every watch of its kind.
        Bad {
            kind: "BulkUpgrade",
            plural: "bulkupgrades",
            before: None,
            bad: bulk(
                "huge",
                json!({"appRef": {"name": "app"}, "environment": "production", "fromMajor": 1, "toMajor": 4_294_967_296u64}),
            ),
            message: "spec.toMajor: Invalid value",
        },
        Bad {
            kind: fapp,
            plural: "forgeapps",
            before: None,
            bad: fapp_spec("notari", json!({"appId": "my-app"})),
            message: "spec.appId: Invalid value",
        },
        Bad {
            kind: "Installation",
            plural: "installations",
            before: None,
            bad: installation(
                "badref",
                json!({"appRef": {"name": "My App"}, "site": "a.atlassian.net", "products": ["jira"]}),
            ),
            message: "spec.appRef.name: Invalid value",
        },
    ]
}

#[tokio::test]
async fn admission_rejects_invalid_objects_with_a_clear_message() {
    let t = TestNs::new("admission").await;
    let cases = bad_objects();
    assert!(cases.len() >= 8);
    for case in cases {
        let api = dynamic_api(&t, case.kind, case.plural);
        let name = case.bad["metadata"]["name"].as_str().unwrap().to_string();
        let result = match case.before {
            Some(before) => {
                create(&api, before)
                    .await
                    .unwrap_or_else(|e| panic!("{} {name}: the valid original was rejected: {e}", case.kind));
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&case.bad)).await
            }
            None => create(&api, case.bad).await,
        };
        match result {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{} {name}: {status:?}", case.kind);
                assert!(
                    status.message.contains(case.message),
                    "{} {name}: expected {:?} in {:?}",
                    case.kind,
                    case.message,
                    status.message
                );
            }
            other => panic!("{} {name} should have been rejected with {:?}, got {other:?}", case.kind, case.message),
        }
    }
}

#[tokio::test]
async fn forgeapp_reports_what_the_platform_has_and_says_what_to_fix() {
    let t = TestNs::new("forgeapp-platform").await;
    let operator = t.start_operator().await;
    let apps: Api<ForgeApp> = t.api();
    let body = app_json(
        "insights",
        json!([
            version(1, 0, &["read:jira-work"]),
            version(1, 2, &["read:jira-work"]),
            version(2, 0, &["read:jira-work", "write:jira-work"])
        ]),
    );
    apps.create(&PostParams::default(), &serde_json::from_value(body).unwrap()).await.unwrap();

    let app = wait_for(&apps, "insights", WAIT, "Ready=True with 3 versions", |a| {
        ready(&a.status) == Some(("True".into(), "Ready".into())) && a.deployed("production").len() == 3
    })
    .await;
    let status = app.status.clone().unwrap();
    assert_eq!(status.observed_generation, app.metadata.generation);
    assert_eq!(status.account.as_ref().map(|a| a.name.as_str()), Some("Dev"), "the account the credentials act as");
    assert_eq!(status.environments[0].latest_version.as_deref(), Some("2.0"));
    let majors: Vec<(u32, u32)> = status.environments[0].majors.iter().map(|m| (m.major, m.latest_minor)).collect();
    assert_eq!(majors, vec![(1, 2), (2, 0)]);
    let v2 = &status.environments[0].versions[2];
    assert_eq!((v2.version.as_deref(), v2.latest), (Some("2.0.0"), true));
    assert_eq!(v2.scopes, ["read:jira-work", "write:jira-work"]);
    assert_eq!(v2.installations, Some(0));

    // A deploy is seen when a CI job asks for a refresh (the annotation), not before the interval.
    let deploy = |version: &str| DeployRequest {
        app_id: "ari:cloud:ecosystem::app/insights".into(),
        environment: "production".into(),
        version: version.into(),
        scopes: vec!["read:jira-work".into(), "write:jira-work".into()],
        egress: vec![],
        requires_license: false,
        required_products: vec!["jira".into()],
        modules: vec![],
        remotes: vec![],
        security_policies: vec![],
    };
    // Settle first: the mirror's own refresh request must be answered, and a read the operator
    // makes from a cached copy that does not show its answer yet (under load) must be over.
    wait_for(&apps, "insights", WAIT, "the mirror's refresh answered", |a| {
        let asked = a.metadata.annotations.as_ref().and_then(|m| m.get(forgeops::api::REFRESH_ANNOTATION));
        asked.is_none() || asked == a.status.as_ref().and_then(|s| s.observed_refresh.as_ref())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    operator.platform.emulator.deploy(deploy("2.1.0")).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(apps.get("insights").await.unwrap().deployed("production").len(), 3, "not read again yet");
    let ask = |value: &str| json!({"metadata": {"annotations": {"forgeops.dev/refresh": value}}});
    apps.patch("insights", &PatchParams::default(), &Patch::Merge(&ask("after-deploy-1"))).await.unwrap();
    let app = wait_for(&apps, "insights", WAIT, "2.1 seen", |a| {
        a.status.as_ref().and_then(|s| s.environments[0].latest_version.as_deref()) == Some("2.1")
    })
    .await;
    assert_eq!(app.status.unwrap().observed_refresh.as_deref(), Some("after-deploy-1"));

    // An environment the app does not have on the platform: stalled until the spec or platform changes.
    apps.patch(
        "insights",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"environments": ["production", "staging"]}})),
    )
    .await
    .unwrap();
    let app = wait_for(&apps, "insights", WAIT, "EnvironmentNotFound", |a| {
        ready(&a.status) == Some(("False".into(), "EnvironmentNotFound".into()))
            && a.status.as_ref().unwrap().observed_generation == a.metadata.generation
    })
    .await;
    let status = app.status.unwrap();
    let stalled = status.conditions.iter().find(|c| c.type_ == "Stalled").unwrap();
    assert_eq!((stalled.status.as_str(), stalled.reason.as_str()), ("True", "EnvironmentNotFound"));
    assert!(stalled.message.contains("no environment staging") && stalled.message.contains("spec.environments"));
    apps.patch("insights", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"environments": ["production"]}})))
        .await
        .unwrap();
    wait_for(&apps, "insights", WAIT, "Ready again", |a| ready(&a.status).is_some_and(|(s, _)| s == "True")).await;

    // The platform down: Reconciling, with what was last known kept; then back.
    operator.platform.set_faults(forgeops_emulator::Faults { down: true, ..Default::default() });
    apps.patch("insights", &PatchParams::default(), &Patch::Merge(&ask("while-down"))).await.unwrap();
    let app = wait_for(&apps, "insights", WAIT, "PlatformUnavailable", |a| {
        ready(&a.status) == Some(("False".into(), "PlatformUnavailable".into()))
    })
    .await;
    let status = app.status.unwrap();
    assert_eq!(status.environments[0].versions.len(), 4, "the last known versions are kept");
    let reconciling = status.conditions.iter().find(|c| c.type_ == "Reconciling").unwrap();
    assert_eq!(reconciling.status, "True");
    operator.platform.set_faults(forgeops_emulator::Faults::default());
    apps.patch("insights", &PatchParams::default(), &Patch::Merge(&ask("after-outage"))).await.unwrap();
    wait_for(&apps, "insights", WAIT, "Ready after the outage", |a| ready(&a.status).is_some_and(|(s, _)| s == "True"))
        .await;

    // The readiness changes were recorded as Events on the app.
    let events: Api<Event> = t.api();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let reasons: Vec<String> = events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("insights"))
            .filter_map(|e| e.reason)
            .collect();
        if ["EnvironmentNotFound", "PlatformUnavailable", "Ready"].iter().all(|r| reasons.iter().any(|x| x == r)) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "events not recorded: {reasons:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    operator.shutdown().await.expect("the operator shuts down cleanly");
}

#[tokio::test]
async fn reconciling_an_unchanged_forgeapp_sends_no_write() {
    let t = TestNs::new("noop").await;
    let apps: Api<ForgeApp> = t.api();
    let body = app_json("steady", json!([version(1, 0, &["read:jira-work"]), version(1, 2, &["read:jira-work"])]));
    apps.create(&PostParams::default(), &serde_json::from_value(body).unwrap()).await.unwrap();
    let first = t.start_operator().await;
    wait_for(&apps, "steady", WAIT, "Ready=True", |a| ready(&a.status).is_some_and(|(s, _)| s == "True")).await;
    assert!(first.metrics.write_requests() >= 1, "the first operator wrote the status");
    let platform = first.platform.clone();
    first.shutdown().await.unwrap();

    // A fresh operator lists the app, reads it from the same platform again and reconciles it;
    // nothing changed, so it must not write.
    let second = t.start_operator_on(platform).await;
    let reconciled = || {
        second
            .metrics
            .reconciliations
            .get_or_create(&forgeops::telemetry::ReconcileLabels {
                controller: "forgeapp",
                result: "success",
                category: "none",
            })
            .get()
    };
    let deadline = std::time::Instant::now() + WAIT;
    while reconciled() == 0 {
        assert!(std::time::Instant::now() < deadline, "the second operator never reconciled the app");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(second.metrics.encode().contains("forgeops_kube_api_requests_total{method=\"GET\"}"), "reads are counted");
    assert_eq!(
        second.metrics.write_requests(),
        0,
        "an unchanged ForgeApp was reconciled with a write:\n{}",
        second.metrics.encode()
    );
    second.shutdown().await.unwrap();
}

#[tokio::test]
async fn kubectl_explain_prints_the_field_docs() {
    let shared = shared();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let out = std::process::Command::new(&shared.kubectl)
            .arg("--kubeconfig")
            .arg(&shared.kubeconfig)
            .args(["explain", "forgeapp.status.environments.versions"])
            .output()
            .expect("running kubectl");
        let text = String::from_utf8_lossy(&out.stdout);
        if out.status.success() {
            for expected in [
                "The versions deployed, oldest first, as the platform reports them",
                "scopes",
                "The OAuth scopes the version requests",
                "egress",
                "sqlModule",
                "licensing",
                "compatibility",
            ] {
                assert!(text.contains(expected), "kubectl explain lacks {expected:?}:\n{text}");
            }
            return;
        }
        // The OpenAPI document for a new CRD is published a moment after it is Established.
        assert!(
            std::time::Instant::now() < deadline,
            "kubectl explain failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn only_the_leader_runs_the_controllers_and_a_standby_takes_over() {
    let mut t = TestNs::new("leader").await;
    t.leader_election = Some(Duration::from_secs(3));
    let apps: Api<ForgeApp> = t.api();
    let first = t.start_operator().await;
    apps.create(&PostParams::default(), &serde_json::from_value(app_json("one", json!([version(1, 0, &[])]))).unwrap())
        .await
        .unwrap();
    wait_for(&apps, "one", WAIT, "Ready", |a| ready(&a.status).is_some_and(|(s, _)| s == "True")).await;

    let standby = t.start_operator_on(first.platform.clone()).await;
    let reconciled = |op: &support::RunningOperator| {
        op.metrics
            .reconciliations
            .get_or_create(&forgeops::telemetry::ReconcileLabels {
                controller: "forgeapp",
                result: "success",
                category: "none",
            })
            .get()
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(reconciled(&standby), 0, "the standby runs no controller while the leader holds the Lease");

    first.shutdown().await.expect("the leader stops cleanly and hands over");
    apps.create(&PostParams::default(), &serde_json::from_value(app_json("two", json!([version(1, 0, &[])]))).unwrap())
        .await
        .unwrap();
    wait_for(&apps, "two", WAIT, "Ready from the new leader", |a| ready(&a.status).is_some_and(|(s, _)| s == "True"))
        .await;
    assert!(reconciled(&standby) > 0);
    standby.shutdown().await.unwrap();
}

/// Two operator processes with leader election: `/readyz` says which leads and which stands by,
/// and killing the leader (SIGKILL: no hand-over) makes the standby lead within one lease duration
/// of last seeing it renew.
#[tokio::test]
async fn killing_the_leader_process_makes_the_standby_lead_within_one_lease_duration() {
    use support::{free_port, kill_hard, probe};
    const LEASE_SECS: u64 = 4;
    let t = TestNs::new("failover").await;
    let platform = t.start_platform(forgeops_emulator::EmulatorConfig::default()).await;
    let url = platform.emulator.graphql_url();
    let ports = [free_port(), free_port()];
    let lease = LEASE_SECS.to_string();
    let spawn = |i: usize| {
        let metrics = format!("127.0.0.1:{}", ports[i]);
        let instance = format!("replica-{i}");
        t.spawn_operator_process_with(
            &url,
            i,
            "info",
            &["--metrics-addr", &metrics, "--leader-elect", "--lease-duration-secs", &lease, "--instance", &instance],
        )
    };
    let first = spawn(0);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let answer = probe(ports[0], "/readyz").await;
        if answer.as_ref().is_some_and(|(code, body)| *code == 200 && body.starts_with("leader")) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the first replica did not lead: {answer:?}\n{}",
            first.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let second = spawn(1);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let answer = probe(ports[1], "/readyz").await;
        if let Some((200, body)) = &answer
            && body.starts_with("standby")
        {
            assert!(body.contains("replica-0"), "the standby names the leader: {body}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the second replica did not stand by: {answer:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(probe(ports[0], "/healthz").await.map(|a| a.0), Some(200));
    assert_eq!(probe(ports[1], "/healthz").await.map(|a| a.0), Some(200));

    kill_hard(&first).await;
    let killed = std::time::Instant::now();
    let took_over = loop {
        let answer = probe(ports[1], "/readyz").await;
        if answer.as_ref().is_some_and(|(code, body)| *code == 200 && body.starts_with("leader")) {
            break killed.elapsed();
        }
        if let Some((_, body)) = &answer {
            assert!(body.starts_with("standby") || body.starts_with("leader"), "{body}");
        }
        assert!(killed.elapsed() < Duration::from_secs(30), "the standby never took over:\n{}", second.log_tail());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("failover: the standby led {:.2} s after the leader was killed", took_over.as_secs_f64());
    // One lease duration from when the standby last saw the leader renew (it looks every third of a
    // duration, as client-go judges expiry by its own clock), plus the time to list the watches once
    // and this probe's 50 ms.
    let seen_late = Duration::from_secs(LEASE_SECS) / 3;
    assert!(
        took_over <= Duration::from_secs(LEASE_SECS) + seen_late + Duration::from_millis(1500),
        "took over after {took_over:?}"
    );

    // The new leader reconciles.
    let apps: Api<ForgeApp> = t.api();
    support::create(
        &apps,
        json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "ForgeApp", "metadata": {"name": "after-failover"},
            "spec": {"appId": "ari:cloud:ecosystem::app/after-failover", "environments": [{"name": "production", "versions": [
                {"major": 1, "minor": 0, "scopes": [], "compatibility": {"required": "jira"}}]}]}}),
    )
    .await;
    wait_for(&apps, "after-failover", WAIT, "Ready from the new leader", |a| {
        ready(&a.status).is_some_and(|(s, _)| s == "True")
    })
    .await;
}

/// The local control plane behaves like a cluster (kube-controller-manager runs its namespace
/// controller and garbage collector): an owner's dependents are deleted with it, and a deleted
/// namespace is emptied, custom resources included, and then gone rather than `Terminating`.
#[tokio::test]
async fn a_deleted_namespace_is_gone_and_an_owners_dependents_go_with_it() {
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
    let t = TestNs::new("gone").await;
    let maps: Api<ConfigMap> = t.api();
    let owner = maps
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap())
        .await
        .unwrap();
    let dependent = json!({"metadata": {"name": "dependent", "ownerReferences": [{
        "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid.clone().unwrap()}]}});
    maps.create(&PostParams::default(), &serde_json::from_value(dependent).unwrap()).await.unwrap();
    let apps: Api<ForgeApp> = t.api();
    apps.create(&PostParams::default(), &serde_json::from_value(app_json("left-behind", json!([]))).unwrap())
        .await
        .unwrap();

    let started = std::time::Instant::now();
    maps.delete("owner", &Default::default()).await.unwrap();
    while maps.get_opt("dependent").await.unwrap().is_some() {
        assert!(started.elapsed() < WAIT, "the dependent ConfigMap was not garbage-collected in {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("dependent garbage-collected {:.1} s after its owner was deleted", started.elapsed().as_secs_f64());

    let namespaces: Api<Namespace> = Api::all(t.client.clone());
    let started = std::time::Instant::now();
    namespaces.delete(&t.name, &Default::default()).await.unwrap();
    while let Some(ns) = namespaces.get_opt(&t.name).await.unwrap() {
        assert!(
            started.elapsed() < WAIT,
            "namespace {} still there after {WAIT:?}: {:?}",
            t.name,
            ns.status.and_then(|s| s.conditions)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("namespace {} gone {:.1} s after its delete", t.name, started.elapsed().as_secs_f64());
}
