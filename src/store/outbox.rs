//! The outbox: mail written in the same transaction as the token it carries,
//! claimed by delivery workers under a lease held by a [`LeaseToken`], and
//! what operators see and do (list, count, requeue).
//!
//! While a mail is leased, `next_attempt_at` is when its lease ends and
//! `lease_token` says whose it is; renewing moves the first, a claim after the
//! lease ended overwrites the second, and an outcome is written only where the
//! second still matches (see [`crate::delivery`]).

use std::sync::LazyLock;

use super::audit::insert_audit;
use super::backend::{Backend, SqlStore};
use super::schema::placeholders;
use super::sql::{Query, query};
use super::{
    AuditEntry, LeaseToken, MailResult, MailStatus, OutboxCounts, OutboxEntry, OutboxMail,
    OutboxQuery, RequeueOutcome, StoreError, StoreResult,
};

/// The columns a new mail is inserted with, in the order of [`super::NewMail`]
/// (status and due time follow from its creation).
pub const OUTBOX_INSERT_COLUMNS: &str =
    "id, kind, recipient, subject, sealed_body, status, created_at, next_attempt_at, expires_at";

/// The columns of [`OutboxMail`], what a worker needs to deliver.
const OUTBOX_MAIL_COLUMNS: &str =
    "id, kind, recipient, subject, sealed_body, attempts, created_at, expires_at";

/// The columns of [`OutboxEntryRow`]: everything but the (sealed) body.
const OUTBOX_ENTRY_COLUMNS: &str = "id, kind, recipient, subject, status, attempts, \
     last_error, created_at, next_attempt_at, sent_at, expires_at";

#[derive(sqlx::FromRow)]
struct OutboxEntryRow {
    id: String,
    kind: String,
    recipient: String,
    subject: String,
    status: String,
    attempts: i64,
    last_error: Option<String>,
    created_at: i64,
    next_attempt_at: i64,
    sent_at: Option<i64>,
    expires_at: Option<i64>,
}

impl TryFrom<OutboxEntryRow> for OutboxEntry {
    type Error = StoreError;

    fn try_from(row: OutboxEntryRow) -> StoreResult<Self> {
        Ok(OutboxEntry {
            status: mail_status(&row.id, &row.status)?,
            id: row.id,
            kind: row.kind,
            recipient: row.recipient,
            subject: row.subject,
            attempts: row.attempts,
            last_error: row.last_error,
            created_at: row.created_at,
            next_attempt_at: row.next_attempt_at,
            sent_at: row.sent_at,
            expires_at: row.expires_at,
        })
    }
}

fn mail_status(id: &str, stored: &str) -> StoreResult<MailStatus> {
    MailStatus::parse(stored)
        .ok_or_else(|| StoreError::Corrupt(format!("outbox {id}: status `{stored}`")))
}

#[async_trait::async_trait]
pub trait OutboxStore {
    /// Leases up to `limit` due mails to `lease` until `now + lease_secs`: a
    /// worker that dies while holding them stops renewing, and they come due
    /// again when the lease ends, so nothing is lost. A mail whose earlier lease
    /// ended is due like any other; claiming it takes it from that lease.
    async fn claim_due_mail(
        &self,
        lease: &LeaseToken,
        now: i64,
        lease_secs: i64,
        limit: i64,
    ) -> StoreResult<Vec<OutboxMail>>;

    /// Extends to `until` the lease of every mail `lease` still holds, and
    /// returns their ids. A mail recorded since, or claimed by another lease
    /// after this one ran out, is not among them.
    async fn renew_mail_lease(&self, lease: &LeaseToken, until: i64) -> StoreResult<Vec<String>>;

    /// Records the outcome of a delivery attempt made under `lease`, and ends
    /// the lease. Only a `queued` mail that `lease` still holds changes: a
    /// final state is never overwritten, and a late outcome from a claimer
    /// whose lease someone else has since taken changes nothing.
    async fn finish_mail(
        &self,
        lease: &LeaseToken,
        id: &str,
        result: MailResult,
        now: i64,
    ) -> StoreResult<()> {
        self.finish_mails(lease, &[(id.to_owned(), result)], now)
            .await
    }

    /// [`OutboxStore::finish_mail`] for several mails (`(id, outcome)` pairs) in
    /// as few statements as the outcomes allow, so the worker takes SQLite's
    /// single writer once per batch rather than once per mail.
    async fn finish_mails(
        &self,
        lease: &LeaseToken,
        outcomes: &[(String, MailResult)],
        now: i64,
    ) -> StoreResult<()>;

    /// A page of the outbox, newest first, without bodies.
    async fn outbox_page(&self, query: OutboxQuery<'_>) -> StoreResult<Vec<OutboxEntry>>;

    /// How many mails are in each state.
    async fn outbox_counts(&self) -> StoreResult<OutboxCounts>;

    /// Sends a `failed` mail back to `queued`, due at `now`, with a fresh budget
    /// of attempts; writes `audit` in the same transaction.
    async fn requeue_failed_mail(
        &self,
        id: &str,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<RequeueOutcome>;
}

#[async_trait::async_trait]
impl<B: Backend> OutboxStore for SqlStore<B> {
    async fn claim_due_mail(
        &self,
        lease: &LeaseToken,
        now: i64,
        lease_secs: i64,
        limit: i64,
    ) -> StoreResult<Vec<OutboxMail>> {
        // Once per worker poll: built each time, so that the backend's lock
        // clause can take its place in the text.
        let sql = format!(
            "UPDATE outbox SET next_attempt_at = $2, lease_token = $4 WHERE id IN ( \
               SELECT id FROM outbox WHERE status = 'queued' AND next_attempt_at <= $1 \
               ORDER BY next_attempt_at LIMIT $3 {lock}) \
             RETURNING {OUTBOX_MAIL_COLUMNS}",
            lock = B::CLAIM_LOCK
        );
        query(&sql)
            .bind(now)
            .bind(now + lease_secs)
            .bind(limit)
            .bind(lease.as_str())
            .fetch_all(&mut *self.backend.write().await?)
            .await
    }

    async fn renew_mail_lease(&self, lease: &LeaseToken, until: i64) -> StoreResult<Vec<String>> {
        let held: Vec<(String,)> = query(
            "UPDATE outbox SET next_attempt_at = $2 \
             WHERE lease_token = $1 AND status = 'queued' RETURNING id",
        )
        .bind(lease.as_str())
        .bind(until)
        .fetch_all(&mut *self.backend.write().await?)
        .await?;
        Ok(held.into_iter().map(|(id,)| id).collect())
    }

    async fn finish_mails(
        &self,
        lease: &LeaseToken,
        outcomes: &[(String, MailResult)],
        now: i64,
    ) -> StoreResult<()> {
        let mut statements = finish_statements(lease, outcomes, now);
        if statements.len() <= 1 {
            if let Some(single) = statements.pop() {
                single.execute(&mut *self.backend.write().await?).await?;
            }
            return Ok(());
        }
        // Several statements share a transaction: one commit, one writer turn.
        let mut tx = self.backend.begin().await?;
        for statement in statements {
            statement.execute(&mut *tx).await?;
        }
        B::commit(tx).await
    }

    async fn outbox_page(&self, page: OutboxQuery<'_>) -> StoreResult<Vec<OutboxEntry>> {
        // Four fixed texts rather than `$1 IS NULL OR …`, so that each can use
        // the (status, id) index or the primary key.
        let filter = match (page.status.is_some(), page.before.is_some()) {
            (false, false) => "",
            (true, false) => " WHERE status = $2",
            (false, true) => " WHERE id < $2",
            (true, true) => " WHERE status = $2 AND id < $3",
        };
        let sql =
            format!("SELECT {OUTBOX_ENTRY_COLUMNS} FROM outbox{filter} ORDER BY id DESC LIMIT $1");
        let mut select = query(&sql).bind(page.limit);
        if let Some(status) = page.status {
            select = select.bind(status.as_str());
        }
        if let Some(before) = page.before {
            select = select.bind(before);
        }
        let rows: Vec<OutboxEntryRow> = select.fetch_all(&mut self.backend.reader()).await?;
        rows.into_iter().map(OutboxEntry::try_from).collect()
    }

    async fn outbox_counts(&self) -> StoreResult<OutboxCounts> {
        let rows: Vec<(String, i64)> = query("SELECT status, COUNT(*) FROM outbox GROUP BY status")
            .fetch_all(&mut self.backend.reader())
            .await?;
        let mut counts = OutboxCounts::default();
        for (status, count) in rows {
            match mail_status("counts", &status)? {
                MailStatus::Queued => counts.queued = count,
                MailStatus::Sent => counts.sent = count,
                MailStatus::Failed => counts.failed = count,
                MailStatus::Expired => counts.expired = count,
            }
        }
        Ok(counts)
    }

    async fn requeue_failed_mail(
        &self,
        id: &str,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<RequeueOutcome> {
        static REQUEUE: LazyLock<String> = LazyLock::new(|| {
            format!(
                "UPDATE outbox SET status = 'queued', attempts = 0, next_attempt_at = $2, \
                   lease_token = NULL \
                 WHERE id = $1 AND status = 'failed' RETURNING {OUTBOX_ENTRY_COLUMNS}"
            )
        });
        let mut tx = self.backend.begin().await?;
        let requeued: Option<OutboxEntryRow> = query(&REQUEUE)
            .bind(id)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = requeued else {
            let status: Option<(String,)> = query("SELECT status FROM outbox WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            return Ok(match status {
                None => RequeueOutcome::NotFound,
                Some((status,)) => RequeueOutcome::NotFailed(mail_status(id, &status)?),
            });
        };
        insert_audit(&mut *tx, audit, now).await?;
        B::commit(tx).await?;
        Ok(RequeueOutcome::Requeued(row.try_into()?))
    }
}

/// The statements that record `outcomes` of attempts made under `lease`, each
/// ending the lease. Sent and expired mails need nothing per row, so each kind
/// is one `id IN (…)` statement; retries and failures carry their own error and
/// time and take one statement each (rare under load).
fn finish_statements<'a>(
    lease: &'a LeaseToken,
    outcomes: &'a [(String, MailResult)],
    now: i64,
) -> Vec<Query<'a>> {
    let ids = |wanted: fn(&MailResult) -> bool| -> Vec<&str> {
        outcomes
            .iter()
            .filter(|(_, result)| wanted(result))
            .map(|(id, _)| id.as_str())
            .collect()
    };
    let sent = ids(|r| matches!(r, MailResult::Sent));
    let expired = ids(|r| matches!(r, MailResult::Expired));
    let mut statements = Vec::new();
    if !sent.is_empty() {
        let sql = format!(
            "UPDATE outbox SET status = 'sent', sent_at = $1, attempts = attempts + 1, \
               sealed_body = '', last_error = NULL, lease_token = NULL \
             WHERE status = 'queued' AND lease_token = $2 AND id IN ({})",
            placeholders(3, sent.len())
        );
        let statement = sent
            .iter()
            .fold(Query::owned(sql).bind(now).bind(lease.as_str()), |q, id| {
                q.bind(*id)
            });
        statements.push(statement);
    }
    if !expired.is_empty() {
        let sql = format!(
            "UPDATE outbox SET status = 'expired', sealed_body = '', lease_token = NULL \
             WHERE status = 'queued' AND lease_token = $1 AND id IN ({})",
            placeholders(2, expired.len())
        );
        statements.push(
            expired
                .iter()
                .fold(Query::owned(sql).bind(lease.as_str()), |q, id| q.bind(*id)),
        );
    }
    for (id, result) in outcomes {
        match result {
            MailResult::Retry {
                next_attempt_at,
                error,
            } => statements.push(
                query(
                    "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $2, \
                       last_error = $3, lease_token = NULL \
                     WHERE id = $1 AND status = 'queued' AND lease_token = $4",
                )
                .bind(id)
                .bind(*next_attempt_at)
                .bind(error)
                .bind(lease.as_str()),
            ),
            MailResult::Failed { error } => statements.push(
                query(
                    "UPDATE outbox SET status = 'failed', attempts = attempts + 1, \
                       last_error = $2, lease_token = NULL \
                     WHERE id = $1 AND status = 'queued' AND lease_token = $3",
                )
                .bind(id)
                .bind(error)
                .bind(lease.as_str()),
            ),
            MailResult::Sent | MailResult::Expired => {}
        }
    }
    statements
}
