//! The HTTP platform: each action is sent as a JSON request to a configured URL, where an executor
//! of the deployment's own (for instance one that drives the Forge CLI) carries it out.
//!
//! Protocol: `POST <url>` with the JSON body of [`Action`], headers `Content-Type: application/json`,
//! `Idempotency-Key: <key>` and `X-Forgeops-Signature: sha256=<hex HMAC-SHA256 of the body>`.
//! A 2xx answer means done (a repeated key must answer 2xx without acting again); 4xx means refused
//! (not retried; a JSON `{"message": "..."}` body is shown to the user); 5xx, 429 and transport
//! errors are retried with exponential backoff, then reported.

use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use ring::hmac;

use super::{Action, Platform, PlatformError};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-forgeops-signature";

pub struct HttpPlatform {
    url: http::Uri,
    key: Vec<u8>,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
    attempts: u32,
}

/// `sha256=<hex>` of the HMAC-SHA256 of `body` under `key`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), body);
    format!("sha256={}", tag.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>())
}

impl HttpPlatform {
    pub fn new(url: http::Uri, key: &[u8], timeout: Duration, attempts: u32) -> std::io::Result<Self> {
        let connector =
            hyper_rustls::HttpsConnectorBuilder::new().with_native_roots()?.https_or_http().enable_http1().build();
        Ok(HttpPlatform {
            url,
            key: key.to_vec(),
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
            attempts: attempts.max(1),
        })
    }

    async fn send_once(&self, body: &Bytes, action: &Action) -> Result<(), (bool, String)> {
        let sig = signature(&self.key, body);
        let request = http::Request::post(self.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", &action.idempotency_key)
            .header(SIGNATURE_HEADER, sig)
            .body(Full::new(body.clone()))
            .map_err(|e| (false, e.to_string()))?;
        let response = tokio::time::timeout(self.timeout, self.client.request(request))
            .await
            .map_err(|_| (true, format!("no answer within {:?}", self.timeout)))?
            .map_err(|e| (true, e.to_string()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(300).collect());
        let retry = status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS;
        Err((retry, format!("HTTP {status}: {message}")))
    }
}

impl Platform for HttpPlatform {
    fn perform<'a>(&'a self, action: &'a Action) -> BoxFuture<'a, Result<(), PlatformError>> {
        async move {
            let body = Bytes::from(serde_json::to_vec(action).expect("an action serializes"));
            let mut delay = Duration::from_millis(200);
            let mut last = String::new();
            for attempt in 1..=self.attempts {
                match self.send_once(&body, action).await {
                    Ok(()) => return Ok(()),
                    Err((false, message)) => {
                        return Err(PlatformError::Refused {
                            action: action.action.as_str(),
                            site: action.site.clone(),
                            message,
                        });
                    }
                    Err((true, message)) => {
                        tracing::debug!(site = %action.site, attempt, %message, "platform call failed, retrying");
                        last = message;
                        if attempt < self.attempts {
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(5));
                        }
                    }
                }
            }
            Err(PlatformError::Unavailable { action: action.action.as_str(), site: action.site.clone(), message: last })
        }
        .boxed()
    }
}
