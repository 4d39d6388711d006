//! `/admin`: the state of the organisation at a glance.

use std::sync::Arc;

use poem::http::StatusCode;
use poem::web::Data;
use poem::{Request, Response, handler};

use super::page;
use super::{BrowserSession, Console};
use crate::store::AuditFilter;

/// How many recent sign-ins the overview lists.
const LATEST_SIGN_INS: i64 = 8;

#[handler]
pub async fn show(
    req: &Request,
    console: Data<&Arc<Console>>,
    session: Data<&BrowserSession>,
) -> Response {
    let now = console.clock.now();
    let latest = AuditFilter {
        action: Some("auth.signed_in".into()),
        limit: LATEST_SIGN_INS,
        ..Default::default()
    };
    let (counts, mail, sign_ins) = match tokio::try_join!(
        console.store.overview(now),
        console.store.outbox_counts(),
        console.store.list_audit(&latest),
    ) {
        Ok(found) => found,
        Err(error) => return page::unavailable(&console, req, &error),
    };
    let context = minijinja::context! {
        counts => minijinja::context! {
            active => counts.active_members,
            suspended => counts.suspended_members,
            deleted => counts.deleted_members,
            claimed => counts.claimed_entries,
            unclaimed => counts.unclaimed_entries,
            keys => counts.live_api_keys,
            mail_queued => mail.queued,
            mail_failed => mail.failed,
        },
        sign_ins => sign_ins_with_addresses(&console, sign_ins, now).await,
    };
    page::render(
        &console,
        req,
        Some(&session),
        StatusCode::OK,
        "console/overview.html",
        context,
    )
}

/// The sign-ins with the member's address beside their id.
async fn sign_ins_with_addresses(
    console: &Console,
    rows: Vec<crate::store::AuditRow>,
    now: i64,
) -> Vec<minijinja::Value> {
    let lookups = rows.iter().map(|row| async {
        let id = row
            .target
            .as_deref()
            .and_then(crate::domain::MemberId::parse)?;
        console.store.member_by_id(&id, now).await.ok().flatten()
    });
    let members = futures_util::future::join_all(lookups).await;
    rows.iter()
        .zip(members)
        .map(|(row, member)| {
            minijinja::context! {
                at => row.at,
                member_id => row.target,
                email => member.map(|m| m.email.as_str().to_owned()),
                ip => row.ip,
            }
        })
        .collect()
}
