//! Webhook delivery for BulkUpgrade notifications ([`crate::rules::notify`]): posted in the
//! background, so a slow or failing receiver never holds a reconcile; in order per BulkUpgrade;
//! retried with exponential backoff (at least once while the operator runs; a notice queued when
//! the process stops is not sent by the next one). The URL is a secret (webhook URLs often carry
//! a token): it is never logged.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{info, warn};

/// One body to post.
struct Delivery {
    url: String,
    body: serde_json::Value,
    /// What it tells, for the logs.
    what: String,
}

/// See the module doc.
pub struct Notifier {
    http: reqwest::Client,
    attempts: u32,
    first_backoff: Duration,
    max_backoff: Duration,
    queues: Mutex<HashMap<String, mpsc::UnboundedSender<Delivery>>>,
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier::new(10, Duration::from_millis(500), Duration::from_secs(60))
    }
}

impl Notifier {
    pub fn new(attempts: u32, first_backoff: Duration, max_backoff: Duration) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();
        Notifier { http, attempts: attempts.max(1), first_backoff, max_backoff, queues: Mutex::default() }
    }

    /// Queues `body` for `url`, after everything queued before for `key` (a BulkUpgrade).
    pub fn send(&self, key: &str, url: String, body: serde_json::Value, what: String) {
        let mut queues = self.queues.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let delivery = Delivery { url, body, what };
        let delivery = match queues.get(key) {
            Some(tx) => match tx.send(delivery) {
                Ok(()) => return,
                Err(mpsc::error::SendError(d)) => d,
            },
            None => delivery,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(delivery);
        queues.insert(key.to_string(), tx);
        tokio::spawn(worker(
            self.http.clone(),
            rx,
            key.to_string(),
            self.attempts,
            self.first_backoff,
            self.max_backoff,
        ));
    }
}

async fn worker(
    http: reqwest::Client,
    mut rx: mpsc::UnboundedReceiver<Delivery>,
    key: String,
    attempts: u32,
    first: Duration,
    max: Duration,
) {
    while let Some(d) = rx.recv().await {
        let mut backoff = first;
        for attempt in 1..=attempts {
            let body = serde_json::to_vec(&d.body).unwrap_or_default();
            let sent =
                http.post(&d.url).header(reqwest::header::CONTENT_TYPE, "application/json").body(body).send().await;
            match sent {
                Ok(r) if r.status().is_success() => {
                    info!(bulk_upgrade = %key, notice = %d.what, attempt, "notification delivered");
                    break;
                }
                // Without the URL (a secret) or the transport error's text (which names it).
                Ok(r) => {
                    warn!(bulk_upgrade = %key, notice = %d.what, attempt, status = r.status().as_u16(), "the webhook refused a notification")
                }
                Err(e) => {
                    warn!(bulk_upgrade = %key, notice = %d.what, attempt, timeout = e.is_timeout(), connect = e.is_connect(), "the webhook could not be reached")
                }
            }
            if attempt == attempts {
                warn!(bulk_upgrade = %key, notice = %d.what, attempts, "gave up delivering a notification");
            } else {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(max);
            }
        }
    }
}
