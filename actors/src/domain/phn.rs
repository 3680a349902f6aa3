//! The Personal Health Number: the identity key of a patient.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::DomainError;

/// A valid BC Personal Health Number: ten digits, a leading 9, and a mod-11
/// check digit over digits 2–9 with weights 2,4,8,5,10,9,7,3.
///
/// `Debug` and `Display` deliberately mask the number, so a PHN that slips into a
/// `tracing` field or an error message never reaches a log line. Use
/// [`Phn::expose`] where the digits are really needed (storage, the patient's own view).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Phn(u64);

const WEIGHTS: [u64; 8] = [2, 4, 8, 5, 10, 9, 7, 3];

impl Phn {
    /// Parses ten digits (spaces allowed, as on a BC Services Card: `9698 658 215`).
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        let digits: String = input.chars().filter(|c| *c != ' ').collect();
        if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DomainError::invalid("phn", "a PHN has exactly ten digits"));
        }
        let value: u64 = digits.parse().map_err(|_| DomainError::invalid("phn", "a PHN has exactly ten digits"))?;
        Self::from_u64(value)
    }

    /// Whether `text` is a valid PHN however it is spaced or punctuated: its
    /// digits with nothing but spaces, dashes, underscores, dots, slashes or
    /// colons between them (`9698-658-215`, a no-break space), perhaps after a
    /// `PHN` label, in the digits of any script (full-width `９`, Arabic-Indic
    /// `٩`, Devanagari `९`: a reader sees the number all the same). For text
    /// that must not be a PHN (an id people read, an audit record), which
    /// [`Phn::parse`] alone would let through.
    pub fn is_spelled_in(text: &str) -> bool {
        // Punctuation, or anything that shows nothing (a space, a soft hyphen, a zero-width space, a BOM...).
        let separator = |c: char| {
            super::invisible(c)
                || matches!(
                    c,
                    '-' | '_' | '.' | '/' | ':' | ',' | '(' | ')' | '#' | '\u{b7}' | '\u{2022}' | '\u{2010}'
                        ..='\u{2015}' | '\u{2212}'
                )
        };
        // A label before the number (`PHN`, `BC PHN #`, in full-width letters too) is still the number.
        let first_digit = text.char_indices().find(|(_, c)| decimal_digit(*c).is_some()).map_or(text.len(), |(i, _)| i);
        let label: String = text[..first_digit]
            .chars()
            .filter(|c| !separator(*c))
            .map(|c| match u32::from(c) {
                // Full-width Latin letters, as their ASCII ones.
                code @ 0xff21..=0xff5a => char::from_u32(code - 0xfee0).unwrap_or(c),
                _ => c,
            })
            .collect::<String>()
            .to_ascii_lowercase();
        if !matches!(label.as_str(), "" | "phn" | "bcphn") {
            return false;
        }
        let mut digits = String::with_capacity(10);
        for c in text[first_digit..].chars() {
            match decimal_digit(c) {
                Some(d) => digits.push(d),
                None if separator(c) => {}
                None => return false,
            }
        }
        digits.len() == 10 && digits.parse().is_ok_and(|v| Self::from_u64(v).is_ok())
    }

    /// Validates a number already held as an integer (storage, synthetic data).
    pub fn from_u64(value: u64) -> Result<Self, DomainError> {
        if !(9_000_000_000..=9_999_999_999).contains(&value) {
            return Err(DomainError::invalid("phn", "a BC PHN has ten digits and starts with 9"));
        }
        let digits = Self::digits(value);
        match check_digit(&digits) {
            Some(check) if check == digits[9] => Ok(Phn(value)),
            _ => Err(DomainError::invalid("phn", "the PHN's check digit does not match; please re-check the number")),
        }
    }

    /// Builds the valid PHN whose digits 2–9 are `body` (0..=99_999_999), if that
    /// body has a check digit at all (about one body in eleven has none).
    pub fn with_body(body: u32) -> Option<Self> {
        if body > 99_999_999 {
            return None;
        }
        let base = 9_000_000_000 + u64::from(body) * 10;
        let check = check_digit(&Self::digits(base))?;
        Some(Phn(base + check))
    }

    /// The ten digits. Call only where the number must leave the process
    /// (the store, the patient's own record); never in logs.
    pub fn expose(&self) -> String {
        self.0.to_string()
    }

    /// The number as an integer, for compact storage keys.
    pub fn as_u64(&self) -> u64 {
        self.0
    }

    fn digits(value: u64) -> [u64; 10] {
        let mut out = [0; 10];
        let mut v = value;
        for slot in out.iter_mut().rev() {
            *slot = v % 10;
            v /= 10;
        }
        out
    }
}

/// The check digit for digits 2–9, or `None` when the rule yields 10 or 11
/// (such a body is never issued).
fn check_digit(digits: &[u64; 10]) -> Option<u64> {
    let sum: u64 = digits[1..9].iter().zip(WEIGHTS).map(|(d, w)| d * w).sum();
    let check = 11 - (sum % 11);
    (check < 10).then_some(check)
}

impl TryFrom<u64> for Phn {
    type Error = DomainError;
    fn try_from(value: u64) -> Result<Self, Self::Error> {
        Self::from_u64(value)
    }
}

impl From<Phn> for u64 {
    fn from(p: Phn) -> u64 {
        p.0
    }
}

impl fmt::Debug for Phn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Phn(***)")
    }
}

impl fmt::Display for Phn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only the last two digits, as a receipt would show.
        write!(f, "********{:02}", self.0 % 100)
    }
}

/// `c` as an ASCII digit when it is a decimal digit of any script. Unicode
/// gives each script's digits a run of ten code points from zero, and the
/// standard library knows digit values only in ASCII, so a digit's value is
/// its distance from the start of its run of numeric characters (runs of
/// several sets of ten, as in the mathematical digits, count on by tens).
fn decimal_digit(c: char) -> Option<char> {
    if c.is_ascii_digit() {
        return Some(c);
    }
    // Digits that are not in a run of ten: superscripts, subscripts, circled.
    let value = match c {
        '\u{2070}' | '\u{2080}' | '\u{24ea}' => Some(0),
        '\u{b9}' => Some(1),
        '\u{b2}' => Some(2),
        '\u{b3}' => Some(3),
        '\u{2074}'..='\u{2079}' => Some(u32::from(c) - 0x2070),
        '\u{2081}'..='\u{2089}' => Some(u32::from(c) - 0x2080),
        '\u{2460}'..='\u{2468}' => Some(u32::from(c) - 0x245f),
        _ => None,
    };
    if let Some(v) = value {
        return char::from_digit(v, 10);
    }
    if c.is_ascii() || !c.is_numeric() {
        return None;
    }
    let code = u32::from(c);
    let mut start = code;
    while code - start < 60 && start > 0 && char::from_u32(start - 1).is_some_and(char::is_numeric) {
        start -= 1;
    }
    char::from_digit((code - start) % 10, 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_design_vector() {
        assert!(Phn::parse("9698658215").is_ok());
        for spelled in ["9698658215", "9698 658 215", "9698-658-215", "9698\u{a0}658\u{a0}215", " 96.98.65.82.15 "] {
            assert!(Phn::is_spelled_in(spelled), "{spelled:?}");
        }
        // Other scripts' digits, a label, slashes: a tester had all of these taken as a user id.
        for spelled in
            ["９６９８６５８２１５", "٩٦٩٨٦٥٨٢١٥", "९६९८६५८२१५", "PHN9698658215", "969/865/8215", "phn: 9698 658 215"]
        {
            assert!(Phn::is_spelled_in(spelled), "{spelled:?}");
        }
        // And a verifier's next round: commas, phone style, invisible characters, other labels, superscripts.
        for spelled in [
            "969,865,8215",
            "(969) 865-8215",
            "969·865·8215",
            "9698\u{200b}658215",
            "96\u{ad}98658215",
            "BC PHN #9698658215",
            "ＰＨＮ 9698658215",
            "⁹⁶⁹⁸⁶⁵⁸²¹⁵",
            "\u{feff}9698658215",
        ] {
            assert!(Phn::is_spelled_in(spelled), "{spelled:?}");
        }
        for not in ["9698658216", "user-9698658215", "P10001", "9698-658-21", "", "９６９８６５８２１６", "phn", "BC 1"]
        {
            assert!(!Phn::is_spelled_in(not), "{not:?}");
        }
        assert!(Phn::parse("9698 658 215").is_ok());
    }

    #[test]
    fn refuses_a_wrong_check_digit() {
        assert!(Phn::parse("9698648215").is_err());
        assert!(Phn::parse("9698658216").is_err());
    }

    #[test]
    fn refuses_bad_shapes() {
        for bad in ["", "969865821", "96986582150", "8698658215", "96986x8215", "-698658215"] {
            assert!(Phn::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn never_prints_the_number() {
        let phn = Phn::parse("9698658215").unwrap();
        assert!(!format!("{phn}").contains("96986582"));
        assert!(!format!("{phn:?}").contains("9698"));
        assert_eq!(phn.expose(), "9698658215");
    }

    #[test]
    fn with_body_builds_valid_numbers_only() {
        assert_eq!(Phn::with_body(69865821).map(|p| p.expose()), Some("9698658215".to_string()));
        let made = (0..1_000).filter_map(Phn::with_body).count();
        // Sums whose check would be 10 or 11 are never issued: 2 in 11 bodies.
        assert!((780..860).contains(&made), "about 9 in 11 bodies have a check digit, got {made}");
        for body in 0..1_000 {
            if let Some(p) = Phn::with_body(body) {
                assert_eq!(Phn::parse(&p.expose()), Ok(p));
            }
        }
    }

    #[test]
    fn serde_round_trip_revalidates() {
        let phn = Phn::parse("9698658215").unwrap();
        let bytes = postcard::to_allocvec(&phn).unwrap();
        assert_eq!(postcard::from_bytes::<Phn>(&bytes).unwrap(), phn);
        let bad = postcard::to_allocvec(&9_698_648_215u64).unwrap();
        assert!(postcard::from_bytes::<Phn>(&bad).is_err());
    }
}
