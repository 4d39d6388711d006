//! Response and request bodies shared by several endpoints.

use chrono::{DateTime, Utc};
use poem_openapi::Object;

use crate::auth::TokenGrant;
use crate::domain::Member;

/// A member as the API shows them.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct MemberView {
    pub id: String,
    pub email: String,
    /// `active`, `suspended` or `deleted`.
    pub status: String,
    /// Roles in force now (expired grants are left out).
    pub roles: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub last_login_at: Option<DateTime<Utc>>,
}

pub fn timestamp(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

impl From<&Member> for MemberView {
    fn from(member: &Member) -> Self {
        Self {
            id: member.id.to_string(),
            email: member.email.to_string(),
            status: member.status.as_str().to_owned(),
            roles: member.roles.iter().map(ToString::to_string).collect(),
            created_at: timestamp(member.created_at),
            last_login_at: member.last_login_at.map(timestamp),
        }
    }
}

/// Tokens for a signed-in member.
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct TokenResponse {
    /// A JWT (HS256) to send as `Authorization: Bearer …`.
    pub access_token: String,
    /// Opaque; exchange it at `/v1/auth/refresh`. Each one works once.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    pub member: MemberView,
}

impl From<&TokenGrant> for TokenResponse {
    fn from(grant: &TokenGrant) -> Self {
        Self {
            access_token: grant.access_token.clone(),
            refresh_token: grant.refresh_token.expose().to_owned(),
            token_type: "Bearer".into(),
            expires_in: grant.expires_in,
            member: MemberView::from(&grant.member),
        }
    }
}
