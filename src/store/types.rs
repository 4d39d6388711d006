//! Values that cross the store boundary.

use crate::domain::{Email, Member, Role, TokenHash};

/// One row of the audit log, before it is written.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    /// Member id or API key id of whoever acted; `None` for anonymous requests.
    pub actor: Option<String>,
    pub action: &'static str,
    pub target: Option<String>,
    pub details: serde_json::Value,
    pub ip: Option<String>,
}

impl AuditEntry {
    pub fn new(action: &'static str) -> Self {
        Self {
            actor: None,
            action,
            target: None,
            details: serde_json::Value::Object(Default::default()),
            ip: None,
        }
    }

    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    pub fn ip(mut self, ip: Option<String>) -> Self {
        self.ip = ip;
        self
    }

    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    /// This entry with `key` set to `value` among its details.
    pub(super) fn with_detail(mut self, key: &str, value: bool) -> Self {
        if let Some(fields) = self.details.as_object_mut() {
            fields.insert(key.to_owned(), value.into());
        }
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateWindow {
    /// Hits in the current window, this one included.
    pub count: i64,
    /// When the current window ends (unix seconds).
    pub resets_at: i64,
}

#[derive(Debug, Clone)]
pub struct EligibleEntry {
    pub email: Email,
    pub roles: Vec<Role>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpsertCounts {
    pub added: u64,
    pub updated: u64,
    pub unchanged: u64,
}

impl std::ops::AddAssign for UpsertCounts {
    fn add_assign(&mut self, other: Self) {
        self.added += other.added;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
    }
}

#[derive(Debug, Clone)]
pub struct NewMagicLink {
    pub token_hash: TokenHash,
    pub email: Email,
    pub code_hash: TokenHash,
    pub redirect_to: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub ip: Option<String>,
    /// The asking browser, as a person reads it ("Firefox on Android").
    pub device: Option<String>,
}

/// A mail to put in the outbox. The body holds secrets (the link and code), so it
/// arrives here sealed; the store never sees it in the clear.
#[derive(Debug, Clone)]
pub struct NewMail {
    pub id: String,
    pub kind: &'static str,
    pub recipient: String,
    pub subject: String,
    pub sealed_body: String,
    pub created_at: i64,
    /// After this the mail is pointless (its link has expired) and is not sent.
    pub expires_at: Option<i64>,
}

/// Who holds a claim's lease: a fresh random token per claim, written on every
/// row it leases. Renewals and outcomes name it, and change only the rows it
/// still holds, so a claimer whose lease ran out (and was claimed again by
/// someone else) changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaseToken(String);

impl LeaseToken {
    /// A token no other claim has: a random (v4) UUID.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxMail {
    pub id: String,
    pub kind: String,
    pub recipient: String,
    pub subject: String,
    pub sealed_body: String,
    pub attempts: i64,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

/// How a delivery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailResult {
    Sent,
    /// Try again at `next_attempt_at`.
    Retry {
        next_attempt_at: i64,
        error: String,
    },
    /// Given up: a permanent refusal, or too many attempts.
    Failed {
        error: String,
    },
    /// The link it carries expired before it could be sent.
    Expired,
}

#[derive(Debug, Clone)]
pub struct NewRefreshToken {
    pub id: String,
    pub token_hash: TokenHash,
    pub expires_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: String,
    pub refresh: NewRefreshToken,
    pub ip: Option<String>,
    /// The browser or client it is opened on, as a person reads it.
    pub device: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SignedIn {
    pub member: Member,
    pub session_id: String,
    pub redirect_to: Option<String>,
    /// True when this sign-in created the member.
    pub created: bool,
}

#[derive(Debug, Clone)]
pub enum RefreshOutcome {
    Rotated {
        member: Member,
        session_id: String,
    },
    /// A rotated token was presented again: the whole family is now revoked.
    Reused {
        member_id: String,
        session_id: String,
    },
    /// Unknown, expired or revoked, or the member may no longer sign in.
    Invalid,
}

/// Where a mail is in its life. `queued` is the only state that changes; the
/// other three are final (an admin may send a `failed` one back to `queued`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailStatus {
    Queued,
    Sent,
    Failed,
    Expired,
}

impl MailStatus {
    pub const ALL: [MailStatus; 4] = [Self::Queued, Self::Sent, Self::Failed, Self::Expired];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// An outbox row as operators see it: everything but the (sealed) body.
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    pub id: String,
    pub kind: String,
    pub recipient: String,
    pub subject: String,
    pub status: MailStatus,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub next_attempt_at: i64,
    pub sent_at: Option<i64>,
    pub expires_at: Option<i64>,
}

/// One page of the outbox, newest first.
#[derive(Debug, Clone, Copy)]
pub struct OutboxQuery<'a> {
    pub status: Option<MailStatus>,
    /// Only mails older than this id (the last id of the previous page).
    pub before: Option<&'a str>,
    pub limit: i64,
}

/// How many mails are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    pub queued: i64,
    pub sent: i64,
    pub failed: i64,
    pub expired: i64,
}

/// What asking to send a failed mail again did.
#[derive(Debug, Clone)]
pub enum RequeueOutcome {
    /// It is queued again, due now.
    Requeued(OutboxEntry),
    NotFound,
    /// Only a failed mail can be requeued.
    NotFailed(MailStatus),
}
