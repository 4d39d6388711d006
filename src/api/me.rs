use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::Request;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::security::MemberAuth;
use super::views::{MemberView, timestamp};
use super::{ApiTags, BearerAuth, TrustedProxies};
use crate::auth::AuthService;
use crate::error::ApiError;

pub struct MeApi {
    pub auth: Arc<AuthService>,
    pub proxies: TrustedProxies,
}

/// One of the caller's sessions.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct SessionView {
    pub id: String,
    /// The browser or client it was opened on, e.g. `Firefox on Android`.
    pub device: Option<String>,
    pub signed_in_at: DateTime<Utc>,
    /// The last time its refresh token was exchanged (at least every access-token lifetime while in use).
    pub last_used_at: DateTime<Utc>,
    pub ip: Option<String>,
    /// True for the session this request was made with.
    pub current: bool,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct SessionList {
    pub items: Vec<SessionView>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct SessionsEnded {
    pub ended: u64,
}

#[derive(ApiResponse)]
enum Ended {
    /// The session is ended: its tokens stop working at once.
    #[oai(status = 204)]
    NoContent,
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

    /// The caller's sessions that are still live, newest first.
    #[oai(path = "/v1/me/sessions", method = "get")]
    async fn sessions(&self, auth: BearerAuth) -> Result<Json<SessionList>, ApiError> {
        let current = &auth.0.session_id;
        let sessions = self.auth.sessions().own_sessions(&auth.0).await?;
        Ok(Json(SessionList {
            items: sessions
                .into_iter()
                .map(|s| SessionView {
                    current: &s.id == current,
                    id: s.id,
                    device: s.device,
                    signed_in_at: timestamp(s.created_at),
                    last_used_at: timestamp(s.last_used_at),
                    ip: s.ip,
                })
                .collect(),
        }))
    }

    /// Ends one of the caller's sessions (404 if it is not theirs or already ended).
    #[oai(path = "/v1/me/sessions/:id", method = "delete")]
    async fn end_session(
        &self,
        auth: BearerAuth,
        id: Path<String>,
        req: &Request,
    ) -> Result<Ended, ApiError> {
        let ip = self.proxies.client_ip(req);
        if self
            .auth
            .sessions()
            .end_own_session(&auth.0, &id, ip)
            .await?
        {
            Ok(Ended::NoContent)
        } else {
            Err(ApiError::NotFound("no such live session of yours".into()))
        }
    }

    /// Ends every session of the caller except the one this request comes from.
    #[oai(path = "/v1/me/sessions/revoke-others", method = "post")]
    async fn end_other_sessions(
        &self,
        auth: BearerAuth,
        req: &Request,
    ) -> Result<Json<SessionsEnded>, ApiError> {
        let ip = self.proxies.client_ip(req);
        let ended = self.auth.sessions().end_other_sessions(&auth.0, ip).await?;
        Ok(Json(SessionsEnded { ended }))
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
