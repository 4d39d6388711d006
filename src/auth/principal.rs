//! Who is calling: the member behind a verified access token.

use super::{AuthError, AuthService, now};
use crate::domain::Member;

/// An authenticated caller. The roles that count are the member's roles now, read
/// from the store on every request, so a revoked role or a suspension takes effect
/// at once rather than when the token expires.
#[derive(Debug, Clone)]
pub struct Principal {
    pub member: Member,
    pub session_id: String,
}

impl Principal {
    pub fn require_role(&self, role: &'static str) -> Result<(), AuthError> {
        if self.member.has_role(role) {
            Ok(())
        } else {
            Err(AuthError::MissingRole(role))
        }
    }
}

impl AuthService {
    /// Verifies an access token and checks that its session and member are still live.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        let claims = self
            .jwt
            .verify(token)
            .map_err(|_| AuthError::InvalidCredential)?;
        let member_id =
            crate::domain::MemberId::parse(&claims.sub).ok_or(AuthError::InvalidCredential)?;
        let member = self
            .store
            .session_member(&member_id, &claims.sid, now())
            .await?
            .ok_or(AuthError::InvalidCredential)?;
        Ok(Principal {
            member,
            session_id: claims.sid,
        })
    }
}
