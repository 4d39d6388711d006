//! Request body limits. The API as a whole takes small JSON bodies
//! (`max_body_bytes`); the roster import and the bulk JSON route stream
//! rosters up to `max_import_bytes`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use poem::{Endpoint, IntoResponse, Request, Response};
use tokio::io::{AsyncRead, ReadBuf};

/// The path whose body is a roster file, with its own, larger limit.
pub const IMPORT_PATH: &str = "/v1/admin/eligible-emails/import";

/// The bulk JSON route: a roster too, read as it streams in, with the same limit.
pub const BULK_PATH: &str = "/v1/admin/eligible-emails/bulk";

/// Bodies over the limit but at most this large are read (and dropped) before
/// the 413 is sent; larger ones are refused at once.
const DRAIN_UP_TO: u64 = 4 << 20;

/// The error a reader yields once a body passes its limit.
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than {0} bytes")]
pub struct BodyTooLarge(pub u64);

/// Refuses bodies over the limit with 413 when `Content-Length` says so. A body
/// without a length (chunked) fails with [`BodyTooLarge`] when it passes the
/// limit, so its parser stops with an error instead of seeing a cut-off body
/// that looks complete. (poem's own `SizeLimit` answers 411 to every request
/// without a length, GETs included, which is why this is not it.)
pub async fn limit_body<E: Endpoint>(
    next: Arc<E>,
    mut req: Request,
    limits: (usize, usize),
) -> poem::Result<Response> {
    let path = req.uri().path();
    let limit = if [IMPORT_PATH, BULK_PATH, crate::web::UPLOAD_PATH].contains(&path) {
        limits.1
    } else {
        limits.0
    } as u64;
    let declared = req
        .headers()
        .get(poem::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(length) if length > limit => {
            // A client still sending its body when the answer comes may see a
            // reset connection instead of the 413: read and drop a body of
            // moderate size first, so that it reads the answer.
            if length <= DRAIN_UP_TO {
                let _ = req.take_body().into_bytes().await;
            }
            return Err(poem::Error::from_status(
                poem::http::StatusCode::PAYLOAD_TOO_LARGE,
            ));
        }
        Some(_) => {}
        None => {
            let body = req.take_body().into_async_read();
            req.set_body(poem::Body::from_async_read(Limited {
                inner: body,
                left: limit,
            }));
        }
    }
    next.call(req).await.map(IntoResponse::into_response)
}

struct Limited<R> {
    inner: R,
    left: u64,
}

impl<R: AsyncRead + Unpin> AsyncRead for Limited<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            let read = (buf.filled().len() - before) as u64;
            if read > self.left {
                return Poll::Ready(Err(std::io::Error::other(BodyTooLarge(self.left))));
            }
            self.left -= read;
        }
        poll
    }
}
