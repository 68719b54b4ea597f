//! The model's rules, without a server.

use super::*;
use crate::seed::{SeedAccount, SeedApp, SeedEgress, SeedEnvironment, SeedVersion};

const ACME: &str = "platform-team@acme.example";
const OTHER: &str = "someone@globex.example";
const APP1: &str = "ari:cloud:ecosystem::app/6f1c2d3e-0000-4000-8000-000000000001";
const APP2: &str = "ari:cloud:ecosystem::app/6f1c2d3e-0000-4000-8000-000000000002";
const APP3: &str = "ari:cloud:ecosystem::app/6f1c2d3e-0000-4000-8000-000000000003";
const T0: Millis = 1_700_000_000_000;

fn seed() -> Seed {
    let mut seed = Seed::from_yaml_str(include_str!("../../../deploy/emulator/seed.yaml")).expect("seed parses");
    seed.accounts.push(SeedAccount {
        email: OTHER.into(),
        api_token: "other-token".into(),
        account_id: Some("other-account".into()),
        name: None,
        status: None,
    });
    // A third app owned by the other account, with a bulk-upgradeable pair of majors.
    seed.apps.push(SeedApp {
        id: APP3.into(),
        name: Some("globex-app".into()),
        owner: OTHER.into(),
        distribution_status: DistributionStatus::Development,
        listed_on_marketplace: true,
        distribution_link: None,
        vendor_name: None,
        privacy_policy: None,
        terms_of_service: None,
        contact_link: None,
        environments: vec![SeedEnvironment {
            key: "production".into(),
            env_type: None,
            id: None,
            versions: ["1.0.0", "2.0.0"]
                .iter()
                .map(|v| SeedVersion {
                    version: v.to_string(),
                    id: None,
                    scopes: vec!["read:jira-work".into()],
                    egress: vec![],
                    requires_license: false,
                    required_products: vec!["jira".into()],
                    modules: vec![],
                    remotes: vec![],
                    security_policies: vec![],
                    created_at: None,
                })
                .collect(),
        }],
    });
    seed
}

fn model() -> Model {
    Model::from_seed(&seed(), Settings { task_duration_ms: 300, rollout_step_us: 10_000, ..Settings::default() }, T0)
        .expect("model")
}

fn acme(m: &Model) -> String {
    m.accounts.iter().find(|a| a.email == ACME).unwrap().account_id.clone()
}

fn version_id(m: &Model, app: &str, env: &str, v: &str) -> String {
    m.app(app).unwrap().environment(env).unwrap().versions.iter().find(|x| x.version == v).unwrap().id.clone()
}

fn ctx(m: &Model, host: &str, product: &str) -> String {
    m.site_by_host(host).unwrap().context(product).unwrap()
}

fn install_input(m: &Model, app: &str, host: &str, version: Option<&str>) -> InstallInput {
    InstallInput {
        app_id: app.into(),
        environment_key: "production".into(),
        context: ctx(m, host, "jira"),
        version_id: version.map(|v| version_id(m, app, "production", v)),
        compute_only: false,
    }
}

/// Installs and lets the task finish.
fn installed(m: &mut Model, app: &str, host: &str, version: Option<&str>, now: Millis) -> String {
    let caller = m.app(app).unwrap().owner.clone();
    let input = install_input(m, app, host, version);
    let task = m.install(&caller, &input, now).expect("accepted");
    m.advance(now + 1000);
    assert_eq!(m.task(&task).unwrap().state, TaskState::Complete, "{:?}", m.task(&task).unwrap().errors);
    m.task(&task).unwrap().installation_id.clone().unwrap()
}

#[test]
fn seed_loads_with_stable_ids_and_normalized_versions() {
    let a = model();
    let b = model();
    assert_eq!(version_id(&a, APP1, "production", "1.2.0"), version_id(&b, APP1, "production", "1.2.0"));
    assert_eq!(a.sites.get(0).unwrap().cloud_id, b.sites.get(0).unwrap().cloud_id);
    let env = a.app(APP1).unwrap().environment("production").unwrap();
    assert_eq!(env.latest().unwrap().version, "2.0.0");
    assert_eq!(env.env_type, EnvironmentType::Production);
    assert_eq!(a.app(APP1).unwrap().environment("default").unwrap().env_type, EnvironmentType::Development);
    assert_eq!(a.authenticate(ACME, "local-dev-token").map(|x| x.status), Some(AccountStatus::Active));
    assert!(a.authenticate(ACME, "wrong").is_none());
    let mut a = a;
    assert!(a.add_api_token(ACME, "rotated") && a.authenticate(ACME, "rotated").is_some());
    assert!(a.authenticate(ACME, "local-dev-token").is_some(), "both tokens work until one is revoked");
    assert!(a.revoke_api_token(ACME, "local-dev-token") && a.authenticate(ACME, "local-dev-token").is_none());
    assert!(!a.revoke_api_token(ACME, "local-dev-token") && !a.add_api_token("nobody@x", "t"));
    assert!(a.authenticate(ACME, "rotated").is_some());
    let site = a.site_by_host("https://ACME.atlassian.net/").unwrap();
    assert_eq!(site.products.len(), 2);
    let ctx = site.context("jira").unwrap();
    assert!(ctx.starts_with(&format!("ari:cloud:jira:{}:workspace/", site.cloud_id)));
    let (resolved, product) = a.resolve_context(&ctx).unwrap();
    assert_eq!((resolved.host_name.as_str(), product.as_str()), ("acme.atlassian.net", "jira"));
    let site_ari = format!("ari:cloud:confluence::site/{}", site.cloud_id);
    assert_eq!(a.resolve_context(&site_ari).unwrap().1, "confluence");
    assert!(a.resolve_context("ari:cloud:jira:nope:workspace/nope").is_err());
    assert!(a.resolve_context("garbage").is_err());
    // Tokens never leave memory.
    assert!(!serde_json::to_string(&a).unwrap().contains("local-dev-token"));
    assert!(!a.dump().to_string().contains("local-dev-token"));
}

#[test]
fn bad_seeds_are_errors_not_panics() {
    let mut s = seed();
    s.apps[0].owner = "nobody@example".into();
    assert!(Model::from_seed(&s, Settings::default(), T0).is_err());
    let mut s = seed();
    s.apps[0].environments[0].versions[0].version = "x.y".into();
    assert!(Model::from_seed(&s, Settings::default(), T0).is_err());
    let mut s = seed();
    s.apps[0].id = "not-an-ari".into();
    assert!(Model::from_seed(&s, Settings::default(), T0).is_err());
}

#[test]
fn install_task_lifecycle_pending_running_complete() {
    let mut m = model();
    let caller = acme(&m);
    let input = install_input(&m, APP1, "acme.atlassian.net", None);
    let task = m.install(&caller, &input, T0).unwrap();
    assert_eq!(m.task(&task).unwrap().state, TaskState::Pending);
    m.advance(T0 + 50);
    assert_eq!(m.task(&task).unwrap().state, TaskState::Pending);
    m.advance(T0 + 150);
    assert_eq!(m.task(&task).unwrap().state, TaskState::Running);
    assert!(m.installations.is_empty(), "no effect before the task completes");
    m.advance(T0 + 300);
    let t = m.task(&task).unwrap();
    assert_eq!(t.state, TaskState::Complete);
    assert_eq!(m.installations.len(), 1);
    // Without a version: the latest.
    assert_eq!(m.installations.iter().next().unwrap().version_id, version_id(&m, APP1, "production", "2.0.0"));
    assert_eq!(t.installation_id.as_deref(), Some(m.installations.iter().next().unwrap().id.as_str()));
}

#[test]
fn install_twice_is_app_already_installed() {
    let mut m = model();
    let caller = acme(&m);
    let input = install_input(&m, APP1, "acme.atlassian.net", Some("1.0.0"));
    let first = m.install(&caller, &input, T0).unwrap();
    // A second install while the first is pending: accepted, its task fails.
    let second = m.install(&caller, &input, T0 + 10).unwrap();
    m.advance(T0 + 1000);
    assert_eq!(m.task(&first).unwrap().state, TaskState::Complete);
    let t = m.task(&second).unwrap();
    assert_eq!(t.state, TaskState::Failed);
    assert_eq!(t.errors[0].error_type, "APP_ALREADY_INSTALLED");
    // And once installed.
    let third = m.install(&caller, &input, T0 + 2000).unwrap();
    m.advance(T0 + 3000);
    assert_eq!(m.task(&third).unwrap().errors[0].error_type, "APP_ALREADY_INSTALLED");
    assert_eq!(m.installations.len(), 1);
    // Another environment of the same app on the same site is another installation.
    let mut dev = input.clone();
    dev.environment_key = "default".into();
    dev.version_id = None;
    let t = m.install(&caller, &dev, T0 + 4000).unwrap();
    m.advance(T0 + 5000);
    assert_eq!(m.task(&t).unwrap().state, TaskState::Complete);
}

#[test]
fn upgrade_rules() {
    let mut m = model();
    let caller = acme(&m);
    installed(&mut m, APP1, "acme.atlassian.net", Some("1.0.0"), T0);
    // To the version already installed.
    let same = install_input(&m, APP1, "acme.atlassian.net", Some("1.0.0"));
    let e = m.upgrade(&caller, &same, T0 + 2000).unwrap_err();
    assert_eq!(e.error_type, "INSTALLATION_ALREADY_UPGRADED");
    // Without a version: to the latest.
    let latest = install_input(&m, APP1, "acme.atlassian.net", None);
    let t = m.upgrade(&caller, &latest, T0 + 2000).unwrap();
    m.advance(T0 + 3000);
    assert_eq!(m.task(&t).unwrap().state, TaskState::Complete);
    assert_eq!(m.installations.iter().next().unwrap().version_id, version_id(&m, APP1, "production", "2.0.0"));
    assert_eq!(m.upgrade(&caller, &latest, T0 + 4000).unwrap_err().error_type, "INSTALLATION_ALREADY_UPGRADED");
    // Not installed there.
    let globex = install_input(&m, APP1, "globex.atlassian.net", None);
    assert_eq!(m.upgrade(&caller, &globex, T0 + 4000).unwrap_err().error_type, "INSTALLATION_NOT_FOUND");
}

#[test]
fn permission_and_not_found() {
    let mut m = model();
    let input = install_input(&m, APP1, "acme.atlassian.net", None);
    assert_eq!(m.install("other-account", &input, T0).unwrap_err().error_type, "PERMISSION_DENIED");
    let mut missing = input.clone();
    missing.app_id = "ari:cloud:ecosystem::app/00000000-0000-4000-8000-00000000dead".into();
    assert_eq!(m.install(&acme(&m), &missing, T0).unwrap_err().error_type, "APP_NOT_FOUND");
    let mut bad_version = input.clone();
    bad_version.version_id = Some("nope".into());
    assert_eq!(m.install(&acme(&m), &bad_version, T0).unwrap_err().error_type, "APP_NOT_FOUND");
    let mut bad_ctx = input;
    bad_ctx.context = "ari:cloud:jira::site/unknown".into();
    assert_eq!(m.install(&acme(&m), &bad_ctx, T0).unwrap_err().error_type, "BAD_REQUEST");
}

#[test]
fn failing_site_fails_the_task_and_limit_is_reached() {
    let mut m = model();
    let caller = acme(&m);
    m.failing_sites = vec!["globex.atlassian.net".into()];
    let input = install_input(&m, APP1, "globex.atlassian.net", None);
    let t = m.install(&caller, &input, T0).unwrap();
    m.advance(T0 + 1000);
    let task = m.task(&t).unwrap();
    assert_eq!(task.state, TaskState::Failed);
    assert_eq!(task.errors[0].status_code, 500);
    assert!(m.installations.is_empty());
    m.failing_sites.clear();

    m.add_site(SeedSite {
        host_name: "tiny.atlassian.net".into(),
        products: vec!["jira".into(), "confluence".into()],
        app_limit: Some(1),
        admins: vec![ACME.into()],
        ..Default::default()
    })
    .unwrap();
    installed(&mut m, APP1, "tiny.atlassian.net", None, T0);
    // APP2 requires confluence: the limit counts every app's installations on the site.
    let mut second = install_input(&m, APP2, "tiny.atlassian.net", None);
    second.context = ctx(&m, "tiny.atlassian.net", "confluence");
    let t = m.install(&caller, &second, T0 + 2000).unwrap();
    m.advance(T0 + 3000);
    assert_eq!(m.task(&t).unwrap().errors[0].error_type, "INSTALLATION_LIMIT_REACHED");
}

#[test]
fn uninstall_removes_the_installation() {
    let mut m = model();
    let caller = acme(&m);
    let id = installed(&mut m, APP1, "acme.atlassian.net", None, T0);
    let input = UninstallInput {
        app_id: APP1.into(),
        environment_key: "production".into(),
        installation_id: Some(id.clone()),
        context: None,
    };
    let t = m.uninstall(&caller, &input, T0 + 2000).unwrap();
    assert_eq!(m.installations.len(), 1);
    m.advance(T0 + 3000);
    assert_eq!(m.task(&t).unwrap().state, TaskState::Complete);
    assert!(m.installations.is_empty());
    assert_eq!(m.uninstall(&caller, &input, T0 + 4000).unwrap_err().error_type, "INSTALLATION_NOT_FOUND");
    assert_eq!(m.uninstall("other-account", &input, T0 + 4000).unwrap_err().error_type, "PERMISSION_DENIED");
}

fn version(v: &str, scopes: &[&str], egress: &[(&str, Option<EgressCategory>)], license: bool) -> Version {
    Version {
        id: v.into(),
        version: v.into(),
        created_at: 0,
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        egress: egress
            .iter()
            .map(|(a, c)| Egress {
                kind: EgressType::FetchBackendSide,
                addresses: vec![a.to_string()],
                category: *c,
                in_scope_eud: false,
            })
            .collect(),
        requires_license: license,
        required_products: vec![],
        modules: vec![],
        remotes: vec![],
        security_policies: vec![],
    }
}

#[test]
fn rollout_eligibility() {
    let base = version("1.0.0", &["read:jira-work", "write:jira-work"], &[("a.example", None)], false);
    let ok = version("2.0.0", &["read:jira-work"], &[("a.example", None)], false);
    assert_eq!(rollout_ineligibility(&base, &ok), None, "fewer scopes, same egress");
    assert!(rollout_ineligibility(&ok, &base).is_some(), "older");
    assert!(rollout_ineligibility(&base, &base).is_some(), "same version");
    let scope = version("2.0.0", &["read:jira-work", "manage:jira-configuration"], &[("a.example", None)], false);
    assert!(rollout_ineligibility(&base, &scope).unwrap().contains("scopes"));
    let egress = version("2.0.0", &["read:jira-work"], &[("a.example", None), ("b.example", None)], false);
    assert!(rollout_ineligibility(&base, &egress).unwrap().contains("egress"));
    let category = version("2.0.0", &["read:jira-work"], &[("a.example", Some(EgressCategory::Analytics))], false);
    assert!(rollout_ineligibility(&base, &category).unwrap().contains("category"));
    let license = version("2.0.0", &["read:jira-work"], &[("a.example", None)], true);
    assert!(rollout_ineligibility(&base, &license).unwrap().contains("licensing"));

    // In the seed, 2.0.0 adds write:jira-work to 1.x: not by rollout.
    let m = model();
    let (v1, v11, v2) = (
        version_id(&m, APP1, "production", "1.0.0"),
        version_id(&m, APP1, "production", "1.2.0"),
        version_id(&m, APP1, "production", "2.0.0"),
    );
    assert!(!m.upgradeable(&v1, &v2).unwrap());
    assert!(m.upgradeable(&v1, &v11).unwrap());
    assert!(!m.upgradeable(&v11, &v1).unwrap());
    assert!(m.upgradeable("nope", &v1).is_err());
    let e = version_id(&m, APP3, "production", "1.0.0");
    assert!(!m.upgradeable(&e, &v2).unwrap(), "another app");
}

/// Puts `n` installations of APP3 production on version `v`, each on its own site.
fn many_installations(m: &mut Model, n: usize, v: &str) {
    let vid = version_id(m, APP3, "production", v);
    for i in 0..n {
        let info = m
            .add_site(SeedSite {
                host_name: format!("site{i}.atlassian.net"),
                products: vec!["jira".into()],
                ..Default::default()
            })
            .unwrap();
        m.installations.push(Installation {
            id: format!("inst-{i}"),
            app_id: APP3.into(),
            environment_key: "production".into(),
            cloud_id: info.cloud_id.clone(),
            product: "jira".into(),
            context: info.installation_contexts["jira"].clone(),
            version_id: vid.clone(),
            created_at: T0 + i as i64,
            upgraded_by: Vec::new(),
            ..Default::default()
        });
    }
}

#[test]
fn rollout_takes_at_most_the_upgrade_limit_and_leaves_the_rest() {
    let mut m = model();
    assert_eq!(m.settings.upgrade_limit, 500, "the documented cap of one bulk upgrade");
    m.settings.rollout_step_us = 1000; // one installation per millisecond
    many_installations(&mut m, 600, "1.0.0");
    let (v1, v2) = (version_id(&m, APP3, "production", "1.0.0"), version_id(&m, APP3, "production", "2.0.0"));
    let created = m.create_rollout("other-account", &v1, &v2, Some(1800), T0).unwrap();
    assert_eq!((created.upgrade_limit, created.total_eligible, created.expected_remaining), (500, 600, 100));
    m.advance(T0 + 100);
    let r = m.rollout(&created.id).unwrap();
    assert_eq!((r.status, r.completed, r.pending.len()), (RolloutStatus::Running, 100, 400));
    m.advance(T0 + 500);
    let r = m.rollout(&created.id).unwrap();
    assert_eq!((r.status, r.completed, r.failed, r.pending.len()), (RolloutStatus::Complete, 500, 0, 0));
    assert_eq!(r.completed_at, Some(T0 + 500));
    let on = |m: &Model, v: &str| m.installations.iter().filter(|i| i.version_id == v).count();
    assert_eq!((on(&m, &v1), on(&m, &v2)), (100, 500));
    // The rest, by a later rollout with a smaller limit.
    let next = m.create_rollout("other-account", &v1, &v2, Some(60), T0 + 2000).unwrap();
    assert_eq!((next.upgrade_limit, next.total_eligible, next.expected_remaining), (60, 100, 40));
    m.advance(T0 + 10_000);
    let last = m.create_rollout("other-account", &v1, &v2, None, T0 + 10_000).unwrap();
    assert_eq!((last.upgrade_limit, last.total_eligible, last.expected_remaining), (500, 40, 0));
    m.advance(T0 + 20_000);
    assert_eq!(on(&m, &v2), 600);
    assert_eq!(m.create_rollout("other-account", &v1, &v2, Some(0), T0).unwrap_err().error_type, "BAD_REQUEST");
}

#[test]
fn the_per_account_rollout_limit_counts_the_calling_account() {
    let mut m = model();
    let me = acme(&m);
    let (a1, a12) = (version_id(&m, APP1, "production", "1.0.0"), version_id(&m, APP1, "production", "1.2.0"));
    installed(&mut m, APP1, "acme.atlassian.net", Some("1.0.0"), T0);
    let running = m.create_rollout(&me, &a1, &a12, None, T0).unwrap();
    // The app changes hands while acme's rollout runs: acme still has one running.
    m.apps.iter_mut().find(|a| a.id == APP1).unwrap().owner = "other-account".into();
    let d = m
        .deploy(
            &DeployRequest {
                app_id: APP2.into(),
                environment: "production".into(),
                version: "1.5.0".into(),
                scopes: vec!["read:confluence-content.summary".into()],
                egress: vec![],
                requires_license: false,
                required_products: vec!["confluence".into()],
                modules: vec![],
                remotes: vec![],
                security_policies: vec![],
            },
            T0,
        )
        .unwrap();
    let b = version_id(&m, APP2, "production", "1.4.0");
    let e = m.create_rollout(&me, &b, &d.version_id, None, T0).unwrap_err();
    assert_eq!(e.error_type, "TOO_MANY_APP_ROLLOUTS_RUNNING_FOR_ACCOUNT");
    // The new owner of APP1 started none: its own app APP3 may have one.
    let (v1, v2) = (version_id(&m, APP3, "production", "1.0.0"), version_id(&m, APP3, "production", "2.0.0"));
    m.create_rollout("other-account", &v1, &v2, None, T0).unwrap();
    m.cancel_rollout("other-account", &running.id, T0).unwrap();
    m.create_rollout(&me, &b, &d.version_id, None, T0).unwrap();
}

#[test]
fn rollout_concurrency_limits_and_failures() {
    let mut m = model();
    many_installations(&mut m, 10, "1.0.0");
    let (v1, v2) = (version_id(&m, APP3, "production", "1.0.0"), version_id(&m, APP3, "production", "2.0.0"));
    assert_eq!(m.create_rollout(&acme(&m), &v1, &v2, None, T0).unwrap_err().error_type, "PermissionDeniedError");
    let (a1, a11) = (version_id(&m, APP1, "production", "1.0.0"), version_id(&m, APP1, "production", "1.2.0"));
    let a2 = version_id(&m, APP1, "production", "2.0.0");
    assert_eq!(m.create_rollout(&acme(&m), &a1, &a2, None, T0).unwrap_err().error_type, "APP_ROLLOUT_NOT_ELIGIBLE");
    m.failing_sites = vec!["site3.atlassian.net".into()];
    let first = m.create_rollout("other-account", &v1, &v2, None, T0).unwrap();
    // One per app environment.
    assert_eq!(m.create_rollout("other-account", &v1, &v2, None, T0).unwrap_err().error_type, "APP_ROLLOUT_RUNNING");
    // One per account: acme's own app may start one, but not a second of acme's.
    let acme_rollout = m.create_rollout(&acme(&m), &a1, &a11, None, T0).unwrap();
    let dev = version_id(&m, APP1, "default", "2.1.0");
    let e = m.create_rollout(&acme(&m), &dev, &dev, None, T0).unwrap_err();
    assert_eq!(e.error_type, "APP_ROLLOUT_NOT_ELIGIBLE");
    m.settings.global_rollout_limit = 2;
    // A third account's rollout would exceed the global limit.
    m.accounts.push(Account {
        email: "third@x".into(),
        api_tokens: vec!["t".into()],
        account_id: "third".into(),
        name: "third".into(),
        status: AccountStatus::Active,
    });
    m.apps.iter_mut().find(|a| a.id == APP2).unwrap().owner = "third".into();
    let d = m
        .deploy(
            &DeployRequest {
                app_id: APP2.into(),
                environment: "production".into(),
                version: "2.0.0".into(),
                scopes: vec!["read:confluence-content.summary".into()],
                egress: vec![],
                requires_license: false,
                required_products: vec!["confluence".into()],
                modules: vec![],
                remotes: vec![],
                security_policies: vec![],
            },
            T0,
        )
        .unwrap();
    let b1 = version_id(&m, APP2, "production", "1.4.0");
    assert_eq!(
        m.create_rollout("third", &b1, &d.version_id, None, T0).unwrap_err().error_type,
        "APP_ROLLOUTS_UNAVAILABLE"
    );
    // Another app of an account with a running rollout.
    m.apps.iter_mut().find(|a| a.id == APP2).unwrap().owner = acme(&m);
    let e = m.create_rollout(&acme(&m), &b1, &d.version_id, None, T0).unwrap_err();
    assert_eq!(e.error_type, "TOO_MANY_APP_ROLLOUTS_RUNNING_FOR_ACCOUNT");
    m.cancel_rollout(&acme(&m), &acme_rollout.id, T0).unwrap();
    m.advance(T0 + 1000);
    let r = m.rollout(&first.id).unwrap();
    assert_eq!((r.status, r.completed, r.failed), (RolloutStatus::Complete, 9, 1), "site3 failed");
}

#[test]
fn cancel_stops_a_running_rollout_only() {
    let mut m = model();
    many_installations(&mut m, 100, "1.0.0");
    let (v1, v2) = (version_id(&m, APP3, "production", "1.0.0"), version_id(&m, APP3, "production", "2.0.0"));
    let r = m.create_rollout("other-account", &v1, &v2, None, T0).unwrap();
    m.advance(T0 + 105); // 10 ms per step: 10 done
    assert_eq!(m.cancel_rollout(&acme(&m), &r.id, T0 + 105).unwrap_err().error_type, "PermissionDeniedError");
    m.cancel_rollout("other-account", &r.id, T0 + 105).unwrap();
    let got = m.rollout(&r.id).unwrap();
    assert_eq!((got.status, got.completed, got.pending.len()), (RolloutStatus::Cancelled, 10, 0));
    assert_eq!(got.cancelled_by.as_deref(), Some("other-account"));
    m.advance(T0 + 10_000);
    assert_eq!(m.rollout(&r.id).unwrap().completed, 10, "nothing more after cancel");
    let e = m.cancel_rollout("other-account", &r.id, T0 + 10_000).unwrap_err();
    assert_eq!(e.error_type, "APP_ROLLOUT_NOT_RUNNING");
    assert_eq!(m.cancel_rollout("other-account", "nope", T0).unwrap_err().error_type, "NOT_FOUND");
    // Forgotten on request, or after the retention.
    assert_eq!(m.forget_finished_rollouts(), 1);
    assert!(m.rollout(&r.id).is_none());
    m.settings.rollout_retention_ms = Some(5000);
    let r = m.create_rollout("other-account", &v1, &v2, None, T0 + 20_000).unwrap();
    m.advance(T0 + 21_000); // 90 steps of 10 ms: complete at T0 + 20 900
    assert_eq!(m.rollout(&r.id).unwrap().status, RolloutStatus::Complete);
    m.advance(T0 + 25_000);
    assert!(m.rollout(&r.id).is_some(), "kept during the retention");
    m.advance(T0 + 40_000);
    assert!(m.rollout(&r.id).is_none());
}

#[test]
fn links_rotate_one_way_and_need_sharing() {
    let mut m = model();
    let caller = acme(&m);
    let products = vec!["jira".to_string()];
    assert_eq!(m.generate_link(&caller, APP1, &products, T0).unwrap_err().error_type, "APP_NOT_SHARED");
    m.set_distribution_status(&caller, APP1, Some(DistributionStatus::Public), None).unwrap();
    assert_eq!(m.generate_link("other-account", APP1, &products, T0).unwrap_err().error_type, "PERMISSION_DENIED");
    let first = m.generate_link(&caller, APP1, &products, T0).unwrap();
    assert_eq!(m.active_link(&caller, APP1).unwrap(), Some(first.clone()));
    let req = |sig: &str, site: &str| LinkInstallRequest {
        app_id: APP1.into(),
        environment: Some("production".into()),
        site: site.into(),
        product: "jira".into(),
        signature: sig.into(),
        // The developer account administers acme and globex: an admin of every product there.
        admin: ACME.into(),
    };
    let done = m.link_install(&req(&first.signature, "acme.atlassian.net"), T0).unwrap();
    assert_eq!(done.version, "2.0.0");
    assert_eq!(
        m.link_install(&req(&first.signature, "acme.atlassian.net"), T0).unwrap_err().error_type,
        "APP_ALREADY_INSTALLED"
    );
    let second = m.generate_link(&caller, APP1, &products, T0 + 1).unwrap();
    assert_ne!(first.signature, second.signature);
    let e = m.link_install(&req(&first.signature, "globex.atlassian.net"), T0).unwrap_err();
    assert_eq!(e.error_type, "DISTRIBUTION_LINK_INVALID");
    let mut confluence = req(&second.signature, "globex.atlassian.net");
    confluence.product = "confluence".into();
    assert_eq!(m.link_install(&confluence, T0).unwrap_err().error_type, "DISTRIBUTION_LINK_INVALID");
    // Sharing off: no installs, even with the current signature.
    m.set_distribution_status(&caller, APP1, Some(DistributionStatus::Development), None).unwrap();
    assert_eq!(
        m.link_install(&req(&second.signature, "globex.atlassian.net"), T0).unwrap_err().error_type,
        "APP_NOT_SHARED"
    );
    m.set_distribution_status(&caller, APP1, Some(DistributionStatus::Public), None).unwrap();
    m.link_install(&req(&second.signature, "globex.atlassian.net"), T0).unwrap();
    // A Marketplace-listed app cannot be made private.
    let e = m.set_distribution_status("other-account", APP3, Some(DistributionStatus::Development), None).unwrap_err();
    assert_eq!(e.error_type, "CONFLICT");
    // Without the capability.
    m.settings.distribution = false;
    assert_eq!(m.generate_link(&caller, APP1, &products, T0).unwrap_err().error_type, "UNSUPPORTED");
    assert_eq!(m.active_link(&caller, APP1).unwrap_err().error_type, "UNSUPPORTED");
    let e = m.set_distribution_status(&caller, APP1, Some(DistributionStatus::Public), None).unwrap_err();
    assert_eq!(e.error_type, "UNSUPPORTED");
}

#[test]
fn deploy_rolls_minors_out_but_not_majors() {
    let mut m = model();
    m.settings.minor_rollout_ms = 0; // at once, in the deploy
    let on_1_0 = installed(&mut m, APP1, "acme.atlassian.net", Some("1.0.0"), T0);
    let on_2_0 = installed(&mut m, APP1, "globex.atlassian.net", Some("2.0.0"), T0);
    let deploy = |v: &str, scopes: &[&str]| DeployRequest {
        app_id: APP1.into(),
        environment: "production".into(),
        version: v.into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        egress: vec![SeedEgress::Address("api.insights.acme.example".into())],
        requires_license: false,
        required_products: vec!["jira".into()],
        modules: vec![],
        remotes: vec![],
        security_policies: vec![],
    };
    // Not newer than the newest of its major.
    assert_eq!(m.deploy(&deploy("1.1", &["read:jira-work"]), T0).unwrap_err().error_type, "CONFLICT");
    // An older major may get a new minor; it reaches that major's installations but is not the latest.
    let minor = m.deploy(&deploy("1.3", &["read:jira-work"]), T0).unwrap();
    assert_eq!(minor.upgraded_installations, vec![on_1_0.clone()]);
    assert_eq!(m.app(APP1).unwrap().environment("production").unwrap().latest().unwrap().version, "2.0.0");
    // A minor adding a scope must be a major.
    let e = m.deploy(&deploy("2.1", &["read:jira-work", "write:jira-work", "manage:jira-webhook"]), T0).unwrap_err();
    assert_eq!(e.error_type, "BAD_REQUEST");
    let out = m.deploy(&deploy("2.1", &["read:jira-work", "write:jira-work"]), T0).unwrap();
    assert_eq!(out.version, "2.1.0");
    assert_eq!(out.upgraded_installations, vec![on_2_0.clone()]);
    assert_eq!(m.installation(&on_2_0).unwrap().version_id, out.version_id);
    assert_eq!(m.installation(&on_1_0).unwrap().version_id, minor.version_id);
    let env = m.app(APP1).unwrap().environment("production").unwrap();
    assert_eq!(env.latest().unwrap().version, "2.1.0");
    // A minor removing a scope, or an egress address, must be a major too.
    let e = m.deploy(&deploy("2.2", &["read:jira-work"]), T0).unwrap_err();
    assert_eq!(e.error_type, "BAD_REQUEST");
    assert!(e.message.contains("removes scopes") && e.message.contains("deploy it as a new major"), "{e}");
    let mut no_egress = deploy("2.2", &["read:jira-work", "write:jira-work"]);
    no_egress.egress.clear();
    let e = m.deploy(&no_egress, T0).unwrap_err();
    assert!(e.message.contains("removes egress to api.insights.acme.example"), "{e}");
    let mut eud = deploy("2.2", &["read:jira-work", "write:jira-work"]);
    eud.egress = vec![SeedEgress::Permission(Egress {
        kind: EgressType::FetchBackendSide,
        addresses: vec!["api.insights.acme.example".into()],
        category: None,
        in_scope_eud: true,
    })];
    let e = m.deploy(&eud, T0).unwrap_err();
    assert!(e.message.contains("end-user data"), "{e}");
    assert_eq!(m.app(APP1).unwrap().environment("production").unwrap().latest().unwrap().version, "2.1.0");
    // A rollout still needs no consent for a removal.
    let (before, after) =
        (version("2.0.0", &["a", "b"], &[("x.example", None)], false), version("2.1.0", &["a"], &[], false));
    assert_eq!(rollout_ineligibility(&before, &after), None);
    // A new major moves nobody.
    let out = m.deploy(&deploy("3.0.0", &["read:jira-work", "write:jira-work", "manage:jira-webhook"]), T0).unwrap();
    assert!(out.upgraded_installations.is_empty());
    // A new environment is created on first deploy (after its skeleton 1.1.0, a new major).
    let mut staging = deploy("2.0.0", &[]);
    staging.environment = "staging".into();
    m.deploy(&staging, T0).unwrap();
    assert_eq!(m.app(APP1).unwrap().environment("staging").unwrap().env_type, EnvironmentType::Staging);
}

#[test]
fn installation_filter_and_persistence_round_trip() {
    let mut m = model();
    let caller = acme(&m);
    let a = installed(&mut m, APP1, "acme.atlassian.net", None, T0);
    let _b = installed(&mut m, APP1, "globex.atlassian.net", None, T0);
    let all = InstallationFilter { app_ids: vec![APP1.into()], ..Default::default() };
    assert_eq!(m.installations_by_app(&caller, &all).unwrap().len(), 2);
    let by_ctx = InstallationFilter {
        app_ids: vec![APP1.into()],
        contexts: Some(vec![ctx(&m, "acme.atlassian.net", "jira")]),
        ..Default::default()
    };
    assert_eq!(m.installations_by_app(&caller, &by_ctx).unwrap()[0].id, a);
    let dev_only = InstallationFilter {
        app_ids: vec![APP1.into()],
        environment_types: Some(vec![EnvironmentType::Development]),
        ..Default::default()
    };
    assert!(m.installations_by_app(&caller, &dev_only).unwrap().is_empty());
    assert!(m.installations_by_app("other-account", &all).is_err());

    // APP2 requires confluence, so it goes there; the task is pending when the model is saved.
    let mut input = install_input(&m, APP2, "acme.atlassian.net", None);
    input.context = ctx(&m, "acme.atlassian.net", "confluence");
    let pending = m.install(&caller, &input, T0 + 5000).unwrap();
    let json = serde_json::to_string(&m).unwrap();
    let mut restored = Model::restore(&json, &seed(), Settings::default()).unwrap();
    assert_eq!(restored.installations.len(), 2);
    assert_eq!(restored.task(&pending).unwrap().state, TaskState::Pending);
    assert!(restored.authenticate(ACME, "local-dev-token").is_some());
    restored.advance(T0 + 10_000);
    assert_eq!(restored.task(&pending).unwrap().state, TaskState::Complete);
}

#[test]
fn versions_parse() {
    assert_eq!(parse_version("1.0"), Some((1, 0, 0)));
    assert_eq!(parse_version("12.3.4"), Some((12, 3, 4)));
    assert_eq!(parse_version("1.x"), None);
    assert_eq!(parse_version("1.2.3.4"), None);
    assert_ne!(stable_uuid("a"), stable_uuid("b"));
    assert_eq!(random_uuid().len(), 36);
}

/// Someone who may install `product` on `host` through a link: its first product admin of it, or
/// else the seed's developer account.
fn admin_of(m: &Model, host: &str, product: &str) -> String {
    let site = m.site_by_host(host).unwrap();
    site.product_admins.get(product).and_then(|a| a.first()).cloned().unwrap_or_else(|| ACME.to_string())
}

/// Links APP1 onto a site (sharing on, a fresh link) and answers the installation id.
fn link_installed(m: &mut Model, host: &str, now: Millis) -> String {
    let caller = acme(m);
    m.set_distribution_status(&caller, APP1, Some(DistributionStatus::Public), None).unwrap();
    let link = m.generate_link(&caller, APP1, &["jira".to_string()], now).unwrap();
    let req = LinkInstallRequest {
        app_id: APP1.into(),
        environment: None,
        site: host.into(),
        product: "jira".into(),
        signature: link.signature,
        admin: admin_of(m, host, "jira"),
    };
    m.link_install(&req, now).unwrap().installation_id
}

#[test]
fn only_site_admins_install_upgrade_and_uninstall() {
    let mut m = model();
    let caller = acme(&m);
    let (acme_site, initech) = (m.site_by_host("acme.atlassian.net").unwrap(), m.site_by_host("initech.atlassian.net"));
    assert_eq!(acme_site.admins, vec![caller.clone()], "the seed's emails resolve to account ids");
    assert!(acme_site.info().admins.contains(&caller));
    let initech = initech.expect("the seed's customer site");
    assert!(initech.admins.is_empty() && !initech.administered_by(&caller));

    // Install on a customer's site: refused at once, no task.
    let tasks = m.tasks.len();
    let e = m.install(&caller, &install_input(&m, APP1, "initech.atlassian.net", None), T0).unwrap_err();
    assert_eq!((e.error_type.as_str(), e.status_code), ("PERMISSION_DENIED", 403));
    assert!(e.message.contains("You must be an admin of initech.atlassian.net to install apps there"), "{e}");
    assert!(e.message.contains("installation link"), "{e}");
    assert_eq!(m.tasks.len(), tasks);
    // The app ownership check comes first.
    let e = m.install("other-account", &install_input(&m, APP1, "initech.atlassian.net", None), T0).unwrap_err();
    assert!(e.message.contains("permission to access app"), "{e}");
    // The owner of APP3 administers no site of the seed.
    let e = m.install("other-account", &install_input(&m, APP3, "acme.atlassian.net", None), T0).unwrap_err();
    assert!(e.message.contains("admin of acme.atlassian.net"), "{e}");
    // The admin installs.
    installed(&mut m, APP1, "acme.atlassian.net", Some("1.0.0"), T0);

    // Through the link, the customer's admin installs; forgeops' account may then neither
    // upgrade nor uninstall there.
    let on_initech = link_installed(&mut m, "initech.atlassian.net", T0);
    let mut up = install_input(&m, APP1, "initech.atlassian.net", Some("1.0.0"));
    let e = m.upgrade(&caller, &up, T0).unwrap_err();
    assert_eq!((e.error_type.as_str(), e.status_code), ("PERMISSION_DENIED", 403));
    assert!(e.message.contains("to upgrade apps there"), "{e}");
    up.version_id = None;
    assert_eq!(m.upgrade(&caller, &up, T0).unwrap_err().error_type, "PERMISSION_DENIED");
    let by_id = UninstallInput {
        app_id: APP1.into(),
        environment_key: "production".into(),
        installation_id: Some(on_initech.clone()),
        context: None,
    };
    let e = m.uninstall(&caller, &by_id, T0).unwrap_err();
    assert_eq!((e.error_type.as_str(), e.status_code), ("PERMISSION_DENIED", 403));
    assert!(e.message.contains("to uninstall apps there"), "{e}");
    let by_context = UninstallInput {
        installation_id: None,
        context: Some(ctx(&m, "initech.atlassian.net", "jira")),
        ..by_id.clone()
    };
    assert_eq!(m.uninstall(&caller, &by_context, T0).unwrap_err().error_type, "PERMISSION_DENIED");
    assert!(m.installation(&on_initech).is_some());
    assert_eq!(m.tasks.len(), tasks + 1, "only the admin's install made a task");

    // A site added with an admin given by account id; an unknown admin is an error.
    let info = m
        .add_site(SeedSite {
            host_name: "hooli.atlassian.net".into(),
            products: vec!["jira".into()],
            admins: vec!["other-account".into()],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(info.admins, vec!["other-account".to_string()]);
    installed(&mut m, APP3, "hooli.atlassian.net", None, T0);
    let e = m
        .add_site(SeedSite {
            host_name: "x.atlassian.net".into(),
            admins: vec!["nobody@x".into()],
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(e.error_type, "BAD_REQUEST");
}

#[test]
fn a_customers_admin_upgrades_their_site_to_any_newer_major() {
    let mut m = model();
    let inst = link_installed(&mut m, "initech.atlassian.net", T0);
    assert_eq!(m.version(&m.installation(&inst).unwrap().version_id).unwrap().2.version, "2.0.0");
    let req = |version: Option<&str>| SiteUpgradeRequest {
        app_id: APP1.into(),
        environment: "production".into(),
        site: "initech.atlassian.net".into(),
        product: "jira".into(),
        version: version.map(String::from),
    };
    // Nothing newer yet.
    assert_eq!(m.site_admin_upgrade(&req(None), T0).unwrap_err().error_type, "INSTALLATION_ALREADY_UPGRADED");
    assert_eq!(m.site_admin_upgrade(&req(Some("1.2")), T0).unwrap_err().error_type, "INSTALLATION_ALREADY_UPGRADED");
    assert_eq!(m.site_admin_upgrade(&req(Some("9.0.0")), T0).unwrap_err().error_type, "APP_NOT_FOUND");
    // A new major with a new scope: no rollout may take it there, the admin may.
    let deploy = DeployRequest {
        app_id: APP1.into(),
        environment: "production".into(),
        version: "3.0.0".into(),
        scopes: vec!["read:jira-work".into(), "write:jira-work".into(), "manage:jira-project".into()],
        egress: vec![],
        requires_license: false,
        required_products: vec!["jira".into()],
        modules: vec![],
        remotes: vec![],
        security_policies: vec![],
    };
    m.deploy(&deploy, T0 + 1).unwrap();
    let out = m.site_admin_upgrade(&req(None), T0 + 2).unwrap();
    assert_eq!(out, SiteUpgradeOutcome { installation_id: inst.clone(), version: "3.0.0".into() });
    let i = m.installation(&inst).unwrap();
    assert!(i.upgraded_by_admin);
    assert_eq!(m.version(&i.version_id).unwrap().2.version, "3.0.0");
    let dumped = m.dump()["installations"].as_array().unwrap().iter().find(|x| x["id"] == inst.as_str()).cloned();
    assert_eq!(dumped.unwrap()["upgradedByAdmin"], true);
    // Not installed there, or no such site.
    let mut confluence = req(None);
    confluence.product = "confluence".into();
    assert_eq!(m.site_admin_upgrade(&confluence, T0).unwrap_err().error_type, "INSTALLATION_NOT_FOUND");
    let mut nowhere = req(None);
    nowhere.site = "nowhere.atlassian.net".into();
    assert_eq!(m.site_admin_upgrade(&nowhere, T0).unwrap_err().status_code, 404);
}

#[test]
fn minors_reach_their_major_progressively() {
    let mut m = model();
    assert_eq!(m.settings.minor_rollout_ms, 2000);
    let caller = acme(&m);
    let a = installed(&mut m, APP1, "acme.atlassian.net", Some("1.0.0"), T0);
    let b = installed(&mut m, APP1, "globex.atlassian.net", Some("1.2.0"), T0);
    let on_2 = link_installed(&mut m, "initech.atlassian.net", T0);
    let listed = |m: &Model, id: &str| {
        let all = InstallationFilter { app_ids: vec![APP1.into()], ..Default::default() };
        let found = m.installations_by_app(&caller, &all).unwrap();
        let i = found.iter().find(|i| i.id == id).unwrap();
        m.version(&i.version_id).unwrap().2.version.clone()
    };
    let deploy = |v: &str| DeployRequest {
        app_id: APP1.into(),
        environment: "production".into(),
        version: v.into(),
        scopes: vec!["read:jira-work".into()],
        egress: vec![SeedEgress::Address("api.insights.acme.example".into())],
        requires_license: false,
        required_products: vec!["jira".into()],
        modules: vec![],
        remotes: vec![],
        security_policies: vec![],
    };
    let d = T0 + 10_000;
    let out = m.deploy(&deploy("1.3.0"), d).unwrap();
    assert!(out.upgraded_installations.is_empty(), "nobody moves in the deploy");
    assert_eq!(out.scheduled_installations, vec![a.clone(), b.clone()]);
    assert_eq!((listed(&m, &a), listed(&m, &b), listed(&m, &on_2)), ("1.0.0".into(), "1.2.0".into(), "2.0.0".into()));
    let due: Vec<Millis> =
        [&a, &b].iter().map(|id| m.installation(id).unwrap().pending_minor.clone().unwrap().due_at).collect();
    assert_eq!(due, vec![d + 1000, d + 2000], "spread evenly over the window");
    assert!(m.dump()["installations"][0]["pendingMinor"].is_object());
    // Halfway: the first has moved, the second not yet.
    m.advance(d + 1000);
    assert_eq!((listed(&m, &a), listed(&m, &b)), ("1.3.0".into(), "1.2.0".into()));
    assert!(m.installation(&a).unwrap().pending_minor.is_none());
    // A later minor replaces the pending one, with a new window.
    let out = m.deploy(&deploy("1.4.0"), d + 1500).unwrap();
    assert_eq!(out.scheduled_installations, vec![a.clone(), b.clone()]);
    m.advance(d + 2500);
    assert_eq!((listed(&m, &a), listed(&m, &b)), ("1.4.0".into(), "1.2.0".into()), "b now waits for 1.4.0");
    m.advance(d + 3500);
    assert_eq!((listed(&m, &a), listed(&m, &b), listed(&m, &on_2)), ("1.4.0".into(), "1.4.0".into(), "2.0.0".into()));
    // An installation moved meanwhile to another major is not pulled back.
    m.deploy(&deploy("1.5.0"), d + 4000).unwrap();
    let v2 = version_id(&m, APP1, "production", "2.0.0");
    m.installations.get_mut(&b).unwrap().version_id = v2.clone();
    m.advance(d + 7000);
    assert_eq!((listed(&m, &a), listed(&m, &b)), ("1.5.0".into(), "2.0.0".into()));
    assert!(m.installation(&b).unwrap().pending_minor.is_none());
}

#[test]
fn a_new_environment_starts_with_the_skeleton_and_deploys_only_go_up_from_it() {
    let mut m = model();
    let deploy = |v: &str, scopes: &[&str]| DeployRequest {
        app_id: APP1.into(),
        environment: "qa".into(),
        version: v.into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        egress: vec![],
        requires_license: false,
        required_products: vec!["jira".into()],
        modules: vec![],
        remotes: vec![],
        security_policies: vec![],
    };
    // Below the skeleton of its major: refused, and no environment is left behind.
    assert_eq!(m.deploy(&deploy("1.0", &[]), T0).unwrap_err().error_type, "CONFLICT");
    assert!(m.app(APP1).unwrap().environment("qa").is_none());
    // With scopes the skeleton (which has none) cannot take a minor: the first deployment is a major.
    assert_eq!(m.deploy(&deploy("1.2", &["read:jira-work"]), T0).unwrap_err().error_type, "BAD_REQUEST");
    m.deploy(&deploy("2.0", &["read:jira-work"]), T0).unwrap();
    let env = m.app(APP1).unwrap().environment("qa").unwrap();
    let versions: Vec<&str> = env.versions.iter().map(|v| v.version.as_str()).collect();
    assert_eq!(versions, [SKELETON_VERSION, "2.0.0"]);
    assert!(env.versions[0].scopes.is_empty() && env.versions[0].required_products.is_empty());

    // An app added with an environment declared without versions has its skeleton too.
    let app: SeedApp = serde_json::from_value(serde_json::json!({
        "id": "ari:cloud:ecosystem::app/00000000-0000-4000-8000-00000000abcd",
        "owner": m.accounts[0].email.clone(),
        "environments": [{"key": "production"}],
    }))
    .unwrap();
    m.add_app(&app, T0).unwrap();
    let env = m.app(&app.id).unwrap().environment("production").unwrap();
    assert_eq!(env.versions.iter().map(|v| v.version.as_str()).collect::<Vec<_>>(), [SKELETON_VERSION]);
}

// Which products a version installs into: cross-product apps (required products) and
// single-product apps (the products of their modules).

const APP4: &str = "ari:cloud:ecosystem::app/6f1c2d3e-0000-4000-8000-000000000004";
const WAYNE: &str = "wayne.atlassian.net";

/// The seed's model plus a site with jira, confluence and compass (administered by the seed's
/// account) and app APP4 of that account, whose production environment has `versions`.
fn products_model(versions: serde_json::Value) -> Model {
    let mut m = model();
    m.add_site(SeedSite {
        host_name: WAYNE.into(),
        products: vec!["jira".into(), "confluence".into(), "compass".into()],
        admins: vec![ACME.into()],
        ..Default::default()
    })
    .unwrap();
    let app: SeedApp = serde_json::from_value(serde_json::json!({
        "id": APP4, "owner": ACME, "name": "products-app",
        "environments": [{"key": "production", "versions": versions}],
    }))
    .unwrap();
    m.add_app(&app, T0).unwrap();
    m
}

fn app4_input(m: &Model, context: String, version: Option<&str>) -> InstallInput {
    InstallInput {
        app_id: APP4.into(),
        environment_key: "production".into(),
        context,
        version_id: version.map(|v| version_id(m, APP4, "production", v)),
        compute_only: false,
    }
}

/// Installs APP4 into `product` on WAYNE and lets the task finish; answers the installation.
fn app4_installed(m: &mut Model, product: &str, version: Option<&str>) -> Installation {
    let input = app4_input(m, ctx(m, WAYNE, product), version);
    let task = m.install(&acme(m), &input, T0).expect("accepted");
    m.advance(T0 + 1000);
    let t = m.task(&task).unwrap();
    assert_eq!(t.state, TaskState::Complete, "{:?}", t.errors);
    m.installation(t.installation_id.as_deref().unwrap()).unwrap().clone()
}

/// `installApp` of APP4 into `target` (a product of WAYNE, or an installation context) must be
/// refused at once: no task, no installation. Answers the error.
fn app4_refused(m: &mut Model, target: &str, version: Option<&str>) -> PlatformError {
    let (tasks, installations) = (m.tasks.len(), m.installations.len());
    let context = if target.starts_with("ari:") { target.to_string() } else { ctx(m, WAYNE, target) };
    let input = app4_input(m, context, version);
    let e = m.install(&acme(m), &input, T0).expect_err("refused");
    assert_eq!((e.error_type.as_str(), e.status_code), ("BAD_REQUEST", 400), "{e}");
    assert_eq!((m.tasks.len(), m.installations.len()), (tasks, installations), "nothing created: {e}");
    e
}

#[test]
fn a_confluence_only_app_installs_into_confluence_and_is_refused_on_jira() {
    let mut m = products_model(serde_json::json!([
        {"version": "1.0.0", "modules": ["confluence:contentBylineItem", "sql"]},
        {"version": "2.0.0", "modules": ["sql", "core:function"]},
    ]));
    let v1 = m.version(&version_id(&m, APP4, "production", "1.0.0")).unwrap().2.clone();
    assert_eq!(v1.modules, ["confluence:contentBylineItem", "sql"], "the seed's modules are the version's");
    assert_eq!(v1.supported_products(), ["confluence"]);

    // Jira: the app has no jira module.
    let e = app4_refused(&mut m, "jira", Some("1.0.0"));
    assert!(e.message.contains("declares no modules for jira") && e.message.contains("supports confluence"), "{e}");
    // A version without product modules (sql and functions only) installs nowhere.
    let e = app4_refused(&mut m, "confluence", Some("2.0.0"));
    assert!(e.message.contains("declares no modules for confluence") && e.message.contains("no product"), "{e}");
    // Neither does an environment's skeleton.
    m.deploy(
        &serde_json::from_value(serde_json::json!({"appId": APP4, "environment": "qa", "version": "2.0.0"})).unwrap(),
        T0,
    )
    .unwrap();
    let mut skeleton = app4_input(&m, ctx(&m, WAYNE, "confluence"), None);
    skeleton.environment_key = "qa".into();
    skeleton.version_id = Some(m.app(APP4).unwrap().environment("qa").unwrap().versions[0].id.clone());
    let e = m.install(&acme(&m), &skeleton, T0).unwrap_err();
    assert!(e.message.contains("declares no modules for confluence"), "{e}");
    assert!(m.tasks.is_empty());

    // Confluence: accepted and installed.
    let i = app4_installed(&mut m, "confluence", Some("1.0.0"));
    assert_eq!((i.product.as_str(), i.context.as_str()), ("confluence", ctx(&m, WAYNE, "confluence").as_str()));
    assert!(!m.installed(APP4, "production", &i.cloud_id, "jira"));
}

#[test]
fn a_cross_product_app_installs_into_its_required_products_before_an_optional_one() {
    let mut m = products_model(serde_json::json!([{
        "version": "1.0.0", "requiredProducts": ["jira", "confluence"],
        "modules": ["jira:issuePanel", "confluence:contentBylineItem", "compass:adminPage"],
    }]));
    let v = m.version(&version_id(&m, APP4, "production", "1.0.0")).unwrap().2.clone();
    assert_eq!(v.optional_products(), ["compass"]);

    // Compass is optional: refused until jira and confluence are both installed on the site.
    let e = app4_refused(&mut m, "compass", None);
    assert!(e.message.contains("optional product") && e.message.contains("not installed: jira, confluence"), "{e}");
    let jira = app4_installed(&mut m, "jira", None);
    let e = app4_refused(&mut m, "compass", None);
    assert!(e.message.contains("not installed: confluence"), "{e}");
    // A confluence install still running does not count either.
    let input = app4_input(&m, ctx(&m, WAYNE, "confluence"), None);
    let task = m.install(&acme(&m), &input, T0).unwrap();
    app4_refused(&mut m, "compass", None);
    m.advance(T0 + 1000);
    assert_eq!(m.task(&task).unwrap().state, TaskState::Complete);
    let confluence = m.installation(m.task(&task).unwrap().installation_id.as_deref().unwrap()).unwrap().clone();
    // Now compass is accepted.
    let compass = app4_installed(&mut m, "compass", None);

    // One installation per product, each with its own id and installation context.
    let ids: BTreeSet<&str> = [&jira, &confluence, &compass].iter().map(|i| i.id.as_str()).collect();
    let contexts: BTreeSet<&str> = [&jira, &confluence, &compass].iter().map(|i| i.context.as_str()).collect();
    assert_eq!((ids.len(), contexts.len()), (3, 3));
    assert_eq!(compass.context, ctx(&m, WAYNE, "compass"));
}

#[test]
fn bitbucket_is_refused() {
    let workspace = "ari:cloud:bitbucket::workspace/00000000-0000-4000-8000-0000000000bb";
    let mut m = products_model(serde_json::json!([
        {"version": "1.0.0", "requiredProducts": ["jira"], "modules": ["jira:issuePanel"]},
        {"version": "2.0.0", "modules": ["confluence:contentBylineItem"]},
        {"version": "3.0.0", "modules": ["bitbucket:repoPullRequestCard"]},
    ]));
    // Cross-product apps are for sited products only.
    let e = app4_refused(&mut m, workspace, Some("1.0.0"));
    assert!(e.message.contains("bitbucket is a workspace product") && e.message.contains("required: jira"), "{e}");
    // A confluence app has no bitbucket module.
    let e = app4_refused(&mut m, workspace, Some("2.0.0"));
    assert!(e.message.contains("declares no modules for bitbucket"), "{e}");
    // A bitbucket app's context is a Bitbucket workspace, which the emulator does not have.
    let e = app4_refused(&mut m, workspace, Some("3.0.0"));
    assert!(e.message.contains("bitbucket workspace"), "{e}");
}

#[test]
fn an_upgrade_to_a_version_that_drops_the_product_is_refused() {
    let mut m = products_model(serde_json::json!([
        {"version": "1.0.0", "modules": ["confluence:contentBylineItem"]},
        {"version": "1.2.0", "modules": ["confluence:contentBylineItem", "confluence:globalPage"]},
        {"version": "2.0.0", "modules": ["jira:issuePanel"]},
    ]));
    let installation = app4_installed(&mut m, "confluence", Some("1.0.0"));
    let tasks = m.tasks.len();
    let to = |m: &Model, v: &str| app4_input(m, installation.context.clone(), Some(v));

    let e = m.upgrade(&acme(&m), &to(&m, "2.0.0"), T0).unwrap_err();
    assert_eq!((e.error_type.as_str(), e.status_code), ("BAD_REQUEST", 400));
    assert!(e.message.contains("declares no modules for confluence") && e.message.contains("supports jira"), "{e}");
    assert_eq!(m.tasks.len(), tasks, "no task");
    // The customer's admin cannot either.
    let req = SiteUpgradeRequest {
        app_id: APP4.into(),
        environment: "production".into(),
        site: WAYNE.into(),
        product: "confluence".into(),
        version: Some("2.0.0".into()),
    };
    assert_eq!(m.site_admin_upgrade(&req, T0).unwrap_err().error_type, "BAD_REQUEST");
    assert_eq!(m.installation(&installation.id).unwrap().version_id, installation.version_id);

    // A version that keeps confluence is accepted.
    let task = m.upgrade(&acme(&m), &to(&m, "1.2.0"), T0).unwrap();
    m.advance(T0 + 1000);
    assert_eq!(m.task(&task).unwrap().state, TaskState::Complete);
    assert_eq!(m.installation(&installation.id).unwrap().version_id, version_id(&m, APP4, "production", "1.2.0"));
}

#[test]
fn modules_come_from_deploys_and_seeds_and_seeded_installations_follow_the_rule() {
    let mut m = products_model(serde_json::json!([{"version": "1.0.0", "modules": ["confluence:contentBylineItem"]}]));
    let req: DeployRequest = serde_json::from_value(serde_json::json!({
        "appId": APP4, "version": "3.0.0", "modules": ["jira:issuePanel", "sql"],
    }))
    .unwrap();
    let out = m.deploy(&req, T0).unwrap();
    assert_eq!(m.version(&out.version_id).unwrap().2.modules, ["jira:issuePanel", "sql"]);
    let bad: DeployRequest =
        serde_json::from_value(serde_json::json!({"appId": APP4, "version": "4.0.0", "modules": [" "]})).unwrap();
    assert_eq!(m.deploy(&bad, T0).unwrap_err().error_type, "BAD_REQUEST");

    // A seeded installation must be one the platform would have accepted.
    let mut s = seed();
    s.apps[1].environments[0].versions.iter_mut().for_each(|v| v.required_products.clear());
    s.installations.push(crate::seed::SeedInstallation {
        id: None,
        app_id: APP2.into(),
        environment: "production".into(),
        site: "acme.atlassian.net".into(),
        product: "confluence".into(),
        version: None,
    });
    let e = Model::from_seed(&s, Settings::default(), T0).unwrap_err();
    assert!(e.message.contains("declares no modules for confluence"), "{e}");
    s.apps[1].environments[0].versions.iter_mut().for_each(|v| v.modules = vec!["confluence:globalPage".into()]);
    assert_eq!(Model::from_seed(&s, Settings::default(), T0).unwrap().installations.len(), 1);
}

/// A deploy of APP1's production, as `forge deploy` would send it, with the seed's scopes and egress.
fn app1_deploy(v: &str, remotes: &[(&str, &str)], policies: &[(SecurityPolicyType, &[&str])]) -> DeployRequest {
    DeployRequest {
        app_id: APP1.into(),
        environment: "production".into(),
        version: v.into(),
        scopes: vec!["read:jira-work".into(), "write:jira-work".into()],
        egress: vec![SeedEgress::Address("api.insights.acme.example".into())],
        requires_license: false,
        required_products: vec!["jira".into()],
        modules: vec![],
        remotes: remotes.iter().map(|(k, u)| Remote { key: k.to_string(), base_url: u.to_string() }).collect(),
        security_policies: policies
            .iter()
            .map(|(t, ps)| SecurityPolicy { kind: *t, policies: ps.iter().map(|p| p.to_string()).collect() })
            .collect(),
    }
}

#[test]
fn a_new_remote_or_content_security_policy_needs_a_new_major() {
    let mut m = model();
    m.settings.minor_rollout_ms = 0;
    let on_2_0 = installed(&mut m, APP1, "acme.atlassian.net", Some("2.0.0"), T0);
    let api = [("api-backend", "https://api.example.com")];

    // The team adds a backend to 2.x as a minor: the platform would ask every site admin to
    // consent, so it must be a new major; nothing is deployed and nobody moves.
    let e = m.deploy(&app1_deploy("2.1.0", &api, &[]), T0).unwrap_err();
    assert_eq!(e.error_type, "BAD_REQUEST");
    assert!(
        e.message.contains("adds remote api-backend https://api.example.com")
            && e.message.contains("deploy it as a new major"),
        "{e}"
    );
    assert_eq!(m.app(APP1).unwrap().environment("production").unwrap().latest().unwrap().version, "2.0.0");
    assert_eq!(m.installation(&on_2_0).unwrap().version_id, version_id(&m, APP1, "production", "2.0.0"));

    // As 3.0.0 it is accepted, moves nobody, and the version has the remote.
    let out = m.deploy(&app1_deploy("3.0.0", &api, &[]), T0).unwrap();
    assert!(out.upgraded_installations.is_empty() && out.scheduled_installations.is_empty());
    let v3 = m.version(&out.version_id).unwrap().2.clone();
    assert_eq!(v3.remotes, vec![Remote { key: "api-backend".into(), base_url: "https://api.example.com".into() }]);
    // Installations on 2.0.0 cannot be bulk-upgraded to it either (that needs no consent).
    assert!(!m.upgradeable(&version_id(&m, APP1, "production", "2.0.0"), &out.version_id).unwrap());

    // The same remote again is a minor; moving it to another host is a new remote; dropping it is not.
    m.deploy(&app1_deploy("3.1.0", &api, &[]), T0).unwrap();
    let e = m.deploy(&app1_deploy("3.2.0", &[("api-backend", "https://api2.example.com")], &[]), T0).unwrap_err();
    assert!(e.message.contains("adds remote api-backend https://api2.example.com"), "{e}");
    m.deploy(&app1_deploy("3.2.0", &[], &[]), T0).unwrap();

    // Content security policies: a new option (of a known type or a new one) needs a major.
    let inline: &[&str] = &["unsafe-inline"];
    let e = m.deploy(&app1_deploy("3.3.0", &[], &[(SecurityPolicyType::Scripts, inline)]), T0).unwrap_err();
    assert!(e.message.contains("adds the scripts content security policy unsafe-inline"), "{e}");
    m.deploy(&app1_deploy("4.0.0", &[], &[(SecurityPolicyType::Scripts, inline)]), T0).unwrap();
    let more: &[&str] = &["unsafe-inline", "unsafe-hashes"];
    let e = m.deploy(&app1_deploy("4.1.0", &[], &[(SecurityPolicyType::Scripts, more)]), T0).unwrap_err();
    assert!(e.message.contains("scripts content security policy unsafe-hashes"), "{e}");
    let styles = [(SecurityPolicyType::Scripts, inline), (SecurityPolicyType::Styles, inline)];
    let e = m.deploy(&app1_deploy("4.1.0", &[], &styles), T0).unwrap_err();
    assert!(e.message.contains("styles content security policy unsafe-inline"), "{e}");
    // Entries of one type are merged, each option once; dropping an option needs no major.
    let split = [(SecurityPolicyType::Scripts, inline), (SecurityPolicyType::Scripts, inline)];
    let out = m.deploy(&app1_deploy("4.1.0", &[], &split), T0).unwrap();
    let merged = &m.version(&out.version_id).unwrap().2.security_policies;
    assert_eq!(
        merged,
        &vec![SecurityPolicy { kind: SecurityPolicyType::Scripts, policies: vec!["unsafe-inline".into()] }]
    );
    m.deploy(&app1_deploy("4.2.0", &[], &[]), T0).unwrap();

    // Bad remotes are refused.
    for bad in [("", "https://x.example"), ("k", "http://x.example"), ("k", "https://"), ("k k", "https://x.example")] {
        let e = m.deploy(&app1_deploy("5.0.0", &[bad], &[]), T0).unwrap_err();
        assert_eq!(e.error_type, "BAD_REQUEST", "{bad:?}");
    }
    let twice = [("k", "https://a.example"), ("k", "https://b.example")];
    assert!(m.deploy(&app1_deploy("5.0.0", &twice, &[]), T0).unwrap_err().message.contains("appears twice"));
    // The skeleton of a new environment has none.
    let mut staging = app1_deploy("2.0.0", &api, &[]);
    staging.environment = "staging".into();
    m.deploy(&staging, T0).unwrap();
    let skeleton = &m.app(APP1).unwrap().environment("staging").unwrap().versions[0];
    assert!(skeleton.remotes.is_empty() && skeleton.security_policies.is_empty());
}

#[test]
fn remotes_and_security_policies_come_from_seeds_and_admin_apps() {
    let app = |versions: serde_json::Value| -> SeedApp {
        serde_json::from_value(serde_json::json!({
            "id": "ari:cloud:ecosystem::app/6f1c2d3e-0000-4000-8000-000000000009", "owner": ACME,
            "environments": [{"key": "production", "versions": versions}],
        }))
        .unwrap()
    };
    let mut m = model();
    m.add_app(
        &app(serde_json::json!([{"version": "1.0.0",
            "remotes": [{"key": "api-backend", "baseUrl": "https://api.example.com"}],
            "securityPolicies": [{"type": "scripts", "policies": ["unsafe-inline"]},
                                 {"type": "STYLES", "policies": ["unsafe-inline"]}]}])),
        T0,
    )
    .unwrap();
    let v = m.app("ari:cloud:ecosystem::app/6f1c2d3e-0000-4000-8000-000000000009").unwrap().environments[0].versions[0]
        .clone();
    assert_eq!(v.remotes[0].base_url, "https://api.example.com");
    let kinds: Vec<SecurityPolicyType> = v.security_policies.iter().map(|p| p.kind).collect();
    assert_eq!(kinds, [SecurityPolicyType::Scripts, SecurityPolicyType::Styles]);
    // The gateway has no other type; a bad remote in a seed is an error, not a panic.
    let bad: Result<SeedApp, _> = serde_json::from_value(serde_json::json!({
        "id": "ari:cloud:ecosystem::app/6f1c2d3e-0000-4000-8000-00000000000a", "owner": ACME,
        "environments": [{"key": "production", "versions": [{"version": "1.0.0",
            "securityPolicies": [{"type": "frame-ancestors", "policies": ["self"]}]}]}],
    }));
    assert!(bad.is_err());
    let mut m = model();
    let e =
        m.add_app(&app(serde_json::json!([{"version": "1.0.0", "remotes": [{"key": "k", "baseUrl": "ftp://x"}]}])), T0);
    assert_eq!(e.unwrap_err().error_type, "BAD_REQUEST");
}

#[test]
fn a_code_only_upgrade_moves_the_code_and_keeps_the_permissions() {
    let mut m = model();
    m.settings.minor_rollout_ms = 0;
    let caller = acme(&m);
    let a = installed(&mut m, APP1, "acme.atlassian.net", Some("1.0.0"), T0);
    let v1_0 = version_id(&m, APP1, "production", "1.0.0");
    // A new major that asks for a remote and a scope the site admin never granted.
    let mut v3 = app1_deploy("3.0.0", &[("api-backend", "https://api.example.com")], &[]);
    v3.scopes.push("manage:jira-webhook".into());
    let v3_id = m.deploy(&v3, T0).unwrap().version_id;

    // The team moves only the code there: the permissions stay on 1.0.0.
    let mut code = install_input(&m, APP1, "acme.atlassian.net", Some("3.0.0"));
    code.compute_only = true;
    let t = m.upgrade(&caller, &code, T0 + 1000).unwrap();
    assert!(m.task(&t).unwrap().compute_only);
    m.advance(T0 + 2000);
    assert_eq!(m.task(&t).unwrap().state, TaskState::Complete);
    let i = m.installation(&a).unwrap();
    assert_eq!((i.version_id.as_str(), i.compute_version()), (v1_0.as_str(), v3_id.as_str()));
    assert_eq!(m.upgrade(&caller, &code, T0 + 2000).unwrap_err().error_type, "INSTALLATION_ALREADY_UPGRADED");
    // It survives a restart of the emulator (the state file).
    let restored = Model::restore(&serde_json::to_string(&m).unwrap(), &seed(), Settings::default()).unwrap();
    assert_eq!(restored.installation(&a).unwrap().compute_version(), v3_id);

    // A minor of the installed major moves the permissions; the newer code stays.
    let v1_3 = m.deploy(&DeployRequest { scopes: vec!["read:jira-work".into()], ..app1_deploy("1.3.0", &[], &[]) }, T0);
    let v1_3 = v1_3.unwrap().version_id;
    let i = m.installation(&a).unwrap();
    assert_eq!((i.version_id.as_str(), i.compute_version()), (v1_3.as_str(), v3_id.as_str()));
    // Code older than the permissions is refused, as the platform refuses it.
    let mut older = install_input(&m, APP1, "acme.atlassian.net", Some("1.2.0"));
    older.compute_only = true;
    let e = m.upgrade(&caller, &older, T0 + 3000).unwrap_err();
    assert_eq!(e.error_type, "VERSION_DECREASES_ROLLING_RELEASE");
    assert!(e.message.contains("(1.3.0)") && e.message.contains("(1.2.0)"), "{e}");
    // So is code whose licensing differs from the permissions version's.
    let paid = m.deploy(&DeployRequest { requires_license: true, ..app1_deploy("4.0.0", &[], &[]) }, T0).unwrap();
    let mut to_paid = install_input(&m, APP1, "acme.atlassian.net", Some("4.0.0"));
    to_paid.compute_only = true;
    assert_eq!(m.upgrade(&caller, &to_paid, T0 + 3000).unwrap_err().error_type, "LICENSE_CHANGE_ROLLING_RELEASE");
    assert_ne!(m.installation(&a).unwrap().compute_version(), paid.version_id);

    // Once the admin consents (a full upgrade to 3.0.0), code and permissions are one version again.
    let full = install_input(&m, APP1, "acme.atlassian.net", Some("3.0.0"));
    m.upgrade(&caller, &full, T0 + 4000).unwrap();
    m.advance(T0 + 5000);
    let i = m.installation(&a).unwrap();
    assert_eq!((i.version_id.as_str(), i.compute_version_id.as_deref()), (v3_id.as_str(), None));

    // Code-only within a major, then a minor of it: both move to the minor.
    let b = installed(&mut m, APP1, "globex.atlassian.net", Some("1.0.0"), T0 + 6000);
    let mut code = install_input(&m, APP1, "globex.atlassian.net", Some("1.3.0"));
    code.compute_only = true;
    m.upgrade(&caller, &code, T0 + 7000).unwrap();
    m.advance(T0 + 8000);
    assert_eq!(m.installation(&b).unwrap().compute_version(), v1_3);
    assert_eq!(m.installation(&b).unwrap().version_id, v1_0);
    let v1_4 = m.deploy(&DeployRequest { scopes: vec!["read:jira-work".into()], ..app1_deploy("1.4.0", &[], &[]) }, T0);
    let v1_4 = v1_4.unwrap().version_id;
    let i = m.installation(&b).unwrap();
    assert_eq!((i.version_id.as_str(), i.compute_version_id.as_deref()), (v1_4.as_str(), None));
}

/// APP1 shared (the seed saved its app details) with a fresh link for `products`; answers the
/// link's signature.
fn shared_with_link(m: &mut Model, products: &[&str]) -> String {
    let caller = acme(m);
    m.set_distribution_status(&caller, APP1, Some(DistributionStatus::Public), None).unwrap();
    let products: Vec<String> = products.iter().map(|p| p.to_string()).collect();
    m.generate_link(&caller, APP1, &products, T0).unwrap().signature
}

fn link_req(signature: &str, site: &str, product: &str, admin: &str) -> LinkInstallRequest {
    LinkInstallRequest {
        app_id: APP1.into(),
        environment: None,
        site: site.into(),
        product: product.into(),
        signature: signature.into(),
        admin: admin.into(),
    }
}

/// A link install that must be refused: nothing installed. Answers the error.
fn link_refused(m: &mut Model, req: &LinkInstallRequest) -> PlatformError {
    let before = m.installations.len();
    let e = m.link_install(req, T0).expect_err("refused");
    assert_eq!(m.installations.len(), before, "nothing installed: {e}");
    e
}

#[test]
fn a_link_installs_production_for_an_admin_of_the_product_on_a_site_with_all_its_products() {
    let mut m = model();
    let sig = shared_with_link(&mut m, &["jira", "confluence"]);
    let initech = "initech.atlassian.net";
    const JIRA_ADMIN: &str = "jira-admin@initech.example";

    // A site lacking one of the link's products: refused, naming it and the site.
    let info = m
        .add_site(SeedSite {
            host_name: "customer.atlassian.net".into(),
            products: vec!["jira".into()],
            product_admins: [("jira".to_string(), vec!["boss@customer.example".to_string()])].into(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(info.product_admins["jira"], vec!["boss@customer.example".to_string()]);
    let e = link_refused(&mut m, &link_req(&sig, "customer.atlassian.net", "jira", "boss@customer.example"));
    assert_eq!((e.error_type.as_str(), e.status_code), ("DISTRIBUTION_LINK_INVALID", 403));
    assert!(e.message.contains("customer.atlassian.net has no confluence"), "{e}");

    // Any environment but production: refused.
    let mut staging = link_req(&sig, initech, "jira", JIRA_ADMIN);
    staging.environment = Some("default".into());
    let e = link_refused(&mut m, &staging);
    assert_eq!((e.error_type.as_str(), e.status_code), ("BAD_REQUEST", 400));
    assert!(e.message.contains("an installation link installs the production environment"), "{e}");

    // Not an admin of the product (an admin of another one, or nobody): refused.
    let e = link_refused(&mut m, &link_req(&sig, initech, "jira", "confluence-admin@initech.example"));
    assert_eq!((e.error_type.as_str(), e.status_code), ("PERMISSION_DENIED", 403));
    assert_eq!(e.message, "confluence-admin@initech.example is not an admin of jira on initech.atlassian.net");
    let e = link_refused(&mut m, &link_req(&sig, initech, "jira", ACME));
    assert_eq!(e.error_type, "PERMISSION_DENIED", "a developer account administers no customer's site");
    let e = link_refused(&mut m, &link_req(&sig, initech, "jira", " "));
    assert_eq!(e.error_type, "BAD_REQUEST");

    // The product's admin (e-mails match whatever their case): admitted, into production.
    let mut ok = link_req(&sig, initech, "jira", "Jira-Admin@Initech.example");
    ok.environment = Some("production".into());
    let done = m.link_install(&ok, T0).unwrap();
    let inst = m.installation(&done.installation_id).unwrap();
    assert_eq!((inst.environment_key.as_str(), inst.product.as_str()), ("production", "jira"));
    let confluence = link_req(&sig, initech, "confluence", "confluence-admin@initech.example");
    m.link_install(&confluence, T0).unwrap();

    // A developer account administering the site is an admin of every product there, by e-mail
    // or account id.
    m.link_install(&link_req(&sig, "globex.atlassian.net", "jira", ACME), T0).unwrap();
    let by_id = acme(&m);
    m.link_install(&link_req(&sig, "globex.atlassian.net", "confluence", &by_id), T0).unwrap();

    // productAdmins only of products the site has.
    let e = m
        .add_site(SeedSite {
            host_name: "x.atlassian.net".into(),
            products: vec!["jira".into()],
            product_admins: [("confluence".to_string(), vec!["a@x".to_string()])].into(),
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(e.error_type, "BAD_REQUEST");
}

#[test]
fn a_listed_or_licensed_app_is_never_shared_by_link() {
    let mut m = model();
    let caller = acme(&m);
    let sig = shared_with_link(&mut m, &["jira"]);
    let req = link_req(&sig, "acme.atlassian.net", "jira", ACME);

    // Listed (or submitted): sharing stays as it was, but the link admits nobody, and neither
    // sharing nor a new link is accepted.
    let out = m.set_listed(APP1, true).unwrap();
    assert_eq!((out.distribution_status, out.listed_on_marketplace), (DistributionStatus::Public, true));
    assert_eq!(out.link.as_ref().map(|l| l.signature.as_str()), Some(sig.as_str()));
    let e = link_refused(&mut m, &req);
    assert_eq!((e.error_type.as_str(), e.status_code), ("APP_LISTED_ON_MARKETPLACE", 403));
    let e = m.set_distribution_status(&caller, APP1, Some(DistributionStatus::Public), None).unwrap_err();
    assert_eq!((e.error_type.as_str(), e.status_code), ("APP_LISTED_ON_MARKETPLACE", 409));
    assert!(e.message.contains("can't be shared via installation link"), "{e}");
    let e = m.generate_link(&caller, APP1, &["jira".to_string()], T0).unwrap_err();
    assert_eq!((e.error_type.as_str(), e.status_code), ("APP_LISTED_ON_MARKETPLACE", 409));
    let e = m.set_distribution_status(&caller, APP1, Some(DistributionStatus::Development), None).unwrap_err();
    assert_eq!(e.error_type, "CONFLICT", "a listed app cannot be made private either");
    m.set_listed(APP1, false).unwrap();
    m.link_install(&req, T0).unwrap();

    // Licensed in production: the same, though a licensed version elsewhere does not matter.
    let licensed = |env: &str, v: &str| DeployRequest {
        app_id: APP1.into(),
        environment: env.into(),
        version: v.into(),
        scopes: vec!["read:jira-work".into(), "write:jira-work".into()],
        egress: vec![SeedEgress::Address("api.insights.acme.example".into())],
        requires_license: true,
        required_products: vec!["jira".into()],
        modules: vec![],
        remotes: vec![],
        security_policies: vec![],
    };
    m.deploy(&licensed("default", "3.0.0"), T0).unwrap();
    m.link_install(&link_req(&sig, "globex.atlassian.net", "jira", ACME), T0).unwrap();
    m.deploy(&licensed("production", "3.0.0"), T0).unwrap();
    let e = link_refused(&mut m, &link_req(&sig, "initech.atlassian.net", "jira", "jira-admin@initech.example"));
    assert_eq!((e.error_type.as_str(), e.status_code), ("APP_LICENSED", 403));
    let e = m.set_distribution_status(&caller, APP1, Some(DistributionStatus::Public), None).unwrap_err();
    assert_eq!((e.error_type.as_str(), e.status_code), ("APP_LICENSED", 409));
    let e = m.generate_link(&caller, APP1, &["jira".to_string()], T0).unwrap_err();
    assert_eq!((e.error_type.as_str(), e.status_code), ("APP_LICENSED", 409));
    // Turning sharing off is still possible.
    m.set_distribution_status(&caller, APP1, Some(DistributionStatus::Development), None).unwrap();
}

#[test]
fn sharing_needs_the_app_details_and_a_production_deployment() {
    let mut m = model();
    let caller = acme(&m);
    let public = |d: AppDetailsUpdate| AppDetailsUpdate { distribution_status: Some(DistributionStatus::Public), ..d };
    // APP2 has no app details: every missing one is named, by its input name; nothing changes.
    let update = public(AppDetailsUpdate { privacy_policy: Some("https://x.example/p".into()), ..Default::default() });
    let e = m.update_app_details(&caller, APP2, &update).unwrap_err();
    assert_eq!((e.error_type.as_str(), e.status_code), ("VALIDATION_ERROR", 400));
    assert_eq!(e.message, "vendorName, termsOfService: required to share the app");
    let app2 = m.app(APP2).unwrap();
    assert_eq!((app2.distribution_status, app2.privacy_policy.as_deref()), (DistributionStatus::Development, None));
    let complete = public(AppDetailsUpdate {
        vendor_name: Some(" Acme ".into()),
        privacy_policy: Some("https://x.example/p".into()),
        terms_of_service: Some("https://x.example/t".into()),
        ..Default::default()
    });
    m.update_app_details(&caller, APP2, &complete).unwrap();
    let app2 = m.app(APP2).unwrap();
    assert_eq!((app2.distribution_status, app2.vendor_name.as_deref()), (DistributionStatus::Public, Some("Acme")));
    // Off and on again: the stored details do.
    m.set_distribution_status(&caller, APP2, Some(DistributionStatus::Development), None).unwrap();
    m.set_distribution_status(&caller, APP2, Some(DistributionStatus::Public), None).unwrap();
    // The owner only, and only with the capability.
    let e = m.update_app_details("other-account", APP2, &complete).unwrap_err();
    assert_eq!(e.error_type, "PERMISSION_DENIED");

    // Only the skeleton in production: nothing deployed there.
    let app: SeedApp = serde_json::from_value(serde_json::json!({
        "id": APP4, "owner": ACME, "vendorName": "Acme", "privacyPolicy": "p", "termsOfService": "t",
        "environments": [{"key": "production"}, {"key": "default", "versions": [{"version": "1.0.0"}]}],
    }))
    .unwrap();
    m.add_app(&app, T0).unwrap();
    assert_eq!(m.app(APP4).unwrap().environment("production").unwrap().versions.len(), 1);
    let e = m.set_distribution_status(&caller, APP4, Some(DistributionStatus::Public), None).unwrap_err();
    assert_eq!((e.error_type.as_str(), e.status_code), ("APP_NOT_DEPLOYED", 409));
    assert!(e.message.contains("deploy the app to production first"), "{e}");
    m.deploy(
        &serde_json::from_value(serde_json::json!({"appId": APP4, "version": "2.0.0", "requiredProducts": ["jira"]}))
            .unwrap(),
        T0,
    )
    .unwrap();
    m.set_distribution_status(&caller, APP4, Some(DistributionStatus::Public), None).unwrap();
}

#[test]
fn the_console_stops_and_starts_sharing_with_the_same_link_and_generating_retires_the_old_one() {
    let mut m = model();
    // The console acts as the owner whether or not the API may.
    m.settings.distribution = false;
    let req = |action| ConsoleRequest::new(APP1, action);
    let out = m.console(&req(ConsoleAction::StartSharing), T0).unwrap();
    assert_eq!(
        (out.distribution_status, out.listed_on_marketplace, out.link),
        (DistributionStatus::Public, false, None)
    );
    let mut generate = req(ConsoleAction::GenerateLink);
    generate.products = vec!["jira".into()];
    let first = m.console(&generate, T0).unwrap().link.unwrap();
    assert_eq!(first.products, vec!["jira".to_string()]);

    // Stopped: the link stays but admits nobody; started again: the same link admits again.
    let out = m.console(&req(ConsoleAction::StopSharing), T0).unwrap();
    assert_eq!((out.distribution_status, out.link.as_ref()), (DistributionStatus::Development, Some(&first)));
    let e = link_refused(&mut m, &link_req(&first.signature, "acme.atlassian.net", "jira", ACME));
    assert_eq!(e.error_type, "APP_NOT_SHARED");
    let e = m.console(&generate, T0).unwrap_err();
    assert_eq!(e.error_type, "APP_NOT_SHARED", "no link while sharing is off");
    let out = m.console(&req(ConsoleAction::StartSharing), T0).unwrap();
    assert_eq!((out.distribution_status, out.link.as_ref()), (DistributionStatus::Public, Some(&first)));
    m.link_install(&link_req(&first.signature, "acme.atlassian.net", "jira", ACME), T0).unwrap();

    // A new link disables the previous one, for good.
    let second = m.console(&generate, T0 + 1).unwrap().link.unwrap();
    assert_ne!(second.signature, first.signature);
    m.console(&req(ConsoleAction::StopSharing), T0).unwrap();
    m.console(&req(ConsoleAction::StartSharing), T0).unwrap();
    let e = link_refused(&mut m, &link_req(&first.signature, "globex.atlassian.net", "jira", ACME));
    assert_eq!(e.error_type, "DISTRIBUTION_LINK_INVALID");
    assert_eq!(m.app(APP1).unwrap().retired_link_signatures, vec![first.signature.clone()]);
    m.link_install(&link_req(&second.signature, "globex.atlassian.net", "jira", ACME), T0).unwrap();

    // Misplaced fields, unknown apps.
    let mut stop = req(ConsoleAction::StopSharing);
    stop.products = vec!["jira".into()];
    assert_eq!(m.console(&stop, T0).unwrap_err().error_type, "BAD_REQUEST");
    let mut details = generate.clone();
    details.vendor_name = Some("x".into());
    assert_eq!(m.console(&details, T0).unwrap_err().error_type, "BAD_REQUEST");
    let nope = ConsoleRequest::new("ari:cloud:ecosystem::app/nope", ConsoleAction::StartSharing);
    assert_eq!(m.console(&nope, T0).unwrap_err().error_type, "APP_NOT_FOUND");
    assert_eq!(m.set_listed("ari:cloud:ecosystem::app/nope", true).unwrap_err().error_type, "APP_NOT_FOUND");

    // startSharing needs the details as updateAppDetails does: saved before, or given with it.
    let e = m.console(&ConsoleRequest::new(APP2, ConsoleAction::StartSharing), T0).unwrap_err();
    assert_eq!(e.message, "vendorName, privacyPolicy, termsOfService: required to share the app");
    let mut save = ConsoleRequest::new(APP2, ConsoleAction::SaveDetails);
    save.vendor_name = Some("Acme".into());
    save.privacy_policy = Some("https://x.example/p".into());
    assert_eq!(m.console(&save, T0).unwrap().distribution_status, DistributionStatus::Development);
    let mut start = ConsoleRequest::new(APP2, ConsoleAction::StartSharing);
    start.terms_of_service = Some("https://x.example/t".into());
    assert_eq!(m.console(&start, T0).unwrap().distribution_status, DistributionStatus::Public);

    // A listed app: neither started, stopped nor linked.
    m.set_listed(APP1, true).unwrap();
    assert_eq!(m.console(&req(ConsoleAction::StartSharing), T0).unwrap_err().error_type, "APP_LISTED_ON_MARKETPLACE");
    assert_eq!(m.console(&generate, T0).unwrap_err().error_type, "APP_LISTED_ON_MARKETPLACE");
    assert_eq!(m.console(&req(ConsoleAction::StopSharing), T0).unwrap_err().error_type, "CONFLICT");
}

#[test]
fn state_persisted_before_app_details_and_product_admins_still_loads() {
    let m = model();
    let mut state = serde_json::to_value(&m).unwrap();
    for app in state["apps"].as_array_mut().unwrap() {
        for k in ["vendorName", "privacyPolicy", "termsOfService", "contactLink"] {
            app.as_object_mut().unwrap().remove(k);
        }
    }
    for site in state["sites"].as_array_mut().unwrap() {
        site.as_object_mut().unwrap().remove("productAdmins");
    }
    let restored = Model::restore(&state.to_string(), &seed(), Settings::default()).unwrap();
    assert!(restored.app(APP1).unwrap().vendor_name.is_none());
    assert!(restored.site_by_host("initech.atlassian.net").unwrap().product_admins.is_empty());
}

fn batch_site(i: usize) -> SeedSite {
    SeedSite {
        host_name: format!("batch-{i:03}.atlassian.net"),
        products: vec!["jira".into()],
        admins: vec![ACME.into()],
        ..Default::default()
    }
}

fn batch_installation(site: &str) -> SeedInstallation {
    SeedInstallation {
        id: None,
        app_id: APP1.into(),
        environment: "production".into(),
        site: site.into(),
        product: "jira".into(),
        version: None,
    }
}

#[test]
fn a_batch_adds_sites_installations_and_link_installs_in_one_step() {
    let mut m = model();
    let caller = acme(&m);
    m.set_distribution_status(&caller, APP1, Some(DistributionStatus::Public), None).unwrap();
    let link = m.generate_link(&caller, APP1, &["jira".to_string()], T0).unwrap();
    let (sites, installations) = (m.sites.len(), m.installations.len());
    let req = BatchRequest {
        sites: (0..20).map(batch_site).collect(),
        installations: (0..20).map(|i| batch_installation(&format!("batch-{i:03}.atlassian.net"))).collect(),
        link_installs: vec![LinkInstallRequest {
            app_id: APP1.into(),
            environment: None,
            site: "initech.atlassian.net".into(),
            product: "jira".into(),
            signature: link.signature.clone(),
            admin: "jira-admin@initech.example".into(),
        }],
    };
    let out = m.batch(&req, T0).unwrap();
    assert_eq!(out, BatchOutcome { sites: 20, installations: 20, link_installs: 1 });
    assert_eq!((m.sites.len(), m.installations.len()), (sites + 20, installations + 21));
    // Installed at once, on the latest version, found as any other installation.
    let latest = version_id(&m, APP1, "production", "2.0.0");
    let by_ctx = InstallationFilter {
        app_ids: vec![APP1.into()],
        contexts: Some(vec![ctx(&m, "batch-007.atlassian.net", "jira")]),
        ..Default::default()
    };
    let found = m.installations_by_app(&caller, &by_ctx).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].version_id, latest);
    assert!(m.tasks.is_empty(), "no tasks");
    // And upgraded or uninstalled as any other.
    let input = InstallInput {
        app_id: APP1.into(),
        environment_key: "production".into(),
        context: ctx(&m, "batch-007.atlassian.net", "jira"),
        ..Default::default()
    };
    let task = m.uninstall(
        &caller,
        &UninstallInput {
            app_id: APP1.into(),
            environment_key: "production".into(),
            installation_id: None,
            context: Some(input.context.clone()),
        },
        T0,
    );
    m.advance(T0 + 1000);
    assert_eq!(m.task(&task.unwrap()).unwrap().state, TaskState::Complete);
    assert!(m.installations_by_app(&caller, &by_ctx).unwrap().is_empty());
    assert_eq!(m.installations.len(), installations + 20);
}

#[test]
fn a_refused_batch_entry_is_named_and_nothing_of_the_batch_stays() {
    let mut m = model();
    let before = serde_json::to_value(&m).unwrap();
    let revision = m.revision;
    let check = |m: &mut Model, req: BatchRequest, status: u16, entry: &str| {
        let e = m.batch(&req, T0).unwrap_err();
        assert_eq!(e.status_code, status, "{e}");
        assert!(e.message.starts_with(entry), "{e}");
        assert_eq!(serde_json::to_value(&*m).unwrap(), before, "nothing applied: {e}");
        assert_eq!(m.revision, revision);
    };
    // A site that exists (409), the same site twice in the batch.
    let mut sites: Vec<SeedSite> = (0..5).map(batch_site).collect();
    sites.push(SeedSite { host_name: "acme.atlassian.net".into(), ..Default::default() });
    check(&mut m, BatchRequest { sites, ..Default::default() }, 409, "sites[5]: ");
    let sites = vec![batch_site(1), batch_site(2), batch_site(1)];
    check(&mut m, BatchRequest { sites, ..Default::default() }, 409, "sites[2]: ");
    // An installation on a site of no such product, or twice, or of an unknown app.
    let mut bad = batch_installation("batch-000.atlassian.net");
    bad.product = "compass".into();
    let installations = vec![batch_installation("batch-001.atlassian.net"), bad];
    check(
        &mut m,
        BatchRequest { sites: (0..3).map(batch_site).collect(), installations, ..Default::default() },
        400,
        "installations[1]: ",
    );
    let installations =
        vec![batch_installation("batch-001.atlassian.net"), batch_installation("batch-001.atlassian.net")];
    check(
        &mut m,
        BatchRequest { sites: (0..3).map(batch_site).collect(), installations, ..Default::default() },
        400,
        "installations[1]: ",
    );
    let mut unknown = batch_installation("batch-001.atlassian.net");
    unknown.app_id = "ari:cloud:ecosystem::app/nope".into();
    check(
        &mut m,
        BatchRequest { sites: (0..3).map(batch_site).collect(), installations: vec![unknown], ..Default::default() },
        404,
        "installations[0]: ",
    );
    // A link install refused as POST /admin/link-install refuses it (sharing is off).
    let link_installs = vec![LinkInstallRequest {
        app_id: APP1.into(),
        environment: None,
        site: "batch-000.atlassian.net".into(),
        product: "jira".into(),
        signature: "nope".into(),
        admin: ACME.into(),
    }];
    check(
        &mut m,
        BatchRequest {
            sites: (0..3).map(batch_site).collect(),
            installations: vec![batch_installation("batch-002.atlassian.net")],
            link_installs,
        },
        403,
        "linkInstalls[0]: ",
    );
    // After all that, the same batch without the faults applies.
    let ok = BatchRequest {
        sites: (0..3).map(batch_site).collect(),
        installations: vec![batch_installation("batch-002.atlassian.net")],
        ..Default::default()
    };
    assert_eq!(m.batch(&ok, T0).unwrap(), BatchOutcome { sites: 3, installations: 1, link_installs: 0 });
    assert!(m.site_by_host("batch-002.atlassian.net").is_some());
}

#[test]
fn the_snapshot_serializes_as_the_model() {
    let mut m = model();
    let _ = installed(&mut m, APP1, "acme.atlassian.net", None, T0);
    let mut input = install_input(&m, APP2, "acme.atlassian.net", None);
    input.context = ctx(&m, "acme.atlassian.net", "confluence");
    m.install(&acme(&m), &input, T0 + 5000).unwrap();
    many_installations(&mut m, 30, "1.0.0");
    let snapshot = m.snapshot();
    // Byte for byte: the state file is what it was when the model itself was written.
    assert_eq!(serde_json::to_string(&snapshot).unwrap(), serde_json::to_string(&m).unwrap());
    // GET /admin/state: the model with its accounts, tokens left out.
    let mut dump = serde_json::to_value(&m).unwrap();
    dump.as_object_mut().unwrap().insert("accounts".into(), serde_json::to_value(&m.accounts).unwrap());
    assert_eq!(m.dump(), dump);
    assert_eq!(snapshot.dump(&m.accounts), dump);
    assert!(!dump.to_string().contains("local-dev-token"));
    // Later changes do not reach a snapshot taken before.
    let before = serde_json::to_value(&snapshot).unwrap();
    m.advance(T0 + 60_000);
    m.batch(&BatchRequest { sites: vec![batch_site(0)], ..Default::default() }, T0).unwrap();
    assert_eq!(serde_json::to_value(&snapshot).unwrap(), before);
    assert_ne!(serde_json::to_value(m.snapshot()).unwrap(), before);
}

/// The indexed lookups answer what a scan of everything in order answers.
#[test]
fn indexed_lookups_answer_as_a_scan_would() {
    let mut m = model();
    many_installations(&mut m, 40, "1.0.0");
    let caller = "other-account";
    // Some gone (as an uninstall task's completion removes them).
    for k in [3, 17, 25] {
        assert_eq!(m.installations.remove(&format!("inst-{k}")), 1);
    }
    let all: Vec<Installation> = m.installations.iter().cloned().collect();
    for s in m.sites.iter() {
        assert_eq!(m.site_by_host(&s.host_name.to_uppercase()).map(|x| &x.cloud_id), Some(&s.cloud_id));
        assert_eq!(m.site_by_cloud_id(&s.cloud_id).map(|x| &x.host_name), Some(&s.host_name));
        for a in s.products.values() {
            let first = m.sites.iter().find(|x| x.products.values().any(|v| v == a)).map(|x| &x.cloud_id);
            assert_eq!(m.site_by_activation_id(a).map(|x| &x.cloud_id), first);
        }
    }
    let ids = |v: Vec<&Installation>| v.into_iter().map(|i| i.id.clone()).collect::<Vec<_>>();
    let contexts: Vec<String> = ["site5.atlassian.net", "site17.atlassian.net", "site30.atlassian.net"]
        .iter()
        .map(|h| ctx(&m, h, "jira"))
        .chain([format!("ari:cloud:jira::site/{}", m.site_by_host("site9.atlassian.net").unwrap().cloud_id)])
        .collect();
    let by_ctx =
        InstallationFilter { app_ids: vec![APP3.into()], contexts: Some(contexts.clone()), ..Default::default() };
    let expected: Vec<String> = all
        .iter()
        .filter(|i| {
            contexts.iter().any(|c| {
                m.resolve_context(c).is_ok_and(|(s, p)| s.cloud_id == i.cloud_id && p == i.product) || c == &i.context
            })
        })
        .map(|i| i.id.clone())
        .collect();
    assert_eq!(ids(m.installations_by_app(caller, &by_ctx).unwrap()), expected);
    assert_eq!(expected, ["inst-5", "inst-9", "inst-30"]);
    let wanted = vec!["inst-30".to_string(), "inst-2".into(), "inst-3".into(), "inst-2".into()];
    let by_id = InstallationFilter { app_ids: vec![APP3.into()], ids: Some(wanted), ..Default::default() };
    assert_eq!(ids(m.installations_by_app(caller, &by_id).unwrap()), ["inst-2", "inst-30"], "creation order, once");
    let every = InstallationFilter { app_ids: vec![APP3.into(), APP3.into()], ..Default::default() };
    let expected: Vec<String> = all.iter().filter(|i| i.app_id == APP3).map(|i| i.id.clone()).collect();
    assert_eq!(ids(m.installations_by_app(caller, &every).unwrap()), expected);
    assert_eq!(expected.len(), 37);
}

/// A state file is read into the indexes: every lookup answers what a scan in order answers, also
/// for keys two items share (from a state file written by hand or by an older emulator): the
/// first added wins, host names ignore case, and the state serializes back as it was.
#[test]
fn a_restored_state_answers_lookups_as_a_scan_would_the_first_added_winning() {
    use serde_json::json;
    let mut m = model();
    many_installations(&mut m, 5, "1.0.0");
    let mut state = serde_json::to_value(&m).unwrap();
    let sites = state["sites"].as_array_mut().unwrap();
    let (first, second) = (sites[0].clone(), sites[1].clone());
    let site = |host: &str, cloud: &str, activation: &str| {
        json!({"hostName": host, "cloudId": cloud, "products": {"jira": activation}, "appLimit": null,
               "admins": [], "productAdmins": {}})
    };
    let first_activation = first["products"].as_object().unwrap().values().next().unwrap().as_str().unwrap();
    sites.extend([
        // The first site's host name again, in capitals: the first still answers.
        site(&first["hostName"].as_str().unwrap().to_uppercase(), "cloud-dup-host", "activation-dup-host"),
        // Its activation id, on another site.
        site("dup-activation.atlassian.net", "cloud-dup-activation", first_activation),
        // The second's cloud id, on another site.
        site("dup-cloud.atlassian.net", second["cloudId"].as_str().unwrap(), "activation-dup-cloud"),
    ]);
    let installations = state["installations"].as_array_mut().unwrap();
    let mut twin = installations[0].clone();
    twin["createdAt"] = json!(T0 + 999);
    installations.push(twin);
    let restored = Model::restore(&state.to_string(), &seed(), Settings::default()).unwrap();
    assert_eq!(serde_json::to_value(&restored).unwrap(), state, "serialized as it was read");
    assert_eq!((restored.sites.len(), restored.installations.len()), (m.sites.len() + 3, m.installations.len() + 1));

    let cloud = |s: Option<&Site>| s.map(|s| s.cloud_id.clone());
    for probe in restored.sites.iter() {
        for host in [probe.host_name.clone(), probe.host_name.to_uppercase(), format!("https://{}/", probe.host_name)] {
            let scan = restored.sites.iter().find(|s| s.host_name.eq_ignore_ascii_case(&probe.host_name));
            assert_eq!(cloud(restored.site_by_host(&host)), cloud(scan), "{host}");
        }
        let scan = restored.sites.iter().find(|s| s.cloud_id == probe.cloud_id);
        assert_eq!(restored.site_by_cloud_id(&probe.cloud_id).map(|s| &s.host_name), scan.map(|s| &s.host_name));
        for a in probe.products.values() {
            let scan = restored.sites.iter().find(|s| s.products.values().any(|x| x == a));
            assert_eq!(cloud(restored.site_by_activation_id(a)), cloud(scan), "{a}");
        }
    }
    assert_eq!(
        cloud(restored.site_by_host(first["hostName"].as_str().unwrap())),
        Some(first["cloudId"].as_str().unwrap().into())
    );
    assert_eq!(
        cloud(restored.site_by_activation_id(first_activation)),
        Some(first["cloudId"].as_str().unwrap().into())
    );
    assert_eq!(
        restored.site_by_cloud_id(second["cloudId"].as_str().unwrap()).map(|s| s.host_name.as_str()),
        second["hostName"].as_str()
    );
    assert!(restored.site_by_host("dup-cloud.atlassian.net").is_some(), "found by its own host name");

    // Two installations of one id: the first answers, a listing by id has both (creation order),
    // and removing the id (as an uninstall task does) removes both, as the scans did.
    let all: Vec<Installation> = restored.installations.iter().cloned().collect();
    for i in &all {
        let scan = all.iter().find(|x| x.id == i.id).map(|x| x.created_at);
        assert_eq!(restored.installation(&i.id).map(|x| x.created_at), scan);
    }
    assert_eq!(restored.installation("inst-0").map(|i| i.created_at), Some(T0));
    let by_id =
        InstallationFilter { app_ids: vec![APP3.into()], ids: Some(vec!["inst-0".into()]), ..Default::default() };
    let found: Vec<Millis> =
        restored.installations_by_app("other-account", &by_id).unwrap().iter().map(|i| i.created_at).collect();
    assert_eq!(found, [T0, T0 + 999]);
    let mut restored = restored;
    assert_eq!(restored.installations.remove("inst-0"), 2);
    assert!(restored.installation("inst-0").is_none());
    assert!(restored.installations_by_app("other-account", &by_id).unwrap().is_empty());
    let on_site: Vec<&str> = restored.installations.on_site(&all[0].cloud_id).map(|i| i.id.as_str()).collect();
    assert!(on_site.is_empty(), "{on_site:?}");
    assert_eq!(restored.installations.len(), all.len() - 2);
}
