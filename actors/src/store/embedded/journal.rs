//! The audit journal: a file beside the store that makes a group of audit
//! records durable with one `write` and one `fdatasync`.
//!
//! Every audited read waits for its record to be durable (DECISIONS 10), and
//! a durable redb commit writes several pages at scattered offsets: measured on
//! the 2-core development machine it cost ~190 µs of CPU and about a
//! millisecond of waiting per group. A group made only of audit records is
//! therefore written here first and held in memory. Any later durable commit
//! writes the held records into the store, and only then is the journal
//! emptied. On open, whatever the journal still holds is written to the store
//! again (keys are unique, so a record already there is only overwritten with
//! itself).
//!
//! The file is written once with zeros to [`PREALLOCATED`] bytes when the store
//! opens, and groups overwrite it in place from the start: `fdatasync` of
//! blocks already allocated and written flushes the data alone, while an
//! append also commits the file system's journal for the new size (measured
//! here: about 25–30 % less CPU and wall time per sync; docs/BENCHMARKS.md, session 15). Emptying the journal
//! only moves the write position back to the start.
//!
//! Layout: the 8-byte [`MAGIC`], then frames of `len: u32 LE`, `seq: u64 LE`,
//! `checksum: u64 LE` (FNV-1a of `seq` and the payload), then the payload: the
//! record's 16-byte key and its encoded value. Each frame's `seq` is one more
//! than the frame before it, and a process never writes the same `seq` twice,
//! so a frame left further on from before the journal was last emptied never
//! continues the run. A run ends at the first frame that is short, fails its
//! checksum or breaks the numbering: a crash mid-write tears only the last
//! group, whose callers were never answered. A whole frame of the same run
//! found further on means damage in between: reading goes on from there, and
//! the damage is reported (see [`Damage`]). A file without the magic is the
//! append-only journal of earlier builds (frames of `len`, `checksum`,
//! payload), read once on open.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// An audit row as the store keeps it: the ordered key and the encoded record.
pub(super) type Row = ([u8; 16], Vec<u8>);

/// The first bytes of a journal that is overwritten in place.
const MAGIC: &[u8; 8] = b"ATTJRN\x00\x02";
/// Frame header: length, sequence number, checksum.
const HEADER: usize = 4 + 8 + 8;
/// Frame header of earlier builds' append-only journal: length, checksum.
const OLD_HEADER: usize = 4 + 8;
/// Bytes written with zeros when the store opens: room for the most records the
/// journal holds before a durable commit empties it (`writer::JOURNAL_RECORDS`)
/// at about 500 bytes each. Larger groups still go in, growing the file.
pub(super) const PREALLOCATED: u64 = 2 << 20;

/// A journal that was read but may not be written yet: what it holds must first
/// be made durable elsewhere, since [`Recovered::start`] wipes it.
pub(super) struct Recovered {
    file: File,
    path: std::path::PathBuf,
}

impl Recovered {
    /// Wipes the file (the magic, then zeros to [`PREALLOCATED`]), makes that
    /// durable, and returns the journal ready to take groups.
    pub(super) fn start(self) -> io::Result<Journal> {
        let Recovered { mut file, path } = self;
        let mut zeros = vec![0u8; PREALLOCATED as usize];
        zeros[..MAGIC.len()].copy_from_slice(MAGIC);
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&zeros)?;
        file.set_len(PREALLOCATED)?;
        file.sync_all()?;
        // The file may be new: make its name durable too.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Ok(Journal { file, len: MAGIC.len() as u64, next_seq: 1, records: 0, broken: false })
    }
}

/// The open journal. Owned by the writer thread.
pub(super) struct Journal {
    file: File,
    /// Where the next group goes: the end of the frames written since the
    /// journal was last emptied.
    len: u64,
    /// The next frame's sequence number: above every one this process wrote.
    next_seq: u64,
    /// Records written since the journal was last emptied.
    records: usize,
    /// A write failed, so what the file holds past `len` is unknown: nothing
    /// more may be written until the journal is emptied.
    broken: bool,
}

impl Journal {
    /// Reads the journal at `path` (creating it): the rows it holds, what was
    /// found damaged, and the file to [`Recovered::start`] once the rows are
    /// durable in the store. A damaged file is copied to [`damaged_copy`] first,
    /// since starting wipes it.
    pub(super) fn open(path: &Path) -> io::Result<(Recovered, Vec<Row>, Option<Damage>)> {
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (rows, damage) = match bytes.strip_prefix(MAGIC) {
            Some(frames) => parse(frames),
            None => {
                let rows = parse_old(&bytes);
                // Neither journal: not a frame read, and not the zeros of a new file.
                let unreadable = rows.is_empty() && bytes.iter().any(|b| *b != 0);
                (rows, unreadable.then_some(Damage { lost: None, recovered: 0 }))
            }
        };
        if damage.is_some() {
            // Kept for whoever looks into it; the records read matter more, so a copy
            // that cannot be written (a full disk) does not stop the store opening.
            let copy = damaged_copy(path);
            let kept = std::fs::write(&copy, &bytes).and_then(|()| File::open(&copy)?.sync_all()).and_then(|()| {
                match path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    Some(dir) => File::open(dir)?.sync_all(),
                    None => Ok(()),
                }
            });
            if let Err(e) = kept {
                tracing::error!(error = %e, copy = %copy.display(), "could not keep a copy of the damaged audit journal");
            }
        }
        Ok((Recovered { file, path: path.to_path_buf() }, rows, damage))
    }

    /// Records written since the journal was last emptied.
    pub(super) fn records(&self) -> usize {
        self.records
    }

    /// Whether writes are possible (an earlier failure may have left a torn group).
    pub(super) fn is_usable(&self) -> bool {
        !self.broken
    }

    /// Writes `rows` after the frames already there and makes them durable.
    pub(super) fn append<'a>(&mut self, rows: impl Iterator<Item = &'a Row>) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::other("the audit journal must be emptied after a failed write"));
        }
        let mut buf = Vec::new();
        let mut seq = self.next_seq;
        for (key, value) in rows {
            let payload_len = key.len() + value.len();
            buf.extend_from_slice(&u32::try_from(payload_len).map_err(io::Error::other)?.to_le_bytes());
            buf.extend_from_slice(&seq.to_le_bytes());
            buf.extend_from_slice(&fnv1a(&[&seq.to_le_bytes(), key.as_slice(), value.as_slice()]).to_le_bytes());
            buf.extend_from_slice(key);
            buf.extend_from_slice(value);
            seq += 1;
        }
        // Numbers are never given out twice, written or not.
        let n = (seq - self.next_seq) as usize;
        self.next_seq = seq;
        let result = self.write_at(self.len, &buf).and_then(|()| self.file.sync_data());
        match result {
            Ok(()) => {
                self.len += buf.len() as u64;
                self.records += n;
                Ok(())
            }
            Err(e) => {
                self.broken = true;
                Err(e)
            }
        }
    }

    fn write_at(&mut self, at: u64, buf: &[u8]) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(at))?;
        self.file.write_all(buf)
    }

    /// Empties the journal: call only once everything in it is durable in the
    /// store. The first frame's header is zeroed, not synced: the next group goes
    /// at the start again, and the frames after it are from before, so they do
    /// not continue its run. If a crash loses the zeros before the next group is
    /// durable, the old frames are written again on open, which changes nothing.
    pub(super) fn clear(&mut self) -> io::Result<()> {
        let start = MAGIC.len() as u64;
        if self.len == start && !self.broken {
            return Ok(());
        }
        (self.len, self.records, self.broken) = (start, 0, false);
        self.write_at(start, &[0; HEADER])
    }
}

/// What a journal held that could not be read, beyond a write a crash cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Damage {
    /// Records lost between frames that could be read (`None`: the file is
    /// not a journal at all, so how many is unknown).
    pub lost: Option<u64>,
    /// Records read after the damage.
    pub recovered: usize,
}

/// Where a damaged journal is kept before the store starts a new one (the
/// last one found; an earlier copy is replaced).
pub(super) fn damaged_copy(path: &Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".damaged");
    name.into()
}

/// The header at `at`, if the bytes hold one: the payload's length, the
/// sequence number and the checksum, as written (nothing checked).
fn header(frames: &[u8], at: usize) -> Option<(usize, u64, u64)> {
    let header = frames.get(at..at + HEADER)?;
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let seq = u64::from_le_bytes(header[4..12].try_into().expect("8 bytes"));
    let sum = u64::from_le_bytes(header[12..].try_into().expect("8 bytes"));
    Some((len, seq, sum))
}

/// The frame at `at` if it is whole and its checksum holds: its sequence
/// number, payload and length in all.
fn frame(frames: &[u8], at: usize) -> Option<(u64, &[u8], usize)> {
    let (len, seq, sum) = header(frames, at)?;
    let payload = frames.get(at + HEADER..at + HEADER + len)?;
    (len >= 16 && fnv1a(&[&seq.to_le_bytes(), payload]) == sum).then_some((seq, payload, HEADER + len))
}

/// The furthest a later frame of a run may be numbered past the last one read:
/// far more than the journal ever holds, and few enough that a random header
/// almost never falls in range (so a scan of damaged bytes checksums next to nothing).
const MAX_GAP: u64 = 1 << 20;

/// The first frame from `from` on numbered above `last` (and not far above),
/// whole and with its checksum holding: a later frame of the run that ended at `last`.
fn later_frame(frames: &[u8], from: usize, last: u64) -> Option<usize> {
    (from..frames.len().saturating_sub(HEADER)).find(|&at| {
        header(frames, at).is_some_and(|(_, seq, _)| seq > last && seq - last <= MAX_GAP) && frame(frames, at).is_some()
    })
}

/// The sequence number the header at `at` bears, if it is whole and plausible
/// (a frame's length and a number above zero), whether its payload holds or not.
fn header_seq(frames: &[u8], at: usize) -> Option<u64> {
    header(frames, at).filter(|(len, seq, _)| *len >= 16 && *seq > 0).map(|(_, seq, _)| seq)
}

/// The rows of the run of whole frames at the start of `frames` (after the
/// magic). A run ends at the first frame that is short, fails its checksum or
/// breaks the numbering: a write a crash cut off, or frames from before the
/// journal was last emptied (numbered below the run). A frame of the same run
/// found further on, numbered above the last one read, means the frames in
/// between were damaged after they were written: the run goes on from there,
/// and the damage is reported.
fn parse(frames: &[u8]) -> (Vec<Row>, Option<Damage>) {
    let mut rows = Vec::new();
    let mut at = 0;
    let mut last: Option<u64> = None;
    let mut damage: Option<Damage> = None;
    loop {
        while let Some((seq, payload, len)) = frame(frames, at).filter(|(seq, ..)| last.is_none_or(|l| l + 1 == *seq)) {
            rows.push(row(payload));
            if let Some(d) = damage.as_mut() {
                d.recovered += 1;
            }
            last = Some(seq);
            at += len;
        }
        // Nothing read: the first frame is the run's, if its header is there to
        // say which number it bears (a cleared journal's is zeros).
        let first = || header_seq(frames, at).filter(|_| rows.is_empty()).map(|seq| seq - 1);
        let Some(end) = last.or_else(first) else { break };
        let Some(next) = later_frame(frames, at + 1, end) else { break };
        let (seq, ..) = frame(frames, next).expect("checked");
        let d = damage.get_or_insert(Damage { lost: Some(0), recovered: 0 });
        d.lost = d.lost.map(|n| n + (seq - end - 1));
        // A frame numbered `seq` continues the run.
        (at, last) = (next, Some(seq - 1));
    }
    (rows, damage)
}

/// The rows of the whole frames of an earlier build's append-only journal.
fn parse_old(bytes: &[u8]) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + OLD_HEADER) {
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let sum = u64::from_le_bytes(header[4..].try_into().expect("8 bytes"));
        let Some(payload) = bytes.get(at + OLD_HEADER..at + OLD_HEADER + len) else { break };
        if len < 16 || fnv1a(&[payload]) != sum {
            break;
        }
        rows.push(row(payload));
        at += OLD_HEADER + len;
    }
    rows
}

fn row(payload: &[u8]) -> Row {
    let key: [u8; 16] = payload[..16].try_into().expect("16 bytes");
    (key, payload[16..].to_vec())
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

    fn started(path: &Path) -> Journal {
        Journal::open(path).unwrap().0.start().unwrap()
    }

    fn held(path: &Path) -> Vec<Row> {
        Journal::open(path).unwrap().1
    }

    #[test]
    fn written_rows_come_back_on_open_and_the_file_keeps_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let (recovered, rows, _) = Journal::open(&path).unwrap();
        assert!(rows.is_empty());
        let mut j = recovered.start().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), PREALLOCATED);
        j.append([row(1, 10), row(2, 0)].iter()).unwrap();
        j.append([row(3, 300)].iter()).unwrap();
        assert_eq!(j.records(), 3);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), PREALLOCATED, "written in place");
        drop(j);
        assert_eq!(held(&path), vec![row(1, 10), row(2, 0), row(3, 300)]);
        // Starting again wipes what was read.
        drop(started(&path));
        assert!(held(&path).is_empty());
    }

    #[test]
    fn frames_from_before_the_journal_was_emptied_are_not_read_after_newer_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let mut j = started(&path);
        j.append([row(1, 8), row(2, 8), row(3, 8)].iter()).unwrap();
        j.clear().unwrap();
        assert_eq!(j.records(), 0);
        assert!(held(&path).is_empty(), "the first frame's header is wiped");
        // The same size as the first old frame, so the second old frame starts
        // exactly where the new one ends: whole, with a good checksum, but
        // numbered before it.
        j.append([row(4, 8)].iter()).unwrap();
        assert_eq!(held(&path), vec![row(4, 8)]);
        j.clear().unwrap();
        j.append([row(5, 8), row(6, 8)].iter()).unwrap();
        assert_eq!(held(&path), vec![row(5, 8), row(6, 8)]);
    }

    #[test]
    fn a_torn_or_corrupt_frame_ends_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let mut j = started(&path);
        j.append([row(1, 8), row(2, 8)].iter()).unwrap();
        let end = j.len as usize;
        drop(j);
        // A crash in the middle of the next frame: its header, part of its payload.
        let mut torn = std::fs::read(&path).unwrap();
        torn[end..end + HEADER].copy_from_slice(&{
            let mut h = [0u8; HEADER];
            h[..4].copy_from_slice(&40u32.to_le_bytes());
            h[4..12].copy_from_slice(&3u64.to_le_bytes());
            h
        });
        torn[end + HEADER..end + HEADER + 7].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7]);
        std::fs::write(&path, &torn).unwrap();
        assert_eq!(held(&path), vec![row(1, 8), row(2, 8)]);

        // A frame whose payload does not match its checksum ends the journal.
        let mut bad = std::fs::read(&path).unwrap();
        bad[end - 1] ^= 0xff;
        std::fs::write(&path, &bad).unwrap();
        assert_eq!(held(&path), vec![row(1, 8)]);
    }

    #[test]
    fn frames_after_a_damaged_one_are_read_and_the_damage_is_told_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let mut j = started(&path);
        j.append([row(1, 8), row(2, 8), row(3, 8)].iter()).unwrap();
        j.append([row(4, 8), row(5, 8)].iter()).unwrap();
        drop(j);
        let whole = std::fs::read(&path).unwrap();
        let frame_len = HEADER + 16 + 8;
        let second = MAGIC.len() + frame_len;
        // A byte of the second frame's payload, then its length: either way the
        // frames after it are read, and the one is counted lost (a tester saw one
        // flipped byte drop 17 of 20 records, told only by a smaller count).
        for at in [second + HEADER + 3, second] {
            let mut bad = whole.clone();
            bad[at] ^= 0x5a;
            std::fs::write(&path, &bad).unwrap();
            let (_, rows, damage) = Journal::open(&path).unwrap();
            assert_eq!(rows, vec![row(1, 8), row(3, 8), row(4, 8), row(5, 8)]);
            assert_eq!(damage, Some(Damage { lost: Some(1), recovered: 3 }));
            assert_eq!(std::fs::read(damaged_copy(&path)).unwrap(), bad, "kept as found");
        }
        // The first frame's payload: the rest is read all the same (a verifier saw all 20 lost, untold).
        let mut bad = whole.clone();
        bad[MAGIC.len() + HEADER + 3] ^= 0x5a;
        std::fs::write(&path, &bad).unwrap();
        let (_, rows, damage) = Journal::open(&path).unwrap();
        assert_eq!(rows, vec![row(2, 8), row(3, 8), row(4, 8), row(5, 8)]);
        assert_eq!(damage, Some(Damage { lost: Some(1), recovered: 4 }));
        // A file that is no journal at all: told, and kept.
        std::fs::remove_file(damaged_copy(&path)).unwrap();
        let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        std::fs::write(&path, &garbage).unwrap();
        let (_, rows, damage) = Journal::open(&path).unwrap();
        assert_eq!((rows.len(), damage), (0, Some(Damage { lost: None, recovered: 0 })));
        assert!(damaged_copy(&path).exists());
        // A cut-off last write, and frames left from before the journal was emptied: nothing to tell.
        let mut j = started(&path);
        std::fs::remove_file(damaged_copy(&path)).unwrap();
        j.append([row(1, 8), row(2, 8), row(3, 8)].iter()).unwrap();
        j.clear().unwrap();
        j.append([row(6, 8)].iter()).unwrap();
        let end = j.len as usize;
        drop(j);
        let mut torn = std::fs::read(&path).unwrap();
        torn[end + 5] ^= 0xff;
        std::fs::write(&path, &torn).unwrap();
        assert_eq!(Journal::open(&path).unwrap().1, vec![row(6, 8)]);
        assert_eq!(Journal::open(&path).unwrap().2, None);
        assert!(!damaged_copy(&path).exists());
    }

    #[test]
    fn an_earlier_builds_append_only_journal_is_read_and_then_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let mut old = Vec::new();
        for (key, value) in [row(1, 8), row(2, 30)] {
            old.extend_from_slice(&((key.len() + value.len()) as u32).to_le_bytes());
            old.extend_from_slice(&fnv1a(&[key.as_slice(), value.as_slice()]).to_le_bytes());
            old.extend_from_slice(&key);
            old.extend_from_slice(&value);
        }
        old.extend_from_slice(&[9, 0, 0]); // a torn tail
        std::fs::write(&path, &old).unwrap();
        assert_eq!(held(&path), vec![row(1, 8), row(2, 30)]);
        let mut j = started(&path);
        assert!(held(&path).is_empty());
        j.append([row(3, 8)].iter()).unwrap();
        assert_eq!(held(&path), vec![row(3, 8)]);
    }
}
