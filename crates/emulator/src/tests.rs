//! GraphQL-level tests (the verbatim operation texts of the forge CLI and forgeops against the
//! schema) and HTTP tests on loopback.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::model::{Installation, Model, Settings};
use super::schema::{Caller, EmulatorSchema, SharedModel, build_schema, now_ms};
use super::*;

const APP1: &str = "ari:cloud:ecosystem::app/6f1c2d3e-0000-4000-8000-000000000001";
const APP2: &str = "ari:cloud:ecosystem::app/6f1c2d3e-0000-4000-8000-000000000002";
const EMAIL: &str = "platform-team@acme.example";
const TOKEN: &str = "local-dev-token";

const GET_USER_DETAILS: &str = include_str!("../../../src/platform/ops/forge_cli_getUserDetails.graphql");
const GET_TENANT_CONTEXT_DETAILS: &str = include_str!("../../../src/platform/ops/getTenantContextDetails.graphql");
const GET_HOSTNAMES: &str = include_str!("../../../src/platform/ops/forge_cli_getHostnameForTenantContexts.graphql");
const GET_IDENTITY_VERSIONS: &str =
    include_str!("../../../src/platform/ops/forge_cli_getApplicationIdentityVersionDetails.graphql");
const GET_VERSION_DETAILS: &str =
    include_str!("../../../src/platform/ops/forge_cli_getApplicationVersionDetails.graphql");
const GET_LATEST_VERSIONS: &str =
    include_str!("../../../src/platform/ops/forge_cli_getApplicationEnvironmentLatestVersions.graphql");
const INSTALL: &str = include_str!("../../../src/platform/ops/forge_cli_installApplication.graphql");
const UPGRADE: &str = include_str!("../../../src/platform/ops/forge_cli_upgradeApplication.graphql");
const UNINSTALL: &str = include_str!("../../../src/platform/ops/forge_cli_uninstallApplication.graphql");
const GET_TASK: &str = include_str!("../../../src/platform/ops/forge_cli_getInstallationTask.graphql");
const GET_INSTALLATIONS: &str =
    include_str!("../../../src/platform/ops/forge_cli_getEcosystemInstallationsByApp.graphql");
const LIST_ENVIRONMENT: &str = include_str!("../../../src/platform/ops/forge_cli_listEnvironment.graphql");
const UPGRADE_VERSIONS: &str = include_str!("../../../src/platform/ops/forge_cli_getAppUpgradeVersionsList.graphql");
const UPGRADABLE_TO: &str = include_str!("../../../src/platform/ops/forge_cli_getAppUpgradableToList.graphql");
const CREATE_ROLLOUT: &str = include_str!("../../../src/platform/ops/forge_cli_createAppVersionUpgradeRollout.graphql");
const GET_ROLLOUT: &str = include_str!("../../../src/platform/ops/forge_cli_getAppVersionRollout.graphql");
const LIST_ROLLOUTS: &str = include_str!("../../../src/platform/ops/forge_cli_getAppVersionRolloutsList.graphql");
const CANCEL_ROLLOUT: &str = include_str!("../../../src/platform/ops/forge_cli_cancelAppVersionUpgradeRollout.graphql");
const UPDATE_APP_DETAILS: &str = include_str!("../../../src/platform/ops/forgeops_updateAppDetails.graphql");
const GENERATE_LINK: &str = include_str!("../../../src/platform/ops/forgeops_generateDistributionLink.graphql");
const GET_SHARING: &str = include_str!("../../../src/platform/ops/forgeops_getAppSharing.graphql");

// Operations the CLI sends whose texts are not in src/platform/ops (copied from @forge/cli 13.3.0).
const HAS_NO_INSTALLATIONS: &str = r#"
      query forge_cli_hasNoAppInstallationsForEnv($filter: AppInstallationsByAppFilter!) {
        ecosystem {
          appInstallationsByApp(filter: $filter, first: 1) {
            totalCount
          }
        }
      }"#;
const VERSION_LIST_BY_MAJOR: &str = r#"
      query forge_cli_getApplicationVersionList($id: ID!, $environmentKey: String!, $majorVersion: Int!) {
        app(id: $id) {
          appFeatures {
            key
            value
          }
          environmentByKey(key: $environmentKey) {
            id
            type
            versions(majorVersion: $majorVersion) {
              nodes {
                id
                version
                isLatest
                requiredProducts
                permissions {
                  egress {
                    addresses
                  }
                  scopes {
                    key
                  }
                }
              }
            }
          }
        }
      }"#;
const VERSION_LIST_PAGED: &str = r#"
      query forge_cli_getApplicationVersionList($appId: ID!, $first: Int, $after: String) {
        app(id: $appId) {
          environments {
            key
            versions(first: $first, after: $after) {
              nodes {
                version
              }
              pageInfo {
                hasNextPage
                endCursor
              }
            }
          }
        }
      }"#;
const ENVIRONMENT_BY_KEY: &str = r#"
      query forge_cli_getEnvironmentByKey($appAri: ID!, $environmentKey: String!) {
        app(id: $appAri) {
          id
          environmentByKey(key: $environmentKey) {
            id
            appId
            key
            type
          }
        }
      }"#;
const ENVIRONMENT_ID: &str = r#"
      query forge_cli_getApplicationEnvironmentId($id: ID!, $key: String!) {
        app(id: $id) {
          name
          environmentByKey(key: $key) {
            id
            type
          }
        }
      }"#;
const APP_OWNER: &str = r#"
      query forge_cli_getAppOwner($id: ID!) {
        app(id: $id) {
          createdBy {
            name
            accountId
          }
        }
      }"#;
const ENTITLEMENT_OFFERING: &str = r#"query getEntitlementOffering($hostNames: [String!], $product: String!) {
              tenantContexts(hostNames: $hostNames) {
                cloudUrl
                entitlementInfo(hamsProductKey: $product) {
                  entitlement {
                    ... on HamsEntitlement {
                        id
                        name
                        currentEdition
                      }
                    ... on CcpEntitlement {
                      id
                      offering {
                        name
                      }
                    }
                  }
                }
              }
            }"#;

fn seed() -> Seed {
    let mut seed = Seed::from_yaml_str(include_str!("../../../deploy/emulator/seed.yaml")).expect("seed");
    seed.accounts.push(SeedAccount {
        email: "other@globex.example".into(),
        api_token: "other-token".into(),
        account_id: Some("other-account".into()),
        name: None,
        status: None,
    });
    seed
}

fn setup() -> (SharedModel, EmulatorSchema, String) {
    let model = Model::from_seed(&seed(), Settings::default(), now_ms()).expect("model");
    let caller = model.accounts[0].account_id.clone();
    let shared: SharedModel = Arc::new(Mutex::new(model));
    let schema = build_schema(shared.clone());
    (shared, schema, caller)
}

/// Runs an operation; answers `{data, errors}` as JSON.
async fn exec(schema: &EmulatorSchema, caller: &str, query: &str, variables: Value) -> Value {
    let request = async_graphql::Request::new(query)
        .variables(async_graphql::Variables::from_json(variables))
        .data(Caller(caller.to_string()));
    serde_json::to_value(schema.execute(request).await).expect("response JSON")
}

/// Runs an operation that must succeed; answers `data`.
async fn data(schema: &EmulatorSchema, caller: &str, query: &str, variables: Value) -> Value {
    let response = exec(schema, caller, query, variables).await;
    assert!(response.get("errors").is_none_or(|e| e.as_array().is_some_and(|a| a.is_empty())), "{response:#}");
    response["data"].clone()
}

fn finish_tasks(model: &SharedModel) {
    model.lock().unwrap().advance(now_ms() + 60_000);
}

async fn workspace(schema: &EmulatorSchema, caller: &str, host: &str, product: &str) -> String {
    let d = data(schema, caller, GET_TENANT_CONTEXT_DETAILS, json!({"hostNames": [host], "product": product})).await;
    let tc = &d["tenantContexts"][0];
    let cloud = tc["cloudId"].as_str().expect("cloudId");
    let activation = tc["activationIdByProduct"]["active"].as_str().expect("activation id");
    format!("ari:cloud:{product}:{cloud}:workspace/{activation}")
}

async fn version_id(schema: &EmulatorSchema, caller: &str, env: &str, major: i64) -> (String, String) {
    let d = data(
        schema,
        caller,
        GET_IDENTITY_VERSIONS,
        json!({"appId": APP1, "environmentKey": env, "firstN": 1, "majorVersion": major}),
    )
    .await;
    let node = &d["app"]["environmentByKey"]["versions"]["nodes"][0];
    (node["id"].as_str().unwrap().to_string(), node["version"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn cli_install_upgrade_uninstall_flow() {
    let (model, schema, me) = setup();
    let d = data(&schema, &me, GET_USER_DETAILS, Value::Null).await;
    assert_eq!(d["me"]["user"]["accountStatus"], "active");
    assert_eq!(d["me"]["user"]["name"], "Platform Team");
    assert_eq!(d["me"]["user"]["accountId"], me.as_str());

    let ctx = workspace(&schema, &me, "acme.atlassian.net", "jira").await;
    let (v11, version) = version_id(&schema, &me, "production", 1).await;
    assert_eq!(version, "1.2.0");
    let input = json!({"input": {"installationContext": ctx, "appId": APP1, "environmentKey": "production",
        "async": true, "versionId": v11}});
    let d = data(&schema, &me, INSTALL, input.clone()).await;
    assert_eq!(d["installApp"]["success"], true, "{d}");
    let task = d["installApp"]["taskId"].as_str().unwrap().to_string();
    let d = data(&schema, &me, GET_TASK, json!({"id": task})).await;
    assert!(["PENDING", "RUNNING"].contains(&d["appInstallationTask"]["state"].as_str().unwrap()));
    finish_tasks(&model);
    let d = data(&schema, &me, GET_TASK, json!({"id": task})).await;
    assert_eq!(d["appInstallationTask"], json!({"state": "COMPLETE", "errors": null}));

    let filter =
        json!({"filter": {"apps": {"ids": [APP1]}, "appEnvironments": {"types": ["PRODUCTION"]}}, "first": 100});
    let d = data(&schema, &me, GET_INSTALLATIONS, filter.clone()).await;
    let conn = &d["ecosystem"]["appInstallationsByApp"];
    assert_eq!(conn["pageInfo"]["hasNextPage"], false);
    let node = &conn["nodes"][0];
    assert_eq!(node["installationContext"], ctx.as_str());
    assert_eq!(node["secondaryInstallationContexts"], json!([]));
    assert_eq!(node["computeVersion"], node["appEnvironmentVersion"], "the code running is the installed version");
    assert_eq!(node["appEnvironment"], json!({"key": "production", "type": "PRODUCTION"}));
    assert_eq!(node["appEnvironmentVersion"]["version"], "1.2.0");
    assert_eq!(node["appEnvironmentVersion"]["isLatest"], false);
    assert_eq!(
        node["appEnvironmentVersion"]["permissions"],
        json!([{"scopes": [{"key": "read:jira-work"}], "egress": [{"addresses": ["api.insights.acme.example"]}]}])
    );
    let installation_id = node["id"].as_str().unwrap().to_string();

    // Host names by cloud id, in the order asked, null for unknown ones.
    let cloud = ctx.split(':').nth(3).unwrap();
    let d = data(&schema, &me, GET_HOSTNAMES, json!({"cloudIds": [cloud, "unknown"]})).await;
    assert_eq!(d["tenantContexts"], json!([{"hostName": "acme.atlassian.net"}, null]));

    // Installing again: the task fails with APP_ALREADY_INSTALLED.
    let d = data(&schema, &me, INSTALL, input).await;
    let again = d["installApp"]["taskId"].as_str().unwrap().to_string();
    finish_tasks(&model);
    let d = data(&schema, &me, GET_TASK, json!({"id": again})).await;
    assert_eq!(d["appInstallationTask"]["state"], "FAILED");
    assert_eq!(d["appInstallationTask"]["errors"][0]["extensions"]["errorType"], "APP_ALREADY_INSTALLED");
    assert_eq!(d["appInstallationTask"]["errors"][0]["extensions"]["statusCode"], 409);

    // Upgrade without a version: to the latest; then again: INSTALLATION_ALREADY_UPGRADED.
    let up =
        json!({"input": {"installationContext": ctx, "appId": APP1, "environmentKey": "production", "async": true}});
    let d = data(&schema, &me, UPGRADE, up.clone()).await;
    assert_eq!(d["upgradeApp"]["success"], true, "{d}");
    finish_tasks(&model);
    let d = data(&schema, &me, GET_INSTALLATIONS, filter.clone()).await;
    assert_eq!(d["ecosystem"]["appInstallationsByApp"]["nodes"][0]["appEnvironmentVersion"]["version"], "2.0.0");
    let d = data(&schema, &me, UPGRADE, up).await;
    assert_eq!(d["upgradeApp"]["success"], false);
    assert_eq!(d["upgradeApp"]["taskId"], Value::Null);
    assert_eq!(d["upgradeApp"]["errors"][0]["extensions"]["errorType"], "INSTALLATION_ALREADY_UPGRADED");

    // Uninstall, then the environment has no installations.
    let d = data(
        &schema,
        &me,
        UNINSTALL,
        json!({"input": {"appId": APP1, "environmentKey": "production", "installationId": installation_id, "async": true}}),
    )
    .await;
    assert_eq!(d["uninstallApp"]["success"], true, "{d}");
    finish_tasks(&model);
    let d = data(
        &schema,
        &me,
        HAS_NO_INSTALLATIONS,
        json!({"filter": {"apps": {"ids": [APP1]}, "appEnvironments": {"types": ["PRODUCTION"]}}}),
    )
    .await;
    assert_eq!(d["ecosystem"]["appInstallationsByApp"]["totalCount"], 0);

    // Another account: PERMISSION_DENIED, as a payload error and as a GraphQL error.
    let other =
        json!({"input": {"installationContext": ctx, "appId": APP1, "environmentKey": "production", "async": true}});
    let d = data(&schema, "other-account", INSTALL, other).await;
    assert_eq!(d["installApp"]["errors"][0]["extensions"]["errorType"], "PERMISSION_DENIED");
    let r = exec(&schema, "other-account", GET_INSTALLATIONS, filter).await;
    assert_eq!(r["errors"][0]["extensions"]["errorType"], "PERMISSION_DENIED");
}

#[tokio::test]
async fn cli_version_and_environment_queries() {
    let (model, schema, me) = setup();
    let vars = |first: i64, major: Value| json!({"appId": APP1, "environmentKey": "production", "firstN": first, "majorVersion": major});
    let d = data(&schema, &me, GET_VERSION_DETAILS, vars(1, Value::Null)).await;
    let env = &d["app"]["environmentByKey"];
    assert_eq!((env["type"].as_str(), env["key"].as_str()), (Some("PRODUCTION"), Some("production")));
    let v = &env["versions"]["nodes"][0];
    assert_eq!(v["version"], "2.0.0");
    assert_eq!(v["isLatest"], true);
    assert_eq!(v["requiresLicense"], false);
    assert!(v["createdAt"].as_str().unwrap().parse::<i64>().is_ok(), "epoch ms as a string");
    assert_eq!(
        v["permissions"],
        json!([{"scopes": [{"key": "read:jira-work"}, {"key": "write:jira-work"}],
            "egress": [{"type": "FETCH_BACKEND_SIDE", "addresses": ["api.insights.acme.example"], "category": null, "inScopeEUD": false}],
            "securityPolicies": []}])
    );
    assert_eq!(v["extensions"], Value::Null);
    assert_eq!(v["storage"], json!({"hosted": null, "remotes": null}));
    assert_eq!(v["migrationKeys"], Value::Null);
    let d = data(&schema, &me, GET_VERSION_DETAILS, vars(1, json!(1))).await;
    let v = &d["app"]["environmentByKey"]["versions"]["nodes"][0];
    assert_eq!((v["version"].as_str(), v["isLatest"].as_bool()), (Some("1.2.0"), Some(false)));

    let d =
        data(&schema, &me, GET_LATEST_VERSIONS, json!({"appId": APP1, "environmentKey": "production", "firstN": 2}))
            .await;
    assert_eq!(d["app"]["appFeatures"], json!([]));
    let nodes = &d["app"]["environmentByKey"]["versions"]["nodes"];
    assert_eq!(nodes.as_array().unwrap().len(), 2);
    assert_eq!(nodes[1]["version"], "1.2.0");
    assert_eq!(nodes[0]["requiredProducts"], json!(["JIRA"]));

    let d = data(&schema, &me, LIST_ENVIRONMENT, json!({"id": APP1, "first": 25})).await;
    let page = &d["app"]["environmentsPage"];
    assert_eq!(page["totalCount"], 2);
    assert_eq!(page["nodes"][0]["key"], "production");
    assert_eq!(page["nodes"][1]["type"], "DEVELOPMENT");
    assert_eq!(page["nodes"][1]["versions"]["nodes"][0]["requiredProducts"], json!(["JIRA"]));
    let d = data(&schema, &me, LIST_ENVIRONMENT, json!({"id": APP1, "first": 1})).await;
    let cursor = d["app"]["environmentsPage"]["pageInfo"]["endCursor"].as_str().unwrap().to_string();
    assert_eq!(d["app"]["environmentsPage"]["pageInfo"]["hasNextPage"], true);
    let d = data(&schema, &me, LIST_ENVIRONMENT, json!({"id": APP1, "first": 1, "after": cursor})).await;
    assert_eq!(d["app"]["environmentsPage"]["nodes"][0]["key"], "default");
    assert_eq!(d["app"]["environmentsPage"]["pageInfo"]["hasNextPage"], false);

    // The version client's paginated list (`forge version list`).
    let mut versions = Vec::new();
    let mut after = Value::Null;
    loop {
        let d = data(&schema, &me, VERSION_LIST_PAGED, json!({"appId": APP1, "first": 2, "after": after})).await;
        let env =
            d["app"]["environments"].as_array().unwrap().iter().find(|e| e["key"] == "production").unwrap().clone();
        versions.extend(env["versions"]["nodes"].as_array().unwrap().iter().map(|n| n["version"].clone()));
        if env["versions"]["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = env["versions"]["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(versions, vec![json!("2.0.0"), json!("1.2.0"), json!("1.0.0")]);
    // The installations client's variant, by major.
    let d = data(
        &schema,
        &me,
        VERSION_LIST_BY_MAJOR,
        json!({"id": APP1, "environmentKey": "production", "majorVersion": 1}),
    )
    .await;
    assert_eq!(d["app"]["environmentByKey"]["versions"]["nodes"].as_array().unwrap().len(), 2);

    let d = data(&schema, &me, ENVIRONMENT_BY_KEY, json!({"appAri": APP1, "environmentKey": "default"})).await;
    assert_eq!(d["app"]["environmentByKey"]["appId"], APP1);
    assert_eq!(d["app"]["environmentByKey"]["type"], "DEVELOPMENT");
    let d = data(&schema, &me, ENVIRONMENT_ID, json!({"id": APP1, "key": "nope"})).await;
    assert_eq!(d["app"]["name"], "issue-tracker-insights");
    assert_eq!(d["app"]["environmentByKey"], Value::Null);
    let d = data(&schema, &me, APP_OWNER, json!({"id": APP1})).await;
    assert_eq!(d["app"]["createdBy"]["name"], "Platform Team");
    let d = data(
        &schema,
        &me,
        ENTITLEMENT_OFFERING,
        json!({"hostNames": ["acme.atlassian.net"], "product": "jira-software.ondemand"}),
    )
    .await;
    assert_eq!(d["tenantContexts"][0], json!({"cloudUrl": "https://acme.atlassian.net", "entitlementInfo": null}));

    // Installation counts per version.
    {
        let mut m = model.lock().unwrap();
        let site = m.site_by_host("globex.atlassian.net").unwrap().clone();
        let v = m.app(APP1).unwrap().environment("production").unwrap().versions[0].id.clone();
        m.installations.push(Installation {
            id: "i-1".into(),
            app_id: APP1.into(),
            environment_key: "production".into(),
            cloud_id: site.cloud_id.clone(),
            product: "jira".into(),
            context: site.context("jira").unwrap(),
            version_id: v,
            created_at: 0,
            upgraded_by: Vec::new(),
            ..Default::default()
        });
    }
    let d = data(&schema, &me, UPGRADE_VERSIONS, json!({"appId": APP1, "environmentKey": "production"})).await;
    let counts: Vec<(Value, Value)> = d["app"]["environmentByKey"]["versions"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["version"].clone(), n["installations"]["totalCount"].clone()))
        .collect();
    assert_eq!(counts, vec![(json!("2.0.0"), json!(0)), (json!("1.2.0"), json!(0)), (json!("1.0.0"), json!(1))]);

    // Unknown app: null; another account's: PERMISSION_DENIED; bad input: an error, no panic.
    let d = data(&schema, &me, APP_OWNER, json!({"id": "ari:cloud:ecosystem::app/unknown"})).await;
    assert_eq!(d["app"], Value::Null);
    let r = exec(&schema, "other-account", APP_OWNER, json!({"id": APP1})).await;
    assert_eq!(r["errors"][0]["extensions"]["errorType"], "PERMISSION_DENIED");
    let r = exec(&schema, &me, LIST_ENVIRONMENT, json!({"id": APP1, "first": 1, "after": "garbage"})).await;
    assert!(r["errors"][0]["message"].as_str().unwrap().contains("cursor"));
    let r = exec(&schema, &me, GET_VERSION_DETAILS, json!({"appId": APP1})).await;
    assert!(r["errors"].as_array().is_some_and(|e| !e.is_empty()));
}

#[tokio::test]
async fn cli_bulk_upgrade_flow() {
    let (model, schema, me) = setup();
    let (v10, _) = {
        let d = data(
            &schema,
            &me,
            GET_IDENTITY_VERSIONS,
            json!({"appId": APP1, "environmentKey": "production", "firstN": 10, "majorVersion": 1}),
        )
        .await;
        let nodes = d["app"]["environmentByKey"]["versions"]["nodes"].as_array().unwrap().clone();
        (nodes[1]["id"].as_str().unwrap().to_string(), nodes[0]["id"].as_str().unwrap().to_string())
    };
    for host in ["acme.atlassian.net", "globex.atlassian.net"] {
        let ctx = workspace(&schema, &me, host, "jira").await;
        let input = json!({"input": {"installationContext": ctx, "appId": APP1, "environmentKey": "production",
            "async": true, "versionId": v10}});
        assert_eq!(data(&schema, &me, INSTALL, input).await["installApp"]["success"], true);
    }
    finish_tasks(&model);

    let d = data(
        &schema,
        &me,
        UPGRADABLE_TO,
        json!({"appId": APP1, "environmentKey": "production", "sourceVersionId": v10}),
    )
    .await;
    let eligible: Vec<(Value, Value, Value)> = d["app"]["environmentByKey"]["versions"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let u = &n["upgradeableByRolloutFromVersion"];
            (n["version"].clone(), u["upgradeableByRollout"].clone(), u["upgradeLimit"].clone())
        })
        .collect();
    assert_eq!(
        eligible,
        vec![
            (json!("2.0.0"), json!(false), json!(500)),
            (json!("1.2.0"), json!(true), json!(500)),
            (json!("1.0.0"), json!(false), json!(500))
        ]
    );
    let target = d["app"]["environmentByKey"]["versions"]["nodes"][1]["id"].as_str().unwrap().to_string();

    let create = json!({"input": {"sourceVersionId": v10, "targetVersionId": target, "limit": 1}});
    let d = data(&schema, &me, CREATE_ROLLOUT, create.clone()).await;
    let c = &d["ecosystem"]["createAppVersionRollout"];
    assert_eq!(c["success"], true, "{c}");
    assert_eq!(c["appVersionRollout"]["status"], "RUNNING");
    assert_eq!(c["appVersionRollout"]["upgradeLimit"], 1);
    assert_eq!((c["totalEligibleUpgrades"].as_i64(), c["expectedRemainingUpgrades"].as_i64()), (Some(2), Some(1)));
    let id = c["appVersionRollout"]["id"].as_str().unwrap().to_string();
    let d = data(&schema, &me, CREATE_ROLLOUT, create).await;
    assert_eq!(d["ecosystem"]["createAppVersionRollout"]["success"], false);
    assert_eq!(
        d["ecosystem"]["createAppVersionRollout"]["errors"][0]["extensions"]["errorType"],
        "APP_ROLLOUT_RUNNING"
    );

    let d = data(&schema, &me, GET_ROLLOUT, json!({"appRolloutId": id})).await;
    let r = &d["ecosystem"]["appVersionRollout"];
    assert_eq!(r["status"], "RUNNING");
    assert_eq!(r["appId"], APP1);
    assert_eq!(r["completedAt"], Value::Null);
    assert_eq!(r["progress"], json!({"completedUpgradeCount": 0, "failedUpgradeCount": 0, "pendingUpgradeCount": 1}));
    let d = data(&schema, &me, LIST_ROLLOUTS, json!({"appId": APP1, "environmentKey": "production"})).await;
    let nodes = &d["app"]["environmentByKey"]["appVersionRollouts"]["nodes"];
    assert_eq!(nodes[0]["id"], id.as_str());
    assert_eq!(nodes[0]["sourceVersionId"], v10.as_str());
    assert!(nodes[0]["createdAt"].as_str().unwrap().contains('T'), "a DateTime");

    let d = data(&schema, &me, CANCEL_ROLLOUT, json!({"input": {"id": id}})).await;
    assert_eq!(d["ecosystem"]["cancelAppVersionRollout"], json!({"success": true, "errors": null}));
    let d = data(&schema, &me, CANCEL_ROLLOUT, json!({"input": {"id": id}})).await;
    assert_eq!(
        d["ecosystem"]["cancelAppVersionRollout"]["errors"][0]["extensions"]["errorType"],
        "APP_ROLLOUT_NOT_RUNNING"
    );
    let d = data(&schema, &me, GET_ROLLOUT, json!({"appRolloutId": id})).await;
    assert_eq!(d["ecosystem"]["appVersionRollout"]["status"], "CANCELLED");

    // A new rollout completes as time passes.
    let create = json!({"input": {"sourceVersionId": v10, "targetVersionId": target}});
    let d = data(&schema, &me, CREATE_ROLLOUT, create).await;
    let id = d["ecosystem"]["createAppVersionRollout"]["appVersionRollout"]["id"].as_str().unwrap().to_string();
    finish_tasks(&model);
    let d = data(&schema, &me, GET_ROLLOUT, json!({"appRolloutId": id})).await;
    let r = &d["ecosystem"]["appVersionRollout"];
    assert_eq!(r["status"], "COMPLETE");
    assert_eq!(r["progress"]["completedUpgradeCount"], 2);
    let d = data(&schema, &me, GET_ROLLOUT, json!({"appRolloutId": "unknown"})).await;
    assert_eq!(d["ecosystem"]["appVersionRollout"], Value::Null);
}

#[tokio::test]
async fn forgeops_distribution_operations() {
    let (model, schema, me) = setup();
    let share = |status: &str| json!({"input": {"appId": APP1, "distributionStatus": status}});
    let link_vars = json!({"appId": APP1, "products": ["jira", "confluence"]});
    let sharing_vars = json!({"id": APP1, "appId": APP1});
    // Sharing is off in the seed: no link.
    let r = exec(&schema, &me, GENERATE_LINK, link_vars.clone()).await;
    assert_eq!(r["errors"][0]["extensions"]["errorType"], "APP_NOT_SHARED");
    let d = data(&schema, &me, GET_SHARING, sharing_vars.clone()).await;
    assert_eq!(d["app"], json!({"id": APP1, "distributionStatus": "DEVELOPMENT", "marketplaceApp": null}));
    assert_eq!(d["ecosystem"]["devConsole"]["getActiveDistributionLink"], Value::Null);
    // The seed saved APP1's app details: sharing needs nothing more.
    let d = data(&schema, &me, UPDATE_APP_DETAILS, share("PUBLIC")).await;
    assert_eq!(
        d["updateAppDetails"],
        json!({"success": true, "errors": null, "app": {"id": APP1, "distributionStatus": "PUBLIC"}})
    );
    let d = data(&schema, &me, GET_SHARING, sharing_vars.clone()).await;
    assert_eq!(d["app"]["distributionStatus"], "PUBLIC");
    assert_eq!(d["ecosystem"]["devConsole"]["getActiveDistributionLink"], Value::Null);
    let d = data(&schema, &me, GENERATE_LINK, link_vars.clone()).await;
    let first = d["ecosystem"]["devConsole"]["generateDistributionLink"].clone();
    assert_eq!(first["products"], json!(["jira", "confluence"]));
    assert_eq!(first["status"], "ACTIVE");
    let d = data(&schema, &me, GET_SHARING, sharing_vars.clone()).await;
    assert_eq!(d["ecosystem"]["devConsole"]["getActiveDistributionLink"], first);
    let d = data(&schema, &me, GENERATE_LINK, link_vars.clone()).await;
    let second = d["ecosystem"]["devConsole"]["generateDistributionLink"].clone();
    assert_ne!(first["signature"], second["signature"]);
    // The old signature admits no install, the new one does.
    let link = |sig: &Value| LinkInstallRequest {
        app_id: APP1.into(),
        environment: None,
        site: "acme.atlassian.net".into(),
        // APP1 requires jira: its first installation on a site is there.
        product: "jira".into(),
        signature: sig.as_str().unwrap().into(),
        admin: EMAIL.into(),
    };
    {
        let mut m = model.lock().unwrap();
        assert_eq!(
            m.link_install(&link(&first["signature"]), now_ms()).unwrap_err().error_type,
            "DISTRIBUTION_LINK_INVALID"
        );
        m.link_install(&link(&second["signature"]), now_ms()).unwrap();
    }
    // Another account cannot touch it.
    let r = exec(&schema, "other-account", GET_SHARING, sharing_vars.clone()).await;
    assert_eq!(r["errors"][0]["extensions"]["errorType"], "PERMISSION_DENIED");
    let d = data(&schema, "other-account", UPDATE_APP_DETAILS, share("DEVELOPMENT")).await;
    assert_eq!(d["updateAppDetails"]["errors"][0]["extensions"]["errorType"], "PERMISSION_DENIED");
    // Without the distribution capability: UNSUPPORTED errors.
    model.lock().unwrap().settings.distribution = false;
    for (query, vars) in
        [(UPDATE_APP_DETAILS, share("DEVELOPMENT")), (GENERATE_LINK, link_vars), (GET_SHARING, sharing_vars)]
    {
        let r = exec(&schema, &me, query, vars).await;
        assert_eq!(r["errors"][0]["extensions"]["errorType"], "UNSUPPORTED", "{r}");
        assert_eq!(r["errors"][0]["extensions"]["statusCode"], 403);
    }
    let _ = APP2;
}

/// `updateAppDetails` with the app details and what it answers them in, as forgeops sends it.
const UPDATE_DETAILS_READ_BACK: &str = r#"
    mutation forgeops_updateAppDetails($input: UpdateAppDetailsInput!) {
      updateAppDetails(input: $input) {
        success
        errors { message extensions { errorType statusCode } }
        app { id distributionStatus vendorName privacyPolicy termsOfService contactLink }
      }
    }"#;

const APP_DETAILS: &str = r#"
    query details($id: ID!) {
      app(id: $id) {
        name distributionStatus vendorName privacyPolicy termsOfService contactLink
        marketplaceApp { appId appKey name }
      }
    }"#;

/// Sharing on, as a seed could have it, whatever the rules.
fn force_shared(model: &SharedModel, app: &str) {
    let mut m = model.lock().unwrap();
    m.apps.iter_mut().find(|a| a.id == app).unwrap().distribution_status = model::DistributionStatus::Public;
}

/// The first error of an `updateAppDetails` payload that must have failed: `(errorType,
/// statusCode, message)`.
fn refusal(d: &Value) -> (String, i64, String) {
    let p = &d["updateAppDetails"];
    assert_eq!((p["success"].clone(), p["app"].clone()), (json!(false), Value::Null), "{p}");
    let e = &p["errors"][0];
    (
        e["extensions"]["errorType"].as_str().unwrap().to_string(),
        e["extensions"]["statusCode"].as_i64().unwrap(),
        e["message"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn sharing_needs_the_app_details_a_production_deploy_and_no_license_or_listing() {
    let (model, schema, me) = setup();
    // APP2 has no app details: PUBLIC is refused, naming every missing field, and nothing changes.
    let public = |extra: Value| {
        let mut input = json!({"appId": APP2, "distributionStatus": "PUBLIC"});
        input.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        json!({"input": input})
    };
    let d = data(&schema, &me, UPDATE_DETAILS_READ_BACK, public(json!({"privacyPolicy": "https://x.example/p"}))).await;
    let (kind, status, message) = refusal(&d);
    assert_eq!((kind.as_str(), status), ("VALIDATION_ERROR", 400));
    assert_eq!(message, "vendorName, termsOfService: required to share the app");
    let details = data(&schema, &me, APP_DETAILS, json!({"id": APP2})).await;
    assert_eq!(
        details["app"],
        json!({"name": "team-dashboard", "distributionStatus": "DEVELOPMENT", "vendorName": null,
            "privacyPolicy": null, "termsOfService": null, "contactLink": null, "marketplaceApp": null}),
        "nothing stored from a refused call"
    );
    // A blank detail is a missing one.
    let d = data(
        &schema,
        &me,
        UPDATE_DETAILS_READ_BACK,
        public(
            json!({"vendorName": " ", "privacyPolicy": "https://x.example/p", "termsOfService": "https://x.example/t"}),
        ),
    )
    .await;
    assert_eq!(refusal(&d).2, "vendorName: required to share the app");
    // Details saved first (no status), then PUBLIC alone: shared.
    let d = data(
        &schema,
        &me,
        UPDATE_DETAILS_READ_BACK,
        json!({"input": {"appId": APP2, "vendorName": "Acme", "privacyPolicy": "https://x.example/p",
            "termsOfService": "https://x.example/t", "contactLink": "https://x.example/c", "name": "dash"}}),
    )
    .await;
    assert_eq!(
        d["updateAppDetails"]["app"],
        json!({"id": APP2, "distributionStatus": "DEVELOPMENT", "vendorName": "Acme",
            "privacyPolicy": "https://x.example/p", "termsOfService": "https://x.example/t",
            "contactLink": "https://x.example/c"})
    );
    let d = data(&schema, &me, UPDATE_DETAILS_READ_BACK, public(json!({}))).await;
    assert_eq!(d["updateAppDetails"]["success"], true, "{d}");
    let details = data(&schema, &me, APP_DETAILS, json!({"id": APP2})).await;
    assert_eq!(details["app"]["name"], "dash");
    assert_eq!(details["app"]["distributionStatus"], "PUBLIC");
    // Blanking a required detail of a shared app is refused too.
    let d = data(&schema, &me, UPDATE_DETAILS_READ_BACK, json!({"input": {"appId": APP2, "termsOfService": ""}})).await;
    assert_eq!(refusal(&d).2, "termsOfService: required to share the app");
    let blank_name = json!({"input": {"appId": APP2, "name": "  "}});
    assert_eq!(refusal(&data(&schema, &me, UPDATE_DETAILS_READ_BACK, blank_name).await).0, "VALIDATION_ERROR");

    // Licensed in production: refused (409), and no link either.
    let d =
        data(&schema, &me, UPDATE_APP_DETAILS, json!({"input": {"appId": APP2, "distributionStatus": "DEVELOPMENT"}}))
            .await;
    assert_eq!(d["updateAppDetails"]["success"], true);
    let licensed = DeployRequest {
        app_id: APP2.into(),
        environment: "production".into(),
        version: "2.0.0".into(),
        scopes: vec!["read:confluence-content.summary".into()],
        egress: vec![],
        requires_license: true,
        required_products: vec!["confluence".into()],
        modules: vec![],
        remotes: vec![],
        security_policies: vec![],
    };
    model.lock().unwrap().deploy(&licensed, now_ms()).unwrap();
    let (kind, status, message) = refusal(&data(&schema, &me, UPDATE_DETAILS_READ_BACK, public(json!({}))).await);
    assert_eq!((kind.as_str(), status), ("APP_LICENSED", 409));
    assert!(message.contains("2.0.0") && message.contains("license"), "{message}");
    force_shared(&model, APP2);
    let r = exec(&schema, &me, GENERATE_LINK, json!({"appId": APP2, "products": ["confluence"]})).await;
    assert_eq!(r["errors"][0]["extensions"]["errorType"], "APP_LICENSED", "{r}");
    assert_eq!(r["errors"][0]["extensions"]["statusCode"], 409);

    // Listed on the Marketplace: refused (409), the link too; marketplaceApp says so.
    model.lock().unwrap().set_listed(APP1, true).unwrap();
    let d = data(&schema, &me, APP_DETAILS, json!({"id": APP1})).await;
    let uuid = APP1.rsplit('/').next().unwrap();
    assert_eq!(d["app"]["marketplaceApp"]["appKey"], uuid);
    assert_eq!(d["app"]["marketplaceApp"]["name"], "issue-tracker-insights");
    assert!(d["app"]["marketplaceApp"]["appId"].as_str().is_some_and(|id| id.parse::<u64>().is_ok()));
    let d =
        data(&schema, &me, UPDATE_DETAILS_READ_BACK, json!({"input": {"appId": APP1, "distributionStatus": "PUBLIC"}}))
            .await;
    let (kind, status, message) = refusal(&d);
    assert_eq!((kind.as_str(), status), ("APP_LISTED_ON_MARKETPLACE", 409));
    assert!(message.contains("can't be shared via installation link"), "{message}");
    force_shared(&model, APP1);
    let r = exec(&schema, &me, GENERATE_LINK, json!({"appId": APP1, "products": ["jira"]})).await;
    assert_eq!(r["errors"][0]["extensions"]["errorType"], "APP_LISTED_ON_MARKETPLACE", "{r}");
    let d = data(&schema, &me, GET_SHARING, json!({"id": APP1, "appId": APP1})).await;
    assert_eq!(d["app"]["marketplaceApp"], json!({"appKey": uuid}));

    // Nothing deployed to production: refused (409).
    let app: SeedApp = serde_json::from_value(json!({
        "id": "ari:cloud:ecosystem::app/6f1c2d3e-0000-4000-8000-00000000000a", "owner": EMAIL,
        "vendorName": "Acme", "privacyPolicy": "https://x.example/p", "termsOfService": "https://x.example/t",
        "environments": [{"key": "production"}, {"key": "default", "versions": [{"version": "1.0.0"}]}],
    }))
    .unwrap();
    model.lock().unwrap().add_app(&app, now_ms()).unwrap();
    let d = data(
        &schema,
        &me,
        UPDATE_DETAILS_READ_BACK,
        json!({"input": {"appId": app.id, "distributionStatus": "PUBLIC"}}),
    )
    .await;
    let (kind, status, message) = refusal(&d);
    assert_eq!((kind.as_str(), status), ("APP_NOT_DEPLOYED", 409));
    assert!(message.contains("deploy the app to production first"), "{message}");
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().expect("client")
}

async fn post(url: &str, auth: Option<(&str, &str)>, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = client().post(url).header("content-type", "application/json").body(serde_json::to_vec(body).unwrap());
    if let Some((user, token)) = auth {
        req = req.basic_auth(user, Some(token));
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.expect("body");
    (status, headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn gql(emu: &RunningEmulator, query: &str, variables: Value) -> (u16, reqwest::header::HeaderMap, Value) {
    post(&emu.graphql_url(), Some((EMAIL, TOKEN)), &json!({"query": query, "variables": variables})).await
}

async fn admin(method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let mut req = client().request(method, url);
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(serde_json::to_vec(&b).unwrap());
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.expect("body");
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// The version of APP1's first installation, as the CLI's listing shows it.
async fn installed_version(emu: &RunningEmulator) -> Value {
    let filter = json!({"filter": {"apps": {"ids": [APP1]}}, "first": 100});
    let (_, _, r) = gql(emu, GET_INSTALLATIONS, filter).await;
    r["data"]["ecosystem"]["appInstallationsByApp"]["nodes"][0]["appEnvironmentVersion"]["version"].clone()
}

fn config() -> EmulatorConfig {
    EmulatorConfig { seed: seed(), task_duration: std::time::Duration::from_millis(60), ..Default::default() }
}

async fn wait_task(emu: &RunningEmulator, task: &str) -> Value {
    for _ in 0..100 {
        let (_, _, r) = gql(emu, GET_TASK, json!({"id": task})).await;
        let t = r["data"]["appInstallationTask"].clone();
        if t["state"] == "COMPLETE" || t["state"] == "FAILED" {
            return t;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("task {task} did not finish");
}

#[tokio::test]
async fn http_auth_request_log_and_faults() {
    let emu = start(config(), "127.0.0.1:0".parse().unwrap()).await.expect("start");
    let me = json!({"query": GET_USER_DETAILS});
    let (status, _, body) = post(&emu.graphql_url(), None, &me).await;
    assert_eq!(status, 401);
    assert_eq!(
        body,
        json!({"errors": [{"message": "Unauthorized", "extensions": {"errorType": "UNAUTHORIZED", "statusCode": 401}}]})
    );
    let (status, _, _) = post(&emu.graphql_url(), Some((EMAIL, "wrong")), &me).await;
    assert_eq!(status, 401);
    let (status, headers, body) = post(&emu.graphql_url(), Some((EMAIL, TOKEN)), &me).await;
    assert_eq!(status, 200);
    assert!(headers.contains_key("x-request-id"));
    assert_eq!(body["data"]["me"]["user"]["accountStatus"], "active");

    let log = emu.requests();
    assert_eq!(log.len(), 3);
    assert_eq!(log[2].operation_name.as_deref(), Some("forge_cli_getUserDetails"));
    assert!(log[2].account_id.is_some());
    assert_eq!(log[0].account_id, None);
    assert!(!serde_json::to_string(&log).unwrap().contains(TOKEN));
    let (status, listed) = admin(reqwest::Method::GET, format!("{}/requests", emu.admin_url()), None).await;
    assert_eq!((status, listed.as_array().map(Vec::len)), (200, Some(3)));
    assert_eq!(listed[2]["operationName"], "forge_cli_getUserDetails");
    let (status, _) = admin(reqwest::Method::DELETE, format!("{}/requests", emu.admin_url()), None).await;
    assert_eq!(status, 204);
    assert!(emu.requests().is_empty());

    // A burst of 429s, then normal answers.
    emu.set_faults(Faults { rate_limit_burst: 2, ..Default::default() });
    for _ in 0..2 {
        let (status, headers, body) = gql(&emu, GET_USER_DETAILS, Value::Null).await;
        assert_eq!(status, 429);
        assert_eq!(headers.get("retry-after").unwrap(), "1");
        assert_eq!(body["errors"][0]["extensions"]["errorType"], "TOO_MANY_REQUESTS");
    }
    assert_eq!(gql(&emu, GET_USER_DETAILS, Value::Null).await.0, 200);
    // Down until lifted, through the admin API.
    let faults_url = format!("{}/faults", emu.admin_url());
    let (status, f) = admin(reqwest::Method::PUT, faults_url.clone(), Some(json!({"down": true}))).await;
    assert_eq!((status, f["down"].as_bool()), (200, Some(true)));
    assert_eq!(gql(&emu, GET_USER_DETAILS, Value::Null).await.0, 503);
    admin(reqwest::Method::PUT, faults_url.clone(), Some(json!({"errorRate": 1.0}))).await;
    assert!([500, 503].contains(&gql(&emu, GET_USER_DETAILS, Value::Null).await.0));
    admin(reqwest::Method::PUT, faults_url.clone(), Some(json!({"latencyMs": 30}))).await;
    let started = std::time::Instant::now();
    assert_eq!(gql(&emu, GET_USER_DETAILS, Value::Null).await.0, 200);
    assert!(started.elapsed() >= std::time::Duration::from_millis(30));
    let (status, _) = admin(reqwest::Method::PUT, faults_url, Some(json!({"down": "yes"}))).await;
    assert_eq!(status, 400);
    assert_eq!(emu.requests().len(), 6);
    // Bad GraphQL is an error answer, not a crash.
    let (status, _, body) = gql(&emu, "query { nope }", Value::Null).await;
    assert_eq!(status, 200);
    assert!(body["errors"][0]["message"].is_string());
    let (status, _, _) = post(&emu.graphql_url(), Some((EMAIL, TOKEN)), &json!({"nope": 1})).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn http_admin_api_and_install_by_the_clock() {
    let emu = start(config(), "127.0.0.1:0".parse().unwrap()).await.expect("start");
    let (status, site) = admin(
        reqwest::Method::POST,
        format!("{}/sites", emu.admin_url()),
        Some(
            json!({"hostName": "hooli.atlassian.net", "products": ["jira"], "admins": ["platform-team@acme.example"]}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{site}");
    let ctx = site["installationContexts"]["jira"].as_str().unwrap().to_string();
    let (status, _) = admin(
        reqwest::Method::POST,
        format!("{}/sites", emu.admin_url()),
        Some(
            json!({"hostName": "hooli.atlassian.net", "products": ["jira"], "admins": ["platform-team@acme.example"]}),
        ),
    )
    .await;
    assert_eq!(status, 409);

    let (_, _, r) = gql(
        &emu,
        INSTALL,
        json!({"input": {"installationContext": ctx, "appId": APP1, "environmentKey": "production", "async": true}}),
    )
    .await;
    let task = r["data"]["installApp"]["taskId"].as_str().expect("task id").to_string();
    assert_eq!(wait_task(&emu, &task).await["state"], "COMPLETE");

    // A minor deployed through the admin API reaches the installation within the minor rollout
    // window (set to 300 ms here); a major does not.
    let (status, settings) =
        admin(reqwest::Method::PUT, format!("{}/settings", emu.admin_url()), Some(json!({"minorRolloutMs": 300})))
            .await;
    assert_eq!((status, settings), (200, json!({"minorRolloutMs": 300})));
    let (status, _) =
        admin(reqwest::Method::PUT, format!("{}/settings", emu.admin_url()), Some(json!({"nope": 1}))).await;
    assert_eq!(status, 400);
    let (status, out) = admin(
        reqwest::Method::POST,
        format!("{}/deploy", emu.admin_url()),
        Some(json!({"appId": APP1, "version": "2.1.0", "scopes": ["read:jira-work", "write:jira-work"],
            "egress": ["api.insights.acme.example"], "requiredProducts": ["jira"]})),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["upgradedInstallations"], json!([]));
    assert_eq!(out["scheduledInstallations"].as_array().unwrap().len(), 1);
    assert_eq!(installed_version(&emu).await, "2.0.0", "the old minor right after the deploy");
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(installed_version(&emu).await, "2.1.0", "the new minor after the window");
    let (status, out) = admin(
        reqwest::Method::POST,
        format!("{}/deploy", emu.admin_url()),
        Some(json!({"appId": APP1, "version": "1.0"})),
    )
    .await;
    assert_eq!((status, out["error"]["errorType"].as_str()), (409, Some("CONFLICT")));
    let (status, _) = admin(reqwest::Method::POST, format!("{}/deploy", emu.admin_url()), Some(json!({"x": 1}))).await;
    assert_eq!(status, 400);

    // Link install: refused with a wrong signature, accepted with the current one.
    gql(&emu, UPDATE_APP_DETAILS, json!({"input": {"appId": APP1, "distributionStatus": "PUBLIC"}})).await;
    let (_, _, r) = gql(&emu, GENERATE_LINK, json!({"appId": APP1, "products": ["jira"]})).await;
    let signature = r["data"]["ecosystem"]["devConsole"]["generateDistributionLink"]["signature"].clone();
    let url = format!("{}/link-install", emu.admin_url());
    let body = |sig: Value| json!({"appId": APP1, "site": "globex.atlassian.net", "product": "jira", "signature": sig, "admin": EMAIL});
    let (status, e) = admin(reqwest::Method::POST, url.clone(), Some(body(json!("forged")))).await;
    assert_eq!((status, e["error"]["errorType"].as_str()), (403, Some("DISTRIBUTION_LINK_INVALID")));
    let (status, out) = admin(reqwest::Method::POST, url, Some(body(signature))).await;
    assert_eq!((status, out["version"].as_str()), (200, Some("2.1.0")));
    let direct = emu.link_install(LinkInstallRequest {
        app_id: APP1.into(),
        environment: None,
        site: "globex.atlassian.net".into(),
        product: "jira".into(),
        signature: "forged".into(),
        admin: EMAIL.into(),
    });
    assert!(direct.is_err());

    let (status, state) = admin(reqwest::Method::GET, format!("{}/state", emu.admin_url()), None).await;
    assert_eq!(status, 200);
    assert_eq!(state["installations"].as_array().unwrap().len(), 2);
    assert_eq!(state["sites"].as_array().unwrap().len(), 4);
    assert!(!state.to_string().contains(TOKEN));
    assert_eq!(emu.state()["installations"], state["installations"]);
    let (status, out) =
        admin(reqwest::Method::POST, format!("{}/forget-finished-rollouts", emu.admin_url()), None).await;
    assert_eq!((status, out["forgotten"].as_u64()), (200, Some(0)));
}

#[tokio::test]
async fn state_file_survives_a_restart() {
    let dir = std::env::temp_dir().join(format!("forgeops-emulator-{}", model::random_uuid()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("state.json");
    let config = EmulatorConfig { state_file: Some(path.clone()), ..config() };
    let task = {
        let emu = start(config.clone(), "127.0.0.1:0".parse().unwrap()).await.expect("start");
        let ctx = emu
            .add_site(SeedSite {
                host_name: "hooli.atlassian.net".into(),
                products: vec!["jira".into()],
                admins: vec!["platform-team@acme.example".into()],
                ..Default::default()
            })
            .unwrap()
            .installation_contexts["jira"]
            .clone();
        let (_, _, r) = gql(
            &emu,
            INSTALL,
            json!({"input": {"installationContext": ctx, "appId": APP1, "environmentKey": "production", "async": true}}),
        )
        .await;
        let task = r["data"]["installApp"]["taskId"].as_str().unwrap().to_string();
        assert_eq!(wait_task(&emu, &task).await["state"], "COMPLETE");
        task
    };
    assert!(path.exists());
    assert!(!std::fs::read_to_string(&path).unwrap().contains(TOKEN));
    let emu = start(config, "127.0.0.1:0".parse().unwrap()).await.expect("restart");
    assert_eq!(wait_task(&emu, &task).await["state"], "COMPLETE");
    assert_eq!(emu.state()["installations"].as_array().unwrap().len(), 1);
    assert_eq!(emu.state()["sites"].as_array().unwrap().len(), 4);
    drop(emu);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn http_site_admins_gate_installs() {
    let emu = start(config(), "127.0.0.1:0".parse().unwrap()).await.expect("start");
    let (status, sites) = admin(reqwest::Method::GET, format!("{}/sites", emu.admin_url()), None).await;
    assert_eq!(status, 200);
    let by_host = |h: &str| sites.as_array().unwrap().iter().find(|s| s["hostName"] == h).unwrap().clone();
    let account_id = emu.state()["accounts"][0]["accountId"].clone();
    assert_eq!(by_host("acme.atlassian.net")["admins"], json!([account_id]));
    assert_eq!(by_host("initech.atlassian.net")["admins"], json!([]));
    let ctx = by_host("initech.atlassian.net")["installationContexts"]["jira"].clone();
    let (status, _, r) = gql(
        &emu,
        INSTALL,
        json!({"input": {"installationContext": ctx, "appId": APP1, "environmentKey": "production", "async": true}}),
    )
    .await;
    assert_eq!(status, 200);
    let answer = &r["data"]["installApp"];
    assert_eq!(answer["success"], false, "{r}");
    assert_eq!(answer["taskId"], Value::Null);
    assert_eq!(answer["errors"][0]["extensions"]["errorType"], "PERMISSION_DENIED");
    assert_eq!(answer["errors"][0]["extensions"]["statusCode"], 403);
    assert!(answer["errors"][0]["message"].as_str().unwrap().contains("admin of initech.atlassian.net"));
    // A site added through the admin API with an admin.
    let (status, site) = admin(
        reqwest::Method::POST,
        format!("{}/sites", emu.admin_url()),
        Some(json!({"hostName": "hooli.atlassian.net", "products": ["jira"], "admins": [EMAIL]})),
    )
    .await;
    assert_eq!((status, &site["admins"]), (200, &json!([account_id])));
    let (status, e) = admin(
        reqwest::Method::POST,
        format!("{}/sites", emu.admin_url()),
        Some(json!({"hostName": "x.atlassian.net", "products": ["jira"], "admins": ["nobody@x"]})),
    )
    .await;
    assert_eq!((status, e["error"]["errorType"].as_str()), (400, Some("BAD_REQUEST")));
}

#[tokio::test]
async fn http_site_upgrade_by_the_customers_admin() {
    let emu = start(config(), "127.0.0.1:0".parse().unwrap()).await.expect("start");
    let url = format!("{}/site-upgrade", emu.admin_url());
    let body = json!({"appId": APP1, "site": "initech.atlassian.net", "product": "jira"});
    let (status, e) = admin(reqwest::Method::POST, url.clone(), Some(body.clone())).await;
    assert_eq!((status, e["error"]["errorType"].as_str()), (404, Some("INSTALLATION_NOT_FOUND")));
    gql(&emu, UPDATE_APP_DETAILS, json!({"input": {"appId": APP1, "distributionStatus": "PUBLIC"}})).await;
    let (_, _, r) = gql(&emu, GENERATE_LINK, json!({"appId": APP1, "products": ["jira"]})).await;
    let signature = r["data"]["ecosystem"]["devConsole"]["generateDistributionLink"]["signature"].clone();
    let (status, linked) = admin(
        reqwest::Method::POST,
        format!("{}/link-install", emu.admin_url()),
        Some(json!({"appId": APP1, "site": "initech.atlassian.net", "product": "jira", "signature": signature,
            "admin": "jira-admin@initech.example"})),
    )
    .await;
    assert_eq!(status, 200, "{linked}");
    let (status, _) = admin(
        reqwest::Method::POST,
        format!("{}/deploy", emu.admin_url()),
        Some(json!({"appId": APP1, "version": "3.0.0", "scopes": ["read:jira-work", "write:jira-work", "manage:jira-project"],
            "egress": ["api.insights.acme.example"], "requiredProducts": ["jira"]})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, out) = admin(reqwest::Method::POST, url.clone(), Some(body.clone())).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out, json!({"installationId": linked["installationId"], "version": "3.0.0"}));
    let (status, e) = admin(reqwest::Method::POST, url, Some(body)).await;
    assert_eq!((status, e["error"]["errorType"].as_str()), (409, Some("INSTALLATION_ALREADY_UPGRADED")));
    assert_eq!(emu.state()["installations"][0]["upgradedByAdmin"], true);

    // With no minor rollout window, a minor reaches its major in the deploy itself.
    assert_eq!(emu.settings().minor_rollout_ms, Some(2000));
    emu.set_minor_rollout(std::time::Duration::ZERO);
    assert_eq!(emu.settings().minor_rollout_ms, Some(0));
    let out = emu
        .deploy(DeployRequest {
            app_id: APP1.into(),
            environment: "production".into(),
            version: "3.1.0".into(),
            scopes: vec!["read:jira-work".into(), "write:jira-work".into(), "manage:jira-project".into()],
            egress: vec![SeedEgress::Address("api.insights.acme.example".into())],
            requires_license: false,
            required_products: vec!["jira".into()],
            modules: vec![],
            remotes: vec![],
            security_policies: vec![],
        })
        .unwrap();
    assert_eq!((out.upgraded_installations.len(), out.scheduled_installations.len()), (1, 0));
    assert_eq!(installed_version(&emu).await, "3.1.0");
    assert!(emu.state()["installations"][0].get("upgradedByAdmin").is_none(), "the platform moved it, not the admin");
}

#[tokio::test]
async fn http_mutation_faults_apply_the_request_then_lose_the_answer() {
    let emu = start(config(), "127.0.0.1:0".parse().unwrap()).await.expect("start");
    assert_eq!(Faults::default().hang_ms, 60_000);
    assert_eq!(serde_json::from_value::<Faults>(json!({})).unwrap(), Faults::default());
    let (_, sites) = admin(reqwest::Method::GET, format!("{}/sites", emu.admin_url()), None).await;
    let site = |h: &str| sites.as_array().unwrap().iter().find(|s| s["hostName"] == h).unwrap().clone();
    let install = |host: &str| {
        json!({"input": {"installationContext": site(host)["installationContexts"]["jira"], "appId": APP1,
            "environmentKey": "production", "async": true}})
    };
    let faults_url = format!("{}/faults", emu.admin_url());
    let (status, f) = admin(
        reqwest::Method::PUT,
        faults_url.clone(),
        Some(json!({"mutations": [
            {"operation": "forge_cli_installApplication", "mode": "applyThen504", "count": 1},
            {"operation": "forge_cli_installApplication", "mode": "applyThenDrop"},
            {"operation": "forge_cli_upgradeApplication", "mode": "hang", "count": 5}],
            "hangMs": 400})),
    )
    .await;
    assert_eq!(status, 200, "{f}");
    assert_eq!(f["mutations"][1]["count"], 1, "count defaults to 1");
    let (status, _) = admin(
        reqwest::Method::PUT,
        faults_url.clone(),
        Some(json!({"mutations": [{"operation": "x", "mode": "explode"}]})),
    )
    .await;
    assert_eq!(status, 400);
    admin(
        reqwest::Method::PUT,
        faults_url.clone(),
        Some(json!({"mutations": [
            {"operation": "forge_cli_installApplication", "mode": "applyThen504", "count": 1},
            {"operation": "forge_cli_installApplication", "mode": "applyThenDrop"},
            {"operation": "forge_cli_upgradeApplication", "mode": "hang", "count": 5}],
            "hangMs": 400})),
    )
    .await;

    // Other operations pass untouched.
    assert_eq!(gql(&emu, GET_USER_DETAILS, Value::Null).await.0, 200);
    // 504, but the install was accepted: its task runs and completes.
    let (status, _, body) = gql(&emu, INSTALL, install("acme.atlassian.net")).await;
    assert_eq!(status, 504);
    assert_eq!(body["errors"][0]["extensions"]["errorType"], "GATEWAY_TIMEOUT");
    assert_eq!(body["data"], Value::Null);
    let tasks = emu.state()["tasks"].as_object().unwrap().clone();
    assert_eq!(tasks.len(), 1, "the request was applied");
    let task = tasks.keys().next().unwrap().clone();
    assert_eq!(wait_task(&emu, &task).await["state"], "COMPLETE");

    // The body breaks off: the client gets a transport error, the install still happened.
    let resp = client()
        .post(emu.graphql_url())
        .basic_auth(EMAIL, Some(TOKEN))
        .header("content-type", "application/json")
        .body(json!({"query": INSTALL, "variables": install("globex.atlassian.net")}).to_string())
        .send()
        .await;
    let failed = match resp {
        Err(_) => true,
        Ok(r) => r.bytes().await.is_err(),
    };
    assert!(failed, "the client must see no valid answer");
    assert_eq!(emu.state()["tasks"].as_object().unwrap().len(), 2);
    // The faults are used up: the next install is answered normally.
    let (status, _, body) = gql(&emu, INSTALL, install("globex.atlassian.net")).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["installApp"]["success"], true, "{body}");

    // Hang: a client with a shorter timeout gives up, the upgrade was applied all the same.
    let mut upgrade = install("acme.atlassian.net");
    upgrade["input"]["versionId"] = Value::Null;
    let deploy = json!({"appId": APP1, "version": "3.0.0", "scopes": ["read:jira-work", "write:jira-work"],
        "egress": ["api.insights.acme.example"], "requiredProducts": ["jira"]});
    admin(reqwest::Method::POST, format!("{}/deploy", emu.admin_url()), Some(deploy)).await;
    let started = std::time::Instant::now();
    let resp = client()
        .post(emu.graphql_url())
        .basic_auth(EMAIL, Some(TOKEN))
        .timeout(std::time::Duration::from_millis(100))
        .header("content-type", "application/json")
        .body(json!({"query": UPGRADE, "variables": upgrade}).to_string())
        .send()
        .await;
    assert!(resp.is_err_and(|e| e.is_timeout()));
    assert!(started.elapsed() < std::time::Duration::from_millis(400));
    let upgrades = emu.state()["tasks"].as_object().unwrap().values().filter(|t| t["kind"] == "upgrade").count();
    assert_eq!(upgrades, 1, "the upgrade was applied before the hang");
    // A patient client gets the real answer after hangMs: the first upgrade has finished by then.
    let started = std::time::Instant::now();
    let (status, _, body) = gql(&emu, UPGRADE, upgrade).await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(400));
    assert_eq!(status, 200);
    let errors = &body["data"]["upgradeApp"]["errors"];
    assert_eq!(errors[0]["extensions"]["errorType"], "INSTALLATION_ALREADY_UPGRADED", "{body}");

    let (_, f) = admin(reqwest::Method::GET, faults_url, None).await;
    assert_eq!(
        f["mutations"].as_array().unwrap().iter().map(|m| m["count"].as_u64().unwrap()).collect::<Vec<_>>(),
        vec![0, 0, 3]
    );
    let log = emu.requests();
    let faulted: Vec<(&str, &str)> =
        log.iter().filter_map(|r| Some((r.operation_name.as_deref()?, r.fault.as_deref()?))).collect();
    assert_eq!(
        faulted,
        vec![
            ("forge_cli_installApplication", "applyThen504"),
            ("forge_cli_installApplication", "applyThenDrop"),
            ("forge_cli_upgradeApplication", "hang"),
            ("forge_cli_upgradeApplication", "hang"),
        ]
    );
    assert_eq!(log.iter().filter(|r| r.operation_name.as_deref() == Some("forge_cli_installApplication")).count(), 3);
    // The older faults are named in the log too.
    emu.set_faults(Faults { down: true, ..Default::default() });
    assert_eq!(gql(&emu, GET_USER_DETAILS, Value::Null).await.0, 503);
    assert_eq!(emu.requests().last().unwrap().fault.as_deref(), Some("down"));
}

#[tokio::test]
async fn http_admin_creates_accounts_tokens_and_apps() {
    let emu = start(config(), "127.0.0.1:0".parse().unwrap()).await.expect("start");
    let me = json!({"query": GET_USER_DETAILS});
    let url = |p: &str| format!("{}/{p}", emu.admin_url());
    let (status, account) = admin(
        reqwest::Method::POST,
        url("accounts"),
        Some(json!({"email": "new@initech.example", "apiToken": "new-secret-token", "name": "New"})),
    )
    .await;
    assert_eq!(status, 200, "{account}");
    assert_eq!((account["email"].as_str(), account["status"].as_str()), (Some("new@initech.example"), Some("active")));
    assert!(!account.to_string().contains("new-secret-token"));
    let (status, _, body) = post(&emu.graphql_url(), Some(("new@initech.example", "new-secret-token")), &me).await;
    assert_eq!((status, &body["data"]["me"]["user"]["accountStatus"]), (200, &json!("active")));
    let (status, e) = admin(
        reqwest::Method::POST,
        url("accounts"),
        Some(json!({"email": "NEW@initech.example", "apiToken": "other"})),
    )
    .await;
    assert_eq!((status, e["error"]["errorType"].as_str()), (409, Some("CONFLICT")));
    let (status, _) = admin(reqwest::Method::POST, url("accounts"), Some(json!({"email": "x@y"}))).await;
    assert_eq!(status, 400);

    // Another token, then the first revoked.
    let token = |t: &str| Some(json!({"email": "new@initech.example", "apiToken": t}));
    assert_eq!(admin(reqwest::Method::POST, url("api-tokens"), token("rotated-token")).await.0, 200);
    let (status, _) = admin(
        reqwest::Method::POST,
        url("api-tokens"),
        Some(json!({"email": "nobody@initech.example", "apiToken": "t"})),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(post(&emu.graphql_url(), Some(("new@initech.example", "rotated-token")), &me).await.0, 200);
    assert_eq!(admin(reqwest::Method::DELETE, url("api-tokens"), token("new-secret-token")).await.0, 200);
    assert_eq!(admin(reqwest::Method::DELETE, url("api-tokens"), token("new-secret-token")).await.0, 404);
    assert_eq!(post(&emu.graphql_url(), Some(("new@initech.example", "new-secret-token")), &me).await.0, 401);

    // An app of the new account.
    let app = json!({"id": "ari:cloud:ecosystem::app/6f1c2d3e-0000-4000-8000-000000000009", "name": "new-app",
        "owner": "new@initech.example", "environments": [{"key": "production", "versions": [
            {"version": "1.0.0", "scopes": ["read:jira-work"], "requiredProducts": ["jira"]}]}]});
    let (status, created) = admin(reqwest::Method::POST, url("apps"), Some(app.clone())).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!((created["name"].as_str(), &created["owner"]), (Some("new-app"), &account["accountId"]));
    let (status, e) = admin(reqwest::Method::POST, url("apps"), Some(app)).await;
    assert_eq!((status, e["error"]["errorType"].as_str()), (409, Some("CONFLICT")));
    let (status, _) = admin(
        reqwest::Method::POST,
        url("apps"),
        Some(json!({"id": "ari:cloud:ecosystem::app/6f1c2d3e-0000-4000-8000-00000000000a", "owner": "nobody@x"})),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(emu.state()["apps"].as_array().unwrap().len(), 3);
    // Through the handle too.
    let direct = emu.add_account(SeedAccount {
        email: "direct@initech.example".into(),
        api_token: "direct-token".into(),
        account_id: Some("direct-id".into()),
        name: None,
        status: Some(model::AccountStatus::Inactive),
    });
    assert_eq!(direct.unwrap().status, model::AccountStatus::Inactive);
    let (_, _, body) = post(&emu.graphql_url(), Some(("direct@initech.example", "direct-token")), &me).await;
    assert_eq!(body["data"]["me"]["user"]["accountStatus"], "inactive");
    let again = emu.add_account(SeedAccount {
        email: "else@initech.example".into(),
        api_token: "t".into(),
        account_id: Some("direct-id".into()),
        name: None,
        status: None,
    });
    assert_eq!(again.unwrap_err().status_code, 409, "the account id is taken");
    assert!(!emu.state().to_string().contains("direct-token"));
}

// `extensions` of a version: one node per module, as the gateway's `AppVersionExtension`.
const VERSION_EXTENSIONS: &str = r#"
      query versionExtensions($appId: ID!, $environmentKey: String!) {
        app(id: $appId) {
          environmentByKey(key: $environmentKey) {
            id
            versions(first: 1) {
              nodes {
                version
                extensions {
                  nodes {
                    id
                    key
                    extensionTypeKey
                    extensionGroupId
                    extensionData
                    icId
                  }
                }
              }
            }
          }
        }
      }"#;

#[tokio::test]
async fn version_extensions_answer_the_versions_modules() {
    let (model, schema, me) = setup();
    let req: DeployRequest = serde_json::from_value(json!({
        "appId": APP2, "version": "2.0.0", "scopes": ["read:confluence-content.summary"],
        "modules": ["confluence:contentBylineItem", "sql", "confluence:contentBylineItem"],
    }))
    .unwrap();
    model.lock().unwrap().deploy(&req, now_ms()).unwrap();

    // What forgeops reads: the sql module is seen by its extensionData type.
    let d =
        data(&schema, &me, GET_VERSION_DETAILS, json!({"appId": APP2, "environmentKey": "production", "firstN": 1}))
            .await;
    let v = &d["app"]["environmentByKey"]["versions"]["nodes"][0];
    assert_eq!(v["version"], "2.0.0");
    let nodes = v["extensions"]["nodes"].as_array().unwrap();
    let keys: Vec<&str> = nodes.iter().map(|n| n["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["confluence-contentBylineItem-0", "sql-1", "confluence-contentBylineItem-2"]);
    assert_eq!(nodes[1]["extensionData"], json!({"type": "sql"}));
    assert_eq!(nodes[0]["extensionData"], json!({"type": "confluence:contentBylineItem"}));

    // Every field of the gateway's type, with stable ids.
    let vars = json!({"appId": APP2, "environmentKey": "production"});
    let d = data(&schema, &me, VERSION_EXTENSIONS, vars.clone()).await;
    assert_eq!(d, data(&schema, &me, VERSION_EXTENSIONS, vars).await, "stable");
    let env_id = d["app"]["environmentByKey"]["id"].as_str().unwrap();
    let nodes = d["app"]["environmentByKey"]["versions"]["nodes"][0]["extensions"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    assert_eq!(nodes[0]["extensionTypeKey"], "confluence:contentBylineItem");
    assert_eq!(nodes[0]["icId"], Value::Null);
    assert_eq!(
        nodes[1]["id"],
        format!("ari:cloud:ecosystem::extension/6f1c2d3e-0000-4000-8000-000000000002/{env_id}/static/sql-1")
    );
    let groups: std::collections::BTreeSet<&str> =
        nodes.iter().map(|n| n["extensionGroupId"].as_str().unwrap()).collect();
    assert_eq!(groups.len(), 1, "one group per version");
    let ids: std::collections::BTreeSet<&str> = nodes.iter().map(|n| n["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3, "one id per module");

    // A version without modules (the seed's) answers null, as before.
    let d =
        data(&schema, &me, GET_VERSION_DETAILS, json!({"appId": APP1, "environmentKey": "production", "firstN": 1}))
            .await;
    assert_eq!(d["app"]["environmentByKey"]["versions"]["nodes"][0]["extensions"], Value::Null);
}

#[tokio::test]
async fn version_details_answer_remotes_and_security_policies() {
    let (model, schema, me) = setup();
    // A new major of team-dashboard that calls a backend and needs inline scripts and styles.
    let req: DeployRequest = serde_json::from_value(json!({
        "appId": APP2, "version": "2.0.0", "scopes": ["read:confluence-content.summary"],
        "requiredProducts": ["confluence"],
        "remotes": [{"key": "api-backend", "baseUrl": "https://api.example.com"},
                    {"key": "metrics", "baseUrl": "https://metrics.example.com/v1"}],
        "securityPolicies": [{"type": "scripts", "policies": ["unsafe-inline", "unsafe-hashes"]},
                             {"type": "styles", "policies": ["unsafe-inline"]}],
    }))
    .unwrap();
    model.lock().unwrap().deploy(&req, now_ms()).unwrap();

    // What forgeops reads to tell what the site admin is asked for.
    let vars = json!({"appId": APP2, "environmentKey": "production", "firstN": 2});
    let d = data(&schema, &me, GET_VERSION_DETAILS, vars).await;
    let nodes = &d["app"]["environmentByKey"]["versions"]["nodes"];
    assert_eq!(nodes[0]["version"], "2.0.0");
    assert_eq!(
        nodes[0]["permissions"][0]["securityPolicies"],
        json!([{"type": "SCRIPTS", "policies": ["unsafe-inline", "unsafe-hashes"]},
               {"type": "STYLES", "policies": ["unsafe-inline"]}])
    );
    assert_eq!(
        nodes[0]["storage"],
        json!({"hosted": null, "remotes": [
            {"key": "api-backend", "baseUrl": "https://api.example.com", "classifications": null, "locations": null},
            {"key": "metrics", "baseUrl": "https://metrics.example.com/v1", "classifications": null, "locations": null},
        ]})
    );
    // A version without any answers as before: no policies, no remotes.
    assert_eq!(nodes[1]["version"], "1.4.0");
    assert_eq!(nodes[1]["permissions"][0]["securityPolicies"], json!([]));
    assert_eq!(nodes[1]["storage"], json!({"hosted": null, "remotes": null}));

    // The same remote as a minor of 1.x is refused: it needs the admin's consent.
    let minor: DeployRequest = serde_json::from_value(json!({
        "appId": APP2, "version": "1.5.0", "scopes": ["read:confluence-content.summary"],
        "requiredProducts": ["confluence"], "remotes": [{"key": "api-backend", "baseUrl": "https://api.example.com"}],
    }))
    .unwrap();
    let e = model.lock().unwrap().deploy(&minor, now_ms()).unwrap_err();
    assert!(e.message.contains("adds remote api-backend https://api.example.com"), "{e}");
}

#[tokio::test]
async fn a_code_only_upgrade_shows_the_compute_version_ahead_of_the_permissions() {
    let (model, schema, me) = setup();
    let ctx = workspace(&schema, &me, "acme.atlassian.net", "jira").await;
    let (v1, _) = version_id(&schema, &me, "production", 1).await;
    let (v2, _) = version_id(&schema, &me, "production", 2).await;
    let input = |version: &str, compute_only: Option<bool>| {
        let mut i = json!({"installationContext": ctx, "appId": APP1, "environmentKey": "production",
            "async": true, "versionId": version});
        if let Some(c) = compute_only {
            i["computeOnly"] = json!(c);
        }
        json!({"input": i})
    };
    let d = data(&schema, &me, INSTALL, input(&v1, None)).await;
    assert_eq!(d["installApp"]["success"], true, "{d}");
    finish_tasks(&model);
    let filter = json!({"filter": {"apps": {"ids": [APP1]}}, "first": 10});
    let listed = |d: &Value| d["ecosystem"]["appInstallationsByApp"]["nodes"][0].clone();

    // `forge install --upgrade code` to 2.0.0: the code of 2.0.0 runs, the permissions stay 1.2.0.
    let d = data(&schema, &me, UPGRADE, input(&v2, Some(true))).await;
    assert_eq!(d["upgradeApp"]["success"], true, "{d}");
    finish_tasks(&model);
    let node = listed(&data(&schema, &me, GET_INSTALLATIONS, filter.clone()).await);
    assert_eq!(node["appEnvironmentVersion"]["version"], "1.2.0");
    assert_eq!(node["appEnvironmentVersion"]["isLatest"], false, "outdated permissions");
    assert_eq!(node["computeVersion"]["version"], "2.0.0");
    assert_eq!(node["computeVersion"]["isLatest"], true);
    assert_eq!(node["appEnvironmentVersion"]["permissions"][0]["scopes"], json!([{"key": "read:jira-work"}]));
    assert_eq!(
        node["computeVersion"]["permissions"][0]["scopes"],
        json!([{"key": "read:jira-work"}, {"key": "write:jira-work"}]),
        "what the code asks for, not yet granted"
    );
    // The code-only upgrade again: already done.
    let d = data(&schema, &me, UPGRADE, input(&v2, Some(true))).await;
    assert_eq!(d["upgradeApp"]["errors"][0]["extensions"]["errorType"], "INSTALLATION_ALREADY_UPGRADED");

    // A full upgrade (the admin consents): both on 2.0.0.
    let d = data(&schema, &me, UPGRADE, input(&v2, None)).await;
    assert_eq!(d["upgradeApp"]["success"], true, "{d}");
    finish_tasks(&model);
    let node = listed(&data(&schema, &me, GET_INSTALLATIONS, filter.clone()).await);
    assert_eq!(node["appEnvironmentVersion"]["version"], "2.0.0");
    assert_eq!(node["computeVersion"], node["appEnvironmentVersion"]);
    // Code older than the permissions is refused at once.
    let d = data(&schema, &me, UPGRADE, input(&v1, Some(true))).await;
    assert_eq!(d["upgradeApp"]["success"], false);
    assert_eq!(d["upgradeApp"]["errors"][0]["extensions"]["errorType"], "VERSION_DECREASES_ROLLING_RELEASE");
}

#[tokio::test]
async fn http_console_marketplace_product_admins_and_unauthorized_operations() {
    // The console works without the API's distribution capability.
    let emu =
        start(EmulatorConfig { distribution: false, ..config() }, "127.0.0.1:0".parse().unwrap()).await.expect("start");
    let console = format!("{}/console", emu.admin_url());
    let (status, out) =
        admin(reqwest::Method::POST, console.clone(), Some(json!({"appId": APP1, "action": "startSharing"}))).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out, json!({"distributionStatus": "PUBLIC", "listedOnMarketplace": false, "link": null}));
    let (status, out) = admin(
        reqwest::Method::POST,
        console.clone(),
        Some(json!({"appId": APP1, "action": "generateLink", "products": ["jira"]})),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    let link = out["link"].clone();
    assert_eq!(link["products"], json!(["jira"]));
    let (status, out) =
        admin(reqwest::Method::POST, console.clone(), Some(json!({"appId": APP1, "action": "stopSharing"}))).await;
    assert_eq!((status, &out["distributionStatus"], &out["link"]), (200, &json!("DEVELOPMENT"), &link));
    let (status, e) = admin(reqwest::Method::POST, console.clone(), Some(json!({"appId": APP1, "action": "x"}))).await;
    assert_eq!((status, e["error"]["errorType"].as_str()), (400, Some("BAD_REQUEST")));
    let (status, e) =
        admin(reqwest::Method::POST, console.clone(), Some(json!({"appId": APP2, "action": "startSharing"}))).await;
    assert_eq!((status, e["error"]["errorType"].as_str()), (400, Some("VALIDATION_ERROR")), "{e}");
    let out = emu.console(ConsoleRequest::new(APP1, ConsoleAction::StartSharing)).unwrap();
    assert_eq!(out.link.as_ref().map(|l| l.signature.as_str()), link["signature"].as_str());

    // The customer's site lists its product admins; the jira admin follows the link.
    let (_, sites) = admin(reqwest::Method::GET, format!("{}/sites", emu.admin_url()), None).await;
    let initech = sites.as_array().unwrap().iter().find(|s| s["hostName"] == "initech.atlassian.net").unwrap().clone();
    assert_eq!(initech["productAdmins"]["jira"], json!(["jira-admin@initech.example"]));
    let install = |admin_email: &str| {
        json!({"appId": APP1, "site": "initech.atlassian.net", "product": "jira",
            "signature": link["signature"], "admin": admin_email})
    };
    let url = format!("{}/link-install", emu.admin_url());
    let (status, e) =
        admin(reqwest::Method::POST, url.clone(), Some(install("confluence-admin@initech.example"))).await;
    assert_eq!((status, e["error"]["errorType"].as_str()), (403, Some("PERMISSION_DENIED")));
    let (status, e) = admin(
        reqwest::Method::POST,
        url.clone(),
        Some(
            json!({"appId": APP1, "site": "initech.atlassian.net", "product": "jira", "signature": link["signature"]}),
        ),
    )
    .await;
    assert_eq!((status, e["error"]["errorType"].as_str()), (400, Some("BAD_REQUEST")), "admin is required");

    // Listed: the link admits nobody, sharing stays; unlisted: it admits again.
    let marketplace = format!("{}/marketplace", emu.admin_url());
    let (status, out) =
        admin(reqwest::Method::POST, marketplace.clone(), Some(json!({"appId": APP1, "listed": true}))).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!((&out["distributionStatus"], &out["listedOnMarketplace"]), (&json!("PUBLIC"), &json!(true)));
    let (status, e) = admin(reqwest::Method::POST, url.clone(), Some(install("jira-admin@initech.example"))).await;
    assert_eq!((status, e["error"]["errorType"].as_str()), (403, Some("APP_LISTED_ON_MARKETPLACE")));
    let (status, e) =
        admin(reqwest::Method::POST, console.clone(), Some(json!({"appId": APP1, "action": "startSharing"}))).await;
    assert_eq!((status, e["error"]["errorType"].as_str()), (409, Some("APP_LISTED_ON_MARKETPLACE")));
    assert!(emu.set_listed(APP1, false).is_ok());
    let (status, out) = admin(reqwest::Method::POST, url, Some(install("jira-admin@initech.example"))).await;
    assert_eq!((status, out["version"].as_str()), (200, Some("2.0.0")), "{out}");
    let (status, e) = admin(reqwest::Method::POST, marketplace, Some(json!({"appId": "nope", "listed": true}))).await;
    assert_eq!((status, e["error"]["errorType"].as_str()), (404, Some("APP_NOT_FOUND")));

    // Operations answered 401 though the credentials are good; the others go on.
    emu.set_faults(Faults { unauthorized_operations: vec!["forgeops_getAppSharing".into()], ..Default::default() });
    let (status, _, r) = gql(&emu, GET_SHARING, json!({"id": APP1, "appId": APP1})).await;
    assert_eq!((status, &r["errors"][0]["extensions"]["errorType"]), (401, &json!("UNAUTHORIZED")));
    let (status, _, r) = gql(&emu, GET_USER_DETAILS, json!({})).await;
    assert_eq!(status, 200, "{r}");
    let recorded = emu.requests();
    let refused = recorded.iter().find(|r| r.operation_name.as_deref() == Some("forgeops_getAppSharing")).unwrap();
    assert_eq!(refused.fault.as_deref(), Some("unauthorized"));
}

fn batch_body(n: usize, bad_installation: Option<usize>) -> Value {
    let host = |k: usize| format!("bulk-{k:02}.atlassian.net");
    let sites: Vec<Value> =
        (0..n).map(|k| json!({"hostName": host(k), "products": ["jira"], "admins": [EMAIL]})).collect();
    let installations: Vec<Value> = (0..n)
        .map(|k| {
            let site = if Some(k) == bad_installation { "nowhere.atlassian.net".to_string() } else { host(k) };
            json!({"appId": APP1, "site": site, "product": "jira"})
        })
        .collect();
    json!({"sites": sites, "installations": installations})
}

#[tokio::test]
async fn http_batch_applies_all_or_nothing_and_names_the_refused_entry() {
    let emu = start(config(), "127.0.0.1:0".parse().unwrap()).await.expect("start");
    let url = format!("{}/batch", emu.admin_url());
    let before = emu.state();
    let counts =
        |state: &Value| (state["sites"].as_array().unwrap().len(), state["installations"].as_array().unwrap().len());

    // Refused at its 13th installation: the status and type of that refusal, the entry named, and
    // none of the 20 sites and 12 installations before it stays.
    let (status, body) = admin(reqwest::Method::POST, url.clone(), Some(batch_body(20, Some(12)))).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["statusCode"], 400);
    assert_eq!(body["error"]["errorType"], "BAD_REQUEST");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("installations[12]: "), "{message}");
    assert!(message.contains("nowhere.atlassian.net"), "{message}");
    assert_eq!(emu.state(), before, "nothing of the batch applied");
    // A link install refused as POST /admin/link-install refuses it undoes the sites and
    // installations before it too.
    let mut with_link = batch_body(3, None);
    with_link["linkInstalls"] = json!([{"appId": APP1, "site": "bulk-00.atlassian.net", "product": "jira",
                                        "signature": "not-the-link", "admin": EMAIL}]);
    let (status, body) = admin(reqwest::Method::POST, url.clone(), Some(with_link)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().starts_with("linkInstalls[0]: "), "{body}");
    assert_eq!(emu.state(), before, "nothing of the batch applied");
    let (status, body) = admin(reqwest::Method::POST, url.clone(), Some(json!({"sites": [], "nope": 1}))).await;
    assert_eq!(status, 400, "{body}");

    // Without the fault, all of it, found through the gateway as any other.
    let (status, body) = admin(reqwest::Method::POST, url.clone(), Some(batch_body(20, None))).await;
    assert_eq!((status, body), (200, json!({"sites": 20, "installations": 20, "linkInstalls": 0})));
    let after = emu.state();
    assert_eq!(counts(&after), (counts(&before).0 + 20, counts(&before).1 + 20));
    let (_, _, r) =
        gql(&emu, GET_TENANT_CONTEXT_DETAILS, json!({"hostNames": ["BULK-12.atlassian.net"], "product": "jira"})).await;
    let cloud_id = r["data"]["tenantContexts"][0]["cloudId"].as_str().expect("found by host name").to_string();
    let site = after["sites"].as_array().unwrap().iter().find(|s| s["hostName"] == "bulk-12.atlassian.net").unwrap();
    assert_eq!(site["cloudId"], cloud_id.as_str());
    let ctx = model::workspace_ari("jira", &cloud_id, site["products"]["jira"].as_str().unwrap());
    let filter = json!({"filter": {"apps": {"ids": [APP1]}, "appInstallations": {"contexts": [ctx]}}, "first": 100});
    let (_, _, r) = gql(&emu, GET_INSTALLATIONS, filter).await;
    let nodes = r["data"]["ecosystem"]["appInstallationsByApp"]["nodes"].as_array().unwrap().clone();
    assert_eq!(nodes.len(), 1, "{r}");
    assert_eq!(nodes[0]["installationContext"], ctx.as_str());
    assert_eq!(nodes[0]["appEnvironmentVersion"]["isLatest"], true);
    // The same sites again: the first is named, and nothing more is added.
    let (status, body) = admin(reqwest::Method::POST, url, Some(batch_body(20, None))).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().starts_with("sites[0]: "), "{body}");
    assert_eq!(emu.state(), after);
}

/// The state file is written behind the requests: many changes in quick succession cost a few
/// writes (at most one per [`PERSIST_INTERVAL`]), none while nothing changes, the file catches up
/// without the emulator stopping, and the last change is on disk once it stops.
#[tokio::test]
async fn the_state_file_is_written_behind_and_holds_the_last_state_when_the_emulator_stops() {
    let dir = std::env::temp_dir().join(format!("forgeops-emulator-{}", model::random_uuid()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("state.json");
    let config = EmulatorConfig { state_file: Some(path.clone()), ..config() };
    let on_disk = |host: &str| {
        let state: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        state["sites"].as_array().unwrap().iter().any(|s| s["hostName"] == host)
    };
    let emu = start(config.clone(), "127.0.0.1:0".parse().unwrap()).await.expect("start");
    assert_eq!(emu.persist_writes(), 1, "written once at start");
    let started = std::time::Instant::now();
    let n: u64 = 400;
    let http = client();
    for k in 0..n {
        let site = json!({"hostName": format!("wb-{k:03}.atlassian.net"), "products": ["jira"], "admins": [EMAIL]});
        let req = http.post(format!("{}/sites", emu.admin_url())).header("content-type", "application/json");
        let resp = req.body(serde_json::to_vec(&site).unwrap()).send().await.expect("request");
        assert_eq!(resp.status().as_u16(), 200, "{}", resp.text().await.unwrap_or_default());
    }
    let elapsed = started.elapsed();
    let writes = emu.persist_writes() - 1;
    let bound = elapsed.as_millis() / PERSIST_INTERVAL.as_millis() + 2;
    assert!(u128::from(writes) <= bound, "{writes} writes for {n} changes in {elapsed:?}");
    assert!(writes < n / 4, "{writes} writes for {n} changes in {elapsed:?}");

    // Behind, but not far: the file catches up while the emulator runs.
    tokio::time::sleep(PERSIST_INTERVAL * 3).await;
    assert!(emu.persisted() && on_disk("wb-399.atlassian.net"), "written behind");
    let settled = emu.persist_writes();
    tokio::time::sleep(PERSIST_INTERVAL * 3).await;
    let (_, _, r) =
        gql(&emu, GET_TENANT_CONTEXT_DETAILS, json!({"hostNames": ["wb-001.atlassian.net"], "product": "jira"})).await;
    assert!(r["data"]["tenantContexts"][0]["cloudId"].is_string(), "{r}");
    assert_eq!(emu.persist_writes(), settled, "no write while nothing changes");

    // The last change, and the emulator stops at once: it is on disk.
    let last = emu
        .add_site(SeedSite {
            host_name: "last.atlassian.net".into(),
            products: vec!["jira".into()],
            admins: vec![EMAIL.into()],
            ..Default::default()
        })
        .unwrap();
    drop(emu);
    assert!(on_disk("last.atlassian.net"), "the last state written when the emulator stops");

    // Restarted from the file: the last change is there, and found through the indexes.
    let emu = start(config, "127.0.0.1:0".parse().unwrap()).await.expect("restart");
    assert_eq!(emu.state()["sites"].as_array().unwrap().len(), 3 + n as usize + 1);
    let (_, _, r) =
        gql(&emu, GET_TENANT_CONTEXT_DETAILS, json!({"hostNames": ["LAST.atlassian.net"], "product": "jira"})).await;
    assert_eq!(r["data"]["tenantContexts"][0]["cloudId"], last.cloud_id.as_str(), "{r}");
    drop(emu);
    let _ = std::fs::remove_dir_all(&dir);
}

const METRICS: &str = r#"query forgeops_getAppMetrics($appId: ID!, $query: ForgeMetricsQueryInput!) {
  ecosystem {
    forgeMetrics(appId: $appId) {
      invocationsValue(query: $query) {
        ... on ForgeMetricsInvocationsValueData { series { groups { key value } data { count timestamp } } }
        ... on QueryError { message extensions { errorType statusCode } }
      }
    }
  }
}"#;

async fn metrics_call(emu: &RunningEmulator, auth: (&str, &str), experimental: bool, query: Value) -> Value {
    let mut req = client()
        .post(emu.graphql_url())
        .basic_auth(auth.0, Some(auth.1))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&json!({"query": METRICS, "variables": {"appId": APP1, "query": query}})).unwrap());
    if experimental {
        req = req.header("X-ExperimentalApi", "ForgeMetricsQuery");
    }
    serde_json::from_slice(&req.send().await.expect("request").bytes().await.expect("body")).expect("JSON")
}

#[tokio::test]
async fn http_app_metrics_from_the_traffic_model_under_the_documented_limits() {
    let emu = start(config(), "127.0.0.1:0".parse().unwrap()).await.expect("start");
    let (_, site) = admin(
        reqwest::Method::POST,
        format!("{}/sites", emu.admin_url()),
        Some(json!({"hostName": "hooli.atlassian.net", "products": ["jira"], "admins": [EMAIL]})),
    )
    .await;
    let ctx = site["installationContexts"]["jira"].as_str().unwrap().to_string();
    let (_, _, r) = gql(
        &emu,
        INSTALL,
        json!({"input": {"installationContext": ctx, "appId": APP1, "environmentKey": "production", "async": true}}),
    )
    .await;
    let task = r["data"]["installApp"]["taskId"].as_str().expect("task id").to_string();
    assert_eq!(wait_task(&emu, &task).await["state"], "COMPLETE");
    let version = installed_version(&emu).await.as_str().unwrap().to_string();
    let major = version.split('.').next().unwrap().to_string();

    // Refused rules, then one a minute-rate of 60,000 (one a millisecond), 90% successful.
    let traffic = format!("{}/traffic", emu.admin_url());
    let bad = json!({"appId": APP1, "version": major, "invocationsPerMinute": 1, "successRate": 2.0});
    assert_eq!(admin(reqwest::Method::PUT, traffic.clone(), Some(bad)).await.0, 400);
    let unknown = json!({"appId": "ari:cloud:ecosystem::app/nope", "version": major, "invocationsPerMinute": 1, "successRate": 1.0});
    assert_eq!(admin(reqwest::Method::PUT, traffic.clone(), Some(unknown)).await.0, 404);
    let rule = json!({"appId": APP1, "version": major, "invocationsPerMinute": 60000, "successRate": 0.9});
    assert_eq!(admin(reqwest::Method::PUT, traffic.clone(), Some(rule)).await.0, 200);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let now = jiff::Timestamp::now();
    let window = |minutes: i64| {
        json!({"filters": {"interval": {"start": (now - jiff::SignedDuration::from_mins(minutes)).to_string(),
            "end": now.to_string()}}, "groupBy": ["VERSION", "CONTEXT_ARI"]})
    };
    // Without the header: refused, and not counted.
    let r = metrics_call(&emu, (EMAIL, TOKEN), false, window(15)).await;
    assert!(r["errors"][0]["message"].as_str().unwrap().contains("X-ExperimentalApi"), "{r}");
    // Another account's app: refused.
    let r = metrics_call(&emu, ("other@globex.example", "other-token"), true, window(15)).await;
    assert_eq!(r["errors"][0]["extensions"]["errorType"], "PERMISSION_DENIED", "{r}");

    // One series per (version, context), counted since the install.
    let r = metrics_call(&emu, (EMAIL, TOKEN), true, window(15)).await;
    let series = &r["data"]["ecosystem"]["forgeMetrics"]["invocationsValue"]["series"];
    assert_eq!(series.as_array().map(Vec::len), Some(1), "{r}");
    assert_eq!(
        series[0]["groups"],
        json!([{"key": "VERSION", "value": version}, {"key": "CONTEXT_ARI", "value": ctx}])
    );
    let count = series[0]["data"][0]["count"].as_i64().unwrap();
    assert!((300..60_000).contains(&count), "about one a millisecond since the install: {count}");

    // More than 15 minutes in one call: refused (and counted: the call was made).
    let r = metrics_call(&emu, (EMAIL, TOKEN), true, window(16)).await;
    assert_eq!(r["data"]["ecosystem"]["forgeMetrics"]["invocationsValue"]["extensions"][0]["statusCode"], 400, "{r}");
    // Five calls a minute: three more pass, the sixth is refused with 429.
    for _ in 0..3 {
        let r = metrics_call(&emu, (EMAIL, TOKEN), true, window(1)).await;
        assert!(r["data"]["ecosystem"]["forgeMetrics"]["invocationsValue"]["series"].is_array(), "{r}");
    }
    let r = metrics_call(&emu, (EMAIL, TOKEN), true, window(1)).await;
    let refused = &r["data"]["ecosystem"]["forgeMetrics"]["invocationsValue"];
    assert_eq!(refused["extensions"][0]["statusCode"], 429, "{r}");
    assert_eq!(refused["extensions"][0]["errorType"], "TOO_MANY_REQUESTS");
}
