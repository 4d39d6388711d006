//! Webhook endpoints as admins manage them, and their deliveries. The signing
//! secret is shown once, when an endpoint is created or its secret rotated.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};

use super::input::{Opt, Text};
use super::members::actor;
use super::views::timestamp;
use super::{AdminAuth, ApiTags, TrustedProxies};
use crate::domain::EventType;
use crate::error::ApiError;
use crate::store::{DeliveryStatus, WebhookDelivery, WebhookEndpoint};
use crate::webhooks::{WebhookChange, WebhookService};

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;

pub struct WebhooksApi {
    pub webhooks: Arc<WebhookService>,
    pub proxies: TrustedProxies,
}

/// An endpoint, without its secret.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    /// The event types it receives.
    pub events: Vec<String>,
    pub description: Option<String>,
    /// A disabled endpoint receives nothing; `disabled_reason` says why.
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    /// Since when every attempt has failed; absent while it answers.
    pub failing_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<WebhookEndpoint> for WebhookView {
    fn from(e: WebhookEndpoint) -> Self {
        Self {
            events: e.events.iter().map(|t| t.as_str().to_owned()).collect(),
            id: e.id,
            url: e.url,
            description: e.description,
            enabled: e.enabled,
            disabled_reason: e.disabled_reason,
            failing_since: e.failing_since.map(timestamp),
            created_at: timestamp(e.created_at),
            updated_at: timestamp(e.updated_at),
        }
    }
}

/// A new endpoint with its signing secret, shown this once.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct CreatedWebhookView {
    #[oai(flatten)]
    pub webhook: WebhookView,
    /// `whsec_…`: verify the `webhook-signature` header with it (Standard Webhooks).
    pub secret: String,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct NewWebhookBody {
    /// https only (unless `GATEHOUSE_WEBHOOKS_ALLOW_INSECURE`), to a public
    /// address that resolves: where gatehouse delivers is its policy, so any
    /// other URL is refused with 403 (`invalid_url`, `url_not_https`,
    /// `url_internal_address`, `url_unresolvable`).
    pub url: Text,
    /// The event types it receives.
    #[oai(validator(min_items = 1))]
    pub events: Vec<WebhookEvent>,
    #[oai(validator(max_length = 500))]
    pub description: Opt<Text>,
}

/// An event type a webhook can receive.
#[derive(Debug, Clone, Copy, Enum)]
pub enum WebhookEvent {
    #[oai(rename = "member.created")]
    MemberCreated,
    #[oai(rename = "member.updated")]
    MemberUpdated,
    #[oai(rename = "member.deleted")]
    MemberDeleted,
    #[oai(rename = "allowlist.imported")]
    AllowlistImported,
    #[oai(rename = "allowlist.batch_withdrawn")]
    AllowlistBatchWithdrawn,
    #[oai(rename = "apikey.created")]
    ApiKeyCreated,
    #[oai(rename = "apikey.revoked")]
    ApiKeyRevoked,
}

impl WebhookEvent {
    fn names(events: &[Self]) -> Vec<String> {
        events
            .iter()
            .map(|event| EventType::from(*event).as_str().to_owned())
            .collect()
    }
}

impl From<WebhookEvent> for EventType {
    fn from(event: WebhookEvent) -> Self {
        match event {
            WebhookEvent::MemberCreated => Self::MemberCreated,
            WebhookEvent::MemberUpdated => Self::MemberUpdated,
            WebhookEvent::MemberDeleted => Self::MemberDeleted,
            WebhookEvent::AllowlistImported => Self::AllowlistImported,
            WebhookEvent::AllowlistBatchWithdrawn => Self::AllowlistBatchWithdrawn,
            WebhookEvent::ApiKeyCreated => Self::ApiKeyCreated,
            WebhookEvent::ApiKeyRevoked => Self::ApiKeyRevoked,
        }
    }
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct WebhookPatchBody {
    pub url: Opt<Text>,
    #[oai(validator(min_items = 1))]
    pub events: Opt<Vec<WebhookEvent>>,
    /// An empty string clears it.
    #[oai(validator(max_length = 500))]
    pub description: Opt<Text>,
    /// `false` stops deliveries; `true` resumes them (and clears a failure streak).
    pub enabled: Opt<bool>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct WebhookList {
    pub items: Vec<WebhookView>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct SecretView {
    /// The new `whsec_…` secret, shown this once; the old one no longer signs.
    pub secret: String,
}

/// One event's delivery to this endpoint.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct DeliveryView {
    /// The event's id: the `webhook-id` header, the same on every attempt.
    pub id: String,
    pub event_type: String,
    /// `pending`, `delivered` or `failed` (out of attempts).
    pub status: String,
    pub attempts: i64,
    /// The HTTP status of the last attempt, if it got an answer.
    pub last_response_code: Option<i64>,
    pub last_error: Option<String>,
    /// When it will be tried next; only while `pending`.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

impl From<WebhookDelivery> for DeliveryView {
    fn from(d: WebhookDelivery) -> Self {
        Self {
            next_attempt_at: (d.status == DeliveryStatus::Pending)
                .then(|| timestamp(d.next_attempt_at)),
            id: d.event_id,
            event_type: d.event_type,
            status: d.status.as_str().to_owned(),
            attempts: d.attempts,
            last_response_code: d.last_status,
            last_error: d.last_error,
            created_at: timestamp(d.created_at),
            delivered_at: d.delivered_at.map(timestamp),
        }
    }
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct DeliveryPage {
    /// Newest event first.
    pub items: Vec<DeliveryView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(ApiResponse)]
enum Created {
    #[oai(status = 201)]
    Created(Json<CreatedWebhookView>),
}

#[derive(ApiResponse)]
enum Deleted {
    #[oai(status = 204)]
    NoContent,
}

#[OpenApi(tag = "ApiTags::Webhooks")]
impl WebhooksApi {
    /// Registers an endpoint for some event types; answers its signing secret, once.
    #[oai(path = "/v1/admin/webhooks", method = "post")]
    async fn create(
        &self,
        auth: AdminAuth,
        body: Json<NewWebhookBody>,
        req: &Request,
    ) -> Result<Created, ApiError> {
        let created = self
            .webhooks
            .create(
                &actor(&auth, &self.proxies, req),
                &body.url,
                &WebhookEvent::names(&body.events),
                body.description.0.as_deref(),
            )
            .await?;
        Ok(Created::Created(Json(CreatedWebhookView {
            webhook: created.endpoint.into(),
            secret: created.secret,
        })))
    }

    /// Every endpoint, oldest first.
    #[oai(path = "/v1/admin/webhooks", method = "get")]
    async fn list(&self, _auth: AdminAuth) -> Result<Json<WebhookList>, ApiError> {
        let items = self.webhooks.list().await?;
        Ok(Json(WebhookList {
            items: items.into_iter().map(Into::into).collect(),
        }))
    }

    #[oai(path = "/v1/admin/webhooks/:id", method = "get")]
    async fn get(&self, _auth: AdminAuth, id: Path<String>) -> Result<Json<WebhookView>, ApiError> {
        Ok(Json(self.webhooks.get(&id).await?.into()))
    }

    /// Changes the URL, the event types or the description, or disables or
    /// enables the endpoint.
    #[oai(path = "/v1/admin/webhooks/:id", method = "patch")]
    async fn update(
        &self,
        auth: AdminAuth,
        id: Path<String>,
        body: Json<WebhookPatchBody>,
        req: &Request,
    ) -> Result<Json<WebhookView>, ApiError> {
        let body = body.0;
        let change = WebhookChange {
            url: body.url.0.map(|url| url.0),
            events: body.events.0.as_deref().map(WebhookEvent::names),
            description: body.description.0.map(|text| text.0),
            enabled: body.enabled.0,
        };
        let updated = self
            .webhooks
            .update(&actor(&auth, &self.proxies, req), &id, change)
            .await?;
        Ok(Json(updated.into()))
    }

    /// Deletes the endpoint and its deliveries.
    #[oai(path = "/v1/admin/webhooks/:id", method = "delete")]
    async fn delete(
        &self,
        auth: AdminAuth,
        id: Path<String>,
        req: &Request,
    ) -> Result<Deleted, ApiError> {
        self.webhooks
            .delete(&actor(&auth, &self.proxies, req), &id)
            .await?;
        Ok(Deleted::NoContent)
    }

    /// A new signing secret, shown once; deliveries from now on are signed with it.
    #[oai(path = "/v1/admin/webhooks/:id/rotate-secret", method = "post")]
    async fn rotate_secret(
        &self,
        auth: AdminAuth,
        id: Path<String>,
        req: &Request,
    ) -> Result<Json<SecretView>, ApiError> {
        let secret = self
            .webhooks
            .rotate_secret(&actor(&auth, &self.proxies, req), &id)
            .await?;
        Ok(Json(SecretView { secret }))
    }

    /// The endpoint's deliveries, newest first: status, attempts, last
    /// response code and next attempt.
    #[oai(path = "/v1/admin/webhooks/:id/deliveries", method = "get")]
    async fn deliveries(
        &self,
        _auth: AdminAuth,
        id: Path<String>,
        /// Page size, 1 to 500 (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
        /// The `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<Json<DeliveryPage>, ApiError> {
        let limit = limit.0.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        let cursor = cursor.0.as_deref().map(str::trim).filter(|c| !c.is_empty());
        let items = self
            .webhooks
            .deliveries(&id, cursor, i64::from(limit))
            .await?;
        let next_cursor = (items.len() == limit as usize)
            .then(|| items.last().map(|d| d.event_id.clone()))
            .flatten();
        Ok(Json(DeliveryPage {
            items: items.into_iter().map(Into::into).collect(),
            next_cursor,
        }))
    }

    /// Sends a delivered or failed event again, due now, with a fresh budget
    /// of attempts and the same `webhook-id`. 409 while it is still pending.
    #[oai(
        path = "/v1/admin/webhooks/:id/deliveries/:delivery/retry",
        method = "post"
    )]
    async fn retry(
        &self,
        auth: AdminAuth,
        id: Path<String>,
        delivery: Path<String>,
        req: &Request,
    ) -> Result<Json<DeliveryView>, ApiError> {
        let delivery = self
            .webhooks
            .redeliver(&actor(&auth, &self.proxies, req), &id, &delivery)
            .await?;
        Ok(Json(delivery.into()))
    }
}
