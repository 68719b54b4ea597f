//! The ForgeApp rules: latest versions per environment, and the platform rule that a permission or
//! licensing change always makes a new major version.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::conditions::{self, Decided};
use super::versions::{self, Version};
use crate::api::{AppVersion, EnvironmentStatus, ForgeApp, ForgeAppStatus, MajorStatus, VersionCount};

pub const READY: &str = "Ready";
pub const REASON_READY: &str = "Ready";
pub const REASON_PERMISSION_CHANGE_WITHOUT_MAJOR: &str = "PermissionChangeWithoutMajor";
pub const REASON_INSTALLATIONS_EXIST: &str = "InstallationsExist";

/// One Installation of the app, as the ForgeApp rules need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallationSummary {
    pub environment: String,
    pub installed: Option<Version>,
}

/// A minor version whose permissions differ from the first minor of its major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PermissionConflict {
    pub environment: String,
    pub base: Version,
    pub version: Version,
    /// What differs, for example `adds scope write:jira-work`.
    pub differences: Vec<String>,
}

impl std::fmt::Display for PermissionConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "environment {}: version {} {} compared with {}",
            self.environment,
            self.version,
            self.differences.join(", "),
            self.base
        )
    }
}

/// How `version` differs from `base` in scopes, egress and licensing.
pub fn permission_differences(base: &AppVersion, version: &AppVersion) -> Vec<String> {
    let mut out = Vec::new();
    set_differences("scope", &base.scopes, &version.scopes, &mut out);
    set_differences("egress", &base.egress, &version.egress, &mut out);
    if base.licensing != version.licensing {
        out.push(if version.licensing { "enables licensing" } else { "disables licensing" }.to_string());
    }
    out
}

fn set_differences(what: &str, base: &[String], version: &[String], out: &mut Vec<String>) {
    let base: BTreeSet<&str> = base.iter().map(String::as_str).collect();
    let version: BTreeSet<&str> = version.iter().map(String::as_str).collect();
    out.extend(version.difference(&base).map(|s| format!("adds {what} {s}")));
    out.extend(base.difference(&version).map(|s| format!("removes {what} {s}")));
}

/// Every minor version, in every environment, whose permissions differ from its major's first minor.
pub fn permission_conflicts(app: &ForgeApp) -> Vec<PermissionConflict> {
    let mut out = Vec::new();
    for env in &app.spec.environments {
        for group in versions::by_major(&env.versions).values() {
            let base = group[0];
            for v in &group[1..] {
                let differences = permission_differences(base, v);
                if !differences.is_empty() {
                    out.push(PermissionConflict {
                        environment: env.name.clone(),
                        base: Version::of(base),
                        version: Version::of(v),
                        differences,
                    });
                }
            }
        }
    }
    out
}

fn environment_status(
    name: &str,
    deployed: &[AppVersion],
    conflicts: &[PermissionConflict],
    installations: &[InstallationSummary],
) -> EnvironmentStatus {
    let mut counts: std::collections::BTreeMap<Version, i64> = Default::default();
    for v in installations.iter().filter(|i| i.environment == name).filter_map(|i| i.installed) {
        *counts.entry(v).or_default() += 1;
    }
    let majors = versions::by_major(deployed)
        .into_iter()
        .map(|(major, group)| MajorStatus {
            major,
            latest_minor: group.last().map(|v| v.minor).unwrap_or_default(),
            consistent: !conflicts.iter().any(|c| c.environment == name && c.version.major == major),
        })
        .collect();
    EnvironmentStatus {
        name: name.to_string(),
        latest_version: versions::latest(deployed).map(|v| Version::of(v).to_string()),
        majors,
        installed_versions: counts
            .into_iter()
            .map(|(version, installations)| VersionCount { version: version.to_string(), installations })
            .collect(),
    }
}

/// Why the app's installations hold it: it is being deleted, or an environment they use was removed.
fn installations_hold(app: &ForgeApp, installations: &[InstallationSummary]) -> Option<String> {
    if app.metadata.deletion_timestamp.is_some() && !installations.is_empty() {
        return Some(format!(
            "{} installation(s) still use this app: delete them first (each is uninstalled from its site); the app is deleted after them",
            installations.len()
        ));
    }
    let mut orphaned: std::collections::BTreeMap<&str, usize> = Default::default();
    for i in installations {
        if !app.spec.environments.iter().any(|e| e.name == i.environment) {
            *orphaned.entry(i.environment.as_str()).or_default() += 1;
        }
    }
    if orphaned.is_empty() {
        return None;
    }
    let listed: Vec<String> = orphaned
        .iter()
        .map(|(env, n)| format!("environment {env} was removed but {n} installation(s) still use it"))
        .collect();
    Some(format!("{}: delete those installations or restore the environment", listed.join("; ")))
}

/// The `Ready` condition the rules decide for an app.
pub fn decide_ready(
    app: &ForgeApp,
    conflicts: &[PermissionConflict],
    installations: &[InstallationSummary],
) -> Decided {
    if let Some(message) = installations_hold(app, installations) {
        return Decided::new(READY, false, REASON_INSTALLATIONS_EXIST, message);
    }
    if conflicts.is_empty() {
        let deployed: usize = app.spec.environments.iter().map(|e| e.versions.len()).sum();
        return Decided::new(
            READY,
            true,
            REASON_READY,
            format!(
                "{} environment(s), {deployed} deployed version(s), permissions consistent within every major",
                app.spec.environments.len()
            ),
        );
    }
    let listed: Vec<String> = conflicts.iter().map(ToString::to_string).collect();
    Decided::new(
        READY,
        false,
        REASON_PERMISSION_CHANGE_WITHOUT_MAJOR,
        format!(
            "{}. A scope, egress or licensing change must be deployed as a new major version; other versions remain usable",
            listed.join("; ")
        ),
    )
}

/// The whole status the operator should report for an app, given what it reported before.
pub fn desired_status(
    app: &ForgeApp,
    previous: Option<&ForgeAppStatus>,
    installations: &[InstallationSummary],
    now: &Time,
) -> ForgeAppStatus {
    let conflicts = permission_conflicts(app);
    let previous_conditions = previous.map(|s| s.conditions.as_slice()).unwrap_or_default();
    ForgeAppStatus {
        observed_generation: app.metadata.generation,
        conditions: conditions::merge(
            previous_conditions,
            &[decide_ready(app, &conflicts, installations)],
            app.metadata.generation,
            now,
        ),
        environments: app
            .spec
            .environments
            .iter()
            .map(|e| environment_status(&e.name, &e.versions, &conflicts, installations))
            .collect(),
        installations: Some(installations.len() as i64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Environment, ForgeAppSpec};
    use crate::rules::versions::tests::version;

    fn app(envs: Vec<(&str, Vec<AppVersion>)>) -> ForgeApp {
        let mut app = ForgeApp::new(
            "demo",
            ForgeAppSpec {
                credentials_secret_ref: None,
                app_id: "ari:cloud:ecosystem::app/demo".into(),
                developer_account: "dev@example.com".into(),
                listed_on_marketplace: false,
                environments: envs
                    .into_iter()
                    .map(|(name, versions)| Environment { name: name.into(), versions })
                    .collect(),
            },
        );
        app.metadata.generation = Some(4);
        app
    }

    fn now() -> Time {
        Time(jiff::Timestamp::from_second(1_000).unwrap())
    }

    #[test]
    fn consistent_app_is_ready_with_latest_versions() {
        let a = app(vec![
            (
                "production",
                vec![
                    version(1, 0, &["read:jira-work"]),
                    version(2, 0, &["read:jira-work", "write:jira-work"]),
                    version(2, 3, &["read:jira-work", "write:jira-work"]),
                ],
            ),
            ("development", vec![]),
        ]);
        let status = desired_status(&a, None, &[], &now());
        assert_eq!(status.observed_generation, Some(4));
        assert_eq!(status.conditions[0].status, "True");
        assert_eq!(status.conditions[0].reason, REASON_READY);
        assert_eq!(status.conditions[0].observed_generation, Some(4));
        let prod = &status.environments[0];
        assert_eq!(prod.latest_version.as_deref(), Some("2.3"));
        assert_eq!(
            prod.majors,
            vec![
                MajorStatus { major: 1, latest_minor: 0, consistent: true },
                MajorStatus { major: 2, latest_minor: 3, consistent: true },
            ]
        );
        assert_eq!(status.environments[1].latest_version, None);
        assert!(status.environments[1].majors.is_empty());
    }

    #[test]
    fn a_minor_that_adds_a_scope_is_a_permission_change_without_major() {
        let a = app(vec![(
            "production",
            vec![version(2, 0, &["read:jira-work"]), version(2, 1, &["read:jira-work", "write:jira-work"])],
        )]);
        let conflicts = permission_conflicts(&a);
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].differences, vec!["adds scope write:jira-work"]);
        let status = desired_status(&a, None, &[], &now());
        let ready = &status.conditions[0];
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", REASON_PERMISSION_CHANGE_WITHOUT_MAJOR));
        assert!(
            ready.message.contains("environment production: version 2.1 adds scope write:jira-work compared with 2.0"),
            "{}",
            ready.message
        );
        assert!(!status.environments[0].majors[0].consistent);
    }

    #[test]
    fn egress_removal_and_licensing_changes_are_reported() {
        let mut base = version(1, 0, &[]);
        base.egress = vec!["api.example.com".into()];
        let mut next = version(1, 1, &[]);
        next.licensing = true;
        assert_eq!(permission_differences(&base, &next), vec!["removes egress api.example.com", "enables licensing"]);
        let mut next = base.clone();
        next.minor = 2;
        next.sql_module = true;
        assert!(permission_differences(&base, &next).is_empty(), "the SQL module is not a permission");
    }

    #[test]
    fn same_permissions_in_another_order_are_consistent() {
        let a = app(vec![("production", vec![version(1, 0, &["a", "b"]), version(1, 1, &["b", "a"])])]);
        assert!(permission_conflicts(&a).is_empty());
    }

    #[test]
    fn conflicts_in_one_major_leave_other_majors_consistent() {
        let a = app(vec![(
            "staging",
            vec![version(1, 0, &["a"]), version(1, 1, &["a"]), version(2, 0, &["a"]), version(2, 1, &["b"])],
        )]);
        let status = desired_status(&a, None, &[], &now());
        let majors = &status.environments[0].majors;
        assert!(majors[0].consistent);
        assert!(!majors[1].consistent);
        let message = &status.conditions[0].message;
        assert!(
            message.contains("environment staging: version 2.1 adds scope b, removes scope a compared with 2.0"),
            "{message}"
        );
    }

    #[test]
    fn installations_are_counted_per_version() {
        let a = app(vec![("production", vec![version(1, 0, &[]), version(1, 1, &[])])]);
        let on = |v: Option<Version>| InstallationSummary { environment: "production".into(), installed: v };
        let installs = [on(Some(Version { major: 1, minor: 1 })), on(Some(Version { major: 1, minor: 1 })), on(None)];
        let status = desired_status(&a, None, &installs, &now());
        assert_eq!(status.installations, Some(3));
        assert_eq!(
            status.environments[0].installed_versions,
            vec![VersionCount { version: "1.1".into(), installations: 2 }]
        );
    }

    #[test]
    fn installations_hold_a_deleted_app_and_a_removed_environment() {
        let mut a = app(vec![("production", vec![version(1, 0, &[])])]);
        let staging = [InstallationSummary { environment: "staging".into(), installed: None }];
        let status = desired_status(&a, None, &staging, &now());
        assert_eq!(status.conditions[0].reason, REASON_INSTALLATIONS_EXIST);
        assert!(status.conditions[0].message.contains("environment staging was removed but 1 installation(s)"));
        a.metadata.deletion_timestamp = Some(now());
        let prod = [InstallationSummary { environment: "production".into(), installed: None }];
        let status = desired_status(&a, None, &prod, &now());
        assert_eq!(
            (status.conditions[0].status.as_str(), status.conditions[0].reason.as_str()),
            ("False", REASON_INSTALLATIONS_EXIST)
        );
        assert_eq!(desired_status(&a, None, &[], &now()).conditions[0].reason, REASON_READY);
    }

    #[test]
    fn an_unchanged_app_computes_an_identical_status() {
        let a = app(vec![("production", vec![version(1, 0, &[])])]);
        let first = desired_status(&a, None, &[], &now());
        let later = Time(jiff::Timestamp::from_second(5_000).unwrap());
        assert_eq!(desired_status(&a, Some(&first), &[], &later), first);
    }
}
