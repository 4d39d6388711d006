//! Security schemes: how a request proves who it is.
//!
//! Members send an access token (`Authorization: Bearer …`); integrations send
//! an API key (`Authorization: ApiKey gh_…` or `X-API-Key: gh_…`). [`AdminAuth`]
//! accepts any of the three and requires the `admin` role, so an admin handler
//! cannot forget the check; [`KeyAuth`] accepts only the two key forms. A
//! request carrying two credentials is refused (401 `multiple_credentials`),
//! whichever of them is valid.

use std::sync::Arc;

use poem::{Request, RequestBody};
use poem_openapi::auth::{ApiKey, Bearer};
use poem_openapi::registry::Registry;
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions, SecurityScheme};

use super::TrustedProxies;
use crate::auth::{AuthService, Principal};
use crate::error::ApiError;

/// An access token from `/v1/auth/verify`, `/v1/auth/refresh` or `/v1/auth/token`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT", checker = "check_bearer")]
pub struct BearerAuth(pub Principal);

/// An API key as `Authorization: ApiKey gh_<id>_<secret>`.
#[derive(SecurityScheme)]
#[oai(
    rename = "ApiKeyAuthorization",
    ty = "api_key",
    key_name = "Authorization",
    key_in = "header",
    checker = "check_authorization_key"
)]
pub struct AuthorizationKeyAuth(pub Principal);

/// An API key as `X-API-Key: gh_<id>_<secret>`.
#[derive(SecurityScheme)]
#[oai(
    rename = "ApiKeyHeader",
    ty = "api_key",
    key_name = "X-API-Key",
    key_in = "header",
    checker = "check_header_key"
)]
pub struct HeaderKeyAuth(pub Principal);

/// What the checkers need from the route's data; a missing one is a wiring
/// mistake, reported as a 500.
fn data<T: Send + Sync + 'static>(req: &Request) -> Result<&T, ApiError> {
    req.data::<T>().ok_or_else(|| {
        ApiError::Internal(format!(
            "{} missing from the route",
            std::any::type_name::<T>()
        ))
    })
}

async fn check_bearer(req: &Request, bearer: Bearer) -> poem::Result<Principal> {
    one_credential(req)?;
    Ok(data::<Arc<AuthService>>(req)?
        .authenticate(&bearer.token)
        .await
        .map_err(ApiError::from)?)
}

async fn check_key(req: &Request, key: &str) -> poem::Result<Principal> {
    one_credential(req)?;
    let ip = data::<TrustedProxies>(req)?.client_ip(req);
    Ok(data::<Arc<AuthService>>(req)?
        .api_keys()
        .authenticate(key, ip)
        .await
        .map_err(ApiError::from)?)
}

async fn check_authorization_key(req: &Request, header: ApiKey) -> poem::Result<Principal> {
    match split_scheme(&header.key) {
        Some((scheme, key)) if scheme == "apikey" => check_key(req, key).await,
        _ => Err(ApiError::Unauthorized("expected `Authorization: ApiKey <key>`".into()).into()),
    }
}

async fn check_header_key(req: &Request, header: ApiKey) -> poem::Result<Principal> {
    check_key(req, &header.key).await
}

/// `("apikey", "gh_…")` from `ApiKey gh_…`: the scheme lowercased, and the rest.
fn split_scheme(value: &str) -> Option<(String, &str)> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    Some((scheme.to_ascii_lowercase(), rest.trim()))
}

/// Refuses a request that carries more than one credential (`Authorization`
/// and `X-API-Key`, or either twice): which one it means is a guess we do not
/// make, and a wrong credential must never hide behind a right one.
fn one_credential(req: &Request) -> Result<(), ApiError> {
    let headers = req.headers();
    let count = headers
        .get_all(poem::http::header::AUTHORIZATION)
        .iter()
        .count()
        + headers.get_all("x-api-key").iter().count();
    if count > 1 {
        return Err(ApiError::MultipleCredentials);
    }
    Ok(())
}

/// Which credential a request carries, judged from its headers alone.
async fn principal_from(
    req: &Request,
    body: &mut RequestBody,
    allow_bearer: bool,
) -> poem::Result<Principal> {
    one_credential(req)?;
    let opts = ExtractParamOptions::default;
    if req.headers().contains_key("x-api-key") {
        return Ok(HeaderKeyAuth::from_request(req, body, opts()).await?.0);
    }
    let scheme = req
        .header(poem::http::header::AUTHORIZATION)
        .and_then(split_scheme)
        .map(|(scheme, _)| scheme);
    match scheme.as_deref() {
        Some("apikey") => Ok(AuthorizationKeyAuth::from_request(req, body, opts())
            .await?
            .0),
        _ if allow_bearer => Ok(BearerAuth::from_request(req, body, opts()).await?.0),
        _ => Err(ApiError::Unauthorized("an API key is required".into()).into()),
    }
}

/// The spec's entries for the three schemes: each handler that takes one of
/// the combined extractors below accepts any of them.
fn register_all(registry: &mut Registry) {
    <BearerAuth as ApiExtractor>::register(registry);
    <AuthorizationKeyAuth as ApiExtractor>::register(registry);
    <HeaderKeyAuth as ApiExtractor>::register(registry);
}

fn key_schemes() -> Vec<&'static str> {
    let mut schemes = <AuthorizationKeyAuth as ApiExtractor>::security_schemes();
    schemes.extend(<HeaderKeyAuth as ApiExtractor>::security_schemes());
    schemes
}

fn all_schemes() -> Vec<&'static str> {
    let mut schemes = <BearerAuth as ApiExtractor>::security_schemes();
    schemes.extend(key_schemes());
    schemes
}

/// An admin, by access token or API key. Anyone else gets 401 or 403.
pub struct AdminAuth(pub Principal);

impl<'a> ApiExtractor<'a> for AdminAuth {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        register_all(registry);
    }

    fn security_schemes() -> Vec<&'static str> {
        all_schemes()
    }

    async fn from_request(
        req: &'a Request,
        body: &mut RequestBody,
        _opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let principal = principal_from(req, body, true).await?;
        principal
            .require_role(crate::domain::Role::ADMIN)
            .map_err(ApiError::from)?;
        Ok(Self(principal))
    }
}

/// Any signed-in member, by access token or API key.
pub struct MemberAuth(pub Principal);

impl<'a> ApiExtractor<'a> for MemberAuth {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        register_all(registry);
    }

    fn security_schemes() -> Vec<&'static str> {
        all_schemes()
    }

    async fn from_request(
        req: &'a Request,
        body: &mut RequestBody,
        _opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        Ok(Self(principal_from(req, body, true).await?))
    }
}

/// Any API key (not an access token).
pub struct KeyAuth(pub Principal);

impl<'a> ApiExtractor<'a> for KeyAuth {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        <AuthorizationKeyAuth as ApiExtractor>::register(registry);
        <HeaderKeyAuth as ApiExtractor>::register(registry);
    }

    fn security_schemes() -> Vec<&'static str> {
        key_schemes()
    }

    async fn from_request(
        req: &'a Request,
        body: &mut RequestBody,
        _opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        Ok(Self(principal_from(req, body, false).await?))
    }
}

impl BearerAuth {
    /// The caller, if they hold `admin`; a 403 otherwise.
    pub fn admin(&self) -> Result<&Principal, ApiError> {
        self.0.require_role(crate::domain::Role::ADMIN)?;
        Ok(&self.0)
    }
}
