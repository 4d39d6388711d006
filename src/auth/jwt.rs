//! Access tokens: JWTs signed with the current key of the [`Keyring`] and
//! verified with the key their `kid` names, at that key's algorithm.
//!
//! What verification refuses: a `kid` that names no live key (unknown,
//! revoked or retired), a header `alg` other than the named key's (so an HS256
//! token "signed" with a public key, or `alg: none`, never reaches a
//! signature check), a `typ` other than `at+jwt` (RFC 9068: the token kind is
//! named and required), a wrong issuer or audience, and a token outside its
//! lifetime. Lifetimes (`exp`, `nbf`) are checked against the caller's clock
//! rather than by `jsonwebtoken`, which reads the system time: a token is then
//! judged by the same clock that stamped it, tests' moved clocks included.
//!
//! A token whose signature verified is remembered with its key set (see
//! [`KeySet::remember`]): asymmetric signatures cost tens of microseconds, and
//! a client sends the same token for its whole life. Its lifetime is checked
//! on every use; any change to the keys (a revocation) starts a new set, which
//! remembers nothing.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};

use super::keyring::{KeySet, Keyring};
use crate::domain::{Member, Role};

/// Clock skew tolerated when checking `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 5;

/// The `typ` header of a gatehouse access token (RFC 9068).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

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
    #[error("no key can sign now")]
    NoSigningKey,
    #[error("invalid token: {0}")]
    Invalid(jsonwebtoken::errors::Error),
    #[error("token signed with an unknown, revoked or retired key")]
    UnknownKey,
    #[error("token algorithm differs from its key's")]
    AlgorithmMismatch,
    #[error("token is not a gatehouse access token (typ)")]
    WrongType,
}

pub struct JwtKeys {
    keyring: Arc<Keyring>,
    validations: Vec<(Algorithm, Validation)>,
    issuer: String,
    audience: String,
    ttl: Duration,
}

impl JwtKeys {
    pub fn new(keyring: Arc<Keyring>, issuer: &str, audience: &str, ttl: Duration) -> Self {
        let validations = [Algorithm::ES256, Algorithm::EdDSA, Algorithm::HS256]
            .into_iter()
            .map(|alg| {
                let mut validation = Validation::new(alg);
                validation.leeway = LEEWAY_SECS;
                validation.validate_nbf = false;
                validation.validate_exp = false;
                validation.set_audience(&[audience]);
                validation.set_issuer(&[issuer]);
                validation.set_required_spec_claims(&["exp", "nbf", "iat", "aud", "iss", "sub"]);
                (alg, validation)
            })
            .collect();
        Self {
            keyring,
            validations,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Signs an access token for `member` in session `sid`, carrying `roles`,
    /// with the key that is current at `now`.
    pub fn issue(
        &self,
        member: &Member,
        roles: &[Role],
        sid: &str,
        now: i64,
    ) -> Result<String, JwtError> {
        let keys = self.keyring.keys();
        let key = keys.current(now).ok_or(JwtError::NoSigningKey)?;
        let signer = key.signer.as_ref().ok_or(JwtError::NoSigningKey)?;
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
        let mut header = Header::new(key.algorithm);
        header.typ = Some(ACCESS_TOKEN_TYPE.into());
        header.kid = Some(key.kid.clone());
        // The JWS compact serialization (RFC 7515, 7.1), signed by the key
        // parsed once at load rather than by `jsonwebtoken::encode`, which
        // parses it again for every token.
        let header = serde_json::to_vec(&header).map_err(|e| JwtError::Sign(e.into()))?;
        let claims = serde_json::to_vec(&claims).map_err(|e| JwtError::Sign(e.into()))?;
        let mut token = URL_SAFE_NO_PAD.encode(header);
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(claims));
        let signature = signer.sign(token.as_bytes()).map_err(JwtError::Sign)?;
        token.push('.');
        token.push_str(&signature);
        Ok(token)
    }

    /// Verifies key, algorithm, type, signature, issuer, audience, and `exp`
    /// and `nbf` at `now`.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, JwtError> {
        let keys = self.keyring.keys();
        let claims = match keys.remembered(token) {
            Some(claims) => claims,
            None => {
                let claims = self.verify_signed(&keys, token, now)?;
                keys.remember(token, &claims);
                claims
            }
        };
        let leeway = LEEWAY_SECS as i64;
        if claims.exp < now - leeway {
            return Err(JwtError::Invalid(ErrorKind::ExpiredSignature.into()));
        }
        if claims.nbf > now + leeway {
            return Err(JwtError::Invalid(ErrorKind::ImmatureSignature.into()));
        }
        Ok(claims)
    }

    fn verify_signed(&self, keys: &KeySet, token: &str, now: i64) -> Result<Claims, JwtError> {
        let header = jsonwebtoken::decode_header(token).map_err(JwtError::Invalid)?;
        let typ = header.typ.as_deref().unwrap_or_default();
        if !(typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYPE)
            || typ.eq_ignore_ascii_case("application/at+jwt"))
        {
            return Err(JwtError::WrongType);
        }
        let kid = header.kid.as_deref().ok_or(JwtError::UnknownKey)?;
        let key = keys.verifier(kid, now).ok_or(JwtError::UnknownKey)?;
        if header.alg != key.algorithm {
            return Err(JwtError::AlgorithmMismatch);
        }
        let validation = self
            .validations
            .iter()
            .find(|(alg, _)| *alg == key.algorithm)
            .map(|(_, validation)| validation)
            .ok_or(JwtError::AlgorithmMismatch)?;
        jsonwebtoken::decode::<Claims>(token, &key.decoding, validation)
            .map(|data| data.claims)
            .map_err(JwtError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::ServerSecret;
    use crate::auth::key_material::{asymmetric_pairs, generate, hs256_pairs, jwt_algorithm};
    use crate::auth::keyring::LoadedKey;
    use crate::domain::{Email, MemberId, MemberStatus, SigningAlg};
    use jsonwebtoken::EncodingKey;

    const HS_KID: &str = "hs256-test";

    fn secret() -> ServerSecret {
        ServerSecret::new(b"k".repeat(32))
    }

    fn loaded(alg: SigningAlg, activates_at: i64) -> LoadedKey {
        if alg == SigningAlg::Hs256 {
            let pairs = hs256_pairs(&secret());
            return LoadedKey {
                kid: HS_KID.into(),
                alg,
                algorithm: Algorithm::HS256,
                activates_at,
                signer: pairs.signer,
                decoding: pairs.decoding,
                public_jwk: None,
            };
        }
        let key = generate(alg).unwrap();
        let pairs =
            asymmetric_pairs(&key.kid, alg, &key.public_jwk.to_string(), Some(&key.pkcs8)).unwrap();
        LoadedKey {
            kid: key.kid,
            alg,
            algorithm: jwt_algorithm(alg),
            activates_at,
            signer: pairs.signer,
            decoding: pairs.decoding,
            public_jwk: Some(key.public_jwk),
        }
    }

    fn keys_with(set: Vec<LoadedKey>, audience: &str) -> JwtKeys {
        let ring = Arc::new(Keyring::new(KeySet::new(set, 905)));
        JwtKeys::new(ring, "https://id.test", audience, Duration::from_secs(900))
    }

    fn keys(alg: SigningAlg) -> JwtKeys {
        keys_with(vec![loaded(alg, 0)], "gatehouse")
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

    const ALGS: [SigningAlg; 3] = [SigningAlg::Es256, SigningAlg::EdDsa, SigningAlg::Hs256];

    /// `header` and `payload` (JSON) signed with `key`, base64url'd as a JWS.
    fn forge(header: &str, payload: &str, alg: Algorithm, key: &EncodingKey) -> String {
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let signature = jsonwebtoken::crypto::sign(signing_input.as_bytes(), key, alg).unwrap();
        format!("{signing_input}.{signature}")
    }

    fn payload_of(token: &str) -> String {
        String::from_utf8(
            URL_SAFE_NO_PAD
                .decode(token.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn each_algorithm_round_trips_and_names_its_key_and_type() {
        for alg in ALGS {
            let keys = keys(alg);
            let token = keys
                .issue(&member(), &[Role::admin(), Role::member()], "s1", now())
                .unwrap();
            let claims = keys.verify(&token, now()).unwrap();
            assert_eq!(claims.roles, ["admin", "member"]);
            assert_eq!(claims.sid, "s1");
            let header = jsonwebtoken::decode_header(&token).unwrap();
            assert_eq!(header.typ.as_deref(), Some("at+jwt"));
            assert_eq!(header.alg, jwt_algorithm(alg));
            assert!(header.kid.is_some());
            // Remembered now; a second verify answers the same.
            assert_eq!(keys.verify(&token, now()).unwrap(), claims);
        }
    }

    #[test]
    fn refuses_alg_none_and_tampering() {
        for alg in ALGS {
            let keys = keys(alg);
            let token = keys
                .issue(&member(), &[Role::member()], "s1", now())
                .unwrap();
            let parts: Vec<&str> = token.split('.').collect();
            let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"at+jwt"}"#);
            assert!(
                keys.verify(&format!("{none_header}.{}.", parts[1]), now())
                    .is_err()
            );
            let payload = payload_of(&token);
            let forged = URL_SAFE_NO_PAD.encode(payload.replace("\"member\"", "\"admin\""));
            assert!(
                keys.verify(&format!("{}.{forged}.{}", parts[0], parts[2]), now())
                    .is_err()
            );
        }
    }

    #[test]
    fn the_key_named_by_kid_pins_the_algorithm() {
        let es = loaded(SigningAlg::Es256, 0);
        let es_kid = es.kid.clone();
        let public_jwk = es.public_jwk.clone().unwrap().to_string();
        let keys = keys_with(vec![es], "gatehouse");
        let token = keys.issue(&member(), &[], "s", now()).unwrap();
        let payload = payload_of(&token);

        // HS256 "signed" with the public key (the classic confusion attack).
        for secret in [public_jwk.as_bytes(), es_kid.as_bytes()] {
            let header = format!(r#"{{"alg":"HS256","typ":"at+jwt","kid":"{es_kid}"}}"#);
            let forged = forge(
                &header,
                &payload,
                Algorithm::HS256,
                &EncodingKey::from_secret(secret),
            );
            assert!(matches!(
                keys.verify(&forged, now()),
                Err(JwtError::AlgorithmMismatch)
            ));
        }
        // EdDSA under the ES256 key's kid.
        let ed = generate(SigningAlg::EdDsa).unwrap();
        let header = format!(r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"{es_kid}"}}"#);
        let forged = forge(
            &header,
            &payload,
            Algorithm::EdDSA,
            &EncodingKey::from_ed_der(&ed.pkcs8),
        );
        assert!(matches!(
            keys.verify(&forged, now()),
            Err(JwtError::AlgorithmMismatch)
        ));
        // A key we do not hold, and no kid at all.
        let header = format!(r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"{}"}}"#, ed.kid);
        let forged = forge(
            &header,
            &payload,
            Algorithm::EdDSA,
            &EncodingKey::from_ed_der(&ed.pkcs8),
        );
        assert!(matches!(
            keys.verify(&forged, now()),
            Err(JwtError::UnknownKey)
        ));
        let header = r#"{"alg":"EdDSA","typ":"at+jwt"}"#;
        let forged = forge(
            header,
            &payload,
            Algorithm::EdDSA,
            &EncodingKey::from_ed_der(&ed.pkcs8),
        );
        assert!(matches!(
            keys.verify(&forged, now()),
            Err(JwtError::UnknownKey)
        ));
    }

    #[test]
    fn the_token_type_is_required() {
        let keys = keys(SigningAlg::Hs256);
        let token = keys.issue(&member(), &[], "s", now()).unwrap();
        let payload = payload_of(&token);
        let kid = HS_KID;
        for header in [
            format!(r#"{{"alg":"HS256","kid":"{kid}"}}"#),
            format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{kid}"}}"#),
            format!(r#"{{"alg":"HS256","typ":"id+jwt","kid":"{kid}"}}"#),
        ] {
            let forged = forge(
                &header,
                &payload,
                Algorithm::HS256,
                &EncodingKey::from_secret(secret().bytes()),
            );
            assert!(
                matches!(keys.verify(&forged, now()), Err(JwtError::WrongType)),
                "{header}"
            );
        }
        let header = format!(r#"{{"alg":"HS256","typ":"AT+JWT","kid":"{kid}"}}"#);
        let ok = forge(
            &header,
            &payload,
            Algorithm::HS256,
            &EncodingKey::from_secret(secret().bytes()),
        );
        assert!(
            keys.verify(&ok, now()).is_ok(),
            "typ compares case-insensitively"
        );
    }

    #[test]
    fn refuses_expired_future_and_foreign_tokens() {
        for alg in ALGS {
            let keys = keys(alg);
            let expired = keys.issue(&member(), &[], "s", now() - 900 - 10).unwrap();
            assert!(
                keys.verify(&expired, now()).is_err(),
                "expired beyond leeway"
            );
            let future = keys.issue(&member(), &[], "s", now() + 60).unwrap();
            assert!(keys.verify(&future, now()).is_err(), "nbf in the future");
        }
        let shared = Arc::new(Keyring::new(KeySet::new(
            vec![loaded(SigningAlg::Es256, 0)],
            905,
        )));
        let ours = JwtKeys::new(
            shared.clone(),
            "https://id.test",
            "gatehouse",
            Duration::from_secs(900),
        );
        let other_aud = JwtKeys::new(shared, "https://id.test", "other", Duration::from_secs(900));
        let token = other_aud.issue(&member(), &[], "s", now()).unwrap();
        assert!(ours.verify(&token, now()).is_err());
    }

    #[test]
    fn lifetimes_are_judged_by_the_callers_clock() {
        let keys = keys(SigningAlg::Es256);
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

    #[test]
    fn a_replaced_key_set_forgets_what_it_verified() {
        let ring = Arc::new(Keyring::new(KeySet::new(
            vec![loaded(SigningAlg::EdDsa, 0)],
            905,
        )));
        let keys = JwtKeys::new(
            ring.clone(),
            "https://id.test",
            "gatehouse",
            Duration::from_secs(900),
        );
        let token = keys.issue(&member(), &[], "s", now()).unwrap();
        assert!(keys.verify(&token, now()).is_ok());
        // The key is revoked: the set reloaded without it refuses the token at once.
        ring.replace(KeySet::new(vec![loaded(SigningAlg::EdDsa, 0)], 905));
        assert!(matches!(
            keys.verify(&token, now()),
            Err(JwtError::UnknownKey)
        ));
    }

    #[test]
    fn the_current_key_signs_and_a_next_key_is_accepted_before_it_signs() {
        let (old, new) = (
            loaded(SigningAlg::Es256, 0),
            loaded(SigningAlg::EdDsa, 1_000),
        );
        let (old_kid, new_kid) = (old.kid.clone(), new.kid.clone());
        let keys = keys_with(vec![old, new], "gatehouse");
        let kid = |t: &str| jsonwebtoken::decode_header(t).unwrap().kid.unwrap();
        let before = keys.issue(&member(), &[], "s", 999).unwrap();
        assert_eq!(kid(&before), old_kid);
        let after = keys.issue(&member(), &[], "s", 1_000).unwrap();
        assert_eq!(kid(&after), new_kid);
        assert!(
            keys.verify(&before, 1_000).is_ok(),
            "the old key is retiring"
        );
        assert!(keys.verify(&after, 1_000).is_ok());
    }
}
