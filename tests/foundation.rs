//! End-to-end tests of the foundation against a real kube-apiserver and etcd: the CRDs, their
//! admission rules, the examples, the ForgeApp controller, and `kubectl explain`.

mod support;

use std::time::Duration;

use forgeops::api::{ForgeApp, ForgeAppStatus};
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
    Some((c.status.clone(), c.reason.clone()))
}

fn app_json(name: &str, versions: Value) -> Value {
    json!({
        "apiVersion": "forgeops.dev/v1alpha1",
        "kind": "ForgeApp",
        "metadata": {"name": name},
        "spec": {
            "appId": format!("ari:cloud:ecosystem::app/{name}"),
            "developerAccount": "dev@acme.example",
            "environments": [{"name": "production", "versions": versions}]
        }
    })
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
    let applied = forgeops::manifests::apply_path_in(&t.client, &support::repo_path("deploy/examples"), Some(&t.name))
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
    let many_envs: Vec<Value> = (0..26).map(|i| json!({"name": format!("env{i}")})).collect();
    let fapp = "ForgeApp";
    vec![
        Bad {
            kind: fapp,
            plural: "forgeapps",
            before: None,
            bad: app_json("dup", json!([version(1, 0, &[]), version(1, 0, &[])])),
            message: "Duplicate value",
        },
        Bad {
            kind: fapp,
            plural: "forgeapps",
            before: None,
            bad: app_json("zero", json!([version(0, 1, &[])])),
            message: "should be greater than or equal to 1",
        },
        Bad {
            kind: fapp,
            plural: "forgeapps",
            before: None,
            bad: json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "ForgeApp", "metadata": {"name": "envs"},
                "spec": {"appId": "a", "developerAccount": "d", "environments": many_envs}}),
            message: "must have at most 25 items",
        },
        Bad {
            kind: fapp,
            plural: "forgeapps",
            before: None,
            bad: json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "ForgeApp", "metadata": {"name": "envname"},
                "spec": {"appId": "a", "developerAccount": "d", "environments": [{"name": "Prod_1"}]}}),
            message: "should match",
        },
        Bad {
            kind: fapp,
            plural: "forgeapps",
            before: None,
            bad: app_json(
                "both",
                json!([{"major": 1, "minor": 0, "compatibility": {"required": "jira", "optional": ["jira"]}}]),
            ),
            message: "a product cannot be both required and optional",
        },
        Bad {
            kind: fapp,
            plural: "forgeapps",
            before: None,
            bad: app_json("trello", json!([{"major": 1, "minor": 0, "compatibility": {"required": "trello"}}])),
            message: "Unsupported value: \"trello\"",
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
            kind: "Installation",
            plural: "installations",
            before: None,
            bad: installation("badsite", site("not a host!")),
            message: "spec.site: Invalid value",
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
                "noconcurrency",
                json!({"appRef": {"name": "app"}, "environment": "production", "fromMajor": 1, "toMajor": 2, "maxConcurrent": 0}),
            ),
            message: "spec.maxConcurrent: Invalid value",
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
async fn forgeapp_ready_follows_the_permission_rule() {
    let t = TestNs::new("forgeapp-ready").await;
    let operator = t.start_operator().await;
    let apps: Api<ForgeApp> = t.api();
    let body = app_json(
        "insights",
        json!([
            version(1, 0, &["read:jira-work"]),
            version(1, 1, &["read:jira-work"]),
            version(2, 0, &["read:jira-work", "write:jira-work"])
        ]),
    );
    apps.create(&PostParams::default(), &serde_json::from_value(body).unwrap()).await.unwrap();

    let app =
        wait_for(&apps, "insights", WAIT, "Ready=True", |a| ready(&a.status) == Some(("True".into(), "Ready".into())))
            .await;
    let status = app.status.clone().unwrap();
    assert_eq!(status.observed_generation, app.metadata.generation);
    assert_eq!(status.environments[0].latest_version.as_deref(), Some("2.0"));
    let majors: Vec<(u32, u32)> = status.environments[0].majors.iter().map(|m| (m.major, m.latest_minor)).collect();
    assert_eq!(majors, vec![(1, 1), (2, 0)]);
    let first_transition = status.conditions[0].last_transition_time.clone();

    // A minor that adds a scope breaks the rule.
    let broken = json!({"spec": {"environments": [{"name": "production", "versions": [
        version(1, 0, &["read:jira-work"]), version(1, 1, &["read:jira-work", "admin:jira"]), version(2, 0, &["read:jira-work", "write:jira-work"])]}]}});
    apps.patch("insights", &PatchParams::default(), &Patch::Merge(&broken)).await.unwrap();
    let app = wait_for(&apps, "insights", WAIT, "Ready=False", |a| {
        ready(&a.status) == Some(("False".into(), "PermissionChangeWithoutMajor".into()))
            && a.status.as_ref().unwrap().observed_generation == a.metadata.generation
    })
    .await;
    let condition = &app.status.as_ref().unwrap().conditions[0];
    assert!(
        condition.message.contains("environment production: version 1.1 adds scope admin:jira compared with 1.0"),
        "{}",
        condition.message
    );
    assert_eq!(condition.observed_generation, app.metadata.generation);
    assert_eq!(app.metadata.generation, Some(2));

    // Fixing it makes the app Ready again, at the new generation.
    let fixed = json!({"spec": {"environments": [{"name": "production", "versions": [
        version(1, 0, &["read:jira-work"]), version(1, 1, &["read:jira-work"]), version(2, 0, &["read:jira-work", "write:jira-work"]),
        version(2, 1, &["read:jira-work", "write:jira-work"])]}]}});
    apps.patch("insights", &PatchParams::default(), &Patch::Merge(&fixed)).await.unwrap();
    let app = wait_for(&apps, "insights", WAIT, "Ready=True again", |a| {
        ready(&a.status) == Some(("True".into(), "Ready".into()))
            && a.status.as_ref().unwrap().observed_generation == Some(3)
    })
    .await;
    let status = app.status.unwrap();
    assert_eq!(status.environments[0].latest_version.as_deref(), Some("2.1"));
    assert!(status.conditions[0].last_transition_time.0 >= first_transition.0);

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
        if reasons.iter().any(|r| r == "PermissionChangeWithoutMajor") && reasons.iter().any(|r| r == "Ready") {
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
    let body = app_json("steady", json!([version(1, 0, &["read:jira-work"]), version(1, 1, &["read:jira-work"])]));
    apps.create(&PostParams::default(), &serde_json::from_value(body).unwrap()).await.unwrap();
    let first = t.start_operator().await;
    wait_for(&apps, "steady", WAIT, "Ready=True", |a| ready(&a.status).is_some_and(|(s, _)| s == "True")).await;
    assert!(first.metrics.write_requests() >= 1, "the first operator wrote the status");
    first.shutdown().await.unwrap();

    // A fresh operator lists the app and reconciles it; nothing changed, so it must not write.
    let second = t.start_operator().await;
    let reconciled = || {
        second
            .metrics
            .reconciliations
            .get_or_create(&forgeops::telemetry::ReconcileLabels { controller: "forgeapp", result: "success" })
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
            .args(["explain", "forgeapp.spec.environments.versions"])
            .output()
            .expect("running kubectl");
        let text = String::from_utf8_lossy(&out.stdout);
        if out.status.success() {
            for expected in [
                "The versions deployed in this environment",
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

    let standby = t.start_operator().await;
    let reconciled = |op: &support::RunningOperator| {
        op.metrics
            .reconciliations
            .get_or_create(&forgeops::telemetry::ReconcileLabels { controller: "forgeapp", result: "success" })
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
