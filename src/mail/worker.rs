//! The outbox as a delivery queue: leases due mail, hands it to the transport,
//! and records the outcome. Every mail ends `sent`, `failed` or `expired`;
//! until then it is retried with exponential backoff and jitter. The worker
//! loop, leases and backoff are the shared ones of [`crate::delivery`].
//!
//! A batch is delivered concurrently (up to [`CONCURRENCY`] at once), each
//! attempt bounded by the mail timeout (and [`ATTEMPT_TIMEOUT`] whatever the
//! transport does), under a short lease that the worker renews while the
//! attempts run (see [`crate::delivery`]). A worker never holds a leased mail
//! past the point where another instance may claim it and send it a second
//! time: if it cannot renew, it aborts the attempt while half the lease is
//! still left. A process that dies mid-attempt leaves the mail to be retried
//! within one lease (20 s).

use std::sync::Arc;
use std::time::Duration;

use super::{DeliveryError, Mailer, Transport};
use crate::clock::Clock;
use crate::config::MailSettings;
use crate::delivery::{Lease, Next, Queue, Worker};
use crate::metrics::Metrics;
use crate::store::{DynStore, LeaseToken, MailResult, OutboxMail, StoreError};

pub use crate::delivery::RetryPolicy;

/// The most a single delivery attempt may take, however slowly the server answers.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);
/// Mails claimed, and delivered concurrently, at once.
pub(crate) const CONCURRENCY: usize = 8;

impl RetryPolicy {
    pub fn from_settings(settings: &MailSettings) -> Self {
        Self {
            max_attempts: i64::from(settings.max_attempts),
            base_delay: settings.retry_base,
            max_delay: Duration::from_secs(15 * 60),
        }
    }
}

/// The outbox worker: the shared worker over the mail queue.
pub type OutboxWorker = Worker<MailQueue>;

/// Builds the outbox worker; new mail rings it through the mailer's wake signal.
pub fn outbox_worker(
    store: DynStore,
    clock: Clock,
    mailer: Arc<Mailer>,
    transport: Arc<dyn Transport>,
    policy: RetryPolicy,
    metrics: Arc<Metrics>,
) -> OutboxWorker {
    let wake = mailer.wake_signal();
    let queue = MailQueue {
        store,
        clock: clock.clone(),
        mailer,
        transport,
        policy,
        metrics,
    };
    Worker::new(queue, clock, Lease::short(CONCURRENCY), wake)
}

pub struct MailQueue {
    store: DynStore,
    clock: Clock,
    mailer: Arc<Mailer>,
    transport: Arc<dyn Transport>,
    policy: RetryPolicy,
    metrics: Arc<Metrics>,
}

impl Queue for MailQueue {
    type Item = OutboxMail;
    type Outcome = MailResult;
    type Key = String;
    const NAME: &'static str = "mail";

    fn key(mail: &OutboxMail) -> String {
        mail.id.clone()
    }

    async fn claim(
        &self,
        lease: &LeaseToken,
        now: i64,
        lease_secs: i64,
        limit: i64,
    ) -> Result<Vec<OutboxMail>, StoreError> {
        self.store
            .claim_due_mail(lease, now, lease_secs, limit)
            .await
    }

    async fn renew(&self, lease: &LeaseToken, until: i64) -> Result<Vec<String>, StoreError> {
        self.store.renew_mail_lease(lease, until).await
    }

    /// Stores the outcomes and counts them. If the store cannot be reached, the
    /// lease runs out and the mails are attempted again: at least once, never lost.
    async fn record(
        &self,
        lease: &LeaseToken,
        chunk: Vec<(OutboxMail, MailResult)>,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        let mut outcomes = Vec::with_capacity(chunk.len());
        for (mail, result) in chunk {
            match &result {
                MailResult::Sent => {
                    let now_precise = self.clock.now_millis() as f64 / 1000.0;
                    self.metrics.mail_sent(now_precise - mail.created_at as f64);
                }
                MailResult::Retry { .. } => self.metrics.mail_retried(),
                MailResult::Failed { .. } => self.metrics.mail_failed(),
                MailResult::Expired => self.metrics.mail_expired(),
            }
            outcomes.push((mail.id, result));
        }
        self.store.finish_mails(lease, &outcomes, now).await
    }

    async fn attempt(&self, mail: &OutboxMail) -> MailResult {
        let now = self.clock.now();
        if mail.expires_at.is_some_and(|expires| expires <= now) {
            tracing::info!(mail = %mail.id, "mail expired before delivery");
            return MailResult::Expired;
        }
        let outgoing = match self.mailer.open(mail) {
            Ok(outgoing) => outgoing,
            Err(error) => {
                tracing::warn!(mail = %mail.id, %error, "mail cannot be opened");
                return MailResult::Failed {
                    error: error.to_string(),
                };
            }
        };
        let outcome = tokio::time::timeout(ATTEMPT_TIMEOUT, self.transport.send(&outgoing))
            .await
            .unwrap_or_else(|_| {
                Err(DeliveryError::Transient {
                    reason: "timed out".into(),
                    retry_after: None,
                })
            });
        match outcome {
            Ok(()) => {
                tracing::info!(mail = %mail.id, kind = %mail.kind, attempts = mail.attempts + 1, "mail sent");
                MailResult::Sent
            }
            Err(DeliveryError::Permanent(error)) => {
                tracing::warn!(mail = %mail.id, %error, "mail refused permanently");
                MailResult::Failed { error }
            }
            Err(DeliveryError::Transient {
                reason,
                retry_after,
            }) => match self.policy.after_failure(mail.attempts, retry_after, now) {
                Next::GiveUp => {
                    tracing::warn!(mail = %mail.id, error = %reason, "mail failed after the last attempt");
                    MailResult::Failed { error: reason }
                }
                Next::RetryAt(next_attempt_at) => {
                    tracing::info!(mail = %mail.id, error = %reason, retry_at = next_attempt_at, "mail delivery will be retried");
                    MailResult::Retry {
                        next_attempt_at,
                        error: reason,
                    }
                }
            },
        }
    }
}
