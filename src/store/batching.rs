//! Jobs waiting to be sent together, and whether a task is sending them: the
//! queue behind both Postgres' coalesced lookups (`postgres/coalesce.rs`) and
//! SQLite's group commit (`sqlite/writer.rs`).
//!
//! The first job to arrive while nobody sends starts a task that sends
//! batches until the queue is empty; jobs that arrive meanwhile join the next
//! batch. The sending runs on a task of its own, not on a caller, so that a
//! cancelled request cannot strand the jobs that joined its batch.

use std::sync::{Mutex, PoisonError};

use tokio::sync::oneshot;

use super::{StoreError, StoreResult};

pub struct Waiting<J> {
    state: Mutex<State<J>>,
}

struct State<J> {
    jobs: Vec<J>,
    /// A task is sending batches and will take whatever is waiting.
    sending: bool,
}

impl<J> Default for Waiting<J> {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                jobs: Vec::new(),
                sending: false,
            }),
        }
    }
}

impl<J> Waiting<J> {
    /// Queues `job`. True when no task is sending: the caller must start one.
    pub fn push(&self, job: J) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.jobs.push(job);
        !std::mem::replace(&mut state.sending, true)
    }

    /// Up to `max` waiting jobs, oldest first; `None` when none wait, and then
    /// the sending task must end (the next push starts another).
    pub fn take(&self, max: usize) -> Option<Vec<J>> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.jobs.is_empty() {
            state.sending = false;
            return None;
        }
        let take = state.jobs.len().min(max);
        Some(state.jobs.drain(..take).collect())
    }
}

/// Where one job's answer goes.
pub type Reply<V> = oneshot::Sender<StoreResult<V>>;

/// A reply and the answer to wait for.
pub fn reply<V>() -> (Reply<V>, Answer<V>) {
    let (reply, answer) = oneshot::channel();
    (reply, Answer(answer))
}

/// The answer to one queued job, once its batch is done.
pub struct Answer<V>(oneshot::Receiver<StoreResult<V>>);

impl<V> Answer<V> {
    pub async fn get(self) -> StoreResult<V> {
        self.0
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("the job was abandoned".into())))
    }
}

/// Answers each job of a batch with its own value, or every job with the
/// batch's error (the same, typed, for each).
pub fn answer_all<V>(replies: Vec<Reply<V>>, outcome: StoreResult<Vec<V>>) {
    match outcome {
        Ok(values) if values.len() == replies.len() => {
            for (reply, value) in replies.into_iter().zip(values) {
                let _ = reply.send(Ok(value));
            }
        }
        outcome => {
            let error = match outcome {
                Err(error) => error,
                Ok(_) => StoreError::Corrupt("a batch lost answers".into()),
            };
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}
