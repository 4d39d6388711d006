//! API keys: issuing (Argon2id hash of the secret) and authenticating.
//!
//! Argon2 is deliberately slow, so a key is verified once and then remembered
//! in memory by the SHA-256 of the presented key. The cache only remembers that
//! the secret matched: every request still reads the key and its member from the
//! store, so a revocation, an expiry or a suspension written by any instance
//! takes effect on the next request. Verifications run on the blocking pool,
//! at most [`MAX_CONCURRENT_VERIFICATIONS`] at once, each in working memory
//! that is allocated once and reused, and failed attempts count against the
//! client IP in the shared rate limiter, so random keys can exhaust neither the
//! CPU nor the memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use super::{AuthError, JwtKeys, Principal, RateLimiter};
use crate::clock::Clock;
use crate::domain::{ApiKey, Role, api_key_prefix};
use crate::metrics::{ApiKeyCheck, Metrics};
use crate::store::{ApiKeyRecord, DynStore};

pub const MAX_CONCURRENT_VERIFICATIONS: usize = 2;
/// Verified keys remembered; the cache is emptied when full (cheap, and rare).
const CACHE_CAPACITY: usize = 10_000;
/// `last_used_at` is written at most this often per key, to spare the writer.
const TOUCH_EVERY_SECS: i64 = 60;
/// Access tokens from a key carry this session id prefix, so that verifying
/// them checks the key (not a sign-in session) on every request.
pub(crate) const KEY_SESSION_PREFIX: &str = "key:";

#[derive(Clone)]
pub struct ApiKeys {
    store: DynStore,
    clock: Clock,
    jwt: Arc<JwtKeys>,
    limiter: RateLimiter,
    verifier: Arc<Verifier>,
    metrics: Arc<Metrics>,
}

/// Verified keys, the bound on concurrent Argon2 work, and its working memory.
struct Verifier {
    /// When each verified key's `last_used_at` was last written, by fingerprint.
    verified: Mutex<HashMap<[u8; 32], i64>>,
    permits: Semaphore,
    /// Argon2 working memory (19 MiB at the default cost), at most one per
    /// permit, reused. Allocated per verification instead, each blocking-pool
    /// thread's malloc arena kept its 19 MiB: a burst of first uses of a key
    /// grew the process to ~500 MB (measured by the load benchmark).
    memory: Mutex<Vec<Vec<Block>>>,
}

impl Default for Verifier {
    fn default() -> Self {
        Self {
            verified: Mutex::new(HashMap::new()),
            permits: Semaphore::new(MAX_CONCURRENT_VERIFICATIONS),
            memory: Mutex::new(Vec::new()),
        }
    }
}

impl Verifier {
    fn memory(&self) -> MutexGuard<'_, Vec<Vec<Block>>> {
        self.memory.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn verified(&self) -> MutexGuard<'_, HashMap<[u8; 32], i64>> {
        self.verified.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Checks `secret` against a PHC string, computing Argon2 in `memory` (grown if
/// the stored cost needs more). Any malformed hash simply does not match.
fn verify_in(secret: &[u8], stored: &str, memory: &mut Vec<Block>) -> bool {
    let Ok(hash) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(expected), Some(salt)) = (hash.hash, hash.salt) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) =
        (Algorithm::try_from(hash.algorithm), Params::try_from(&hash))
    else {
        return false;
    };
    let version = hash
        .version
        .and_then(|v| Version::try_from(v).ok())
        .unwrap_or_default();
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(secret, salt, &mut out, &mut memory[..blocks])
        .is_ok()
        && bool::from(out.as_slice().ct_eq(expected.as_bytes()))
}

/// Hashes a key's secret as an Argon2id PHC string, on the blocking pool.
pub async fn hash_api_key(key: &ApiKey) -> Result<String, AuthError> {
    let secret = key.secret().to_owned();
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        Argon2::default()
            .hash_password(secret.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| AuthError::Signing(format!("argon2: {e}")))
    })
    .await
    .map_err(|e| AuthError::Signing(format!("argon2 task: {e}")))?
}

impl ApiKeys {
    pub fn new(store: DynStore, clock: Clock, jwt: Arc<JwtKeys>, limiter: RateLimiter) -> Self {
        Self {
            store,
            clock,
            jwt,
            limiter,
            verifier: Arc::default(),
            metrics: Arc::default(),
        }
    }

    pub(super) fn set_metrics(&mut self, metrics: Arc<Metrics>) {
        self.limiter.set_metrics(metrics.clone());
        self.metrics = metrics;
    }

    /// Authenticates `raw` (the whole `gh_…` key) for a request from `ip`.
    pub async fn authenticate(
        &self,
        raw: &str,
        ip: Option<IpAddr>,
    ) -> Result<Principal, AuthError> {
        let now = self.clock.now();
        let Some(key) = ApiKey::parse(raw) else {
            return self.fail(ip).await;
        };
        let fingerprint = key.fingerprint();
        let cached = self.verifier.verified().get(&fingerprint).copied();
        let Some(record) = self.store.api_key(key.id(), now).await? else {
            return self.fail(ip).await;
        };
        let touched_at = match cached {
            Some(touched_at) => {
                self.metrics
                    .auth()
                    .api_key_checked(ApiKeyCheck::Remembered, true);
                touched_at
            }
            None => {
                if let Some(ip) = ip {
                    self.limiter
                        .refuse_if_exhausted(&failure_bucket(ip))
                        .await?;
                }
                if !self
                    .verify_secret(&key, &fingerprint, &record.secret_hash)
                    .await?
                {
                    return self.fail(ip).await;
                }
                0
            }
        };
        let Some(principal) = key_principal(record, now) else {
            self.verifier.verified().remove(&fingerprint);
            return self.fail(ip).await;
        };
        if now - touched_at >= TOUCH_EVERY_SECS {
            self.store.touch_api_key(key.id(), now).await?;
        }
        let mut verified = self.verifier.verified();
        if verified.len() >= CACHE_CAPACITY {
            verified.clear();
        }
        verified.insert(
            fingerprint,
            if now - touched_at >= TOUCH_EVERY_SECS {
                now
            } else {
                touched_at
            },
        );
        Ok(principal)
    }

    /// The principal behind an access token that was issued for the key `id`.
    pub(crate) async fn key_session(&self, id: &str) -> Result<Principal, AuthError> {
        let now = self.clock.now();
        self.store
            .api_key(id, now)
            .await?
            .and_then(|record| key_principal(record, now))
            .ok_or(AuthError::InvalidCredential)
    }

    /// A short-lived access token for a key's caller, limited to the key's roles.
    pub fn exchange(&self, principal: &Principal) -> Result<String, AuthError> {
        self.jwt
            .issue(
                &principal.member,
                &principal.member.roles,
                &principal.session_id,
                self.clock.now(),
            )
            .map_err(|e| AuthError::Signing(e.to_string()))
    }

    /// How long an exchanged access token lives, in seconds.
    pub fn token_ttl_secs(&self) -> u64 {
        self.jwt.ttl().as_secs()
    }

    async fn verify_secret(
        &self,
        key: &ApiKey,
        fingerprint: &[u8; 32],
        stored: &str,
    ) -> Result<bool, AuthError> {
        let _permit = self
            .verifier
            .permits
            .acquire()
            .await
            .map_err(|e| AuthError::Signing(e.to_string()))?;
        // Many first requests with one new key arrive together: the first to get a
        // permit verifies it, the others find it verified here and skip Argon2.
        if self.verifier.verified().contains_key(fingerprint) {
            self.metrics
                .auth()
                .api_key_checked(ApiKeyCheck::Remembered, true);
            return Ok(true);
        }
        let secret = key.secret().to_owned();
        let stored = stored.to_owned();
        let mut memory = self.verifier.memory().pop().unwrap_or_default();
        let (matched, memory, seconds) = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let matched = verify_in(secret.as_bytes(), &stored, &mut memory);
            (matched, memory, started.elapsed().as_secs_f64())
        })
        .await
        .map_err(|e| AuthError::Signing(format!("argon2 task: {e}")))?;
        self.verifier.memory().push(memory);
        let auth_metrics = self.metrics.auth();
        auth_metrics.argon2(seconds);
        auth_metrics.api_key_checked(ApiKeyCheck::Hashed, matched);
        Ok(matched)
    }

    /// Counts a failed attempt against the client IP, then refuses the key.
    async fn fail<T>(&self, ip: Option<IpAddr>) -> Result<T, AuthError> {
        if let Some(ip) = ip {
            self.limiter.count_failure(&failure_bucket(ip)).await?;
        }
        Err(AuthError::InvalidCredential)
    }
}

fn failure_bucket(ip: IpAddr) -> String {
    format!("apikey-fail:{ip}")
}

/// The caller a live key stands for: its member, limited to the key's roles.
/// `None` when the key is revoked or expired, or its member is not active.
fn key_principal(record: ApiKeyRecord, now: i64) -> Option<Principal> {
    let live = record.revoked_at.is_none()
        && record.expires_at.is_none_or(|at| at > now)
        && record.member.status == crate::domain::MemberStatus::Active;
    if !live {
        return None;
    }
    let mut member = record.member;
    let allowed: Vec<Role> = member
        .roles
        .iter()
        .filter(|role| record.roles.contains(role))
        .cloned()
        .collect();
    member.roles = allowed;
    Some(Principal {
        member,
        session_id: format!("{KEY_SESSION_PREFIX}{}", record.id),
        api_key: Some(api_key_prefix(&record.id)),
    })
}

#[cfg(test)]
mod reused_memory_tests {
    use super::*;

    #[test]
    fn verification_in_reused_memory_matches_the_argon2_crate() {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let stored = Argon2::default()
            .hash_password(b"s3cret", &salt)
            .unwrap()
            .to_string();
        let mut memory = Vec::new();
        assert!(verify_in(b"s3cret", &stored, &mut memory));
        let allocated = memory.len();
        assert!(allocated > 0);
        assert!(!verify_in(b"s3creT", &stored, &mut memory));
        assert!(
            verify_in(b"s3cret", &stored, &mut memory),
            "memory reuse keeps results right"
        );
        assert_eq!(memory.len(), allocated, "no reallocation for the same cost");
        assert!(!verify_in(b"s3cret", "not a phc string", &mut memory));
        assert!(!verify_in(
            b"s3cret",
            &stored.replace("argon2id", "argon2i"),
            &mut memory
        ));
    }
}
