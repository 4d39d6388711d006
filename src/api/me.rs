use std::sync::Arc;

use poem::Request;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};

use super::security::MemberAuth;
use super::views::MemberView;
use super::{ApiTags, BearerAuth, TrustedProxies};
use crate::auth::AuthService;
use crate::error::ApiError;

pub struct MeApi {
    pub auth: Arc<AuthService>,
    pub proxies: TrustedProxies,
}

#[derive(ApiResponse)]
enum Deleted {
    /// The membership is deleted and every session revoked.
    #[oai(status = 204)]
    NoContent,
}

#[OpenApi(tag = "ApiTags::Me")]
impl MeApi {
    /// The caller: the signed-in member, or the member an API key belongs to (with
    /// the roles that key is limited to).
    #[oai(path = "/v1/me", method = "get")]
    async fn me(&self, auth: MemberAuth) -> Result<Json<MemberView>, ApiError> {
        Ok(Json(MemberView::from(&auth.0.member)))
    }

    /// Deletes the caller's own membership (soft delete) and revokes all their sessions.
    #[oai(path = "/v1/me", method = "delete")]
    async fn delete_me(&self, auth: BearerAuth, req: &Request) -> Result<Deleted, ApiError> {
        if auth.0.api_key.is_some() {
            return Err(ApiError::Forbidden(
                "a token obtained with an API key cannot delete its member; sign in to leave"
                    .into(),
            ));
        }
        let ip = self.proxies.client_ip(req);
        self.auth.sessions().delete_self(&auth.0, ip).await?;
        Ok(Deleted::NoContent)
    }
}
