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
    /// Hours, up to 200 characters.
    pub hours: String,
    /// Phone, up to 30 characters.
    pub phone: String,
}

impl ClinicInput {
    /// Trims and checks each field.
    pub fn parse(name: &str, address: &str, hours: &str, phone: &str) -> Result<Self, DomainError> {
        let field = |v: &str, f: &str, min: usize, max: usize| {
            let t = v.trim();
            let n = t.chars().count();
            if n < min || n > max || t.chars().any(super::unprintable) {
                Err(DomainError::invalid(f, &format!("{f} must be {min} to {max} printable characters")))
            } else {
                Ok(t.to_string())
            }
        };
        Ok(ClinicInput {
            name: field(name, "name", 1, 120)?,
            address: field(address, "address", 1, 200)?,
            hours: field(hours, "hours", 0, 200)?,
            phone: field(phone, "phone", 0, 30)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clinic_input_bounds() {
        assert!(ClinicInput::parse("Oak Bay Family Practice", "1 Main St", "Mon-Fri 9-5", "250-555-0100").is_ok());
        assert!(ClinicInput::parse(" ", "1 Main St", "", "").is_err());
        assert!(ClinicInput::parse("A", "", "", "").is_err());
        assert!(ClinicInput::parse("A", "B", "", &"1".repeat(31)).is_err());
        assert!(ClinicInput::parse("A\u{7}", "B", "", "").is_err());
        assert!(ClinicInput::parse("\u{202E}cinilC", "B", "", "").is_err(), "a bidirectional override");
    }
}
