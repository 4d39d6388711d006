//! The one delivery machinery that mail and webhooks share: a durable queue in
//! the database, leased a batch at a time (so that with several instances each
//! item goes out from one of them), attempted concurrently, and retried with
//! exponential backoff and jitter until it succeeds or runs out of attempts
//! and is left `failed` (the dead letter an admin can send again).
//!
//! A queue says how to claim, attempt and record ([`Queue`]); [`Worker`] runs
//! any of them the same way, and [`RetryPolicy`] decides when to try again.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use rand::Rng;
use tokio::sync::{Notify, watch};

use crate::clock::Clock;
use crate::store::StoreError;

/// How often an idle worker looks for items that came due. New items wake it
/// at once where the queue can tell, and so does a moved clock (tests), so
/// this only bounds how late a retry goes out.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// When to give up, and how long to wait between attempts.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub max_attempts: i64,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

/// What follows a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Try again at this time (unix seconds).
    RetryAt(i64),
    /// That was the last attempt.
    GiveUp,
}

impl RetryPolicy {
    /// The delay before attempt `attempts + 1`: base × 2^attempts, capped, with
    /// ±25 % jitter so that many failed items do not retry in lockstep.
    pub fn delay(&self, attempts: i64) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempts.clamp(0, 20));
        let capped = exp.min(self.max_delay);
        capped.mul_f64(rand::thread_rng().gen_range(0.75..=1.25))
    }

    /// After the failed attempt number `attempts + 1`: retry, no sooner than
    /// the receiver's `Retry-After`, or give up.
    pub fn after_failure(&self, attempts: i64, retry_after: Option<Duration>, now: i64) -> Next {
        if attempts + 1 >= self.max_attempts {
            return Next::GiveUp;
        }
        let delay = self.delay(attempts).max(retry_after.unwrap_or_default());
        // Rounded up: stored times are whole seconds, and a Retry-After must not be cut short.
        Next::RetryAt(now + delay.as_millis().div_ceil(1000).max(1) as i64)
    }
}

/// One durable queue: how its items are claimed, attempted and recorded.
pub trait Queue: Send + Sync + 'static {
    type Item: Send + 'static;
    type Outcome: Send + 'static;

    /// For logs: `mail`, `webhook`.
    const NAME: &'static str;

    /// Leases up to `limit` due items for `lease_secs`.
    fn claim(
        &self,
        now: i64,
        lease_secs: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<Self::Item>, StoreError>> + Send;

    /// One attempt, bounded by the queue's own timeout (shorter than the lease).
    fn attempt(&self, item: &Self::Item) -> impl Future<Output = Self::Outcome> + Send;

    /// Stores the outcomes of items attempted together, in one store call. If
    /// the store cannot be reached, the lease runs out and the items are
    /// attempted again: at least once, never lost.
    fn record(
        &self,
        done: Vec<(Self::Item, Self::Outcome)>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// How a worker leases.
#[derive(Clone, Copy, Debug)]
pub struct Lease {
    /// How long a claimed item stays invisible to other workers: longer than a
    /// whole batch may take (one attempt's timeout, the batch being
    /// concurrent), so a live worker never has its items taken from it. It is
    /// also how late an item claimed by a process that then died is picked up.
    pub secs: i64,
    /// Items claimed, and attempted concurrently, at once.
    pub batch: usize,
}

/// Runs a [`Queue`]: claims a batch, attempts it concurrently, records the
/// outcomes, and sleeps when nothing is due.
pub struct Worker<Q> {
    queue: Q,
    clock: Clock,
    lease: Lease,
    wake: Arc<Notify>,
}

impl<Q: Queue> Worker<Q> {
    /// `wake` rings the worker when an item is queued.
    pub fn new(queue: Q, clock: Clock, lease: Lease, wake: Arc<Notify>) -> Self {
        Self {
            queue,
            clock,
            lease,
            wake,
        }
    }

    /// Runs until `shutdown` turns true; the batch in hand is finished first.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut clock_moves = self.clock.moves();
        tracing::info!("{} worker started", Q::NAME);
        while !*shutdown.borrow() {
            let handled = match self.deliver_due().await {
                Ok(count) => count,
                Err(error) => {
                    tracing::warn!(%error, "{} worker cannot reach the store", Q::NAME);
                    0
                }
            };
            if handled == 0 {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = clock_moves.changed() => {}
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
        tracing::info!("{} worker stopped", Q::NAME);
    }

    /// Attempts one batch of due items; returns how many were handled.
    pub async fn deliver_due(&self) -> Result<usize, StoreError> {
        let due = self
            .queue
            .claim(self.clock.now(), self.lease.secs, self.lease.batch as i64)
            .await?;
        let count = due.len();
        // Outcomes are recorded a chunk at a time, whichever attempts have
        // finished together, in one store call: with a fast receiver that is
        // the whole batch, so the worker takes the (SQLite: single) writer once
        // per batch instead of once per item, while a slow attempt does not
        // hold back the outcomes of the quick ones.
        let mut finished = futures_util::stream::iter(due)
            .map(|item| async move {
                let outcome = self.queue.attempt(&item).await;
                (item, outcome)
            })
            .buffer_unordered(self.lease.batch)
            .ready_chunks(self.lease.batch);
        let mut failure = None;
        while let Some(chunk) = finished.next().await {
            if let Err(error) = self.queue.record(chunk).await {
                failure = Some(error);
            }
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(count),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 12,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(15 * 60),
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = policy();
        assert!(policy.delay(0) <= Duration::from_millis(2500));
        assert!(policy.delay(3) >= Duration::from_secs(12));
        assert!(policy.delay(40) <= Duration::from_secs(15 * 60 * 5 / 4));
    }

    #[test]
    fn retry_after_is_honoured_and_the_last_attempt_gives_up() {
        let policy = policy();
        let asked = Some(Duration::from_secs(100));
        assert_eq!(policy.after_failure(0, asked, 1000), Next::RetryAt(1100));
        assert!(
            matches!(policy.after_failure(0, None, 1000), Next::RetryAt(t) if t > 1000 && t <= 1003)
        );
        assert_eq!(policy.after_failure(11, None, 1000), Next::GiveUp);
    }
}
