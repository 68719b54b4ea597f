//! Records Events (`events.k8s.io/v1`), with repeats of the same Event folded into its series, as
//! kube-runtime's `Recorder` does, but remembering far less per Event.
//!
//! Written here rather than taken from kube-runtime: its `Recorder` keeps, for six minutes, a copy
//! of every Event it published (the whole object and the whole reference as its key), and sweeps
//! that whole cache on every publish. An install records one Event per Installation, so 10,000
//! installs in a few minutes held 10,000 Event objects in memory and swept them 10,000 times. Here
//! an Event is remembered by a key of a few short strings and its name, its count and when it was
//! last seen, and the cache is swept at most every [`SWEEP_EVERY`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType};

/// How long a published Event is remembered: a repeat within this time counts in its series
/// (kube-runtime's and client-go's six minutes).
pub const REMEMBERED: Duration = Duration::from_secs(6 * 60);
/// How often, at most, Events older than [`REMEMBERED`] are forgotten.
pub const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// The API server refuses an Event note longer than this many bytes.
const NOTE_MAX: usize = 1024;

/// What is remembered of one published Event.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    namespace: String,
    name: String,
    count: i32,
    last: Timestamp,
}

/// How to publish an Event.
#[derive(Clone, Debug, PartialEq)]
pub enum Publish {
    /// A new Event object.
    Create,
    /// A repeat: count it in the series of Event `name` in `namespace`.
    Repeat { namespace: String, name: String, count: i32 },
}

/// The published Events still remembered, by key. Pure: time is passed in.
#[derive(Debug, Default)]
pub struct Remembered {
    seen: HashMap<String, Seen>,
    swept: Option<Timestamp>,
}

impl Remembered {
    /// How to publish the Event of `key` at `now` (forgetting old ones first, now and then).
    pub fn publish(&mut self, key: &str, now: Timestamp) -> Publish {
        let remembered = jiff::SignedDuration::try_from(REMEMBERED).unwrap_or_default();
        let sweep = jiff::SignedDuration::try_from(SWEEP_EVERY).unwrap_or_default();
        if self.swept.is_none_or(|at| at + sweep <= now) {
            self.seen.retain(|_, s| s.last + remembered > now);
            self.swept = Some(now);
        }
        match self.seen.get(key) {
            Some(s) if s.last + remembered > now => {
                Publish::Repeat { namespace: s.namespace.clone(), name: s.name.clone(), count: s.count + 1 }
            }
            _ => Publish::Create,
        }
    }

    /// The Event of `key` was published as `name` in `namespace` (created, or counted `count`).
    pub fn published(&mut self, key: String, namespace: String, name: String, count: i32, now: Timestamp) {
        self.seen.insert(key, Seen { namespace, name, count, last: now });
    }

    /// The Event of `key` is gone from the API server (its own TTL): the next one is new.
    pub fn forget(&mut self, key: &str) {
        self.seen.remove(key);
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// What makes two Events the same (as kube-runtime's key: the type, action and reason, and the
/// object it is about; not the note).
pub fn key(ev: &Event, regarding: &ObjectReference) -> String {
    let r = regarding;
    let part = |s: &Option<String>| s.clone().unwrap_or_default();
    format!(
        "{:?}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}",
        ev.type_,
        ev.action,
        ev.reason,
        part(&r.api_version),
        part(&r.kind),
        part(&r.namespace),
        part(&r.name),
        part(&r.uid)
    )
}

/// `note`, cut at a character boundary to what the API server accepts.
fn fitted(note: &str) -> String {
    if note.len() <= NOTE_MAX {
        return note.to_string();
    }
    let mut end = NOTE_MAX - '…'.len_utf8();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &note[..end])
}

/// Publishes Events as `controller` (and `instance`, when known).
pub struct Recorder {
    client: kube::Client,
    controller: String,
    instance: Option<String>,
    remembered: Mutex<Remembered>,
}

impl Recorder {
    pub fn new(client: kube::Client, controller: String, instance: Option<String>) -> Self {
        Recorder { client, controller, instance, remembered: Mutex::default() }
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, Remembered> {
        self.remembered.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records `ev` about `regarding`: a new Event, or a repeat counted in the series of the same
    /// Event published within [`REMEMBERED`].
    pub async fn publish(&self, ev: &Event, regarding: &ObjectReference) -> Result<(), kube::Error> {
        let key = key(ev, regarding);
        let now = Timestamp::now();
        let decided = self.remembered().publish(&key, now);
        if let Publish::Repeat { namespace, name, count } = decided {
            let series = serde_json::json!({"series": {"count": count, "lastObservedTime": MicroTime(now)}});
            let events: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
            match events.patch(&name, &PatchParams::default(), &Patch::Merge(&series)).await {
                Ok(_) => {
                    self.remembered().published(key, namespace, name, count, now);
                    return Ok(());
                }
                // Gone (the API server's own Event TTL): record it anew.
                Err(kube::Error::Api(s)) if s.code == 404 => self.remembered().forget(&key),
                Err(e) => return Err(e),
            }
        }
        let namespace = regarding.namespace.clone().unwrap_or_else(|| "default".into());
        let name = format!("{}.{:x}", regarding.name.as_deref().unwrap_or(&self.controller), now.as_nanosecond());
        let event = K8sEvent {
            metadata: ObjectMeta { name: Some(name.clone()), namespace: Some(namespace.clone()), ..Default::default() },
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            note: ev.note.as_deref().map(fitted),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            related: ev.secondary.clone(),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone().unwrap_or_else(|| self.controller.clone())),
            type_: Some(match ev.type_ {
                EventType::Normal => "Normal".into(),
                EventType::Warning => "Warning".into(),
            }),
            series: None::<EventSeries>,
            ..Default::default()
        };
        let events: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
        events.create(&PostParams::default(), &event).await?;
        self.remembered().published(key, namespace, name, 1, now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap_or_default()
    }

    fn seen_once(r: &mut Remembered, key: &str, secs: i64) {
        assert_eq!(r.publish(key, at(secs)), Publish::Create);
        r.published(key.into(), "ns".into(), format!("{key}.1"), 1, at(secs));
    }

    #[test]
    fn a_repeat_within_six_minutes_counts_in_the_series_of_the_first() {
        let mut r = Remembered::default();
        seen_once(&mut r, "a", 0);
        let repeat = r.publish("a", at(60));
        assert_eq!(repeat, Publish::Repeat { namespace: "ns".into(), name: "a.1".into(), count: 2 });
        r.published("a".into(), "ns".into(), "a.1".into(), 2, at(60));
        assert_eq!(r.publish("a", at(120)), Publish::Repeat { namespace: "ns".into(), name: "a.1".into(), count: 3 });
        assert_eq!(r.publish("b", at(120)), Publish::Create, "another key is another Event");
    }

    #[test]
    fn an_event_not_seen_for_six_minutes_is_new_again_and_forgotten_by_the_sweep() {
        let mut r = Remembered::default();
        seen_once(&mut r, "a", 0);
        seen_once(&mut r, "b", 300);
        assert_eq!(r.publish("a", at(360)), Publish::Create, "six minutes on, a new Event");
        assert_eq!(r.len(), 1, "the sweep forgot a, and kept b");
        r.forget("b");
        assert!(r.is_empty());
    }

    #[test]
    fn the_cache_is_swept_at_most_every_thirty_seconds() {
        let mut r = Remembered::default();
        seen_once(&mut r, "a", 0);
        // Swept at 0 (by the first publish), so not again before 30 s: a stays although old.
        r.published("old".into(), "ns".into(), "old.1".into(), 1, at(-400));
        let _ = r.publish("x", at(10));
        assert_eq!(r.len(), 2);
        let _ = r.publish("x", at(30));
        assert_eq!(r.len(), 1, "the old one is forgotten at the next sweep");
    }

    #[test]
    fn the_key_is_the_type_action_reason_and_object_not_the_note() {
        let ev = |reason: &str, note: &str| Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: Some(note.into()),
            action: "Reconcile".into(),
            secondary: None,
        };
        let obj = ObjectReference { name: Some("acme".into()), namespace: Some("ns".into()), ..Default::default() };
        let other = ObjectReference { name: Some("globex".into()), ..obj.clone() };
        assert_eq!(key(&ev("Installed", "one"), &obj), key(&ev("Installed", "two"), &obj));
        assert_ne!(key(&ev("Installed", "one"), &obj), key(&ev("Upgraded", "one"), &obj));
        assert_ne!(key(&ev("Installed", "one"), &obj), key(&ev("Installed", "one"), &other));
    }

    #[test]
    fn a_long_note_is_cut_to_what_the_api_server_accepts_at_a_character_boundary() {
        assert_eq!(fitted("short"), "short");
        let long = "é".repeat(700);
        let cut = fitted(&long);
        assert!(cut.len() <= NOTE_MAX && cut.ends_with('…'), "{}", cut.len());
    }
}
