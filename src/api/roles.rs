use std::sync::Arc;

use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::TrustedProxies;
use super::members::actor;
use super::{AdminAuth, ApiTags};
use crate::admin::AdminService;
use crate::clock::Clock;
use crate::domain::Role;

use super::input::{Opt, RoleText, Text};
use crate::error::ApiError;
use crate::store::DynStore;

pub struct RolesApi {
    pub admin: Arc<AdminService>,
    pub store: DynStore,
    pub clock: Clock,
    pub proxies: TrustedProxies,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct RoleView {
    pub name: String,
    pub description: String,
    /// Built-in roles (admin, member, active, sustainer) cannot be deleted.
    pub builtin: bool,
    /// Members holding it now.
    pub members: i64,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct NewRole {
    pub name: RoleText,
    pub description: Opt<Text>,
}

#[derive(ApiResponse)]
enum RoleCreated {
    #[oai(status = 201)]
    Created(Json<RoleView>),
}

#[derive(ApiResponse)]
enum RoleDeleted {
    #[oai(status = 204)]
    NoContent,
}

#[OpenApi(tag = "ApiTags::Roles")]
impl RolesApi {
    /// Every role, built-in and custom, with how many members hold it.
    #[oai(path = "/v1/admin/roles", method = "get")]
    async fn list(&self, _auth: AdminAuth) -> Result<Json<Vec<RoleView>>, ApiError> {
        let roles = self.store.list_roles(self.clock.now()).await?;
        Ok(Json(
            roles
                .into_iter()
                .map(|r| RoleView {
                    name: r.name,
                    description: r.description,
                    builtin: r.builtin,
                    members: r.members,
                })
                .collect(),
        ))
    }

    /// Creates a custom role (409 if it exists).
    #[oai(path = "/v1/admin/roles", method = "post")]
    async fn create(
        &self,
        auth: AdminAuth,
        body: Json<NewRole>,
        req: &Request,
    ) -> Result<RoleCreated, ApiError> {
        let role = body.name.role()?;
        let description = body.description.0.as_deref().map_or("", str::trim);
        self.admin
            .create_role(&actor(&auth, &self.proxies, req), &role, description)
            .await?;
        Ok(RoleCreated::Created(Json(RoleView {
            name: role.to_string(),
            description: description.to_owned(),
            builtin: false,
            members: 0,
        })))
    }

    /// Deletes a custom role. One still granted is refused (409) unless
    /// `force=true`, which revokes those grants too.
    #[oai(path = "/v1/admin/roles/:name", method = "delete")]
    async fn delete(
        &self,
        auth: AdminAuth,
        name: Path<String>,
        force: Query<Option<bool>>,
        req: &Request,
    ) -> Result<RoleDeleted, ApiError> {
        let role = Role::parse(&name).map_err(|_| ApiError::NotFound("no such role".into()))?;
        self.admin
            .delete_role(
                &actor(&auth, &self.proxies, req),
                &role,
                force.unwrap_or(false),
            )
            .await?;
        Ok(RoleDeleted::NoContent)
    }
}
