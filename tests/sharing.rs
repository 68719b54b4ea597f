//! End-to-end tests of sharing by installation link (issue 20): one policy per app, a rotation that
//! waits out a disabled spell and kills the old link, changes made in the developer console (the
//! emulator's admin API) seen and corrected or reported, what the platform says about licensing
//! and the Marketplace, refusals that stay on the policy, and deletion. Against a real
//! kube-apiserver, with the operator as its least-privilege identity on the emulator over HTTP.

mod support;

use std::time::Duration;

use forgeops::api::{DistributionPolicy, DriftChange, ForgeApp, Installation};
use forgeops_emulator::{EmulatorConfig, Faults};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};
use support::platform::TestPlatform;
use support::{TestNs, condition, create, patch_spec, signature_of, wait_condition, wait_event, wait_for};

const WAIT: Duration = Duration::from_secs(45);

fn app_id(name: &str) -> String {
    format!("ari:cloud:ecosystem::app/{name}")
}

fn version(major: u32, minor: u32) -> Value {
    json!({"major": major, "minor": minor, "scopes": ["read:jira-work"], "compatibility": {"required": "jira", "optional": ["confluence"]}})
}

fn app(name: &str, versions: Value) -> Value {
    json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "ForgeApp", "metadata": {"name": name},
        "spec": {"appId": app_id(name), "environments": [{"name": "production", "versions": versions}]}})
}

fn policy(name: &str, app: &str, extra: Value) -> Value {
    let mut spec = json!({"appRef": {"name": app}, "sharing": "Enabled", "products": ["jira"], "appDetails": {
        "vendorName": "Example Vendor", "privacyPolicy": "https://example.com/privacy",
        "termsOfService": "https://example.com/terms"}});
    spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "DistributionPolicy", "metadata": {"name": name}, "spec": spec})
}

fn link(p: &DistributionPolicy) -> Option<String> {
    p.status.as_ref().and_then(|s| s.installation_link.clone())
}

/// A customer's site with `products`, whose admin of the first product follows `link`.
fn customer_installs(
    platform: &TestPlatform,
    app: &str,
    site: &str,
    products: &[&str],
    link: &str,
) -> Result<forgeops_emulator::LinkInstallOutcome, forgeops_emulator::PlatformError> {
    let admin = format!("admin@{site}");
    let s: forgeops_emulator::SeedSite = serde_json::from_value(
        json!({"hostName": site, "products": products, "productAdmins": {products[0]: [admin.clone()]}}),
    )
    .unwrap();
    platform.emulator.add_site(s).unwrap();
    platform.emulator.link_install(forgeops_emulator::LinkInstallRequest {
        app_id: app_id(app),
        environment: None,
        site: site.into(),
        product: products[0].into(),
        signature: signature_of(link),
        admin,
    })
}

/// The app's `distributionStatus` on the platform.
fn distribution_status(platform: &TestPlatform, app: &str) -> String {
    let state = platform.emulator.state();
    let found = state["apps"].as_array().unwrap().iter().find(|a| a["id"] == app_id(app)).cloned().unwrap();
    found["distributionStatus"].as_str().unwrap().to_string()
}

/// Every distribution mutation the platform received.
fn mutations(platform: &TestPlatform) -> usize {
    platform.calls("forgeops_updateAppDetails") + platform.calls("forgeops_generateDistributionLink")
}

async fn refresh(policies: &Api<DistributionPolicy>, name: &str, value: &str) {
    let ask = json!({"metadata": {"annotations": {"forgeops.dev/refresh": value}}});
    policies.patch(name, &PatchParams::default(), &Patch::Merge(&ask)).await.unwrap();
}

async fn wait_gone(policies: &Api<DistributionPolicy>, name: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    while policies.get_opt(name).await.unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline, "policy {name} was not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn one_policy_per_app_a_rotation_while_disabled_and_console_changes_seen() {
    let t = TestNs::new("sharing-app").await;
    let operator = t.start_operator().await;
    let platform = operator.platform.clone();
    let (apps, policies): (Api<ForgeApp>, Api<DistributionPolicy>) = (t.api(), t.api());
    create(&apps, app("insights", json!([version(1, 0)]))).await;
    create(&policies, policy("insights", "insights", json!({}))).await;
    let p = wait_condition(&policies, "insights", "Sharing", "True", "Active").await;
    let first = link(&p).unwrap();
    assert_eq!(distribution_status(&platform, "insights"), "PUBLIC");
    customer_installs(&platform, "insights", "early.atlassian.net", &["jira"], &first).expect("the link admits");

    // A second policy for the same app: Conflict, and nothing sent.
    let before = mutations(&platform);
    create(&policies, policy("second", "insights", json!({"products": ["jira", "confluence"], "sharing": "Disabled"})))
        .await;
    let second = wait_condition(&policies, "second", "Ready", "False", "Conflict").await;
    assert!(condition(&second, "Ready").unwrap().2.contains("DistributionPolicy insights already governs sharing"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(mutations(&platform), before, "the conflicting policy changed nothing on the platform");
    assert_eq!(distribution_status(&platform, "insights"), "PUBLIC");
    policies.delete("second", &DeleteParams::default()).await.unwrap();

    // Disabled, then the revision raised while disabled: applied as sharing comes back.
    patch_spec(&policies, "insights", json!({"sharing": "Disabled"})).await;
    wait_condition(&policies, "insights", "Sharing", "False", "Disabled").await;
    assert_eq!(distribution_status(&platform, "insights"), "DEVELOPMENT");
    let generated = platform.calls("forgeops_generateDistributionLink");
    patch_spec(&policies, "insights", json!({"linkRevision": 2})).await;
    let p = wait_for(&policies, "insights", WAIT, "the pending rotation said", |p| {
        condition(p, "Sharing")
            .is_some_and(|c| c.2.contains("link revision 2 is generated when sharing is enabled again"))
    })
    .await;
    assert_eq!(p.status.as_ref().unwrap().link_revision, Some(1), "kept while disabled");
    wait_event(&t, "insights", "LinkRotationPending").await;
    assert_eq!(platform.calls("forgeops_generateDistributionLink"), generated);
    patch_spec(&policies, "insights", json!({"sharing": "Enabled"})).await;
    let p = wait_for(&policies, "insights", WAIT, "revision 2 active", |p| {
        p.status.as_ref().is_some_and(|s| s.link_revision == Some(2) && s.installation_link.is_some())
    })
    .await;
    let second_link = link(&p).unwrap();
    assert_ne!(second_link, first);
    wait_event(&t, "insights", "LinkRotated").await;
    assert!(
        customer_installs(&platform, "insights", "late.atlassian.net", &["jira"], &first).is_err(),
        "the old link never works again"
    );
    customer_installs(&platform, "insights", "later.atlassian.net", &["jira"], &second_link).expect("the new one does");

    // "Not sharing" in the console: seen on demand and set back (onDrift: Correct).
    platform.console(&app_id("insights"), "stopSharing", &[]).unwrap();
    assert_eq!(distribution_status(&platform, "insights"), "DEVELOPMENT");
    refresh(&policies, "insights", "after-console").await;
    let p = wait_for(&policies, "insights", WAIT, "the drift corrected", |p| {
        p.status.as_ref().and_then(|s| s.last_drift.as_ref()).is_some_and(|d| d.change == DriftChange::SharingTurnedOff)
    })
    .await;
    assert!(p.status.as_ref().unwrap().last_drift.as_ref().unwrap().corrected);
    wait_event(&t, "insights", "DriftCorrected").await;
    assert_eq!(distribution_status(&platform, "insights"), "PUBLIC");
    assert_eq!(link(&p).unwrap(), second_link, "the same link back, not an older one");

    // onDrift: Report: reported, and left as the console set it.
    patch_spec(&policies, "insights", json!({"onDrift": "Report"})).await;
    wait_for(&policies, "insights", WAIT, "the edit seen", |p| {
        p.status.as_ref().unwrap().observed_generation == p.metadata.generation
    })
    .await;
    platform.console(&app_id("insights"), "stopSharing", &[]).unwrap();
    refresh(&policies, "insights", "reported").await;
    let p = wait_condition(&policies, "insights", "Ready", "False", "Drifted").await;
    assert!(condition(&p, "Ready").unwrap().2.contains("turned off outside the cluster"), "{p:#?}");
    assert_eq!(condition(&p, "Stalled").unwrap().0, "True");
    wait_event(&t, "insights", "DriftDetected").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(distribution_status(&platform, "insights"), "DEVELOPMENT", "reported, not corrected");
}

#[tokio::test]
async fn what_the_platform_says_about_licensing_listing_and_products_is_enforced() {
    let t = TestNs::new("sharing-rules").await;
    let operator = t.start_operator().await;
    let platform = operator.platform.clone();
    let (apps, policies): (Api<ForgeApp>, Api<DistributionPolicy>) = (t.api(), t.api());

    // Licensed: the platform's requiresLicense, as the ForgeApp read it; nothing sent.
    let mut licensed = version(1, 0);
    licensed["licensing"] = json!(true);
    create(&apps, app("licensed", json!([licensed]))).await;
    create(&policies, policy("licensed", "licensed", json!({}))).await;
    let p = wait_condition(&policies, "licensed", "Ready", "False", "LicensedApp").await;
    assert!(condition(&p, "Ready").unwrap().2.contains("requiresLicense"), "{p:#?}");
    assert_eq!(distribution_status(&platform, "licensed"), "DEVELOPMENT");

    // Listed on the Marketplace: read from the platform's marketplaceApp.
    create(&apps, app("listed", json!([version(1, 0)]))).await;
    wait_for(&apps, "listed", WAIT, "read", |a| a.deployed("production").len() == 1).await;
    platform.set_listed(&app_id("listed"), true).unwrap();
    create(&policies, policy("listed", "listed", json!({}))).await;
    let p = wait_condition(&policies, "listed", "Ready", "False", "ListedOnMarketplace").await;
    assert!(p.status.as_ref().unwrap().platform.as_ref().unwrap().listed_on_marketplace);
    assert_eq!(platform.calls("forgeops_updateAppDetails"), 0, "nothing asked of a listed or licensed app");

    // App details missing: the platform's refusal names the field, on the policy.
    let mut plain = app("plain", json!([version(1, 0)]));
    plain["metadata"]["annotations"] = json!({support::platform::APP_DETAILS_ANNOTATION: "none"});
    create(&apps, plain).await;
    let mut bare = policy("plain", "plain", json!({"products": ["jira", "confluence"]}));
    bare["spec"].as_object_mut().unwrap().remove("appDetails");
    create(&policies, bare).await;
    let p = wait_condition(&policies, "plain", "Ready", "False", "DistributionRefused").await;
    let message = condition(&p, "Ready").unwrap().2;
    assert!(message.contains("vendorName"), "names the missing field: {message}");
    patch_spec(
        &policies,
        "plain",
        json!({"appDetails": {"vendorName": "Example Vendor", "privacyPolicy": "https://example.com/privacy",
            "termsOfService": "https://example.com/terms"}}),
    )
    .await;
    let p = wait_condition(&policies, "plain", "Sharing", "True", "Active").await;

    // A link for two products admits only a site with both, installed by an admin of the product.
    let both = link(&p).unwrap();
    assert!(customer_installs(&platform, "plain", "jira-only.atlassian.net", &["jira"], &both).is_err());
    customer_installs(&platform, "plain", "both.atlassian.net", &["jira", "confluence"], &both).expect("admitted");
}

#[tokio::test]
async fn a_401_on_a_distribution_operation_stays_on_the_policy() {
    let t = TestNs::new("sharing-401").await;
    let faults = Faults {
        unauthorized_operations: vec!["forgeops_getAppSharing".into(), "forgeops_updateAppDetails".into()],
        ..Default::default()
    };
    let operator = t
        .start_operator_with(EmulatorConfig { faults, task_duration: Duration::from_millis(100), ..Default::default() })
        .await;
    let (apps, policies, insts): (Api<ForgeApp>, Api<DistributionPolicy>, Api<Installation>) =
        (t.api(), t.api(), t.api());
    create(&apps, app("insights", json!([version(1, 0)]))).await;
    create(&policies, policy("insights", "insights", json!({}))).await;
    let p = wait_condition(&policies, "insights", "Ready", "False", "DistributionRefused").await;
    assert!(condition(&p, "Ready").unwrap().2.contains("HTTP 401"), "{p:#?}");
    // The app's other objects go on with the same credentials.
    for site in ["one", "two"] {
        let body = json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "Installation", "metadata": {"name": site},
            "spec": {"appRef": {"name": "insights"}, "site": format!("{site}.atlassian.net"), "products": ["jira"]}});
        create(&insts, body).await;
    }
    for site in ["one", "two"] {
        wait_for(&insts, site, WAIT, "installed", |i| condition(i, "Installed").is_some_and(|c| c.0 == "True")).await;
    }
    // Asked again, the policy is refused again, and still only the policy says so.
    refresh(&policies, "insights", "again").await;
    let refused_before = operator.platform.calls("forgeops_getAppSharing");
    wait_for(&policies, "insights", WAIT, "read again", |_| {
        operator.platform.calls("forgeops_getAppSharing") > refused_before
    })
    .await;
    let a = wait_condition(&apps, "insights", "Ready", "True", "Ready").await;
    assert!(a.status.is_some());
    assert_eq!(operator.platform.completed_tasks("install").len(), 2);
    patch_spec(
        &apps,
        "insights",
        json!({"environments": [{"name": "production", "versions": [version(1, 0), version(2, 0)]}]}),
    )
    .await;
    wait_for(&apps, "insights", WAIT, "2.0 read", |a| a.deployed("production").len() == 2).await;
    let bus: Api<forgeops::api::BulkUpgrade> = t.api();
    create(
        &bus,
        json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "BulkUpgrade", "metadata": {"name": "to-2"},
            "spec": {"appRef": {"name": "insights"}, "environment": "production", "fromMajor": 1, "toMajor": 2}}),
    )
    .await;
    wait_for(&bus, "to-2", Duration::from_secs(90), "complete", |b| {
        b.status.as_ref().and_then(|s| s.state) == Some(forgeops::api::BulkUpgradeState::Complete)
    })
    .await;
}

#[tokio::test]
async fn deleting_a_policy_keeps_or_stops_sharing_as_its_spec_says() {
    let t = TestNs::new("sharing-delete").await;
    let operator = t.start_operator().await;
    let platform = operator.platform.clone();
    let (apps, policies): (Api<ForgeApp>, Api<DistributionPolicy>) = (t.api(), t.api());
    create(&apps, app("kept", json!([version(1, 0)]))).await;
    create(&apps, app("stopped", json!([version(1, 0)]))).await;
    create(&policies, policy("kept", "kept", json!({}))).await;
    create(&policies, policy("stopped", "stopped", json!({"deletionPolicy": "StopSharing"}))).await;
    wait_condition(&policies, "kept", "Sharing", "True", "Active").await;
    let p = wait_condition(&policies, "stopped", "Sharing", "True", "Active").await;
    assert!(p.metadata.finalizers.as_ref().unwrap().iter().any(|f| f == "forgeops.dev/stop-sharing"));

    policies.delete("kept", &DeleteParams::default()).await.unwrap();
    policies.delete("stopped", &DeleteParams::default()).await.unwrap();
    wait_gone(&policies, "kept").await;
    wait_gone(&policies, "stopped").await;
    assert_eq!(distribution_status(&platform, "kept"), "PUBLIC", "Keep leaves sharing on");
    assert_eq!(distribution_status(&platform, "stopped"), "DEVELOPMENT", "StopSharing turned it off first");
}
