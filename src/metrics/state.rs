//! Gauges of state that is read, not counted: queues (shared by every instance,
//! read from the database at scrape time) and this process's database pools.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Items of one delivery queue in one state: the mail outbox now (`queued`,
/// `sent`, `failed`, `expired`); the webhook deliveries join with
/// `queue = "webhooks"` when they exist, read in the same scrape.
#[derive(Clone, Copy, Debug)]
pub struct QueueCount {
    pub queue: &'static str,
    pub state: &'static str,
    pub count: i64,
}

/// One connection pool of this process, as the store reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStats {
    /// A fixed name: `main` and `counters` on Postgres, `reader` and `writer` on SQLite.
    pub pool: &'static str,
    pub in_use: u32,
    pub idle: u32,
    pub max: u32,
    /// Callers waiting for a connection, where the pool can tell (SQLite's
    /// writer); sqlx's pools do not expose it.
    pub waiting: Option<u32>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: &'static str,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabels {
    pool: &'static str,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: &'static str,
}

#[derive(Default)]
pub struct StateGauges {
    /// Kept from before the queue family, for dashboards that use it.
    outbox_queued: Gauge,
    queues: Family<QueueLabels, Gauge>,
    connections: Family<ConnectionLabels, Gauge>,
    max: Family<PoolLabels, Gauge>,
    waiting: Family<PoolLabels, Gauge>,
}

impl StateGauges {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "outbox_queued",
            "Mails waiting in the outbox (read from the database at scrape time)",
            self.outbox_queued.clone(),
        );
        registry.register(
            "queue_items",
            "Items of each delivery queue by state (read from the database at scrape time; shared by all instances)",
            self.queues.clone(),
        );
        registry.register(
            "db_pool_connections",
            "This process's database connections, by pool and state (in_use, idle)",
            self.connections.clone(),
        );
        registry.register(
            "db_pool_max_connections",
            "The most connections each pool may open",
            self.max.clone(),
        );
        registry.register(
            "db_pool_waiting",
            "Callers waiting for a connection, for the pools that can tell",
            self.waiting.clone(),
        );
    }

    pub(super) fn set(&self, queues: &[QueueCount], pools: &[PoolStats]) {
        for q in queues {
            if q.queue == "outbox" && q.state == "queued" {
                self.outbox_queued.set(q.count);
            }
            self.queues
                .get_or_create(&QueueLabels {
                    queue: q.queue,
                    state: q.state,
                })
                .set(q.count);
        }
        for p in pools {
            let pool = p.pool;
            for (state, n) in [("in_use", p.in_use), ("idle", p.idle)] {
                self.connections
                    .get_or_create(&ConnectionLabels { pool, state })
                    .set(i64::from(n));
            }
            self.max
                .get_or_create(&PoolLabels { pool })
                .set(i64::from(p.max));
            if let Some(waiting) = p.waiting {
                self.waiting
                    .get_or_create(&PoolLabels { pool })
                    .set(i64::from(waiting));
            }
        }
    }
}
