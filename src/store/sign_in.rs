//! Signing in: who may ask for a link, asking for one, typing its code, and
//! redeeming it, which creates the member on their first sign-in.
//!
//! Link requests and returning members' redemptions are the hot writes; each
//! backend does them in one round trip (see [`Backend::request_link`] and
//! [`Backend::redeem_for_returning_member`]). Everything else is written here.

use std::sync::LazyLock;

use super::audit::insert_audit;
use super::backend::{Backend, LinkAudit, Redeemed, SqlStore};
use super::members::load_member;
use super::sql::{Executor, query};
use super::webhooks::{listened_to, member_data, record_event};
use super::{
    AuditEntry, NewMagicLink, NewMail, NewSession, RateWindow, SignedIn, StoreError, StoreResult,
    schema,
};
use crate::domain::{Email, EventType, MemberId, MemberStatus, Role, TokenHash};

/// The detail a link request's audit row carries: whether the address may sign in.
const ELIGIBLE: &str = "eligible";

#[async_trait::async_trait]
pub trait SignInStore {
    /// Counts one hit in the fixed window of each of `buckets` and returns each
    /// window's state, in the order given; a bucket named twice counts once.
    async fn hit_rate_limits(
        &self,
        buckets: &[&str],
        window_secs: i64,
        now: i64,
    ) -> StoreResult<Vec<RateWindow>>;

    /// [`SignInStore::hit_rate_limits`] for a single bucket.
    async fn hit_rate_limit(
        &self,
        bucket: &str,
        window_secs: i64,
        now: i64,
    ) -> StoreResult<RateWindow> {
        self.hit_rate_limits(&[bucket], window_secs, now)
            .await?
            .pop()
            .ok_or_else(|| StoreError::Corrupt(format!("rate limit bucket {bucket} not returned")))
    }

    /// True when `email` may receive a sign-in link: an active member, or an
    /// allowlisted address that is not (yet) a member.
    async fn is_eligible(&self, email: &Email) -> StoreResult<bool>;

    /// Stores a sign-in link and the mail that carries it, atomically with the
    /// check that `link.email` may sign in (as [`SignInStore::is_eligible`]
    /// decides); records `audit` either way, with `eligible` added to its
    /// details. True when the link was stored.
    async fn create_magic_link(
        &self,
        link: NewMagicLink,
        mail: NewMail,
        audit: AuditEntry,
    ) -> StoreResult<bool>;

    /// Spends one code attempt on every live link of `email` and returns their
    /// `(token hash, code hash)` pairs, so the caller can compare the typed code.
    async fn spend_code_attempt(
        &self,
        email: &Email,
        now: i64,
        max_attempts: i64,
    ) -> StoreResult<Vec<(TokenHash, TokenHash)>>;

    /// Consumes a live link and signs its owner in, in one transaction: creates
    /// the member on first sign-in (with `member` plus the pre-assigned roles),
    /// opens a session and stores its first refresh token. `None` when the link is
    /// unknown, used, expired, or its owner may not sign in.
    async fn redeem_magic_link(
        &self,
        token_hash: &TokenHash,
        session: NewSession,
        now: i64,
    ) -> StoreResult<Option<SignedIn>>;
}

static IS_ELIGIBLE: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {}", schema::eligible("$1")));

/// `$1` the link's token hash, `$2` now.
static CONSUME_LINK: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE magic_links SET consumed_at = $2 WHERE token_hash = $1 AND {} \
         RETURNING email, redirect_to",
        schema::live_link("magic_links", "$2")
    )
});

#[async_trait::async_trait]
impl<B: Backend> SignInStore for SqlStore<B> {
    async fn hit_rate_limits(
        &self,
        buckets: &[&str],
        window_secs: i64,
        now: i64,
    ) -> StoreResult<Vec<RateWindow>> {
        // A bucket named twice counts once: one request is one hit (and
        // Postgres refuses to update one row twice in a statement).
        let mut distinct: Vec<&str> = buckets.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        let windows = self
            .backend
            .hit_rate_limits(&distinct, window_secs, now)
            .await?;
        buckets
            .iter()
            .map(|bucket| {
                distinct
                    .iter()
                    .position(|d| d == bucket)
                    .and_then(|i| windows.get(i).copied())
                    .ok_or_else(|| StoreError::Corrupt(format!("rate limit bucket {bucket}")))
            })
            .collect()
    }

    async fn is_eligible(&self, email: &Email) -> StoreResult<bool> {
        let (eligible,): (bool,) = query(&IS_ELIGIBLE)
            .bind(email.as_str())
            .fetch_one(&mut self.backend.reader())
            .await?;
        Ok(eligible)
    }

    async fn create_magic_link(
        &self,
        link: NewMagicLink,
        mail: NewMail,
        audit: AuditEntry,
    ) -> StoreResult<bool> {
        let audit = LinkAudit {
            refused_details: audit.clone().with_detail(ELIGIBLE, false).details,
            entry: audit.with_detail(ELIGIBLE, true),
        };
        self.backend.request_link(link, mail, audit).await
    }

    async fn spend_code_attempt(
        &self,
        email: &Email,
        now: i64,
        max_attempts: i64,
    ) -> StoreResult<Vec<(TokenHash, TokenHash)>> {
        let rows: Vec<(String, String)> = query(
            "UPDATE magic_links SET attempts = attempts + 1 \
             WHERE email = $1 AND consumed_at IS NULL AND expires_at > $2 AND attempts < $3 \
             RETURNING token_hash, code_hash",
        )
        .bind(email.as_str())
        .bind(now)
        .bind(max_attempts)
        .fetch_all(&mut *self.backend.write().await?)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(token, code)| (TokenHash::from_stored(token), TokenHash::from_stored(code)))
            .collect())
    }

    async fn redeem_magic_link(
        &self,
        token_hash: &TokenHash,
        session: NewSession,
        now: i64,
    ) -> StoreResult<Option<SignedIn>> {
        let redeemed = match self
            .backend
            .redeem_for_returning_member(token_hash, &session, now)
            .await?
        {
            Some(redeemed) => redeemed,
            None => match self.redeem_in_general(token_hash, &session, now).await? {
                Some(redeemed) => redeemed,
                None => return Ok(None),
            },
        };
        // Read after commit, from a reader, so that SQLite's writer is not held for it.
        let member = load_member(&mut self.backend.reader(), &redeemed.member_id, now)
            .await?
            .ok_or_else(|| {
                StoreError::Corrupt(format!("member {} vanished", redeemed.member_id))
            })?;
        Ok(Some(SignedIn {
            member,
            session_id: session.id,
            redirect_to: redeemed.redirect_to,
            created: redeemed.created,
        }))
    }
}

impl<B: Backend> SqlStore<B> {
    /// Every redemption the one-round-trip path leaves: a first sign-in, which
    /// creates the member, and links that are refused (unknown, used, expired,
    /// or their member may not sign in), which change nothing.
    async fn redeem_in_general(
        &self,
        token_hash: &TokenHash,
        session: &NewSession,
        now: i64,
    ) -> StoreResult<Option<Redeemed>> {
        let mut tx = self.backend.begin().await?;
        let link: Option<(String, Option<String>)> = query(&CONSUME_LINK)
            .bind(token_hash.as_str())
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
        let Some((email, redirect_to)) = link else {
            return Ok(None);
        };
        let existing: Option<(String, String)> =
            query("UPDATE members SET last_login_at = $2 WHERE email = $1 RETURNING id, status")
                .bind(&email)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
        let (member_id, created) = match existing {
            Some((id, status)) if schema::member_status(&status)? == MemberStatus::Active => {
                (id, false)
            }
            // Suspended or deleted: dropping `tx` rolls the consumption back.
            Some(_) => return Ok(None),
            None => match enroll(&mut *tx, &email, now).await? {
                Some(enrolled) => enrolled,
                None => return Ok(None),
            },
        };
        open_session(&mut *tx, session, &member_id, created, now).await?;
        // Only a first sign-in creates a member, and only a listener needs it read.
        if created && listened_to(&mut *tx, EventType::MemberCreated).await? {
            let member = load_member(&mut *tx, &member_id, now)
                .await?
                .ok_or_else(|| StoreError::Corrupt(format!("member {member_id} vanished")))?;
            let data = serde_json::json!({ "member": member_data(&member), "via": "sign_in" });
            record_event(&mut *tx, EventType::MemberCreated, data, now).await?;
        }
        B::commit(tx).await?;
        Ok(Some(Redeemed {
            member_id,
            redirect_to,
            created,
        }))
    }
}

/// Makes the member for a first sign-in of an allowlisted address, with
/// `member` and the roles its allowlist entry preassigns, and marks the entry
/// claimed. The member's id and whether this created them (a concurrent first
/// sign-in may have won), or `None` when the address is no longer allowlisted
/// or its member may not sign in.
async fn enroll(
    db: &mut impl Executor,
    email: &str,
    now: i64,
) -> StoreResult<Option<(String, bool)>> {
    let entry: Option<(String,)> = query("SELECT roles FROM eligible_emails WHERE email = $1")
        .bind(email)
        .fetch_optional(db)
        .await?;
    let Some((preassigned,)) = entry else {
        return Ok(None);
    };
    let id = MemberId::new().to_string();
    // Two links of one new address redeemed at once race to create the member.
    // SQLite serialises them; on Postgres the loser waits here for the
    // winner's commit and then signs in to the member it created.
    let inserted = query(
        "INSERT INTO members (id, email, status, created_at, last_login_at) \
         VALUES ($1, $2, 'active', $3, $3) ON CONFLICT (email) DO NOTHING",
    )
    .bind(&id)
    .bind(email)
    .bind(now)
    .execute(db)
    .await?;
    if inserted == 0 {
        let (id, status): (String, String) =
            query("UPDATE members SET last_login_at = $2 WHERE email = $1 RETURNING id, status")
                .bind(email)
                .bind(now)
                .fetch_one(db)
                .await?;
        let active = schema::member_status(&status)? == MemberStatus::Active;
        return Ok(active.then_some((id, false)));
    }
    // A preassigned custom role deleted since is skipped.
    let roles =
        std::iter::once(Role::MEMBER).chain(preassigned.split(',').filter(|r| !r.is_empty()));
    for role in roles {
        query(
            "INSERT INTO member_roles (member_id, role, granted_at) \
             SELECT $1, name, $3 FROM roles WHERE name = $2 ON CONFLICT DO NOTHING",
        )
        .bind(&id)
        .bind(role)
        .bind(now)
        .execute(db)
        .await?;
    }
    query("UPDATE eligible_emails SET claimed_by = $2 WHERE email = $1")
        .bind(email)
        .bind(&id)
        .execute(db)
        .await?;
    Ok(Some((id, true)))
}

/// Opens the session a sign-in starts, with its first refresh token, and audits it.
async fn open_session(
    db: &mut impl Executor,
    session: &NewSession,
    member_id: &str,
    created: bool,
    now: i64,
) -> StoreResult<()> {
    query(
        "INSERT INTO sessions (id, member_id, created_at, ip, device) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&session.id)
    .bind(member_id)
    .bind(now)
    .bind(session.ip.as_deref())
    .bind(session.device.as_deref())
    .execute(db)
    .await?;
    query(
        "INSERT INTO refresh_tokens (id, family_id, member_id, token_hash, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&session.refresh.id)
    .bind(&session.id)
    .bind(member_id)
    .bind(session.refresh.token_hash.as_str())
    .bind(now)
    .bind(session.refresh.expires_at)
    .execute(db)
    .await?;
    insert_audit(db, sign_in_audit(session, member_id, created), now).await
}

/// The audit row of a sign-in.
fn sign_in_audit(session: &NewSession, member_id: &str, created: bool) -> AuditEntry {
    AuditEntry::new("auth.signed_in")
        .actor(member_id)
        .target(member_id)
        .ip(session.ip.clone())
        .details(sign_in_details(session, created))
}

/// The details of a sign-in's audit row; the one-round-trip paths of
/// [`Backend::redeem_for_returning_member`] write the same.
pub fn sign_in_details(session: &NewSession, created: bool) -> serde_json::Value {
    serde_json::json!({ "session": session.id, "new_member": created })
}
