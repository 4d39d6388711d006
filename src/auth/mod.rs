//! Authentication, one job per file: signing in by link or code
//! (`sign_in.rs`), sessions and their rotating refresh tokens (`sessions.rs`),
//! API keys (`api_key.rs`), and the rate limits in front of them
//! (`rate_limit.rs`); access tokens (`jwt.rs`) signed with keys that live in
//! the store (`signing_keys.rs`), held decoded in memory (`keyring.rs`).
//! [`AuthService`] only bundles the jobs, built from the same store, clock and
//! keys, and tells a session's token from a key's.

mod api_key;
mod client;
mod handoff;
mod jwt;
mod key_material;
mod key_vault;
mod keyring;
mod keys;
mod principal;
mod rate_limit;
mod redirect;
mod sessions;
mod sign_in;
mod signing_keys;

use std::sync::Arc;
use std::time::Duration;

pub use api_key::{ApiKeys, MAX_CONCURRENT_VERIFICATIONS, hash_api_key};
pub use client::{Client, describe_device};
pub use handoff::{HandoffKeys, RequestHandle};
pub use jwt::{ACCESS_TOKEN_TYPE, Claims, JwtError, JwtKeys};
pub use key_material::KeyMaterialError;
pub use keyring::{KeyState, Keyring};
pub use keys::{ServerSecret, hmac_sha256, load_or_create_secret};
pub use principal::Principal;
pub use rate_limit::RateLimiter;
pub use redirect::RedirectTarget;
pub use sessions::{Sessions, TokenGrant};
pub use sign_in::{CrossDevice, Handoff, LinkRequest, RequestStatus, SignIn};
pub use signing_keys::{KeyActor, KeyInfo, KeyPolicy, RELOAD_EVERY, SigningKeyError, SigningKeys};

use crate::clock::Clock;
use crate::config::{RateLimitSettings, Settings};
use crate::mail::Mailer;
use crate::metrics::Metrics;
use crate::store::{DynStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("rate limited for {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("redirect target not allowed")]
    RedirectNotAllowed,
    #[error("invalid, expired or used sign-in link or code")]
    InvalidLink,
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    #[error("invalid credential")]
    InvalidCredential,
    #[error("missing role {0}")]
    MissingRole(&'static str),
    #[error("cannot prepare mail: {0}")]
    Mail(String),
    #[error("cannot sign a token: {0}")]
    Signing(String),
}

/// What the auth service needs to know from the settings.
#[derive(Clone, Debug)]
pub struct AuthSettings {
    pub public_url: String,
    pub link_ttl: Duration,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub rate_limits: RateLimitSettings,
    pub allowed_redirects: Vec<url::Origin>,
}

impl AuthSettings {
    pub fn from_settings(settings: &Settings, public_url: &str) -> Self {
        Self {
            public_url: public_url.to_owned(),
            link_ttl: settings.link_ttl,
            access_ttl: settings.access_ttl,
            refresh_ttl: settings.refresh_ttl,
            rate_limits: settings.rate_limits.clone(),
            allowed_redirects: with_own_origin(&settings.allowed_redirects, public_url),
        }
    }
}

/// The configured origins plus gatehouse's own: a link may always lead back to
/// gatehouse's pages (the admin console asks for that).
fn with_own_origin(configured: &[url::Origin], public_url: &str) -> Vec<url::Origin> {
    let mut origins = configured.to_vec();
    if let Ok(own) = url::Url::parse(public_url).map(|url| url.origin())
        && !origins.contains(&own)
    {
        origins.push(own);
    }
    origins
}

/// The auth jobs, built once from the pieces they share.
pub struct AuthService {
    sign_in: SignIn,
    sessions: Sessions,
    api_keys: ApiKeys,
    jwt: Arc<JwtKeys>,
}

impl AuthService {
    pub fn new(
        store: DynStore,
        clock: Clock,
        jwt: JwtKeys,
        mailer: Arc<Mailer>,
        secret: &ServerSecret,
        settings: AuthSettings,
    ) -> Self {
        let jwt = Arc::new(jwt);
        let limiter = RateLimiter::new(store.clone(), clock.clone(), settings.rate_limits.clone());
        let sessions = Sessions::new(
            store.clone(),
            clock.clone(),
            jwt.clone(),
            settings.refresh_ttl,
        );
        let api_keys = ApiKeys::new(store.clone(), clock.clone(), jwt.clone(), limiter.clone());
        let sign_in = SignIn::new(
            store,
            clock,
            mailer,
            secret,
            sessions.clone(),
            limiter,
            settings,
        );
        Self {
            sign_in,
            sessions,
            api_keys,
            jwt,
        }
    }

    /// Counts the sign-in funnel, rate limits and API-key checks in `metrics`
    /// (by default, in a registry of their own that nobody scrapes).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.sign_in.set_metrics(metrics.clone());
        self.sessions.set_metrics(metrics.clone());
        self.api_keys.set_metrics(metrics);
        self
    }

    pub fn sign_in(&self) -> &SignIn {
        &self.sign_in
    }

    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    pub fn api_keys(&self) -> &ApiKeys {
        &self.api_keys
    }

    pub fn jwt(&self) -> &JwtKeys {
        &self.jwt
    }

    /// The caller behind an access token: a sign-in session's member, or, for
    /// a token exchanged for an API key, the key's member. Either must still be
    /// live, so a logout or a revocation takes effect before the token expires.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        let claims = self
            .sessions
            .verify(token)
            .map_err(|_| AuthError::InvalidCredential)?;
        match claims.sid.strip_prefix(api_key::KEY_SESSION_PREFIX) {
            Some(key_id) => self.api_keys.key_session(key_id).await,
            None => self.sessions.principal(claims).await,
        }
    }
}
