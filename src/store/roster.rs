//! The allowlist as admins manage it: streaming imports written in chunks
//! inside one transaction, keyset lists, and withdrawing an upload.

use super::audit::insert_audit;
use super::backend::{Backend, SqlStore};
use super::sql::query;
use super::webhooks::record_event;
use super::{AuditEntry, EligibleEntry, StoreResult, UpsertCounts, schema};
use crate::domain::{Email, EventType};

/// Entries an importer hands the store at a time. Postgres writes a chunk as
/// one `UNNEST` statement (two array parameters, whatever the size), so bigger
/// chunks mean fewer round trips; SQLite splits it into statements of
/// [`Backend::IMPORT_ROWS_PER_STATEMENT`].
pub const IMPORT_CHUNK: usize = 5_000;

/// What an importer sends the store, in order: any number of `Rows` (and at
/// most one `Rename`), then one `Finish`. A stream that ends without `Finish`
/// (the upload failed) is rolled back.
#[derive(Debug)]
pub enum ImportChunk {
    Rows(Vec<EligibleEntry>),
    /// The upload named its batch only after rows were sent (a JSON body may
    /// list `batch_id` after its addresses): the entries this import added so
    /// far move from [`RosterImport::batch_id`] to this id, and the rest of the
    /// import is recorded under it.
    Rename(String),
    Finish(ImportTotals),
}

/// The parser's own figures, recorded on the batch and in the audit row.
#[derive(Debug)]
pub struct ImportTotals {
    pub rows: u64,
    pub duplicates: u64,
    pub invalid: u64,
    /// Written with the store's counts added to its details.
    pub audit: AuditEntry,
}

#[derive(Debug, Clone)]
pub struct RosterImport {
    pub batch_id: String,
    pub source: &'static str,
    pub added_by: Option<String>,
    /// Runs every statement, then rolls back: the counts are exact, nothing is kept.
    pub dry_run: bool,
    pub now: i64,
}

#[derive(Debug, Clone, Default)]
pub struct EligibleFilter {
    pub batch_id: Option<String>,
    pub q: Option<String>,
    pub claimed: Option<bool>,
    /// Only addresses after this one (the list is ordered by address).
    pub after: Option<String>,
    pub limit: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EligibleRow {
    pub email: String,
    pub batch_id: Option<String>,
    pub roles: String,
    pub added_by: Option<String>,
    pub created_at: i64,
    pub claimed_by: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BatchRow {
    pub id: String,
    pub source: String,
    pub created_by: Option<String>,
    pub created_at: i64,
    pub rows: i64,
    pub added: i64,
    pub updated: i64,
    pub duplicates: i64,
    pub invalid: i64,
    pub withdrawn: i64,
    pub withdrawn_at: Option<i64>,
    /// Entries of this batch on the allowlist now.
    pub remaining: i64,
}

#[async_trait::async_trait]
pub trait RosterStore {
    /// Writes the chunks as one batch in one transaction. `None` when the
    /// stream ended without [`ImportChunk::Finish`] (nothing was written).
    async fn import_roster(
        &self,
        import: RosterImport,
        chunks: tokio::sync::mpsc::Receiver<ImportChunk>,
    ) -> StoreResult<Option<UpsertCounts>>;

    async fn list_eligible(&self, filter: &EligibleFilter) -> StoreResult<Vec<EligibleRow>>;

    /// Removes one address; false when it was not listed.
    async fn remove_eligible(
        &self,
        email: &Email,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<bool>;

    /// Batches newest first, after the batch `before`.
    async fn list_batches(&self, before: Option<&str>, limit: i64) -> StoreResult<Vec<BatchRow>>;

    /// Removes the batch's unclaimed entries; `None` when the batch is unknown.
    async fn withdraw_batch(
        &self,
        id: &str,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<Option<u64>>;
}

#[async_trait::async_trait]
impl<B: Backend> RosterStore for SqlStore<B> {
    async fn import_roster(
        &self,
        mut import: RosterImport,
        mut chunks: tokio::sync::mpsc::Receiver<ImportChunk>,
    ) -> StoreResult<Option<UpsertCounts>> {
        let mut tx = self.backend.begin().await?;
        B::lock_roster(&mut *tx).await?;
        let mut counts = UpsertCounts::default();
        let totals = loop {
            match chunks.recv().await {
                Some(ImportChunk::Rows(entries)) => {
                    for statement in entries.chunks(B::IMPORT_ROWS_PER_STATEMENT) {
                        counts += B::write_import_chunk(&mut *tx, statement, &import).await?;
                    }
                }
                Some(ImportChunk::Rename(batch_id)) => {
                    // Only this import's new entries carry its (generated,
                    // unique) provisional id; `eligible_emails_batch` finds them.
                    query("UPDATE eligible_emails SET batch_id = $2 WHERE batch_id = $1")
                        .bind(&import.batch_id)
                        .bind(&batch_id)
                        .execute(&mut *tx)
                        .await?;
                    import.batch_id = batch_id;
                }
                Some(ImportChunk::Finish(totals)) => break totals,
                // The importer gave up: dropping `tx` rolls everything back.
                None => return Ok(None),
            }
        };
        query(
            "INSERT INTO import_batches (id, source, created_by, created_at, rows, added, updated, duplicates, invalid) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO UPDATE SET \
               rows = import_batches.rows + excluded.rows, added = import_batches.added + excluded.added, \
               updated = import_batches.updated + excluded.updated, \
               duplicates = import_batches.duplicates + excluded.duplicates, \
               invalid = import_batches.invalid + excluded.invalid",
        )
        .bind(&import.batch_id)
        .bind(import.source)
        .bind(import.added_by.as_deref())
        .bind(import.now)
        .bind(count(totals.rows))
        .bind(count(counts.added))
        .bind(count(counts.updated))
        .bind(count(totals.duplicates))
        .bind(count(totals.invalid))
        .execute(&mut *tx)
        .await?;
        let mut audit = totals.audit;
        if let Some(details) = audit.details.as_object_mut() {
            details.insert("added".into(), counts.added.into());
            details.insert("updated".into(), counts.updated.into());
            details.insert("unchanged".into(), counts.unchanged.into());
        }
        insert_audit(&mut *tx, audit, import.now).await?;
        let batch = serde_json::json!({ "batch": {
            "id": import.batch_id,
            "source": import.source,
            "rows": totals.rows,
            "added": counts.added,
            "updated": counts.updated,
            "unchanged": counts.unchanged,
            "duplicates": totals.duplicates,
            "invalid": totals.invalid,
        }});
        if !import.dry_run {
            record_event(&mut *tx, EventType::AllowlistImported, batch, import.now).await?;
        }
        if import.dry_run {
            B::rollback(tx).await?;
        } else {
            B::commit(tx).await?;
        }
        Ok(Some(counts))
    }

    async fn list_eligible(&self, filter: &EligibleFilter) -> StoreResult<Vec<EligibleRow>> {
        query(
            "SELECT email, batch_id, roles, added_by, created_at, claimed_by FROM eligible_emails \
             WHERE ($1 IS NULL OR email > $1) AND ($2 IS NULL OR batch_id = $2) \
               AND ($3 IS NULL OR email LIKE $3 ESCAPE '\\') \
               AND ($4 IS NULL OR (claimed_by IS NOT NULL) = $4) \
             ORDER BY email LIMIT $5",
        )
        .bind(filter.after.as_deref())
        .bind(filter.batch_id.as_deref())
        .bind(filter.q.as_deref().map(schema::like_pattern))
        .bind(filter.claimed)
        .bind(filter.limit)
        .fetch_all(&mut self.backend.reader())
        .await
    }

    async fn remove_eligible(
        &self,
        email: &Email,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<bool> {
        let mut tx = self.backend.begin().await?;
        let removed = query("DELETE FROM eligible_emails WHERE email = $1")
            .bind(email.as_str())
            .execute(&mut *tx)
            .await?;
        if removed == 0 {
            return Ok(false);
        }
        insert_audit(&mut *tx, audit, now).await?;
        B::commit(tx).await?;
        Ok(true)
    }

    async fn list_batches(&self, before: Option<&str>, limit: i64) -> StoreResult<Vec<BatchRow>> {
        query(
            "SELECT b.id, b.source, b.created_by, b.created_at, b.rows, b.added, b.updated, b.duplicates, \
               b.invalid, b.withdrawn, b.withdrawn_at, \
               (SELECT COUNT(*) FROM eligible_emails e WHERE e.batch_id = b.id) AS remaining \
             FROM import_batches b \
             WHERE ($1 IS NULL OR (b.created_at, b.id) < (SELECT c.created_at, c.id FROM import_batches c WHERE c.id = $1)) \
             ORDER BY b.created_at DESC, b.id DESC LIMIT $2",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(&mut self.backend.reader())
        .await
    }

    async fn withdraw_batch(
        &self,
        id: &str,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<Option<u64>> {
        let mut tx = self.backend.begin().await?;
        let known: Option<(String,)> = query("SELECT id FROM import_batches WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        if known.is_none() {
            return Ok(None);
        }
        let removed =
            query("DELETE FROM eligible_emails WHERE batch_id = $1 AND claimed_by IS NULL")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        query(
            "UPDATE import_batches SET withdrawn = withdrawn + $2, withdrawn_at = $3 WHERE id = $1",
        )
        .bind(id)
        .bind(count(removed))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let audit = audit.details(serde_json::json!({ "removed": removed }));
        insert_audit(&mut *tx, audit, now).await?;
        let batch = serde_json::json!({ "batch": { "id": id, "removed": removed } });
        record_event(&mut *tx, EventType::AllowlistBatchWithdrawn, batch, now).await?;
        B::commit(tx).await?;
        Ok(Some(removed))
    }
}

/// A count as stored (a 64-bit signed column). Counts of rows never come near
/// the limit; saturating rather than failing keeps that a non-question.
fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
