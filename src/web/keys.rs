//! API keys: issuing one to a member (its secret shown once), the list of
//! every key, and revoking one.

use std::sync::Arc;

use poem::http::StatusCode;
use poem::web::{Data, Path, Query};
use poem::{Request, Response, handler};
use serde::Deserialize;

use super::page::{self, FieldErrors, Flash, FormFields};
use super::{BrowserSession, Console};
use crate::admin::{IssuedKey, KeyRequest};
use crate::domain::{Member, MemberId, Role};
use crate::store::ApiKeyInfo;

const PAGE_SIZE: i64 = 50;

/// The key asked for by a form's `key_name`, `key_days` and `key_roles`
/// fields, or the field to blame and why.
pub fn key_request(
    form: &FormFields,
    roles: Option<Vec<Role>>,
) -> Result<KeyRequest, (&'static str, String)> {
    let days = match form.get("key_days") {
        None => None,
        Some(raw) => match raw.parse::<u32>() {
            Ok(days) if (1..=3650).contains(&days) => Some(days),
            _ => return Err(("key_days", "Enter a number of days from 1 to 3650, or leave it empty for a key that does not expire.".into())),
        },
    };
    KeyRequest::new(form.get("key_name").unwrap_or_default(), days, roles).map_err(|error| {
        match error {
            crate::admin::KeyRequestError::Name => (
                "key_name",
                "Give the key a name of 1 to 100 characters, such as the integration it is for."
                    .into(),
            ),
            crate::admin::KeyRequestError::Expiry => {
                ("key_days", "A key lasts at least 1 day.".into())
            }
        }
    })
}

pub fn key_view(key: &ApiKeyInfo) -> minijinja::Value {
    minijinja::context! {
        id => key.id,
        prefix => crate::domain::api_key_prefix(&key.id),
        member_id => key.member_id,
        email => key.email,
        name => key.name,
        roles => key.roles.split(',').filter(|r| !r.is_empty()).collect::<Vec<_>>(),
        created_at => key.created_at,
        expires_at => key.expires_at,
        last_used_at => key.last_used_at,
        revoked_at => key.revoked_at,
    }
}

/// The one page that ever shows a key's secret.
pub fn show_issued(
    console: &Console,
    req: &Request,
    session: &BrowserSession,
    member: &Member,
    issued: &IssuedKey,
) -> Response {
    let context = minijinja::context! {
        member_id => member.id.to_string(),
        email => member.email.as_str(),
        key => issued.key.expose(),
        name => issued.name,
        roles => issued.roles.iter().map(ToString::to_string).collect::<Vec<_>>(),
        expires_at => issued.expires_at,
    };
    page::render(
        console,
        req,
        Some(session),
        StatusCode::CREATED,
        "console/key_issued.html",
        context,
    )
}

#[handler]
pub async fn issue(
    req: &Request,
    Path(id): Path<String>,
    console: Data<&Arc<Console>>,
    session: Data<&BrowserSession>,
    form: Data<&FormFields>,
) -> Response {
    let back = format!("/admin/members/{id}");
    let Some(member) = MemberId::parse(&id) else {
        return page::redirect(
            &console,
            "/admin/members",
            Some(Flash::error("No such member.")),
        );
    };
    let roles: Result<Vec<Role>, _> = form.all("key_roles").into_iter().map(Role::parse).collect();
    let roles = match roles {
        Ok(roles) if roles.is_empty() => None,
        Ok(roles) => Some(roles),
        Err(error) => return page::failed(&console, &back, crate::error::ApiError::from(error)),
    };
    let request = match key_request(&form, roles) {
        Ok(request) => request,
        Err((field, message)) => {
            return super::members::refused_form(
                &console,
                req,
                &session,
                &id,
                FieldErrors::from([(field, message)]),
                &form,
            )
            .await;
        }
    };
    match console
        .admin
        .issue_key(&session.actor(), &member, &request)
        .await
    {
        Ok((member, issued)) => show_issued(&console, req, &session, &member, &issued),
        Err(error) => page::failed(&console, &back, error),
    }
}

#[derive(Deserialize)]
pub struct ListQuery {
    before: Option<String>,
}

#[handler]
pub async fn list(
    req: &Request,
    Query(query): Query<ListQuery>,
    console: Data<&Arc<Console>>,
    session: Data<&BrowserSession>,
) -> Response {
    let before = query.before.filter(|b| !b.is_empty());
    let keys = match console
        .store
        .list_api_keys(None, before.as_deref(), PAGE_SIZE)
        .await
    {
        Ok(keys) => keys,
        Err(error) => return page::unavailable(&console, req, &error),
    };
    let next = (keys.len() as i64 == PAGE_SIZE)
        .then(|| keys.last().map(|k| k.id.clone()))
        .flatten();
    let context = minijinja::context! {
        keys => keys.iter().map(key_view).collect::<Vec<_>>(),
        next => next,
        first_page => before.is_none(),
        now => console.clock.now(),
    };
    page::render(
        &console,
        req,
        Some(&session),
        StatusCode::OK,
        "console/api_keys.html",
        context,
    )
}

#[handler]
pub async fn revoke(
    Path(id): Path<String>,
    console: Data<&Arc<Console>>,
    session: Data<&BrowserSession>,
    form: Data<&FormFields>,
) -> Response {
    // Back to where the button was: the member's page or the list.
    let back = form
        .get("back")
        .filter(|b| b.starts_with("/admin/") && !b.starts_with("//"))
        .unwrap_or("/admin/api-keys")
        .to_owned();
    let outcome = console.admin.revoke_key(&session.actor(), &id).await;
    let prefix = crate::domain::api_key_prefix(&id);
    let said = outcome.map(|()| format!("Revoked the key {prefix}. It stopped working at once."));
    page::after(&console, &back, said)
}
