//! Webhooks: each Insights record POSTed to every configured URL, signed per the Standard Webhooks
//! scheme, from a persistent outbox (the store's `outbox` table, filled in the same transaction as
//! the record), so deliveries survive restarts and never block detection.
//!
//! Headers: `webhook-id` (the record's `eventID`: a receiver dedupes on it), `webhook-timestamp`
//! (Unix seconds), `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` with
//! the secret `whsec_<base64>`; body: the record (CloudTrail Insights event schema, eventVersion
//! 1.09). A 2xx answer delivers; anything else (or no answer within 10 s) is retried with
//! exponential backoff (5 s doubling, at most an hour apart) up to [`MAX_ATTEMPTS`], then dropped
//! with an error in the log and a failure counted.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use http_body_util::Full;
use hyper::body::Bytes;

use crate::store::Delivery;
use crate::{Api, StoreError};

/// Attempts per delivery before it is dropped (about 12 hours of backoff).
pub const MAX_ATTEMPTS: u32 = 16;
/// Time allowed for one attempt.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// A configured webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// `http://` or `https://` URL.
    pub url: String,
    /// The secret's bytes (configured as `whsec_<base64>`).
    pub secret: Vec<u8>,
}

/// Why a webhook setting is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// Not an `http://` or `https://` URL.
    #[error("webhook url {0:?} is not an http:// or https:// URL")]
    Url(String),
    /// The secret is not `whsec_` followed by base64.
    #[error("webhook secret for {0:?} must be whsec_ followed by base64 (at least 16 bytes)")]
    Secret(String),
}

impl Webhook {
    /// A webhook from its URL and `whsec_<base64>` secret.
    ///
    /// Returns `Err(WebhookError)` for a URL that is not http(s) or a malformed secret.
    pub fn new(url: &str, secret: &str) -> Result<Webhook, WebhookError> {
        let uri: hyper::Uri = url.parse().map_err(|_| WebhookError::Url(url.into()))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(WebhookError::Url(url.into()));
        }
        let secret = secret
            .strip_prefix("whsec_")
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .filter(|s| s.len() >= 16)
            .ok_or_else(|| WebhookError::Secret(url.into()))?;
        Ok(Webhook {
            url: url.to_string(),
            secret,
        })
    }
}

/// `v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>`.
pub fn signature(secret: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// Backoff before attempt `attempts + 1`: 5 s doubling, at most an hour.
fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(5u64.saturating_mul(1 << attempts.min(10)).min(3600))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

fn client() -> std::io::Result<Client> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https),
    )
}

/// One attempt: `Ok(())` on a 2xx answer, else why not.
async fn attempt(client: &Client, hook: &Webhook, d: &Delivery) -> Result<(), String> {
    let body = serde_json::to_vec(&d.record).map_err(|e| e.to_string())?;
    let ts = chrono::Utc::now().timestamp();
    let id = &d.record.event_id;
    let req = hyper::Request::post(&hook.url)
        .header("content-type", "application/json")
        .header("webhook-id", id.as_str())
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature(&hook.secret, id, ts, &body))
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(ATTEMPT_TIMEOUT, client.request(req)).await {
        Err(_) => Err(format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs())),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(res)) if res.status().is_success() => Ok(()),
        Ok(Ok(res)) => Err(format!("answered {}", res.status())),
    }
}

/// Delivers the outbox to `hooks` until the task is dropped; `report(delivered)` is called after
/// each attempt (for the metrics). Wakes on new records and at least every second.
///
/// Returns `Err` only when no HTTP client can be built (no TLS roots) or the store cannot be read
/// at start.
pub async fn deliver(
    api: Arc<Api>,
    hooks: Vec<Webhook>,
    report: Arc<dyn Fn(bool) + Send + Sync>,
) -> Result<(), StoreError> {
    let store = api.store().clone();
    let urls: Vec<String> = hooks.iter().map(|h| h.url.clone()).collect();
    let s = store.clone();
    tokio::task::spawn_blocking(move || s.set_webhooks(urls))
        .await
        .map_err(|e| StoreError::Corrupt {
            path: std::path::PathBuf::new(),
            reason: e.to_string(),
        })??;
    if hooks.is_empty() {
        return Ok(());
    }
    let client = match client() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhooks: no TLS roots; deliveries wait");
            return Ok(());
        }
    };
    let mut wake = api.events.subscribe();
    loop {
        let s = store.clone();
        let due = tokio::task::spawn_blocking(move || s.due(now_ms(), 100)).await;
        let due = match due {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "webhooks: cannot read the outbox");
                Vec::new()
            }
            Err(_) => Vec::new(),
        };
        for d in &due {
            let Some(hook) = hooks.iter().find(|h| h.url == d.url) else {
                continue;
            };
            let result = attempt(&client, hook, d).await;
            report(result.is_ok());
            let s = store.clone();
            let (seq, url, attempts) = (d.seq, d.url.clone(), d.attempts);
            let write = match result {
                Ok(()) => {
                    tracing::debug!(url = %url, seq, "webhook delivered");
                    tokio::task::spawn_blocking(move || s.delivered(seq, &url)).await
                }
                Err(reason) if attempts + 1 >= MAX_ATTEMPTS => {
                    tracing::error!(url = %url, seq, reason = %reason, attempts = attempts + 1, "webhook delivery dropped");
                    tokio::task::spawn_blocking(move || s.delivered(seq, &url)).await
                }
                Err(reason) => {
                    let next = now_ms() + backoff(attempts).as_millis() as i64;
                    tracing::warn!(url = %url, seq, reason = %reason, attempts = attempts + 1, "webhook delivery failed; retrying");
                    tokio::task::spawn_blocking(move || s.retry_at(seq, &url, next)).await
                }
            };
            if let Ok(Err(e)) = write {
                tracing::warn!(error = %e, "webhooks: cannot update the outbox");
            }
        }
        if due.len() < 100 {
            // Wait for a new record or the next retry time (polled every second).
            let _ = tokio::time::timeout(Duration::from_secs(1), wake.recv()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification (standard-webhooks.com).
        let secret = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap();
        let sig = signature(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn settings_are_checked() {
        assert!(Webhook::new("ftp://x", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(Webhook::new("http://127.0.0.1:1/h", "nope").is_err());
        assert!(
            Webhook::new(
                "http://127.0.0.1:1/h",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
            )
            .is_ok()
        );
        assert_eq!(backoff(0), Duration::from_secs(5));
        assert_eq!(backoff(30), Duration::from_secs(3600));
    }
}
