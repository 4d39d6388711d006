//! The outbox worker: leases due mail, hands it to the transport, and records the
//! outcome. Every mail ends `sent`, `failed` or `expired`; until then it is
//! retried with exponential backoff and jitter.
//!
//! A batch is delivered concurrently (up to [`CONCURRENCY`] at once), which
//! bounds a whole batch by one attempt's timeout. That keeps the batch well
//! inside its lease: a worker never holds a leased mail past the point where
//! another instance may claim it and send it a second time.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use rand::Rng;
use tokio::sync::watch;

use super::{DeliveryError, Mailer, Transport};
use crate::clock::Clock;
use crate::config::MailSettings;
use crate::metrics::Metrics;
use crate::store::{DynStore, MailResult, OutboxMail, StoreError};

/// How long a claimed mail stays invisible to other workers. Longer than a
/// whole batch may take (one [`ATTEMPT_TIMEOUT`], the batch being concurrent),
/// so a live worker never has its mail taken from it. It is also how late a
/// mail claimed by a process that then died is picked up after a restart.
const LEASE_SECS: i64 = 120;
/// The most a single delivery attempt may take, however slowly the server answers.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);
/// Mails claimed, and delivered concurrently, at once.
pub(crate) const CONCURRENCY: usize = 8;
/// How often an idle worker looks for mail that came due. New mail wakes it at
/// once, and so does a moved clock (tests), so this only bounds how late a retry goes out.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// When to give up, and how long to wait between attempts.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub max_attempts: i64,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 12,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(15 * 60),
        }
    }
}

impl RetryPolicy {
    pub fn from_settings(settings: &MailSettings) -> Self {
        Self {
            max_attempts: i64::from(settings.max_attempts),
            base_delay: settings.retry_base,
            ..Self::default()
        }
    }

    /// The delay before attempt `attempts + 1`: base × 2^attempts, capped, with
    /// ±25 % jitter so that many failed mails do not retry in lockstep.
    pub fn delay(&self, attempts: i64) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempts.clamp(0, 20));
        let capped = exp.min(self.max_delay);
        capped.mul_f64(rand::thread_rng().gen_range(0.75..=1.25))
    }
}

pub struct OutboxWorker {
    store: DynStore,
    clock: Clock,
    mailer: Arc<Mailer>,
    transport: Arc<dyn Transport>,
    policy: RetryPolicy,
    metrics: Arc<Metrics>,
}

impl OutboxWorker {
    pub fn new(
        store: DynStore,
        clock: Clock,
        mailer: Arc<Mailer>,
        transport: Arc<dyn Transport>,
        policy: RetryPolicy,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            clock,
            mailer,
            transport,
            policy,
            metrics,
        }
    }

    /// Runs until `shutdown` turns true; the batch in hand is finished first.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let wake = self.mailer.wake_signal();
        let mut clock_moves = self.clock.moves();
        tracing::info!(transport = self.transport.name(), "mail worker started");
        while !*shutdown.borrow() {
            let delivered = match self.deliver_due().await {
                Ok(count) => count,
                Err(error) => {
                    tracing::warn!(%error, "mail worker cannot reach the store");
                    0
                }
            };
            if delivered == 0 {
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = clock_moves.changed() => {}
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
        tracing::info!("mail worker stopped");
    }

    /// Delivers one batch of due mail; returns how many were handled.
    pub async fn deliver_due(&self) -> Result<usize, StoreError> {
        let due = self
            .store
            .claim_due_mail(self.clock.now(), LEASE_SECS, CONCURRENCY as i64)
            .await?;
        let count = due.len();
        // Outcomes are recorded a chunk at a time, whichever deliveries have
        // finished together, in one store call: with a fast transport that is
        // the whole batch, so the worker takes the (SQLite: single) writer once
        // per batch instead of once per mail, while a slow delivery does not
        // hold back the outcomes of the quick ones.
        let mut finished = futures_util::stream::iter(due)
            .map(|mail| async move {
                let result = self.attempt(&mail).await;
                (mail, result)
            })
            .buffer_unordered(CONCURRENCY)
            .ready_chunks(CONCURRENCY);
        let mut failure = None;
        while let Some(chunk) = finished.next().await {
            if let Err(error) = self.record(chunk).await {
                failure = Some(error);
            }
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(count),
        }
    }

    /// Stores the outcomes and counts them. If the store cannot be reached, the
    /// lease runs out and the mails are attempted again: at least once, never lost.
    async fn record(&self, chunk: Vec<(OutboxMail, MailResult)>) -> Result<(), StoreError> {
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
        self.store.finish_mails(&outcomes, now).await
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
            }) => {
                if mail.attempts + 1 >= self.policy.max_attempts {
                    tracing::warn!(mail = %mail.id, error = %reason, "mail failed after the last attempt");
                    return MailResult::Failed { error: reason };
                }
                let delay = self
                    .policy
                    .delay(mail.attempts)
                    .max(retry_after.unwrap_or_default());
                tracing::info!(mail = %mail.id, error = %reason, retry_in = ?delay, "mail delivery will be retried");
                MailResult::Retry {
                    // Rounded up: stored times are whole seconds, and a
                    // Retry-After must not be cut short.
                    next_attempt_at: now + delay.as_millis().div_ceil(1000).max(1) as i64,
                    error: reason,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = RetryPolicy::default();
        assert!(policy.delay(0) <= Duration::from_millis(2500));
        assert!(policy.delay(3) >= Duration::from_secs(12));
        assert!(policy.delay(40) <= Duration::from_secs(15 * 60 * 5 / 4));
    }
}
