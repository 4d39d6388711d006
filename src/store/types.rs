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

#[derive(Debug, Clone)]
pub struct NewMagicLink {
    pub token_hash: TokenHash,
    pub email: Email,
    pub code_hash: TokenHash,
    pub redirect_to: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub ip: Option<String>,
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

#[derive(Debug, Clone)]
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
