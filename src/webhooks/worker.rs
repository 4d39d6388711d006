//! Webhook deliveries as a delivery queue ([`crate::delivery`]): leases due
//! deliveries, signs and posts each, and records the outcome. A 2xx answer
//! delivers; anything else (a redirect included: they are never followed), a
//! timeout or a refused connection is retried with backoff, no sooner than a
//! `Retry-After` asks, until the attempts run out and the delivery is `failed`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use url::Url;

use super::signing::sign;
use super::target::{self, PublicOnly};
use crate::clock::Clock;
use crate::config::WebhookSettings;
use crate::delivery::{Lease, Next, Queue, RetryPolicy, Worker};
use crate::mail::Sealer;
use crate::metrics::Metrics;
use crate::store::{DueWebhook, DynStore, LeaseToken, StoreError, WebhookResult};

/// Deliveries claimed, and attempted concurrently, at once.
const CONCURRENCY: usize = 8;
/// How much of a response is read and kept: enough for an error message.
const MAX_RESPONSE_BYTES: usize = 256;
/// The longest `Retry-After` honoured; longer asks get the normal backoff.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(6 * 3600);

pub type WebhookWorker = Worker<WebhookQueue>;

/// Builds the webhook worker; `wake` rings it when a delivery is queued again.
pub fn webhook_worker(
    store: DynStore,
    clock: Clock,
    sealer: Arc<Sealer>,
    settings: &WebhookSettings,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
) -> Result<WebhookWorker, reqwest::Error> {
    let mut client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(settings.timeout)
        .user_agent(concat!("gatehouse-webhooks/", env!("CARGO_PKG_VERSION")));
    if !settings.allow_insecure {
        client = client.https_only(true).dns_resolver(Arc::new(PublicOnly));
    }
    let queue = WebhookQueue {
        store,
        clock: clock.clone(),
        sealer,
        client: client.build()?,
        policy: RetryPolicy {
            max_attempts: i64::from(settings.max_attempts),
            base_delay: settings.retry_base,
            max_delay: Duration::from_secs(4 * 3600),
        },
        allow_insecure: settings.allow_insecure,
        disable_after: settings.disable_after.as_secs() as i64,
        metrics,
    };
    // The short lease, renewed while attempts run, however long the timeout.
    Ok(Worker::new(queue, clock, Lease::short(CONCURRENCY), wake))
}

pub struct WebhookQueue {
    store: DynStore,
    clock: Clock,
    sealer: Arc<Sealer>,
    client: reqwest::Client,
    policy: RetryPolicy,
    allow_insecure: bool,
    disable_after: i64,
    metrics: Arc<Metrics>,
}

/// An attempt that did not deliver: what the receiver said, if anything.
struct Refused {
    status: Option<i64>,
    error: String,
    retry_after: Option<Duration>,
}

impl Queue for WebhookQueue {
    type Item = DueWebhook;
    type Outcome = WebhookResult;
    type Key = (String, String);
    const NAME: &'static str = "webhook";

    fn key(due: &DueWebhook) -> (String, String) {
        (due.endpoint_id.clone(), due.event_id.clone())
    }

    async fn claim(
        &self,
        lease: &LeaseToken,
        now: i64,
        lease_secs: i64,
        limit: i64,
    ) -> Result<Vec<DueWebhook>, StoreError> {
        self.store
            .claim_due_webhooks(lease, now, lease_secs, limit)
            .await
    }

    async fn renew(
        &self,
        lease: &LeaseToken,
        until: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.store.renew_webhook_lease(lease, until).await
    }

    async fn attempt(&self, due: &DueWebhook) -> WebhookResult {
        let outcome = self.post(due).await;
        let now = self.clock.now();
        match outcome {
            Ok(status) => {
                tracing::info!(webhook = %due.endpoint_id, event = %due.event_id, status, "webhook delivered");
                WebhookResult::Delivered { status }
            }
            Err(refused) => match self
                .policy
                .after_failure(due.attempts, refused.retry_after, now)
            {
                Next::RetryAt(next_attempt_at) => {
                    tracing::info!(webhook = %due.endpoint_id, event = %due.event_id, error = %refused.error, retry_at = next_attempt_at, "webhook delivery will be retried");
                    WebhookResult::Retry {
                        next_attempt_at,
                        status: refused.status,
                        error: refused.error,
                    }
                }
                Next::GiveUp => {
                    tracing::warn!(webhook = %due.endpoint_id, event = %due.event_id, error = %refused.error, "webhook delivery failed after the last attempt");
                    WebhookResult::Failed {
                        status: refused.status,
                        error: refused.error,
                    }
                }
            },
        }
    }

    async fn record(
        &self,
        lease: &LeaseToken,
        done: Vec<(DueWebhook, WebhookResult)>,
    ) -> Result<(), StoreError> {
        let outcomes: Vec<_> = done
            .into_iter()
            .map(|(due, result)| {
                match &result {
                    WebhookResult::Delivered { .. } => self.metrics.webhook_delivered(),
                    WebhookResult::Retry { .. } => self.metrics.webhook_retried(),
                    WebhookResult::Failed { .. } => self.metrics.webhook_failed(),
                }
                ((due.endpoint_id, due.event_id), result)
            })
            .collect();
        self.store
            .finish_webhooks(lease, &outcomes, self.disable_after, self.clock.now())
            .await
    }
}

impl WebhookQueue {
    /// One signed POST; the status of a 2xx answer.
    async fn post(&self, due: &DueWebhook) -> Result<i64, Refused> {
        let refused = |error: String| Refused {
            status: None,
            error,
            retry_after: None,
        };
        let url = Url::parse(&due.url).map_err(|e| refused(format!("bad URL: {e}")))?;
        if !self.allow_insecure {
            target::parse(url.as_str(), false).map_err(|e| refused(e.to_string()))?;
            target::check_literal(&url).map_err(|e| refused(e.to_string()))?;
        }
        let secret = self
            .sealer
            .open(&due.secret_sealed)
            .map_err(|e| refused(format!("signing secret: {e}")))?;
        let secret = String::from_utf8(secret).map_err(|_| refused("signing secret".into()))?;
        // The wall clock, not the service's (tests move that one): receivers
        // compare this with their own clock to refuse replays.
        let timestamp = chrono::Utc::now().timestamp();
        let signature = sign(&secret, &due.event_id, timestamp, &due.payload).map_err(refused)?;
        let response = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &due.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(due.payload.clone())
            .send()
            .await
            .map_err(|e| refused(describe(&e)))?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        if status.is_success() {
            return Ok(i64::from(status.as_u16()));
        }
        let why = if status.is_redirection() {
            " (redirects are not followed)"
        } else {
            ""
        };
        let body = first_bytes(response).await;
        Err(Refused {
            status: Some(i64::from(status.as_u16())),
            error: format!("HTTP {status}{why}: {body}")
                .trim_end_matches([' ', ':'])
                .to_owned(),
            retry_after,
        })
    }
}

/// The first [`MAX_RESPONSE_BYTES`] of the body, on one line; the rest is never read.
async fn first_bytes(mut response: reqwest::Response) -> String {
    let mut kept = Vec::new();
    while kept.len() < MAX_RESPONSE_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => kept.extend_from_slice(&chunk),
            _ => break,
        }
    }
    kept.truncate(MAX_RESPONSE_BYTES);
    String::from_utf8_lossy(&kept)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// `Retry-After` in delta-seconds, capped.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// A failed request with its causes, without the URL.
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut text = kind.to_owned();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
