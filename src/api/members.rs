use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};

use super::api_keys::{IssuedKeyView, KeyRequestBody};
use super::input::{CursorText, EmailText, Opt, RoleText};
use super::paging::{self, CsvResponse};
use super::views::MemberView;
use super::{AdminAuth, ApiTags, TrustedProxies};
use crate::admin::{Actor, AdminService, Onboarding};
use crate::clock::Clock;
use crate::domain::{MemberId, MemberStatus};
use crate::error::ApiError;
use crate::store::{DynStore, MemberFilter, RoleGrant};

pub struct MembersApi {
    pub admin: Arc<AdminService>,
    pub store: DynStore,
    pub clock: Clock,
    pub proxies: TrustedProxies,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct MemberPage {
    pub items: Vec<MemberView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct StatusChange {
    /// Suspending ends every session and stops the member's API keys at once.
    pub status: NewStatus,
}

/// What an admin may set a member's status to (DELETE the member to delete them).
#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename_all = "lowercase")]
pub enum NewStatus {
    Active,
    Suspended,
}

/// A member status to filter by.
#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename_all = "lowercase")]
pub enum StatusFilter {
    Active,
    Suspended,
    Deleted,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct RoleSet {
    /// The member's roles from now on; grants that stay keep their expiry.
    pub roles: Vec<RoleText>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct RoleGrantBody {
    pub role: RoleText,
    /// When the grant ends (e.g. a yearly sustainer); absent means never.
    pub expires_at: Opt<DateTime<Utc>>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct OnboardRequest {
    pub email: EmailText,
    /// Roles besides `member`, which every member has.
    pub roles: Opt<Vec<RoleText>>,
    /// Also issue an API key for the new member, returned once.
    pub api_key: Opt<KeyRequestBody>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Onboarded {
    pub member: MemberView,
    /// The key, shown this once.
    pub api_key: Option<IssuedKeyView>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct SessionsRevoked {
    pub revoked: u64,
}

#[derive(ApiResponse)]
enum Created {
    #[oai(status = 201)]
    Created(Json<Onboarded>),
}

#[derive(ApiResponse)]
enum Deleted {
    /// Deleted (soft): sessions and API keys are revoked.
    #[oai(status = 204)]
    NoContent,
}

pub(crate) fn member_id(raw: &str) -> Result<MemberId, ApiError> {
    MemberId::parse(raw).ok_or_else(|| ApiError::NotFound("no such member".into()))
}

pub(crate) fn actor(auth: &AdminAuth, proxies: &TrustedProxies, req: &Request) -> Actor {
    Actor::new(&auth.0, proxies.client_ip(req))
}

fn filter(
    role: Option<&RoleText>,
    status: Option<StatusFilter>,
    q: Option<&str>,
) -> Result<MemberFilter, ApiError> {
    Ok(MemberFilter {
        role: role.map(RoleText::role).transpose()?,
        status: status.map(|s| match s {
            StatusFilter::Active => MemberStatus::Active,
            StatusFilter::Suspended => MemberStatus::Suspended,
            StatusFilter::Deleted => MemberStatus::Deleted,
        }),
        q: q.map(|q| q.trim().to_lowercase()).filter(|q| !q.is_empty()),
        after: None,
        limit: 0,
    })
}

#[OpenApi(tag = "ApiTags::Members")]
impl MembersApi {
    /// Lists members by creation, with filters; keyset pagination.
    #[oai(path = "/v1/admin/members", method = "get")]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        _auth: AdminAuth,
        role: Query<Option<RoleText>>,
        status: Query<Option<StatusFilter>>,
        q: Query<Option<String>>,
        /// Page size (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
        /// The `next_cursor` of the previous page.
        cursor: Query<Option<CursorText>>,
    ) -> Result<Json<MemberPage>, ApiError> {
        let mut filter = filter(role.0.as_ref(), status.0, q.as_deref())?;
        filter.limit = paging::limit(limit.0)?;
        filter.after = paging::decode_cursor(cursor.0.as_ref())?;
        let members = self.store.list_members(&filter, self.clock.now()).await?;
        Ok(Json(MemberPage {
            next_cursor: paging::next_cursor(&members, filter.limit, |m| m.id.as_str()),
            items: members.iter().map(MemberView::from).collect(),
        }))
    }

    /// All members as CSV (same filters as the list).
    #[oai(path = "/v1/admin/members/export", method = "get")]
    async fn export(
        &self,
        _auth: AdminAuth,
        role: Query<Option<RoleText>>,
        status: Query<Option<StatusFilter>>,
        q: Query<Option<String>>,
    ) -> Result<CsvResponse, ApiError> {
        let base = filter(role.0.as_ref(), status.0, q.as_deref())?;
        let (store, clock) = (self.store.clone(), self.clock.clone());
        let header = [
            "id",
            "email",
            "status",
            "roles",
            "created_at",
            "last_login_at",
        ];
        Ok(paging::csv_export("members.csv", &header, move |after| {
            let (store, clock, mut filter) = (store.clone(), clock.clone(), base.clone());
            async move {
                filter.after = after;
                filter.limit = paging::EXPORT_PAGE;
                let members = store.list_members(&filter, clock.now()).await?;
                let next = (members.len() as i64 == filter.limit)
                    .then(|| members.last().map(|m| m.id.to_string()))
                    .flatten();
                let rows = members
                    .iter()
                    .map(|m| {
                        let view = MemberView::from(m);
                        vec![
                            view.id,
                            view.email,
                            view.status,
                            view.roles.join(";"),
                            view.created_at.to_rfc3339(),
                            view.last_login_at
                                .map(|t| t.to_rfc3339())
                                .unwrap_or_default(),
                        ]
                    })
                    .collect();
                Ok((rows, next))
            }
        }))
    }

    /// Onboards a member directly: allowlists the address, creates the member
    /// with the roles and, if asked, an API key (returned once), in one step.
    #[oai(path = "/v1/admin/members", method = "post")]
    async fn onboard(
        &self,
        auth: AdminAuth,
        body: Json<OnboardRequest>,
        req: &Request,
    ) -> Result<Created, ApiError> {
        let onboarding = Onboarding {
            email: body.email.email()?,
            roles: RoleText::roles(body.roles.0.as_deref().unwrap_or_default())?,
            api_key: body.0.api_key.0.map(|k| k.parse()).transpose()?,
        };
        let actor = actor(&auth, &self.proxies, req);
        let (member, key) = self.admin.onboard(&actor, onboarding).await?;
        Ok(Created::Created(Json(Onboarded {
            member: MemberView::from(&member),
            api_key: key.map(IssuedKeyView::from),
        })))
    }

    #[oai(path = "/v1/admin/members/:id", method = "get")]
    async fn get(&self, _auth: AdminAuth, id: Path<String>) -> Result<Json<MemberView>, ApiError> {
        let member = self
            .store
            .member_by_id(&member_id(&id)?, self.clock.now())
            .await?
            .ok_or_else(|| ApiError::NotFound("no such member".into()))?;
        Ok(Json(MemberView::from(&member)))
    }

    /// Suspends or reactivates a member. An admin cannot suspend themself, nor the last active admin.
    #[oai(path = "/v1/admin/members/:id", method = "patch")]
    async fn patch(
        &self,
        auth: AdminAuth,
        id: Path<String>,
        body: Json<StatusChange>,
        req: &Request,
    ) -> Result<Json<MemberView>, ApiError> {
        let id = member_id(&id)?;
        let status = match body.status {
            NewStatus::Active => MemberStatus::Active,
            NewStatus::Suspended => MemberStatus::Suspended,
        };
        let member = self
            .admin
            .set_status(&actor(&auth, &self.proxies, req), &id, status)
            .await?;
        Ok(Json(MemberView::from(&member)))
    }

    /// Soft-deletes a member, revoking their sessions and API keys.
    #[oai(path = "/v1/admin/members/:id", method = "delete")]
    async fn delete(
        &self,
        auth: AdminAuth,
        id: Path<String>,
        req: &Request,
    ) -> Result<Deleted, ApiError> {
        let id = member_id(&id)?;
        self.admin
            .delete_member(&actor(&auth, &self.proxies, req), &id)
            .await?;
        Ok(Deleted::NoContent)
    }

    /// Sets the member's roles. New roles show in the next access token.
    #[oai(path = "/v1/admin/members/:id/roles", method = "put")]
    async fn set_roles(
        &self,
        auth: AdminAuth,
        id: Path<String>,
        body: Json<RoleSet>,
        req: &Request,
    ) -> Result<Json<MemberView>, ApiError> {
        let (id, roles) = (member_id(&id)?, RoleText::roles(&body.roles)?);
        let member = self
            .admin
            .set_roles(&actor(&auth, &self.proxies, req), &id, &roles)
            .await?;
        Ok(Json(MemberView::from(&member)))
    }

    /// Grants one role, optionally until `expires_at`. Idempotent; granting again sets the expiry.
    #[oai(path = "/v1/admin/members/:id/roles", method = "post")]
    async fn grant_role(
        &self,
        auth: AdminAuth,
        id: Path<String>,
        body: Json<RoleGrantBody>,
        req: &Request,
    ) -> Result<Json<MemberView>, ApiError> {
        let id = member_id(&id)?;
        let grant = RoleGrant {
            role: body.role.role()?,
            expires_at: body.expires_at.0.map(|t| t.timestamp()),
        };
        let member = self
            .admin
            .grant_role(&actor(&auth, &self.proxies, req), &id, grant)
            .await?;
        Ok(Json(MemberView::from(&member)))
    }

    /// Revokes one role. Idempotent.
    #[oai(path = "/v1/admin/members/:id/roles/:role", method = "delete")]
    async fn revoke_role(
        &self,
        auth: AdminAuth,
        id: Path<String>,
        role: Path<RoleText>,
        req: &Request,
    ) -> Result<Json<MemberView>, ApiError> {
        let (id, role) = (member_id(&id)?, role.role()?);
        let member = self
            .admin
            .revoke_role(&actor(&auth, &self.proxies, req), &id, &role)
            .await?;
        Ok(Json(MemberView::from(&member)))
    }

    /// Ends every session of the member (their refresh and access tokens stop working).
    #[oai(path = "/v1/admin/members/:id/sessions/revoke", method = "post")]
    async fn revoke_sessions(
        &self,
        auth: AdminAuth,
        id: Path<String>,
        req: &Request,
    ) -> Result<Json<SessionsRevoked>, ApiError> {
        let id = member_id(&id)?;
        let revoked = self
            .admin
            .revoke_sessions(&actor(&auth, &self.proxies, req), &id)
            .await?;
        Ok(Json(SessionsRevoked { revoked }))
    }
}
