//! Housekeeping: deleting what has served its purpose. The rules of what may
//! go, and after how long, are all here, one per kind of row ([`rule`]); the
//! job that runs them on a schedule is `src/housekeeping.rs`.
//!
//! A round works through each kind in bounded batches: the keys of up to
//! `batch` prunable rows are read on a reader (no write lock held while the
//! table is scanned), then deleted by key in one short transaction that checks
//! the rule again. On SQLite's single writer, a batch therefore holds the
//! writer for a handful of primary-key deletes, and requests queue behind it
//! for no longer than that.
//!
//! On Postgres several instances share the database; a round runs only where
//! [`Backend::try_lock_housekeeping`] succeeds, and the others skip that round
//! rather than wait for it.

use super::backend::{Backend, SqlStore};
use super::schema::placeholders;
use super::sql::query;
use super::{STAGED_UPLOAD_TTL_SECS, StoreResult};

const DAY: i64 = 86_400;

/// What housekeeping removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Prunable {
    /// Sign-in links used up or expired.
    Links,
    /// Refresh tokens expired or revoked (the retention of sessions ago).
    RefreshTokens,
    /// Ended sessions (revoked, or their last refresh token expired), with
    /// their refresh tokens.
    Sessions,
    /// Mail delivered, or expired before it could be.
    SentMail,
    /// Mail given up on (`failed`), which an admin could still requeue.
    DeadLetters,
    /// Rate-limit windows long closed.
    RateLimits,
    /// Webhook events whose deliveries are all finished, with the deliveries.
    WebhookHistory,
    /// Roster uploads staged in the console and never imported.
    StagedUploads,
    /// Audit rows, only when a retention is configured.
    AuditLog,
}

impl Prunable {
    pub const ALL: [Prunable; 9] = [
        Prunable::Links,
        Prunable::RefreshTokens,
        Prunable::Sessions,
        Prunable::SentMail,
        Prunable::DeadLetters,
        Prunable::RateLimits,
        Prunable::WebhookHistory,
        Prunable::StagedUploads,
        Prunable::AuditLog,
    ];

    /// Its name in logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Prunable::Links => "links",
            Prunable::RefreshTokens => "refresh_tokens",
            Prunable::Sessions => "sessions",
            Prunable::SentMail => "sent_mail",
            Prunable::DeadLetters => "dead_letters",
            Prunable::RateLimits => "rate_limits",
            Prunable::WebhookHistory => "webhook_history",
            Prunable::StagedUploads => "staged_uploads",
            Prunable::AuditLog => "audit_log",
        }
    }
}

/// How long each kind of row is kept once it has served its purpose, in
/// seconds. The defaults are the product's; only the audit log's is a setting
/// (`GATEHOUSE_AUDIT_RETENTION_DAYS`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    /// After a link expired or was used: the confirm page can still tell
    /// "already used" from "unknown" for a day.
    pub links: i64,
    /// After a session was revoked or its last refresh token expired, and
    /// after a refresh token expired or was revoked: a replayed token is
    /// still recognised (and audited, and ends its session) for a week.
    pub sessions: i64,
    /// After a mail was sent (or expired unsent): admins see a week of
    /// deliveries in the outbox.
    pub sent_mail: i64,
    /// After a mail's last failed attempt: a month for an admin to notice and
    /// requeue it.
    pub dead_letters: i64,
    /// After a rate-limit window started (windows are minutes long).
    pub rate_limits: i64,
    /// After a webhook event was written (once its deliveries are finished):
    /// admins look back on a month of deliveries.
    pub webhook_history: i64,
    /// After a roster upload was staged.
    pub staged_uploads: i64,
    /// After an audit row was written; `None` keeps the log forever.
    pub audit_log: Option<i64>,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            links: DAY,
            sessions: 7 * DAY,
            sent_mail: 7 * DAY,
            dead_letters: 30 * DAY,
            rate_limits: DAY,
            webhook_history: 30 * DAY,
            staged_uploads: STAGED_UPLOAD_TTL_SECS,
            audit_log: None,
        }
    }
}

impl Retention {
    /// The defaults, with the audit log kept `days` days (`None`: forever).
    pub fn with_audit_days(days: Option<u32>) -> Self {
        Self {
            audit_log: days.map(|days| i64::from(days) * DAY),
            ..Self::default()
        }
    }

    /// How long `kind` is kept; `None` when it is never pruned.
    fn keep(&self, kind: Prunable) -> Option<i64> {
        Some(match kind {
            Prunable::Links => self.links,
            // Kept as long as ended sessions, whose tokens they mostly are.
            Prunable::RefreshTokens => self.sessions,
            Prunable::Sessions => self.sessions,
            Prunable::SentMail => self.sent_mail,
            Prunable::DeadLetters => self.dead_letters,
            Prunable::RateLimits => self.rate_limits,
            Prunable::WebhookHistory => self.webhook_history,
            Prunable::StagedUploads => self.staged_uploads,
            Prunable::AuditLog => self.audit_log?,
        })
    }
}

/// How many rows of each kind a round deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    pruned: Vec<(Prunable, u64)>,
}

impl PruneReport {
    /// Rows of `kind` deleted.
    pub fn get(&self, kind: Prunable) -> u64 {
        self.pruned
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| *n)
    }

    pub fn total(&self) -> u64 {
        self.pruned.iter().map(|(_, n)| n).sum()
    }

    /// Every kind with its count, in [`Prunable::ALL`]'s order.
    pub fn counts(&self) -> impl Iterator<Item = (Prunable, u64)> + '_ {
        Prunable::ALL.into_iter().map(|kind| (kind, self.get(kind)))
    }
}

/// How a round went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PruneOutcome {
    /// This instance ran the round.
    Pruned(PruneReport),
    /// Another instance is running one; this one did nothing.
    Skipped,
}

/// One kind's rule: which rows of `table` have served their purpose.
struct Rule {
    table: &'static str,
    /// The primary key (a single text column).
    key: &'static str,
    /// The rows that may go, `$1` being the cutoff (now minus the retention).
    prunable: &'static str,
    /// `(table, column)`: rows elsewhere that refer to these and go with them.
    dependents: Option<(&'static str, &'static str)>,
}

/// The business rule: what of `kind` may be deleted once it is older than the
/// cutoff. Everything else in this module only runs these.
fn rule(kind: Prunable) -> Rule {
    let simple = |table, key, prunable| Rule {
        table,
        key,
        prunable,
        dependents: None,
    };
    match kind {
        Prunable::Links => simple(
            "magic_links",
            "token_hash",
            "expires_at < $1 OR consumed_at < $1",
        ),
        // Until then, a replay of one rotated away still ends its session.
        // They go before their sessions (`ALL`'s order), in batches of their
        // own: a session refreshed every few minutes for weeks has thousands.
        Prunable::RefreshTokens => {
            simple("refresh_tokens", "id", "expires_at < $1 OR revoked_at < $1")
        }
        // Ended: revoked, or no refresh token of it can be exchanged any more,
        // which ends its access tokens within their lifetime. Its tokens have
        // gone by the rule above; any left go with it. (A browser's
        // cookie session rides on the same session, so it lasts at most the
        // refresh-token lifetime plus this retention.)
        Prunable::Sessions => Rule {
            table: "sessions",
            key: "id",
            prunable: "revoked_at < $1 OR (revoked_at IS NULL AND created_at < $1 \
                       AND NOT EXISTS (SELECT 1 FROM refresh_tokens r \
                                       WHERE r.family_id = sessions.id AND r.expires_at >= $1))",
            dependents: Some(("refresh_tokens", "family_id")),
        },
        Prunable::SentMail => simple(
            "outbox",
            "id",
            "(status = 'sent' AND sent_at < $1) OR (status = 'expired' AND created_at < $1)",
        ),
        // `next_attempt_at` of a failed mail is its last attempt's (a requeue
        // moves it to the requeue).
        Prunable::DeadLetters => {
            simple("outbox", "id", "status = 'failed' AND next_attempt_at < $1")
        }
        Prunable::RateLimits => simple("rate_limits", "bucket", "window_start < $1"),
        Prunable::WebhookHistory => Rule {
            table: "webhook_events",
            key: "id",
            prunable: "created_at < $1 AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d \
                       WHERE d.event_id = webhook_events.id AND d.status = 'pending')",
            dependents: Some(("webhook_deliveries", "event_id")),
        },
        Prunable::StagedUploads => simple("staged_uploads", "id", "created_at < $1"),
        Prunable::AuditLog => simple("audit_log", "id", "at < $1"),
    }
}

#[async_trait::async_trait]
pub trait HousekeepingStore {
    /// One housekeeping round at `now`: deletes every row that has served its
    /// purpose under `retention`, at most `batch` rows per transaction.
    /// [`PruneOutcome::Skipped`] when another instance is running a round.
    async fn prune(&self, now: i64, retention: &Retention, batch: u32)
    -> StoreResult<PruneOutcome>;
}

#[async_trait::async_trait]
impl<B: Backend> HousekeepingStore for SqlStore<B> {
    async fn prune(
        &self,
        now: i64,
        retention: &Retention,
        batch: u32,
    ) -> StoreResult<PruneOutcome> {
        let Some(lock) = self.backend.try_lock_housekeeping().await? else {
            return Ok(PruneOutcome::Skipped);
        };
        let mut report = PruneReport::default();
        for kind in Prunable::ALL {
            let Some(keep) = retention.keep(kind) else {
                continue;
            };
            let pruned = self
                .prune_in_batches(&rule(kind), now - keep, batch.max(1))
                .await?;
            report.pruned.push((kind, pruned));
        }
        B::unlock_housekeeping(lock).await?;
        Ok(PruneOutcome::Pruned(report))
    }
}

impl<B: Backend> SqlStore<B> {
    /// Deletes the rows `rule` selects at `cutoff`, `batch` at a time, until
    /// none is left; how many.
    async fn prune_in_batches(&self, rule: &Rule, cutoff: i64, batch: u32) -> StoreResult<u64> {
        let Rule {
            table,
            key,
            prunable,
            dependents,
        } = rule;
        let select = format!("SELECT {key} FROM {table} WHERE {prunable} LIMIT $2");
        let mut pruned = 0;
        loop {
            let keys: Vec<(String,)> = query(&select)
                .bind(cutoff)
                .bind(i64::from(batch))
                .fetch_all(&mut self.backend.reader())
                .await?;
            if keys.is_empty() {
                return Ok(pruned);
            }
            // The rule is checked again as the rows are deleted: a reader may
            // be a moment behind the writer.
            let listed = format!(
                "{key} IN ({}) AND ({prunable})",
                placeholders(2, keys.len())
            );
            let mut statements = Vec::new();
            if let Some((dependent, column)) = dependents {
                statements.push(format!(
                    "DELETE FROM {dependent} WHERE {column} IN (SELECT {key} FROM {table} WHERE {listed})"
                ));
            }
            statements.push(format!("DELETE FROM {table} WHERE {listed}"));
            let mut tx = self.backend.begin().await?;
            let mut deleted = 0;
            for statement in &statements {
                let delete = keys
                    .iter()
                    .fold(query(statement).bind(cutoff), |q, (k,)| q.bind(k.as_str()));
                deleted = delete.execute(&mut *tx).await?;
            }
            B::commit(tx).await?;
            pruned += deleted;
            if keys.len() < batch as usize || deleted == 0 {
                return Ok(pruned);
            }
        }
    }
}
