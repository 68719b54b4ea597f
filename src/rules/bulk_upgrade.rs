//! The BulkUpgrade rules: eligibility (the platform upgrades without consent only when the upgrade
//! grants nothing new), which installations are in scope, and counts derived from the cluster.

use std::collections::BTreeSet;

use super::versions::{self, Version};
use crate::api::{
    BulkUpgradeOutcome, BulkUpgradeSpec, ForgeApp, IneligibleReason, Installation, MAX_RECORDED_FAILURES,
    UpgradeFailure,
};
use kube::ResourceExt;

pub const REASON_APP_NOT_FOUND: &str = "AppNotFound";
pub const REASON_MAJOR_NOT_DEPLOYED: &str = "MajorNotDeployed";
pub const REASON_NOT_NEWER: &str = "ToMajorNotNewer";
pub const REASON_ADDS_SCOPES: &str = "AddsScopes";
pub const REASON_ADDS_EGRESS: &str = "AddsEgress";
pub const REASON_LICENSING_CHANGED: &str = "LicensingChanged";

fn reason(reason: &str, detail: String) -> IneligibleReason {
    IneligibleReason { reason: reason.into(), detail }
}

fn added<'a>(from: &'a [String], to: &'a [String]) -> Vec<&'a str> {
    let have: BTreeSet<&str> = from.iter().map(String::as_str).collect();
    to.iter().map(String::as_str).filter(|s| !have.contains(s)).collect::<BTreeSet<_>>().into_iter().collect()
}

/// Every eligibility rule the upgrade fails, comparing the latest minor of `fromMajor` with the
/// latest minor of `toMajor` in the upgrade's environment. Empty means eligible.
pub fn eligibility(app: Option<&ForgeApp>, spec: &BulkUpgradeSpec) -> Vec<IneligibleReason> {
    let Some(app) = app else {
        return vec![reason(
            REASON_APP_NOT_FOUND,
            format!("ForgeApp {} does not exist in this namespace", spec.app_ref.name),
        )];
    };
    let deployed = app.deployed(&spec.environment);
    let mut out = Vec::new();
    if spec.to_major <= spec.from_major {
        out.push(reason(
            REASON_NOT_NEWER,
            format!("toMajor {} is not newer than fromMajor {}", spec.to_major, spec.from_major),
        ));
    }
    let from = versions::latest_of_major(deployed, spec.from_major);
    let to = versions::latest_of_major(deployed, spec.to_major);
    for (major, v) in [(spec.from_major, from), (spec.to_major, to)] {
        if v.is_none() {
            out.push(reason(
                REASON_MAJOR_NOT_DEPLOYED,
                format!("major {major} is not deployed in environment {}", spec.environment),
            ));
        }
    }
    let (Some(from), Some(to)) = (from, to) else { return out };
    let scopes = added(&from.scopes, &to.scopes);
    if !scopes.is_empty() {
        let detail = scopes.iter().map(|s| format!("adds scope {s}")).collect::<Vec<_>>().join(", ");
        out.push(reason(REASON_ADDS_SCOPES, detail));
    }
    let egress = added(&from.egress, &to.egress);
    if !egress.is_empty() {
        let detail = egress.iter().map(|e| format!("adds egress {e}")).collect::<Vec<_>>().join(", ");
        out.push(reason(REASON_ADDS_EGRESS, detail));
    }
    if from.licensing != to.licensing {
        let on_off = |b: bool| if b { "enabled" } else { "disabled" };
        out.push(reason(
            REASON_LICENSING_CHANGED,
            format!(
                "licensing is {} in {} but {} in {}",
                on_off(from.licensing),
                Version::of(from),
                on_off(to.licensing),
                Version::of(to)
            ),
        ));
    }
    out
}

/// Where each installation of the app environment stands with respect to one BulkUpgrade.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Census {
    /// Installations still to upgrade, in the order they will be taken (by name).
    pub pending: Vec<String>,
    pub upgraded: u32,
    pub failed: u32,
    pub skipped: u32,
    pub unprocessed: u32,
    /// The first failures, with the platform's message.
    pub failures: Vec<UpgradeFailure>,
}

impl Census {
    pub fn total(&self) -> u32 {
        self.upgraded + self.failed + self.pending.len() as u32
    }
}

/// Counts the installations of `spec`'s app environment for the BulkUpgrade with `uid`, from their
/// status alone, so the counts are right after any restart.
pub fn census(uid: &str, spec: &BulkUpgradeSpec, installations: &[Installation]) -> Census {
    let mut census = Census::default();
    let mut candidates = Vec::new();
    let mut sorted: Vec<&Installation> = installations
        .iter()
        .filter(|i| i.spec.app_ref == spec.app_ref && i.spec.environment == spec.environment)
        .collect();
    sorted.sort_by_key(|i| i.name_any());
    for inst in sorted {
        let status = inst.status.clone().unwrap_or_default();
        match status.bulk_upgrade.as_ref().filter(|r| r.uid == uid) {
            Some(record) if record.outcome == BulkUpgradeOutcome::Upgraded => census.upgraded += 1,
            Some(record) => {
                census.failed += 1;
                if census.failures.len() < MAX_RECORDED_FAILURES {
                    census.failures.push(UpgradeFailure {
                        installation: inst.name_any(),
                        site: inst.spec.site.clone(),
                        message: record.message.clone().unwrap_or_default(),
                    });
                }
            }
            None if status.installed_major == Some(spec.from_major) && inst.metadata.deletion_timestamp.is_none() => {
                if inst.spec.major_version.is_some_and(|m| m != spec.to_major) {
                    census.skipped += 1;
                } else {
                    candidates.push(inst.name_any());
                }
            }
            None => {}
        }
    }
    let room = spec.limit.map(|l| l.saturating_sub(census.upgraded + census.failed) as usize).unwrap_or(usize::MAX);
    census.unprocessed = candidates.len().saturating_sub(room) as u32;
    candidates.truncate(room);
    census.pending = candidates;
    census
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AppRef, AppVersion, BulkUpgradeRecord, InstallationSpec, InstallationStatus, Product};
    use crate::rules::distribution::tests::{app_with, v};

    fn spec(from: u32, to: u32) -> BulkUpgradeSpec {
        BulkUpgradeSpec {
            app_ref: AppRef { name: "insights".into() },
            environment: "production".into(),
            from_major: from,
            to_major: to,
            max_concurrent: 10,
            max_failures: None,
            limit: None,
            paused: false,
            cancelled: false,
            ttl_seconds_after_finished: None,
        }
    }

    fn reasons(r: &[IneligibleReason]) -> Vec<&str> {
        r.iter().map(|r| r.reason.as_str()).collect()
    }

    fn with(scopes: &[&str], egress: &[&str], sql: bool, licensing: bool, major: u32, minor: u32) -> AppVersion {
        let mut out = v(major, minor, scopes, Product::Jira, &[]);
        out.egress = egress.iter().map(|e| e.to_string()).collect();
        out.sql_module = sql;
        out.licensing = licensing;
        out
    }

    #[test]
    fn the_same_permissions_are_eligible() {
        let app = app_with(vec![
            with(&["read"], &["a.example"], false, false, 1, 0),
            with(&["read"], &["a.example"], false, false, 2, 0),
        ]);
        assert!(eligibility(Some(&app), &spec(1, 2)).is_empty());
    }

    #[test]
    fn removing_scopes_or_egress_and_adding_sql_are_eligible() {
        let app = app_with(vec![
            with(&["read", "write"], &["a.example"], false, false, 1, 0),
            with(&["read"], &[], true, false, 2, 0),
        ]);
        assert!(eligibility(Some(&app), &spec(1, 2)).is_empty());
    }

    #[test]
    fn each_rule_alone() {
        let base = with(&["read"], &["a.example"], false, false, 1, 0);
        let scope = app_with(vec![
            base.clone(),
            with(&["read", "write:confluence-content"], &["a.example"], false, false, 2, 0),
        ]);
        let r = eligibility(Some(&scope), &spec(1, 2));
        assert_eq!(reasons(&r), vec![REASON_ADDS_SCOPES]);
        assert_eq!(r[0].detail, "adds scope write:confluence-content");
        let egress = app_with(vec![base.clone(), with(&["read"], &["a.example", "b.example"], false, false, 2, 0)]);
        let r = eligibility(Some(&egress), &spec(1, 2));
        assert_eq!((reasons(&r), r[0].detail.as_str()), (vec![REASON_ADDS_EGRESS], "adds egress b.example"));
        let licensing = app_with(vec![base.clone(), with(&["read"], &["a.example"], false, true, 2, 0)]);
        assert_eq!(reasons(&eligibility(Some(&licensing), &spec(1, 2))), vec![REASON_LICENSING_CHANGED]);
        let unlicensing =
            app_with(vec![with(&["read"], &[], false, true, 1, 0), with(&["read"], &[], false, false, 2, 0)]);
        assert_eq!(reasons(&eligibility(Some(&unlicensing), &spec(1, 2))), vec![REASON_LICENSING_CHANGED]);
        let only_one = app_with(vec![base]);
        let r = eligibility(Some(&only_one), &spec(1, 2));
        assert_eq!(
            (reasons(&r), r[0].detail.as_str()),
            (vec![REASON_MAJOR_NOT_DEPLOYED], "major 2 is not deployed in environment production")
        );
        assert_eq!(reasons(&eligibility(None, &spec(1, 2))), vec![REASON_APP_NOT_FOUND]);
        assert_eq!(reasons(&eligibility(Some(&scope), &spec(2, 2))), vec![REASON_NOT_NEWER]);
    }

    #[test]
    fn combinations_list_every_failed_rule() {
        let app = app_with(vec![
            with(&["read"], &["a.example"], false, false, 1, 0),
            with(&["read", "write", "admin"], &["b.example"], true, true, 3, 0),
        ]);
        let r = eligibility(Some(&app), &spec(1, 3));
        assert_eq!(reasons(&r), vec![REASON_ADDS_SCOPES, REASON_ADDS_EGRESS, REASON_LICENSING_CHANGED]);
        assert_eq!(r[0].detail, "adds scope admin, adds scope write");
        let r = eligibility(Some(&app), &spec(1, 2));
        assert_eq!(reasons(&r), vec![REASON_MAJOR_NOT_DEPLOYED]);
    }

    #[test]
    fn the_latest_minors_are_compared() {
        // 2.0 added a scope, 2.1 dropped it again: the upgrade is eligible once 2.1 is deployed.
        let mut versions =
            vec![with(&["read"], &[], false, false, 1, 0), with(&["read", "write"], &[], false, false, 2, 0)];
        assert_eq!(reasons(&eligibility(Some(&app_with(versions.clone())), &spec(1, 2))), vec![REASON_ADDS_SCOPES]);
        versions.push(with(&["read"], &[], false, false, 2, 1));
        assert!(eligibility(Some(&app_with(versions)), &spec(1, 2)).is_empty());
    }

    fn inst(name: &str, major: Option<u32>, pinned: Option<u32>, record: Option<BulkUpgradeOutcome>) -> Installation {
        let mut i = Installation::new(
            name,
            InstallationSpec {
                app_ref: AppRef { name: "insights".into() },
                environment: "production".into(),
                site: format!("{name}.example"),
                products: vec![Product::Jira],
                deletion_policy: Default::default(),
                major_version: pinned,
                approved_major: None,
            },
        );
        i.status = Some(InstallationStatus {
            installed_major: major,
            bulk_upgrade: record.map(|outcome| BulkUpgradeRecord {
                name: "bu".into(),
                uid: "uid-1".into(),
                outcome,
                message: Some("boom".into()),
            }),
            ..Default::default()
        });
        i
    }

    #[test]
    fn census_counts_from_installation_records() {
        let all = vec![
            inst("c", Some(1), None, None),
            inst("a", Some(1), None, None),
            inst("done", Some(2), None, Some(BulkUpgradeOutcome::Upgraded)),
            inst("broken", Some(1), None, Some(BulkUpgradeOutcome::Failed)),
            inst("pinned", Some(1), Some(1), None),
            inst("pinned-to-target", Some(1), Some(2), None),
            inst("other-major", Some(3), None, None),
            inst("not-installed", None, None, None),
        ];
        let c = census("uid-1", &spec(1, 2), &all);
        assert_eq!(c.pending, vec!["a", "c", "pinned-to-target"]);
        assert_eq!((c.upgraded, c.failed, c.skipped, c.unprocessed, c.total()), (1, 1, 1, 0, 5));
        assert_eq!(c.failures[0].message, "boom");
        let other = census("uid-2", &spec(1, 2), &all);
        assert_eq!(other.pending.len(), 4, "another upgrade's records are not ours");
    }

    #[test]
    fn limit_leaves_the_rest_unprocessed() {
        let all: Vec<Installation> = (0..5).map(|i| inst(&format!("i{i}"), Some(1), None, None)).collect();
        let mut s = spec(1, 2);
        s.limit = Some(2);
        let c = census("uid-1", &s, &all);
        assert_eq!((c.pending.len(), c.unprocessed, c.total()), (2, 3, 2));
        let mut after = all.clone();
        after[0] = inst("i0", Some(2), None, Some(BulkUpgradeOutcome::Upgraded));
        let c = census("uid-1", &s, &after);
        assert_eq!((c.pending, c.unprocessed, c.upgraded), (vec!["i1".to_string()], 3, 1));
    }
}

pub mod states {
    //! The conditions a BulkUpgrade reports in each state, following the kstatus conventions so
    //! that `kubectl wait --for=condition=Complete` and GitOps health checks work.

    use crate::api::BulkUpgradeState;
    use crate::rules::conditions::Decided;

    /// What is known beyond the state.
    pub struct Situation<'a> {
        /// The first failed eligibility rule and its detail.
        pub ineligible: Option<(&'a str, &'a str)>,
        /// Why admission waits, and for whom.
        pub waiting: Option<(&'a str, &'a str)>,
        pub summary: String,
    }

    pub fn conditions(state: BulkUpgradeState, s: &Situation) -> Vec<Decided> {
        use BulkUpgradeState::*;
        let summary = s.summary.clone();
        let eligible = match s.ineligible {
            Some((reason, detail)) => Decided::new("Eligible", false, reason, detail),
            None => Decided::new(
                "Eligible",
                true,
                "Eligible",
                "the target major adds no scope or egress and keeps licensing",
            ),
        };
        let (admitted, progressing, complete, ready, reconciling, stalled) = match state {
            Ineligible => {
                let (reason, detail) = s.ineligible.unwrap_or(("Ineligible", ""));
                (
                    (false, "Ineligible", "not admitted: the upgrade is ineligible".to_string()),
                    (false, "Ineligible", detail.to_string()),
                    (false, "Ineligible", detail.to_string()),
                    (false, reason, detail.to_string()),
                    (false, "Ineligible", "nothing to do until the app changes".to_string()),
                    (true, reason, detail.to_string()),
                )
            }
            Pending | Queued => {
                let (reason, whom) = s.waiting.unwrap_or(("Pending", ""));
                let waiting = format!("waiting for {whom}");
                (
                    (false, reason, waiting.clone()),
                    (false, "Queued", waiting.clone()),
                    (false, "Queued", waiting.clone()),
                    (false, "Queued", waiting.clone()),
                    (true, "Queued", waiting),
                    (false, "Queued", String::new()),
                )
            }
            Running => (
                (true, "Admitted", "holding the concurrency Leases".to_string()),
                (true, "Running", summary.clone()),
                (false, "Running", summary.clone()),
                (false, "Running", summary.clone()),
                (true, "Running", summary.clone()),
                (false, "Running", String::new()),
            ),
            Paused => (
                (true, "Admitted", "holding the concurrency Leases while paused".to_string()),
                (false, "Paused", summary.clone()),
                (false, "Paused", summary.clone()),
                (false, "Paused", summary.clone()),
                (false, "Paused", summary.clone()),
                (false, "Paused", String::new()),
            ),
            Complete => (
                (false, "Finished", "the Leases were released".to_string()),
                (false, "Complete", summary.clone()),
                (true, "Complete", summary.clone()),
                (true, "Complete", summary.clone()),
                (false, "Complete", summary.clone()),
                (false, "Complete", String::new()),
            ),
            Cancelled => (
                (false, "Finished", "the Leases were released".to_string()),
                (false, "Cancelled", summary.clone()),
                (false, "Cancelled", summary.clone()),
                (false, "Cancelled", summary.clone()),
                (false, "Cancelled", summary.clone()),
                (false, "Cancelled", String::new()),
            ),
            Failed => (
                (false, "Finished", "the Leases were released".to_string()),
                (false, "MaxFailuresExceeded", summary.clone()),
                (false, "MaxFailuresExceeded", summary.clone()),
                (false, "MaxFailuresExceeded", summary.clone()),
                (false, "MaxFailuresExceeded", summary.clone()),
                (true, "MaxFailuresExceeded", summary.clone()),
            ),
        };
        let d =
            |t: &'static str, (status, reason, message): (bool, &str, String)| Decided::new(t, status, reason, message);
        vec![
            eligible,
            d("Admitted", admitted),
            d("Progressing", progressing),
            d("Complete", complete),
            d("Ready", ready),
            d("Reconciling", reconciling),
            d("Stalled", stalled),
        ]
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn of(
            state: BulkUpgradeState,
            ineligible: Option<(&str, &str)>,
            waiting: Option<(&str, &str)>,
        ) -> Vec<(&'static str, bool, String)> {
            conditions(state, &Situation { ineligible, waiting, summary: "1/2 upgraded".into() })
                .into_iter()
                .map(|c| (c.type_, c.status, c.reason))
                .collect()
        }

        fn get(cs: &[(&'static str, bool, String)], t: &str) -> (bool, String) {
            cs.iter().find(|c| c.0 == t).map(|c| (c.1, c.2.clone())).unwrap()
        }

        #[test]
        fn kstatus_conventions_per_state() {
            let c = of(BulkUpgradeState::Ineligible, Some(("AddsScopes", "adds scope x")), None);
            assert_eq!(get(&c, "Eligible"), (false, "AddsScopes".into()));
            assert_eq!(get(&c, "Stalled"), (true, "AddsScopes".into()));
            let c = of(BulkUpgradeState::Queued, None, Some(("EnvironmentBusy", "ns/first")));
            assert_eq!(get(&c, "Admitted"), (false, "EnvironmentBusy".into()));
            assert_eq!(get(&c, "Reconciling"), (true, "Queued".into()));
            let c = of(BulkUpgradeState::Running, None, None);
            assert_eq!(get(&c, "Progressing"), (true, "Running".into()));
            assert!(get(&c, "Reconciling").0);
            let c = of(BulkUpgradeState::Complete, None, None);
            assert_eq!((get(&c, "Complete").0, get(&c, "Ready").0, get(&c, "Reconciling").0), (true, true, false));
            let c = of(BulkUpgradeState::Failed, None, None);
            assert_eq!(get(&c, "Stalled"), (true, "MaxFailuresExceeded".into()));
            assert!(!get(&c, "Complete").0);
        }
    }
}
