//! `GET /metrics` for Prometheus. Outside the OpenAPI service: it is for the
//! scraper, not for API clients, and its body is not JSON.

use std::sync::Arc;

use poem::web::Data;
use poem::{Response, handler};

use crate::error::ApiError;
use crate::metrics::{Metrics, QueueCount};
use crate::store::DynStore;

/// What a scrape reads, put in the route's data: this process's counters, and
/// the store for the queue lengths that all instances share.
#[derive(Clone)]
pub struct MetricsSources {
    pub metrics: Arc<Metrics>,
    pub store: DynStore,
}

/// The OpenMetrics exposition. A 503 (problem+json) if the outbox cannot be
/// counted, so a scrape never reports a stale or made-up queue length.
#[handler]
pub async fn metrics(sources: Data<&MetricsSources>) -> Result<Response, ApiError> {
    // Before the count, so that the scrape's own connection is not in use.
    let pools = sources.store.pool_stats();
    let outbox = sources.store.outbox_counts().await?;
    // The webhook deliveries' counts join here, as `queue: "webhooks"`.
    let queues = [
        ("queued", outbox.queued),
        ("sent", outbox.sent),
        ("failed", outbox.failed),
        ("expired", outbox.expired),
    ]
    .map(|(state, count)| QueueCount {
        queue: "outbox",
        state,
        count,
    });
    let text = sources
        .metrics
        .render(&queues, &pools)
        .map_err(|e| ApiError::Internal(format!("encoding metrics: {e}")))?;
    Ok(Response::builder()
        .content_type(crate::metrics::CONTENT_TYPE)
        .body(text))
}
