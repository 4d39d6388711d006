//! The allowlist as admins manage it: streaming imports written in multi-row
//! batches inside one transaction, keyset lists, and withdrawing an upload.

use crate::domain::Email;
use crate::store::{AuditEntry, EligibleEntry, StoreResult, UpsertCounts};

/// Entries an importer hands the store at a time. Postgres writes a chunk as
/// one `UNNEST` statement (two array parameters, whatever the size), so bigger
/// chunks mean fewer round trips; SQLite splits it into statements of
/// [`SQLITE_ROWS_PER_STATEMENT`].
pub const IMPORT_CHUNK: usize = 5_000;

/// Entries per multi-row SQLite statement: 2 bound values per row plus 3
/// shared, far below SQLite's limit on bound parameters.
pub const SQLITE_ROWS_PER_STATEMENT: usize = 500;

/// What an importer sends the store, in order: any number of `Rows`, then one
/// `Finish`. A stream that ends without `Finish` (the upload failed) is rolled back.
#[derive(Debug)]
pub enum ImportChunk {
    Rows(Vec<EligibleEntry>),
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

/// `$first, $first+1, …`: `count` numbered placeholders, which both backends accept.
pub(crate) fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
