//! The store operations whose SQL is the same on SQLite and Postgres.
//!
//! Both backends keep ids as text, times as 64-bit integers and use `$N`
//! placeholders, so one SQL text serves both. The operations are written once,
//! in [`impl_store!`], and each backend instantiates it for its own struct
//! (which has a `writer` and a `reader` pool), adding the few operations where
//! the dialects differ. A macro rather than generic functions because sqlx's
//! per-type trait bounds cannot be stated once for "any of our two databases".

use crate::domain::{Email, Member, MemberId, MemberStatus, Role};
use crate::store::{StoreError, StoreResult};

/// One row of a member joined with one of their live roles (`None` when they have none).
#[derive(sqlx::FromRow)]
pub(crate) struct MemberRoleRow {
    pub id: String,
    pub email: String,
    pub status: String,
    pub created_at: i64,
    pub last_login_at: Option<i64>,
    pub role: Option<String>,
}

/// The SELECT list and joins that [`MemberRoleRow`] reads; `$now` decides which
/// role grants have expired.
macro_rules! member_select {
    ($now:literal) => {
        concat!(
            "SELECT m.id, m.email, m.status, m.created_at, m.last_login_at, r.role FROM members m ",
            "LEFT JOIN member_roles r ON r.member_id = m.id AND (r.expires_at IS NULL OR r.expires_at > ",
            $now,
            ") "
        )
    };
}
pub(crate) use member_select;

/// Whether the address `$email` may sign in, as one boolean expression: an
/// active member, or (not yet a member) on the allowlist.
macro_rules! eligibility_sql {
    ($email:literal) => {
        concat!(
            "COALESCE((SELECT status = 'active' FROM members WHERE email = ",
            $email,
            "), EXISTS (SELECT 1 FROM eligible_emails WHERE email = ",
            $email,
            "))"
        )
    };
}
pub(crate) use eligibility_sql;

/// Folds the rows of one member (one per role) into a [`Member`].
pub(crate) fn fold_member(rows: Vec<MemberRoleRow>) -> StoreResult<Option<Member>> {
    let mut rows = rows.into_iter();
    let Some(first) = rows.next() else {
        return Ok(None);
    };
    let corrupt = |what: &str| StoreError::Corrupt(format!("member {}: {what}", first.id));
    let mut roles = Vec::new();
    for role in std::iter::once(first.role.clone())
        .chain(rows.map(|r| r.role))
        .flatten()
    {
        roles.push(Role::parse(&role).map_err(|_| corrupt("role"))?);
    }
    roles.sort();
    roles.dedup();
    Ok(Some(Member {
        id: MemberId::parse(&first.id).ok_or_else(|| corrupt("id"))?,
        email: Email::parse(&first.email).map_err(|_| corrupt("email"))?,
        status: MemberStatus::parse(&first.status).ok_or_else(|| corrupt("status"))?,
        roles,
        created_at: first.created_at,
        last_login_at: first.last_login_at,
    }))
}

/// Inserts one audit row inside an open transaction.
macro_rules! insert_audit {
    ($tx:expr, $entry:expr, $now:expr) => {{
        let entry = $entry;
        sqlx::query(
            "INSERT INTO audit_log (id, at, actor, action, target, details, ip) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind($now)
        .bind(entry.actor)
        .bind(entry.action)
        .bind(entry.target)
        .bind(entry.details.to_string())
        .bind(entry.ip)
        .execute(&mut *$tx)
        .await?;
    }};
}
pub(crate) use insert_audit;

/// Revokes a session and its refresh tokens inside an open transaction;
/// evaluates to the number of sessions revoked.
macro_rules! revoke_session_in {
    ($tx:expr, $session_id:expr, $now:expr) => {{
        let revoked =
            sqlx::query("UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind($session_id)
                .bind($now)
                .execute(&mut *$tx)
                .await?
                .rows_affected();
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL",
        )
        .bind($session_id)
        .bind($now)
        .execute(&mut *$tx)
        .await?;
        revoked
    }};
}
pub(crate) use revoke_session_in;

/// Loads a member with their live roles through any executor.
macro_rules! load_member {
    ($executor:expr, $id:expr, $now:expr) => {{
        let rows: Vec<$crate::store::portable::MemberRoleRow> = sqlx::query_as(concat!(
            $crate::store::portable::member_select!("$2"),
            "WHERE m.id = $1 ORDER BY r.role"
        ))
        .bind($id)
        .bind($now)
        .fetch_all($executor)
        .await?;
        $crate::store::portable::fold_member(rows)?
    }};
}
pub(crate) use load_member;

/// Implements [`crate::store::Store`] for `$store`: the portable operations
/// below plus the backend-specific items passed in braces.
macro_rules! impl_store {
    ($store:ty, { $($specific:tt)* }) => {
        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            $($specific)*

            async fn ping(&self) -> StoreResult<()> {
                sqlx::query("SELECT 1").execute(&self.reader).await?;
                Ok(())
            }

            async fn hit_rate_limits(&self, buckets: &[&str], window_secs: i64, now: i64) -> StoreResult<Vec<RateWindow>> {
                self.count_hits(buckets, window_secs, now).await
            }

            async fn role_names(&self) -> StoreResult<Vec<String>> {
                let rows: Vec<(String,)> = sqlx::query_as("SELECT name FROM roles ORDER BY name").fetch_all(&self.reader).await?;
                Ok(rows.into_iter().map(|(name,)| name).collect())
            }

            async fn is_eligible(&self, email: &Email) -> StoreResult<bool> {
                Ok(sqlx::query_scalar(concat!("SELECT ", $crate::store::portable::eligibility_sql!("$1")))
                    .bind(email.as_str())
                    .fetch_one(&self.reader)
                    .await?)
            }

            async fn create_magic_link(&self, link: NewMagicLink, mail: NewMail, audit: AuditEntry) -> StoreResult<bool> {
                self.insert_magic_link(link, mail, audit).await
            }

            async fn spend_code_attempt(&self, email: &Email, now: i64, max_attempts: i64) -> StoreResult<Vec<(TokenHash, TokenHash)>> {
                let rows: Vec<(String, String)> = sqlx::query_as(
                    "UPDATE magic_links SET attempts = attempts + 1 \
                     WHERE email = $1 AND consumed_at IS NULL AND expires_at > $2 AND attempts < $3 \
                     RETURNING token_hash, code_hash",
                )
                .bind(email.as_str())
                .bind(now)
                .bind(max_attempts)
                .fetch_all(&mut *self.write().await?)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(token, code)| (TokenHash::from_stored(token), TokenHash::from_stored(code)))
                    .collect())
            }

            async fn redeem_magic_link(&self, token_hash: &TokenHash, session: NewSession, now: i64) -> StoreResult<Option<SignedIn>> {
                let Some(redeemed) = self.redeem_link(token_hash, &session, now).await? else {
                    return Ok(None);
                };
                // Read after commit from the reader pool, so the writer is not held for it.
                let member = load_member!(&self.reader, &redeemed.member_id, now)
                    .ok_or_else(|| StoreError::Corrupt(format!("member {} vanished", redeemed.member_id)))?;
                Ok(Some(SignedIn { member, session_id: session.id, redirect_to: redeemed.redirect_to, created: redeemed.created }))
            }

            async fn rotate_refresh_token(&self, presented: &TokenHash, next: NewRefreshToken, now: i64) -> StoreResult<RefreshOutcome> {
                let Some((family, member_id)) = self.claim_refresh_token(presented, &next, now).await? else {
                    // No claim: tell a replayed token (which revokes its family) from one
                    // that is merely unknown, revoked, expired or whose owner may not sign in.
                    let mut writer = self.write().await?;
                    let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                    let row: Option<(String, String, Option<String>)> = sqlx::query_as(
                        "SELECT family_id, member_id, replaced_by FROM refresh_tokens WHERE token_hash = $1",
                    )
                    .bind(presented.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some((family, member_id, Some(_))) = row else {
                        return Ok(RefreshOutcome::Invalid);
                    };
                    revoke_session_in!(tx, &family, now);
                    insert_audit!(
                        tx,
                        AuditEntry::new("auth.refresh_reuse")
                            .actor(member_id.clone())
                            .target(member_id.clone())
                            .details(serde_json::json!({ "session": family })),
                        now
                    );
                    tx.commit().await?;
                    return Ok(RefreshOutcome::Reused { member_id, session_id: family });
                };
                // The member (with roles, for the access token) is read after commit from
                // the reader pool, off the single writer. A member deleted or suspended in
                // between gets no tokens; their sessions are being revoked anyway.
                let member = load_member!(&self.reader, &member_id, now)
                    .ok_or_else(|| StoreError::Corrupt(format!("member {member_id} vanished")))?;
                if member.status != MemberStatus::Active {
                    return Ok(RefreshOutcome::Invalid);
                }
                Ok(RefreshOutcome::Rotated { member, session_id: family })
            }

            async fn revoke_session(&self, session_id: &str, audit: AuditEntry, now: i64) -> StoreResult<bool> {
                let mut writer = self.write().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                let revoked = revoke_session_in!(tx, session_id, now);
                if revoked > 0 {
                    insert_audit!(tx, audit, now);
                }
                tx.commit().await?;
                Ok(revoked > 0)
            }

            async fn session_member(&self, member_id: &MemberId, session_id: &str, now: i64) -> StoreResult<Option<Member>> {
                self.live_session_member(member_id, session_id, now).await
            }

            async fn member_by_id(&self, id: &MemberId, now: i64) -> StoreResult<Option<Member>> {
                Ok(load_member!(&self.reader, id.as_str(), now))
            }

            async fn delete_member(&self, id: &MemberId, audit: AuditEntry, now: i64) -> StoreResult<bool> {
                let mut writer = self.write().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                let was_admin = load_member!(&mut *tx, id.as_str(), now)
                    .is_some_and(|m| m.status == MemberStatus::Active && m.has_role(Role::ADMIN));
                let deleted = sqlx::query("UPDATE members SET status = 'deleted' WHERE id = $1 AND status <> 'deleted'")
                    .bind(id.as_str())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if deleted == 0 {
                    return Ok(false);
                }
                let sessions: Vec<(String,)> = sqlx::query_as("SELECT id FROM sessions WHERE member_id = $1 AND revoked_at IS NULL")
                    .bind(id.as_str())
                    .fetch_all(&mut *tx)
                    .await?;
                for (session,) in sessions {
                    revoke_session_in!(tx, &session, now);
                }
                sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE member_id = $1 AND revoked_at IS NULL")
                    .bind(id.as_str())
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                if was_admin && $crate::store::members::active_admins!(tx, now) == 0 {
                    return Err(StoreError::LastAdmin);
                }
                insert_audit!(tx, audit, now);
                tx.commit().await?;
                Ok(true)
            }

            async fn bootstrap_admins(&self, emails: &[Email], now: i64) -> StoreResult<()> {
                let mut writer = self.write().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                for email in emails {
                    let existing: Option<(String,)> = sqlx::query_as("SELECT roles FROM eligible_emails WHERE email = $1")
                        .bind(email.as_str())
                        .fetch_optional(&mut *tx)
                        .await?;
                    match existing {
                        None => {
                            // Instances starting together all bootstrap; the first insert wins.
                            let added = sqlx::query(
                                "INSERT INTO eligible_emails (email, batch_id, roles, created_at) VALUES ($1, 'bootstrap', 'admin', $2) \
                                 ON CONFLICT (email) DO NOTHING",
                            )
                            .bind(email.as_str())
                            .bind(now)
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                            if added > 0 {
                                insert_audit!(tx, AuditEntry::new("allowlist.bootstrap_admin").target(email.as_str()), now);
                            }
                        }
                        Some((roles,)) if !roles.split(',').any(|r| r == Role::ADMIN) => {
                            let mut list = Role::parse_list(&roles).unwrap_or_default();
                            list.push(Role::admin());
                            list.sort();
                            sqlx::query("UPDATE eligible_emails SET roles = $2 WHERE email = $1")
                                .bind(email.as_str())
                                .bind(Role::join(&list))
                                .execute(&mut *tx)
                                .await?;
                            insert_audit!(tx, AuditEntry::new("allowlist.bootstrap_admin").target(email.as_str()), now);
                        }
                        Some(_) => {}
                    }
                    let granted = sqlx::query(
                        "INSERT INTO member_roles (member_id, role, granted_at) \
                         SELECT id, 'admin', $2 FROM members WHERE email = $1 ON CONFLICT DO NOTHING",
                    )
                    .bind(email.as_str())
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if granted > 0 {
                        insert_audit!(tx, AuditEntry::new("role.bootstrap_admin").target(email.as_str()), now);
                    }
                }
                tx.commit().await?;
                Ok(())
            }

            async fn record_audit(&self, entry: AuditEntry, now: i64) -> StoreResult<()> {
                let mut conn = self.write().await?;
                insert_audit!(conn, entry, now);
                Ok(())
            }

            async fn finish_mails(&self, outcomes: &[(String, MailResult)], now: i64) -> StoreResult<()> {
                self.finish_mails_sql(outcomes, now).await
            }

            async fn outbox_page(&self, query: OutboxQuery<'_>) -> StoreResult<Vec<OutboxEntry>> {
                self.outbox_page_sql(query).await
            }

            async fn outbox_counts(&self) -> StoreResult<OutboxCounts> {
                self.outbox_counts_sql().await
            }

            async fn requeue_failed_mail(&self, id: &str, audit: AuditEntry, now: i64) -> StoreResult<RequeueOutcome> {
                self.requeue_failed_mail_sql(id, audit, now).await
            }

            async fn purge_expired(&self, now: i64) -> StoreResult<u64> {
                const DAY: i64 = 86_400;
                let mut writer = self.write().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                let mut purged = 0;
                for (sql, cutoff) in [
                    ("DELETE FROM magic_links WHERE expires_at < $1", now - DAY),
                    ("DELETE FROM rate_limits WHERE window_start < $1", now - DAY),
                    ("DELETE FROM refresh_tokens WHERE expires_at < $1", now),
                ] {
                    purged += sqlx::query(sql).bind(cutoff).execute(&mut *tx).await?.rows_affected();
                }
                tx.commit().await?;
                Ok(purged)
            }
        }

        $crate::store::outbox::impl_outbox_sql!($store);
    };
}
pub(crate) use impl_store;
