//! Concurrent point reads folded into one query: the per-request checks on
//! Postgres (is this session live, what is this API key, is its member active?)
//! that every request makes, and that no instance may cache because another
//! may revoke.
//!
//! While one batch is at the database, new lookups queue; when it returns, one
//! task sends all of them as the next batch. A lone request goes straight
//! through (a batch of one), and under load the round trips (each a query plus
//! the sqlx pool's ping on release) are shared by everyone waiting. A lookup
//! queued after a revocation committed is answered by a query that starts later
//! still, so it sees the revocation: nothing is served stale.

use std::sync::{Arc, Mutex, PoisonError};

use futures_util::future::BoxFuture;
use tokio::sync::oneshot;

use super::{StoreError, StoreResult};

/// Lookups sent in one query at most.
const MAX_BATCH: usize = 256;

/// Answers a batch of keys, one answer per key, in order.
pub(super) type Fetch<K, V> =
    Box<dyn Fn(Vec<K>) -> BoxFuture<'static, StoreResult<Vec<V>>> + Send + Sync>;

pub(super) struct Coalescer<K, V> {
    fetch: Fetch<K, V>,
    state: Mutex<State<K, V>>,
}

struct State<K, V> {
    waiting: Vec<(K, oneshot::Sender<Result<V, String>>)>,
    /// A task is sending batches and will take whatever is waiting.
    fetching: bool,
}

impl<K: Send + 'static, V: Send + 'static> Coalescer<K, V> {
    pub fn new(fetch: Fetch<K, V>) -> Arc<Self> {
        Arc::new(Self {
            fetch,
            state: Mutex::new(State {
                waiting: Vec::new(),
                fetching: false,
            }),
        })
    }

    pub async fn get(self: &Arc<Self>, key: K) -> StoreResult<V> {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.waiting.push((key, reply));
            !std::mem::replace(&mut state.fetching, true)
        };
        if start {
            // On a task of its own, so that a cancelled request cannot strand the
            // lookups that joined its batch.
            tokio::spawn(self.clone().run());
        }
        match answer.await {
            Ok(answer) => answer.map_err(StoreError::Unavailable),
            Err(_) => Err(StoreError::Unavailable("the lookup was abandoned".into())),
        }
    }

    async fn run(self: Arc<Self>) {
        loop {
            let batch = {
                let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                if state.waiting.is_empty() {
                    state.fetching = false;
                    return;
                }
                let take = state.waiting.len().min(MAX_BATCH);
                state.waiting.drain(..take).collect::<Vec<_>>()
            };
            let (keys, replies): (Vec<K>, Vec<_>) = batch.into_iter().unzip();
            let expected = keys.len();
            match (self.fetch)(keys).await {
                Ok(answers) if answers.len() == expected => {
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        let _ = reply.send(Ok(answer));
                    }
                }
                outcome => {
                    let error = match outcome {
                        Err(error) => error.to_string(),
                        Ok(_) => "a batched lookup lost answers".to_owned(),
                    };
                    for reply in replies {
                        let _ = reply.send(Err(error.clone()));
                    }
                }
            }
        }
    }
}
