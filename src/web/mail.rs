//! `/admin/mail`: the outbox (never a body or a link) and sending a failed mail again.

use std::sync::Arc;

use poem::http::StatusCode;
use poem::web::{Data, Path, Query};
use poem::{Request, Response, handler};
use serde::Deserialize;

use super::page;
use super::{BrowserSession, Console};
use crate::store::{MailStatus, OutboxQuery};

const PAGE_SIZE: i64 = 50;

#[derive(Deserialize)]
pub struct MailQuery {
    status: Option<String>,
    before: Option<String>,
}

#[handler]
pub async fn show(
    req: &Request,
    Query(query): Query<MailQuery>,
    console: Data<&Arc<Console>>,
    session: Data<&BrowserSession>,
) -> Response {
    let status = query
        .status
        .as_deref()
        .and_then(|s| MailStatus::ALL.into_iter().find(|m| m.as_str() == s));
    let before = query
        .before
        .as_deref()
        .filter(|b| uuid::Uuid::parse_str(b).is_ok());
    let page_query = OutboxQuery {
        status,
        before,
        limit: PAGE_SIZE,
    };
    let (mails, counts) = match tokio::try_join!(
        console.store.outbox_page(page_query),
        console.store.outbox_counts(),
    ) {
        Ok(found) => found,
        Err(error) => return page::unavailable(&console, req, &error),
    };
    let next = (mails.len() as i64 == PAGE_SIZE)
        .then(|| mails.last().map(|m| m.id.clone()))
        .flatten();
    let context = minijinja::context! {
        mails => mails.iter().map(|m| minijinja::context! {
            id => m.id, kind => m.kind, recipient => m.recipient, subject => m.subject,
            status => m.status.as_str(), attempts => m.attempts, last_error => m.last_error,
            created_at => m.created_at, next_attempt_at => m.next_attempt_at, sent_at => m.sent_at,
        }).collect::<Vec<_>>(),
        counts => minijinja::context! {
            queued => counts.queued, sent => counts.sent, failed => counts.failed, expired => counts.expired,
        },
        status => status.map(MailStatus::as_str),
        next => next,
        first_page => before.is_none(),
    };
    page::render(
        &console,
        req,
        Some(&session),
        StatusCode::OK,
        "console/mail.html",
        context,
    )
}

#[handler]
pub async fn retry(
    Path(id): Path<String>,
    console: Data<&Arc<Console>>,
    session: Data<&BrowserSession>,
) -> Response {
    let outcome = console.admin.retry_mail(&session.actor(), &id).await;
    let said = outcome.map(|entry| format!("The mail to {} is queued again.", entry.recipient));
    page::after(&console, "/admin/mail", said)
}
