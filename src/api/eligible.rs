use poem::{Body, Request, RequestBody};
use poem_openapi::payload::{Json, ParsePayload, Payload};
use std::borrow::Cow;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type};
use poem_openapi::{ApiRequest, Object, OpenApi};
use serde_json::Value;
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
    /// Each an address, or an address with its roles (as a CSV row has them).
    pub emails: Vec<BulkItem>,
    /// Groups the upload so it can be listed and withdrawn; generated when absent or empty.
    pub batch_id: Option<BatchIdText>,
}

/// One row of a bulk roster, for the spec only (the streaming import reads
/// the body): an address, or `{email, roles}`. Written by hand because the
/// derived `oneOf` also says `type: object`, which would refuse the plain
/// address, and a derived object cannot say "no other field".
#[derive(Debug)]
pub struct BulkItem;

impl BulkItem {
    fn schema() -> MetaSchema {
        let string = || MetaSchemaRef::Inline(Box::new(MetaSchema::new("string")));
        // No value has a length of at least 1 and at most 0: no other field.
        let no_other_field = MetaSchema {
            min_length: Some(1),
            max_length: Some(0),
            ..MetaSchema::new("string")
        };
        let row = MetaSchema {
            description: Some(
                "An address with the roles it is allowlisted with; a role that does not \
                 exist makes the row invalid in the report. No other field is taken.",
            ),
            required: vec!["email"],
            properties: vec![
                ("email", string()),
                (
                    "roles",
                    MetaSchemaRef::Inline(Box::new(MetaSchema {
                        items: Some(Box::new(string())),
                        ..MetaSchema::new("array")
                    })),
                ),
            ],
            additional_properties: Some(Box::new(MetaSchemaRef::Inline(Box::new(no_other_field)))),
            ..MetaSchema::new("object")
        };
        MetaSchema {
            description: Some("An address, or an address with its roles."),
            one_of: vec![string(), MetaSchemaRef::Inline(Box::new(row))],
            ..MetaSchema::new("")
        }
    }
}

impl Type for BulkItem {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "BulkItem".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Reference("BulkItem".into())
    }

    fn register(registry: &mut Registry) {
        registry.create_schema::<Self, _>("BulkItem".into(), |_| Self::schema());
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(std::iter::once(self))
    }
}

impl ParseFromJSON for BulkItem {
    fn parse_from_json(_: Option<Value>) -> ParseResult<Self> {
        Err(ParseError::custom("a bulk body is read as it streams"))
    }
}

impl ToJSON for BulkItem {
    fn to_json(&self) -> Option<Value> {
        None
    }
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
