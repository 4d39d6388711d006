//! What admins do, as business operations: each checks the guard rails, writes
//! through one store call (with its audit row) and reports what happened.
//! Handlers parse HTTP into these calls; the CLI calls them too.

mod keys;
mod members;

use std::net::IpAddr;

pub use keys::{IssuedKey, KeyRequest};
pub use members::Onboarding;

use crate::auth::{AuthError, Principal};
use crate::clock::Clock;
use crate::domain::MemberId;
use crate::store::{AuditEntry, DynStore, StoreError};

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
}

impl AdminService {
    pub fn new(store: DynStore, clock: Clock) -> Self {
        Self { store, clock }
    }

    pub fn store(&self) -> &DynStore {
        &self.store
    }
}
