//! The DistributionPolicy rules: when sharing by link is active, which products may be required,
//! and which policy wins when two govern the same app environment.

use std::collections::BTreeSet;

use super::conditions::Decided;
use super::versions;
use crate::api::{DistributionPolicy, ForgeApp, Product, Sharing};
use kube::ResourceExt;

pub const SHARING: &str = "Sharing";
pub const READY: &str = "Ready";

pub const REASON_ACTIVE: &str = "Active";
pub const REASON_DISABLED: &str = "Disabled";
pub const REASON_APP_NOT_FOUND: &str = "AppNotFound";
pub const REASON_NOT_DEPLOYED: &str = "NotDeployed";
pub const REASON_LICENSED_APP: &str = "LicensedApp";
pub const REASON_LISTED_ON_MARKETPLACE: &str = "ListedOnMarketplace";
pub const REASON_PRODUCTS_NOT_SUPPORTED: &str = "ProductsNotSupported";
pub const REASON_CONFLICT: &str = "Conflict";
pub const REASON_READY: &str = "Ready";

/// What an active installation link admits installations of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkSubject {
    pub namespace: String,
    pub app: String,
    pub environment: String,
    pub products: Vec<Product>,
    pub revision: i64,
}

/// What the policy rules decided.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyDecision {
    /// `Sharing` then `Ready`.
    pub conditions: Vec<Decided>,
    /// What the installation link admits, present only while sharing is active.
    pub link: Option<LinkSubject>,
}

impl PolicyDecision {
    pub fn sharing_active(&self) -> bool {
        self.link.is_some()
    }
}

/// Of several policies, the one that governs an app environment: the oldest, then by name.
pub fn governing<'a>(
    policies: impl IntoIterator<Item = &'a DistributionPolicy>,
    app: &str,
    environment: &str,
) -> Option<&'a DistributionPolicy> {
    policies
        .into_iter()
        .filter(|p| {
            p.spec.app_ref.name == app && p.spec.environment == environment && p.metadata.deletion_timestamp.is_none()
        })
        .min_by(|a, b| {
            let key = |p: &DistributionPolicy| (p.metadata.creation_timestamp.clone().map(|t| t.0), p.name_any());
            key(a).cmp(&key(b))
        })
}

/// Decides a policy's conditions. `governing` is the name of the policy that governs the same app
/// environment, if it is not this one.
pub fn decide(policy: &DistributionPolicy, app: Option<&ForgeApp>, governing: Option<&str>) -> PolicyDecision {
    let spec = &policy.spec;
    let inactive = |reason: &str, message: String, ready_ok: bool| PolicyDecision {
        conditions: vec![
            Decided::new(SHARING, false, reason, message.clone()),
            if ready_ok {
                Decided::new(READY, true, REASON_READY, message)
            } else {
                Decided::new(READY, false, reason, message)
            },
        ],
        link: None,
    };
    if let Some(first) = governing {
        return inactive(
            REASON_CONFLICT,
            format!(
                "DistributionPolicy {first} already governs app {} environment {}; delete this one or that one",
                spec.app_ref.name, spec.environment
            ),
            false,
        );
    }
    if spec.sharing == Sharing::Disabled {
        return inactive(
            REASON_DISABLED,
            "sharing is disabled: set spec.sharing to Enabled to share the app by installation link".into(),
            true,
        );
    }
    let Some(app) = app else {
        return inactive(
            REASON_APP_NOT_FOUND,
            format!("ForgeApp {} does not exist in this namespace", spec.app_ref.name),
            false,
        );
    };
    let deployed = app.deployed(&spec.environment);
    let Some(latest) = versions::latest(deployed) else {
        return inactive(
            REASON_NOT_DEPLOYED,
            format!(
                "app {} has no version deployed in environment {}: deploy one first",
                spec.app_ref.name, spec.environment
            ),
            false,
        );
    };
    if latest.licensing {
        return inactive(
            REASON_LICENSED_APP,
            format!(
                "version {} of app {} has licensing enabled, and a licensed app cannot be shared by link: share an unlicensed copy of the app instead",
                versions::Version::of(latest),
                spec.app_ref.name
            ),
            false,
        );
    }
    if app.spec.listed_on_marketplace {
        return inactive(
            REASON_LISTED_ON_MARKETPLACE,
            format!(
                "app {} is listed on the Marketplace, and a listed app cannot be shared by link: share an unlisted copy of the app instead",
                spec.app_ref.name
            ),
            false,
        );
    }
    let link = LinkSubject {
        namespace: policy.namespace().unwrap_or_default(),
        app: spec.app_ref.name.clone(),
        environment: spec.environment.clone(),
        products: spec.products.clone(),
        revision: spec.link_revision,
    };
    let sharing = Decided::new(
        SHARING,
        true,
        REASON_ACTIVE,
        format!("shared by installation link, revision {}", spec.link_revision),
    );
    let required = latest.compatibility.required;
    let supported: BTreeSet<Product> =
        std::iter::once(required).chain(latest.compatibility.optional.iter().copied()).collect();
    let unsupported: Vec<String> =
        spec.products.iter().filter(|p| !supported.contains(p)).map(|p| p.to_string()).collect();
    let mut problems = Vec::new();
    if !spec.products.contains(&required) {
        problems.push(format!("products must include {required}, the app's required product"));
    }
    if !unsupported.is_empty() {
        problems.push(format!(
            "version {} does not support {} (it supports {})",
            versions::Version::of(latest),
            unsupported.join(", "),
            supported.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
        ));
    }
    let ready = if problems.is_empty() {
        Decided::new(
            READY,
            true,
            REASON_READY,
            format!("sharing app {} environment {}", spec.app_ref.name, spec.environment),
        )
    } else {
        Decided::new(READY, false, REASON_PRODUCTS_NOT_SUPPORTED, problems.join("; "))
    };
    PolicyDecision { conditions: vec![sharing, ready], link: Some(link) }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::api::{
        AppRef, AppVersion, Compatibility, DistributionPolicySpec, EnvironmentStatus, ForgeAppSpec, ForgeAppStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    /// An app whose production environment has `versions` (as read from the platform).
    pub(crate) fn app_with(versions: Vec<AppVersion>) -> ForgeApp {
        let mut app = ForgeApp::new(
            "insights",
            ForgeAppSpec {
                credentials_secret_ref: None,
                app_id: "ari:app".into(),
                developer_account: Some("dev".into()),
                listed_on_marketplace: false,
                environments: vec!["production".into()],
                refresh_interval: None,
            },
        );
        app.status = Some(ForgeAppStatus {
            environments: vec![EnvironmentStatus {
                name: "production".into(),
                latest_version: None,
                majors: vec![],
                versions,
                installed_versions: vec![],
            }],
            ..Default::default()
        });
        app
    }

    /// The versions of the app's production environment, to change in a test.
    pub(crate) fn versions_of(app: &mut ForgeApp) -> &mut Vec<AppVersion> {
        &mut app.status.as_mut().unwrap().environments[0].versions
    }

    pub(crate) fn v(major: u32, minor: u32, scopes: &[&str], required: Product, optional: &[Product]) -> AppVersion {
        AppVersion {
            major,
            minor,
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            egress: vec![],
            sql_module: false,
            licensing: false,
            compatibility: Compatibility { required, optional: optional.to_vec() },
            version: Some(format!("{major}.{minor}.0")),
            id: Some(format!("v-{major}-{minor}")),
            created_at: None,
            latest: false,
            installations: None,
        }
    }

    pub(crate) fn policy(name: &str, sharing: Sharing, products: &[Product], revision: i64) -> DistributionPolicy {
        let mut p = DistributionPolicy::new(
            name,
            DistributionPolicySpec {
                app_ref: AppRef { name: "insights".into() },
                environment: "production".into(),
                sharing,
                products: products.to_vec(),
                link_revision: revision,
            },
        );
        p.metadata.namespace = Some("team".into());
        p
    }

    fn reasons(d: &PolicyDecision) -> (bool, &str, bool, &str) {
        (
            d.conditions[0].status,
            d.conditions[0].reason.as_str(),
            d.conditions[1].status,
            d.conditions[1].reason.as_str(),
        )
    }

    #[test]
    fn an_enabled_policy_for_a_deployed_unlicensed_app_shares() {
        let app = app_with(vec![v(1, 0, &[], Product::Jira, &[Product::Confluence])]);
        let d = decide(&policy("p", Sharing::Enabled, &[Product::Jira, Product::Confluence], 3), Some(&app), None);
        assert_eq!(reasons(&d), (true, REASON_ACTIVE, true, REASON_READY));
        assert_eq!(d.link.unwrap().revision, 3);
    }

    #[test]
    fn each_reason_sharing_is_inactive() {
        let app = app_with(vec![v(1, 0, &[], Product::Jira, &[])]);
        let enabled = policy("p", Sharing::Enabled, &[Product::Jira], 1);
        let d = decide(&policy("p", Sharing::Disabled, &[Product::Jira], 1), Some(&app), None);
        assert_eq!(reasons(&d), (false, REASON_DISABLED, true, REASON_READY));
        assert!(d.link.is_none());
        assert_eq!(reasons(&decide(&enabled, None, None)), (false, REASON_APP_NOT_FOUND, false, REASON_APP_NOT_FOUND));
        assert_eq!(
            reasons(&decide(&enabled, Some(&app_with(vec![])), None)),
            (false, REASON_NOT_DEPLOYED, false, REASON_NOT_DEPLOYED)
        );
        let mut licensed = app_with(vec![v(1, 0, &[], Product::Jira, &[])]);
        versions_of(&mut licensed)[0].licensing = true;
        let d = decide(&enabled, Some(&licensed), None);
        assert_eq!(reasons(&d), (false, REASON_LICENSED_APP, false, REASON_LICENSED_APP));
        assert!(d.conditions[0].message.contains("share an unlicensed copy of the app instead"));
        let mut listed = app.clone();
        listed.spec.listed_on_marketplace = true;
        assert_eq!(reasons(&decide(&enabled, Some(&listed), None)).1, REASON_LISTED_ON_MARKETPLACE);
        let d = decide(&enabled, Some(&app), Some("first"));
        assert_eq!(reasons(&d), (false, REASON_CONFLICT, false, REASON_CONFLICT));
        assert!(d.conditions[1].message.contains("DistributionPolicy first"));
    }

    #[test]
    fn products_must_include_the_required_one_and_only_supported_ones() {
        let app = app_with(vec![v(1, 0, &[], Product::Jira, &[Product::Confluence])]);
        let d = decide(&policy("p", Sharing::Enabled, &[Product::Confluence], 1), Some(&app), None);
        assert_eq!(reasons(&d), (true, REASON_ACTIVE, false, REASON_PRODUCTS_NOT_SUPPORTED));
        assert!(d.conditions[1].message.contains("must include jira"));
        let d = decide(&policy("p", Sharing::Enabled, &[Product::Jira, Product::Bitbucket], 1), Some(&app), None);
        assert!(d.conditions[1].message.contains("does not support bitbucket"), "{}", d.conditions[1].message);
    }

    #[test]
    fn the_oldest_policy_governs() {
        let mut a = policy("b-older", Sharing::Enabled, &[Product::Jira], 1);
        a.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(10).unwrap()));
        let mut b = policy("a-newer", Sharing::Enabled, &[Product::Jira], 1);
        b.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(20).unwrap()));
        let mut other_env = policy("c", Sharing::Enabled, &[Product::Jira], 1);
        other_env.spec.environment = "staging".into();
        let all = [b.clone(), a.clone(), other_env];
        assert_eq!(governing(&all, "insights", "production").unwrap().name_any(), "b-older");
        assert_eq!(governing(&all, "insights", "staging").unwrap().name_any(), "c");
        assert!(governing(&all, "other", "production").is_none());
    }
}
