//! Outgoing mail: composing from templates, the outbox worker, and transports.
//!
//! Mail is written to the outbox in the same transaction as the token it carries
//! and delivered by [`worker::OutboxWorker`]; a crash or a dead mail server loses
//! nothing. Bodies carry secrets (links, codes), so they are sealed at rest.

mod file;
mod http;
mod postmark;
mod resend;
mod seal;
mod smtp;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox, MultiPart, SinglePart};
use tokio::sync::Notify;

pub use file::FileTransport;
pub use http::{HttpTransport, Provider};
pub use postmark::Postmark;
pub use resend::Resend;
pub use seal::Sealer;
pub use smtp::SmtpTransport;

use crate::config::{MailSettings, MailTransportKind, Settings};
use crate::domain::Email;
use crate::store::{NewMail, OutboxMail};
use crate::templates::Templates;

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("template: {0}")]
    Template(#[from] minijinja::Error),
    #[error("sealed body: {0}")]
    Seal(String),
    #[error("building the message: {0}")]
    Build(String),
    #[error("transport setup: {0}")]
    Setup(String),
}

/// Why a delivery attempt failed, as the retry policy needs to know it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Worth retrying: connection refused, timeout, SMTP 4xx, HTTP 5xx or 429.
    #[error("transient: {reason}")]
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help: SMTP 5xx, HTTP 4xx other than 429.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// A mail ready for a transport.
#[derive(Debug, Clone)]
pub struct OutgoingMail {
    pub id: String,
    pub from: Mailbox,
    pub to: Mailbox,
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl OutgoingMail {
    /// The MIME message (text and HTML alternatives). lettre's typed headers
    /// encode every value, so no input can add a header line.
    pub fn to_message(&self) -> Result<lettre::Message, MailError> {
        lettre::Message::builder()
            .from(self.from.clone())
            .to(self.to.clone())
            .subject(self.subject.clone())
            .multipart(
                MultiPart::alternative()
                    .singlepart(part(ContentType::TEXT_PLAIN, &self.text))
                    .singlepart(part(ContentType::TEXT_HTML, &self.html)),
            )
            .map_err(|e| MailError::Build(e.to_string()))
    }
}

/// A body part, sent as plain 7-bit text whenever RFC 5322 allows it (ASCII,
/// lines under 998 bytes), so that a long sign-in link stays one unbroken,
/// copyable line even in a raw `.eml`. Anything else gets lettre's choice of
/// quoted-printable or base64.
fn part(content_type: ContentType, text: &str) -> SinglePart {
    let crlf = text.replace("\r\n", "\n").replace('\n', "\r\n");
    let plain_7bit =
        crlf.is_ascii() && !crlf.contains('\0') && crlf.split("\r\n").all(|line| line.len() < 998);
    let body = if plain_7bit {
        Body::dangerous_pre_encoded(crlf.into_bytes(), ContentTransferEncoding::SevenBit)
    } else {
        Body::new(text.to_owned())
    };
    SinglePart::builder().header(content_type).body(body)
}

#[async_trait]
pub trait Transport: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    async fn send(&self, mail: &OutgoingMail) -> Result<(), DeliveryError>;

    /// Tries the transport without sending anything (`gatehouse check`): what
    /// was tried, or why it failed. By default nothing can be tried: an HTTP
    /// provider has no request that is harmless and proves the key works.
    async fn probe(&self) -> Result<String, String> {
        Ok(format!("{}: configured (not contacted)", self.name()))
    }
}

/// Builds the transport the settings ask for.
pub fn transport_from_settings(settings: &Settings) -> Result<Arc<dyn Transport>, MailError> {
    let mail = &settings.mail;
    Ok(match mail.transport {
        MailTransportKind::File => Arc::new(FileTransport::new(settings.mail_dir())?),
        MailTransportKind::Smtp => {
            let url = mail
                .smtp_url
                .as_ref()
                .ok_or_else(|| MailError::Setup("smtp_url is required".into()))?;
            Arc::new(SmtpTransport::from_url(url.expose(), mail.timeout)?)
        }
        MailTransportKind::Postmark => Arc::new(HttpTransport::<Postmark>::new(mail)?),
        MailTransportKind::Resend => Arc::new(HttpTransport::<Resend>::new(mail)?),
    })
}

/// Composes mails from templates and seals their bodies for the outbox.
pub struct Mailer {
    templates: Arc<Templates>,
    sealer: Sealer,
    from: Mailbox,
    org_name: String,
    support_email: Option<Email>,
    wake: Arc<Notify>,
}

/// What a queued sign-in mail is made from: the variables, not the rendered text.
/// Sealed in the outbox row, they take ~200 bytes instead of ~4 KB of rendered
/// text and HTML, which kept every outbox row on a page of its own and made each
/// link request write (and each delivery rewrite) a full page. The bodies are
/// rendered at delivery, from the templates of that moment.
#[derive(serde::Serialize, serde::Deserialize)]
struct SignInContent {
    link: String,
    code: String,
    minutes: u64,
}

/// The `kind` of a sign-in mail in the outbox.
const SIGN_IN: &str = "sign_in";

impl Mailer {
    pub fn new(templates: Arc<Templates>, sealer: Sealer, settings: &MailSettings) -> Self {
        Self {
            templates,
            sealer,
            from: safe_mailbox(&settings.from),
            org_name: settings.org_name.clone(),
            support_email: settings.support_email.clone(),
            wake: Arc::new(Notify::new()),
        }
    }

    /// The sign-in mail carrying the link and the code; its subject is rendered
    /// now (the outbox shows it), its bodies at delivery ([`Self::open`]).
    pub fn sign_in_mail(
        &self,
        to: &Email,
        link: &str,
        code: &str,
        ttl: Duration,
        expires_at: i64,
        now: i64,
    ) -> Result<NewMail, MailError> {
        let content = SignInContent {
            link: link.to_owned(),
            code: code.to_owned(),
            minutes: ttl.as_secs().div_ceil(60),
        };
        let subject = self.templates.render(
            "email/sign_in/subject.txt",
            self.sign_in_context(to.as_str(), &content),
        )?;
        let json = serde_json::to_vec(&content).map_err(|e| MailError::Seal(e.to_string()))?;
        Ok(NewMail {
            id: uuid::Uuid::now_v7().to_string(),
            kind: SIGN_IN,
            recipient: to.to_string(),
            subject: one_line(&subject),
            sealed_body: self.sealer.seal(&json),
            created_at: now,
            expires_at: Some(expires_at),
        })
    }

    fn sign_in_context(&self, to: &str, content: &SignInContent) -> minijinja::Value {
        minijinja::context! {
            org_name => self.org_name,
            support_email => self.support_email.as_ref().map(Email::as_str),
            email => to,
            link => content.link,
            code => content.code,
            minutes => content.minutes,
        }
    }

    /// Unseals an outbox row and renders it into a mail for a transport.
    pub fn open(&self, mail: &OutboxMail) -> Result<OutgoingMail, MailError> {
        if mail.kind != SIGN_IN {
            return Err(MailError::Build(format!(
                "unknown kind of mail `{}`",
                mail.kind
            )));
        }
        let json = self.sealer.open(&mail.sealed_body)?;
        let content: SignInContent =
            serde_json::from_slice(&json).map_err(|e| MailError::Seal(e.to_string()))?;
        let context = self.sign_in_context(&mail.recipient, &content);
        Ok(OutgoingMail {
            id: mail.id.clone(),
            from: self.from.clone(),
            to: mail
                .recipient
                .parse()
                .map_err(|e: lettre::address::AddressError| MailError::Build(e.to_string()))?,
            subject: one_line(&mail.subject),
            text: self.templates.render("email/sign_in/text.txt", &context)?,
            html: self.templates.render("email/sign_in/html.html", &context)?,
        })
    }

    /// Tells the worker that mail is waiting, so it does not wait for its next poll.
    pub fn wake_worker(&self) {
        self.wake.notify_one();
    }

    pub(crate) fn wake_signal(&self) -> Arc<Notify> {
        self.wake.clone()
    }
}

/// The `From` mailbox with its display name folded to one line. lettre encodes
/// header values itself, but HTTP providers get the mailbox as a string and
/// build the header on their side, so the name must already be safe.
fn safe_mailbox(mailbox: &Mailbox) -> Mailbox {
    Mailbox::new(
        mailbox
            .name
            .as_deref()
            .map(one_line)
            .filter(|n| !n.is_empty()),
        mailbox.email.clone(),
    )
}

/// Folds a rendered subject to one line: templates end in newlines, and a CR or LF
/// must never reach a header.
fn one_line(text: &str) -> String {
    text.split(|c: char| c.is_control())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_folded_to_one_line() {
        assert_eq!(
            one_line("Sign in\r\nBcc: eve@evil.test\n"),
            "Sign in Bcc: eve@evil.test"
        );
    }

    #[test]
    fn messages_keep_header_injection_out() {
        let mail = OutgoingMail {
            id: "1".into(),
            from: "Club <club@example.org>".parse().unwrap(),
            to: "ada@example.org".parse().unwrap(),
            subject: one_line("Hi\r\nBcc: eve@evil.test"),
            text: "text".into(),
            html: "<p>html</p>".into(),
        };
        let raw = String::from_utf8(mail.to_message().unwrap().formatted()).unwrap();
        assert!(!raw.lines().any(|line| line.starts_with("Bcc:")), "{raw}");
    }

    #[test]
    fn from_display_names_are_folded_for_providers_that_take_a_string() {
        let evil = Mailbox::new(
            Some("Club\r\nBcc: eve@evil.test".into()),
            "club@example.org".parse().unwrap(),
        );
        let safe = safe_mailbox(&evil).to_string();
        assert!(!safe.contains('\r') && !safe.contains('\n'), "{safe}");
        assert!(safe.ends_with("<club@example.org>"), "{safe}");
        let plain: Mailbox = "club@example.org".parse().unwrap();
        assert_eq!(safe_mailbox(&plain), plain);
    }
}
