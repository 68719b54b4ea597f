use super::*;
use crate::api::{AppVersion, UpgradeStep};
use crate::ownership::Claim;

fn spec(from: u32, to: u32) -> BulkUpgradeSpec {
    BulkUpgradeSpec { from_major: from, to_major: to, ..crate::api::BulkUpgrade::test("any").spec }
}

fn reasons(r: &[IneligibleReason]) -> Vec<&str> {
    r.iter().map(|r| r.reason.as_str()).collect()
}

#[test]
fn the_same_permissions_are_eligible() {
    let app = ForgeApp::test("insights").read_as("dev").deploys(vec![
        AppVersion::test(1, 0).scopes(["read"]).egress(["a.example"]),
        AppVersion::test(2, 0).scopes(["read"]).egress(["a.example"]),
    ]);
    assert!(eligibility(Some(&app), &spec(1, 2)).is_empty());
}

#[test]
fn removing_scopes_or_egress_and_adding_sql_are_eligible() {
    let app = ForgeApp::test("insights").read_as("dev").deploys(vec![
        AppVersion::test(1, 0).scopes(["read", "write"]).egress(["a.example"]),
        AppVersion::test(2, 0).scopes(["read"]).sql(),
    ]);
    assert!(eligibility(Some(&app), &spec(1, 2)).is_empty());
}

#[test]
fn a_re_categorised_egress_or_a_new_remote_is_not_eligible() {
    let base = AppVersion::test(1, 0).scopes(["read"]).egress(["a.example"]);
    let analytics = ForgeApp::test("insights").read_as("dev").deploys(vec![
        base.clone(),
        AppVersion::test(2, 0).scopes(["read"]).egress(["a.example"]).egress_category("a.example", "ANALYTICS"),
    ]);
    let r = eligibility(Some(&analytics), &spec(1, 2));
    assert_eq!(reasons(&r), vec!["AddsEgress"]);
    assert_eq!(r[0].detail, "adds egress a.example re-categorised from none to ANALYTICS");
    let remote = ForgeApp::test("insights").read_as("dev").deploys(vec![
        base.clone(),
        AppVersion::test(2, 0).scopes(["read"]).egress(["a.example"]).remotes(["crm https://crm.example"]),
    ]);
    let r = eligibility(Some(&remote), &spec(1, 2));
    assert_eq!((reasons(&r), r[0].detail.as_str()), (vec!["AddsPermissions"], "adds remote crm https://crm.example"));
}

#[test]
fn each_rule_alone() {
    let base = AppVersion::test(1, 0).scopes(["read"]).egress(["a.example"]);
    let scope = ForgeApp::test("insights").read_as("dev").deploys(vec![
        base.clone(),
        AppVersion::test(2, 0).scopes(["read", "write:confluence-content"]).egress(["a.example"]),
    ]);
    let r = eligibility(Some(&scope), &spec(1, 2));
    assert_eq!(reasons(&r), vec!["AddsScopes"]);
    assert_eq!(r[0].detail, "adds scope write:confluence-content");
    let egress = ForgeApp::test("insights")
        .read_as("dev")
        .deploys(vec![base.clone(), AppVersion::test(2, 0).scopes(["read"]).egress(["a.example", "b.example"])]);
    let r = eligibility(Some(&egress), &spec(1, 2));
    assert_eq!((reasons(&r), r[0].detail.as_str()), (vec!["AddsEgress"], "adds egress b.example"));
    let licensing = ForgeApp::test("insights")
        .read_as("dev")
        .deploys(vec![base.clone(), AppVersion::test(2, 0).scopes(["read"]).egress(["a.example"]).licensed()]);
    assert_eq!(reasons(&eligibility(Some(&licensing), &spec(1, 2))), vec!["LicensingChanged"]);
    let unlicensing = ForgeApp::test("insights")
        .read_as("dev")
        .deploys(vec![AppVersion::test(1, 0).scopes(["read"]).licensed(), AppVersion::test(2, 0).scopes(["read"])]);
    assert_eq!(reasons(&eligibility(Some(&unlicensing), &spec(1, 2))), vec!["LicensingChanged"]);
    let only_one = ForgeApp::test("insights").read_as("dev").deploys(vec![base]);
    let r = eligibility(Some(&only_one), &spec(1, 2));
    assert_eq!(
        (reasons(&r), r[0].detail.as_str()),
        (vec!["MajorNotDeployed"], "major 2 is not deployed in environment production")
    );
    assert_eq!(reasons(&eligibility(None, &spec(1, 2))), vec!["AppNotFound"]);
    assert_eq!(reasons(&eligibility(Some(&scope), &spec(2, 2))), vec!["ToMajorNotNewer"]);
}

#[test]
fn combinations_list_every_failed_rule() {
    let app = ForgeApp::test("insights").read_as("dev").deploys(vec![
        AppVersion::test(1, 0).scopes(["read"]).egress(["a.example"]),
        AppVersion::test(3, 0).scopes(["read", "write", "admin"]).egress(["b.example"]).sql().licensed(),
    ]);
    let r = eligibility(Some(&app), &spec(1, 3));
    assert_eq!(reasons(&r), vec!["AddsScopes", "AddsEgress", "LicensingChanged"]);
    assert_eq!(r[0].detail, "adds scope admin, adds scope write");
    assert_eq!(reasons(&eligibility(Some(&app), &spec(1, 2))), vec!["MajorNotDeployed"]);
}

#[test]
fn the_latest_minors_are_compared() {
    let mut versions = vec![AppVersion::test(1, 0).scopes(["read"]), AppVersion::test(2, 0).scopes(["read", "write"])];
    assert_eq!(
        reasons(&eligibility(Some(&ForgeApp::test("insights").read_as("dev").deploys(versions.clone())), &spec(1, 2))),
        vec!["AddsScopes"]
    );
    versions.push(AppVersion::test(2, 1).scopes(["read"]));
    assert!(eligibility(Some(&ForgeApp::test("insights").read_as("dev").deploys(versions)), &spec(1, 2)).is_empty());
}

#[test]
fn installations_pinned_to_another_major_are_named() {
    let all = [
        Installation::test("free").installed_major(1),
        Installation::test("pinned").installed_major(1).pinned_to(1),
        Installation::test("pinned-to-target").installed_major(1).pinned_to(2),
        Installation::test("already-moved").installed_major(3).pinned_to(3),
    ];
    assert_eq!(pinned(&spec(1, 2), &all), vec!["pinned"]);
}

#[test]
fn the_app_view_reads_ids_account_and_versions() {
    let app = ForgeApp::test("insights")
        .read_as("dev")
        .deploys(vec![AppVersion::test(1, 0).scopes(["read"]), AppVersion::test(2, 3).scopes(["read"])]);
    let AppView::Read(f) = app_view(Some(&app), &spec(1, 2), vec![], &Claim::Ours) else { panic!("read") };
    assert_eq!(f.source, Some(VersionRef { id: "v-1-0".into(), version: "1.0.0".into() }));
    assert_eq!(f.target, Some(VersionRef { id: "v-2-3".into(), version: "2.3.0".into() }));
    assert_eq!(app_view(None, &spec(1, 2), vec![], &Claim::Ours), AppView::Missing);
    let mut unread = app.clone();
    unread.status = None;
    assert_eq!(app_view(Some(&unread), &spec(1, 2), vec![], &Claim::Ours), AppView::NotRead);
}

#[test]
fn an_environment_its_app_does_not_manage_is_ineligible_at_once_and_holds_no_place() {
    let app = ForgeApp::test("insights").read_as("dev").deploys(vec![AppVersion::test(1, 0)]);
    let mut typo = spec(1, 2);
    typo.environment = "prodution".into();
    let view = app_view(Some(&app), &typo, vec![], &Claim::Ours);
    // Test-only: the assertion's panic.
    let AppView::Unmanaged(reasons) = &view else { panic!("not waiting to be read: {view:?}") };
    assert_eq!(reasons[0].reason, Ineligibility::EnvironmentNotManaged);
    assert!(reasons[0].detail.contains("does not manage environment prodution (it manages production)"));
    let mut c = Case::new();
    c.spec = typo;
    c.app = view;
    let d = c.decide();
    assert_eq!(state(&d), BulkUpgradeState::Ineligible, "not Pending: nothing will change by waiting");
    assert_eq!(cond(&d, Type::Stalled), ("True".into(), "EnvironmentNotManaged".into()));
    assert!(!d.effects.contains(&Effect::TakeLeases), "holds no Lease: {:?}", d.effects);
    assert!(d.effects.contains(&Effect::ReleaseLeases));
}

#[test]
fn an_app_that_cannot_be_read_makes_the_upgrade_stalled_not_pending() {
    use crate::api::Condition;
    let mut app = ForgeApp::test("insights");
    let stalled = Condition {
        type_: "Stalled".into(),
        status: "True".into(),
        reason: "CredentialsNotGranted".into(),
        message: "namespace team-b may not use the operator's shared credentials".into(),
        last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        observed_generation: None,
    };
    app.status = Some(crate::api::ForgeAppStatus { conditions: vec![stalled], ..Default::default() });
    let view = app_view(Some(&app), &spec(1, 2), vec![], &Claim::Ours);
    // Test-only: the assertion's panic.
    let AppView::Unmanaged(reasons) = &view else { panic!("stalled, not waiting: {view:?}") };
    assert!(reasons[0].detail.contains("CredentialsNotGranted"), "{}", reasons[0].detail);
    let mut c = Case::new();
    c.app = view;
    let d = c.decide();
    assert_eq!(state(&d), BulkUpgradeState::Ineligible);
    assert!(!d.effects.contains(&Effect::TakeLeases));
}

#[test]
fn an_upgrade_of_an_app_another_namespace_owns_is_ineligible_and_sends_nothing() {
    let app = ForgeApp::test("insights").read_as("dev").deploys(vec![AppVersion::test(1, 0)]);
    let theirs = Claim::Theirs("team-a/insights".into());
    let view = app_view(Some(&app), &spec(1, 2), vec![], &theirs);
    // Test-only: the assertion's panic.
    let AppView::Unmanaged(reasons) = &view else { panic!("ineligible: {view:?}") };
    assert_eq!(reasons[0].reason, Ineligibility::Conflict);
    assert!(reasons[0].detail.contains("team-a/insights"), "{}", reasons[0].detail);
    let mut c = Case::new();
    c.app = view;
    let d = c.decide();
    assert_eq!(state(&d), BulkUpgradeState::Ineligible);
    assert_eq!(cond(&d, Type::Stalled), ("True".into(), "Conflict".into()));
    assert!(!d.effects.contains(&Effect::TakeLeases), "holds no place: {:?}", d.effects);
    assert_eq!(app_view(Some(&app), &spec(1, 2), vec![], &Claim::Unclaimed), AppView::NotRead, "waits for the claim");
}

// --- admission ---

#[test]
fn only_an_upgrade_waiting_for_a_lease_holds_a_place_in_the_queue() {
    assert!(holds_a_place(BulkUpgradeState::Queued, false, false));
    for state in [BulkUpgradeState::Pending, BulkUpgradeState::Ineligible, BulkUpgradeState::Paused] {
        assert!(!holds_a_place(state, false, false), "{state:?}");
    }
    assert!(!holds_a_place(BulkUpgradeState::Queued, true, false), "cancelled");
    assert!(!holds_a_place(BulkUpgradeState::Queued, false, true), "being deleted");
}

fn hold(holder: &str, live: bool) -> Option<LeaseHold> {
    Some(LeaseHold { holder: holder.into(), name: format!("ns/{holder}"), live })
}

#[test]
fn admission_by_leases() {
    let free = Leases { environment: None, account: None, slots: vec![None, None] };
    assert_eq!(admission("me", &free, None), Admission::Free);
    let env = Leases { environment: hold("a", true), ..free.clone() };
    assert_eq!(admission("me", &env, None), Admission::Busy { reason: Reason::EnvironmentBusy, holder: "ns/a".into() });
    let expired = Leases { environment: hold("a", false), ..free.clone() };
    assert_eq!(admission("me", &expired, None), Admission::Free, "an expired Lease is taken over");
    let account = Leases { account: hold("b", true), ..free.clone() };
    assert_eq!(admission("me", &account, None), Admission::Busy { reason: Reason::AccountBusy, holder: "ns/b".into() });
    let full = Leases { slots: vec![hold("c", true), hold("d", true)], ..free.clone() };
    assert_eq!(
        admission("me", &full, None),
        Admission::Busy { reason: Reason::GlobalLimitReached, holder: "ns/c".into() }
    );
    let one_left = Leases { slots: vec![hold("c", true), None], ..free.clone() };
    assert_eq!(admission("me", &one_left, None), Admission::Free);
    let none = Leases { slots: vec![], ..free.clone() };
    assert!(matches!(admission("me", &none, None), Admission::Busy { reason: Reason::GlobalLimitReached, .. }));
}

#[test]
fn admission_is_first_come_first_served_but_a_holder_keeps_its_leases() {
    let free = Leases { environment: None, account: None, slots: vec![None] };
    let older = Some((Reason::EnvironmentBusy, "ns/older".to_string()));
    assert_eq!(
        admission("me", &free, older.clone()),
        Admission::Busy { reason: Reason::EnvironmentBusy, holder: "ns/older".into() }
    );
    let mine = Leases { environment: hold("me", true), account: hold("me", true), slots: vec![hold("me", true)] };
    assert_eq!(admission("me", &mine, older), Admission::Free);
}

#[test]
fn older_waiting_upgrades_go_first() {
    let t = |s: i64| jiff::Timestamp::from_second(s).unwrap();
    let other = |name: &str, created: i64, env: bool, account: bool, slot: bool| Other {
        name: name.into(),
        created: t(created),
        waiting: true,
        same_environment: env,
        same_account: account,
        for_slot: slot,
    };
    let others = vec![
        other("same-second", 100, true, false, false),
        other("account", 90, false, true, false),
        other("env", 95, true, false, false),
        other("unrelated", 80, false, false, false),
    ];
    assert_eq!(older_waiting(t(100), &others), Some((Reason::AccountBusy, "account".into())));
    assert_eq!(older_waiting(t(90), &others), None);
    let mut not_waiting = others.clone();
    not_waiting.iter_mut().for_each(|o| o.waiting = false);
    assert_eq!(older_waiting(t(200), &not_waiting), None);
    assert_eq!(
        older_waiting(t(200), &[other("slot", 10, false, false, true)]),
        Some((Reason::GlobalLimitReached, "slot".into()))
    );
}

// --- planning and the failure gate ---

fn record(step: u32, completed: u32, failed: u32, remaining: Option<u32>) -> RolloutRecord {
    RolloutRecord {
        id: format!("r-{step}-{completed}"),
        step,
        source_version: "1.0.0".into(),
        target_version: "2.0.0".into(),
        source_version_id: "v-1-0".into(),
        target_version_id: "v-2-0".into(),
        limit: None,
        upgrade_limit: Some(1800),
        status: RolloutPhase::Complete,
        started_at: None,
        completed_at: None,
        completed,
        failed,
        pending: 0,
        remaining,
        adopted: false,
        forgotten: false,
        reconstructed: false,
    }
}

fn steps(limits: &[Option<u32>]) -> Vec<UpgradeStep> {
    limits.iter().map(|l| UpgradeStep { limit: *l, ..Default::default() }).collect()
}

#[test]
fn one_unlimited_step_continues_while_the_platform_left_some() {
    let s = spec(1, 2);
    assert_eq!(plan(&s, &[], 2500), Plan::Start { step: 1, limit: None });
    let first = record(1, 1800, 0, Some(700));
    assert_eq!(plan(&s, std::slice::from_ref(&first), 700), Plan::Start { step: 1, limit: None });
    let second = record(1, 700, 0, Some(0));
    assert_eq!(plan(&s, &[first, second], 0), Plan::Done(Reason::Complete));
    assert_eq!(plan(&s, &[], 0), Plan::Done(Reason::NothingToUpgrade));
}

#[test]
fn steps_run_in_order_with_their_limits() {
    let mut s = spec(1, 2);
    s.steps = steps(&[Some(10), Some(200), None]);
    assert_eq!(plan(&s, &[], 300), Plan::Start { step: 1, limit: Some(10) });
    let r1 = record(1, 10, 0, Some(290));
    assert_eq!(plan(&s, std::slice::from_ref(&r1), 290), Plan::Start { step: 2, limit: Some(200) });
    let r2 = record(2, 200, 0, Some(90));
    assert_eq!(plan(&s, &[r1.clone(), r2.clone()], 90), Plan::Start { step: 3, limit: None });
    let r3 = record(3, 90, 0, Some(0));
    assert_eq!(plan(&s, &[r1, r2, r3], 0), Plan::Done(Reason::Complete));
}

#[test]
fn a_step_larger_than_the_platform_cap_takes_more_rollouts() {
    let mut s = spec(1, 2);
    s.steps = steps(&[Some(2000), None]);
    let r1 = record(1, 1800, 0, Some(700));
    assert_eq!(plan(&s, std::slice::from_ref(&r1), 700), Plan::Start { step: 1, limit: Some(200) });
    let r2 = record(1, 200, 0, Some(500));
    assert_eq!(plan(&s, &[r1, r2], 500), Plan::Start { step: 2, limit: None });
}

#[test]
fn the_overall_limit_caps_every_step() {
    let mut s = spec(1, 2);
    s.steps = steps(&[Some(10), None]);
    s.limit = Some(15);
    let r1 = record(1, 10, 0, Some(90));
    assert_eq!(plan(&s, std::slice::from_ref(&r1), 90), Plan::Start { step: 2, limit: Some(5) });
    let r2 = record(2, 5, 0, Some(85));
    assert_eq!(plan(&s, &[r1, r2], 85), Plan::Done(Reason::LimitReached));
}

#[test]
fn an_adopted_rollout_without_remaining_uses_the_count() {
    let s = spec(1, 2);
    let adopted = record(1, 8, 2, None);
    assert_eq!(plan(&s, std::slice::from_ref(&adopted), 2), Plan::Done(Reason::Complete), "only its failures left");
    assert_eq!(plan(&s, &[adopted], 30), Plan::Start { step: 1, limit: None });
}

#[test]
fn the_failure_gate() {
    let mut s = spec(1, 2);
    assert_eq!(gate(&s, 0, 100), None);
    s.max_failures = Some(2);
    assert_eq!(gate(&s, 10, 2), None);
    assert!(gate(&s, 10, 3).unwrap().contains("more than maxFailures 2"));
    s.max_failures = None;
    s.max_failure_percent = Some(10);
    assert_eq!(gate(&s, 9, 1), None, "10% is not more than 10%");
    assert!(gate(&s, 8, 2).unwrap().contains("2 of 10"));
    assert_eq!(gate(&s, 0, 0), None);
    s.max_failure_percent = Some(0);
    assert!(gate(&s, 5, 1).is_some());
}

// --- decide: every transition ---

fn now() -> Time {
    Time(jiff::Timestamp::from_second(1_800_000_000).unwrap())
}

fn facts() -> AppFacts {
    AppFacts {
        app_id: "ari:cloud:ecosystem::app/insights".into(),
        account: "acct".into(),
        source: Some(VersionRef { id: "v-1-0".into(), version: "1.0.0".into() }),
        target: Some(VersionRef { id: "v-2-0".into(), version: "2.0.0".into() }),
        reasons: vec![],
        pinned: vec![],
    }
}

fn eligible_platform(on_source: u32) -> PlatformView {
    PlatformView { upgradeable: Some(true), on_source: Some(on_source), ..Default::default() }
}

struct Case {
    spec: BulkUpgradeSpec,
    previous: BulkUpgradeStatus,
    app: AppView,
    platform: PlatformView,
    admission: Admission,
    asked: Asked,
}

impl Case {
    fn new() -> Case {
        Case {
            spec: spec(1, 2),
            previous: BulkUpgradeStatus::default(),
            app: AppView::Read(facts()),
            platform: eligible_platform(100),
            admission: Admission::Free,
            asked: Asked::default(),
        }
    }

    fn decide(&self) -> Decision {
        decide(&Inputs {
            spec: &self.spec,
            generation: Some(1),
            previous: &self.previous,
            now: now(),
            instant: now().0,
            app: self.app.clone(),
            platform: self.platform.clone(),
            admission: self.admission.clone(),
            asked: self.asked.clone(),
        })
    }
}

fn cond(d: &Decision, t: Type) -> (String, String) {
    let c = conds::find(&d.status.conditions, t).unwrap();
    (c.status.to_string(), c.reason.to_string())
}

/// Test-only: a missing condition fails the test.
fn cond_message(d: &Decision, t: Type) -> String {
    conds::find(&d.status.conditions, t).unwrap().message.clone()
}

fn state(d: &Decision) -> BulkUpgradeState {
    d.status.state.unwrap()
}

fn running(step: u32, pending: u32, remaining: Option<u32>) -> RolloutRecord {
    RolloutRecord { status: RolloutPhase::Running, pending, ..record(step, 0, 0, remaining) }
}

fn seen(id: &str, status: RolloutStatus, completed: u64, failed: u64, pending: u64) -> Rollout {
    Rollout {
        id: id.into(),
        status,
        source_version_id: "v-1-0".into(),
        target_version_id: "v-2-0".into(),
        created_at: Some("1800000000500".into()),
        completed_at: (status != RolloutStatus::Running).then(|| "1800000009000".into()),
        completed,
        failed,
        pending,
        upgrade_limit: Some(1800),
    }
}

#[test]
fn an_app_not_read_yet_waits_in_pending() {
    let mut c = Case::new();
    c.app = AppView::NotRead;
    let d = c.decide();
    assert_eq!(state(&d), BulkUpgradeState::Pending);
    assert_eq!(cond(&d, Type::Admitted), ("False".into(), "AppNotRead".into()));
    assert_eq!(cond(&d, Type::Reconciling).0, "True");
    assert_eq!(d.requeue, Requeue::Queued);
}

#[test]
fn a_missing_app_or_major_is_ineligible_and_stalled() {
    let mut c = Case::new();
    c.app = AppView::Missing;
    let d = c.decide();
    assert_eq!(state(&d), BulkUpgradeState::Ineligible);
    assert_eq!(cond(&d, Type::Eligible), ("False".into(), "AppNotFound".into()));
    assert_eq!(cond(&d, Type::Stalled), ("True".into(), "AppNotFound".into()));
    assert_eq!(d.effects, vec![Effect::ReleaseLeases]);
    let mut c = Case::new();
    let mut f = facts();
    f.target = None;
    f.reasons = vec![ineligible(Ineligibility::MajorNotDeployed, "major 2 is not deployed".into())];
    c.app = AppView::Read(f);
    let d = c.decide();
    assert_eq!(cond(&d, Type::Eligible), ("False".into(), "MajorNotDeployed".into()));
}

#[test]
fn a_platform_refusal_of_eligibility_is_explained_by_the_difference() {
    let mut c = Case::new();
    c.platform.upgradeable = Some(false);
    let mut f = facts();
    f.reasons = vec![ineligible(Ineligibility::AddsScopes, "adds scope write".into())];
    c.app = AppView::Read(f);
    let d = c.decide();
    assert_eq!(state(&d), BulkUpgradeState::Ineligible);
    assert_eq!(cond(&d, Type::Eligible), ("False".into(), "AddsScopes".into()));
    assert_eq!(d.status.ineligible_reasons[0].detail, "adds scope write");
    assert_eq!(d.requeue, Requeue::Recheck);
    // No difference known here: the platform's refusal itself.
    c.app = AppView::Read(facts());
    let d = c.decide();
    assert_eq!(cond(&d, Type::Eligible), ("False".into(), "PlatformRefused".into()));
}

#[test]
fn local_differences_do_not_overrule_the_platform() {
    let mut c = Case::new();
    let mut f = facts();
    f.reasons = vec![ineligible(Ineligibility::AddsEgress, "adds egress x".into())];
    c.app = AppView::Read(f);
    assert_eq!(state(&c.decide()), BulkUpgradeState::Running, "the platform says upgradeable");
}

#[test]
fn pinned_installations_hold_the_upgrade() {
    let mut c = Case::new();
    let mut f = facts();
    f.pinned = vec!["a".into(), "b".into()];
    c.app = AppView::Read(f);
    let d = c.decide();
    assert_eq!(cond(&d, Type::Eligible), ("False".into(), "PinnedInstallations".into()));
    assert!(d.status.ineligible_reasons[0].detail.contains("(a, b)"));
    assert_eq!(d.requeue, Requeue::Recheck);
    // The platform's refusal comes first; the pinned installations are listed after it.
    c.platform.upgradeable = Some(false);
    let mut f = facts();
    f.pinned = vec!["a".into()];
    f.reasons = vec![ineligible(Ineligibility::AddsScopes, "adds scope write".into())];
    c.app = AppView::Read(f);
    let d = c.decide();
    assert_eq!(cond(&d, Type::Eligible), ("False".into(), "AddsScopes".into()));
    assert_eq!(reasons(&d.status.ineligible_reasons), vec!["AddsScopes", "PinnedInstallations"]);
}

#[test]
fn a_queued_upgrade_asks_the_platform_nothing() {
    let mut c = Case::new();
    c.platform = PlatformView::default();
    c.admission = Admission::Busy { reason: Reason::EnvironmentBusy, holder: "ns/first".into() };
    let d = c.decide();
    assert_eq!(state(&d), BulkUpgradeState::Queued);
    assert_eq!(cond(&d, Type::Eligible), ("False".into(), "Pending".into()));
    assert_eq!(cond(&d, Type::Admitted), ("False".into(), "EnvironmentBusy".into()));
    assert_eq!(d.requeue, Requeue::Queued);
}

#[test]
fn a_busy_lease_queues_with_blocked_by() {
    let mut c = Case::new();
    c.admission = Admission::Busy { reason: Reason::AccountBusy, holder: "ns/first".into() };
    let d = c.decide();
    assert_eq!(state(&d), BulkUpgradeState::Queued);
    assert_eq!(cond(&d, Type::Admitted), ("False".into(), "AccountBusy".into()));
    assert_eq!(d.status.blocked_by.as_deref(), Some("ns/first"));
    assert_eq!(d.effects, vec![Effect::ReleaseLeases]);
    assert_eq!(d.requeue, Requeue::Queued);
}

#[test]
fn admitted_writes_its_intent_then_starts() {
    let c = Case::new();
    let d = c.decide();
    assert_eq!(state(&d), BulkUpgradeState::Running);
    assert_eq!(d.effects, vec![Effect::TakeLeases]);
    assert_eq!(d.requeue, Requeue::Now);
    assert_eq!(d.status.starting, Some(StartingRollout { step: 1, since: MicroTime(now().0) }));
    let mut c = Case::new();
    c.previous = d.status.clone();
    let d2 = c.decide();
    let start =
        RolloutRequest { step: 1, source: facts().source.unwrap(), target: facts().target.unwrap(), limit: None };
    assert_eq!(d2.effects, vec![Effect::TakeLeases, Effect::StartRollout(start.clone())]);
    assert_eq!(cond(&d2, Type::Progressing), ("True".into(), "Starting".into()));

    let answer = StartAnswer::Started {
        started: RolloutStarted {
            rollout_id: "r1".into(),
            upgrade_limit: Some(1800),
            total_eligible_upgrades: Some(100),
            expected_remaining_upgrades: Some(0),
        },
        request: start,
    };
    let (status, requeue) = after_start(&d2, answer, &c.previous.conditions, &c.spec, Some(1), &now());
    assert_eq!(requeue, Requeue::Poll);
    assert_eq!(status.starting, None);
    assert_eq!((status.total, status.pending, status.unprocessed), (100, 100, 0));
    assert_eq!(status.rollouts[0].id, "r1");
    assert_eq!(status.rollouts[0].status, RolloutPhase::Running);
    assert!(status.started_at.is_some());
}

#[test]
fn a_platform_limit_queues_and_the_retry_stays_queued() {
    let mut c = Case::new();
    c.previous.starting = Some(StartingRollout { step: 1, since: MicroTime(now().0) });
    let d = c.decide();
    let answer = StartAnswer::Refused {
        reason: refusal(ErrorKind::RolloutRunning).unwrap(),
        message: "a rollout already running on the platform".into(),
    };
    let (status, requeue) = after_start(&d, answer, &[], &c.spec, Some(1), &now());
    assert_eq!(requeue, Requeue::Platform);
    assert_eq!(status.state, Some(BulkUpgradeState::Queued));
    assert!(status.starting.is_some(), "the intent stays");
    let admitted = conds::find(&status.conditions, Type::Admitted).unwrap();
    assert_eq!((admitted.status.as_str(), admitted.reason.as_str()), ("False", "AppRolloutRunning"));
    // The retry: the start is tried again, the status still says Queued (no flapping).
    c.previous = status;
    let d = c.decide();
    assert!(matches!(d.effects.last(), Some(Effect::StartRollout(_))));
    assert_eq!(state(&d), BulkUpgradeState::Queued);
    assert_eq!(cond(&d, Type::Admitted), ("False".into(), "AppRolloutRunning".into()));
    assert_eq!(refusal(ErrorKind::AccountBusy), Some(Reason::AccountRolloutRunning));
    assert_eq!(refusal(ErrorKind::GlobalLimit), Some(Reason::RolloutsUnavailable));
    assert_eq!(refusal(ErrorKind::Unavailable), None);
}

#[test]
fn a_running_rollout_is_mirrored_and_the_leases_renewed() {
    let mut c = Case::new();
    c.previous.state = Some(BulkUpgradeState::Running);
    c.previous.rollouts = vec![running(1, 100, Some(0))];
    c.platform =
        PlatformView { current: Current::Seen(seen("r-1-0", RolloutStatus::Running, 40, 1, 59)), ..Default::default() };
    let d = c.decide();
    assert_eq!(state(&d), BulkUpgradeState::Running);
    assert_eq!((d.status.upgraded, d.status.failed, d.status.pending), (40, 1, 59));
    assert_eq!(d.effects, vec![Effect::TakeLeases, Effect::RefreshInstallations]);
    assert_eq!(d.requeue, Requeue::Poll);
    // No progress: no refresh.
    c.previous = d.status.clone();
    assert_eq!(c.decide().effects, vec![Effect::TakeLeases]);
    // Paused while running: the rollout runs on.
    c.spec.paused = true;
    let d = c.decide();
    assert_eq!((state(&d), cond(&d, Type::Progressing).1), (BulkUpgradeState::Running, "PauseRequested".into()));
}

#[test]
fn a_finished_rollout_completes_the_upgrade() {
    let mut c = Case::new();
    c.previous.state = Some(BulkUpgradeState::Running);
    c.previous.rollouts = vec![running(1, 100, Some(0))];
    c.platform = PlatformView {
        current: Current::Seen(seen("r-1-0", RolloutStatus::Complete, 100, 0, 0)),
        upgradeable: Some(true),
        on_source: Some(0),
        ..Default::default()
    };
    let d = c.decide();
    assert_eq!(state(&d), BulkUpgradeState::Complete);
    assert_eq!(d.effects, vec![Effect::RefreshInstallations, Effect::ReleaseLeases]);
    assert_eq!(cond(&d, Type::Complete), ("True".into(), "Complete".into()));
    assert_eq!(cond(&d, Type::Ready).0, "True");
    assert_eq!(cond(&d, Type::Reconciling).0, "False");
    let r = &d.status.rollouts[0];
    assert_eq!((r.status, r.completed, r.pending), (RolloutPhase::Complete, 100, 0));
    assert!(r.completed_at.is_some() && d.status.completed_at.is_some());
}

#[test]
fn a_forgotten_rollout_ends_with_the_counts_the_platform_still_shows() {
    // Last seen at 90 done and 10 pending of 100; then the platform forgot the rollout.
    let forgotten = |on_source: u32| {
        let mut c = Case::new();
        c.previous.state = Some(BulkUpgradeState::Running);
        c.previous.total = 100;
        c.previous.rollouts = vec![RolloutRecord { completed: 90, pending: 10, ..running(1, 10, Some(0)) }];
        c.platform = PlatformView { current: Current::Gone, ..eligible_platform(on_source) };
        c.decide()
    };
    let d = forgotten(0);
    let r = &d.status.rollouts[0];
    assert!(r.forgotten && r.reconstructed);
    assert_eq!((r.status, r.completed, r.failed, r.pending), (RolloutPhase::Complete, 100, 0, 0), "none left on 1.0");
    assert_eq!((d.status.upgraded, d.status.pending), (100, 0));
    assert_eq!(state(&d), BulkUpgradeState::Complete);
    let r = forgotten(4).status.rollouts[0].clone();
    assert_eq!((r.completed, r.failed), (96, 4), "four sites still on the source did not move");
    let r = forgotten(50).status.rollouts[0].clone();
    assert_eq!((r.completed, r.failed), (90, 10), "never fewer than last seen");
}

#[test]
fn the_next_step_starts_after_the_gate_and_pause_holds_before_it() {
    let mut c = Case::new();
    c.spec.steps = steps(&[Some(10), None]);
    c.spec.max_failures = Some(1);
    c.previous.state = Some(BulkUpgradeState::Running);
    c.previous.rollouts = vec![record(1, 9, 1, Some(90))];
    c.platform = eligible_platform(91);
    let d = c.decide();
    assert_eq!(d.status.starting.as_ref().map(|s| s.step), Some(2));
    assert_eq!(d.requeue, Requeue::Now);
    // Paused: holds (with the environment and account Leases, no global slot) before step 2.
    c.spec.paused = true;
    let d = c.decide();
    assert_eq!(state(&d), BulkUpgradeState::Paused);
    assert_eq!(d.effects, vec![Effect::TakeLeasesWithoutSlot]);
    assert_eq!(cond(&d, Type::Progressing), ("False".into(), "Paused".into()));
    // The gate: two failures are more than maxFailures 1.
    c.spec.paused = false;
    c.previous.rollouts = vec![record(1, 8, 2, Some(90))];
    let d = c.decide();
    assert_eq!(state(&d), BulkUpgradeState::Failed);
    assert_eq!(cond(&d, Type::Stalled), ("True".into(), "MaxFailuresExceeded".into()));
    assert_eq!(d.effects, vec![Effect::ReleaseLeases]);
}

#[test]
fn paused_before_anything_ran_is_admitted_first() {
    let mut c = Case::new();
    c.spec.paused = true;
    let d = c.decide();
    assert_eq!(state(&d), BulkUpgradeState::Paused);
    assert_eq!(d.effects, vec![Effect::TakeLeasesWithoutSlot]);
    assert_eq!(cond(&d, Type::Admitted).0, "True");
    // Every global slot taken does not keep a paused upgrade from pausing: it needs none.
    c.admission = Admission::Busy { reason: Reason::GlobalLimitReached, holder: "ns/z".into() };
    assert_eq!(state(&c.decide()), BulkUpgradeState::Paused);
    c.admission = Admission::Busy { reason: Reason::EnvironmentBusy, holder: "ns/a".into() };
    assert_eq!(state(&c.decide()), BulkUpgradeState::Queued);
}

#[test]
fn cancel_cancels_the_running_rollout_then_finishes() {
    let mut c = Case::new();
    c.spec.cancelled = true;
    c.previous.state = Some(BulkUpgradeState::Running);
    c.previous.rollouts = vec![running(1, 100, Some(0))];
    c.platform =
        PlatformView { current: Current::Seen(seen("r-1-0", RolloutStatus::Running, 5, 0, 95)), ..Default::default() };
    let d = c.decide();
    assert!(d.effects.contains(&Effect::CancelRollout("r-1-0".into())));
    assert_eq!(cond(&d, Type::Progressing).1, "Cancelling");
    c.previous = d.status;
    c.platform = PlatformView {
        current: Current::Seen(seen("r-1-0", RolloutStatus::Cancelled, 6, 0, 0)),
        ..eligible_platform(94)
    };
    let d = c.decide();
    assert_eq!(state(&d), BulkUpgradeState::Cancelled);
    assert_eq!((d.status.upgraded, d.status.unprocessed), (6, 94));
    assert_eq!(cond(&d, Type::Progressing).1, "Cancelled");
    assert_eq!(cond(&d, Type::Ready), ("True".into(), "Cancelled".into()), "done as asked");
    assert_eq!(cond(&d, Type::Complete).0, "False");
    assert!(d.effects.contains(&Effect::ReleaseLeases));
    // Before anything ran.
    let mut c = Case::new();
    c.spec.cancelled = true;
    assert_eq!(state(&c.decide()), BulkUpgradeState::Cancelled);
}

#[test]
fn a_running_upgrade_whose_app_is_gone_says_so_and_can_still_be_cancelled() {
    let mut c = Case::new();
    c.previous.state = Some(BulkUpgradeState::Running);
    c.previous.rollouts = vec![running(1, 100, Some(0))];
    c.app = AppView::Missing;
    let d = c.decide();
    assert!(d.effects.is_empty(), "nothing to poll or cancel with: {:?}", d.effects);
    assert_eq!((state(&d), cond(&d, Type::Progressing).1), (BulkUpgradeState::Running, "AppGone".into()));
    assert!(cond_message(&d, Type::Ready).contains("recreate the ForgeApp, or set cancelled: true"));
    c.previous = d.status;
    c.spec.cancelled = true;
    let d = c.decide();
    assert_eq!(state(&d), BulkUpgradeState::Cancelled);
    assert!(!d.effects.iter().any(|e| matches!(e, Effect::CancelRollout(_))), "no cancel without credentials");
    assert!(d.effects.contains(&Effect::ReleaseLeases));
    assert!(cond_message(&d, Type::Ready).contains("rollout r-1-0 could not be cancelled on the platform"));
    assert_eq!(cond(&d, Type::Ready).0, "True", "finished as asked");
}

#[test]
fn a_rollout_cancelled_on_the_platform_cancels_the_upgrade() {
    let mut c = Case::new();
    c.previous.state = Some(BulkUpgradeState::Running);
    c.previous.rollouts = vec![running(1, 100, Some(0))];
    c.platform = PlatformView {
        current: Current::Seen(seen("r-1-0", RolloutStatus::Cancelled, 3, 0, 0)),
        ..eligible_platform(97)
    };
    let d = c.decide();
    assert_eq!((state(&d), cond(&d, Type::Progressing).1), (BulkUpgradeState::Cancelled, "CancelledOnPlatform".into()));
}

#[test]
fn a_restart_adopts_the_rollout_it_had_started() {
    let mut c = Case::new();
    c.previous.state = Some(BulkUpgradeState::Running);
    c.previous.starting = Some(StartingRollout { step: 1, since: MicroTime(now().0) });
    c.platform.adoptable = vec![seen("lost", RolloutStatus::Running, 3, 0, 97)];
    let d = c.decide();
    assert_eq!(state(&d), BulkUpgradeState::Running);
    assert!(!d.effects.iter().any(|e| matches!(e, Effect::StartRollout(_))), "no second rollout: {:?}", d.effects);
    let r = &d.status.rollouts[0];
    assert_eq!((r.id.as_str(), r.adopted, r.step, r.source_version.as_str()), ("lost", true, 1, "1.0.0"));
    assert_eq!(d.status.total, 103, "100 on the source version now, 3 upgraded already");
    assert_eq!(d.status.starting, None);
    // One that had already finished is adopted too, and the plan goes on from it.
    c.platform.adoptable = vec![seen("done", RolloutStatus::Complete, 100, 0, 0)];
    c.platform.on_source = Some(0);
    let d = c.decide();
    assert_eq!(d.status.rollouts.len(), 1);
    assert_eq!(state(&d), BulkUpgradeState::Complete);
}

#[test]
fn limit_and_nothing_to_do_complete_with_their_reason() {
    let mut c = Case::new();
    c.platform = eligible_platform(0);
    let d = c.decide();
    assert_eq!((state(&d), cond(&d, Type::Complete).1), (BulkUpgradeState::Complete, "NothingToUpgrade".into()));
    let mut c = Case::new();
    c.spec.limit = Some(3);
    c.previous.state = Some(BulkUpgradeState::Running);
    c.previous.rollouts = vec![record(1, 3, 0, Some(3))];
    c.platform = eligible_platform(3);
    let d = c.decide();
    assert_eq!((state(&d), cond(&d, Type::Complete).1), (BulkUpgradeState::Complete, "LimitReached".into()));
    assert_eq!(d.status.unprocessed, 3);
}

#[test]
fn a_finished_upgrade_only_expires() {
    let mut c = Case::new();
    c.spec.cancelled = true;
    c.spec.ttl_seconds_after_finished = Some(60);
    c.previous.state = Some(BulkUpgradeState::Complete);
    c.previous.completed_at = Some(Time(now().0 - jiff::SignedDuration::from_secs(10)));
    let d = c.decide();
    assert_eq!(state(&d), BulkUpgradeState::Complete, "cancelling a finished upgrade changes nothing");
    assert_eq!(d.effects, vec![Effect::ReleaseLeases]);
    assert_eq!(d.requeue, Requeue::After(Duration::from_secs(51)));
    assert_eq!(d.status.observed_generation, Some(1));
    c.previous.completed_at = Some(Time(now().0 - jiff::SignedDuration::from_secs(61)));
    assert_eq!(c.decide().effects, vec![Effect::ReleaseLeases, Effect::Delete]);
}

#[test]
fn every_reason_has_its_own_name() {
    let names: BTreeSet<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(names.len(), Reason::ALL.len());
    assert_eq!(Type::ALL.len(), 7);
}

#[test]
fn a_platform_failure_keeps_the_records_and_says_what_to_change() {
    let mut c = Case::new();
    c.previous.state = Some(BulkUpgradeState::Running);
    c.previous.rollouts = vec![running(1, 20, None)];
    c.platform.current = Current::Seen(seen("r-1", RolloutStatus::Running, 10, 0, 20));
    let running_status = c.decide().status;
    let what =
        "the platform refused the credentials of dev@acme.example (ns/creds): check the Secret's email and apiToken";
    let failed = platform_failed(&running_status, FailureKind::Credentials, what, Some(1), &now());
    assert_eq!((failed.state, &failed.rollouts), (running_status.state, &running_status.rollouts), "records kept");
    let find = |s: &BulkUpgradeStatus, t: Type| conds::find(&s.conditions, t).cloned().unwrap();
    let ready = find(&failed, Type::Ready);
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "BadCredentials"));
    assert!(
        ready.message.contains("ns/creds") && ready.message.contains("until the Secret holds"),
        "{}",
        ready.message
    );
    assert_eq!(
        (find(&failed, Type::Stalled).status.as_str(), find(&failed, Type::Reconciling).status.as_str()),
        ("True", "False")
    );
    assert_eq!(find(&failed, Type::Progressing), find(&running_status, Type::Progressing), "the rest is untouched");
    assert_eq!(failed.conditions.len(), running_status.conditions.len());
    // The same failure again changes nothing (no status write); a transient one is Reconciling.
    assert_eq!(platform_failed(&failed, FailureKind::Credentials, what, Some(1), &now()), failed);
    let transient = platform_failed(&running_status, FailureKind::Transient, "HTTP 503", Some(1), &now());
    assert_eq!(find(&transient, Type::Reconciling).reason, "PlatformError");
    assert_eq!(find(&transient, Type::Stalled).status, "False");
    // The next decision that reaches the platform renders the state's own conditions again.
    c.previous = failed;
    assert_eq!(cond(&c.decide(), Type::Ready), ("False".into(), "Running".into()));
    assert_eq!(cond(&c.decide(), Type::Stalled).0, "False");
}

#[test]
fn a_failure_that_needs_the_user_is_told_once_and_a_slot_wait_is_read_back() {
    let mut c = Case::new();
    c.previous.state = Some(BulkUpgradeState::Running);
    c.previous.rollouts = vec![running(1, 20, None)];
    c.platform.current = Current::Seen(seen("r-1", RolloutStatus::Running, 10, 0, 20));
    let before = c.decide().status;
    let failed = platform_failed(&before, FailureKind::Credentials, "refused", Some(1), &now());
    assert_eq!(failure_event(&before, &failed, FailureKind::Credentials).map(|e| e.0), Some(Reason::BadCredentials));
    assert_eq!(failure_event(&failed, &failed, FailureKind::Credentials), None, "told already");
    let transient = platform_failed(&before, FailureKind::Transient, "HTTP 503", Some(1), &now());
    assert_eq!(failure_event(&before, &transient, FailureKind::Transient), None, "comes and goes with retries");
    assert!(!waits_for_slot(&before));
    let mut c = Case::new();
    c.admission = Admission::Busy { reason: Reason::GlobalLimitReached, holder: "ns/other".into() };
    assert!(waits_for_slot(&c.decide().status));
}

#[test]
fn pause_durations_read_hours_minutes_and_seconds() {
    assert_eq!(pause_duration("30m"), Some(Duration::from_secs(1800)));
    assert_eq!(pause_duration("1h30m"), Some(Duration::from_secs(5400)));
    assert_eq!(pause_duration("90s"), Some(Duration::from_secs(90)));
    assert_eq!(pause_duration("1000h"), Some(MAX_PAUSE), "capped at seven days");
    for bad in ["", "0s", "m", "30", "10d", "1.5h", "-1m"] {
        assert_eq!(pause_duration(bad), None, "{bad:?}");
    }
}

#[test]
fn annotations_ask_for_approvals_by_step_and_the_emergency_stop() {
    let annotations: std::collections::BTreeMap<String, String> = [
        ("forgeops.dev/approve-step-2", "alice@acme.example"),
        ("forgeops.dev/approve-step-3", " "),
        ("forgeops.dev/approve-step-x", "nobody"),
        ("forgeops.dev/emergency-stop", "bob: errors on EU sites"),
        ("other", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let a = asked(Some(&annotations));
    assert_eq!(a.approved, [(2, "alice@acme.example".to_string()), (3, "unnamed".to_string())].into());
    assert_eq!(a.stop.as_deref(), Some("bob: errors on EU sites"));
    assert_eq!(asked(None), Asked::default());
}

fn gated_steps() -> Vec<UpgradeStep> {
    vec![
        UpgradeStep {
            limit: Some(10),
            pause: Some(crate::api::StepPause { duration: "30m".into() }),
            ..Default::default()
        },
        UpgradeStep { require_approval: true, ..Default::default() },
    ]
}

fn step_one_done(minutes_ago: i64) -> RolloutRecord {
    let at = now().0 - jiff::SignedDuration::from_mins(minutes_ago);
    RolloutRecord { completed_at: Some(Time(at)), ..record(1, 10, 0, Some(90)) }
}

#[test]
fn after_a_step_its_bake_time_holds_then_the_next_step_waits_for_approval_then_starts() {
    let mut c = Case::new();
    c.spec.steps = gated_steps();
    c.previous.state = Some(BulkUpgradeState::Running);
    c.previous.rollouts = vec![step_one_done(10)];
    c.platform = eligible_platform(90);

    let d = c.decide();
    assert_eq!(state(&d), BulkUpgradeState::Baking);
    assert_eq!(d.requeue, Requeue::Bake(Duration::from_secs(20 * 60)));
    assert_eq!(d.effects, vec![Effect::TakeLeasesWithoutSlot]);
    assert_eq!(cond(&d, Type::Reconciling), ("True".into(), "Baking".into()), "goes on by itself");
    assert!(
        cond_message(&d, Type::Ready).contains("step 1 bakes for 1200 s more"),
        "{}",
        cond_message(&d, Type::Ready)
    );
    assert!(d.status.starting.is_none());

    // The bake time is over: step 2 needs an approval.
    c.previous.rollouts = vec![step_one_done(31)];
    let d = c.decide();
    assert_eq!(state(&d), BulkUpgradeState::AwaitingApproval);
    assert_eq!(d.requeue, Requeue::Renew);
    assert_eq!(cond(&d, Type::Reconciling).0, "False", "waits for a person");
    assert_eq!(cond(&d, Type::Stalled).0, "False");
    assert!(cond_message(&d, Type::Ready).contains("forgeops.dev/approve-step-2=<who approves>"));
    assert!(d.status.starting.is_none());

    // Approved: recorded with who and when, and the next rollout is on its way.
    c.previous = d.status;
    c.asked.approved.insert(2, "alice@acme.example".into());
    let d = c.decide();
    assert_eq!(d.status.approvals, vec![crate::api::Approval { step: 2, by: "alice@acme.example".into(), at: now() }]);
    assert_eq!(d.status.starting.as_ref().map(|s| s.step), Some(2));
    assert_eq!(d.requeue, Requeue::Now);
    // The approval is kept once, not recorded again.
    c.previous = d.status;
    let d = c.decide();
    assert_eq!(d.status.approvals.len(), 1);
    assert!(matches!(d.effects.last(), Some(Effect::StartRollout(r)) if r.step == 2));
}

#[test]
fn a_first_step_that_needs_approval_waits_before_any_rollout() {
    let mut c = Case::new();
    c.spec.steps = vec![UpgradeStep { require_approval: true, ..Default::default() }];
    let d = c.decide();
    assert_eq!(state(&d), BulkUpgradeState::AwaitingApproval);
    assert!(d.status.starting.is_none() && d.status.rollouts.is_empty());
    // An approval of another step does not count.
    c.asked.approved.insert(2, "alice".into());
    assert_eq!(state(&c.decide()), BulkUpgradeState::AwaitingApproval);
    c.asked.approved.insert(1, "alice".into());
    assert!(c.decide().status.starting.is_some());
}

#[test]
fn the_emergency_stop_cancels_the_running_rollout_and_finishes_with_its_reason() {
    let mut c = Case::new();
    c.asked.stop = Some("bob".into());
    c.previous.state = Some(BulkUpgradeState::Running);
    c.previous.step = Some(1);
    c.previous.rollouts = vec![running(1, 100, Some(0))];
    c.platform =
        PlatformView { current: Current::Seen(seen("r-1-0", RolloutStatus::Running, 5, 0, 95)), ..Default::default() };
    let d = c.decide();
    assert!(d.effects.contains(&Effect::CancelRollout("r-1-0".into())));
    assert_eq!(d.status.emergency_stop, Some(crate::api::Approval { step: 1, by: "bob".into(), at: now() }));
    c.previous = d.status;
    c.platform = PlatformView {
        current: Current::Seen(seen("r-1-0", RolloutStatus::Cancelled, 6, 0, 0)),
        ..eligible_platform(94)
    };
    let d = c.decide();
    assert_eq!(state(&d), BulkUpgradeState::Cancelled);
    assert_eq!(cond(&d, Type::Progressing).1, "EmergencyStop");
    assert_eq!(d.status.emergency_stop.as_ref().map(|s| s.by.as_str()), Some("bob"), "kept as first seen");
    // Also while baking or awaiting approval: stops at once.
    let mut c = Case::new();
    c.spec.steps = gated_steps();
    c.previous.rollouts = vec![step_one_done(10)];
    c.asked.stop = Some("bob".into());
    assert_eq!(state(&c.decide()), BulkUpgradeState::Cancelled);
}

fn analysed_steps(on_failure: crate::api::OnFailure) -> BulkUpgradeSpec {
    let mut spec = spec(1, 2);
    spec.steps = steps(&[Some(10), None]);
    spec.analysis = Some(crate::api::AnalysisSpec {
        window: "5m".into(),
        min_success_rate: Some(99.0),
        max_drop_from_baseline: None,
        min_invocations: 100,
        on_failure,
    });
    spec
}

fn metric(version: &str, context: &str, count: u64) -> crate::platform::MetricsValue {
    crate::platform::MetricsValue { version: version.into(), context: context.into(), count }
}

/// Step 1 of [`analysed_steps`] done `minutes_ago`, from 1.0.0 to 2.0.0.
fn analysed_case(on_failure: crate::api::OnFailure, state: BulkUpgradeState, minutes_ago: i64) -> Case {
    let mut c = Case::new();
    c.spec = analysed_steps(on_failure);
    c.previous.state = Some(state);
    c.previous.source_version = Some("1.0.0".into());
    c.previous.target_version = Some("2.0.0".into());
    c.previous.rollouts = vec![step_one_done(minutes_ago)];
    c.platform = eligible_platform(90);
    c
}

/// The 5 minute window of step 1 done `minutes_ago` (at least 5), from its completion.
fn window_of_step_one(minutes_ago: i64) -> AnalysisRequest {
    let done = now().0 - jiff::SignedDuration::from_mins(minutes_ago);
    AnalysisRequest { step: 1, start: Time(done), end: Time(done + jiff::SignedDuration::from_mins(5)) }
}

#[test]
fn after_a_step_its_window_is_measured_then_judged_and_a_failure_stops() {
    let mut c = analysed_case(crate::api::OnFailure::Stop, BulkUpgradeState::Running, 2);
    // The window (5 minutes from the step's completion) is still open.
    let d = c.decide();
    assert_eq!(state(&d), BulkUpgradeState::Analyzing);
    assert_eq!(d.requeue, Requeue::Bake(Duration::from_secs(180)));
    assert!(!d.effects.iter().any(|e| matches!(e, Effect::Analyze(_))));
    // Closed: measure exactly the window.
    c.previous.rollouts = vec![step_one_done(6)];
    let d = c.decide();
    let request = window_of_step_one(6);
    assert_eq!(d.effects.last(), Some(&Effect::Analyze(request.clone())), "measures exactly the window");
    assert_eq!(d.requeue, Requeue::Now);
    // 2.0 fails 3% of the time on the moved sites: recorded, and the upgrade stops with the figures.
    let invocations = [metric("2.0.0", "a", 600), metric("2.0.0", "b", 400), metric("1.0.0", "c", 5000)];
    let errors = [metric("2.0.0", "a", 30), metric("1.0.0", "c", 5)];
    let folded = after_analysis(&d.status, &c.spec, &request, &invocations, &errors);
    let record = &folded.analyses[0];
    assert_eq!(record.verdict, crate::api::AnalysisVerdict::Failed);
    assert_eq!((record.cohort.sites, record.cohort.invocations, record.cohort.errors), (2, 1000, 30));
    assert_eq!(record.cohort.success_rate, Some(97.0));
    assert_eq!(record.baseline.success_rate, Some(99.9));
    c.previous = folded;
    let d = c.decide();
    assert_eq!(state(&d), BulkUpgradeState::Failed);
    assert_eq!(cond(&d, Type::Stalled), ("True".into(), "AnalysisFailed".into()));
    assert!(cond_message(&d, Type::Ready).contains("97.00%"), "{}", cond_message(&d, Type::Ready));
    assert!(d.effects.contains(&Effect::ReleaseLeases));
    assert!(!d.effects.iter().any(|e| matches!(e, Effect::StartRollout(_))));
}

#[test]
fn a_passed_analysis_goes_on_and_an_inconclusive_or_paused_failure_waits_for_approval() {
    let mut c = analysed_case(crate::api::OnFailure::Pause, BulkUpgradeState::Analyzing, 6);
    let request = window_of_step_one(6);
    assert_eq!(c.decide().effects.last(), Some(&Effect::Analyze(request.clone())));
    let healthy = after_analysis(&c.previous, &c.spec, &request, &[metric("2.0.0", "a", 1000)], &[]);
    c.previous = healthy.clone();
    let d = c.decide();
    assert_eq!(d.status.starting.as_ref().map(|s| s.step), Some(2), "passed: step 2 is on its way");
    assert_eq!(d.status.analyses[0].verdict, crate::api::AnalysisVerdict::Passed);

    // Too little traffic: waits for a person, who can approve step 2.
    let mut quiet = healthy.clone();
    quiet.analyses.clear();
    c.previous = after_analysis(&quiet, &c.spec, &request, &[metric("2.0.0", "a", 10)], &[]);
    let d = c.decide();
    assert_eq!(state(&d), BulkUpgradeState::AwaitingApproval);
    assert_eq!(cond(&d, Type::Progressing).1, "AnalysisInconclusive");
    assert!(cond_message(&d, Type::Ready).contains("forgeops.dev/approve-step-2"));
    // A failure with onFailure: Pause waits the same way.
    c.previous = after_analysis(&quiet, &c.spec, &request, &[metric("2.0.0", "a", 1000)], &[metric("2.0.0", "a", 500)]);
    let d = c.decide();
    assert_eq!(
        (state(&d), cond(&d, Type::Progressing).1.as_str()),
        (BulkUpgradeState::AwaitingApproval, "AnalysisFailed")
    );
    c.asked.approved.insert(2, "alice".into());
    assert_eq!(c.decide().status.starting.as_ref().map(|s| s.step), Some(2), "approved anyway");
    // No analysis after the last step.
    assert!(analysis_after(&c.spec, 2).is_none() && analysis_after(&c.spec, 1).is_some());
}

#[test]
fn a_closed_window_holds_the_next_rollout_but_not_a_running_one() {
    use crate::api::{RolloutWindow, WindowKind};
    // now() is 2027-01-15T08:00:00Z.
    let deny = RolloutWindow {
        kind: WindowKind::Deny,
        time_zone: "UTC".into(),
        days: vec![],
        start: "07:00".into(),
        end: "09:00".into(),
    };
    let mut c = Case::new();
    c.spec.windows = vec![deny.clone()];
    let d = c.decide();
    assert_eq!(state(&d), BulkUpgradeState::OutsideWindow);
    assert_eq!(d.requeue, Requeue::Bake(Duration::from_secs(3600)));
    assert!(d.status.starting.is_none());
    assert_eq!(d.effects, vec![Effect::TakeLeasesWithoutSlot]);
    assert!(cond_message(&d, Type::Ready).contains("until 2027-01-15T09:00:00Z"), "{}", cond_message(&d, Type::Ready));
    assert_eq!(cond(&d, Type::Reconciling), ("True".into(), "OutsideWindow".into()), "goes on by itself");
    // A rollout that runs runs on.
    c.previous.state = Some(BulkUpgradeState::Running);
    c.previous.rollouts = vec![running(1, 100, Some(0))];
    c.platform =
        PlatformView { current: Current::Seen(seen("r-1-0", RolloutStatus::Running, 5, 0, 95)), ..Default::default() };
    let d = c.decide();
    assert_eq!((state(&d), d.requeue), (BulkUpgradeState::Running, Requeue::Poll));
    // Outside the deny window: starts.
    let mut c = Case::new();
    c.spec.windows = vec![RolloutWindow { start: "10:00".into(), end: "11:00".into(), ..deny }];
    assert!(c.decide().status.starting.is_some());
}

#[test]
fn the_preview_counts_what_the_steps_take_in_rollouts_at_the_cap_and_the_gates_time() {
    let counts = |v: &[(&str, u64)]| -> Vec<crate::platform::VersionCount> {
        v.iter()
            .map(|(version, n)| crate::platform::VersionCount {
                id: format!("id-{version}"),
                version: version.to_string(),
                installations: *n,
            })
            .collect()
    };
    let all = counts(&[("1.0.0", 7), ("1.1.0", 1200), ("2.0.0", 3)]);
    let mut s = spec(1, 2);
    s.steps = vec![
        UpgradeStep {
            limit: Some(10),
            pause: Some(crate::api::StepPause { duration: "30m".into() }),
            ..Default::default()
        },
        UpgradeStep { limit: Some(600), ..Default::default() },
        UpgradeStep::default(),
    ];
    s.analysis = analysed_steps(crate::api::OnFailure::Stop).analysis;
    let p = preview(&s, &all, "1.1.0", 0, Some(true), Some(500));
    assert_eq!((p.eligible, p.planned, p.rollouts, p.rollout_cap), (1200, 1200, 1 + 2 + 2, Some(500)));
    assert_eq!(
        p.by_version.iter().map(|v| (v.version.as_str(), v.installations)).collect::<Vec<_>>(),
        [("1.0.0", 7), ("1.1.0", 1200)]
    );
    // 30 min of bake after step 1 (its 5 min window inside it), a 5 min window after step 2.
    assert_eq!(p.minimum_duration_seconds, 35 * 60);
    // A limit caps the plan; a target that needs consent moves nothing.
    s.limit = Some(100);
    let p = preview(&s, &all, "1.1.0", 2, Some(true), None);
    assert_eq!((p.planned, p.rollouts, p.pinned), (100, 2, 2));
    let p = preview(&s, &all, "1.1.0", 0, Some(false), None);
    assert!(p.consent_required);
    assert_eq!((p.planned, p.rollouts), (0, 0));
}
