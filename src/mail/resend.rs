//! Resend: `POST /emails` with a bearer API key.

use reqwest::RequestBuilder;
use serde_json::json;

use super::OutgoingMail;
use super::http::Provider;

pub struct Resend;

impl Provider for Resend {
    const NAME: &'static str = "resend";
    const DEFAULT_BASE_URL: &'static str = "https://api.resend.com";
    const PATH: &'static str = "/emails";

    /// The outbox id doubles as Resend's idempotency key: if a response is lost
    /// and the worker retries, Resend sends the mail once, not twice.
    fn authorize(request: RequestBuilder, api_key: &str, mail: &OutgoingMail) -> RequestBuilder {
        request
            .bearer_auth(api_key)
            .header("Idempotency-Key", &mail.id)
    }

    fn body(mail: &OutgoingMail) -> serde_json::Value {
        json!({
            "from": mail.from.to_string(),
            "to": [mail.to.to_string()],
            "subject": mail.subject,
            "text": mail.text,
            "html": mail.html,
        })
    }
}
