//! The handle a link request answers with, so the asking device can wait for
//! the link to be opened anywhere, and the number it shows so that the other
//! device proves it sees the asking one.
//!
//! The handle is stateless: its id is the link's token hash and expiry, sealed
//! (XChaCha20-Poly1305) under a key derived from the server secret, and its
//! secret an HMAC of the id. So a request for an address that may not sign in
//! (no link stored) gets a handle of the same shape, made with the same work,
//! that simply stays pending until it expires. The number is derived from the
//! token hash, so the confirm page, which knows only the token, can check a
//! pick without any state.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;

use super::{ServerSecret, hmac_sha256};
use crate::domain::TokenHash;
use crate::mail::Sealer;

/// What the asking device keeps: `id` and `secret` to ask for the status,
/// `number` to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHandle {
    pub id: String,
    pub secret: String,
    pub number: u8,
    pub expires_at: i64,
}

pub struct HandoffKeys {
    sealer: Sealer,
    secret_key: [u8; 32],
    number_key: [u8; 32],
}

impl HandoffKeys {
    pub fn new(secret: &ServerSecret) -> Self {
        Self {
            sealer: Sealer::new(secret.derive("sign-in request handle")),
            secret_key: secret.derive("sign-in request secret"),
            number_key: secret.derive("sign-in request number"),
        }
    }

    pub fn handle(&self, link: &TokenHash, expires_at: i64) -> RequestHandle {
        let plain = format!("{}.{expires_at}", link.as_str());
        let id = self.sealer.seal(plain.as_bytes());
        RequestHandle {
            secret: URL_SAFE_NO_PAD.encode(hmac_sha256(&self.secret_key, id.as_bytes())),
            number: self.number(link),
            id,
            expires_at,
        }
    }

    /// The link and expiry behind a handle, if `secret` is the handle's.
    pub fn open(&self, id: &str, secret: &str) -> Option<(TokenHash, i64)> {
        let expected = URL_SAFE_NO_PAD.encode(hmac_sha256(&self.secret_key, id.as_bytes()));
        if !bool::from(expected.as_bytes().ct_eq(secret.as_bytes())) {
            return None;
        }
        let plain = String::from_utf8(self.sealer.open(id).ok()?).ok()?;
        let (hash, expires_at) = plain.split_once('.')?;
        Some((
            TokenHash::from_stored(hash.to_owned()),
            expires_at.parse().ok()?,
        ))
    }

    /// The number the asking device shows: 10 to 99.
    pub fn number(&self, link: &TokenHash) -> u8 {
        self.numbers(link)[0]
    }

    /// The three numbers the other device chooses from, in ascending order:
    /// the right one and two others, all derived from the link.
    pub fn choices(&self, link: &TokenHash) -> [u8; 3] {
        let mut choices = self.numbers(link);
        choices.sort_unstable();
        choices
    }

    /// Three distinct numbers from 10 to 99; the first is the right one.
    fn numbers(&self, link: &TokenHash) -> [u8; 3] {
        let digest = hmac_sha256(&self.number_key, link.as_str().as_bytes());
        let mut numbers = [0u8; 3];
        let mut found = 0;
        for byte in digest {
            let candidate = 10 + byte % 90;
            if !numbers[..found].contains(&candidate) {
                numbers[found] = candidate;
                found += 1;
                if found == 3 {
                    break;
                }
            }
        }
        numbers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> HandoffKeys {
        HandoffKeys::new(&ServerSecret::new(
            b"0123456789abcdef0123456789abcdef".to_vec(),
        ))
    }

    #[test]
    fn a_handle_opens_only_with_its_secret() {
        let link = TokenHash::of(b"token");
        let handle = keys().handle(&link, 1_900_000_600);
        let (opened, expires_at) = keys().open(&handle.id, &handle.secret).unwrap();
        assert!(opened.ct_eq(&link));
        assert_eq!(expires_at, 1_900_000_600);
        assert!(keys().open(&handle.id, "guess").is_none());
        let other = keys().handle(&link, 1_900_000_600);
        assert!(
            keys().open(&handle.id, &other.secret).is_none(),
            "secrets belong to one id"
        );
    }

    #[test]
    fn the_number_is_among_three_distinct_choices() {
        for i in 0..200u32 {
            let link = TokenHash::of(&i.to_le_bytes());
            let choices = keys().choices(&link);
            assert!(choices.contains(&keys().number(&link)));
            assert!(
                choices[0] < choices[1] && choices[1] < choices[2],
                "{choices:?}"
            );
            assert!(choices.iter().all(|n| (10..=99).contains(n)));
        }
    }
}
