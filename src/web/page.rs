//! How console pages answer: rendering with the layout's shared values, the
//! redirect after an action with its one-line message ("flash"), the refusals,
//! and reading a form (checking its CSRF token) before the page runs.

use std::collections::BTreeMap;

use poem::http::{StatusCode, header};
use poem::{Request, Response};
use serde::Serialize;

use super::session::{Door, FLASH_COOKIE, read_cookie};
use super::{BrowserSession, Console};
use crate::error::ApiError;

/// The fields of a submitted form, in order (a name may repeat: checkboxes).
#[derive(Debug, Clone, Default)]
pub struct FormFields(Vec<(String, String)>);

impl FormFields {
    pub fn parse(body: &[u8]) -> Self {
        Self(url::form_urlencoded::parse(body).into_owned().collect())
    }

    /// The field's value, trimmed; `None` when absent or blank.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.trim())
            .filter(|value| !value.is_empty())
    }

    /// Every non-blank value of a repeated field.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.trim())
            .filter(|value| !value.is_empty())
            .collect()
    }
}

/// Messages next to the fields they concern, by field name.
pub type FieldErrors = BTreeMap<&'static str, String>;

/// Why a request was turned away before its page ran.
#[derive(Debug, Clone, Copy)]
pub enum Refusal {
    /// A state-changing request from another site (`Origin`, `Sec-Fetch-Site`).
    CrossSite,
    /// A form without this session's CSRF token.
    BadToken,
    /// Signed in, but not an admin.
    NotAdmin,
    /// A body that is not a form.
    BadForm,
}

/// Reads and checks a state-changing request's form. `Ok(None)` for a
/// multipart upload, whose handler checks the token it carries.
pub async fn read_form(
    console: &Console,
    session: &BrowserSession,
    req: &mut Request,
) -> Result<Option<FormFields>, Refusal> {
    let content_type = req.content_type().unwrap_or_default().to_ascii_lowercase();
    if content_type.starts_with("multipart/form-data") {
        return Ok(None);
    }
    if !content_type.is_empty() && !content_type.starts_with("application/x-www-form-urlencoded") {
        return Err(Refusal::BadForm);
    }
    let body = req
        .take_body()
        .into_bytes_limit(console.max_form_bytes)
        .await
        .map_err(|_| Refusal::BadForm)?;
    let fields = FormFields::parse(&body);
    let token = fields.get("csrf").unwrap_or_default();
    if console
        .keys(session.door)
        .csrf_matches(&session.principal.session_id, token)
    {
        Ok(Some(fields))
    } else {
        Err(Refusal::BadToken)
    }
}

/// A form sent to a page that needs no session (a sign-in page): it must
/// come from this site; there is no session to hold a CSRF token.
pub async fn read_open_form(
    console: &Console,
    req: &Request,
    body: poem::Body,
) -> Result<FormFields, Response> {
    if !console.came_from_console(req) {
        return Err(refusal(console, req, Refusal::CrossSite));
    }
    let body = body
        .into_bytes_limit(console.max_form_bytes)
        .await
        .map_err(|_| refusal(console, req, Refusal::BadForm))?;
    Ok(FormFields::parse(&body))
}

/// The address a person typed into a sign-in form, or what to say next to it.
pub fn typed_email(raw: &str) -> Result<crate::domain::Email, String> {
    crate::domain::Email::parse(raw).map_err(|error| {
        if raw.is_empty() {
            "Enter your email address.".to_owned()
        } else {
            format!("This is not an email address we can use: {error}.")
        }
    })
}

/// A message for the next page the admin sees.
#[derive(Debug, Clone, Serialize)]
pub struct Flash {
    /// `ok` or `error`.
    pub kind: &'static str,
    pub text: String,
}

impl Flash {
    pub fn ok(text: impl Into<String>) -> Self {
        Self {
            kind: "ok",
            text: text.into(),
        }
    }

    pub fn error(text: impl Into<String>) -> Self {
        Self {
            kind: "error",
            text: text.into(),
        }
    }

    fn to_cookie_value(&self) -> String {
        let text = format!("{}:{}", self.kind, self.text);
        url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
    }

    fn from_cookie_value(value: &str) -> Option<Self> {
        let (text, _) = url::form_urlencoded::parse(value.as_bytes()).next()?;
        let (kind, text) = text.split_once(':')?;
        let kind = if kind == "ok" { "ok" } else { "error" };
        Some(Self {
            kind,
            text: text.to_owned(),
        })
    }
}

/// Renders `template` with the layout's values (organisation, the admin, the
/// CSRF token, the waiting message) merged into `context`.
pub fn render(
    console: &Console,
    req: &Request,
    session: Option<&BrowserSession>,
    status: StatusCode,
    template: &str,
    context: minijinja::Value,
) -> Response {
    let flash = req
        .headers()
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|header| read_cookie(header, FLASH_COOKIE))
        .and_then(Flash::from_cookie_value);
    let shared = minijinja::context! {
        org_name => console.org_name,
        path => req.original_uri().path(),
        csrf => session.map(|s| s.csrf.clone()),
        me => session.map(|s| s.principal.member.email.as_str().to_owned()),
        flash => flash,
    };
    let html = match console
        .templates
        .render(template, minijinja::context! { ..context, ..shared })
    {
        Ok(html) => html,
        Err(error) => {
            tracing::error!(%error, template, "console template failed");
            return plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong on our side.",
            );
        }
    };
    let mut builder = Response::builder()
        .status(status)
        .content_type("text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store");
    if flash.is_some() {
        builder = builder.header(header::SET_COOKIE, console.cookie(FLASH_COOKIE, "", 0));
    }
    builder.body(html)
}

/// 303 to `to` (a console path), with a message for the page there.
pub fn redirect(console: &Console, to: &str, flash: Option<Flash>) -> Response {
    let mut builder = Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, to);
    if let Some(flash) = flash {
        builder = builder.header(
            header::SET_COOKIE,
            console.cookie(FLASH_COOKIE, &flash.to_cookie_value(), 120),
        );
    }
    builder.finish()
}

/// To the door's sign-in page, ending the cookie that led here.
pub fn to_sign_in(console: &Console, door: Door, message: Option<&str>) -> Response {
    let mut response = redirect(
        console,
        door.sign_in_path(),
        message.map(|m| Flash::error(m.to_owned())),
    );
    if let Ok(value) = console.clear_session_cookie(door).parse() {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

pub fn refusal(console: &Console, req: &Request, refusal: Refusal) -> Response {
    let (status, title, message) = match refusal {
        Refusal::CrossSite => (
            StatusCode::FORBIDDEN,
            "This request came from another site",
            "Nothing was changed. Open the console yourself and try again from there.",
        ),
        Refusal::BadToken => (
            StatusCode::FORBIDDEN,
            "This form has expired",
            "Nothing was changed. Go back, reload the page and try again.",
        ),
        Refusal::NotAdmin => (
            StatusCode::FORBIDDEN,
            "This console is for admins",
            "You are signed in, but your account does not have the admin role. \
             Ask an admin of your organisation if you need it.",
        ),
        Refusal::BadForm => (
            StatusCode::BAD_REQUEST,
            "This request could not be read",
            "Nothing was changed. Go back and submit the form again.",
        ),
    };
    message_page(console, req, None, status, title, message)
}

/// A page that says one thing: a refusal, a failure, a confirmation.
pub fn message_page(
    console: &Console,
    req: &Request,
    session: Option<&BrowserSession>,
    status: StatusCode,
    title: &str,
    message: &str,
) -> Response {
    let context = minijinja::context! { title => title, message => message };
    render(
        console,
        req,
        session,
        status,
        "console/message.html",
        context,
    )
}

/// The store could not answer (down, busy): say so, change nothing.
pub fn unavailable(console: &Console, req: &Request, error: &crate::store::StoreError) -> Response {
    tracing::warn!(%error, "console: the store did not answer");
    message_page(
        console,
        req,
        None,
        StatusCode::SERVICE_UNAVAILABLE,
        "gatehouse cannot reach its database",
        "Nothing was changed. Wait a moment and try again.",
    )
}

/// What went wrong, in the words the JSON API's problem detail uses (mapped
/// once, in `error.rs`), with its status. Internal faults are logged, not shown.
pub fn explain(error: impl Into<ApiError>) -> (StatusCode, String) {
    let error = error.into();
    let status = error.status();
    match &error {
        ApiError::Internal(cause) => {
            tracing::error!(%cause, "console action failed");
            (
                status,
                "Something went wrong on our side. Nothing was changed; please try again.".into(),
            )
        }
        ApiError::Unavailable => (
            status,
            "gatehouse cannot reach its database right now. Nothing was changed; try again in a moment."
                .into(),
        ),
        other => (status, sentence(&other.to_string())),
    }
}

/// `message` as a sentence: capital first letter, full stop.
fn sentence(message: &str) -> String {
    let mut chars = message.chars();
    let mut out: String = chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default();
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

/// After an action: back to `to`, saying what it did or why it did not.
pub fn after<E: Into<ApiError>>(
    console: &Console,
    to: &str,
    outcome: Result<String, E>,
) -> Response {
    match outcome {
        Ok(message) => redirect(console, to, Some(Flash::ok(message))),
        Err(error) => failed(console, to, error),
    }
}

/// After a failed action: back to `to` with the reason on top.
pub fn failed(console: &Console, to: &str, error: impl Into<ApiError>) -> Response {
    redirect(console, to, Some(Flash::error(explain(error).1)))
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    Response::builder()
        .status(status)
        .content_type("text/plain; charset=utf-8")
        .body(text)
}

/// The filters that are set, as a query string for links that keep them.
pub fn query_string(filters: &[(&str, &Option<String>)]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in filters {
        if let Some(value) = value.as_deref().filter(|v| !v.trim().is_empty()) {
            query.append_pair(name, value);
        }
    }
    query.finish()
}

/// A unix time as the date input shows it (`YYYY-MM-DD`, UTC).
pub fn date_input(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// The end (exclusive, UTC) of the day a date input names, as unix seconds:
/// a grant "until 2027-01-31" lasts through that day.
pub fn end_of_day(date: &str) -> Option<i64> {
    let day = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    Some(day.succ_opt()?.and_hms_opt(0, 0, 0)?.and_utc().timestamp())
}

/// The start (UTC) of the day a date input names, as unix seconds.
pub fn start_of_day(date: &str) -> Option<i64> {
    let day = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    Some(day.and_hms_opt(0, 0, 0)?.and_utc().timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flash_survives_its_cookie() {
        let flash = Flash::ok("Granted sustainer; until 2027-01-31 (ok?)");
        let back = Flash::from_cookie_value(&flash.to_cookie_value()).unwrap();
        assert_eq!((back.kind, back.text.as_str()), ("ok", flash.text.as_str()));
        assert!(!flash.to_cookie_value().contains([';', ' ', ',']));
    }

    #[test]
    fn a_date_lasts_through_its_day() {
        let end = end_of_day("2027-01-31").unwrap();
        assert_eq!(date_input(end - 1), "2027-01-31");
        assert_eq!(date_input(end), "2027-02-01");
        assert_eq!(end_of_day("31/01/2027"), None);
    }

    #[test]
    fn messages_become_sentences() {
        assert_eq!(sentence("no such member"), "No such member.");
        assert_eq!(sentence("Done."), "Done.");
    }

    #[test]
    fn forms_keep_repeated_fields() {
        let fields = FormFields::parse(b"roles=member&roles=sustainer&name=+Key+&empty=");
        assert_eq!(fields.all("roles"), ["member", "sustainer"]);
        assert_eq!(fields.get("name"), Some("Key"));
        assert_eq!(fields.get("empty"), None);
    }
}
