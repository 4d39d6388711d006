//! What admins do, as business operations: each checks the guard rails, writes
//! through one store call (with its audit row) and reports what happened.
//! Handlers parse HTTP into these calls; the CLI calls them too.

mod keys;
mod mail;
mod members;
mod roster;

use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::Notify;

pub use keys::{IssuedKey, KeyRequest, KeyRequestError};
pub use members::Onboarding;

use crate::auth::{AuthError, Principal};
use crate::clock::Clock;
use crate::domain::MemberId;
use crate::store::{AuditEntry, DynStore, MailStatus, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("no such {0}")]
    NotFound(&'static str),
    /// An admin tried to lock themself out.
    #[error("an admin cannot {0} themself; ask another admin")]
    SelfAction(&'static str),
    #[error("the member does not hold the role `{0}`, so a key cannot carry it")]
    RoleNotHeld(String),
    #[error("only a failed mail can be retried; this one is {}", .0.as_str())]
    MailNotFailed(MailStatus),
}

/// Who acts, as the audit log records them.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The member id, or the API key prefix when a key was used.
    pub id: String,
    pub member_id: MemberId,
    pub ip: Option<String>,
}

impl Actor {
    pub fn new(principal: &Principal, ip: Option<IpAddr>) -> Self {
        Self {
            id: principal.actor(),
            member_id: principal.member.id.clone(),
            ip: ip.map(|ip| ip.to_string()),
        }
    }

    /// The operator at the command line: no member, no IP.
    pub fn cli() -> Self {
        Self {
            id: "cli".into(),
            member_id: MemberId::new(),
            ip: None,
        }
    }

    pub fn audit(&self, action: &'static str) -> AuditEntry {
        AuditEntry::new(action)
            .actor(self.id.clone())
            .ip(self.ip.clone())
    }

    fn is(&self, member: &MemberId) -> bool {
        &self.member_id == member
    }
}

/// The admin operations. Cheap to share.
pub struct AdminService {
    store: DynStore,
    clock: Clock,
    /// Rings the mail worker when a mail is queued again.
    mail_wake: Arc<Notify>,
}

impl AdminService {
    pub fn new(store: DynStore, clock: Clock, mail_wake: Arc<Notify>) -> Self {
        Self {
            store,
            clock,
            mail_wake,
        }
    }

    pub fn store(&self) -> &DynStore {
        &self.store
    }
}
