//! CSV exports (members, allowlist, audit) that are safe to open in a spreadsheet.
//!
//! A cell starting with `=`, `+`, `-`, `@`, a tab or a carriage return would be
//! run as a formula by Excel, LibreOffice or Sheets (CSV injection), so such a
//! cell gets a leading `'`, which spreadsheets show as text and hide. The
//! escaping is applied to every cell, trusted or not: an email's local part may
//! begin with `-` or `+`, and audit details hold whatever a client sent.

use std::borrow::Cow;

/// The cell as written to an export.
pub fn escape_cell(cell: &str) -> Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        Cow::Owned(format!("'{cell}"))
    } else {
        Cow::Borrowed(cell)
    }
}

/// Encodes rows (each escaped) as CSV with CRLF line ends, as spreadsheets expect.
pub fn encode<R, C>(rows: impl IntoIterator<Item = R>) -> Result<Vec<u8>, csv::Error>
where
    R: IntoIterator<Item = C>,
    C: AsRef<str>,
{
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    for row in rows {
        let cells: Vec<String> = row
            .into_iter()
            .map(|cell| escape_cell(cell.as_ref()).into_owned())
            .collect();
        writer.write_record(&cells)?;
    }
    writer
        .into_inner()
        .map_err(|e| csv::Error::from(e.into_error()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_starts_are_neutralised() {
        for risky in ["=1+1", "+1", "-2", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(escape_cell(risky), format!("'{risky}"));
        }
        assert_eq!(escape_cell("ada@example.org"), "ada@example.org");
        assert_eq!(escape_cell(""), "");
    }

    #[test]
    fn encodes_quoted_cells_with_crlf() {
        let bytes = encode([vec!["a,b", "=x"], vec!["plain", "say \"hi\""]]).unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "\"a,b\",'=x\r\nplain,\"say \"\"hi\"\"\"\r\n"
        );
    }
}
