//! Hears about changes other Postgres clients commit to sessions, members,
//! roles, API keys and signing keys, so that this instance's read cache
//! (`cache.rs`) drops what they made stale and its signing keys are reloaded.
//!
//! The notices come from triggers on those tables
//! (`migrations/postgres/0004_change_notices.sql`), so no writer can forget to
//! send one, whether another instance or an operator at a psql prompt. Postgres
//! delivers a notice only once its transaction commits, to every session then
//! listening. A listening connection that drops loses the notices sent meanwhile,
//! so the cache is off from the moment the connection fails until it listens
//! again, and everything cached before is dropped.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::task::JoinHandle;

use crate::store::cache::Freshness;

/// The channel the triggers notify.
const CHANNEL: &str = "gatehouse_auth_changed";

/// The payload of a notice about the signing keys
/// (`migrations/postgres/0006_signing_keys.sql`); other notices have none.
const SIGNING_KEYS: &str = "signing_keys";

/// Waits between attempts to listen again: from the first to the longest.
const FIRST_RETRY: Duration = Duration::from_millis(200);
const LONGEST_RETRY: Duration = Duration::from_secs(10);

/// How long one attempt to connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The listening task; it stops when this is dropped with its store.
pub struct ChangeNotices(JoinHandle<()>);

impl Drop for ChangeNotices {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl ChangeNotices {
    /// Starts listening on a connection of its own, reporting to `freshness`.
    pub fn start(options: PgConnectOptions, freshness: Arc<Freshness>) -> Self {
        Self(tokio::spawn(listen(options, freshness)))
    }
}

async fn listen(options: PgConnectOptions, freshness: Arc<Freshness>) {
    // A pool of one, as `PgListener` takes its connection from a pool.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .acquire_timeout(CONNECT_TIMEOUT)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_lazy_with(options.application_name("gatehouse-notices"));
    let mut retry = FIRST_RETRY;
    loop {
        match subscribe(&pool).await {
            Ok(mut listener) => {
                freshness.watching(true);
                retry = FIRST_RETRY;
                let ended = loop {
                    match listener.try_recv().await {
                        Ok(Some(notice)) => {
                            freshness.changed();
                            if notice.payload() == SIGNING_KEYS {
                                freshness.signing_keys_changed();
                            }
                        }
                        Ok(None) => break "connection lost".to_owned(),
                        Err(error) => break error.to_string(),
                    }
                };
                freshness.watching(false);
                tracing::warn!(
                    error = %ended,
                    "stopped hearing about other instances' changes; the auth cache is off until listening again"
                );
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?retry, "cannot listen for other instances' changes");
            }
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(LONGEST_RETRY);
    }
}

/// A listener whose `LISTEN` has been acknowledged: every notice committed from
/// now on reaches it. It does not reconnect by itself, so that a lost connection
/// is reported (and the cache turned off) before anything else happens.
async fn subscribe(pool: &sqlx::PgPool) -> sqlx::Result<PgListener> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.ignore_pool_close_event(true);
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}
