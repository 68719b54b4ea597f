//! A platform endpoint for the HTTP platform, hosted in the test process so that it outlives
//! operator restarts. It verifies each request's signature, adds latency, carries out each
//! idempotency key once, and counts what it carried out per site.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use forgeops::platform::Action;
use forgeops::platform::http::{SIGNATURE_HEADER, signature};

#[derive(Default)]
pub struct Counts {
    /// Requests received (retries and repeats included).
    pub requests: u64,
    /// Requests whose idempotency key had been carried out already.
    pub repeats: u64,
    /// Requests refused for a bad signature.
    pub bad_signatures: u64,
    /// Actions carried out, by (site, action).
    pub performed: HashMap<(String, String), u32>,
    keys: HashSet<String>,
}

pub struct Endpoint {
    pub url: String,
    pub counts: Arc<Mutex<Counts>>,
}

struct Shared {
    key: Vec<u8>,
    /// The latency of a site's requests: between `min` and `min + spread`, fixed per site.
    min: Duration,
    spread: Duration,
    counts: Arc<Mutex<Counts>>,
}

impl Endpoint {
    /// Starts the endpoint on a free loopback port, in the current runtime.
    pub async fn start(key: &[u8], min: Duration, spread: Duration) -> Endpoint {
        let counts = Arc::new(Mutex::new(Counts::default()));
        let shared = Arc::new(Shared { key: key.to_vec(), min, spread, counts: counts.clone() });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/actions", listener.local_addr().unwrap());
        let app = axum::Router::new().route("/actions", axum::routing::post(handle)).with_state(shared);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Endpoint { url, counts }
    }

    /// How many times each site had `action` carried out.
    pub fn performed(&self, action: &str) -> HashMap<String, u32> {
        let counts = self.counts.lock().unwrap();
        counts.performed.iter().filter(|((_, a), _)| a == action).map(|((site, _), n)| (site.clone(), *n)).collect()
    }
}

async fn handle(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    shared.counts.lock().unwrap().requests += 1;
    let given = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if given != signature(&shared.key, &body) {
        shared.counts.lock().unwrap().bad_signatures += 1;
        return (StatusCode::UNAUTHORIZED, r#"{"message":"bad signature"}"#.into());
    }
    let Ok(action) = serde_json::from_slice::<Action>(&body) else {
        return (StatusCode::BAD_REQUEST, r#"{"message":"not an action"}"#.into());
    };
    let site_hash = action.site.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    let jitter = shared.spread.mul_f64((site_hash % 1000) as f64 / 1000.0);
    // Like a real platform, the action completes even if the caller dies while waiting for it.
    let work = tokio::spawn(async move {
        tokio::time::sleep(shared.min + jitter).await;
        let mut counts = shared.counts.lock().unwrap();
        if !counts.keys.insert(action.idempotency_key.clone()) {
            counts.repeats += 1;
            return (StatusCode::OK, r#"{"repeat":true}"#.to_string());
        }
        *counts.performed.entry((action.site.clone(), action.action.as_str().to_string())).or_default() += 1;
        (StatusCode::OK, "{}".to_string())
    });
    work.await.unwrap_or((StatusCode::INTERNAL_SERVER_ERROR, r#"{"message":"endpoint failed"}"#.into()))
}
