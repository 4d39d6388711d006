//! The one error type of the HTTP API, rendered as RFC 9457 `application/problem+json`.
//!
//! Every module keeps its own `thiserror` enum; they are mapped to HTTP here and
//! nowhere else. A 5xx body never carries the cause: it is logged, and the client
//! gets a generic title.

use poem::http::{HeaderValue, StatusCode, header};
use poem::{Body, Response};
use poem_openapi::error::{ParseParamError, ParsePathError, ParseRequestPayloadError};
use poem_openapi::registry::{MetaMediaType, MetaResponse, MetaResponses, MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use poem_openapi::{ApiResponse, Object};

use crate::auth::AuthError;
use crate::domain::{Conflict, EmailError, RoleError};
use crate::store::StoreError;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document, with a stable machine-readable `code`.
#[derive(Debug, Clone, Object, serde::Deserialize)]
#[oai(skip_serializing_if_is_none)]
pub struct Problem {
    /// A URI reference naming the problem type; `about:blank` when the status says it all.
    #[oai(rename = "type")]
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong in this occurrence, written for a person.
    #[oai(skip_serializing_if_is_none)]
    pub detail: Option<String>,
    /// A stable identifier for programs, e.g. `rate_limited` or `invalid_email`.
    pub code: String,
    /// The request's id, as in the `X-Request-Id` response header and the
    /// server's log lines for it: quote it when reporting a problem.
    #[oai(skip_serializing_if_is_none)]
    #[serde(default)]
    pub request_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{detail}")]
    BadRequest { code: &'static str, detail: String },
    #[error("{detail}")]
    Unprocessable { code: &'static str, detail: String },
    #[error("{0}")]
    Unauthorized(String),
    /// A credential of a kind with its own code, e.g. a used sign-in link (`invalid_link`).
    #[error("{detail}")]
    Unauthenticated { code: &'static str, detail: String },
    /// Refused by policy, with a code, e.g. a redirect to an origin not allowed.
    #[error("{detail}")]
    NotAllowed { code: &'static str, detail: String },
    /// `Authorization` and `X-API-Key` together (or either twice).
    #[error("send one credential: `Authorization` or `X-API-Key`, not both")]
    MultipleCredentials,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{detail}")]
    Conflict { code: &'static str, detail: String },
    #[error("too many requests; retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("the service is temporarily unavailable")]
    Unavailable,
    #[error("the request body is too large; nothing was imported")]
    PayloadTooLarge,
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            detail: detail.into(),
        }
    }

    pub fn unprocessable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::Unprocessable {
            code,
            detail: detail.into(),
        }
    }

    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::Conflict {
            code,
            detail: detail.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthorized(_) | Self::Unauthenticated { .. } | Self::MultipleCredentials => {
                StatusCode::UNAUTHORIZED
            }
            Self::Forbidden(_) | Self::NotAllowed { .. } => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. }
            | Self::Unprocessable { code, .. }
            | Self::Unauthenticated { code, .. }
            | Self::NotAllowed { code, .. }
            | Self::Conflict { code, .. } => code,
            Self::Unauthorized(_) => "unauthorized",
            Self::MultipleCredentials => "multiple_credentials",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::PayloadTooLarge => "body_too_large",
            Self::Internal(_) => "internal",
        }
    }

    pub fn to_problem(&self) -> Problem {
        let status = self.status();
        let detail = match self {
            Self::Internal(_) => None,
            other => Some(other.to_string()),
        };
        problem(status, self.code(), detail)
    }
}

/// Builds a problem document for `status`.
pub fn problem(status: StatusCode, code: &str, detail: Option<String>) -> Problem {
    Problem {
        kind: "about:blank".into(),
        title: status.canonical_reason().unwrap_or("Error").into(),
        status: status.as_u16(),
        detail,
        code: code.into(),
        request_id: crate::telemetry::current_request_id().map(|id| id.to_string()),
    }
}

/// Renders a problem document as a response with the right content type.
pub fn problem_response(problem: &Problem) -> Response {
    let mut body = serde_json::json!({
        "type": problem.kind,
        "title": problem.title,
        "status": problem.status,
        "code": problem.code,
    });
    if let Some(detail) = &problem.detail {
        body["detail"] = serde_json::Value::from(detail.as_str());
    }
    if let Some(id) = &problem.request_id {
        body["request_id"] = serde_json::Value::from(id.as_str());
    }
    Response::builder()
        .status(StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .content_type(PROBLEM_JSON)
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from_json(body).unwrap_or_default())
}

impl poem::error::ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        ApiError::status(self)
    }

    fn as_response(&self) -> Response {
        if let Self::Internal(cause) = self {
            tracing::error!(%cause, "internal error");
        }
        let mut response = problem_response(&self.to_problem());
        match self {
            Self::RateLimited { retry_after_secs } => {
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after_secs.max(&1).to_owned()),
                );
            }
            Self::Unauthorized(_) | Self::Unauthenticated { .. } | Self::MultipleCredentials => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::Unavailable => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// Turns any error that reaches the top of the app into problem+json.
///
/// Our own [`ApiError`]s keep their rendering; errors raised by poem or
/// poem-openapi (malformed JSON, wrong content type, body too large, unknown
/// route) become problems with their status and a safe message.
pub fn render_any_error(err: poem::Error) -> Response {
    if err.is::<ApiError>() {
        return err.into_response();
    }
    let status = err.status();
    let (code, detail) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => (
            "body_too_large",
            Some("the request body is too large".into()),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", Some(err.to_string())),
        StatusCode::NOT_FOUND => ("not_found", Some("no such resource".into())),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", None),
        // What the spec refuses, refused before any handler ran.
        StatusCode::BAD_REQUEST if err.is::<ParseParamError>() || err.is::<ParsePathError>() => {
            ("invalid_parameter", Some(err.to_string()))
        }
        StatusCode::BAD_REQUEST if err.is::<ParseRequestPayloadError>() => {
            ("invalid_body", Some(err.to_string()))
        }
        StatusCode::UNAUTHORIZED => (
            "unauthorized",
            Some("a valid credential is required".into()),
        ),
        s if s.is_client_error() => ("bad_request", Some(err.to_string())),
        _ => {
            tracing::error!(error = %err, "unhandled error");
            ("internal", None)
        }
    };
    let mut response = problem_response(&problem(status, code, detail));
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

impl ApiResponse for ApiError {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: "An RFC 9457 problem document (4xx and 5xx)",
                status: None,
                status_range: None,
                content: vec![MetaMediaType {
                    content_type: PROBLEM_JSON,
                    schema: MetaSchemaRef::Reference(Problem::name().into_owned()),
                }],
                headers: vec![],
            }],
        }
    }

    fn register(registry: &mut Registry) {
        Problem::register(registry);
    }
}

impl From<EmailError> for ApiError {
    fn from(err: EmailError) -> Self {
        Self::unprocessable("invalid_email", err.to_string())
    }
}

impl From<RoleError> for ApiError {
    fn from(err: RoleError) -> Self {
        Self::unprocessable("invalid_role", err.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(cause) => {
                tracing::warn!(%cause, "database unavailable");
                Self::Unavailable
            }
            StoreError::NotFound(what) => Self::NotFound(format!("no such {what}")),
            StoreError::Conflict(conflict) => conflict.into(),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<Conflict> for ApiError {
    fn from(conflict: Conflict) -> Self {
        match conflict {
            // A well-formed name that names no role: the request is fine,
            // the roles that exist now are not what it expects.
            Conflict::UnknownRole(role) => {
                Self::conflict("unknown_role", format!("there is no role `{role}`"))
            }
            Conflict::LastAdmin => Self::conflict(
                "last_admin",
                "this would leave no active admin; make another member admin first",
            ),
            Conflict::BuiltinRole(role) => Self::conflict(
                "builtin_role",
                format!("`{role}` is a built-in role and cannot be deleted"),
            ),
            Conflict::RoleInUse { role, grants } => Self::conflict(
                "role_in_use",
                format!(
                    "`{role}` is granted {grants} time(s); delete with force=true to revoke those grants"
                ),
            ),
            other @ (Conflict::RoleExists(_)
            | Conflict::AlreadyMember(_)
            | Conflict::MemberDeleted) => Self::conflict("conflict", other.to_string()),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Store(store) => store.into(),
            AuthError::RateLimited { retry_after_secs } => Self::RateLimited { retry_after_secs },
            AuthError::RedirectNotAllowed => Self::NotAllowed {
                code: "redirect_not_allowed",
                detail: "redirect_to must be an http(s) URL on one of the configured allowed origins"
                    .into(),
            },
            AuthError::InvalidLink => Self::Unauthenticated {
                code: "invalid_link",
                detail: "this sign-in link or code is invalid, expired or already used; request a new one"
                    .into(),
            },
            AuthError::InvalidRefreshToken => {
                Self::Unauthorized("the refresh token is invalid, expired or revoked".into())
            }
            AuthError::InvalidCredential => {
                Self::Unauthorized("the credential is invalid, expired or revoked".into())
            }
            AuthError::MissingRole(role) => {
                Self::Forbidden(format!("this action needs the `{role}` role"))
            }
            AuthError::Mail(cause) | AuthError::Signing(cause) => Self::Internal(cause),
        }
    }
}

impl From<crate::import::ImportError> for ApiError {
    fn from(err: crate::import::ImportError) -> Self {
        use crate::import::ImportError;
        match err {
            ImportError::Store(store) => store.into(),
            ImportError::Read(io)
                if io
                    .get_ref()
                    .is_some_and(|inner| inner.is::<crate::api::body_limit::BodyTooLarge>()) =>
            {
                Self::PayloadTooLarge
            }
            err @ (ImportError::Read(_) | ImportError::Malformed { .. }) => {
                Self::bad_request("invalid_csv", format!("{err}; nothing was imported"))
            }
            err @ ImportError::MalformedJson { .. } => {
                Self::bad_request("invalid_json", format!("{err}; nothing was imported"))
            }
            err @ ImportError::InvalidBatchId => {
                Self::unprocessable("invalid_batch_id", err.to_string())
            }
            ImportError::Interrupted => Self::Internal("import interrupted".into()),
        }
    }
}

impl From<crate::admin::KeyRequestError> for ApiError {
    fn from(err: crate::admin::KeyRequestError) -> Self {
        use crate::admin::KeyRequestError;
        let code = match err {
            KeyRequestError::Name => "invalid_name",
            KeyRequestError::Expiry => "invalid_expiry",
        };
        Self::unprocessable(code, err.to_string())
    }
}

impl From<crate::admin::AdminError> for ApiError {
    fn from(err: crate::admin::AdminError) -> Self {
        use crate::admin::AdminError;
        match err {
            AdminError::Store(store) => store.into(),
            AdminError::Auth(auth) => auth.into(),
            AdminError::NotFound(what) => Self::NotFound(format!("no such {what}")),
            err @ AdminError::SelfAction(_) => Self::conflict("self_action", err.to_string()),
            err @ AdminError::RoleNotHeld(_) => Self::conflict("role_not_held", err.to_string()),
            err @ AdminError::MailNotFailed(_) => {
                Self::conflict("mail_not_failed", err.to_string())
            }
        }
    }
}

impl From<crate::webhooks::WebhookError> for ApiError {
    fn from(err: crate::webhooks::WebhookError) -> Self {
        use crate::webhooks::{TargetError, WebhookError};
        match err {
            WebhookError::Store(store) => store.into(),
            WebhookError::NotFound(what) => Self::NotFound(format!("no such {what}")),
            WebhookError::Target(target) => {
                let code = match target {
                    TargetError::NotHttps => "url_not_https",
                    TargetError::Internal { .. } => "url_internal_address",
                    TargetError::Unresolvable(_) => "url_unresolvable",
                    TargetError::Malformed(_) | TargetError::Credentials => "invalid_url",
                };
                // Where gatehouse will deliver is policy (https, a public
                // address that resolves), not the URL's syntax: 403.
                Self::NotAllowed {
                    code,
                    detail: target.to_string(),
                }
            }
            err @ (WebhookError::UnknownEvent(_) | WebhookError::NoEvents) => {
                Self::unprocessable("invalid_events", err.to_string())
            }
            err @ WebhookError::Description => {
                Self::unprocessable("invalid_description", err.to_string())
            }
            err @ WebhookError::StillPending => Self::conflict("delivery_pending", err.to_string()),
        }
    }
}

impl From<crate::auth::SigningKeyError> for ApiError {
    fn from(err: crate::auth::SigningKeyError) -> Self {
        use crate::auth::SigningKeyError;
        match err {
            SigningKeyError::Store(store) => store.into(),
            SigningKeyError::Material(material) => Self::Internal(material.to_string()),
            SigningKeyError::NotFound => Self::NotFound("no such live signing key".into()),
            err @ SigningKeyError::RotationPending { .. } => {
                Self::conflict("rotation_pending", err.to_string())
            }
            err @ SigningKeyError::SharedSecret => Self::conflict("shared_secret", err.to_string()),
        }
    }
}
