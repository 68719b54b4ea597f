//! What this process last wrote of each object's status: the resourceVersion the write returned,
//! and when. The controllers ask it whether a cached copy may predate their own last write (then
//! they read afresh before acting on the platform). Pure: time is passed in.
//!
//! Kept small, as there is an entry per Installation written: grouped by namespace, names and
//! resourceVersions as boxed strings; and an Installation's entry goes once the cache shows that
//! very write ([`OwnWrites::forget_delivered`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One object's last write: its resourceVersion, and when.
#[derive(Clone, Debug, PartialEq)]
struct Write {
    resource_version: Box<str>,
    at: Instant,
}

/// The last status write of each object, by namespace and name.
#[derive(Debug, Default)]
pub struct OwnWrites {
    namespaces: HashMap<Box<str>, HashMap<Box<str>, Write>>,
}

impl OwnWrites {
    /// The write of `namespace/name` returned `resource_version` at `at` (`None`: forget it).
    pub fn wrote(&mut self, namespace: &str, name: &str, resource_version: Option<&str>, at: Instant) {
        let Some(rv) = resource_version else {
            self.forget(namespace, name);
            return;
        };
        let write = Write { resource_version: rv.into(), at };
        match self.namespaces.get_mut(namespace) {
            Some(names) => {
                names.insert(name.into(), write);
            }
            None => {
                self.namespaces.insert(namespace.into(), HashMap::from([(name.into(), write)]));
            }
        }
    }

    /// Forgets `namespace/name` (it is going away).
    pub fn forget(&mut self, namespace: &str, name: &str) {
        if let Some(names) = self.namespaces.get_mut(namespace) {
            names.remove(name);
            if names.is_empty() {
                self.namespaces.remove(namespace);
            }
        }
    }

    /// Forgets `namespace/name` if the cache shows `cached_rv`, the very write noted: from then on
    /// the cache is as fresh as the API server for it (a watch only moves forward), so
    /// [`OwnWrites::may_be_stale`] answers the same without the entry. Not for a kind that asks
    /// [`OwnWrites::knows_latest`], which needs it.
    pub fn forget_delivered(&mut self, namespace: &str, name: &str, cached_rv: Option<&str>) {
        if self.last(namespace, name).is_some_and(|w| Some(&*w.resource_version) == cached_rv) {
            self.forget(namespace, name);
        }
    }

    fn last(&self, namespace: &str, name: &str) -> Option<&Write> {
        self.namespaces.get(namespace)?.get(name)
    }

    /// Whether a cached copy at `cached_rv` may predate this process's last write: true when this
    /// process wrote it and the cache does not show the resourceVersion that write returned.
    pub fn may_be_stale(&self, namespace: &str, name: &str, cached_rv: Option<&str>) -> bool {
        self.last(namespace, name).is_some_and(|w| Some(&*w.resource_version) != cached_rv)
    }

    /// Whether it may be stale only because this process wrote it less than `lag` before `now`.
    pub fn awaits_own_write(
        &self,
        namespace: &str,
        name: &str,
        cached_rv: Option<&str>,
        now: Instant,
        lag: Duration,
    ) -> bool {
        self.last(namespace, name)
            .is_some_and(|w| Some(&*w.resource_version) != cached_rv && now.saturating_duration_since(w.at) < lag)
    }

    /// Whether this process wrote that very resourceVersion.
    pub fn knows_latest(&self, namespace: &str, name: &str, cached_rv: Option<&str>) -> bool {
        self.last(namespace, name).is_some_and(|w| Some(&*w.resource_version) == cached_rv)
    }

    /// How many objects have an entry.
    pub fn len(&self) -> usize {
        self.namespaces.values().map(HashMap::len).sum()
    }

    /// Whether no object has an entry.
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_copy_is_stale_until_it_shows_the_write_and_then_the_entry_can_go() {
        let t0 = Instant::now();
        let lag = Duration::from_secs(2);
        let mut w = OwnWrites::default();
        assert!(!w.may_be_stale("a", "x", Some("1")), "never written: the cache is as fresh as anywhere");
        w.wrote("a", "x", Some("5"), t0);
        assert!(w.may_be_stale("a", "x", Some("4")));
        assert!(w.awaits_own_write("a", "x", Some("4"), t0 + Duration::from_secs(1), lag));
        assert!(!w.awaits_own_write("a", "x", Some("4"), t0 + Duration::from_secs(3), lag), "the watch is late");
        assert!(!w.may_be_stale("b", "x", Some("4")), "namespaces are kept apart");
        assert!(!w.knows_latest("a", "x", Some("4")) && w.knows_latest("a", "x", Some("5")));

        // Not delivered yet: kept.
        w.forget_delivered("a", "x", Some("4"));
        assert!(w.may_be_stale("a", "x", Some("4")));
        // Delivered: gone, and the answer is the same as with it.
        w.forget_delivered("a", "x", Some("5"));
        assert!(!w.may_be_stale("a", "x", Some("5")));
        assert!(w.is_empty());

        w.wrote("a", "x", Some("6"), t0);
        w.wrote("a", "y", Some("7"), t0);
        assert_eq!(w.len(), 2);
        w.wrote("a", "x", None, t0);
        w.forget("a", "y");
        assert!(w.is_empty(), "empty namespaces are dropped");
    }
}
