//! Who is calling: the member behind a verified access token.

use super::AuthError;
use crate::domain::Member;

/// An authenticated caller. The roles that count are the member's roles now, read
/// from the store on every request, so a revoked role or a suspension takes effect
/// at once rather than when the token expires.
#[derive(Debug, Clone)]
pub struct Principal {
    pub member: Member,
    /// The sign-in session, or `key:<id>` for a caller using an API key.
    pub session_id: String,
    /// The prefix (`gh_<public id>`) of the API key used, if one was.
    pub api_key: Option<String>,
}

impl Principal {
    /// Who the audit log names: the API key when one was used, else the member.
    pub fn actor(&self) -> String {
        self.api_key
            .clone()
            .unwrap_or_else(|| self.member.id.to_string())
    }

    pub fn require_role(&self, role: &'static str) -> Result<(), AuthError> {
        if self.member.has_role(role) {
            Ok(())
        } else {
            Err(AuthError::MissingRole(role))
        }
    }
}
