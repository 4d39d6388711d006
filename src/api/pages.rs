//! The pages a sign-in link opens. GET (and HEAD) only show a confirm page, so
//! mail scanners that prefetch links burn nothing; the page's button POSTs,
//! and only that consumes the token.

use std::sync::Arc;

use poem::http::{StatusCode, header};
use poem::web::{Data, Form, Query};
use poem::{Request, Response, handler};
use serde::Deserialize;

use super::TrustedProxies;
use crate::auth::{AuthError, AuthService, Handoff, TokenGrant};
use crate::domain::OpaqueToken;
use crate::error::ApiError;
use crate::templates::Templates;
use crate::web::Console;
use crate::web::hosted::Waiting;

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
    /// On another device: the number picked from the three shown.
    pick: Option<u8>,
}

/// Whether this browser is the one that asked for the link (it holds the
/// request's handle from the hosted sign-in page).
fn asked_here(pages: &SignInPages, req: &Request, token: &str) -> bool {
    Waiting::from_request(req)
        .is_some_and(|w| pages.auth.sign_in().asked_here(token, &w.id, &w.secret))
}

/// Shows the confirm page; consumes nothing. When the device that asked is
/// waiting on the link and this is not that device, the page asks which number
/// that device shows (or offers to sign in here instead).
#[handler]
pub async fn confirm_page(
    Query(params): Query<TokenParam>,
    pages: Data<&Arc<SignInPages>>,
    req: &Request,
) -> Response {
    let Some(token) = params.token.as_deref().and_then(OpaqueToken::parse) else {
        return invalid_link_page(&pages);
    };
    let token = token.expose();
    let action = format!("{}/auth/confirm", pages.public_url);
    let elsewhere = if asked_here(&pages, req, token) {
        None
    } else {
        match pages.auth.sign_in().cross_device(token).await {
            Ok(elsewhere) => elsewhere,
            Err(error) => return failure(&pages, error.into()),
        }
    };
    let Some(elsewhere) = elsewhere else {
        let context =
            minijinja::context! { org_name => pages.org_name, action => action, token => token };
        return render(&pages, StatusCode::OK, "pages/confirm.html", context);
    };
    let context = minijinja::context! {
        org_name => pages.org_name,
        action => action,
        token => token,
        device => elsewhere.device.unwrap_or_else(|| "an unknown browser".into()),
        network => elsewhere.ip.as_deref().map(network_of),
        requested_at => elsewhere.requested_at,
        choices => elsewhere.choices,
    };
    render(
        &pages,
        StatusCode::OK,
        "pages/confirm_other_device.html",
        context,
    )
}

/// The network an address belongs to, as the confirm page shows it: enough to
/// recognise ("203.0.113.x"), not a precise address.
fn network_of(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.x")
        }
        Ok(std::net::IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
        Err(_) => "an unknown network".into(),
    }
}

/// Consumes the token: redirects to the link's `redirect_to` with the tokens in
/// the URL fragment, or shows the signed-in page.
#[handler]
pub async fn confirm(
    Form(params): Form<TokenParam>,
    pages: Data<&Arc<SignInPages>>,
    req: &Request,
) -> Response {
    let client = pages.proxies.client(req);
    let token = params.token.unwrap_or_default();
    if let Some(pick) = params.pick {
        return match pages
            .auth
            .sign_in()
            .answer_handoff(&token, pick, &client)
            .await
        {
            Ok(Handoff::Approved) => message(
                &pages,
                StatusCode::OK,
                "Done: go back to the other device",
                "It is signing in now. You can close this page; nothing was signed in here.",
            ),
            Ok(Handoff::Refused) => message(
                &pages,
                StatusCode::OK,
                "That was not the number",
                "To keep your account safe, this sign-in request is stopped. On the device where you want to sign in, ask for a new link.",
            ),
            Err(AuthError::InvalidLink) => invalid_link_page(&pages),
            Err(other) => failure(&pages, other.into()),
        };
    }
    let here = asked_here(&pages, req, &token);
    match pages.auth.sign_in().redeem_token(&token, &client).await {
        Ok(grant) => match crate::web::hand_off(&pages.console, req, &grant).await {
            Some(console_page) => console_page,
            None if here => crate::web::hosted::finish(&pages.console, &grant),
            None => signed_in(&pages, grant),
        },
        Err(AuthError::InvalidLink) => invalid_link_page(&pages),
        Err(other) => failure(&pages, other.into()),
    }
}

fn message(pages: &SignInPages, status: StatusCode, title: &str, text: &str) -> Response {
    let context =
        minijinja::context! { org_name => pages.org_name, title => title, message => text };
    render(pages, status, "pages/error.html", context)
}

fn failure(pages: &SignInPages, error: ApiError) -> Response {
    let problem = error.to_problem();
    let context = minijinja::context! {
        org_name => pages.org_name,
        title => problem.title,
        message => problem.detail.unwrap_or_else(|| "Something went wrong on our side. Please try again.".into()),
    };
    if let ApiError::Internal(cause) = &error {
        tracing::error!(%cause, "sign-in confirmation failed");
    }
    render(pages, error.status(), "pages/error.html", context)
}

/// The tokens as a URL fragment, for a `redirect_to` (never sent to a server).
pub fn token_fragment(grant: &TokenGrant) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("access_token", &grant.access_token)
        .append_pair("refresh_token", grant.refresh_token.expose())
        .append_pair("token_type", "Bearer")
        .append_pair("expires_in", &grant.expires_in.to_string())
        .finish()
}

fn signed_in(pages: &SignInPages, grant: TokenGrant) -> Response {
    if let Some(target) = &grant.redirect_to {
        return secure(Response::builder().status(StatusCode::SEE_OTHER))
            .header(
                header::LOCATION,
                target.with_fragment(&token_fragment(&grant)),
            )
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
