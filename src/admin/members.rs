//! Members and roles, with the guard rails: an admin cannot suspend, delete or
//! demote themself, and (in the store) the last active admin keeps the role.

use serde_json::json;

use super::{Actor, AdminError, AdminService, KeyRequest};
use crate::domain::{Email, Member, MemberId, MemberStatus, Role};
use crate::store::RoleGrant;

/// A direct onboarding: allowlist, member and optionally an API key in one step.
#[derive(Debug)]
pub struct Onboarding {
    pub email: Email,
    pub roles: Vec<Role>,
    pub api_key: Option<KeyRequest>,
}

impl AdminService {
    pub async fn set_status(
        &self,
        actor: &Actor,
        id: &MemberId,
        status: MemberStatus,
    ) -> Result<Member, AdminError> {
        if actor.is(id) && status != MemberStatus::Active {
            return Err(AdminError::SelfAction("suspend"));
        }
        let audit = actor
            .audit("member.status_changed")
            .target(id.as_str())
            .details(json!({ "status": status.as_str() }));
        self.store
            .set_member_status(id, status, audit, self.clock.now())
            .await?
            .ok_or(AdminError::NotFound("member"))
    }

    pub async fn delete_member(&self, actor: &Actor, id: &MemberId) -> Result<(), AdminError> {
        if actor.is(id) {
            return Err(AdminError::SelfAction("delete"));
        }
        let audit = actor.audit("member.deleted").target(id.as_str());
        if self
            .store
            .delete_member(id, audit, self.clock.now())
            .await?
        {
            Ok(())
        } else {
            Err(AdminError::NotFound("member"))
        }
    }

    pub async fn set_roles(
        &self,
        actor: &Actor,
        id: &MemberId,
        roles: &[Role],
    ) -> Result<Member, AdminError> {
        if actor.is(id) && !roles.iter().any(|r| r.as_str() == Role::ADMIN) {
            return Err(AdminError::SelfAction("remove the admin role from"));
        }
        // `member` is every member's base role: setting the list keeps it.
        let mut roles = roles.to_vec();
        if !roles.iter().any(|r| r.as_str() == Role::MEMBER) {
            roles.push(Role::member());
            roles.sort();
        }
        let roles = roles.as_slice();
        let audit = actor
            .audit("member.roles_set")
            .target(id.as_str())
            .details(json!({ "roles": roles }));
        self.store
            .set_member_roles(id, roles, audit, self.clock.now())
            .await?
            .ok_or(AdminError::NotFound("member"))
    }

    pub async fn grant_role(
        &self,
        actor: &Actor,
        id: &MemberId,
        grant: RoleGrant,
    ) -> Result<Member, AdminError> {
        if actor.is(id) && grant.role.as_str() == Role::ADMIN && grant.expires_at.is_some() {
            return Err(AdminError::SelfAction("put an expiry on the admin role of"));
        }
        let audit = actor
            .audit("member.role_granted")
            .target(id.as_str())
            .details(json!({ "role": grant.role, "expires_at": grant.expires_at }));
        self.store
            .grant_member_role(id, &grant, audit, self.clock.now())
            .await?
            .ok_or(AdminError::NotFound("member"))
    }

    pub async fn revoke_role(
        &self,
        actor: &Actor,
        id: &MemberId,
        role: &Role,
    ) -> Result<Member, AdminError> {
        if actor.is(id) && role.as_str() == Role::ADMIN {
            return Err(AdminError::SelfAction("remove the admin role from"));
        }
        let audit = actor
            .audit("member.role_revoked")
            .target(id.as_str())
            .details(json!({ "role": role }));
        self.store
            .revoke_member_role(id, role, audit, self.clock.now())
            .await?
            .ok_or(AdminError::NotFound("member"))
    }

    pub async fn revoke_sessions(&self, actor: &Actor, id: &MemberId) -> Result<u64, AdminError> {
        let audit = actor.audit("member.sessions_revoked").target(id.as_str());
        self.store
            .revoke_member_sessions(id, audit, self.clock.now())
            .await?
            .ok_or(AdminError::NotFound("member"))
    }

    /// Creates the member (and key, shown once) in one transaction.
    pub async fn onboard(
        &self,
        actor: &Actor,
        onboarding: Onboarding,
    ) -> Result<(Member, Option<super::IssuedKey>), AdminError> {
        let mut allowed = onboarding.roles.clone();
        allowed.push(Role::member());
        let key = match &onboarding.api_key {
            Some(request) => {
                Some(super::keys::prepare(actor, request, &allowed, self.clock.now()).await?)
            }
            None => None,
        };
        let audit = actor.audit("member.onboarded").details(json!({
            "email": onboarding.email.as_str(),
            "roles": onboarding.roles,
            "api_key": key.as_ref().map(|(issued, _)| issued.key.prefix()),
        }));
        let (issued, record) = key.unzip();
        let member = self
            .store
            .onboard_member(
                &onboarding.email,
                &onboarding.roles,
                record,
                audit,
                self.clock.now(),
            )
            .await?;
        Ok((member, issued))
    }

    pub async fn create_role(
        &self,
        actor: &Actor,
        role: &Role,
        description: &str,
    ) -> Result<(), AdminError> {
        let audit = actor.audit("role.created").target(role.as_str());
        Ok(self
            .store
            .create_role(role, description, audit, self.clock.now())
            .await?)
    }

    pub async fn delete_role(
        &self,
        actor: &Actor,
        role: &Role,
        force: bool,
    ) -> Result<(), AdminError> {
        let audit = actor.audit("role.deleted").target(role.as_str());
        Ok(self
            .store
            .delete_role(role, force, audit, self.clock.now())
            .await?)
    }
}
