//! Keyset pagination and CSV responses shared by the admin lists.
//!
//! A cursor is the sort key of the last item of a page, base64url-encoded so
//! clients treat it as opaque. Keyset (not offset) pagination stays fast on an
//! allowlist of millions of rows and never skips or repeats an item when rows
//! are added between pages.

use base64::Engine;
use base64::alphabet;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use futures_util::StreamExt;
use poem::Body;
use poem_openapi::ApiResponse;
use poem_openapi::payload::Binary;

use super::input::CursorText;
use crate::error::ApiError;

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;
/// Rows fetched per page while streaming an export.
pub const EXPORT_PAGE: i64 = 1_000;

/// The page size asked for, within 1..=MAX_LIMIT.
pub fn limit(asked: Option<u32>) -> Result<i64, ApiError> {
    match asked.unwrap_or(DEFAULT_LIMIT) {
        n @ 1..=MAX_LIMIT => Ok(i64::from(n)),
        _ => Err(ApiError::unprocessable(
            "invalid_limit",
            format!("limit is 1 to {MAX_LIMIT}"),
        )),
    }
}

pub fn encode_cursor(key: &str) -> String {
    URL_SAFE_NO_PAD.encode(key)
}

/// Reads back any cursor of the stated form: one we did not issue starts the
/// page at an arbitrary place, which is harmless, rather than failing.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

/// The sort key in `cursor`; `None` for the first page. 400 `invalid_cursor`
/// for a cursor without the form the spec states.
pub fn decode_cursor(cursor: Option<&CursorText>) -> Result<Option<String>, ApiError> {
    let Some(cursor) = cursor else {
        return Ok(None);
    };
    let text = cursor.text().ok_or_else(|| {
        ApiError::bad_request("invalid_cursor", "the cursor is not one we issued")
    })?;
    if text.is_empty() {
        return Ok(None);
    }
    LENIENT
        .decode(text)
        // Postgres text holds no NUL; a key with one was never issued anyway.
        .map(|bytes| Some(String::from_utf8_lossy(&bytes).replace('\0', "")))
        .map_err(|_| ApiError::bad_request("invalid_cursor", "the cursor is not one we issued"))
}

/// The cursor for the page after `items`, if the page was full.
pub fn next_cursor<T>(items: &[T], limit: i64, key: impl Fn(&T) -> &str) -> Option<String> {
    (items.len() as i64 == limit)
        .then(|| items.last().map(|last| encode_cursor(key(last))))
        .flatten()
}

#[derive(ApiResponse)]
pub enum CsvResponse {
    /// A CSV file (UTF-8, CRLF). Cells that a spreadsheet would run as a
    /// formula start with `'`.
    #[oai(status = 200, content_type = "text/csv; charset=utf-8")]
    Csv(Binary<Body>, #[oai(header = "Content-Disposition")] String),
}

/// Streams a CSV export page by page: `fetch(after)` returns a page of rows
/// and the key to continue after, so memory holds one page at a time.
pub fn csv_export<F, Fut>(filename: &str, header: &[&str], fetch: F) -> CsvResponse
where
    F: FnMut(Option<String>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(Vec<Vec<String>>, Option<String>), ApiError>> + Send,
{
    let head = crate::csv_export::encode([header.to_vec()]).unwrap_or_default();
    let pages = futures_util::stream::unfold(
        (fetch, Some(None::<String>)),
        |(mut fetch, after)| async move {
            let after = after?;
            let page = match fetch(after).await {
                Ok((rows, next)) => crate::csv_export::encode(rows)
                    .map(|bytes| (bytes, next))
                    .map_err(std::io::Error::other),
                Err(err) => Err(std::io::Error::other(err.to_string())),
            };
            match page {
                Ok((bytes, next)) => Some((Ok(bytes), (fetch, next.map(Some)))),
                Err(err) => Some((Err(err), (fetch, None))),
            }
        },
    );
    let stream =
        futures_util::stream::once(async move { Ok::<_, std::io::Error>(head) }).chain(pages);
    CsvResponse::Csv(
        Binary(Body::from_bytes_stream(stream)),
        format!("attachment; filename=\"{filename}\""),
    )
}
