//! The operator's metrics, the alert rules and the Grafana dashboard, checked by the real
//! promtool (built from the pinned Prometheus Go module by `hack/promtool/build.sh`):
//! - the rules in `charts/forgeops/files/alerts.yaml` pass `promtool check rules` and their unit
//!   tests (`tests/monitoring/alerts_test.yaml`: series that must fire each alert, and must not);
//! - every query of the dashboard (`charts/forgeops/files/grafana-dashboard.json`) is valid PromQL;
//! - a running operator exports object states, bulk-upgrade progress, build info, leadership, the
//!   circuit breaker's state and refused credentials, passes `promtool check metrics`, and exports
//!   every metric the dashboard and the alerts read.

mod support;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use forgeops::api::{BulkUpgrade, ForgeApp, Installation};
use forgeops_emulator::Faults;
use kube::api::Api;
use serde_json::{Value, json};
use support::{TestNs, create, repo_path};

const WAIT: Duration = Duration::from_secs(60);

/// The promtool binary, built once (and cached across runs) by `hack/promtool/build.sh`.
fn promtool() -> &'static PathBuf {
    static PROMTOOL: OnceLock<PathBuf> = OnceLock::new();
    PROMTOOL.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo_path("hack/promtool/build.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("running hack/promtool/build.sh");
        assert!(out.status.success(), "hack/promtool/build.sh failed");
        PathBuf::from(String::from_utf8(out.stdout).expect("a path").trim())
    })
}

/// Runs promtool with `args` (and `stdin`), answering whether it succeeded and what it printed.
fn run_promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new(promtool())
        .args(args)
        .current_dir(repo_path("."))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running promtool");
    let mut input = child.stdin.take().expect("promtool's stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("writing to promtool");
    }
    drop(input);
    let out = child.wait_with_output().expect("waiting for promtool");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(repo_path("charts/forgeops/files/grafana-dashboard.json"))
        .expect("reading the dashboard");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every query of the dashboard's panels.
fn dashboard_queries() -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in dashboard()["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or_default().to_string();
            queries.push((title, target["expr"].as_str().expect("a target's expr").to_string()));
        }
    }
    queries
}

/// The `forgeops_*` metric names `text` mentions.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("forgeops_") {
        let tail = &rest[at..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let (ok, out) = run_promtool(&["check", "rules", "charts/forgeops/files/alerts.yaml"], None);
    assert!(ok, "promtool check rules:\n{out}");
    assert!(out.contains("SUCCESS: 8 rules found"), "{out}");
    let (ok, out) = run_promtool(&["test", "rules", "tests/monitoring/alerts_test.yaml"], None);
    assert!(ok, "promtool test rules:\n{out}");
    // Every alert has a unit test.
    let rules: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(repo_path("charts/forgeops/files/alerts.yaml")).expect("reading the rules"),
    )
    .expect("the rules are YAML");
    let tests = std::fs::read_to_string(repo_path("tests/monitoring/alerts_test.yaml")).expect("reading the tests");
    for rule in rules["groups"][0]["rules"].as_array().expect("rules") {
        let alert = rule["alert"].as_str().expect("an alert name");
        assert!(tests.contains(&format!("alertname: {alert}\n")), "{alert} has no unit test");
    }
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 20, "the dashboard has {} queries", queries.len());
    // promtool checks PromQL in rule files: each query becomes a recording rule.
    let rules = json!({"groups": [{"name": "dashboard", "rules": queries.iter().enumerate()
        .map(|(i, (_, expr))| json!({"record": format!("forgeops:dashboard_query_{i}"), "expr": expr}))
        .collect::<Vec<_>>()}]});
    let dir = std::env::temp_dir().join(format!("forgeops-dashboard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let file = dir.join("dashboard-rules.yaml");
    std::fs::write(&file, serde_yaml_ng::to_string(&rules).expect("YAML")).expect("writing the rules");
    let (ok, out) = run_promtool(&["check", "rules", file.to_str().expect("a UTF-8 path")], None);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(ok, "a dashboard query is not valid PromQL:\n{out}");
    assert!(out.contains(&format!("SUCCESS: {} rules found", queries.len())), "{out}");
    // Each panel says what it shows.
    for panel in dashboard()["panels"].as_array().expect("panels") {
        if panel["type"] != "row" {
            assert!(
                panel["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{} has no description",
                panel["title"]
            );
        }
    }
}

/// A ForgeApp with major 1 deployed on the platform (the test platform deploys it).
fn app(name: &str, secret: Option<&str>) -> Value {
    let mut spec = json!({"appId": format!("ari:cloud:ecosystem::app/{name}"),
        "environments": [{"name": "production", "versions": [
            {"major": 1, "minor": 0, "compatibility": {"required": "jira"}}]}]});
    if let Some(secret) = secret {
        spec["credentialsSecretRef"] = json!({"name": secret});
    }
    support::platform::declared(json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "ForgeApp",
        "metadata": {"name": name}, "spec": spec}))
}

fn installation(name: &str, app: &str) -> Value {
    json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "Installation", "metadata": {"name": name},
        "spec": {"appRef": {"name": app}, "site": format!("{name}.atlassian.net"), "products": ["jira"]}})
}

/// The OpenMetrics text `exported` in the classic Prometheus text format.
fn classic(exported: &str) -> String {
    let counters: BTreeSet<&str> =
        exported.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::new();
    for line in exported.lines().filter(|l| *l != "# EOF") {
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(&renamed.unwrap_or_else(|| line.to_string()));
        out.push('\n');
    }
    out
}

/// The value of the first exported sample whose line starts with `series`.
fn sample(exported: &str, series: &str) -> Option<f64> {
    exported.lines().find(|l| l.starts_with(series)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn the_operator_exports_object_states_progress_leadership_breaker_and_refused_credentials() {
    let t = TestNs::new("monitoring").await;
    let operator = t.start_operator().await;
    let ns = &t.name;
    t.put_credentials("revoked", support::platform::EMAIL, "a-revoked-token").await;
    let (apps, insts, bulks): (Api<ForgeApp>, Api<Installation>, Api<BulkUpgrade>) = (t.api(), t.api(), t.api());
    create(&apps, app("insights", None)).await;
    create(&insts, installation("acme", "insights")).await;
    create(&apps, app("orphan", Some("revoked"))).await;
    create(&insts, installation("globex", "orphan")).await;
    // No major 2 is deployed: the upgrade is Ineligible (and says so as its state).
    create(
        &bulks,
        json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "BulkUpgrade", "metadata": {"name": "to-v2"},
            "spec": {"appRef": {"name": "insights"}, "environment": "production", "fromMajor": 1, "toMajor": 2, "steps": [{"limit": 1}, {}]}}),
    )
    .await;
    support::wait_condition(&insts, "acme", "Ready", "True", "Ready").await;

    let waits = [
        "forgeops_leader 1".to_string(),
        format!("forgeops_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION")),
        "forgeops_objects{kind=\"Installation\",ready=\"True\"} 1".into(),
        "forgeops_objects{kind=\"ForgeApp\",ready=\"True\"} 1".into(),
        format!(
            "forgeops_installation_not_ready_seconds{{namespace=\"{ns}\",name=\"globex\",site=\"globex.atlassian.net\"}}"
        ),
        format!("forgeops_bulk_upgrade_state{{namespace=\"{ns}\",name=\"to-v2\",state=\"Ineligible\"}} 1"),
        format!("forgeops_bulk_upgrade_steps{{namespace=\"{ns}\",name=\"to-v2\"}} 2"),
        format!("forgeops_platform_credentials_refused_total{{credentials=\"{ns}/revoked\"}}"),
        "forgeops_platform_circuit_breaker_open 0".into(),
    ];
    for text in &waits {
        operator.wait_metric(text, WAIT).await;
    }
    let exported = operator.metrics.encode();
    assert!(!exported.contains("a-revoked-token"), "a token in the metrics");
    assert!(
        sample(&exported, &format!("forgeops_platform_credentials_refused_total{{credentials=\"{ns}/revoked\"}}"))
            .is_some_and(|n| n >= 1.0),
        "{exported}"
    );

    // promtool lints the exposition (names, units, help). It reads the classic text format, so the
    // OpenMetrics text /metrics serves is given as such: a counter family's HELP and TYPE name its
    // `_total` samples, and there is no `# EOF`.
    let (ok, out) = run_promtool(&["check", "metrics"], Some(&classic(&exported)));
    assert!(ok, "promtool check metrics:\n{out}\n{exported}");

    // Every metric the dashboard and the alerts read is exported (histograms as _bucket).
    let alerts = std::fs::read_to_string(repo_path("charts/forgeops/files/alerts.yaml")).expect("reading the rules");
    let queries: String = dashboard_queries().into_iter().map(|(_, q)| q + "\n").collect();
    let exported_names = metric_names(&exported);
    for name in metric_names(&format!("{alerts}\n{queries}")) {
        assert!(exported_names.contains(&name), "{name} is read by the dashboard or an alert but not exported");
    }

    // The platform keeps failing: the breaker opens (and says so), and closes when it answers again.
    operator.platform.set_faults(Faults { down: true, ..Faults::default() });
    for round in 0..20 {
        if sample(&operator.metrics.encode(), "forgeops_platform_circuit_breaker_open ") == Some(1.0) {
            break;
        }
        let ask = json!({"metadata": {"annotations": {"forgeops.dev/refresh": format!("down-{round}")}}});
        for name in ["insights", "orphan"] {
            apps.patch(name, &Default::default(), &kube::api::Patch::Merge(&ask)).await.expect("asking for a refresh");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    operator.wait_metric("forgeops_platform_circuit_breaker_open 1", WAIT).await;
    let opened = sample(&operator.metrics.encode(), "forgeops_platform_circuit_breaker_opened_total");
    assert!(opened.is_some_and(|n| n >= 1.0), "the openings are counted: {opened:?}");
    // Well again: the next request after the open period is the probe, whose answer closes it.
    operator.platform.set_faults(Faults::default());
    for round in 0..60 {
        if sample(&operator.metrics.encode(), "forgeops_platform_circuit_breaker_open ") == Some(0.0) {
            break;
        }
        let ask = json!({"metadata": {"annotations": {"forgeops.dev/refresh": format!("up-{round}")}}});
        apps.patch("insights", &Default::default(), &kube::api::Patch::Merge(&ask))
            .await
            .expect("asking for a refresh");
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    operator.wait_metric("forgeops_platform_circuit_breaker_open 0", WAIT).await;

    // Stopped, the operator no longer leads, and reports no objects.
    let metrics = operator.metrics.clone();
    operator.shutdown().await.expect("the operator stops cleanly");
    let exported = metrics.encode();
    assert_eq!(sample(&exported, "forgeops_leader "), Some(0.0), "{exported}");
    assert!(!exported.contains("forgeops_objects{"), "a stopped operator reports no objects:\n{exported}");
}
