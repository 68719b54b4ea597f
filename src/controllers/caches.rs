//! Watch caches shared by the controllers: ForgeApps, Installations and DistributionPolicies, each
//! kept by one reflector, so a reconcile reads related objects from memory instead of sending a GET
//! or a LIST (the one fresh read before an irreversible platform call excepted, and only when the
//! cache lags behind this process's own write). Linkerd's policy controller is the model: indexes
//! built from watches, and only those are read.
//!
//! Installations are the kind there are thousands of, so:
//! - one watch feeds everything: the cache, the Installation controller (a subscriber of the shared
//!   store) and the ForgeApp controller (a trigger per app whose Installations changed, deletions
//!   included), instead of a watch and a copy of every object per controller;
//! - the objects are trimmed before they are kept (managed fields and the last-applied annotation,
//!   which nothing here reads);
//! - an [`InstallationIndex`] by app and by site answers "the Installations of app X" and "the
//!   Installations on site Y" without walking the whole cache.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::reflector::{self, ObjectRef, ReflectHandle, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};

use k8s_openapi::api::coordination::v1::Lease;

use crate::api::{DistributionPolicy, ForgeApp, Installation};

/// How many change notices the shared Installation store buffers per subscriber before the watch
/// waits for the subscriber to catch up.
const SUBSCRIBER_BUFFER: usize = 4096;
/// An app hears that its Installations changed at most this often (the first change at once), so
/// thousands of installs in a row recount it a few times, not thousands.
const APP_FEED_EVERY: Duration = Duration::from_millis(1000);

/// The shared caches, filled by watches that run as long as this value lives.
pub struct Caches {
    pub apps: Store<ForgeApp>,
    pub installations: Store<Installation>,
    pub policies: Store<DistributionPolicy>,
    /// The Leases in the operator's namespace (the bulk upgrade concurrency limits).
    pub leases: Store<Lease>,
    index: Arc<RwLock<InstallationIndex>>,
    /// The Installation controller's feed of changed Installations (taken once).
    installation_feed: Mutex<Option<ReflectHandle<Installation>>>,
    /// The ForgeApp controller's feed: the app of every Installation that changed or went away.
    app_feed: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<ObjectRef<ForgeApp>>>>,
    /// For each kind of dependent ([`Dependents`]): the apps that changed in a way it decides on,
    /// sent once the cache holds the change (so a reconcile it triggers reads the new app).
    app_changes: Mutex<Vec<Option<tokio::sync::mpsc::UnboundedReceiver<ObjectRef<ForgeApp>>>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Caches {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Drops what nothing in the operator reads, so each cached object costs less memory.
pub fn trim<K: Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
    if let Some(annotations) = obj.meta_mut().annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// [`trim`], and for the kind there are thousands of, what no controller reads of an
/// Installation's metadata either: its labels, annotations and owner references (what GitOps
/// tools add: Argo CD's tracking annotation, Flux's labels, a Helm release's). Its status writes
/// and finalizer patches name only the resourceVersion and the finalizers, which are kept.
pub fn trim_installation(inst: &mut Installation) {
    let meta = &mut inst.metadata;
    meta.managed_fields = None;
    meta.labels = None;
    meta.annotations = None;
    meta.owner_references = None;
    meta.generate_name = None;
}

fn start_one<K>(
    events: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, events.modify(trim::<K>)).applied_objects();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                tracing::warn!(error = %e, "cache watch error (retried with backoff)");
            }
        }
    });
    (reader, task)
}

/// The kinds whose objects depend on a ForgeApp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dependents {
    Installations = 0,
    BulkUpgrades = 1,
    Policies = 2,
}

impl Dependents {
    pub const ALL: [Dependents; 3] = [Dependents::Installations, Dependents::BulkUpgrades, Dependents::Policies];
}

/// The ForgeApp cache, whose watch also tells each kind of dependent which apps changed in a way
/// it decides on ([`ForgeApp::dependents_fingerprint`]), after the cache holds the change.
fn start_apps(
    api: Api<ForgeApp>,
    senders: Vec<tokio::sync::mpsc::UnboundedSender<ObjectRef<ForgeApp>>>,
    undecodable: super::decoded::Undecodable,
) -> (Store<ForgeApp>, tokio::task::JoinHandle<()>) {
    let (reader, writer) = reflector::store();
    let events = reflector::reflector(writer, super::decoded::watch(api, undecodable).modify(trim::<ForgeApp>));
    let task = tokio::spawn(async move {
        let mut fingerprints = AppFingerprints::default();
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => {
                    for app in fingerprints.apply(&event) {
                        for tx in &senders {
                            let _ = tx.send(app.clone());
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cache watch error (retried with backoff)"),
            }
        }
    });
    (reader, task)
}

/// The last [`ForgeApp::dependents_fingerprint`] of each app, kept from the watch's events.
#[derive(Default, Debug)]
pub struct AppFingerprints {
    known: HashMap<ObjectRef<ForgeApp>, u64>,
    relist: Option<HashMap<ObjectRef<ForgeApp>, u64>>,
}

impl AppFingerprints {
    /// Applies one watch event; answers the apps whose dependents should look again: those whose
    /// fingerprint changed, and those gone (a re-list compares everything it saw with before).
    pub fn apply(&mut self, event: &watcher::Event<ForgeApp>) -> Vec<ObjectRef<ForgeApp>> {
        match event {
            watcher::Event::Apply(app) => {
                let (key, fp) = (ObjectRef::from_obj(app), app.dependents_fingerprint());
                match self.known.insert(key.clone(), fp) {
                    Some(before) if before == fp => Vec::new(),
                    _ => vec![key],
                }
            }
            watcher::Event::Delete(app) => {
                let key = ObjectRef::from_obj(app);
                self.known.remove(&key);
                vec![key]
            }
            watcher::Event::Init => {
                self.relist = Some(HashMap::new());
                Vec::new()
            }
            watcher::Event::InitApply(app) => {
                self.relist.get_or_insert_default().insert(ObjectRef::from_obj(app), app.dependents_fingerprint());
                Vec::new()
            }
            watcher::Event::InitDone => {
                let fresh = self.relist.take().unwrap_or_default();
                let mut changed: Vec<ObjectRef<ForgeApp>> =
                    fresh.iter().filter(|(k, fp)| self.known.get(*k) != Some(*fp)).map(|(k, _)| k.clone()).collect();
                changed.extend(self.known.keys().filter(|k| !fresh.contains_key(*k)).cloned());
                self.known = fresh;
                changed
            }
        }
    }
}

impl Caches {
    /// Starts the watches (in `namespace`, or everywhere; the Leases in `operator_namespace`) and
    /// waits until each has listed once.
    /// Starts the watches (`undecodable` tells about objects that cannot be decoded, which are
    /// skipped: see [`super::decoded`]).
    pub async fn start(
        client: &Client,
        namespace: Option<&str>,
        operator_namespace: &str,
        undecodable: super::decoded::Undecodable,
    ) -> Caches {
        let mut change_senders = Vec::new();
        let mut app_changes = Vec::new();
        for _ in Dependents::ALL {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            change_senders.push(tx);
            app_changes.push(Some(rx));
        }
        let (apps, a) = start_apps(super::api_in::<ForgeApp>(client, namespace), change_senders, undecodable.clone());
        let (policies, p) = start_one(super::decoded::watch(
            super::api_in::<DistributionPolicy>(client, namespace),
            undecodable.clone(),
        ));
        let leases_api = Api::<Lease>::namespaced(client.clone(), operator_namespace);
        let (leases, l) = start_one(watcher(leases_api, watcher::Config::default()).default_backoff());

        // Installations: one shared watch, indexed, with a feed for each controller that needs one.
        let (installations, writer) = reflector::store_shared::<Installation>(SUBSCRIBER_BUFFER);
        let installation_feed = writer.subscribe();
        let (app_tx, app_rx) = tokio::sync::mpsc::unbounded_channel();
        let (changed_tx, changed_rx) = tokio::sync::mpsc::unbounded_channel();
        let t = tokio::spawn(throttled(changed_rx, app_tx, APP_FEED_EVERY));
        let index = Arc::new(RwLock::new(InstallationIndex::default()));
        let i = {
            let index = index.clone();
            let events = super::decoded::watch(super::api_in::<Installation>(client, namespace), undecodable)
                .modify(trim_installation)
                .reflect_shared(writer);
            tokio::spawn(async move {
                let mut events = std::pin::pin!(events);
                while let Some(event) = events.next().await {
                    match event {
                        Ok(event) => {
                            for app in index.write().unwrap_or_else(std::sync::PoisonError::into_inner).apply(&event) {
                                let _ = changed_tx.send(app);
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "cache watch error (retried with backoff)"),
                    }
                }
            })
        };

        let caches = Caches {
            apps,
            installations,
            policies,
            leases,
            index,
            installation_feed: Mutex::new(installation_feed),
            app_feed: Mutex::new(Some(app_rx)),
            app_changes: Mutex::new(app_changes),
            tasks: vec![a, i, p, l, t],
        };
        if tokio::time::timeout(Duration::from_secs(60), caches.wait_ready()).await.is_err() {
            tracing::warn!("the watch caches were not filled within 60 s; going on, they fill as watches answer");
        }
        caches
    }

    /// Resolves once every watch has listed once.
    pub async fn wait_ready(&self) {
        let _ = self.apps.wait_until_ready().await;
        let _ = self.installations.wait_until_ready().await;
        let _ = self.policies.wait_until_ready().await;
        let _ = self.leases.wait_until_ready().await;
    }

    /// The Installation controller's feed of changed Installations (once: `None` after that).
    pub fn take_installation_feed(&self) -> Option<ReflectHandle<Installation>> {
        self.installation_feed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }

    /// The ForgeApp controller's feed of apps whose Installations changed (once).
    pub fn take_app_feed(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<ObjectRef<ForgeApp>>> {
        self.app_feed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }

    /// The apps that changed in a way `dependents` decide on (once per kind: `None` after that).
    pub fn take_app_changes(
        &self,
        dependents: Dependents,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<ObjectRef<ForgeApp>>> {
        self.app_changes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get_mut(dependents as usize)?.take()
    }

    /// The ForgeApp `name` in `namespace`.
    pub fn app(&self, namespace: &str, name: &str) -> Option<Arc<ForgeApp>> {
        self.apps.get(&ObjectRef::new(name).within(namespace))
    }

    fn installations_named<'a>(&self, namespace: &str, names: impl Iterator<Item = &'a str>) -> Vec<Arc<Installation>> {
        names.filter_map(|n| self.installations.get(&ObjectRef::new(n).within(namespace))).collect()
    }

    /// The Installations of app `app` in `namespace` (from the index).
    pub fn installations_of_app(&self, namespace: &str, app: &str) -> Vec<Arc<Installation>> {
        let index = self.index.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.installations_named(namespace, index.of_app(namespace, app))
    }

    /// References to the Installations of app `app` in `namespace` (from the index).
    pub fn installation_refs_of_app(&self, namespace: &str, app: &str) -> Vec<ObjectRef<Installation>> {
        let index = self.index.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        index.of_app(namespace, app).map(|n| ObjectRef::new(n).within(namespace)).collect()
    }

    /// The Lease `name` in the operator's namespace.
    pub fn lease(&self, operator_namespace: &str, name: &str) -> Option<Arc<Lease>> {
        self.leases.get(&ObjectRef::new(name).within(operator_namespace))
    }

    /// The Installations on `site` in `namespace` (from the index).
    pub fn installations_on_site(&self, namespace: &str, site: &str) -> Vec<Arc<Installation>> {
        let index = self.index.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.installations_named(namespace, index.on_site(namespace, site))
    }

    /// The DistributionPolicies of app `app` in `namespace`.
    pub fn policies_of_app(&self, namespace: &str, app: &str) -> Vec<Arc<DistributionPolicy>> {
        self.policies
            .state()
            .into_iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(namespace) && p.spec.app_ref.name == app)
            .collect()
    }
}

/// Forwards what `rx` receives to `tx`, each distinct item at most once per `every`: at once when
/// it was not sent within `every`, else once when `every` has passed (however often it came).
async fn throttled<T: std::hash::Hash + Eq + Clone>(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<T>,
    tx: tokio::sync::mpsc::UnboundedSender<T>,
    every: Duration,
) {
    let mut throttle = Throttle::new(every);
    let mut tick = tokio::time::interval(every / 10);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            item = rx.recv() => match item {
                Some(item) => if throttle.offer(item.clone(), std::time::Instant::now()) {
                    let _ = tx.send(item);
                },
                None => return,
            },
            _ = tick.tick() => for item in throttle.due(std::time::Instant::now()) {
                let _ = tx.send(item);
            },
        }
    }
}

/// At most one of each item per period; what came meanwhile is held, once, until its period ends.
#[derive(Debug)]
pub struct Throttle<T> {
    every: Duration,
    sent: HashMap<T, std::time::Instant>,
    held: std::collections::HashSet<T>,
}

impl<T: std::hash::Hash + Eq + Clone> Throttle<T> {
    pub fn new(every: Duration) -> Self {
        Throttle { every, sent: HashMap::new(), held: Default::default() }
    }

    /// Whether `item`, arriving at `now`, goes out at once (else it is held for [`Throttle::due`]).
    pub fn offer(&mut self, item: T, now: std::time::Instant) -> bool {
        match self.sent.get(&item) {
            Some(at) if now.duration_since(*at) < self.every => {
                self.held.insert(item);
                false
            }
            _ => {
                self.held.remove(&item);
                self.sent.insert(item, now);
                true
            }
        }
    }

    /// The held items whose period has ended by `now` (each sent, so its next period starts).
    pub fn due(&mut self, now: std::time::Instant) -> Vec<T> {
        let every = self.every;
        let due: Vec<T> = self
            .held
            .iter()
            .filter(|i| self.sent.get(*i).is_none_or(|at| now.duration_since(*at) >= every))
            .cloned()
            .collect();
        for item in &due {
            self.held.remove(item);
            self.sent.insert(item.clone(), now);
        }
        // Forget what was sent long ago and is not held, so the map stays as small as the churn.
        self.sent.retain(|i, at| now.duration_since(*at) < every * 2 || self.held.contains(i));
        due
    }
}

/// Installations by app and by site, kept from the watch's events (a re-list rebuilds it), so a
/// lookup costs what it returns, not the size of the cache. Kept small, as there is an entry per
/// Installation: per namespace, names and sites as boxed strings, each app's name shared by its
/// entries, and a site's few names in a sorted vector rather than a tree (a site has one
/// Installation per app environment). At 3,000 Installations this took a third of the memory of
/// the former form (one map by (namespace, name), sets by (namespace, app) and (namespace, site)).
#[derive(Default, Debug)]
pub struct InstallationIndex {
    namespaces: HashMap<String, NamespaceIndex>,
    /// Filled during a re-list, then swapped in.
    relist: Option<Box<InstallationIndex>>,
}

#[derive(Default, Debug)]
struct NamespaceIndex {
    /// name → (app, site).
    entries: HashMap<Box<str>, (Arc<str>, Box<str>)>,
    by_app: HashMap<Arc<str>, BTreeSet<Box<str>>>,
    /// Sorted names.
    by_site: HashMap<Box<str>, Vec<Box<str>>>,
}

impl NamespaceIndex {
    fn unlink(&mut self, name: &str, app: &str, site: &str) {
        if let Some(set) = self.by_app.get_mut(app) {
            set.remove(name);
            if set.is_empty() {
                self.by_app.remove(app);
            }
        }
        if let Some(names) = self.by_site.get_mut(site) {
            names.retain(|n| &**n != name);
            if names.is_empty() {
                self.by_site.remove(site);
            }
        }
    }
}

impl InstallationIndex {
    fn insert(&mut self, namespace: &str, name: &str, app: &str, site: &str) -> Option<String> {
        if !self.namespaces.contains_key(namespace) {
            self.namespaces.insert(namespace.to_string(), NamespaceIndex::default());
        }
        let ns = self.namespaces.get_mut(namespace)?;
        if ns.entries.get(name).is_some_and(|(a, s)| &**a == app && &**s == site) {
            return None;
        }
        let moved_from = ns.entries.remove(name).map(|(old_app, old_site)| {
            ns.unlink(name, &old_app, &old_site);
            old_app.to_string()
        });
        let app: Arc<str> = ns.by_app.get_key_value(app).map(|(k, _)| k.clone()).unwrap_or_else(|| Arc::from(app));
        ns.entries.insert(name.into(), (app.clone(), site.into()));
        ns.by_app.entry(app).or_default().insert(name.into());
        let names = match ns.by_site.get_mut(site) {
            Some(names) => names,
            None => ns.by_site.entry(site.into()).or_default(),
        };
        if let Err(at) = names.binary_search_by(|n| (**n).cmp(name)) {
            names.insert(at, name.into());
            names.shrink_to_fit();
        }
        moved_from
    }

    fn remove(&mut self, namespace: &str, name: &str) -> Option<String> {
        let ns = self.namespaces.get_mut(namespace)?;
        let (app, site) = ns.entries.remove(name)?;
        ns.unlink(name, &app, &site);
        if ns.entries.is_empty() {
            self.namespaces.remove(namespace);
        }
        Some(app.to_string())
    }

    /// Every (namespace, app) with Installations.
    fn apps(&self) -> impl Iterator<Item = (&str, &str)> {
        self.namespaces.iter().flat_map(|(ns, i)| i.by_app.keys().map(move |app| (ns.as_str(), &**app)))
    }

    /// Applies one watch event; answers the apps whose Installations changed (for a re-list: every
    /// app that had or has Installations).
    pub fn apply(&mut self, event: &watcher::Event<Installation>) -> Vec<ObjectRef<ForgeApp>> {
        let app_ref = |ns: &str, app: &str| ObjectRef::new(app).within(ns);
        let ns_of = |i: &Installation| i.namespace().unwrap_or_default();
        match event {
            watcher::Event::Apply(i) => {
                let ns = ns_of(i);
                let moved = self.insert(&ns, &i.name_any(), &i.spec.app_ref.name, &i.spec.site);
                let mut apps = vec![app_ref(&ns, &i.spec.app_ref.name)];
                apps.extend(moved.filter(|m| *m != i.spec.app_ref.name).map(|m| app_ref(&ns, &m)));
                apps
            }
            watcher::Event::Delete(i) => {
                let ns = ns_of(i);
                let app = self.remove(&ns, &i.name_any()).unwrap_or_else(|| i.spec.app_ref.name.clone());
                vec![app_ref(&ns, &app)]
            }
            watcher::Event::Init => {
                self.relist = Some(Box::default());
                Vec::new()
            }
            watcher::Event::InitApply(i) => {
                let relist = self.relist.get_or_insert_with(Box::default);
                relist.insert(&ns_of(i), &i.name_any(), &i.spec.app_ref.name, &i.spec.site);
                Vec::new()
            }
            watcher::Event::InitDone => {
                let fresh = self.relist.take().map(|b| *b).unwrap_or_default();
                let mut apps: BTreeSet<(&str, &str)> = self.apps().collect();
                apps.extend(fresh.apps());
                let apps: Vec<ObjectRef<ForgeApp>> = apps.into_iter().map(|(ns, app)| app_ref(ns, app)).collect();
                *self = fresh;
                apps
            }
        }
    }

    /// The names of the Installations of `app` in `namespace`.
    pub fn of_app<'a>(&'a self, namespace: &str, app: &str) -> impl Iterator<Item = &'a str> + use<'a> {
        self.namespaces.get(namespace).and_then(|n| n.by_app.get(app)).into_iter().flatten().map(|n| &**n)
    }

    /// The names of the Installations on `site` in `namespace`.
    pub fn on_site<'a>(&'a self, namespace: &str, site: &str) -> impl Iterator<Item = &'a str> + use<'a> {
        self.namespaces.get(namespace).and_then(|n| n.by_site.get(site)).into_iter().flatten().map(|n| &**n)
    }

    /// How many Installations are indexed.
    pub fn len(&self) -> usize {
        self.namespaces.values().map(|n| n.entries.len()).sum()
    }

    /// Whether no Installation is indexed.
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn inst(ns: &str, name: &str, app: &str, site: &str) -> Installation {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns},
            "spec": {"appRef": {"name": app}, "site": site, "products": ["jira"]}}))
        .unwrap()
    }

    fn names<'a>(it: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
        it.collect()
    }

    fn apps(refs: Vec<ObjectRef<ForgeApp>>) -> Vec<String> {
        refs.into_iter().map(|r| format!("{}/{}", r.namespace.unwrap_or_default(), r.name)).collect()
    }

    #[test]
    fn the_index_follows_applies_moves_and_deletes() {
        let mut idx = InstallationIndex::default();
        assert_eq!(apps(idx.apply(&watcher::Event::Apply(inst("a", "i1", "app", "s1")))), ["a/app"]);
        idx.apply(&watcher::Event::Apply(inst("a", "i2", "app", "s1")));
        idx.apply(&watcher::Event::Apply(inst("b", "i1", "app", "s1")));
        assert_eq!(names(idx.of_app("a", "app")), ["i1", "i2"]);
        assert_eq!(names(idx.on_site("a", "s1")), ["i1", "i2"]);
        assert_eq!(names(idx.of_app("b", "app")), ["i1"], "namespaces are kept apart");

        // An Installation moved to another app and site: both apps hear of it.
        assert_eq!(apps(idx.apply(&watcher::Event::Apply(inst("a", "i2", "other", "s2")))), ["a/other", "a/app"]);
        assert_eq!(names(idx.of_app("a", "app")), ["i1"]);
        assert_eq!(names(idx.on_site("a", "s2")), ["i2"]);
        assert_eq!(names(idx.on_site("a", "s1")), ["i1"]);

        assert_eq!(apps(idx.apply(&watcher::Event::Delete(inst("a", "i1", "app", "s1")))), ["a/app"]);
        assert_eq!(names(idx.of_app("a", "app")), Vec::<&str>::new());
        assert!(!idx.namespaces["a"].by_app.contains_key("app"), "empty sets are dropped");
        assert!(!idx.namespaces["a"].by_site.contains_key("s1"), "empty sites are dropped");
        assert_eq!(idx.len(), 2);
    }

    #[test]
    fn a_relist_replaces_the_index_and_names_every_app_before_and_after() {
        let mut idx = InstallationIndex::default();
        idx.apply(&watcher::Event::Apply(inst("a", "gone", "old", "s1")));
        idx.apply(&watcher::Event::Apply(inst("a", "kept", "app", "s2")));
        assert!(idx.apply(&watcher::Event::Init).is_empty());
        idx.apply(&watcher::Event::InitApply(inst("a", "kept", "app", "s2")));
        idx.apply(&watcher::Event::InitApply(inst("a", "new", "app", "s3")));
        // Until the re-list is done, lookups answer from what was known.
        assert_eq!(names(idx.of_app("a", "old")), ["gone"]);
        let mut told = apps(idx.apply(&watcher::Event::InitDone));
        told.sort();
        assert_eq!(told, ["a/app", "a/old"]);
        assert_eq!(names(idx.of_app("a", "app")), ["kept", "new"]);
        assert_eq!(names(idx.of_app("a", "old")), Vec::<&str>::new());
        assert_eq!(idx.len(), 2);
        assert!(!idx.is_empty());
    }

    #[test]
    fn the_throttle_sends_the_first_at_once_and_what_follows_once_per_period() {
        let t0 = std::time::Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut t = Throttle::new(Duration::from_millis(1000));
        assert!(t.offer("a", ms(0)));
        assert!(t.offer("b", ms(10)), "items are throttled apart");
        assert!(!t.offer("a", ms(100)));
        assert!(!t.offer("a", ms(200)), "held once, however often it comes");
        assert!(t.due(ms(900)).is_empty());
        assert_eq!(t.due(ms(1000)), ["a"]);
        assert!(t.due(ms(1100)).is_empty(), "nothing more came");
        assert!(!t.offer("a", ms(1500)), "a new period began when the held one went out");
        assert_eq!(t.due(ms(2000)), ["a"]);
        assert!(t.offer("a", ms(3500)), "quiet for a period: at once again");
        assert!(t.due(ms(9000)).is_empty());
        assert!(t.sent.is_empty(), "old entries are forgotten");
    }

    fn app(name: &str, minor: u32, installs: i64) -> ForgeApp {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "n", "uid": name},
            "spec": {"appId": "ari:cloud:ecosystem::app/x"},
            "status": {"installations": installs, "environments": [{"name": "production",
                "versions": [{"major": 1, "minor": minor, "compatibility": {"required": "jira"}}]}]}}))
        .unwrap()
    }

    fn refs(r: Vec<ObjectRef<ForgeApp>>) -> Vec<String> {
        let mut names: Vec<String> = r.into_iter().map(|r| r.name).collect();
        names.sort();
        names
    }

    #[test]
    fn dependents_hear_of_an_app_when_what_they_decide_on_changes_or_it_goes() {
        let mut f = AppFingerprints::default();
        assert_eq!(refs(f.apply(&watcher::Event::Apply(app("a", 0, 1)))), ["a"], "new");
        assert!(f.apply(&watcher::Event::Apply(app("a", 0, 500))).is_empty(), "a recount");
        assert_eq!(refs(f.apply(&watcher::Event::Apply(app("a", 1, 500)))), ["a"], "a new minor");
        f.apply(&watcher::Event::Apply(app("b", 0, 1)));
        assert_eq!(refs(f.apply(&watcher::Event::Delete(app("b", 0, 1)))), ["b"], "gone");
        f.apply(&watcher::Event::Apply(app("c", 0, 1)));
        // A re-list: a unchanged, c gone while the watch was cut, d new.
        f.apply(&watcher::Event::Init);
        f.apply(&watcher::Event::InitApply(app("a", 1, 9)));
        f.apply(&watcher::Event::InitApply(app("d", 0, 0)));
        assert_eq!(refs(f.apply(&watcher::Event::InitDone)), ["c", "d"]);
    }

    #[test]
    fn trimming_drops_managed_fields_and_the_last_applied_annotation_only() {
        let mut i: Installation = serde_json::from_value(json!({"metadata": {"name": "x",
            "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}", "keep": "me"}},
            "spec": {"appRef": {"name": "app"}, "site": "s", "products": ["jira"]}}))
        .unwrap();
        trim(&mut i);
        assert!(i.metadata.managed_fields.is_none());
        assert_eq!(i.annotations().keys().collect::<Vec<_>>(), ["keep"]);
    }

    #[test]
    fn a_cached_installation_keeps_only_the_metadata_the_controllers_read() -> Result<(), serde_json::Error> {
        let mut i: Installation = serde_json::from_value(json!({"metadata": {"name": "x", "namespace": "n",
            "uid": "u", "resourceVersion": "7", "generation": 2, "creationTimestamp": "2026-01-01T00:00:00Z",
            "deletionTimestamp": "2026-01-02T00:00:00Z", "finalizers": ["forgeops.dev/uninstall"],
            "labels": {"kustomize.toolkit.fluxcd.io/name": "apps"},
            "annotations": {"argocd.argoproj.io/tracking-id": "apps:forgeops.dev/Installation:n/x"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "o", "uid": "o"}],
            "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
            "spec": {"appRef": {"name": "app"}, "site": "s", "products": ["jira"]},
            "status": {"installedVersion": "2.0"}}))?;
        let kept = i.clone();
        trim_installation(&mut i);
        let m = &i.metadata;
        assert!(m.labels.is_none() && m.annotations.is_none() && m.owner_references.is_none());
        assert!(m.managed_fields.is_none());
        assert_eq!(
            (&m.name, &m.namespace, &m.uid, &m.resource_version),
            (&kept.metadata.name, &kept.metadata.namespace, &kept.metadata.uid, &kept.metadata.resource_version)
        );
        assert_eq!(
            (m.generation, &m.creation_timestamp, &m.deletion_timestamp, &m.finalizers),
            (
                kept.metadata.generation,
                &kept.metadata.creation_timestamp,
                &kept.metadata.deletion_timestamp,
                &kept.metadata.finalizers
            )
        );
        assert_eq!((&i.spec, &i.status), (&kept.spec, &kept.status));
        Ok(())
    }
}
