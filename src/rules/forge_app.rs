//! The ForgeApp rules: what the platform says about an app (its account, environments and the
//! versions deployed in each) becomes its status, and the conditions say what to do when the
//! platform cannot be read or installations hold the app.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::conditions::{self, Outcome};
use super::versions::{self, Version};
use crate::api::{
    AccountStatus, AppVersion, Compatibility, EnvironmentStatus, ForgeApp, ForgeAppStatus, MajorStatus, Product,
    VersionCount,
};
use crate::platform::VersionInfo;

crate::named! {
    /// The condition types a ForgeApp reports. `Synced`: whether the app was read from the
    /// platform the last time it was asked.
    pub enum Type { Ready, Synced, Reconciling, Stalled }
}

crate::named! {
    /// Every reason a ForgeApp condition can give.
    pub enum Reason {
        Ready,
        Synced,
        Refreshing,
        InstallationsExist,
        BadCredentials,
        /// The default credentials are not granted to this namespace, or the operator may not read
        /// the named Secret.
        CredentialsNotGranted,
        /// Another ForgeApp owns the appId.
        Conflict,
        AppNotFound,
        EnvironmentNotFound,
        PlatformUnavailable,
        AsExpected,
    }
}

crate::summarized!(Type, Reason);

type Decided = conditions::Decided<Type, Reason>;

/// One Installation of the app, as the ForgeApp rules need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallationSummary {
    pub environment: String,
    pub installed: Option<Version>,
}

/// What the platform said about the app this time.
#[derive(Clone, Debug, PartialEq)]
pub enum Observation {
    /// Not read this time (not due): what was known stays.
    NotRead,
    /// Read: the account, and each managed environment's versions (none: no such environment).
    Read { account: AccountStatus, environments: Vec<(String, Option<Vec<AppVersion>>)> },
    /// The platform could not be read (`BadCredentials`, `CredentialsNotGranted`, `AppNotFound`,
    /// `PlatformUnavailable`), or was not read because another ForgeApp owns the app (`Conflict`).
    Failed { reason: Reason, message: String },
}

/// The platform's versions of an environment as the status reports them, oldest first. The major
/// and minor are the first two components of the version string; the products are as the
/// platform names them (see [`compatibility`]).
pub fn app_versions(infos: &[VersionInfo], counts: &[crate::platform::VersionCount]) -> Vec<AppVersion> {
    let mut out: Vec<AppVersion> = infos
        .iter()
        .filter_map(|v| {
            let Version { major, minor } = Version::parse(&v.version)?;
            let products: Vec<Product> = v.required_products.iter().filter_map(|p| parse_product(p)).collect();
            let mut egress: Vec<String> = v.egress.iter().flat_map(|e| e.addresses.iter().cloned()).collect();
            egress.sort();
            egress.dedup();
            Some(AppVersion {
                major,
                minor,
                version: Some(v.version.clone()),
                id: (!v.id.is_empty()).then(|| v.id.clone()),
                created_at: v.created_at.clone(),
                latest: v.is_latest,
                scopes: v.scopes.clone(),
                egress,
                egress_permissions: v
                    .egress
                    .iter()
                    .flat_map(|e| {
                        e.addresses.iter().map(|a| crate::api::EgressPermission {
                            address: a.clone(),
                            type_: e.type_.clone(),
                            category: e.category.clone(),
                            in_scope_eud: e.in_scope_eud,
                        })
                    })
                    .collect(),
                remotes: v.remotes.clone(),
                security_policies: v.security_policies.clone(),
                sql_module: v.sql_module,
                licensing: v.requires_license,
                compatibility: compatibility(products, &v.module_products),
                installations: counts
                    .iter()
                    .find(|c| c.version == v.version || (!v.id.is_empty() && c.id == v.id))
                    .map(|c| c.installations as i64),
            })
        })
        .collect();
    out.sort_by_key(|v| (Version::of(v), v.version.clone()));
    // Every environment starts with a skeleton 1.1.0 made when the app or environment was
    // created; the CLI treats it as "no deployments" (`NO_DEPLOYMENTS_VERSION`), and so does
    // forgeops: it is never installed, upgraded to or offered.
    if out.first().is_some_and(|v| v.version.as_deref() == Some(SKELETON_VERSION)) {
        out.remove(0);
    }
    out
}

/// The products cross-product apps may be installed into (`supportedByCrossProductApps` in
/// `@forge/cli-shared` 13.3.0's supported-products service).
pub const CROSS_PRODUCT: [Product; 3] = [Product::Jira, Product::Confluence, Product::Compass];

/// A version's products as the platform states them: `requiredProducts` non-empty is a
/// cross-product app, which may also go into the other cross-product products; empty is a
/// single-app app, whose product is its modules'.
fn compatibility(required: Vec<Product>, module_products: &[String]) -> Compatibility {
    let mut required_products = Vec::new();
    for p in required {
        if !required_products.contains(&p) {
            required_products.push(p);
        }
    }
    let optional = if required_products.is_empty() {
        let mut modules: Vec<Product> = module_products.iter().filter_map(|p| parse_product(p)).collect();
        modules.dedup();
        modules
    } else {
        CROSS_PRODUCT.into_iter().filter(|p| !required_products.contains(p)).collect()
    };
    Compatibility { required_products, optional }
}

/// The version the platform gives every new environment before anything is deployed to it.
pub const SKELETON_VERSION: &str = "1.1.0";

fn parse_product(p: &str) -> Option<Product> {
    serde_json::from_value(serde_json::Value::String(p.to_ascii_lowercase().replace('_', "-"))).ok()
}

fn environment_status(
    name: &str,
    deployed: Vec<AppVersion>,
    installations: &[InstallationSummary],
) -> EnvironmentStatus {
    let mut counts: std::collections::BTreeMap<Version, i64> = Default::default();
    for v in installations.iter().filter(|i| i.environment == name).filter_map(|i| i.installed) {
        *counts.entry(v).or_default() += 1;
    }
    let majors = versions::by_major(&deployed)
        .into_iter()
        .map(|(major, group)| MajorStatus {
            major,
            latest_minor: group.last().map(|v| v.minor).unwrap_or_default(),
            installations: group.iter().map(|v| v.installations).sum(),
        })
        .collect();
    EnvironmentStatus {
        name: name.to_string(),
        latest_version: versions::latest(&deployed).map(|v| Version::of(v).to_string()),
        majors,
        installed_versions: counts
            .into_iter()
            .map(|(version, installations)| VersionCount { version: version.to_string(), installations })
            .collect(),
        versions: deployed,
    }
}

/// Why the app's installations hold it: it is being deleted, or an environment they use is no
/// longer managed.
fn installations_hold(app: &ForgeApp, installations: &[InstallationSummary]) -> Option<String> {
    if app.metadata.deletion_timestamp.is_some() && !installations.is_empty() {
        return Some(format!(
            "{} installation(s) still use this app: delete them first (each is uninstalled from its site, or \
             orphaned, as its deletionPolicy says); the app is deleted after them",
            installations.len()
        ));
    }
    let mut orphaned: std::collections::BTreeMap<&str, usize> = Default::default();
    for i in installations {
        if !app.spec.environments.contains(&i.environment) {
            *orphaned.entry(i.environment.as_str()).or_default() += 1;
        }
    }
    if orphaned.is_empty() {
        return None;
    }
    let listed: Vec<String> = orphaned
        .iter()
        .map(|(env, n)| format!("environment {env} is not in spec.environments but {n} installation(s) use it"))
        .collect();
    Some(format!("{}: delete those installations or add the environment back", listed.join("; ")))
}

/// The `Synced` condition: the outcome of the last platform read (carried over when not read).
fn decide_synced(
    app: &ForgeApp,
    previous: Option<&ForgeAppStatus>,
    observation: &Observation,
    environments: &[EnvironmentStatus],
) -> Decided {
    match observation {
        Observation::NotRead => match previous.and_then(|s| conditions::read(&s.conditions, Type::Synced)) {
            Some((status, Some(reason), message)) => Decided::new(Type::Synced, status, reason, message),
            _ => Decided::new(Type::Synced, false, Reason::Refreshing, "reading the app from the platform"),
        },
        Observation::Failed { reason, message } => {
            let kept = if environments.iter().any(|e| !e.versions.is_empty()) {
                "; the versions last read are kept"
            } else {
                ""
            };
            Decided::new(Type::Synced, false, *reason, format!("{message}{kept}"))
        }
        Observation::Read { account, environments: read } => {
            let missing: Vec<&str> = read.iter().filter(|(_, v)| v.is_none()).map(|(n, _)| n.as_str()).collect();
            if !missing.is_empty() {
                return Decided::new(
                    Type::Synced,
                    false,
                    Reason::EnvironmentNotFound,
                    format!(
                        "app {} has no environment {} on the platform: create it (`forge environments create`) and \
                         deploy to it (`forge deploy -e <name>`), or remove it from spec.environments",
                        app.spec.app_id,
                        missing.join(", ")
                    ),
                );
            }
            let deployed: usize = read.iter().filter_map(|(_, v)| v.as_ref()).map(Vec::len).sum();
            Decided::new(
                Type::Synced,
                true,
                Reason::Synced,
                format!("{} environment(s), {deployed} deployed version(s), read as {}", read.len(), account.name),
            )
        }
    }
}

/// Where the app stands: held by its installations (waiting for them to go), read, being read
/// (or retried), or stalled on what only a change by the user fixes.
fn outcome(held: Option<String>, synced: &Decided) -> Outcome<Reason> {
    match (held, synced.reason) {
        (Some(message), _) => Outcome::Waiting(Reason::InstallationsExist, message),
        _ if synced.status => Outcome::Done(Reason::Ready, synced.message.clone()),
        (
            None,
            Reason::BadCredentials
            | Reason::CredentialsNotGranted
            | Reason::Conflict
            | Reason::AppNotFound
            | Reason::EnvironmentNotFound,
        ) => Outcome::Stalled(synced.reason, synced.message.clone()),
        (None, Reason::PlatformUnavailable) => Outcome::Retrying(synced.reason, synced.message.clone()),
        (None, reason) => Outcome::InProgress(reason, synced.message.clone()),
    }
}

/// The whole status the operator should report for an app, given what it reported before and
/// what the platform said this time.
pub fn desired_status(
    app: &ForgeApp,
    previous: Option<&ForgeAppStatus>,
    observation: &Observation,
    installations: &[InstallationSummary],
    now: &Time,
) -> ForgeAppStatus {
    let last_known = |name: &str| {
        previous
            .and_then(|s| s.environments.iter().find(|e| e.name == name))
            .map(|e| e.versions.clone())
            .unwrap_or_default()
    };
    let environments: Vec<EnvironmentStatus> = app
        .spec
        .environments
        .iter()
        .map(|name| {
            let deployed = match observation {
                Observation::Read { environments, .. } => environments
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone().unwrap_or_default())
                    .unwrap_or_default(),
                _ => last_known(name),
            };
            environment_status(name, deployed, installations)
        })
        .collect();
    let account = match observation {
        Observation::Read { account, .. } => Some(account.clone()),
        _ => previous.and_then(|s| s.account.clone()),
    };
    let synced = decide_synced(app, previous, observation, &environments);
    let outcome = outcome(installations_hold(app, installations), &synced);
    let [ready, reconciling, stalled] = conditions::summary(&outcome, None);
    let previous_conditions = previous.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let observed_refresh = match observation {
        Observation::NotRead => previous.and_then(|s| s.observed_refresh.clone()),
        _ => app.metadata.annotations.as_ref().and_then(|a| a.get(crate::api::REFRESH_ANNOTATION)).cloned(),
    };
    ForgeAppStatus {
        observed_generation: app.metadata.generation,
        conditions: conditions::merge(
            previous_conditions,
            &[ready, synced, reconciling, stalled],
            app.metadata.generation,
            now,
        ),
        account,
        environments,
        installations: Some(installations.len() as i64),
        observed_refresh,
    }
}

/// While the platform rolls a minor out (some installations still run an older minor of a major
/// whose newer minor is deployed), the app is read at least this often, so each Installation shows
/// the minor soon after its site gets it.
pub const MINOR_ROLLOUT_LOOK: Duration = Duration::from_secs(30);

/// Whether a minor is being rolled out on the platform, from the installation counts per version.
pub fn minor_rolling_out(app: &ForgeApp) -> bool {
    let Some(status) = app.status.as_ref() else { return false };
    status.environments.iter().any(|e| {
        e.versions.iter().any(|v| {
            v.installations.is_some_and(|n| n > 0) && e.versions.iter().any(|w| w.major == v.major && w.minor > v.minor)
        })
    })
}

/// The refresh interval in force: `spec.refreshInterval`, or [`MINOR_ROLLOUT_LOOK`] while a minor
/// rolls out.
pub fn refresh_interval(app: &ForgeApp) -> Duration {
    let interval = app.refresh_interval();
    if minor_rolling_out(app) { interval.min(MINOR_ROLLOUT_LOOK) } else { interval }
}

/// Whether the app should be read from the platform now: never read, spec changed, refresh asked
/// for (a new annotation value), or the last read is older than the interval.
pub fn refresh_due(app: &ForgeApp, since_last_read: Option<std::time::Duration>) -> bool {
    let Some(status) = app.status.as_ref() else { return true };
    let asked = app.metadata.annotations.as_ref().and_then(|a| a.get(crate::api::REFRESH_ANNOTATION));
    status.account.is_none()
        || status.observed_generation != app.metadata.generation
        || asked.is_some() && asked != status.observed_refresh.as_ref()
        || since_last_read.is_none_or(|d| d >= refresh_interval(app))
}

/// How soon to read the app again: sooner after a transient failure or refused credentials (the
/// Secret is not watched; while it holds the refused ones a look costs no platform request),
/// later after another refusal, else when the interval since the last read is up.
pub fn next_look(observation: &Observation, interval: Duration, since_read: Option<Duration>) -> Duration {
    match observation {
        Observation::Failed { reason: Reason::PlatformUnavailable | Reason::BadCredentials, .. } => {
            interval.min(RETRY_SOON)
        }
        Observation::Failed { .. } => interval.min(RETRY_LATER),
        _ => interval.saturating_sub(since_read.unwrap_or_default()).max(RETRY_MIN),
    }
}

const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_SOON: Duration = Duration::from_secs(15);
const RETRY_LATER: Duration = Duration::from_secs(60);

/// A change of the app's readiness, to tell in an Event (a Warning when it is not ready).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadyChange {
    pub ready: bool,
    pub reason: Reason,
    pub message: String,
}

/// Whether `Ready` changed status or reason from `previous` to `desired`.
pub fn ready_change(previous: Option<&ForgeAppStatus>, desired: &ForgeAppStatus) -> Option<ReadyChange> {
    let before = previous.and_then(|s| conditions::read::<Reason>(&s.conditions, Type::Ready));
    let (ready, reason, message) = conditions::read::<Reason>(&desired.conditions, Type::Ready)?;
    let reason = reason?;
    if before.is_some_and(|(was, r, _)| was == ready && r == Some(reason)) {
        return None;
    }
    Some(ReadyChange { ready, reason, message: message.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::Egress;

    fn now() -> Time {
        Time(jiff::Timestamp::from_second(1_000).unwrap())
    }

    fn account() -> AccountStatus {
        AccountStatus { account_id: "712020:dev".into(), name: "Dev".into() }
    }

    fn read(envs: Vec<(&str, Option<Vec<AppVersion>>)>) -> Observation {
        Observation::Read {
            account: account(),
            environments: envs.into_iter().map(|(n, v)| (n.to_string(), v)).collect(),
        }
    }

    fn reason(status: &ForgeAppStatus, type_: Type) -> (String, String) {
        let c = conditions::find(&status.conditions, type_).unwrap();
        (c.status.to_string(), c.reason.to_string())
    }

    #[test]
    fn platform_versions_become_app_versions_oldest_first_with_counts() {
        let info = |v: &str, id: &str, scopes: &[&str], products: &[&str]| VersionInfo {
            id: id.into(),
            version: v.into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            required_products: products.iter().map(|s| s.to_string()).collect(),
            egress: vec![Egress { addresses: vec!["b.example".into(), "a.example".into()], ..Default::default() }],
            ..Default::default()
        };
        let infos = [info("2.1.0", "v21", &["write"], &["confluence"]), info("1.0.0", "v10", &["read"], &[])];
        let counts = [crate::platform::VersionCount { id: "v10".into(), version: "1.0.0".into(), installations: 7 }];
        let versions = app_versions(&infos, &counts);
        assert_eq!(versions.iter().map(|v| (v.major, v.minor)).collect::<Vec<_>>(), [(1, 0), (2, 1)]);
        assert_eq!(versions[0].installations, Some(7));
        assert_eq!(versions[1].installations, None);
        // Required products: a cross-product app, which may also go into the other cross-product
        // products. None named: a single-app app, whose product comes from its modules.
        assert_eq!(versions[1].compatibility.required_products, [Product::Confluence]);
        assert_eq!(versions[1].compatibility.optional, [Product::Jira, Product::Compass]);
        assert!(versions[0].compatibility.required_products.is_empty(), "none named: not made up");
        assert!(versions[0].compatibility.optional.is_empty(), "no modules read: no product known");
        assert_eq!(versions[0].egress, ["a.example", "b.example"]);
        assert_eq!(versions[1].version.as_deref(), Some("2.1.0"));
    }

    #[test]
    fn a_single_app_apps_product_is_its_modules() {
        let info = VersionInfo {
            version: "2.0.0".into(),
            module_products: vec!["confluence".into(), "sql".into()],
            ..Default::default()
        };
        let versions = app_versions(&[info], &[]);
        assert!(versions[0].compatibility.required_products.is_empty());
        assert_eq!(versions[0].compatibility.optional, [Product::Confluence], "`sql` is no product");
        let both = VersionInfo {
            version: "2.0.0".into(),
            required_products: vec!["JIRA".into(), "confluence".into(), "jira".into()],
            ..Default::default()
        };
        let versions = app_versions(&[both], &[]);
        assert_eq!(versions[0].compatibility.required_products, [Product::Jira, Product::Confluence]);
        assert_eq!(versions[0].compatibility.optional, [Product::Compass]);
    }

    #[test]
    fn an_environments_skeleton_is_not_a_deployment() {
        let info = |v: &str| VersionInfo { id: format!("id-{v}"), version: v.into(), ..Default::default() };
        assert!(app_versions(&[info(SKELETON_VERSION)], &[]).is_empty(), "only the skeleton: nothing deployed");
        let versions = app_versions(&[info("2.0.0"), info(SKELETON_VERSION)], &[]);
        assert_eq!(versions.iter().map(|v| (v.major, v.minor)).collect::<Vec<_>>(), [(2, 0)]);
        // A 1.1 after an older version is a deployment like any other.
        let versions = app_versions(&[info("1.0.0"), info(SKELETON_VERSION)], &[]);
        assert_eq!(versions.iter().map(|v| (v.major, v.minor)).collect::<Vec<_>>(), [(1, 0), (1, 1)]);
    }

    #[test]
    fn a_read_app_is_ready_with_latest_versions_and_the_account() {
        let a = ForgeApp::test("demo").environments(["production", "development"]).generation(4);
        let obs = read(vec![
            (
                "production",
                Some(vec![
                    AppVersion::test(1, 0).scopes(["read:jira-work"]),
                    AppVersion::test(2, 0).scopes(["read:jira-work", "write:jira-work"]),
                    AppVersion::test(2, 3).scopes(["read:jira-work", "write:jira-work"]),
                ]),
            ),
            ("development", Some(vec![])),
        ]);
        let status = desired_status(&a, None, &obs, &[], &now());
        assert_eq!(status.observed_generation, Some(4));
        assert_eq!(reason(&status, Type::Ready), ("True".into(), Reason::Ready.as_str().into()));
        assert_eq!(reason(&status, Type::Reconciling).0, "False");
        assert_eq!(reason(&status, Type::Stalled).0, "False");
        assert_eq!(status.account, Some(account()));
        let prod = &status.environments[0];
        assert_eq!(prod.latest_version.as_deref(), Some("2.3"));
        assert_eq!(
            prod.majors,
            vec![
                MajorStatus { major: 1, latest_minor: 0, installations: None },
                MajorStatus { major: 2, latest_minor: 3, installations: None },
            ]
        );
        assert_eq!(prod.versions.len(), 3);
        assert_eq!(status.environments[1].latest_version, None);
        assert_eq!(a.deployed("production").len(), 0, "deployed() reads the app's status");
    }

    #[test]
    fn failures_say_what_to_fix_and_keep_the_last_known_versions() {
        let mut a = ForgeApp::test("demo").generation(4);
        let first =
            desired_status(&a, None, &read(vec![("production", Some(vec![AppVersion::test(1, 0)]))]), &[], &now());
        a.status = Some(first.clone());
        assert_eq!(a.deployed("production").len(), 1);

        let failed = Observation::Failed { reason: Reason::PlatformUnavailable, message: "no answer".into() };
        let status = desired_status(&a, Some(&first), &failed, &[], &now());
        assert_eq!(reason(&status, Type::Ready), ("False".into(), Reason::PlatformUnavailable.as_str().into()));
        assert_eq!(reason(&status, Type::Reconciling), ("True".into(), Reason::PlatformUnavailable.as_str().into()));
        assert_eq!(reason(&status, Type::Stalled).0, "False", "the platform coming back fixes it");
        assert_eq!(status.environments, first.environments, "last known versions kept");
        assert!(conditions::find(&status.conditions, Type::Ready).unwrap().message.contains("last read are kept"));

        let bad = Observation::Failed { reason: Reason::BadCredentials, message: "refused".into() };
        let status = desired_status(&a, Some(&first), &bad, &[], &now());
        assert_eq!(reason(&status, Type::Stalled), ("True".into(), Reason::BadCredentials.as_str().into()));
        assert_eq!(reason(&status, Type::Reconciling).0, "False");

        let missing = read(vec![("production", None)]);
        let status = desired_status(&a, Some(&first), &missing, &[], &now());
        assert_eq!(reason(&status, Type::Ready), ("False".into(), Reason::EnvironmentNotFound.as_str().into()));
        let message = &conditions::find(&status.conditions, Type::Ready).unwrap().message;
        assert!(message.contains("spec.environments") && message.contains("forge deploy"), "{message}");
    }

    #[test]
    fn not_reading_carries_the_last_outcome_over() {
        let a = ForgeApp::test("demo").generation(4);
        let first =
            desired_status(&a, None, &read(vec![("production", Some(vec![AppVersion::test(1, 0)]))]), &[], &now());
        let later = Time(jiff::Timestamp::from_second(5_000).unwrap());
        assert_eq!(desired_status(&a, Some(&first), &Observation::NotRead, &[], &later), first, "no write");
        let never = desired_status(&a, None, &Observation::NotRead, &[], &now());
        assert_eq!(reason(&never, Type::Reconciling), ("True".into(), Reason::Refreshing.as_str().into()));
    }

    #[test]
    fn a_minor_rolling_out_is_looked_at_every_half_minute() {
        let on = |n: i64| {
            let mut v = AppVersion::test(1, 0);
            v.installations = Some(n);
            ForgeApp::test("insights").read_as("dev").deploys(vec![v, AppVersion::test(1, 1), AppVersion::test(2, 0)])
        };
        assert!(minor_rolling_out(&on(3)), "three sites still on 1.0 while 1.1 is deployed");
        assert_eq!(refresh_interval(&on(3)), MINOR_ROLLOUT_LOOK);
        assert!(!minor_rolling_out(&on(0)), "every site on the newest minor of its major");
        assert_eq!(refresh_interval(&on(0)), Duration::from_secs(600));
    }

    #[test]
    fn the_next_look_is_sooner_after_a_failure_that_may_pass() {
        let interval = Duration::from_secs(600);
        let failed = |reason| Observation::Failed { reason, message: String::new() };
        assert_eq!(next_look(&failed(Reason::PlatformUnavailable), interval, None), RETRY_SOON);
        assert_eq!(next_look(&failed(Reason::BadCredentials), interval, None), RETRY_SOON);
        assert_eq!(next_look(&failed(Reason::AppNotFound), interval, None), RETRY_LATER);
        assert_eq!(next_look(&failed(Reason::AppNotFound), Duration::from_secs(5), None), Duration::from_secs(5));
        let read = Observation::NotRead;
        assert_eq!(next_look(&read, interval, Some(Duration::from_secs(100))), Duration::from_secs(500));
        assert_eq!(next_look(&read, interval, Some(Duration::from_secs(900))), RETRY_MIN);
    }

    #[test]
    fn readiness_changes_are_told_once() {
        let a = ForgeApp::test("demo").generation(4);
        let good = desired_status(&a, None, &read(vec![("production", Some(vec![]))]), &[], &now());
        let change = ready_change(None, &good).unwrap();
        assert_eq!((change.ready, change.reason), (true, Reason::Ready));
        assert_eq!(ready_change(Some(&good), &good), None, "no change");
        let bad = Observation::Failed { reason: Reason::BadCredentials, message: "refused".into() };
        let failed = desired_status(&a, Some(&good), &bad, &[], &now());
        let change = ready_change(Some(&good), &failed).unwrap();
        assert_eq!((change.ready, change.reason), (false, Reason::BadCredentials));
        assert!(change.message.contains("refused"), "{}", change.message);
    }

    #[test]
    fn installations_are_counted_per_version() {
        let a = ForgeApp::test("demo").generation(4);
        let on = |v: Option<Version>| InstallationSummary { environment: "production".into(), installed: v };
        let installs = [on(Some(Version { major: 1, minor: 1 })), on(Some(Version { major: 1, minor: 1 })), on(None)];
        let obs = read(vec![("production", Some(vec![AppVersion::test(1, 0), AppVersion::test(1, 1)]))]);
        let status = desired_status(&a, None, &obs, &installs, &now());
        assert_eq!(status.installations, Some(3));
        assert_eq!(
            status.environments[0].installed_versions,
            vec![VersionCount { version: "1.1".into(), installations: 2 }]
        );
    }

    #[test]
    fn installations_hold_a_deleted_app_and_an_unmanaged_environment() {
        let mut a = ForgeApp::test("demo").generation(4);
        let obs = read(vec![("production", Some(vec![AppVersion::test(1, 0)]))]);
        let staging = [InstallationSummary { environment: "staging".into(), installed: None }];
        let status = desired_status(&a, None, &obs, &staging, &now());
        assert_eq!(reason(&status, Type::Ready).1, Reason::InstallationsExist.as_str());
        let message = &conditions::find(&status.conditions, Type::Ready).unwrap().message;
        assert!(message.contains("environment staging is not in spec.environments but 1 installation(s)"), "{message}");
        a.metadata.deletion_timestamp = Some(now());
        let prod = [InstallationSummary { environment: "production".into(), installed: None }];
        let status = desired_status(&a, None, &obs, &prod, &now());
        assert_eq!(reason(&status, Type::Ready), ("False".into(), Reason::InstallationsExist.as_str().into()));
        assert_eq!(reason(&desired_status(&a, None, &obs, &[], &now()), Type::Ready).1, Reason::Ready.as_str());
    }

    #[test]
    fn a_refresh_is_due_when_never_read_asked_for_changed_or_old() {
        let mut a = ForgeApp::test("demo").generation(4);
        assert!(refresh_due(&a, None));
        let obs = read(vec![("production", Some(vec![]))]);
        a.status = Some(desired_status(&a, None, &obs, &[], &now()));
        let recent = Some(std::time::Duration::from_secs(10));
        assert!(!refresh_due(&a, recent));
        assert!(refresh_due(&a, Some(std::time::Duration::from_secs(601))), "the default interval is 10m");
        assert!(refresh_due(&a, None), "not read by this process yet");
        a.spec.refresh_interval = Some("5s".into());
        assert!(refresh_due(&a, recent));
        a.spec.refresh_interval = None;
        a.metadata.annotations = Some([(crate::api::REFRESH_ANNOTATION.to_string(), "deploy-42".to_string())].into());
        assert!(refresh_due(&a, recent), "asked for");
        a.status = Some(desired_status(&a, a.status.as_ref(), &obs, &[], &now()));
        assert!(!refresh_due(&a, recent), "answered");
        a.metadata.generation = Some(5);
        assert!(refresh_due(&a, recent), "spec changed");
    }
}
