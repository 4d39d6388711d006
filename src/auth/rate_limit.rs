//! Fixed-window rate limits counted in the database, so that several instances
//! on one Postgres share them. One upsert per check, covering every bucket the
//! request counts against; a per-instance limiter (e.g. `governor`) would be
//! faster but lets N instances allow N times the limit.

use std::net::IpAddr;
use std::sync::Arc;

use super::AuthError;
use crate::clock::Clock;
use crate::config::RateLimitSettings;
use crate::domain::Email;
use crate::metrics::{Metrics, RateLimit};
use crate::store::DynStore;

#[derive(Clone)]
pub struct RateLimiter {
    store: DynStore,
    clock: Clock,
    limits: RateLimitSettings,
    metrics: Arc<Metrics>,
}

impl RateLimiter {
    pub fn new(store: DynStore, clock: Clock, limits: RateLimitSettings) -> Self {
        Self {
            store,
            clock,
            limits,
            metrics: Arc::default(),
        }
    }

    pub(super) fn set_metrics(&mut self, metrics: Arc<Metrics>) {
        self.metrics = metrics;
    }

    fn window_secs(&self) -> i64 {
        self.limits.window.as_secs() as i64
    }

    /// Counts a sign-in attempt against the client's IP (if known) and, if given,
    /// the address; refuses with the time until the tighter window resets.
    pub async fn check(&self, ip: Option<IpAddr>, email: Option<&Email>) -> Result<(), AuthError> {
        let mut buckets: Vec<(String, u32, RateLimit)> = Vec::with_capacity(2);
        if let Some(ip) = ip {
            buckets.push((format!("ip:{ip}"), self.limits.per_ip, RateLimit::Ip));
        }
        if let Some(email) = email {
            buckets.push((
                format!("email:{email}"),
                self.limits.per_email,
                RateLimit::Email,
            ));
        }
        if buckets.is_empty() {
            return Ok(());
        }
        let now = self.clock.now();
        let names: Vec<&str> = buckets.iter().map(|(name, ..)| name.as_str()).collect();
        let states = self
            .store
            .hit_rate_limits(&names, self.window_secs(), now)
            .await?;
        // Every bucket is counted even when one is already over its limit, as
        // before; the refusal names the latest reset among the exceeded windows,
        // since the request stays refused until all of them have reset.
        let retry_at = buckets
            .iter()
            .zip(&states)
            .filter(|((_, limit, _), state)| state.count > i64::from(*limit))
            .inspect(|((.., which), _)| self.metrics.auth().rate_limited(*which))
            .map(|(_, state)| state.resets_at)
            .max();
        match retry_at {
            Some(resets_at) => Err(AuthError::RateLimited {
                retry_after_secs: (resets_at - now).max(1) as u64,
            }),
            None => Ok(()),
        }
    }

    /// Refuses, without counting, while `bucket` holds the per-IP limit of
    /// failures: the caller then skips work that failures must not buy (Argon2).
    pub async fn refuse_if_exhausted(&self, bucket: &str) -> Result<(), AuthError> {
        let window = self.window_secs();
        let hits = self
            .store
            .rate_limit_hits(bucket, window, self.clock.now())
            .await?;
        if hits >= i64::from(self.limits.per_ip) {
            self.metrics.auth().rate_limited(RateLimit::ApiKeyFailures);
            return Err(AuthError::RateLimited {
                retry_after_secs: window.max(1) as u64,
            });
        }
        Ok(())
    }

    /// Counts one failure in `bucket`; refuses once it is over the per-IP limit.
    pub async fn count_failure(&self, bucket: &str) -> Result<(), AuthError> {
        let now = self.clock.now();
        let state = self
            .store
            .hit_rate_limit(bucket, self.window_secs(), now)
            .await?;
        if state.count > i64::from(self.limits.per_ip) {
            self.metrics.auth().rate_limited(RateLimit::ApiKeyFailures);
            return Err(AuthError::RateLimited {
                retry_after_secs: (state.resets_at - now).max(1) as u64,
            });
        }
        Ok(())
    }
}
