//! The DistributionPolicy rules: when sharing by link is active, which products may be required,
//! and which policy wins when two govern the same app environment.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::conditions::{self, Outcome};
use super::versions;
use crate::api::{DistributionPolicy, DistributionPolicyStatus, ForgeApp, Product, Sharing};
use crate::platform::{ErrorKind, PlatformError};
use kube::ResourceExt;

crate::named! {
    /// The condition types a DistributionPolicy reports.
    pub enum Type { Sharing, Ready, Reconciling, Stalled }
}

crate::named! {
    /// Every reason a DistributionPolicy condition can give.
    pub enum Reason {
        Active,
        Disabled,
        AppNotFound,
        NotDeployed,
        LicensedApp,
        ListedOnMarketplace,
        ProductsNotSupported,
        Conflict,
        /// The ForgeApp has not claimed the app yet.
        Claiming,
        Ready,
        /// Sharing cannot be managed on the platform by forgeops.
        DistributionUnsupported,
        /// The platform failed; retried.
        PlatformError,
        AsExpected,
    }
}

crate::summarized!(Type, Reason);

pub type Decided = conditions::Decided<Type, Reason>;

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
    /// The `Sharing` condition.
    pub sharing: Decided,
    /// Where the policy stands, for `Ready`, `Reconciling` and `Stalled`.
    pub outcome: Outcome<Reason>,
    /// What the installation link admits, present only while sharing is active.
    pub link: Option<LinkSubject>,
    /// Whether to carry the decision out on the platform: only the governing policy of an app that
    /// exists does, and not while it asks for products the app does not support (the link would be
    /// for the wrong products).
    pub act: bool,
}

impl PolicyDecision {
    pub fn sharing_active(&self) -> bool {
        self.link.is_some()
    }

    /// `Sharing`, then `Ready`, `Reconciling` and `Stalled`.
    pub fn conditions(&self) -> Vec<Decided> {
        let mut out = vec![self.sharing.clone()];
        out.extend(conditions::summary(&self.outcome, None));
        out
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
/// `claim` tells whether the app's ForgeApp owns the appId: a policy of an app another ForgeApp
/// owns (or not claimed yet) does nothing on the platform, Disabled or not.
pub fn decide(
    policy: &DistributionPolicy,
    app: Option<&ForgeApp>,
    governing: Option<&str>,
    claim: &crate::ownership::Claim,
) -> PolicyDecision {
    use crate::ownership::Claim;
    let spec = &policy.spec;
    let inactive = |reason: Reason, message: String, ready_ok: bool| PolicyDecision {
        sharing: Decided::new(Type::Sharing, false, reason, message.clone()),
        outcome: if ready_ok { Outcome::Done(Reason::Ready, message) } else { Outcome::Stalled(reason, message) },
        link: None,
        act: app.is_some() && governing.is_none() && claim.is_ours(),
    };
    if let Some(app) = app {
        match claim {
            Claim::Ours => {}
            Claim::Theirs(owner) => {
                let message = format!(
                    "app {} belongs to ForgeApp {owner}, not to ForgeApp {} of this namespace: this policy does \
                     nothing on the platform; manage sharing from the owner's namespace, or delete this policy",
                    app.spec.app_id, spec.app_ref.name
                );
                return inactive(Reason::Conflict, message, false);
            }
            Claim::Unclaimed => {
                let message = format!("waiting for ForgeApp {} to claim app {}", spec.app_ref.name, app.spec.app_id);
                return PolicyDecision {
                    sharing: Decided::new(Type::Sharing, false, Reason::Claiming, message.clone()),
                    outcome: Outcome::InProgress(Reason::Claiming, message),
                    link: None,
                    act: false,
                };
            }
        }
    }
    if let Some(first) = governing {
        return inactive(
            Reason::Conflict,
            format!(
                "DistributionPolicy {first} already governs app {} environment {}; delete this one or that one",
                spec.app_ref.name, spec.environment
            ),
            false,
        );
    }
    if spec.sharing == Sharing::Disabled {
        return inactive(
            Reason::Disabled,
            "sharing is disabled: set spec.sharing to Enabled to share the app by installation link".into(),
            true,
        );
    }
    let Some(app) = app else {
        return inactive(
            Reason::AppNotFound,
            format!("ForgeApp {} does not exist in this namespace", spec.app_ref.name),
            false,
        );
    };
    let deployed = app.deployed(&spec.environment);
    let Some(latest) = versions::latest(deployed) else {
        return inactive(
            Reason::NotDeployed,
            format!(
                "app {} has no version deployed in environment {}: deploy one first",
                spec.app_ref.name, spec.environment
            ),
            false,
        );
    };
    if latest.licensing {
        return inactive(
            Reason::LicensedApp,
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
            Reason::ListedOnMarketplace,
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
        Type::Sharing,
        true,
        Reason::Active,
        format!("shared by installation link, revision {}", spec.link_revision),
    );
    let required = &latest.compatibility.required_products;
    let supported: BTreeSet<Product> = required.iter().chain(latest.compatibility.optional.iter()).copied().collect();
    // A single-app app whose modules the platform did not describe: nothing to judge by.
    let unknown = supported.is_empty();
    let unsupported: Vec<String> =
        spec.products.iter().filter(|p| !unknown && !supported.contains(p)).map(|p| p.to_string()).collect();
    let mut problems = Vec::new();
    let missing: Vec<String> = required.iter().filter(|p| !spec.products.contains(p)).map(|p| p.to_string()).collect();
    if !missing.is_empty() {
        let what = if required.len() == 1 { "the app's required product" } else { "products the app requires" };
        problems.push(format!("products must include {}, {what}", missing.join(", ")));
    }
    if !unsupported.is_empty() {
        problems.push(format!(
            "version {} does not support {} (it supports {})",
            versions::Version::of(latest),
            unsupported.join(", "),
            supported.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
        ));
    }
    let (outcome, act) = if problems.is_empty() {
        let message = format!("sharing app {} environment {}", spec.app_ref.name, spec.environment);
        (Outcome::Done(Reason::Ready, message), true)
    } else {
        (Outcome::Stalled(Reason::ProductsNotSupported, problems.join("; ")), false)
    };
    PolicyDecision { sharing, outcome, link: Some(link), act }
}

/// The link the platform holds for a policy, as the status records it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkState {
    pub url: Option<String>,
    /// The `spec.linkRevision` the link was generated for.
    pub revision: Option<i64>,
    /// The products the link installs into.
    pub products: Vec<String>,
}

/// What carrying a decision out on the platform came to.
#[derive(Clone, Copy, Debug)]
pub enum Carried<'a> {
    /// Not carried out ([`PolicyDecision::act`] is false).
    NotAsked,
    Done(&'a LinkState),
    Failed(&'a PlatformError),
}

/// Whether a platform failure is retried (an error for the controller's backoff): every one but
/// the capability being off, which only a change fixes.
pub fn retried(e: &PlatformError) -> bool {
    e.kind != ErrorKind::Unsupported
}

/// The condition reason and message for a platform failure, saying where to act by hand.
pub fn platform_problem(app_id: &str, e: &PlatformError) -> (Reason, String) {
    let uuid = app_id.rsplit('/').next().unwrap_or_default();
    let console = format!("https://developer.atlassian.com/console/myapps/{uuid}/distribution");
    match e.kind {
        ErrorKind::Unsupported | ErrorKind::PermissionDenied => (
            Reason::DistributionUnsupported,
            format!(
                "forgeops cannot manage sharing for this app on the platform ({}): manage it by hand in the developer \
                 console at {console}, or run forgeops with --platform-distribution where the platform allows it",
                e.message
            ),
        ),
        ErrorKind::BadCredentials => (
            Reason::PlatformError,
            format!("{e}: fix the app's credentials Secret (spec.credentialsSecretRef or the operator's default)"),
        ),
        _ => (Reason::PlatformError, format!("{e} (retrying with backoff)")),
    }
}

/// The policy's status once `decision` was carried out (or not): the link the platform holds now,
/// and the conditions. A link issued again because the products changed says so on `Sharing` for
/// as long as it stands (`replacedLinkProducts`). A platform failure turns every condition False
/// with what to do.
pub fn status(
    policy: &DistributionPolicy,
    app_id: &str,
    decision: &PolicyDecision,
    previous: &DistributionPolicyStatus,
    carried: Carried,
    now: &Time,
) -> DistributionPolicyStatus {
    let before = LinkState {
        url: previous.installation_link.clone(),
        revision: previous.link_revision,
        products: previous.link_products.clone(),
    };
    let mut sharing = decision.sharing.clone();
    let mut outcome = decision.outcome.clone();
    let (mut link, mut replaced) = (before.clone(), previous.replaced_link_products.clone());
    match carried {
        Carried::NotAsked => {}
        Carried::Done(after) => {
            if after.url != before.url {
                let reissued = before.url.is_some() && after.url.is_some() && after.products != before.products;
                replaced = if reissued { before.products.clone() } else { Vec::new() };
            }
            link = after.clone();
        }
        Carried::Failed(e) => {
            let (reason, message) = platform_problem(app_id, e);
            sharing = Decided::new(Type::Sharing, false, reason, message.clone());
            outcome = if retried(e) { Outcome::Retrying(reason, message) } else { Outcome::Stalled(reason, message) };
        }
    }
    if !decision.sharing_active() {
        (link, replaced) = (LinkState::default(), Vec::new());
    }
    if sharing.status && !replaced.is_empty() {
        sharing.message = format!(
            "{}; a new link was issued for products {} (the link for {} no longer admits installations)",
            sharing.message,
            link.products.join(", "),
            replaced.join(", ")
        );
    }
    let mut decided = vec![sharing];
    decided.extend(conditions::summary(&outcome, None));
    DistributionPolicyStatus {
        observed_generation: policy.metadata.generation,
        conditions: conditions::merge(&previous.conditions, &decided, policy.metadata.generation, now),
        installation_link: link.url,
        link_revision: link.revision,
        link_products: link.products,
        replaced_link_products: replaced,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::api::AppVersion;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    /// [`super::decide`] for a ForgeApp that owns its app.
    fn decide(p: &DistributionPolicy, app: Option<&ForgeApp>, governing: Option<&str>) -> PolicyDecision {
        super::decide(p, app, governing, &crate::ownership::Claim::Ours)
    }

    #[test]
    fn a_policy_of_an_app_another_namespace_owns_never_acts_even_disabled() {
        let app = ForgeApp::test("insights").read_as("dev").deploys(vec![AppVersion::test(1, 0)]);
        let theirs = crate::ownership::Claim::Theirs("team-a/insights".into());
        for policy in [DistributionPolicy::test("p").enabled(), DistributionPolicy::test("p")] {
            let d = super::decide(&policy, Some(&app), None, &theirs);
            assert!(!d.act, "a non-owner never changes sharing");
            assert_eq!(d.sharing.reason, Reason::Conflict);
            assert!(d.outcome.is_stalled() && d.outcome.message().contains("team-a/insights"));
        }
        let waiting =
            super::decide(&DistributionPolicy::test("p"), Some(&app), None, &crate::ownership::Claim::Unclaimed);
        assert!(!waiting.act && waiting.sharing.reason == Reason::Claiming);
    }

    /// The versions of the app's production environment, to change in a test.
    pub(crate) fn versions_of(app: &mut ForgeApp) -> &mut Vec<AppVersion> {
        &mut app.status.as_mut().unwrap().environments[0].versions
    }

    fn reasons(d: &PolicyDecision) -> (bool, Reason, bool, Reason) {
        let c = d.conditions();
        (c[0].status, c[0].reason, c[1].status, c[1].reason)
    }

    #[test]
    fn an_enabled_policy_for_a_deployed_unlicensed_app_shares() {
        let app = ForgeApp::test("insights")
            .read_as("dev")
            .deploys(vec![AppVersion::test(1, 0).optional([Product::Confluence])]);
        let d = decide(
            &DistributionPolicy::test("p").enabled().products([Product::Jira, Product::Confluence]).revision(3),
            Some(&app),
            None,
        );
        assert_eq!(reasons(&d), (true, Reason::Active, true, Reason::Ready));
        assert_eq!(d.link.unwrap().revision, 3);
    }

    #[test]
    fn each_reason_sharing_is_inactive() {
        let app = ForgeApp::test("insights").read_as("dev").deploys(vec![AppVersion::test(1, 0)]);
        let enabled = DistributionPolicy::test("p").enabled().products([Product::Jira]);
        let d = decide(&DistributionPolicy::test("p").products([Product::Jira]), Some(&app), None);
        assert_eq!(reasons(&d), (false, Reason::Disabled, true, Reason::Ready));
        assert!(d.link.is_none());
        assert_eq!(reasons(&decide(&enabled, None, None)), (false, Reason::AppNotFound, false, Reason::AppNotFound));
        assert_eq!(
            reasons(&decide(&enabled, Some(&ForgeApp::test("insights").read_as("dev").deploys(vec![])), None)),
            (false, Reason::NotDeployed, false, Reason::NotDeployed)
        );
        let mut licensed = ForgeApp::test("insights").read_as("dev").deploys(vec![AppVersion::test(1, 0)]);
        versions_of(&mut licensed)[0].licensing = true;
        let d = decide(&enabled, Some(&licensed), None);
        assert_eq!(reasons(&d), (false, Reason::LicensedApp, false, Reason::LicensedApp));
        assert!(d.sharing.message.contains("share an unlicensed copy of the app instead"));
        let listed = app.clone().listed();
        assert_eq!(reasons(&decide(&enabled, Some(&listed), None)).1, Reason::ListedOnMarketplace);
        let d = decide(&enabled, Some(&app), Some("first"));
        assert_eq!(reasons(&d), (false, Reason::Conflict, false, Reason::Conflict));
        assert!(d.conditions()[1].message.contains("DistributionPolicy first"));
    }

    #[test]
    fn products_must_include_the_required_one_and_only_supported_ones() {
        let app = ForgeApp::test("insights")
            .read_as("dev")
            .deploys(vec![AppVersion::test(1, 0).optional([Product::Confluence])]);
        let d = decide(&DistributionPolicy::test("p").enabled().products([Product::Confluence]), Some(&app), None);
        assert_eq!(reasons(&d), (true, Reason::Active, false, Reason::ProductsNotSupported));
        assert!(d.conditions()[1].message.contains("must include jira"));
        let d = decide(
            &DistributionPolicy::test("p").enabled().products([Product::Jira, Product::Bitbucket]),
            Some(&app),
            None,
        );
        assert!(d.conditions()[1].message.contains("does not support bitbucket"), "{}", d.conditions()[1].message);
    }

    #[test]
    fn the_oldest_policy_governs() {
        let a = DistributionPolicy::test("b-older").enabled().products([Product::Jira]).created_at(10);
        let b = DistributionPolicy::test("a-newer").enabled().products([Product::Jira]).created_at(20);
        let other_env = DistributionPolicy::test("c").enabled().products([Product::Jira]).environment("staging");
        let all = [b.clone(), a.clone(), other_env];
        assert_eq!(governing(&all, "insights", "production").unwrap().name_any(), "b-older");
        assert_eq!(governing(&all, "insights", "staging").unwrap().name_any(), "c");
        assert!(governing(&all, "other", "production").is_none());
    }

    #[test]
    fn a_link_issued_again_for_new_products_says_so_while_it_stands() {
        let now = Time(jiff::Timestamp::from_second(1).unwrap());
        let app = ForgeApp::test("insights")
            .read_as("dev")
            .deploys(vec![AppVersion::test(1, 0).optional([Product::Confluence])]);
        let p = DistributionPolicy::test("p").enabled().products([Product::Jira, Product::Confluence]);
        let d = decide(&p, Some(&app), None);
        let link = |url: &str, products: &[&str]| LinkState {
            url: Some(url.into()),
            revision: Some(1),
            products: products.iter().map(|s| s.to_string()).collect(),
        };
        let first = status(&p, "ari:app", &d, &Default::default(), Carried::Done(&link("a", &["jira"])), &now);
        assert!(first.replaced_link_products.is_empty(), "the first link replaces none");
        let sharing =
            |s: &DistributionPolicyStatus| conditions::find(&s.conditions, Type::Sharing).unwrap().message.clone();
        let both = link("b", &["jira", "confluence"]);
        let second = status(&p, "ari:app", &d, &first, Carried::Done(&both), &now);
        assert_eq!(second.replaced_link_products, ["jira"]);
        assert!(
            sharing(&second).contains("a new link was issued for products jira, confluence"),
            "{}",
            sharing(&second)
        );
        let third = status(&p, "ari:app", &d, &second, Carried::Done(&both), &now);
        assert_eq!(third, second, "said while the link stands, and no write");
        let rotated = status(&p, "ari:app", &d, &third, Carried::Done(&link("c", &["jira", "confluence"])), &now);
        assert!(rotated.replaced_link_products.is_empty() && !sharing(&rotated).contains("new link"));
    }

    #[test]
    fn a_platform_failure_turns_every_condition_false_and_is_retried_unless_unsupported() {
        let now = Time(jiff::Timestamp::from_second(1).unwrap());
        let app = ForgeApp::test("insights").read_as("dev").deploys(vec![AppVersion::test(1, 0)]);
        let p = DistributionPolicy::test("p").enabled().products([Product::Jira]);
        let d = decide(&p, Some(&app), None);
        assert!(d.act);
        let of = |s: &DistributionPolicyStatus, t: Type| {
            let c = conditions::find(&s.conditions, t).unwrap();
            (c.status.clone(), c.reason.clone())
        };
        let down = PlatformError::new(ErrorKind::Unavailable, "op", "down");
        let s = status(&p, "ari:cloud:ecosystem::app/insights", &d, &Default::default(), Carried::Failed(&down), &now);
        assert_eq!(of(&s, Type::Sharing), ("False".into(), "PlatformError".into()));
        assert_eq!(of(&s, Type::Reconciling), ("True".into(), "PlatformError".into()));
        assert!(retried(&down));
        let off = PlatformError::new(ErrorKind::Unsupported, "op", "off");
        let s = status(&p, "ari:cloud:ecosystem::app/insights", &d, &Default::default(), Carried::Failed(&off), &now);
        assert_eq!(of(&s, Type::Ready), ("False".into(), "DistributionUnsupported".into()));
        assert_eq!(of(&s, Type::Stalled), ("True".into(), "DistributionUnsupported".into()));
        let message = &conditions::find(&s.conditions, Type::Ready).unwrap().message;
        assert!(message.contains("/console/myapps/insights/distribution"), "{message}");
        assert!(!retried(&off));
        let unsupported =
            decide(&DistributionPolicy::test("p").enabled().products([Product::Bitbucket]), Some(&app), None);
        assert!(!unsupported.act, "no link for products the app does not support");
    }
}
