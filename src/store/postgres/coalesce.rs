//! Concurrent point reads folded into one query: the per-request checks on
//! Postgres (is this session live, what is this API key, is its member active?)
//! that the read cache (`cache.rs`) cannot answer: the first in each second, and
//! every one while the cache is off.
//!
//! While one batch is at the database, new lookups queue; when it returns, one
//! task sends all of them as the next batch. A lone request goes straight
//! through (a batch of one), and under load the round trips (each a query plus
//! the sqlx pool's ping on release) are shared by everyone waiting. A lookup
//! queued after a revocation committed is answered by a query that starts later
//! still, so it sees the revocation: nothing is served stale.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::store::StoreResult;
use crate::store::batching::{Reply, Waiting, answer_all, reply};

/// Lookups sent in one query at most.
const MAX_BATCH: usize = 256;

/// Answers a batch of keys, one answer per key, in order.
pub type Fetch<K, V> = Box<dyn Fn(Vec<K>) -> BoxFuture<'static, StoreResult<Vec<V>>> + Send + Sync>;

pub struct Coalescer<K, V> {
    fetch: Fetch<K, V>,
    waiting: Waiting<(K, Reply<V>)>,
}

impl<K: Send + 'static, V: Send + 'static> Coalescer<K, V> {
    pub fn new(fetch: Fetch<K, V>) -> Arc<Self> {
        Arc::new(Self {
            fetch,
            waiting: Waiting::default(),
        })
    }

    pub async fn get(self: &Arc<Self>, key: K) -> StoreResult<V> {
        let (reply, answer) = reply();
        if self.waiting.push((key, reply)) {
            tokio::spawn(self.clone().run());
        }
        answer.get().await
    }

    async fn run(self: Arc<Self>) {
        while let Some(batch) = self.waiting.take(MAX_BATCH) {
            let (keys, replies): (Vec<K>, Vec<_>) = batch.into_iter().unzip();
            answer_all(replies, (self.fetch)(keys).await);
        }
    }
}
