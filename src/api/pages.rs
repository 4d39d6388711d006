//! The pages a sign-in link opens. GET (and HEAD) only show a confirm page, so
//! mail scanners that prefetch links burn nothing; the page's button POSTs,
//! and only that consumes the token.

use std::sync::Arc;

use poem::http::{StatusCode, header};
use poem::web::{Data, Form, Query};
use poem::{Request, Response, handler};
use serde::Deserialize;

use super::TrustedProxies;
use crate::auth::{AuthError, AuthService, TokenGrant};
use crate::domain::OpaqueToken;
use crate::error::ApiError;
use crate::templates::Templates;
use crate::web::Console;

/// What the pages use, put in the route's data as `Arc<SignInPages>`.
pub struct SignInPages {
    pub auth: Arc<AuthService>,
    pub templates: Arc<Templates>,
    pub org_name: String,
    /// Where the confirm form posts to.
    pub public_url: String,
    pub proxies: TrustedProxies,
    /// A link that leads to the admin console ends there, with a console session.
    pub console: Arc<Console>,
}

#[derive(Deserialize)]
pub struct TokenParam {
    token: Option<String>,
}

/// Shows the confirm page; consumes nothing.
#[handler]
pub async fn confirm_page(
    Query(params): Query<TokenParam>,
    pages: Data<&Arc<SignInPages>>,
) -> Response {
    let Some(token) = params.token.as_deref().and_then(OpaqueToken::parse) else {
        return invalid_link_page(&pages);
    };
    let context = minijinja::context! {
        org_name => pages.org_name,
        action => format!("{}/auth/confirm", pages.public_url),
        token => token.expose(),
    };
    render(&pages, StatusCode::OK, "pages/confirm.html", context)
}

/// Consumes the token: redirects to the link's `redirect_to` with the tokens in
/// the URL fragment, or shows the signed-in page.
#[handler]
pub async fn confirm(
    Form(params): Form<TokenParam>,
    pages: Data<&Arc<SignInPages>>,
    req: &Request,
) -> Response {
    let ip = pages.proxies.client_ip(req);
    let token = params.token.unwrap_or_default();
    match pages.auth.sign_in().redeem_token(&token, ip).await {
        Ok(grant) => match crate::web::hand_off(&pages.console, req, &grant).await {
            Some(console_page) => console_page,
            None => signed_in(&pages, grant),
        },
        Err(AuthError::InvalidLink) => invalid_link_page(&pages),
        Err(other) => {
            let error = ApiError::from(other);
            let problem = error.to_problem();
            let context = minijinja::context! {
                org_name => pages.org_name,
                title => problem.title,
                message => problem.detail.unwrap_or_else(|| "Something went wrong on our side. Please try again.".into()),
            };
            if let ApiError::Internal(cause) = &error {
                tracing::error!(%cause, "sign-in confirmation failed");
            }
            render(&pages, error.status(), "pages/error.html", context)
        }
    }
}

fn signed_in(pages: &SignInPages, grant: TokenGrant) -> Response {
    if let Some(target) = &grant.redirect_to {
        let fragment = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("access_token", &grant.access_token)
            .append_pair("refresh_token", grant.refresh_token.expose())
            .append_pair("token_type", "Bearer")
            .append_pair("expires_in", &grant.expires_in.to_string())
            .finish();
        return secure(Response::builder().status(StatusCode::SEE_OTHER))
            .header(header::LOCATION, target.with_fragment(&fragment))
            .finish();
    }
    let context = minijinja::context! {
        org_name => pages.org_name,
        email => grant.member.email.as_str(),
        roles => grant.member.roles.iter().map(ToString::to_string).collect::<Vec<_>>(),
        access_token => grant.access_token,
        refresh_token => grant.refresh_token.expose(),
        minutes => grant.expires_in / 60,
    };
    render(pages, StatusCode::OK, "pages/signed_in.html", context)
}

fn invalid_link_page(pages: &SignInPages) -> Response {
    let context = minijinja::context! {
        org_name => pages.org_name,
        title => "This link does not work",
        message => "It has expired, was already used, or is incomplete. Ask for a new sign-in link.",
    };
    render(pages, StatusCode::BAD_REQUEST, "pages/error.html", context)
}

fn render(
    pages: &SignInPages,
    status: StatusCode,
    template: &str,
    context: minijinja::Value,
) -> Response {
    match pages.templates.render(template, context) {
        Ok(html) => secure(Response::builder().status(status))
            .content_type("text/html; charset=utf-8")
            .body(html),
        Err(error) => {
            tracing::error!(%error, template, "page template failed");
            secure(Response::builder().status(StatusCode::INTERNAL_SERVER_ERROR))
                .content_type("text/plain; charset=utf-8")
                .body("Something went wrong on our side.")
        }
    }
}

/// Headers for pages that carry or lead to credentials: never cached, never
/// leaked by Referer, never framed.
fn secure(builder: poem::ResponseBuilder) -> poem::ResponseBuilder {
    builder
        .header(header::CACHE_CONTROL, "no-store")
        .header(header::REFERRER_POLICY, "no-referrer")
        .header(header::X_FRAME_OPTIONS, "DENY")
        .header(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
        )
}
