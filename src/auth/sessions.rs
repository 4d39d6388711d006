//! Sessions after sign-in: access tokens, refresh-token rotation, logout and
//! leaving. A session is a family of refresh tokens; each refresh token works
//! once and is replaced by the next, and a used one presented again revokes
//! the family (only a thief or a replay would present it).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{AuthError, Claims, Client, JwtError, JwtKeys, Principal, RedirectTarget};
use crate::clock::Clock;
use crate::domain::{Member, MemberId, OpaqueToken};
use crate::metrics::Metrics;
use crate::store::{
    AuditEntry, DynStore, NewRefreshToken, NewSession, RefreshOutcome, SessionInfo,
};

/// What a successful sign-in or refresh hands the client.
#[derive(Debug, Clone)]
pub struct TokenGrant {
    pub access_token: String,
    pub refresh_token: OpaqueToken,
    pub expires_in: u64,
    pub member: Member,
    /// The sign-in session the tokens belong to.
    pub session_id: String,
    /// Where the browser should go next, if the link asked for it.
    pub redirect_to: Option<RedirectTarget>,
}

#[derive(Clone)]
pub struct Sessions {
    store: DynStore,
    clock: Clock,
    jwt: Arc<JwtKeys>,
    refresh_ttl: Duration,
    metrics: Arc<Metrics>,
}

impl Sessions {
    pub fn new(store: DynStore, clock: Clock, jwt: Arc<JwtKeys>, refresh_ttl: Duration) -> Self {
        Self {
            store,
            clock,
            jwt,
            refresh_ttl,
            metrics: Arc::default(),
        }
    }

    pub(super) fn set_metrics(&mut self, metrics: Arc<Metrics>) {
        self.metrics = metrics;
    }

    /// A session to open at sign-in, with its first refresh token (which the
    /// client gets; the store keeps only its hash).
    pub(crate) fn prepare(&self, client: &Client, now: i64) -> (NewSession, OpaqueToken) {
        let refresh = OpaqueToken::generate();
        let session = NewSession {
            id: uuid::Uuid::new_v4().to_string(),
            refresh: self.next_refresh_token(&refresh, now),
            ip: client.ip.map(|ip| ip.to_string()),
            device: client.device.clone(),
        };
        (session, refresh)
    }

    fn next_refresh_token(&self, token: &OpaqueToken, now: i64) -> NewRefreshToken {
        NewRefreshToken {
            id: uuid::Uuid::new_v4().to_string(),
            token_hash: token.hash(),
            expires_at: now + self.refresh_ttl.as_secs() as i64,
        }
    }

    /// An access token for `member` in session `session_id`, with the refresh token.
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
            session_id: session_id.to_owned(),
            redirect_to: None,
        })
    }

    /// Checks an access token's signature and lifetime (not yet its session).
    pub fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        self.jwt.verify(token, self.clock.now())
    }

    /// The caller behind verified `claims`, if their session and membership are
    /// still live. The roles are the member's roles now, not the token's.
    pub(crate) async fn principal(&self, claims: Claims) -> Result<Principal, AuthError> {
        let member_id = MemberId::parse(&claims.sub).ok_or(AuthError::InvalidCredential)?;
        let member = self
            .store
            .session_member(&member_id, &claims.sid, self.clock.now())
            .await?
            .ok_or(AuthError::InvalidCredential)?;
        Ok(Principal {
            member,
            session_id: claims.sid,
            api_key: None,
        })
    }

    /// Exchanges a refresh token for a new pair. Presenting a token that was already
    /// exchanged means it was stolen or replayed: the whole session is revoked.
    pub async fn refresh(&self, presented: &str) -> Result<TokenGrant, AuthError> {
        let presented = OpaqueToken::parse(presented).ok_or(AuthError::InvalidRefreshToken)?;
        let now = self.clock.now();
        let next = OpaqueToken::generate();
        let record = self.next_refresh_token(&next, now);
        match self
            .store
            .rotate_refresh_token(&presented.hash(), record, now)
            .await?
        {
            RefreshOutcome::Rotated { member, session_id } => {
                self.grant(member, &session_id, next, now)
            }
            RefreshOutcome::Reused { session_id, .. } => {
                self.metrics.auth().refresh_reused();
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
            .revoke_session(&principal.session_id, audit, self.clock.now())
            .await?;
        Ok(())
    }

    /// The caller's live sessions, newest first.
    pub async fn own_sessions(&self, principal: &Principal) -> Result<Vec<SessionInfo>, AuthError> {
        Ok(self
            .store
            .member_sessions(&principal.member.id, self.clock.now())
            .await?)
    }

    /// Ends one of the caller's own sessions; false when it is not theirs or
    /// already ended.
    pub async fn end_own_session(
        &self,
        principal: &Principal,
        session_id: &str,
        ip: Option<IpAddr>,
    ) -> Result<bool, AuthError> {
        let id = principal.member.id.as_str();
        let audit = AuditEntry::new("auth.session_ended")
            .actor(principal.actor())
            .target(id)
            .ip(ip.map(|ip| ip.to_string()))
            .details(serde_json::json!({ "session": session_id }));
        Ok(self
            .store
            .end_own_session(&principal.member.id, session_id, audit, self.clock.now())
            .await?)
    }

    /// Ends every session of the caller but the one they call from; how many.
    pub async fn end_other_sessions(
        &self,
        principal: &Principal,
        ip: Option<IpAddr>,
    ) -> Result<u64, AuthError> {
        let audit = AuditEntry::new("auth.other_sessions_ended")
            .actor(principal.actor())
            .target(principal.member.id.as_str())
            .ip(ip.map(|ip| ip.to_string()));
        Ok(self
            .store
            .end_other_sessions(
                &principal.member.id,
                &principal.session_id,
                audit,
                self.clock.now(),
            )
            .await?)
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
        self.store
            .delete_member(id, audit, self.clock.now())
            .await?;
        Ok(())
    }
}
