//! The DistributionPolicy rules, round by round against a pretend platform that answers as the
//! real one would (sharing, the active link, the Marketplace listing).

use super::*;
use crate::api::AppVersion;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

fn at(second: i64) -> Time {
    Time(jiff::Timestamp::from_second(second).unwrap())
}

/// The platform as the console shows it, and every step asked of it.
#[derive(Default)]
struct Platform {
    shared: bool,
    listed: bool,
    link: Option<DistributionLink>,
    links_made: u32,
    steps: Vec<Effect>,
    /// The next platform step fails with this.
    refuse: Option<PlatformError>,
}

impl Platform {
    fn state(&self) -> SharingState {
        SharingState { shared: self.shared, listed_on_marketplace: self.listed, link: self.link.clone() }
    }

    /// "Generate new link" in the console.
    fn console_generates(&mut self, products: &[&str]) {
        self.links_made += 1;
        self.link = Some(DistributionLink {
            url: format!("https://link/{}", self.links_made),
            products: products.iter().map(|s| s.to_string()).collect(),
        });
    }

    fn answer(&mut self, effect: &Effect) -> Answer {
        self.steps.push(effect.clone());
        if let Some(e) = self.refuse.take() {
            return Answer::Failed(e);
        }
        match effect {
            Effect::Read => Answer::Read(self.state()),
            Effect::EnableSharing(_) => {
                self.shared = true;
                Answer::SharingSet(true)
            }
            Effect::DisableSharing => {
                self.shared = false;
                Answer::SharingSet(false)
            }
            Effect::GenerateLink(products) => {
                let products: Vec<&str> = products.iter().map(String::as_str).collect();
                self.console_generates(&products);
                Answer::Generated(self.link.clone().unwrap())
            }
            Effect::AddFinalizer | Effect::RemoveFinalizer => unreachable!("not a platform step"),
        }
    }

    /// The steps asked since the last call.
    fn asked(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.steps)
    }
}

/// What one reconcile came to.
struct Reconciled {
    decision: Decision,
    /// The object went (its last finalizer removed while deleting).
    gone: bool,
}

/// One reconcile at second `now`, as the controller runs it: rounds until no step is left; the
/// status is written into `policy`.
fn reconcile(policy: &mut DistributionPolicy, app: &ForgeApp, platform: &mut Platform, now: i64) -> Reconciled {
    reconcile_as(policy, Some(app), None, &Claim::Ours, platform, now)
}

fn reconcile_as(
    policy: &mut DistributionPolicy,
    app: Option<&ForgeApp>,
    governing: Option<&str>,
    claim: &Claim,
    platform: &mut Platform,
    now: i64,
) -> Reconciled {
    let now = at(now);
    let mut answers = Answers::default();
    for _ in 0..8 {
        let decision = decide(&Inputs { policy, app, governing, claim, answers: &answers, now: &now });
        if decision.effects.is_empty() {
            policy.status = Some(decision.status.clone());
            return Reconciled { decision, gone: false };
        }
        for effect in decision.effects.clone() {
            match effect {
                Effect::AddFinalizer => {
                    policy.metadata.finalizers.get_or_insert_with(Vec::new).push(FINALIZER.into());
                    answers.record(Answer::FinalizerAdded);
                }
                Effect::RemoveFinalizer => {
                    policy.metadata.finalizers = None;
                    if policy.metadata.deletion_timestamp.is_some() {
                        return Reconciled { decision, gone: true };
                    }
                }
                step => {
                    let answer = platform.answer(&step);
                    let failed = matches!(answer, Answer::Failed(_));
                    answers.record(answer);
                    if failed {
                        break;
                    }
                }
            }
        }
    }
    panic!("more than 8 rounds");
}

fn app() -> ForgeApp {
    ForgeApp::test("insights").read_as("dev").deploys(vec![AppVersion::test(1, 0).optional([Product::Confluence])])
}

fn jira() -> DistributionPolicy {
    DistributionPolicy::test("p").enabled().products([Product::Jira]).generation(1)
}

fn condition(policy: &DistributionPolicy, t: Type) -> (bool, String, String) {
    let c = conditions::find(&policy.status.as_ref().unwrap().conditions, t).unwrap();
    (c.status == "True", c.reason.to_string(), c.message.clone())
}

fn reasons_of(r: &Reconciled) -> Vec<EventReason> {
    r.decision.events.iter().map(|e| e.reason).collect()
}

fn link_of(policy: &DistributionPolicy) -> Option<String> {
    policy.status.as_ref().unwrap().installation_link.clone()
}

fn enable(policy: &mut DistributionPolicy, sharing: Sharing) {
    policy.spec.sharing = sharing;
    policy.metadata.generation = Some(policy.metadata.generation.unwrap_or(1) + 1);
}

#[test]
fn an_enabled_policy_shares_the_app_and_asks_nothing_more_until_the_interval_is_up() {
    let (mut p, mut platform) = (jira(), Platform::default());
    let r = reconcile(&mut p, &app(), &mut platform, 100);
    assert_eq!(
        platform.asked(),
        [
            Effect::Read,
            Effect::EnableSharing(AppDetails::default()),
            Effect::Read,
            Effect::GenerateLink(vec!["jira".into()])
        ]
    );
    assert!(condition(&p, Type::Sharing).0);
    assert_eq!(condition(&p, Type::Ready).1, "Ready");
    assert_eq!(link_of(&p).as_deref(), Some("https://link/1"));
    assert_eq!(p.status.as_ref().unwrap().link_revision, Some(1));
    assert_eq!(reasons_of(&r), [EventReason::SharingEnabled]);
    assert_eq!(r.decision.requeue, Some(DEFAULT_REFRESH_INTERVAL));

    let again = reconcile(&mut p, &app(), &mut platform, 200);
    assert!(platform.asked().is_empty(), "a reconcile before the interval sends nothing");
    assert!(again.decision.events.is_empty());
    assert_eq!(again.decision.requeue, Some(Duration::from_secs(500)), "looks again when the interval is up");
    reconcile(&mut p, &app(), &mut platform, 700);
    assert_eq!(platform.asked(), [Effect::Read], "then it reads, and nothing changed");
    assert_eq!(link_of(&p).as_deref(), Some("https://link/1"));
}

#[test]
fn a_link_the_platform_already_holds_is_kept_when_sharing_is_turned_on() {
    let mut platform = Platform::default();
    platform.console_generates(&["jira"]);
    let mut p = jira();
    reconcile(&mut p, &app(), &mut platform, 100);
    assert_eq!(platform.asked(), [Effect::Read, Effect::EnableSharing(AppDetails::default()), Effect::Read]);
    assert_eq!(link_of(&p).as_deref(), Some("https://link/1"), "no rotation nobody asked for");
}

#[test]
fn a_policy_created_disabled_turns_off_sharing_that_was_turned_on_by_hand() {
    let mut platform = Platform { shared: true, ..Default::default() };
    platform.console_generates(&["jira"]);
    let mut p = DistributionPolicy::test("p").products([Product::Jira]).generation(1);
    reconcile(&mut p, &app(), &mut platform, 100);
    assert_eq!(platform.asked(), [Effect::Read, Effect::DisableSharing]);
    assert!(!platform.shared);
    assert_eq!(condition(&p, Type::Sharing).1, "Disabled");
    assert!(condition(&p, Type::Ready).0);
    assert_eq!(link_of(&p), None);
}

#[test]
fn a_revision_raised_while_disabled_is_applied_as_sharing_is_enabled_again() {
    let mut platform = Platform::default();
    let mut p = jira();
    reconcile(&mut p, &app(), &mut platform, 100);
    platform.asked();
    let first = link_of(&p).unwrap();
    enable(&mut p, Sharing::Disabled);
    reconcile(&mut p, &app(), &mut platform, 110);
    assert_eq!(platform.asked(), [Effect::Read, Effect::DisableSharing]);
    assert_eq!(p.status.as_ref().unwrap().link_revision, Some(1), "the revision is kept while sharing is off");

    p.spec.link_revision = 2;
    p.metadata.generation = Some(4);
    let r = reconcile(&mut p, &app(), &mut platform, 120);
    assert_eq!(platform.asked(), [Effect::Read], "no link can be generated while sharing is off");
    assert_eq!(reasons_of(&r), [EventReason::LinkRotationPending]);
    assert!(condition(&p, Type::Sharing).2.contains("link revision 2 is generated when sharing is enabled again"));

    enable(&mut p, Sharing::Enabled);
    let r = reconcile(&mut p, &app(), &mut platform, 130);
    assert_eq!(
        platform.asked(),
        [
            Effect::Read,
            Effect::EnableSharing(AppDetails::default()),
            Effect::Read,
            Effect::GenerateLink(vec!["jira".into()])
        ],
        "the new link comes in the same reconcile that turns sharing on"
    );
    assert_ne!(link_of(&p).unwrap(), first);
    assert_eq!(p.status.as_ref().unwrap().link_revision, Some(2));
    assert!(reasons_of(&r).contains(&EventReason::LinkRotated));
}

#[test]
fn sharing_turned_off_in_the_console_is_seen_at_the_interval_and_set_back() {
    let mut platform = Platform::default();
    let mut p = jira();
    reconcile(&mut p, &app(), &mut platform, 100);
    platform.asked();
    platform.shared = false;
    reconcile(&mut p, &app(), &mut platform, 200);
    assert!(platform.asked().is_empty(), "not seen before the interval");
    let r = reconcile(&mut p, &app(), &mut platform, 700);
    assert_eq!(platform.asked(), [Effect::Read, Effect::EnableSharing(AppDetails::default()), Effect::Read]);
    assert!(reasons_of(&r).contains(&EventReason::DriftCorrected));
    let drift = p.status.as_ref().unwrap().last_drift.clone().unwrap();
    assert_eq!((drift.change, drift.corrected), (DriftChange::SharingTurnedOff, true));
    assert_eq!(link_of(&p).as_deref(), Some("https://link/1"), "the same link, back");
    assert!(condition(&p, Type::Ready).0);
}

#[test]
fn a_refresh_annotation_reads_the_platform_at_once() {
    let mut platform = Platform::default();
    let mut p = jira();
    reconcile(&mut p, &app(), &mut platform, 100);
    platform.asked();
    p.metadata.annotations = Some([(crate::api::REFRESH_ANNOTATION.to_string(), "now".to_string())].into());
    reconcile(&mut p, &app(), &mut platform, 101);
    assert_eq!(platform.asked(), [Effect::Read]);
    assert_eq!(p.status.as_ref().unwrap().observed_refresh.as_deref(), Some("now"));
    reconcile(&mut p, &app(), &mut platform, 102);
    assert!(platform.asked().is_empty(), "the same value asks nothing more");
}

#[test]
fn with_on_drift_report_a_change_outside_is_reported_and_left_until_the_spec_changes() {
    let mut platform = Platform::default();
    let mut p = jira().reporting_drift();
    reconcile(&mut p, &app(), &mut platform, 100);
    platform.asked();
    platform.shared = false;
    let r = reconcile(&mut p, &app(), &mut platform, 700);
    assert_eq!(platform.asked(), [Effect::Read], "reported, not corrected");
    assert_eq!(reasons_of(&r), [EventReason::DriftDetected, EventReason::SharingDisabled]);
    let (ready, reason, message) = condition(&p, Type::Ready);
    assert!(!ready && reason == "Drifted" && message.contains("turned off outside the cluster"), "{message}");
    assert!(condition(&p, Type::Stalled).0);
    let drift = p.status.as_ref().unwrap().last_drift.clone().unwrap();
    assert!(!drift.corrected);

    reconcile(&mut p, &app(), &mut platform, 800);
    assert_eq!(platform.asked(), [Effect::Read], "still left as it is");
    assert_eq!(condition(&p, Type::Ready).1, "Drifted");

    // The user answers with a spec change: the policy acts on it.
    p.metadata.generation = Some(2);
    reconcile(&mut p, &app(), &mut platform, 900);
    assert_eq!(platform.asked(), [Effect::Read, Effect::EnableSharing(AppDetails::default()), Effect::Read]);
    assert!(condition(&p, Type::Ready).0);
}

#[test]
fn a_drift_reported_ends_when_the_console_agrees_with_the_spec_again() {
    let mut platform = Platform::default();
    let mut p = jira().reporting_drift();
    reconcile(&mut p, &app(), &mut platform, 100);
    platform.shared = false;
    reconcile(&mut p, &app(), &mut platform, 700);
    platform.shared = true;
    platform.asked();
    reconcile(&mut p, &app(), &mut platform, 701);
    assert_eq!(platform.asked(), [Effect::Read], "not Ready, so read again at once");
    assert!(condition(&p, Type::Ready).0);
}

#[test]
fn a_link_generated_in_the_console_is_taken_as_the_current_link() {
    let mut platform = Platform::default();
    let mut p = jira();
    reconcile(&mut p, &app(), &mut platform, 100);
    platform.asked();
    platform.console_generates(&["jira"]);
    let r = reconcile(&mut p, &app(), &mut platform, 700);
    assert_eq!(platform.asked(), [Effect::Read], "a link generated outside cannot be undone: no new one");
    assert_eq!(link_of(&p).as_deref(), Some("https://link/2"));
    assert!(reasons_of(&r).contains(&EventReason::DriftCorrected));
    assert_eq!(p.status.as_ref().unwrap().last_drift.as_ref().unwrap().change, DriftChange::LinkReplaced);
    // Generated for other products, the link is generated again for the spec's.
    platform.console_generates(&["confluence"]);
    reconcile(&mut p, &app(), &mut platform, 1300);
    assert_eq!(platform.asked(), [Effect::Read, Effect::GenerateLink(vec!["jira".into()])]);
    assert_eq!(p.status.as_ref().unwrap().link_products, ["jira"]);
}

#[test]
fn a_listed_app_is_refused_from_what_the_platform_reads_and_a_licensed_one_without_asking() {
    let mut platform = Platform { listed: true, ..Default::default() };
    let mut p = jira();
    reconcile(&mut p, &app(), &mut platform, 100);
    assert_eq!(platform.asked(), [Effect::Read], "nothing is changed for a listed app");
    let (ready, reason, message) = condition(&p, Type::Ready);
    assert!(!ready && reason == "ListedOnMarketplace" && message.contains("as the platform reports"), "{message}");
    assert!(p.status.as_ref().unwrap().platform.as_ref().unwrap().listed_on_marketplace);

    let mut licensed = app();
    licensed.status.as_mut().unwrap().environments[0].versions[0].licensing = true;
    let (mut p, mut platform) = (jira(), Platform::default());
    reconcile(&mut p, &licensed, &mut platform, 100);
    assert!(platform.asked().is_empty(), "the app's own observation of requiresLicense is enough");
    let (_, reason, message) = condition(&p, Type::Ready);
    assert_eq!(reason, "LicensedApp");
    assert!(message.contains("share an unlicensed copy of the app instead"));
}

#[test]
fn a_refused_distribution_operation_stays_on_the_policy_and_an_outage_is_retried() {
    let mut platform = Platform {
        refuse: Some(PlatformError::new(ErrorKind::Refused, "forgeops_getAppSharing", "HTTP 401")),
        ..Default::default()
    };
    let mut p = jira();
    let r = reconcile(&mut p, &app(), &mut platform, 100);
    assert!(r.decision.retry.is_none(), "a refusal is not retried by backoff");
    assert_eq!(r.decision.requeue, Some(DEFAULT_REFRESH_INTERVAL), "but looked at again at the interval");
    let (ready, reason, message) = condition(&p, Type::Ready);
    assert!(!ready && reason == "DistributionRefused" && message.contains("HTTP 401"), "{message}");
    assert!(condition(&p, Type::Stalled).0);

    platform.refuse = Some(PlatformError::new(ErrorKind::Unavailable, "op", "down"));
    let r = reconcile(&mut p, &app(), &mut platform, 101);
    assert!(r.decision.retry.is_some());
    assert_eq!(
        condition(&p, Type::Reconciling),
        (true, "PlatformError".into(), "op: down (retrying with backoff)".into())
    );

    platform.refuse = Some(PlatformError::new(ErrorKind::Unsupported, "op", "off"));
    reconcile(&mut p, &app(), &mut platform, 102);
    let (_, reason, message) = condition(&p, Type::Ready);
    assert_eq!(reason, "DistributionUnsupported");
    assert!(message.contains("/console/myapps/insights/distribution"), "{message}");
}

#[test]
fn deleting_with_stop_sharing_turns_sharing_off_first_and_keep_leaves_it() {
    let mut platform = Platform::default();
    let mut p = jira().stops_sharing_when_deleted();
    reconcile(&mut p, &app(), &mut platform, 100);
    assert_eq!(p.finalizers(), [FINALIZER], "the finalizer comes before anything is shared");
    assert!(platform.shared);
    platform.asked();
    p.metadata.deletion_timestamp = Some(at(200));
    let r = reconcile(&mut p, &app(), &mut platform, 200);
    assert!(r.gone);
    assert_eq!(platform.asked(), [Effect::Read, Effect::DisableSharing]);
    assert!(!platform.shared);

    // The platform cannot be asked: the object goes, and an Event says sharing was left.
    let mut p = jira().stops_sharing_when_deleted();
    let mut platform = Platform::default();
    reconcile(&mut p, &app(), &mut platform, 100);
    p.metadata.deletion_timestamp = Some(at(200));
    platform.refuse = Some(PlatformError::new(ErrorKind::Unsupported, "op", "off"));
    let r = reconcile(&mut p, &app(), &mut platform, 200);
    assert!(r.gone);
    assert_eq!(reasons_of(&r), [EventReason::LeftShared]);
    // An outage holds the deletion and is retried.
    let mut p = jira().stops_sharing_when_deleted();
    reconcile(&mut p, &app(), &mut platform, 100);
    p.metadata.deletion_timestamp = Some(at(200));
    platform.refuse = Some(PlatformError::new(ErrorKind::Unavailable, "op", "down"));
    let r = reconcile(&mut p, &app(), &mut platform, 200);
    assert!(!r.gone && r.decision.retry.is_some());

    // Keep: no finalizer, and deleting asks nothing.
    let mut p = jira();
    let mut platform = Platform::default();
    reconcile(&mut p, &app(), &mut platform, 100);
    assert!(p.finalizers().is_empty());
    platform.asked();
    p.metadata.deletion_timestamp = Some(at(200));
    reconcile(&mut p, &app(), &mut platform, 200);
    assert!(platform.asked().is_empty() && platform.shared);
}

#[test]
fn a_policy_that_does_not_govern_the_app_never_asks_the_platform() {
    let theirs = Claim::Theirs("team-a/insights".into());
    for (governing, claim, reason) in
        [(None, &theirs, "Conflict"), (Some("first"), &Claim::Ours, "Conflict"), (None, &Claim::Unclaimed, "Claiming")]
    {
        for mut p in [jira(), DistributionPolicy::test("p").generation(1)] {
            let mut platform = Platform { shared: true, ..Default::default() };
            reconcile_as(&mut p, Some(&app()), governing, claim, &mut platform, 100);
            assert!(platform.asked().is_empty(), "a non-governing policy sends nothing, Disabled or not");
            assert_eq!(condition(&p, Type::Sharing).1, reason);
        }
    }
    let mut p = jira();
    reconcile_as(&mut p, Some(&app()), Some("first"), &Claim::Ours, &mut Platform::default(), 100);
    assert!(condition(&p, Type::Ready).2.contains("DistributionPolicy first already governs sharing of app insights"));
    let mut p = jira();
    reconcile_as(&mut p, None, None, &Claim::Unclaimed, &mut Platform::default(), 100);
    assert_eq!(condition(&p, Type::Ready).1, "AppNotFound");
}

#[test]
fn products_must_include_the_required_one_and_only_supported_ones() {
    let mut p = DistributionPolicy::test("p").enabled().products([Product::Confluence]).generation(1);
    let mut platform = Platform::default();
    reconcile(&mut p, &app(), &mut platform, 100);
    assert!(platform.asked().is_empty(), "no link for the wrong products");
    assert_eq!(condition(&p, Type::Ready).1, "ProductsNotSupported");
    assert!(condition(&p, Type::Ready).2.contains("must include jira"));
    let mut p = DistributionPolicy::test("p").enabled().products([Product::Jira, Product::Bitbucket]).generation(1);
    reconcile(&mut p, &app(), &mut platform, 100);
    assert!(condition(&p, Type::Ready).2.contains("does not support bitbucket"));
    let mut p = jira();
    reconcile(&mut p, &ForgeApp::test("insights").read_as("dev").deploys(vec![]), &mut platform, 100);
    assert_eq!(condition(&p, Type::Ready).1, "NotDeployed");
}

#[test]
fn a_change_of_products_issues_a_new_link_and_says_so_while_it_stands() {
    let mut platform = Platform::default();
    let mut p = jira();
    reconcile(&mut p, &app(), &mut platform, 100);
    p.spec.products = vec![Product::Jira, Product::Confluence];
    p.metadata.generation = Some(2);
    let r = reconcile(&mut p, &app(), &mut platform, 110);
    assert!(reasons_of(&r).contains(&EventReason::LinkRegenerated));
    let s = p.status.clone().unwrap();
    assert_eq!(s.replaced_link_products, ["jira"]);
    assert!(condition(&p, Type::Sharing).2.contains("a new link was issued for products jira, confluence"));
    let again = reconcile(&mut p, &app(), &mut platform, 120);
    assert_eq!(p.status.clone().unwrap(), s, "said while the link stands, and no write");
    assert!(again.decision.events.is_empty());
}

#[test]
fn the_oldest_policy_governs_an_app() {
    let a = DistributionPolicy::test("b-older").enabled().products([Product::Jira]).created_at(10);
    let b = DistributionPolicy::test("a-newer").enabled().products([Product::Jira]).created_at(20);
    let all = [b.clone(), a.clone()];
    assert_eq!(governing(&all, "insights").unwrap().name_any(), "b-older");
    assert!(governing(&all, "other").is_none());
}

#[test]
fn app_details_from_the_spec_are_sent_when_sharing_is_turned_on() {
    let mut p = jira();
    p.spec.app_details = Some(crate::api::AppDetails {
        vendor_name: Some("Acme".into()),
        privacy_policy: Some("https://acme.example/privacy".into()),
        terms_of_service: Some("https://acme.example/terms".into()),
        contact_link: None,
    });
    let mut platform = Platform::default();
    reconcile(&mut p, &app(), &mut platform, 100);
    let sent = platform.asked().into_iter().find_map(|e| match e {
        Effect::EnableSharing(d) => Some(d),
        _ => None,
    });
    assert_eq!(sent.unwrap().vendor_name.as_deref(), Some("Acme"));
}

#[test]
fn with_on_drift_report_a_console_link_for_other_products_is_reported_not_replaced() {
    let mut platform = Platform::default();
    let mut p = jira().reporting_drift();
    reconcile(&mut p, &app(), &mut platform, 100);
    platform.asked();
    platform.console_generates(&["confluence"]);
    let r = reconcile(&mut p, &app(), &mut platform, 700);
    assert_eq!(platform.asked(), [Effect::Read], "no link generated over the console's");
    assert!(reasons_of(&r).contains(&EventReason::DriftDetected));
    assert_eq!(condition(&p, Type::Ready).1, "Drifted");
}
