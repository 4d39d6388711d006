//! `/admin/members`: find members; one member's roles, status, sessions, keys
//! and audit trail; onboarding an address directly.

use std::sync::Arc;

use poem::http::StatusCode;
use poem::web::{Data, Path, Query};
use poem::{Request, Response, handler};
use serde::Deserialize;

use super::keys::key_request;
use super::page::{self, FieldErrors, Flash, FormFields};
use super::{BrowserSession, Console};
use crate::admin::Onboarding;
use crate::domain::{Email, Member, MemberId, MemberStatus, Role};
use crate::store::{AuditFilter, MemberFilter, RoleGrant};

const PAGE_SIZE: i64 = 50;
/// Entries of a member's audit trail on their page.
const TRAIL: i64 = 25;

#[derive(Deserialize, Default)]
pub struct ListQuery {
    q: Option<String>,
    role: Option<String>,
    status: Option<String>,
    after: Option<String>,
}

#[handler]
pub async fn list(
    req: &Request,
    Query(query): Query<ListQuery>,
    console: Data<&Arc<Console>>,
    session: Data<&BrowserSession>,
) -> Response {
    let blank = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let (q, role, status) = (blank(&query.q), blank(&query.role), blank(&query.status));
    let filter = MemberFilter {
        role: role.as_deref().and_then(|r| Role::parse(r).ok()),
        status: status.as_deref().and_then(MemberStatus::parse),
        q: q.as_ref().map(|q| q.to_lowercase()),
        after: blank(&query.after),
        limit: PAGE_SIZE,
    };
    let now = console.clock.now();
    let (members, roles) = match tokio::try_join!(
        console.store.list_members(&filter, now),
        console.store.role_names(),
    ) {
        Ok(found) => found,
        Err(error) => return page::unavailable(&console, req, &error),
    };
    let next = (members.len() as i64 == PAGE_SIZE)
        .then(|| members.last().map(|m| m.id.to_string()))
        .flatten();
    let filters = super::page::query_string(&[("q", &q), ("role", &role), ("status", &status)]);
    let context = minijinja::context! {
        filters => filters,
        members => members.iter().map(member_view).collect::<Vec<_>>(),
        roles => roles,
        q => q, role => role, status => status,
        next => next,
        first_page => query.after.is_none(),
    };
    page::render(
        &console,
        req,
        Some(&session),
        StatusCode::OK,
        "console/members.html",
        context,
    )
}

fn member_view(member: &Member) -> minijinja::Value {
    minijinja::context! {
        id => member.id.to_string(),
        email => member.email.as_str(),
        status => member.status.as_str(),
        roles => member.roles.iter().map(ToString::to_string).collect::<Vec<_>>(),
        created_at => member.created_at,
        last_login_at => member.last_login_at,
    }
}

#[handler]
pub async fn show(
    req: &Request,
    Path(id): Path<String>,
    console: Data<&Arc<Console>>,
    session: Data<&BrowserSession>,
) -> Response {
    member_page(
        &console,
        req,
        &session,
        &id,
        StatusCode::OK,
        &FieldErrors::new(),
        None,
    )
    .await
}

/// One member's page; `errors` and `form` put a refused form back as it was sent.
async fn member_page(
    console: &Console,
    req: &Request,
    session: &BrowserSession,
    id: &str,
    status: StatusCode,
    errors: &FieldErrors,
    form: Option<&FormFields>,
) -> Response {
    let Some(id) = MemberId::parse(id) else {
        return not_found(console, req, session);
    };
    let now = console.clock.now();
    let trail = AuditFilter {
        target: Some(id.to_string()),
        limit: TRAIL,
        ..Default::default()
    };
    let found = tokio::try_join!(
        console.store.member_by_id(&id, now),
        console.store.member_grants(&id, now),
        console.store.list_api_keys(Some(&id), None, 100),
        console.store.list_audit(&trail),
        console.store.role_names(),
    );
    let (member, grants, keys, trail, roles) = match found {
        Ok((Some(member), grants, keys, trail, roles)) => (member, grants, keys, trail, roles),
        Ok((None, ..)) => return not_found(console, req, session),
        Err(error) => return page::unavailable(console, req, &error),
    };
    let field = |name: &str| {
        form.and_then(|f| f.get(name))
            .unwrap_or_default()
            .to_owned()
    };
    let context = minijinja::context! {
        member => member_view(&member),
        is_me => member.id == session.principal.member.id,
        grants => grants.iter().map(|g| minijinja::context! {
            role => g.role.to_string(),
            expires_at => g.expires_at,
        }).collect::<Vec<_>>(),
        keys => keys.iter().map(super::keys::key_view).collect::<Vec<_>>(),
        trail => trail.iter().map(super::audit::row_view).collect::<Vec<_>>(),
        roles => roles,
        errors => errors,
        form => minijinja::context! {
            grant_role => field("role"),
            grant_until => field("until"),
            key_name => field("key_name"),
            key_days => field("key_days"),
            confirm => field("confirm"),
        },
        today => page::date_input(now),
    };
    page::render(
        console,
        req,
        Some(session),
        status,
        "console/member.html",
        context,
    )
}

/// The member's page again, with a refused form's values and what was wrong.
pub async fn refused_form(
    console: &Console,
    req: &Request,
    session: &BrowserSession,
    id: &str,
    errors: FieldErrors,
    form: &FormFields,
) -> Response {
    member_page(
        console,
        req,
        session,
        id,
        StatusCode::UNPROCESSABLE_ENTITY,
        &errors,
        Some(form),
    )
    .await
}

fn not_found(console: &Console, req: &Request, session: &BrowserSession) -> Response {
    page::message_page(
        console,
        req,
        Some(session),
        StatusCode::NOT_FOUND,
        "No such member",
        "The member may have been deleted, or the link is incomplete.",
    )
}

fn member_path(id: &str) -> String {
    format!("/admin/members/{id}")
}

/// Grants a role, optionally until the end of a date.
#[handler]
pub async fn grant_role(
    req: &Request,
    Path(id): Path<String>,
    console: Data<&Arc<Console>>,
    session: Data<&BrowserSession>,
    form: Data<&FormFields>,
) -> Response {
    let Some(member) = MemberId::parse(&id) else {
        return not_found(&console, req, &session);
    };
    let mut errors = FieldErrors::new();
    let role = match form.get("role").map(Role::parse) {
        Some(Ok(role)) => Some(role),
        Some(Err(error)) => {
            errors.insert("role", format!("{error}."));
            None
        }
        None => {
            errors.insert("role", "Choose a role.".into());
            None
        }
    };
    let expires_at = match form.get("until") {
        None => None,
        Some(date) => match page::end_of_day(date) {
            Some(end) if end > console.clock.now() => Some(end),
            Some(_) => {
                errors.insert("until", "Choose today or a later date.".into());
                None
            }
            None => {
                errors.insert("until", "Enter a date as YYYY-MM-DD.".into());
                None
            }
        },
    };
    let Some(role) = role.filter(|_| errors.is_empty()) else {
        return member_page(
            &console,
            req,
            &session,
            &id,
            StatusCode::UNPROCESSABLE_ENTITY,
            &errors,
            Some(&form),
        )
        .await;
    };
    let message = match expires_at {
        Some(end) => format!(
            "Granted {role} until the end of {}.",
            page::date_input(end - 1)
        ),
        None => format!("Granted {role}, with no end date."),
    };
    let grant = RoleGrant { role, expires_at };
    match console
        .admin
        .grant_role(&session.actor(), &member, grant)
        .await
    {
        Ok(_) => page::redirect(&console, &member_path(&id), Some(Flash::ok(message))),
        Err(error) => page::failed(&console, &member_path(&id), error),
    }
}

#[handler]
pub async fn revoke_role(
    req: &Request,
    Path((id, role)): Path<(String, String)>,
    console: Data<&Arc<Console>>,
    session: Data<&BrowserSession>,
) -> Response {
    let Some(member) = MemberId::parse(&id) else {
        return not_found(&console, req, &session);
    };
    let role = match Role::parse(&role) {
        Ok(role) => role,
        Err(error) => {
            return page::failed(
                &console,
                &member_path(&id),
                crate::error::ApiError::from(error),
            );
        }
    };
    let outcome = console
        .admin
        .revoke_role(&session.actor(), &member, &role)
        .await;
    page::after(
        &console,
        &member_path(&id),
        outcome.map(|_| format!("Revoked {role}.")),
    )
}

/// Suspends or reactivates.
#[handler]
pub async fn set_status(
    req: &Request,
    Path(id): Path<String>,
    console: Data<&Arc<Console>>,
    session: Data<&BrowserSession>,
    form: Data<&FormFields>,
) -> Response {
    let Some(member) = MemberId::parse(&id) else {
        return not_found(&console, req, &session);
    };
    let (status, done) = match form.get("status") {
        Some("active") => (MemberStatus::Active, "Reactivated: they can sign in again."),
        Some("suspended") => (
            MemberStatus::Suspended,
            "Suspended: their sessions and API keys stopped working.",
        ),
        _ => return page::refusal(&console, req, page::Refusal::BadForm),
    };
    let outcome = console
        .admin
        .set_status(&session.actor(), &member, status)
        .await;
    page::after(
        &console,
        &member_path(&id),
        outcome.map(|_| done.to_owned()),
    )
}

/// Deletes a member once the admin has typed their address.
#[handler]
pub async fn delete(
    req: &Request,
    Path(id): Path<String>,
    console: Data<&Arc<Console>>,
    session: Data<&BrowserSession>,
    form: Data<&FormFields>,
) -> Response {
    let Some(member_id) = MemberId::parse(&id) else {
        return not_found(&console, req, &session);
    };
    let member = match console
        .store
        .member_by_id(&member_id, console.clock.now())
        .await
    {
        Ok(Some(member)) => member,
        Ok(None) => return not_found(&console, req, &session),
        Err(error) => return page::unavailable(&console, req, &error),
    };
    let typed = form.get("confirm").map(Email::parse);
    if !matches!(typed, Some(Ok(ref email)) if *email == member.email) {
        let errors = FieldErrors::from([(
            "confirm",
            format!("Type {} exactly to confirm.", member.email.as_str()),
        )]);
        return member_page(
            &console,
            req,
            &session,
            &id,
            StatusCode::UNPROCESSABLE_ENTITY,
            &errors,
            Some(&form),
        )
        .await;
    }
    match console
        .admin
        .delete_member(&session.actor(), &member_id)
        .await
    {
        Ok(()) => page::redirect(
            &console,
            "/admin/members",
            Some(Flash::ok(format!("Deleted {}.", member.email.as_str()))),
        ),
        Err(error) => page::failed(&console, &member_path(&id), error),
    }
}

#[handler]
pub async fn revoke_sessions(
    req: &Request,
    Path(id): Path<String>,
    console: Data<&Arc<Console>>,
    session: Data<&BrowserSession>,
) -> Response {
    let Some(member) = MemberId::parse(&id) else {
        return not_found(&console, req, &session);
    };
    match console
        .admin
        .revoke_sessions(&session.actor(), &member)
        .await
    {
        Ok(ended) => {
            let message = format!("Ended {ended} session(s). Their API keys still work.");
            if member == session.principal.member.id {
                // The admin ended their own console session too.
                return page::to_sign_in(&console, session.door, Some(&message));
            }
            page::redirect(&console, &member_path(&id), Some(Flash::ok(message)))
        }
        Err(error) => page::failed(&console, &member_path(&id), error),
    }
}

#[handler]
pub async fn new_page(
    req: &Request,
    console: Data<&Arc<Console>>,
    session: Data<&BrowserSession>,
) -> Response {
    onboarding_form(
        &console,
        req,
        &session,
        StatusCode::OK,
        &FieldErrors::new(),
        None,
    )
    .await
}

async fn onboarding_form(
    console: &Console,
    req: &Request,
    session: &BrowserSession,
    status: StatusCode,
    errors: &FieldErrors,
    form: Option<&FormFields>,
) -> Response {
    let roles = match console.store.role_names().await {
        Ok(roles) => roles,
        Err(error) => return page::unavailable(console, req, &error),
    };
    let field = |name: &str| {
        form.and_then(|f| f.get(name))
            .unwrap_or_default()
            .to_owned()
    };
    let chosen: Vec<String> = form
        .map(|f| f.all("roles").into_iter().map(str::to_owned).collect())
        .unwrap_or_default();
    let context = minijinja::context! {
        roles => roles.into_iter().filter(|r| r != Role::MEMBER).collect::<Vec<_>>(),
        chosen => chosen,
        errors => errors,
        form => minijinja::context! {
            email => field("email"),
            with_key => field("with_key") == "yes",
            key_name => field("key_name"),
            key_days => field("key_days"),
        },
    };
    page::render(
        console,
        req,
        Some(session),
        status,
        "console/member_new.html",
        context,
    )
}

/// Onboards an address: allowlist, member and, if asked, an API key shown once.
#[handler]
pub async fn onboard(
    req: &Request,
    console: Data<&Arc<Console>>,
    session: Data<&BrowserSession>,
    form: Data<&FormFields>,
) -> Response {
    let mut errors = FieldErrors::new();
    let email = match Email::parse(form.get("email").unwrap_or_default()) {
        Ok(email) => Some(email),
        Err(error) => {
            errors.insert(
                "email",
                format!("Enter the member's email address ({error})."),
            );
            None
        }
    };
    let roles: Result<Vec<Role>, _> = form.all("roles").into_iter().map(Role::parse).collect();
    let roles = roles.unwrap_or_else(|error| {
        errors.insert("roles", format!("{error}."));
        Vec::new()
    });
    let api_key = if form.get("with_key") == Some("yes") {
        match key_request(&form, None) {
            Ok(request) => Some(request),
            Err((field, message)) => {
                errors.insert(field, message);
                None
            }
        }
    } else {
        None
    };
    let Some(email) = email.filter(|_| errors.is_empty()) else {
        return onboarding_form(
            &console,
            req,
            &session,
            StatusCode::UNPROCESSABLE_ENTITY,
            &errors,
            Some(&form),
        )
        .await;
    };
    let onboarding = Onboarding {
        email,
        roles,
        api_key,
    };
    match console.admin.onboard(&session.actor(), onboarding).await {
        Ok((member, None)) => page::redirect(
            &console,
            &member_path(member.id.as_str()),
            Some(Flash::ok(format!(
                "{} is a member now.",
                member.email.as_str()
            ))),
        ),
        Ok((member, Some(issued))) => {
            super::keys::show_issued(&console, req, &session, &member, &issued)
        }
        Err(error) => {
            let (status, message) = page::explain(error);
            let errors = FieldErrors::from([("email", message)]);
            onboarding_form(&console, req, &session, status, &errors, Some(&form)).await
        }
    }
}
