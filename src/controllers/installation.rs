//! The Installation controller: gathers what one Installation decides from (the object, its app
//! and site facts from the watch caches, the platform's listing entry), asks
//! [`rules::decide`] what to do, carries out the effects through [`crate::platform::site`], and
//! feeds each platform answer into the next round. It decides nothing itself. The status is the
//! record: a mutation's pre-send record is written before it is sent, and a task before it is
//! waited on, so an operator killed mid-way resumes instead of sending twice.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, ResourceExt};
use tracing::info;

use super::{Context, Error, apply_status_guarded, instrumented, publish_event, retry_later};
use crate::api::{ForgeApp, Installation, InstallationStatus};
use crate::platform::site;
use crate::platform::{Credentials, InstallationInfo, Target};
use crate::rules::installation::lifecycle::{Lookup, Request};
use crate::rules::installation::{self as rules, Answer, Effect, Facts, Inputs, OnSite, Requeue};
use crate::rules::versions::Version;

const NAME: &str = "installation";
/// Uninstalls from the site before the Installation object goes away.
pub const FINALIZER: &str = "forgeops.dev/uninstall";
/// The most rounds one reconcile runs (each carries out one platform effect); the longest chain,
/// a deletion that waits for an install and then uninstalls, takes five.
const MAX_ROUNDS: usize = 8;

pub async fn reconcile(inst: Arc<Installation>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api: Api<Installation> = Api::namespaced(ctx.client.clone(), &inst.namespace().unwrap_or_default());
    instrumented(&ctx, NAME, inst.as_ref(), async {
        let result = finalizer(&api, FINALIZER, inst.clone(), |event| async {
            match event {
                Finalizer::Apply(inst) => rounds(&inst, &ctx, false).await,
                Finalizer::Cleanup(inst) => {
                    let done = rounds(&inst, &ctx, true).await;
                    if done.is_ok() {
                        ctx.forget_written(inst.as_ref());
                    }
                    done
                }
            }
        })
        .await;
        super::finalized(result)
    })
    .await
}

/// What was observed about the world around one Installation.
struct Observed {
    app: Option<Arc<ForgeApp>>,
    duplicate_of: Option<String>,
    /// The app's installation link, from a DistributionPolicy of the app in this namespace.
    link: Option<String>,
    /// Whether the app's ForgeApp owns the appId.
    claim: crate::ownership::Claim,
}

impl Observed {
    fn facts(&self) -> Facts<'_> {
        Facts {
            app: self.app.as_deref(),
            duplicate_of: self.duplicate_of.clone(),
            customer_site: false,
            link: self.link.clone(),
            claim: self.claim.clone(),
        }
    }
}

async fn observe(inst: &Installation, ctx: &Context, deleting: bool) -> Result<Observed, Error> {
    let ns = inst.namespace().unwrap_or_default();
    let spec = &inst.spec;
    // From the watch caches: no request per reconcile.
    let mut app = ctx.caches.app(&ns, &spec.app_ref.name);
    if app.is_none() && deleting {
        // The app's finalizer keeps it while installations exist: a cache that does not show it
        // yet (or any more) is checked once before the object lets go of the site.
        app = Api::<ForgeApp>::namespaced(ctx.client.clone(), &ns).get_opt(&spec.app_ref.name).await?.map(Arc::new);
    }
    // The oldest Installation of the same app environment on the same site is the one that counts.
    let key = |i: &Installation| (i.metadata.creation_timestamp.clone().map(|t| t.0), i.name_any());
    let duplicate_of = ctx
        .caches
        .installations_on_site(&ns, &spec.site)
        .into_iter()
        .filter(|o| o.spec.app_ref == spec.app_ref && o.spec.environment == spec.environment)
        .filter(|o| o.metadata.deletion_timestamp.is_none() && o.name_any() != inst.name_any())
        .filter(|o| key(o) < key(inst))
        .map(|o| o.name_any())
        .next();
    // The link installs the production environment only.
    let link = (spec.environment == crate::rules::distribution::LINK_ENVIRONMENT)
        .then(|| {
            ctx.caches
                .policies_of_app(&ns, &spec.app_ref.name)
                .iter()
                .find_map(|p| p.status.as_ref().and_then(|s| s.installation_link.clone()))
        })
        .flatten();
    let claim = app.as_deref().map(|a| ctx.claim_of(a)).unwrap_or_default();
    Ok(Observed { app, duplicate_of, link, claim })
}

/// The watch cache can lag behind this process's own last status write. Before acting on the
/// platform, make sure the decision rests on the latest record, so a cached, stale status never
/// repeats an action. The cache is known to hold our last write when it shows the resourceVersion
/// that write returned; only otherwise is the object read afresh.
async fn latest(cached: &Installation, ctx: &Context) -> Result<Installation, Error> {
    if !ctx.may_be_stale(cached) {
        return Ok(cached.clone());
    }
    let api: Api<Installation> = Api::namespaced(ctx.client.clone(), &cached.namespace().unwrap_or_default());
    Ok(api.get(&cached.name_any()).await?)
}

fn on_site(found: InstallationInfo) -> OnSite {
    OnSite {
        version: found.version.as_deref().and_then(Version::parse),
        running: found.compute_version.as_deref().and_then(Version::parse),
        id: found.id,
        context: found.installation_context,
    }
}

/// Gathers, decides and carries out, round after round, until a decision needs no answer.
async fn rounds(cached: &Installation, ctx: &Context, deleting: bool) -> Result<Action, Error> {
    // Set off by the watch's event of an earlier write of this process's last reconcile: the
    // event of its last write is due in a moment, with a reconcile of its own; no fresh read.
    // (Not while deleting: an Ok there would end the finalizer.)
    if !deleting && ctx.awaits_own_write(cached) {
        return Ok(Action::requeue(Duration::from_millis(250)));
    }
    ctx.forget_delivered(cached);
    let observed = observe(cached, ctx, deleting).await?;
    let inst = latest(cached, ctx).await?;
    let listed: Vec<(String, OnSite)> = observed
        .app
        .as_ref()
        .map(|app| {
            let key = crate::platform::environment_key(&inst.spec.environment);
            ctx.platform_installations_on(&app.spec.app_id, key, &inst.spec.site)
                .into_iter()
                .map(|l| {
                    let on = OnSite {
                        id: l.id.into(),
                        version: l.version.as_deref().and_then(Version::parse),
                        running: l.compute_version.as_deref().and_then(Version::parse),
                        context: String::new(),
                    };
                    (l.product.into(), on)
                })
                .collect()
        })
        .unwrap_or_default();
    let action = if deleting { "Delete" } else { "Reconcile" };
    // The object as it is on the API server now, and the status as the rounds have it.
    let mut base = inst.clone();
    let mut status = inst.status.clone().unwrap_or_default();
    let mut answer = None;
    let mut creds: Option<Credentials> = None;
    for _ in 0..MAX_ROUNDS {
        let decision = rules::decide(&Inputs {
            inst: &inst,
            status: &status,
            facts: observed.facts(),
            listed: listed.clone(),
            answer: answer.take(),
            deleting,
            now: super::now(),
        });
        status = decision.status;
        let mut platform_effect = None;
        for effect in decision.effects {
            match effect {
                Effect::Event(e) => {
                    let (name, site) = (inst.name_any(), &inst.spec.site);
                    info!(installation = %name, %site, reason = e.reason, "platform action done: {}", e.note);
                    publish_event(ctx, &inst, e.warning, e.reason, e.note, action).await;
                }
                other => platform_effect = Some(other),
            }
        }
        match decision.requeue {
            Requeue::Answer => {
                let (Some(effect), Some(app)) = (platform_effect, observed.app.as_deref()) else {
                    // The rules ask for an answer only with a platform effect and an app.
                    tracing::error!(installation = %inst.name_any(), "a round asked for an answer without an effect");
                    break;
                };
                if matches!(effect, Effect::Send(_)) {
                    // Only while this replica leads, and only once the pre-send record is written.
                    ctx.fence.check()?;
                    base = write_status(ctx, &base, &status).await?;
                }
                let creds = match &creds {
                    Some(c) => c.clone(),
                    None => match ctx.credentials_for(app).await {
                        Ok(c) => creds.insert(c).clone(),
                        Err(e) => {
                            answer = Some((decision.product, Answer::NoCredentials(e.to_string())));
                            continue;
                        }
                    },
                };
                let target = rules::target_in(&inst, app, decision.product);
                let known = match &effect {
                    Effect::Send(Request::Install(to) | Request::Upgrade(to)) => {
                        rules::observed_version_id(&inst, app, *to)
                    }
                    _ => None,
                };
                let Some(answered) = carry_out(ctx, &creds, &target, effect, known).await else { break };
                answer = Some((decision.product, answered));
            }
            Requeue::Release => return Ok(Action::await_change()),
            Requeue::After { after, waiting } => {
                write_status(ctx, &base, &status).await?;
                return if deleting { Err(Error::NotYet { what: waiting, after }) } else { Ok(Action::requeue(after)) };
            }
            Requeue::AwaitChange => {
                write_status(ctx, &base, &status).await?;
                return Ok(Action::await_change());
            }
            Requeue::Failed(e) => {
                write_status(ctx, &base, &status).await?;
                return Err(e.into());
            }
        }
    }
    write_status(ctx, &base, &status).await?;
    Ok(Action::requeue(Duration::from_secs(1)))
}

/// Carries out one platform effect and answers what the platform said (`None` for an Event,
/// which the rounds publish themselves and never pass here).
/// `known` is the platform's id of the version an install or upgrade goes to, as the app observed it.
async fn carry_out(
    ctx: &Context,
    creds: &Credentials,
    target: &Target,
    effect: Effect,
    known: Option<String>,
) -> Option<Answer> {
    let platform = ctx.platform.as_ref();
    let answer = match effect {
        Effect::Find { lookup, why } => {
            let found = match &lookup {
                Lookup::OnSite => site::find_installation(platform, creds, target).await,
                Lookup::ById(id) => site::installation_by_id(platform, creds, target, id).await,
            };
            Answer::Found(why, found.map(|f| f.map(on_site)))
        }
        Effect::PollTask(task) => {
            let outcome = site::poll(platform, creds, &task.id).await;
            Answer::Polled(task, outcome)
        }
        Effect::Send(request) => {
            let sent = match &request {
                Request::Install(to) => site::start(platform, creds, target, false, *to, known).await,
                Request::Upgrade(to) => site::start(platform, creds, target, true, *to, known).await,
                Request::Uninstall { id, context } => site::start_uninstall(platform, creds, target, id, context).await,
            };
            Answer::Sent(request, sent)
        }
        Effect::Event(_) => return None,
    };
    if let Answer::Found(_, Err(e)) | Answer::Polled(_, Err(e)) | Answer::Sent(_, Err(e)) = &answer {
        ctx.saw_platform_error(creds, e);
    }
    Some(answer)
}

/// Writes `status` unless the object has it already. Answers the object as written.
async fn write_status(ctx: &Context, inst: &Installation, status: &InstallationStatus) -> Result<Installation, Error> {
    if inst.status.as_ref() == Some(status) {
        return Ok(inst.clone());
    }
    let written = apply_status_guarded(&ctx.client, inst, status).await?;
    ctx.wrote(&written);
    Ok(written)
}

pub fn error_policy(inst: Arc<Installation>, error: &Error, ctx: Arc<Context>) -> Action {
    retry_later(NAME, inst.as_ref(), error, &ctx)
}

/// Runs the Installation controller until `shutdown` resolves. Installations come from the shared
/// watch cache (no watch of its own); they are re-checked as soon as their app changes in a way
/// that matters to them (watched, never polled; not on every count the app reports). `_api` is not
/// watched.
pub async fn run(ctx: Arc<Context>, shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static) {
    use futures::StreamExt;
    let config = kube::runtime::controller::Config::default().concurrency(super::concurrency::INSTALLATIONS);
    // The shared caches make the feed once, and only this controller takes it.
    let Some(feed) = ctx.caches.take_installation_feed() else {
        tracing::error!("the Installation controller's feed was taken already: the controller does not run");
        return;
    };
    let controller = Controller::for_shared_stream(feed, ctx.caches.installations.clone()).with_config(config);
    // Installations whose platform listing changed (a rollout moved them), from the listing refresh.
    let triggers = ctx
        .installation_trigger_stream()
        .map(|rx| futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) }).boxed());
    let caches = ctx.caches.clone();
    let app_changed = super::dependents_of_changed_apps(
        ctx.caches.take_app_changes(super::caches::Dependents::Installations),
        move |ns, app| caches.installation_refs_of_app(ns, app),
    );
    controller
        .reconcile_on(app_changed)
        .reconcile_on(triggers.unwrap_or_else(|| futures::stream::empty().boxed()))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}
