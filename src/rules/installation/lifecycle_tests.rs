//! The Installation's rounds, told as stories: each test plays the controller (keep the decided
//! status, answer the platform effect) and checks what would be sent. Test code only
//! (`#[cfg(test)]`): its `unwrap`s are assertions, never on an operator path.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::api::{AppVersion, DeletionPolicy, ForgeApp, Installation, Product};
use crate::rules::installation::{Reason, Type};

fn ver(major: u32, minor: u32) -> Version {
    Version { major, minor }
}

fn at(second: i64) -> Time {
    Time(jiff::Timestamp::from_second(1_800_000_000 + second).unwrap())
}

fn app() -> ForgeApp {
    ForgeApp::test("insights").read_as("dev").deploys(vec![
        AppVersion::test(1, 0).scopes(["read"]),
        AppVersion::test(1, 2).scopes(["read"]),
        AppVersion::test(2, 0).scopes(["read"]),
    ])
}

fn on_site(id: &str, v: Version) -> OnSite {
    OnSite { id: id.into(), version: Some(v), running: None, context: format!("ari:{id}") }
}

fn lost() -> PlatformError {
    let mut e = PlatformError::new(ErrorKind::Unavailable, "forge_cli_installApplication", "gateway time-out");
    e.unconfirmed = true;
    e
}

/// One Installation as the controller sees it between rounds.
struct World {
    inst: Installation,
    app: Option<ForgeApp>,
    status: InstallationStatus,
    listed: Option<OnSite>,
    deleting: bool,
    now: Time,
    /// Every platform effect asked for, in order.
    asked: Vec<Effect>,
    /// Every Event recorded.
    told: Vec<Event>,
    /// The product the last decision's platform effect was for (its answer is for it).
    product: Product,
    /// Whose the app is.
    claim: crate::ownership::Claim,
}

impl World {
    fn of(inst: Installation) -> World {
        World {
            inst,
            app: Some(app()),
            status: InstallationStatus::default(),
            listed: None,
            deleting: false,
            now: at(0),
            asked: vec![],
            told: vec![],
            product: Product::Jira,
            claim: crate::ownership::Claim::Ours,
        }
    }

    /// The app belongs to another namespace's ForgeApp.
    fn owned_by(mut self, owner: &str) -> World {
        self.claim = crate::ownership::Claim::Theirs(owner.into());
        self
    }

    fn with(mut self, status: InstallationStatus) -> World {
        self.status = status;
        self
    }

    fn deleted(mut self) -> World {
        self.deleting = true;
        self
    }

    fn later(&mut self, seconds: i64) {
        self.now = Time(self.now.0 + jiff::SignedDuration::from_secs(seconds));
    }

    /// One round: the decided status is kept, its effects noted.
    fn round(&mut self, answer: Option<Answer>) -> Decision {
        let d = decide(&Inputs {
            inst: &self.inst,
            status: &self.status,
            facts: Facts { app: self.app.as_ref(), claim: self.claim.clone(), ..Default::default() },
            listed: self.listed.clone().map(|o| ("jira".to_string(), o)).into_iter().collect(),
            answer: answer.map(|a| (self.product, a)),
            deleting: self.deleting,
            now: self.now.clone(),
        });
        self.status = d.status.clone();
        self.product = d.product;
        for e in &d.effects {
            match e {
                Effect::Event(e) => self.told.push(e.clone()),
                other => self.asked.push(other.clone()),
            }
        }
        d
    }

    fn sends(&self) -> usize {
        self.asked.iter().filter(|e| matches!(e, Effect::Send(_))).count()
    }

    fn told(&self, reason: Told) -> bool {
        self.told.iter().any(|e| e.reason == reason.as_str())
    }

    fn ready(&self) -> (String, String) {
        let c = self.status.conditions.iter().find(|c| c.type_ == Type::Ready.as_str()).unwrap();
        (c.status.to_string(), c.reason.to_string())
    }
}

fn installed(version: &str, id: &str) -> InstallationStatus {
    InstallationStatus {
        installed_version: Some(version.into()),
        installed_major: Version::parse(version).map(|v| v.major),
        installation_id: Some(id.into()),
        site_administered: Some(true),
        ..Default::default()
    }
}

#[test]
fn a_first_install_looks_first_records_before_sending_then_records_the_task() {
    let mut w = World::of(Installation::test("acme"));
    let d = w.round(None);
    assert_eq!(d.effects, vec![Effect::Find { lookup: Lookup::OnSite, why: Why::BeforeInstall(ver(2, 0)) }]);
    assert_eq!(d.requeue, Requeue::Answer);
    assert_eq!(w.status.unconfirmed, None, "a read needs no record");
    assert_eq!(w.status.app_id.as_deref(), Some(app().spec.app_id.as_str()), "the app it acts on, recorded");

    let d = w.round(Some(Answer::Found(Why::BeforeInstall(ver(2, 0)), Ok(None))));
    assert_eq!(d.platform_effect(), Some(&Effect::Send(Request::Install(ver(2, 0)))));
    let record = w.status.unconfirmed.clone().expect("the pre-send record is in the status to write");
    assert_eq!((record.action, record.version.as_deref()), (TaskAction::Install, Some("2.0")));

    let d = w.round(Some(Answer::Sent(Request::Install(ver(2, 0)), Ok(Sent::Task("t-1".into())))));
    assert_eq!(w.status.unconfirmed, None);
    assert_eq!(w.status.task.as_ref().map(|t| t.id.as_str()), Some("t-1"));
    assert!(matches!(d.requeue, Requeue::After { after, .. } if after == TASK_POLL));
    assert_eq!(w.ready(), ("False".into(), Reason::Installing.as_str().into()));

    // A reconcile at once (set off by that record) does not poll before the CLI's first 500 ms.
    let asked = w.asked.len();
    let d = w.round(None);
    assert_eq!(w.asked.len(), asked, "{d:?}");
    assert!(matches!(d.requeue, Requeue::After { after, .. } if after == TASK_POLL));

    // The next reconcile waits for the task, records it done, then learns the installation's id.
    w.later(1);
    w.round(None);
    assert_eq!(w.asked.last(), Some(&Effect::PollTask(w.status.task.clone().unwrap())));
    let task = w.status.task.clone().unwrap();
    w.round(Some(Answer::Polled(task, Ok(TaskOutcome::Complete))));
    assert_eq!(w.status.installed_version.as_deref(), Some("2.0"));
    assert_eq!(w.status.site_administered, Some(true));
    assert!(w.told.is_empty(), "an install is told by its condition, not an Event: {:?}", w.told);
    let d = w.round(Some(Answer::Found(Why::Completed, Ok(Some(on_site("i-1", ver(2, 0)))))));
    assert_eq!(w.status.installation_id.as_deref(), Some("i-1"));
    assert_eq!(d.requeue, Requeue::AwaitChange);
    assert_eq!(w.ready(), ("True".into(), Reason::Ready.as_str().into()));
    assert_eq!(w.sends(), 1);
}

#[test]
fn a_site_that_has_the_app_already_is_adopted_never_installed_again() {
    let mut w = World::of(Installation::test("acme"));
    w.round(None);
    let d = w.round(Some(Answer::Found(Why::BeforeInstall(ver(2, 0)), Ok(Some(on_site("i-9", ver(1, 2)))))));
    assert_eq!(d.platform_effect(), None);
    assert!(w.status.adopted && w.told(Told::Adopted));
    assert_eq!(w.status.installed_version.as_deref(), Some("1.2"));
    assert_eq!(w.sends(), 0);
    assert_eq!(w.inst.spec.deletion_policy_given(&w.status), DeletionPolicy::Orphan);
}

#[test]
fn a_lost_answer_is_confirmed_from_the_platform_before_anything_is_sent_again() {
    let mut w = World::of(Installation::test("acme"));
    w.round(None);
    w.round(Some(Answer::Found(Why::BeforeInstall(ver(2, 0)), Ok(None))));
    let d = w.round(Some(Answer::Sent(Request::Install(ver(2, 0)), Err(lost()))));
    assert!(w.status.unconfirmed.is_some(), "the record stays while the answer is unknown");
    assert!(matches!(d.requeue, Requeue::After { after, .. } if after == CONFIRM_POLL));
    assert_eq!(w.ready().1, Reason::Confirming.as_str());

    // The next reconcile reads; the platform shows it installed: recorded, nothing sent again.
    w.later(2);
    let d = w.round(None);
    let lost = w.status.unconfirmed.clone().unwrap();
    assert_eq!(d.effects, vec![Effect::Find { lookup: Lookup::OnSite, why: Why::Confirm(lost.clone()) }]);
    w.round(Some(Answer::Found(Why::Confirm(lost), Ok(Some(on_site("i-1", ver(2, 0)))))));
    assert_eq!(w.status.unconfirmed, None);
    assert_eq!(
        (w.status.installed_version.as_deref(), w.status.installation_id.as_deref()),
        (Some("2.0"), Some("i-1"))
    );
    assert!(w.told.is_empty(), "{:?}", w.told);
    assert_eq!(w.sends(), 1);
}

#[test]
fn a_lost_request_is_sent_again_only_once_the_platform_shows_it_was_not_carried_out() {
    let mut w = World::of(Installation::test("acme"));
    w.round(None);
    w.round(Some(Answer::Found(Why::BeforeInstall(ver(2, 0)), Ok(None))));
    w.round(Some(Answer::Sent(Request::Install(ver(2, 0)), Err(lost()))));
    let lost = w.status.unconfirmed.clone().unwrap();
    // Within the window: not there yet, looked at again.
    w.later(5);
    let d = w.round(Some(Answer::Found(Why::Confirm(lost.clone()), Ok(None))));
    assert!(matches!(d.requeue, Requeue::After { after, .. } if after == CONFIRM_POLL));
    assert!(w.status.unconfirmed.is_some());
    // Past it: dropped, and the next round decides afresh (it looks before it sends).
    w.later(CONFIRM_WINDOW.as_secs() as i64);
    let d = w.round(Some(Answer::Found(Why::Confirm(lost), Ok(None))));
    assert_eq!(w.status.unconfirmed, None);
    assert!(matches!(d.requeue, Requeue::After { after, .. } if after == AFRESH));
    assert_eq!(d.platform_effect(), None);
    w.round(None);
    assert_eq!(w.asked.last(), Some(&Effect::Find { lookup: Lookup::OnSite, why: Why::BeforeInstall(ver(2, 0)) }));
    assert_eq!(w.sends(), 1, "the second send comes only after this read");
}

#[test]
fn a_refused_install_makes_a_customer_site_that_waits_for_the_link() {
    let mut w = World::of(Installation::test("acme"));
    w.round(None);
    w.round(Some(Answer::Found(Why::BeforeInstall(ver(2, 0)), Ok(None))));
    let denied = PlatformError::new(ErrorKind::PermissionDenied, "forge_cli_installApplication", "not an admin");
    w.round(Some(Answer::Sent(Request::Install(ver(2, 0)), Err(denied))));
    assert_eq!(w.status.site_administered, Some(false));
    assert_eq!(w.status.unconfirmed, None, "refused: nothing to confirm");
    let d = w.round(None);
    assert_eq!(d.effects, vec![Effect::Find { lookup: Lookup::OnSite, why: Why::LinkInstall }]);
    let d = w.round(Some(Answer::Found(Why::LinkInstall, Ok(None))));
    assert!(matches!(d.requeue, Requeue::After { after, .. } if after == LINK_POLL));
    assert_eq!(w.ready().1, Reason::CustomerSite.as_str());
    w.round(None);
    w.round(Some(Answer::Found(Why::LinkInstall, Ok(Some(on_site("i-2", ver(2, 0)))))));
    assert!(w.status.adopted && w.told(Told::Adopted));
    assert_eq!(w.sends(), 1);
}

#[test]
fn a_raised_major_is_sent_as_an_upgrade_on_an_own_site_and_never_on_a_customers() {
    let mut w = World::of(Installation::test("acme").pinned_to(2)).with(installed("1.2", "i-1"));
    let d = w.round(None);
    assert_eq!(d.platform_effect(), Some(&Effect::Send(Request::Upgrade(ver(2, 0)))));
    assert_eq!(w.status.unconfirmed.as_ref().map(|u| u.action), Some(TaskAction::Upgrade));

    let mut customer = installed("1.2", "i-1");
    customer.site_administered = None;
    customer.adopted = true;
    let mut w = World::of(Installation::test("acme").pinned_to(2)).with(customer);
    let d = w.round(None);
    assert_eq!(d.platform_effect(), None);
    assert_eq!(w.sends(), 0);
    let up = w.status.conditions.iter().find(|c| c.type_ == Type::UpToDate.as_str()).unwrap();
    assert_eq!(up.reason, Reason::AwaitingAdminConsent.as_str());
}

#[test]
fn what_the_platform_rolled_out_by_itself_is_followed_without_a_request() {
    let mut w = World::of(Installation::test("acme")).with(installed("1.0", "i-1"));
    w.listed = Some(on_site("i-1", ver(1, 2)));
    let d = w.round(None);
    assert_eq!(d.platform_effect(), None);
    assert_eq!(w.status.installed_version.as_deref(), Some("1.2"));
    assert!(w.told(Told::MinorVersionRolledOut));
    // An older listing never undoes a newer record.
    w.listed = Some(on_site("i-1", ver(1, 0)));
    w.round(None);
    assert_eq!(w.status.installed_version.as_deref(), Some("1.2"));
}

#[test]
fn code_newer_than_the_granted_permissions_is_reported_as_running() {
    let mut w = World::of(Installation::test("acme")).with(installed("2.0", "i-1"));
    // A code-only upgrade (`forge install --upgrade code`): 2.1's code runs with 2.0's permissions.
    w.listed = Some(OnSite { running: Some(ver(2, 1)), ..on_site("i-1", ver(2, 0)) });
    let d = w.round(None);
    assert_eq!(d.platform_effect(), None, "nothing to send for it");
    assert_eq!(w.status.running_version.as_deref(), Some("2.1"));
    assert_eq!(w.status.installed_version.as_deref(), Some("2.0"));
    // Once the code and the permissions agree, it is not reported twice.
    w.listed = Some(OnSite { running: Some(ver(2, 1)), ..on_site("i-1", ver(2, 1)) });
    w.round(None);
    assert_eq!((w.status.installed_version.as_deref(), w.status.running_version.as_deref()), (Some("2.1"), None));
}

#[test]
fn missing_credentials_are_a_failure_on_the_conditions_not_a_request() {
    let mut w = World::of(Installation::test("acme"));
    w.round(None);
    let d = w.round(Some(Answer::NoCredentials("Secret forge-credentials is missing".into())));
    assert!(matches!(&d.requeue, Requeue::Failed(e) if e.kind == ErrorKind::BadCredentials));
    assert_eq!(d.platform_effect(), None);
    assert_eq!(w.ready(), ("False".into(), Reason::PlatformError.as_str().into()));
}

#[test]
fn a_deletion_whose_credentials_are_gone_waits_a_while_then_leaves_the_site_as_it_is() {
    let mut inst = Installation::test("acme");
    inst.metadata.deletion_timestamp = Some(at(0));
    let mut w = World::of(inst).with(installed("1.0", "i-1")).deleted();
    w.round(None);
    let d = w.round(Some(Answer::NoCredentials("Secret team/creds does not exist".into())));
    assert!(matches!(&d.requeue, Requeue::Failed(_)), "retried at first: {:?}", d.requeue);
    w.later(DELETE_WITHOUT_CREDENTIALS.as_secs() as i64);
    w.round(None);
    let d = w.round(Some(Answer::NoCredentials("Secret team/creds does not exist".into())));
    assert_eq!(d.requeue, Requeue::Release);
    assert!(w.told(Told::LeftOnSite) && w.sends() == 0);
}

#[test]
fn without_its_app_an_installation_acts_on_nothing() {
    let mut w = World::of(Installation::test("acme")).with(installed("1.0", "i-1"));
    w.app = None;
    let d = w.round(None);
    assert_eq!(d.platform_effect(), None);
    w.deleting = true;
    let d = w.round(None);
    assert_eq!(d.requeue, Requeue::Release);
    assert!(w.told(Told::LeftOnSite));
}

#[test]
fn deleting_uninstalls_the_recorded_installation_and_lets_go_once_its_task_ends() {
    let mut w = World::of(Installation::test("acme")).with(installed("2.0", "i-1")).deleted();
    let d = w.round(None);
    assert_eq!(d.effects, vec![Effect::Find { lookup: Lookup::ById("i-1".into()), why: Why::BeforeUninstall }]);
    let d = w.round(Some(Answer::Found(Why::BeforeUninstall, Ok(Some(on_site("i-1", ver(2, 0)))))));
    let request = Request::Uninstall { id: "i-1".into(), context: "ari:i-1".into() };
    assert_eq!(d.platform_effect(), Some(&Effect::Send(request.clone())));
    assert_eq!(w.status.unconfirmed.as_ref().map(|u| u.action), Some(TaskAction::Uninstall));
    let d = w.round(Some(Answer::Sent(request, Ok(Sent::Task("t-9".into())))));
    assert!(matches!(d.requeue, Requeue::After { .. }), "the finalizer stays while the task runs");
    let task = w.status.task.clone().unwrap();
    w.round(None);
    let d = w.round(Some(Answer::Polled(task, Ok(TaskOutcome::Complete))));
    assert_eq!(d.requeue, Requeue::Release);
    assert!(w.told(Told::Uninstalled));
    assert_eq!(w.sends(), 1);
}

#[test]
fn deleting_an_adopted_installation_leaves_it_and_a_refused_uninstall_lets_go() {
    let mut adopted = installed("2.0", "i-1");
    adopted.adopted = true;
    adopted.site_administered = None;
    let mut w = World::of(Installation::test("acme")).with(adopted.clone()).deleted();
    let d = w.round(None);
    assert_eq!((&d.requeue, d.platform_effect()), (&Requeue::Release, None));
    assert!(w.told(Told::Orphaned));

    let mut inst = Installation::test("acme");
    inst.spec.deletion_policy = Some(DeletionPolicy::Uninstall);
    let mut w = World::of(inst).with(adopted).deleted();
    w.round(None);
    let request = Request::Uninstall { id: "i-1".into(), context: "ari:i-1".into() };
    w.round(Some(Answer::Found(Why::BeforeUninstall, Ok(Some(on_site("i-1", ver(2, 0)))))));
    let denied = PlatformError::new(ErrorKind::PermissionDenied, "forge_cli_uninstallApplication", "not an admin");
    let d = w.round(Some(Answer::Sent(request, Err(denied))));
    assert_eq!(d.requeue, Requeue::Release, "no finalizer held forever");
    assert!(w.told.iter().any(|e| e.warning && e.reason == Told::UninstallRefused.as_str()));
}

#[test]
fn deleting_during_an_install_task_waits_for_it_then_uninstalls_what_it_installed() {
    let task =
        TaskRecord { id: "t-1".into(), action: TaskAction::Install, version: Some("2.0".into()), started_at: at(0) };
    let status = InstallationStatus { task: Some(task.clone()), ..Default::default() };
    let mut w = World::of(Installation::test("acme")).with(status).deleted();
    w.later(1);
    let d = w.round(None);
    assert_eq!(d.effects, vec![Effect::PollTask(task.clone())]);
    let d = w.round(Some(Answer::Polled(task.clone(), Ok(TaskOutcome::StillRunning))));
    assert!(matches!(&d.requeue, Requeue::After { waiting, .. } if waiting.contains("before deleting")));
    w.round(None);
    w.round(Some(Answer::Polled(task, Ok(TaskOutcome::Complete))));
    let d = w.round(Some(Answer::Found(Why::Completed, Ok(Some(on_site("i-1", ver(2, 0)))))));
    assert_eq!(d.effects, vec![Effect::Find { lookup: Lookup::ById("i-1".into()), why: Why::BeforeUninstall }]);
    assert_ne!(d.requeue, Requeue::Release, "what the task installed is uninstalled first");
}

#[test]
fn deleting_after_a_lost_install_that_was_not_carried_out_lets_go_without_a_request() {
    let record = UnconfirmedRequest { action: TaskAction::Install, version: Some("2.0".into()), sent_at: at(0) };
    let status = InstallationStatus { unconfirmed: Some(record.clone()), ..Default::default() };
    let mut w = World::of(Installation::test("acme")).with(status).deleted();
    w.later(60);
    let d = w.round(None);
    assert_eq!(d.effects, vec![Effect::Find { lookup: Lookup::OnSite, why: Why::Confirm(record.clone()) }]);
    let d = w.round(Some(Answer::Found(Why::Confirm(record), Ok(None))));
    assert_eq!(d.requeue, Requeue::Release);
    assert_eq!(w.sends(), 0);
}

#[test]
fn a_lost_uninstall_is_confirmed_by_the_recorded_id() {
    let mut status = installed("2.0", "i-1");
    status.unconfirmed = Some(UnconfirmedRequest { action: TaskAction::Uninstall, version: None, sent_at: at(0) });
    let record = status.unconfirmed.clone().unwrap();
    let mut w = World::of(Installation::test("acme")).with(status).deleted();
    let d = w.round(None);
    assert_eq!(d.effects, vec![Effect::Find { lookup: Lookup::ById("i-1".into()), why: Why::Confirm(record.clone()) }]);
    let d = w.round(Some(Answer::Found(Why::Confirm(record.clone()), Ok(Some(on_site("i-1", ver(2, 0)))))));
    assert!(matches!(d.requeue, Requeue::After { after, .. } if after == CONFIRM_POLL));
    let d = w.round(Some(Answer::Found(Why::Confirm(record), Ok(None))));
    assert_eq!(d.requeue, Requeue::Release);
    assert_eq!(w.sends(), 0);
}

#[test]
fn the_products_a_target_installs_into_start_with_the_required_one() {
    let inst = Installation::test("acme").products([Product::Confluence, Product::Jira]);
    assert_eq!(crate::rules::installation::target(&inst, &app()).product, "jira");
}

// ---- apps installed into several products ----

/// An app whose versions require Jira and Confluence (a cross-product app).
fn cross_product_app() -> ForgeApp {
    ForgeApp::test("insights")
        .read_as("dev")
        .deploys(vec![AppVersion::test(2, 0).scopes(["read"]).requires_all([Product::Jira, Product::Confluence])])
}

/// Plays one product's install from its first look to its recorded id; answers the decision's
/// product as the controller does. Checks that every effect is for `product`.
fn install_in(w: &mut World, product: Product, id: &str) {
    let d = w.round(None);
    assert_eq!(d.product, product);
    assert_eq!(d.platform_effect(), Some(&Effect::Find { lookup: Lookup::OnSite, why: Why::BeforeInstall(ver(2, 0)) }));
    let d = w.round(Some(Answer::Found(Why::BeforeInstall(ver(2, 0)), Ok(None))));
    assert_eq!((d.product, d.platform_effect()), (product, Some(&Effect::Send(Request::Install(ver(2, 0))))));
    w.round(Some(Answer::Sent(Request::Install(ver(2, 0)), Ok(Sent::Task(format!("t-{id}"))))));
    w.later(1);
    let d = w.round(None);
    // Test-only: the assertion's panic.
    let Some(Effect::PollTask(task)) = d.platform_effect().cloned() else { panic!("polls {product}'s task: {d:?}") };
    assert_eq!(d.product, product);
    w.round(Some(Answer::Polled(task, Ok(TaskOutcome::Complete))));
    w.round(Some(Answer::Found(Why::Completed, Ok(Some(on_site(id, ver(2, 0)))))));
}

#[test]
fn a_cross_product_app_is_installed_into_each_required_product_one_after_the_other() {
    let inst = Installation::test("acme").products([Product::Jira, Product::Confluence]);
    let mut w = World::of(inst);
    w.app = Some(cross_product_app());
    install_in(&mut w, Product::Jira, "i-jira");
    assert_eq!(w.ready().0, "False", "installed into Jira only: not ready");
    install_in(&mut w, Product::Confluence, "i-conf");
    let d = w.round(None);
    assert_eq!(d.requeue, Requeue::AwaitChange);
    assert_eq!(w.ready(), ("True".into(), Reason::Ready.as_str().into()));
    assert_eq!(w.sends(), 2, "one install per product");
    let products: Vec<_> = w
        .status
        .products
        .iter()
        .map(|p| (p.product, p.installation_id.as_deref(), p.installed_version.as_deref()))
        .collect();
    assert_eq!(
        products,
        [(Product::Jira, Some("i-jira"), Some("2.0")), (Product::Confluence, Some("i-conf"), Some("2.0"))]
    );
    assert_eq!(w.status.installation_id.as_deref(), Some("i-jira"), "the first product's own fields");
}

#[test]
fn a_cross_product_install_missing_a_required_product_is_refused_with_what_to_add() {
    let mut w = World::of(Installation::test("acme").products([Product::Jira]));
    w.app = Some(cross_product_app());
    let d = w.round(None);
    assert_eq!(d.platform_effect(), None);
    let c = w.status.conditions.iter().find(|c| c.type_ == Type::Installed.as_str()).unwrap();
    assert_eq!(c.reason, Reason::IncompatibleProducts.as_str());
    assert!(c.message.contains("spec.products must include confluence"), "{}", c.message);
}

#[test]
fn a_lost_install_answer_for_the_second_product_is_confirmed_in_that_product() {
    let inst = Installation::test("acme").products([Product::Jira, Product::Confluence]);
    let mut w = World::of(inst);
    w.app = Some(cross_product_app());
    install_in(&mut w, Product::Jira, "i-jira");
    w.round(None);
    w.round(Some(Answer::Found(Why::BeforeInstall(ver(2, 0)), Ok(None))));
    let d = w.round(Some(Answer::Sent(Request::Install(ver(2, 0)), Err(lost()))));
    assert_eq!(d.product, Product::Confluence);
    let conf = w.status.products.iter().find(|p| p.product == Product::Confluence).unwrap();
    let lost_request = conf.unconfirmed.clone().expect("Confluence's own pre-send record");
    assert!(w.status.unconfirmed.is_none(), "Jira's record is untouched");
    w.later(2);
    let d = w.round(None);
    assert_eq!(d.product, Product::Confluence);
    assert_eq!(
        d.platform_effect(),
        Some(&Effect::Find { lookup: Lookup::OnSite, why: Why::Confirm(lost_request.clone()) })
    );
    w.round(Some(Answer::Found(Why::Confirm(lost_request), Ok(Some(on_site("i-conf", ver(2, 0)))))));
    assert_eq!(w.sends(), 2, "nothing sent again: the platform shows it installed");
    assert_eq!(w.ready().0, "True");
}

#[test]
fn deleting_a_cross_product_installation_uninstalls_each_product_last_first() {
    let inst = Installation::test("acme").products([Product::Jira, Product::Confluence]);
    let mut w = World::of(inst);
    w.app = Some(cross_product_app());
    install_in(&mut w, Product::Jira, "i-jira");
    install_in(&mut w, Product::Confluence, "i-conf");
    w.deleting = true;
    for (product, id) in [(Product::Confluence, "i-conf"), (Product::Jira, "i-jira")] {
        let d = w.round(None);
        assert_eq!(
            (d.product, d.platform_effect()),
            (product, Some(&Effect::Find { lookup: Lookup::ById(id.into()), why: Why::BeforeUninstall }))
        );
        let context = format!("ari:{id}");
        let d = w.round(Some(Answer::Found(Why::BeforeUninstall, Ok(Some(on_site(id, ver(2, 0)))))));
        let uninstall = Request::Uninstall { id: id.into(), context };
        assert_eq!(d.platform_effect(), Some(&Effect::Send(uninstall.clone())));
        w.round(Some(Answer::Sent(uninstall, Ok(Sent::Task(format!("u-{id}"))))));
        w.later(1);
        let d = w.round(None);
        let Some(Effect::PollTask(task)) = d.platform_effect().cloned() else { panic!("polls the uninstall: {d:?}") };
        let d = w.round(Some(Answer::Polled(task, Ok(TaskOutcome::Complete))));
        if product == Product::Jira {
            assert_eq!(d.requeue, Requeue::Release, "every product uninstalled: the object may go");
        } else {
            assert_ne!(d.requeue, Requeue::Release, "Jira is still installed");
        }
    }
    assert_eq!(w.asked.iter().filter(|e| matches!(e, Effect::Send(Request::Uninstall { .. }))).count(), 2);
}

#[test]
fn products_to_install_follow_the_platforms_two_kinds_of_app() {
    use crate::rules::installation::products_to_install;
    let xpa = AppVersion::test(1, 0).requires_all([Product::Jira, Product::Confluence]).compatibility;
    assert_eq!(
        products_to_install(&[Product::Compass, Product::Confluence, Product::Jira], &xpa),
        Ok(vec![Product::Jira, Product::Confluence, Product::Compass]),
        "required first, in the platform's order, then the optional ones asked for"
    );
    let single = AppVersion::test(1, 0).single_app(Product::Confluence).compatibility;
    assert_eq!(products_to_install(&[Product::Confluence], &single), Ok(vec![Product::Confluence]));
    let refused = products_to_install(&[Product::Jira], &single).unwrap_err();
    assert!(refused.contains("cannot be installed into jira (its modules extend only confluence)"), "{refused}");
    let jira = AppVersion::test(1, 0).compatibility;
    assert_eq!(
        products_to_install(&[Product::Jira, Product::JiraServiceManagement], &jira),
        Ok(vec![Product::Jira]),
        "Jira Service Management installs into Jira's context: once"
    );
    let unknown = crate::api::Compatibility::default();
    assert_eq!(products_to_install(&[Product::Compass], &unknown), Ok(vec![Product::Compass]), "the platform judges");
}

#[test]
fn an_installation_of_an_app_another_namespace_owns_does_nothing_on_the_platform_even_when_deleted() {
    // The site has the owner's installation; this namespace's Installation names the same app.
    let mut w = World::of(Installation::test("acme")).owned_by("team-a/insights");
    w.listed = Some(on_site("inst-a", ver(1, 2)));
    let d = w.round(None);
    assert!(w.asked.is_empty(), "not even a read: {:?}", w.asked);
    assert_eq!(d.requeue, Requeue::AwaitChange);
    assert_eq!(w.ready(), ("False".into(), Reason::Conflict.as_str().into()));
    let stalled = w.status.conditions.iter().find(|c| c.type_ == Type::Stalled.as_str()).unwrap();
    assert!(stalled.status == "True" && stalled.message.contains("team-a/insights"), "{stalled:?}");
    assert!(w.status.installation_id.is_none(), "the owner's installation is not adopted");

    // Recorded before ownership was checked (an Installation from an older forgeops): its
    // deletion lets go of the object and leaves the owner's installation on the site.
    let mut gone = World::of(Installation::test("acme")).owned_by("team-a/insights").with(installed("1.2", "inst-a"));
    gone.deleting = true;
    let d = gone.round(None);
    assert_eq!(d.requeue, Requeue::Release);
    assert!(gone.asked.is_empty() && gone.told(Told::LeftOnSite), "{:?}", gone.asked);
}

#[test]
fn an_installation_waits_for_its_app_to_be_claimed_and_a_deletion_with_a_record_waits_too() {
    let mut w = World::of(Installation::test("acme"));
    w.claim = crate::ownership::Claim::Unclaimed;
    let d = w.round(None);
    assert!(w.asked.is_empty());
    assert!(matches!(d.requeue, Requeue::After { .. }), "{:?}", d.requeue);
    assert_eq!(w.ready(), ("False".into(), Reason::Claiming.as_str().into()));
    let mut fresh = World::of(Installation::test("acme")).deleted();
    fresh.claim = crate::ownership::Claim::Unclaimed;
    assert_eq!(fresh.round(None).requeue, Requeue::Release, "nothing recorded: nothing to undo");
    let mut recorded = World::of(Installation::test("acme")).with(installed("1.2", "inst-1")).deleted();
    recorded.claim = crate::ownership::Claim::Unclaimed;
    assert!(matches!(recorded.round(None).requeue, Requeue::After { .. }), "it may be the owner's: wait");
    assert!(recorded.asked.is_empty());
}
