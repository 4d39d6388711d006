//! Access tokens: HS256 JWTs, verified with the algorithm pinned and a small leeway.
//!
//! Lifetimes (`exp`, `nbf`) are checked against the caller's clock rather than
//! by `jsonwebtoken`, which reads the system time: a token is then judged by
//! the same clock that stamped it, tests' moved clocks included.

use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::keys::ServerSecret;
use crate::domain::{Member, Role};

/// Clock skew tolerated when checking `exp` and `nbf`, in seconds.
const LEEWAY_SECS: u64 = 5;

/// The claims of a gatehouse access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The member id.
    pub sub: String,
    pub email: String,
    pub roles: Vec<String>,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    /// The session (refresh-token family) this token belongs to; logging out of it
    /// makes the token useless at once.
    pub sid: String,
}

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("cannot sign token: {0}")]
    Sign(jsonwebtoken::errors::Error),
    #[error("invalid token: {0}")]
    Invalid(jsonwebtoken::errors::Error),
    #[error("token signed with an unknown key")]
    UnknownKey,
}

pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl: Duration,
}

impl JwtKeys {
    pub fn new(secret: &ServerSecret, issuer: &str, audience: &str, ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = false;
        validation.validate_exp = false;
        validation.set_audience(&[audience]);
        validation.set_issuer(&[issuer]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "aud", "iss", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret.bytes()),
            decoding: DecodingKey::from_secret(secret.bytes()),
            kid: hex::encode(&secret.derive("jwt key id")[..8]),
            validation,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Signs an access token for `member` in session `sid`, carrying `roles`.
    pub fn issue(
        &self,
        member: &Member,
        roles: &[Role],
        sid: &str,
        now: i64,
    ) -> Result<String, JwtError> {
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: member.id.to_string(),
            email: member.email.to_string(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            iat: now,
            nbf: now,
            exp: now + self.ttl.as_secs() as i64,
            jti: uuid::Uuid::new_v4().to_string(),
            sid: sid.to_owned(),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some("JWT".into());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding).map_err(JwtError::Sign)
    }

    /// Verifies signature, algorithm, issuer, audience, and `exp` and `nbf` at `now`.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, JwtError> {
        let header = jsonwebtoken::decode_header(token).map_err(JwtError::Invalid)?;
        if header.kid.as_deref().is_some_and(|kid| kid != self.kid) {
            return Err(JwtError::UnknownKey);
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(JwtError::Invalid)?;
        let leeway = LEEWAY_SECS as i64;
        if claims.exp < now - leeway {
            return Err(JwtError::Invalid(ErrorKind::ExpiredSignature.into()));
        }
        if claims.nbf > now + leeway {
            return Err(JwtError::Invalid(ErrorKind::ImmatureSignature.into()));
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Email, MemberId, MemberStatus};
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn keys() -> JwtKeys {
        JwtKeys::new(
            &ServerSecret::new(b"k".repeat(32)),
            "https://id.test",
            "gatehouse",
            Duration::from_secs(900),
        )
    }

    fn member() -> Member {
        Member {
            id: MemberId::new(),
            email: Email::parse("ada@example.org").unwrap(),
            status: MemberStatus::Active,
            roles: vec![Role::member()],
            created_at: 0,
            last_login_at: None,
        }
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    #[test]
    fn round_trips_and_carries_roles() {
        let keys = keys();
        let token = keys
            .issue(&member(), &[Role::admin(), Role::member()], "s1", now())
            .unwrap();
        let claims = keys.verify(&token, now()).unwrap();
        assert_eq!(claims.roles, ["admin", "member"]);
        assert_eq!(claims.sid, "s1");
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        assert!(header.kid.is_some());
    }

    #[test]
    fn refuses_alg_none_and_tampering() {
        let keys = keys();
        let token = keys
            .issue(&member(), &[Role::member()], "s1", now())
            .unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert!(
            keys.verify(&format!("{none_header}.{}.", parts[1]), now())
                .is_err()
        );
        let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        let forged = URL_SAFE_NO_PAD.encode(payload.replace("\"member\"", "\"admin\""));
        assert!(
            keys.verify(&format!("{}.{forged}.{}", parts[0], parts[2]), now())
                .is_err()
        );
    }

    #[test]
    fn refuses_expired_future_and_foreign_tokens() {
        let keys = keys();
        let expired = keys.issue(&member(), &[], "s", now() - 900 - 10).unwrap();
        assert!(
            keys.verify(&expired, now()).is_err(),
            "expired beyond leeway"
        );
        let future = keys.issue(&member(), &[], "s", now() + 60).unwrap();
        assert!(keys.verify(&future, now()).is_err(), "nbf in the future");
        let other_aud = JwtKeys::new(
            &ServerSecret::new(b"k".repeat(32)),
            "https://id.test",
            "other",
            Duration::from_secs(900),
        );
        assert!(
            keys.verify(&other_aud.issue(&member(), &[], "s", now()).unwrap(), now())
                .is_err()
        );
    }

    #[test]
    fn lifetimes_are_judged_by_the_callers_clock() {
        let keys = keys();
        let issued_at = 1_000_000;
        let token = keys.issue(&member(), &[], "s", issued_at).unwrap();
        assert!(keys.verify(&token, issued_at + 900).is_ok());
        assert!(
            keys.verify(&token, issued_at + 900 + 10).is_err(),
            "expired"
        );
        assert!(
            keys.verify(&token, issued_at - 10).is_err(),
            "not yet valid"
        );
    }
}
