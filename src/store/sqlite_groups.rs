//! The kinds of write SQLite's writer commits in groups (see `sqlite_writer.rs`):
//! for each, the script of a batch, its parameters, and each job's answer.

use super::sqlite_writer::{Grouped, Queue, Script, ScriptRows, Writer, first_row};
use super::{AuditEntry, NewMagicLink, NewMail, RateWindow, StoreError, StoreResult};

/// `n` copies of a row's `VALUES` tuple.
fn rows(tuple: &str, n: usize) -> String {
    vec![tuple; n].join(", ")
}

pub(super) struct NewLink {
    pub link: NewMagicLink,
    pub mail: NewMail,
    pub audit: AuditEntry,
}

impl Grouped for NewLink {
    type Output = ();

    fn queue(writer: &Writer) -> &Queue<Self> {
        &writer.links
    }

    fn script(n: usize) -> String {
        format!(
            "BEGIN; \
             INSERT INTO magic_links (token_hash, email, code_hash, redirect_to, created_at, expires_at, ip) VALUES {}; \
             INSERT INTO outbox (id, kind, recipient, subject, sealed_body, status, created_at, next_attempt_at, expires_at) VALUES {}; \
             INSERT INTO audit_log (id, at, actor, action, target, details, ip) VALUES {}; \
             COMMIT",
            rows("(?, ?, ?, ?, ?, ?, ?)", n),
            rows("(?, ?, ?, ?, ?, 'queued', ?, ?, ?)", n),
            rows("(?, ?, ?, ?, ?, ?, ?)", n),
        )
    }

    fn bind<'q>(batch: &'q [Self], mut script: Script<'q>) -> Script<'q> {
        for NewLink { link, .. } in batch {
            script = script
                .bind(link.token_hash.as_str())
                .bind(link.email.as_str())
                .bind(link.code_hash.as_str())
                .bind(link.redirect_to.as_deref())
                .bind(link.created_at)
                .bind(link.expires_at)
                .bind(link.ip.as_deref());
        }
        for NewLink { mail, .. } in batch {
            script = script
                .bind(mail.id.as_str())
                .bind(mail.kind)
                .bind(mail.recipient.as_str())
                .bind(mail.subject.as_str())
                .bind(mail.sealed_body.as_str())
                .bind(mail.created_at)
                .bind(mail.created_at)
                .bind(mail.expires_at);
        }
        for NewLink { link, audit, .. } in batch {
            script = script
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(link.created_at)
                .bind(audit.actor.as_deref())
                .bind(audit.action)
                .bind(audit.target.as_deref())
                .bind(audit.details.to_string())
                .bind(audit.ip.as_deref());
        }
        script
    }

    fn outputs(batch: &[Self], _rows: ScriptRows) -> StoreResult<Vec<()>> {
        Ok(vec![(); batch.len()])
    }
}

/// A sign-in link redeemed by a returning member, and the session it opens.
pub(super) struct Redemption {
    pub token_hash: String,
    pub now: i64,
    pub session_id: String,
    pub ip: Option<String>,
    pub refresh_id: String,
    pub refresh_hash: String,
    pub refresh_expires_at: i64,
    pub audit_details: String,
}

impl Grouped for Redemption {
    /// The member signed in and where the link redirects.
    type Output = Option<(String, Option<String>)>;

    fn queue(writer: &Writer) -> &Queue<Self> {
        &writer.redemptions
    }

    /// Five statements a redemption, each going ahead only if the one before
    /// changed a row (`changes()` is the count of the last completed statement):
    /// consume the link if its member is active, stamp the member, open the
    /// session, issue its refresh token, audit.
    fn script(n: usize) -> String {
        let redemption = "UPDATE magic_links SET consumed_at = ? \
             WHERE token_hash = ? AND consumed_at IS NULL AND expires_at > ? \
               AND EXISTS (SELECT 1 FROM members m WHERE m.email = magic_links.email AND m.status = 'active') \
             RETURNING email, redirect_to; \
           UPDATE members SET last_login_at = ? \
             WHERE changes() = 1 AND email = (SELECT email FROM magic_links WHERE token_hash = ?) RETURNING id; \
           INSERT INTO sessions (id, member_id, created_at, ip) SELECT ?, id, ?, ? FROM members \
             WHERE changes() = 1 AND email = (SELECT email FROM magic_links WHERE token_hash = ?); \
           INSERT INTO refresh_tokens (id, family_id, member_id, token_hash, created_at, expires_at) \
             SELECT ?, id, member_id, ?, ?, ? FROM sessions WHERE changes() = 1 AND id = ?; \
           INSERT INTO audit_log (id, at, actor, action, target, details, ip) \
             SELECT ?, ?, member_id, 'auth.signed_in', member_id, ?, ? FROM sessions WHERE changes() = 1 AND id = ?; ";
        format!("BEGIN; {}COMMIT", redemption.repeat(n))
    }

    fn bind<'q>(batch: &'q [Self], mut script: Script<'q>) -> Script<'q> {
        for r in batch {
            script = script
                // consume
                .bind(r.now)
                .bind(r.token_hash.as_str())
                .bind(r.now)
                // stamp
                .bind(r.now)
                .bind(r.token_hash.as_str())
                // session
                .bind(r.session_id.as_str())
                .bind(r.now)
                .bind(r.ip.as_deref())
                .bind(r.token_hash.as_str())
                // refresh token
                .bind(r.refresh_id.as_str())
                .bind(r.refresh_hash.as_str())
                .bind(r.now)
                .bind(r.refresh_expires_at)
                .bind(r.session_id.as_str())
                // audit
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(r.now)
                .bind(r.audit_details.as_str())
                .bind(r.ip.as_deref())
                .bind(r.session_id.as_str());
        }
        script
    }

    fn outputs(batch: &[Self], rows: ScriptRows) -> StoreResult<Vec<Self::Output>> {
        (0..batch.len())
            .map(|i| {
                // Statement 0 is BEGIN; redemption `i` starts at statement `1 + 5i`.
                let Some((_email, redirect_to)) =
                    first_row::<(String, Option<String>)>(&rows, 1 + 5 * i)?
                else {
                    return Ok(None);
                };
                let (member_id,) = first_row::<(String,)>(&rows, 2 + 5 * i)?.ok_or_else(|| {
                    StoreError::Corrupt("a consumed link's member was not stamped".into())
                })?;
                Ok(Some((member_id, redirect_to)))
            })
            .collect()
    }
}

/// One hit on a fixed-window rate-limit bucket.
pub(super) struct Hit {
    pub bucket: String,
    pub window_secs: i64,
    pub now: i64,
}

impl Grouped for Hit {
    type Output = RateWindow;

    fn queue(writer: &Writer) -> &Queue<Self> {
        &writer.hits
    }

    /// One upsert per hit, in order, so hits on one bucket count one by one.
    fn script(n: usize) -> String {
        let hit = "INSERT INTO rate_limits (bucket, window_start, hits) VALUES (?, ?, 1) \
                   ON CONFLICT (bucket) DO UPDATE SET \
                     hits = CASE WHEN rate_limits.window_start <= ? THEN 1 ELSE rate_limits.hits + 1 END, \
                     window_start = CASE WHEN rate_limits.window_start <= ? THEN ? ELSE rate_limits.window_start END \
                   RETURNING window_start, hits; ";
        format!("BEGIN; {}COMMIT", hit.repeat(n))
    }

    fn bind<'q>(batch: &'q [Self], mut script: Script<'q>) -> Script<'q> {
        for hit in batch {
            let expired = hit.now - hit.window_secs;
            script = script
                .bind(hit.bucket.as_str())
                .bind(hit.now)
                .bind(expired)
                .bind(expired)
                .bind(hit.now);
        }
        script
    }

    fn outputs(batch: &[Self], rows: ScriptRows) -> StoreResult<Vec<RateWindow>> {
        // Statement 0 is BEGIN; hit `i` is statement `i + 1`.
        batch
            .iter()
            .enumerate()
            .map(|(i, hit)| {
                let (window_start, hits) =
                    first_row::<(i64, i64)>(&rows, i + 1)?.ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "rate limit bucket {} not returned",
                            hit.bucket
                        ))
                    })?;
                Ok(RateWindow {
                    count: hits,
                    resets_at: window_start + hit.window_secs,
                })
            })
            .collect()
    }
}
