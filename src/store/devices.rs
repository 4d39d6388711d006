//! Signing in across devices, and a member's view of their own sessions.
//!
//! A link request remembers the browser that asked (`device`) and when it last
//! checked on the request (`waiting_at`). When the link is opened on another
//! device and the right number is picked, the request is `approved`: the link
//! stays unused until the waiting device collects its session (through the
//! ordinary redemption); a wrong pick `refused` it, which uses it up.

use std::sync::LazyLock;

use super::audit::insert_audit;
use super::backend::{Backend, SqlStore};
use super::sessions::revoke_session_in;
use super::sql::query;
use super::{AuditEntry, StoreResult, schema};
use crate::domain::{MemberId, TokenHash};

/// What the confirm page and the waiting device learn about a link request.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LinkRequestState {
    pub device: Option<String>,
    pub ip: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub consumed_at: Option<i64>,
    pub waiting_at: Option<i64>,
    /// `approved` or `refused` once another device answered.
    pub handoff: Option<String>,
}

/// One of a member's live sessions, as they see it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SessionInfo {
    pub id: String,
    pub created_at: i64,
    /// When its refresh token was last exchanged (at sign-in, then at each refresh).
    pub last_used_at: i64,
    pub ip: Option<String>,
    pub device: Option<String>,
}

const STATE_COLUMNS: &str = "device, ip, created_at, expires_at, consumed_at, waiting_at, handoff";

#[async_trait::async_trait]
pub trait DeviceStore {
    /// The request behind a link, if the link was stored (it is only for
    /// eligible addresses).
    async fn link_request(&self, link: &TokenHash) -> StoreResult<Option<LinkRequestState>>;

    /// Notes that the asking device is waiting on its request; its state.
    async fn mark_waiting(
        &self,
        link: &TokenHash,
        now: i64,
    ) -> StoreResult<Option<LinkRequestState>>;

    /// Another device picked the right number: the waiting device may collect
    /// the session. False when the link is used up, expired or already answered.
    async fn approve_handoff(
        &self,
        link: &TokenHash,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<bool>;

    /// Another device picked a wrong number: the link is used up, unredeemed.
    async fn refuse_handoff(
        &self,
        link: &TokenHash,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<bool>;

    /// The member's live sessions (not revoked, with a refresh token still
    /// good), newest first.
    async fn member_sessions(&self, member: &MemberId, now: i64) -> StoreResult<Vec<SessionInfo>>;

    /// Ends one of the member's own sessions; false when it is not theirs or
    /// already ended.
    async fn end_own_session(
        &self,
        member: &MemberId,
        session_id: &str,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<bool>;

    /// Ends every live session of the member but `keep`; how many.
    async fn end_other_sessions(
        &self,
        member: &MemberId,
        keep: &str,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<u64>;
}

#[async_trait::async_trait]
impl<B: Backend> DeviceStore for SqlStore<B> {
    async fn link_request(&self, link: &TokenHash) -> StoreResult<Option<LinkRequestState>> {
        static READ: LazyLock<String> = LazyLock::new(|| {
            format!("SELECT {STATE_COLUMNS} FROM magic_links WHERE token_hash = $1")
        });
        query(&READ)
            .bind(link.as_str())
            .fetch_optional(&mut self.backend.reader())
            .await
    }

    async fn mark_waiting(
        &self,
        link: &TokenHash,
        now: i64,
    ) -> StoreResult<Option<LinkRequestState>> {
        static MARK: LazyLock<String> = LazyLock::new(|| {
            format!(
                "UPDATE magic_links SET waiting_at = $2 WHERE token_hash = $1 RETURNING {STATE_COLUMNS}"
            )
        });
        let mut tx = self.backend.begin().await?;
        let state = query(&MARK)
            .bind(link.as_str())
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
        B::commit(tx).await?;
        Ok(state)
    }

    async fn approve_handoff(
        &self,
        link: &TokenHash,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<bool> {
        static APPROVE: LazyLock<String> = LazyLock::new(|| {
            format!(
                "UPDATE magic_links SET handoff = 'approved' \
                 WHERE token_hash = $1 AND handoff IS NULL AND {}",
                schema::live_link("magic_links", "$2")
            )
        });
        answer(self, &APPROVE, link, audit, now).await
    }

    async fn refuse_handoff(
        &self,
        link: &TokenHash,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<bool> {
        static REFUSE: LazyLock<String> = LazyLock::new(|| {
            format!(
                "UPDATE magic_links SET handoff = 'refused', consumed_at = $2 \
                 WHERE token_hash = $1 AND handoff IS NULL AND {}",
                schema::live_link("magic_links", "$2")
            )
        });
        answer(self, &REFUSE, link, audit, now).await
    }

    async fn member_sessions(&self, member: &MemberId, now: i64) -> StoreResult<Vec<SessionInfo>> {
        static LIST: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT s.id, s.created_at, \
                   COALESCE((SELECT MAX(r.created_at) FROM refresh_tokens r WHERE r.family_id = s.id), s.created_at) \
                     AS last_used_at, \
                   s.ip, s.device \
                 FROM sessions s WHERE s.member_id = $1 AND {} \
                   AND EXISTS (SELECT 1 FROM refresh_tokens r WHERE r.family_id = s.id \
                               AND r.revoked_at IS NULL AND r.expires_at > $2) \
                 ORDER BY s.created_at DESC, s.id",
                schema::live_session("s")
            )
        });
        query(&LIST)
            .bind(member.as_str())
            .bind(now)
            .fetch_all(&mut self.backend.reader())
            .await
    }

    async fn end_own_session(
        &self,
        member: &MemberId,
        session_id: &str,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<bool> {
        let mut tx = self.backend.begin().await?;
        let owned: Option<(String,)> = query(
            "SELECT id FROM sessions WHERE id = $1 AND member_id = $2 AND revoked_at IS NULL",
        )
        .bind(session_id)
        .bind(member.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        if owned.is_none() {
            B::rollback(tx).await?;
            return Ok(false);
        }
        revoke_session_in(&mut *tx, session_id, now).await?;
        insert_audit(&mut *tx, audit, now).await?;
        B::commit(tx).await?;
        Ok(true)
    }

    async fn end_other_sessions(
        &self,
        member: &MemberId,
        keep: &str,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<u64> {
        let mut tx = self.backend.begin().await?;
        let others: Vec<(String,)> = query(
            "SELECT id FROM sessions WHERE member_id = $1 AND id <> $2 AND revoked_at IS NULL",
        )
        .bind(member.as_str())
        .bind(keep)
        .fetch_all(&mut *tx)
        .await?;
        for (id,) in &others {
            revoke_session_in(&mut *tx, id, now).await?;
        }
        let audit = audit.details(serde_json::json!({ "ended": others.len(), "kept": keep }));
        insert_audit(&mut *tx, audit, now).await?;
        B::commit(tx).await?;
        Ok(others.len() as u64)
    }
}

/// Runs an answer to a handoff (`$1` the link, `$2` now) with its audit row.
async fn answer<B: Backend>(
    store: &SqlStore<B>,
    statement: &str,
    link: &TokenHash,
    audit: AuditEntry,
    now: i64,
) -> StoreResult<bool> {
    let mut tx = store.backend.begin().await?;
    let changed = query(statement)
        .bind(link.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
    if changed == 0 {
        B::rollback(tx).await?;
        return Ok(false);
    }
    insert_audit(&mut *tx, audit, now).await?;
    B::commit(tx).await?;
    Ok(true)
}
