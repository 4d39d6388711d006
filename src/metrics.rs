//! Prometheus metrics, served at `GET /metrics` in the OpenMetrics text format.
//!
//! `prometheus-client` is the Prometheus project's own Rust client: typed
//! metrics, no global registry, no HTTP server of its own. Counters and the
//! histogram count what this process did; the outbox gauge is read from the
//! database at scrape time, so with several instances every one reports the
//! same, shared queue.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

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
    outbox_queued: Gauge,
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
            outbox_queued: Gauge::default(),
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
            "outbox_queued",
            "Mails waiting in the outbox (read from the database at scrape time)",
            metrics.outbox_queued.clone(),
        );
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

    /// The exposition text, with the outbox gauge set to `queued`.
    pub fn render(&self, queued: i64) -> Result<String, std::fmt::Error> {
        self.outbox_queued.set(queued);
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
        let text = metrics.render(3).unwrap();
        assert!(text.contains("gatehouse_mail_sent_total 1"), "{text}");
        assert!(text.contains("gatehouse_mail_failed_total 1"), "{text}");
        assert!(text.contains("gatehouse_outbox_queued 3"), "{text}");
        assert!(
            text.contains("gatehouse_mail_delivery_seconds_bucket{le=\"2.0\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
