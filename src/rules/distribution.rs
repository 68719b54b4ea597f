//! The DistributionPolicy rules: one pure [`decide`] per round. Sharing and the installation link
//! belong to the whole app, so one policy governs an app (the link installs its production
//! environment); the round reads the platform's sharing state when due, sees what was changed
//! outside the cluster (drift), and asks for one platform step at a time, whose answer comes back
//! as an input of the next round ([`Answers`]).

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::conditions::{self, Outcome};
use super::versions;
use crate::api::{
    DistributionPolicy, DistributionPolicyStatus, DriftAction, DriftChange, DriftRecord, ForgeApp, PlatformSharing,
    PolicyDeletion, Product, Sharing,
};
use crate::ownership::Claim;
use crate::platform::{AppDetails, DistributionLink, ErrorKind, PlatformError, SharingState};
use kube::ResourceExt;

/// The finalizer a policy with `deletionPolicy: StopSharing` holds until sharing is off.
pub const FINALIZER: &str = "forgeops.dev/stop-sharing";

/// The production environment: the one an installation link installs.
pub const LINK_ENVIRONMENT: &str = "production";

/// How often the platform is read again when `spec.refreshInterval` is unset.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(600);

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
        /// Asking the platform (reading, turning sharing on or off, generating a link).
        Applying,
        Ready,
        /// Sharing was changed outside the cluster and `onDrift` is `Report`.
        Drifted,
        /// Sharing cannot be managed on the platform by forgeops.
        DistributionUnsupported,
        /// The platform refused a distribution operation (401, 403, validation).
        DistributionRefused,
        /// The platform failed; retried.
        PlatformError,
        /// The policy is being deleted and turns sharing off first.
        StoppingSharing,
        AsExpected,
    }
}

crate::summarized!(Type, Reason);

pub type Decided = conditions::Decided<Type, Reason>;

crate::named! {
    /// The reasons of the Events a policy publishes.
    pub enum EventReason {
        SharingEnabled,
        SharingDisabled,
        LinkRotated,
        LinkRegenerated,
        /// `linkRevision` was raised while sharing is off: the new link comes when it is on again.
        LinkRotationPending,
        DriftCorrected,
        DriftDetected,
        /// The policy went without turning sharing off (the platform could not be asked).
        LeftShared,
    }
}

/// An Event to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub warning: bool,
    pub reason: EventReason,
    pub note: String,
    /// The Event's action.
    pub action: &'static str,
}

/// One step on the platform or on the object, carried out by the controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Add [`FINALIZER`] before anything is shared (`deletionPolicy: StopSharing`).
    AddFinalizer,
    /// Remove [`FINALIZER`]: with the policy deleting, the object then goes.
    RemoveFinalizer,
    /// Read the platform's sharing state and active link.
    Read,
    /// Turn sharing on, with these app details.
    EnableSharing(AppDetails),
    /// Turn sharing off.
    DisableSharing,
    /// Generate a new installation link for these products (the old one dies).
    GenerateLink(Vec<String>),
}

impl Effect {
    /// Whether the step changes the platform (and so must be fenced to the leader).
    pub fn mutates_platform(&self) -> bool {
        matches!(self, Effect::EnableSharing(_) | Effect::DisableSharing | Effect::GenerateLink(_))
    }
}

/// The answer of one [`Effect`], fed into the next round.
#[derive(Clone, Debug)]
pub enum Answer {
    FinalizerAdded,
    Read(SharingState),
    SharingSet(bool),
    Generated(DistributionLink),
    /// The step failed; no further step is taken this reconcile.
    Failed(PlatformError),
}

/// What this reconcile's steps answered so far.
#[derive(Clone, Debug, Default)]
pub struct Answers {
    /// The first read of this reconcile, before any change of ours: what drift is judged by.
    pub first_read: Option<SharingState>,
    /// The platform's state as now known: the last read with our changes since applied.
    pub view: Option<SharingState>,
    /// Whether the platform was read since our last change of sharing.
    pub read_since_change: bool,
    /// Sharing as this reconcile set it.
    pub set_shared: Option<bool>,
    /// The link this reconcile generated.
    pub generated: Option<DistributionLink>,
    pub finalizer_added: bool,
    pub failure: Option<PlatformError>,
}

impl Answers {
    /// Records one step's answer.
    pub fn record(&mut self, answer: Answer) {
        match answer {
            Answer::FinalizerAdded => self.finalizer_added = true,
            Answer::Read(state) => {
                if self.first_read.is_none() {
                    self.first_read = Some(state.clone());
                }
                // A link generated this reconcile stands whatever a read returns after it.
                let mut state = state;
                if let Some(link) = &self.generated {
                    state.link = Some(link.clone());
                }
                self.view = Some(state);
                self.read_since_change = true;
            }
            Answer::SharingSet(shared) => {
                self.set_shared = Some(shared);
                self.read_since_change = false;
                if let Some(v) = &mut self.view {
                    v.shared = shared;
                }
            }
            Answer::Generated(link) => {
                if let Some(v) = &mut self.view {
                    v.link = Some(link.clone());
                }
                self.generated = Some(link);
            }
            Answer::Failed(e) => self.failure = Some(e),
        }
    }

    fn read(&self) -> bool {
        self.first_read.is_some()
    }
}

/// Everything a round decides from.
pub struct Inputs<'a> {
    pub policy: &'a DistributionPolicy,
    /// The ForgeApp of `spec.appRef`, from the watch cache.
    pub app: Option<&'a ForgeApp>,
    /// The policy that governs the app, if it is not this one.
    pub governing: Option<&'a str>,
    /// Whether the app's ForgeApp owns the appId.
    pub claim: &'a Claim,
    pub answers: &'a Answers,
    pub now: &'a Time,
}

/// What a round decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The status to write once no effect is left.
    pub status: DistributionPolicyStatus,
    /// The next steps, in order; empty: the reconcile is done.
    pub effects: Vec<Effect>,
    /// Events to publish once the reconcile is done.
    pub events: Vec<Event>,
    /// When to look again (the drift interval), unless a failure is retried sooner.
    pub requeue: Option<Duration>,
    /// A platform failure the controller's backoff retries.
    pub retry: Option<PlatformError>,
}

/// Of several policies, the one that governs an app: the oldest, then by name.
pub fn governing<'a>(
    policies: impl IntoIterator<Item = &'a DistributionPolicy>,
    app: &str,
) -> Option<&'a DistributionPolicy> {
    policies.into_iter().filter(|p| p.spec.app_ref.name == app && p.metadata.deletion_timestamp.is_none()).min_by(
        |a, b| {
            let key = |p: &DistributionPolicy| (p.metadata.creation_timestamp.clone().map(|t| t.0), p.name_any());
            key(a).cmp(&key(b))
        },
    )
}

/// `spec.refreshInterval`, parsed (the default when unset; at least 5 seconds).
pub fn refresh_interval(policy: &DistributionPolicy) -> Duration {
    policy
        .spec
        .refresh_interval
        .as_deref()
        .and_then(crate::api::parse_duration)
        .unwrap_or(DEFAULT_REFRESH_INTERVAL)
        .max(Duration::from_secs(5))
}

fn refresh_asked(policy: &DistributionPolicy) -> Option<String> {
    policy.metadata.annotations.as_ref().and_then(|a| a.get(crate::api::REFRESH_ANNOTATION)).cloned()
}

fn has_finalizer(policy: &DistributionPolicy) -> bool {
    policy.finalizers().iter().any(|f| f == FINALIZER)
}

fn seconds_between(from: &Time, to: &Time) -> i64 {
    to.0.as_second() - from.0.as_second()
}

/// Whether the platform must be read before deciding: never read, the spec changed, a refresh was
/// asked for, the interval is up, or the last look did not end Ready.
pub fn read_due(policy: &DistributionPolicy, now: &Time) -> bool {
    let Some(status) = policy.status.as_ref() else { return true };
    let Some(platform) = status.platform.as_ref() else { return true };
    let interval = refresh_interval(policy).as_secs() as i64;
    status.observed_generation != policy.metadata.generation
        || refresh_asked(policy).is_some_and(|a| Some(&a) != status.observed_refresh.as_ref())
        || seconds_between(&platform.read_at, now) >= interval
        || !conditions::is_true(&status.conditions, Type::Ready)
}

/// How long until the next read is due.
fn next_read(policy: &DistributionPolicy, read_at: &Time, now: &Time) -> Duration {
    let interval = refresh_interval(policy);
    let elapsed = Duration::from_secs(seconds_between(read_at, now).max(0) as u64);
    interval.saturating_sub(elapsed).max(Duration::from_secs(1))
}

/// The app details sent when sharing is turned on.
pub fn app_details(policy: &DistributionPolicy) -> AppDetails {
    let d = policy.spec.app_details.clone().unwrap_or_default();
    AppDetails {
        vendor_name: d.vendor_name,
        privacy_policy: d.privacy_policy,
        terms_of_service: d.terms_of_service,
        contact_link: d.contact_link,
    }
}

/// The app a policy governs, or why it does not act on the platform at all.
fn governed<'a>(i: &Inputs<'a>) -> Result<&'a ForgeApp, Outcome<Reason>> {
    let spec = &i.policy.spec;
    let Some(app) = i.app else {
        return Err(Outcome::Stalled(
            Reason::AppNotFound,
            format!("ForgeApp {} does not exist in this namespace", spec.app_ref.name),
        ));
    };
    match i.claim {
        Claim::Ours => {}
        Claim::Theirs(owner) => {
            return Err(Outcome::Stalled(
                Reason::Conflict,
                format!(
                    "app {} belongs to ForgeApp {owner}, not to ForgeApp {} of this namespace: this policy does \
                     nothing on the platform; manage sharing from the owner's namespace, or delete this policy",
                    app.spec.app_id, spec.app_ref.name
                ),
            ));
        }
        Claim::Unclaimed => {
            return Err(Outcome::InProgress(
                Reason::Claiming,
                format!("waiting for ForgeApp {} to claim app {}", spec.app_ref.name, app.spec.app_id),
            ));
        }
    }
    match i.governing {
        None => Ok(app),
        Some(first) => Err(Outcome::Stalled(
            Reason::Conflict,
            format!(
                "DistributionPolicy {first} already governs sharing of app {} (sharing and the installation link \
                 belong to the whole app): this policy does nothing on the platform; delete this one or that one",
                spec.app_ref.name
            ),
        )),
    }
}

/// Why an `Enabled` policy cannot share the app, judged from the ForgeApp alone (no request).
fn cannot_share(policy: &DistributionPolicy, app: &ForgeApp) -> Option<Outcome<Reason>> {
    let spec = &policy.spec;
    let Some(latest) = versions::latest(app.deployed(LINK_ENVIRONMENT)) else {
        let message = format!(
            "app {} has no version deployed in the production environment, which an installation link installs: \
             deploy one first{}",
            spec.app_ref.name,
            if app.spec.environments.iter().any(|e| e == LINK_ENVIRONMENT) {
                ""
            } else {
                " (and add production to the ForgeApp's spec.environments)"
            }
        );
        return Some(Outcome::Stalled(Reason::NotDeployed, message));
    };
    if latest.licensing {
        return Some(Outcome::Stalled(
            Reason::LicensedApp,
            format!(
                "version {} of app {} has licensing enabled (the platform reports requiresLicense), and a licensed \
                 app cannot be shared by link: share an unlicensed copy of the app instead",
                versions::Version::of(latest),
                spec.app_ref.name
            ),
        ));
    }
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
    (!problems.is_empty()).then(|| Outcome::Stalled(Reason::ProductsNotSupported, problems.join("; ")))
}

/// Whether a platform failure is retried by the controller's backoff: only those the same request
/// may get past later (outages, rate limits). Refusals wait for a change or the next interval.
pub fn retried(e: &PlatformError) -> bool {
    e.kind.retryable()
}

/// The condition reason and message for a platform failure, saying where to act by hand. A refusal
/// of a distribution operation is the policy's alone: it never marks the credentials bad.
pub fn platform_problem(app_id: &str, e: &PlatformError) -> (Reason, String) {
    let uuid = app_id.rsplit('/').next().unwrap_or_default();
    let console = format!("https://developer.atlassian.com/console/myapps/{uuid}/distribution");
    match e.kind {
        ErrorKind::Unsupported => (
            Reason::DistributionUnsupported,
            format!(
                "forgeops cannot manage sharing for this app on the platform ({}): manage it by hand in the developer \
                 console at {console}, or run forgeops with --platform-distribution where the platform allows it",
                e.message
            ),
        ),
        ErrorKind::BadCredentials | ErrorKind::PermissionDenied | ErrorKind::Refused | ErrorKind::NotFound => (
            Reason::DistributionRefused,
            format!(
                "the platform refused it: {e}; change the spec (spec.appDetails for missing app details), or manage \
                 sharing in the developer console at {console}"
            ),
        ),
        _ => (Reason::PlatformError, format!("{e} (retrying with backoff)")),
    }
}

fn same_products(a: &[String], b: &[String]) -> bool {
    let (a, b): (BTreeSet<&String>, BTreeSet<&String>) = (a.iter().collect(), b.iter().collect());
    a == b
}

fn spec_products(policy: &DistributionPolicy) -> Vec<String> {
    policy.spec.products.iter().map(|p| p.as_str().to_string()).collect()
}

/// What the platform holds, as far as this reconcile knows: read, or as the status last recorded.
fn known_state(previous: &DistributionPolicyStatus, answers: &Answers) -> Option<SharingState> {
    if let Some(view) = &answers.view {
        return Some(view.clone());
    }
    let platform = previous.platform.as_ref()?;
    let link = previous
        .installation_link
        .clone()
        .map(|url| DistributionLink { url, products: platform.link_products.clone() });
    Some(SharingState { shared: platform.shared, listed_on_marketplace: platform.listed_on_marketplace, link })
}

/// A change made outside the cluster since the status last recorded the platform: judged from this
/// reconcile's first read, before any change of ours.
fn drift(previous: &DistributionPolicyStatus, answers: &Answers) -> Option<(DriftChange, String)> {
    let (recorded, read) = (previous.platform.as_ref()?, answers.first_read.as_ref()?);
    if recorded.shared && !read.shared {
        return Some((
            DriftChange::SharingTurnedOff,
            "sharing was turned off outside the cluster (\"Not sharing\" in the developer console)".into(),
        ));
    }
    if !recorded.shared && read.shared {
        return Some((
            DriftChange::SharingTurnedOn,
            "sharing was turned on outside the cluster (in the developer console)".into(),
        ));
    }
    let url = |l: &Option<DistributionLink>| l.as_ref().map(|l| l.url.clone());
    if let (Some(ours), Some(theirs)) = (&previous.installation_link, url(&read.link))
        && *ours != theirs
    {
        return Some((
            DriftChange::LinkReplaced,
            format!(
                "a new installation link was generated outside the cluster (for {}): the link this policy handed out \
                 no longer admits installations",
                read.link.as_ref().map(|l| l.products.join(", ")).unwrap_or_default()
            ),
        ));
    }
    None
}

/// Whether a drift reported with `onDrift: Report` still stands: seen at this generation, and the
/// platform still differs from the spec where it drifted.
fn outstanding(policy: &DistributionPolicy, record: Option<&DriftRecord>, state: &SharingState) -> bool {
    let Some(r) = record else { return false };
    if r.corrected || r.generation != policy.metadata.generation || policy.spec.on_drift != DriftAction::Report {
        return false;
    }
    let want = policy.spec.sharing == Sharing::Enabled;
    match r.change {
        DriftChange::SharingTurnedOff | DriftChange::SharingTurnedOn => state.shared != want,
        DriftChange::LinkReplaced => {
            want && state.link.as_ref().is_some_and(|l| !same_products(&l.products, &spec_products(policy)))
        }
    }
}

/// One round: the policy's status, and its next steps.
pub fn decide(i: &Inputs) -> Decision {
    let policy = i.policy;
    let spec = &policy.spec;
    let previous = policy.status.clone().unwrap_or_default();
    let answers = i.answers;
    let deleting = policy.metadata.deletion_timestamp.is_some();
    let mut d = Round::new(policy, &previous, i.now);

    // Not the governing policy of an app this namespace owns: nothing on the platform, ever.
    let app = match governed(i) {
        Ok(app) => app,
        Err(outcome) => {
            if has_finalizer(policy) {
                d.effects.push(Effect::RemoveFinalizer);
            }
            return d.finish(false, outcome, None, answers);
        }
    };

    // Deleting: turn sharing off first where the spec says so.
    if deleting {
        if !has_finalizer(policy) {
            return d.finish(false, Outcome::Done(Reason::Ready, "deleted".into()), None, answers);
        }
        if spec.deletion_policy == PolicyDeletion::Keep {
            d.effects.push(Effect::RemoveFinalizer);
            return d.finish(
                false,
                Outcome::Done(Reason::Ready, "deleted; sharing left as it is".into()),
                None,
                answers,
            );
        }
        if let Some(e) = &answers.failure {
            if retried(e) {
                let message = format!("turning sharing off before the policy goes: {e} (retrying)");
                d.retry = Some(e.clone());
                return d.finish(false, Outcome::Retrying(Reason::StoppingSharing, message), None, answers);
            }
            d.events.push(Event {
                warning: true,
                reason: EventReason::LeftShared,
                note: format!(
                    "the policy is deleted with deletionPolicy StopSharing, but the platform could not be asked to \
                     stop sharing ({e}): sharing is left as it is; turn it off in the developer console"
                ),
                action: "Delete",
            });
            d.effects.push(Effect::RemoveFinalizer);
            return d.finish(false, Outcome::Done(Reason::Ready, "deleted".into()), None, answers);
        }
        if answers.set_shared == Some(false) {
            d.effects.push(Effect::RemoveFinalizer);
            return d.finish(false, Outcome::Done(Reason::Ready, "sharing turned off; deleted".into()), None, answers);
        }
        match &answers.view {
            None => d.effects.push(Effect::Read),
            Some(v) if v.shared && !v.listed_on_marketplace => d.effects.push(Effect::DisableSharing),
            Some(_) => d.effects.push(Effect::RemoveFinalizer),
        }
        let message = "turning sharing off before the policy goes (deletionPolicy StopSharing)".to_string();
        return d.finish(false, Outcome::InProgress(Reason::StoppingSharing, message), None, answers);
    }

    // The finalizer follows spec.deletionPolicy, before anything is shared.
    match (spec.deletion_policy, has_finalizer(policy) || answers.finalizer_added) {
        (PolicyDeletion::StopSharing, false) => {
            d.effects.push(Effect::AddFinalizer);
            return d.finish(true, Outcome::InProgress(Reason::Applying, "adding the finalizer".into()), None, answers);
        }
        (PolicyDeletion::Keep, true) if has_finalizer(policy) => d.effects.push(Effect::RemoveFinalizer),
        _ => {}
    }

    // What the ForgeApp alone rules out.
    if spec.sharing == Sharing::Enabled
        && let Some(outcome) = cannot_share(policy, app)
    {
        return d.finish(true, outcome, None, answers);
    }

    // A failed step: say what to do; retried when it may pass later.
    if let Some(e) = &answers.failure {
        let (reason, message) = platform_problem(&app.spec.app_id, e);
        let outcome = if retried(e) {
            d.retry = Some(e.clone());
            Outcome::Retrying(reason, message)
        } else {
            Outcome::Stalled(reason, message)
        };
        return d.finish(true, outcome, known_state(&previous, answers).as_ref(), answers);
    }

    // Read the platform when due, and after turning sharing on (the link it then holds).
    let due = if answers.read() {
        answers.set_shared == Some(true) && !answers.read_since_change
    } else {
        read_due(policy, i.now)
    };
    if due {
        d.effects.push(Effect::Read);
        return d.finish(true, Outcome::InProgress(Reason::Applying, "reading the platform".into()), None, answers);
    }
    let Some(state) = known_state(&previous, answers) else {
        d.effects.push(Effect::Read);
        return d.finish(true, Outcome::InProgress(Reason::Applying, "reading the platform".into()), None, answers);
    };

    // What changed outside the cluster.
    if let Some((change, message)) = drift(&previous, answers) {
        // A link generated outside is taken as the current one either way; reported only where it
        // is for other products than the spec's (Correct generates one for the spec's).
        let other_products = state.link.as_ref().is_some_and(|l| !same_products(&l.products, &spec_products(policy)));
        let report = spec.on_drift == DriftAction::Report && (change != DriftChange::LinkReplaced || other_products);
        d.drift = Some(DriftRecord {
            change,
            seen_at: i.now.clone(),
            corrected: !report,
            generation: policy.metadata.generation,
            message: message.clone(),
        });
        let note = if report {
            format!(
                "{message}; onDrift is Report, so the policy leaves it: set it back in the console, change the spec, or set onDrift to Correct"
            )
        } else if change == DriftChange::LinkReplaced && !other_products {
            format!("{message}; the policy takes the new link as the current one")
        } else {
            format!("{message}; the policy sets it back to the spec (onDrift Correct)")
        };
        let reason = if report { EventReason::DriftDetected } else { EventReason::DriftCorrected };
        d.events.push(Event { warning: true, reason, note, action: "Drift" });
    }
    let record = d.drift.clone().or(previous.last_drift.clone());
    if outstanding(policy, record.as_ref(), &state) {
        let message = format!(
            "{}; onDrift is Report: the policy changes nothing until the platform agrees with the spec again, \
             the spec changes, or onDrift is set to Correct",
            record.map(|r| r.message).unwrap_or_default()
        );
        return d.finish(true, Outcome::Stalled(Reason::Drifted, message), Some(&state), answers);
    }

    let pending_rotation =
        previous.link_revision.is_some_and(|r| spec.link_revision > r) && answers.generated.is_none();
    match spec.sharing {
        Sharing::Disabled => {
            if state.shared && !state.listed_on_marketplace {
                d.effects.push(Effect::DisableSharing);
                return d.finish(
                    true,
                    Outcome::InProgress(Reason::Applying, "turning sharing off".into()),
                    Some(&state),
                    answers,
                );
            }
            let mut message =
                "sharing is disabled: set spec.sharing to Enabled to share the app by installation link".to_string();
            if state.listed_on_marketplace {
                message = "the app is listed on the Marketplace (as the platform reports), so it is not shared by link"
                    .into();
            }
            if pending_rotation {
                message = format!(
                    "{message}; link revision {} is generated when sharing is enabled again, before the old link can \
                     admit anyone",
                    spec.link_revision
                );
                if previous.observed_generation != policy.metadata.generation {
                    d.events.push(Event {
                        warning: false,
                        reason: EventReason::LinkRotationPending,
                        note: format!(
                            "linkRevision raised to {} while sharing is off: the new link is generated as sharing is \
                             turned on again, and the old link never admits an installation again",
                            spec.link_revision
                        ),
                        action: "Rotate",
                    });
                }
            }
            d.finish(true, Outcome::Done(Reason::Ready, message), Some(&state), answers)
        }
        Sharing::Enabled => {
            if state.listed_on_marketplace {
                let message = format!(
                    "app {} is listed on (or submitted to) the Marketplace, as the platform reports, and a listed app \
                     cannot be shared by link: share an unlisted copy of the app instead",
                    spec.app_ref.name
                );
                return d.finish(true, Outcome::Stalled(Reason::ListedOnMarketplace, message), Some(&state), answers);
            }
            if !state.shared {
                d.effects.push(Effect::EnableSharing(app_details(policy)));
                return d.finish(
                    true,
                    Outcome::InProgress(Reason::Applying, "turning sharing on".into()),
                    Some(&state),
                    answers,
                );
            }
            let products = spec_products(policy);
            let needs_link = match &state.link {
                None => true,
                Some(l) => pending_rotation || !same_products(&l.products, &products),
            };
            if needs_link && answers.generated.is_none() {
                d.effects.push(Effect::GenerateLink(products));
                return d.finish(
                    true,
                    Outcome::InProgress(Reason::Applying, "generating the installation link".into()),
                    Some(&state),
                    answers,
                );
            }
            let message = format!("sharing app {} by installation link (production environment)", spec.app_ref.name);
            d.finish(true, Outcome::Done(Reason::Ready, message), Some(&state), answers)
        }
    }
}

/// A round under way: the parts of a [`Decision`] gathered before its status.
struct Round<'a> {
    policy: &'a DistributionPolicy,
    previous: &'a DistributionPolicyStatus,
    now: &'a Time,
    effects: Vec<Effect>,
    events: Vec<Event>,
    drift: Option<DriftRecord>,
    retry: Option<PlatformError>,
}

impl<'a> Round<'a> {
    fn new(policy: &'a DistributionPolicy, previous: &'a DistributionPolicyStatus, now: &'a Time) -> Self {
        Round { policy, previous, now, effects: Vec::new(), events: Vec::new(), drift: None, retry: None }
    }

    /// The decision: `governs` says whether this policy's status records the platform; `state` is
    /// the platform as now known (None: not known this round, the recorded link stands).
    fn finish(
        mut self,
        governs: bool,
        outcome: Outcome<Reason>,
        state: Option<&SharingState>,
        answers: &Answers,
    ) -> Decision {
        let (policy, previous, spec) = (self.policy, self.previous, &self.policy.spec);
        let read_now = answers.read();
        let platform = match (governs, answers.view.as_ref().or(state)) {
            (false, _) => previous.platform.clone(),
            (true, Some(s)) if read_now || answers.set_shared.is_some() || answers.generated.is_some() => {
                Some(PlatformSharing {
                    shared: s.shared,
                    listed_on_marketplace: s.listed_on_marketplace,
                    link_products: s.link.as_ref().map(|l| l.products.clone()).unwrap_or_default(),
                    read_at: if read_now {
                        self.now.clone()
                    } else {
                        previous.platform.as_ref().map(|p| p.read_at.clone()).unwrap_or_else(|| self.now.clone())
                    },
                })
            }
            (true, _) => previous.platform.clone(),
        };
        let active = governs
            && matches!(outcome, Outcome::Done(Reason::Ready, _))
            && spec.sharing == Sharing::Enabled
            && platform.as_ref().is_some_and(|p| p.shared && !p.listed_on_marketplace);
        let known_link = answers.view.as_ref().or(state).and_then(|s| s.link.clone());
        let (mut link, mut link_products) = (previous.installation_link.clone(), previous.link_products.clone());
        let mut link_revision = previous.link_revision;
        let mut replaced = previous.replaced_link_products.clone();
        if governs && let Some(l) = &known_link {
            // A link generated now is of the spec's revision; one found with none recorded is adopted as it.
            if answers.generated.is_some() || link_revision.is_none() {
                link_revision = Some(spec.link_revision);
            }
            if previous.installation_link.as_ref() != Some(&l.url) {
                let reissued = answers.generated.is_some()
                    && previous.installation_link.is_some()
                    && !same_products(&previous.link_products, &l.products);
                replaced = if reissued { previous.link_products.clone() } else { Vec::new() };
            }
            (link, link_products) = (Some(l.url.clone()), l.products.clone());
        }
        // Events of this round's own steps.
        if let Some(generated) = &answers.generated {
            if previous.link_revision.is_some_and(|r| r < spec.link_revision) {
                let note = format!(
                    "installation link rotated from revision {} to {}; the old link no longer admits new installations",
                    previous.link_revision.unwrap_or_default(),
                    spec.link_revision
                );
                self.events.push(Event { warning: false, reason: EventReason::LinkRotated, note, action: "Rotate" });
            } else if previous.installation_link.is_some()
                && !same_products(&previous.link_products, &generated.products)
            {
                let note = format!(
                    "the products changed from {} to {}: the platform issued a new installation link, and the old one \
                     no longer admits new installations",
                    previous.link_products.join(", "),
                    generated.products.join(", ")
                );
                self.events.push(Event {
                    warning: false,
                    reason: EventReason::LinkRegenerated,
                    note,
                    action: "Rotate",
                });
            }
        }
        let mut sharing_message = match (&outcome, active) {
            (_, true) => {
                format!("shared by installation link, revision {}", link_revision.unwrap_or(spec.link_revision))
            }
            (o, false) => o.message().to_string(),
        };
        if active && !replaced.is_empty() {
            sharing_message = format!(
                "{sharing_message}; a new link was issued for products {} (the link for {} no longer admits installations)",
                link_products.join(", "),
                replaced.join(", ")
            );
        }
        let sharing_reason = if active {
            Reason::Active
        } else {
            match outcome.reason() {
                Reason::Ready => Reason::Disabled,
                r => r,
            }
        };
        let sharing = Decided::new(Type::Sharing, active, sharing_reason, sharing_message);
        let was = conditions::is_true(&previous.conditions, Type::Sharing);
        if self.effects.is_empty() {
            let note = sharing.message.clone();
            if active && !was {
                self.events.push(Event { warning: false, reason: EventReason::SharingEnabled, note, action: "Share" });
            } else if was && !active && governs && platform.as_ref().is_some_and(|p| !p.shared) {
                self.events.push(Event { warning: false, reason: EventReason::SharingDisabled, note, action: "Share" });
            }
        }
        let mut decided = vec![sharing];
        decided.extend(conditions::summary(&outcome, None));
        if !active {
            link = None;
            replaced = Vec::new();
        }
        let status = DistributionPolicyStatus {
            observed_generation: policy.metadata.generation,
            conditions: conditions::merge(&previous.conditions, &decided, policy.metadata.generation, self.now),
            installation_link: link,
            link_revision,
            link_products: if governs { link_products } else { previous.link_products.clone() },
            replaced_link_products: replaced,
            platform: platform.clone(),
            last_drift: self.drift.clone().or(previous.last_drift.clone()),
            observed_refresh: if read_now { refresh_asked(policy) } else { previous.observed_refresh.clone() },
        };
        let requeue = (governs && policy.metadata.deletion_timestamp.is_none()).then(|| {
            platform.as_ref().map(|p| next_read(policy, &p.read_at, self.now)).unwrap_or(refresh_interval(policy))
        });
        Decision { status, effects: self.effects, events: self.events, requeue, retry: self.retry }
    }
}

#[cfg(test)]
#[path = "distribution_tests.rs"]
mod tests;
