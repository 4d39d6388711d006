//! Stored keys and what this process can do with them: new keys are generated
//! and sealed here, stored rows opened and decoded here.
//!
//! Private keys are sealed (XChaCha20-Poly1305, as the outbox is) with a key
//! derived from the server secret, so a copy of the database alone cannot
//! sign a token. An HS256 key stores a sealed marker instead: the server
//! secret itself signs, and a row sealed under another secret is recognized as
//! not this process's to use.

use rand::RngCore;

use super::key_material::{
    KeyMaterialError, asymmetric_pairs, generate, hs256_pairs, jwt_algorithm,
};
use super::keyring::{KeySet, KeyState, LoadedKey, key_states};
use super::keys::ServerSecret;
use crate::domain::SigningAlg;
use crate::mail::Sealer;
use crate::store::{NewSigningKey, SigningKeyRow};

/// What an HS256 row seals: it opens only under the secret that signs.
const HS256_MARKER: &[u8] = b"gatehouse HS256: the server secret signs";

pub struct KeyVault {
    secret: ServerSecret,
    sealer: Sealer,
}

impl KeyVault {
    pub fn new(secret: &ServerSecret) -> Self {
        Self {
            sealer: Sealer::new(secret.derive("signing key sealing key")),
            secret: secret.clone(),
        }
    }

    /// A new key of `alg`, sealed, to store.
    pub fn create(
        &self,
        alg: SigningAlg,
        activates_at: i64,
        created_by: &str,
    ) -> Result<NewSigningKey, KeyMaterialError> {
        let (kid, public_jwk, sealed) = if alg.is_asymmetric() {
            let key = generate(alg)?;
            (
                key.kid,
                Some(key.public_jwk.to_string()),
                self.sealer.seal(&key.pkcs8),
            )
        } else {
            let mut id = [0u8; 8];
            rand::rngs::OsRng.fill_bytes(&mut id);
            (
                format!("hs256-{}", hex::encode(id)),
                None,
                self.sealer.seal(HS256_MARKER),
            )
        };
        Ok(NewSigningKey {
            kid,
            alg: alg.as_str().to_owned(),
            public_jwk,
            private_sealed: Some(sealed),
            created_by: Some(created_by.to_owned()),
            activates_at,
        })
    }

    /// The live keys of `rows` that this process can use, decoded.
    pub fn key_set(&self, rows: &[SigningKeyRow], now: i64, grace: i64) -> KeySet {
        let keys: Vec<LoadedKey> = rows
            .iter()
            .filter(|row| row.revoked_at.is_none())
            .filter_map(|row| match self.load(row) {
                Ok(key) => key,
                Err(error) => {
                    tracing::warn!(kid = %row.kid, %error, "ignoring an unreadable signing key");
                    None
                }
            })
            .collect();
        // Keys retired by now never come back: leave them out.
        let timeline: Vec<(i64, bool)> = keys.iter().map(|k| (k.activates_at, false)).collect();
        let states = key_states(&timeline, now, grace);
        let live = keys
            .into_iter()
            .zip(states)
            .filter(|(_, (state, _))| *state != KeyState::Retired)
            .map(|(key, _)| key)
            .collect();
        KeySet::new(live, grace)
    }

    fn load(&self, row: &SigningKeyRow) -> Result<Option<LoadedKey>, KeyMaterialError> {
        let unreadable = |reason: &str| KeyMaterialError::Unreadable {
            kid: row.kid.clone(),
            reason: reason.to_owned(),
        };
        let alg: SigningAlg = row
            .alg
            .parse()
            .map_err(|_| unreadable("unknown algorithm"))?;
        let private = row
            .private_sealed
            .as_deref()
            .and_then(|sealed| self.sealer.open(sealed).ok());
        let (pairs, public_jwk) = if alg.is_asymmetric() {
            let public_jwk = row
                .public_jwk
                .as_deref()
                .ok_or_else(|| unreadable("no public key"))?;
            if private.is_none() {
                tracing::warn!(kid = %row.kid, "the private key cannot be opened with this server secret: it verifies but cannot sign");
            }
            let pairs = asymmetric_pairs(&row.kid, alg, public_jwk, private.as_deref())?;
            (pairs, serde_json::from_str(public_jwk).ok())
        } else if private.as_deref() == Some(HS256_MARKER) {
            (hs256_pairs(&self.secret), None)
        } else {
            // An HS256 key of another server secret: nothing here can check it.
            return Ok(None);
        };
        Ok(Some(LoadedKey {
            kid: row.kid.clone(),
            alg,
            algorithm: jwt_algorithm(alg),
            activates_at: row.activates_at,
            signer: pairs.signer,
            decoding: pairs.decoding,
            public_jwk,
        }))
    }
}
