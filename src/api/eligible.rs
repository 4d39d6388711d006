use poem::{Body, Request, RequestBody};
use poem_openapi::payload::{Json, ParsePayload, Payload};
use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::{ApiRequest, Object, OpenApi};
use tokio_util::io::SyncIoBridge;

use super::input::BatchIdText;
use super::{AdminAuth, ApiTags, TrustedProxies};
use crate::clock::Clock;
use crate::error::ApiError;
use crate::import::{ImportContext, ImportReport, import_json};
use crate::store::DynStore;

pub struct EligibleApi {
    pub store: DynStore,
    pub clock: Clock,
    pub proxies: TrustedProxies,
}

/// A roster as JSON: the addresses to allow, in one transaction.
// The body's shape, for the spec; [`BulkStream`] reads it as it arrives.
#[derive(Debug, Object)]
pub struct BulkRequest {
    pub emails: Vec<String>,
    /// Groups the upload so it can be listed and withdrawn; generated when absent or empty.
    pub batch_id: Option<BatchIdText>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct InvalidRowView {
    /// 1-based position in the upload.
    pub line: u64,
    pub value: String,
    pub reason: String,
}

/// What an upload did, row by row.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ImportReportView {
    pub batch_id: String,
    pub rows: u64,
    pub added: u64,
    /// Existing entries whose pre-assigned roles changed.
    pub updated: u64,
    pub unchanged: u64,
    /// The same address again within the upload (compared case-insensitively).
    pub duplicates: u64,
    /// The first invalid rows; `invalid_total` counts all of them.
    pub invalid: Vec<InvalidRowView>,
    pub invalid_total: u64,
    /// True when nothing was written (`dry_run=true`).
    pub dry_run: bool,
}

impl From<ImportReport> for ImportReportView {
    fn from(report: ImportReport) -> Self {
        Self {
            batch_id: report.batch_id,
            rows: report.rows,
            added: report.added,
            updated: report.updated,
            unchanged: report.unchanged,
            duplicates: report.duplicates,
            invalid: report
                .invalid
                .into_iter()
                .map(|row| InvalidRowView {
                    line: row.line,
                    value: row.value,
                    reason: row.reason,
                })
                .collect(),
            invalid_total: report.invalid_total,
            dry_run: report.dry_run,
        }
    }
}

#[OpenApi(tag = "ApiTags::EligibleEmails")]
impl EligibleApi {
    /// Adds many addresses in one transaction and reports on every row. Idempotent.
    ///
    /// The body is read as it arrives, up to the import size limit
    /// (`max_import_bytes`), so 100,000 addresses go in one call. A body that
    /// breaks off or turns malformed part-way writes nothing and is answered
    /// with a problem naming the address and line/column where it broke.
    #[oai(path = "/v1/admin/eligible-emails/bulk", method = "post")]
    async fn bulk(
        &self,
        auth: AdminAuth,
        body: BulkBody,
        req: &Request,
    ) -> Result<Json<ImportReportView>, ApiError> {
        let admin = &auth.0;
        let context = ImportContext {
            // The body's own `batch_id`, if it has one, replaces it.
            batch_id: crate::import::new_batch_id(),
            source: "json",
            actor: Some(admin.actor()),
            ip: self.proxies.client_ip(req).map(|ip| ip.to_string()),
            dry_run: false,
            now: self.clock.now(),
        };
        let BulkBody::Json(BulkStream(body)) = body;
        let reader = SyncIoBridge::new(body.into_async_read());
        Ok(Json(
            import_json(&self.store, reader, context).await?.into(),
        ))
    }
}

/// Up to the import limit (`max_import_bytes`, 256 MiB by default), read as it arrives.
#[derive(ApiRequest)]
pub enum BulkBody {
    /// The addresses, and optionally the batch they form.
    Json(BulkStream),
}

/// A [`BulkRequest`] as a stream: the spec describes the JSON object, and the
/// handler parses it as it arrives instead of buffering the whole body.
pub struct BulkStream(Body);

impl Payload for BulkStream {
    const CONTENT_TYPE: &'static str = <Json<BulkRequest> as Payload>::CONTENT_TYPE;

    fn check_content_type(content_type: &str) -> bool {
        <Json<BulkRequest> as Payload>::check_content_type(content_type)
    }

    fn schema_ref() -> MetaSchemaRef {
        <Json<BulkRequest> as Payload>::schema_ref()
    }

    fn register(registry: &mut Registry) {
        <Json<BulkRequest> as Payload>::register(registry);
    }
}

impl ParsePayload for BulkStream {
    const IS_REQUIRED: bool = true;

    async fn from_request(request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        Ok(Self(
            <Body as poem::FromRequest>::from_request(request, body).await?,
        ))
    }
}
