//! The one clock, handed to every service that reads the time, so that tests
//! can move it instead of sleeping until something expires.
//!
//! Times are unix seconds, as every stored time is kept. A clock is the system
//! clock plus an offset that only tests change; the offset is shared by every
//! clone, so moving the clock a test holds moves the application's clock too.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct Clock {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    offset_ms: AtomicI64,
    /// Bumped whenever the clock is moved, so a worker waiting for something to
    /// come due looks again at once instead of at its next poll.
    moved: watch::Sender<()>,
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl Clock {
    /// The system clock, unmoved until someone calls [`Clock::advance`] or [`Clock::set`].
    pub fn system() -> Self {
        Self {
            inner: Arc::new(Inner {
                offset_ms: AtomicI64::new(0),
                moved: watch::Sender::new(()),
            }),
        }
    }

    /// Unix seconds.
    pub fn now(&self) -> i64 {
        self.now_millis().div_euclid(1000)
    }

    /// Unix milliseconds, for measuring durations finer than the stored seconds.
    pub fn now_millis(&self) -> i64 {
        chrono::Utc::now().timestamp_millis() + self.inner.offset_ms.load(Ordering::Relaxed)
    }

    /// Moves the clock forward by `by` (tests: expire a link without waiting).
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.inner.offset_ms.fetch_add(by, Ordering::Relaxed);
        self.inner.moved.send_replace(());
    }

    /// Moves the clock so that it reads `unix_secs` now; it keeps ticking from there.
    pub fn set(&self, unix_secs: i64) {
        let offset = unix_secs * 1000 - chrono::Utc::now().timestamp_millis();
        self.inner.offset_ms.store(offset, Ordering::Relaxed);
        self.inner.moved.send_replace(());
    }

    /// Changes each time the clock is moved; the system clock's ticking is not a move.
    pub fn moves(&self) -> watch::Receiver<()> {
        self.inner.moved.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_moves() {
        let clock = Clock::system();
        let twin = clock.clone();
        let before = twin.now();
        clock.advance(Duration::from_secs(3600));
        assert!(twin.now() >= before + 3600);
        assert!(twin.now() < before + 3600 + 5);
        clock.set(1_000_000);
        assert!((1_000_000..1_000_005).contains(&twin.now()));
    }

    #[test]
    fn a_move_is_announced() {
        let clock = Clock::system();
        let moves = clock.moves();
        assert!(!moves.has_changed().unwrap());
        clock.advance(Duration::from_secs(1));
        assert!(moves.has_changed().unwrap());
    }
}
