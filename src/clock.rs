//! The one clock: unix seconds, as every stored time is kept.

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}
