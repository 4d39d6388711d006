//! The writes of the sign-in hot paths: requesting a link, redeeming it, and
//! rotating a refresh token.
//!
//! These run on every sign-in, so they are written for the fewest round trips.
//! On SQLite, link requests and returning members' redemptions join the
//! writer's group commits (`sqlite_writer.rs`); the rest goes as one script per
//! round trip (`BEGIN; …; COMMIT`). Postgres, whose extended protocol takes one
//! statement per message, gets the same SQL as one statement of data-modifying
//! CTEs (one network round trip, atomic on its own).

use super::portable::eligibility_sql;
use super::sqlite_groups::Redemption;
use super::sqlite_writer::first_row;
use super::{
    AuditEntry, NewMagicLink, NewMail, NewRefreshToken, NewSession, PostgresStore, SqliteStore,
    Store, StoreResult,
};
use crate::domain::{MemberStatus, Role, TokenHash};

/// The detail a link request's audit row carries: whether the address may sign in.
const ELIGIBLE: &str = "eligible";

/// `$1` the presented token's hash, `$2` the next token's id, `$3` now. Every
/// check a rotation needs (unused, unrevoked, unexpired, live session, active
/// member) sits in the WHERE clause. Concurrent use of one token: the loser finds
/// `replaced_by` set (on Postgres after waiting for the winner's row lock).
macro_rules! claim_refresh_sql {
    () => {
        "UPDATE refresh_tokens SET replaced_by = $2 \
         WHERE token_hash = $1 AND replaced_by IS NULL AND revoked_at IS NULL AND expires_at > $3 \
           AND EXISTS (SELECT s.id FROM sessions s JOIN members m ON m.id = refresh_tokens.member_id \
                       WHERE s.id = refresh_tokens.family_id AND s.revoked_at IS NULL AND m.status = 'active') \
         RETURNING family_id, member_id"
    };
}
/// The next token of the family just claimed from `$source`; `$4` its hash, `$5` its expiry.
macro_rules! insert_next_refresh_sql {
    ($source:literal) => {
        concat!(
            "INSERT INTO refresh_tokens (id, family_id, member_id, token_hash, created_at, expires_at) ",
            "SELECT $2, family_id, member_id, $4, $3, $5 FROM ",
            $source
        )
    };
}

/// `$1` the link's token hash, `$2` now.
macro_rules! consume_link_sql {
    () => {
        "UPDATE magic_links SET consumed_at = $2 \
         WHERE token_hash = $1 AND consumed_at IS NULL AND expires_at > $2 \
         RETURNING email, redirect_to"
    };
}

/// The session a redemption opens: `$1` now, `$2` the session id, `$3` the
/// client's IP, `$4` the member, `$5..$7` the first refresh token, `$8..$12` the audit row.
macro_rules! insert_session_sql {
    () => {
        "INSERT INTO sessions (id, member_id, created_at, ip) VALUES ($2, $4, $1, $3)"
    };
}
macro_rules! insert_first_refresh_sql {
    () => {
        "INSERT INTO refresh_tokens (id, family_id, member_id, token_hash, created_at, expires_at) \
         VALUES ($5, $2, $4, $6, $1, $7)"
    };
}
macro_rules! insert_sign_in_audit_sql {
    () => {
        "INSERT INTO audit_log (id, at, actor, action, target, details, ip) VALUES ($8, $1, $9, $10, $11, $12, $3)"
    };
}

/// Binds a new link (`$1..$7`), its mail (`$8..$14`) and its audit row (`$15..$20`).
macro_rules! bind_new_link {
    ($query:expr, $link:expr, $mail:expr, $audit:expr) => {{
        let (link, mail, audit) = ($link, $mail, $audit);
        $query
            .bind(link.token_hash.as_str().to_owned())
            .bind(link.email.as_str().to_owned())
            .bind(link.code_hash.as_str().to_owned())
            .bind(link.redirect_to)
            .bind(link.created_at)
            .bind(link.expires_at)
            .bind(link.ip)
            .bind(mail.id)
            .bind(mail.kind)
            .bind(mail.recipient)
            .bind(mail.subject)
            .bind(mail.sealed_body)
            .bind(mail.created_at)
            .bind(mail.expires_at)
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(audit.actor)
            .bind(audit.action)
            .bind(audit.target)
            .bind(audit.details.to_string())
            .bind(audit.ip)
    }};
}

/// Binds the session SQL above.
macro_rules! bind_session {
    ($query:expr, $session:expr, $member_id:expr, $created:expr, $now:expr) => {{
        let (session, member_id): (&NewSession, &str) = ($session, $member_id);
        let audit = sign_in_audit(session, member_id, $created);
        $query
            .bind($now)
            .bind(session.id.clone())
            .bind(session.ip.clone())
            .bind(member_id.to_owned())
            .bind(session.refresh.id.clone())
            .bind(session.refresh.token_hash.as_str().to_owned())
            .bind(session.refresh.expires_at)
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(audit.actor)
            .bind(audit.action)
            .bind(audit.target)
            .bind(audit.details.to_string())
    }};
}

fn sign_in_audit(session: &NewSession, member_id: &str, created: bool) -> AuditEntry {
    AuditEntry::new("auth.signed_in")
        .actor(member_id)
        .target(member_id)
        .ip(session.ip.clone())
        .details(sign_in_details(session, created))
}

fn sign_in_details(session: &NewSession, created: bool) -> serde_json::Value {
    serde_json::json!({ "session": session.id, "new_member": created })
}

/// Makes the member for a first sign-in of an allowlisted address, inside an open
/// transaction, with the roles the allowlist entry preassigns. Evaluates to the
/// member's id and whether this created them, or `None` when the address is not
/// (or no longer) allowed to sign in.
macro_rules! enroll_member {
    ($conn:expr, $email:expr, $now:expr) => {{
        let email: &str = $email;
        let entry: Option<(String,)> = sqlx::query_as("SELECT roles FROM eligible_emails WHERE email = $1")
            .bind(email)
            .fetch_optional(&mut *$conn)
            .await?;
        match entry {
            None => None,
            Some((preassigned,)) => {
                let id = crate::domain::MemberId::new().to_string();
                // Two links of one new address redeemed at once race to create the
                // member. SQLite serialises them; on Postgres the loser waits for the
                // winner's commit here and then signs in to the member it created.
                let inserted = sqlx::query(
                    "INSERT INTO members (id, email, status, created_at, last_login_at) VALUES ($1, $2, 'active', $3, $3) \
                     ON CONFLICT (email) DO NOTHING",
                )
                .bind(&id)
                .bind(email)
                .bind($now)
                .execute(&mut *$conn)
                .await?
                .rows_affected();
                if inserted == 0 {
                    let (id, status): (String, String) =
                        sqlx::query_as("UPDATE members SET last_login_at = $2 WHERE email = $1 RETURNING id, status")
                            .bind(email)
                            .bind($now)
                            .fetch_one(&mut *$conn)
                            .await?;
                    (status == MemberStatus::Active.as_str()).then_some((id, false))
                } else {
                    // A preassigned custom role deleted since is skipped.
                    let roles = std::iter::once(Role::MEMBER).chain(preassigned.split(',').filter(|r| !r.is_empty()));
                    for role in roles {
                        sqlx::query(
                            "INSERT INTO member_roles (member_id, role, granted_at) \
                             SELECT $1, name, $3 FROM roles WHERE name = $2 ON CONFLICT DO NOTHING",
                        )
                        .bind(&id)
                        .bind(role)
                        .bind($now)
                        .execute(&mut *$conn)
                        .await?;
                    }
                    sqlx::query("UPDATE eligible_emails SET claimed_by = $2 WHERE email = $1")
                        .bind(email)
                        .bind(&id)
                        .execute(&mut *$conn)
                        .await?;
                    Some((id, true))
                }
            }
        }
    }};
}

/// A link just consumed on Postgres: its address and redirect, and the member
/// with that address (id and status) if there is one.
type OpenedLink = (String, Option<String>, Option<String>, Option<String>);

/// A link redeemed: the member it signed in (their id), where to send them, and
/// whether this sign-in created the member.
pub(super) struct Redeemed {
    pub member_id: String,
    pub redirect_to: Option<String>,
    pub created: bool,
}

impl SqliteStore {
    /// The eligibility check on a reader, then the link in the writer's next
    /// group commit.
    pub(super) async fn insert_magic_link(
        &self,
        link: NewMagicLink,
        mail: NewMail,
        audit: AuditEntry,
    ) -> StoreResult<bool> {
        let eligible = Store::is_eligible(self, &link.email).await?;
        let audit = audit.with_detail(ELIGIBLE, eligible);
        if eligible {
            self.writer.insert_magic_link(link, mail, audit).await?;
        } else {
            Store::record_audit(self, audit, link.created_at).await?;
        }
        Ok(eligible)
    }

    /// Claims `presented` and inserts its successor; the claimed token's family
    /// and member, or `None` when it could not be claimed.
    pub(super) async fn claim_refresh_token(
        &self,
        presented: &TokenHash,
        next: &NewRefreshToken,
        now: i64,
    ) -> StoreResult<Option<(String, String)>> {
        let script = sqlx::query(concat!(
            "BEGIN; ",
            claim_refresh_sql!(),
            "; ",
            insert_next_refresh_sql!("refresh_tokens WHERE token_hash = $1 AND replaced_by = $2"),
            "; COMMIT"
        ))
        .bind(presented.as_str().to_owned())
        .bind(next.id.clone())
        .bind(now)
        .bind(next.token_hash.as_str().to_owned())
        .bind(next.expires_at);
        let mut writer = self.write().await?;
        let rows = self.writer.script(&mut writer, script, false).await?;
        first_row(&rows, 1)
    }

    /// A returning member's link is redeemed in the writer's next group commit;
    /// anything else (a new member, a refused link) takes two round trips on the
    /// writer: consume the link and stamp the member, then open the session and
    /// commit.
    pub(super) async fn redeem_link(
        &self,
        token_hash: &TokenHash,
        session: &NewSession,
        now: i64,
    ) -> StoreResult<Option<Redeemed>> {
        let returning = self
            .writer
            .redeem_for_returning_member(Redemption {
                token_hash: token_hash.as_str().to_owned(),
                now,
                session_id: session.id.clone(),
                ip: session.ip.clone(),
                refresh_id: session.refresh.id.clone(),
                refresh_hash: session.refresh.token_hash.as_str().to_owned(),
                refresh_expires_at: session.refresh.expires_at,
                audit_details: sign_in_details(session, false).to_string(),
            })
            .await?;
        if let Some((member_id, redirect_to)) = returning {
            return Ok(Some(Redeemed {
                member_id,
                redirect_to,
                created: false,
            }));
        }
        let mut writer = self.write().await?;
        let opened = sqlx::query(concat!(
            "BEGIN; ",
            consume_link_sql!(),
            "; UPDATE members SET last_login_at = $2 ",
            "WHERE email = (SELECT email FROM magic_links WHERE token_hash = $1) RETURNING id, status"
        ))
        .bind(token_hash.as_str().to_owned())
        .bind(now);
        let rows = self.writer.script(&mut writer, opened, true).await?;
        let rollback = sqlx::query("ROLLBACK");
        // Statement 0 is BEGIN.
        let Some((email, redirect_to)) = first_row::<(String, Option<String>)>(&rows, 1)? else {
            self.writer.script(&mut writer, rollback, false).await?;
            return Ok(None);
        };
        let member = match first_row::<(String, String)>(&rows, 2)? {
            Some((id, status)) => (status == MemberStatus::Active.as_str()).then_some((id, false)),
            None => enroll_member!(writer, &email, now),
        };
        let Some((member_id, created)) = member else {
            self.writer.script(&mut writer, rollback, false).await?;
            return Ok(None);
        };
        let close = sqlx::query(concat!(
            insert_session_sql!(),
            "; ",
            insert_first_refresh_sql!(),
            "; ",
            insert_sign_in_audit_sql!(),
            "; COMMIT"
        ));
        self.writer
            .script(
                &mut writer,
                bind_session!(close, session, &member_id, created, now),
                false,
            )
            .await?;
        Ok(Some(Redeemed {
            member_id,
            redirect_to,
            created,
        }))
    }
}

impl PostgresStore {
    /// One statement: the eligibility check, the link and its mail (only if
    /// eligible), and the audit row.
    pub(super) async fn insert_magic_link(
        &self,
        link: NewMagicLink,
        mail: NewMail,
        audit: AuditEntry,
    ) -> StoreResult<bool> {
        // `$1..$7` the link, `$8..$14` its mail, `$15..$21` the audit row (`$19`
        // its details if eligible, `$21` if not).
        let statement = sqlx::query_scalar(concat!(
            "WITH eligible AS (SELECT ",
            eligibility_sql!("$2"),
            " AS yes), link AS ( \
               INSERT INTO magic_links (token_hash, email, code_hash, redirect_to, created_at, expires_at, ip) \
               SELECT $1, $2, $3, $4, $5, $6, $7 FROM eligible WHERE yes RETURNING token_hash \
             ), mail AS ( \
               INSERT INTO outbox (id, kind, recipient, subject, sealed_body, status, created_at, next_attempt_at, expires_at) \
               SELECT $8, $9, $10, $11, $12, 'queued', $13, $13, $14 FROM link \
             ), audit AS ( \
               INSERT INTO audit_log (id, at, actor, action, target, details, ip) \
               SELECT $15, $5, $16, $17, $18, CASE WHEN yes THEN $19 ELSE $21 END, $20 FROM eligible \
             ) SELECT yes FROM eligible",
        ));
        let refused = audit.clone().with_detail(ELIGIBLE, false).details;
        let audit = audit.with_detail(ELIGIBLE, true);
        let eligible = bind_new_link!(statement, link, mail, audit)
            .bind(refused.to_string())
            .fetch_one(&mut *self.write().await?)
            .await?;
        Ok(eligible)
    }

    /// As on SQLite, in one statement.
    pub(super) async fn claim_refresh_token(
        &self,
        presented: &TokenHash,
        next: &NewRefreshToken,
        now: i64,
    ) -> StoreResult<Option<(String, String)>> {
        Ok(sqlx::query_as(concat!(
            "WITH claimed AS (",
            claim_refresh_sql!(),
            ") ",
            insert_next_refresh_sql!("claimed"),
            " RETURNING family_id, member_id"
        ))
        .bind(presented.as_str())
        .bind(&next.id)
        .bind(now)
        .bind(next.token_hash.as_str())
        .bind(next.expires_at)
        .fetch_optional(&mut *self.write().await?)
        .await?)
    }

    /// One transaction of three statements for a returning member: consume the
    /// link and stamp its member (one statement), open the session (one), commit.
    pub(super) async fn redeem_link(
        &self,
        token_hash: &TokenHash,
        session: &NewSession,
        now: i64,
    ) -> StoreResult<Option<Redeemed>> {
        let mut writer = self.write().await?;
        let mut tx = sqlx::Connection::begin(&mut *writer).await?;
        let opened: Option<OpenedLink> =
            sqlx::query_as(concat!(
                "WITH link AS (",
                consume_link_sql!(),
                "), member AS (UPDATE members SET last_login_at = $2 FROM link ",
                "WHERE members.email = link.email RETURNING members.id, members.status) ",
                "SELECT link.email, link.redirect_to, member.id, member.status FROM link LEFT JOIN member ON true"
            ))
            .bind(token_hash.as_str())
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
        let Some((email, redirect_to, member_id, status)) = opened else {
            return Ok(None);
        };
        let member = match (member_id, status) {
            (Some(id), Some(status)) => {
                (status == MemberStatus::Active.as_str()).then_some((id, false))
            }
            _ => enroll_member!(tx, &email, now),
        };
        // An early return drops the transaction, which rolls back the consumption.
        let Some((member_id, created)) = member else {
            return Ok(None);
        };
        let close = sqlx::query(concat!(
            "WITH session AS (",
            insert_session_sql!(),
            "), refresh AS (",
            insert_first_refresh_sql!(),
            ") ",
            insert_sign_in_audit_sql!()
        ));
        bind_session!(close, session, &member_id, created, now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(Redeemed {
            member_id,
            redirect_to,
            created,
        }))
    }
}
