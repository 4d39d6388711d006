//! The kinds of write SQLite's writer commits in groups (`writer.rs`): for
//! each, the script of a batch, its arguments, and each job's answer. Each
//! script is one transaction, `BEGIN` to `COMMIT`, with `?` placeholders.

use std::sync::LazyLock;

use super::script::{Script, ScriptRows, all_rows, first_row, tuples};
use crate::store::audit::AUDIT_COLUMNS;
use crate::store::backend::{LinkAudit, Redeemed};
use crate::store::outbox::OUTBOX_INSERT_COLUMNS;
use crate::store::{NewMagicLink, NewMail, RateWindow, StoreError, StoreResult, schema};

/// A kind of write committed in groups.
pub trait Grouped: Sized + Send + 'static {
    type Output: Send + 'static;
    /// The script for `n` jobs.
    fn script(n: usize) -> String;
    fn bind<'q>(batch: &'q [Self], script: Script<'q>) -> Script<'q>;
    /// Each job's answer, in order, from the rows the script returned.
    fn outputs(batch: &[Self], rows: ScriptRows) -> StoreResult<Vec<Self::Output>>;
}

/// A sign-in link request: the link and its mail if the address may sign in,
/// and the audit row either way ([`crate::store::backend::Backend::request_link`]).
pub struct LinkRequest {
    pub link: NewMagicLink,
    pub mail: NewMail,
    pub audit: LinkAudit,
}

impl Grouped for LinkRequest {
    /// Whether the address may sign in (and the link was stored).
    type Output = bool;

    /// Three multi-row statements. The links go in only for eligible addresses
    /// (checked here, in the transaction that stores them) and say which went
    /// in; a mail goes in with its link; the audit row takes the details that
    /// match. Tokens are fresh random values, so "its link is stored" means
    /// "stored by this statement".
    fn script(n: usize) -> String {
        format!(
            "BEGIN; \
             INSERT INTO magic_links (token_hash, email, code_hash, redirect_to, created_at, expires_at, ip, device) \
               SELECT column1, column2, column3, column4, column5, column6, column7, column8 FROM (VALUES {}) \
               WHERE {} RETURNING token_hash; \
             INSERT INTO outbox ({OUTBOX_INSERT_COLUMNS}) \
               SELECT column2, column3, column4, column5, column6, 'queued', column7, column7, column8 \
               FROM (VALUES {}) WHERE EXISTS (SELECT 1 FROM magic_links l WHERE l.token_hash = column1); \
             INSERT INTO audit_log ({AUDIT_COLUMNS}) \
               SELECT column2, column3, column4, column5, column6, \
                 CASE WHEN EXISTS (SELECT 1 FROM magic_links l WHERE l.token_hash = column1) \
                   THEN column7 ELSE column8 END, column9 \
               FROM (VALUES {}); \
             COMMIT",
            tuples("(?, ?, ?, ?, ?, ?, ?, ?)", n),
            schema::eligible("column2"),
            tuples("(?, ?, ?, ?, ?, ?, ?, ?)", n),
            tuples("(?, ?, ?, ?, ?, ?, ?, ?, ?)", n),
        )
    }

    fn bind<'q>(batch: &'q [Self], mut script: Script<'q>) -> Script<'q> {
        for LinkRequest { link, .. } in batch {
            script = script
                .bind(link.token_hash.as_str())
                .bind(link.email.as_str())
                .bind(link.code_hash.as_str())
                .bind(link.redirect_to.as_deref())
                .bind(link.created_at)
                .bind(link.expires_at)
                .bind(link.ip.as_deref())
                .bind(link.device.as_deref());
        }
        for LinkRequest { link, mail, .. } in batch {
            script = script
                .bind(link.token_hash.as_str())
                .bind(mail.id.as_str())
                .bind(mail.kind)
                .bind(mail.recipient.as_str())
                .bind(mail.subject.as_str())
                .bind(mail.sealed_body.as_str())
                .bind(mail.created_at)
                .bind(mail.expires_at);
        }
        for LinkRequest { link, audit, .. } in batch {
            let LinkAudit {
                entry,
                refused_details,
            } = audit;
            script = script
                .bind(link.token_hash.as_str())
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(link.created_at)
                .bind(entry.actor.as_deref())
                .bind(entry.action)
                .bind(entry.target.as_deref())
                .bind(entry.details.to_string())
                .bind(refused_details.to_string())
                .bind(entry.ip.as_deref());
        }
        script
    }

    fn outputs(batch: &[Self], rows: ScriptRows) -> StoreResult<Vec<bool>> {
        // Statement 0 is BEGIN; statement 1 returns the stored links' tokens.
        let stored: Vec<(String,)> = all_rows(&rows, 1)?;
        Ok(batch
            .iter()
            .map(|job| {
                stored
                    .iter()
                    .any(|(token,)| token == job.link.token_hash.as_str())
            })
            .collect())
    }
}

/// A sign-in link redeemed by a returning member, and the session it opens.
pub struct Redemption {
    pub token_hash: String,
    pub now: i64,
    pub session_id: String,
    pub ip: Option<String>,
    pub device: Option<String>,
    pub refresh_id: String,
    pub refresh_hash: String,
    pub refresh_expires_at: i64,
    pub audit_details: String,
}

/// Five statements a redemption, each going ahead only if the one before
/// changed a row (`changes()` counts the last completed statement's): consume
/// the link if its member is active, stamp the member, open the session, issue
/// its refresh token, audit.
static REDEMPTION: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE magic_links SET consumed_at = ? \
           WHERE token_hash = ? AND {} \
             AND EXISTS (SELECT 1 FROM members m WHERE m.email = magic_links.email AND {}) \
           RETURNING email, redirect_to; \
         UPDATE members SET last_login_at = ? \
           WHERE changes() = 1 AND email = (SELECT email FROM magic_links WHERE token_hash = ?) RETURNING id; \
         INSERT INTO sessions (id, member_id, created_at, ip, device) SELECT ?, id, ?, ?, ? FROM members \
           WHERE changes() = 1 AND email = (SELECT email FROM magic_links WHERE token_hash = ?); \
         INSERT INTO refresh_tokens (id, family_id, member_id, token_hash, created_at, expires_at) \
           SELECT ?, id, member_id, ?, ?, ? FROM sessions WHERE changes() = 1 AND id = ?; \
         INSERT INTO audit_log ({AUDIT_COLUMNS}) \
           SELECT ?, ?, member_id, 'auth.signed_in', member_id, ?, ? FROM sessions WHERE changes() = 1 AND id = ?; ",
        schema::live_link("magic_links", "?"),
        schema::active("m"),
    )
});

impl Grouped for Redemption {
    type Output = Option<Redeemed>;

    fn script(n: usize) -> String {
        format!("BEGIN; {}COMMIT", REDEMPTION.repeat(n))
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
                .bind(r.device.as_deref())
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
                Ok(Some(Redeemed {
                    member_id,
                    redirect_to,
                    created: false,
                }))
            })
            .collect()
    }
}

/// One hit on a fixed-window rate-limit bucket.
pub struct Hit {
    pub bucket: String,
    pub window_secs: i64,
    pub now: i64,
}

impl Grouped for Hit {
    type Output = RateWindow;

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
