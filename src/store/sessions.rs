//! Sessions after sign-in: the live-session check behind every access token,
//! refresh-token rotation with reuse detection, and revocation.

use std::sync::LazyLock;

use super::audit::insert_audit;
use super::backend::{Backend, SqlStore};
use super::members::load_member;
use super::sql::{Executor, query};
use super::{AuditEntry, NewRefreshToken, RefreshOutcome, StoreError, StoreResult, schema};
use crate::domain::{Member, MemberId, MemberStatus, TokenHash};

#[async_trait::async_trait]
pub trait SessionStore {
    /// Rotates a refresh token; a token that was already rotated revokes its family.
    async fn rotate_refresh_token(
        &self,
        presented: &TokenHash,
        next: NewRefreshToken,
        now: i64,
    ) -> StoreResult<RefreshOutcome>;

    /// Revokes a session and all its refresh tokens. Returns false if it was unknown.
    async fn revoke_session(
        &self,
        session_id: &str,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<bool>;

    /// The member behind an access token, if the member is active and the session live.
    async fn session_member(
        &self,
        member_id: &MemberId,
        session_id: &str,
        now: i64,
    ) -> StoreResult<Option<Member>>;
}

/// `$1` the presented token's hash, `$2` the next token's id, `$3` now. Every
/// check a rotation needs (unused, unrevoked, unexpired, live session, active
/// member) sits in the WHERE clause. Concurrent use of one token: the loser finds
/// `replaced_by` set (on Postgres after waiting for the winner's row lock).
/// Both backends' [`Backend::claim_refresh_token`] run it.
pub static CLAIM_REFRESH: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE refresh_tokens SET replaced_by = $2 \
         WHERE token_hash = $1 AND replaced_by IS NULL AND revoked_at IS NULL AND expires_at > $3 \
           AND EXISTS (SELECT 1 FROM sessions s JOIN members m ON m.id = refresh_tokens.member_id \
                       WHERE s.id = refresh_tokens.family_id AND {} AND {}) \
         RETURNING family_id, member_id",
        schema::live_session("s"),
        schema::active("m"),
    )
});

/// The successor of the token just claimed, read from `source` (rows with
/// `family_id` and `member_id`): `$2` its id, `$3` now, `$4` its hash, `$5` its expiry.
pub fn insert_next_refresh(source: &str) -> String {
    format!(
        "INSERT INTO refresh_tokens (id, family_id, member_id, token_hash, created_at, expires_at) \
         SELECT $2, family_id, member_id, $4, $3, $5 FROM {source}"
    )
}

/// Revokes a session and its refresh tokens; the number of sessions revoked.
pub async fn revoke_session_in(
    db: &mut impl Executor,
    session_id: &str,
    now: i64,
) -> StoreResult<u64> {
    let revoked = query("UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
        .bind(session_id)
        .bind(now)
        .execute(db)
        .await?;
    query("UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL")
        .bind(session_id)
        .bind(now)
        .execute(db)
        .await?;
    Ok(revoked)
}

/// Revokes every live session and refresh token of a member; the number of
/// sessions revoked.
pub async fn revoke_member_sessions_in(
    db: &mut impl Executor,
    member_id: &str,
    now: i64,
) -> StoreResult<u64> {
    let revoked =
        query("UPDATE sessions SET revoked_at = $2 WHERE member_id = $1 AND revoked_at IS NULL")
            .bind(member_id)
            .bind(now)
            .execute(db)
            .await?;
    query("UPDATE refresh_tokens SET revoked_at = $2 WHERE member_id = $1 AND revoked_at IS NULL")
        .bind(member_id)
        .bind(now)
        .execute(db)
        .await?;
    Ok(revoked)
}

#[async_trait::async_trait]
impl<B: Backend> SessionStore for SqlStore<B> {
    async fn rotate_refresh_token(
        &self,
        presented: &TokenHash,
        next: NewRefreshToken,
        now: i64,
    ) -> StoreResult<RefreshOutcome> {
        let Some((session_id, member_id)) = self
            .backend
            .claim_refresh_token(presented, &next, now)
            .await?
        else {
            return self.refuse_refresh_token(presented, now).await;
        };
        // Read after the claim committed, from a reader, off SQLite's single
        // writer. A member deleted or suspended in between gets no tokens; their
        // sessions are being revoked anyway.
        let member = load_member(&mut self.backend.reader(), &member_id, now)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("member {member_id} vanished")))?;
        if member.status != MemberStatus::Active {
            return Ok(RefreshOutcome::Invalid);
        }
        Ok(RefreshOutcome::Rotated { member, session_id })
    }

    async fn revoke_session(
        &self,
        session_id: &str,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<bool> {
        let mut tx = self.backend.begin().await?;
        let revoked = revoke_session_in(&mut *tx, session_id, now).await?;
        if revoked == 0 {
            return Ok(false);
        }
        insert_audit(&mut *tx, audit, now).await?;
        B::commit(tx).await?;
        Ok(true)
    }

    async fn session_member(
        &self,
        member_id: &MemberId,
        session_id: &str,
        now: i64,
    ) -> StoreResult<Option<Member>> {
        self.backend
            .session_member(member_id, session_id, now)
            .await
    }
}

impl<B: Backend> SqlStore<B> {
    /// A token that could not be claimed: a replayed one (it was rotated
    /// before) revokes its whole family, as someone holds a copy; one that is
    /// merely unknown, revoked, expired or whose owner may not sign in is
    /// refused and changes nothing.
    async fn refuse_refresh_token(
        &self,
        presented: &TokenHash,
        now: i64,
    ) -> StoreResult<RefreshOutcome> {
        let mut tx = self.backend.begin().await?;
        let token: Option<(String, String, Option<String>)> = query(
            "SELECT family_id, member_id, replaced_by FROM refresh_tokens WHERE token_hash = $1",
        )
        .bind(presented.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some((session_id, member_id, Some(_))) = token else {
            return Ok(RefreshOutcome::Invalid);
        };
        revoke_session_in(&mut *tx, &session_id, now).await?;
        let audit = AuditEntry::new("auth.refresh_reuse")
            .actor(member_id.clone())
            .target(member_id.clone())
            .details(serde_json::json!({ "session": session_id }));
        insert_audit(&mut *tx, audit, now).await?;
        B::commit(tx).await?;
        Ok(RefreshOutcome::Reused {
            member_id,
            session_id,
        })
    }
}
