//! Roster imports: rows from a CSV file or a JSON list become allowlist entries
//! and a per-row report. Every row is parsed into domain types first; valid,
//! first-seen rows stream to the store in chunks, written in one transaction,
//! so a file of a million rows needs memory for one chunk plus the set of
//! addresses seen (16 bytes each), never for the whole file.

mod csv;
mod json;

use std::collections::HashSet;
use std::io::Read;

use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

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
    /// The row's role names, as given (a CSV cell already split); `None`
    /// when the upload has no roles.
    pub roles: Option<Vec<String>>,
    /// The row's text is not UTF-8 (`email` then holds a lossy rendering).
    pub unreadable: bool,
}

impl RawRow {
    pub fn new(line: u64, email: String, roles: Option<Vec<String>>) -> Self {
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
    /// The JSON body is not a bulk request: bad syntax, a value of the wrong
    /// type, a missing or repeated field. `reason` ends with the line and column.
    #[error("malformed JSON{}: {reason}", item.map(|i| format!(" at address {i} of `emails`")).unwrap_or_default())]
    MalformedJson { item: Option<u64>, reason: String },
    #[error("batch_id is 1 to 64 of A-Z a-z 0-9 - _ .")]
    InvalidBatchId,
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
    run(store, context, move |sink| {
        for row in CsvRows::new(reader)? {
            sink.push(row?)?;
        }
        Ok(())
    })
    .await
}

/// Imports a bulk JSON body (`{"emails": [..], "batch_id": ..}`) read from
/// `reader` (on the blocking pool) as it arrives; the body's `batch_id`, if
/// any, names the batch instead of `context.batch_id`.
pub async fn import_json<R: Read + Send + 'static>(
    store: &DynStore,
    reader: R,
    context: ImportContext,
) -> Result<ImportReport, ImportError> {
    run(store, context, move |sink| json::read_bulk(reader, sink)).await
}

/// Imports rows that are already in memory (one address added by the API).
pub async fn import_rows(
    store: &DynStore,
    rows: Vec<RawRow>,
    context: ImportContext,
) -> Result<ImportReport, ImportError> {
    run(store, context, move |sink| {
        rows.into_iter().try_for_each(|row| sink.push(row))
    })
    .await
}

/// A batch id as given (`None` or empty: a new one): 1 to 64 characters of
/// letters, digits, `-`, `_` and `.`, exactly as the spec's pattern states
/// (so not trimmed: a space is refused like any other character).
pub fn batch_id(given: Option<&str>) -> Result<String, ImportError> {
    match given {
        None | Some("") => Ok(new_batch_id()),
        Some(id)
            if id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
        {
            Ok(id.to_owned())
        }
        Some(_) => Err(ImportError::InvalidBatchId),
    }
}

/// Runs a reader (blocking), which pushes rows into a [`RowSink`], and the
/// store writer (async) side by side, joined by a small channel so that
/// neither runs far ahead of the other. The writer opens its transaction when
/// the first chunk is ready, so a batch id that a JSON body gives before its
/// addresses is used from the start.
async fn run<F>(
    store: &DynStore,
    context: ImportContext,
    read: F,
) -> Result<ImportReport, ImportError>
where
    F: FnOnce(&mut RowSink) -> Result<(), ImportError> + Send + 'static,
{
    let known_roles = store.role_names().await?;
    let (sender, receiver) = mpsc::channel(4);
    let (opened, named) = oneshot::channel::<String>();
    let mut import = RosterImport {
        batch_id: context.batch_id.clone(),
        source: context.source,
        added_by: context.actor.clone(),
        dry_run: context.dry_run,
        now: context.now,
    };
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            // No name: the reader failed before its first chunk.
            let Ok(batch_id) = named.await else {
                return Ok(None);
            };
            import.batch_id = batch_id;
            store.import_roster(import, receiver).await
        })
    };
    let parser = tokio::task::spawn_blocking(move || {
        let mut sink = RowSink::new(known_roles, context, sender, opened);
        read(&mut sink)?;
        sink.finish()
    });
    let parsed = parser.await.map_err(|_| ImportError::Interrupted)?;
    let written = writer.await.map_err(|_| ImportError::Interrupted)?;
    let mut report = parsed?;
    let counts = written?.ok_or(ImportError::Interrupted)?;
    report.added = counts.added;
    report.updated = counts.updated;
    report.unchanged = counts.unchanged;
    Ok(report)
}

/// Where a reader puts rows: validates and deduplicates each, sends valid
/// ones on to the store in chunks and the totals last, and counts the rest.
struct RowSink {
    known_roles: Vec<String>,
    context: ImportContext,
    sender: mpsc::Sender<ImportChunk>,
    /// Tells the writer the batch id; taken when the first chunk goes out.
    opened: Option<oneshot::Sender<String>>,
    report: ImportReport,
    seen: HashSet<u128>,
    chunk: Vec<EligibleEntry>,
}

impl RowSink {
    fn new(
        known_roles: Vec<String>,
        context: ImportContext,
        sender: mpsc::Sender<ImportChunk>,
        opened: oneshot::Sender<String>,
    ) -> Self {
        let report = ImportReport {
            batch_id: context.batch_id.clone(),
            dry_run: context.dry_run,
            ..Default::default()
        };
        Self {
            known_roles,
            context,
            sender,
            opened: Some(opened),
            report,
            seen: HashSet::new(),
            chunk: Vec::with_capacity(IMPORT_CHUNK),
        }
    }

    /// Rows pushed so far.
    fn rows(&self) -> u64 {
        self.report.rows
    }

    fn push(&mut self, row: RawRow) -> Result<(), ImportError> {
        self.report.rows += 1;
        match parse_row(&row, &self.known_roles) {
            Ok(entry) if self.seen.insert(fingerprint(&entry.email)) => {
                self.chunk.push(entry);
                if self.chunk.len() == IMPORT_CHUNK {
                    let full = std::mem::replace(&mut self.chunk, Vec::with_capacity(IMPORT_CHUNK));
                    self.send(ImportChunk::Rows(full))?;
                }
            }
            Ok(_) => self.report.duplicates += 1,
            Err(reason) => {
                self.report.invalid_total += 1;
                if self.report.invalid.len() < MAX_LISTED_INVALID {
                    self.report.invalid.push(InvalidRow {
                        line: row.line,
                        value: row.email.chars().take(256).collect(),
                        reason,
                    });
                }
            }
        }
        Ok(())
    }

    /// Names the batch as the upload itself asks (see [`batch_id`]); rows
    /// already sent to the store move to it.
    fn name_batch(&mut self, given: Option<&str>) -> Result<(), ImportError> {
        let named = batch_id(given)?;
        if given.is_some_and(|id| !id.is_empty()) {
            if self.opened.is_none() {
                self.send(ImportChunk::Rename(named.clone()))?;
            }
            self.context.batch_id = named.clone();
            self.report.batch_id = named;
        }
        Ok(())
    }

    /// Sends the last rows and the totals; the report lacks the store's counts.
    fn finish(mut self) -> Result<ImportReport, ImportError> {
        let last = std::mem::take(&mut self.chunk);
        self.send(ImportChunk::Rows(last))?;
        let (context, report) = (&self.context, &self.report);
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
        let totals = ImportTotals {
            rows: report.rows,
            duplicates: report.duplicates,
            invalid: report.invalid_total,
            audit,
        };
        self.send(ImportChunk::Finish(totals))?;
        Ok(self.report)
    }

    fn send(&mut self, chunk: ImportChunk) -> Result<(), ImportError> {
        if let Some(opened) = self.opened.take() {
            // The writer waits for this; it only goes away if it panicked.
            opened
                .send(self.context.batch_id.clone())
                .map_err(|_| ImportError::Interrupted)?;
        }
        // Fails only when the writer stopped (its error is reported instead).
        self.sender
            .blocking_send(chunk)
            .map_err(|_| ImportError::Interrupted)
    }
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
        Some(names) => {
            Role::parse_all(names.iter().map(String::as_str)).map_err(|e| e.to_string())?
        }
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
