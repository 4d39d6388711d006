//! Postmark: `POST /email` with the server token in `X-Postmark-Server-Token`.

use reqwest::RequestBuilder;
use serde_json::json;

use super::OutgoingMail;
use super::http::Provider;

pub struct Postmark;

impl Provider for Postmark {
    const NAME: &'static str = "postmark";
    const DEFAULT_BASE_URL: &'static str = "https://api.postmarkapp.com";
    const PATH: &'static str = "/email";

    fn authorize(request: RequestBuilder, api_key: &str, _mail: &OutgoingMail) -> RequestBuilder {
        request.header("X-Postmark-Server-Token", api_key)
    }

    /// Sign-in mail is transactional, hence the `outbound` stream (Postmark's
    /// default transactional stream), never a broadcast one.
    fn body(mail: &OutgoingMail) -> serde_json::Value {
        json!({
            "From": mail.from.to_string(),
            "To": mail.to.to_string(),
            "Subject": mail.subject,
            "TextBody": mail.text,
            "HtmlBody": mail.html,
            "MessageStream": "outbound",
        })
    }
}
