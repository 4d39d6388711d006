//! Security schemes: how a request proves who it is.

use std::sync::Arc;

use poem::Request;
use poem_openapi::SecurityScheme;
use poem_openapi::auth::Bearer;

use crate::app::AppState;
use crate::auth::Principal;
use crate::error::ApiError;

/// An access token from `/v1/auth/verify` or `/v1/auth/refresh`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT", checker = "check_bearer")]
pub struct BearerAuth(pub Principal);

async fn check_bearer(req: &Request, bearer: Bearer) -> poem::Result<Principal> {
    let state = req
        .data::<Arc<AppState>>()
        .ok_or_else(|| ApiError::Internal("application state missing".into()))?;
    Ok(state
        .auth
        .authenticate(&bearer.token)
        .await
        .map_err(ApiError::from)?)
}

impl BearerAuth {
    /// The caller, if they hold `admin`; a 403 otherwise.
    pub fn admin(&self) -> Result<&Principal, ApiError> {
        self.0.require_role(crate::domain::Role::ADMIN)?;
        Ok(&self.0)
    }
}
