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

use std::sync::{Arc, Mutex, PoisonError};

use futures_util::future::BoxFuture;
use tokio::sync::oneshot;

use super::{StoreError, StoreResult};

/// Lookups sent in one query at most.
const MAX_BATCH: usize = 256;

/// Answers a batch of keys, one answer per key, in order.
pub(super) type Fetch<K, V> =
    Box<dyn Fn(Vec<K>) -> BoxFuture<'static, StoreResult<Vec<V>>> + Send + Sync>;

/// Jobs waiting to be sent together, and whether a task is sending them: the
/// queue behind both [`Coalescer`] and SQLite's group commit
/// (`sqlite_writer.rs`).
pub(super) struct Waiting<K, V> {
    state: Mutex<State<K, V>>,
}

struct State<K, V> {
    jobs: Vec<(K, oneshot::Sender<Result<V, String>>)>,
    /// A task is sending batches and will take whatever is waiting.
    sending: bool,
}

/// The answer to one queued job, once its batch is done.
pub(super) struct Answer<V>(oneshot::Receiver<Result<V, String>>);

/// Where the answers of a batch's jobs go, in the jobs' order.
pub(super) struct Replies<V>(Vec<oneshot::Sender<Result<V, String>>>);

impl<K, V> Default for Waiting<K, V> {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                jobs: Vec::new(),
                sending: false,
            }),
        }
    }
}

impl<K, V> Waiting<K, V> {
    /// Queues `job`. True when no task is sending: the caller must start one,
    /// on a task of its own, so that a cancelled request cannot strand the jobs
    /// that joined its batch.
    pub fn push(&self, job: K) -> (Answer<V>, bool) {
        let (reply, answer) = oneshot::channel();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.jobs.push((job, reply));
        let start = !std::mem::replace(&mut state.sending, true);
        (Answer(answer), start)
    }

    /// Up to `max` waiting jobs, oldest first; `None` when none wait, and then
    /// the sending task must end (the next push starts another).
    pub fn take(&self, max: usize) -> Option<(Vec<K>, Replies<V>)> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.jobs.is_empty() {
            state.sending = false;
            return None;
        }
        let take = state.jobs.len().min(max);
        let (jobs, replies) = state.jobs.drain(..take).unzip();
        Some((jobs, Replies(replies)))
    }
}

impl<V> Answer<V> {
    pub async fn get(self) -> StoreResult<V> {
        match self.0.await {
            Ok(answer) => answer.map_err(StoreError::Unavailable),
            Err(_) => Err(StoreError::Unavailable("the job was abandoned".into())),
        }
    }
}

impl<V> Replies<V> {
    /// Answers every job: each with its own value, or all with the batch's error.
    pub fn send(self, outcome: StoreResult<Vec<V>>) {
        match outcome {
            Ok(answers) if answers.len() == self.0.len() => {
                for (reply, answer) in self.0.into_iter().zip(answers) {
                    let _ = reply.send(Ok(answer));
                }
            }
            outcome => {
                let error = match outcome {
                    Err(error) => error.to_string(),
                    Ok(_) => "a batch lost answers".to_owned(),
                };
                for reply in self.0 {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}

pub(super) struct Coalescer<K, V> {
    fetch: Fetch<K, V>,
    waiting: Waiting<K, V>,
}

impl<K: Send + 'static, V: Send + 'static> Coalescer<K, V> {
    pub fn new(fetch: Fetch<K, V>) -> Arc<Self> {
        Arc::new(Self {
            fetch,
            waiting: Waiting::default(),
        })
    }

    pub async fn get(self: &Arc<Self>, key: K) -> StoreResult<V> {
        let (answer, start) = self.waiting.push(key);
        if start {
            tokio::spawn(self.clone().run());
        }
        answer.get().await
    }

    async fn run(self: Arc<Self>) {
        while let Some((keys, replies)) = self.waiting.take(MAX_BATCH) {
            replies.send((self.fetch)(keys).await);
        }
    }
}
