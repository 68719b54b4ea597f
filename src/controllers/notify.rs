//! Webhook delivery for BulkUpgrade notifications ([`crate::rules::notify`]): posted in the
//! background, so a slow or failing receiver never holds a reconcile; in order per BulkUpgrade;
//! retried with exponential backoff. What is told waits in the upgrade's `status.outbox` (written
//! with the change that told it) until delivered or given up: the delivery wakes the upgrade's
//! reconcile, which takes it out. So a notification told before a crash is sent by the next
//! process: at least once, and once in the normal case. The URL is a secret (webhook URLs often
//! carry a token): it is never logged.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::Stream;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::api::BulkUpgrade;

type Key = ObjectRef<BulkUpgrade>;

/// One body to post.
struct Delivery {
    id: u32,
    url: String,
    body: serde_json::Value,
    /// What it tells, for the logs.
    what: String,
}

/// What this process knows of one upgrade's notifications.
#[derive(Default)]
struct Book {
    /// Handed to the worker, not yet delivered or given up.
    queued: HashSet<u32>,
    /// Delivered or given up, and maybe still in the outbox.
    settled: HashSet<u32>,
    /// The upgrade's worker, which posts in order.
    worker: Option<mpsc::UnboundedSender<Delivery>>,
}

/// See the module doc.
pub struct Notifier {
    http: reqwest::Client,
    attempts: u32,
    first_backoff: Duration,
    max_backoff: Duration,
    books: Arc<Mutex<HashMap<Key, Book>>>,
    /// Tells the controller which upgrade has notifications settled.
    wake: mpsc::UnboundedSender<Key>,
    workers: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Drop for Notifier {
    /// The workers stop with the controller: what they had not delivered is still in the outbox.
    fn drop(&mut self) {
        for w in self.workers.get_mut().unwrap_or_else(PoisonError::into_inner).drain(..) {
            w.abort();
        }
    }
}

impl Notifier {
    /// A notifier, and the upgrades to reconcile because their notifications settled.
    pub fn new(
        attempts: u32,
        first_backoff: Duration,
        max_backoff: Duration,
    ) -> (Self, impl Stream<Item = Key> + Send + 'static) {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();
        let (wake, woken) = mpsc::unbounded_channel();
        let notifier = Notifier {
            http,
            attempts: attempts.max(1),
            first_backoff,
            max_backoff,
            books: Arc::default(),
            wake,
            workers: Mutex::default(),
        };
        let woken = futures::stream::unfold(woken, |mut rx| async move { rx.recv().await.map(|k| (k, rx)) });
        (notifier, woken)
    }

    /// The defaults: ten attempts, backing off from 500 ms to a minute.
    pub fn with_defaults() -> (Self, impl Stream<Item = Key> + Send + 'static) {
        Notifier::new(10, Duration::from_millis(500), Duration::from_secs(60))
    }

    fn books(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Book>> {
        self.books.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether notification `id` of `key` is neither queued nor settled here.
    pub fn unsent(&self, key: &Key, id: u32) -> bool {
        self.books().get(key).is_none_or(|b| !b.queued.contains(&id) && !b.settled.contains(&id))
    }

    /// The notifications of `key` delivered or given up.
    pub fn settled(&self, key: &Key) -> Vec<u32> {
        let mut ids: Vec<u32> = self.books().get(key).map(|b| b.settled.iter().copied().collect()).unwrap_or_default();
        ids.sort_unstable();
        ids
    }

    /// Counts `id` as settled without sending it (there is nowhere to send it).
    pub fn give_up(&self, key: &Key, id: u32) {
        self.books().entry(key.clone()).or_default().settled.insert(id);
    }

    /// Forgets the settled notifications of `key` no longer in its outbox (`kept`).
    pub fn forget(&self, key: &Key, kept: &[u32]) {
        let mut books = self.books();
        if let Some(book) = books.get_mut(key) {
            book.settled.retain(|id| kept.contains(id));
            if book.settled.is_empty() && book.queued.is_empty() {
                books.remove(key);
            }
        }
    }

    /// Queues `body` for `url`, after everything queued before for `key`, unless `id` is queued or
    /// settled already.
    pub fn send(&self, key: &Key, id: u32, url: String, body: serde_json::Value, what: String) {
        let mut books = self.books();
        let book = books.entry(key.clone()).or_default();
        if book.queued.contains(&id) || book.settled.contains(&id) {
            return;
        }
        book.queued.insert(id);
        let delivery = Delivery { id, url, body, what };
        let delivery = match &book.worker {
            Some(tx) => match tx.send(delivery) {
                Ok(()) => return,
                Err(mpsc::error::SendError(d)) => d,
            },
            None => delivery,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(delivery);
        book.worker = Some(tx);
        let worker = Worker {
            http: self.http.clone(),
            key: key.clone(),
            attempts: self.attempts,
            first: self.first_backoff,
            max: self.max_backoff,
            books: self.books.clone(),
            wake: self.wake.clone(),
        };
        let handle = tokio::spawn(worker.run(rx)).abort_handle();
        let mut workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        workers.retain(|w| !w.is_finished());
        workers.push(handle);
    }
}

struct Worker {
    http: reqwest::Client,
    key: Key,
    attempts: u32,
    first: Duration,
    max: Duration,
    books: Arc<Mutex<HashMap<Key, Book>>>,
    wake: mpsc::UnboundedSender<Key>,
}

impl Worker {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Delivery>) {
        let key = format!("{}/{}", self.key.namespace.as_deref().unwrap_or_default(), self.key.name);
        while let Some(d) = rx.recv().await {
            self.deliver(&key, &d).await;
            {
                let mut books = self.books.lock().unwrap_or_else(PoisonError::into_inner);
                let book = books.entry(self.key.clone()).or_default();
                book.queued.remove(&d.id);
                book.settled.insert(d.id);
            }
            let _ = self.wake.send(self.key.clone());
        }
    }

    async fn deliver(&self, key: &str, d: &Delivery) {
        let mut backoff = self.first;
        let body = serde_json::to_vec(&d.body).unwrap_or_default();
        for attempt in 1..=self.attempts {
            let sent = self
                .http
                .post(&d.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => {
                    info!(bulk_upgrade = %key, notice = %d.what, id = d.id, attempt, "notification delivered");
                    return;
                }
                // Without the URL (a secret) or the transport error's text (which names it).
                Ok(r) => {
                    warn!(bulk_upgrade = %key, notice = %d.what, id = d.id, attempt, status = r.status().as_u16(), "the webhook refused a notification")
                }
                Err(e) => {
                    warn!(bulk_upgrade = %key, notice = %d.what, id = d.id, attempt, timeout = e.is_timeout(), connect = e.is_connect(), "the webhook could not be reached")
                }
            }
            if attempt < self.attempts {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(self.max);
            }
        }
        warn!(bulk_upgrade = %key, notice = %d.what, id = d.id, attempts = self.attempts, "gave up delivering a notification");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn an_unreachable_webhook_is_given_up_on_settled_and_wakes_the_upgrade() {
        let (notifier, woken) = Notifier::new(2, Duration::from_millis(1), Duration::from_millis(1));
        let mut woken = Box::pin(woken);
        let key = Key::new("bu").within("ns");
        // Nothing listens on port 9 of loopback.
        let url = "http://127.0.0.1:9/hook".to_string();
        assert!(notifier.unsent(&key, 1));
        notifier.send(&key, 1, url.clone(), serde_json::json!({}), "StepStarted".into());
        notifier.send(&key, 1, url, serde_json::json!({}), "StepStarted".into());
        assert!(!notifier.unsent(&key, 1), "queued");
        let woke = tokio::time::timeout(Duration::from_secs(10), woken.next()).await;
        assert_eq!(woke.ok().flatten(), Some(key.clone()));
        assert_eq!(notifier.settled(&key), [1]);
        let again = tokio::time::timeout(Duration::from_millis(100), woken.next()).await;
        assert!(again.is_err(), "sent once although queued twice");
        notifier.forget(&key, &[]);
        assert!(notifier.settled(&key).is_empty() && notifier.unsent(&key, 1));
    }
}
