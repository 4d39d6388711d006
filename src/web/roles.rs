//! `/admin/roles`: the roles with how many hold them; custom roles made and removed.

use std::sync::Arc;

use poem::http::StatusCode;
use poem::web::{Data, Path};
use poem::{Request, Response, handler};

use super::page::{self, FieldErrors, Flash, FormFields};
use super::{BrowserSession, Console};
use crate::domain::{Conflict, Role};
use crate::error::ApiError;
use crate::store::StoreError;

#[handler]
pub async fn show(
    req: &Request,
    console: Data<&Arc<Console>>,
    session: Data<&BrowserSession>,
) -> Response {
    roles_page(
        &console,
        req,
        &session,
        StatusCode::OK,
        &FieldErrors::new(),
        None,
        None,
    )
    .await
}

/// The roles page; `in_use` asks to confirm deleting a role that members hold.
async fn roles_page(
    console: &Console,
    req: &Request,
    session: &BrowserSession,
    status: StatusCode,
    errors: &FieldErrors,
    form: Option<&FormFields>,
    in_use: Option<(&str, i64)>,
) -> Response {
    let roles = match console.store.list_roles(console.clock.now()).await {
        Ok(roles) => roles,
        Err(error) => return page::unavailable(console, req, &error),
    };
    let field = |name: &str| {
        form.and_then(|f| f.get(name))
            .unwrap_or_default()
            .to_owned()
    };
    let context = minijinja::context! {
        roles => roles.iter().map(|r| minijinja::context! {
            name => r.name, description => r.description, builtin => r.builtin, members => r.members,
        }).collect::<Vec<_>>(),
        errors => errors,
        form => minijinja::context! { name => field("name"), description => field("description") },
        in_use => in_use.map(|(name, members)| minijinja::context! { name => name, members => members }),
    };
    page::render(
        console,
        req,
        Some(session),
        status,
        "console/roles.html",
        context,
    )
}

#[handler]
pub async fn create(
    req: &Request,
    console: Data<&Arc<Console>>,
    session: Data<&BrowserSession>,
    form: Data<&FormFields>,
) -> Response {
    let role = match Role::parse(form.get("name").unwrap_or_default()) {
        Ok(role) => role,
        Err(error) => {
            let errors = FieldErrors::from([("name", format!("{error}."))]);
            return roles_page(
                &console,
                req,
                &session,
                StatusCode::UNPROCESSABLE_ENTITY,
                &errors,
                Some(&form),
                None,
            )
            .await;
        }
    };
    let description = form.get("description").unwrap_or_default();
    match console
        .admin
        .create_role(&session.actor(), &role, description)
        .await
    {
        Ok(()) => page::redirect(
            &console,
            "/admin/roles",
            Some(Flash::ok(format!("Created the role {role}."))),
        ),
        Err(error) => {
            let (status, message) = page::explain(error);
            let errors = FieldErrors::from([("name", message)]);
            roles_page(&console, req, &session, status, &errors, Some(&form), None).await
        }
    }
}

/// Deletes a custom role; one that members hold needs the admin to confirm.
#[handler]
pub async fn delete(
    req: &Request,
    Path(name): Path<String>,
    console: Data<&Arc<Console>>,
    session: Data<&BrowserSession>,
    form: Data<&FormFields>,
) -> Response {
    let role = match Role::parse(&name) {
        Ok(role) => role,
        Err(error) => return page::failed(&console, "/admin/roles", ApiError::from(error)),
    };
    let force = form.get("force") == Some("yes");
    match console
        .admin
        .delete_role(&session.actor(), &role, force)
        .await
    {
        Ok(()) => page::redirect(
            &console,
            "/admin/roles",
            Some(Flash::ok(format!("Deleted the role {role}."))),
        ),
        Err(crate::admin::AdminError::Store(StoreError::Conflict(Conflict::RoleInUse {
            grants,
            ..
        }))) => {
            roles_page(
                &console,
                req,
                &session,
                StatusCode::CONFLICT,
                &FieldErrors::new(),
                None,
                Some((role.as_str(), grants)),
            )
            .await
        }
        Err(error) => page::failed(&console, "/admin/roles", error),
    }
}
