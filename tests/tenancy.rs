//! Tenancy against a real kube-apiserver and the platform emulator, with the operator watching
//! every namespace as the deployment's least-privilege identity: credentials are used only where
//! they were granted (the default Secret by a Namespace label, a namespace's own Secret by a
//! RoleBinding), an app has one owner in the cluster and nothing of another namespace acts on it,
//! the owner's claim passes on when it is deleted, and a namespace deleted with its Secret
//! finishes deleting, and a stored object the operator cannot decode stops nothing. One test: an operator watching every namespace would act on the objects of
//! a second such test in the same binary.

mod support;

use std::time::{Duration, Instant};

use forgeops::api::{BulkUpgrade, DistributionPolicy, ForgeApp, Installation};
use forgeops_emulator::EmulatorConfig;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use support::platform::{EMAIL, TOKEN, declared};
use support::{TestNs, condition, create, wait_for};

const WAIT: Duration = Duration::from_secs(60);
/// The platform mutations: none may be sent for a ForgeApp that does not own its app.
const MUTATIONS: [&str; 7] = [
    "forge_cli_installApplication",
    "forge_cli_upgradeApplication",
    "forge_cli_uninstallApplication",
    "forge_cli_createAppVersionUpgradeRollout",
    "forge_cli_cancelAppVersionUpgradeRollout",
    "forgeops_generateDistributionLink",
    "forgeops_updateAppDetails",
];

fn app(name: &str, app_id: &str, secret: Option<&str>) -> serde_json::Value {
    let mut body = json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "ForgeApp", "metadata": {"name": name},
        "spec": {"appId": format!("ari:cloud:ecosystem::app/{app_id}"), "environments": [
            {"name": "production", "versions": [
                {"major": 1, "minor": 0, "compatibility": {"required": "jira"}},
                {"major": 2, "minor": 0, "compatibility": {"required": "jira"}}]}]}});
    if let Some(secret) = secret {
        body["spec"]["credentialsSecretRef"] = json!({"name": secret});
    }
    declared(body)
}

fn installation(name: &str, app: &str, site: &str) -> serde_json::Value {
    json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "Installation", "metadata": {"name": name},
        "spec": {"appRef": {"name": app}, "site": site, "products": ["jira"], "majorVersion": 1}})
}

async fn reason_of<K>(api: &Api<K>, name: &str, type_: &str, status: &str, reason: &str) -> K
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    wait_for(api, name, WAIT, &format!("{type_}={status} ({reason})"), |o| {
        condition(o, type_).is_some_and(|(s, r, _)| s == status && r == reason)
    })
    .await
}

async fn refresh(apps: &Api<ForgeApp>, name: &str, value: &str) {
    let ask = json!({"metadata": {"annotations": {"forgeops.dev/refresh": value}}});
    apps.patch(name, &PatchParams::default(), &Patch::Merge(&ask)).await.unwrap();
}

async fn gone<K>(api: &Api<K>, name: &str, within: Duration)
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let deadline = Instant::now() + within;
    while api.get_opt(name).await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "{name} was not deleted within {within:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn mutations(platform: &support::platform::TestPlatform) -> usize {
    MUTATIONS.iter().map(|op| platform.calls(op)).sum()
}

#[tokio::test]
async fn one_tenant_cannot_act_for_another_and_every_delete_finishes() {
    let mut ops = TestNs::new("tenancy-ops").await;
    ops.watch_all = true;
    ops.credentials_grant =
        forgeops::platform::credentials::Grant::new(vec![], Some("forgeops.dev/default-credentials=granted")).unwrap();
    let platform =
        ops.start_platform(EmulatorConfig { task_duration: Duration::from_millis(100), ..Default::default() }).await;
    let operator = ops.start_operator_on(platform.clone()).await;
    let (b, c) = (TestNs::new("tenancy-b").await, TestNs::new("tenancy-c").await);
    let namespaces: Api<Namespace> = Api::all(ops.client.clone());

    // --- The default Secret: only where a cluster admin granted it. ---
    let borrower = app("borrower", "borrower", None);
    platform.mirror_app(&serde_json::from_value(borrower.clone()).unwrap());
    let b_apps: Api<ForgeApp> = b.api();
    create(&b_apps, borrower).await;
    let refused = reason_of(&b_apps, "borrower", "Ready", "False", "CredentialsNotGranted").await;
    let (_, _, message) = condition(&refused, "Stalled").unwrap();
    assert!(message.contains("spec.credentialsSecretRef") && message.contains("kubectl label namespace"), "{message}");
    let shown = serde_json::to_string(&refused.status).unwrap();
    assert!(!shown.contains(EMAIL), "the platform team's account is not shown to another namespace: {shown}");
    let label = json!({"metadata": {"labels": {"forgeops.dev/default-credentials": "granted"}}});
    namespaces.patch(&b.name, &PatchParams::default(), &Patch::Merge(&label)).await.unwrap();
    refresh(&b_apps, "borrower", "granted").await;
    reason_of(&b_apps, "borrower", "Ready", "True", "Ready").await;

    // --- A namespace's own Secret: only once the operator may read Secrets there. ---
    c.put_credentials("own", EMAIL, TOKEN).await;
    let own = app("own-secret", "own-secret", Some("own"));
    platform.mirror_app(&serde_json::from_value(own.clone()).unwrap());
    let c_apps: Api<ForgeApp> = c.api();
    create(&c_apps, own).await;
    let refused = reason_of(&c_apps, "own-secret", "Ready", "False", "CredentialsNotGranted").await;
    let message = condition(&refused, "Stalled").unwrap().2;
    assert!(message.contains("kubectl create rolebinding") && message.contains(&c.name), "{message}");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "forgeops-operator-credentials", "namespace": c.name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "forgeops-operator-credentials"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
            "name": forgeops_testenv::localcluster::OPERATOR_USER}],
    }))
    .unwrap();
    c.api::<RoleBinding>()
        .patch("forgeops-operator-credentials", &PatchParams::apply("tenancy-test"), &Patch::Apply(&binding))
        .await
        .unwrap();
    refresh(&c_apps, "own-secret", "bound").await;
    reason_of(&c_apps, "own-secret", "Ready", "True", "Ready").await;

    // --- One owner per app. ---
    let (o_apps, o_insts): (Api<ForgeApp>, Api<Installation>) = (ops.api(), ops.api());
    create(&o_apps, app("insights", "insights", None)).await;
    create(&o_insts, installation("acme", "insights", "acme.atlassian.net")).await;
    wait_for(&o_insts, "acme", WAIT, "installed", |i| condition(i, "Installed").is_some_and(|c| c.0 == "True")).await;
    let app_id = "ari:cloud:ecosystem::app/insights";
    let sent_before = mutations(&platform);

    // Namespace B declares the same app, an Installation on the owner's site, a policy that turns
    // sharing on and a bulk upgrade of every installation.
    let (b_insts, b_policies, b_upgrades): (Api<Installation>, Api<DistributionPolicy>, Api<BulkUpgrade>) =
        (b.api(), b.api(), b.api());
    create(&b_apps, app("insights", "insights", None)).await;
    let conflict = reason_of(&b_apps, "insights", "Ready", "False", "Conflict").await;
    let message = condition(&conflict, "Stalled").unwrap().2;
    assert!(message.contains(&format!("{}/insights", ops.name)), "names the owner's namespace: {message}");
    create(&b_insts, installation("acme", "insights", "acme.atlassian.net")).await;
    create(
        &b_policies,
        json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "DistributionPolicy",
        "metadata": {"name": "insights"}, "spec": {"appRef": {"name": "insights"},
        "sharing": "Enabled", "products": ["jira"]}}),
    )
    .await;
    create(
        &b_upgrades,
        json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "BulkUpgrade",
        "metadata": {"name": "insights-1-to-2"}, "spec": {"appRef": {"name": "insights"}, "environment": "production",
        "fromMajor": 1, "toMajor": 2}}),
    )
    .await;
    let adopted = reason_of(&b_insts, "acme", "Ready", "False", "Conflict").await;
    assert_eq!(adopted.status.as_ref().and_then(|s| s.installation_id.clone()), None, "the owner's is not adopted");
    reason_of(&b_policies, "insights", "Sharing", "False", "Conflict").await;
    reason_of(&b_upgrades, "insights-1-to-2", "Stalled", "True", "Conflict").await;
    // appId is immutable: the owner cannot be turned into another app's either.
    let change = json!({"spec": {"appId": "ari:cloud:ecosystem::app/borrower"}});
    let refused = o_apps.patch("insights", &PatchParams::default(), &Patch::Merge(&change)).await.unwrap_err();
    assert!(refused.to_string().contains("immutable"), "{refused}");

    // Deleting B's Installation lets go at once and leaves the owner's installation alone.
    b_insts.delete("acme", &DeleteParams::default()).await.unwrap();
    gone(&b_insts, "acme", Duration::from_secs(30)).await;
    assert_eq!(mutations(&platform), sent_before, "nothing sent for the namespace that does not own the app");
    assert_eq!(platform.installed_version(app_id, "acme.atlassian.net").as_deref(), Some("1.0"));
    assert_eq!(platform.calls("forge_cli_uninstallApplication"), 0);

    // --- The claim passes on when the owner is deleted. ---
    b_upgrades.delete("insights-1-to-2", &DeleteParams::default()).await.unwrap();
    o_insts.delete("acme", &DeleteParams::default()).await.unwrap();
    gone(&o_insts, "acme", WAIT).await;
    o_apps.delete("insights", &DeleteParams::default()).await.unwrap();
    gone(&o_apps, "insights", WAIT).await;
    refresh(&b_apps, "insights", "owner-gone").await;
    reason_of(&b_apps, "insights", "Ready", "True", "Ready").await;
    reason_of(&b_policies, "insights", "Sharing", "True", "Active").await;

    // --- A namespace deleted with its Secret finishes deleting. ---
    let c_insts: Api<Installation> = c.api();
    let initech = installation("initech", "own-secret", "initech.atlassian.net");
    platform.mirror_site(&serde_json::from_value(initech.clone()).unwrap());
    create(&c_insts, initech).await;
    wait_for(&c_insts, "initech", WAIT, "installed", |i| condition(i, "Installed").is_some_and(|c| c.0 == "True"))
        .await;
    namespaces.delete(&c.name, &DeleteParams::default()).await.unwrap();
    let bound = forgeops::rules::installation::lifecycle::DELETE_WITHOUT_CREDENTIALS + Duration::from_secs(60);
    gone(&namespaces, &c.name, bound).await;
    assert!(!operator.exited(), "the operator never exits");

    // --- A stored object the operator's types cannot decode (written under a looser schema) is
    // skipped with an Event, and its kind's watch goes on, before and after a restart. ---
    let crds: Api<CustomResourceDefinition> = Api::all(ops.client.clone());
    let minimum = "/spec/versions/0/schema/openAPIV3Schema/properties/status/properties/installedMajor/minimum";
    let loosen: json_patch::Patch = serde_json::from_value(json!([{"op": "remove", "path": minimum}])).unwrap();
    crds.patch("installations.forgeops.dev", &PatchParams::default(), &Patch::Json::<()>(loosen)).await.unwrap();
    create(&b_insts, installation("bad", "no-such-app", "bad.atlassian.net")).await;
    reason_of(&b_insts, "bad", "Ready", "False", "AppNotFound").await;
    let negative = json!({"status": {"installedMajor": -1}});
    let deadline = Instant::now() + WAIT;
    // The API server takes the looser schema a moment after the CRD changed.
    loop {
        // Written, when the answer is what the typed client cannot decode.
        let e = match b_insts.patch_status("bad", &PatchParams::default(), &Patch::Merge(&negative)).await {
            Ok(_) | Err(kube::Error::SerdeError(_)) => break,
            Err(e) => e,
        };
        assert!(Instant::now() < deadline, "the looser schema was never served: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    forgeops_testenv::localcluster::install_crds(&ops.client, &forgeops::api::all_crds()).await.unwrap();
    operator.shutdown().await.unwrap();
    let operator = ops.start_operator_on(platform.clone()).await;
    let after = installation("after", "insights", "after.atlassian.net");
    platform.mirror_site(&serde_json::from_value(after.clone()).unwrap());
    create(&b_insts, after).await;
    wait_for(&b_insts, "after", WAIT, "installed", |i| condition(i, "Installed").is_some_and(|c| c.0 == "True")).await;
    let events: Api<k8s_openapi::api::events::v1::Event> = b.api();
    let deadline = Instant::now() + WAIT;
    loop {
        let told = events.list(&Default::default()).await.unwrap().items.into_iter().find(|e| {
            e.reason.as_deref() == Some("Undecodable")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("bad")
        });
        if let Some(event) = told {
            let note = event.note.unwrap_or_default();
            assert!(note.contains("cannot read this Installation") && note.contains("installedMajor"), "{note}");
            break;
        }
        assert!(Instant::now() < deadline, "no Event told about the undecodable object");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let bad = b_insts.get_opt("bad").await;
    assert!(bad.is_err(), "the object really does not decode (the test's own typed read fails too)");
    assert!(!operator.exited());
}
