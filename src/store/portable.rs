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
                if buckets.is_empty() {
                    return Ok(Vec::new());
                }
                // One multi-row upsert for all buckets: one round trip on the writer
                // instead of one per bucket. A bucket named twice is counted once
                // (Postgres refuses to update one row twice in a statement).
                let mut distinct: Vec<&str> = buckets.to_vec();
                distinct.sort_unstable();
                distinct.dedup();
                let values: Vec<String> = (0..distinct.len()).map(|i| format!("(${}, $1, 1)", i + 3)).collect();
                let sql = format!(
                    "INSERT INTO rate_limits (bucket, window_start, hits) VALUES {} \
                     ON CONFLICT (bucket) DO UPDATE SET \
                       hits = CASE WHEN rate_limits.window_start <= $2 THEN 1 ELSE rate_limits.hits + 1 END, \
                       window_start = CASE WHEN rate_limits.window_start <= $2 THEN $1 ELSE rate_limits.window_start END \
                     RETURNING bucket, window_start, hits",
                    values.join(", ")
                );
                let mut query = sqlx::query_as::<_, (String, i64, i64)>(&sql).bind(now).bind(now - window_secs);
                for bucket in &distinct {
                    query = query.bind(*bucket);
                }
                let rows = query.fetch_all(&mut *self.write().await?).await?;
                buckets
                    .iter()
                    .map(|bucket| {
                        rows.iter()
                            .find(|(name, _, _)| name == bucket)
                            .map(|&(_, window_start, hits)| RateWindow { count: hits, resets_at: window_start + window_secs })
                            .ok_or_else(|| StoreError::Corrupt(format!("rate limit bucket {bucket} not returned")))
                    })
                    .collect()
            }

            async fn role_names(&self) -> StoreResult<Vec<String>> {
                let rows: Vec<(String,)> = sqlx::query_as("SELECT name FROM roles ORDER BY name").fetch_all(&self.reader).await?;
                Ok(rows.into_iter().map(|(name,)| name).collect())
            }

            async fn is_eligible(&self, email: &Email) -> StoreResult<bool> {
                // One round trip: the member's status and the allowlist entry side by
                // side (keys and statuses, not literals, so both decode as text).
                let (status, listed): (Option<String>, Option<String>) = sqlx::query_as(
                    "SELECT (SELECT status FROM members WHERE email = $1), \
                            (SELECT email FROM eligible_emails WHERE email = $1)",
                )
                .bind(email.as_str())
                .fetch_one(&self.reader)
                .await?;
                Ok(match status {
                    Some(status) => status == MemberStatus::Active.as_str(),
                    None => listed.is_some(),
                })
            }

            async fn create_magic_link(&self, link: NewMagicLink, mail: NewMail, audit: AuditEntry) -> StoreResult<()> {
                let mut writer = self.write().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                sqlx::query(
                    "INSERT INTO magic_links (token_hash, email, code_hash, redirect_to, created_at, expires_at, ip) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(link.token_hash.as_str())
                .bind(link.email.as_str())
                .bind(link.code_hash.as_str())
                .bind(link.redirect_to)
                .bind(link.created_at)
                .bind(link.expires_at)
                .bind(link.ip)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO outbox (id, kind, recipient, subject, sealed_body, status, created_at, next_attempt_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, 'queued', $6, $6, $7)",
                )
                .bind(mail.id)
                .bind(mail.kind)
                .bind(mail.recipient)
                .bind(mail.subject)
                .bind(mail.sealed_body)
                .bind(mail.created_at)
                .bind(mail.expires_at)
                .execute(&mut *tx)
                .await?;
                insert_audit!(tx, audit, link.created_at);
                tx.commit().await?;
                Ok(())
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
                let mut writer = self.write().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                let link: Option<(String, Option<String>)> = sqlx::query_as(
                    "UPDATE magic_links SET consumed_at = $2 \
                     WHERE token_hash = $1 AND consumed_at IS NULL AND expires_at > $2 \
                     RETURNING email, redirect_to",
                )
                .bind(token_hash.as_str())
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                let Some((email, redirect_to)) = link else {
                    return Ok(None);
                };
                // Finding a returning member and stamping their sign-in is one statement.
                // A member who may not sign in is stamped too, but the early return drops
                // the transaction, which rolls that back along with the link's consumption.
                let existing: Option<(String, String)> = sqlx::query_as(
                    "UPDATE members SET last_login_at = $2 WHERE email = $1 RETURNING id, status",
                )
                .bind(&email)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                let (member_id, created) = match existing {
                    Some((_, status)) if status != MemberStatus::Active.as_str() => return Ok(None),
                    Some((id, _)) => (id, false),
                    None => {
                        let entry: Option<(String,)> = sqlx::query_as("SELECT roles FROM eligible_emails WHERE email = $1")
                            .bind(&email)
                            .fetch_optional(&mut *tx)
                            .await?;
                        let Some((preassigned,)) = entry else {
                            return Ok(None);
                        };
                        let id = MemberId::new().to_string();
                        // Two links of one new address redeemed at once race to create the
                        // member. SQLite serialises them; on Postgres the loser waits for the
                        // winner's commit here and then signs in to the member it created.
                        let inserted = sqlx::query(
                            "INSERT INTO members (id, email, status, created_at, last_login_at) VALUES ($1, $2, 'active', $3, $3) \
                             ON CONFLICT (email) DO NOTHING",
                        )
                        .bind(&id)
                        .bind(&email)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                        if inserted == 0 {
                            let (id, status): (String, String) = sqlx::query_as(
                                "UPDATE members SET last_login_at = $2 WHERE email = $1 RETURNING id, status",
                            )
                            .bind(&email)
                            .bind(now)
                            .fetch_one(&mut *tx)
                            .await?;
                            if status != MemberStatus::Active.as_str() {
                                return Ok(None);
                            }
                            (id, false)
                        } else {
                            let roles = std::iter::once(Role::MEMBER).chain(preassigned.split(',').filter(|r| !r.is_empty()));
                            for role in roles {
                                sqlx::query(
                                    "INSERT INTO member_roles (member_id, role, granted_at) \
                                     SELECT $1, name, $3 FROM roles WHERE name = $2 ON CONFLICT DO NOTHING",
                                )
                                .bind(&id)
                                .bind(role)
                                .bind(now)
                                .execute(&mut *tx)
                                .await?;
                            }
                            sqlx::query("UPDATE eligible_emails SET claimed_by = $2 WHERE email = $1")
                                .bind(&email)
                                .bind(&id)
                                .execute(&mut *tx)
                                .await?;
                            (id, true)
                        }
                    }
                };
                sqlx::query("INSERT INTO sessions (id, member_id, created_at, ip) VALUES ($1, $2, $3, $4)")
                    .bind(&session.id)
                    .bind(&member_id)
                    .bind(now)
                    .bind(&session.ip)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO refresh_tokens (id, family_id, member_id, token_hash, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&session.refresh.id)
                .bind(&session.id)
                .bind(&member_id)
                .bind(session.refresh.token_hash.as_str())
                .bind(now)
                .bind(session.refresh.expires_at)
                .execute(&mut *tx)
                .await?;
                insert_audit!(
                    tx,
                    AuditEntry::new("auth.signed_in")
                        .actor(member_id.clone())
                        .target(member_id.clone())
                        .ip(session.ip.clone())
                        .details(serde_json::json!({ "session": session.id, "new_member": created })),
                    now
                );
                tx.commit().await?;
                drop(writer);
                // Read after commit from the reader pool, so the writer is not held for it.
                let member = load_member!(&self.reader, &member_id, now)
                    .ok_or_else(|| StoreError::Corrupt(format!("member {member_id} vanished")))?;
                Ok(Some(SignedIn { member, session_id: session.id, redirect_to, created }))
            }

            async fn rotate_refresh_token(&self, presented: &TokenHash, next: NewRefreshToken, now: i64) -> StoreResult<RefreshOutcome> {
                let mut writer = self.write().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                // The happy path is one conditional claim: every check a rotation needs
                // (unused, unrevoked, unexpired, live session, active member) sits in the
                // WHERE clause, so a good token costs BEGIN, this, the INSERT and COMMIT on
                // the single writer. Concurrent use of one token: the loser finds
                // `replaced_by` set (on Postgres after waiting for the winner's row lock)
                // and falls through to the reuse branch below.
                let claimed: Option<(String, String)> = sqlx::query_as(
                    "UPDATE refresh_tokens SET replaced_by = $2 \
                     WHERE token_hash = $1 AND replaced_by IS NULL AND revoked_at IS NULL AND expires_at > $3 \
                       AND EXISTS (SELECT s.id FROM sessions s JOIN members m ON m.id = refresh_tokens.member_id \
                                   WHERE s.id = refresh_tokens.family_id AND s.revoked_at IS NULL AND m.status = 'active') \
                     RETURNING family_id, member_id",
                )
                .bind(presented.as_str())
                .bind(&next.id)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                let Some((family, member_id)) = claimed else {
                    // No claim: tell a replayed token (which revokes its family) from one
                    // that is merely unknown, revoked, expired or whose owner may not sign in.
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
                sqlx::query(
                    "INSERT INTO refresh_tokens (id, family_id, member_id, token_hash, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&next.id)
                .bind(&family)
                .bind(&member_id)
                .bind(next.token_hash.as_str())
                .bind(now)
                .bind(next.expires_at)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                drop(writer);
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
                let rows: Vec<$crate::store::portable::MemberRoleRow> = sqlx::query_as(concat!(
                    $crate::store::portable::member_select!("$3"),
                    "JOIN sessions s ON s.member_id = m.id ",
                    "WHERE m.id = $1 AND s.id = $2 AND s.revoked_at IS NULL AND m.status = 'active' ORDER BY r.role"
                ))
                .bind(member_id.as_str())
                .bind(session_id)
                .bind(now)
                .fetch_all(&self.reader)
                .await?;
                $crate::store::portable::fold_member(rows)
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
