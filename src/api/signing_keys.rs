//! The signing keys over HTTP: what verifiers fetch (`/.well-known/jwks.json`,
//! `/.well-known/openid-configuration`) and what admins do (list, rotate,
//! revoke). The operations are `auth::SigningKeys`', shared with the CLI.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::Request;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde_json::Value;

use super::members::actor;
use super::views::timestamp;
use super::{AdminAuth, ApiTags, TrustedProxies};
use crate::auth::{KeyActor, KeyInfo, SigningKeys};
use crate::error::ApiError;

pub struct SigningKeysApi {
    pub keys: Arc<SigningKeys>,
    /// The `iss` of gatehouse's tokens.
    pub issuer: String,
    /// Where the JWKS is served: the public URL's `/.well-known/jwks.json`.
    pub jwks_uri: String,
    pub proxies: TrustedProxies,
}

/// A public key as RFC 7517 writes it (EC P-256 or OKP Ed25519).
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Jwk {
    /// `EC` or `OKP`.
    pub kty: String,
    /// `P-256` or `Ed25519`.
    pub crv: String,
    pub x: String,
    /// EC keys only.
    #[oai(skip_serializing_if_is_none)]
    pub y: Option<String>,
    /// The RFC 7638 thumbprint of the key; tokens name their key with it.
    pub kid: String,
    /// `ES256` or `EdDSA`.
    pub alg: String,
    /// Always `sig`.
    #[oai(rename = "use")]
    pub use_: String,
}

impl Jwk {
    fn from_json(jwk: &Value) -> Option<Self> {
        let text = |name: &str| jwk[name].as_str().map(str::to_owned);
        Some(Self {
            kty: text("kty")?,
            crv: text("crv")?,
            x: text("x")?,
            y: text("y"),
            kid: text("kid")?,
            alg: text("alg")?,
            use_: text("use")?,
        })
    }
}

/// The keys that verify gatehouse tokens now: the current one, the next one
/// (published before it signs) and retiring ones whose tokens may still be live.
/// Empty when gatehouse signs with HS256 (a shared secret).
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// OpenID Provider metadata, as much as gatehouse is: enough for libraries
/// that find keys from an issuer URL. gatehouse is not (yet) an OpenID provider.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct OpenIdConfiguration {
    pub issuer: String,
    pub jwks_uri: String,
    /// Algorithms of the keys in the JWKS.
    pub token_signing_alg_values_supported: Vec<String>,
}

#[derive(ApiResponse)]
enum Cacheable<T: poem_openapi::types::ToJSON + Send + Sync> {
    #[oai(status = 200)]
    Ok(Json<T>, #[oai(header = "cache-control")] String),
}

/// A signing key and where it is in its life.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct SigningKeyView {
    pub kid: String,
    /// `ES256`, `EdDSA` or `HS256`.
    pub alg: String,
    /// `next` (published, not signing yet), `current` (signing), `retiring`
    /// (published until its tokens expire), `retired` or `revoked`.
    pub state: String,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    /// When it starts (or started) signing.
    pub activates_at: DateTime<Utc>,
    /// When a superseded key leaves the JWKS and its tokens are refused.
    pub retires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<KeyInfo> for SigningKeyView {
    fn from(key: KeyInfo) -> Self {
        Self {
            kid: key.kid,
            alg: key.alg,
            state: key.state.as_str().to_owned(),
            created_by: key.created_by,
            created_at: timestamp(key.created_at),
            activates_at: timestamp(key.activates_at),
            retires_at: key.retires_at.map(timestamp),
            revoked_at: key.revoked_at.map(timestamp),
        }
    }
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct SigningKeyList {
    /// Oldest activation first.
    pub items: Vec<SigningKeyView>,
}

#[derive(ApiResponse)]
enum Rotated {
    /// Published now; it signs from `activates_at`.
    #[oai(status = 201)]
    Created(Json<SigningKeyView>),
}

#[derive(ApiResponse)]
enum Revoked {
    /// Revoked: its tokens are refused at once, on every instance, and it left the JWKS.
    #[oai(status = 204)]
    NoContent,
}

#[OpenApi(tag = "ApiTags::SigningKeys")]
impl SigningKeysApi {
    /// The public keys that verify gatehouse access tokens (RFC 7517).
    #[oai(path = "/.well-known/jwks.json", method = "get")]
    async fn jwks(&self) -> Cacheable<Jwks> {
        let keys = self.keys.jwks().iter().filter_map(Jwk::from_json).collect();
        Cacheable::Ok(Json(Jwks { keys }), self.cache_control())
    }

    /// Where the keys are, for libraries that start from the issuer URL.
    #[oai(path = "/.well-known/openid-configuration", method = "get")]
    async fn openid_configuration(&self) -> Cacheable<OpenIdConfiguration> {
        let mut algs: Vec<String> = self
            .keys
            .jwks()
            .iter()
            .filter_map(|jwk| jwk["alg"].as_str().map(str::to_owned))
            .collect();
        algs.sort();
        algs.dedup();
        let config = OpenIdConfiguration {
            issuer: self.issuer.clone(),
            jwks_uri: self.jwks_uri.clone(),
            token_signing_alg_values_supported: algs,
        };
        Cacheable::Ok(Json(config), self.cache_control())
    }

    /// Every signing key, with its state and dates (admin only).
    #[oai(path = "/v1/admin/signing-keys", method = "get")]
    async fn list(&self, _auth: AdminAuth) -> Result<Json<SigningKeyList>, ApiError> {
        let items = self
            .keys
            .list()
            .await?
            .into_iter()
            .map(Into::into)
            .collect();
        Ok(Json(SigningKeyList { items }))
    }

    /// Publishes a new key at once; it signs after the publish delay, and the
    /// current key stays published until its tokens have expired (admin only).
    #[oai(path = "/v1/admin/signing-keys/rotate", method = "post")]
    async fn rotate(&self, auth: AdminAuth, req: &Request) -> Result<Rotated, ApiError> {
        let rotated = self.keys.rotate(&self.actor(&auth, req)).await?;
        Ok(Rotated::Created(Json(rotated.into())))
    }

    /// Revokes a key: its tokens are refused at once on every instance, and
    /// a fresh key signs if it was signing (admin only).
    #[oai(path = "/v1/admin/signing-keys/:kid", method = "delete")]
    async fn revoke(
        &self,
        auth: AdminAuth,
        kid: Path<String>,
        req: &Request,
    ) -> Result<Revoked, ApiError> {
        self.keys
            .revoke(&self.actor(&auth, req), kid.trim())
            .await?;
        Ok(Revoked::NoContent)
    }
}

impl SigningKeysApi {
    fn cache_control(&self) -> String {
        format!(
            "public, max-age={}",
            self.keys.policy().jwks_max_age.as_secs()
        )
    }

    fn actor(&self, auth: &AdminAuth, req: &Request) -> KeyActor {
        let actor = actor(auth, &self.proxies, req);
        KeyActor::new(actor.id, actor.ip)
    }
}
