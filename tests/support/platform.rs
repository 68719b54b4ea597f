//! The platform the tests' operators act on: the emulator, in the test process, on loopback.
//!
//! Something has to stand in for `forge deploy` and for the sites that exist. Tests write the
//! versions an app should have next to it, in the annotation [`DEPLOY_ANNOTATION`] (see
//! [`declared`]); a mirror task watches the test namespace and, for every ForgeApp, creates the app
//! on the emulator (owned by the test account), deploys each version it lacks and then asks the
//! operator to read the app again (the `forgeops.dev/refresh` annotation, as a CI job would after
//! `forge deploy`); for every Installation, it adds the site with Jira, Confluence and Compass,
//! administered by the test account unless its host name starts with `customer` (a customer's site,
//! whose product admin [`customer_admin`] follows installation links). A new app has the app details
//! sharing needs saved ([`DEFAULT_APP_DETAILS`]) unless [`APP_DETAILS_ANNOTATION`] says otherwise.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use forgeops::api::{ForgeApp, Installation};
use forgeops_emulator::{
    self as emulator, DeployRequest, EmulatorConfig, Faults, RunningEmulator, Seed, SeedApp, SeedSite,
};
use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

/// The account the tests' operators act as.
pub const EMAIL: &str = "dev@acme.example";
/// Its API token (a test value).
pub const TOKEN: &str = "test-api-token-3b9e";
/// The credentials Secret the tests create in the operator namespace.
pub const CREDENTIALS_SECRET: &str = "forgeops-credentials";
/// Test-only: the versions to deploy for a ForgeApp, as JSON `[{name, versions: [...]}]`.
pub const DEPLOY_ANNOTATION: &str = "test.forgeops.dev/deploy";

/// Turns a ForgeApp body (or a merge patch of one) written the old, declarative way, with
/// `spec.environments: [{name, versions}]`, into the real shape: `spec.environments` as names, and
/// the versions in [`DEPLOY_ANNOTATION`] for the mirror to deploy. Other bodies pass unchanged.
pub fn declared(mut body: serde_json::Value) -> serde_json::Value {
    let Some(envs) = body["spec"]["environments"].as_array().cloned() else { return body };
    if !envs.iter().any(|e| e.is_object()) {
        return body;
    }
    let names: Vec<serde_json::Value> = envs.iter().map(|e| e["name"].clone()).collect();
    body["spec"]["environments"] = serde_json::Value::Array(names);
    let deploy = serde_json::Value::Array(envs).to_string();
    body["metadata"]["annotations"][DEPLOY_ANNOTATION] = serde_json::Value::String(deploy);
    body
}

/// The emulator and the task mirroring the namespace into it.
pub struct TestPlatform {
    pub emulator: RunningEmulator,
    mirror: tokio::task::JoinHandle<()>,
    /// Versions deployed by the mirror (`app/env/version`), so each is deployed once.
    deployed: Arc<Mutex<BTreeSet<String>>>,
    /// Refreshes asked for so far.
    refreshes: std::sync::atomic::AtomicU64,
    /// The e-mails of the accounts added besides the test account: they administer the sites the
    /// mirror adds too.
    accounts: Mutex<Vec<String>>,
}

/// The annotation naming the e-mail of the account that owns an app the mirror adds (default:
/// the test account).
pub const OWNER_ANNOTATION: &str = "test.forgeops.dev/owner";

/// The annotation saying which app details (the developer console's vendor, privacy policy and
/// terms of service, which sharing needs) an app the mirror adds has saved: absent, the
/// [`DEFAULT_APP_DETAILS`]; `none`, no details at all (sharing is refused until they are given);
/// else a JSON object `{vendorName?, privacyPolicy?, termsOfService?, contactLink?}`.
pub const APP_DETAILS_ANNOTATION: &str = "test.forgeops.dev/app-details";

/// The app details (vendor, privacy policy, terms of service) the mirror saves for a new app
/// unless [`APP_DETAILS_ANNOTATION`] says otherwise.
pub const DEFAULT_APP_DETAILS: (&str, &str, &str) =
    ("Example Vendor", "https://example.com/privacy", "https://example.com/terms");

/// The app details of a new mirrored app, as seed fields (see [`APP_DETAILS_ANNOTATION`]).
fn app_details_of(app: &ForgeApp) -> serde_json::Map<String, serde_json::Value> {
    let annotation = app.metadata.annotations.as_ref().and_then(|a| a.get(APP_DETAILS_ANNOTATION));
    match annotation.map(|a| a.trim()) {
        Some("none") => serde_json::Map::new(),
        Some(text) => serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text)
            .unwrap_or_else(|e| panic!("{APP_DETAILS_ANNOTATION}: not a JSON object: {e}"))
            .into_iter()
            .filter(|(k, _)| ["vendorName", "privacyPolicy", "termsOfService", "contactLink"].contains(&k.as_str()))
            .collect(),
        None => {
            let (vendor, privacy, terms) = DEFAULT_APP_DETAILS;
            let details = serde_json::json!({"vendorName": vendor, "privacyPolicy": privacy, "termsOfService": terms});
            details.as_object().cloned().unwrap_or_default()
        }
    }
}

/// The customer's admin of every product of a customer's site the mirror adds (host names
/// starting with `customer`): who follows an installation link there.
pub fn customer_admin(host: &str) -> String {
    format!("admin@{}", host.to_ascii_lowercase())
}

/// An environment and its versions, as tests declare them.
#[derive(serde::Deserialize, Default)]
struct DeclaredEnvironment {
    name: String,
    #[serde(default)]
    versions: Vec<DeclaredVersion>,
}

/// The products the platform lists as required for a declared version.
fn products_of(v: &DeclaredVersion) -> Vec<String> {
    let c = &v.compatibility;
    let mut products: Vec<String> =
        c.required.iter().chain(&c.required_products).map(|p| p.as_str().to_string()).collect();
    products.retain(|p| p != "jira-service-management" && p != "bitbucket");
    products
}

/// The products a declared version's modules are for, as the platform's extension types
/// (`confluence:contentBylineItem`).
fn modules_of(v: &DeclaredVersion) -> Vec<String> {
    v.compatibility.modules.iter().map(|p| format!("{}:module", p.as_str())).collect()
}

/// What a test declares about a version's products: `required` (one product, the old shape) or
/// `requiredProducts` make a cross-product app; neither, with `modules`, a single-app app whose
/// modules extend those products.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeclaredCompatibility {
    #[serde(default)]
    required: Option<forgeops::api::Product>,
    #[serde(default)]
    required_products: Vec<forgeops::api::Product>,
    #[serde(default)]
    modules: Vec<forgeops::api::Product>,
}

/// A version as tests declare it (the shape the ForgeApp once had).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeclaredVersion {
    major: u32,
    minor: u32,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    egress: Vec<String>,
    #[serde(default)]
    licensing: bool,
    compatibility: DeclaredCompatibility,
}

impl Drop for TestPlatform {
    fn drop(&mut self) {
        self.mirror.abort();
    }
}

/// An emulator configuration whose platform already has app `app_id` (owned by the test account)
/// with `versions` (`(version, scopes)`) in production, and `sites` sites `<prefix>-<i>.atlassian.net`
/// with the app installed on version `installed`, as if customers had installed it over time.
pub fn seeded(
    app_id: &str,
    versions: &[(&str, &[&str])],
    prefix: &str,
    sites: usize,
    installed: &str,
) -> EmulatorConfig {
    let versions: Vec<serde_json::Value> = versions
        .iter()
        .map(|(v, scopes)| serde_json::json!({"version": v, "scopes": scopes, "requiredProducts": ["jira"]}))
        .collect();
    let seed = serde_json::json!({
        "apps": [{"id": app_id, "owner": EMAIL, "environments": [{"key": "production", "versions": versions}]}],
        "sites": (0..sites).map(|i| serde_json::json!({"hostName": format!("{prefix}-{i:04}.atlassian.net"), "products": ["jira"], "admins": [EMAIL]})).collect::<Vec<_>>(),
        "installations": (0..sites).map(|i| serde_json::json!({"appId": app_id, "site": format!("{prefix}-{i:04}.atlassian.net"), "product": "jira", "version": installed})).collect::<Vec<_>>(),
    });
    EmulatorConfig { seed: serde_json::from_value(seed).expect("a valid seed"), ..Default::default() }
}

/// The platform version string of a declared `major.minor`.
pub fn platform_version(major: u64, minor: u64) -> String {
    format!("{major}.{minor}.0")
}

impl TestPlatform {
    /// Starts an emulator with the test account, and the mirror of `namespace`.
    pub async fn start(client: Client, namespace: &str, mut config: EmulatorConfig) -> Arc<TestPlatform> {
        let account = format!("{{email: {EMAIL}, apiToken: {TOKEN}, name: Dev}}");
        let mut seed = Seed::from_yaml_str(&format!("accounts: [{account}]")).unwrap();
        seed.apps.append(&mut config.seed.apps);
        seed.sites.append(&mut config.seed.sites);
        seed.installations.append(&mut config.seed.installations);
        config.seed = seed;
        let emulator = emulator::start(config, "127.0.0.1:0".parse().unwrap()).await.expect("starting the emulator");
        let deployed = Arc::new(Mutex::new(BTreeSet::new()));
        Arc::new_cyclic(|weak: &std::sync::Weak<TestPlatform>| {
            let weak = weak.clone();
            let (apps, insts): (Api<ForgeApp>, Api<Installation>) =
                (Api::namespaced(client.clone(), namespace), Api::namespaced(client, namespace));
            let apps_api = apps.clone();
            let mirror = tokio::spawn(async move {
                let apps = watcher(apps, watcher::Config::default())
                    .applied_objects()
                    .map(|a| a.map(|a| Either::App(Box::new(a))));
                let insts = watcher(insts, watcher::Config::default())
                    .applied_objects()
                    .map(|i| i.map(|i| Either::Inst(Box::new(i))));
                let mut both = std::pin::pin!(futures::stream::select(apps, insts));
                while let Some(event) = both.next().await {
                    let Some(platform) = weak.upgrade() else { return };
                    match event {
                        Ok(Either::App(app)) => {
                            if platform.mirror_app(&app) {
                                // As a CI job would after `forge deploy`: ask for a refresh.
                                let n = platform.refreshes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                let patch = serde_json::json!({"metadata": {"annotations": {
                                    forgeops::api::REFRESH_ANNOTATION: format!("mirror-{n}")}}});
                                let name = app.metadata.name.clone().unwrap_or_default();
                                let _ = apps_api
                                    .patch(&name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(patch))
                                    .await;
                            }
                        }
                        Ok(Either::Inst(inst)) => platform.mirror_site(&inst),
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            });
            TestPlatform { emulator, mirror, deployed, refreshes: Default::default(), accounts: Default::default() }
        })
    }

    /// Creates the app if the emulator lacks it and deploys every version of [`DEPLOY_ANNOTATION`]
    /// it lacks; answers whether it deployed anything.
    pub fn mirror_app(&self, app: &ForgeApp) -> bool {
        let id = app.spec.app_id.clone();
        let state = self.emulator.state();
        let known = state["apps"].as_array().is_some_and(|a| a.iter().any(|x| x["id"] == id.as_str()));
        let declared: Vec<DeclaredEnvironment> = app
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(DEPLOY_ANNOTATION))
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_default();
        if !known {
            // A new app comes with the history the test declares (as a seed does): an environment
            // declared with versions has exactly those; one without has the platform's skeleton.
            let mut keys: Vec<String> = app.spec.environments.clone();
            keys.extend(declared.iter().map(|e| e.name.clone()).filter(|n| !app.spec.environments.contains(n)));
            let environments: Vec<serde_json::Value> = keys
                .iter()
                .map(|name| {
                    let versions: Vec<serde_json::Value> = declared
                        .iter()
                        .filter(|e| &e.name == name)
                        .flat_map(|e| e.versions.iter())
                        .map(|v| {
                            let version = platform_version(v.major as u64, v.minor as u64);
                            self.deployed.lock().unwrap().insert(format!("{id}/{name}/{version}"));
                            serde_json::json!({
                                "version": version, "scopes": v.scopes, "egress": v.egress,
                                "requiresLicense": v.licensing, "requiredProducts": products_of(v),
                                "modules": modules_of(v),
                            })
                        })
                        .collect();
                    serde_json::json!({"key": forgeops::platform::environment_key(name), "versions": versions})
                })
                .collect();
            let owner = app.metadata.annotations.as_ref().and_then(|a| a.get(OWNER_ANNOTATION)).map(String::as_str);
            let mut body = serde_json::json!({
                "id": id, "owner": owner.unwrap_or(EMAIL), "listedOnMarketplace": false,
                "environments": environments,
            });
            if let Some(fields) = body.as_object_mut() {
                fields.extend(app_details_of(app));
            }
            let seed_app: SeedApp = serde_json::from_value(body).unwrap();
            if let Err(e) = self.emulator.add_app(seed_app) {
                // The platform refuses such an app id: nothing to deploy, and no refresh to ask.
                eprintln!("mirror: adding app {id}: {e:?}");
                return false;
            }
        }
        let mut any = !known;
        for env in &declared {
            let mut versions: Vec<_> = env.versions.iter().collect();
            versions.sort_by_key(|v| (v.major, v.minor));
            for v in versions {
                let version = platform_version(v.major as u64, v.minor as u64);
                let key = format!("{id}/{}/{version}", env.name);
                if self.deployed.lock().unwrap().contains(&key) {
                    continue;
                }
                let request: DeployRequest = match serde_json::from_value(serde_json::json!({
                    "appId": id,
                    "environment": forgeops::platform::environment_key(&env.name),
                    "version": version,
                    "scopes": v.scopes,
                    "egress": v.egress,
                    "requiresLicense": v.licensing,
                    "requiredProducts": products_of(v),
                    "modules": modules_of(v),
                })) {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("mirror: deploying {key}: {e}");
                        continue;
                    }
                };
                match self.emulator.deploy(request) {
                    Ok(_) => {
                        self.deployed.lock().unwrap().insert(key);
                        any = true;
                    }
                    Err(e) => eprintln!("mirror: deploying {key}: {e:?}"),
                }
            }
        }
        any
    }

    /// Adds the Installation's site, with Jira, Confluence and Compass.
    pub fn mirror_site(&self, inst: &Installation) {
        let host = inst.spec.site.to_ascii_lowercase();
        let state = self.emulator.state();
        if state["sites"].as_array().is_some_and(|s| s.iter().any(|x| x["hostName"] == host.as_str())) {
            return;
        }
        // The test account administers every site the tests declare, except customers' sites
        // (host names starting with `customer`), which only the installation link reaches.
        // A customer's site has its own admin of every product ([`customer_admin`]), who follows
        // the installation link.
        let mut admins: Vec<String> = vec![EMAIL.to_string()];
        admins.extend(self.accounts.lock().unwrap().iter().cloned());
        let mut product_admins = serde_json::Map::new();
        if host.starts_with("customer") {
            admins.clear();
            for product in ["jira", "confluence", "compass"] {
                product_admins.insert(product.to_string(), serde_json::json!([customer_admin(&host)]));
            }
        }
        let site: SeedSite = serde_json::from_value(serde_json::json!({
            "hostName": host, "products": ["jira", "confluence", "compass"], "admins": admins,
            "productAdmins": product_admins,
        }))
        .unwrap();
        if let Err(e) = self.emulator.add_site(site) {
            eprintln!("mirror: adding site {host}: {e:?}");
        }
    }

    /// Adds a developer account (it administers every site the mirror adds from now on).
    pub fn add_account(&self, email: &str, token: &str) {
        let account: forgeops_emulator::SeedAccount =
            serde_json::from_value(serde_json::json!({"email": email, "apiToken": token})).unwrap();
        self.emulator.add_account(account).expect("adding an account");
        self.accounts.lock().unwrap().push(email.to_string());
    }

    /// The app's owner acts in the developer console: `action` is `stopSharing`, `startSharing`,
    /// `generateLink` (for `products`) or `saveDetails`. Answers the app's sharing state.
    pub fn console(
        &self,
        app_id: &str,
        action: &str,
        products: &[&str],
    ) -> Result<emulator::ConsoleOutcome, emulator::PlatformError> {
        let action: emulator::ConsoleAction = serde_json::from_value(serde_json::json!(action))
            .map_err(|e| emulator::PlatformError::new("BAD_REQUEST", 400, format!("console action {action:?}: {e}")))?;
        let mut request = emulator::ConsoleRequest::new(app_id, action);
        request.products = products.iter().map(|p| p.to_string()).collect();
        self.emulator.console(request)
    }

    /// Saves the app's details in the developer console (vendor, privacy policy URL, terms of
    /// service URL; a blank one is cleared).
    pub fn set_app_details(
        &self,
        app_id: &str,
        vendor: &str,
        privacy: &str,
        terms: &str,
    ) -> Result<emulator::ConsoleOutcome, emulator::PlatformError> {
        let mut request = emulator::ConsoleRequest::new(app_id, emulator::ConsoleAction::SaveDetails);
        request.vendor_name = Some(vendor.to_string());
        request.privacy_policy = Some(privacy.to_string());
        request.terms_of_service = Some(terms.to_string());
        self.emulator.console(request)
    }

    /// The app is listed on (or submitted to) the Marketplace, or no longer. Answers the app's
    /// sharing state.
    pub fn set_listed(&self, app_id: &str, listed: bool) -> Result<emulator::ConsoleOutcome, emulator::PlatformError> {
        self.emulator.set_listed(app_id, listed)
    }

    pub fn set_faults(&self, faults: Faults) {
        self.emulator.set_faults(faults);
    }

    /// The version installed on `site` for `app_id` (`major.minor`), as the emulator says.
    pub fn installed_version(&self, app_id: &str, site: &str) -> Option<String> {
        let state = self.emulator.state();
        let cloud_id = state["sites"].as_array()?.iter().find(|s| s["hostName"] == site)?["cloudId"].clone();
        let installation = state["installations"]
            .as_array()?
            .iter()
            .find(|i| i["appId"] == app_id && i["cloudId"] == cloud_id)?
            .clone();
        let version_id = installation["versionId"].as_str()?;
        let version = state["apps"]
            .as_array()?
            .iter()
            .flat_map(|a| a["environments"].as_array().cloned().unwrap_or_default())
            .flat_map(|e| e["versions"].as_array().cloned().unwrap_or_default())
            .find(|v| v["id"] == version_id)?;
        let text = version["version"].as_str()?;
        let (major, minor) = forgeops::platform::parse_major_minor(text)?;
        Some(format!("{major}.{minor}"))
    }

    /// Each product `app_id` is installed into on `site`, with its installation context and
    /// platform version string, as the emulator says.
    pub fn installed_products(&self, app_id: &str, site: &str) -> std::collections::BTreeMap<String, (String, String)> {
        let state = self.emulator.state();
        let cloud_id = state["sites"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["hostName"] == site))
            .map(|s| s["cloudId"].clone())
            .unwrap_or_default();
        let version_of = |id: &serde_json::Value| {
            state["apps"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|a| a["environments"].as_array().cloned().unwrap_or_default())
                .flat_map(|e| e["versions"].as_array().cloned().unwrap_or_default())
                .find(|v| v["id"] == *id)
                .and_then(|v| v["version"].as_str().map(str::to_string))
                .unwrap_or_default()
        };
        state["installations"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["appId"] == app_id && i["cloudId"] == cloud_id)
            .map(|i| {
                let product = i["product"].as_str().unwrap_or_default().to_string();
                let context = i["context"].as_str().unwrap_or_default().to_string();
                (product, (context, version_of(&i["versionId"])))
            })
            .collect()
    }

    /// How many tasks of `kind` (`INSTALL`, `UPGRADE`, `UNINSTALL`) completed, by site host name.
    pub fn completed_tasks(&self, kind: &str) -> std::collections::BTreeMap<String, u32> {
        self.tasks_in(kind, Some("COMPLETE"))
    }

    /// How many tasks of `kind` the platform accepted, in any state (a doubled request that failed
    /// with `APP_ALREADY_INSTALLED` counts too), by site host name.
    pub fn every_task(&self, kind: &str) -> std::collections::BTreeMap<String, u32> {
        self.tasks_in(kind, None)
    }

    fn tasks_in(&self, kind: &str, state_is: Option<&str>) -> std::collections::BTreeMap<String, u32> {
        let state = self.emulator.state();
        let host_of = |cloud: &serde_json::Value| {
            state["sites"]
                .as_array()
                .and_then(|s| s.iter().find(|x| x["cloudId"] == *cloud))
                .and_then(|s| s["hostName"].as_str())
                .unwrap_or("?")
                .to_string()
        };
        let mut counts = std::collections::BTreeMap::new();
        for t in state["tasks"].as_object().into_iter().flat_map(|m| m.values()) {
            if t["kind"].as_str().is_some_and(|k| k.eq_ignore_ascii_case(kind))
                && state_is.is_none_or(|want| t["state"].as_str().is_some_and(|s| s.eq_ignore_ascii_case(want)))
            {
                *counts.entry(host_of(&t["cloudId"])).or_insert(0) += 1;
            }
        }
        counts
    }

    /// The platform's rollouts (bulk upgrades) of `app_id`, as its state shows them, oldest first.
    pub fn rollouts(&self, app_id: &str) -> Vec<serde_json::Value> {
        let state = self.emulator.state();
        let mut out: Vec<serde_json::Value> =
            state["rollouts"].as_array().into_iter().flatten().filter(|r| r["appId"] == app_id).cloned().collect();
        out.sort_by_key(|r| r["createdAt"].as_i64());
        out
    }

    /// For each installation of `app_id`, the rollouts that upgraded it.
    pub fn upgraded_by(&self, app_id: &str) -> std::collections::BTreeMap<String, Vec<String>> {
        let state = self.emulator.state();
        state["installations"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["appId"] == app_id)
            .map(|i| {
                let by = i["upgradedBy"].as_array().into_iter().flatten();
                (
                    i["id"].as_str().unwrap_or_default().to_string(),
                    by.filter_map(|r| r.as_str().map(String::from)).collect(),
                )
            })
            .collect()
    }

    /// Requests the emulator received for `operation`.
    pub fn calls(&self, operation: &str) -> usize {
        self.emulator.requests().iter().filter(|r| r.operation_name.as_deref() == Some(operation)).count()
    }
}

enum Either {
    App(Box<ForgeApp>),
    Inst(Box<Installation>),
}
