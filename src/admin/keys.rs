//! Issuing and revoking API keys. The key is returned once; only the Argon2id
//! hash of its secret is stored.

use serde_json::json;

use super::{Actor, AdminError, AdminService};
use crate::auth::hash_api_key;
use crate::domain::{ApiKey, Member, MemberId, Role};
use crate::store::NewApiKey;

/// What an admin asks for.
#[derive(Debug, Clone)]
pub struct KeyRequest {
    pub name: String,
    pub expires_in_days: Option<u32>,
    /// A subset of the member's roles; `None` means all the roles they hold now.
    pub roles: Option<Vec<Role>>,
}

/// Why a key cannot be asked for as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRequestError {
    #[error("a key's name is 1 to 100 characters")]
    Name,
    #[error("a key lasts at least 1 day")]
    Expiry,
}

impl KeyRequest {
    /// A request with a trimmed name of 1 to 100 characters and, if it expires,
    /// a lifetime of at least a day.
    pub fn new(
        name: &str,
        expires_in_days: Option<u32>,
        roles: Option<Vec<Role>>,
    ) -> Result<Self, KeyRequestError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(KeyRequestError::Name);
        }
        if expires_in_days == Some(0) {
            return Err(KeyRequestError::Expiry);
        }
        Ok(Self {
            name: name.to_owned(),
            expires_in_days,
            roles,
        })
    }
}

/// A freshly issued key: the only moment its secret exists outside the client.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    pub key: ApiKey,
    pub name: String,
    pub roles: Vec<Role>,
    pub expires_at: Option<i64>,
}

/// Generates and hashes a key limited to `request.roles` (each held in `held`),
/// expiring `request.expires_in_days` after `now`.
pub(super) async fn prepare(
    actor: &Actor,
    request: &KeyRequest,
    held: &[Role],
    now: i64,
) -> Result<(IssuedKey, NewApiKey), AdminError> {
    let roles = match &request.roles {
        Some(roles) => {
            if let Some(missing) = roles.iter().find(|r| !held.contains(r)) {
                return Err(AdminError::RoleNotHeld(missing.to_string()));
            }
            roles.clone()
        }
        None => held.to_vec(),
    };
    let key = ApiKey::generate();
    let secret_hash = hash_api_key(&key).await?;
    let expires_at = request
        .expires_in_days
        .map(|days| now + i64::from(days) * 86_400);
    let record = NewApiKey {
        id: key.id().to_owned(),
        name: request.name.clone(),
        secret_hash,
        roles: roles.clone(),
        created_by: Some(actor.id.clone()),
        expires_at,
    };
    let issued = IssuedKey {
        key,
        name: request.name.clone(),
        roles,
        expires_at,
    };
    Ok((issued, record))
}

impl AdminService {
    /// Issues a key for an active member.
    pub async fn issue_key(
        &self,
        actor: &Actor,
        member: &MemberId,
        request: &KeyRequest,
    ) -> Result<(Member, IssuedKey), AdminError> {
        let now = self.clock.now();
        let holder = self
            .store
            .member_by_id(member, now)
            .await?
            .ok_or(AdminError::NotFound("member"))?;
        let (issued, record) = prepare(actor, request, &holder.roles, now).await?;
        let audit = actor
            .audit("apikey.created")
            .target(member.as_str())
            .details(
                json!({ "key": issued.key.prefix(), "name": issued.name, "roles": issued.roles }),
            );
        if !self
            .store
            .create_api_key(member, record, audit, now)
            .await?
        {
            return Err(AdminError::NotFound("active member"));
        }
        Ok((holder, issued))
    }

    pub async fn revoke_key(&self, actor: &Actor, id: &str) -> Result<(), AdminError> {
        let audit = actor
            .audit("apikey.revoked")
            .target(crate::domain::api_key_prefix(id));
        if self
            .store
            .revoke_api_key(id, audit, self.clock.now())
            .await?
        {
            Ok(())
        } else {
            Err(AdminError::NotFound("live API key"))
        }
    }
}
