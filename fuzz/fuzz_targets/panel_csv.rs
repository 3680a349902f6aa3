//! Any bytes through the panel CSV parser: it must never panic, and what it
//! accepts must hold together (lines ascending, no PHN accepted twice).
#![no_main]

use attach_actors::domain::FacilityNumber;
use attach_actors::panel::csv::{Limits, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let facility = FacilityNumber::parse("0F111").expect("a valid facility number");
    let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 24).expect("a real date");
    let limits = Limits { max_bytes: 64 * 1024, max_rows: 500 };
    if let Ok(panel) = parse(data, &facility, limits, today) {
        assert!(!panel.rows.is_empty());
        assert!(panel.rows.len() <= limits.max_rows);
        assert!(panel.rows.windows(2).all(|w| w[0].line < w[1].line));
        let mut seen = std::collections::HashSet::new();
        for row in panel.rows.iter().filter_map(|r| r.row.as_ref().ok()) {
            assert!(seen.insert(row.phn), "a PHN accepted twice");
        }
    }
});
