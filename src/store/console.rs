//! What only the admin console needs from the store: the overview's counts,
//! and roster files kept between their dry run and their import.

use super::backend::{Backend, SqlStore};
use super::sql::query;
use super::{StoreResult, schema};

/// The counts on the console's front page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overview {
    pub active_members: i64,
    pub suspended_members: i64,
    pub deleted_members: i64,
    /// Allowlist entries that became members.
    pub claimed_entries: i64,
    /// Allowlist entries no one has signed in with yet.
    pub unclaimed_entries: i64,
    /// Keys neither revoked nor expired.
    pub live_api_keys: i64,
}

/// A roster file as uploaded, before anything of it is written.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StagedUpload {
    pub id: String,
    /// The admin's member id: only they may import or download it.
    pub created_by: String,
    pub filename: String,
    pub body: Vec<u8>,
    pub created_at: i64,
}

/// How long an upload waits for its import before housekeeping removes it.
pub const STAGED_UPLOAD_TTL_SECS: i64 = 86_400;

#[async_trait::async_trait]
pub trait ConsoleStore {
    async fn overview(&self, now: i64) -> StoreResult<Overview>;

    async fn stage_upload(&self, upload: &StagedUpload) -> StoreResult<()>;

    async fn staged_upload(&self, id: &str) -> StoreResult<Option<StagedUpload>>;

    /// Removes the upload (after its import); false when it was already gone.
    async fn discard_upload(&self, id: &str) -> StoreResult<bool>;
}

#[async_trait::async_trait]
impl<B: Backend> ConsoleStore for SqlStore<B> {
    async fn overview(&self, now: i64) -> StoreResult<Overview> {
        static COUNTS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "SELECT (SELECT COUNT(*) FROM members m WHERE {}), \
                   (SELECT COUNT(*) FROM members WHERE status = 'suspended'), \
                   (SELECT COUNT(*) FROM members WHERE status = 'deleted'), \
                   (SELECT COUNT(*) FROM eligible_emails WHERE claimed_by IS NOT NULL), \
                   (SELECT COUNT(*) FROM eligible_emails WHERE claimed_by IS NULL), \
                   (SELECT COUNT(*) FROM api_keys \
                    WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $1))",
                schema::active("m")
            )
        });
        let (active, suspended, deleted, claimed, unclaimed, keys): (i64, i64, i64, i64, i64, i64) =
            query(&COUNTS)
                .bind(now)
                .fetch_one(&mut self.backend.reader())
                .await?;
        Ok(Overview {
            active_members: active,
            suspended_members: suspended,
            deleted_members: deleted,
            claimed_entries: claimed,
            unclaimed_entries: unclaimed,
            live_api_keys: keys,
        })
    }

    async fn stage_upload(&self, upload: &StagedUpload) -> StoreResult<()> {
        let mut tx = self.backend.begin().await?;
        query(
            "INSERT INTO staged_uploads (id, created_by, filename, body, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(upload.id.as_str())
        .bind(upload.created_by.as_str())
        .bind(upload.filename.as_str())
        .bind(upload.body.as_slice())
        .bind(upload.created_at)
        .execute(&mut *tx)
        .await?;
        B::commit(tx).await
    }

    async fn staged_upload(&self, id: &str) -> StoreResult<Option<StagedUpload>> {
        query("SELECT id, created_by, filename, body, created_at FROM staged_uploads WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut self.backend.reader())
            .await
    }

    async fn discard_upload(&self, id: &str) -> StoreResult<bool> {
        let mut tx = self.backend.begin().await?;
        let removed = query("DELETE FROM staged_uploads WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        B::commit(tx).await?;
        Ok(removed > 0)
    }
}
