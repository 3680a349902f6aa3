//! The panel list parser: CSV as an EMR or billing export gives it.
//!
//! One row per patient: `PHN, surname, given name, date of birth, service code
//! (98990), facility number`. The parser is pure and total: any bytes give
//! either a file-level refusal ([`FileError`]: too large, too many rows, no
//! rows) or one [`ParsedRow`] per record, each valid or with the reason it is
//! not. It never panics (a fuzz target in `fuzz/` holds it to that).
//!
//! What it forgives, because real exports do it: a UTF-8 byte-order mark, CRLF
//! or lone-CR line ends, RFC 4180 quoted fields (with `""` and line breaks
//! inside), blank lines and all-empty rows (`,,,,,`), a header row (recognised
//! by letters in the PHN column and no 98990 in the service code's), trailing empty fields, spaces around fields,
//! and dates written `YYYY-MM-DD`, `YYYY/MM/DD` or `YYYYMMDD`.
//!
//! Messages never contain a field's value: a row may hold a PHN or a name.

use std::collections::HashMap;

use chrono::NaiveDate;

use crate::domain::{DateOfBirth, FacilityNumber, PanelEntry, PersonName, Phn};

/// The bounds an upload must stay within.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest file, in bytes.
    pub max_bytes: usize,
    /// The most patient rows (the header and blank lines do not count).
    pub max_rows: usize,
}

impl Default for Limits {
    /// Room for the largest panels (10,000 patients) at about 60 bytes a row.
    fn default() -> Self {
        Limits { max_bytes: 2 * 1024 * 1024, max_rows: 10_000 }
    }
}

/// Why a whole file is refused (nothing is changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    /// More bytes than [`Limits::max_bytes`].
    #[error("the panel file is larger than the limit of {limit} bytes; split it into smaller files")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// More patient rows than [`Limits::max_rows`].
    #[error("the panel file has more than the limit of {limit} patient rows; split it into smaller files")]
    TooManyRows {
        /// The limit.
        limit: usize,
    },
    /// No patient rows at all.
    #[error(
        "the panel file has no patient rows (expected: PHN, surname, given name, date of birth, 98990, facility number)"
    )]
    Empty,
}

/// One valid patient row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PanelRow {
    /// The patient.
    pub phn: Phn,
    /// Surname.
    pub surname: PersonName,
    /// Given name.
    pub given_name: PersonName,
    /// Date of birth.
    pub date_of_birth: DateOfBirth,
}

/// Why a row is not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowProblem {
    /// The PHN column is not a valid PHN.
    InvalidPhn(String),
    /// The row is not a panel row (wrong field count, bad name or date, wrong
    /// service code or facility, broken quoting, not UTF-8).
    Malformed(String),
    /// The same PHN appeared on an earlier valid row of this file.
    Duplicate {
        /// The line of the first occurrence.
        first_line: u32,
    },
}

impl RowProblem {
    /// What a person reads in the report.
    pub fn message(&self) -> String {
        match self {
            RowProblem::InvalidPhn(m) | RowProblem::Malformed(m) => m.clone(),
            RowProblem::Duplicate { first_line } => {
                format!("this PHN already appears on line {first_line} of the file; only the first is used")
            }
        }
    }
}

/// One record of the file and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRow {
    /// The 1-based line the record starts on (counting the header and blank lines).
    pub line: u32,
    /// The row, or why it is refused.
    pub row: Result<PanelRow, RowProblem>,
}

/// A parsed file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedPanel {
    /// Every patient row, in file order.
    pub rows: Vec<ParsedRow>,
    /// Whether a header row was recognised and skipped.
    pub header: bool,
}

/// The fields of one row, in order.
const FIELDS: usize = 6;
const SHAPE: &str = "a panel row has 6 fields: PHN, surname, given name, date of birth, service code, facility number";

/// Parses a panel file for an upload to `facility`. `today` bounds dates of birth.
pub fn parse(
    input: &[u8],
    facility: &FacilityNumber,
    limits: Limits,
    today: NaiveDate,
) -> Result<ParsedPanel, FileError> {
    if input.len() > limits.max_bytes {
        return Err(FileError::TooLarge { limit: limits.max_bytes });
    }
    let mut out = ParsedPanel::default();
    let mut first_valid: HashMap<Phn, u32> = HashMap::new();
    let mut first_record = true;
    for record in Records::new(input) {
        let fields = match record.fields {
            Ok(fields) => fields,
            Err(problem) => {
                first_record = false;
                push(&mut out, limits, record.line, Err(RowProblem::Malformed(problem.to_string())))?;
                continue;
            }
        };
        if fields.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        if std::mem::take(&mut first_record) && is_header(&fields) {
            out.header = true;
            continue;
        }
        let row = parse_row(&fields, facility, today).and_then(|row| match first_valid.get(&row.phn) {
            Some(first_line) => Err(RowProblem::Duplicate { first_line: *first_line }),
            None => {
                first_valid.insert(row.phn, record.line);
                Ok(row)
            }
        });
        push(&mut out, limits, record.line, row)?;
    }
    if out.rows.is_empty() {
        return Err(FileError::Empty);
    }
    Ok(out)
}

fn push(out: &mut ParsedPanel, limits: Limits, line: u32, row: Result<PanelRow, RowProblem>) -> Result<(), FileError> {
    if out.rows.len() >= limits.max_rows {
        return Err(FileError::TooManyRows { limit: limits.max_rows });
    }
    out.rows.push(ParsedRow { line, row });
    Ok(())
}

/// A header names its columns: a PHN column never holds a letter. A first
/// row with the service code 98990 is a patient's, whatever its PHN holds (a
/// letter O typed for a zero): it is reported, not skipped. So is a row of one
/// field, which is no list of columns (a file written with another delimiter,
/// `;` say): it is reported as malformed, which names the shape.
fn is_header(fields: &[String]) -> bool {
    fields.len() > 1
        && fields[0].chars().any(|c| c.is_alphabetic())
        && fields.get(4).is_none_or(|code| code.trim() != PanelEntry::SERVICE_CODE)
}

fn parse_row(fields: &[String], facility: &FacilityNumber, today: NaiveDate) -> Result<PanelRow, RowProblem> {
    let malformed = |m: &str| RowProblem::Malformed(m.to_string());
    if fields.len() < FIELDS || fields[FIELDS..].iter().any(|f| !f.trim().is_empty()) {
        return Err(RowProblem::Malformed(format!("{SHAPE}; this row has {}", fields.len())));
    }
    let phn = Phn::parse(fields[0].trim()).map_err(|e| RowProblem::InvalidPhn(e.message))?;
    let surname = PersonName::parse(&fields[1]).map_err(|e| malformed(&format!("surname: {}", e.message)))?;
    let given_name = PersonName::parse(&fields[2]).map_err(|e| malformed(&format!("given name: {}", e.message)))?;
    let date_of_birth = parse_date(fields[3].trim(), today)?;
    if fields[4].trim() != PanelEntry::SERVICE_CODE {
        return Err(malformed("the service code must be 98990 (attachment to a panel)"));
    }
    match FacilityNumber::parse(&fields[5]) {
        Ok(f) if &f == facility => {}
        Ok(_) => return Err(malformed("the facility number differs from the one this panel is submitted for")),
        Err(e) => return Err(malformed(&format!("facility number: {}", e.message))),
    }
    Ok(PanelRow { phn, surname, given_name, date_of_birth })
}

fn parse_date(s: &str, today: NaiveDate) -> Result<DateOfBirth, RowProblem> {
    // `YYYYMMDD` is spelt out: chrono's `%Y` would read all eight digits as a year.
    let compact = (s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| format!("{}-{}-{}", &s[..4], &s[4..6], &s[6..]));
    let s = compact.as_deref().unwrap_or(s);
    let date = ["%Y-%m-%d", "%Y/%m/%d"]
        .iter()
        .find_map(|f| NaiveDate::parse_from_str(s, f).ok().filter(|_| s.len() == 10))
        .ok_or_else(|| {
            RowProblem::Malformed("date of birth: write it YYYY-MM-DD (or YYYYMMDD) as a real date".to_string())
        })?;
    DateOfBirth::from_date(date, today).map_err(|e| RowProblem::Malformed(format!("date of birth: {}", e.message)))
}

/// One record as the lexer found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The 1-based line it starts on.
    pub line: u32,
    /// Its fields, or why the record cannot be read.
    pub fields: Result<Vec<String>, &'static str>,
}

/// The records of a CSV text, one at a time (RFC 4180, forgiving line ends).
/// Streaming-friendly: it holds only a position in the input.
pub struct Records<'a> {
    input: &'a [u8],
    pos: usize,
    line: u32,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

impl<'a> Records<'a> {
    /// Records of `input`, after a byte-order mark if there is one.
    pub fn new(input: &'a [u8]) -> Self {
        let input = input.strip_prefix(BOM).unwrap_or(input);
        Records { input, pos: 0, line: 1 }
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    /// Consumes a line end at the position, if there is one (`\n`, `\r\n` or `\r`).
    fn line_end(&mut self) -> bool {
        match self.peek() {
            Some(b'\n') => self.pos += 1,
            Some(b'\r') => {
                self.pos += 1;
                if self.peek() == Some(b'\n') {
                    self.pos += 1;
                }
            }
            _ => return false,
        }
        self.line += 1;
        true
    }

    /// Skips the rest of a broken record's line.
    fn skip_line(&mut self) {
        while self.pos < self.input.len() && !self.line_end() {
            self.pos += 1;
        }
    }

    /// Reads one field, leaving the position on its delimiter (or the end).
    fn field(&mut self) -> Result<Vec<u8>, &'static str> {
        let mut out = Vec::new();
        // Spaces before an opening quote are forgiven, as spreadsheets write them.
        let start = self.pos;
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
        if self.peek() != Some(b'"') {
            self.pos = start;
            while let Some(b) = self.peek() {
                match b {
                    b',' | b'\n' | b'\r' => break,
                    b'"' => return Err("a quote appears inside an unquoted field"),
                    _ => out.push(b),
                }
                self.pos += 1;
            }
            return Ok(out);
        }
        self.pos += 1;
        loop {
            match self.peek() {
                None => return Err("a quoted field is not closed"),
                Some(b'"') if self.input.get(self.pos + 1) == Some(&b'"') => {
                    out.push(b'"');
                    self.pos += 2;
                }
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b) => {
                    if b == b'\n' || (b == b'\r' && self.input.get(self.pos + 1) != Some(&b'\n')) {
                        self.line += 1;
                    }
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
        match self.peek() {
            None | Some(b',' | b'\n' | b'\r') => Ok(out),
            Some(_) => Err("text follows a closing quote"),
        }
    }

    fn record(&mut self) -> Result<Vec<String>, &'static str> {
        let mut fields = Vec::with_capacity(FIELDS);
        loop {
            let raw = self.field()?;
            let text = String::from_utf8(raw).map_err(|_| "the row is not UTF-8 text")?;
            fields.push(text);
            // A row with far more fields than a panel row is not worth keeping in memory.
            if fields.len() > 64 {
                return Err("the row has more than 64 fields");
            }
            match self.peek() {
                Some(b',') => self.pos += 1,
                _ => {
                    self.line_end();
                    return Ok(fields);
                }
            }
        }
    }
}

impl Iterator for Records<'_> {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        if self.pos >= self.input.len() {
            return None;
        }
        let line = self.line;
        let fields = self.record();
        if fields.is_err() {
            self.skip_line();
        }
        Some(Record { line, fields })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 24).unwrap()
    }

    fn facility() -> FacilityNumber {
        FacilityNumber::parse("0F111").unwrap()
    }

    fn phn(i: u32) -> Phn {
        (i * 7919..).find_map(Phn::with_body).unwrap()
    }

    fn row(i: u32) -> String {
        format!("{},Tremblay,Alex,1984-03-09,98990,0F111", phn(i).expose())
    }

    fn parse_str(s: &str) -> Result<ParsedPanel, FileError> {
        parse(s.as_bytes(), &facility(), Limits::default(), today())
    }

    fn problems(p: &ParsedPanel) -> Vec<(u32, Option<&RowProblem>)> {
        p.rows.iter().map(|r| (r.line, r.row.as_ref().err())).collect()
    }

    #[test]
    fn valid_rows_with_a_header() {
        let text = format!("PHN,Surname,Given name,Date of birth,Service code,Facility\n{}\n{}\n", row(1), row(2));
        let p = parse_str(&text).unwrap();
        assert!(p.header);
        assert_eq!(problems(&p), vec![(2, None), (3, None)]);
        let first = p.rows[0].row.as_ref().unwrap();
        assert_eq!((first.phn, first.surname.as_str(), first.given_name.as_str()), (phn(1), "Tremblay", "Alex"));
    }

    #[test]
    fn a_first_row_with_a_mistyped_phn_is_reported_not_taken_for_a_header() {
        let phn = phn(1).expose();
        let typo = format!("{}O,Tremblay,Alex,1984-03-09,98990,0F111", &phn[..9]);
        let p = parse_str(&format!("{typo}\n{}\n", row(2))).unwrap();
        assert!(!p.header);
        assert!(matches!(problems(&p)[..], [(1, Some(RowProblem::InvalidPhn(_))), (2, None)]), "{:?}", problems(&p));
    }

    #[test]
    fn a_first_row_with_another_delimiter_is_reported_not_taken_for_a_header() {
        let semicolons = row(1).replace(',', ";");
        let p = parse_str(&format!("{semicolons}\n{}\n", row(2))).unwrap();
        assert!(!p.header);
        assert!(matches!(problems(&p)[..], [(1, Some(RowProblem::Malformed(_))), (2, None)]), "{:?}", problems(&p));
        // A file of such rows alone is reported row by row, not refused as having none.
        let p = parse_str(&format!("{semicolons}\n")).unwrap();
        assert!(matches!(problems(&p)[..], [(1, Some(RowProblem::Malformed(_)))]));
    }

    #[test]
    fn bom_crlf_blank_lines_and_no_final_newline() {
        let text = format!("\u{feff}phn,surname,given,dob,code,facility\r\n\r\n{}\r\n,,,,,\r\n{}", row(1), row(2));
        let p = parse_str(&text).unwrap();
        assert!(p.header);
        assert_eq!(problems(&p), vec![(3, None), (5, None)]);
    }

    #[test]
    fn lone_cr_line_ends() {
        let p = parse_str(&format!("{}\r{}\r", row(1), row(2))).unwrap();
        assert_eq!(problems(&p), vec![(1, None), (2, None)]);
    }

    #[test]
    fn quoted_fields() {
        let text = format!(
            "\"{}\",\"O'Brien-Smith\",\"Anne \"\"Nan\"\" Marie\",\"1990-01-02\",\"98990\",\"0F111\"\n{}\n",
            phn(1).expose(),
            row(2)
        );
        let p = parse_str(&text).unwrap();
        // The doubled quote is kept; a quote is not a letter a name may hold.
        assert!(matches!(&p.rows[0].row, Err(RowProblem::Malformed(m)) if m.starts_with("given name")));
        let text = format!("\"{}\", \"Smith, Jr\" ,Ann,19900102,98990,0f111\n", phn(1).expose());
        let p = parse_str(&text).unwrap();
        assert!(matches!(&p.rows[0].row, Err(RowProblem::Malformed(m)) if m.starts_with("surname")));
        let text = format!("\"{}\",\"Smith\",Ann,1990/01/02,98990,0f111\n", phn(1).expose());
        let ok = parse_str(&text).unwrap().rows[0].row.clone().unwrap();
        assert_eq!(ok.date_of_birth.date(), NaiveDate::from_ymd_opt(1990, 1, 2).unwrap());
    }

    #[test]
    fn a_line_break_inside_quotes_counts_lines() {
        let text = format!("{},\"Two\nLines\",Ann,1990-01-02,98990,0F111\n{}\n", phn(1).expose(), row(2));
        let p = parse_str(&text).unwrap();
        assert!(matches!(p.rows[0].row, Err(RowProblem::Malformed(_))));
        assert_eq!(p.rows[1].line, 3);
        assert!(p.rows[1].row.is_ok());
    }

    #[test]
    fn each_kind_of_bad_row() {
        let text = [
            row(1),
            "9698648215,Tremblay,Alex,1984-03-09,98990,0F111".to_string(), // check digit
            "12345,Tremblay,Alex,1984-03-09,98990,0F111".to_string(),      // shape
            ",Tremblay,Alex,1984-03-09,98990,0F111".to_string(),           // empty PHN
            format!("{},Tremblay,Alex,1984-03-09,98990", phn(2).expose()), // 5 fields
            format!("{},Tremblay,Alex,1984-02-30,98990,0F111", phn(3).expose()),
            format!("{},Tremblay,Alex,2999-01-01,98990,0F111", phn(4).expose()),
            format!("{},Tremblay,Alex,1984-03-09,00100,0F111", phn(5).expose()),
            format!("{},Tremblay,Alex,1984-03-09,98990,0F222", phn(6).expose()),
            format!("{},R2D2,Alex,1984-03-09,98990,0F111", phn(7).expose()),
            format!("{},Tremblay,Alex,1984-03-09,98990,0F111,extra", phn(8).expose()),
            format!("{},Tremblay,Alex,1984-03-09,98990,0F111,,", phn(9).expose()), // trailing empties: fine
            row(1),                                                                // duplicate
            format!("{},Tremb\"lay,Alex,1984-03-09,98990,0F111", phn(10).expose()),
            format!("\"{},Tremblay,Alex,1984-03-09,98990,0F111", phn(11).expose()), // unclosed: eats the rest
        ]
        .join("\n");
        let p = parse_str(&text).unwrap();
        let kinds: Vec<&str> = p
            .rows
            .iter()
            .map(|r| match &r.row {
                Ok(_) => "ok",
                Err(RowProblem::InvalidPhn(_)) => "phn",
                Err(RowProblem::Malformed(_)) => "malformed",
                Err(RowProblem::Duplicate { first_line: 1 }) => "dup1",
                Err(RowProblem::Duplicate { .. }) => "dup?",
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "ok",
                "phn",
                "phn",
                "phn",
                "malformed",
                "malformed",
                "malformed",
                "malformed",
                "malformed",
                "malformed",
                "malformed",
                "ok",
                "dup1",
                "malformed",
                "malformed"
            ]
        );
        for r in &p.rows {
            if let Err(e) = &r.row {
                assert!(!e.message().contains(&phn(2).expose()[..6]), "no value in a message");
            }
        }
    }

    #[test]
    fn header_only_and_empty_files_are_refused() {
        assert_eq!(parse_str(""), Err(FileError::Empty));
        assert_eq!(parse_str("\u{feff}"), Err(FileError::Empty));
        assert_eq!(parse_str("\r\n\n ,, ,\n"), Err(FileError::Empty));
        assert_eq!(parse_str("PHN,Surname,Given,DOB,Code,Facility\r\n"), Err(FileError::Empty));
    }

    #[test]
    fn limits() {
        let three = format!("{}\n{}\n{}\n", row(1), row(2), row(3));
        let tight = Limits { max_bytes: three.len(), max_rows: 2 };
        assert_eq!(parse(three.as_bytes(), &facility(), tight, today()), Err(FileError::TooManyRows { limit: 2 }));
        let small = Limits { max_bytes: 10, max_rows: 100 };
        let err = parse(three.as_bytes(), &facility(), small, today()).unwrap_err();
        assert_eq!(err, FileError::TooLarge { limit: 10 });
        assert!(err.to_string().contains("limit of 10 bytes"));
        let fits = Limits { max_bytes: three.len(), max_rows: 3 };
        assert_eq!(parse(three.as_bytes(), &facility(), fits, today()).unwrap().rows.len(), 3);
    }

    #[test]
    fn not_utf8_is_one_malformed_row() {
        let mut bytes = format!("{}\n", row(1)).into_bytes();
        bytes.extend_from_slice(b"\xff\xfe,a,b,c,d,e\n");
        bytes.extend_from_slice(format!("{}\n", row(2)).as_bytes());
        let p = parse(&bytes, &facility(), Limits::default(), today()).unwrap();
        assert_eq!(
            problems(&p).iter().map(|(l, e)| (*l, e.is_some())).collect::<Vec<_>>(),
            [(1, false), (2, true), (3, false)]
        );
    }
}
