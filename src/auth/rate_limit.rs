//! Fixed-window rate limits counted in the database, so that several instances
//! on one Postgres share them. One upsert per check; a per-instance limiter
//! (e.g. `governor`) would be faster but lets N instances allow N times the limit.

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
        if let Some(ip) = ip {
            self.hit(&format!("ip:{ip}"), limits.per_ip).await?;
        }
        if let Some(email) = email {
            self.hit(&format!("email:{email}"), limits.per_email)
                .await?;
        }
        Ok(())
    }

    async fn hit(&self, bucket: &str, limit: u32) -> Result<(), AuthError> {
        let window = self.settings.rate_limits.window.as_secs() as i64;
        let now = now();
        let state = self.store.hit_rate_limit(bucket, window, now).await?;
        if state.count > i64::from(limit) {
            return Err(AuthError::RateLimited {
                retry_after_secs: (state.resets_at - now).max(1) as u64,
            });
        }
        Ok(())
    }
}
