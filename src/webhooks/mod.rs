//! Webhooks: other systems learn of every membership change. Admins register
//! endpoints (this service); changes write their events in their own
//! transaction (`store/webhooks.rs`); the delivery worker signs and posts them
//! as the Standard Webhooks specification says (`signing.rs`, `worker.rs`),
//! only to public https addresses (`target.rs`).

pub mod signing;
pub mod target;
pub mod worker;

use std::sync::Arc;

use tokio::sync::Notify;

pub use target::TargetError;

use crate::admin::Actor;
use crate::clock::Clock;
use crate::config::WebhookSettings;
use crate::domain::EventType;
use crate::mail::Sealer;
use crate::store::{
    DynStore, NewWebhook, RedeliverOutcome, StoreError, WebhookDelivery, WebhookEndpoint,
    WebhookPatch,
};

/// The longest description kept.
const MAX_DESCRIPTION: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("unknown event type `{0}`; known: {known}", known = known_types())]
    UnknownEvent(String),
    #[error("name at least one event type")]
    NoEvents,
    #[error("a description is at most {MAX_DESCRIPTION} characters")]
    Description,
    #[error("the delivery is still pending; it goes out by itself")]
    StillPending,
}

fn known_types() -> String {
    EventType::ALL.map(EventType::as_str).join(", ")
}

/// A new endpoint, with its secret: shown this once.
#[derive(Debug)]
pub struct CreatedWebhook {
    pub endpoint: WebhookEndpoint,
    pub secret: String,
}

/// What an admin asks to change; `None` stays.
#[derive(Debug, Default)]
pub struct WebhookChange {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

pub struct WebhookService {
    store: DynStore,
    clock: Clock,
    sealer: Arc<Sealer>,
    settings: WebhookSettings,
    /// Rings the delivery worker when a delivery is queued again.
    wake: Arc<Notify>,
}

impl WebhookService {
    pub fn new(
        store: DynStore,
        clock: Clock,
        sealer: Arc<Sealer>,
        settings: WebhookSettings,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            store,
            clock,
            sealer,
            settings,
            wake,
        }
    }

    pub async fn create(
        &self,
        actor: &Actor,
        url: &str,
        events: &[String],
        description: Option<&str>,
    ) -> Result<CreatedWebhook, WebhookError> {
        let url = self.checked_url(url).await?;
        let events = parse_events(events)?;
        let description = parse_description(description)?;
        let secret = signing::new_secret();
        let id = uuid::Uuid::now_v7().to_string();
        let audit = actor
            .audit("webhook.created")
            .target(id.clone())
            .details(serde_json::json!({ "url": url, "events": EventType::join(&events) }));
        let endpoint = self
            .store
            .create_webhook(
                NewWebhook {
                    id,
                    url,
                    events,
                    description,
                    secret_sealed: self.sealer.seal(secret.as_bytes()),
                    created_by: Some(actor.id.clone()),
                },
                audit,
                self.clock.now(),
            )
            .await?;
        Ok(CreatedWebhook { endpoint, secret })
    }

    pub async fn list(&self) -> Result<Vec<WebhookEndpoint>, WebhookError> {
        Ok(self.store.list_webhooks().await?)
    }

    pub async fn get(&self, id: &str) -> Result<WebhookEndpoint, WebhookError> {
        self.store
            .webhook(id)
            .await?
            .ok_or(WebhookError::NotFound("webhook"))
    }

    pub async fn update(
        &self,
        actor: &Actor,
        id: &str,
        change: WebhookChange,
    ) -> Result<WebhookEndpoint, WebhookError> {
        let url = match change.url.as_deref() {
            Some(url) => Some(self.checked_url(url).await?),
            None => None,
        };
        let events = change.events.as_deref().map(parse_events).transpose()?;
        let description = match change.description.as_deref() {
            Some(text) => Some(parse_description(Some(text))?),
            None => None,
        };
        let mut details = serde_json::Map::new();
        if let Some(url) = &url {
            details.insert("url".into(), url.clone().into());
        }
        if let Some(events) = &events {
            details.insert("events".into(), EventType::join(events).into());
        }
        if let Some(enabled) = change.enabled {
            details.insert("enabled".into(), enabled.into());
        }
        let audit = actor
            .audit("webhook.updated")
            .target(id)
            .details(details.into());
        let patch = WebhookPatch {
            url,
            events,
            description,
            enabled: change.enabled,
        };
        let updated = self
            .store
            .update_webhook(id, patch, audit, self.clock.now())
            .await?
            .ok_or(WebhookError::NotFound("webhook"))?;
        if updated.enabled {
            // Deliveries held while it was disabled may go now.
            self.wake.notify_one();
        }
        Ok(updated)
    }

    pub async fn delete(&self, actor: &Actor, id: &str) -> Result<(), WebhookError> {
        let audit = actor.audit("webhook.deleted").target(id);
        if self
            .store
            .delete_webhook(id, audit, self.clock.now())
            .await?
        {
            Ok(())
        } else {
            Err(WebhookError::NotFound("webhook"))
        }
    }

    /// A new secret, shown this once; the old one stops signing at once.
    pub async fn rotate_secret(&self, actor: &Actor, id: &str) -> Result<String, WebhookError> {
        let secret = signing::new_secret();
        let audit = actor.audit("webhook.secret_rotated").target(id);
        let sealed = self.sealer.seal(secret.as_bytes());
        if self
            .store
            .set_webhook_secret(id, &sealed, audit, self.clock.now())
            .await?
        {
            Ok(secret)
        } else {
            Err(WebhookError::NotFound("webhook"))
        }
    }

    pub async fn deliveries(
        &self,
        id: &str,
        before: Option<&str>,
        limit: i64,
    ) -> Result<Vec<WebhookDelivery>, WebhookError> {
        self.get(id).await?;
        Ok(self.store.webhook_deliveries(id, before, limit).await?)
    }

    /// Sends a delivered or failed event again, with the same `webhook-id`.
    pub async fn redeliver(
        &self,
        actor: &Actor,
        id: &str,
        event: &str,
    ) -> Result<WebhookDelivery, WebhookError> {
        let audit = actor
            .audit("webhook.redelivered")
            .target(id)
            .details(serde_json::json!({ "event": event }));
        match self
            .store
            .redeliver_webhook(id, event, audit, self.clock.now())
            .await?
        {
            RedeliverOutcome::Queued(delivery) => {
                self.wake.notify_one();
                Ok(delivery)
            }
            RedeliverOutcome::NotFound => Err(WebhookError::NotFound("delivery")),
            RedeliverOutcome::Pending => Err(WebhookError::StillPending),
        }
    }

    async fn checked_url(&self, raw: &str) -> Result<String, WebhookError> {
        let url = target::parse(raw, self.settings.allow_insecure)?;
        target::check_resolved(&url, self.settings.allow_insecure).await?;
        Ok(url.to_string())
    }
}

fn parse_events(raw: &[String]) -> Result<Vec<EventType>, WebhookError> {
    let events = EventType::parse_list(raw.iter().map(String::as_str))
        .map_err(WebhookError::UnknownEvent)?;
    if events.is_empty() {
        return Err(WebhookError::NoEvents);
    }
    Ok(events)
}

fn parse_description(raw: Option<&str>) -> Result<Option<String>, WebhookError> {
    let text = raw.map(str::trim).filter(|t| !t.is_empty());
    match text {
        Some(text) if text.chars().count() > MAX_DESCRIPTION => Err(WebhookError::Description),
        text => Ok(text.map(str::to_owned)),
    }
}
