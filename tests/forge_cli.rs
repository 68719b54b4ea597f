//! The REAL Forge CLI (`@forge/cli`, pinned in `tests/forge-cli/`) against the platform
//! emulator: every command forgeops relies on must succeed, print what the emulator's state
//! says, and send the operations (and key variables) forgeops' adapter sends for the same action.
//!
//! Each test starts an emulator of its own on 127.0.0.1:0 with a seed built here. The CLI runs
//! with a fresh HOME and loopback-only networking (see `support/forge_cli.rs`).

#[path = "support/forge_cli.rs"]
mod forge_cli;

use forge_cli::{CliAction, ForgeEnv, cli_mutation, describe, forge, parse_json_output, run_recorded};
use forgeops_emulator::{EmulatorConfig, RunningEmulator, Seed};
use serde_json::{Value, json};

const EMAIL: &str = "platform-team@acme.example";
const TOKEN: &str = "local-dev-token";
const APP_UUID: &str = "6f1c2d3e-0000-4000-8000-000000000001";
const APP: &str = "ari:cloud:ecosystem::app/6f1c2d3e-0000-4000-8000-000000000001";
const ENV: &str = "production";

const V1: &str = "11111111-0000-4000-8000-000000000001";
const V2: &str = "11111111-0000-4000-8000-000000000002";
/// The latest: a new major with the permissions of 2 (so a bulk upgrade from 2 may reach it).
const V3: &str = "11111111-0000-4000-8000-000000000003";
const V1_SCOPES: &[&str] = &["read:jira-work"];
const V2_SCOPES: &[&str] = &["read:jira-work", "write:jira-work"];

const ACME: &str = "acme.atlassian.net";
const ACME_CLOUD: &str = "22222222-0000-4000-8000-000000000001";
const ACME_JIRA: &str = "33333333-0000-4000-8000-000000000001";
const GLOBEX: &str = "globex.atlassian.net";
const GLOBEX_CLOUD: &str = "22222222-0000-4000-8000-000000000002";
const GLOBEX_JIRA: &str = "33333333-0000-4000-8000-000000000002";

/// A customer's site: no account of the test administers it.
const CUSTOMER: &str = "customer.atlassian.net";
const INST_ACME: &str = "44444444-0000-4000-8000-000000000001";
const INST_GLOBEX: &str = "44444444-0000-4000-8000-000000000002";

fn acme_context() -> String {
    format!("ari:cloud:jira:{ACME_CLOUD}:workspace/{ACME_JIRA}")
}

fn globex_context() -> String {
    format!("ari:cloud:jira:{GLOBEX_CLOUD}:workspace/{GLOBEX_JIRA}")
}

/// One account, one app with majors 1, 2 and 3 in production, two sites with Jira, and the given
/// installations (each `(id, site, version)` in production, Jira).
fn seed(installations: &[(&str, &str, &str)]) -> Seed {
    let installations: Vec<Value> = installations
        .iter()
        .map(|(id, site, version)| {
            json!({"id": id, "appId": APP, "environment": ENV, "site": site, "product": "jira", "version": version})
        })
        .collect();
    serde_json::from_value(json!({
        "accounts": [{"email": EMAIL, "apiToken": TOKEN, "name": "Platform Team"}],
        "apps": [{
            "id": APP,
            "name": "issue-tracker-insights",
            "owner": EMAIL,
            "environments": [{
                "key": ENV,
                "versions": [
                    {"version": "1.0.0", "id": V1, "scopes": V1_SCOPES, "egress": ["api.insights.acme.example"],
                     "requiredProducts": ["jira"], "createdAt": 1_700_000_000_000_i64},
                    {"version": "2.0.0", "id": V2, "scopes": V2_SCOPES, "egress": ["api.insights.acme.example"],
                     "requiredProducts": ["jira"], "createdAt": 1_700_000_100_000_i64},
                    {"version": "3.0.0", "id": V3, "scopes": V2_SCOPES, "egress": ["api.insights.acme.example"],
                     "requiredProducts": ["jira"], "createdAt": 1_700_000_200_000_i64},
                ],
            }],
        }],
        "sites": [
            {"hostName": ACME, "cloudId": ACME_CLOUD, "products": ["jira"], "activationIds": {"jira": ACME_JIRA}, "admins": [EMAIL]},
            {"hostName": GLOBEX, "cloudId": GLOBEX_CLOUD, "products": ["jira"], "activationIds": {"jira": GLOBEX_JIRA}, "admins": [EMAIL]},
            // A customer's site: the account administers it not, so only the installation link reaches it.
            {"hostName": CUSTOMER, "products": ["jira"]},
        ],
        "installations": installations,
    }))
    .expect("the test seed")
}

struct Harness {
    emulator: RunningEmulator,
    env: ForgeEnv,
}

impl Harness {
    async fn start(seed: Seed) -> Harness {
        Harness::start_with(EmulatorConfig { seed, ..Default::default() }).await
    }

    async fn start_with(config: EmulatorConfig) -> Harness {
        let emulator =
            forgeops_emulator::start(config, "127.0.0.1:0".parse().unwrap()).await.expect("starting the emulator");
        let env = ForgeEnv::new(emulator.graphql_url(), EMAIL, TOKEN).with_app(APP);
        Harness { emulator, env }
    }

    /// Runs the CLI (it must succeed); stdout and the (operation, variables) the emulator recorded.
    fn run(&self, args: &[&str]) -> (String, Vec<(String, Value)>) {
        tokio::task::block_in_place(|| run_recorded(&self.emulator, &self.env, args))
    }

    fn mutation(&self, action: &CliAction) -> (String, Value) {
        tokio::task::block_in_place(|| cli_mutation(&self.emulator, &self.env, action))
    }

    fn state(&self) -> Value {
        self.emulator.state()
    }

    /// The installations of the app in the emulator's state.
    fn installations(&self) -> Vec<Value> {
        let state = self.state();
        state["installations"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|i| i["appId"] == APP)
            .collect()
    }

    fn installation_on(&self, context: &str) -> Option<Value> {
        self.installations().into_iter().find(|i| i["context"] == context && i["environmentKey"] == ENV)
    }

    fn rollouts(&self) -> Vec<Value> {
        self.state()["rollouts"].as_array().cloned().unwrap_or_default()
    }
}

fn op_names(recorded: &[(String, Value)]) -> Vec<&str> {
    recorded.iter().map(|(op, _)| op.as_str()).collect()
}

/// The variables of every recorded `op`.
fn vars_of<'a>(recorded: &'a [(String, Value)], op: &str) -> Vec<&'a Value> {
    recorded.iter().filter(|(o, _)| o == op).map(|(_, v)| v).collect()
}

/// Asserts that `expected` occur in `recorded` in this order (other operations may come between).
fn assert_sequence(recorded: &[(String, Value)], expected: &[&str]) {
    let names = op_names(recorded);
    let mut at = 0;
    for want in expected {
        match names[at..].iter().position(|n| n == want) {
            Some(i) => at += i + 1,
            None => panic!("expected the CLI to send {expected:?} in this order; it sent {names:?}"),
        }
    }
}

fn install(major: Option<u32>, site: &str) -> CliAction {
    CliAction::Install {
        app_uuid: APP_UUID.into(),
        site: site.into(),
        product: "jira".into(),
        environment: ENV.into(),
        major,
    }
}

/// `forge install`: the latest version is installed on the site's Jira workspace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_latest() {
    let h = Harness::start(seed(&[])).await;
    let (op, vars) = h.mutation(&install(None, ACME));
    assert_eq!(op, "forge_cli_installApplication");
    let input = &vars["input"];
    assert_eq!(input["installationContext"], acme_context(), "{vars:#}");
    assert_eq!(input["appId"], APP, "{vars:#}");
    assert_eq!(input["environmentKey"], ENV, "{vars:#}");
    assert_eq!(input["async"], true, "{vars:#}");
    assert!(input.get("versionId").is_none_or(Value::is_null), "no versionId without --major-version: {vars:#}");

    let inst = h.installation_on(&acme_context()).expect("the emulator holds the installation");
    assert_eq!(inst["versionId"], V3, "the latest version is installed: {inst:#}");
    assert_eq!(h.installations().len(), 1);
}

/// `forge install` on a customer's site: the platform refuses with PERMISSION_DENIED (the account
/// is not an admin there), the CLI says so and exits 1, and nothing is installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_is_refused_on_a_customers_site() {
    let h = Harness::start(seed(&[])).await;
    let args = install(None, CUSTOMER).args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = tokio::task::block_in_place(|| forge(&args, &h.env));
    assert!(!out.status.success(), "{}", describe(&args, &out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("admin") && stdout.contains(CUSTOMER),
        "the CLI shows the platform's refusal: {}",
        describe(&args, &out)
    );
    let sent = h
        .emulator
        .requests()
        .iter()
        .filter(|r| r.operation_name.as_deref() == Some("forge_cli_installApplication"))
        .count();
    assert_eq!(sent, 1, "the CLI asked once");
    assert!(h.installations().is_empty(), "nothing was installed");
    assert!(h.state()["tasks"].as_object().is_none_or(|t| t.is_empty()), "no task was accepted");
}

/// Which operations `forge install` sends, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_sends_the_expected_operations() {
    let h = Harness::start(seed(&[])).await;
    let args = install(None, GLOBEX).args();
    let (stdout, recorded) = h.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(stdout.contains(GLOBEX), "the CLI names the site:\n{stdout}");
    assert_eq!(op_names(&recorded).first(), Some(&"forge_cli_getUserDetails"), "{recorded:#?}");
    assert_sequence(
        &recorded,
        &[
            "forge_cli_getUserDetails",
            "forge_cli_getApplicationEnvironmentLatestVersions",
            "getTenantContextDetails",
            "forge_cli_getEcosystemInstallationsByApp",
            "forge_cli_installApplication",
            "forge_cli_getInstallationTask",
        ],
    );
    let latest = vars_of(&recorded, "forge_cli_getApplicationEnvironmentLatestVersions");
    assert_eq!(latest[0], &json!({"appId": APP, "environmentKey": ENV, "firstN": 2}));
    let tenant = vars_of(&recorded, "getTenantContextDetails");
    assert_eq!(tenant[0], &json!({"hostNames": [GLOBEX], "product": "jira"}));
    let list = vars_of(&recorded, "forge_cli_getEcosystemInstallationsByApp");
    assert_eq!(list[0]["filter"]["apps"]["ids"], json!([APP]));
    assert_eq!(list[0]["filter"]["appInstallations"]["contexts"], json!([globex_context()]));
    // The task the install answered is the one polled until COMPLETE.
    let state = h.state();
    let task_ids: Vec<&Value> = vars_of(&recorded, "forge_cli_getInstallationTask").iter().map(|v| &v["id"]).collect();
    assert!(!task_ids.is_empty());
    let task = &state["tasks"][task_ids[0].as_str().unwrap()];
    assert_eq!(task["state"], "COMPLETE", "{state:#}");
    assert_eq!(task["context"], globex_context(), "{state:#}");
}

/// `forge install --major-version 1`: the CLI looks the major up and installs that version id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_major_version() {
    let h = Harness::start(seed(&[])).await;
    let args = install(Some(1), ACME).args();
    let (_, recorded) = h.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_sequence(
        &recorded,
        &["forge_cli_getUserDetails", "forge_cli_getApplicationVersionList", "forge_cli_installApplication"],
    );
    let lookup = vars_of(&recorded, "forge_cli_getApplicationVersionList");
    assert_eq!(lookup[0], &json!({"id": APP, "environmentKey": ENV, "majorVersion": 1}));
    let input = &vars_of(&recorded, "forge_cli_installApplication")[0]["input"];
    assert_eq!(input["versionId"], V1, "{input:#}");
    assert_eq!(input["installationContext"], acme_context(), "{input:#}");

    let inst = h.installation_on(&acme_context()).expect("the emulator holds the installation");
    assert_eq!(inst["versionId"], V1, "major 1 is installed: {inst:#}");
}

/// `forge install --upgrade`: an installation on major 1 moves to the latest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_upgrade() {
    let h = Harness::start(seed(&[(INST_ACME, ACME, "1.0.0")])).await;
    assert_eq!(h.installation_on(&acme_context()).unwrap()["versionId"], V1);
    let action = CliAction::Upgrade {
        app_uuid: APP_UUID.into(),
        site: ACME.into(),
        product: "jira".into(),
        environment: ENV.into(),
    };
    let (op, vars) = h.mutation(&action);
    assert_eq!(op, "forge_cli_upgradeApplication");
    let input = &vars["input"];
    assert_eq!(input["installationContext"], acme_context(), "{vars:#}");
    assert_eq!(input["appId"], APP, "{vars:#}");
    assert_eq!(input["environmentKey"], ENV, "{vars:#}");
    assert_eq!(input["async"], true, "{vars:#}");

    let inst = h.installation_on(&acme_context()).expect("still installed");
    assert_eq!(inst["id"], INST_ACME, "the same installation: {inst:#}");
    assert_eq!(inst["versionId"], V3, "upgraded to the latest: {inst:#}");
}

/// `forge uninstall`: the CLI finds the installation by context, then uninstalls it by id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninstall() {
    let h = Harness::start(seed(&[(INST_ACME, ACME, "1.0.0"), (INST_GLOBEX, GLOBEX, "2.0.0")])).await;
    let action = CliAction::Uninstall {
        app_uuid: APP_UUID.into(),
        site: ACME.into(),
        product: "jira".into(),
        environment: ENV.into(),
    };
    let args = action.args();
    let (_, recorded) = h.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_sequence(
        &recorded,
        &[
            "getTenantContextDetails",
            "forge_cli_getEcosystemInstallationsByApp",
            "forge_cli_uninstallApplication",
            "forge_cli_getInstallationTask",
        ],
    );
    let input = &vars_of(&recorded, "forge_cli_uninstallApplication")[0]["input"];
    assert_eq!(input["installationId"], INST_ACME, "{input:#}");
    assert_eq!(input["installationContext"], acme_context(), "{input:#}");
    assert_eq!(input["appId"], APP, "{input:#}");
    assert_eq!(input["environmentKey"], ENV, "{input:#}");

    assert!(h.installation_on(&acme_context()).is_none(), "uninstalled: {:#}", h.state());
    assert!(h.installation_on(&globex_context()).is_some(), "the other site keeps its installation");
}

/// `forge install list --json` prints the emulator's installations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_list_json() {
    let h = Harness::start(seed(&[(INST_ACME, ACME, "1.0.0"), (INST_GLOBEX, GLOBEX, "2.0.0")])).await;
    let (stdout, recorded) = h.run(&["install", "list", "--json", "--app-id-override", APP_UUID]);
    assert_sequence(&recorded, &["forge_cli_getEcosystemInstallationsByApp", "forge_cli_getHostnameForTenantContexts"]);
    let list = vars_of(&recorded, "forge_cli_getEcosystemInstallationsByApp");
    assert_eq!(list[0]["filter"], json!({"apps": {"ids": [APP]}}), "{:#}", list[0]);
    let mut cloud_ids: Vec<Value> = vars_of(&recorded, "forge_cli_getHostnameForTenantContexts")
        .iter()
        .flat_map(|v| v["cloudIds"].as_array().cloned().unwrap_or_default())
        .collect();
    cloud_ids.sort_by_key(|v| v.to_string());
    assert_eq!(cloud_ids, vec![json!(ACME_CLOUD), json!(GLOBEX_CLOUD)]);

    let printed = parse_json_output(&stdout);
    let printed = printed.as_array().unwrap_or_else(|| panic!("a JSON list:\n{stdout}"));
    let state = h.installations();
    assert_eq!(printed.len(), state.len(), "printed:\n{stdout}\nstate: {state:#?}");
    let sites = [(ACME_CLOUD, ACME), (GLOBEX_CLOUD, GLOBEX)];
    for inst in &state {
        let row = printed
            .iter()
            .find(|r| r["id"] == inst["id"])
            .unwrap_or_else(|| panic!("installation {} not printed:\n{stdout}", inst["id"]));
        let host = sites.iter().find(|(c, _)| inst["cloudId"] == *c).unwrap().1;
        assert_eq!(row["site"], host, "{row:#}");
        assert_eq!(row["environment"], inst["environmentKey"], "{row:#}");
        assert_eq!(row["product"].as_str().unwrap().to_lowercase(), inst["product"], "{row:#}");
        let major = [(V1, "1"), (V2, "2"), (V3, "3")].iter().find(|(v, _)| inst["versionId"] == *v).unwrap().1;
        let printed_major = row["majorVersion"].as_str().unwrap();
        assert!(printed_major.starts_with(major), "{row:#} vs {inst:#}");
        assert_eq!(printed_major.contains("Out-of-date"), major != "3", "only the latest major is current: {row:#}");
        // `appVersion` is the major of `computeVersion` (the code version), which the emulator
        // leaves null (the CLI then assumes 1.0.0): see the gaps noted in the report, not checked.
    }
}

/// `forge version list --json` and `forge version details --json` print the emulator's versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_list_and_details_json() {
    let h = Harness::start(seed(&[])).await;
    let (stdout, recorded) = h.run(&["version", "list", "--json", "--environment", ENV, "--non-interactive"]);
    assert_sequence(&recorded, &["forge_cli_getUserDetails", "forge_cli_getApplicationVersionList"]);
    assert_eq!(vars_of(&recorded, "forge_cli_getApplicationVersionList")[0], &json!({"appId": APP, "first": 20}));
    let mut majors: Vec<i64> = vars_of(&recorded, "forge_cli_getApplicationVersionDetails")
        .iter()
        .map(|v| {
            assert_eq!(v["appId"], APP);
            assert_eq!(v["environmentKey"], ENV);
            assert_eq!(v["firstN"], 1);
            v["majorVersion"].as_i64().unwrap()
        })
        .collect();
    majors.sort();
    assert_eq!(majors, vec![1, 2, 3], "one details query per major");

    let state = h.state();
    let env = &state["apps"][0]["environments"][0];
    let versions = env["versions"].as_array().unwrap();
    let printed = parse_json_output(&stdout);
    let printed = printed.as_array().unwrap_or_else(|| panic!("a JSON list:\n{stdout}"));
    let mut printed_majors: Vec<i64> = printed.iter().map(|r| r["version"].as_i64().unwrap()).collect();
    printed_majors.sort();
    assert_eq!(printed_majors, vec![1, 2, 3], "{stdout}");
    for row in printed {
        let major = row["version"].as_i64().unwrap();
        let v = versions.iter().find(|v| v["version"].as_str().unwrap().starts_with(&format!("{major}."))).unwrap();
        let scopes = v["scopes"].as_array().unwrap().len();
        assert_eq!(row["scopes"], scopes.to_string(), "{row:#} vs {v:#}");
        assert_eq!(row["environmentType"], "PRODUCTION", "{row:#}");
        assert_eq!(row["requiresLicense"], v["requiresLicense"], "{row:#}");
    }

    let (stdout, recorded) =
        h.run(&["version", "details", "--json", "--environment", ENV, "--non-interactive", "--major-version", "1"]);
    let details = vars_of(&recorded, "forge_cli_getApplicationVersionDetails");
    assert_eq!(details, vec![&json!({"appId": APP, "environmentKey": ENV, "firstN": 1, "majorVersion": 1})]);
    let printed = parse_json_output(&stdout);
    assert_eq!(printed["appVersion"], 1, "{stdout}");
    assert_eq!(printed["environment"], ENV, "{stdout}");
    assert_eq!(printed["scopes"], json!(V1_SCOPES), "{stdout}");
    assert_eq!(printed["egresses"][0]["addresses"], json!(["api.insights.acme.example"]), "{stdout}");
    let v1 = versions.iter().find(|v| v["id"] == V1).unwrap();
    let created = v1["createdAt"].as_i64().unwrap();
    let printed_at = printed["deploymentDateTime"].as_str().and_then(|t| t.parse::<jiff::Timestamp>().ok());
    assert_eq!(printed_at.map(|t| t.as_millisecond()), Some(created), "{stdout}");
}

/// `forge version bulk-upgrade start`, `list` and `cancel`, non-interactive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_upgrade_start_list_cancel() {
    // Rollouts that move slowly enough to be cancelled.
    let mut config = EmulatorConfig {
        seed: seed(&[(INST_ACME, ACME, "2.0.0"), (INST_GLOBEX, GLOBEX, "2.0.0")]),
        ..Default::default()
    };
    config.rollout_step = std::time::Duration::from_secs(600);
    let h = Harness::start_with(config).await;

    let start = CliAction::BulkUpgradeStart { environment: ENV.into(), from_major: 2, to_major: 3, limit: Some(2) };
    let args = start.args();
    let (stdout, recorded) = h.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_sequence(
        &recorded,
        &[
            "forge_cli_getUserDetails",
            "forge_cli_getApplicationIdentityVersionDetails",
            "forge_cli_createAppVersionUpgradeRollout",
        ],
    );
    let mut looked_up: Vec<i64> = vars_of(&recorded, "forge_cli_getApplicationIdentityVersionDetails")
        .iter()
        .map(|v| {
            assert_eq!(v["appId"], APP);
            assert_eq!(v["environmentKey"], ENV);
            v["majorVersion"].as_i64().unwrap()
        })
        .collect();
    looked_up.sort();
    assert_eq!(looked_up, vec![2, 3]);
    let create = vars_of(&recorded, "forge_cli_createAppVersionUpgradeRollout");
    assert_eq!(create, vec![&json!({"input": {"sourceVersionId": V2, "targetVersionId": V3, "limit": 2}})]);
    let rollouts = h.rollouts();
    assert_eq!(rollouts.len(), 1, "{rollouts:#?}");
    let rollout = &rollouts[0];
    let id = rollout["id"].as_str().unwrap().to_string();
    assert_eq!(rollout["status"], "RUNNING", "{rollout:#}");
    assert_eq!(rollout["sourceVersionId"], V2);
    assert_eq!(rollout["targetVersionId"], V3);
    let message = parse_json_output(&stdout);
    assert!(message.as_str().is_some_and(|m| m.contains(&id)), "the CLI prints the upgrade id {id}:\n{stdout}");

    // list
    let (stdout, recorded) =
        h.run(&["version", "bulk-upgrade", "list", "--json", "--environment", ENV, "--non-interactive"]);
    assert_eq!(
        vars_of(&recorded, "forge_cli_getAppVersionRolloutsList"),
        vec![&json!({"appId": APP, "environmentKey": ENV})]
    );
    let printed = parse_json_output(&stdout);
    let rows = printed.as_array().unwrap_or_else(|| panic!("a JSON list:\n{stdout}"));
    assert_eq!(rows.len(), 1, "{stdout}");
    let row = &rows[0];
    assert_eq!(row["id"], id.as_str(), "{row:#}");
    assert_eq!(row["status"], "RUNNING", "{row:#}");
    assert_eq!(row["sourceVersionId"], "2.0.0", "the CLI prints version strings: {row:#}");
    assert_eq!(row["targetVersionId"], "3.0.0", "{row:#}");
    assert_eq!(row["environmentType"], "PRODUCTION", "{row:#}");
    // `AppVersionRollout.createdAt` is a `DateTime` (ISO 8601), which the CLI prints as it comes.
    let created = row["createdAt"].as_str().and_then(|t| t.parse::<jiff::Timestamp>().ok());
    assert_eq!(created.map(|t| t.as_millisecond()), rollout["createdAt"].as_i64(), "{row:#} vs {rollout:#}");
    assert_eq!(row["completedAt"], "In progress", "{row:#}");
    let pending = rollout["pending"].as_array().map(Vec::len).unwrap_or_default();
    assert_eq!(row["pendingUpgradeCount"], pending, "{row:#} vs {rollout:#}");
    assert_eq!(row["completedUpgradeCount"], rollout["completed"], "{row:#} vs {rollout:#}");
    assert_eq!(row["failedUpgradeCount"], rollout["failed"], "{row:#} vs {rollout:#}");

    // cancel
    let cancel = CliAction::BulkUpgradeCancel { environment: ENV.into(), rollout_id: id.clone() };
    let args = cancel.args();
    let (stdout, recorded) = h.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_sequence(&recorded, &["forge_cli_getAppVersionRollout", "forge_cli_cancelAppVersionUpgradeRollout"]);
    assert_eq!(vars_of(&recorded, "forge_cli_getAppVersionRollout"), vec![&json!({"appRolloutId": id})]);
    assert_eq!(vars_of(&recorded, "forge_cli_cancelAppVersionUpgradeRollout"), vec![&json!({"input": {"id": id}})]);
    assert!(stdout.contains(&id), "{stdout}");
    let rollout = h.rollouts().into_iter().find(|r| r["id"] == id.as_str()).unwrap();
    assert_eq!(rollout["status"], "CANCELLED", "{rollout:#}");
}

/// `cli_mutation` (what a later test compares with forgeops' adapter) for every action in turn on
/// one emulator: exactly one mutation each, with the key variables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_mutation_of_each_action() {
    let mut config = EmulatorConfig { seed: seed(&[(INST_GLOBEX, GLOBEX, "2.0.0")]), ..Default::default() };
    config.rollout_step = std::time::Duration::from_secs(600);
    let h = Harness::start_with(config).await;
    let site = |site: &str| (APP_UUID.to_string(), site.to_string(), "jira".to_string(), ENV.to_string());

    let (op, vars) = h.mutation(&install(Some(1), ACME));
    assert_eq!(op, "forge_cli_installApplication");
    assert_eq!(
        vars,
        json!({"input": {"installationContext": acme_context(), "appId": APP, "environmentKey": ENV, "async": true, "versionId": V1}})
    );

    let (app_uuid, site_name, product, environment) = site(ACME);
    let (op, vars) = h.mutation(&CliAction::Upgrade { app_uuid, site: site_name, product, environment });
    assert_eq!(op, "forge_cli_upgradeApplication");
    assert_eq!(
        vars,
        json!({"input": {"installationContext": acme_context(), "appId": APP, "environmentKey": ENV, "async": true}})
    );
    let acme_id = h.installation_on(&acme_context()).unwrap()["id"].clone();

    let (app_uuid, site_name, product, environment) = site(ACME);
    let (op, vars) = h.mutation(&CliAction::Uninstall { app_uuid, site: site_name, product, environment });
    assert_eq!(op, "forge_cli_uninstallApplication");
    assert_eq!(
        vars,
        json!({"input": {"appId": APP, "environmentKey": ENV, "installationId": acme_id, "installationContext": acme_context(), "async": true}})
    );

    let (op, vars) =
        h.mutation(&CliAction::BulkUpgradeStart { environment: ENV.into(), from_major: 2, to_major: 3, limit: None });
    assert_eq!(op, "forge_cli_createAppVersionUpgradeRollout");
    assert_eq!(vars, json!({"input": {"sourceVersionId": V2, "targetVersionId": V3}}), "no limit without --limit");

    let id = h.rollouts()[0]["id"].as_str().unwrap().to_string();
    let (op, vars) = h.mutation(&CliAction::BulkUpgradeCancel { environment: ENV.into(), rollout_id: id.clone() });
    assert_eq!(op, "forge_cli_cancelAppVersionUpgradeRollout");
    assert_eq!(vars, json!({"input": {"id": id}}));
}

/// The CLI run by these tests reaches nothing but loopback: the real gateway is refused.
#[test]
fn the_cli_reaches_nothing_but_loopback() {
    let env = ForgeEnv::new("https://api.atlassian.com/graphql", EMAIL, TOKEN);
    let args = ["install", "list", "--json", "--app-id-override", APP_UUID, "--verbose"];
    let out = forge_cli::forge(&args, &env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{}", forge_cli::describe(&args, &out));
    assert!(
        stdout.contains("network access to api.atlassian.com is blocked (loopback only)"),
        "{}",
        forge_cli::describe(&args, &out)
    );
}

/// For the same action, forgeops' adapter (`forgeops::platform::ForgeGateway`) sends the same
/// operation with the same variables as the real CLI. Each side runs against its own emulator
/// started from the same seed (whose ids are fixed), so the recorded mutations are comparable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adapter_sends_what_the_cli_sends() {
    use forgeops::platform::{Credentials, ForgeGateway, GatewayOptions, Platform, Target};
    let fresh = || EmulatorConfig { seed: seed(&[(INST_GLOBEX, GLOBEX, "2.0.0")]), ..Default::default() };
    let last_mutation = |emulator: &RunningEmulator, op: &str| {
        let found = emulator.requests().into_iter().rev().find(|r| r.operation_name.as_deref() == Some(op));
        found.map(|r| r.variables).unwrap_or_else(|| panic!("the adapter sent no {op}"))
    };
    let creds = Credentials::new(EMAIL, TOKEN, "test");
    let target = |site: &str| Target {
        app_id: APP.into(),
        environment_key: ENV.into(),
        site: site.into(),
        product: "jira".into(),
    };
    let site = |site: &str| (APP_UUID.to_string(), site.to_string(), "jira".to_string(), ENV.to_string());
    let mut compared = Vec::new();

    // Install of major 1 (the CLI's --major-version sends the version id; so does forgeops).
    let cli = Harness::start_with(fresh()).await;
    let (cli_op, cli_vars) = cli.mutation(&install(Some(1), ACME));
    let ours = Harness::start_with(fresh()).await;
    let g = ForgeGateway::new(GatewayOptions { url: ours.emulator.graphql_url(), ..Default::default() }, None).unwrap();
    g.start_install(&creds, &target(ACME), Some(V1)).await.unwrap();
    assert_eq!(cli_vars, last_mutation(&ours.emulator, &cli_op), "{cli_op}");
    compared.push(cli_op);

    // Upgrade to the latest (no version id: the platform's latest).
    let (app_uuid, site_name, product, environment) = site(GLOBEX);
    let (cli_op, cli_vars) = cli.mutation(&CliAction::Upgrade { app_uuid, site: site_name, product, environment });
    g.start_upgrade(&creds, &target(GLOBEX), None).await.unwrap();
    assert_eq!(cli_vars, last_mutation(&ours.emulator, &cli_op), "{cli_op}");
    compared.push(cli_op);

    // Bulk upgrade 2 → 3 without a limit, then its cancellation.
    let cli =
        Harness::start_with(EmulatorConfig { rollout_step: std::time::Duration::from_secs(600), ..fresh() }).await;
    let ours =
        Harness::start_with(EmulatorConfig { rollout_step: std::time::Duration::from_secs(600), ..fresh() }).await;
    let g = ForgeGateway::new(GatewayOptions { url: ours.emulator.graphql_url(), ..Default::default() }, None).unwrap();
    let (cli_op, cli_vars) =
        cli.mutation(&CliAction::BulkUpgradeStart { environment: ENV.into(), from_major: 2, to_major: 3, limit: None });
    let started = g.create_rollout(&creds, V2, V3, None).await.unwrap();
    assert_eq!(cli_vars, last_mutation(&ours.emulator, &cli_op), "{cli_op}");
    compared.push(cli_op);
    let cli_rollout = cli.rollouts()[0]["id"].as_str().unwrap().to_string();
    let (cli_op, cli_vars) =
        cli.mutation(&CliAction::BulkUpgradeCancel { environment: ENV.into(), rollout_id: cli_rollout.clone() });
    g.cancel_rollout(&creds, &started.rollout_id).await.unwrap();
    let our_vars = last_mutation(&ours.emulator, &cli_op).to_string().replace(&started.rollout_id, &cli_rollout);
    assert_eq!(cli_vars.to_string(), our_vars, "{cli_op} (rollout ids aside)");
    compared.push(cli_op);

    // Uninstall of a seeded installation (same id on both emulators).
    let cli = Harness::start_with(fresh()).await;
    let ours = Harness::start_with(fresh()).await;
    let g = ForgeGateway::new(GatewayOptions { url: ours.emulator.graphql_url(), ..Default::default() }, None).unwrap();
    let (app_uuid, site_name, product, environment) = site(GLOBEX);
    let (cli_op, cli_vars) = cli.mutation(&CliAction::Uninstall { app_uuid, site: site_name, product, environment });
    g.start_uninstall(&creds, APP, ENV, INST_GLOBEX, Some(&globex_context())).await.unwrap();
    assert_eq!(cli_vars, last_mutation(&ours.emulator, &cli_op), "{cli_op}");
    compared.push(cli_op);

    assert_eq!(
        compared,
        [
            "forge_cli_installApplication",
            "forge_cli_upgradeApplication",
            "forge_cli_createAppVersionUpgradeRollout",
            "forge_cli_cancelAppVersionUpgradeRollout",
            "forge_cli_uninstallApplication"
        ]
    );
}

/// `forge environments list` reads the environments with `forge_cli_listEnvironment`, the
/// operation forgeops' adapter uses for them, and prints what the emulator has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environments_list() {
    let h = Harness::start(seed(&[])).await;
    let (stdout, recorded) = h.run(&["environments", "list"]);
    assert_sequence(&recorded, &["forge_cli_getUserDetails", "forge_cli_listEnvironment"]);
    let vars = vars_of(&recorded, "forge_cli_listEnvironment")[0];
    assert_eq!(vars["id"], APP, "{vars:#}");
    let state = h.state();
    let env = &state["apps"][0]["environments"][0];
    assert!(stdout.contains(env["id"].as_str().unwrap()), "the environment id is printed:\n{stdout}");
    assert!(stdout.contains("PRODUCTION") && stdout.contains(ENV), "{stdout}");
}
