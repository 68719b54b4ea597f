//! Platform credentials against a real kube-apiserver and the platform emulator, with the operator
//! running as a process (so its whole log output can be read): an app's own Secret, the default
//! Secret as fallback, a missing Secret and a refused token reported on the Installation (the
//! operator keeps running), a rotated token used without a restart, and no token text in the log.

mod support;

use std::time::Duration;

use forgeops::api::{ForgeApp, Installation};
use forgeops_emulator::EmulatorConfig;
use kube::api::Api;
use serde_json::json;
use support::{TestNs, condition, create, wait_for};

const WAIT: Duration = Duration::from_secs(60);
const WRONG_TOKEN: &str = "wrong-token-5c81e0";

fn app(name: &str, secret: Option<&str>) -> serde_json::Value {
    let mut spec = json!({"appId": format!("ari:cloud:ecosystem::app/{name}"), 
        "environments": [{"name": "production", "versions": [
            {"major": 1, "minor": 0, "compatibility": {"required": "jira"}}]}]});
    if let Some(secret) = secret {
        spec["credentialsSecretRef"] = json!({"name": secret});
    }
    json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "ForgeApp", "metadata": {"name": name}, "spec": spec})
}

fn installation(name: &str, app: &str) -> serde_json::Value {
    json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "Installation", "metadata": {"name": name},
        "spec": {"appRef": {"name": app}, "site": format!("{name}.atlassian.net"), "products": ["jira"]}})
}

async fn blocked_with(insts: &Api<Installation>, name: &str, text: &str) -> Installation {
    wait_for(insts, name, WAIT, &format!("a condition saying {text:?}"), |i| {
        condition(i, "Installed").is_some_and(|(s, _, m)| s == "False" && m.contains(text))
    })
    .await
}

async fn installed(insts: &Api<Installation>, name: &str) -> Installation {
    wait_for(insts, name, WAIT, "installed", |i| {
        condition(i, "Installed").is_some_and(|(s, _, _)| s == "True")
            && i.status.as_ref().and_then(|s| s.installed_version.as_deref()) == Some("1.0")
    })
    .await
}

#[tokio::test]
async fn credentials_come_from_secrets_are_rotated_without_a_restart_and_never_logged() {
    let t = TestNs::new("credentials").await;
    let platform =
        t.start_platform(EmulatorConfig { task_duration: Duration::from_millis(100), ..Default::default() }).await;
    t.put_credentials("insights-creds", support::platform::EMAIL, WRONG_TOKEN).await;
    let operator = t.spawn_operator_process_logging(&platform.emulator.graphql_url(), 1, "debug");
    let (apps, insts): (Api<ForgeApp>, Api<Installation>) = (t.api(), t.api());

    // An app without a Secret of its own acts with the operator's default Secret.
    create(&apps, app("dashboard", None)).await;
    create(&insts, installation("acme", "dashboard")).await;
    installed(&insts, "acme").await;

    // A refused token and a missing Secret are reported with what to fix; the operator keeps going.
    create(&apps, app("insights", Some("insights-creds"))).await;
    create(&insts, installation("globex", "insights")).await;
    let globex = blocked_with(&insts, "globex", "refused the credentials").await;
    let message = condition(&globex, "Installed").unwrap().2;
    assert!(message.contains("insights-creds") && message.contains("apiToken"), "{message}");
    assert!(message.contains("BadCredentials"), "the app's reason is passed on: {message}");
    let insights = support::wait_condition(&apps, "insights", "Ready", "False", "BadCredentials").await;
    assert_eq!(condition(&insights, "Stalled").unwrap().0, "True", "only a change of the Secret fixes it");
    create(&apps, app("orphan", Some("no-such-secret"))).await;
    create(&insts, installation("initech", "orphan")).await;
    let initech = blocked_with(&insts, "initech", "does not exist").await;
    assert!(condition(&initech, "Installed").unwrap().2.contains("no-such-secret"));
    assert!(!operator.has_exited(), "bad credentials must not stop the operator:\n{}", operator.log_tail());

    // Rotating the Secret to a good token is picked up by the running operator (at its next
    // attempt; a CI job would also ask for a refresh).
    t.put_credentials("insights-creds", support::platform::EMAIL, support::platform::TOKEN).await;
    let ask = json!({"metadata": {"annotations": {"forgeops.dev/refresh": "rotated"}}});
    apps.patch("insights", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&ask)).await.unwrap();
    installed(&insts, "globex").await;
    assert!(!operator.has_exited());
    assert_eq!(
        platform.installed_version("ari:cloud:ecosystem::app/insights", "globex.atlassian.net").as_deref(),
        Some("1.0")
    );

    // Not one token, good or bad, in the operator's output (at debug level), nor its Basic form.
    drop(operator);
    let log = std::fs::read_to_string(t.operator_log(1)).unwrap();
    assert!(log.contains("platform action done"), "the log is the operator's:\n{log}");
    for secret in [WRONG_TOKEN, support::platform::TOKEN] {
        assert!(!log.contains(secret), "token text in the log");
        let basic = forgeops::platform::Credentials::new(support::platform::EMAIL, secret, "x").authorization();
        assert!(!log.contains(basic.trim_start_matches("Basic ")), "a Basic header in the log");
    }
}
