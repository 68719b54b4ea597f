//! Safe on real sites (issue 18), against the real kube-apiserver and the emulator over HTTP: what
//! forgeops does on sites the account administers and on customers' sites, and how it keeps a
//! request from being carried out twice when its answer is lost or the object goes mid-way.

mod support;

use std::time::Duration;

use forgeops::api::{ForgeApp, Installation};
use forgeops_emulator::EmulatorConfig;
use kube::api::{Api, DeleteParams};
use serde_json::{Value, json};
use support::{TestNs, create, wait_for};

const WAIT: Duration = Duration::from_secs(60);
const APP_ID: &str = "ari:cloud:ecosystem::app/insights";

fn version(major: u32, minor: u32, scopes: &[&str]) -> Value {
    json!({"major": major, "minor": minor, "scopes": scopes, "compatibility": {"required": "jira"}})
}

fn app(versions: Value) -> Value {
    json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "ForgeApp", "metadata": {"name": "insights"},
        "spec": {"appId": APP_ID, 
                 "environments": [{"name": "production", "versions": versions}]}})
}

fn installation(name: &str, site: &str, extra: Value) -> Value {
    let mut spec = json!({"appRef": {"name": "insights"}, "site": site, "products": ["jira"]});
    spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "Installation", "metadata": {"name": name}, "spec": spec})
}

async fn wait_gone(api: &Api<Installation>, name: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    while api.get_opt(name).await.unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline, "Installation {name} was not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn deleting_during_an_install_task_waits_for_it_and_leaves_nothing_on_the_site() {
    let t = TestNs::new("delete-mid-task").await;
    // Tasks slow enough to delete the object while one runs.
    let config = EmulatorConfig { task_duration: Duration::from_secs(3), ..Default::default() };
    let operator = t.start_operator_with(config).await;
    let platform = operator.platform.clone();
    let (apps, insts): (Api<ForgeApp>, Api<Installation>) = (t.api(), t.api());
    create(&apps, app(json!([version(1, 0, &["read"])]))).await;
    wait_for(&apps, "insights", WAIT, "1.0 read", |a| a.deployed("production").len() == 1).await;
    create(&insts, installation("acme", "acme.atlassian.net", json!({}))).await;
    wait_for(&insts, "acme", WAIT, "an install task recorded", |i| i.status.as_ref().is_some_and(|s| s.task.is_some()))
        .await;

    insts.delete("acme", &DeleteParams::default()).await.unwrap();
    // Held while the task runs: the finalizer stays until it ends.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(insts.get_opt("acme").await.unwrap().is_some(), "the object went before its install task ended");
    wait_gone(&insts, "acme").await;

    assert_eq!(platform.installed_version(APP_ID, "acme.atlassian.net"), None, "the app was left on the site");
    assert_eq!(platform.every_task("install").into_iter().collect::<Vec<_>>(), [("acme.atlassian.net".into(), 1)]);
    assert_eq!(platform.every_task("uninstall").into_iter().collect::<Vec<_>>(), [("acme.atlassian.net".into(), 1)]);
    assert_eq!(platform.calls("forge_cli_installApplication"), 1);
    assert_eq!(platform.calls("forge_cli_uninstallApplication"), 1);
}

fn link_signature(url: &str) -> String {
    url.split("signature=").nth(1).unwrap_or_default().split('&').next().unwrap_or_default().to_string()
}

/// Asks the operator to read the app from the platform again (as a CI job does after `forge deploy`).
async fn refresh(apps: &Api<ForgeApp>, why: &str) {
    let ask = json!({"metadata": {"annotations": {"forgeops.dev/refresh": why}}});
    apps.patch("insights", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&ask)).await.unwrap();
}

fn reason_of(i: &Installation, type_: &str) -> (String, String, String) {
    support::condition(i, type_).unwrap_or_default()
}

#[tokio::test]
async fn on_a_customers_site_forgeops_never_installs_upgrades_or_uninstalls() {
    let t = TestNs::new("customer-site").await;
    let operator = t.start_operator().await;
    let platform = operator.platform.clone();
    let (apps, insts): (Api<ForgeApp>, Api<Installation>) = (t.api(), t.api());
    create(&apps, app(json!([version(1, 0, &["read"])]))).await;
    wait_for(&apps, "insights", WAIT, "1.0 read", |a| a.deployed("production").len() == 1).await;

    // Declared before the customer installs: the platform refuses the account there (it is not the
    // site's admin), and the Installation says to share the link instead.
    create(&insts, installation("customer", "customer.atlassian.net", json!({}))).await;
    let waiting =
        wait_for(&insts, "customer", WAIT, "CustomerSite", |i| reason_of(i, "Installed").1 == "CustomerSite").await;
    assert_eq!(waiting.status.as_ref().unwrap().site_administered, Some(false), "{waiting:#?}");
    assert!(reason_of(&waiting, "Installed").2.contains("installation link"), "{waiting:#?}");
    assert_eq!(platform.calls("forge_cli_installApplication"), 1, "one refused try, never repeated");
    assert!(platform.every_task("install").is_empty());

    // The customer's admin installs through the link: the Installation adopts it.
    let gateway = forgeops::platform::ForgeGateway::new(
        forgeops::platform::GatewayOptions {
            url: platform.emulator.graphql_url(),
            distribution: true,
            ..Default::default()
        },
        None,
    )
    .unwrap();
    let creds = forgeops::platform::Credentials::new(support::platform::EMAIL, support::platform::TOKEN, "test");
    use forgeops::platform::Platform as _;
    gateway.set_sharing(&creds, APP_ID, true, &Default::default()).await.unwrap();
    let link = gateway.generate_link(&creds, APP_ID, &["jira".to_string()]).await.unwrap();
    platform
        .emulator
        .link_install(forgeops_emulator::LinkInstallRequest {
            app_id: APP_ID.into(),
            environment: None,
            site: "customer.atlassian.net".into(),
            product: "jira".into(),
            signature: link_signature(&link.url),
            admin: support::platform::customer_admin("customer.atlassian.net"),
        })
        .unwrap();
    refresh(&apps, "after-link-install").await;
    let adopted = wait_for(&insts, "customer", WAIT, "adopted on 1.0", |i| {
        i.status.as_ref().is_some_and(|s| s.installed_version.as_deref() == Some("1.0") && s.adopted)
    })
    .await;
    assert_eq!(reason_of(&adopted, "Ready").0, "True", "{adopted:#?}");

    // A new major that asks for more: even pinned and approved in spec, forgeops does not upgrade a
    // customer's site; it says what the admin is asked for.
    let deploy = forgeops_emulator::DeployRequest {
        app_id: APP_ID.into(),
        environment: "production".into(),
        version: "2.0.0".into(),
        scopes: vec!["read".into(), "write".into()],
        egress: vec![],
        requires_license: false,
        required_products: vec!["jira".into()],
        modules: vec![],
        remotes: vec![],
        security_policies: vec![],
    };
    platform.emulator.deploy(deploy).unwrap();
    refresh(&apps, "after-deploy").await;
    let pin = json!({"spec": {"majorVersion": 2, "approvedMajor": 2}});
    insts.patch("customer", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&pin)).await.unwrap();
    let consent = wait_for(&insts, "customer", WAIT, "AwaitingAdminConsent", |i| {
        reason_of(i, "UpToDate").1 == "AwaitingAdminConsent"
            && i.status.as_ref().unwrap().observed_generation == i.metadata.generation
    })
    .await;
    let message = reason_of(&consent, "UpToDate").2;
    assert!(message.contains("scope write") && message.contains("installation link"), "{message}");
    assert_eq!(platform.calls("forge_cli_upgradeApplication"), 0, "forgeops upgraded nothing");

    // The admin updates the app themselves: the status follows.
    platform
        .emulator
        .site_upgrade(forgeops_emulator::SiteUpgradeRequest {
            app_id: APP_ID.into(),
            environment: "production".into(),
            site: "customer.atlassian.net".into(),
            product: "jira".into(),
            version: Some("2.0.0".into()),
        })
        .unwrap();
    refresh(&apps, "after-admin-update").await;
    wait_for(&insts, "customer", WAIT, "2.0 followed", |i| {
        i.status.as_ref().is_some_and(|s| s.installed_version.as_deref() == Some("2.0"))
            && reason_of(i, "UpToDate").0 == "True"
    })
    .await;

    // Deleting it (no deletionPolicy set) leaves the customer's app on their site.
    insts.delete("customer", &DeleteParams::default()).await.unwrap();
    wait_gone(&insts, "customer").await;
    assert_eq!(platform.installed_version(APP_ID, "customer.atlassian.net").as_deref(), Some("2.0"));
    assert_eq!(platform.calls("forge_cli_uninstallApplication"), 0);
    assert_eq!(platform.calls("forge_cli_upgradeApplication"), 0);
}

/// The emulator's request log: how many requests of `operation` it received.
fn sent(platform: &support::platform::TestPlatform, operation: &str) -> usize {
    platform.emulator.requests().iter().filter(|r| r.operation_name.as_deref() == Some(operation)).count()
}

fn lose_the_next_answer(platform: &support::platform::TestPlatform, operation: &str, mode: &str) {
    let faults: forgeops_emulator::Faults = serde_json::from_value(json!({
        "mutations": [{"operation": operation, "mode": mode, "count": 1}],
        // Past the operator's 10 s client timeout.
        "hangMs": 11_000,
    }))
    .unwrap();
    platform.set_faults(faults);
}

#[tokio::test]
async fn a_mutation_whose_answer_was_lost_is_confirmed_from_the_platform_and_never_sent_twice() {
    const INSTALL: &str = "forge_cli_installApplication";
    const UPGRADE: &str = "forge_cli_upgradeApplication";
    const UNINSTALL: &str = "forge_cli_uninstallApplication";
    let t = TestNs::new("lost-answers").await;
    let operator = t.start_operator().await;
    let platform = operator.platform.clone();
    let (apps, insts): (Api<ForgeApp>, Api<Installation>) = (t.api(), t.api());
    create(&apps, app(json!([version(1, 0, &["read"]), version(2, 0, &["read"])]))).await;
    wait_for(&apps, "insights", WAIT, "1.0 and 2.0 read", |a| a.deployed("production").len() == 2).await;
    let modes = ["applyThen504", "applyThenDrop", "hang"];
    let installed = |i: &Installation, v: &str| {
        i.status.as_ref().is_some_and(|s| s.installed_version.as_deref() == Some(v) && s.unconfirmed.is_none())
    };

    for (n, mode) in modes.iter().enumerate() {
        let (name, site) = (format!("lost-{n}"), format!("lost-{n}.atlassian.net"));
        // The install is carried out; its answer is lost.
        lose_the_next_answer(&platform, INSTALL, mode);
        let before = sent(&platform, INSTALL);
        create(&insts, installation(&name, &site, json!({"majorVersion": 1}))).await;
        let i = wait_for(&insts, &name, WAIT, "installed after a lost answer", |i| installed(i, "1.0")).await;
        assert_eq!(sent(&platform, INSTALL) - before, 1, "{mode}: one install request: {i:#?}");
        assert_eq!(i.status.as_ref().unwrap().site_administered, Some(true), "{mode}: installed by forgeops");
        assert!(!i.status.as_ref().unwrap().adopted, "{mode}: its own install, not adopted");

        // The upgrade to 2.0 (no new permissions) is carried out; its answer is lost.
        lose_the_next_answer(&platform, UPGRADE, mode);
        let before = sent(&platform, UPGRADE);
        let pin = json!({"spec": {"majorVersion": 2}});
        insts.patch(&name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&pin)).await.unwrap();
        wait_for(&insts, &name, WAIT, "upgraded after a lost answer", |i| installed(i, "2.0")).await;
        assert_eq!(sent(&platform, UPGRADE) - before, 1, "{mode}: one upgrade request");

        // The uninstall is carried out; its answer is lost.
        lose_the_next_answer(&platform, UNINSTALL, mode);
        let before = sent(&platform, UNINSTALL);
        insts.delete(&name, &DeleteParams::default()).await.unwrap();
        wait_gone(&insts, &name).await;
        assert_eq!(sent(&platform, UNINSTALL) - before, 1, "{mode}: one uninstall request");
        assert_eq!(platform.installed_version(APP_ID, &site), None, "{mode}: uninstalled");
    }
    // The platform's own record: one task of each kind per site, none failed.
    for kind in ["install", "upgrade", "uninstall"] {
        let tasks = platform.every_task(kind);
        assert_eq!(tasks, platform.completed_tasks(kind), "a {kind} task failed: {tasks:?}");
        assert_eq!(tasks.len(), modes.len(), "{kind}: {tasks:?}");
        assert!(tasks.values().all(|n| *n == 1), "{kind} twice on a site: {tasks:?}");
    }
}

#[tokio::test]
async fn a_major_that_only_re_categorises_egress_or_adds_a_remote_and_a_script_source_needs_consent() {
    let t = TestNs::new("egress-category").await;
    let operator = t.start_operator().await;
    let platform = operator.platform.clone();
    let (apps, insts): (Api<ForgeApp>, Api<Installation>) = (t.api(), t.api());
    let mut v1 = version(1, 0, &["read"]);
    v1["egress"] = json!(["api.example.com"]);
    create(&apps, app(json!([v1]))).await;
    create(&insts, installation("acme", "acme.atlassian.net", json!({}))).await;
    wait_for(&insts, "acme", WAIT, "installed 1.0", |i| {
        i.status.as_ref().is_some_and(|s| s.installed_version.as_deref() == Some("1.0"))
    })
    .await;
    // 2.0 reaches the same address, now as analytics: the same scopes and addresses, yet a major
    // the site admin must consent to.
    let deploy: forgeops_emulator::DeployRequest = serde_json::from_value(json!({
        "appId": APP_ID, "environment": "production", "version": "2.0.0", "scopes": ["read"],
        "egress": [{"type": "FETCH_BACKEND_SIDE", "addresses": ["api.example.com"], "category": "ANALYTICS"}],
        "requiredProducts": ["jira"],
    }))
    .unwrap();
    platform.emulator.deploy(deploy).unwrap();
    refresh(&apps, "after-deploy").await;
    let pin = json!({"spec": {"majorVersion": 2}});
    insts.patch("acme", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&pin)).await.unwrap();
    let waiting = wait_for(&insts, "acme", WAIT, "ConsentRequired", |i| {
        reason_of(i, "UpToDate").1 == "ConsentRequired"
            && i.status.as_ref().unwrap().observed_generation == i.metadata.generation
    })
    .await;
    let message = reason_of(&waiting, "UpToDate").2;
    assert!(message.contains("egress api.example.com re-categorised from none to ANALYTICS"), "{message}");
    assert_eq!(platform.calls("forge_cli_upgradeApplication"), 0);
    // Approved: upgraded.
    let approve = json!({"spec": {"approvedMajor": 2}});
    insts.patch("acme", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&approve)).await.unwrap();
    wait_for(&insts, "acme", WAIT, "upgraded to 2.0", |i| {
        i.status.as_ref().is_some_and(|s| s.installed_version.as_deref() == Some("2.0"))
    })
    .await;
    assert_eq!(platform.calls("forge_cli_upgradeApplication"), 1);

    // 3.0 keeps the scopes and egress and adds a remote back end and a script source: also a
    // major the admin must consent to, told from what the platform returns for the version.
    let deploy: forgeops_emulator::DeployRequest = serde_json::from_value(json!({
        "appId": APP_ID, "environment": "production", "version": "3.0.0", "scopes": ["read"],
        "egress": [{"type": "FETCH_BACKEND_SIDE", "addresses": ["api.example.com"], "category": "ANALYTICS"}],
        "requiredProducts": ["jira"],
        "remotes": [{"key": "crm", "baseUrl": "https://crm.example.com"}],
        "securityPolicies": [{"type": "scripts", "policies": ["https://cdn.example.com"]}],
    }))
    .unwrap();
    platform.emulator.deploy(deploy).unwrap();
    refresh(&apps, "after-deploy-3").await;
    let pin = json!({"spec": {"majorVersion": 3}});
    insts.patch("acme", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&pin)).await.unwrap();
    let waiting = wait_for(&insts, "acme", WAIT, "ConsentRequired for 3", |i| {
        reason_of(i, "UpToDate").1 == "ConsentRequired"
            && i.status.as_ref().unwrap().observed_generation == i.metadata.generation
    })
    .await;
    let message = reason_of(&waiting, "UpToDate").2;
    assert!(message.contains("remote crm https://crm.example.com"), "{message}");
    assert!(message.contains("content security policy"), "{message}");
    assert!(message.contains("https://cdn.example.com"), "{message}");
    assert_eq!(platform.calls("forge_cli_upgradeApplication"), 1, "nothing sent without consent");
}

fn named_app(name: &str, app_id: &str, versions: Value) -> Value {
    json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "ForgeApp", "metadata": {"name": name},
        "spec": {"appId": app_id, 
                 "environments": [{"name": "production", "versions": versions}]}})
}

fn installation_of(name: &str, app: &str, site: &str, products: &[&str]) -> Value {
    json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "Installation", "metadata": {"name": name},
        "spec": {"appRef": {"name": app}, "site": site, "products": products}})
}

#[tokio::test]
async fn a_cross_product_app_goes_into_each_product_and_a_confluence_only_app_into_confluence() {
    const XPA: &str = "ari:cloud:ecosystem::app/cross-product";
    const WIKI: &str = "ari:cloud:ecosystem::app/wiki-only";
    let t = TestNs::new("products").await;
    let operator = t.start_operator().await;
    let platform = operator.platform.clone();
    let (apps, insts): (Api<ForgeApp>, Api<Installation>) = (t.api(), t.api());
    // A cross-product app (its versions require Jira and Confluence), and a single-app app whose
    // modules extend Confluence only (no required products: its product is its modules').
    let xpa = json!({"major": 2, "minor": 0, "scopes": ["read"], "compatibility": {"requiredProducts": ["jira", "confluence"]}});
    create(&apps, named_app("xpa", XPA, json!([xpa]))).await;
    let wiki = json!({"major": 2, "minor": 0, "scopes": ["read"], "compatibility": {"modules": ["confluence"]}});
    create(&apps, named_app("wiki", WIKI, json!([wiki]))).await;
    let read = wait_for(&apps, "wiki", WAIT, "2.0 read", |a| a.deployed("production").len() == 1).await;
    let compat = &read.deployed("production")[0].compatibility;
    assert!(compat.required_products.is_empty(), "{compat:?}");
    assert_eq!(compat.optional, [forgeops::api::Product::Confluence], "the modules' product, read from the platform");
    wait_for(&apps, "xpa", WAIT, "2.0 read", |a| a.deployed("production").len() == 1).await;

    // Naming only Jira is not enough for the cross-product app: the condition says what to add.
    create(&insts, installation_of("jira-only", "xpa", "half.atlassian.net", &["jira"])).await;
    let half = wait_for(&insts, "jira-only", WAIT, "IncompatibleProducts", |i| {
        reason_of(i, "Installed").1 == "IncompatibleProducts"
    })
    .await;
    assert!(reason_of(&half, "Installed").2.contains("must include confluence"), "{half:#?}");

    // With both: one installation per product, each in its own installation context.
    create(&insts, installation_of("both", "xpa", "both.atlassian.net", &["jira", "confluence"])).await;
    let both = wait_for(&insts, "both", WAIT, "Ready", |i| reason_of(i, "Ready").0 == "True").await;
    let status = both.status.clone().unwrap();
    let recorded: Vec<(String, Option<String>)> =
        status.products.iter().map(|p| (p.product.to_string(), p.installed_version.clone())).collect();
    assert_eq!(
        recorded,
        [("jira".to_string(), Some("2.0".to_string())), ("confluence".to_string(), Some("2.0".to_string()))]
    );
    let on_platform = platform.installed_products(XPA, "both.atlassian.net");
    assert_eq!(on_platform.keys().cloned().collect::<Vec<_>>(), ["confluence", "jira"], "{on_platform:?}");
    let contexts: std::collections::BTreeSet<&String> = on_platform.values().map(|(c, _)| c).collect();
    assert_eq!(contexts.len(), 2, "two installation contexts: {on_platform:?}");
    let ids: std::collections::BTreeSet<Option<String>> =
        status.products.iter().map(|p| p.installation_id.clone()).collect();
    assert_eq!(ids.len(), 2, "two platform installations: {status:#?}");
    assert!(ids.iter().all(Option::is_some));
    assert_eq!(platform.every_task("install").get("both.atlassian.net"), Some(&2), "one install per product");

    // The Confluence-only app: installed into Confluence; refused, with the reason, on Jira.
    create(&insts, installation_of("wiki", "wiki", "wiki.atlassian.net", &["confluence"])).await;
    wait_for(&insts, "wiki", WAIT, "Ready", |i| reason_of(i, "Ready").0 == "True").await;
    let on_platform = platform.installed_products(WIKI, "wiki.atlassian.net");
    assert_eq!(on_platform.keys().cloned().collect::<Vec<_>>(), ["confluence"], "{on_platform:?}");
    create(&insts, installation_of("wiki-on-jira", "wiki", "wrong.atlassian.net", &["jira"])).await;
    let wrong = wait_for(&insts, "wiki-on-jira", WAIT, "IncompatibleProducts", |i| {
        reason_of(i, "Installed").1 == "IncompatibleProducts"
    })
    .await;
    assert!(reason_of(&wrong, "Installed").2.contains("its modules extend only confluence"), "{wrong:#?}");
    assert!(!platform.every_task("install").contains_key("wrong.atlassian.net"), "nothing sent for a wrong product");
    assert!(!platform.every_task("install").contains_key("half.atlassian.net"));

    // Deleting takes the app out of both products.
    insts.delete("both", &DeleteParams::default()).await.unwrap();
    wait_gone(&insts, "both").await;
    assert!(platform.installed_products(XPA, "both.atlassian.net").is_empty());
    assert_eq!(platform.every_task("uninstall").get("both.atlassian.net"), Some(&2));
}
