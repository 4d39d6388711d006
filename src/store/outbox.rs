//! The outbox's SQL: recording delivery outcomes, and what operators see and
//! do (list, count, requeue). Portable like `portable.rs`; [`impl_store!`]
//! instantiates it for each backend, so the Postgres twin gets it for free.
//!
//! [`impl_store!`]: super::portable::impl_store

use super::{MailStatus, OutboxEntry, StoreError, StoreResult};

/// The columns [`outbox_entry`] reads, in order.
pub(crate) const OUTBOX_ENTRY_COLUMNS: &str = "id, kind, recipient, subject, status, attempts, \
     last_error, created_at, next_attempt_at, sent_at, expires_at";

pub(crate) type OutboxEntryRow = (
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<String>,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
);

/// Builds an [`OutboxEntry`] from the [`OUTBOX_ENTRY_COLUMNS`] tuple.
pub(crate) fn outbox_entry(row: OutboxEntryRow) -> StoreResult<OutboxEntry> {
    let (
        id,
        kind,
        recipient,
        subject,
        status,
        attempts,
        last_error,
        created_at,
        next_attempt_at,
        sent_at,
        expires_at,
    ) = row;
    let status = MailStatus::parse(&status)
        .ok_or_else(|| StoreError::Corrupt(format!("outbox {id}: status `{status}`")))?;
    Ok(OutboxEntry {
        id,
        kind,
        recipient,
        subject,
        status,
        attempts,
        last_error,
        created_at,
        next_attempt_at,
        sent_at,
        expires_at,
    })
}

/// Inherent methods with the outbox SQL, called by the `Store` impl.
macro_rules! impl_outbox_sql {
    ($store:ty) => {
        impl $store {
            pub(crate) async fn finish_mails_sql(&self, outcomes: &[(String, MailResult)], now: i64) -> StoreResult<()> {
                // Sent and expired mails need nothing per row, so each kind is one
                // `id IN (…)` statement; retries and failures carry their own error and
                // time and keep one statement each (rare under load). With more than
                // one statement they share a transaction: one commit, one writer turn.
                let sent: Vec<&str> = outcomes.iter().filter(|(_, r)| matches!(r, MailResult::Sent)).map(|(id, _)| id.as_str()).collect();
                let expired: Vec<&str> = outcomes.iter().filter(|(_, r)| matches!(r, MailResult::Expired)).map(|(id, _)| id.as_str()).collect();
                let singles: Vec<&(String, MailResult)> =
                    outcomes.iter().filter(|(_, r)| !matches!(r, MailResult::Sent | MailResult::Expired)).collect();
                let statements = usize::from(!sent.is_empty()) + usize::from(!expired.is_empty()) + singles.len();
                if statements == 0 {
                    return Ok(());
                }
                let in_list = |first: usize, count: usize| {
                    (first..first + count).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
                };
                let sent_sql = format!(
                    "UPDATE outbox SET status = 'sent', sent_at = $1, attempts = attempts + 1, sealed_body = '', last_error = NULL \
                     WHERE status = 'queued' AND id IN ({})",
                    in_list(2, sent.len())
                );
                let expired_sql = format!(
                    "UPDATE outbox SET status = 'expired', sealed_body = '' WHERE status = 'queued' AND id IN ({})",
                    in_list(1, expired.len())
                );
                let mut queries = Vec::with_capacity(statements);
                if !sent.is_empty() {
                    let mut query = sqlx::query(&sent_sql).bind(now);
                    for id in &sent {
                        query = query.bind(*id);
                    }
                    queries.push(query);
                }
                if !expired.is_empty() {
                    let mut query = sqlx::query(&expired_sql);
                    for id in &expired {
                        query = query.bind(*id);
                    }
                    queries.push(query);
                }
                for (id, result) in singles {
                    queries.push(match result {
                        MailResult::Retry { next_attempt_at, error } => sqlx::query(
                            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $2, last_error = $3 WHERE id = $1 AND status = 'queued'",
                        )
                        .bind(id)
                        .bind(*next_attempt_at)
                        .bind(error),
                        MailResult::Failed { error } => sqlx::query(
                            "UPDATE outbox SET status = 'failed', attempts = attempts + 1, last_error = $2 WHERE id = $1 AND status = 'queued'",
                        )
                        .bind(id)
                        .bind(error),
                        MailResult::Sent | MailResult::Expired => continue,
                    });
                }
                if queries.len() == 1 {
                    for query in queries {
                        query.execute(&mut *self.write().await?).await?;
                    }
                    return Ok(());
                }
                let mut writer = self.write().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                for query in queries {
                    query.execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            pub(crate) async fn outbox_page_sql(&self, query: OutboxQuery<'_>) -> StoreResult<Vec<OutboxEntry>> {
                // Four fixed texts rather than `$1 IS NULL OR …`, so that each can use
                // the (status, id) index or the primary key.
                let mut sql = format!("SELECT {} FROM outbox", $crate::store::outbox::OUTBOX_ENTRY_COLUMNS);
                sql.push_str(match (query.status.is_some(), query.before.is_some()) {
                    (false, false) => " ORDER BY id DESC LIMIT $1",
                    (true, false) => " WHERE status = $2 ORDER BY id DESC LIMIT $1",
                    (false, true) => " WHERE id < $2 ORDER BY id DESC LIMIT $1",
                    (true, true) => " WHERE status = $2 AND id < $3 ORDER BY id DESC LIMIT $1",
                });
                let mut select = sqlx::query_as::<_, $crate::store::outbox::OutboxEntryRow>(&sql).bind(query.limit);
                if let Some(status) = query.status {
                    select = select.bind(status.as_str());
                }
                if let Some(before) = query.before {
                    select = select.bind(before);
                }
                select
                    .fetch_all(&self.reader)
                    .await?
                    .into_iter()
                    .map($crate::store::outbox::outbox_entry)
                    .collect()
            }

            pub(crate) async fn outbox_counts_sql(&self) -> StoreResult<OutboxCounts> {
                let rows: Vec<(String, i64)> = sqlx::query_as("SELECT status, COUNT(*) FROM outbox GROUP BY status")
                    .fetch_all(&self.reader)
                    .await?;
                let mut counts = OutboxCounts::default();
                for (status, count) in rows {
                    match MailStatus::parse(&status) {
                        Some(MailStatus::Queued) => counts.queued = count,
                        Some(MailStatus::Sent) => counts.sent = count,
                        Some(MailStatus::Failed) => counts.failed = count,
                        Some(MailStatus::Expired) => counts.expired = count,
                        None => return Err(StoreError::Corrupt(format!("outbox status `{status}`"))),
                    }
                }
                Ok(counts)
            }

            pub(crate) async fn requeue_failed_mail_sql(&self, id: &str, audit: AuditEntry, now: i64) -> StoreResult<RequeueOutcome> {
                let mut writer = self.write().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                let requeued: Option<$crate::store::outbox::OutboxEntryRow> = sqlx::query_as(&format!(
                    "UPDATE outbox SET status = 'queued', attempts = 0, next_attempt_at = $2 \
                     WHERE id = $1 AND status = 'failed' RETURNING {}",
                    $crate::store::outbox::OUTBOX_ENTRY_COLUMNS
                ))
                .bind(id)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = requeued else {
                    let status: Option<(String,)> = sqlx::query_as("SELECT status FROM outbox WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    return Ok(match status {
                        None => RequeueOutcome::NotFound,
                        Some((status,)) => RequeueOutcome::NotFailed(
                            MailStatus::parse(&status)
                                .ok_or_else(|| StoreError::Corrupt(format!("outbox {id}: status `{status}`")))?,
                        ),
                    });
                };
                $crate::store::portable::insert_audit!(tx, audit, now);
                tx.commit().await?;
                Ok(RequeueOutcome::Requeued($crate::store::outbox::outbox_entry(row)?))
            }

        }
    };
}
pub(crate) use impl_outbox_sql;
