//! Signing in to the console with the usual mailed link, and signing out.
//!
//! The sign-in page asks for a link whose `redirect_to` is the console. When
//! that link's confirm page is pressed, the sign-in pages hand the new session
//! to [`hand_off`]: an admin gets the console cookie; anyone else gets a page
//! saying why not, and the session just opened is ended at once.

use std::sync::Arc;

use poem::http::{StatusCode, header};
use poem::web::Data;
use poem::{Request, Response, handler};

use super::page::{self, FieldErrors};
use super::{BrowserSession, Console, Door};
use crate::auth::{AuthError, LinkRequest, Principal, TokenGrant};
use crate::domain::Role;

#[handler]
pub async fn show(req: &Request, console: Data<&Arc<Console>>) -> Response {
    sign_in_form(&console, req, StatusCode::OK, "", &FieldErrors::new())
}

fn sign_in_form(
    console: &Console,
    req: &Request,
    status: StatusCode,
    email: &str,
    errors: &FieldErrors,
) -> Response {
    let context = minijinja::context! { email => email, errors => errors };
    page::render(console, req, None, status, "console/sign_in.html", context)
}

/// Mails a link back to the console. The answer is the same whether or not
/// the address may sign in, as everywhere in gatehouse.
#[handler]
pub async fn request_link(
    req: &Request,
    body: poem::Body,
    console: Data<&Arc<Console>>,
) -> Response {
    let fields = match page::read_open_form(&console, req, body).await {
        Ok(fields) => fields,
        Err(refused) => return refused,
    };
    let raw = fields.get("email").unwrap_or_default();
    let email = match page::typed_email(raw) {
        Ok(email) => email,
        Err(message) => {
            let errors = FieldErrors::from([("email", message)]);
            return sign_in_form(
                &console,
                req,
                StatusCode::UNPROCESSABLE_ENTITY,
                raw,
                &errors,
            );
        }
    };
    let home = console.home_url();
    let request = LinkRequest {
        email: email.clone(),
        redirect_to: Some(&home),
        client: console.proxies.client(req),
    };
    match console.auth.sign_in().request_link(request).await {
        Ok(_) => {
            let context = minijinja::context! { email => email.as_str() };
            page::render(
                &console,
                req,
                None,
                StatusCode::OK,
                "console/sign_in_sent.html",
                context,
            )
        }
        Err(AuthError::RateLimited { retry_after_secs }) => {
            let minutes = retry_after_secs.div_ceil(60);
            let errors = FieldErrors::from([(
                "email",
                format!("Too many sign-in requests. Try again in {minutes} minute(s)."),
            )]);
            sign_in_form(&console, req, StatusCode::TOO_MANY_REQUESTS, raw, &errors)
        }
        Err(error) => {
            let (status, message) = page::explain(error);
            let errors = FieldErrors::from([("email", message)]);
            sign_in_form(&console, req, status, raw, &errors)
        }
    }
}

/// Ends the gatehouse session behind the console cookie, and the cookie.
#[handler]
pub async fn sign_out(console: Data<&Arc<Console>>, session: Data<&BrowserSession>) -> Response {
    if let Err(error) = console
        .auth
        .sessions()
        .logout(&session.principal, session.ip)
        .await
    {
        return page::failed(&console, "/admin", error);
    }
    let mut response = page::redirect(
        &console,
        "/admin/sign-in",
        Some(page::Flash::ok("You are signed out.")),
    );
    if let Ok(value) = console.clear_session_cookie(session.door).parse() {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// The end of a console sign-in, called by the confirm page when the link led
/// to the console. `None` when the link was not a console link.
pub async fn hand_off(console: &Console, req: &Request, grant: &TokenGrant) -> Option<Response> {
    let target = grant.redirect_to.as_ref()?;
    if target.as_str().trim_end_matches('/') != console.home_url() {
        return None;
    }
    if !grant.member.has_role(Role::ADMIN) {
        let principal = Principal {
            member: grant.member.clone(),
            session_id: grant.session_id.clone(),
            api_key: None,
        };
        let ip = console.proxies.client_ip(req);
        if let Err(error) = console.auth.sessions().logout(&principal, ip).await {
            tracing::warn!(%error, "could not end a non-admin's console sign-in session");
        }
        return Some(page::refusal(console, req, page::Refusal::NotAdmin));
    }
    let mut response = page::redirect(console, "/admin", None);
    if let Ok(value) = console
        .session_cookie(Door::Console, &grant.member.id, &grant.session_id)
        .parse()
    {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    Some(response)
}
