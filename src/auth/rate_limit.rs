//! Fixed-window rate limits counted in the database, so that several instances
//! on one Postgres share them. One upsert per check, covering every bucket the
//! request counts against; a per-instance limiter (e.g. `governor`) would be
//! faster but lets N instances allow N times the limit.

use std::net::IpAddr;

use super::{AuthError, AuthService, now};
use crate::domain::Email;

impl AuthService {
    /// Counts a sign-in attempt against the client's IP (if known) and, if given,
    /// the address; refuses with the time until the tighter window resets.
    pub(crate) async fn check_rate_limits(
        &self,
        ip: Option<IpAddr>,
        email: Option<&Email>,
    ) -> Result<(), AuthError> {
        let limits = &self.settings.rate_limits;
        let mut buckets: Vec<(String, u32)> = Vec::with_capacity(2);
        if let Some(ip) = ip {
            buckets.push((format!("ip:{ip}"), limits.per_ip));
        }
        if let Some(email) = email {
            buckets.push((format!("email:{email}"), limits.per_email));
        }
        if buckets.is_empty() {
            return Ok(());
        }
        let window = limits.window.as_secs() as i64;
        let now = now();
        let names: Vec<&str> = buckets.iter().map(|(name, _)| name.as_str()).collect();
        let states = self.store.hit_rate_limits(&names, window, now).await?;
        // Every bucket is counted even when one is already over its limit, as
        // before; the refusal names the latest reset among the exceeded windows,
        // since the request stays refused until all of them have reset.
        let retry_at = buckets
            .iter()
            .zip(&states)
            .filter(|((_, limit), state)| state.count > i64::from(*limit))
            .map(|(_, state)| state.resets_at)
            .max();
        match retry_at {
            Some(resets_at) => Err(AuthError::RateLimited {
                retry_after_secs: (resets_at - now).max(1) as u64,
            }),
            None => Ok(()),
        }
    }
}
