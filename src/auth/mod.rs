//! Authentication: magic links and codes, sessions with rotating refresh tokens,
//! access JWTs, and the rate limits in front of them.

mod api_key;
mod jwt;
mod keys;
mod magic_link;
mod principal;
mod rate_limit;
mod redirect;
mod session;

use std::sync::Arc;
use std::time::Duration;

pub use api_key::{ApiKeyVerifier, MAX_CONCURRENT_VERIFICATIONS, hash_api_key};
pub use jwt::{Claims, JwtError, JwtKeys};
pub use keys::{ServerSecret, load_or_create_secret};
pub use magic_link::LinkRequest;
pub use principal::Principal;
pub use redirect::RedirectTarget;
pub use session::TokenGrant;

use crate::config::{RateLimitSettings, Settings};
use crate::mail::Mailer;
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
            allowed_redirects: settings.allowed_redirects.clone(),
        }
    }
}

/// The sign-in service. Cheap to share: everything inside is behind an `Arc` or small.
pub struct AuthService {
    store: DynStore,
    jwt: JwtKeys,
    mailer: Arc<Mailer>,
    code_pepper: [u8; 32],
    settings: AuthSettings,
    api_keys: ApiKeyVerifier,
}

impl AuthService {
    pub fn new(
        store: DynStore,
        jwt: JwtKeys,
        mailer: Arc<Mailer>,
        secret: &ServerSecret,
        settings: AuthSettings,
    ) -> Self {
        Self {
            store,
            jwt,
            mailer,
            code_pepper: secret.derive("sign-in code pepper"),
            settings,
            api_keys: ApiKeyVerifier::default(),
        }
    }

    pub fn jwt(&self) -> &JwtKeys {
        &self.jwt
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }
}

pub(crate) use crate::clock::now;
