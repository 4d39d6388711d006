//! SMTP through lettre: plain, STARTTLS (`?tls=required`) or implicit TLS
//! (`smtps://`), with authentication and pooled connections, from one URL.

use std::time::Duration;

use async_trait::async_trait;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::{DeliveryError, MailError, OutgoingMail, Transport};

/// How long one SMTP command may take before the attempt counts as failed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);

pub struct SmtpTransport {
    inner: AsyncSmtpTransport<Tokio1Executor>,
}

impl SmtpTransport {
    pub fn from_url(url: &str) -> Result<Self, MailError> {
        let inner = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| MailError::Setup(format!("smtp_url: {e}")))?
            .timeout(Some(COMMAND_TIMEOUT))
            .build();
        Ok(Self { inner })
    }
}

#[async_trait]
impl Transport for SmtpTransport {
    fn name(&self) -> &'static str {
        "smtp"
    }

    async fn send(&self, mail: &OutgoingMail) -> Result<(), DeliveryError> {
        let message = mail
            .to_message()
            .map_err(|e| DeliveryError::Permanent(e.to_string()))?;
        match self.inner.send(message).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(DeliveryError::Permanent(e.to_string())),
            Err(e) => Err(DeliveryError::Transient {
                reason: e.to_string(),
                retry_after: None,
            }),
        }
    }
}
