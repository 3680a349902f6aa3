//! Replays every file of the fuzz corpus (`fuzz/corpus/panel_csv/`) through the
//! panel CSV parser in the normal test run: none may panic, and accepted rows
//! must hold together, as the fuzz target checks.

use std::collections::HashSet;
use std::path::Path;

use attach_actors::domain::FacilityNumber;
use attach_actors::panel::csv::{Limits, parse};

#[test]
fn every_corpus_file_parses_without_panicking() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/panel_csv");
    let facility = FacilityNumber::parse("0F111").unwrap();
    let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 24).unwrap();
    let limits = Limits { max_bytes: 64 * 1024, max_rows: 500 };
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let result = std::panic::catch_unwind(|| parse(&bytes, &facility, limits, today));
        let parsed = result.unwrap_or_else(|_| panic!("the parser panicked on {}", path.display()));
        if let Ok(panel) = parsed {
            assert!(panel.rows.windows(2).all(|w| w[0].line < w[1].line), "{}", path.display());
            let mut seen = HashSet::new();
            for row in panel.rows.iter().filter_map(|r| r.row.as_ref().ok()) {
                assert!(seen.insert(row.phn), "a PHN accepted twice in {}", path.display());
            }
        }
        files += 1;
    }
    assert!(files >= 10, "the seed corpus is in place ({files} files)");
}
