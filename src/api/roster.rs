//! The allowlist as a roster: CSV imports, listing, removing, batches, export.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::{Body, Request, RequestBody};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Json, ParsePayload, Payload};
use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::multipart::Upload;
use poem_openapi::{ApiRequest, ApiResponse, Multipart, Object, OpenApi};
use tokio_util::io::SyncIoBridge;

use super::TrustedProxies;
use super::eligible::ImportReportView;
use super::input::{BatchIdText, CursorText, EmailInPathText, EmailText, Opt, RoleText};
use super::members::actor;
use super::paging::{self, CsvResponse};
use super::views::timestamp;
use super::{AdminAuth, ApiTags};
use crate::admin::AdminService;
use crate::clock::Clock;
use crate::error::ApiError;
use crate::import::{ImportContext, RawRow, import_csv, import_rows};
use crate::store::{DynStore, EligibleFilter, EligibleRow};

pub struct RosterApi {
    pub admin: Arc<AdminService>,
    pub store: DynStore,
    pub clock: Clock,
    pub proxies: TrustedProxies,
}

/// A CSV document as the request body (`text/csv`, also `application/csv` or `text/plain`).
pub struct CsvBody(Body);

impl Payload for CsvBody {
    const CONTENT_TYPE: &'static str = "text/csv";

    fn check_content_type(content_type: &str) -> bool {
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        ["text/csv", "application/csv", "text/plain"]
            .iter()
            .any(|t| essence.eq_ignore_ascii_case(t))
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            format: Some("binary"),
            ..MetaSchema::new("string")
        }))
    }
}

impl ParsePayload for CsvBody {
    const IS_REQUIRED: bool = true;

    async fn from_request(request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        Ok(Self(
            <Body as poem::FromRequest>::from_request(request, body).await?,
        ))
    }
}

#[derive(Debug, Multipart)]
#[oai(deny_unknown_fields)]
pub struct RosterUpload {
    /// The CSV file.
    pub file: Upload,
}

/// [`RosterUpload`] as the body, whose schema says what its parser does:
/// the `file` field and no other (`maxProperties: 1`). An extra field is
/// refused; one whose name is not a valid header could not even be read.
pub struct RosterForm(RosterUpload);

impl Payload for RosterForm {
    const CONTENT_TYPE: &'static str = <RosterUpload as Payload>::CONTENT_TYPE;

    fn check_content_type(content_type: &str) -> bool {
        <RosterUpload as Payload>::check_content_type(content_type)
    }

    fn schema_ref() -> MetaSchemaRef {
        match <RosterUpload as Payload>::schema_ref() {
            MetaSchemaRef::Inline(schema) => MetaSchemaRef::Inline(Box::new(MetaSchema {
                max_properties: Some(1),
                ..*schema
            })),
            reference => reference,
        }
    }

    fn register(registry: &mut Registry) {
        <RosterUpload as Payload>::register(registry);
    }
}

impl ParsePayload for RosterForm {
    const IS_REQUIRED: bool = true;

    async fn from_request(request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        Ok(Self(
            <RosterUpload as ParsePayload>::from_request(request, body).await?,
        ))
    }
}

#[derive(ApiRequest)]
pub enum RosterBody {
    /// The CSV file as the body.
    Csv(CsvBody),
    /// A form upload with the CSV in the field `file`.
    Multipart(RosterForm),
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct EligibleEmailRequest {
    pub email: EmailText,
    /// Roles the member gets on first sign-in, besides `member`; each must exist (409 `unknown_role`).
    pub roles: Opt<Vec<RoleText>>,
}

#[derive(ApiResponse)]
enum Upserted {
    /// The address was added.
    #[oai(status = 201)]
    Created(Json<ImportReportView>),
    /// The address was already on the allowlist (its roles may have been updated).
    #[oai(status = 200)]
    Ok(Json<ImportReportView>),
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct EligibleView {
    pub email: String,
    pub batch_id: Option<String>,
    /// Roles the member gets on first sign-in, besides `member`.
    pub roles: Vec<String>,
    pub added_by: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The member id, once the address has signed in.
    pub claimed_by: Option<String>,
}

impl From<EligibleRow> for EligibleView {
    fn from(row: EligibleRow) -> Self {
        Self {
            roles: row
                .roles
                .split(',')
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .collect(),
            email: row.email,
            batch_id: row.batch_id,
            added_by: row.added_by,
            created_at: timestamp(row.created_at),
            claimed_by: row.claimed_by,
        }
    }
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct EligiblePage {
    pub items: Vec<EligibleView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct BatchView {
    pub id: String,
    /// `csv`, `json`, `api`, `cli` or `bootstrap`.
    pub source: String,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub rows: i64,
    pub added: i64,
    pub updated: i64,
    pub duplicates: i64,
    pub invalid: i64,
    /// Entries removed by withdrawing the batch.
    pub withdrawn: i64,
    pub withdrawn_at: Option<DateTime<Utc>>,
    /// Entries of the batch on the allowlist now.
    pub remaining: i64,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct BatchPage {
    pub items: Vec<BatchView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Withdrawn {
    /// Unclaimed entries removed; claimed ones (members already) stay.
    pub removed: u64,
}

#[derive(ApiResponse)]
enum Removed {
    #[oai(status = 204)]
    NoContent,
}

/// The batch id, if it has the stated form (422 `invalid_batch_id`, as the
/// import's own rule answers, otherwise).
fn checked_batch_id(id: &BatchIdText) -> Result<&str, ApiError> {
    Ok(id
        .text()
        .ok_or(crate::import::ImportError::InvalidBatchId)?)
}

fn eligible_filter(
    batch_id: Option<String>,
    q: Option<String>,
    claimed: Option<bool>,
) -> EligibleFilter {
    EligibleFilter {
        batch_id,
        q: q.map(|q| q.trim().to_lowercase()).filter(|q| !q.is_empty()),
        claimed,
        after: None,
        limit: 0,
    }
}

#[OpenApi(tag = "ApiTags::EligibleEmails")]
impl RosterApi {
    /// Adds one address to the allowlist, optionally with pre-assigned roles. Idempotent.
    #[oai(path = "/v1/admin/eligible-emails", method = "post")]
    async fn add_one(
        &self,
        auth: AdminAuth,
        body: Json<EligibleEmailRequest>,
        req: &Request,
    ) -> Result<Upserted, ApiError> {
        let admin = &auth.0;
        let email = body.email.email()?;
        let roles = RoleText::roles(body.roles.0.as_deref().unwrap_or_default())?;
        let row = RawRow::new(
            1,
            email.to_string(),
            (!roles.is_empty()).then(|| roles.iter().map(|r| r.as_str().to_owned()).collect()),
        );
        let context = ImportContext {
            batch_id: crate::import::new_batch_id(),
            source: "api",
            actor: Some(admin.actor()),
            ip: self.proxies.client_ip(req).map(|ip| ip.to_string()),
            dry_run: false,
            now: self.clock.now(),
        };
        let report = import_rows(&self.store, vec![row], context).await?;
        // The address and role names have their form, so only a role that
        // does not exist is left to refuse.
        if let Some(invalid) = report.invalid.first() {
            return Err(ApiError::conflict("unknown_role", invalid.reason.clone()));
        }
        Ok(if report.added > 0 {
            Upserted::Created(Json(report.into()))
        } else {
            Upserted::Ok(Json(report.into()))
        })
    }

    /// Imports a roster CSV in one transaction and reports on every row.
    ///
    /// Accepts a UTF-8 BOM, CRLF or LF, quotes, blank lines and `,` or `;`
    /// delimiters. A header with an `email` column picks it (else the first
    /// column is the address); a `roles` column pre-assigns roles separated by
    /// `;` or `|`. `dry_run=true` reports without writing anything.
    #[oai(path = "/v1/admin/eligible-emails/import", method = "post")]
    async fn import(
        &self,
        auth: AdminAuth,
        body: RosterBody,
        /// Groups the upload; generated when absent or empty.
        batch_id: Query<Option<BatchIdText>>,
        dry_run: Query<Option<bool>>,
        req: &Request,
    ) -> Result<Json<ImportReportView>, ApiError> {
        let actor = actor(&auth, &self.proxies, req);
        let context = ImportContext {
            batch_id: crate::import::batch_id(
                batch_id.0.as_ref().map(checked_batch_id).transpose()?,
            )?,
            source: "csv",
            actor: Some(actor.id),
            ip: actor.ip,
            dry_run: dry_run.unwrap_or(false),
            now: self.clock.now(),
        };
        let report = match body {
            RosterBody::Csv(CsvBody(body)) => {
                let reader = SyncIoBridge::new(body.into_async_read());
                import_csv(&self.store, reader, context).await?
            }
            RosterBody::Multipart(RosterForm(upload)) => {
                let file = upload.file.into_file().into_std().await;
                import_csv(&self.store, file, context).await?
            }
        };
        Ok(Json(report.into()))
    }

    /// Lists the allowlist by address; filters `batch_id`, `q` (substring), `claimed`.
    #[oai(path = "/v1/admin/eligible-emails", method = "get")]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        _auth: AdminAuth,
        batch_id: Query<Option<String>>,
        q: Query<Option<String>>,
        claimed: Query<Option<bool>>,
        /// Page size (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
        /// The `next_cursor` of the previous page.
        cursor: Query<Option<CursorText>>,
    ) -> Result<Json<EligiblePage>, ApiError> {
        let mut filter = eligible_filter(batch_id.0, q.0, claimed.0);
        filter.limit = paging::limit(limit.0)?;
        filter.after = paging::decode_cursor(cursor.0.as_ref())?;
        let rows = self.store.list_eligible(&filter).await?;
        Ok(Json(EligiblePage {
            next_cursor: paging::next_cursor(&rows, filter.limit, |r| r.email.as_str()),
            items: rows.into_iter().map(EligibleView::from).collect(),
        }))
    }

    /// The allowlist as CSV (same filters).
    #[oai(path = "/v1/admin/eligible-emails/export", method = "get")]
    async fn export(
        &self,
        _auth: AdminAuth,
        batch_id: Query<Option<String>>,
        q: Query<Option<String>>,
        claimed: Query<Option<bool>>,
    ) -> Result<CsvResponse, ApiError> {
        let base = eligible_filter(batch_id.0, q.0, claimed.0);
        let store = self.store.clone();
        let header = [
            "email",
            "roles",
            "batch_id",
            "added_by",
            "created_at",
            "claimed_by",
        ];
        Ok(paging::csv_export("allowlist.csv", &header, move |after| {
            let (store, mut filter) = (store.clone(), base.clone());
            async move {
                filter.after = after;
                filter.limit = paging::EXPORT_PAGE;
                let rows = store.list_eligible(&filter).await?;
                let next = (rows.len() as i64 == filter.limit)
                    .then(|| rows.last().map(|r| r.email.clone()))
                    .flatten();
                let rows = rows
                    .into_iter()
                    .map(|r| {
                        vec![
                            r.email,
                            r.roles.replace(',', ";"),
                            r.batch_id.unwrap_or_default(),
                            r.added_by.unwrap_or_default(),
                            timestamp(r.created_at).to_rfc3339(),
                            r.claimed_by.unwrap_or_default(),
                        ]
                    })
                    .collect();
                Ok((rows, next))
            }
        }))
    }

    /// Removes one address from the allowlist (a member it became stays a member).
    #[oai(path = "/v1/admin/eligible-emails/:email", method = "delete")]
    async fn remove(
        &self,
        auth: AdminAuth,
        email: Path<EmailInPathText>,
        req: &Request,
    ) -> Result<Removed, ApiError> {
        let email = email.email()?;
        let actor = actor(&auth, &self.proxies, req);
        self.admin.remove_eligible(&actor, &email).await?;
        Ok(Removed::NoContent)
    }

    /// Import batches, newest first, with who, when, source and counts.
    #[oai(path = "/v1/admin/batches", method = "get")]
    async fn batches(
        &self,
        _auth: AdminAuth,
        /// Page size (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
        /// The `next_cursor` of the previous page.
        cursor: Query<Option<CursorText>>,
    ) -> Result<Json<BatchPage>, ApiError> {
        let limit = paging::limit(limit.0)?;
        let before = paging::decode_cursor(cursor.0.as_ref())?;
        let rows = self.store.list_batches(before.as_deref(), limit).await?;
        Ok(Json(BatchPage {
            next_cursor: paging::next_cursor(&rows, limit, |b| b.id.as_str()),
            items: rows
                .into_iter()
                .map(|b| BatchView {
                    id: b.id,
                    source: b.source,
                    created_by: b.created_by,
                    created_at: timestamp(b.created_at),
                    rows: b.rows,
                    added: b.added,
                    updated: b.updated,
                    duplicates: b.duplicates,
                    invalid: b.invalid,
                    withdrawn: b.withdrawn,
                    withdrawn_at: b.withdrawn_at.map(timestamp),
                    remaining: b.remaining,
                })
                .collect(),
        }))
    }

    /// Withdraws a whole upload: removes its entries that no one has claimed yet.
    #[oai(path = "/v1/admin/batches/:id", method = "delete")]
    async fn withdraw(
        &self,
        auth: AdminAuth,
        id: Path<String>,
        req: &Request,
    ) -> Result<Json<Withdrawn>, ApiError> {
        let actor = actor(&auth, &self.proxies, req);
        let removed = self.admin.withdraw_batch(&actor, &id).await?;
        Ok(Json(Withdrawn { removed }))
    }
}
