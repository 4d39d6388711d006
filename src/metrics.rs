//! Prometheus metrics, served at `GET /metrics` in the OpenMetrics text format.
//!
//! `prometheus-client` is the Prometheus project's own Rust client: typed
//! metrics, no global registry, no HTTP server of its own. Counters and
//! histograms count what this process did; the gauges of shared state (the
//! outbox by state, the webhook deliveries by state) are read from the database at
//! scrape time, so with several instances every one reports the same, shared
//! queue; the pool gauges are this process's own connections.
//!
//! One job per file: HTTP requests (`metrics/http.rs`), the sign-in funnel and
//! API keys (`metrics/auth.rs`), state read at scrape time
//! (`metrics/state.rs`), housekeeping (`metrics/housekeeping.rs`); mail and
//! webhook delivery are here.
//!
//! No label carries an address, a token or any other value a client chooses:
//! every label value is one of a fixed set, or a route template.

mod auth;
mod housekeeping;
mod http;
mod state;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

pub use auth::{ApiKeyCheck, AuthMetrics, RateLimit, VerifyFailure};
pub use housekeeping::HousekeepingMetrics;
pub use http::{HttpMetrics, UNMATCHED_ROUTE};
pub use state::{PoolStats, QueueCount, StateGauges};

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the delivery latency buckets, in seconds: sign-in mail
/// should arrive within seconds; the long tail shows retries.
const LATENCY_BUCKETS: [f64; 12] = [
    0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
];

pub struct Metrics {
    registry: Registry,
    mail_sent: Counter,
    mail_failed: Counter,
    mail_expired: Counter,
    mail_retried: Counter,
    delivery_seconds: Histogram,
    http: HttpMetrics,
    auth: AuthMetrics,
    state: StateGauges,
    housekeeping: HousekeepingMetrics,
    webhook_delivered: Counter,
    webhook_retried: Counter,
    webhook_failed: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gatehouse");
        let metrics = Self {
            mail_sent: Counter::default(),
            mail_failed: Counter::default(),
            mail_expired: Counter::default(),
            mail_retried: Counter::default(),
            delivery_seconds: Histogram::new(LATENCY_BUCKETS),
            http: HttpMetrics::default(),
            auth: AuthMetrics::default(),
            state: StateGauges::default(),
            housekeeping: HousekeepingMetrics::default(),
            webhook_delivered: Counter::default(),
            webhook_retried: Counter::default(),
            webhook_failed: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "mail_sent",
            "Mails the transport accepted",
            metrics.mail_sent.clone(),
        );
        registry.register(
            "mail_failed",
            "Mails given up on: refused permanently or out of attempts",
            metrics.mail_failed.clone(),
        );
        registry.register(
            "mail_expired",
            "Mails not sent because the link they carry expired first",
            metrics.mail_expired.clone(),
        );
        registry.register(
            "mail_retried",
            "Delivery attempts that failed transiently and were rescheduled",
            metrics.mail_retried.clone(),
        );
        registry.register(
            "mail_delivery_seconds",
            "Time from enqueueing a mail to its transport accepting it (1 s resolution)",
            metrics.delivery_seconds.clone(),
        );
        registry.register(
            "build",
            "The running build",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        metrics.http.register(&mut registry);
        metrics.auth.register(&mut registry);
        metrics.state.register(&mut registry);
        metrics.housekeeping.register(&mut registry);
        registry.register(
            "webhook_delivered",
            "Webhook deliveries a receiver accepted (2xx)",
            metrics.webhook_delivered.clone(),
        );
        registry.register(
            "webhook_retried",
            "Webhook attempts that failed and were rescheduled",
            metrics.webhook_retried.clone(),
        );
        registry.register(
            "webhook_failed",
            "Webhook deliveries given up on after the last attempt",
            metrics.webhook_failed.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    pub fn webhook_delivered(&self) {
        self.webhook_delivered.inc();
    }

    pub fn webhook_retried(&self) {
        self.webhook_retried.inc();
    }

    pub fn webhook_failed(&self) {
        self.webhook_failed.inc();
    }

    pub fn mail_sent(&self, seconds_since_enqueue: f64) {
        self.mail_sent.inc();
        self.delivery_seconds
            .observe(seconds_since_enqueue.max(0.0));
    }

    pub fn mail_failed(&self) {
        self.mail_failed.inc();
    }

    pub fn mail_expired(&self) {
        self.mail_expired.inc();
    }

    pub fn mail_retried(&self) {
        self.mail_retried.inc();
    }

    /// Requests by route template, method and status, and their latency.
    pub fn http(&self) -> &HttpMetrics {
        &self.http
    }

    /// The sign-in funnel, rate limits and API-key verifications.
    pub fn auth(&self) -> &AuthMetrics {
        &self.auth
    }

    /// The housekeeping job's rounds.
    pub fn housekeeping(&self) -> &HousekeepingMetrics {
        &self.housekeeping
    }

    /// The exposition text, with the gauges of shared state set from `queues`
    /// and `pools` (read by the caller at scrape time).
    pub fn render(
        &self,
        queues: &[QueueCount],
        pools: &[PoolStats],
    ) -> Result<String, std::fmt::Error> {
        self.state.set(queues, pools);
        let mut text = String::new();
        encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histogram_and_gauge() {
        let metrics = Metrics::new();
        metrics.mail_sent(1.5);
        metrics.mail_failed();
        let queues = [QueueCount {
            queue: "outbox",
            state: "queued",
            count: 3,
        }];
        let text = metrics.render(&queues, &[]).unwrap();
        assert!(text.contains("gatehouse_mail_sent_total 1"), "{text}");
        assert!(text.contains("gatehouse_mail_failed_total 1"), "{text}");
        assert!(text.contains("gatehouse_outbox_queued 3"), "{text}");
        assert!(
            text.contains("gatehouse_queue_items{queue=\"outbox\",state=\"queued\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("gatehouse_mail_delivery_seconds_bucket{le=\"2.0\"} 1"),
            "{text}"
        );
        assert!(text.contains("gatehouse_build_info{version="), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
