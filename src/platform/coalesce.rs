//! Lookups that arrive at about the same time, coalesced into one platform request.
//!
//! Many Installations reconcile at once, and each asks the platform one small question: which
//! installation context a site has, or which installation of the app is in a context. The gateway
//! answers such questions for a list (`tenantContexts(hostNames: [...])`,
//! `appInstallations: {contexts: [...]}`), so the first lookup of a group waits [`WINDOW`] for
//! others and then asks once for all of them, at most `max` keys a request. Written by hand: the
//! dataloader crates either tie into a GraphQL server's context or batch without a key group (here
//! the credentials, app and product), and this is a few dozen lines on tokio's oneshot.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::oneshot;

use super::{ErrorKind, PlatformError};

/// How long the first lookup of a group waits for others.
pub const WINDOW: Duration = Duration::from_millis(40);

type Waiter<V> = oneshot::Sender<Result<Option<V>, PlatformError>>;
/// The lookups gathered so far, by group.
type Pending<G, K, V> = HashMap<G, Vec<(K, Waiter<V>)>>;

/// Coalesces lookups of keys `K` within groups `G` (what one request may mix) into requests.
pub struct Coalescer<G, K, V> {
    pending: Mutex<Pending<G, K, V>>,
    max: usize,
}

impl<G: Hash + Eq + Clone, K: Hash + Eq + Clone, V: Clone> Coalescer<G, K, V> {
    /// At most `max` keys a request.
    pub fn new(max: usize) -> Self {
        Coalescer { pending: Mutex::new(HashMap::new()), max: max.max(1) }
    }

    /// Looks `key` up in `group`: `fetch` is called with the keys of the lookups gathered (at
    /// most `max` at a time) and answers what it found; a key it does not answer is `None`. A
    /// failed fetch is every gathered lookup's error.
    pub async fn get<F, Fut>(&self, group: G, key: K, fetch: F) -> Result<Option<V>, PlatformError>
    where
        F: Fn(Vec<K>) -> Fut,
        Fut: Future<Output = Result<HashMap<K, V>, PlatformError>>,
    {
        let (tx, rx) = oneshot::channel();
        let first = {
            let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let waiting = pending.entry(group.clone()).or_default();
            waiting.push((key, tx));
            waiting.len() == 1
        };
        if first {
            tokio::time::sleep(WINDOW).await;
            let gathered = self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&group)
                .unwrap_or_default();
            let mut waiters: Vec<(K, Waiter<V>)> = gathered;
            while !waiters.is_empty() {
                let rest = waiters.split_off(waiters.len().min(self.max));
                let batch = std::mem::replace(&mut waiters, rest);
                let mut keys: Vec<K> = batch.iter().map(|(k, _)| k.clone()).collect();
                keys.dedup();
                let answer = fetch(keys).await;
                for (k, tx) in batch {
                    let _ = tx.send(answer.as_ref().map(|found| found.get(&k).cloned()).map_err(Clone::clone));
                }
            }
        }
        rx.await.unwrap_or_else(|_| {
            Err(PlatformError::new(
                ErrorKind::Unavailable,
                "coalesced lookup",
                "the lookup this one joined was cancelled; it is tried again",
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn lookups_at_the_same_time_share_requests_of_at_most_max_keys() {
        let coalescer: Arc<Coalescer<&str, u32, u32>> = Arc::new(Coalescer::new(4));
        let requests = Arc::new(AtomicUsize::new(0));
        let lookups = (0..10u32).map(|k| {
            let (c, requests) = (coalescer.clone(), requests.clone());
            async move {
                c.get("group", k, |keys| {
                    requests.fetch_add(1, Ordering::SeqCst);
                    async move { Ok(keys.into_iter().filter(|k| k % 2 == 0).map(|k| (k, k * 10)).collect()) }
                })
                .await
            }
        });
        let answers = futures::future::join_all(lookups).await;
        for (k, answer) in answers.into_iter().enumerate() {
            let expected = (k % 2 == 0).then_some(k as u32 * 10);
            assert_eq!(answer, Ok(expected), "key {k}");
        }
        assert_eq!(requests.load(Ordering::SeqCst), 3, "10 keys, at most 4 a request");
    }

    #[tokio::test]
    async fn a_failed_request_is_every_waiting_lookups_error_and_groups_do_not_mix() {
        let coalescer: Arc<Coalescer<&'static str, u32, u32>> = Arc::new(Coalescer::new(100));
        async fn fail(
            c: Arc<Coalescer<&'static str, u32, u32>>,
            group: &'static str,
            k: u32,
        ) -> Result<Option<u32>, PlatformError> {
            c.get(group, k, |_| async { Err(PlatformError::new(ErrorKind::Unavailable, "op", "down")) }).await
        }
        async fn ok(c: Arc<Coalescer<&'static str, u32, u32>>, k: u32) -> Result<Option<u32>, PlatformError> {
            c.get("other", k, |keys| async move { Ok(keys.into_iter().map(|k| (k, k)).collect()) }).await
        }
        let (a, b, c) =
            tokio::join!(fail(coalescer.clone(), "g", 1), fail(coalescer.clone(), "g", 2), ok(coalescer, 3));
        assert!(a.is_err() && b.is_err());
        assert_eq!(c, Ok(Some(3)));
    }
}
