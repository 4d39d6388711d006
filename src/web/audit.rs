//! `/admin/audit`: the audit log with filters, paging and a CSV download.

use std::sync::Arc;

use poem::http::StatusCode;
use poem::web::{Data, Query};
use poem::{IntoResponse, Request, Response, handler};
use serde::Deserialize;

use super::page;
use super::{BrowserSession, Console};
use crate::store::{AuditFilter, AuditRow};

const PAGE_SIZE: i64 = 50;

/// The filters as the form sends them; dates are whole days (UTC).
#[derive(Deserialize, Default)]
pub struct AuditQuery {
    actor: Option<String>,
    action: Option<String>,
    target: Option<String>,
    /// `YYYY-MM-DD`, from the start of that day.
    from: Option<String>,
    /// `YYYY-MM-DD`, through the end of that day.
    to: Option<String>,
    before: Option<String>,
}

impl AuditQuery {
    fn filter(&self) -> AuditFilter {
        let text = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        AuditFilter {
            actor: text(&self.actor),
            action: text(&self.action),
            target: text(&self.target),
            since: text(&self.from).as_deref().and_then(page::start_of_day),
            until: text(&self.to).as_deref().and_then(page::end_of_day),
            before: text(&self.before),
            limit: PAGE_SIZE,
        }
    }
}

pub fn row_view(row: &AuditRow) -> minijinja::Value {
    let details = serde_json::from_str::<serde_json::Value>(&row.details)
        .ok()
        .filter(|d| d.as_object().is_some_and(|o| !o.is_empty()))
        .map(|d| d.to_string());
    minijinja::context! {
        at => row.at,
        actor => row.actor,
        action => row.action,
        target => row.target,
        details => details,
        ip => row.ip,
    }
}

#[handler]
pub async fn show(
    req: &Request,
    Query(query): Query<AuditQuery>,
    console: Data<&Arc<Console>>,
    session: Data<&BrowserSession>,
) -> Response {
    let filter = query.filter();
    let rows = match console.store.list_audit(&filter).await {
        Ok(rows) => rows,
        Err(error) => return page::unavailable(&console, req, &error),
    };
    let next = (rows.len() as i64 == PAGE_SIZE)
        .then(|| rows.last().map(|r| r.id.clone()))
        .flatten();
    // The export and the next page keep the filters, never a credential.
    let encoded = page::query_string(&[
        ("actor", &filter.actor),
        ("action", &filter.action),
        ("target", &filter.target),
        ("from", &query.from),
        ("to", &query.to),
    ]);
    let context = minijinja::context! {
        rows => rows.iter().map(row_view).collect::<Vec<_>>(),
        q => minijinja::context! {
            actor => filter.actor, action => filter.action, target => filter.target,
            from => query.from, to => query.to,
        },
        filters => encoded,
        next => next,
        first_page => filter.before.is_none(),
    };
    page::render(
        &console,
        req,
        Some(&session),
        StatusCode::OK,
        "console/audit.html",
        context,
    )
}

#[handler]
pub async fn export(Query(query): Query<AuditQuery>, console: Data<&Arc<Console>>) -> Response {
    let mut filter = query.filter();
    filter.before = None;
    crate::api::audit::audit_csv(console.store.clone(), filter).into_response()
}
