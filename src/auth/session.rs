//! Sessions after sign-in: access tokens, refresh rotation, logout, self-deletion.

use std::net::IpAddr;

use super::{AuthError, AuthService, Principal, RedirectTarget, now};
use crate::domain::{Member, OpaqueToken};
use crate::store::{AuditEntry, NewRefreshToken, RefreshOutcome};

/// What a successful sign-in or refresh hands the client.
#[derive(Debug, Clone)]
pub struct TokenGrant {
    pub access_token: String,
    pub refresh_token: OpaqueToken,
    pub expires_in: u64,
    pub member: Member,
    /// Where the browser should go next, if the link asked for it.
    pub redirect_to: Option<RedirectTarget>,
}

impl AuthService {
    pub(crate) fn grant(
        &self,
        member: Member,
        session_id: &str,
        refresh: OpaqueToken,
        now: i64,
    ) -> Result<TokenGrant, AuthError> {
        let access_token = self
            .jwt
            .issue(&member, &member.roles, session_id, now)
            .map_err(|e| AuthError::Signing(e.to_string()))?;
        Ok(TokenGrant {
            access_token,
            refresh_token: refresh,
            expires_in: self.jwt.ttl().as_secs(),
            member,
            redirect_to: None,
        })
    }

    /// Exchanges a refresh token for a new pair. Presenting a token that was already
    /// exchanged means it was stolen or replayed: the whole session is revoked.
    pub async fn refresh(&self, presented: &str) -> Result<TokenGrant, AuthError> {
        let presented = OpaqueToken::parse(presented).ok_or(AuthError::InvalidRefreshToken)?;
        let now = now();
        let next = OpaqueToken::generate();
        let record = NewRefreshToken {
            id: uuid::Uuid::new_v4().to_string(),
            token_hash: next.hash(),
            expires_at: now + self.settings.refresh_ttl.as_secs() as i64,
        };
        match self
            .store
            .rotate_refresh_token(&presented.hash(), record, now)
            .await?
        {
            RefreshOutcome::Rotated { member, session_id } => {
                self.grant(member, &session_id, next, now)
            }
            RefreshOutcome::Reused { session_id, .. } => {
                tracing::warn!(session = %session_id, "refresh token reused; session revoked");
                Err(AuthError::InvalidRefreshToken)
            }
            RefreshOutcome::Invalid => Err(AuthError::InvalidRefreshToken),
        }
    }

    /// Ends the caller's session: its refresh tokens and access tokens stop working.
    pub async fn logout(&self, principal: &Principal, ip: Option<IpAddr>) -> Result<(), AuthError> {
        let audit = AuditEntry::new("auth.logout")
            .actor(principal.member.id.as_str())
            .target(principal.member.id.as_str())
            .ip(ip.map(|ip| ip.to_string()))
            .details(serde_json::json!({ "session": principal.session_id }));
        self.store
            .revoke_session(&principal.session_id, audit, now())
            .await?;
        Ok(())
    }

    /// Soft-deletes the caller's membership and revokes all their sessions.
    pub async fn delete_self(
        &self,
        principal: &Principal,
        ip: Option<IpAddr>,
    ) -> Result<(), AuthError> {
        let id = &principal.member.id;
        let audit = AuditEntry::new("member.deleted_self")
            .actor(id.as_str())
            .target(id.as_str())
            .ip(ip.map(|ip| ip.to_string()));
        self.store.delete_member(id, audit, now()).await?;
        Ok(())
    }
}
