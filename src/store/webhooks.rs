//! Webhooks: the endpoints admins register, the events every membership
//! change writes in its own transaction (through [`record_event`], beside its
//! audit row), and the deliveries, one per endpoint and event, that delivery
//! workers lease, retry and finish the way the outbox's mail is.
//!
//! An event is stored only when an enabled endpoint subscribes to its type, so
//! a service without webhooks pays one indexless probe of a tiny table per
//! change, and the sign-in of a returning member pays nothing at all.

use std::sync::LazyLock;

use serde_json::{Value, json};

use super::audit::insert_audit;
use super::backend::{Backend, SqlStore};
use super::schema::placeholders;
use super::sql::{Executor, Query, query};
use super::{AuditEntry, LeaseToken, StoreError, StoreResult};
use crate::domain::{EventType, Member};

/// A new endpoint; its secret arrives sealed, so the store never holds it in the clear.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub id: String,
    pub url: String,
    pub events: Vec<EventType>,
    pub description: Option<String>,
    pub secret_sealed: String,
    pub created_by: Option<String>,
}

/// An endpoint as admins see it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEndpoint {
    pub id: String,
    pub url: String,
    pub events: Vec<EventType>,
    pub description: Option<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    /// Since when every attempt has failed; `None` while it answers.
    pub failing_since: Option<i64>,
    pub created_by: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A change to an endpoint; `None` fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct WebhookPatch {
    pub url: Option<String>,
    pub events: Option<Vec<EventType>>,
    /// `Some(None)` clears it.
    pub description: Option<Option<String>>,
    /// Enabling clears the reason it was disabled and its failure streak.
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Waiting for its first attempt, or for a retry.
    Pending,
    Delivered,
    /// Out of attempts; an admin may retry it.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Pending, Self::Delivered, Self::Failed]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// One event's delivery to one endpoint. Its id is the event's id, which is
/// also the `webhook-id` header the receiver sees.
#[derive(Debug, Clone)]
pub struct WebhookDelivery {
    pub endpoint_id: String,
    pub event_id: String,
    pub event_type: String,
    pub status: DeliveryStatus,
    pub attempts: i64,
    pub next_attempt_at: i64,
    /// The HTTP status of the last attempt, if it got one.
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
}

/// A leased delivery: all a worker needs to make one attempt.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DueWebhook {
    pub endpoint_id: String,
    pub event_id: String,
    pub url: String,
    pub secret_sealed: String,
    /// The body, byte for byte as signed.
    pub payload: String,
    pub attempts: i64,
    pub created_at: i64,
}

/// The outcome of an attempt, as the worker reports it.
#[derive(Debug, Clone)]
pub enum WebhookResult {
    Delivered {
        status: i64,
    },
    Retry {
        next_attempt_at: i64,
        status: Option<i64>,
        error: String,
    },
    Failed {
        status: Option<i64>,
        error: String,
    },
}

/// Deliveries in each state, over every endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookCounts {
    pub pending: i64,
    pub delivered: i64,
    pub failed: i64,
}

pub enum RedeliverOutcome {
    Queued(WebhookDelivery),
    NotFound,
    /// It is still pending: it goes out by itself.
    Pending,
}

#[async_trait::async_trait]
pub trait WebhookStore {
    async fn create_webhook(
        &self,
        new: NewWebhook,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<WebhookEndpoint>;

    async fn list_webhooks(&self) -> StoreResult<Vec<WebhookEndpoint>>;

    async fn webhook(&self, id: &str) -> StoreResult<Option<WebhookEndpoint>>;

    async fn update_webhook(
        &self,
        id: &str,
        patch: WebhookPatch,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<Option<WebhookEndpoint>>;

    /// Deletes the endpoint and its deliveries.
    async fn delete_webhook(&self, id: &str, audit: AuditEntry, now: i64) -> StoreResult<bool>;

    async fn set_webhook_secret(
        &self,
        id: &str,
        secret_sealed: &str,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<bool>;

    /// The endpoint's deliveries, newest event first, before the event `before`.
    async fn webhook_deliveries(
        &self,
        endpoint_id: &str,
        before: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<WebhookDelivery>>;

    /// Sends a delivered or failed delivery again, due at `now`, with a fresh
    /// budget of attempts and the same `webhook-id`.
    async fn redeliver_webhook(
        &self,
        endpoint_id: &str,
        event_id: &str,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<RedeliverOutcome>;

    /// Leases up to `limit` due deliveries of enabled endpoints to `lease`
    /// until `now + lease_secs`, as [`super::OutboxStore::claim_due_mail`]
    /// leases mail.
    async fn claim_due_webhooks(
        &self,
        lease: &LeaseToken,
        now: i64,
        lease_secs: i64,
        limit: i64,
    ) -> StoreResult<Vec<DueWebhook>>;

    /// Extends to `until` the lease of every delivery `lease` still holds, and
    /// returns their `(endpoint, event)` keys, as
    /// [`super::OutboxStore::renew_mail_lease`] does for mail.
    async fn renew_webhook_lease(
        &self,
        lease: &LeaseToken,
        until: i64,
    ) -> StoreResult<Vec<(String, String)>>;

    /// Records the outcomes of attempts made under `lease`, ending the lease;
    /// a pending delivery `lease` still holds only, so a final state stays and
    /// a late outcome from a stale claimer changes nothing. An endpoint whose
    /// every attempt has failed for `disable_after` seconds is disabled, with
    /// the reason and an audit row.
    async fn finish_webhooks(
        &self,
        lease: &LeaseToken,
        outcomes: &[((String, String), WebhookResult)],
        disable_after: i64,
        now: i64,
    ) -> StoreResult<()>;

    async fn webhook_counts(&self) -> StoreResult<WebhookCounts>;
}

const ENDPOINT_COLUMNS: &str = "id, url, events, description, enabled, disabled_reason, \
     failing_since, created_by, created_at, updated_at";

#[derive(sqlx::FromRow)]
struct EndpointRow {
    id: String,
    url: String,
    events: String,
    description: Option<String>,
    enabled: bool,
    disabled_reason: Option<String>,
    failing_since: Option<i64>,
    created_by: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<EndpointRow> for WebhookEndpoint {
    type Error = StoreError;

    fn try_from(row: EndpointRow) -> StoreResult<Self> {
        let events = EventType::parse_list(row.events.split(',').filter(|t| !t.is_empty()))
            .map_err(|t| StoreError::Corrupt(format!("webhook {}: event `{t}`", row.id)))?;
        Ok(Self {
            id: row.id,
            url: row.url,
            events,
            description: row.description,
            enabled: row.enabled,
            disabled_reason: row.disabled_reason,
            failing_since: row.failing_since,
            created_by: row.created_by,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

const DELIVERY_COLUMNS: &str = "d.endpoint_id, d.event_id, ev.type AS event_type, d.status, \
     d.attempts, d.next_attempt_at, d.last_status, d.last_error, d.created_at, d.delivered_at";

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    endpoint_id: String,
    event_id: String,
    event_type: String,
    status: String,
    attempts: i64,
    next_attempt_at: i64,
    last_status: Option<i64>,
    last_error: Option<String>,
    created_at: i64,
    delivered_at: Option<i64>,
}

impl TryFrom<DeliveryRow> for WebhookDelivery {
    type Error = StoreError;

    fn try_from(row: DeliveryRow) -> StoreResult<Self> {
        Ok(Self {
            status: delivery_status(&row.event_id, &row.status)?,
            endpoint_id: row.endpoint_id,
            event_id: row.event_id,
            event_type: row.event_type,
            attempts: row.attempts,
            next_attempt_at: row.next_attempt_at,
            last_status: row.last_status,
            last_error: row.last_error,
            created_at: row.created_at,
            delivered_at: row.delivered_at,
        })
    }
}

fn delivery_status(id: &str, stored: &str) -> StoreResult<DeliveryStatus> {
    DeliveryStatus::parse(stored)
        .ok_or_else(|| StoreError::Corrupt(format!("webhook delivery {id}: status `{stored}`")))
}

/// Enabled endpoints subscribed to the type bound at `$n` (as `%,type,%`).
fn subscribed(n: usize) -> String {
    format!("enabled = TRUE AND (',' || events || ',') LIKE ${n}")
}

/// True when an enabled endpoint subscribes to `kind`: lets a path that must
/// read to build an event's data skip the read when nobody listens.
pub async fn listened_to(db: &mut impl Executor, kind: EventType) -> StoreResult<bool> {
    static LISTENED: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT id FROM webhook_endpoints WHERE {} LIMIT 1",
            subscribed(1)
        )
    });
    let found: Option<(String,)> = query(&LISTENED)
        .bind(format!("%,{kind},%"))
        .fetch_optional(db)
        .await?;
    Ok(found.is_some())
}

/// Writes the event `kind` with `data` through `db`, with a pending delivery
/// for each enabled endpoint subscribed to it: inside the change's
/// transaction, it commits or rolls back with the change. Nothing is written
/// when no endpoint listens.
pub async fn record_event(
    db: &mut impl Executor,
    kind: EventType,
    data: Value,
    now: i64,
) -> StoreResult<()> {
    static INSERT_EVENT: LazyLock<String> = LazyLock::new(|| {
        format!(
            "INSERT INTO webhook_events (id, type, payload, created_at) SELECT $1, $2, $3, $4 \
             WHERE EXISTS (SELECT 1 FROM webhook_endpoints WHERE {})",
            subscribed(5)
        )
    });
    static INSERT_DELIVERIES: LazyLock<String> = LazyLock::new(|| {
        format!(
            "INSERT INTO webhook_deliveries (endpoint_id, event_id, status, next_attempt_at, created_at) \
             SELECT id, $1, 'pending', $2, $2 FROM webhook_endpoints WHERE {}",
            subscribed(3)
        )
    });
    let id = format!("msg_{}", uuid::Uuid::now_v7().simple());
    let pattern = format!("%,{kind},%");
    let payload = json!({ "type": kind.as_str(), "timestamp": rfc3339(now), "data": data });
    let inserted = query(&INSERT_EVENT)
        .bind(&id)
        .bind(kind.as_str())
        .bind(payload.to_string())
        .bind(now)
        .bind(&pattern)
        .execute(db)
        .await?;
    if inserted > 0 {
        query(&INSERT_DELIVERIES)
            .bind(&id)
            .bind(now)
            .bind(&pattern)
            .execute(db)
            .await?;
    }
    Ok(())
}

/// A member as events show them.
pub fn member_data(member: &Member) -> Value {
    json!({
        "id": member.id.as_str(),
        "email": member.email.as_str(),
        "status": member.status.as_str(),
        "roles": member.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        "created_at": rfc3339(member.created_at),
        "last_login_at": member.last_login_at.map(rfc3339),
    })
}

/// What a change did to a member, or `None` when neither status nor roles changed.
pub fn member_changes(before: &Member, after: &Member) -> Option<Value> {
    let mut changes = serde_json::Map::new();
    if before.status != after.status {
        changes.insert(
            "status".into(),
            json!({ "from": before.status.as_str(), "to": after.status.as_str() }),
        );
    }
    let added: Vec<&str> = after
        .roles
        .iter()
        .filter(|r| !before.roles.contains(r))
        .map(|r| r.as_str())
        .collect();
    let removed: Vec<&str> = before
        .roles
        .iter()
        .filter(|r| !after.roles.contains(r))
        .map(|r| r.as_str())
        .collect();
    if !added.is_empty() || !removed.is_empty() {
        changes.insert(
            "roles".into(),
            json!({ "added": added, "removed": removed }),
        );
    }
    (!changes.is_empty()).then_some(Value::Object(changes))
}

/// An API key as events show it: never its secret or hash.
pub fn api_key_data(
    id: &str,
    name: &str,
    member_id: &str,
    roles: &[String],
    expires_at: Option<i64>,
) -> Value {
    json!({
        "id": id,
        "name": name,
        "member_id": member_id,
        "roles": roles,
        "expires_at": expires_at.map(rfc3339),
    })
}

fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn load_endpoint(db: &mut impl Executor, id: &str) -> StoreResult<Option<WebhookEndpoint>> {
    static SELECT: LazyLock<String> =
        LazyLock::new(|| format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1"));
    let row: Option<EndpointRow> = query(&SELECT).bind(id).fetch_optional(db).await?;
    row.map(WebhookEndpoint::try_from).transpose()
}

#[async_trait::async_trait]
impl<B: Backend> WebhookStore for SqlStore<B> {
    async fn create_webhook(
        &self,
        new: NewWebhook,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<WebhookEndpoint> {
        let mut tx = self.backend.begin().await?;
        query(
            "INSERT INTO webhook_endpoints (id, url, events, description, secret_sealed, enabled, \
               created_by, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, TRUE, $6, $7, $7)",
        )
        .bind(&new.id)
        .bind(&new.url)
        .bind(EventType::join(&new.events))
        .bind(new.description.as_deref())
        .bind(&new.secret_sealed)
        .bind(new.created_by.as_deref())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        insert_audit(&mut *tx, audit, now).await?;
        let endpoint = load_endpoint(&mut *tx, &new.id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("webhook {} vanished", new.id)))?;
        B::commit(tx).await?;
        Ok(endpoint)
    }

    async fn list_webhooks(&self) -> StoreResult<Vec<WebhookEndpoint>> {
        static LIST: LazyLock<String> = LazyLock::new(|| {
            format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY created_at, id")
        });
        let rows: Vec<EndpointRow> = query(&LIST).fetch_all(&mut self.backend.reader()).await?;
        rows.into_iter().map(WebhookEndpoint::try_from).collect()
    }

    async fn webhook(&self, id: &str) -> StoreResult<Option<WebhookEndpoint>> {
        load_endpoint(&mut self.backend.reader(), id).await
    }

    async fn update_webhook(
        &self,
        id: &str,
        patch: WebhookPatch,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<Option<WebhookEndpoint>> {
        let mut tx = self.backend.begin().await?;
        let Some(before) = load_endpoint(&mut *tx, id).await? else {
            return Ok(None);
        };
        let enabled = patch.enabled.unwrap_or(before.enabled);
        let (reason, failing_since) = match (before.enabled, enabled) {
            // Switched off by an admin: say so.
            (true, false) => (Some("disabled by an admin".to_owned()), None),
            // Switched on: a clean slate.
            (false, true) => (None, None),
            _ => (before.disabled_reason.clone(), before.failing_since),
        };
        query(
            "UPDATE webhook_endpoints SET url = $2, events = $3, description = $4, enabled = $5, \
               disabled_reason = $6, failing_since = $7, updated_at = $8 WHERE id = $1",
        )
        .bind(id)
        .bind(patch.url.as_deref().unwrap_or(&before.url))
        .bind(EventType::join(
            patch.events.as_deref().unwrap_or(&before.events),
        ))
        .bind(patch.description.unwrap_or(before.description).as_deref())
        .bind(enabled)
        .bind(reason.as_deref())
        .bind(failing_since)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        insert_audit(&mut *tx, audit, now).await?;
        let after = load_endpoint(&mut *tx, id).await?;
        B::commit(tx).await?;
        Ok(after)
    }

    async fn delete_webhook(&self, id: &str, audit: AuditEntry, now: i64) -> StoreResult<bool> {
        let mut tx = self.backend.begin().await?;
        query("DELETE FROM webhook_deliveries WHERE endpoint_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let deleted = query("DELETE FROM webhook_endpoints WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if deleted == 0 {
            return Ok(false);
        }
        insert_audit(&mut *tx, audit, now).await?;
        B::commit(tx).await?;
        Ok(true)
    }

    async fn set_webhook_secret(
        &self,
        id: &str,
        secret_sealed: &str,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<bool> {
        let mut tx = self.backend.begin().await?;
        let changed =
            query("UPDATE webhook_endpoints SET secret_sealed = $2, updated_at = $3 WHERE id = $1")
                .bind(id)
                .bind(secret_sealed)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        if changed == 0 {
            return Ok(false);
        }
        insert_audit(&mut *tx, audit, now).await?;
        B::commit(tx).await?;
        Ok(true)
    }

    async fn webhook_deliveries(
        &self,
        endpoint_id: &str,
        before: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<WebhookDelivery>> {
        static LIST: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d \
                 JOIN webhook_events ev ON ev.id = d.event_id \
                 WHERE d.endpoint_id = $1 AND ($2 IS NULL OR d.event_id < $2) \
                 ORDER BY d.event_id DESC LIMIT $3"
            )
        });
        let rows: Vec<DeliveryRow> = query(&LIST)
            .bind(endpoint_id)
            .bind(before)
            .bind(limit)
            .fetch_all(&mut self.backend.reader())
            .await?;
        rows.into_iter().map(WebhookDelivery::try_from).collect()
    }

    async fn redeliver_webhook(
        &self,
        endpoint_id: &str,
        event_id: &str,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<RedeliverOutcome> {
        static ONE: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d \
                 JOIN webhook_events ev ON ev.id = d.event_id \
                 WHERE d.endpoint_id = $1 AND d.event_id = $2"
            )
        });
        let mut tx = self.backend.begin().await?;
        let requeued = query(
            "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = $3, \
               lease_token = NULL \
             WHERE endpoint_id = $1 AND event_id = $2 AND status <> 'pending'",
        )
        .bind(endpoint_id)
        .bind(event_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let row: Option<DeliveryRow> = query(&ONE)
            .bind(endpoint_id)
            .bind(event_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(RedeliverOutcome::NotFound);
        };
        if requeued == 0 {
            return Ok(RedeliverOutcome::Pending);
        }
        insert_audit(&mut *tx, audit, now).await?;
        B::commit(tx).await?;
        Ok(RedeliverOutcome::Queued(row.try_into()?))
    }

    async fn claim_due_webhooks(
        &self,
        lease: &LeaseToken,
        now: i64,
        lease_secs: i64,
        limit: i64,
    ) -> StoreResult<Vec<DueWebhook>> {
        // A look on a reader first: an idle queue costs no turn of SQLite's writer.
        let due: Option<(String,)> = query(
            "SELECT event_id FROM webhook_deliveries \
             WHERE status = 'pending' AND next_attempt_at <= $1 \
               AND endpoint_id IN (SELECT id FROM webhook_endpoints WHERE enabled = TRUE) LIMIT 1",
        )
        .bind(now)
        .fetch_optional(&mut self.backend.reader())
        .await?;
        if due.is_none() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "UPDATE webhook_deliveries SET next_attempt_at = $2, lease_token = $4 \
             WHERE (endpoint_id, event_id) IN ( \
               SELECT endpoint_id, event_id FROM webhook_deliveries \
               WHERE status = 'pending' AND next_attempt_at <= $1 \
                 AND endpoint_id IN (SELECT id FROM webhook_endpoints WHERE enabled = TRUE) \
               ORDER BY next_attempt_at LIMIT $3 {lock}) \
             RETURNING endpoint_id, event_id",
            lock = B::CLAIM_LOCK
        );
        let claimed: Vec<(String, String)> = query(&sql)
            .bind(now)
            .bind(now + lease_secs)
            .bind(limit)
            .bind(lease.as_str())
            .fetch_all(&mut *self.backend.write().await?)
            .await?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let pairs = (0..claimed.len())
            .map(|i| format!("({})", placeholders(2 * i + 1, 2)))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT d.endpoint_id, d.event_id, e.url, e.secret_sealed, ev.payload, d.attempts, \
               d.created_at \
             FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id \
               JOIN webhook_events ev ON ev.id = d.event_id \
             WHERE (d.endpoint_id, d.event_id) IN (VALUES {pairs})"
        );
        let select = claimed
            .iter()
            .fold(Query::owned(sql), |q, (endpoint, event)| {
                q.bind(endpoint.as_str()).bind(event.as_str())
            });
        select.fetch_all(&mut self.backend.reader()).await
    }

    async fn renew_webhook_lease(
        &self,
        lease: &LeaseToken,
        until: i64,
    ) -> StoreResult<Vec<(String, String)>> {
        query(
            "UPDATE webhook_deliveries SET next_attempt_at = $2 \
             WHERE lease_token = $1 AND status = 'pending' RETURNING endpoint_id, event_id",
        )
        .bind(lease.as_str())
        .bind(until)
        .fetch_all(&mut *self.backend.write().await?)
        .await
    }

    async fn finish_webhooks(
        &self,
        lease: &LeaseToken,
        outcomes: &[((String, String), WebhookResult)],
        disable_after: i64,
        now: i64,
    ) -> StoreResult<()> {
        let mut tx = self.backend.begin().await?;
        for ((endpoint, event), result) in outcomes {
            let (status, code, error) = match result {
                WebhookResult::Delivered { status } => ("delivered", Some(*status), None),
                WebhookResult::Retry { status, error, .. } => ("pending", *status, Some(error)),
                WebhookResult::Failed { status, error } => ("failed", *status, Some(error)),
            };
            let next = match result {
                WebhookResult::Retry {
                    next_attempt_at, ..
                } => *next_attempt_at,
                _ => now,
            };
            let changed = query(
                "UPDATE webhook_deliveries SET status = $3, attempts = attempts + 1, \
                   next_attempt_at = $4, last_status = $5, last_error = $6, \
                   delivered_at = CASE WHEN $3 = 'delivered' THEN $7 ELSE delivered_at END, \
                   lease_token = NULL \
                 WHERE endpoint_id = $1 AND event_id = $2 AND status = 'pending' \
                   AND lease_token = $8",
            )
            .bind(endpoint)
            .bind(event)
            .bind(status)
            .bind(next)
            .bind(code)
            .bind(error.map(String::as_str))
            .bind(now)
            .bind(lease.as_str())
            .execute(&mut *tx)
            .await?;
            if changed == 0 {
                continue;
            }
            match error {
                None => {
                    query(
                        "UPDATE webhook_endpoints SET failing_since = NULL \
                         WHERE id = $1 AND failing_since IS NOT NULL",
                    )
                    .bind(endpoint)
                    .execute(&mut *tx)
                    .await?;
                }
                Some(error) => note_failure(&mut *tx, endpoint, error, disable_after, now).await?,
            }
        }
        B::commit(tx).await
    }

    async fn webhook_counts(&self) -> StoreResult<WebhookCounts> {
        let rows: Vec<(String, i64)> =
            query("SELECT status, COUNT(*) FROM webhook_deliveries GROUP BY status")
                .fetch_all(&mut self.backend.reader())
                .await?;
        let mut counts = WebhookCounts::default();
        for (status, count) in rows {
            match delivery_status("counts", &status)? {
                DeliveryStatus::Pending => counts.pending = count,
                DeliveryStatus::Delivered => counts.delivered = count,
                DeliveryStatus::Failed => counts.failed = count,
            }
        }
        Ok(counts)
    }
}

/// Starts or extends the endpoint's failure streak, and disables it (with an
/// audit row) once the streak is `disable_after` seconds long.
async fn note_failure(
    db: &mut impl Executor,
    endpoint: &str,
    error: &str,
    disable_after: i64,
    now: i64,
) -> StoreResult<()> {
    query("UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, $2) WHERE id = $1")
        .bind(endpoint)
        .bind(now)
        .execute(db)
        .await?;
    let streak: Option<(i64,)> = query(
        "SELECT failing_since FROM webhook_endpoints \
         WHERE id = $1 AND enabled = TRUE AND failing_since <= $2",
    )
    .bind(endpoint)
    .bind(now - disable_after)
    .fetch_optional(db)
    .await?;
    let Some((since,)) = streak else {
        return Ok(());
    };
    let reason = format!(
        "every delivery attempt has failed since {}; the last: {error}",
        rfc3339(since)
    );
    query(
        "UPDATE webhook_endpoints SET enabled = FALSE, disabled_reason = $2, updated_at = $3 \
         WHERE id = $1",
    )
    .bind(endpoint)
    .bind(&reason)
    .bind(now)
    .execute(db)
    .await?;
    let audit = AuditEntry::new("webhook.disabled")
        .target(endpoint)
        .details(json!({ "reason": reason }));
    insert_audit(db, audit, now).await
}
