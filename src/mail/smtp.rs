//! SMTP through lettre, from one URL:
//!
//! - `smtp://host:25` — plain (a local relay);
//! - `smtp://user:pass@host:587?tls=required` — STARTTLS, refused if the server
//!   does not offer it (`?tls=opportunistic` upgrades only when offered);
//! - `smtps://user:pass@host:465` — implicit TLS.
//!
//! Credentials in the URL are percent-decoded and enable AUTH. Connections are
//! pooled (lettre's `pool` feature), so a burst of sign-in mail reuses a few
//! sessions rather than paying a TCP and TLS handshake per message.
//!
//! Timeouts: lettre 0.11's async client applies its `timeout` to connecting
//! only, not to SMTP replies, so a server that stalls after `DATA` would hold
//! the attempt forever. Each send is therefore bounded here as a whole.

use std::sync::RwLock;
use std::time::Duration;

use async_trait::async_trait;
use lettre::transport::smtp::{AsyncSmtpTransportBuilder, PoolConfig};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::{DeliveryError, MailError, OutgoingMail, Transport};

/// At most this many open sessions; the worker sends no more mail at once.
const POOL_SIZE: u32 = super::worker::CONCURRENCY as u32;
/// An idle pooled session is closed after this long, before servers drop it.
const POOL_IDLE: Duration = Duration::from_secs(60);

pub struct SmtpTransport {
    /// Replaced after a timeout (see [`SmtpTransport::send`]).
    inner: RwLock<AsyncSmtpTransport<Tokio1Executor>>,
    builder: AsyncSmtpTransportBuilder,
    timeout: Duration,
}

impl SmtpTransport {
    /// `timeout` bounds connecting and the sending of each message. Must be
    /// called inside a tokio runtime: the pool starts a task that closes idle
    /// connections.
    pub fn from_url(url: &str, timeout: Duration) -> Result<Self, MailError> {
        // lettre's message echoes the URL, which may hold a password.
        let builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|_| {
                MailError::Setup(
                    "smtp_url must look like smtp://[user:pass@]host[:port][?tls=required] \
                     or smtps://[user:pass@]host[:port]"
                        .into(),
                )
            })?
            .timeout(Some(timeout))
            .pool_config(
                PoolConfig::new()
                    .max_size(POOL_SIZE)
                    .idle_timeout(POOL_IDLE),
            );
        Ok(Self {
            inner: RwLock::new(builder.clone().build()),
            builder,
            timeout,
        })
    }

    fn transport(&self) -> AsyncSmtpTransport<Tokio1Executor> {
        match self.inner.read() {
            Ok(inner) => inner.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
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
        let transport = self.transport();
        match tokio::time::timeout(self.timeout, transport.send(message)).await {
            Ok(sent) => sent.map(drop).map_err(classify),
            Err(_) => {
                // The session was cut mid-command; lettre would put it back in
                // its pool out of step with the server. A fresh pool it is: the
                // old one closes its connections once the last user drops it.
                let fresh = self.builder.clone().build();
                match self.inner.write() {
                    Ok(mut inner) => *inner = fresh,
                    Err(poisoned) => *poisoned.into_inner() = fresh,
                }
                Err(DeliveryError::Transient {
                    reason: format!("SMTP server did not answer within {:?}", self.timeout),
                    retry_after: None,
                })
            }
        }
    }

    /// Connects, greets and sends `NOOP`, as a delivery would start.
    async fn probe(&self) -> Result<String, String> {
        match tokio::time::timeout(self.timeout, self.transport().test_connection()).await {
            Ok(Ok(true)) => Ok("smtp: the server answered".into()),
            Ok(Ok(false)) => Err("the SMTP server did not accept NOOP".into()),
            // lettre's errors name the server, never the URL's password.
            Ok(Err(error)) => Err(format!("cannot reach the SMTP server: {error}")),
            Err(_) => Err(format!(
                "the SMTP server did not answer within {:?}",
                self.timeout
            )),
        }
    }
}

/// A 5xx reply, or a client-side refusal (no common AUTH mechanism, STARTTLS
/// missing, 8-bit content the server cannot take), will fail the same way
/// again: permanent. Everything else — 4xx replies, refused or dropped
/// connections, timeouts, TLS handshakes — may pass later: transient.
///
/// lettre's `is_transient()` is true only for 4xx replies and `is_permanent()`
/// only for 5xx, so a network error is neither; it must land on the retry side.
fn classify(error: lettre::transport::smtp::Error) -> DeliveryError {
    if error.is_permanent() || error.is_client() {
        DeliveryError::Permanent(error.to_string())
    } else {
        DeliveryError::Transient {
            reason: error.to_string(),
            retry_after: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail() -> OutgoingMail {
        OutgoingMail {
            id: "1".into(),
            from: "club@example.org".parse().unwrap(),
            to: "ada@example.org".parse().unwrap(),
            subject: "Hi".into(),
            text: "text".into(),
            html: "<p>html</p>".into(),
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_transient() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let transport =
            SmtpTransport::from_url(&format!("smtp://127.0.0.1:{port}"), Duration::from_secs(5))
                .unwrap();
        let error = transport.send(&mail()).await.unwrap_err();
        assert!(
            matches!(error, DeliveryError::Transient { .. }),
            "{error:?}"
        );
    }

    /// A tokio test: lettre's pool starts its reaper task when built.
    #[tokio::test]
    async fn urls_choose_tls_and_bad_ones_do_not_leak_the_password() {
        let timeout = Duration::from_secs(1);
        for url in [
            "smtp://relay.example.org",
            "smtp://user:p%40ss@relay.example.org:587?tls=required",
            "smtps://user:pass@relay.example.org",
        ] {
            assert!(SmtpTransport::from_url(url, timeout).is_ok(), "{url}");
        }
        let Err(error) = SmtpTransport::from_url("smtpx://user:hunter2@relay", timeout) else {
            panic!("an unknown scheme is refused");
        };
        assert!(!error.to_string().contains("hunter2"));
    }
}
