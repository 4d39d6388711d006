//! The allowlist's single-address and whole-batch removals. Imports are the
//! import module's (`crate::import`), which the API, CLI and console all call.

use super::{Actor, AdminError, AdminService};
use crate::domain::Email;

impl AdminService {
    /// Takes one address off the allowlist; a member it became stays a member.
    pub async fn remove_eligible(&self, actor: &Actor, email: &Email) -> Result<(), AdminError> {
        let audit = actor.audit("allowlist.removed").target(email.as_str());
        if self
            .store
            .remove_eligible(email, audit, self.clock.now())
            .await?
        {
            Ok(())
        } else {
            Err(AdminError::NotFound("address on the allowlist"))
        }
    }

    /// Withdraws an upload: removes its entries no one has claimed yet. The
    /// number removed.
    pub async fn withdraw_batch(&self, actor: &Actor, id: &str) -> Result<u64, AdminError> {
        let audit = actor.audit("batch.withdrawn").target(id);
        self.store
            .withdraw_batch(id, audit, self.clock.now())
            .await?
            .ok_or(AdminError::NotFound("batch"))
    }
}
