//! Identifiers. Registration references and proposal ids are random and
//! unguessable (a reference alone lets a patient look up their status);
//! provider ids and facility numbers come from the province's registries.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::DomainError;

/// Crockford base32: no I, L, O or U, so a reference read over the phone survives.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The OS generator failing means the machine cannot make secrets at all.
    getrandom::fill(&mut bytes).expect("the operating system's random generator is unavailable");
    code_of(bytes)
}

/// One character per byte, from the byte's low five bits.
fn code_of<const N: usize>(bytes: [u8; N]) -> [u8; N] {
    bytes.map(|b| ALPHABET[(b & 31) as usize])
}

fn parse_code<const N: usize>(input: &str, field: &str, message: &str) -> Result<[u8; N], DomainError> {
    let s: String = input.trim().chars().filter(|c| *c != '-').collect::<String>().to_ascii_uppercase();
    match <[u8; N]>::try_from(s.as_bytes()) {
        Ok(code) if code.iter().all(|b| ALPHABET.contains(b)) => Ok(code),
        _ => Err(DomainError::invalid(field, message)),
    }
}

macro_rules! random_id {
    ($(#[$doc:meta])* $name:ident, $len:expr, $field:expr, $msg:expr) => {
        $(#[$doc])*
        ///
        /// Held inline (no heap allocation): a shard keeps several copies of every
        /// reference in its indexes, for up to hundreds of thousands of registrations.
        /// Stored and shown as its text.
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name([u8; $len]);

        impl $name {
            /// A new random id.
            pub fn generate() -> Self {
                $name(random_bytes())
            }

            /// The id made from caller-supplied entropy: each byte's low five bits
            /// pick one character. For deterministic synthetic data (the demo seed),
            /// whose references must come out the same on every run; never for real
            /// ids, which must be unguessable (use [`Self::generate`]).
            pub fn from_entropy(bytes: [u8; $len]) -> Self {
                $name(code_of(bytes))
            }

            /// Parses an id a client sent back (case and dashes forgiven).
            pub fn parse(input: &str) -> Result<Self, DomainError> {
                parse_code(input, $field, $msg).map($name)
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                std::str::from_utf8(&self.0).expect("ids hold only ASCII letters and digits")
            }
        }

        stored_as_text!($name);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.as_str())
            }
        }
    };
}

random_id!(
    /// A registration's public reference: 12 Crockford base32 characters (60 random bits).
    RegistrationRef, 12, "reference", "a registration reference is 12 letters and digits, as given at registration"
);
random_id!(
    /// A proposal's id: 10 Crockford base32 characters.
    ProposalId, 10, "proposalId", "a proposal id is 10 letters and digits"
);
random_id!(
    /// A delegation endorsement's id: 10 Crockford base32 characters.
    EndorsementId, 10, "endorsementId", "an endorsement id is 10 letters and digits"
);

/// A provider's practitioner number (in BC the MSP practitioner number): 5 to 10
/// capital letters or digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProviderId(String);

impl ProviderId {
    /// Parses a practitioner number.
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        let s = input.trim().to_ascii_uppercase();
        if (5..=10).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            Ok(ProviderId(s))
        } else {
            Err(DomainError::invalid(
                "providerId",
                "a provider id is 5 to 10 letters or digits (the practitioner number)",
            ))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A clinic's facility number (needed to submit a panel): 5 capital letters or digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FacilityNumber(String);

impl FacilityNumber {
    /// Parses a facility number.
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        let s = input.trim().to_ascii_uppercase();
        if s.len() == 5 && s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            Ok(FacilityNumber(s))
        } else {
            Err(DomainError::invalid("facilityNumber", "a facility number is 5 letters or digits"))
        }
    }

    /// The number as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FacilityNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_random_and_parse_back() {
        let a = RegistrationRef::generate();
        let b = RegistrationRef::generate();
        assert_ne!(a, b);
        assert_eq!(RegistrationRef::parse(&a.as_str().to_lowercase()), Ok(a));
        let dashed = format!("{}-{}-{}", &a.as_str()[..4], &a.as_str()[4..8], &a.as_str()[8..]);
        assert_eq!(RegistrationRef::parse(&dashed), Ok(a));
    }

    #[test]
    fn references_refuse_bad_shapes() {
        for bad in ["", "ABC", "ABCDEFGHJKMNP", "ABCDEFGHJKMU", "ABCDEFGHJKM!"] {
            assert!(RegistrationRef::parse(bad).is_err(), "{bad:?}");
        }
        assert!(ProposalId::parse("0123456789").is_ok());
    }

    #[test]
    fn provider_ids_and_facility_numbers() {
        assert_eq!(ProviderId::parse(" p1234 ").unwrap().as_str(), "P1234");
        assert!(ProviderId::parse("P12").is_err());
        assert!(ProviderId::parse("P12 34").is_err());
        assert_eq!(FacilityNumber::parse("0a12b").unwrap().as_str(), "0A12B");
        assert!(FacilityNumber::parse("0A12").is_err());
        assert!(FacilityNumber::parse("0A12-").is_err());
    }
}
