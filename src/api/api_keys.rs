use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::TrustedProxies;
use super::input::{CursorText, LabelText, Opt, RoleText};
use super::members::{actor, member_id};
use super::paging;
use super::views::timestamp;
use super::{AdminAuth, ApiTags, KeyAuth};
use crate::admin::AdminService;
use crate::admin::{IssuedKey, KeyRequest};
use crate::auth::AuthService;
use crate::domain::api_key_prefix;
use crate::error::ApiError;
use crate::store::{ApiKeyInfo, DynStore};

pub struct ApiKeysApi {
    pub admin: Arc<AdminService>,
    pub auth: Arc<AuthService>,
    pub store: DynStore,
    pub proxies: TrustedProxies,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct KeyRequestBody {
    /// What the key is for, e.g. the integration's name.
    pub name: LabelText,
    /// Days until the key stops working; absent means never.
    #[oai(validator(minimum(value = "1"), maximum(value = "36500")))]
    pub expires_in_days: Opt<u32>,
    /// Roles the key may use, a subset of the member's (409 `role_not_held`
    /// otherwise); absent means all the member holds now.
    pub roles: Opt<Vec<RoleText>>,
}

impl KeyRequestBody {
    pub fn parse(self) -> Result<KeyRequest, ApiError> {
        let roles = self
            .roles
            .0
            .map(|roles| {
                roles
                    .iter()
                    .map(RoleText::role)
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let name = self
            .name
            .text()
            .ok_or(crate::admin::KeyRequestError::Name)?;
        Ok(KeyRequest::new(name, self.expires_in_days.0, roles)?)
    }
}

/// A new key. `key` is shown this once and cannot be recovered.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct IssuedKeyView {
    pub id: String,
    /// `gh_<public id>_<secret>`: send as `Authorization: ApiKey …` or `X-API-Key: …`.
    pub key: String,
    pub prefix: String,
    pub name: String,
    pub roles: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl From<IssuedKey> for IssuedKeyView {
    fn from(issued: IssuedKey) -> Self {
        Self {
            id: issued.key.id().to_owned(),
            key: issued.key.expose(),
            prefix: issued.key.prefix(),
            name: issued.name,
            roles: issued.roles.iter().map(ToString::to_string).collect(),
            expires_at: issued.expires_at.map(timestamp),
        }
    }
}

/// A key as listed: never its secret.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ApiKeyView {
    pub id: String,
    pub prefix: String,
    pub member_id: String,
    pub email: String,
    pub name: String,
    pub roles: Vec<String>,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<ApiKeyInfo> for ApiKeyView {
    fn from(k: ApiKeyInfo) -> Self {
        Self {
            prefix: api_key_prefix(&k.id),
            roles: k
                .roles
                .split(',')
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .collect(),
            id: k.id,
            member_id: k.member_id,
            email: k.email,
            name: k.name,
            created_by: k.created_by,
            created_at: timestamp(k.created_at),
            expires_at: k.expires_at.map(timestamp),
            last_used_at: k.last_used_at.map(timestamp),
            revoked_at: k.revoked_at.map(timestamp),
        }
    }
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ApiKeyPage {
    pub items: Vec<ApiKeyView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct KeyToken {
    /// A JWT limited to the key's roles; it stops working when the key is revoked.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    pub expires_in: u64,
}

#[derive(ApiResponse)]
enum KeyCreated {
    #[oai(status = 201)]
    Created(Json<IssuedKeyView>),
}

#[derive(ApiResponse)]
enum KeyRevoked {
    /// Revoked: the key and tokens obtained with it stop working at once.
    #[oai(status = 204)]
    NoContent,
}

#[OpenApi]
impl ApiKeysApi {
    /// Issues an API key for a member; the key is in this response only.
    #[oai(
        path = "/v1/admin/members/:id/api-keys",
        method = "post",
        tag = "ApiTags::ApiKeys"
    )]
    async fn create(
        &self,
        auth: AdminAuth,
        id: Path<String>,
        body: Json<KeyRequestBody>,
        req: &Request,
    ) -> Result<KeyCreated, ApiError> {
        let (id, request) = (member_id(&id)?, body.0.parse()?);
        let (_, issued) = self
            .admin
            .issue_key(&actor(&auth, &self.proxies, req), &id, &request)
            .await?;
        Ok(KeyCreated::Created(Json(issued.into())))
    }

    /// Lists keys, newest first, optionally of one member. Secrets are never shown.
    #[oai(path = "/v1/admin/api-keys", method = "get", tag = "ApiTags::ApiKeys")]
    async fn list(
        &self,
        _auth: AdminAuth,
        member: Query<Option<String>>,
        /// Page size (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
        /// The `next_cursor` of the previous page.
        cursor: Query<Option<CursorText>>,
    ) -> Result<Json<ApiKeyPage>, ApiError> {
        let member = member.as_deref().map(member_id).transpose()?;
        let limit = paging::limit(limit.0)?;
        let before = paging::decode_cursor(cursor.0.as_ref())?;
        let keys = self
            .store
            .list_api_keys(member.as_ref(), before.as_deref(), limit)
            .await?;
        Ok(Json(ApiKeyPage {
            next_cursor: paging::next_cursor(&keys, limit, |k| k.id.as_str()),
            items: keys.into_iter().map(ApiKeyView::from).collect(),
        }))
    }

    /// Revokes a key at once, on every instance.
    #[oai(
        path = "/v1/admin/api-keys/:id",
        method = "delete",
        tag = "ApiTags::ApiKeys"
    )]
    async fn revoke(
        &self,
        auth: AdminAuth,
        id: Path<String>,
        req: &Request,
    ) -> Result<KeyRevoked, ApiError> {
        let id = id.trim().trim_start_matches("gh_");
        self.admin
            .revoke_key(&actor(&auth, &self.proxies, req), id)
            .await?;
        Ok(KeyRevoked::NoContent)
    }

    /// Exchanges an API key for a short-lived access token with the key's roles.
    #[oai(path = "/v1/auth/token", method = "post", tag = "ApiTags::Auth")]
    async fn token(&self, auth: KeyAuth) -> Result<Json<KeyToken>, ApiError> {
        let access_token = self.auth.api_keys().exchange(&auth.0)?;
        Ok(Json(KeyToken {
            access_token,
            token_type: "Bearer".into(),
            expires_in: self.auth.api_keys().token_ttl_secs(),
        }))
    }
}
