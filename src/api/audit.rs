use chrono::{DateTime, Utc};
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::input::CursorText;
use super::paging::{self, CsvResponse};
use super::views::timestamp;
use super::{AdminAuth, ApiTags};
use crate::error::ApiError;
use crate::store::{AuditFilter, AuditRow, DynStore};

pub struct AuditApi {
    pub store: DynStore,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct AuditView {
    pub id: String,
    pub at: DateTime<Utc>,
    /// Member id, or API key prefix (`gh_…`), or `cli`; absent for anonymous requests.
    pub actor: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub details: serde_json::Value,
    pub ip: Option<String>,
}

impl From<AuditRow> for AuditView {
    fn from(row: AuditRow) -> Self {
        Self {
            details: serde_json::from_str(&row.details).unwrap_or_default(),
            id: row.id,
            at: timestamp(row.at),
            actor: row.actor,
            action: row.action,
            target: row.target,
            ip: row.ip,
        }
    }
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct AuditPage {
    pub items: Vec<AuditView>,
    pub next_cursor: Option<String>,
}

fn filter(
    actor: Query<Option<String>>,
    action: Query<Option<String>>,
    target: Query<Option<String>>,
    since: Query<Option<DateTime<Utc>>>,
    until: Query<Option<DateTime<Utc>>>,
) -> AuditFilter {
    AuditFilter {
        actor: actor.0,
        action: action.0,
        target: target.0,
        since: since.0.map(|t| t.timestamp()),
        until: until.0.map(|t| t.timestamp()),
        before: None,
        limit: 0,
    }
}

#[OpenApi(tag = "ApiTags::Audit")]
impl AuditApi {
    /// The audit log, newest first; `since` inclusive, `until` exclusive.
    #[oai(path = "/v1/admin/audit", method = "get")]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        _auth: AdminAuth,
        actor: Query<Option<String>>,
        action: Query<Option<String>>,
        target: Query<Option<String>>,
        since: Query<Option<DateTime<Utc>>>,
        until: Query<Option<DateTime<Utc>>>,
        /// Page size (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
        /// The `next_cursor` of the previous page.
        cursor: Query<Option<CursorText>>,
    ) -> Result<Json<AuditPage>, ApiError> {
        let mut filter = filter(actor, action, target, since, until);
        filter.limit = paging::limit(limit.0)?;
        filter.before = paging::decode_cursor(cursor.0.as_ref())?;
        let rows = self.store.list_audit(&filter).await?;
        Ok(Json(AuditPage {
            next_cursor: paging::next_cursor(&rows, filter.limit, |r| r.id.as_str()),
            items: rows.into_iter().map(AuditView::from).collect(),
        }))
    }

    /// The audit log as CSV (same filters).
    #[oai(path = "/v1/admin/audit/export", method = "get")]
    #[allow(clippy::too_many_arguments)]
    async fn export(
        &self,
        _auth: AdminAuth,
        actor: Query<Option<String>>,
        action: Query<Option<String>>,
        target: Query<Option<String>>,
        since: Query<Option<DateTime<Utc>>>,
        until: Query<Option<DateTime<Utc>>>,
    ) -> Result<CsvResponse, ApiError> {
        let base = filter(actor, action, target, since, until);
        Ok(audit_csv(self.store.clone(), base))
    }
}

/// The rows `base` selects as a streamed CSV download, newest first.
pub fn audit_csv(store: DynStore, base: AuditFilter) -> CsvResponse {
    let header = ["id", "at", "actor", "action", "target", "details", "ip"];
    paging::csv_export("audit.csv", &header, move |before| {
        let (store, mut filter) = (store.clone(), base.clone());
        async move {
            filter.before = before;
            filter.limit = paging::EXPORT_PAGE;
            let rows = store.list_audit(&filter).await?;
            let next = (rows.len() as i64 == filter.limit)
                .then(|| rows.last().map(|r| r.id.clone()))
                .flatten();
            let rows = rows
                .into_iter()
                .map(|r| {
                    vec![
                        r.id,
                        timestamp(r.at).to_rfc3339(),
                        r.actor.unwrap_or_default(),
                        r.action,
                        r.target.unwrap_or_default(),
                        r.details,
                        r.ip.unwrap_or_default(),
                    ]
                })
                .collect();
            Ok((rows, next))
        }
    })
}
