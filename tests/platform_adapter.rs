//! The `forge` backend (the real adapter) against the platform emulator over HTTP on loopback: every
//! port operation, the error categories, retries of rate limiting and 5xx bursts (visible in the
//! metrics), bad credentials, and that no token text reaches errors or metrics.

use std::sync::Arc;
use std::time::Duration;

use forgeops::platform::{
    AppDetails, Credentials, ErrorKind, ForgeGateway, GatewayOptions, InstallationFilter, Platform, RolloutStatus,
    Target, TaskState,
};
use forgeops::telemetry::Metrics;
use forgeops_emulator::{self as emulator, EmulatorConfig, Faults, RunningEmulator, Seed};

const APP: &str = "ari:cloud:ecosystem::app/00000000-0000-4000-8000-00000000a001";
const TOKEN: &str = "adapter-test-token-7f3a";

fn seed() -> Seed {
    let yaml = format!(
        r#"
accounts:
  - {{email: dev@acme.example, apiToken: {TOKEN}, name: Dev}}
  - {{email: other@acme.example, apiToken: other-token}}
apps:
  - id: {APP}
    owner: dev@acme.example
    environments:
      - key: production
        versions:
          - {{version: 1.0.0, scopes: [read:jira-work], egress: [api.example.com], requiredProducts: [jira]}}
          - {{version: 1.1.0, scopes: [read:jira-work], egress: [api.example.com], requiredProducts: [jira]}}
          - {{version: 2.0.0, scopes: [read:jira-work], requiredProducts: [jira]}}
          - {{version: 3.0.0, scopes: [read:jira-work, write:jira-work], requiredProducts: [jira]}}
      - key: staging
sites:
  - {{hostName: acme.atlassian.net, products: [jira, confluence], admins: [dev@acme.example]}}
  - {{hostName: globex.atlassian.net, products: [jira], admins: [dev@acme.example]}}
  - {{hostName: initech.atlassian.net, products: [jira], admins: [dev@acme.example]}}
"#
    );
    Seed::from_yaml_str(&yaml).unwrap()
}

async fn start(config: EmulatorConfig) -> RunningEmulator {
    emulator::start(config, "127.0.0.1:0".parse().unwrap()).await.expect("starting the emulator")
}

fn config() -> EmulatorConfig {
    EmulatorConfig { seed: seed(), task_duration: Duration::from_millis(50), ..EmulatorConfig::default() }
}

fn gateway(emu: &RunningEmulator, metrics: Option<Arc<Metrics>>) -> ForgeGateway {
    let options = GatewayOptions {
        url: emu.graphql_url(),
        timeout: Duration::from_secs(5),
        attempts: 6,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        distribution: true,
        ..GatewayOptions::default()
    };
    ForgeGateway::new(options, metrics).unwrap()
}

fn creds() -> Credentials {
    Credentials::new("dev@acme.example", TOKEN, "test/creds")
}

fn target(site: &str) -> Target {
    Target { app_id: APP.into(), environment_key: "production".into(), site: site.into(), product: "jira".into() }
}

async fn finish(g: &ForgeGateway, task: &str) -> forgeops::platform::Task {
    for _ in 0..200 {
        let t = g.task(&creds(), task).await.unwrap();
        if t.state.finished() {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("task {task} did not finish");
}

#[tokio::test]
async fn every_port_operation_works_against_the_emulator() {
    let emu = start(config()).await;
    let g = gateway(&emu, None);
    let c = creds();

    let me = g.whoami(&c).await.unwrap();
    assert_eq!((me.name.as_str(), me.status.as_str()), ("Dev", "active"));
    let envs = g.environments(&c, APP).await.unwrap();
    let mut keys: Vec<_> = envs.iter().map(|e| e.key.as_str()).collect();
    keys.sort();
    assert_eq!(keys, ["production", "staging"]);

    let versions = g.versions(&c, APP, "production").await.unwrap();
    let names: Vec<_> = versions.iter().map(|v| v.version.as_str()).collect();
    assert_eq!(names, ["3.0.0", "2.0.0", "1.1.0", "1.0.0"], "newest first");
    assert!(versions[0].is_latest && !versions[1].is_latest);
    assert_eq!(versions[0].scopes, ["read:jira-work", "write:jira-work"]);
    assert_eq!(versions[2].egress[0].addresses, ["api.example.com"]);
    assert_eq!(versions[2].required_products, ["jira"]);
    assert!(versions.iter().all(|v| !v.id.is_empty()));
    let id_of = |v: &str| versions.iter().find(|x| x.version == v).unwrap().id.clone();

    // Install 1.1 on acme, then upgrade to 2.0; a repeated upgrade is "already upgraded".
    let task = g.start_install(&c, &target("acme.atlassian.net"), Some(&id_of("1.1.0"))).await.unwrap();
    assert_eq!(finish(&g, &task).await.state, TaskState::Complete);
    let again = g.start_install(&c, &target("acme.atlassian.net"), None).await;
    match again {
        Ok(task) => assert!(finish(&g, &task).await.already_done(), "a second install is already done"),
        Err(e) => assert_eq!(e.kind, ErrorKind::AlreadyInstalled),
    }
    let task = g.start_upgrade(&c, &target("acme.atlassian.net"), Some(&id_of("2.0.0"))).await.unwrap();
    assert_eq!(finish(&g, &task).await.state, TaskState::Complete);
    let e = g.start_upgrade(&c, &target("acme.atlassian.net"), Some(&id_of("2.0.0"))).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::AlreadyUpgraded, "{e}");

    // Installations, with the site resolved from the context.
    for site in ["globex.atlassian.net", "initech.atlassian.net"] {
        let task = g.start_install(&c, &target(site), Some(&id_of("1.0.0"))).await.unwrap();
        finish(&g, &task).await;
    }
    let page = g.installations(&c, APP, &InstallationFilter::default(), None).await.unwrap();
    assert!(page.next.is_none());
    let mut seen: Vec<_> = page.items.iter().map(|i| (i.site.clone().unwrap(), i.version.clone().unwrap())).collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("acme.atlassian.net".to_string(), "2.0.0".to_string()),
            ("globex.atlassian.net".into(), "1.0.0".into()),
            ("initech.atlassian.net".into(), "1.0.0".into())
        ]
    );
    let counts = g.installation_counts(&c, APP, "production").await.unwrap();
    let count = |v: &str| counts.iter().find(|x| x.version == v).map(|x| x.installations);
    assert_eq!((count("2.0.0"), count("1.0.0"), count("3.0.0")), (Some(1), Some(2), Some(0)));

    // Rollouts: 1.0 → 2.0 adds nothing (eligible); 1.0 → 3.0 adds a scope (not eligible).
    let targets = g.upgrade_targets(&c, APP, "production", &id_of("1.0.0")).await.unwrap();
    let eligible = |v: &str| targets.iter().find(|t| t.version == v).map(|t| t.upgradeable_by_rollout);
    assert_eq!((eligible("2.0.0"), eligible("3.0.0")), (Some(true), Some(false)));
    let started = g.create_rollout(&c, &id_of("1.0.0"), &id_of("2.0.0"), Some(1)).await.unwrap();
    assert_eq!(started.upgrade_limit, Some(1), "the rollout's own limit: ours, under the platform's 500");
    let busy = g.create_rollout(&c, &id_of("1.0.0"), &id_of("2.0.0"), None).await.unwrap_err();
    assert_eq!(busy.kind, ErrorKind::RolloutRunning, "{busy}");
    let mut rollout = g.rollout(&c, &started.rollout_id).await.unwrap().unwrap();
    for _ in 0..200 {
        if rollout.status != RolloutStatus::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        rollout = g.rollout(&c, &started.rollout_id).await.unwrap().unwrap();
    }
    assert_eq!((rollout.status, rollout.completed, rollout.failed), (RolloutStatus::Complete, 1, 0));
    let listed = g.rollouts(&c, APP, "production").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, started.rollout_id);
    let not_running = g.cancel_rollout(&c, &started.rollout_id).await.unwrap_err();
    assert_eq!(not_running.kind, ErrorKind::Refused, "{not_running}");
    assert!(g.rollout(&c, "no-such-rollout").await.unwrap().is_none());

    // Uninstall by the installation's id.
    let acme = page.items.iter().find(|i| i.site.as_deref() == Some("acme.atlassian.net")).unwrap();
    let task = g.start_uninstall(&c, APP, "production", &acme.id, Some(&acme.installation_context)).await.unwrap();
    assert_eq!(finish(&g, &task).await.state, TaskState::Complete);
    let page = g.installations(&c, APP, &InstallationFilter::default(), None).await.unwrap();
    assert_eq!(page.items.len(), 2);

    // Distribution capability: sharing on (with the app details the platform asks for), a link, a
    // rotated link, all seen in one read.
    let before = g.sharing_state(&c, APP).await.unwrap();
    assert!(!before.shared && !before.listed_on_marketplace && before.link.is_none(), "{before:?}");
    let missing = g.set_sharing(&c, APP, true, &AppDetails::default()).await;
    if let Err(e) = &missing {
        assert_eq!(e.kind, ErrorKind::Refused, "{e}");
    }
    let details = AppDetails {
        vendor_name: Some("Example Vendor".into()),
        privacy_policy: Some("https://example.com/privacy".into()),
        terms_of_service: Some("https://example.com/terms".into()),
        contact_link: None,
    };
    g.set_sharing(&c, APP, true, &details).await.unwrap();
    let first = g.generate_link(&c, APP, &["jira".to_string()]).await.unwrap();
    assert!(first.url.starts_with("https://developer.atlassian.com/console/install/"), "{}", first.url);
    let second = g.generate_link(&c, APP, &["jira".to_string()]).await.unwrap();
    assert_ne!(first.url, second.url, "a new link each time");
    let now = g.sharing_state(&c, APP).await.unwrap();
    assert!(now.shared && !now.listed_on_marketplace);
    assert_eq!(now.link, Some(second));
    // A 401 from a distribution operation is a refusal of that operation, not bad credentials.
    let refused = Credentials::new("dev@acme.example", "not-the-token", "test/refused");
    let e = g.sharing_state(&refused, APP).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Refused, "{e}");
    assert!(e.message.contains("HTTP 401"), "{e}");
    let e = g.set_sharing(&refused, APP, false, &AppDetails::default()).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Refused, "{e}");

    // Not found, permission denied and a missing site are told apart.
    let e = g.versions(&c, "ari:cloud:ecosystem::app/nope", "production").await.unwrap_err();
    assert!(matches!(e.kind, ErrorKind::NotFound | ErrorKind::PermissionDenied), "{e}");
    let other = Credentials::new("other@acme.example", "other-token", "test/other");
    let e = g.start_install(&other, &target("globex.atlassian.net"), None).await.unwrap_err();
    assert!(matches!(e.kind, ErrorKind::PermissionDenied | ErrorKind::NotFound), "{e}");
    let e = g.installation_context(&c, "nowhere.atlassian.net", "jira").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
}

#[tokio::test]
async fn bad_credentials_are_a_category_and_never_show_the_token() {
    let emu = start(config()).await;
    let metrics = Arc::new(Metrics::default());
    let g = gateway(&emu, Some(metrics.clone()));
    let wrong = Credentials::new("dev@acme.example", "wrong-token-d41d8", "ns/forgeops-credentials");
    let e = g.whoami(&wrong).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadCredentials);
    let shown = format!("{e} {e:?} {wrong:?}");
    assert!(shown.contains("ns/forgeops-credentials"), "names the Secret: {shown}");
    assert!(!shown.contains("wrong-token") && !shown.contains(TOKEN), "no token text: {shown}");
    let exported = metrics.encode();
    assert!(exported.contains(r#"operation="forge_cli_getUserDetails",outcome="bad_credentials""#), "{exported}");
    assert!(!exported.contains("wrong-token"));
    assert_eq!(
        emu.requests().iter().filter(|r| r.operation_name.as_deref() == Some("forge_cli_getUserDetails")).count(),
        1,
        "bad credentials are not retried"
    );
}

#[tokio::test]
async fn rate_limiting_and_5xx_bursts_are_retried_with_backoff_and_counted() {
    let emu = start(config()).await;
    let metrics = Arc::new(Metrics::default());
    let g = gateway(&emu, Some(metrics.clone()));

    emu.set_faults(Faults { rate_limit_burst: 3, ..Faults::default() });
    let started = std::time::Instant::now();
    g.whoami(&creds()).await.expect("succeeds after the burst");
    assert!(started.elapsed() >= Duration::from_millis(900), "Retry-After: 1 was honoured");
    let exported = metrics.encode();
    assert!(
        exported.contains(
            r#"forgeops_platform_requests_total{operation="forge_cli_getUserDetails",outcome="rate_limited"} 3"#
        ),
        "{exported}"
    );
    assert!(
        exported.contains(r#"forgeops_platform_requests_total{operation="forge_cli_getUserDetails",outcome="ok"} 1"#)
    );
    assert!(exported.contains("forgeops_platform_request_duration_seconds_bucket"));

    // A third of the requests fail with 5xx: every call still succeeds within its attempts (12 here,
    // so that a call failing every attempt, at 0.3^12, does not make the test flaky).
    emu.set_faults(Faults { error_rate: 0.3, ..Faults::default() });
    let patient = ForgeGateway::new(
        GatewayOptions {
            url: emu.graphql_url(),
            attempts: 12,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(20),
            ..GatewayOptions::default()
        },
        Some(metrics.clone()),
    )
    .unwrap();
    // 30 calls, so that at least one 5xx is all but certain (0.7^30 < 1e-4 to see none).
    for _ in 0..30 {
        patient.environments(&creds(), APP).await.expect("retried past the 5xx answers");
    }
    let exported = metrics.encode();
    assert!(exported.contains(r#"operation="forge_cli_listEnvironment",outcome="unavailable""#), "{exported}");

    // The gateway down: Unavailable after the attempts, then back.
    emu.set_faults(Faults { down: true, ..Faults::default() });
    let e = g.environments(&creds(), APP).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable, "{e}");
    assert!(e.retryable());
    emu.set_faults(Faults::default());
    g.environments(&creds(), APP).await.expect("the gateway is back");
}

#[tokio::test]
async fn distribution_refused_by_the_platform_is_unsupported() {
    let emu = start(EmulatorConfig { distribution: false, ..config() }).await;
    let g = gateway(&emu, None);
    let e = g.generate_link(&creds(), APP, &["jira".to_string()]).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsupported, "{e}");

    // And forgeops itself keeps the capability off unless asked.
    let off = ForgeGateway::new(GatewayOptions { url: emu.graphql_url(), ..GatewayOptions::default() }, None).unwrap();
    let e = off.set_sharing(&creds(), APP, true, &Default::default()).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsupported);
    assert!(e.message.contains("developer console"), "{e}");
}

#[tokio::test]
async fn lookups_at_the_same_time_share_requests_and_a_rate_limit_holds_an_account() {
    let emu = start(config()).await;
    let g = gateway(&emu, None);
    let count = |op: &str| emu.requests().iter().filter(|r| r.operation_name.as_deref() == Some(op)).count();
    let sites = ["acme.atlassian.net", "globex.atlassian.net", "initech.atlassian.net"];
    let me = creds();

    // Three sites resolved at once: one tenant-context request; again: none (kept).
    let contexts = futures::future::join_all(sites.iter().map(|s| g.installation_context(&me, s, "jira"))).await;
    let contexts: Vec<String> = contexts.into_iter().map(|c| c.expect("a context")).collect();
    assert_eq!(count("forgeops_getTenantContexts"), 1, "{:?}", emu.requests());
    for (site, context) in sites.iter().zip(&contexts) {
        assert_eq!(&g.installation_context(&creds(), site, "jira").await.unwrap(), context);
    }
    assert_eq!(count("forgeops_getTenantContexts"), 1, "resolved contexts are kept");
    assert_eq!(count("getTenantContextDetails"), 0);
    let unknown = g.installation_context(&creds(), "nowhere.atlassian.net", "jira").await.unwrap_err();
    assert_eq!(unknown.kind, ErrorKind::NotFound, "{unknown}");
    // A host name written in other letter case is the same site.
    assert_eq!(g.installation_context(&creds(), "Globex.Atlassian.NET", "jira").await.unwrap(), contexts[1]);

    // Install on one site; what is installed in the three contexts, asked at once: one listing.
    let task = g.start_install(&creds(), &target("globex.atlassian.net"), None).await.unwrap();
    assert_eq!(finish(&g, &task).await.state, TaskState::Complete);
    let before = count("forge_cli_getEcosystemInstallationsByApp");
    let found = futures::future::join_all(contexts.iter().map(|c| g.installations_in(&me, APP, c))).await;
    let found: Vec<usize> = found.into_iter().map(|f| f.expect("listed").len()).collect();
    assert_eq!(found, [0, 1, 0]);
    assert_eq!(count("forge_cli_getEcosystemInstallationsByApp") - before, 1);

    // Four requests a second for the account: eight calls wait for the last four tokens.
    let metrics = Arc::new(Metrics::default());
    let limited = ForgeGateway::new(
        GatewayOptions { url: emu.graphql_url(), rate: "4/s".parse().ok(), ..GatewayOptions::default() },
        Some(metrics.clone()),
    )
    .unwrap();
    for _ in 0..8 {
        limited.whoami(&creds()).await.expect("answered after waiting its turn");
    }
    let exported = metrics.encode();
    let waited: f64 = exported
        .lines()
        .find(|l| l.starts_with(r#"forgeops_platform_rate_limit_wait_seconds_total{credentials="test/creds"}"#))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no wait counted: {exported}"));
    assert!(waited > 0.2, "waited {waited} s in all");
    assert!(!exported.contains("dev@acme.example"), "the metric names the Secret, not the account");
}

/// The App metrics API through the adapter: invocations and errors per version and context from
/// the emulator's traffic model, judged by the analysis rules; the client's window keeps the
/// documented five calls a minute (a sixth waits in forgeops, never reaching the platform).
#[tokio::test]
async fn app_metrics_per_version_and_context_judged_and_within_five_calls_a_minute() {
    use forgeops::platform::{MetricKind, MetricsQuery};
    use forgeops::rules::analysis::{self, Thresholds, Verdict};
    use forgeops::rules::versions::Version;

    let emu = start(config()).await;
    let g = gateway(&emu, None);
    let c = creds();
    let versions = g.versions(&c, APP, "production").await.unwrap();
    let id_of = |v: &str| versions.iter().find(|x| x.version == v).unwrap().id.clone();
    // acme moved to 2.0; globex and initech still on 1.1.
    for (site, version) in
        [("acme.atlassian.net", "2.0.0"), ("globex.atlassian.net", "1.1.0"), ("initech.atlassian.net", "1.1.0")]
    {
        let task = g.start_install(&c, &target(site), Some(&id_of(version))).await.unwrap();
        assert_eq!(finish(&g, &task).await.state, TaskState::Complete);
    }
    let rule = |version: &str, success_rate: f64| emulator::metrics::TrafficRule {
        app_id: APP.into(),
        version: version.into(),
        site: None,
        invocations_per_minute: 60_000,
        success_rate,
    };
    emu.set_traffic(rule("2", 0.9)).unwrap();
    emu.set_traffic(rule("1", 1.0)).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    emu.clear_requests();

    let now = jiff::Timestamp::now().as_millisecond();
    let query = |kind| MetricsQuery {
        app_id: APP.into(),
        environment_id: None,
        kind,
        start_ms: now - 15 * 60_000,
        end_ms: now,
    };
    let invocations = g.app_metrics(&c, &query(MetricKind::Invocations)).await.unwrap();
    let errors = g.app_metrics(&c, &query(MetricKind::Errors)).await.unwrap();
    let contexts = g.installations(&c, APP, &InstallationFilter::default(), None).await.unwrap().items;
    let acme =
        contexts.iter().find(|i| i.site.as_deref() == Some("acme.atlassian.net")).unwrap().installation_context.clone();
    assert_eq!(invocations.len(), 3, "{invocations:?}");
    let on_acme = invocations.iter().find(|v| v.context == acme).unwrap();
    assert_eq!(on_acme.version, "2.0.0");
    assert!(on_acme.count >= 100, "{on_acme:?}");

    let moved = [acme.clone()].into();
    let (cohort, baseline) = analysis::figures(
        &invocations,
        &errors,
        &moved,
        Version { major: 1, minor: 1 },
        Version { major: 2, minor: 0 },
    );
    assert_eq!((cohort.sites, baseline.sites), (1, 2));
    assert_eq!(baseline.errors, 0);
    let rate = cohort.success_percent().unwrap();
    assert!((89.0..=91.0).contains(&rate), "{cohort:?}");
    let t = Thresholds { min_success_percent: Some(99.0), max_drop_percent: Some(1.0), min_invocations: 100 };
    assert_eq!(analysis::judge(&t, &cohort, &baseline).0, Verdict::Failed);

    // Three more calls pass; a sixth within the minute waits in the client's window.
    for _ in 0..3 {
        g.app_metrics(&c, &query(MetricKind::Errors)).await.unwrap();
    }
    let sixth = tokio::time::timeout(Duration::from_secs(2), g.app_metrics(&c, &query(MetricKind::Errors))).await;
    assert!(sixth.is_err(), "a sixth call within a minute must wait");
    let sent: Vec<_> = emu
        .requests()
        .into_iter()
        .filter(|r| r.operation_name.as_deref().is_some_and(|o| o.contains("Metrics")))
        .collect();
    assert_eq!(sent.len(), 5, "the platform saw five calls");
    assert!(sent.iter().all(|r| r.fault.is_none()));
}
