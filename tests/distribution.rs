//! End-to-end tests of distribution against a real kube-apiserver, with the operator's controllers
//! running as the least-privilege operator identity on the platform emulator (over HTTP).

mod support;

use std::time::Duration;

use forgeops::api::{DistributionPolicy, ForgeApp, Installation};
use forgeops_emulator::{EmulatorConfig, Faults};
use kube::api::{Api, DeleteParams};
use serde_json::{Value, json};
use support::{TestNs, condition, create, patch_spec, signature_of, wait_condition, wait_event, wait_for};

const WAIT: Duration = Duration::from_secs(45);

fn version(major: u32, minor: u32, scopes: &[&str]) -> Value {
    json!({"major": major, "minor": minor, "scopes": scopes, "compatibility": {"required": "jira", "optional": ["confluence"]}})
}

fn app(name: &str, environments: Value) -> Value {
    json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "ForgeApp", "metadata": {"name": name},
        "spec": {"appId": format!("ari:cloud:ecosystem::app/{name}"), "environments": environments}})
}

fn prod(versions: Value) -> Value {
    json!([{"name": "production", "versions": versions}])
}

fn policy(name: &str, app: &str, sharing: &str, products: &[&str]) -> Value {
    json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "DistributionPolicy", "metadata": {"name": name},
        "spec": {"appRef": {"name": app}, "sharing": sharing, "products": products}})
}

fn installation(name: &str, app: &str, site: &str, extra: Value) -> Value {
    let mut spec = json!({"appRef": {"name": app}, "site": site, "products": ["jira"]});
    spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "Installation", "metadata": {"name": name}, "spec": spec})
}

fn installed_version(i: &Installation) -> Option<String> {
    i.status.as_ref().and_then(|s| s.installed_version.clone())
}

fn link(p: &DistributionPolicy) -> Option<String> {
    p.status.as_ref().and_then(|s| s.installation_link.clone())
}

async fn wait_installed(api: &Api<Installation>, name: &str, version: &str) -> Installation {
    let i = wait_for(api, name, WAIT, &format!("installed {version}"), |i| {
        installed_version(i).as_deref() == Some(version)
            && condition(i, "Installed").is_some_and(|(s, _, _)| s == "True")
            && i.status.as_ref().unwrap().observed_generation == i.metadata.generation
    })
    .await;
    assert_eq!(condition(&i, "Ready").unwrap().0, "True", "{i:#?}");
    i
}

#[tokio::test]
async fn sharing_is_active_only_for_a_deployed_unlicensed_unlisted_app() {
    let t = TestNs::new("sharing").await;
    let _operator = t.start_operator().await;
    let (apps, policies): (Api<ForgeApp>, Api<DistributionPolicy>) = (t.api(), t.api());

    create(&policies, policy("insights", "insights", "Enabled", &["jira"])).await;
    let p = wait_condition(&policies, "insights", "Sharing", "False", "AppNotFound").await;
    assert_eq!(condition(&p, "Ready").unwrap().1, "AppNotFound");
    assert!(link(&p).is_none());

    // The app appears (watched, not polled) but has nothing deployed.
    create(&apps, app("insights", prod(json!([])))).await;
    wait_condition(&policies, "insights", "Sharing", "False", "NotDeployed").await;
    patch_spec(&apps, "insights", json!({"environments": prod(json!([version(2, 0, &["read:jira-work"])]))})).await;
    let p = wait_condition(&policies, "insights", "Sharing", "True", "Active").await;
    assert_eq!(condition(&p, "Ready").unwrap().0, "True");
    assert!(link(&p).unwrap().starts_with("https://developer.atlassian.com/console/install/insights?signature="));
    assert_eq!(p.status.as_ref().unwrap().link_revision, Some(1));
    wait_event(&t, "insights", "SharingEnabled").await;

    // Products the app does not support.
    patch_spec(&policies, "insights", json!({"products": ["jira", "bitbucket"]})).await;
    let p = wait_condition(&policies, "insights", "Ready", "False", "ProductsNotSupported").await;
    assert!(condition(&p, "Ready").unwrap().2.contains("does not support bitbucket"));
    patch_spec(&policies, "insights", json!({"products": ["confluence"]})).await;
    let p = wait_condition(&policies, "insights", "Ready", "False", "ProductsNotSupported").await;
    assert!(condition(&p, "Ready").unwrap().2.contains("must include jira"));
    patch_spec(&policies, "insights", json!({"products": ["jira", "confluence"]})).await;
    wait_condition(&policies, "insights", "Ready", "True", "Ready").await;

    // A second policy for the same app conflicts with the first.
    create(&policies, policy("second", "insights", "Enabled", &["jira"])).await;
    let second = wait_condition(&policies, "second", "Ready", "False", "Conflict").await;
    assert!(condition(&second, "Ready").unwrap().2.contains("DistributionPolicy insights already governs sharing"));
    assert!(link(&second).is_none());

    // Disabled by the user.
    create(&apps, app("quiet", prod(json!([version(1, 0, &[])])))).await;
    create(&policies, policy("quiet", "quiet", "Disabled", &["jira"])).await;
    let p = wait_condition(&policies, "quiet", "Sharing", "False", "Disabled").await;
    assert_eq!(condition(&p, "Ready").unwrap().0, "True", "disabled on purpose is not a problem");

    // A licensed app cannot be shared by link (a listed one: tests/sharing.rs).
    let mut licensed = version(1, 0, &[]);
    licensed["licensing"] = json!(true);
    create(&apps, app("licensed", prod(json!([licensed])))).await;
    create(&policies, policy("licensed", "licensed", "Enabled", &["jira"])).await;
    let p = wait_condition(&policies, "licensed", "Sharing", "False", "LicensedApp").await;
    assert!(condition(&p, "Sharing").unwrap().2.contains("share an unlicensed copy of the app instead"));
}

#[tokio::test]
async fn links_come_from_the_platform_rotate_one_way_and_follow_the_products() {
    let t = TestNs::new("links").await;
    let operator = t.start_operator().await;
    let platform = operator.platform.clone();
    let (apps, policies): (Api<ForgeApp>, Api<DistributionPolicy>) = (t.api(), t.api());
    create(&apps, app("insights", prod(json!([version(1, 0, &["read:jira-work"])])))).await;
    create(&policies, policy("insights", "insights", "Enabled", &["jira"])).await;
    let p = wait_condition(&policies, "insights", "Sharing", "True", "Active").await;
    let link1 = link(&p).unwrap();
    assert_eq!(p.status.as_ref().unwrap().link_products, ["jira"]);
    let customer = |site: &str, link: &str| {
        let s: forgeops_emulator::SeedSite = serde_json::from_value(json!({"hostName": site,
            "products": ["jira", "confluence"], "productAdmins": {"jira": ["admin@customer.example"]}}))
        .unwrap();
        platform.emulator.add_site(s).unwrap();
        platform.emulator.link_install(forgeops_emulator::LinkInstallRequest {
            app_id: "ari:cloud:ecosystem::app/insights".into(),
            environment: None,
            site: site.into(),
            product: "jira".into(),
            signature: signature_of(link),
            admin: "admin@customer.example".into(),
        })
    };
    customer("first.atlassian.net", &link1).expect("the link admits a customer");

    // Rotation: a new link from the platform; the old one admits nobody new.
    patch_spec(&policies, "insights", json!({"linkRevision": 2})).await;
    let p = wait_for(&policies, "insights", WAIT, "revision 2", |p| {
        p.status.as_ref().and_then(|s| s.link_revision) == Some(2)
    })
    .await;
    let link2 = link(&p).unwrap();
    assert_ne!(link1, link2);
    wait_event(&t, "insights", "LinkRotated").await;
    assert!(customer("second.atlassian.net", &link1).is_err(), "a rotated link admits nobody");
    customer("third.atlassian.net", &link2).expect("the current link admits");

    // Products: a new link, said in the condition and an Event.
    patch_spec(&policies, "insights", json!({"products": ["jira", "confluence"]})).await;
    let p = wait_for(&policies, "insights", WAIT, "a link for both products", |p| {
        p.status.as_ref().is_some_and(|s| s.link_products.len() == 2)
    })
    .await;
    let link3 = link(&p).unwrap();
    assert_ne!(link3, link2);
    assert!(condition(&p, "Sharing").unwrap().2.contains("a new link was issued for products"), "{p:#?}");
    wait_event(&t, "insights", "LinkRegenerated").await;

    // Re-created with revision 1, the policy keeps the platform's current link: no rotated link returns.
    policies.delete("insights", &DeleteParams::default()).await.unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while policies.get_opt("insights").await.unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline, "the policy was not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    create(&policies, policy("insights", "insights", "Enabled", &["jira", "confluence"])).await;
    let p = wait_condition(&policies, "insights", "Sharing", "True", "Active").await;
    assert_eq!(link(&p).unwrap(), link3);

    // Disabled: no link, and sharing is off on the platform.
    patch_spec(&policies, "insights", json!({"sharing": "Disabled"})).await;
    let p = wait_condition(&policies, "insights", "Sharing", "False", "Disabled").await;
    assert!(link(&p).is_none());
    let state = platform.emulator.state();
    let app =
        state["apps"].as_array().unwrap().iter().find(|a| a["id"] == "ari:cloud:ecosystem::app/insights").unwrap();
    assert_eq!(app["distributionStatus"], "DEVELOPMENT", "{app:#}");
}

#[tokio::test]
async fn without_the_distribution_capability_the_policy_says_where_to_share_by_hand() {
    let mut t = TestNs::new("no-distribution").await;
    t.distribution = false;
    let _operator = t.start_operator().await;
    let (apps, policies): (Api<ForgeApp>, Api<DistributionPolicy>) = (t.api(), t.api());
    create(&apps, app("insights", prod(json!([version(1, 0, &[])])))).await;
    create(&policies, policy("insights", "insights", "Enabled", &["jira"])).await;
    let p = wait_condition(&policies, "insights", "Ready", "False", "DistributionUnsupported").await;
    let message = condition(&p, "Ready").unwrap().2;
    assert!(message.contains("https://developer.atlassian.com/console/myapps/insights/distribution"), "{message}");
    assert!(message.contains("--platform-distribution"), "{message}");
    assert!(link(&p).is_none());
    assert_eq!(condition(&p, "Stalled").unwrap().1, "DistributionUnsupported");
}

#[tokio::test]
async fn a_customers_install_through_the_link_is_adopted_and_deletion_policy_is_honoured() {
    let t = TestNs::new("adopt").await;
    let operator = t.start_operator().await;
    let platform = operator.platform.clone();
    let (apps, insts): (Api<ForgeApp>, Api<Installation>) = (t.api(), t.api());
    create(&apps, app("insights", prod(json!([version(1, 0, &["read:jira-work"])])))).await;
    wait_for(&apps, "insights", WAIT, "1.0 read", |a| a.deployed("production").len() == 1).await;

    // A customer installs through the app's link on the platform (no Installation yet).
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
    let app_id = "ari:cloud:ecosystem::app/insights";
    use forgeops::platform::Platform as _;
    gateway.set_sharing(&creds, app_id, true, &Default::default()).await.unwrap();
    let link = gateway.generate_link(&creds, app_id, &["jira".to_string()]).await.unwrap();
    let site: forgeops_emulator::SeedSite = serde_json::from_value(json!({"hostName": "customer.atlassian.net",
        "products": ["jira"], "productAdmins": {"jira": ["admin@customer.example"]}}))
    .unwrap();
    platform.emulator.add_site(site).unwrap();
    platform
        .emulator
        .link_install(forgeops_emulator::LinkInstallRequest {
            app_id: app_id.into(),
            environment: None,
            site: "customer.atlassian.net".into(),
            product: "jira".into(),
            signature: signature_of(&link.url),
            admin: "admin@customer.example".into(),
        })
        .unwrap();

    // The Installation declared for that site adopts it instead of failing or installing again.
    create(&insts, installation("customer", "insights", "customer.atlassian.net", json!({"deletionPolicy": "Orphan"})))
        .await;
    let customer = wait_installed(&insts, "customer", "1.0").await;
    let status = customer.status.as_ref().unwrap();
    assert!(status.adopted, "{status:#?}");
    assert!(status.installation_id.is_some());
    assert_eq!(status.permissions_up_to_date, Some(true));
    wait_event(&t, "customer", "Adopted").await;
    assert_eq!(platform.calls("forge_cli_installApplication"), 0, "nothing was installed again");

    // A new minor rolls out on the platform by itself; the status follows.
    patch_spec(
        &apps,
        "insights",
        json!({"environments": prod(json!([version(1, 0, &["read:jira-work"]), version(1, 1, &["read:jira-work"])]))}),
    )
    .await;
    wait_installed(&insts, "customer", "1.1").await;
    wait_event(&t, "customer", "MinorVersionRolledOut").await;

    // deletionPolicy Orphan: the object goes, the app stays on the site.
    insts.delete("customer", &DeleteParams::default()).await.unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while insts.get_opt("customer").await.unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline, "the orphaned Installation was not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_event(&t, "customer", "Orphaned").await;
    assert_eq!(platform.installed_version(app_id, "customer.atlassian.net").as_deref(), Some("1.1"));
    assert_eq!(platform.calls("forge_cli_uninstallApplication"), 0);

    // Created again, it adopts the installation once more.
    create(&insts, installation("customer", "insights", "customer.atlassian.net", json!({}))).await;
    let again = wait_installed(&insts, "customer", "1.1").await;
    assert!(again.status.as_ref().unwrap().adopted);
}

#[tokio::test]
async fn installation_reasons_before_install() {
    let t = TestNs::new("inst-reasons").await;
    let _operator = t.start_operator().await;
    let (apps, insts): (Api<ForgeApp>, Api<Installation>) = (t.api(), t.api());

    create(&insts, installation("early", "late-app", "early.atlassian.net", json!({}))).await;
    wait_condition(&insts, "early", "Installed", "False", "AppNotFound").await;
    create(&apps, app("late-app", json!([{"name": "production", "versions": [version(1, 0, &[]), version(1, 3, &[]), version(2, 0, &[])]}, {"name": "staging"}]))).await;
    let early = wait_installed(&insts, "early", "2.0").await;
    assert_eq!(early.status.as_ref().unwrap().available_version.as_deref(), Some("2.0"));
    assert_eq!(condition(&early, "UpToDate").unwrap().1, "UpToDate");

    create(&insts, installation("staging", "late-app", "staging.atlassian.net", json!({"environment": "staging"})))
        .await;
    wait_condition(&insts, "staging", "Installed", "False", "NotDeployed").await;

    create(&insts, installation("pinned", "late-app", "pinned.atlassian.net", json!({"majorVersion": 1}))).await;
    wait_installed(&insts, "pinned", "1.3").await;

    create(&insts, installation("nine", "late-app", "nine.atlassian.net", json!({"majorVersion": 9}))).await;
    wait_condition(&insts, "nine", "Ready", "False", "VersionNotDeployed").await;

    create(&insts, installation("twin", "late-app", "early.atlassian.net", json!({}))).await;
    let twin = wait_condition(&insts, "twin", "Installed", "False", "AlreadyInstalled").await;
    assert!(condition(&twin, "Installed").unwrap().2.contains("Installation early"));

    create(
        &insts,
        installation("wrong-products", "late-app", "products.atlassian.net", json!({"products": ["confluence"]})),
    )
    .await;
    let wrong = wait_condition(&insts, "wrong-products", "Installed", "False", "IncompatibleProducts").await;
    assert!(condition(&wrong, "Installed").unwrap().2.contains("jira"));
    assert_eq!(condition(&wrong, "Stalled").unwrap().0, "True", "only a change of spec.products fixes it");
    assert_eq!(condition(&wrong, "Reconciling").unwrap().0, "False");
    let early = insts.get("early").await.unwrap();
    assert_eq!(
        (condition(&early, "Stalled").unwrap().0, condition(&early, "Reconciling").unwrap().0),
        ("False".into(), "False".into())
    );

    // A DistributionPolicy does not gate what a developer installs.
    let policies: Api<DistributionPolicy> = t.api();
    create(&policies, policy("late-app", "late-app", "Disabled", &["jira", "confluence"])).await;
    wait_condition(&policies, "late-app", "Sharing", "False", "Disabled").await;
    create(&insts, installation("by-hand", "late-app", "hand.atlassian.net", json!({}))).await;
    wait_installed(&insts, "by-hand", "2.0").await;
}

#[tokio::test]
async fn major_upgrades_need_consent_for_new_permissions_and_never_go_down() {
    let t = TestNs::new("upgrades").await;
    let _operator = t.start_operator().await;
    let (apps, insts): (Api<ForgeApp>, Api<Installation>) = (t.api(), t.api());
    create(
        &apps,
        app(
            "insights",
            prod(json!([version(1, 0, &["read"]), version(2, 0, &["read"]), version(3, 0, &["read", "write"])])),
        ),
    )
    .await;
    create(&apps, app("plain", prod(json!([version(1, 0, &["read"]), version(2, 0, &["read"])])))).await;

    create(&insts, installation("plain", "plain", "plain.atlassian.net", json!({"majorVersion": 1}))).await;
    wait_installed(&insts, "plain", "1.0").await;
    wait_condition(&insts, "plain", "UpToDate", "False", "UpgradeAvailable").await;

    create(&insts, installation("acme", "insights", "acme.atlassian.net", json!({"majorVersion": 1}))).await;
    wait_installed(&insts, "acme", "1.0").await;
    wait_condition(&insts, "acme", "UpToDate", "False", "PermissionsOutdated").await;

    patch_spec(&insts, "acme", json!({"majorVersion": 2})).await;
    wait_installed(&insts, "acme", "2.0").await;
    wait_event(&t, "acme", "Upgraded").await;

    patch_spec(&insts, "acme", json!({"majorVersion": 3})).await;
    let acme = wait_condition(&insts, "acme", "UpToDate", "False", "ConsentRequired").await;
    assert!(condition(&acme, "UpToDate").unwrap().2.contains("scope write"), "{acme:#?}");
    assert_eq!(installed_version(&acme).as_deref(), Some("2.0"), "no upgrade without consent");
    assert_eq!(condition(&acme, "Ready").unwrap().0, "True", "an outdated installation is still Ready");

    patch_spec(&insts, "acme", json!({"approvedMajor": 3})).await;
    wait_installed(&insts, "acme", "3.0").await;
    wait_condition(&insts, "acme", "UpToDate", "True", "UpToDate").await;

    patch_spec(&insts, "acme", json!({"majorVersion": 2})).await;
    let acme = wait_condition(&insts, "acme", "UpToDate", "False", "DowngradeNotAllowed").await;
    assert_eq!(installed_version(&acme).as_deref(), Some("3.0"));
    assert!(condition(&acme, "UpToDate").unwrap().2.contains("delete this Installation"), "says how");

    // A major that enables licensing needs consent even without new scopes.
    let mut paid = version(2, 0, &["read"]);
    paid["licensing"] = json!(true);
    create(&apps, app("paid", prod(json!([version(1, 0, &["read"]), paid])))).await;
    create(&insts, installation("paid", "paid", "paid.atlassian.net", json!({"majorVersion": 1}))).await;
    wait_installed(&insts, "paid", "1.0").await;
    patch_spec(&insts, "paid", json!({"majorVersion": 2})).await;
    let p = wait_condition(&insts, "paid", "UpToDate", "False", "ConsentRequired").await;
    assert!(condition(&p, "UpToDate").unwrap().2.contains("licensing"), "{p:#?}");
    assert_eq!(p.status.as_ref().unwrap().permissions_up_to_date, Some(false));
    patch_spec(&insts, "paid", json!({"approvedMajor": 2})).await;
    wait_installed(&insts, "paid", "2.0").await;

    // The ForgeApp counts installations per version.
    let insights = wait_for(&apps, "insights", WAIT, "installation counts", |a| {
        a.status.as_ref().is_some_and(|s| s.environments[0].installed_versions.iter().any(|v| v.version == "3.0"))
    })
    .await;
    assert_eq!(insights.status.unwrap().installations, Some(1));
    let ask = json!({"metadata": {"annotations": {"forgeops.dev/refresh": "count"}}});
    apps.patch("paid", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&ask)).await.unwrap();
    let paid = wait_for(&apps, "paid", WAIT, "platform counts", |a| {
        a.status.as_ref().is_some_and(|s| s.environments[0].majors.iter().any(|m| m.installations == Some(1)))
    })
    .await;
    assert_eq!(paid.status.unwrap().environments[0].majors[1].major, 2, "the platform counts per major");
}

#[tokio::test]
async fn a_failing_site_reports_platform_errors_and_recovers_when_the_fault_is_lifted() {
    let t = TestNs::new("faults").await;
    let faults = Faults { failing_sites: vec!["bad.atlassian.net".to_string()], ..Default::default() };
    let operator = t.start_operator_with(EmulatorConfig { faults, ..Default::default() }).await;
    let platform = operator.platform.clone();
    let (apps, insts): (Api<ForgeApp>, Api<Installation>) = (t.api(), t.api());
    create(&apps, app("insights", prod(json!([version(1, 0, &[])])))).await;
    for site in ["good1", "bad", "good2"] {
        create(&insts, installation(site, "insights", &format!("{site}.atlassian.net"), json!({}))).await;
    }
    wait_installed(&insts, "good1", "1.0").await;
    wait_installed(&insts, "good2", "1.0").await;
    let bad = wait_condition(&insts, "bad", "Installed", "False", "PlatformError").await;
    assert!(condition(&bad, "Installed").unwrap().2.contains("failed on the platform"), "{bad:#?}");
    assert_eq!(condition(&bad, "Ready").unwrap().1, "PlatformError");
    assert_eq!(condition(&bad, "Reconciling").unwrap().0, "True", "retried with backoff: in progress");
    // The reconcile metrics carry the category.
    operator.wait_metric(r#"controller="installation",result="error",category="platform_retryable""#, WAIT).await;

    platform.set_faults(Faults::default());
    wait_installed(&insts, "bad", "1.0").await;
    // The failing site's failed tasks were retried; each site ends with one install done.
    let installs = platform.completed_tasks("install");
    assert_eq!(installs.len(), 3, "{installs:?}");
    assert!(installs.values().all(|n| *n == 1), "each site installed once: {installs:?}");
}

#[tokio::test]
async fn deleting_uninstalls_first_and_an_app_waits_for_its_installations() {
    let t = TestNs::new("deletion").await;
    let operator = t.start_operator().await;
    let platform = operator.platform.clone();
    let (apps, insts): (Api<ForgeApp>, Api<Installation>) = (t.api(), t.api());
    create(&apps, app("insights", prod(json!([version(1, 0, &[])])))).await;
    create(&insts, installation("acme", "insights", "acme.atlassian.net", json!({}))).await;
    wait_installed(&insts, "acme", "1.0").await;

    // Removing the environment that the installation uses is reported, not silently accepted.
    patch_spec(&apps, "insights", json!({"environments": [{"name": "staging"}]})).await;
    let a = wait_condition(&apps, "insights", "Ready", "False", "InstallationsExist").await;
    assert!(condition(&a, "Ready").unwrap().2.contains("environment production is not in spec.environments"));
    patch_spec(&apps, "insights", json!({"environments": prod(json!([version(1, 0, &[])]))})).await;
    wait_condition(&apps, "insights", "Ready", "True", "Ready").await;

    // The app is held while the installation exists.
    apps.delete("insights", &DeleteParams::default()).await.unwrap();
    let a = wait_for(&apps, "insights", WAIT, "InstallationsExist on delete", |a| {
        condition(a, "Ready").is_some_and(|(s, r, _)| s == "False" && r == "InstallationsExist")
    })
    .await;
    assert!(a.metadata.deletion_timestamp.is_some());

    insts.delete("acme", &DeleteParams::default()).await.unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while insts.get_opt("acme").await.unwrap().is_some() || apps.get_opt("insights").await.unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline, "the installation and the app were not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let uninstalls = platform.completed_tasks("uninstall");
    assert_eq!(uninstalls.into_iter().collect::<Vec<_>>(), [("acme.atlassian.net".to_string(), 1)]);
    assert_eq!(platform.installed_version("ari:cloud:ecosystem::app/insights", "acme.atlassian.net"), None);
    wait_event(&t, "acme", "Uninstalled").await;
}

#[tokio::test]
async fn installs_wait_out_a_platform_outage_and_lose_nothing() {
    let t = TestNs::new("outage").await;
    let operator = t.start_operator().await;
    let platform = operator.platform.clone();
    let (apps, insts): (Api<ForgeApp>, Api<Installation>) = (t.api(), t.api());
    create(&apps, app("insights", prod(json!([version(1, 0, &[])])))).await;
    wait_for(&apps, "insights", WAIT, "1.0 read", |a| a.deployed("production").len() == 1).await;

    // The gateway goes down; the Installations are created meanwhile.
    platform.set_faults(Faults { down: true, ..Default::default() });
    for site in ["one", "two", "three"] {
        create(&insts, installation(site, "insights", &format!("{site}.atlassian.net"), json!({}))).await;
    }
    let one = wait_condition(&insts, "one", "Installed", "False", "PlatformError").await;
    assert_eq!(condition(&one, "Reconciling").unwrap().0, "True", "retried, not stalled");
    assert_eq!(condition(&one, "Stalled").unwrap().0, "False");

    // Back up: every site is installed exactly once.
    platform.set_faults(Faults::default());
    for site in ["one", "two", "three"] {
        wait_installed(&insts, site, "1.0").await;
    }
    let installs = platform.every_task("install");
    assert_eq!(installs.len(), 3, "{installs:?}");
    assert!(installs.values().all(|n| *n == 1), "each site installed once: {installs:?}");
}

#[tokio::test]
async fn installations_follow_the_minors_the_platform_rolls_out() {
    let t = TestNs::new("follow").await;
    let operator = t.start_operator().await;
    let platform = operator.platform.clone();
    let (apps, insts): (Api<ForgeApp>, Api<Installation>) = (t.api(), t.api());
    create(&apps, app("insights", prod(json!([version(1, 0, &["read"])])))).await;
    for site in ["one", "two"] {
        create(&insts, installation(site, "insights", &format!("{site}.atlassian.net"), json!({}))).await;
    }
    for site in ["one", "two"] {
        wait_installed(&insts, site, "1.0").await;
    }

    // `forge deploy` of a minor: the platform moves the sites itself; after the CI job's refresh the
    // Installations show it, from the app's listing, without an upgrade request of their own.
    let deploy = forgeops_emulator::DeployRequest {
        app_id: "ari:cloud:ecosystem::app/insights".into(),
        environment: "production".into(),
        version: "1.1.0".into(),
        scopes: vec!["read".into()],
        egress: vec![],
        requires_license: false,
        required_products: vec!["jira".into()],
        modules: vec![],
        remotes: vec![],
        security_policies: vec![],
    };
    platform.emulator.deploy(deploy).unwrap();
    let ask = json!({"metadata": {"annotations": {"forgeops.dev/refresh": "after-deploy"}}});
    apps.patch("insights", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&ask)).await.unwrap();
    for site in ["one", "two"] {
        wait_installed(&insts, site, "1.1").await;
    }
    wait_event(&t, "one", "MinorVersionRolledOut").await;
    assert_eq!(platform.calls("forge_cli_upgradeApplication"), 0, "the operator upgraded nothing itself");
}
