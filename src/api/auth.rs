use std::sync::Arc;

use poem::Request;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Union};

use super::input::{EmailForm, EmailText, Opt, Strict, Text};
use super::views::TokenResponse;
use super::{ApiTags, BearerAuth, TrustedProxies};
use crate::auth::{AuthService, LinkRequest, RequestHandle, RequestStatus};
use crate::error::ApiError;

pub struct AuthApi {
    pub auth: Arc<AuthService>,
    pub proxies: TrustedProxies,
    /// Whether `POST /v1/auth/eligibility` answers at all: it reveals the allowlist.
    pub public_eligibility: bool,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct MagicLinkRequest {
    /// The address to mail a sign-in link to.
    pub email: EmailText,
    /// Where the browser goes after signing in, with the tokens in the URL
    /// fragment. Must be on an origin listed in `GATEHOUSE_ALLOWED_REDIRECTS`
    /// (or gatehouse's own): 403 `redirect_not_allowed` otherwise.
    pub redirect_to: Opt<Text>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Accepted {
    /// Always `accepted`: the answer is the same whether or not the address may sign in.
    pub status: String,
    /// For an app that waits on this device while the link is opened on
    /// another: show `number`, and ask `POST /v1/auth/magic-link/status` with
    /// `id` and `secret` every few seconds. Made alike whether or not the
    /// address may sign in. Clients that ignore it lose nothing.
    pub request: RequestHandleView,
}

/// A link request's handle. `secret` proves the asker; keep it like a password.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct RequestHandleView {
    pub id: String,
    pub secret: String,
    /// Shown on the waiting device; the other device must pick it.
    pub number: u8,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

impl From<RequestHandle> for RequestHandleView {
    fn from(handle: RequestHandle) -> Self {
        Self {
            id: handle.id,
            secret: handle.secret,
            number: handle.number,
            expires_at: super::views::timestamp(handle.expires_at),
        }
    }
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct StatusRequest {
    pub id: Text,
    pub secret: Text,
}

/// Where a link request stands.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct RequestStatusView {
    /// `pending`, `signed_in` (the tokens are here, this once), `completed_elsewhere`
    /// (the link was used on another device), `refused` (a wrong number was
    /// picked) or `expired`.
    pub status: String,
    #[oai(skip_serializing_if_is_none)]
    pub tokens: Option<TokenResponse>,
}

impl From<RequestStatus> for RequestStatusView {
    fn from(status: RequestStatus) -> Self {
        let (name, tokens) = match status {
            RequestStatus::Pending => ("pending", None),
            RequestStatus::SignedIn(grant) => {
                ("signed_in", Some(TokenResponse::from(grant.as_ref())))
            }
            RequestStatus::CompletedElsewhere => ("completed_elsewhere", None),
            RequestStatus::Refused => ("refused", None),
            RequestStatus::Expired => ("expired", None),
        };
        Self {
            status: name.into(),
            tokens,
        }
    }
}

#[derive(ApiResponse)]
enum LinkRequested {
    /// If the address may sign in, a mail with a link and a code is on its way.
    #[oai(status = 202)]
    Accepted(Json<Accepted>),
}

/// Either `token` (from the link) or `email` with `code` (from the mail):
/// a body that is both, or neither, is refused (400).
#[derive(Debug, Union)]
#[oai(one_of)]
pub enum VerifyRequest {
    Token(LinkToken),
    Code(MailedCode),
}

/// The token of a sign-in link.
#[derive(Debug, Object)]
pub struct LinkToken {
    pub token: Text,
}

/// An address and the code mailed to it.
#[derive(Debug, Object)]
pub struct MailedCode {
    pub email: Strict<EmailForm>,
    pub code: Text,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct RefreshRequest {
    pub refresh_token: Text,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct EligibilityRequest {
    pub email: EmailText,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
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
        let email = body.email.email()?;
        let request = LinkRequest {
            email,
            redirect_to: body.redirect_to.0.as_deref(),
            client: self.proxies.client(req),
        };
        let handle = self.auth.sign_in().request_link(request).await?;
        Ok(LinkRequested::Accepted(Json(Accepted {
            status: "accepted".into(),
            request: handle.into(),
        })))
    }

    /// Where a link request stands, asked by the device that made it.
    ///
    /// Once the link was opened on another device and the number this device
    /// shows was picked there, the answer is `signed_in` with this device's
    /// tokens, once. A request for an address that may not sign in stays
    /// `pending` until it expires. 401 for an id and secret that do not belong together.
    #[oai(path = "/v1/auth/magic-link/status", method = "post")]
    async fn request_status(
        &self,
        body: Json<StatusRequest>,
        req: &Request,
    ) -> Result<Json<RequestStatusView>, ApiError> {
        let client = self.proxies.client(req);
        let status = self
            .auth
            .sign_in()
            .request_status(&body.id, &body.secret, &client)
            .await?;
        Ok(Json(status.into()))
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
        let client = self.proxies.client(req);
        let grant = match &body.0 {
            VerifyRequest::Token(link) => {
                self.auth
                    .sign_in()
                    .redeem_token(&link.token, &client)
                    .await?
            }
            VerifyRequest::Code(mailed) => {
                let email = mailed.email.0.email()?;
                self.auth
                    .sign_in()
                    .redeem_code(&email, &mailed.code, &client)
                    .await?
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
        let email = body.email.email()?;
        let ip = self.proxies.client_ip(req);
        let eligible = self.auth.sign_in().check_eligibility(&email, ip).await?;
        Ok(Json(Eligibility { eligible }))
    }
}
