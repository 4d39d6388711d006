//! What every HTTP mail provider shares: one pooled reqwest client with a
//! timeout on every call, and the mapping of outcomes to [`DeliveryError`].
//! A provider is one small [`Provider`] impl naming its path, auth and body.

use std::marker::PhantomData;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{RequestBuilder, StatusCode};

use super::{DeliveryError, MailError, OutgoingMail, Transport};
use crate::config::MailSettings;

/// The longest `Retry-After` we honour; a provider asking for more gets the
/// normal backoff instead of parking the mail for hours.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// How much of an error response is kept in `last_error`: enough for the
/// provider's message, not a whole HTML error page.
const MAX_ERROR_BODY: usize = 300;

/// One HTTP mail provider's request shape.
pub trait Provider: Send + Sync + 'static {
    const NAME: &'static str;
    /// Used when `GATEHOUSE_MAIL_API_URL` is not set.
    const DEFAULT_BASE_URL: &'static str;
    /// Appended to the base URL, e.g. `/email`.
    const PATH: &'static str;
    /// Adds the credential (and any per-provider headers) to the request.
    fn authorize(request: RequestBuilder, api_key: &str, mail: &OutgoingMail) -> RequestBuilder;
    fn body(mail: &OutgoingMail) -> serde_json::Value;
}

pub struct HttpTransport<P> {
    client: reqwest::Client,
    url: String,
    api_key: String,
    provider: PhantomData<P>,
}

impl<P: Provider> HttpTransport<P> {
    pub fn new(settings: &MailSettings) -> Result<Self, MailError> {
        let api_key = settings
            .api_key
            .as_ref()
            .ok_or_else(|| MailError::Setup(format!("mail_api_key is required for {}", P::NAME)))?
            .expose()
            .to_owned();
        let base = settings
            .api_url
            .as_deref()
            .unwrap_or(P::DEFAULT_BASE_URL)
            .trim_end_matches('/');
        let url = format!("{base}{}", P::PATH);
        reqwest::Url::parse(&url).map_err(|e| MailError::Setup(format!("mail_api_url: {e}")))?;
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| MailError::Setup(format!("HTTP client: {e}")))?;
        Ok(Self {
            client,
            url,
            api_key,
            provider: PhantomData,
        })
    }
}

#[async_trait]
impl<P: Provider> Transport for HttpTransport<P> {
    fn name(&self) -> &'static str {
        P::NAME
    }

    async fn send(&self, mail: &OutgoingMail) -> Result<(), DeliveryError> {
        let request = self
            .client
            .post(&self.url)
            .header(reqwest::header::ACCEPT, "application/json")
            .json(&P::body(mail));
        let response = P::authorize(request, &self.api_key, mail)
            .send()
            .await
            .map_err(|e| transient(format!("{}: {}", P::NAME, without_url(e)), None))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = retry_after(response.headers());
        let body = response.text().await.unwrap_or_default();
        classify(
            status,
            retry_after,
            &format!("{}: {status} {}", P::NAME, excerpt(&body)),
        )
    }
}

/// 429 and 5xx are worth retrying; any other non-success status means the
/// provider refuses this mail as it is.
pub fn classify(
    status: StatusCode,
    retry_after: Option<Duration>,
    reason: &str,
) -> Result<(), DeliveryError> {
    if status.is_success() {
        Ok(())
    } else if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        Err(transient(reason.to_owned(), retry_after))
    } else {
        Err(DeliveryError::Permanent(reason.to_owned()))
    }
}

fn transient(reason: String, retry_after: Option<Duration>) -> DeliveryError {
    DeliveryError::Transient {
        reason,
        retry_after,
    }
}

/// `Retry-After` in delta-seconds (the form providers send with 429 and 503).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// A connection error, without the URL (it may carry a customer-specific host).
fn without_url(error: reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    format!("{kind}: {}", error.without_url())
}

fn excerpt(body: &str) -> String {
    let one_line = super::one_line(body);
    match one_line.char_indices().nth(MAX_ERROR_BODY) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_for_the_retry_policy() {
        let retry = Some(Duration::from_secs(7));
        assert!(classify(StatusCode::ACCEPTED, None, "").is_ok());
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, retry, "slow down"),
            Err(transient("slow down".into(), retry))
        );
        assert!(matches!(
            classify(StatusCode::BAD_GATEWAY, None, ""),
            Err(DeliveryError::Transient { .. })
        ));
        for status in [
            StatusCode::BAD_REQUEST,
            StatusCode::UNAUTHORIZED,
            StatusCode::UNPROCESSABLE_ENTITY,
        ] {
            assert!(matches!(
                classify(status, None, ""),
                Err(DeliveryError::Permanent(_))
            ));
        }
    }

    #[test]
    fn retry_after_is_read_in_seconds_and_capped() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(reqwest::header::RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert(reqwest::header::RETRY_AFTER, "999999".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn error_bodies_are_cut_short_and_kept_on_one_line() {
        let long = format!("line one\nline two {}", "x".repeat(1000));
        let cut = excerpt(&long);
        assert!(cut.starts_with("line one line two"));
        assert!(cut.chars().count() <= MAX_ERROR_BODY + 1);
    }
}
