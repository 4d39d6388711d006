//! The signing keys' life, as operations the CLI and the admin API share:
//! created on first start, rotated (by hand or every N days), revoked, listed,
//! published; and kept loaded in the [`Keyring`] that signs and verifies.
//!
//! - **First start**: a key of the configured algorithm is created and signs at
//!   once. With `jwt_alg` unset, a new installation gets ES256; one that had
//!   members before signing keys existed keeps HS256, which its integrators
//!   verify with the shared secret (set `GATEHOUSE_JWT_ALG=ES256` to move on).
//! - **Algorithm changed** in the settings: a key of the new algorithm is
//!   published now and signs after the publish delay; the old one retires as
//!   any rotated-out key does.
//! - **Rotation**: a new key is published at once and signs after the publish
//!   delay (longer than the JWKS max-age, so every verifier's cache has it
//!   first). The old key stays published and accepted until its last token has
//!   expired. One rotation may be pending at a time.
//! - **Revocation**: the key's tokens are refused at once and it leaves the
//!   JWKS; if it was signing, a fresh key takes over at once (integrators'
//!   libraries refetch the JWKS on an unknown `kid`).
//!
//! Every instance reloads the keys when the store reports a change (at once on
//! this instance; through Postgres' change notices on the others) and, in
//! case a notice is missed or none exists (the CLI writing to SQLite beside a
//! running server), every [`RELOAD_EVERY`].
//!
//! Private keys are stored sealed with a key derived from the server secret
//! (`key_vault.rs`).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Mutex, watch};

use super::jwt::LEEWAY_SECS;
use super::key_material::KeyMaterialError;
use super::key_vault::KeyVault;
use super::keyring::{KeySet, KeyState, Keyring, key_states};
use super::keys::ServerSecret;
use crate::clock::Clock;
use crate::config::Settings;
use crate::domain::SigningAlg;
use crate::store::{AuditEntry, DynStore, MemberFilter, SigningKeyRow, StoreError};

/// How often the keys are reloaded even when no change was reported.
pub const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// The audit actor of what gatehouse does by itself.
const SYSTEM: &str = "system";

#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Material(#[from] KeyMaterialError),
    #[error("no live signing key with that kid")]
    NotFound,
    #[error("a rotation is pending: key {kid} starts signing at {activates_at}")]
    RotationPending { kid: String, activates_at: i64 },
    #[error(
        "HS256 signs with the server secret, so there is no key to rotate: change GATEHOUSE_JWT_SECRET, or switch GATEHOUSE_JWT_ALG to ES256 or EdDSA"
    )]
    SharedSecret,
}

/// The settings the keys' life follows.
#[derive(Debug, Clone)]
pub struct KeyPolicy {
    /// The configured algorithm; `None`: keep the installation's.
    pub alg: Option<SigningAlg>,
    pub publish_delay: Duration,
    pub rotate_every: Option<Duration>,
    /// How long a superseded key's tokens may live on: the access-token
    /// lifetime plus the clock leeway.
    pub grace: Duration,
    pub jwks_max_age: Duration,
}

impl KeyPolicy {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            alg: settings.jwt_alg,
            publish_delay: settings.signing_key_publish_delay,
            rotate_every: settings
                .signing_key_rotate_days
                .map(|days| Duration::from_secs(u64::from(days) * 86_400)),
            grace: settings.access_ttl + Duration::from_secs(LEEWAY_SECS),
            jwks_max_age: settings.jwks_max_age,
        }
    }
}

/// A key as operators see it.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub kid: String,
    pub alg: String,
    pub state: KeyState,
    pub created_by: Option<String>,
    pub created_at: i64,
    pub activates_at: i64,
    /// When a superseded key leaves the JWKS and its tokens are refused.
    pub retires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// Who asks for a key operation, as the audit log records them.
#[derive(Debug, Clone)]
pub struct KeyActor {
    pub id: String,
    pub ip: Option<String>,
}

impl KeyActor {
    pub fn new(id: impl Into<String>, ip: Option<String>) -> Self {
        Self { id: id.into(), ip }
    }

    fn audit(&self, action: &'static str) -> AuditEntry {
        AuditEntry::new(action)
            .actor(self.id.clone())
            .ip(self.ip.clone())
    }
}

pub struct SigningKeys {
    store: DynStore,
    clock: Clock,
    vault: KeyVault,
    policy: KeyPolicy,
    keyring: Arc<Keyring>,
    /// The rows the keyring was built from, to rebuild only on a change.
    /// Held across a reload, so reloads run one at a time and a later one
    /// always reads later rows (a revocation is never undone by a slow reload).
    loaded: Mutex<Option<Vec<SigningKeyRow>>>,
}

impl SigningKeys {
    /// The stored keys, loaded, without creating any (for the CLI).
    pub async fn open(
        store: DynStore,
        clock: Clock,
        secret: &ServerSecret,
        policy: KeyPolicy,
    ) -> Result<Self, SigningKeyError> {
        let keys = Self {
            store,
            clock,
            vault: KeyVault::new(secret),
            policy,
            keyring: Arc::new(Keyring::new(KeySet::empty())),
            loaded: Mutex::new(None),
        };
        keys.reload().await?;
        Ok(keys)
    }

    /// [`SigningKeys::open`], then makes sure a key of the configured
    /// algorithm signs or is on its way (at server start).
    pub async fn start(
        store: DynStore,
        clock: Clock,
        secret: &ServerSecret,
        policy: KeyPolicy,
    ) -> Result<Self, SigningKeyError> {
        let keys = Self::open(store, clock, secret, policy).await?;
        keys.ensure_signing_key().await?;
        Ok(keys)
    }

    pub fn keyring(&self) -> Arc<Keyring> {
        self.keyring.clone()
    }

    pub fn policy(&self) -> &KeyPolicy {
        &self.policy
    }

    /// The public JWKs of every key whose tokens are accepted now.
    pub fn jwks(&self) -> Vec<Value> {
        self.keyring.keys().published(self.clock.now())
    }

    /// Every key, with its state now, oldest activation first.
    pub async fn list(&self) -> Result<Vec<KeyInfo>, SigningKeyError> {
        let rows = self.store.signing_keys().await?;
        let timeline: Vec<(i64, bool)> = rows
            .iter()
            .map(|r| (r.activates_at, r.revoked_at.is_some()))
            .collect();
        let states = key_states(&timeline, self.clock.now(), self.grace());
        Ok(rows
            .into_iter()
            .zip(states)
            .map(|(row, (state, retires_at))| KeyInfo {
                kid: row.kid,
                alg: row.alg,
                state,
                created_by: row.created_by,
                created_at: row.created_at,
                activates_at: row.activates_at,
                retires_at,
                revoked_at: row.revoked_at,
            })
            .collect())
    }

    /// Publishes a new key now; it signs after the publish delay.
    pub async fn rotate(&self, actor: &KeyActor) -> Result<KeyInfo, SigningKeyError> {
        self.reload().await?;
        let now = self.clock.now();
        let alg = self.desired_alg().await?;
        if !alg.is_asymmetric() {
            return Err(SigningKeyError::SharedSecret);
        }
        if let Some(pending) = self.keyring.keys().pending(now) {
            return Err(SigningKeyError::RotationPending {
                kid: pending.kid.clone(),
                activates_at: pending.activates_at,
            });
        }
        let activates_at = now + self.policy.publish_delay.as_secs() as i64;
        let kid = self
            .add_key(alg, activates_at, actor, "signing_key.rotated", now)
            .await?;
        self.info(&kid).await
    }

    /// Withdraws `kid` at once; a fresh key takes over if it was signing.
    pub async fn revoke(&self, actor: &KeyActor, kid: &str) -> Result<(), SigningKeyError> {
        self.reload().await?;
        let now = self.clock.now();
        let signing = self
            .keyring
            .keys()
            .current(now)
            .is_some_and(|key| key.kid == kid);
        let replacement = if signing {
            let alg = self.desired_alg().await?;
            Some(self.vault.create(alg, now, &actor.id)?)
        } else {
            None
        };
        let audit = actor
            .audit("signing_key.revoked")
            .target(kid)
            .details(json!({ "replaced_by": replacement.as_ref().map(|k| k.kid.clone()) }));
        if !self
            .store
            .revoke_signing_key(kid, replacement, audit, now)
            .await?
        {
            return Err(SigningKeyError::NotFound);
        }
        self.reload().await
    }

    /// Rebuilds the keyring if the stored keys changed since it was built.
    pub async fn reload(&self) -> Result<(), SigningKeyError> {
        let mut loaded = self.loaded.lock().await;
        let rows = self.store.signing_keys().await?;
        if loaded.as_ref() == Some(&rows) {
            return Ok(());
        }
        self.keyring
            .replace(self.vault.key_set(&rows, self.clock.now(), self.grace()));
        *loaded = Some(rows);
        Ok(())
    }

    /// Reloads on every reported change and every [`RELOAD_EVERY`], and
    /// rotates when a key is due, until `stop` changes.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut changes = self.store.signing_key_changes();
        loop {
            let changed = async {
                let heard = match changes.as_mut() {
                    Some(changes) => changes.changed().await.is_ok(),
                    None => false,
                };
                if !heard {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep(RELOAD_EVERY) => {}
                _ = stop.changed() => return,
            }
            if let Err(error) = self.reload().await {
                tracing::warn!(%error, "cannot reload the signing keys; keeping the loaded ones");
                continue;
            }
            if let Err(error) = self.rotate_if_due().await {
                tracing::warn!(%error, "automatic signing-key rotation failed; will try again");
            }
        }
    }

    async fn rotate_if_due(&self) -> Result<(), SigningKeyError> {
        let Some(every) = self.policy.rotate_every else {
            return Ok(());
        };
        let now = self.clock.now();
        let keys = self.keyring.keys();
        let due = keys.current(now).is_some_and(|key| {
            key.alg.is_asymmetric() && key.activates_at + every.as_secs() as i64 <= now
        });
        if due && keys.pending(now).is_none() {
            let rotated = self.rotate(&KeyActor::new(SYSTEM, None)).await?;
            tracing::info!(kid = %rotated.kid, activates_at = rotated.activates_at, "rotated the signing key on schedule");
        }
        Ok(())
    }

    async fn ensure_signing_key(&self) -> Result<(), SigningKeyError> {
        let now = self.clock.now();
        let keys = self.keyring.keys();
        let desired = self.desired_alg().await?;
        let system = KeyActor::new(SYSTEM, None);
        match keys.current(now) {
            Some(current) if current.signer.is_some() => {
                let pending_alg = keys.pending(now).map(|key| key.alg);
                if current.alg == desired || pending_alg == Some(desired) {
                    return Ok(());
                }
                tracing::info!(from = %current.alg, to = %desired, "the signing algorithm changed: publishing a key that signs after the publish delay");
                let activates_at = now + self.policy.publish_delay.as_secs() as i64;
                self.add_key(desired, activates_at, &system, "signing_key.created", now)
                    .await?;
            }
            current => {
                if current.is_some() {
                    tracing::warn!(
                        "the signing key cannot be opened (was the server secret changed?): a new key signs from now on"
                    );
                }
                self.add_key(desired, now, &system, "signing_key.created", now)
                    .await?;
            }
        }
        self.reload().await
    }

    /// The configured algorithm, else the installation's: the signing key's,
    /// HS256 for an installation that had members before keys were stored
    /// (its integrators hold the shared secret), ES256 for a new one.
    async fn desired_alg(&self) -> Result<SigningAlg, SigningKeyError> {
        if let Some(alg) = self.policy.alg {
            return Ok(alg);
        }
        let now = self.clock.now();
        if let Some(current) = self.keyring.keys().current(now) {
            return Ok(current.alg);
        }
        if self.store.signing_keys().await?.is_empty() {
            let filter = MemberFilter {
                limit: 1,
                ..Default::default()
            };
            if !self.store.list_members(&filter, now).await?.is_empty() {
                return Ok(SigningAlg::Hs256);
            }
        }
        Ok(SigningAlg::Es256)
    }

    async fn add_key(
        &self,
        alg: SigningAlg,
        activates_at: i64,
        actor: &KeyActor,
        action: &'static str,
        now: i64,
    ) -> Result<String, SigningKeyError> {
        let key = self.vault.create(alg, activates_at, &actor.id)?;
        let kid = key.kid.clone();
        let audit = actor
            .audit(action)
            .target(kid.clone())
            .details(json!({ "alg": alg.as_str(), "activates_at": activates_at }));
        self.store.add_signing_key(key, audit, now).await?;
        self.reload().await?;
        Ok(kid)
    }

    async fn info(&self, kid: &str) -> Result<KeyInfo, SigningKeyError> {
        self.list()
            .await?
            .into_iter()
            .find(|key| key.kid == kid)
            .ok_or(SigningKeyError::NotFound)
    }

    fn grace(&self) -> i64 {
        self.policy.grace.as_secs() as i64
    }
}
