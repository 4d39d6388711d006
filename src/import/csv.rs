//! Reading a roster CSV the way spreadsheets write them: an optional UTF-8 BOM,
//! CRLF or LF, quoted fields, blank lines, and `,` or `;` as the delimiter
//! (sniffed from the first line). A header row naming an `email` column (any
//! case) picks it, and a `roles` column if present; without one, the first
//! column is the address. Rows are read one at a time, so a file of any size
//! is read in constant memory.

use std::io::{BufRead, BufReader, Read};

use super::{ImportError, RawRow};

/// At most this many bytes of a cell are echoed back in a report.
const MAX_ECHO: usize = 256;

/// The input with line ends made `\n` and one appended, so every record ends
/// with exactly one `\n` and the reader's line count is exact (see `row_from`).
type Input<R> = std::io::Chain<LfOnly<BufReader<R>>, &'static [u8]>;

/// Turns `\r\n` and lone `\r` into `\n` as bytes stream through.
pub struct LfOnly<R> {
    inner: R,
    after_cr: bool,
}

impl<R: Read> Read for LfOnly<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let read = self.inner.read(buf)?;
            if read == 0 {
                return Ok(0);
            }
            let mut kept = 0;
            for i in 0..read {
                let byte = buf[i];
                if byte == b'\n' && self.after_cr {
                    self.after_cr = false;
                    continue;
                }
                self.after_cr = byte == b'\r';
                buf[kept] = if self.after_cr { b'\n' } else { byte };
                kept += 1;
            }
            if kept > 0 {
                return Ok(kept);
            }
        }
    }
}

pub struct CsvRows<R: Read> {
    records: csv::Reader<Input<R>>,
    email: usize,
    roles: Option<usize>,
    /// A first row that turned out to be data, not a header.
    pending: Option<csv::ByteRecord>,
    record: csv::ByteRecord,
}

impl<R: Read> CsvRows<R> {
    pub fn new(reader: R) -> Result<Self, ImportError> {
        let mut reader = BufReader::with_capacity(64 * 1024, reader);
        let head = reader.fill_buf().map_err(ImportError::Read)?;
        let bom = head.starts_with(b"\xEF\xBB\xBF");
        let delimiter = sniff_delimiter(&head[if bom { 3 } else { 0 }..]);
        if bom {
            reader.consume(3);
        }
        let mut records = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(false)
            .flexible(true)
            .from_reader(
                LfOnly {
                    inner: reader,
                    after_cr: false,
                }
                .chain(&b"\n"[..]),
            );
        let (mut email, mut roles, mut pending) = (0, None, None);
        let mut first = csv::ByteRecord::new();
        // The first non-blank record is a header, or the first data row.
        while records.read_byte_record(&mut first).map_err(csv_error)? {
            if is_blank(&first) {
                continue;
            }
            let names: Vec<String> = first
                .iter()
                .map(|cell| String::from_utf8_lossy(cell).trim().to_ascii_lowercase())
                .collect();
            match names.iter().position(|name| name == "email") {
                Some(column) => {
                    email = column;
                    roles = names.iter().position(|n| n == "roles" || n == "role");
                }
                None => pending = Some(first),
            }
            break;
        }
        Ok(Self {
            records,
            email,
            roles,
            pending,
            record: csv::ByteRecord::new(),
        })
    }

    /// The record's first line: csv counts a record's position from before the
    /// blank lines it skipped, so it is worked out back from the reader's line
    /// after the record (every record ends with a newline, thanks to `Input`).
    fn row_from(&self, record: &csv::ByteRecord) -> RawRow {
        let inner_newlines: u64 = record
            .iter()
            .map(|cell| cell.iter().filter(|b| **b == b'\n').count() as u64)
            .sum();
        let line = self
            .records
            .position()
            .line()
            .saturating_sub(1 + inner_newlines);
        let cell = |i: usize| record.get(i).map(|c| std::str::from_utf8(c));
        let email = match cell(self.email) {
            Some(Ok(text)) => Ok(text.trim().to_owned()),
            None => Ok(String::new()),
            Some(Err(_)) => Err(echo(&String::from_utf8_lossy(
                record.get(self.email).unwrap_or_default(),
            ))),
        };
        let roles = self.roles.and_then(cell).map(|c| c.map(str::to_owned));
        match (email, roles) {
            (Ok(email), Some(Ok(roles))) => RawRow {
                line,
                email,
                roles: Some(roles),
                unreadable: false,
            },
            (Ok(email), None) => RawRow {
                line,
                email,
                roles: None,
                unreadable: false,
            },
            (Ok(value) | Err(value), _) => RawRow {
                line,
                email: echo(&value),
                roles: None,
                unreadable: true,
            },
        }
    }
}

impl<R: Read> Iterator for CsvRows<R> {
    type Item = Result<RawRow, ImportError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(record) = self.pending.take() {
            return Some(Ok(self.row_from(&record)));
        }
        loop {
            let mut record = std::mem::take(&mut self.record);
            match self.records.read_byte_record(&mut record) {
                Ok(false) => return None,
                Ok(true) if is_blank(&record) => self.record = record,
                Ok(true) => {
                    let row = self.row_from(&record);
                    self.record = record;
                    return Some(Ok(row));
                }
                Err(err) => return Some(Err(csv_error(err))),
            }
        }
    }
}

/// `;` when the first line has more semicolons than commas outside quotes, else `,`.
fn sniff_delimiter(head: &[u8]) -> u8 {
    let line = head
        .split(|b| *b == b'\n')
        .find(|line| line.iter().any(|b| !b.is_ascii_whitespace()))
        .unwrap_or_default();
    let (mut commas, mut semicolons, mut quoted) = (0, 0, false);
    for byte in line {
        match byte {
            b'"' => quoted = !quoted,
            b',' if !quoted => commas += 1,
            b';' if !quoted => semicolons += 1,
            _ => {}
        }
    }
    if semicolons > commas { b';' } else { b',' }
}

fn is_blank(record: &csv::ByteRecord) -> bool {
    record
        .iter()
        .all(|cell| cell.iter().all(|b| b.is_ascii_whitespace()))
}

fn echo(value: &str) -> String {
    value.chars().take(MAX_ECHO).collect()
}

fn csv_error(err: csv::Error) -> ImportError {
    let line = err.position().map(|p| p.line());
    match err.into_kind() {
        csv::ErrorKind::Io(io) => ImportError::Read(io),
        other => ImportError::Malformed {
            line,
            reason: format!("{other:?}"),
        },
    }
}
