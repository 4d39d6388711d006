//! Persistence: every operation of the service, written once over SQLite and
//! Postgres; the backend is chosen once, from the database URL's scheme, at
//! start-up.
//!
//! How it reads:
//! - one module per area holds its trait and its operations, each a method that
//!   reads top to bottom (its SQL, its transaction, its audit row):
//!   `sign_in.rs`, `sessions.rs`, `members.rs`, `roles.rs`, `roster.rs`,
//!   `api_keys.rs`, `audit.rs`, `outbox.rs`, `signing_keys.rs`, `console.rs` (the
//!   admin console's counts and staged uploads), `webhooks.rs` (endpoints, the
//!   events changes write, their deliveries), `housekeeping.rs` (what has
//!   served its purpose and is deleted);
//! - `schema.rs` holds the rules every query shares (an active member, a live
//!   session, a grant in force, an address that may sign in) and the member
//!   row with its column list; `sql.rs` runs a statement on either backend;
//! - `backend.rs` is the seam: [`SqlStore`] over a `Backend` that supplies
//!   transactions and the named hooks where the dialects differ, implemented
//!   in `sqlite/` (one writer, scripts, group commit) and `postgres/`
//!   (statements of CTEs, coalesced lookups, change notices);
//! - `cache.rs` is a decorator in front of either.
//!
//! Times are unix seconds (`i64`) and ids are UUID text on both backends.

mod api_keys;
mod audit;
mod backend;
mod batching;
mod cache;
mod console;
mod devices;
mod error;
mod housekeeping;
mod members;
mod outbox;
mod postgres;
mod roles;
mod roster;
mod schema;
mod sessions;
mod sign_in;
mod signing_keys;
mod spans;
mod sql;
mod sqlite;
mod types;
mod webhooks;

use std::sync::Arc;

pub use api_keys::{ApiKeyInfo, ApiKeyRecord, ApiKeyStore, NewApiKey};
pub use audit::{AuditFilter, AuditRow, AuditStore};
pub use backend::{Backend, SqlStore};
pub use cache::{CachedStore, Freshness};
pub use console::{ConsoleStore, Overview, STAGED_UPLOAD_TTL_SECS, StagedUpload};
pub use devices::{DeviceStore, LinkRequestState, SessionInfo};
pub use error::{StoreError, StoreResult};
pub use housekeeping::{HousekeepingStore, Prunable, PruneOutcome, PruneReport, Retention};
pub use members::{MemberFilter, MemberStore, RoleGrant};
pub use outbox::OutboxStore;
pub use postgres::{HOUSEKEEPING_LOCK, Postgres, PostgresStore};
pub use roles::{RoleInfo, RoleStore};
pub use roster::{
    BatchRow, EligibleFilter, EligibleRow, IMPORT_CHUNK, ImportChunk, ImportTotals, RosterImport,
    RosterStore,
};
pub use sessions::SessionStore;
pub use sign_in::SignInStore;
pub use signing_keys::{NewSigningKey, SigningKeyRow, SigningKeyStore};
pub use sqlite::{Sqlite, SqliteStore};
pub use types::*;
pub use webhooks::{
    DeliveryStatus, DueWebhook, NewWebhook, RedeliverOutcome, WebhookCounts, WebhookDelivery,
    WebhookEndpoint, WebhookPatch, WebhookResult, WebhookStore,
};

use crate::config::DatabaseUrl;
use sql::query;

pub type DynStore = Arc<dyn Store>;

/// Every operation of the service: the areas' traits, plus what concerns the
/// database as a whole.
#[async_trait::async_trait]
pub trait Store:
    SignInStore
    + SessionStore
    + MemberStore
    + RoleStore
    + RosterStore
    + ApiKeyStore
    + AuditStore
    + OutboxStore
    + SigningKeyStore
    + ConsoleStore
    + WebhookStore
    + DeviceStore
    + HousekeepingStore
    + Send
    + Sync
    + 'static
{
    /// Applies pending migrations (safe to call from several instances at once).
    async fn migrate(&self) -> StoreResult<()>;

    /// A cheap round trip, for readiness checks.
    async fn ping(&self) -> StoreResult<()>;

    /// This process's connection pools, for the metrics (no I/O).
    fn pool_stats(&self) -> Vec<crate::metrics::PoolStats>;
}

#[async_trait::async_trait]
impl<B: Backend> Store for SqlStore<B> {
    async fn migrate(&self) -> StoreResult<()> {
        self.backend.migrate().await
    }

    async fn ping(&self) -> StoreResult<()> {
        query("SELECT 1")
            .execute(&mut self.backend.reader())
            .await?;
        Ok(())
    }

    fn pool_stats(&self) -> Vec<crate::metrics::PoolStats> {
        self.backend.pool_stats()
    }
}

/// Opens the store named by `url`, with the read cache in front.
pub async fn connect(url: &DatabaseUrl, max_connections: u32) -> StoreResult<DynStore> {
    let text = url.expose();
    if text.starts_with("sqlite:") {
        let sqlite: DynStore = Arc::new(SqliteStore::connect(text, max_connections).await?);
        Ok(Arc::new(CachedStore::new(sqlite, Freshness::local())))
    } else if text.starts_with("postgres:") || text.starts_with("postgresql:") {
        let postgres = PostgresStore::connect(text, max_connections).await?;
        let freshness = postgres.freshness();
        Ok(Arc::new(CachedStore::new(Arc::new(postgres), freshness)))
    } else {
        Err(StoreError::UnsupportedUrl(
            text.split(':').next().unwrap_or_default().to_owned(),
        ))
    }
}
