//! The one delivery machinery that mail and webhooks share: a durable queue in
//! the database, leased a batch at a time (so that with several instances each
//! item goes out from one of them), attempted concurrently, and retried with
//! exponential backoff and jitter until it succeeds or runs out of attempts
//! and is left `failed` (the dead letter an admin can send again).
//!
//! A queue says how to claim, renew, attempt and record ([`Queue`]); [`Worker`]
//! runs any of them the same way, and [`RetryPolicy`] decides when to try again.
//!
//! # Leases, and what a crash leaves behind
//!
//! A claim leases its batch for a short time ([`LEASE_SECS`], 20 s) under a
//! token of its own ([`LeaseToken`], written on each row), and the worker
//! renews the lease every quarter of it for as long as attempts run. So:
//!
//! - a process that dies (SIGKILL, OOM, power) stops renewing, and what it held
//!   comes due again within one lease of its last renewal: a restarted
//!   instance, or any other, retries it within seconds;
//! - a live instance keeps renewing, so however long an attempt takes (a mail
//!   server stalling in `DATA` up to the mail timeout) its lease is never
//!   taken from it;
//! - a worker that cannot renew (the database is unreachable) aborts its
//!   attempts once half the lease is gone, before anyone else can claim the
//!   items: it never goes on sending past a lease someone else may hold. The
//!   half left is the margin for clocks: lease times are written by each
//!   instance's clock, so instances' clocks may disagree by up to 10 s;
//! - outcomes are written only where the token still holds the lease, so a
//!   claimer that lost its lease changes nothing with a late outcome: the new
//!   holder's is the one that counts. (A process frozen past its lease, a
//!   suspended VM say, may finish an attempt before its next renewal tells it
//!   the lease is gone: that item may go out twice, and is recorded once.)
//!
//! The other way to notice dead workers is a registry of instances with
//! heartbeats, whose leases are reclaimed when an instance's heartbeat stops.
//! It needs a table of its own, a way to name instances that survives
//! restarts (or a sweeper that tells a restart from a new instance), and a
//! sweep that runs somewhere; and it still needs per-claim ownership for a
//! paused instance that comes back. The lease on the row already says who may
//! send and until when, in the one place every claimer looks: renewing it is
//! the heartbeat, scoped to exactly the work in flight, one indexed `UPDATE`
//! every 5 s while a batch runs and nothing while idle. It works the same on
//! SQLite (one process) and Postgres (several).
//!
//! Delivery stays at least once: an item whose attempt was cut short by a
//! crash (or an abort) may already have reached the receiver, and is attempted
//! again.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::{AbortHandle, Abortable};
use rand::Rng;
use tokio::sync::{Notify, oneshot, watch};
use tokio::time::Instant;

use crate::clock::Clock;
use crate::store::{LeaseToken, StoreError};

/// How long a claim leases its items, renewed every quarter of it while their
/// attempts run: also how late work held by a process that died comes due.
pub const LEASE_SECS: i64 = 20;

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

/// One durable queue: how its items are claimed, kept, attempted and recorded.
pub trait Queue: Send + Sync + 'static {
    type Item: Send + Sync + 'static;
    type Outcome: Send + 'static;
    /// What names an item in the store (a mail's id, a delivery's endpoint and event).
    type Key: Eq + Hash + Send + Sync + 'static;

    /// For logs: `mail`, `webhook`.
    const NAME: &'static str;

    fn key(item: &Self::Item) -> Self::Key;

    /// Leases up to `limit` due items to `lease` until `now + lease_secs`.
    fn claim(
        &self,
        lease: &LeaseToken,
        now: i64,
        lease_secs: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<Self::Item>, StoreError>> + Send;

    /// Extends to `until` the lease of the items `lease` still holds; their keys.
    fn renew(
        &self,
        lease: &LeaseToken,
        until: i64,
    ) -> impl Future<Output = Result<Vec<Self::Key>, StoreError>> + Send;

    /// One attempt, bounded by the queue's own timeout. It may be dropped
    /// midway (the lease could not be kept): an attempt holds nothing that
    /// must be released by hand.
    fn attempt(&self, item: &Self::Item) -> impl Future<Output = Self::Outcome> + Send;

    /// Stores the outcomes of items attempted together under `lease`, in one
    /// store call, where `lease` still holds them. If the store cannot be
    /// reached, the lease runs out and the items are attempted again: at least
    /// once, never lost.
    fn record(
        &self,
        lease: &LeaseToken,
        done: Vec<(Self::Item, Self::Outcome)>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// How a worker leases.
#[derive(Clone, Copy, Debug)]
pub struct Lease {
    /// How long a claim holds its items without a renewal: renewed every
    /// quarter of it, and given up (attempts aborted) when renewing has failed
    /// until half of it is gone. Also how late an item held by a process that
    /// died comes due.
    pub secs: i64,
    /// Items claimed, and attempted concurrently, at once.
    pub batch: usize,
}

impl Lease {
    /// The usual lease ([`LEASE_SECS`]) over batches of `batch`.
    pub fn short(batch: usize) -> Self {
        Self {
            secs: LEASE_SECS,
            batch,
        }
    }

    fn renew_every(&self) -> Duration {
        Duration::from_millis((self.secs.max(1) * 1000 / 4) as u64)
    }

    fn half(&self) -> Duration {
        Duration::from_millis((self.secs.max(1) * 1000 / 2) as u64)
    }
}

/// Runs a [`Queue`]: claims a batch, attempts it concurrently while renewing
/// its lease, records the outcomes, and sleeps when nothing is due.
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

    /// Attempts one batch of due items under a lease of its own, renewed while
    /// the attempts run; returns how many were claimed.
    pub async fn deliver_due(&self) -> Result<usize, StoreError> {
        let lease = LeaseToken::generate();
        let due = self
            .queue
            .claim(
                &lease,
                self.clock.now(),
                self.lease.secs,
                self.lease.batch as i64,
            )
            .await?;
        let count = due.len();
        if count == 0 {
            return Ok(0);
        }
        let mut aborts = HashMap::with_capacity(count);
        let attempts: Vec<_> = due
            .into_iter()
            .map(|item| {
                let (handle, registration) = AbortHandle::new_pair();
                aborts.insert(Q::key(&item), handle);
                (item, registration)
            })
            .collect();
        let (finished, stop_keeping) = oneshot::channel();
        let deliver = async {
            let result = self.attempt_all(&lease, attempts).await;
            let _ = finished.send(());
            result
        };
        let (result, ()) = tokio::join!(deliver, self.keep(&lease, &aborts, stop_keeping));
        result.map(|()| count)
    }

    /// Attempts `items` concurrently, each abortable, and records the outcomes
    /// of those that were not aborted.
    async fn attempt_all(
        &self,
        lease: &LeaseToken,
        items: Vec<(Q::Item, futures_util::future::AbortRegistration)>,
    ) -> Result<(), StoreError> {
        // Outcomes are recorded a chunk at a time, whichever attempts have
        // finished together, in one store call: with a fast receiver that is
        // the whole batch, so the worker takes the (SQLite: single) writer once
        // per batch instead of once per item, while a slow attempt does not
        // hold back the outcomes of the quick ones.
        let mut finished = futures_util::stream::iter(items)
            .map(|(item, registration)| async move {
                let outcome = Abortable::new(self.queue.attempt(&item), registration).await;
                (item, outcome)
            })
            .buffer_unordered(self.lease.batch)
            .ready_chunks(self.lease.batch);
        let mut failure = None;
        while let Some(chunk) = finished.next().await {
            let attempted = chunk.len();
            let done: Vec<_> = chunk
                .into_iter()
                .filter_map(|(item, outcome)| outcome.ok().map(|outcome| (item, outcome)))
                .collect();
            if done.len() < attempted {
                tracing::warn!(
                    abandoned = attempted - done.len(),
                    "{} attempts abandoned with their lease: they will be retried",
                    Q::NAME
                );
            }
            if done.is_empty() {
                continue;
            }
            if let Err(error) = self.queue.record(lease, done).await {
                failure = Some(error);
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Renews `lease` every quarter of it (and whenever the clock is moved)
    /// until `finished`. An item the lease no longer holds has its attempt
    /// aborted at once; when renewing fails until half the lease is gone, all
    /// of them are, so none goes on past the point where another worker may
    /// claim it.
    async fn keep(
        &self,
        lease: &LeaseToken,
        aborts: &HashMap<Q::Key, AbortHandle>,
        mut finished: oneshot::Receiver<()>,
    ) {
        let give_up = || {
            tracing::warn!(
                "{} lease could not be renewed: its attempts are aborted, to be retried",
                Q::NAME
            );
            aborts.values().for_each(AbortHandle::abort);
        };
        let mut clock_moves = self.clock.moves();
        // What the claim wrote; each renewal moves both on.
        let mut held_until = self.clock.now() + self.lease.secs;
        let mut give_up_at = Instant::now() + self.lease.half();
        loop {
            tokio::select! {
                _ = &mut finished => return,
                _ = tokio::time::sleep_until(give_up_at) => {
                    give_up();
                    return;
                }
                _ = tokio::time::sleep(self.lease.renew_every()) => {}
                _ = clock_moves.changed() => {}
            }
            let now = self.clock.now();
            let until = now + self.lease.secs;
            // Bounded, so that a store that does not answer cannot hold the
            // renewals (and the deadline above) back.
            let renewed =
                tokio::time::timeout(self.lease.renew_every(), self.queue.renew(lease, until))
                    .await;
            match renewed {
                Ok(Ok(held)) => {
                    held_until = until;
                    give_up_at = Instant::now() + self.lease.half();
                    let held: HashSet<Q::Key> = held.into_iter().collect();
                    // Recorded items are not held either; aborting a finished
                    // attempt does nothing.
                    for (key, abort) in aborts {
                        if !held.contains(key) {
                            abort.abort();
                        }
                    }
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, "{} lease renewal failed", Q::NAME);
                }
                Err(_) => tracing::warn!("{} lease renewal timed out", Q::NAME),
            }
            if held_until - now <= self.lease.secs / 2 {
                give_up();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A queue of two items whose first attempt never ends (a receiver
    /// stalled for good) and whose second succeeds at once; renewals answer
    /// as `renewal` says.
    struct Stalled {
        renewal: fn(&LeaseToken) -> Result<Vec<u32>, StoreError>,
        renewals: Mutex<usize>,
        recorded: Mutex<Vec<u32>>,
    }

    impl Stalled {
        fn new(renewal: fn(&LeaseToken) -> Result<Vec<u32>, StoreError>) -> Arc<Self> {
            Arc::new(Self {
                renewal,
                renewals: Mutex::new(0),
                recorded: Mutex::new(Vec::new()),
            })
        }
    }

    impl Queue for Arc<Stalled> {
        type Item = u32;
        type Outcome = ();
        type Key = u32;
        const NAME: &'static str = "test";

        fn key(item: &u32) -> u32 {
            *item
        }

        async fn claim(
            &self,
            _: &LeaseToken,
            _: i64,
            _: i64,
            _: i64,
        ) -> Result<Vec<u32>, StoreError> {
            Ok(vec![1, 2])
        }

        async fn renew(&self, lease: &LeaseToken, _: i64) -> Result<Vec<u32>, StoreError> {
            *self.renewals.lock().unwrap() += 1;
            (self.renewal)(lease)
        }

        async fn attempt(&self, item: &u32) {
            if *item == 1 {
                std::future::pending::<()>().await;
            }
        }

        async fn record(&self, _: &LeaseToken, done: Vec<(u32, ())>) -> Result<(), StoreError> {
            self.recorded
                .lock()
                .unwrap()
                .extend(done.into_iter().map(|(item, ())| item));
            Ok(())
        }
    }

    /// Delivers one batch of `queue` under a 2-second lease; panics if the
    /// stalled attempt is never aborted.
    async fn one_batch(queue: Arc<Stalled>) {
        let lease = Lease { secs: 2, batch: 8 };
        let worker = Worker::new(queue, Clock::system(), lease, Arc::new(Notify::new()));
        let handled = tokio::time::timeout(Duration::from_secs(30), worker.deliver_due())
            .await
            .expect("the stalled attempt was aborted");
        assert_eq!(handled.expect("store reachable"), 2);
    }

    #[tokio::test]
    async fn an_attempt_is_aborted_when_its_lease_cannot_be_renewed() {
        let queue = Stalled::new(|_| Err(StoreError::Unavailable("gone".into())));
        one_batch(queue.clone()).await;
        assert!(*queue.renewals.lock().unwrap() >= 1, "it tried to renew");
        assert_eq!(
            *queue.recorded.lock().unwrap(),
            [2],
            "the aborted attempt has no outcome"
        );
    }

    #[tokio::test]
    async fn an_attempt_whose_lease_was_taken_is_aborted_at_once() {
        // The lease holds only the finished item: the stalled one was claimed
        // by someone else.
        let queue = Stalled::new(|_| Ok(vec![2]));
        one_batch(queue.clone()).await;
        assert_eq!(*queue.recorded.lock().unwrap(), [2]);
    }

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
