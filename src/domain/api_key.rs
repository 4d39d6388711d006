use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};

const PREFIX: &str = "gh_";
const ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;

/// An API key as presented: `gh_<public id>_<secret>`.
///
/// The public id (16 hex digits) names the stored row, so verification needs one
/// lookup and one Argon2 check; the secret is 256 random bits, base64url. The
/// `gh_` prefix lets secret scanners recognise a leaked key. `Debug` shows only
/// the public part.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    id: String,
    secret: String,
}

impl ApiKey {
    pub fn generate() -> Self {
        let mut id = [0u8; ID_BYTES];
        let mut secret = [0u8; SECRET_BYTES];
        OsRng.fill_bytes(&mut id);
        OsRng.fill_bytes(&mut secret);
        Self {
            id: hex::encode(id),
            secret: URL_SAFE_NO_PAD.encode(secret),
        }
    }

    /// Accepts exactly the shape [`ApiKey::generate`] produces.
    pub fn parse(raw: &str) -> Option<Self> {
        let (id, secret) = raw.trim().strip_prefix(PREFIX)?.split_once('_')?;
        let id_ok = id.len() == ID_BYTES * 2
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let secret_ok = URL_SAFE_NO_PAD
            .decode(secret)
            .is_ok_and(|bytes| bytes.len() == SECRET_BYTES);
        (id_ok && secret_ok).then(|| Self {
            id: id.to_owned(),
            secret: secret.to_owned(),
        })
    }

    /// The public id: the primary key of the stored row.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `gh_<public id>`: safe to show and log, and what the audit log names as actor.
    pub fn prefix(&self) -> String {
        prefix_of(&self.id)
    }

    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The whole key, to hand to its owner once.
    pub fn expose(&self) -> String {
        format!("{PREFIX}{}_{}", self.id, self.secret)
    }

    /// A SHA-256 of the whole key: the key of the verified-keys cache, so the
    /// cache never holds a usable secret.
    pub fn fingerprint(&self) -> [u8; 32] {
        Sha256::digest(self.expose().as_bytes()).into()
    }
}

/// The displayable prefix of the key with public id `id`.
pub fn prefix_of(id: &str) -> String {
    format!("{PREFIX}{id}")
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({PREFIX}{}_…)", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_hides_the_secret() {
        let key = ApiKey::generate();
        let text = key.expose();
        assert!(text.starts_with("gh_"));
        assert_eq!(ApiKey::parse(&text), Some(key.clone()));
        assert!(!format!("{key:?}").contains(key.secret()));
        assert_eq!(key.prefix(), format!("gh_{}", key.id()));
    }

    #[test]
    fn refuses_other_shapes() {
        let key = ApiKey::generate().expose();
        for bad in [
            "",
            "gh_",
            "gh_abc_def",
            &key.replacen("gh_", "xx_", 1),
            &key[..key.len() - 2],
            &format!("{key}AA"),
            &key.to_uppercase(),
        ] {
            assert!(ApiKey::parse(bad).is_none(), "{bad:?}");
        }
    }
}
