//! Who holds a household's place in line.
//!
//! A registration's time is its place in line, and it belongs to the people who
//! registered. A household changes (a baby born, a partner moving in, someone
//! leaving), and every change must keep someone who holds the place. Checking
//! that against the household as it is *now* was not enough: two changes (add
//! other people, then drop everyone who registered) handed the place to people
//! who never waited for it. So the people who hold the place are remembered
//! apart from the household:
//! - **those who registered**, whether in the household now or not (one who
//!   left and comes back holds it again), with a PHN corrected when a mistyped
//!   one is;
//! - **a child born since the household registered**: they could not have
//!   registered sooner, and hold the place with their family while their date
//!   of birth says so (it is read from the household at each change, not kept);
//! - **the people still waiting, when providers' panels took every holder**:
//!   that is the family staying together, and they are kept as holders from
//!   the next change on.
//!
//! Anyone else added later shares the household's place while a holder stays,
//! and does not hold it. Identity is not checked against the PHN (README), so a
//! caller who changes a holder's name and date of birth in one change and
//! their PHN in another can still replace them: these rules stop the simple
//! handover, not a forged identity.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::{DomainError, Household, Member, Phn, RegistrationRef};

/// The people who hold a registration's place in line, kept only while that
/// is not simply everyone in its household (with no record, everyone in it does).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceHolders {
    /// The registration.
    pub reference: RegistrationRef,
    /// Their PHNs: those who registered (corrected since, if a PHN was
    /// mistyped), in the household now or not, and any taken as holders when
    /// panels had taken every other one.
    pub phns: Vec<Phn>,
}

impl PlaceHolders {
    /// What no record stands for: everyone in `household` holds the place.
    pub fn everyone_in(reference: RegistrationRef, household: &Household) -> Self {
        PlaceHolders { reference, phns: household.members.iter().map(|m| m.phn).collect() }
    }

    /// The record to keep when `phns` hold the place of `household`: none when
    /// they are exactly everyone in it, which no record means already.
    pub fn to_keep(reference: RegistrationRef, phns: Vec<Phn>, household: &Household) -> Option<Self> {
        let everyone = phns.len() == household.members.len() && household.members.iter().all(|m| phns.contains(&m.phn));
        (!everyone).then_some(PlaceHolders { reference, phns })
    }
}

/// The most PHNs kept: people who left are forgotten first beyond it.
const MAX_KEPT: usize = 32;

/// Whether `m` was born since a household registered on `registered_on`. The
/// registration's day is UTC's and a date of birth the province's, so a day
/// of margin: a baby born the evening of a registration made that afternoon
/// (already the next day in UTC) counts.
fn born_since(m: &Member, registered_on: NaiveDate) -> bool {
    m.date_of_birth.date() >= registered_on.pred_opt().unwrap_or(registered_on)
}

/// The PHNs that hold the place by registering (see [`PlaceHolders::phns`]).
fn registered(stored: Option<&PlaceHolders>, current: &Household) -> Vec<Phn> {
    match stored {
        Some(s) => s.phns.clone(),
        None => current.members.iter().map(|m| m.phn).collect(),
    }
}

/// The members of `current` who hold its place by `registered` PHNs or by
/// being born since; when there are none, panels took them, and everyone in
/// it holds the place instead.
fn held<'a: 'b, 'b>(
    registered: &'b [Phn],
    current: &'a Household,
    registered_on: NaiveDate,
) -> impl Iterator<Item = &'a Member> + 'b {
    current.members.iter().filter(move |m| registered.contains(&m.phn) || born_since(m, registered_on))
}

/// Checks that `next`, a change of `current` (registered on `registered_on`),
/// keeps someone who holds its place: one who registered (by PHN, or by names
/// and date of birth when a PHN is corrected), or a child born since who is in
/// the household already. Answers the PHNs that hold the place by registering
/// after the change (what [`PlaceHolders::phns`] keeps).
pub fn holders_after(
    stored: Option<&PlaceHolders>,
    current: &Household,
    next: &Household,
    registered_on: NaiveDate,
) -> Result<Vec<Phn>, DomainError> {
    let mut kept = registered(stored, current);
    // Panels took every holder: the people still waiting hold it from now on.
    if held(&kept, current, registered_on).next().is_none() {
        kept.extend(current.members.iter().map(|m| m.phn));
    }
    // A holder whose names and date of birth are in `next` under another PHN had
    // a mistyped one corrected, unless their own PHN is there with them (the
    // same person) or the other PHN holds the place already.
    let identical = |m: &Member, c: &Member| m.phn == c.phn && m.same_identity(c);
    let registered_here: Vec<&Member> = current.members.iter().filter(|c| kept.contains(&c.phn)).collect();
    for c in registered_here {
        if next.members.iter().any(|m| identical(m, c)) {
            continue;
        }
        if let Some(m) = next.members.iter().find(|m| m.phn != c.phn && m.same_identity(c) && !kept.contains(&m.phn))
            && let Some(slot) = kept.iter_mut().find(|p| **p == c.phn)
        {
            *slot = m.phn;
        }
    }
    // A child born since holds it only if they were in the household already
    // (by PHN, or by names and date of birth when their PHN is corrected), born
    // since there too: a date of birth changed in the same change proves nothing.
    let holds = next.members.iter().any(|m| {
        kept.contains(&m.phn)
            || (born_since(m, registered_on)
                && current
                    .members
                    .iter()
                    .any(|c| (c.phn == m.phn || c.same_identity(m)) && born_since(c, registered_on)))
    });
    if !holds {
        return Err(DomainError::invalid(
            "members",
            "a changed household keeps at least one of the people who hold its place in line: those who \
             registered it (by PHN, or by name and date of birth to correct a PHN) and children born since it \
             registered. Other people added later share the place but do not hold it; other people register as \
             a new household",
        ));
    }
    // Beyond the bound, people who left are forgotten first.
    while kept.len() > MAX_KEPT {
        match kept.iter().position(|p| !next.members.iter().any(|m| m.phn == *p)) {
            Some(i) => kept.remove(i),
            None => break,
        };
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DateOfBirth, PersonName, PostalCode};

    /// The members of `current` who hold its place, as [`holders_after`] reads them.
    fn holders<'a>(stored: Option<&PlaceHolders>, current: &'a Household, registered_on: NaiveDate) -> Vec<&'a Member> {
        let phns = registered(stored, current);
        let found: Vec<&Member> = held(&phns, current, registered_on).collect();
        if found.is_empty() { current.members.iter().collect() } else { found }
    }

    fn phn(n: u32) -> Phn {
        (n * 7919..).find_map(Phn::with_body).unwrap()
    }

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 26).unwrap()
    }

    /// When the household registered.
    fn since() -> NaiveDate {
        NaiveDate::from_ymd_opt(2024, 6, 1).unwrap()
    }

    fn born(on: NaiveDate) -> DateOfBirth {
        DateOfBirth::from_date(on, today()).unwrap()
    }

    fn member(n: u32, given: &str) -> Member {
        Member {
            phn: phn(n),
            given_name: PersonName::parse(given).unwrap(),
            surname: PersonName::parse("Tremblay").unwrap(),
            date_of_birth: born(NaiveDate::from_ymd_opt(1984, 3, 9).unwrap()),
            needs: Default::default(),
        }
    }

    fn household(members: &[&Member]) -> Household {
        let members = members.iter().map(|m| (*m).clone()).collect();
        Household::new(members, PostalCode::parse("V0B 1M0").unwrap(), vec![]).unwrap()
    }

    fn stored(phns: &[Phn]) -> PlaceHolders {
        PlaceHolders { reference: RegistrationRef::parse("000000000001").unwrap(), phns: phns.to_vec() }
    }

    /// Applies `changes` in turn from `first`, as the shard keeps the record.
    fn after(first: &Household, changes: &[Household]) -> Result<Vec<Phn>, DomainError> {
        let (mut now, mut kept) = (first.clone(), None);
        for next in changes {
            let phns = holders_after(kept.as_ref(), &now, next, since())?;
            kept = Some(stored(&phns));
            now = next.clone();
        }
        Ok(kept.map(|k| k.phns).unwrap_or_default())
    }

    #[test]
    fn with_nothing_stored_everyone_holds_the_place() {
        let (ada, bo) = (member(1, "Ada"), member(2, "Bo"));
        let now = household(&[&ada, &bo]);
        assert_eq!(holders(None, &now, since()), vec![&ada, &bo]);
        let next = household(&[&ada, &bo, &member(3, "Cy")]);
        assert_eq!(holders_after(None, &now, &next, since()).unwrap(), vec![ada.phn, bo.phn]);
    }

    #[test]
    fn a_place_is_not_handed_over_in_two_changes() {
        let ada = member(1, "Ada");
        let first = household(&[&ada]);
        let with_stranger = household(&[&ada, &member(7, "Xan")]);
        let only_stranger = household(&[&member(7, "Xan")]);
        let e = after(&first, &[with_stranger.clone(), only_stranger.clone()]).unwrap_err();
        assert_eq!(e.field, "members");
        // Without the stored holders, that second change would have looked fine.
        assert!(holders_after(None, &with_stranger, &only_stranger, since()).is_ok());
    }

    #[test]
    fn one_who_registered_and_left_holds_it_again_on_coming_back() {
        let (ada, bo, xan) = (member(1, "Ada"), member(2, "Bo"), member(7, "Xan"));
        let first = household(&[&ada, &bo]);
        // Bo is dropped by mistake, Xan joins, Bo comes back; then Ada leaves.
        let changes = [household(&[&ada, &xan]), household(&[&ada, &xan, &bo]), household(&[&xan, &bo])];
        assert_eq!(after(&first, &changes).unwrap(), vec![ada.phn, bo.phn], "Ada is still remembered");
        // And Xan alone is still refused.
        let mut more = changes.to_vec();
        more.push(household(&[&xan]));
        assert!(after(&first, &more).is_err());
    }

    #[test]
    fn a_corrected_phn_carries_over_even_when_two_were_swapped() {
        let (ada, cy) = (member(1, "Ada"), member(3, "Cy"));
        let first = household(&[&ada]);
        let grown = household(&[&ada, &cy]);
        // Ada's and Cy's PHNs had been typed the other way round: corrected, Ada keeps the place.
        let swapped = household(&[&Member { phn: cy.phn, ..ada.clone() }, &Member { phn: ada.phn, ..cy.clone() }]);
        assert_eq!(after(&first, &[grown.clone(), swapped.clone()]).unwrap(), vec![cy.phn]);
        let only_cy = household(&[&Member { phn: ada.phn, ..cy.clone() }]);
        assert!(after(&first, &[grown, swapped, only_cy]).is_err(), "Cy, added later, still does not hold it");
        // A plain correction of Ada's PHN.
        let corrected = household(&[&Member { phn: phn(9), ..ada.clone() }]);
        assert_eq!(after(&first, &[corrected]).unwrap(), vec![phn(9)]);
    }

    #[test]
    fn when_panels_took_every_holder_the_people_waiting_hold_it_and_one_who_comes_back_too() {
        let (ada, xan) = (member(1, "Ada"), member(7, "Xan"));
        // Ada held the place and was listed on a panel: Xan, still waiting, holds it now.
        let now = household(&[&xan]);
        let held = stored(&[ada.phn]);
        assert_eq!(holders(Some(&held), &now, since()), vec![&xan]);
        // Ada, taken off the panel, comes back: both hold it, so either may leave.
        let back = household(&[&xan, &ada]);
        let kept = holders_after(Some(&held), &now, &back, since()).unwrap();
        assert_eq!(kept, vec![ada.phn, xan.phn]);
        for one in [&ada, &xan] {
            let alone = household(&[one]);
            assert!(holders_after(Some(&stored(&kept)), &back, &alone, since()).is_ok());
        }
    }

    #[test]
    fn a_child_born_since_holds_the_place_while_their_date_of_birth_says_so() {
        let ada = member(1, "Ada");
        let baby = Member { date_of_birth: born(since()), ..member(2, "Bea") };
        let older = Member { date_of_birth: born(since() - chrono::Days::new(5)), ..member(3, "Cal") };
        let first = household(&[&ada]);
        let grown = household(&[&ada, &baby, &older]);
        // Ada leaves (found a doctor on her own): her baby keeps the family's place, Cal alone would not.
        assert!(after(&first, &[grown.clone(), household(&[&baby, &older])]).is_ok());
        assert!(after(&first, &[grown.clone(), household(&[&older])]).is_err());
        // Someone added with a newborn's date of birth, then "corrected" to an
        // adult's while the one who registered leaves: nobody holds it.
        let adult = Member { date_of_birth: born(NaiveDate::from_ymd_opt(1991, 1, 1).unwrap()), ..baby.clone() };
        assert!(after(&first, &[grown.clone(), household(&[&adult, &older])]).is_err());
        // A child born since cannot be brought in and left holding it in one change,
        // nor someone added as an adult be made one while the one who registered leaves.
        assert!(after(&first, &[household(&[&baby])]).is_err());
        let as_adult = Member { date_of_birth: born(NaiveDate::from_ymd_opt(1990, 1, 1).unwrap()), ..baby.clone() };
        let with_adult = household(&[&ada, &as_adult]);
        assert!(after(&first, &[with_adult, household(&[&baby])]).is_err());
        // The baby left holding it alone has a mistyped PHN corrected.
        let corrected = Member { phn: phn(8), ..baby.clone() };
        let alone = household(&[&baby, &older]);
        assert!(after(&first, &[grown.clone(), alone, household(&[&corrected])]).is_ok());
        // Born the day before the registration's UTC day: the province's evening of that day.
        let evening = Member { date_of_birth: born(since().pred_opt().unwrap()), ..member(4, "Dee") };
        assert!(after(&first, &[household(&[&ada, &evening]), household(&[&evening])]).is_ok());
    }
}
