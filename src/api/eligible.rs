use poem::Request;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::{AdminAuth, ApiTags, TrustedProxies};
use crate::clock::Clock;
use crate::error::ApiError;
use crate::import::{ImportContext, ImportReport, RawRow, import_rows};
use crate::store::DynStore;

pub struct EligibleApi {
    pub store: DynStore,
    pub clock: Clock,
    pub proxies: TrustedProxies,
}

#[derive(Debug, Object)]
pub struct EligibleEmailRequest {
    pub email: String,
    /// Roles the member gets on first sign-in, besides `member`.
    #[oai(default)]
    pub roles: Vec<String>,
}

#[derive(Debug, Object)]
pub struct BulkRequest {
    pub emails: Vec<String>,
    /// Groups the upload so it can be listed and withdrawn; generated when absent.
    pub batch_id: Option<String>,
}

#[derive(Debug, Object)]
pub struct InvalidRowView {
    /// 1-based position in the upload.
    pub line: u64,
    pub value: String,
    pub reason: String,
}

/// What an upload did, row by row.
#[derive(Debug, Object)]
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

#[derive(ApiResponse)]
enum Upserted {
    /// The address was added.
    #[oai(status = 201)]
    Created(Json<ImportReportView>),
    /// The address was already on the allowlist (its roles may have been updated).
    #[oai(status = 200)]
    Ok(Json<ImportReportView>),
}

/// A batch id: 1 to 64 characters of letters, digits, `-`, `_` and `.`.
pub(crate) fn batch_id(given: Option<&str>) -> Result<String, ApiError> {
    match given.map(str::trim) {
        None | Some("") => Ok(crate::import::new_batch_id()),
        Some(id)
            if id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
        {
            Ok(id.to_owned())
        }
        Some(_) => Err(ApiError::unprocessable(
            "invalid_batch_id",
            "batch_id is 1 to 64 of A-Z a-z 0-9 - _ .",
        )),
    }
}

#[OpenApi(tag = "ApiTags::EligibleEmails")]
impl EligibleApi {
    /// Adds one address to the allowlist, optionally with pre-assigned roles. Idempotent.
    #[oai(path = "/v1/admin/eligible-emails", method = "post")]
    async fn add_one(
        &self,
        auth: AdminAuth,
        body: Json<EligibleEmailRequest>,
        req: &Request,
    ) -> Result<Upserted, ApiError> {
        let admin = &auth.0;
        let row = RawRow::new(
            1,
            body.email.clone(),
            (!body.roles.is_empty()).then(|| body.roles.join(";")),
        );
        let context = ImportContext {
            batch_id: batch_id(None)?,
            source: "api",
            actor: Some(admin.actor()),
            ip: self.proxies.client_ip(req).map(|ip| ip.to_string()),
            dry_run: false,
            now: self.clock.now(),
        };
        let report = import_rows(&self.store, vec![row], context).await?;
        if let Some(invalid) = report.invalid.first() {
            return Err(ApiError::unprocessable(
                "invalid_row",
                invalid.reason.clone(),
            ));
        }
        Ok(if report.added > 0 {
            Upserted::Created(Json(report.into()))
        } else {
            Upserted::Ok(Json(report.into()))
        })
    }

    /// Adds many addresses in one transaction and reports on every row. Idempotent.
    #[oai(path = "/v1/admin/eligible-emails/bulk", method = "post")]
    async fn bulk(
        &self,
        auth: AdminAuth,
        body: Json<BulkRequest>,
        req: &Request,
    ) -> Result<Json<ImportReportView>, ApiError> {
        let admin = &auth.0;
        let context = ImportContext {
            batch_id: batch_id(body.batch_id.as_deref())?,
            source: "json",
            actor: Some(admin.actor()),
            ip: self.proxies.client_ip(req).map(|ip| ip.to_string()),
            dry_run: false,
            now: self.clock.now(),
        };
        let rows = body
            .0
            .emails
            .into_iter()
            .enumerate()
            .map(|(i, email)| RawRow::new(i as u64 + 1, email, None))
            .collect();
        Ok(Json(import_rows(&self.store, rows, context).await?.into()))
    }
}
