//! The Installation rules: whether a site may install, which version it gets, when minors roll out
//! and when a major upgrade needs the site admin's consent. A developer installs with the rights of
//! the app's account (as `forge install` does); sharing by link is for customers and the platform,
//! so no DistributionPolicy gates an Installation.

use std::collections::BTreeSet;

use super::conditions::Decided;
use super::versions::{self, Version};
use crate::api::{AppVersion, ForgeApp, Installation, Product};

pub const INSTALLED: &str = "Installed";
pub const UP_TO_DATE: &str = "UpToDate";
pub const READY: &str = "Ready";

pub const REASON_INSTALLED: &str = "Installed";
pub const REASON_INSTALLING: &str = "Installing";
pub const REASON_APP_NOT_FOUND: &str = "AppNotFound";
pub const REASON_NOT_DEPLOYED: &str = "NotDeployed";
pub const REASON_INCOMPATIBLE_PRODUCTS: &str = "IncompatibleProducts";
pub const REASON_ALREADY_INSTALLED: &str = "AlreadyInstalled";
pub const REASON_VERSION_NOT_DEPLOYED: &str = "VersionNotDeployed";
pub const REASON_UP_TO_DATE: &str = "UpToDate";
pub const REASON_UPGRADE_AVAILABLE: &str = "UpgradeAvailable";
pub const REASON_PERMISSIONS_OUTDATED: &str = "PermissionsOutdated";
pub const REASON_CONSENT_REQUIRED: &str = "ConsentRequired";
pub const REASON_DOWNGRADE_NOT_ALLOWED: &str = "DowngradeNotAllowed";
pub const REASON_PLATFORM_ERROR: &str = "PlatformError";
pub const REASON_READY: &str = "Ready";

/// Everything the rules look at besides the Installation itself.
#[derive(Clone, Debug, Default)]
pub struct Facts<'a> {
    pub app: Option<&'a ForgeApp>,
    /// An older Installation of the same app, environment and site.
    pub duplicate_of: Option<String>,
}

/// What to do on the platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Nothing,
    Install(Version),
    /// Move to a newer minor of the installed major, without consent.
    RollOutMinor(Version),
    /// Move to a newer major.
    UpgradeMajor(Version),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub step: Step,
    /// `Installed`, `UpToDate`, `Ready`.
    pub conditions: Vec<Decided>,
    pub available: Option<Version>,
}

/// What moving from `from` to `to` newly asks of the site admin: the scopes and egress domains
/// `to` requests that `from` does not, and licensing when `to` enables it.
pub fn added_permissions(from: Option<&AppVersion>, to: &AppVersion) -> Vec<String> {
    let mut added = added_scopes_and_egress(from, to);
    if to.licensing && !from.is_some_and(|f| f.licensing) {
        added.push("licensing (a paid app)".to_string());
    }
    added
}

fn added_scopes_and_egress(from: Option<&AppVersion>, to: &AppVersion) -> Vec<String> {
    let have: BTreeSet<(&str, &str)> = from
        .map(|f| {
            f.scopes
                .iter()
                .map(|s| ("scope", s.as_str()))
                .chain(f.egress.iter().map(|e| ("egress", e.as_str())))
                .collect()
        })
        .unwrap_or_default();
    to.scopes
        .iter()
        .map(|s| ("scope", s.as_str()))
        .chain(to.egress.iter().map(|e| ("egress", e.as_str())))
        .filter(|p| !have.contains(p))
        .map(|(kind, value)| format!("{kind} {value}"))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn same_permissions(a: &AppVersion, b: &AppVersion) -> bool {
    let set = |v: &[String]| v.iter().cloned().collect::<BTreeSet<_>>();
    set(&a.scopes) == set(&b.scopes) && set(&a.egress) == set(&b.egress) && a.licensing == b.licensing
}

fn not_installed(reason: &str, message: String, available: Option<Version>) -> Decision {
    Decision {
        step: Step::Nothing,
        conditions: vec![
            Decided::new(INSTALLED, false, reason, message.clone()),
            Decided::new(UP_TO_DATE, false, reason, "not installed".to_string()),
            Decided::new(READY, false, reason, message),
        ],
        available,
    }
}

/// Decides what to do for an Installation whose installed version is `installed` (from status).
pub fn decide(inst: &Installation, installed: Option<Version>, facts: &Facts) -> Decision {
    let spec = &inst.spec;
    let deployed: &[AppVersion] = facts.app.map(|a| a.deployed(&spec.environment)).unwrap_or_default();
    let newest = versions::latest(deployed);
    let available = newest.map(Version::of);
    match installed {
        None => decide_first_install(inst, facts, deployed, available),
        Some(current) => decide_installed(inst, current, deployed, available),
    }
}

fn decide_first_install(
    inst: &Installation,
    facts: &Facts,
    deployed: &[AppVersion],
    available: Option<Version>,
) -> Decision {
    let spec = &inst.spec;
    if facts.app.is_none() {
        let message = format!("ForgeApp {} does not exist in this namespace", spec.app_ref.name);
        return not_installed(REASON_APP_NOT_FOUND, message, None);
    }
    let Some(newest) = versions::latest(deployed) else {
        // Nothing known: say whether that is because the app cannot be read from the platform.
        let unread = facts.app.and_then(|a| a.status.as_ref()).and_then(|s| {
            crate::rules::conditions::find(&s.conditions, crate::rules::forge_app::SYNCED)
                .filter(|c| c.status != crate::api::TRUE)
        });
        let message = match unread {
            Some(c) => format!(
                "the versions of app {} are not known: ForgeApp {} says {} ({}); fix that first",
                spec.app_ref.name, spec.app_ref.name, c.reason, c.message
            ),
            None => format!(
                "app {} has no version deployed in environment {}: deploy one with `forge deploy -e {}`",
                spec.app_ref.name, spec.environment, spec.environment
            ),
        };
        return not_installed(REASON_NOT_DEPLOYED, message, None);
    };
    if let Some(first) = &facts.duplicate_of {
        let message = format!(
            "Installation {first} already installs app {} environment {} on {}",
            spec.app_ref.name, spec.environment, spec.site
        );
        return not_installed(REASON_ALREADY_INSTALLED, message, available);
    }
    let required: BTreeSet<Product> = BTreeSet::from([newest.compatibility.required]);
    let missing: Vec<String> = required.iter().filter(|p| !spec.products.contains(p)).map(|p| p.to_string()).collect();
    if !missing.is_empty() {
        let message = format!("spec.products must include {}: the app requires it", missing.join(", "));
        return not_installed(REASON_INCOMPATIBLE_PRODUCTS, message, available);
    }
    let target_major = spec.major_version.unwrap_or(newest.major);
    let Some(target) = versions::latest_of_major(deployed, target_major) else {
        let message = format!("major version {target_major} is not deployed in environment {}", spec.environment);
        return not_installed(REASON_VERSION_NOT_DEPLOYED, message, available);
    };
    let target = Version::of(target);
    Decision {
        step: Step::Install(target),
        conditions: vec![
            Decided::new(INSTALLED, false, REASON_INSTALLING, format!("installing version {target} on {}", spec.site)),
            Decided::new(UP_TO_DATE, false, REASON_INSTALLING, "not installed yet"),
            Decided::new(READY, false, REASON_INSTALLING, format!("installing version {target} on {}", spec.site)),
        ],
        available,
    }
}

fn decide_installed(
    inst: &Installation,
    current: Version,
    deployed: &[AppVersion],
    available: Option<Version>,
) -> Decision {
    let spec = &inst.spec;
    let installed_ok =
        Decided::new(INSTALLED, true, REASON_INSTALLED, format!("version {current} is installed on {}", spec.site));
    // The installed version's permissions; if it was withdrawn, its major's latest minor stands in.
    let current_version = deployed
        .iter()
        .find(|v| Version::of(v) == current)
        .or_else(|| versions::latest_of_major(deployed, current.major));
    // A newer minor of the installed major, offered only if it asks for nothing new.
    let minor = versions::latest_of_major(deployed, current.major)
        .filter(|m| Version::of(m) > current)
        .filter(|m| current_version.is_none_or(|c| same_permissions(c, m)))
        .map(Version::of);
    let minor_step = minor.map(Step::RollOutMinor).unwrap_or(Step::Nothing);
    let ready_ok = Decided::new(READY, true, REASON_READY, format!("version {current} is installed on {}", spec.site));
    let blocked = |step: Step, up_to_date: Decided, ready: Decided| Decision {
        step,
        conditions: vec![installed_ok.clone(), up_to_date, ready],
        available,
    };

    let desired_major = spec.major_version.unwrap_or(current.major);
    if desired_major < current.major {
        let message = format!(
            "spec.majorVersion {desired_major} is below the installed major {}: the platform cannot downgrade. Set \
             spec.majorVersion back to {} or more, or delete this Installation (deletionPolicy Uninstall) and create it \
             again with majorVersion {desired_major}",
            current.major, current.major
        );
        return blocked(minor_step, Decided::new(UP_TO_DATE, false, REASON_DOWNGRADE_NOT_ALLOWED, message), ready_ok);
    }
    if desired_major > current.major {
        let Some(target) = versions::latest_of_major(deployed, desired_major) else {
            let message = format!("major version {desired_major} is not deployed in environment {}", spec.environment);
            return blocked(
                minor_step,
                Decided::new(UP_TO_DATE, false, REASON_VERSION_NOT_DEPLOYED, message.clone()),
                Decided::new(READY, false, REASON_VERSION_NOT_DEPLOYED, message),
            );
        };
        let added = added_permissions(current_version, target);
        if added.is_empty() || spec.approved_major.is_some_and(|a| a >= desired_major) {
            let to = Version::of(target);
            return Decision {
                step: Step::UpgradeMajor(to),
                conditions: vec![
                    installed_ok.clone(),
                    Decided::new(
                        UP_TO_DATE,
                        false,
                        REASON_UPGRADE_AVAILABLE,
                        format!("upgrading from {current} to {to}"),
                    ),
                    ready_ok,
                ],
                available,
            };
        }
        let message = format!(
            "upgrading to major {desired_major} needs the site admin's consent for new permissions: {}. Set spec.approvedMajor to {desired_major} once they approve",
            added.join(", ")
        );
        return blocked(minor_step, Decided::new(UP_TO_DATE, false, REASON_CONSENT_REQUIRED, message), ready_ok);
    }
    if let Step::RollOutMinor(to) = minor_step {
        let up_to_date = Decided::new(UP_TO_DATE, false, REASON_UPGRADE_AVAILABLE, format!("rolling out {to}"));
        return blocked(minor_step, up_to_date, ready_ok);
    }
    let newest = versions::latest(deployed);
    let up_to_date = match newest {
        Some(n) if Version::of(n) > current => {
            let added = added_permissions(current_version, n);
            if added.is_empty() {
                Decided::new(
                    UP_TO_DATE,
                    false,
                    REASON_UPGRADE_AVAILABLE,
                    format!("version {} is available and needs no new permissions", Version::of(n)),
                )
            } else {
                Decided::new(
                    UP_TO_DATE,
                    false,
                    REASON_PERMISSIONS_OUTDATED,
                    format!("version {} is available and needs new permissions: {}", Version::of(n), added.join(", ")),
                )
            }
        }
        _ => Decided::new(
            UP_TO_DATE,
            true,
            REASON_UP_TO_DATE,
            format!("version {current} is the newest in {}", spec.environment),
        ),
    };
    blocked(Step::Nothing, up_to_date, ready_ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AppRef, InstallationSpec};
    use crate::rules::distribution::tests::{app_with, v};

    fn inst(products: &[Product], major: Option<u32>) -> Installation {
        Installation::new(
            "acme",
            InstallationSpec {
                app_ref: AppRef { name: "insights".into() },
                environment: "production".into(),
                site: "acme.atlassian.net".into(),
                products: products.to_vec(),
                deletion_policy: Default::default(),
                major_version: major,
                approved_major: None,
            },
        )
    }

    fn ver(major: u32, minor: u32) -> Version {
        Version { major, minor }
    }

    fn reasons(d: &Decision) -> Vec<(&str, bool, &str)> {
        d.conditions.iter().map(|c| (c.type_, c.status, c.reason.as_str())).collect()
    }

    fn app() -> ForgeApp {
        app_with(vec![
            v(1, 0, &["read"], Product::Jira, &[Product::Confluence]),
            v(1, 2, &["read"], Product::Jira, &[Product::Confluence]),
            v(2, 0, &["read"], Product::Jira, &[Product::Confluence]),
            v(3, 1, &["read", "write"], Product::Jira, &[Product::Confluence]),
        ])
    }

    #[test]
    fn first_install_takes_the_latest_minor_of_the_pinned_or_latest_major() {
        let app = app();
        let facts = Facts { app: Some(&app), ..Default::default() };
        assert_eq!(decide(&inst(&[Product::Jira], None), None, &facts).step, Step::Install(ver(3, 1)));
        assert_eq!(decide(&inst(&[Product::Jira], Some(1)), None, &facts).step, Step::Install(ver(1, 2)));
        let d = decide(&inst(&[Product::Jira], Some(7)), None, &facts);
        assert_eq!(d.step, Step::Nothing);
        assert_eq!(reasons(&d)[2], (READY, false, REASON_VERSION_NOT_DEPLOYED));
    }

    #[test]
    fn a_new_installation_needs_the_app_a_deployment_and_no_twin() {
        let d = decide(&inst(&[Product::Jira], None), None, &Facts::default());
        assert_eq!(reasons(&d)[0], (INSTALLED, false, REASON_APP_NOT_FOUND));
        let empty = app_with(vec![]);
        let d = decide(&inst(&[Product::Jira], None), None, &Facts { app: Some(&empty), ..Default::default() });
        assert_eq!(reasons(&d)[0], (INSTALLED, false, REASON_NOT_DEPLOYED));
        let app = app();
        let facts = Facts { app: Some(&app), duplicate_of: Some("first".into()) };
        let d = decide(&inst(&[Product::Jira], None), None, &facts);
        assert_eq!(reasons(&d)[0], (INSTALLED, false, REASON_ALREADY_INSTALLED));
        assert!(d.conditions[0].message.contains("Installation first"));
    }

    #[test]
    fn the_required_product_is_needed() {
        let app = app();
        let d = decide(&inst(&[Product::Confluence], None), None, &Facts { app: Some(&app), ..Default::default() });
        assert_eq!(reasons(&d)[0], (INSTALLED, false, REASON_INCOMPATIBLE_PRODUCTS));
        assert!(d.conditions[0].message.contains("spec.products must include jira"), "{}", d.conditions[0].message);
    }

    #[test]
    fn minors_roll_out_to_installed_sites() {
        let app = app();
        let facts = Facts { app: Some(&app), ..Default::default() };
        let d = decide(&inst(&[Product::Jira], None), Some(ver(1, 0)), &facts);
        assert_eq!(d.step, Step::RollOutMinor(ver(1, 2)));
        assert_eq!(reasons(&d)[0], (INSTALLED, true, REASON_INSTALLED));
        assert_eq!(reasons(&d)[2], (READY, true, REASON_READY));
    }

    #[test]
    fn enabling_licensing_needs_consent_even_without_new_scopes() {
        let mut paid = v(2, 0, &["read"], Product::Jira, &[]);
        paid.licensing = true;
        let app = app_with(vec![v(1, 0, &["read"], Product::Jira, &[]), paid]);
        let facts = Facts { app: Some(&app), ..Default::default() };
        let d = decide(&inst(&[Product::Jira], Some(2)), Some(ver(1, 0)), &facts);
        assert_eq!(d.step, Step::Nothing);
        assert_eq!(reasons(&d)[1], (UP_TO_DATE, false, REASON_CONSENT_REQUIRED));
        assert!(d.conditions[1].message.contains("licensing"), "{}", d.conditions[1].message);
        let mut approved = inst(&[Product::Jira], Some(2));
        approved.spec.approved_major = Some(2);
        assert_eq!(decide(&approved, Some(ver(1, 0)), &facts).step, Step::UpgradeMajor(ver(2, 0)));
    }

    #[test]
    fn an_installation_never_changes_major_on_its_own() {
        let app = app();
        let facts = Facts { app: Some(&app), ..Default::default() };
        let d = decide(&inst(&[Product::Jira], None), Some(ver(1, 2)), &facts);
        assert_eq!(d.step, Step::Nothing);
        assert_eq!(reasons(&d)[1], (UP_TO_DATE, false, REASON_PERMISSIONS_OUTDATED), "3.1 adds the write scope");
        assert_eq!(d.available, Some(ver(3, 1)));
        let no_new = app_with(vec![v(1, 0, &["read"], Product::Jira, &[]), v(2, 0, &["read"], Product::Jira, &[])]);
        let d =
            decide(&inst(&[Product::Jira], None), Some(ver(1, 0)), &Facts { app: Some(&no_new), ..Default::default() });
        assert_eq!((d.step, reasons(&d)[1]), (Step::Nothing, (UP_TO_DATE, false, REASON_UPGRADE_AVAILABLE)));
        let d = decide(&inst(&[Product::Jira], None), Some(ver(3, 1)), &facts);
        assert_eq!(reasons(&d)[1], (UP_TO_DATE, true, REASON_UP_TO_DATE));
    }

    #[test]
    fn raising_the_major_upgrades_unless_consent_is_needed() {
        let app = app();
        let facts = Facts { app: Some(&app), ..Default::default() };
        assert_eq!(
            decide(&inst(&[Product::Jira], Some(2)), Some(ver(1, 2)), &facts).step,
            Step::UpgradeMajor(ver(2, 0))
        );
        let d = decide(&inst(&[Product::Jira], Some(3)), Some(ver(1, 2)), &facts);
        assert_eq!(d.step, Step::Nothing);
        assert_eq!(reasons(&d)[1], (UP_TO_DATE, false, REASON_CONSENT_REQUIRED));
        assert!(d.conditions[1].message.contains("scope write"), "{}", d.conditions[1].message);
        assert_eq!(reasons(&d)[2], (READY, true, REASON_READY));
        let mut approved = inst(&[Product::Jira], Some(3));
        approved.spec.approved_major = Some(3);
        assert_eq!(decide(&approved, Some(ver(1, 2)), &facts).step, Step::UpgradeMajor(ver(3, 1)));
    }

    #[test]
    fn lowering_the_major_is_refused_and_missing_majors_are_reported() {
        let app = app();
        let facts = Facts { app: Some(&app), ..Default::default() };
        let d = decide(&inst(&[Product::Jira], Some(1)), Some(ver(2, 0)), &facts);
        assert_eq!(reasons(&d)[1], (UP_TO_DATE, false, REASON_DOWNGRADE_NOT_ALLOWED));
        let message = &d.conditions[1].message;
        assert!(message.contains("delete this Installation") && message.contains("back to 2"), "{message}");
        let d = decide(&inst(&[Product::Jira], Some(9)), Some(ver(2, 0)), &facts);
        assert_eq!(reasons(&d)[2], (READY, false, REASON_VERSION_NOT_DEPLOYED));
    }

    #[test]
    fn a_minor_with_new_permissions_is_not_rolled_out() {
        let app =
            app_with(vec![v(1, 0, &["read"], Product::Jira, &[]), v(1, 1, &["read", "admin"], Product::Jira, &[])]);
        let d =
            decide(&inst(&[Product::Jira], None), Some(ver(1, 0)), &Facts { app: Some(&app), ..Default::default() });
        assert_eq!(d.step, Step::Nothing);
    }

    #[test]
    fn added_permissions_lists_scopes_and_egress() {
        let mut to = v(2, 0, &["read", "write"], Product::Jira, &[]);
        to.egress = vec!["api.example.com".into()];
        let from = v(1, 0, &["read"], Product::Jira, &[]);
        assert_eq!(added_permissions(Some(&from), &to), vec!["egress api.example.com", "scope write"]);
        assert!(added_permissions(Some(&to), &from).is_empty(), "removing permissions adds nothing");
    }
}
