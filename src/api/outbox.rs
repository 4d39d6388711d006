//! Mail delivery as operators see it: what is queued, sent, failed or expired,
//! and a way to send a failed mail again. Bodies are never shown: they hold
//! sign-in secrets (and are sealed at rest anyway).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi};

use super::input::UuidCursorText;
use super::views::timestamp;
use super::{AdminAuth, ApiTags, TrustedProxies};
use crate::admin::{Actor, AdminService};
use crate::clock::Clock;
use crate::error::ApiError;
use crate::store::{DynStore, MailStatus, OutboxCounts, OutboxEntry, OutboxQuery};

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;

pub struct OutboxApi {
    pub store: DynStore,
    pub clock: Clock,
    pub admin: Arc<AdminService>,
    pub proxies: TrustedProxies,
}

/// Where a mail is: `queued` (waiting or being retried), or one of the final
/// states `sent`, `failed` (refused, or out of attempts) and `expired` (its link
/// expired before it could be sent).
#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename_all = "lowercase")]
pub enum OutboxStatus {
    Queued,
    Sent,
    Failed,
    Expired,
}

impl From<OutboxStatus> for MailStatus {
    fn from(status: OutboxStatus) -> Self {
        match status {
            OutboxStatus::Queued => Self::Queued,
            OutboxStatus::Sent => Self::Sent,
            OutboxStatus::Failed => Self::Failed,
            OutboxStatus::Expired => Self::Expired,
        }
    }
}

impl From<MailStatus> for OutboxStatus {
    fn from(status: MailStatus) -> Self {
        match status {
            MailStatus::Queued => Self::Queued,
            MailStatus::Sent => Self::Sent,
            MailStatus::Failed => Self::Failed,
            MailStatus::Expired => Self::Expired,
        }
    }
}

/// One mail, without its body.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct OutboxMailView {
    pub id: String,
    /// The template it was made from, e.g. `sign_in`.
    pub kind: String,
    pub recipient: String,
    pub subject: String,
    pub status: OutboxStatus,
    /// Delivery attempts so far (reset when an admin retries it).
    pub attempts: i64,
    /// Why the last attempt failed, as the mail server or provider said it.
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    /// When it will be tried next; only while `queued`.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub sent_at: Option<DateTime<Utc>>,
    /// After this it is pointless (its link has expired) and will not be sent.
    pub expires_at: Option<DateTime<Utc>>,
}

impl From<OutboxEntry> for OutboxMailView {
    fn from(entry: OutboxEntry) -> Self {
        Self {
            next_attempt_at: (entry.status == MailStatus::Queued)
                .then(|| timestamp(entry.next_attempt_at)),
            id: entry.id,
            kind: entry.kind,
            recipient: entry.recipient,
            subject: entry.subject,
            status: entry.status.into(),
            attempts: entry.attempts,
            last_error: entry.last_error,
            created_at: timestamp(entry.created_at),
            sent_at: entry.sent_at.map(timestamp),
            expires_at: entry.expires_at.map(timestamp),
        }
    }
}

/// How many mails are in each state, over the whole outbox.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct OutboxCountsView {
    pub queued: i64,
    pub sent: i64,
    pub failed: i64,
    pub expired: i64,
}

impl From<OutboxCounts> for OutboxCountsView {
    fn from(counts: OutboxCounts) -> Self {
        Self {
            queued: counts.queued,
            sent: counts.sent,
            failed: counts.failed,
            expired: counts.expired,
        }
    }
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct OutboxPage {
    /// Newest first.
    pub items: Vec<OutboxMailView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
    pub counts: OutboxCountsView,
}

#[OpenApi(tag = "ApiTags::Outbox")]
impl OutboxApi {
    /// Lists mails, newest first, optionally of one status, with counts per status.
    #[oai(path = "/v1/admin/outbox", method = "get")]
    async fn list(
        &self,
        _auth: AdminAuth,
        /// Only mails in this state.
        status: Query<Option<OutboxStatus>>,
        /// Page size, 1 to 500 (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
        /// The `next_cursor` of the previous page.
        cursor: Query<Option<UuidCursorText>>,
    ) -> Result<Json<OutboxPage>, ApiError> {
        let cursor = match cursor.0.as_ref() {
            None => None,
            Some(cursor) => Some(cursor.text().ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_cursor",
                    "cursor must be a next_cursor from a previous page",
                )
            })?),
        }
        .filter(|c| !c.is_empty());
        let limit = limit.0.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        let entries = self
            .store
            .outbox_page(OutboxQuery {
                status: status.0.map(Into::into),
                before: cursor,
                limit: i64::from(limit),
            })
            .await?;
        let next_cursor = (entries.len() == limit as usize)
            .then(|| entries.last().map(|e| e.id.clone()))
            .flatten();
        let counts = self.store.outbox_counts().await?;
        Ok(Json(OutboxPage {
            items: entries.into_iter().map(Into::into).collect(),
            next_cursor,
            counts: counts.into(),
        }))
    }

    /// Sends a failed mail again: it is queued, due now, with a fresh budget of
    /// attempts. 409 if the mail is not `failed`.
    #[oai(path = "/v1/admin/outbox/:id/retry", method = "post")]
    async fn retry(
        &self,
        auth: AdminAuth,
        id: Path<String>,
        req: &Request,
    ) -> Result<Json<OutboxMailView>, ApiError> {
        let actor = Actor::new(&auth.0, self.proxies.client_ip(req));
        let entry = self.admin.retry_mail(&actor, &id).await?;
        Ok(Json(entry.into()))
    }
}
