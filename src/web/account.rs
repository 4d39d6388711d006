//! `/account`: a member's own address, roles and sessions; ending a session,
//! every other session, or the membership.

use std::sync::Arc;

use poem::http::{StatusCode, header};
use poem::web::{Data, Path};
use poem::{Request, Response, handler};

use super::page::{self, FieldErrors, Flash, FormFields};
use super::{BrowserSession, Console};
use crate::domain::Email;

#[handler]
pub async fn show(
    req: &Request,
    console: Data<&Arc<Console>>,
    session: Data<&BrowserSession>,
) -> Response {
    account_page(&console, req, &session, StatusCode::OK, &FieldErrors::new()).await
}

async fn account_page(
    console: &Console,
    req: &Request,
    session: &BrowserSession,
    status: StatusCode,
    errors: &FieldErrors,
) -> Response {
    let member = &session.principal.member;
    let now = console.clock.now();
    let found = tokio::try_join!(
        console.store.member_grants(&member.id, now),
        console.store.member_sessions(&member.id, now),
    );
    let (grants, sessions) = match found {
        Ok(found) => found,
        Err(error) => return page::unavailable(console, req, &error),
    };
    let context = minijinja::context! {
        email => member.email.as_str(),
        grants => grants.iter().map(|g| minijinja::context! {
            role => g.role.to_string(), expires_at => g.expires_at,
        }).collect::<Vec<_>>(),
        sessions => sessions.iter().map(|s| minijinja::context! {
            id => s.id, device => s.device, created_at => s.created_at,
            last_used_at => s.last_used_at, ip => s.ip,
            current => s.id == session.principal.session_id,
        }).collect::<Vec<_>>(),
        errors => errors,
    };
    page::render(
        console,
        req,
        Some(session),
        status,
        "member/account.html",
        context,
    )
}

#[handler]
pub async fn end_session(
    Path(id): Path<String>,
    console: Data<&Arc<Console>>,
    session: Data<&BrowserSession>,
) -> Response {
    let outcome = console
        .auth
        .sessions()
        .end_own_session(&session.principal, &id, session.ip)
        .await;
    let said = outcome.map(|ended| {
        if ended {
            "That session is ended: it is signed out now.".to_owned()
        } else {
            "That session had already ended.".to_owned()
        }
    });
    page::after(&console, "/account", said)
}

#[handler]
pub async fn end_others(console: Data<&Arc<Console>>, session: Data<&BrowserSession>) -> Response {
    let outcome = console
        .auth
        .sessions()
        .end_other_sessions(&session.principal, session.ip)
        .await;
    let said = outcome.map(|ended| format!("Signed out {ended} other session(s). This one stays."));
    page::after(&console, "/account", said)
}

#[handler]
pub async fn sign_out(console: Data<&Arc<Console>>, session: Data<&BrowserSession>) -> Response {
    if let Err(error) = console
        .auth
        .sessions()
        .logout(&session.principal, session.ip)
        .await
    {
        return page::failed(&console, "/account", error);
    }
    signed_out(&console, "You are signed out.")
}

/// Deletes the membership once the member has typed their address.
#[handler]
pub async fn delete(
    req: &Request,
    console: Data<&Arc<Console>>,
    session: Data<&BrowserSession>,
    form: Data<&FormFields>,
) -> Response {
    let member = &session.principal.member;
    let typed = form.get("confirm").map(Email::parse);
    if !matches!(typed, Some(Ok(ref email)) if *email == member.email) {
        let errors = FieldErrors::from([(
            "confirm",
            format!("Type {} exactly to confirm.", member.email.as_str()),
        )]);
        return account_page(
            &console,
            req,
            &session,
            StatusCode::UNPROCESSABLE_ENTITY,
            &errors,
        )
        .await;
    }
    match console
        .auth
        .sessions()
        .delete_self(&session.principal, session.ip)
        .await
    {
        Ok(()) => signed_out(
            &console,
            "Your membership is deleted, and you are signed out everywhere.",
        ),
        Err(error) => page::failed(&console, "/account", error),
    }
}

fn signed_out(console: &Console, message: &str) -> Response {
    let mut response = page::redirect(console, "/sign-in", Some(Flash::ok(message)));
    if let Ok(value) = console.clear_session_cookie(super::Door::Account).parse() {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}
