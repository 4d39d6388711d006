use std::sync::Arc;

use poem::Request;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::views::TokenResponse;
use super::{ApiTags, BearerAuth, TrustedProxies};
use crate::auth::{AuthService, LinkRequest};
use crate::domain::Email;
use crate::error::ApiError;

pub struct AuthApi {
    pub auth: Arc<AuthService>,
    pub proxies: TrustedProxies,
    /// Whether `POST /v1/auth/eligibility` answers at all: it reveals the allowlist.
    pub public_eligibility: bool,
}

#[derive(Debug, Object)]
pub struct MagicLinkRequest {
    /// The address to mail a sign-in link to.
    pub email: String,
    /// Where the browser goes after signing in, with the tokens in the URL
    /// fragment. Must be on an origin listed in `GATEHOUSE_ALLOWED_REDIRECTS`.
    pub redirect_to: Option<String>,
}

#[derive(Debug, Object)]
pub struct Accepted {
    /// Always `accepted`: the answer is the same whether or not the address may sign in.
    pub status: String,
}

#[derive(ApiResponse)]
enum LinkRequested {
    /// If the address may sign in, a mail with a link and a code is on its way.
    #[oai(status = 202)]
    Accepted(Json<Accepted>),
}

/// Either `token` (from the link) or `email` with `code` (from the mail).
#[derive(Debug, Object)]
pub struct VerifyRequest {
    pub token: Option<String>,
    pub email: Option<String>,
    pub code: Option<String>,
}

#[derive(Debug, Object)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[derive(Debug, Object)]
pub struct EligibilityRequest {
    pub email: String,
}

#[derive(Debug, Object)]
pub struct Eligibility {
    pub eligible: bool,
}

#[derive(ApiResponse)]
enum LoggedOut {
    /// The session is ended: its refresh token and access tokens no longer work.
    #[oai(status = 204)]
    NoContent,
}

#[OpenApi(tag = "ApiTags::Auth")]
impl AuthApi {
    /// Mails a sign-in link and code to an address that may sign in.
    ///
    /// Answers 202 with the same body whether or not the address is eligible,
    /// so the answer reveals nothing about the allowlist. Limited per address
    /// and per client IP (429 with `Retry-After`).
    #[oai(path = "/v1/auth/magic-link", method = "post")]
    async fn magic_link(
        &self,
        body: Json<MagicLinkRequest>,
        req: &Request,
    ) -> Result<LinkRequested, ApiError> {
        let email = Email::parse(&body.email)?;
        let request = LinkRequest {
            email,
            redirect_to: body.redirect_to.as_deref(),
            ip: self.proxies.client_ip(req),
        };
        self.auth.sign_in().request_link(request).await?;
        Ok(LinkRequested::Accepted(Json(Accepted {
            status: "accepted".into(),
        })))
    }

    /// Exchanges a link token, or an address and its mailed code, for tokens.
    ///
    /// A token works once; a code allows five guesses. The first sign-in
    /// creates the member with `member` plus any roles pre-assigned on the allowlist.
    #[oai(path = "/v1/auth/verify", method = "post")]
    async fn verify(
        &self,
        body: Json<VerifyRequest>,
        req: &Request,
    ) -> Result<Json<TokenResponse>, ApiError> {
        let ip = self.proxies.client_ip(req);
        let grant = match (&body.token, &body.email, &body.code) {
            (Some(token), None, None) => self.auth.sign_in().redeem_token(token, ip).await?,
            (None, Some(email), Some(code)) => {
                let email = Email::parse(email)?;
                self.auth.sign_in().redeem_code(&email, code, ip).await?
            }
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_verify_request",
                    "send either `token`, or `email` and `code`",
                ));
            }
        };
        Ok(Json(TokenResponse::from(&grant)))
    }

    /// Exchanges a refresh token for a new access and refresh token.
    ///
    /// Each refresh token works once. Presenting one that was already used
    /// revokes the whole session, since only a thief or a replay would.
    #[oai(path = "/v1/auth/refresh", method = "post")]
    async fn refresh(&self, body: Json<RefreshRequest>) -> Result<Json<TokenResponse>, ApiError> {
        let grant = self.auth.sessions().refresh(&body.refresh_token).await?;
        Ok(Json(TokenResponse::from(&grant)))
    }

    /// Ends the caller's session.
    #[oai(path = "/v1/auth/logout", method = "post")]
    async fn logout(&self, auth: BearerAuth, req: &Request) -> Result<LoggedOut, ApiError> {
        let ip = self.proxies.client_ip(req);
        self.auth.sessions().logout(&auth.0, ip).await?;
        Ok(LoggedOut::NoContent)
    }

    /// Says whether an address may sign in.
    ///
    /// This reveals the allowlist, so it is off (404) unless
    /// `GATEHOUSE_PUBLIC_ELIGIBILITY=true`, and always limited per client IP.
    #[oai(path = "/v1/auth/eligibility", method = "post")]
    async fn eligibility(
        &self,
        body: Json<EligibilityRequest>,
        req: &Request,
    ) -> Result<Json<Eligibility>, ApiError> {
        if !self.public_eligibility {
            return Err(ApiError::NotFound(
                "the eligibility check is not enabled".into(),
            ));
        }
        let email = Email::parse(&body.email)?;
        let ip = self.proxies.client_ip(req);
        let eligible = self.auth.sign_in().check_eligibility(&email, ip).await?;
        Ok(Json(Eligibility { eligible }))
    }
}
