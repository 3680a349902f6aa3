//! Input types, and their parsing into the core's validated types.
//!
//! Parsing collects the field path (`members[1].phn`) so a client knows exactly
//! what to fix.

use std::collections::BTreeSet;

use async_graphql::{ID, InputObject};
use attach_actors::domain::{self as d, DomainError};
use attach_actors::shard::{ClinicCommand, ProviderInput as CoreProviderInput};

use super::types::{AgeGroup, Need, ProviderKind};

/// One person registering.
#[derive(InputObject)]
pub struct MemberInput {
    /// Personal Health Number (10 digits).
    pub phn: String,
    /// Given name.
    pub given_name: String,
    /// Surname.
    pub surname: String,
    /// Date of birth, YYYY-MM-DD.
    pub date_of_birth: String,
    /// Clinical needs to report.
    #[graphql(default)]
    pub needs: Vec<Need>,
}

/// A household registering on a community's waitlist.
#[derive(InputObject)]
pub struct RegisterHouseholdInput {
    /// Community code.
    pub community: String,
    /// Postal code of the household.
    pub postal_code: String,
    /// Languages the household can be cared for in (ISO 639 codes; a 3-letter
    /// code of a language with a 2-letter one is kept as that: `eng` is `en`).
    #[graphql(default)]
    pub languages: Vec<String>,
    /// 1 to 8 people.
    pub members: Vec<MemberInput>,
}

impl RegisterHouseholdInput {
    /// Parses into a community and a valid household.
    pub fn parse(self, today: chrono::NaiveDate) -> Result<(d::CommunityCode, d::Household), DomainError> {
        let community = d::CommunityCode::parse(&self.community)?;
        Ok((community, parse_household(&self.postal_code, &self.languages, self.members, today, 0)?))
    }
}

/// A waiting household as it is now: the whole household, replacing the one
/// on the registration (a member added or gone, needs changed).
#[derive(InputObject)]
pub struct HouseholdInput {
    /// Postal code of the household.
    pub postal_code: String,
    /// Languages the household can be cared for in (ISO 639 codes). Required,
    /// so that leaving it out never erases them: `[]` says none.
    pub languages: Vec<String>,
    /// 1 to 8 people.
    pub members: Vec<MemberInput>,
}

impl HouseholdInput {
    /// Parses into a valid household.
    pub fn parse(self, today: chrono::NaiveDate) -> Result<d::Household, DomainError> {
        // A baby registered as NEWBORN keeps it on later changes until their second birthday.
        parse_household(&self.postal_code, &self.languages, self.members, today, 1)
    }
}

fn parse_household(
    postal_code: &str,
    languages: &[String],
    input: Vec<MemberInput>,
    today: chrono::NaiveDate,
    newborn_until: u32,
) -> Result<d::Household, DomainError> {
    let postal_code = d::PostalCode::parse(postal_code)?;
    let languages = parse_languages(languages)?;
    if input.len() > d::Household::MAX_MEMBERS || input.is_empty() {
        // Checked before parsing members so a 9-person household gets this message, not a PHN one.
        return d::Household::new(vec![], postal_code, languages);
    }
    let mut members = Vec::with_capacity(input.len());
    for (i, m) in input.into_iter().enumerate() {
        let at = format!("members[{i}].");
        let member = d::Member {
            phn: d::Phn::parse(&m.phn).map_err(|e| e.at(&at))?,
            given_name: d::PersonName::parse(&m.given_name)
                .map_err(|e| DomainError { field: format!("{at}givenName"), ..e })?,
            surname: d::PersonName::parse(&m.surname)
                .map_err(|e| DomainError { field: format!("{at}surname"), ..e })?,
            date_of_birth: d::DateOfBirth::parse(&m.date_of_birth, today).map_err(|e| e.at(&at))?,
            needs: m.needs.into_iter().map(Into::into).collect(),
        };
        member.check_needs(today, newborn_until).map_err(|e| e.at(&at))?;
        members.push(member);
    }
    d::Household::new(members, postal_code, languages)
}

/// The languages in the order given, each once (`en`, `EN` and ` en ` are one).
fn parse_languages(input: &[String]) -> Result<Vec<d::Language>, DomainError> {
    parse_distinct(input, "languages", d::Language::parse_input)
}

/// Each entry of the list input `field` parsed, in the order given, each value
/// once; an entry refused names its place (`field[i]`).
pub(super) fn parse_distinct<T: PartialEq>(
    input: &[String],
    field: &str,
    parse: impl Fn(&str) -> Result<T, DomainError>,
) -> Result<Vec<T>, DomainError> {
    let mut out: Vec<T> = Vec::with_capacity(input.len());
    for (i, entry) in input.iter().enumerate() {
        let value = parse(entry).map_err(|e| DomainError { field: format!("{field}[{i}]"), ..e })?;
        if !out.contains(&value) {
            out.push(value);
        }
    }
    Ok(out)
}

/// A clinic to create or update.
#[derive(InputObject)]
pub struct ClinicInput {
    /// Facility number (5 letters or digits).
    pub facility_number: String,
    /// Community code.
    pub community: String,
    /// Name.
    pub name: String,
    /// Street address.
    pub address: String,
    /// Opening hours; left out of an update, the clinic keeps its hours
    /// (`""` clears them).
    pub hours: Option<String>,
    /// Phone; left out of an update, the clinic keeps its phone (`""` clears it).
    pub phone: Option<String>,
    /// The medical director's provider id: a registered provider. A new clinic
    /// names the director creating it (left out, it does); left out of an
    /// update, the clinic keeps its director.
    pub medical_director_id: Option<ID>,
}

impl ClinicInput {
    /// Parses into a community and a clinic command.
    pub fn parse(self) -> Result<(d::CommunityCode, ClinicCommand), DomainError> {
        Ok((
            d::CommunityCode::parse(&self.community)?,
            ClinicCommand {
                facility: d::FacilityNumber::parse(&self.facility_number)?,
                details: d::ClinicInput::parse(
                    &self.name,
                    &self.address,
                    self.hours.as_deref(),
                    self.phone.as_deref(),
                )?,
                medical_director: self
                    .medical_director_id
                    .map(|id| {
                        d::ProviderId::parse(&id).map_err(|e| DomainError { field: "medicalDirectorId".into(), ..e })
                    })
                    .transpose()?,
            },
        ))
    }
}

/// A provider to create or update.
#[derive(InputObject)]
pub struct ProviderInput {
    /// Practitioner number.
    pub id: ID,
    /// Given name.
    pub given_name: String,
    /// Surname.
    pub surname: String,
    /// Kind.
    pub kind: ProviderKind,
    /// Home community (owns the provider's capacity and panel).
    pub community: String,
    /// Clinics practised at (facility numbers). Each clinic added or taken
    /// off must be one the caller directs, as with `addProviderToClinic`.
    /// Left out of an update: kept (none for a new provider).
    pub clinics: Option<Vec<String>>,
    /// Patients on the panel not itemised in Attach (a count); submitted
    /// panels then take the patients they list off it. Left out of an update:
    /// kept (0 for a new provider).
    pub reported_panel_size: Option<u32>,
}

impl ProviderInput {
    /// Parses into a community and a provider command.
    pub fn parse(self) -> Result<(d::CommunityCode, CoreProviderInput), DomainError> {
        if self.reported_panel_size.is_some_and(|n| n > d::Capacity::MAX_PANEL_SIZE) {
            return Err(DomainError {
                field: "reportedPanelSize".into(),
                message: "a panel size is at most 10000".into(),
            });
        }
        if self.clinics.as_ref().is_some_and(|c| c.len() > 20) {
            return Err(DomainError { field: "clinics".into(), message: "list at most 20 clinics".into() });
        }
        // Listed twice is listed once: the "only clinic" rule counts clinics.
        let clinics =
            self.clinics.as_deref().map(|c| parse_distinct(c, "clinics", d::FacilityNumber::parse)).transpose()?;
        Ok((
            d::CommunityCode::parse(&self.community)?,
            CoreProviderInput {
                id: d::ProviderId::parse(&self.id)?,
                given_name: d::PersonName::parse(&self.given_name)
                    .map_err(|e| DomainError { field: "givenName".into(), ..e })?,
                surname: d::PersonName::parse(&self.surname)
                    .map_err(|e| DomainError { field: "surname".into(), ..e })?,
                kind: self.kind.into(),
                clinics,
                reported_panel_size: self.reported_panel_size,
            },
        ))
    }
}

/// A provider's capacity and preferences.
#[derive(InputObject)]
pub struct CapacityInput {
    /// Taking new patients.
    pub accepting_new_patients: bool,
    /// New patients a month.
    pub monthly_rate: u32,
    /// Panel size aimed for.
    pub desired_panel_size: u32,
    /// Most people of households with a complex need, as a percentage of the
    /// month's places (0–100): what earlier runs and proposals this month
    /// already hold counts against it.
    #[graphql(default = 100)]
    pub complex_share_percent: u32,
    /// Languages offered (ISO 639 codes; `eng` is kept as `en`).
    #[graphql(default)]
    pub languages: Vec<String>,
    /// Age groups taken (empty: all).
    #[graphql(default)]
    pub age_groups: Vec<AgeGroup>,
}

impl CapacityInput {
    /// Parses into a validated capacity.
    pub fn parse(self) -> Result<d::Capacity, DomainError> {
        d::Capacity::new(
            self.accepting_new_patients,
            self.monthly_rate,
            self.desired_panel_size,
            d::ComplexityMix::new(self.complex_share_percent)?,
            parse_languages(&self.languages)?,
            self.age_groups.into_iter().map(Into::into).collect::<BTreeSet<_>>(),
        )
    }
}

/// Filters on the waitlist.
#[derive(InputObject, Default)]
pub struct WaitlistFilter {
    /// Only households reporting any of these needs.
    #[graphql(default)]
    pub needs: Vec<Need>,
    /// Only households waiting at least this many days.
    pub min_wait_days: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_entry_refused_names_its_place_and_a_repeated_one_is_kept_once() {
        let list = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let clinics = parse_distinct(&list(&["0F111", "0f111", "0F112"]), "clinics", d::FacilityNumber::parse).unwrap();
        assert_eq!(clinics.iter().map(|f| f.as_str()).collect::<Vec<_>>(), ["0F111", "0F112"]);
        let refused = parse_distinct(&list(&["0F111", "bad!"]), "clinics", d::FacilityNumber::parse).unwrap_err();
        assert_eq!(refused.field, "clinics[1]");
        let refused = parse_languages(&list(&["en", "zz"])).unwrap_err();
        assert_eq!(refused.field, "languages[1]");
    }
}
