//! `forgeops check` (issue 23), the built binary against a real kube-apiserver and the platform
//! emulator: everything in order (exit 0, every row ok, the account shown), then one test per kind
//! of failure (a stale CRD, missing RBAC, a missing credentials Secret, a refused token, an app the
//! account cannot see, a site it does not administer, distribution not enabled), each asserting the
//! exit code, the failing row and that no token appears in the output; and an unreachable cluster
//! (exit 2).
//!
//! The tests of this binary share one control plane: the stale-CRD test changes a CRD every other
//! test's check reads, so every check run holds [`CRDS`] for reading and that test holds it for
//! writing (and puts the CRD back before it asserts anything).

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use forgeops::api::{ForgeApp, Installation};
use forgeops_emulator::{EmulatorConfig, Seed};
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};
use support::platform::{CREDENTIALS_SECRET, EMAIL, TOKEN, TestPlatform};
use support::{TestNs, create, shared, wait_for};

/// Held for reading by every check run, for writing while a CRD is changed.
static CRDS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

const WRONG_TOKEN: &str = "revoked-token-77e1d0";
const OTHER_TOKEN: &str = "other-owner-token-51aa";
const WAIT: Duration = Duration::from_secs(60);

fn app_id(name: &str) -> String {
    format!("ari:cloud:ecosystem::app/{name}")
}

/// An app owned by `owner`, with two production versions for Jira.
fn seed_app(name: &str, owner: &str) -> Value {
    json!({"id": app_id(name), "name": name, "owner": owner, "environments": [{"key": "production",
        "versions": [{"version": "1.0.0", "scopes": ["read:jira-work"], "requiredProducts": ["jira"]},
                     {"version": "1.2.0", "scopes": ["read:jira-work"], "requiredProducts": ["jira"]}]}]})
}

/// A platform with `apps` (owned by the test account) and `sites` (`(host name, administered by
/// the test account)`).
fn seed(apps: &[&str], sites: &[(&str, bool)]) -> EmulatorConfig {
    let apps: Vec<Value> = apps.iter().map(|name| seed_app(name, EMAIL)).collect();
    let sites: Vec<Value> = sites
        .iter()
        .map(|(host, ours)| {
            let admins: Vec<&str> = if *ours { vec![EMAIL] } else { vec![] };
            json!({"hostName": host, "products": ["jira", "confluence"], "admins": admins})
        })
        .collect();
    let seed = json!({"apps": apps, "sites": sites});
    let seed: Seed = serde_json::from_value(seed).expect("a valid seed");
    EmulatorConfig { seed, task_duration: Duration::from_millis(100), ..Default::default() }
}

fn forge_app(name: &str, secret: Option<&str>) -> Value {
    let mut spec = json!({"appId": app_id(name), "environments": ["production"]});
    if let Some(secret) = secret {
        spec["credentialsSecretRef"] = json!({"name": secret});
    }
    json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "ForgeApp", "metadata": {"name": name}, "spec": spec})
}

fn installation(name: &str, app: &str, site: &str) -> Value {
    json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "Installation", "metadata": {"name": name},
        "spec": {"appRef": {"name": app}, "site": site, "products": ["jira"]}})
}

fn policy(name: &str, app: &str) -> Value {
    json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "DistributionPolicy", "metadata": {"name": name},
        "spec": {"appRef": {"name": app}, "sharing": "Disabled", "products": ["jira"]}})
}

/// What one `forgeops check` run printed.
struct Checked {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Checked {
    /// The rows of a `--output json` run.
    fn rows(&self) -> Vec<Value> {
        let report: Value = serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr));
        report["rows"].as_array().cloned().unwrap_or_default()
    }

    /// The row of `check` whose subject contains `subject`.
    fn row(&self, check: &str, subject: &str) -> Value {
        let rows = self.rows();
        rows.iter()
            .find(|r| r["check"] == check && r["subject"].as_str().is_some_and(|s| s.contains(subject)))
            .cloned()
            .unwrap_or_else(|| panic!("no {check} row about {subject:?} in:\n{}", self.stdout))
    }

    /// The row's result and detail.
    fn result(&self, check: &str, subject: &str) -> (String, String) {
        let row = self.row(check, subject);
        (row["result"].as_str().unwrap_or_default().into(), row["detail"].as_str().unwrap_or_default().into())
    }

    /// Not one token (the seed's, the test's good one, the wrong one), nor a Basic header of them.
    fn assert_no_token(&self) {
        for token in [TOKEN, WRONG_TOKEN, OTHER_TOKEN] {
            for (what, text) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
                assert!(!text.contains(token), "a token in the {what}:\n{text}");
                let basic = forgeops::platform::Credentials::new(EMAIL, token, "x").authorization();
                assert!(!text.contains(basic.trim_start_matches("Basic ")), "a Basic header in the {what}");
            }
        }
    }
}

/// Runs `forgeops check` for the test namespace (watched, and the operator's namespace) on the
/// emulator of `platform`, with `kubeconfig` and `extra` arguments.
async fn check(t: &TestNs, platform: &TestPlatform, kubeconfig: &Path, extra: &[&str]) -> Checked {
    let _crds = CRDS.read().await;
    run_check(t, platform, kubeconfig, extra).await
}

async fn run_check(t: &TestNs, platform: &TestPlatform, kubeconfig: &Path, extra: &[&str]) -> Checked {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_forgeops"))
        .args(["check", "--namespace", &t.name, "--operator-namespace", &t.name])
        .args(["--platform-url", &platform.emulator.graphql_url(), "--credentials-secret", CREDENTIALS_SECRET])
        .args(["--platform-attempts", "2", "--platform-timeout-secs", "10"])
        .args(extra)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("FORGEOPS_PLATFORM_DISTRIBUTION")
        .env_remove("FORGE_GRAPHQL_GATEWAY")
        .output()
        .await
        .expect("running forgeops check");
    Checked {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs the operator on `platform` until `done` holds for Installation `name`, then stops it.
async fn operate_until(
    t: &TestNs,
    platform: &std::sync::Arc<TestPlatform>,
    name: &str,
    what: &str,
    done: impl Fn(&Installation) -> bool,
) {
    let operator = t.start_operator_on(platform.clone()).await;
    wait_for(&t.api::<Installation>(), name, WAIT, what, done).await;
    operator.shutdown().await.expect("the operator stops cleanly");
}

#[tokio::test]
async fn a_configured_cluster_and_platform_pass_every_check() {
    let t = TestNs::new("preflight-ok").await;
    let site = format!("{}.atlassian.net", t.name);
    let platform = t.start_platform(seed(&["preflight-ok"], &[(&site, true)])).await;
    create(&t.api::<ForgeApp>(), forge_app("preflight-ok", None)).await;
    create(&t.api::<Installation>(), installation("acme", "preflight-ok", &site)).await;
    create(&t.api::<forgeops::api::DistributionPolicy>(), policy("preflight-ok", "preflight-ok")).await;
    operate_until(&t, &platform, "acme", "installed, on a site the account administers", |i| {
        i.status.as_ref().is_some_and(|s| s.site_administered == Some(true) && s.installed_version.is_some())
    })
    .await;

    let started = Instant::now();
    let table = check(&t, &platform, &shared().kubeconfig, &["--platform-distribution"]).await;
    assert_eq!(table.code, 0, "exit 0 when nothing failed:\n{}\n{}", table.stdout, table.stderr);
    assert!(started.elapsed() < Duration::from_secs(20), "a check is quick: {:?}", started.elapsed());
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(lines[0].starts_with("CHECK") && lines[0].ends_with("DETAIL"), "{}", table.stdout);
    assert!(table.stdout.contains("acts as Dev (account id "), "the account:\n{}", table.stdout);
    assert!(table.stdout.contains("token expiry: unknown"), "{}", table.stdout);
    assert!(table.stdout.contains(&format!("{EMAIL} administers {site}")), "{}", table.stdout);
    assert!(table.stdout.trim_end().ends_with(" 0 warn, 0 FAIL"), "{}", table.stdout);
    table.assert_no_token();

    let json = check(&t, &platform, &shared().kubeconfig, &["--platform-distribution", "--output", "json"]).await;
    assert_eq!(json.code, 0);
    let rows = json.rows();
    for kind in ["crds", "rbac", "credentials", "app", "site", "distribution"] {
        assert!(rows.iter().any(|r| r["check"] == kind), "a {kind} row:\n{}", json.stdout);
    }
    assert!(rows.iter().all(|r| r["result"] == "ok"), "every row ok:\n{}", json.stdout);
    assert_eq!(rows.iter().filter(|r| r["check"] == "crds").count(), 4, "the four CRDs");
    let account_id = platform.emulator.state()["accounts"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["email"] == EMAIL))
        .and_then(|a| a["accountId"].as_str().map(str::to_string))
        .expect("the emulator's account id");
    assert!(json.result("credentials", CREDENTIALS_SECRET).1.contains(&account_id), "{}", json.stdout);
    json.assert_no_token();

    // As the operator's own identity (bound as deploy/base/rbac.yaml binds it): the RBAC it needs
    // is there; it may not read CRDs, so whether they are current is a warning, not a failure.
    let operator =
        check(&t, &platform, &shared().operator_kubeconfig, &["--platform-distribution", "-o", "json"]).await;
    let rows = operator.rows();
    assert_eq!(operator.code, 0, "{}\n{}", operator.stdout, operator.stderr);
    assert!(rows.iter().filter(|r| r["check"] == "rbac").all(|r| r["result"] == "ok"), "{}", operator.stdout);
    assert!(rows.iter().filter(|r| r["check"] == "crds").all(|r| r["result"] == "warn"), "{}", operator.stdout);
    let (_, detail) = operator.result("rbac", "forgeops-operator-own-namespace");
    assert!(detail.starts_with("forgeops-operator has all 7 permissions"), "{detail}");
}

#[tokio::test]
async fn a_stale_crd_fails_until_the_crds_of_this_version_are_applied() {
    let t = TestNs::new("preflight-crd").await;
    let platform = t.start_platform(seed(&[], &[])).await;
    let crds: Api<CustomResourceDefinition> = Api::all(t.client.clone());
    let (stale, fixed) = {
        let _changing = CRDS.write().await;
        // A CRD of another version: one printer column fewer.
        let mut crd = crds.get("forgeapps.forgeops.dev").await.expect("reading the CRD");
        let removed = crd.spec.versions[0].additional_printer_columns.as_mut().and_then(|c| c.pop());
        crds.replace("forgeapps.forgeops.dev", &PostParams::default(), &crd).await.expect("replacing the CRD");
        let stale = run_check(&t, &platform, &shared().kubeconfig, &["-o", "json"]).await;
        // Put it back before asserting anything, for the other tests of this binary.
        forgeops_testenv::localcluster::install_crds(&t.client, &forgeops::api::all_crds())
            .await
            .expect("applying the CRDs again");
        let fixed = run_check(&t, &platform, &shared().kubeconfig, &["-o", "json"]).await;
        assert_eq!(removed.map(|c| c.name).as_deref(), Some("Age"));
        (stale, fixed)
    };
    assert_eq!(stale.code, 1, "{}\n{}", stale.stdout, stale.stderr);
    let (result, detail) = stale.result("crds", "forgeapps.forgeops.dev");
    assert_eq!(result, "fail", "{detail}");
    assert!(
        detail
            .contains("the printer columns are [App ID, Production, Installs, Account, Ready, Reason] in the cluster"),
        "{detail}"
    );
    assert!(detail.contains("kubectl apply --server-side -f crds/forgeops.dev.yaml"), "{detail}");
    assert_eq!(stale.result("crds", "installations.forgeops.dev").0, "ok", "only the changed one");
    stale.assert_no_token();
    assert_eq!(fixed.code, 0, "{}", fixed.stdout);
    assert_eq!(fixed.result("crds", "forgeapps.forgeops.dev").0, "ok");
}

#[tokio::test]
async fn missing_rbac_fails_naming_the_verb_and_the_resource() {
    let t = TestNs::new("preflight-rbac").await;
    let platform = t.start_platform(seed(&["preflight-rbac"], &[])).await;
    create(&t.api::<ForgeApp>(), forge_app("preflight-rbac", None)).await;
    // The operator's own-namespace role is not bound: no Secret read, no Leases.
    Api::<RoleBinding>::namespaced(t.client.clone(), &t.name)
        .delete("forgeops-operator-test-user", &DeleteParams::default())
        .await
        .expect("deleting the operator's own-namespace binding");
    let subject = format!("forgeops-operator-own-namespace in namespace {}", t.name);
    let deadline = Instant::now() + Duration::from_secs(20);
    let checked = loop {
        let checked = check(&t, &platform, &shared().operator_kubeconfig, &["-o", "json"]).await;
        if checked.result("rbac", &subject).0 == "fail" || Instant::now() > deadline {
            break checked;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(checked.code, 1, "{}\n{}", checked.stdout, checked.stderr);
    let (result, detail) = checked.result("rbac", &subject);
    assert_eq!(result, "fail", "{detail}");
    assert!(detail.starts_with("forgeops-operator may not get secrets, get leases.coordination.k8s.io"), "{detail}");
    assert!(detail.contains("delete leases.coordination.k8s.io"), "{detail}");
    assert!(
        detail.contains(&format!(
            "kubectl create rolebinding forgeops-operator-own-namespace -n {} --clusterrole=forgeops-operator-own-namespace --user=forgeops-operator",
            t.name
        )),
        "{detail}"
    );
    assert_eq!(checked.result("rbac", "forgeops-operator in namespace").0, "ok", "the cluster-wide role is bound");
    let (result, detail) = checked.result("credentials", CREDENTIALS_SECRET);
    assert_eq!(result, "fail", "the operator cannot read its Secret: {detail}");
    assert!(detail.contains("may not read Secrets"), "{detail}");
    checked.assert_no_token();

    // The same, from the admin's kubeconfig, impersonating the operator's identity.
    let as_operator = check(&t, &platform, &shared().kubeconfig, &["-o", "json", "--as", "forgeops-operator"]).await;
    assert_eq!(as_operator.code, 1);
    assert_eq!(as_operator.result("rbac", &subject).0, "fail", "{}", as_operator.stdout);
    // And as the admin: nothing missing.
    let admin = check(&t, &platform, &shared().kubeconfig, &["-o", "json"]).await;
    assert_eq!(admin.result("rbac", &subject).0, "ok", "{}", admin.stdout);
}

#[tokio::test]
async fn a_missing_credentials_secret_or_key_fails_naming_the_secret() {
    let t = TestNs::new("preflight-secret").await;
    let platform = t.start_platform(seed(&["preflight-nosecret", "preflight-halfsecret"], &[])).await;
    create(&t.api::<ForgeApp>(), forge_app("preflight-nosecret", Some("no-such-secret"))).await;
    create(&t.api::<ForgeApp>(), forge_app("preflight-halfsecret", Some("half-secret"))).await;
    let half: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "half-secret"}, "stringData": {"email": EMAIL}}))
    .expect("a Secret");
    t.api::<k8s_openapi::api::core::v1::Secret>().create(&PostParams::default(), &half).await.expect("creating it");

    let checked = check(&t, &platform, &shared().kubeconfig, &["-o", "json"]).await;
    assert_eq!(checked.code, 1, "{}\n{}", checked.stdout, checked.stderr);
    let (result, detail) = checked.result("credentials", &format!("Secret {}/no-such-secret", t.name));
    assert_eq!(result, "fail");
    assert!(detail.contains("does not exist") && detail.contains("`apiToken`"), "{detail}");
    assert!(detail.contains(&format!("used by forgeapp {}/preflight-nosecret", t.name)), "{detail}");
    let (result, detail) = checked.result("credentials", &format!("Secret {}/half-secret", t.name));
    assert_eq!(result, "fail");
    assert!(detail.contains("has no usable `apiToken` key"), "{detail}");
    // The default Secret is fine; the apps that cannot act are not checked further.
    assert_eq!(checked.result("credentials", "(default)").0, "ok", "{}", checked.stdout);
    assert_eq!(checked.result("app", "preflight-nosecret").0, "warn");
    checked.assert_no_token();
}

#[tokio::test]
async fn a_refused_token_fails_and_is_never_printed() {
    let t = TestNs::new("preflight-token").await;
    let platform = t.start_platform(seed(&["preflight-token"], &[])).await;
    t.put_credentials(CREDENTIALS_SECRET, EMAIL, WRONG_TOKEN).await;
    create(&t.api::<ForgeApp>(), forge_app("preflight-token", None)).await;

    for output in ["table", "json"] {
        let checked = check(&t, &platform, &shared().kubeconfig, &["-o", output]).await;
        assert_eq!(checked.code, 1, "{}\n{}", checked.stdout, checked.stderr);
        checked.assert_no_token();
        if output == "json" {
            let (result, detail) = checked.result("credentials", CREDENTIALS_SECRET);
            assert_eq!(result, "fail");
            assert!(detail.starts_with(&format!("the platform refused the credentials of {EMAIL}")), "{detail}");
            assert!(detail.contains(&format!("`apiToken` of Secret {}/{CREDENTIALS_SECRET}", t.name)), "{detail}");
        } else {
            assert!(checked.stdout.contains("FAIL"), "{}", checked.stdout);
        }
    }
}

#[tokio::test]
async fn an_app_the_account_cannot_see_fails() {
    let t = TestNs::new("preflight-app").await;
    // The app exists, but another account owns it.
    let platform = t.start_platform(seed(&[], &[])).await;
    platform.add_account("other@acme.example", OTHER_TOKEN);
    let theirs = serde_json::from_value(seed_app("preflight-theirs", "other@acme.example")).expect("a seed app");
    platform.emulator.add_app(theirs).expect("adding the other account's app");
    create(&t.api::<ForgeApp>(), forge_app("preflight-theirs", None)).await;

    let checked = check(&t, &platform, &shared().kubeconfig, &["-o", "json"]).await;
    assert_eq!(checked.code, 1, "{}\n{}", checked.stdout, checked.stderr);
    let (result, detail) = checked.result("app", "preflight-theirs");
    assert_eq!(result, "fail");
    assert!(
        detail.starts_with(&format!("the account {EMAIL} cannot see app {}: ", app_id("preflight-theirs"))),
        "{detail}"
    );
    assert_eq!(checked.result("credentials", CREDENTIALS_SECRET).0, "ok", "the credentials themselves are fine");
    checked.assert_no_token();
}

#[tokio::test]
async fn a_site_the_account_does_not_administer_fails() {
    let t = TestNs::new("preflight-site").await;
    let site = format!("customer-{}.atlassian.net", t.name);
    let platform = t.start_platform(seed(&["preflight-site"], &[(&site, false)])).await;
    create(&t.api::<ForgeApp>(), forge_app("preflight-site", None)).await;
    create(&t.api::<Installation>(), installation("initech", "preflight-site", &site)).await;

    // Before the operator ran, nobody knows: a warning, not a failure.
    let before = check(&t, &platform, &shared().kubeconfig, &["-o", "json"]).await;
    let (result, detail) = before.result("site", "initech");
    assert_eq!((result.as_str(), before.code), ("warn", 0), "{detail}");
    assert!(detail.contains("the platform offers no read of site admin rights"), "{detail}");

    // The operator tried to install and the platform refused: now it is known.
    operate_until(&t, &platform, "initech", "the platform's refusal recorded", |i| {
        i.status.as_ref().is_some_and(|s| s.site_administered == Some(false))
    })
    .await;
    let checked = check(&t, &platform, &shared().kubeconfig, &["-o", "json"]).await;
    assert_eq!(checked.code, 1, "{}\n{}", checked.stdout, checked.stderr);
    let (result, detail) = checked.result("site", &format!("installation {}/initech ({site})", t.name));
    assert_eq!(result, "fail");
    assert!(detail.starts_with(&format!("{EMAIL} does not administer {site}")), "{detail}");
    assert!(detail.contains("installation link"), "{detail}");
    checked.assert_no_token();
}

#[tokio::test]
async fn distribution_not_enabled_or_not_offered_fails() {
    let t = TestNs::new("preflight-dist").await;
    let platform = t.start_platform(seed(&["preflight-dist"], &[])).await;
    create(&t.api::<ForgeApp>(), forge_app("preflight-dist", None)).await;
    create(&t.api::<forgeops::api::DistributionPolicy>(), policy("sharing", "preflight-dist")).await;

    let off = check(&t, &platform, &shared().kubeconfig, &["-o", "json"]).await;
    assert_eq!(off.code, 1, "{}\n{}", off.stdout, off.stderr);
    let (result, detail) = off.result("distribution", &format!("distributionpolicy {}/sharing", t.name));
    assert_eq!(result, "fail");
    assert!(detail.contains("--platform-distribution") && detail.contains("DistributionUnsupported"), "{detail}");
    off.assert_no_token();
    let on = check(&t, &platform, &shared().kubeconfig, &["-o", "json", "--platform-distribution"]).await;
    assert_eq!(on.code, 0, "{}", on.stdout);
    assert!(on.result("distribution", "sharing").1.contains("sharing off"), "{}", on.stdout);

    // The flag on, but a platform without the operations.
    let u = TestNs::new("preflight-nodist").await;
    let mut config = seed(&["preflight-nodist"], &[]);
    config.distribution = false;
    let without = u.start_platform(config).await;
    create(&u.api::<ForgeApp>(), forge_app("preflight-nodist", None)).await;
    create(&u.api::<forgeops::api::DistributionPolicy>(), policy("sharing", "preflight-nodist")).await;
    let unsupported = check(&u, &without, &shared().kubeconfig, &["-o", "json", "--platform-distribution"]).await;
    assert_eq!(unsupported.code, 1, "{}", unsupported.stdout);
    let (result, detail) = unsupported.result("distribution", "sharing");
    assert_eq!(result, "fail");
    assert!(detail.contains("does not offer the distribution operations"), "{detail}");
    unsupported.assert_no_token();
}

#[tokio::test]
async fn an_unreachable_cluster_exits_2() {
    let t = TestNs::new("preflight-down").await;
    let platform = t.start_platform(seed(&[], &[])).await;
    let dir = tempdir(&t.name);
    let kubeconfig = dir.join("kubeconfig");
    let port = support::free_port();
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: \"https://127.0.0.1:{port}\", insecure-skip-tls-verify: true}}}}]\n\
             users: [{{name: u, user: {{token: abc}}}}]\ncontexts: [{{name: x, context: {{cluster: c, user: u}}}}]\ncurrent-context: x\n"
        ),
    )
    .expect("writing a kubeconfig");
    let checked = check(&t, &platform, &kubeconfig, &[]).await;
    assert_eq!(checked.code, 2, "{}\n{}", checked.stdout, checked.stderr);
    assert!(checked.stderr.contains("the check could not run"), "{}", checked.stderr);
    assert!(checked.stdout.is_empty(), "no table: {}", checked.stdout);
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = shared().dir.join(format!("preflight-{name}"));
    std::fs::create_dir_all(&dir).expect("creating a directory");
    dir
}
