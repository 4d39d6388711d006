//! Roster imports: rows from a CSV file or a JSON list become allowlist entries
//! and a per-row report. Every row is parsed into domain types first; valid,
//! first-seen rows stream to the store in chunks, written in one transaction,
//! so a file of a million rows needs memory for one chunk plus the set of
//! addresses seen (16 bytes each), never for the whole file.

mod csv;

use std::collections::HashSet;
use std::io::Read;

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

pub use self::csv::CsvRows;
use crate::domain::{Email, Role};
use crate::store::{
    AuditEntry, DynStore, EligibleEntry, IMPORT_CHUNK, ImportChunk, ImportTotals, RosterImport,
    StoreError,
};

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
    /// The row's text is not UTF-8 (`email` then holds a lossy rendering).
    pub unreadable: bool,
}

impl RawRow {
    pub fn new(line: u64, email: String, roles: Option<String>) -> Self {
        Self {
            line,
            email,
            roles,
            unreadable: false,
        }
    }
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
    pub dry_run: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The upload could not be read to its end (cut off, too large, I/O).
    #[error("cannot read the upload: {0}")]
    Read(std::io::Error),
    /// The CSV structure itself is broken (e.g. an unterminated quote).
    #[error("malformed CSV{}: {reason}", line.map(|l| format!(" at line {l}")).unwrap_or_default())]
    Malformed { line: Option<u64>, reason: String },
    #[error("the import was interrupted")]
    Interrupted,
}

/// Who uploads, and under which batch.
#[derive(Debug, Clone)]
pub struct ImportContext {
    pub batch_id: String,
    pub source: &'static str,
    pub actor: Option<String>,
    pub ip: Option<String>,
    pub dry_run: bool,
    /// When the upload happens (unix seconds), from the caller's clock.
    pub now: i64,
}

/// The id of an upload that names none: `batch-` and a time-ordered UUID.
pub fn new_batch_id() -> String {
    format!("batch-{}", uuid::Uuid::now_v7())
}

/// Every row of a CSV roster that an import would refuse, with the reason,
/// read and checked as an import would but written nowhere: the file an admin
/// downloads to fix and upload again.
pub async fn invalid_rows<R: Read + Send + 'static>(
    store: &DynStore,
    reader: R,
) -> Result<Vec<(RawRow, String)>, ImportError> {
    let known_roles = store.role_names().await?;
    let check = move || {
        let mut invalid = Vec::new();
        for row in CsvRows::new(reader)? {
            let row = row?;
            if let Err(reason) = parse_row(&row, &known_roles) {
                invalid.push((row, reason));
            }
        }
        Ok(invalid)
    };
    tokio::task::spawn_blocking(check)
        .await
        .map_err(|_| ImportError::Interrupted)?
}

/// Imports a CSV roster read from `reader` (on the blocking pool).
pub async fn import_csv<R: Read + Send + 'static>(
    store: &DynStore,
    reader: R,
    context: ImportContext,
) -> Result<ImportReport, ImportError> {
    run(store, context, move || CsvRows::new(reader)).await
}

/// Imports rows that are already in memory (the JSON endpoints).
pub async fn import_rows(
    store: &DynStore,
    rows: Vec<RawRow>,
    context: ImportContext,
) -> Result<ImportReport, ImportError> {
    run(store, context, move || {
        Ok::<_, ImportError>(rows.into_iter().map(Ok))
    })
    .await
}

/// Runs the parser (blocking) and the store writer (async) side by side, joined
/// by a small channel so that neither runs far ahead of the other.
async fn run<I, F>(
    store: &DynStore,
    context: ImportContext,
    open: F,
) -> Result<ImportReport, ImportError>
where
    F: FnOnce() -> Result<I, ImportError> + Send + 'static,
    I: Iterator<Item = Result<RawRow, ImportError>>,
{
    let known_roles = store.role_names().await?;
    let (sender, receiver) = mpsc::channel(4);
    let import = RosterImport {
        batch_id: context.batch_id.clone(),
        source: context.source,
        added_by: context.actor.clone(),
        dry_run: context.dry_run,
        now: context.now,
    };
    let writer = {
        let store = store.clone();
        tokio::spawn(async move { store.import_roster(import, receiver).await })
    };
    let parser =
        tokio::task::spawn_blocking(move || parse_all(open()?, &known_roles, &context, &sender));
    let parsed = parser.await.map_err(|_| ImportError::Interrupted)?;
    let written = writer.await.map_err(|_| ImportError::Interrupted)?;
    let counts = written?;
    let mut report = parsed?;
    let counts = counts.ok_or(ImportError::Interrupted)?;
    report.added = counts.added;
    report.updated = counts.updated;
    report.unchanged = counts.unchanged;
    Ok(report)
}

/// Validates and deduplicates every row, sending valid ones on in chunks and
/// the totals last. Returns the report without the store's counts.
fn parse_all(
    rows: impl Iterator<Item = Result<RawRow, ImportError>>,
    known_roles: &[String],
    context: &ImportContext,
    sender: &mpsc::Sender<ImportChunk>,
) -> Result<ImportReport, ImportError> {
    let mut report = ImportReport {
        batch_id: context.batch_id.clone(),
        dry_run: context.dry_run,
        ..Default::default()
    };
    let mut seen: HashSet<u128> = HashSet::new();
    let mut chunk = Vec::with_capacity(IMPORT_CHUNK);
    for row in rows {
        let row = row?;
        report.rows += 1;
        match parse_row(&row, known_roles) {
            Ok(entry) if seen.insert(fingerprint(&entry.email)) => {
                chunk.push(entry);
                if chunk.len() == IMPORT_CHUNK {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(IMPORT_CHUNK));
                    send(sender, ImportChunk::Rows(full))?;
                }
            }
            Ok(_) => report.duplicates += 1,
            Err(reason) => {
                report.invalid_total += 1;
                if report.invalid.len() < MAX_LISTED_INVALID {
                    report.invalid.push(InvalidRow {
                        line: row.line,
                        value: row.email.chars().take(256).collect(),
                        reason,
                    });
                }
            }
        }
    }
    send(sender, ImportChunk::Rows(chunk))?;
    let audit = AuditEntry::new("allowlist.import")
        .target(context.batch_id.clone())
        .ip(context.ip.clone())
        .details(serde_json::json!({
            "source": context.source,
            "rows": report.rows,
            "duplicates": report.duplicates,
            "invalid": report.invalid_total,
        }));
    let audit = match &context.actor {
        Some(actor) => audit.actor(actor.clone()),
        None => audit,
    };
    send(
        sender,
        ImportChunk::Finish(ImportTotals {
            rows: report.rows,
            duplicates: report.duplicates,
            invalid: report.invalid_total,
            audit,
        }),
    )?;
    Ok(report)
}

fn send(sender: &mpsc::Sender<ImportChunk>, chunk: ImportChunk) -> Result<(), ImportError> {
    // Fails only when the writer stopped (its error is reported instead).
    sender
        .blocking_send(chunk)
        .map_err(|_| ImportError::Interrupted)
}

/// 128 bits of the address' SHA-256: enough that two of a billion addresses
/// collide with odds of about 1e-21, in an eighth of the memory of the text.
fn fingerprint(email: &Email) -> u128 {
    let digest = Sha256::digest(email.as_str().as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    u128::from_le_bytes(bytes)
}

fn parse_row(row: &RawRow, known_roles: &[String]) -> Result<EligibleEntry, String> {
    if row.unreadable {
        return Err("the row is not valid UTF-8".into());
    }
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
