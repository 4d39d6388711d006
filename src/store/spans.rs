//! A span per store operation, so that a slow request's log shows where its
//! time went: with `GATEHOUSE_LOG=info,gatehouse::store=debug`, each operation
//! that reaches the database logs its name and duration, under the span of the
//! request that made it (and so with its request id). Off (the default), a
//! span costs one check of a cached flag.

use std::time::Instant;

use tracing::Instrument;

/// Runs `operation`, named `op`, in its own span.
pub(super) async fn traced<F: Future>(op: &'static str, operation: F) -> F::Output {
    let span = tracing::debug_span!("store", op);
    if span.is_disabled() {
        return operation.await;
    }
    let started = Instant::now();
    let output = operation.instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::debug!(
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "store operation"
        );
    });
    output
}
