//! `GET /metrics` for Prometheus. Outside the OpenAPI service: it is for the
//! scraper, not for API clients, and its body is not JSON.

use std::sync::Arc;

use poem::web::Data;
use poem::{Response, handler};

use crate::app::AppState;
use crate::error::ApiError;

/// The OpenMetrics exposition. A 503 (problem+json) if the outbox cannot be
/// counted, so a scrape never reports a stale or made-up queue length.
#[handler]
pub async fn metrics(state: Data<&Arc<AppState>>) -> Result<Response, ApiError> {
    let counts = state.store.outbox_counts().await?;
    let text = state
        .metrics
        .render(counts.queued)
        .map_err(|e| ApiError::Internal(format!("encoding metrics: {e}")))?;
    Ok(Response::builder()
        .content_type(crate::metrics::CONTENT_TYPE)
        .body(text))
}
