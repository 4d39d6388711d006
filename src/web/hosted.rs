//! The hosted sign-in for members: `/sign-in` asks for the address, then a
//! page waits for the mailed link to be confirmed anywhere (or for the code),
//! and finishes the sign-in on this device: to `redirect_to` with the tokens in
//! the fragment, or to `/account`.
//!
//! The waiting device holds its request's handle in a cookie (`SameSite=Lax`,
//! so it also comes along when the mailed link is opened in this browser:
//! that is how the confirm page knows it is the same device).

use std::sync::Arc;

use poem::http::{StatusCode, header};
use poem::web::{Data, Query};
use poem::{Body, Request, Response, handler};
use serde::Deserialize;

use super::Console;
use super::page::{self, FieldErrors, FormFields};
use super::session::{Door, read_cookie, set_cookie};
use crate::auth::{AuthError, LinkRequest, RequestStatus, TokenGrant};
use crate::domain::Email;

pub const REQUEST_COOKIE: &str = "gatehouse_signin";

/// The request a browser is waiting on, from its cookie.
pub struct Waiting {
    pub id: String,
    pub secret: String,
    pub email: String,
}

impl Waiting {
    pub fn from_request(req: &Request) -> Option<Self> {
        let header = req.headers().get(header::COOKIE)?.to_str().ok()?;
        let value = read_cookie(header, REQUEST_COOKIE)?;
        let mut id = None;
        let mut secret = None;
        let mut email = None;
        for (key, text) in url::form_urlencoded::parse(value.as_bytes()) {
            match key.as_ref() {
                "i" => id = Some(text.into_owned()),
                "s" => secret = Some(text.into_owned()),
                "e" => email = Some(text.into_owned()),
                _ => {}
            }
        }
        Some(Self {
            id: id?,
            secret: secret?,
            email: email?,
        })
    }

    fn cookie_value(&self) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("i", &self.id)
            .append_pair("s", &self.secret)
            .append_pair("e", &self.email)
            .finish()
    }
}

#[derive(Deserialize)]
pub struct SignInQuery {
    redirect_to: Option<String>,
}

#[handler]
pub async fn show(
    req: &Request,
    Query(query): Query<SignInQuery>,
    console: Data<&Arc<Console>>,
) -> Response {
    form(
        &console,
        req,
        StatusCode::OK,
        "",
        query.redirect_to.as_deref(),
        &FieldErrors::new(),
    )
}

fn form(
    console: &Console,
    req: &Request,
    status: StatusCode,
    email: &str,
    redirect_to: Option<&str>,
    errors: &FieldErrors,
) -> Response {
    let context =
        minijinja::context! { email => email, redirect_to => redirect_to, errors => errors };
    page::render(console, req, None, status, "member/sign_in.html", context)
}

/// Mails the link and code, and starts waiting on this device.
#[handler]
pub async fn request_link(req: &Request, body: Body, console: Data<&Arc<Console>>) -> Response {
    let fields = match page::read_open_form(&console, req, body).await {
        Ok(fields) => fields,
        Err(refused) => return refused,
    };
    let raw = fields.get("email").unwrap_or_default();
    let redirect_to = fields.get("redirect_to");
    let email = match page::typed_email(raw) {
        Ok(email) => email,
        Err(message) => {
            let errors = FieldErrors::from([("email", message)]);
            return form(
                &console,
                req,
                StatusCode::UNPROCESSABLE_ENTITY,
                raw,
                redirect_to,
                &errors,
            );
        }
    };
    let request = LinkRequest {
        email: email.clone(),
        redirect_to,
        client: console.proxies.client(req),
    };
    let handle = match console.auth.sign_in().request_link(request).await {
        Ok(handle) => handle,
        Err(error) => {
            let message = match error {
                AuthError::RateLimited { retry_after_secs } => format!(
                    "Too many sign-in requests. Try again in {} minute(s).",
                    retry_after_secs.div_ceil(60)
                ),
                AuthError::RedirectNotAllowed => {
                    "The page that sent you here is not allowed to receive sign-ins. Nothing was sent.".into()
                }
                other => page::explain(other).1,
            };
            let errors = FieldErrors::from([("email", message)]);
            return form(
                &console,
                req,
                StatusCode::UNPROCESSABLE_ENTITY,
                raw,
                redirect_to,
                &errors,
            );
        }
    };
    let waiting = Waiting {
        id: handle.id,
        secret: handle.secret,
        email: email.as_str().to_owned(),
    };
    let lifetime = (handle.expires_at - console.clock.now()).max(0) as u64;
    let mut response = page::redirect(&console, "/sign-in/wait", None);
    let cookie = set_cookie(
        REQUEST_COOKIE,
        &waiting.cookie_value(),
        "/",
        lifetime,
        console.secure_cookies,
        true,
    );
    if let Ok(value) = cookie.parse() {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// The waiting page: the number to pick on another device, the code field.
#[handler]
pub async fn wait(req: &Request, console: Data<&Arc<Console>>) -> Response {
    waiting_page(&console, req, StatusCode::OK, &FieldErrors::new())
}

fn waiting_page(
    console: &Console,
    req: &Request,
    status: StatusCode,
    errors: &FieldErrors,
) -> Response {
    let Some(waiting) = Waiting::from_request(req) else {
        return page::redirect(console, "/sign-in", None);
    };
    let Some(number) = console
        .auth
        .sign_in()
        .handle_number(&waiting.id, &waiting.secret)
    else {
        return page::redirect(console, "/sign-in", None);
    };
    let context =
        minijinja::context! { email => waiting.email, number => number, errors => errors };
    page::render(console, req, None, status, "member/wait.html", context)
}

/// The six-digit code, typed on the waiting device.
#[handler]
pub async fn code(req: &Request, body: Body, console: Data<&Arc<Console>>) -> Response {
    if !console.came_from_console(req) {
        return page::refusal(&console, req, page::Refusal::CrossSite);
    }
    let Some(waiting) = Waiting::from_request(req) else {
        return page::redirect(&console, "/sign-in", None);
    };
    let Ok(body) = body.into_bytes_limit(console.max_form_bytes).await else {
        return page::refusal(&console, req, page::Refusal::BadForm);
    };
    let fields = FormFields::parse(&body);
    let code = fields.get("code").unwrap_or_default();
    let Ok(email) = Email::parse(&waiting.email) else {
        return page::redirect(&console, "/sign-in", None);
    };
    let client = console.proxies.client(req);
    match console
        .auth
        .sign_in()
        .redeem_code(&email, code, &client)
        .await
    {
        Ok(grant) => finish(&console, &grant),
        Err(AuthError::InvalidLink) => {
            let errors = FieldErrors::from([(
                "code",
                "That code does not work: check it, or ask for a new one. A code allows five tries.".to_owned(),
            )]);
            waiting_page(&console, req, StatusCode::UNPROCESSABLE_ENTITY, &errors)
        }
        Err(error) => {
            let errors = FieldErrors::from([("code", page::explain(error).1)]);
            waiting_page(&console, req, StatusCode::UNPROCESSABLE_ENTITY, &errors)
        }
    }
}

/// Checks on the request: the page's script asks every few seconds (JSON);
/// without script, the "Continue" button asks (a redirect).
#[handler]
pub async fn check_status(req: &Request, console: Data<&Arc<Console>>) -> Response {
    if !console.came_from_console(req) {
        return page::refusal(&console, req, page::Refusal::CrossSite);
    }
    let wants_json = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/json"));
    let Some(waiting) = Waiting::from_request(req) else {
        return answer(
            &console,
            wants_json,
            "expired",
            Some("/sign-in".into()),
            None,
        );
    };
    let client = console.proxies.client(req);
    let outcome = console
        .auth
        .sign_in()
        .request_status(&waiting.id, &waiting.secret, &client)
        .await;
    match outcome {
        Ok(RequestStatus::SignedIn(grant)) => {
            let done = finish(&console, &grant);
            if !wants_json {
                return done;
            }
            let next = done
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let cookies: Vec<_> = done
                .headers()
                .get_all(header::SET_COOKIE)
                .iter()
                .cloned()
                .collect();
            let mut response = answer(&console, true, "signed_in", next, None);
            for cookie in cookies {
                response.headers_mut().append(header::SET_COOKIE, cookie);
            }
            response
        }
        Ok(RequestStatus::Pending) => answer(
            &console,
            wants_json,
            "pending",
            None,
            Some("Not yet: open the link in the mail, or type the code."),
        ),
        Ok(RequestStatus::CompletedElsewhere) => answer(
            &console,
            wants_json,
            "completed_elsewhere",
            None,
            Some("The link was used on another device, or in another window."),
        ),
        Ok(RequestStatus::Refused) => answer(
            &console,
            wants_json,
            "refused",
            None,
            Some(
                "A wrong number was picked on the other device, so this sign-in was stopped. Ask for a new link.",
            ),
        ),
        Ok(RequestStatus::Expired) => answer(
            &console,
            wants_json,
            "expired",
            None,
            Some("The sign-in link has expired. Ask for a new one."),
        ),
        Err(error) => {
            let (_, message) = page::explain(error);
            answer(&console, wants_json, "error", None, Some(&message))
        }
    }
}

fn answer(
    console: &Console,
    json: bool,
    status: &str,
    next: Option<String>,
    message: Option<&str>,
) -> Response {
    if json {
        let body = serde_json::json!({ "status": status, "next": next, "message": message });
        return Response::builder()
            .content_type("application/json")
            .header(header::CACHE_CONTROL, "no-store")
            .body(body.to_string());
    }
    match next {
        Some(next) => page::redirect(console, &next, None),
        None => page::redirect(
            console,
            "/sign-in/wait",
            message.map(|m| page::Flash::error(m.to_owned())),
        ),
    }
}

/// The end of a hosted sign-in on this device: the request cookie goes; the
/// member goes to `redirect_to` with the tokens in the fragment, or to their
/// account page with an account session.
pub fn finish(console: &Console, grant: &TokenGrant) -> Response {
    let mut response = match &grant.redirect_to {
        Some(target) => page::redirect(
            console,
            &target.with_fragment(&crate::api::pages::token_fragment(grant)),
            None,
        ),
        None => {
            let mut response = page::redirect(console, "/account", None);
            let cookie = console.session_cookie(Door::Account, &grant.member.id, &grant.session_id);
            if let Ok(value) = cookie.parse() {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
            response
        }
    };
    let gone = set_cookie(REQUEST_COOKIE, "", "/", 0, console.secure_cookies, true);
    if let Ok(value) = gone.parse() {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}
