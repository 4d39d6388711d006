//! The housekeeping job: every ten minutes, one round deletes what has served
//! its purpose (ended sessions, used and expired links, sent mail, old
//! rate-limit windows, finished webhook history, and the audit log past its
//! configured retention). What may go, and after how long, is decided in
//! `store/housekeeping.rs`; this file only runs it, logs what went and counts
//! it in the metrics.
//!
//! The schedule runs on the application's [`Clock`]: a round is due every
//! [`EVERY`] of clock time, so a test that moves the clock a week ahead sees a
//! round run at once, as it would have in that week.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::{DynStore, PruneOutcome, Retention, StoreResult};

/// How often a round runs (the first one this long after start-up).
pub const EVERY: Duration = Duration::from_secs(600);

/// Rows deleted per transaction: small enough that SQLite's single writer is
/// held for milliseconds, large enough that a backlog goes in few round trips.
pub const BATCH: u32 = 500;

pub struct Housekeeping {
    store: DynStore,
    clock: Clock,
    retention: Retention,
    metrics: Arc<Metrics>,
}

impl Housekeeping {
    pub fn new(store: DynStore, clock: Clock, retention: Retention, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            clock,
            retention,
            metrics,
        }
    }

    /// Runs one round now: logs and counts what it deleted, or that another
    /// instance had the round.
    pub async fn round(&self) -> StoreResult<PruneOutcome> {
        let outcome = self
            .store
            .prune(self.clock.now(), &self.retention, BATCH)
            .await;
        self.metrics.housekeeping().round(&outcome);
        match &outcome {
            Ok(PruneOutcome::Pruned(report)) if report.total() > 0 => {
                let summary: Vec<String> = report
                    .counts()
                    .filter(|(_, rows)| *rows > 0)
                    .map(|(kind, rows)| format!("{}={rows}", kind.name()))
                    .collect();
                tracing::info!(
                    total = report.total(),
                    pruned = %summary.join(" "),
                    "housekeeping pruned"
                );
            }
            Ok(PruneOutcome::Pruned(_)) => tracing::debug!("housekeeping found nothing to prune"),
            Ok(PruneOutcome::Skipped) => {
                tracing::debug!("housekeeping skipped: another instance is running it")
            }
            Err(error) => tracing::warn!(%error, "housekeeping failed; it runs again later"),
        }
        outcome
    }

    /// Runs a round every [`EVERY`] of clock time until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let every = i64::try_from(EVERY.as_secs()).unwrap_or(i64::MAX);
        let mut moves = self.clock.moves();
        let mut due = self.clock.now().saturating_add(every);
        while !*stop.borrow() {
            let wait = u64::try_from(due - self.clock.now()).unwrap_or(0);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(wait)) => {}
                // The clock held by the application is never dropped.
                _ = moves.changed() => {}
                changed = stop.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
            if !*stop.borrow() && self.clock.now() >= due {
                let _ = self.round().await;
                due = self.clock.now().saturating_add(every);
            }
        }
    }
}
