//! Clinics of the Clinic and Provider Registry.

use serde::{Deserialize, Serialize};

use super::{DomainError, FacilityNumber, ProviderId, ShardKey, Timestamp};

/// A clinic, kept by the shard of its community.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clinic {
    /// Facility number (needed to submit a panel).
    pub facility: FacilityNumber,
    /// The clinic's name.
    pub name: String,
    /// Street address.
    pub address: String,
    /// The community the clinic is in.
    pub shard: ShardKey,
    /// Opening hours as the clinic states them.
    pub hours: String,
    /// Contact phone.
    pub phone: String,
    /// The medical director, who keeps the clinic's registry entry.
    pub medical_director: Option<ProviderId>,
    /// When the clinic was registered.
    pub created_at: Timestamp,
}

/// The free-text parts of a clinic, checked for length.
#[derive(Debug, Clone)]
pub struct ClinicInput {
    /// Name, 1–120 characters.
    pub name: String,
    /// Address, 1–200 characters.
    pub address: String,
    /// Hours, up to 200 characters; `None` keeps an existing clinic's.
    pub hours: Option<String>,
    /// Phone, up to 30 characters; `None` keeps an existing clinic's.
    pub phone: Option<String>,
}

impl ClinicInput {
    /// Trims and checks each field. Hours or phone left out (`None`) are kept
    /// as an existing clinic has them; `""` clears them.
    pub fn parse(name: &str, address: &str, hours: Option<&str>, phone: Option<&str>) -> Result<Self, DomainError> {
        let field = |v: &str, f: &str, min: usize, max: usize| {
            super::readable(v, min, max, false)
                .ok_or_else(|| DomainError::invalid(f, &format!("{f} must be {min} to {max} printable characters")))
        };
        Ok(ClinicInput {
            name: field(name, "name", 1, 120)?,
            address: field(address, "address", 1, 200)?,
            hours: hours.map(|h| field(h, "hours", 0, 200)).transpose()?,
            phone: phone.map(|p| field(p, "phone", 0, 30)).transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clinic_input_bounds() {
        let ok = ClinicInput::parse("Oak Bay Family Practice", "1 Main St", Some("Mon-Fri 9-5"), Some("250-555-0100"));
        assert_eq!(ok.unwrap().phone.as_deref(), Some("250-555-0100"));
        assert!(ClinicInput::parse(" ", "1 Main St", None, None).is_err());
        assert!(ClinicInput::parse("A", "", None, None).is_err());
        assert!(ClinicInput::parse("A", "B", None, Some(&"1".repeat(31))).is_err());
        assert!(ClinicInput::parse("A\u{7}", "B", None, None).is_err());
        assert!(ClinicInput::parse("\u{202E}cinilC", "B", None, None).is_err(), "a bidirectional override");
        assert!(ClinicInput::parse("A", "B", Some("\u{2066}x"), None).is_err(), "hours are checked too");
        let composed = ClinicInput::parse("Cle\u{301}ment Clinic", "B", None, None).unwrap();
        assert_eq!(composed.name, "Cl\u{e9}ment Clinic", "held in composed form, as names are");
        assert!(ClinicInput::parse("\u{200B}", "B", None, None).is_err(), "a name of nothing that shows");
        assert!(ClinicInput::parse("A", "1 Main\u{2028}St", None, None).is_err(), "no line breaks in an address");
        let unsaid = ClinicInput::parse("A", "B", None, Some("")).unwrap();
        assert_eq!((unsaid.hours, unsaid.phone), (None, Some(String::new())), "left out, or cleared");
    }
}
