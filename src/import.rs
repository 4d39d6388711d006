//! Roster imports: turning raw rows (from JSON now, CSV later) into allowlist
//! entries and a per-row report. Every row is parsed into domain types first;
//! only valid, first-seen rows reach the store, in one transaction.

use std::collections::HashSet;

use crate::domain::{Email, Role};
use crate::store::{AuditEntry, DynStore, EligibleEntry, EligibleUpload, StoreError};

/// At most this many invalid rows are listed in a report; `invalid_total` counts them all.
pub const MAX_LISTED_INVALID: usize = 100;

/// One row as it arrived.
#[derive(Debug, Clone)]
pub struct RawRow {
    /// 1-based position in the upload (the line of a CSV, the index of a JSON item).
    pub line: u64,
    pub email: String,
    /// Roles separated by `;`, `|` or `,`; `None` when the upload has no roles.
    pub roles: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRow {
    pub line: u64,
    pub value: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub batch_id: String,
    pub rows: u64,
    pub added: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub duplicates: u64,
    pub invalid: Vec<InvalidRow>,
    pub invalid_total: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who uploads, and under which batch.
#[derive(Debug, Clone)]
pub struct ImportContext {
    pub batch_id: String,
    pub source: &'static str,
    pub actor: Option<String>,
    pub ip: Option<String>,
}

/// Parses `rows`, then writes the valid ones as one batch.
pub async fn import_rows(
    store: &DynStore,
    rows: impl IntoIterator<Item = RawRow>,
    context: ImportContext,
) -> Result<ImportReport, ImportError> {
    let known_roles = store.role_names().await?;
    let mut report = ImportReport {
        batch_id: context.batch_id.clone(),
        ..Default::default()
    };
    let mut seen = HashSet::new();
    let mut entries = Vec::new();
    for row in rows {
        report.rows += 1;
        match parse_row(&row, &known_roles) {
            Ok(entry) if seen.insert(entry.email.clone()) => entries.push(entry),
            Ok(_) => report.duplicates += 1,
            Err(reason) => {
                report.invalid_total += 1;
                if report.invalid.len() < MAX_LISTED_INVALID {
                    report.invalid.push(InvalidRow {
                        line: row.line,
                        value: row.email.clone(),
                        reason,
                    });
                }
            }
        }
    }
    let audit = AuditEntry::new("allowlist.import")
        .target(context.batch_id.clone())
        .ip(context.ip.clone())
        .details(serde_json::json!({
            "source": context.source,
            "rows": report.rows,
            "valid": entries.len(),
            "duplicates": report.duplicates,
            "invalid": report.invalid_total,
        }));
    let audit = match &context.actor {
        Some(actor) => audit.actor(actor.clone()),
        None => audit,
    };
    let counts = store
        .upsert_eligible(EligibleUpload {
            entries: &entries,
            batch_id: &context.batch_id,
            source: context.source,
            added_by: context.actor.as_deref(),
            audit,
            now: crate::clock::now(),
        })
        .await?;
    report.added = counts.added;
    report.updated = counts.updated;
    report.unchanged = counts.unchanged;
    Ok(report)
}

fn parse_row(row: &RawRow, known_roles: &[String]) -> Result<EligibleEntry, String> {
    let email = Email::parse(&row.email).map_err(|e| e.to_string())?;
    let roles = match &row.roles {
        Some(raw) => Role::parse_list(raw).map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    if let Some(unknown) = roles
        .iter()
        .find(|r| !known_roles.iter().any(|k| k == r.as_str()))
    {
        return Err(format!("unknown role `{unknown}`"));
    }
    Ok(EligibleEntry { email, roles })
}
