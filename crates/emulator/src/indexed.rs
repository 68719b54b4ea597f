//! The model's large collections, [`Sites`] and [`Installations`], with the indexes the gateway's
//! per-request lookups use (by host name, cloud id, activation id; by installation id, site, app
//! and context), so no request scans the whole platform. Both keep their items in creation order
//! behind `Arc`s: a snapshot for the state file copies pointers, not the platform, and a change
//! copies only the item it changes. Both serialize as the plain list they stand for, so the state
//! file and `GET /admin/state` are as they were.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::model::{Installation, PendingMinor, Site};

fn lowercase(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) { Cow::Owned(s.to_ascii_lowercase()) } else { Cow::Borrowed(s) }
}

/// The sites, in the order they were added (sites are never removed), indexed by host name
/// (case-insensitive), cloud id and activation id. When two sites share a key the first added
/// answers, as a scan in order would.
#[derive(Clone, Debug, Default)]
pub struct Sites {
    items: Vec<Arc<Site>>,
    by_host: HashMap<String, usize>,
    by_cloud_id: HashMap<String, usize>,
    by_activation_id: HashMap<String, usize>,
}

impl Sites {
    /// How many.
    pub fn len(&self) -> usize {
        self.items.len()
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    /// In the order they were added.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Site> + ExactSizeIterator {
        self.items.iter().map(|s| &**s)
    }
    /// The `k`-th added.
    pub fn get(&self, k: usize) -> Option<&Site> {
        self.items.get(k).map(|s| &**s)
    }
    /// Adds a site (after the others).
    pub fn push(&mut self, site: Site) {
        let k = self.items.len();
        self.by_host.entry(site.host_name.to_ascii_lowercase()).or_insert(k);
        self.by_cloud_id.entry(site.cloud_id.clone()).or_insert(k);
        for a in site.products.values() {
            self.by_activation_id.entry(a.clone()).or_insert(k);
        }
        self.items.push(Arc::new(site));
    }
    /// Forgets the sites added after the first `len` (undoing a refused batch).
    pub fn truncate(&mut self, len: usize) {
        if len >= self.items.len() {
            return;
        }
        self.items.truncate(len);
        self.by_host.retain(|_, k| *k < len);
        self.by_cloud_id.retain(|_, k| *k < len);
        self.by_activation_id.retain(|_, k| *k < len);
    }
    /// A site by host name, ignoring ASCII case.
    pub fn by_host(&self, host: &str) -> Option<&Site> {
        self.by_host.get(lowercase(host).as_ref()).and_then(|&k| self.get(k))
    }
    /// A site by cloud id.
    pub fn by_cloud_id(&self, cloud_id: &str) -> Option<&Site> {
        self.by_cloud_id.get(cloud_id).and_then(|&k| self.get(k))
    }
    /// The first site with a product of this activation id.
    pub fn by_activation_id(&self, activation_id: &str) -> Option<&Site> {
        self.by_activation_id.get(activation_id).and_then(|&k| self.get(k))
    }
    /// The sites as they are now (shared, cheap to take).
    pub fn snapshot(&self) -> Vec<Arc<Site>> {
        self.items.clone()
    }
}

impl Serialize for Sites {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Sites {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut sites = Sites::default();
        for s in Vec::<Site>::deserialize(deserializer)? {
            sites.push(s);
        }
        Ok(sites)
    }
}

impl FromIterator<Site> for Sites {
    fn from_iter<T: IntoIterator<Item = Site>>(iter: T) -> Self {
        let mut sites = Sites::default();
        for s in iter {
            sites.push(s);
        }
        sites
    }
}

/// The position of an installation in creation order (it never changes, and is never reused).
pub type Seq = u64;

/// The installations, in creation order, indexed by id, by site (cloud id), by app and by
/// installation context, with the set of those that have a pending minor.
///
/// The indexed fields of an installation (`id`, `app_id`, `cloud_id`, `context`) must not change
/// once it is added: [`Installations::get_mut`] is for the others (versions, `upgraded_by`, ...);
/// `pending_minor` changes through [`Installations::set_pending_minor`].
#[derive(Clone, Debug, Default)]
pub struct Installations {
    items: BTreeMap<Seq, Arc<Installation>>,
    next: Seq,
    by_id: HashMap<String, Vec<Seq>>,
    by_site: HashMap<String, Vec<Seq>>,
    by_app: HashMap<String, BTreeSet<Seq>>,
    by_context: HashMap<String, Vec<Seq>>,
    pending_minors: BTreeSet<Seq>,
}

fn unindex(map: &mut HashMap<String, Vec<Seq>>, key: &str, seq: Seq) {
    if let Some(v) = map.get_mut(key) {
        v.retain(|s| *s != seq);
        if v.is_empty() {
            map.remove(key);
        }
    }
}

impl Installations {
    /// How many.
    pub fn len(&self) -> usize {
        self.items.len()
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    /// In creation order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Installation> + ExactSizeIterator {
        self.items.values().map(|i| &**i)
    }
    /// Adds an installation (the newest); answers its position.
    pub fn push(&mut self, installation: Installation) -> Seq {
        let seq = self.next;
        self.next += 1;
        self.by_id.entry(installation.id.clone()).or_default().push(seq);
        self.by_site.entry(installation.cloud_id.clone()).or_default().push(seq);
        self.by_app.entry(installation.app_id.clone()).or_default().insert(seq);
        self.by_context.entry(installation.context.clone()).or_default().push(seq);
        if installation.pending_minor.is_some() {
            self.pending_minors.insert(seq);
        }
        self.items.insert(seq, Arc::new(installation));
        seq
    }
    /// The installation at a position.
    pub fn at(&self, seq: Seq) -> Option<&Installation> {
        self.items.get(&seq).map(|i| &**i)
    }
    /// The installation at a position, to change (not its indexed fields).
    pub fn at_mut(&mut self, seq: Seq) -> Option<&mut Installation> {
        self.items.get_mut(&seq).map(Arc::make_mut)
    }
    /// The position of the (first) installation of this id.
    pub fn seq_of(&self, id: &str) -> Option<Seq> {
        self.by_id.get(id).and_then(|v| v.first().copied())
    }
    /// The (first) installation of this id.
    pub fn get(&self, id: &str) -> Option<&Installation> {
        self.seq_of(id).and_then(|s| self.at(s))
    }
    /// The (first) installation of this id, to change (not its indexed fields).
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Installation> {
        let seq = self.seq_of(id)?;
        self.at_mut(seq)
    }
    /// Removes every installation of this id; answers how many.
    pub fn remove(&mut self, id: &str) -> usize {
        let seqs = self.seqs_of_id(id).to_vec();
        for seq in &seqs {
            self.remove_seq(*seq);
        }
        seqs.len()
    }
    /// Removes the installation at a position.
    fn remove_seq(&mut self, seq: Seq) {
        let Some(i) = self.items.remove(&seq) else { return };
        unindex(&mut self.by_id, &i.id, seq);
        unindex(&mut self.by_site, &i.cloud_id, seq);
        unindex(&mut self.by_context, &i.context, seq);
        if let Some(set) = self.by_app.get_mut(&i.app_id) {
            set.remove(&seq);
            if set.is_empty() {
                self.by_app.remove(&i.app_id);
            }
        }
        self.pending_minors.remove(&seq);
    }
    /// The position the next installation added gets (see [`Installations::remove_since`]).
    pub fn mark(&self) -> Seq {
        self.next
    }
    /// Removes the installations added since [`Installations::mark`] answered `mark` (undoing a
    /// refused batch).
    pub fn remove_since(&mut self, mark: Seq) {
        let added: Vec<Seq> = self.items.range(mark..).map(|(k, _)| *k).collect();
        for seq in added {
            self.remove_seq(seq);
        }
    }
    /// The positions of the installations of this id, in creation order.
    pub fn seqs_of_id(&self, id: &str) -> &[Seq] {
        self.by_id.get(id).map_or(&[], Vec::as_slice)
    }
    /// The positions of the installations on a site (cloud id), in creation order.
    pub fn seqs_on_site(&self, cloud_id: &str) -> &[Seq] {
        self.by_site.get(cloud_id).map_or(&[], Vec::as_slice)
    }
    /// The positions of the installations whose context is exactly this, in creation order.
    pub fn seqs_with_context(&self, context: &str) -> &[Seq] {
        self.by_context.get(context).map_or(&[], Vec::as_slice)
    }
    /// The installations on a site (cloud id), in creation order.
    pub fn on_site(&self, cloud_id: &str) -> impl Iterator<Item = &Installation> {
        self.seqs_on_site(cloud_id).iter().filter_map(|s| self.at(*s))
    }
    /// The positions of an app's installations, in creation order.
    pub fn seqs_of_app(&self, app_id: &str) -> impl DoubleEndedIterator<Item = Seq> + '_ {
        self.by_app.get(app_id).into_iter().flat_map(|s| s.iter().copied())
    }
    /// An app's installations, in creation order.
    pub fn of_app(&self, app_id: &str) -> impl Iterator<Item = &Installation> {
        self.seqs_of_app(app_id).filter_map(|s| self.at(s))
    }
    /// The first installation of an app environment on a site's product.
    pub fn find(&self, app_id: &str, env_key: &str, cloud_id: &str, product: &str) -> Option<&Installation> {
        self.on_site(cloud_id).find(|i| i.app_id == app_id && i.environment_key == env_key && i.product == product)
    }
    /// Schedules (or, with `None`, drops) an installation's move to a newer minor.
    pub fn set_pending_minor(&mut self, seq: Seq, pending: Option<PendingMinor>) {
        let has = pending.is_some();
        if let Some(i) = self.at_mut(seq) {
            i.pending_minor = pending;
            if has {
                self.pending_minors.insert(seq);
            } else {
                self.pending_minors.remove(&seq);
            }
        }
    }
    /// The positions of the installations with a pending minor, in creation order.
    pub fn with_pending_minor(&self) -> impl Iterator<Item = Seq> + '_ {
        self.pending_minors.iter().copied()
    }
    /// The installations as they are now (shared, cheap to take).
    pub fn snapshot(&self) -> Vec<Arc<Installation>> {
        self.items.values().cloned().collect()
    }
}

impl Serialize for Installations {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Installations {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Vec::<Installation>::deserialize(deserializer)?.into_iter().collect())
    }
}

impl FromIterator<Installation> for Installations {
    fn from_iter<T: IntoIterator<Item = Installation>>(iter: T) -> Self {
        let mut all = Installations::default();
        for i in iter {
            all.push(i);
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn site(host: &str, cloud: &str, activation: &str) -> Site {
        Site {
            host_name: host.into(),
            cloud_id: cloud.into(),
            products: BTreeMap::from([("jira".to_string(), activation.to_string())]),
            app_limit: None,
            admins: Vec::new(),
            product_admins: BTreeMap::new(),
        }
    }

    fn installation(id: &str, app: &str, cloud: &str) -> Installation {
        Installation {
            id: id.into(),
            app_id: app.into(),
            environment_key: "production".into(),
            cloud_id: cloud.into(),
            product: "jira".into(),
            context: format!("ctx-{cloud}"),
            ..Default::default()
        }
    }

    #[test]
    fn sites_answer_by_every_key_the_first_added_and_forget_truncated_ones() {
        let mut sites: Sites =
            [site("a.atlassian.net", "c1", "x"), site("b.atlassian.net", "c2", "x")].into_iter().collect();
        assert_eq!(sites.by_host("A.Atlassian.NET").map(|s| s.cloud_id.as_str()), Some("c1"));
        assert_eq!(sites.by_cloud_id("c2").map(|s| s.host_name.as_str()), Some("b.atlassian.net"));
        assert_eq!(sites.by_activation_id("x").map(|s| s.cloud_id.as_str()), Some("c1"), "the first added");
        sites.push(site("c.atlassian.net", "c3", "y"));
        sites.truncate(2);
        assert_eq!(sites.len(), 2);
        assert!(sites.by_host("c.atlassian.net").is_none() && sites.by_activation_id("y").is_none());
        assert!(sites.by_activation_id("x").is_some());
        let json = serde_json::to_value(&sites).unwrap();
        let back: Sites = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), json);
        assert_eq!(back.by_cloud_id("c2").map(|s| s.host_name.as_str()), Some("b.atlassian.net"));
    }

    #[test]
    fn installations_keep_creation_order_and_indexes_through_removal() {
        let mut all = Installations::default();
        for (id, app, cloud) in [("i1", "a", "c1"), ("i2", "b", "c1"), ("i3", "a", "c2"), ("i4", "a", "c1")] {
            all.push(installation(id, app, cloud));
        }
        let ids = |it: Vec<&Installation>| it.into_iter().map(|i| i.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(all.of_app("a").collect()), ["i1", "i3", "i4"]);
        assert_eq!(ids(all.on_site("c1").collect()), ["i1", "i2", "i4"]);
        assert_eq!(all.find("b", "production", "c1", "jira").map(|i| i.id.as_str()), Some("i2"));
        assert_eq!(all.remove("i1"), 1);
        assert_eq!(all.remove("i1"), 0);
        assert_eq!(ids(all.iter().collect()), ["i2", "i3", "i4"]);
        assert_eq!(ids(all.on_site("c1").collect()), ["i2", "i4"]);
        assert_eq!(all.seqs_with_context("ctx-c1").len(), 2);
        let seq = all.seq_of("i3").unwrap();
        all.set_pending_minor(seq, Some(PendingMinor { version_id: "v".into(), due_at: 5 }));
        assert_eq!(all.with_pending_minor().collect::<Vec<_>>(), [seq]);
        all.get_mut("i4").unwrap().version_id = "v2".into();
        let snapshot = all.snapshot();
        all.get_mut("i4").unwrap().version_id = "v3".into();
        assert_eq!(snapshot[2].version_id, "v2", "a snapshot does not see later changes");
        let json = serde_json::to_value(&all).unwrap();
        let back: Installations = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), json);
        assert_eq!(back.with_pending_minor().count(), 1);
        assert_eq!(back.get("i4").map(|i| i.version_id.as_str()), Some("v3"));
    }
}
