//! The audit journal: an append-only file beside the store that makes a group
//! of audit records durable with one `write` and one `fdatasync`.
//!
//! Every audited read waits for its record to be durable (DECISIONS 10), and
//! a durable redb commit writes several pages at scattered offsets: measured on
//! the 2-core development machine it cost ~190 µs of CPU and about a
//! millisecond of waiting per group. A group made only of audit records is
//! therefore appended here first, then committed to redb *without* durability
//! (so audit queries see it at once). Any later durable commit makes those
//! commits durable too, and only then is the journal emptied. On open, whatever
//! the journal still holds is written to the store again (keys are unique, so a
//! record already there is only overwritten with itself).
//!
//! A frame is `len: u32 LE`, `checksum: u64 LE` (FNV-1a of the payload), then
//! the payload: the record's 16-byte key and its encoded value. Reading stops at
//! the first frame that is short or fails its checksum: a crash mid-append tears
//! only the last group, whose callers were never answered.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

/// An audit row as the store keeps it: the ordered key and the encoded record.
pub(super) type Row = ([u8; 16], Vec<u8>);

const HEADER: usize = 4 + 8;

/// The open journal. Owned by the writer thread.
pub(super) struct Journal {
    file: File,
    /// Bytes of whole frames in the file.
    len: u64,
    /// Records appended since the journal was last emptied.
    records: usize,
    /// An append failed and the torn tail could not be cut off: nothing more may
    /// be appended until the journal is emptied.
    broken: bool,
}

impl Journal {
    /// Opens the journal at `path` (creating it) and returns the rows it holds.
    pub(super) fn open(path: &Path) -> io::Result<(Journal, Vec<Row>)> {
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (rows, len) = parse(&bytes);
        if len < bytes.len() as u64 {
            // A torn or corrupt tail: cut it off, so that nothing after the next
            // append can be mistaken for it (or it for a frame).
            file.set_len(len)?;
        }
        let records = rows.len();
        Ok((Journal { file, len, records, broken: false }, rows))
    }

    /// Records appended since the journal was last emptied.
    pub(super) fn records(&self) -> usize {
        self.records
    }

    /// Whether appends are possible (an earlier failure may have left a torn tail).
    pub(super) fn is_usable(&self) -> bool {
        !self.broken
    }

    /// Appends `rows` and makes them durable. On failure the file is cut back to
    /// its last whole frame, so later frames stay readable.
    pub(super) fn append<'a>(&mut self, rows: impl Iterator<Item = &'a Row>) -> io::Result<()> {
        let mut buf = Vec::new();
        let mut n = 0;
        for (key, value) in rows {
            let payload_len = key.len() + value.len();
            buf.extend_from_slice(&u32::try_from(payload_len).map_err(io::Error::other)?.to_le_bytes());
            buf.extend_from_slice(&fnv1a(&[key.as_slice(), value.as_slice()]).to_le_bytes());
            buf.extend_from_slice(key);
            buf.extend_from_slice(value);
            n += 1;
        }
        let result = self.write_at_end(&buf).and_then(|()| self.file.sync_data());
        match result {
            Ok(()) => {
                self.len += buf.len() as u64;
                self.records += n;
                Ok(())
            }
            Err(e) => {
                if self.file.set_len(self.len).is_err() {
                    self.broken = true;
                }
                Err(e)
            }
        }
    }

    fn write_at_end(&mut self, buf: &[u8]) -> io::Result<()> {
        use std::io::{Seek, SeekFrom};
        self.file.seek(SeekFrom::Start(self.len))?;
        self.file.write_all(buf)
    }

    /// Empties the journal: call only once everything in it is durable in the
    /// store. Not synced: if the truncation is lost in a crash, the rows are
    /// written again on open, which changes nothing.
    pub(super) fn clear(&mut self) -> io::Result<()> {
        if self.len == 0 && !self.broken {
            return Ok(());
        }
        self.file.set_len(0)?;
        (self.len, self.records, self.broken) = (0, 0, false);
        Ok(())
    }
}

/// The whole frames of `bytes`, and how many bytes they take.
fn parse(bytes: &[u8]) -> (Vec<Row>, u64) {
    let mut rows = Vec::new();
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + HEADER) {
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let sum = u64::from_le_bytes(header[4..].try_into().expect("8 bytes"));
        let Some(payload) = bytes.get(at + HEADER..at + HEADER + len) else { break };
        if len < 16 || fnv1a(&[payload]) != sum {
            break;
        }
        let key: [u8; 16] = payload[..16].try_into().expect("16 bytes");
        rows.push((key, payload[16..].to_vec()));
        at += HEADER + len;
    }
    (rows, at as u64)
}

/// 64-bit FNV-1a: enough to tell a torn frame from a whole one (not a defence
/// against anyone who can write the file).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in parts.iter().flat_map(|p| p.iter()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: u8, len: usize) -> Row {
        ([i; 16], vec![i; len])
    }

    #[test]
    fn appended_rows_come_back_on_open_and_clear_empties_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let (mut j, rows) = Journal::open(&path).unwrap();
        assert!(rows.is_empty());
        j.append([row(1, 10), row(2, 0)].iter()).unwrap();
        j.append([row(3, 300)].iter()).unwrap();
        assert_eq!(j.records(), 3);
        drop(j);
        let (mut j, rows) = Journal::open(&path).unwrap();
        assert_eq!(rows, vec![row(1, 10), row(2, 0), row(3, 300)]);
        assert_eq!(j.records(), 3);
        j.clear().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        j.append([row(4, 5)].iter()).unwrap();
        drop(j);
        assert_eq!(Journal::open(&path).unwrap().1, vec![row(4, 5)]);
    }

    #[test]
    fn a_torn_or_corrupt_tail_is_dropped_and_later_appends_stay_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let (mut j, _) = Journal::open(&path).unwrap();
        j.append([row(1, 8), row(2, 8)].iter()).unwrap();
        drop(j);
        let whole = std::fs::metadata(&path).unwrap().len();

        // A crash in the middle of the next frame.
        let mut torn = std::fs::read(&path).unwrap();
        torn.extend_from_slice(&[40, 0, 0, 0, 1, 2, 3]);
        std::fs::write(&path, &torn).unwrap();
        let (mut j, rows) = Journal::open(&path).unwrap();
        assert_eq!(rows, vec![row(1, 8), row(2, 8)]);
        assert_eq!(j.len, whole, "the torn bytes are not counted");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole, "and are cut off");
        // The next append overwrites the torn bytes rather than following them.
        j.append([row(3, 8)].iter()).unwrap();
        drop(j);
        assert_eq!(Journal::open(&path).unwrap().1, vec![row(1, 8), row(2, 8), row(3, 8)]);

        // A frame whose payload does not match its checksum ends the journal.
        let mut bad = std::fs::read(&path).unwrap();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        std::fs::write(&path, &bad).unwrap();
        let (_, rows) = Journal::open(&path).unwrap();
        assert_eq!(rows, vec![row(1, 8), row(2, 8)]);
    }
}
