//! What an operator reads: log lines (human text or one JSON object per line)
//! and, per request, an id, a span, a log line and the HTTP metrics.
//!
//! Every request gets an id: the `X-Request-Id` a trusted proxy sent (see
//! [`TrustedProxies`]), or a fresh one. It is answered in the `X-Request-Id`
//! header and in every problem document (`request_id`), and every log line
//! written while the request runs carries it: the line formatter reads it from
//! the request's task ([`WithRequestId`]). The request also runs in a `debug`
//! span, with a span per store operation below it (`store/spans.rs`), for
//! when someone asks where a slow request's time went.
//!
//! Why the id is not simply a field of an `info` span: measured on the load
//! benchmark, a span per request at `info` cost about a third of a
//! `GET /v1/me` (BENCHMARKS.md, session 5); reading a task-local costs nothing
//! measurable, and spans stay off unless asked for. Nothing a
//! client sends other than that id, the method and the matched route template
//! reaches a log line or a label: no path (it may name an address), no query
//! (it may hold a token).

use std::sync::Arc;
use std::time::Instant;

use poem::PathPattern;
use poem::http::HeaderValue;
use poem::http::StatusCode;
use poem::{Endpoint, IntoResponse, Request, Response};
use tracing::{Event, Instrument, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, JsonFields, Writer};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::api::TrustedProxies;
use crate::config::LogFormat;
use crate::metrics::{Metrics, UNMATCHED_ROUTE};

/// The header that carries a request's id, both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The longest request id taken from a proxy; longer ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

tokio::task_local! {
    static REQUEST_ID: Arc<str>;
}

/// Installs the global log subscriber: `filter` as in `RUST_LOG`, lines on stderr.
///
/// A filter of targets and levels only (`info,gatehouse::store=debug`, the
/// usual kind) is applied as [`Targets`]; `EnvFilter`, needed only for span
/// and field directives, takes a shared lock on every span entered and left,
/// which the request span made measurable on the hot paths (BENCHMARKS.md).
pub fn init_logging(filter: &str, format: LogFormat) {
    let registry = tracing_subscriber::registry();
    match filter.parse::<Targets>() {
        Ok(targets) if !filter.contains(['[', '{']) => {
            registry.with(targets).with(fmt_layer(format)).init()
        }
        _ => {
            let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
            registry.with(filter).with(fmt_layer(format)).init()
        }
    }
}

/// Lines on stderr: text (coloured on a terminal) or one JSON object each.
fn fmt_layer<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Text => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            layer
                .with_ansi(ansi)
                .event_format(WithRequestId {
                    inner: format::format().with_ansi(ansi),
                    json: false,
                })
                .boxed()
        }
        LogFormat::Json => layer
            .fmt_fields(JsonFields::new())
            .event_format(WithRequestId {
                inner: format::format().json(),
                json: true,
            })
            .boxed(),
    }
}

/// A line format that adds the id of the request being answered, if any:
/// `request_id=…` at the end of a text line, `"request_id"` as the first
/// member of a JSON object. Ids are letters, digits and `-_.:` only (see
/// [`is_plausible_id`]), so they need no quoting or escaping.
pub struct WithRequestId<F> {
    inner: F,
    json: bool,
}

impl<S, N, F> FormatEvent<S, N> for WithRequestId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let Some(id) = current_request_id() else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(256);
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let body = line.strip_suffix('\n').unwrap_or(&line);
        if self.json
            && let Some(members) = body.strip_prefix('{')
        {
            writeln!(writer, "{{\"request_id\":\"{id}\",{members}")
        } else {
            writeln!(writer, "{body} request_id={id}")
        }
    }
}

/// The id of the request being answered on this task, if any.
pub fn current_request_id() -> Option<Arc<str>> {
    REQUEST_ID.try_with(Arc::clone).ok()
}

/// What the per-request middleware needs: where to count, and whom to believe.
pub struct RequestObserver {
    metrics: Arc<Metrics>,
    proxies: TrustedProxies,
}

impl RequestObserver {
    pub fn new(metrics: Arc<Metrics>, proxies: TrustedProxies) -> Arc<Self> {
        Arc::new(Self { metrics, proxies })
    }

    /// A trusted proxy's `X-Request-Id` if it is a plausible id; a fresh one otherwise.
    fn request_id(&self, req: &Request) -> Arc<str> {
        let forwarded = req
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|value| value.to_str().ok())
            .filter(|id| is_plausible_id(id));
        match forwarded {
            Some(id) if self.proxies.is_trusted_peer(req) => id.into(),
            _ => fresh_id().into(),
        }
    }
}

/// Ids of 1 to 128 letters, digits and `-_.:`: anything else could forge log
/// structure or carry a secret.
fn is_plausible_id(id: &str) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// A random (version 4) UUID, from the thread's generator: no system call.
fn fresh_id() -> String {
    uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// The per-request middleware: id, span, problem rendering, log line, metrics.
///
/// Errors are rendered into problem documents here, inside the request's
/// scope, so that the documents carry the id.
pub async fn observe<E: Endpoint>(
    next: Arc<E>,
    req: Request,
    observer: Arc<RequestObserver>,
) -> poem::Result<Response> {
    let id = observer.request_id(&req);
    let method = req.method().clone();
    let span = tracing::debug_span!("request", method = method.as_str());
    let started = Instant::now();
    let (mut response, route) = REQUEST_ID
        .scope(id.clone(), async move {
            match next.call(req).await {
                Ok(output) => {
                    let response = output.into_response();
                    let route = route_of(response.data::<PathPattern>(), response.status());
                    (response, route)
                }
                Err(error) => {
                    let route = if error.is::<poem::error::NotFoundError>() {
                        None
                    } else {
                        route_of(error.data::<PathPattern>(), error.status())
                    };
                    (crate::error::render_any_error(error), route)
                }
            }
        })
        .instrument(span.clone())
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    let route = route.as_deref().unwrap_or(UNMATCHED_ROUTE);
    let status = response.status().as_u16();
    REQUEST_ID.sync_scope(id.clone(), || {
        tracing::info!(
            method = method.as_str(),
            route,
            status,
            elapsed_ms = elapsed * 1000.0,
            "request"
        );
    });
    observer
        .metrics
        .http()
        .observe(route, &method, status, elapsed);
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    Ok(response)
}

/// The matched route's template. A 404 from a catch-all nest (an unknown path
/// under `/docs`, say) matched nothing of ours.
fn route_of(pattern: Option<&PathPattern>, status: StatusCode) -> Option<String> {
    let pattern = pattern?;
    if status == StatusCode::NOT_FOUND && pattern.0.contains('*') {
        return None;
    }
    Some(pattern.0.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_ids_are_taken_from_a_proxy() {
        assert!(is_plausible_id("req-1234.abc:def_9"));
        assert!(is_plausible_id(&fresh_id()));
        assert!(!is_plausible_id(""));
        assert!(!is_plausible_id("a b"));
        assert!(!is_plausible_id("x\"}{\"level\":\"ERROR"));
        assert!(!is_plausible_id(&"a".repeat(129)));
    }
}
