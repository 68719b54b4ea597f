//! The Installation's one decision. The controller gathers (the object, the status as this
//! reconcile has it so far, the app's observed versions, the site's facts, the platform's listing
//! entry for the site, the answer to the last effect, now), calls [`decide`], carries out the
//! effects, and feeds the answer of the platform effect into the next round. Nothing here does I/O
//! or reads a clock.
//!
//! The status is the record: a mutation is asked for with its pre-send record
//! (`status.unconfirmed`) already in the decided status, and the controller writes that status
//! before it sends. A task the platform started is recorded before it is waited on. So a process
//! killed anywhere resumes from the record: it waits for the recorded task, or reads the
//! platform's installations to learn whether an unanswered request was carried out, and never
//! sends the same mutation twice when the first one was applied.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{Facts, Plan, Step, new_blocker, plan, report, step_of};
use crate::api::{
    DeletionPolicy, Installation, InstallationStatus, Product, ProductInstallation, TaskAction, TaskRecord,
    UnconfirmedRequest,
};
use crate::platform::site::{Sent, TASK_POLL, TaskOutcome, task_poll_after};
use crate::platform::{ErrorKind, PlatformError};
use crate::rules::conditions::{self, Outcome};
use crate::rules::versions::Version;

/// How long a lost answer is given to show in the platform's installations before the request
/// may be sent again (the platform's tasks take seconds).
pub const CONFIRM_WINDOW: Duration = Duration::from_secs(20);
/// How often the platform is read while a lost answer is confirmed.
pub const CONFIRM_POLL: Duration = Duration::from_secs(2);
/// How often a customer's site is looked at for the install its admin makes through the link.
pub const LINK_POLL: Duration = Duration::from_secs(60);
/// After a lost request turned out not to have been carried out: decide afresh almost at once.
pub const AFRESH: Duration = Duration::from_millis(100);

crate::named! {
    /// The reasons of the Events an Installation records (besides a new blocker, whose Event
    /// carries the condition's [`super::Reason`]).
    pub enum Told {
        Upgraded,
        MinorVersionRolledOut,
        Adopted,
        Orphaned,
        LeftOnSite,
        Uninstalled,
        UninstallRefused,
    }
}

/// An installation of the app environment the platform shows on the site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnSite {
    /// The platform's installation id.
    pub id: String,
    /// The installed version: the one whose permissions the site granted.
    pub version: Option<Version>,
    /// The version whose code runs (the platform's `computeVersion`), when known.
    pub running: Option<Version>,
    /// The installation context (the site's product workspace) it is installed into.
    pub context: String,
}

/// How an installation is looked up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// By the site's installation context for the product, and the environment.
    OnSite,
    /// By the id forgeops recorded.
    ById(String),
}

/// Why an installation is looked up: what its answer decides.
#[derive(Clone, Debug, PartialEq)]
pub enum Why {
    /// A task of ours completed: record the installation's id.
    Completed,
    /// The platform said the site already has what `step` asked: record what is there.
    AlreadyDone(Step),
    /// A request whose answer was lost: was it carried out?
    Confirm(UnconfirmedRequest),
    /// Before installing this version: a site that has the app already is adopted, never
    /// installed a second time.
    BeforeInstall(Version),
    /// A customer's site: has its admin installed through the link?
    LinkInstall,
    /// Deleting: what is there to uninstall.
    BeforeUninstall,
}

/// A mutation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Install(Version),
    Upgrade(Version),
    Uninstall { id: String, context: String },
}

impl Request {
    fn action(&self) -> TaskAction {
        match self {
            Request::Install(_) => TaskAction::Install,
            Request::Upgrade(_) => TaskAction::Upgrade,
            Request::Uninstall { .. } => TaskAction::Uninstall,
        }
    }

    fn version(&self) -> Option<Version> {
        match self {
            Request::Install(v) | Request::Upgrade(v) => Some(*v),
            Request::Uninstall { .. } => None,
        }
    }

    fn step(&self) -> Step {
        match self {
            Request::Install(v) => Step::Install(*v),
            Request::Upgrade(v) => Step::UpgradeMajor(*v),
            Request::Uninstall { .. } => Step::Nothing,
        }
    }
}

/// An Event to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub warning: bool,
    /// A [`Told`] or, for a new blocker, a condition [`super::Reason`].
    pub reason: &'static str,
    pub note: String,
}

/// What the controller carries out, in order. At most one effect of a decision is a platform
/// call (`Find`, `PollTask`, `Send`), and it is the last.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Record an Event.
    Event(Event),
    /// Read the platform's installation.
    Find { lookup: Lookup, why: Why },
    /// Read a task.
    PollTask(TaskRecord),
    /// Send a mutation. Its pre-send record is in the decided status: write that first, and do
    /// not send if the write fails.
    Send(Request),
}

/// The answer to the platform effect of the last round.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    Found(Why, Result<Option<OnSite>, PlatformError>),
    Polled(TaskRecord, Result<TaskOutcome, PlatformError>),
    Sent(Request, Result<Sent, PlatformError>),
    /// The app's credentials could not be had, so the effect was not carried out.
    NoCredentials(String),
}

/// When to look again.
#[derive(Clone, Debug, PartialEq)]
pub enum Requeue {
    /// The platform effect's answer is awaited: carry it out and decide again.
    Answer,
    /// After this long; `waiting` says for what (a deletion reports it).
    After { after: Duration, waiting: String },
    /// Only when the object, its app or the platform's listing changes.
    AwaitChange,
    /// A platform failure: reported on the conditions and retried with backoff.
    Failed(PlatformError),
    /// Deleting: nothing is left to do on the site, the finalizer may go.
    Release,
}

/// What [`decide`] returns.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub status: InstallationStatus,
    pub effects: Vec<Effect>,
    pub requeue: Requeue,
    /// The product whose installation the platform effect is for: carry it out there, and answer
    /// with this product.
    pub product: Product,
}

impl Decision {
    /// The platform effect to carry out, if any.
    pub fn platform_effect(&self) -> Option<&Effect> {
        self.effects.iter().find(|e| !matches!(e, Effect::Event(_)))
    }
}

/// Everything an Installation decides from.
#[derive(Clone, Debug)]
pub struct Inputs<'a> {
    /// The object (its spec and metadata).
    pub inst: &'a Installation,
    /// The status as this reconcile has it so far: the object's at the first round, then what
    /// the previous round decided.
    pub status: &'a InstallationStatus,
    /// The app, duplicates and the installation link (`customer_site` is read from `status`).
    pub facts: Facts<'a>,
    /// What the platform's last listing of the app shows on the site: each installation with
    /// the product of its installation context (`jira`, `confluence`, ...).
    pub listed: Vec<(String, OnSite)>,
    /// The answer to the last round's platform effect, with the product it was carried out for
    /// (the decision's [`Decision::product`]).
    pub answer: Option<(Product, Answer)>,
    /// The object is being deleted (the finalizer holds it).
    pub deleting: bool,
    pub now: Time,
}

/// What one product's installation decides from: the Installation's inputs seen from that
/// product (its record as the status, its listing entry, its answer).
struct Lane<'a> {
    inst: &'a Installation,
    status: &'a InstallationStatus,
    facts: Facts<'a>,
    listed: Option<OnSite>,
    answer: Option<Answer>,
    deleting: bool,
    now: Time,
    /// How messages name the place: the site, with the product when there are several.
    label: String,
}

/// Decides one round. The app is installed once per product (see
/// [`super::products_of`]), one product at a time and in order: the first product's installation
/// is the one the status's own fields describe, the others are records in `status.products`. The
/// round goes through the products in order (in reverse when deleting) and stops at the first
/// that has something to do; its conditions are the Installation's unless an earlier product is
/// not ready.
pub fn decide(i: &Inputs) -> Decision {
    if let Some(d) = not_owner(i) {
        return d;
    }
    let products = super::products_of(i.inst, i.status, i.facts.app);
    let several = products.len() > 1;
    let order: Vec<usize> =
        if i.deleting { (0..products.len()).rev().collect() } else { (0..products.len()).collect() };
    let mut top = i.status.clone();
    let mut effects: Vec<Effect> = Vec::new();
    let mut conditions: Option<Vec<crate::api::Condition>> = None;
    let mut stopped: Option<(Requeue, Product)> = None;
    for k in order {
        let product = products[k];
        let view = view_of(&top, i.status, k, product);
        let context = crate::platform::context_product(product.as_str());
        let lane = Lane {
            inst: i.inst,
            status: &view,
            facts: i.facts.clone(),
            listed: i.listed.iter().find(|(p, _)| p == context).map(|(_, o)| o.clone()),
            answer: i.answer.clone().filter(|(p, _)| *p == product).map(|(_, a)| a),
            deleting: i.deleting,
            now: i.now.clone(),
            label: if several { format!("{} ({product})", i.inst.spec.site) } else { i.inst.spec.site.clone() },
        };
        let d = decide_lane(&lane);
        let idle = if i.deleting { d.requeue == Requeue::Release } else { d.requeue == Requeue::AwaitChange };
        let ready = d.status.conditions.iter().any(|c| c.type_ == super::Type::Ready.as_str() && c.status == "True");
        if conditions.is_none() && (!ready || !idle) {
            conditions = Some(d.status.conditions.clone());
        }
        let last_conditions = d.status.conditions.clone();
        absorb(&mut top, k, product, d.status, i.deleting && idle);
        for e in d.effects {
            if !effects.contains(&e) {
                effects.push(e);
            }
        }
        if !idle {
            stopped = Some((d.requeue, product));
            break;
        }
        if conditions.is_none() && k == 0 {
            // The first product's conditions stand unless a later one is not ready.
            top.conditions = last_conditions;
        }
    }
    if let Some(c) = conditions {
        top.conditions = c;
    }
    if top.app_id.is_none() {
        top.app_id = i.facts.app.map(|a| a.spec.app_id.clone());
    }
    if several && !(i.deleting && stopped.is_none()) {
        summarize_first(&mut top, products[0]);
    }
    let (requeue, product) = match stopped {
        Some(s) => s,
        None => (if i.deleting { Requeue::Release } else { Requeue::AwaitChange }, products[0]),
    };
    Decision { status: top, effects, requeue, product }
}

/// How long a deletion waits for usable credentials (a Secret deleted with its namespace, a
/// grant withdrawn) before it lets the object go and leaves the site as it is, with a Warning
/// Event: a namespace's deletion is never held forever.
pub const DELETE_WITHOUT_CREDENTIALS: Duration = Duration::from_secs(60);

/// An Installation whose ForgeApp does not own the app (another ForgeApp does, or it has not
/// claimed it yet) does nothing on the platform: no read, no install, no adoption, and its
/// deletion leaves the site as it is. One not claimed yet waits for the claim; deleting, it waits
/// only if it recorded something on the site (it may turn out to be the owner's).
fn not_owner(i: &Inputs) -> Option<Decision> {
    use crate::ownership::Claim;
    let app = i.facts.app?;
    let spec = &i.inst.spec;
    let recorded = i.status.installation_id.is_some() || i.status.task.is_some() || i.status.unconfirmed.is_some();
    let (outcome, requeue, left) = match &i.facts.claim {
        Claim::Ours => return None,
        Claim::Theirs(owner) => {
            let message = format!(
                "app {} belongs to ForgeApp {owner}, not to ForgeApp {} of this namespace: this Installation does \
                 nothing on the platform{}. Manage {} from the owner's namespace, or delete this Installation",
                app.spec.app_id,
                spec.app_ref.name,
                if i.deleting { " and its deletion leaves the site as it is" } else { "" },
                spec.site
            );
            let requeue = if i.deleting { Requeue::Release } else { Requeue::AwaitChange };
            (Outcome::Stalled(super::Reason::Conflict, message), requeue, i.deleting && recorded)
        }
        Claim::Unclaimed => {
            let message = format!(
                "waiting for ForgeApp {} to claim app {} (it does once it is read from the platform)",
                spec.app_ref.name, app.spec.app_id
            );
            let requeue = if i.deleting && !recorded {
                Requeue::Release
            } else {
                Requeue::After { after: std::time::Duration::from_secs(2), waiting: message.clone() }
            };
            (Outcome::InProgress(super::Reason::Claiming, message), requeue, false)
        }
    };
    let (reason, message) = (outcome.reason(), outcome.message().to_string());
    let mut decided = vec![
        super::Decided::new(super::Type::Installed, i.status.installed_version.is_some(), reason, message.clone()),
        super::Decided::new(super::Type::UpToDate, false, reason, message.clone()),
    ];
    decided.extend(conditions::summary(&outcome, None));
    let generation = i.inst.metadata.generation;
    let mut status = i.status.clone();
    status.observed_generation = generation;
    status.conditions = conditions::merge(&i.status.conditions, &decided, generation, &i.now);
    let effects = if left {
        let note = format!("left {} as it is: ForgeApp {} does not own the app", spec.site, spec.app_ref.name);
        vec![Effect::Event(Event { warning: true, reason: Told::LeftOnSite.as_str(), note })]
    } else {
        Vec::new()
    };
    Some(Decision { status, effects, requeue, product: Product::Jira })
}

/// The status one product's installation decides with: the status itself for the first product,
/// else its record in `status.products` in the status's shape. The conditions are always the
/// object's, so each product's report compares with what the object showed.
fn view_of(top: &InstallationStatus, object: &InstallationStatus, k: usize, product: Product) -> InstallationStatus {
    if k == 0 {
        let mut v = top.clone();
        v.products = Vec::new();
        v.conditions = object.conditions.clone();
        return v;
    }
    let r = top.products.iter().find(|r| r.product == product).cloned().unwrap_or_else(|| record(product));
    InstallationStatus {
        observed_generation: top.observed_generation,
        conditions: object.conditions.clone(),
        installed_major: r.installed_version.as_deref().and_then(Version::parse).map(|v| v.major),
        installed_version: r.installed_version,
        installed_at: r.installed_at,
        available_version: top.available_version.clone(),
        permissions_up_to_date: top.permissions_up_to_date,
        adopted: r.adopted,
        site_administered: top.site_administered,
        unconfirmed: r.unconfirmed,
        installation_id: r.installation_id,
        task: r.task,
        running_version: None,
        app_id: None,
        products: Vec::new(),
    }
}

fn record(product: Product) -> ProductInstallation {
    ProductInstallation {
        product,
        installed_version: None,
        installation_id: None,
        installed_at: None,
        adopted: false,
        task: None,
        unconfirmed: None,
    }
}

/// Takes what one product's round decided back into the Installation's status. A product that
/// is gone from the site (`released` while deleting) loses its record.
fn absorb(top: &mut InstallationStatus, k: usize, product: Product, lane: InstallationStatus, released: bool) {
    if k == 0 {
        let products = std::mem::take(&mut top.products);
        let conditions = std::mem::take(&mut top.conditions);
        *top = lane;
        top.products = products;
        top.conditions = conditions;
        return;
    }
    top.site_administered = lane.site_administered;
    let at = top.products.iter().position(|r| r.product == product);
    if released {
        if let Some(at) = at {
            top.products.remove(at);
        }
        return;
    }
    let r = ProductInstallation {
        product,
        installed_version: lane.installed_version,
        installation_id: lane.installation_id,
        installed_at: lane.installed_at,
        adopted: lane.adopted,
        task: lane.task,
        unconfirmed: lane.unconfirmed,
    };
    let empty = r == record(product);
    match at {
        Some(at) => top.products[at] = r,
        None if !empty => top.products.push(r),
        None => {}
    }
}

/// With several products, `status.products` lists the first one too (its task and unrecorded
/// request stay in the status's own fields), first.
fn summarize_first(top: &mut InstallationStatus, first: Product) {
    let r = ProductInstallation {
        installed_version: top.installed_version.clone(),
        installation_id: top.installation_id.clone(),
        installed_at: top.installed_at.clone(),
        adopted: top.adopted,
        ..record(first)
    };
    top.products.retain(|p| p.product != first);
    if r != record(first) {
        top.products.insert(0, r);
    }
}

/// Decides one round for one product's installation.
fn decide_lane(i: &Lane) -> Decision {
    let mut round = Round { i, s: i.status.clone(), effects: Vec::new(), next: None, failure: None };
    if i.deleting {
        round.delete();
        let requeue = match round.failure {
            Some((_, e)) => Requeue::Failed(e),
            None => round.next.unwrap_or(Requeue::Release),
        };
        return Decision { status: round.s, effects: round.effects, requeue, product: Product::Jira };
    }
    round.reconcile();
    round.report()
}

fn installed(s: &InstallationStatus) -> Option<Version> {
    s.installed_version.as_deref().and_then(Version::parse)
}

fn verb(action: TaskAction) -> &'static str {
    match action {
        TaskAction::Install => "install",
        TaskAction::Upgrade => "upgrade",
        TaskAction::Uninstall => "uninstall",
    }
}

fn elapsed(since: &Time, now: &Time) -> Duration {
    Duration::try_from(now.0.duration_since(since.0)).unwrap_or_default()
}

struct Round<'a> {
    i: &'a Lane<'a>,
    s: InstallationStatus,
    effects: Vec<Effect>,
    next: Option<Requeue>,
    failure: Option<(Step, PlatformError)>,
}

impl Round<'_> {
    fn site(&self) -> &str {
        &self.i.label
    }

    fn plan(&self) -> Plan {
        let facts = Facts { customer_site: self.s.on_customer_site(), ..self.i.facts.clone() };
        plan(self.i.inst, installed(&self.s), &facts)
    }

    fn ask(&mut self, effect: Effect) {
        self.effects.push(effect);
        self.next = Some(Requeue::Answer);
    }

    fn find(&mut self, lookup: Lookup, why: Why) {
        self.ask(Effect::Find { lookup, why });
    }

    /// The recorded id when there is one (uninstalls act on what forgeops recorded).
    fn recorded(&self) -> Lookup {
        self.s.installation_id.clone().map(Lookup::ById).unwrap_or(Lookup::OnSite)
    }

    fn send(&mut self, request: Request) {
        self.s.unconfirmed = Some(UnconfirmedRequest {
            action: request.action(),
            version: request.version().map(|v| v.to_string()),
            sent_at: self.i.now.clone(),
        });
        self.ask(Effect::Send(request));
    }

    /// Polls `task`, unless its first poll is not due yet (a reconcile that the operator's own
    /// record of the task set off): then waits for it.
    fn poll_when_due(&mut self, task: TaskRecord) {
        let elapsed: Duration = self.i.now.0.duration_since(task.started_at.0).try_into().unwrap_or_default();
        if elapsed < TASK_POLL {
            let waiting = format!("platform task {} ({}) on {} is under way", task.id, task.action_str(), self.site());
            self.wait(TASK_POLL - elapsed, waiting);
        } else {
            self.ask(Effect::PollTask(task));
        }
    }

    /// When to poll `task` again: on the CLI's schedule, backing off with the time it has run.
    fn poll_after(&self, task: &TaskRecord) -> Duration {
        let elapsed = self.i.now.0.duration_since(task.started_at.0).try_into().unwrap_or_default();
        task_poll_after(elapsed)
    }

    fn wait(&mut self, after: Duration, waiting: String) {
        self.next = Some(Requeue::After { after, waiting });
    }

    fn fail(&mut self, step: Step, error: PlatformError) {
        self.failure = Some((step, error));
    }

    fn tell(&mut self, warning: bool, reason: &'static str, note: String) {
        self.effects.push(Effect::Event(Event { warning, reason, note }));
    }

    fn release(&mut self) {
        self.next = Some(Requeue::Release);
    }

    fn no_credentials(&mut self, step: Step, why: String) {
        self.fail(step, PlatformError::new(ErrorKind::BadCredentials, "credentials", why));
    }

    // ---- while the object lives ----

    fn reconcile(&mut self) {
        if self.i.facts.app.is_none() {
            // Nothing to act with: the plan says so on the conditions.
            return;
        }
        match self.i.answer.clone() {
            None => {
                self.follow_the_platform();
                self.next_step();
            }
            Some(Answer::NoCredentials(why)) => {
                let step = self.s.task.as_ref().map(step_of).unwrap_or(self.plan().step);
                self.no_credentials(step, why);
            }
            Some(Answer::Polled(task, outcome)) => self.polled(task, outcome),
            Some(Answer::Found(why, found)) => self.found(why, found),
            Some(Answer::Sent(request, sent)) => self.sent(request, sent),
        }
    }

    /// What the platform did on its own since the status was written: a minor it rolled out, or
    /// a bulk-upgrade rollout (or the site's admin) moved the installation to a newer major. Only
    /// forward: the platform never downgrades, so an older listing never undoes a newer record.
    fn follow_the_platform(&mut self) {
        let (Some(current), None) = (installed(&self.s), self.s.task.as_ref()) else { return };
        let Some(listed) = self.i.listed.clone() else { return };
        if listed.version.is_some_and(|v| v >= current) {
            self.runs(listed.running);
        }
        let Some(now) = listed.version.filter(|now| *now > current) else { return };
        self.s.installed_version = Some(now.to_string());
        self.s.installed_major = Some(now.major);
        self.s.installation_id = Some(listed.id);
        self.runs(listed.running);
        // A rollout moves thousands of installations at once: its BulkUpgrade's Events tell that
        // story, not one Event per Installation.
        if now.major == current.major {
            self.tell(
                false,
                Told::MinorVersionRolledOut.as_str(),
                format!("the platform rolled out {now} (from {current})"),
            );
        }
    }

    /// Records the version whose code runs on the site, when it is not the installed one.
    fn runs(&mut self, running: Option<Version>) {
        self.s.running_version = running.filter(|r| Some(*r) != installed(&self.s)).map(|r| r.to_string());
    }

    /// Nothing answered yet this reconcile: the recorded task or lost request first, else what the
    /// plan asks for.
    fn next_step(&mut self) {
        if let Some(task) = self.s.task.clone() {
            self.poll_when_due(task);
            return;
        }
        if let Some(lost) = self.s.unconfirmed.clone() {
            let lookup = if lost.action == TaskAction::Uninstall { self.recorded() } else { Lookup::OnSite };
            self.find(lookup, Why::Confirm(lost));
            return;
        }
        match self.plan().step {
            Step::Nothing => {}
            Step::AwaitLinkInstall => self.find(Lookup::OnSite, Why::LinkInstall),
            // A site that has the app already (a customer installed it through the link, someone
            // ran `forge install`, or a task of ours finished before we could record it) is adopted.
            Step::Install(to) => self.find(Lookup::OnSite, Why::BeforeInstall(to)),
            Step::UpgradeMajor(to) => self.send(Request::Upgrade(to)),
        }
    }

    fn polled(&mut self, task: TaskRecord, outcome: Result<TaskOutcome, PlatformError>) {
        let step = step_of(&task);
        match outcome {
            Ok(TaskOutcome::Complete) => {
                self.s.task = None;
                self.done(step);
                if task.action == TaskAction::Install {
                    self.s.site_administered = Some(true);
                }
                self.find(Lookup::OnSite, Why::Completed);
            }
            Ok(TaskOutcome::AlreadyDone) => {
                // The site had it already: what is there is read, not assumed.
                self.s.task = None;
                self.find(Lookup::OnSite, Why::AlreadyDone(step));
            }
            Ok(TaskOutcome::StillRunning) => {
                let waiting =
                    format!("platform task {} ({}) on {} is under way", task.id, task.action_str(), self.site());
                self.wait(self.poll_after(&task), waiting);
            }
            Ok(TaskOutcome::Failed(said)) => {
                // Dropped: the next attempt decides afresh (with backoff).
                self.s.task = None;
                let message = format!("{} of {} failed on the platform: {said}", task.action_str(), self.site());
                self.fail(step, PlatformError::new(ErrorKind::Unavailable, "forge_cli_getInstallationTask", message));
            }
            Err(e) => self.fail(step, e),
        }
    }

    fn found(&mut self, why: Why, found: Result<Option<OnSite>, PlatformError>) {
        match (why, found) {
            // Only to learn the id: a failed read is tried again on a later round.
            (Why::Completed, found) => {
                if let Ok(Some(f)) = found {
                    self.s.installation_id = Some(f.id);
                    self.runs(f.running);
                }
            }
            (Why::AlreadyDone(step), Ok(Some(f))) => self.take_what_is_there(f, step),
            (Why::AlreadyDone(_), Ok(None)) => {}
            (Why::Confirm(lost), Ok(found)) => self.confirm(lost, found),
            (Why::BeforeInstall(_) | Why::LinkInstall, Ok(Some(f))) => self.adopt(f),
            (Why::BeforeInstall(to), Ok(None)) => self.send(Request::Install(to)),
            (Why::LinkInstall, Ok(None)) => {
                let waiting = format!("waiting for the admin of {} to install through the link", self.site());
                self.wait(LINK_POLL, waiting);
            }
            (Why::BeforeUninstall, _) => {}
            (why, Err(e)) => {
                let step = match why {
                    Why::AlreadyDone(step) => step,
                    Why::BeforeInstall(to) => Step::Install(to),
                    Why::LinkInstall => Step::AwaitLinkInstall,
                    Why::Confirm(lost) => lost_step(&lost),
                    Why::Completed | Why::BeforeUninstall => Step::Nothing,
                };
                self.fail(step, e);
            }
        }
    }

    /// A request whose answer was lost: recorded as done when the platform shows it carried out;
    /// waited for within the confirmation window; otherwise dropped, so the next round may send it
    /// again (the platform's installations show it was not applied).
    fn confirm(&mut self, lost: UnconfirmedRequest, found: Option<OnSite>) {
        let wanted = lost.version.as_deref().and_then(Version::parse);
        let carried_out = match lost.action {
            TaskAction::Install => found.is_some(),
            TaskAction::Upgrade => {
                let now = found.as_ref().and_then(|f| f.version);
                now.is_some() && wanted.is_some_and(|w| now >= Some(w))
            }
            TaskAction::Uninstall => found.is_none(),
        };
        if carried_out {
            self.s.unconfirmed = None;
            if let Some(f) = found {
                self.record_confirmed(f, lost.action);
            }
        } else if elapsed(&lost.sent_at, &self.i.now) < CONFIRM_WINDOW {
            let waiting = format!("confirming whether the {} on {} was carried out", verb(lost.action), self.site());
            self.wait(CONFIRM_POLL, waiting);
        } else {
            self.s.unconfirmed = None;
            let waiting = format!("the lost {} on {} was not carried out", verb(lost.action), self.site());
            self.wait(AFRESH, waiting);
        }
    }

    fn sent(&mut self, request: Request, sent: Result<Sent, PlatformError>) {
        if !matches!(&sent, Err(e) if e.unconfirmed) {
            // Answered: the pre-send record gives way to what the answer says.
            self.s.unconfirmed = None;
        }
        let step = request.step();
        match sent {
            Ok(Sent::Task(id)) => {
                // Recorded before it is waited on: a restart resumes it, never starts a second.
                let task = TaskRecord {
                    id,
                    action: request.action(),
                    version: request.version().map(|v| v.to_string()),
                    started_at: self.i.now.clone(),
                };
                let waiting = format!("platform task {} on {} is under way", task.id, self.site());
                self.s.task = Some(task);
                self.wait(TASK_POLL, waiting);
            }
            Ok(Sent::AlreadyDone | Sent::NothingInstalled) => self.find(Lookup::OnSite, Why::AlreadyDone(step)),
            Err(e) if e.unconfirmed => {
                // Sent, answer lost: maybe carried out. The pre-send record stays, so nothing is
                // sent again until the platform's installations say whether it was.
                let waiting =
                    format!("the answer to the {} on {} was lost; confirming", verb(request.action()), self.site());
                self.wait(CONFIRM_POLL, waiting);
            }
            Err(e) if e.kind == ErrorKind::PermissionDenied && matches!(request, Request::Install(_)) => {
                // A customer's site: forgeops never installs there; it waits for the link install.
                self.s.site_administered = Some(false);
                let waiting = format!("{} is a customer's site: waiting for its admin to install", self.site());
                self.wait(LINK_POLL, waiting);
            }
            Err(e) => self.fail(step, e),
        }
    }

    /// Records that `step` is done on the site: an upgrade with an Event; an install without one
    /// (its `Installed` condition turning True tells it, and a fleet of thousands of installs is
    /// not thousands of Events for the API server to keep: Events are for what a user acts on).
    fn done(&mut self, step: Step) {
        let (Step::Install(to) | Step::UpgradeMajor(to)) = step else { return };
        let from = installed(&self.s);
        if from == Some(to) {
            return;
        }
        self.s.installed_version = Some(to.to_string());
        self.s.installed_major = Some(to.major);
        let (reason, note) = match (step, from) {
            (Step::Install(_), _) => {
                self.s.installed_at = Some(self.i.now.clone());
                return;
            }
            (_, Some(from)) if from.major == to.major => {
                (Told::MinorVersionRolledOut, format!("the platform rolled out {to} (from {from})"))
            }
            (_, from) => {
                (Told::Upgraded, format!("upgraded to {to} (from {})", from.map(|f| f.to_string()).unwrap_or_default()))
            }
        };
        self.tell(false, reason.as_str(), note);
    }

    /// Records an installation found on the site as adopted, with an Event.
    fn adopt(&mut self, found: OnSite) {
        self.s.installed_version = found.version.map(|v| v.to_string());
        self.s.installed_major = found.version.map(|v| v.major);
        self.s.installed_at = Some(self.i.now.clone());
        self.s.installation_id = Some(found.id);
        self.s.adopted = true;
        self.runs(found.running);
        let policy = match self.i.inst.spec.deletion_policy {
            Some(p) => format!("deletionPolicy {p:?}"),
            None => "deleting this object leaves it there (deletionPolicy Orphan unless set)".to_string(),
        };
        let note = format!(
            "adopted the installation already on {} (version {}); {policy}",
            self.site(),
            found.version.map(|v| v.to_string()).unwrap_or_else(|| "unknown".into())
        );
        self.tell(false, Told::Adopted.as_str(), note);
    }

    /// The platform said the site already has what `step` asked (`APP_ALREADY_INSTALLED`,
    /// `INSTALLATION_ALREADY_UPGRADED`): records what is installed there, as read.
    fn take_what_is_there(&mut self, found: OnSite, step: Step) {
        if matches!(step, Step::Install(_)) && self.s.installed_version.is_none() {
            // Someone else's install got there first: it is adopted, not ours.
            self.adopt(found);
            return;
        }
        self.s.installation_id = Some(found.id);
        if let Some(now) = found.version
            && installed(&self.s) != Some(now)
        {
            self.done(Step::UpgradeMajor(now));
        }
        self.runs(found.running);
    }

    /// A lost answer turned out to have been carried out: records what the platform shows, as
    /// done by forgeops.
    fn record_confirmed(&mut self, found: OnSite, action: TaskAction) {
        let Some(now) = found.version else { return };
        self.s.installation_id = Some(found.id);
        if action == TaskAction::Install {
            self.s.site_administered = Some(true);
            self.done(Step::Install(now));
        } else {
            self.done(Step::UpgradeMajor(now));
        }
        self.runs(found.running);
    }

    /// The conditions follow from what is installed now, and from the task, lost request or
    /// failure of this round.
    fn report(mut self) -> Decision {
        let now_plan = self.plan();
        let failure = self.failure.as_ref().map(|(step, e)| (*step, e));
        let rep = report(
            &now_plan,
            self.s.installed_version.is_some(),
            self.s.task.as_ref(),
            self.s.unconfirmed.as_ref(),
            failure,
        );
        let generation = self.i.inst.metadata.generation;
        self.s.available_version = now_plan.available.map(|v| v.to_string());
        self.s.permissions_up_to_date = rep.permissions_up_to_date;
        self.s.observed_generation = generation;
        let previous = &self.i.status.conditions;
        let blocker = new_blocker(previous, &rep.conditions);
        self.s.conditions = conditions::merge(previous, &rep.conditions, generation, &self.i.now);
        if let Some((reason, message)) = blocker {
            // Before any platform effect: that stays last.
            let at = self.effects.iter().position(|e| !matches!(e, Effect::Event(_))).unwrap_or(self.effects.len());
            self.effects.insert(at, Effect::Event(Event { warning: true, reason: reason.as_str(), note: message }));
        }
        let requeue = match self.failure {
            Some((_, e)) => Requeue::Failed(e),
            None => self.next.unwrap_or(Requeue::AwaitChange),
        };
        Decision { status: self.s, effects: self.effects, requeue, product: Product::Jira }
    }

    // ---- while the object is deleted ----

    /// Before the object goes: an install or upgrade under way ends first (otherwise the app would
    /// land on the site with nothing tracking it), then the app is uninstalled or left as the
    /// deletion policy says. Each step is in the record first, so a restart resumes it.
    fn delete(&mut self) {
        let s = &self.s;
        if s.installed_version.is_none() && s.task.is_none() && s.unconfirmed.is_none() {
            self.release();
            return;
        }
        if self.i.facts.app.is_none() {
            // The app's finalizer keeps it while installations exist, so it is normally here.
            let note = format!(
                "the ForgeApp {} is gone: nothing to act on {} with; left as it is",
                self.i.inst.spec.app_ref.name,
                self.site()
            );
            self.tell(true, Told::LeftOnSite.as_str(), note);
            self.release();
            return;
        }
        match self.i.answer.clone() {
            None => {}
            Some(Answer::NoCredentials(why)) => {
                // The credentials went first (the namespace is deleted with its Secret, or a
                // grant was withdrawn): a deletion is not held forever for them.
                let since = self
                    .i
                    .inst
                    .metadata
                    .deletion_timestamp
                    .as_ref()
                    .map(|t| self.i.now.0.as_second() - t.0.as_second());
                if since.is_some_and(|s| s >= DELETE_WITHOUT_CREDENTIALS.as_secs() as i64) {
                    let note = format!(
                        "no credentials to uninstall from {} with for {} s since the deletion began ({why}): left as \
                         it is; uninstall it with `forge uninstall` if it must go",
                        self.site(),
                        DELETE_WITHOUT_CREDENTIALS.as_secs()
                    );
                    self.tell(true, Told::LeftOnSite.as_str(), note);
                    self.release();
                    return;
                }
                return self.no_credentials(Step::Nothing, why);
            }
            Some(Answer::Polled(task, outcome)) if task.action == TaskAction::Uninstall => {
                return self.uninstall_polled(task, outcome);
            }
            Some(Answer::Found(Why::Confirm(lost), found)) if lost.action == TaskAction::Uninstall => {
                return self.uninstall_confirmed(lost, found);
            }
            Some(Answer::Found(Why::BeforeUninstall, found)) => return self.uninstall_found(found),
            Some(Answer::Sent(request @ Request::Uninstall { .. }, sent)) => return self.uninstall_sent(request, sent),
            Some(Answer::Polled(task, outcome)) => self.polled(task, outcome),
            Some(Answer::Found(why, found)) => self.found(why, found),
            Some(Answer::Sent(request, sent)) => self.sent(request, sent),
        }
        if self.failure.is_some() || self.next == Some(Requeue::Answer) {
            return;
        }
        let pending = self.s.task.as_ref().is_some_and(|t| t.action != TaskAction::Uninstall)
            || self.s.unconfirmed.as_ref().is_some_and(|u| u.action != TaskAction::Uninstall);
        if pending {
            if self.next.is_some() {
                let waiting = format!("waiting for the platform task on {} to end before deleting", self.site());
                self.wait(TASK_POLL.max(self.after()), waiting);
            } else if let Some(task) = self.s.task.clone() {
                self.poll_when_due(task);
            } else if let Some(lost) = self.s.unconfirmed.clone() {
                self.find(Lookup::OnSite, Why::Confirm(lost));
            }
            return;
        }
        // Nothing under way any more: a wait decided for it is moot.
        self.next = None;
        self.uninstall_next();
    }

    fn after(&self) -> Duration {
        match &self.next {
            Some(Requeue::After { after, .. }) => *after,
            _ => Duration::ZERO,
        }
    }

    fn uninstall_next(&mut self) {
        let s = &self.s;
        if s.installed_version.is_none() && s.task.is_none() && s.unconfirmed.is_none() {
            self.release();
            return;
        }
        if self.i.inst.spec.deletion_policy_given(&self.s) == DeletionPolicy::Orphan {
            self.orphan();
            return;
        }
        if let Some(task) = self.s.task.clone() {
            self.poll_when_due(task);
        } else if let Some(lost) = self.s.unconfirmed.clone() {
            let lookup = self.recorded();
            self.find(lookup, Why::Confirm(lost));
        } else {
            let lookup = self.recorded();
            self.find(lookup, Why::BeforeUninstall);
        }
    }

    fn orphan(&mut self) {
        let note = format!(
            "left version {} installed on {} (deletionPolicy Orphan{})",
            self.s.installed_version.as_deref().unwrap_or("?"),
            self.site(),
            if self.i.inst.spec.deletion_policy.is_none() { ", the default for an adopted installation" } else { "" }
        );
        self.tell(false, Told::Orphaned.as_str(), note);
        self.release();
    }

    fn uninstalled(&mut self) {
        let note =
            format!("uninstalled version {} from {}", self.s.installed_version.as_deref().unwrap_or("?"), self.site());
        self.tell(false, Told::Uninstalled.as_str(), note);
        self.release();
    }

    fn uninstall_polled(&mut self, task: TaskRecord, outcome: Result<TaskOutcome, PlatformError>) {
        match outcome {
            Ok(TaskOutcome::StillRunning) => {
                let waiting = format!("uninstall task {} on {} is under way", task.id, self.site());
                self.wait(self.poll_after(&task), waiting);
            }
            Ok(TaskOutcome::Complete | TaskOutcome::AlreadyDone) => self.uninstalled(),
            Ok(TaskOutcome::Failed(said)) => {
                self.s.task = None;
                let message = format!("uninstall from {} failed on the platform: {said}", self.site());
                let error = PlatformError::new(ErrorKind::Unavailable, "forge_cli_getInstallationTask", message);
                self.fail(Step::Nothing, error);
            }
            Err(e) => self.fail(Step::Nothing, e),
        }
    }

    fn uninstall_confirmed(&mut self, lost: UnconfirmedRequest, found: Result<Option<OnSite>, PlatformError>) {
        match found {
            Ok(None) => self.uninstalled(),
            Ok(Some(_)) if elapsed(&lost.sent_at, &self.i.now) < CONFIRM_WINDOW => {
                let waiting = format!("confirming whether the uninstall from {} was carried out", self.site());
                self.wait(CONFIRM_POLL, waiting);
            }
            Ok(Some(f)) => {
                // Not carried out: it may be sent again.
                self.s.unconfirmed = None;
                self.uninstall_found(Ok(Some(f)));
            }
            Err(e) => self.fail(Step::Nothing, e),
        }
    }

    fn uninstall_found(&mut self, found: Result<Option<OnSite>, PlatformError>) {
        match found {
            Ok(None) => {
                let note = format!("nothing was installed on {} any more", self.site());
                self.tell(false, Told::Uninstalled.as_str(), note);
                self.release();
            }
            Ok(Some(f)) => self.send(Request::Uninstall { id: f.id, context: f.context }),
            Err(e) => self.fail(Step::Nothing, e),
        }
    }

    fn uninstall_sent(&mut self, request: Request, sent: Result<Sent, PlatformError>) {
        if matches!(&sent, Err(e) if e.unconfirmed) {
            // The pre-send record stays: the platform's installations tell whether it was done.
            let waiting = format!("the answer to the uninstall from {} was lost; confirming", self.site());
            self.wait(CONFIRM_POLL, waiting);
            return;
        }
        self.s.unconfirmed = None;
        match sent {
            Ok(Sent::NothingInstalled | Sent::AlreadyDone) => self.uninstall_found(Ok(None)),
            Ok(Sent::Task(id)) => {
                let waiting = format!("uninstalling from {}", self.site());
                self.s.task =
                    Some(TaskRecord { id, action: request.action(), version: None, started_at: self.i.now.clone() });
                self.wait(TASK_POLL, waiting);
            }
            Err(e) if e.kind == ErrorKind::PermissionDenied => {
                // A customer's site: only its admin uninstalls. The object goes; the app stays.
                let note = format!(
                    "the platform refused to uninstall from {} ({}): only the site's admin can remove the app from \
                     a customer's site; it stays installed there",
                    self.site(),
                    e.message
                );
                self.tell(true, Told::UninstallRefused.as_str(), note);
                self.release();
            }
            Err(e) => self.fail(Step::Nothing, e),
        }
    }
}

/// The step a lost request carries out.
fn lost_step(lost: &UnconfirmedRequest) -> Step {
    step_of(&TaskRecord {
        id: String::new(),
        action: lost.action,
        version: lost.version.clone(),
        started_at: lost.sent_at.clone(),
    })
}

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;
