//! The signing keys as every request uses them: decoded once, held in memory,
//! swapped whole when the stored keys change (`signing_keys.rs` reloads them).
//! Signing and verifying never touch the database.
//!
//! A key's state follows from its times and `now` (so a moved test clock, or
//! the publish delay running out, needs no reload):
//!
//! - `next`: published, not signing yet (`activates_at` is still to come);
//! - `current`: the live key activated last: it signs;
//! - `retiring`: superseded, still published and accepted until every token it
//!   signed has expired (`retires_at`: its successor's activation plus the
//!   access-token lifetime and clock leeway);
//! - `retired`: gone from the JWKS, its tokens refused (they have expired);
//! - `revoked`: withdrawn by an operator, its tokens refused at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use jsonwebtoken::DecodingKey;
use serde_json::Value;

use super::jwt::Claims;
use super::key_material::Signer;
use crate::domain::SigningAlg;

/// Verified tokens remembered per key set, before the memory is emptied.
const VERIFIED_CAPACITY: usize = 50_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Next,
    Current,
    Retiring,
    Retired,
    Revoked,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Next => "next",
            Self::Current => "current",
            Self::Retiring => "retiring",
            Self::Retired => "retired",
            Self::Revoked => "revoked",
        }
    }

    /// Whether tokens of a key in this state are accepted (and its public key published).
    pub fn is_live(self) -> bool {
        matches!(self, Self::Next | Self::Current | Self::Retiring)
    }
}

/// The state of each key of a timeline, with when a superseded key retires.
/// `keys` are `(activates_at, revoked)`, ordered by activation; `grace` is how
/// long a superseded key's tokens may live on (access-token lifetime + leeway).
pub fn key_states(keys: &[(i64, bool)], now: i64, grace: i64) -> Vec<(KeyState, Option<i64>)> {
    let active = |&(activates_at, revoked): &(i64, bool)| !revoked && activates_at <= now;
    let current = keys.iter().rposition(active);
    keys.iter()
        .enumerate()
        .map(|(i, &(activates_at, revoked))| {
            if revoked {
                return (KeyState::Revoked, None);
            }
            if activates_at > now {
                return (KeyState::Next, None);
            }
            if Some(i) == current {
                return (KeyState::Current, None);
            }
            // Superseded: by the first live key after it that has activated.
            let retires_at = keys[i + 1..]
                .iter()
                .find(|k| active(k))
                .map(|&(successor, _)| successor + grace);
            match retires_at {
                Some(at) if now < at => (KeyState::Retiring, Some(at)),
                _ => (KeyState::Retired, retires_at),
            }
        })
        .collect()
}

/// One key, decoded.
pub struct LoadedKey {
    pub kid: String,
    pub alg: SigningAlg,
    pub algorithm: jsonwebtoken::Algorithm,
    pub activates_at: i64,
    /// `None` when the private key cannot be opened: it verifies, but cannot sign.
    pub signer: Option<Signer>,
    pub decoding: DecodingKey,
    /// The public JWK, for the JWKS; `None` for HS256.
    pub public_jwk: Option<Value>,
}

/// The live keys at one moment of the store, ordered by activation, with the
/// tokens verified under them.
pub struct KeySet {
    keys: Vec<LoadedKey>,
    grace: i64,
    verified: Mutex<HashMap<Box<str>, Claims>>,
}

impl KeySet {
    /// `keys` ordered by activation, none revoked.
    pub fn new(keys: Vec<LoadedKey>, grace: i64) -> Self {
        Self {
            keys,
            grace,
            verified: Mutex::new(HashMap::new()),
        }
    }

    pub fn empty() -> Self {
        Self::new(Vec::new(), 0)
    }

    fn states(&self, now: i64) -> Vec<(KeyState, Option<i64>)> {
        let timeline: Vec<(i64, bool)> =
            self.keys.iter().map(|k| (k.activates_at, false)).collect();
        key_states(&timeline, now, self.grace)
    }

    /// The key that signs at `now`.
    pub fn current(&self, now: i64) -> Option<&LoadedKey> {
        self.keys.iter().rev().find(|k| k.activates_at <= now)
    }

    /// The newest key still waiting to sign (a rotation in progress).
    pub fn pending(&self, now: i64) -> Option<&LoadedKey> {
        self.keys.iter().rev().find(|k| k.activates_at > now)
    }

    /// The key named `kid`, if its tokens are accepted at `now`.
    pub fn verifier(&self, kid: &str, now: i64) -> Option<&LoadedKey> {
        let i = self.keys.iter().position(|k| k.kid == kid)?;
        self.states(now)[i].0.is_live().then(|| &self.keys[i])
    }

    /// The public JWKs of the keys whose tokens are accepted at `now`.
    pub fn published(&self, now: i64) -> Vec<Value> {
        self.keys
            .iter()
            .zip(self.states(now))
            .filter(|(_, (state, _))| state.is_live())
            .filter_map(|(key, _)| key.public_jwk.clone())
            .collect()
    }

    /// The claims of `token` if it was verified under this key set before.
    pub fn remembered(&self, token: &str) -> Option<Claims> {
        self.lock().get(token).cloned()
    }

    /// Remembers that `token` verified to `claims` (its lifetime is checked on every use).
    pub fn remember(&self, token: &str, claims: &Claims) {
        let mut verified = self.lock();
        if verified.len() >= VERIFIED_CAPACITY {
            verified.clear();
        }
        verified.insert(token.into(), claims.clone());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Claims>> {
        self.verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The key set in use; replaced whole, so a request sees one consistent set.
pub struct Keyring(RwLock<Arc<KeySet>>);

impl Keyring {
    pub fn new(keys: KeySet) -> Self {
        Self(RwLock::new(Arc::new(keys)))
    }

    pub fn keys(&self) -> Arc<KeySet> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Puts `keys` in use; tokens verified under the old set are forgotten.
    pub fn replace(&self, keys: KeySet) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(keys);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use KeyState::*;

    #[test]
    fn a_rotation_publishes_first_signs_later_and_retires_after_the_grace() {
        // A since 0; B rotated in at 100, activating at 700; grace 905.
        let keys = [(0, false), (700, false)];
        let states = |now| key_states(&keys, now, 905);
        assert_eq!(states(100), [(Current, None), (Next, None)]);
        assert_eq!(states(700), [(Retiring, Some(1605)), (Current, None)]);
        assert_eq!(states(1604)[0], (Retiring, Some(1605)));
        assert_eq!(states(1605)[0], (Retired, Some(1605)));
    }

    #[test]
    fn a_revoked_key_neither_signs_nor_supersedes() {
        let keys = [(0, false), (500, true)];
        let states = key_states(&keys, 600, 905);
        assert_eq!(states, [(Current, None), (Revoked, None)]);
        let keys = [(0, false), (500, true), (600, false)];
        let states = key_states(&keys, 600, 905);
        assert_eq!(
            states,
            [(Retiring, Some(1505)), (Revoked, None), (Current, None)]
        );
    }
}
