//! Reading a roster CSV the way spreadsheets write them: an optional UTF-8 BOM,
//! CRLF or LF, quoted fields, blank lines, and `,` or `;` as the delimiter
//! (sniffed from the first line). A header row naming an `email` column (any
//! case) picks it, and a `roles` column if present; without one, the first
//! column is the address. Rows are read one at a time, so a file of any size
//! is read in constant memory.

use std::io::{BufRead, BufReader, Read};

use super::{ImportError, RawRow};
use crate::domain::Role;

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
        let roles = self.roles.and_then(cell).map(|c| {
            c.map(|text| {
                Role::split_list(text)
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
        });
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

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::domain::Email;

    fn read_all(bytes: &[u8]) -> Result<Vec<RawRow>, ImportError> {
        CsvRows::new(bytes)?.collect()
    }

    /// Bytes that are mostly CSV syntax: quotes, both delimiters, every line
    /// end, a BOM, invalid UTF-8, and some text.
    fn csvish() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![
            Just(b'"'),
            Just(b','),
            Just(b';'),
            Just(b'\n'),
            Just(b'\r'),
            Just(b' '),
            Just(0xEF),
            Just(0xBB),
            Just(0xBF),
            Just(0xFF),
            Just(b'@'),
            b'a'..=b'e',
            any::<u8>(),
        ];
        let body = proptest::collection::vec(byte, 0..300);
        (any::<bool>(), body).prop_map(|(bom, body)| {
            let header: &[u8] = if bom {
                b"\xEF\xBB\xBFemail,roles\n"
            } else {
                b""
            };
            [header, &body].concat()
        })
    }

    fn address() -> impl Strategy<Value = String> {
        "[a-z0-9][a-z0-9._+-]{0,20}[a-z0-9]@[a-z0-9]{1,12}\\.(org|example|de)"
            .prop_filter("a valid address", |a| Email::parse(a).is_ok())
    }

    fn roles() -> impl Strategy<Value = Vec<String>> {
        proptest::collection::vec("[a-z][a-z0-9_-]{0,12}", 0..4)
    }

    proptest! {
        #[test]
        fn never_panics_on_any_bytes(bytes in prop_oneof![csvish(), proptest::collection::vec(any::<u8>(), 0..300)]) {
            let _ = read_all(&bytes);
        }

        /// What the `csv` crate writes, as a spreadsheet would, reads back as written.
        #[test]
        fn rows_written_by_a_csv_writer_read_back_the_same(
            rows in proptest::collection::vec((address(), roles()), 1..40),
            semicolons in any::<bool>(),
            crlf in any::<bool>(),
            separator in prop_oneof![Just("|"), Just(";"), Just(",")],
        ) {
            let mut writer = csv::WriterBuilder::new()
                .delimiter(if semicolons { b';' } else { b',' })
                .terminator(if crlf { csv::Terminator::CRLF } else { csv::Terminator::Any(b'\n') })
                .from_writer(Vec::new());
            writer.write_record(["email", "roles"]).unwrap();
            for (email, roles) in &rows {
                writer.write_record([email.as_str(), &roles.join(separator)]).unwrap();
            }
            let bytes = writer.into_inner().unwrap();

            let read = read_all(&bytes).unwrap();
            prop_assert_eq!(read.len(), rows.len());
            for (i, (row, (email, roles))) in read.iter().zip(&rows).enumerate() {
                prop_assert_eq!(row.line, i as u64 + 2);
                prop_assert!(!row.unreadable);
                prop_assert_eq!(&row.email, email);
                prop_assert_eq!(row.roles.as_ref(), Some(roles));
            }
        }
    }
}
