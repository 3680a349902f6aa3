//! Who holds a household's place in line.
//!
//! A registration's time is its place in line, and it belongs to the people who
//! registered. A household changes (a baby born, a partner moving in, someone
//! leaving), and every change must keep someone who holds the place. Checking
//! that against the household as it is *now* was not enough: two changes (add
//! other people, then drop everyone who registered) handed the place to people
//! who never waited for it. So the members who hold the place are remembered
//! apart from the household: the people who registered, less those who left,
//! with a PHN corrected when a mistyped one is. People added later share the
//! household's place while one who holds it stays, and do not hold it
//! themselves, except a child born since the household registered: they could
//! not have registered sooner, and hold the place as their family does. When
//! panels have taken every holder (each was listed by a provider), the people
//! still waiting hold it: that is the family staying together.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::{DomainError, Household, Member, Phn, RegistrationRef};

/// The members of a registration's household who hold its place in line, kept
/// only while someone in the household does not (with no record, everyone in
/// it does).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceHolders {
    /// The registration.
    pub reference: RegistrationRef,
    /// Their PHNs, in the household's order when first kept.
    pub phns: Vec<Phn>,
}

/// The members of `current` who hold its place: those of `stored` still in the
/// household, or everyone in it when nothing is stored or none of them is left.
pub fn holders<'a>(stored: Option<&PlaceHolders>, current: &'a Household) -> Vec<&'a Member> {
    let kept: Vec<&Member> = match stored {
        Some(s) => current.members.iter().filter(|m| s.phns.contains(&m.phn)).collect(),
        None => vec![],
    };
    if kept.is_empty() { current.members.iter().collect() } else { kept }
}

/// Checks that `next`, a change of `current` (registered on `registered_on`),
/// keeps at least one of the members who hold its place: the same PHN, or the
/// same names and date of birth (a mistyped PHN corrected). Answers the PHNs in
/// `next` that hold the place after the change: those holders in the order they
/// held it, then any member born since the household registered.
pub fn holders_after(
    stored: Option<&PlaceHolders>,
    current: &Household,
    next: &Household,
    registered_on: NaiveDate,
) -> Result<Vec<Phn>, DomainError> {
    let mut after: Vec<Phn> = Vec::new();
    for holder in holders(stored, current) {
        let stays = next.members.iter().find(|m| m.phn == holder.phn).or_else(|| {
            // A corrected PHN: the person is found by name and date of birth,
            // unless the new PHN is another member's of the household as it was.
            next.members.iter().find(|m| m.same_person(holder) && !current.members.iter().any(|c| c.phn == m.phn))
        });
        if let Some(m) = stays
            && !after.contains(&m.phn)
        {
            after.push(m.phn);
        }
    }
    if after.is_empty() {
        return Err(DomainError::invalid(
            "members",
            "a changed household keeps at least one of the people who hold its place in line: those who \
             registered it and are still in it (by PHN, or by name and date of birth to correct a PHN), and \
             children born since. Other people added later share the place but do not hold it; other people \
             register as a new household",
        ));
    }
    for m in &next.members {
        if m.date_of_birth.date() >= registered_on && !after.contains(&m.phn) {
            after.push(m.phn);
        }
    }
    Ok(after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DateOfBirth, PersonName, PostalCode};

    fn phn(n: u32) -> Phn {
        (n * 7919..).find_map(Phn::with_body).unwrap()
    }

    fn member(n: u32, given: &str) -> Member {
        Member {
            phn: phn(n),
            given_name: PersonName::parse(given).unwrap(),
            surname: PersonName::parse("Tremblay").unwrap(),
            date_of_birth: DateOfBirth::parse("1984-03-09", chrono::NaiveDate::from_ymd_opt(2026, 11, 26).unwrap())
                .unwrap(),
            needs: Default::default(),
        }
    }

    fn household(members: &[Member]) -> Household {
        Household::new(members.to_vec(), PostalCode::parse("V0B 1M0").unwrap(), vec![]).unwrap()
    }

    /// When the household registered.
    fn since() -> NaiveDate {
        NaiveDate::from_ymd_opt(2024, 6, 1).unwrap()
    }

    fn stored(phns: &[Phn]) -> PlaceHolders {
        PlaceHolders { reference: RegistrationRef::parse("000000000001").unwrap(), phns: phns.to_vec() }
    }

    #[test]
    fn with_nothing_stored_everyone_holds_the_place() {
        let (ada, bo) = (member(1, "Ada"), member(2, "Bo"));
        let now = household(&[ada.clone(), bo.clone()]);
        assert_eq!(holders(None, &now), vec![&ada, &bo]);
        // Both stay, a baby joins: the two who registered hold the place, the baby shares it.
        let next = household(&[ada.clone(), bo.clone(), member(3, "Cy")]);
        assert_eq!(holders_after(None, &now, &next, since()).unwrap(), vec![ada.phn, bo.phn]);
    }

    #[test]
    fn a_place_is_not_handed_over_in_two_changes() {
        let ada = member(1, "Ada");
        let first = household(&[ada.clone()]);
        let with_stranger = household(&[ada.clone(), member(7, "Xan")]);
        let kept = holders_after(None, &first, &with_stranger, since()).unwrap();
        assert_eq!(kept, vec![ada.phn], "the person added does not hold the place");
        // The second change drops the one who registered: refused, though Xan stays.
        let only_stranger = household(&[member(7, "Xan")]);
        let e = holders_after(Some(&stored(&kept)), &with_stranger, &only_stranger, since()).unwrap_err();
        assert_eq!(e.field, "members");
        // Without the stored holders, that change would have looked fine.
        assert!(holders_after(None, &with_stranger, &only_stranger, since()).is_ok());
    }

    #[test]
    fn a_holder_who_leaves_no_longer_holds_it_and_a_corrected_phn_carries_over() {
        let (ada, bo, cy) = (member(1, "Ada"), member(2, "Bo"), member(3, "Cy"));
        let now = household(&[ada.clone(), bo.clone(), cy.clone()]);
        let held = stored(&[ada.phn, bo.phn]);
        // Bo leaves: Ada alone holds the place.
        let next = household(&[ada.clone(), cy.clone()]);
        assert_eq!(holders_after(Some(&held), &now, &next, since()).unwrap(), vec![ada.phn]);
        // Ada's PHN was mistyped: the corrected one holds the place in her stead.
        let corrected = Member { phn: phn(9), ..ada.clone() };
        let next = household(&[corrected.clone(), bo.clone(), cy.clone()]);
        assert_eq!(holders_after(Some(&held), &now, &next, since()).unwrap(), vec![corrected.phn, bo.phn]);
        // A name and date of birth do not take over another member's PHN as it was.
        let swapped = Member { phn: cy.phn, ..ada.clone() };
        let next = household(&[swapped]);
        assert!(
            holders_after(Some(&stored(&[ada.phn])), &household(&[ada.clone(), cy.clone()]), &next, since()).is_err()
        );
    }

    #[test]
    fn when_panels_took_every_holder_the_people_waiting_hold_it() {
        let (ada, cy) = (member(1, "Ada"), member(3, "Cy"));
        // Ada held the place and was listed on a panel: Cy, still waiting, holds it now.
        let now = household(&[cy.clone()]);
        let held = stored(&[ada.phn]);
        assert_eq!(holders(Some(&held), &now), vec![&cy]);
        let next = household(&[cy.clone(), member(4, "Dee")]);
        assert_eq!(holders_after(Some(&held), &now, &next, since()).unwrap(), vec![cy.phn]);
    }

    #[test]
    fn a_child_born_since_the_household_registered_holds_the_place_with_it() {
        let ada = member(1, "Ada");
        let baby = Member { date_of_birth: DateOfBirth::from_date(since(), since()).unwrap(), ..member(2, "Bea") };
        let older = Member {
            date_of_birth: DateOfBirth::from_date(since().pred_opt().unwrap(), since()).unwrap(),
            ..member(3, "Cal")
        };
        let now = household(&[ada.clone()]);
        let grown = household(&[ada.clone(), baby.clone(), older.clone()]);
        let held = holders_after(None, &now, &grown, since()).unwrap();
        assert_eq!(held, vec![ada.phn, baby.phn], "born on the day it registered, not the day before");
        // Ada leaves (found a doctor on her own): her baby keeps the family's place, Cal alone would not.
        let without_ada = household(&[baby.clone(), older.clone()]);
        assert_eq!(holders_after(Some(&stored(&held)), &grown, &without_ada, since()).unwrap(), vec![baby.phn]);
        let only_cal = household(&[older]);
        assert!(holders_after(Some(&stored(&held)), &grown, &only_cal, since()).is_err());
    }
}
