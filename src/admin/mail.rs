//! Mail that needs a person: sending a failed mail again.

use super::{Actor, AdminError, AdminService};
use crate::store::{OutboxEntry, RequeueOutcome};

impl AdminService {
    /// Queues a failed mail again, due now, with a fresh budget of attempts,
    /// and wakes the worker.
    pub async fn retry_mail(&self, actor: &Actor, id: &str) -> Result<OutboxEntry, AdminError> {
        let audit = actor.audit("outbox.retry").target(id);
        match self
            .store
            .requeue_failed_mail(id, audit, self.clock.now())
            .await?
        {
            RequeueOutcome::Requeued(entry) => {
                self.mail_wake.notify_one();
                Ok(entry)
            }
            RequeueOutcome::NotFound => Err(AdminError::NotFound("mail")),
            RequeueOutcome::NotFailed(status) => Err(AdminError::MailNotFailed(status)),
        }
    }
}
