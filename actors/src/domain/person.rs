//! People and households as they register.

use std::collections::BTreeSet;

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

use super::{DomainError, Phn, Timestamp};

/// A given name or surname: 1–60 characters after trimming, letters (any script,
/// with the combining marks written after them) with spaces, apostrophes,
/// hyphens and periods, and at least one letter. A `7` beside a letter is
/// taken too: several First Nations orthographies of British Columbia write
/// the glottal stop with it, as in Sḵwx̱wú7mesh. Other digits are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonName(Box<str>);

impl PersonName {
    /// Parses a name, held in Unicode's composed form (NFC): "José" typed with
    /// a combining accent (as some keyboards and copy-paste give it) is the
    /// same name, and counts the same characters, as with a precomposed "é".
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        let composed = super::composed(input.trim());
        let s = composed.as_str();
        let count = s.chars().count();
        if count == 0 || count > 60 {
            return Err(DomainError::invalid("name", "a name has 1 to 60 characters"));
        }
        let chars: Vec<char> = s.chars().collect();
        let mut after_letter = false;
        for (i, &c) in chars.iter().enumerate() {
            let ok = if is_combining_mark(c) {
                after_letter
            } else if c == GLOTTAL_STOP {
                after_letter || chars.get(i + 1).is_some_and(|n| n.is_alphabetic())
            } else {
                c.is_alphabetic() || is_name_punctuation(c)
            };
            if !ok {
                return Err(DomainError::invalid(
                    "name",
                    "a name may hold letters (with their accents), spaces, apostrophes, hyphens, periods \
                     and a 7 (a glottal stop) beside a letter",
                ));
            }
            after_letter = c.is_alphabetic() || (after_letter && is_combining_mark(c));
        }
        if !s.chars().any(char::is_alphabetic) {
            return Err(DomainError::invalid("name", "a name holds at least one letter"));
        }
        Ok(PersonName(s.into()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether two names are the same name: letter case and Unicode's forms
    /// aside (a name stored before session 15 may be in its decomposed form).
    pub fn same_as(&self, other: &PersonName) -> bool {
        let folded = |n: &PersonName| super::composed(&n.0).chars().flat_map(char::to_lowercase).collect::<String>();
        self.0 == other.0 || folded(self) == folded(other)
    }
}

/// The digit several First Nations orthographies write for a glottal stop.
const GLOTTAL_STOP: char = '7';

fn is_name_punctuation(c: char) -> bool {
    matches!(c, ' ' | '\'' | '-' | '.' | '’')
}

/// A combining mark (Unicode General_Category=Mark), written after the letter
/// it marks: accents typed decomposed (as macOS and iOS keyboards often send
/// them), the marks of First Nations orthographies (a comma above in Sq̓əq̓ip,
/// a macron below in Sḵwx̱wú7mesh), and the vowel signs and viramas of Indic
/// scripts (ਹਰਪ੍ਰੀਤ).
fn is_combining_mark(c: char) -> bool {
    unicode_normalization::char::is_combining_mark(c)
}

/// A date of birth: a real calendar date, not in the future, at most 125 years ago.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DateOfBirth(NaiveDate);

impl DateOfBirth {
    /// Parses `YYYY-MM-DD` (exactly: four, two and two digits), checked against `today`.
    pub fn parse(input: &str, today: NaiveDate) -> Result<Self, DomainError> {
        let bad =
            || DomainError::invalid("dateOfBirth", "a date of birth is written YYYY-MM-DD and must be a real date");
        let s = input.trim();
        let shape = s.len() == 10
            && s.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() });
        if !shape {
            return Err(bad());
        }
        let date = NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| bad())?;
        Self::from_date(date, today)
    }

    /// Validates a date already parsed.
    pub fn from_date(date: NaiveDate, today: NaiveDate) -> Result<Self, DomainError> {
        if date > today {
            return Err(DomainError::invalid("dateOfBirth", "a date of birth cannot be in the future"));
        }
        if today.checked_sub_months(chrono::Months::new(125 * 12)).is_some_and(|oldest| date < oldest) {
            return Err(DomainError::invalid(
                "dateOfBirth",
                "a date of birth more than 125 years ago is not plausible",
            ));
        }
        Ok(DateOfBirth(date))
    }

    /// The date.
    pub fn date(&self) -> NaiveDate {
        self.0
    }

    /// Age in whole years on `day`.
    pub fn age_on(&self, day: NaiveDate) -> u32 {
        let mut age = day.year() - self.0.year();
        if (day.month(), day.day()) < (self.0.month(), self.0.day()) {
            age -= 1;
        }
        age.max(0) as u32
    }
}

/// A Canadian postal code, normalised to `A1A 1A1`. Held inline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PostalCode([u8; 7]);

impl PostalCode {
    /// Parses a postal code, forgiving case and the middle space.
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        let s: String = input.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_uppercase();
        let b = s.as_bytes();
        // Canada Post never uses D, F, I, O, Q or U; W and Z never start a code.
        let letter = |c: u8| c.is_ascii_uppercase() && !b"DFIOQU".contains(&c);
        let ok = b.len() == 6
            && letter(b[0])
            && !b"WZ".contains(&b[0])
            && b[1].is_ascii_digit()
            && letter(b[2])
            && b[3].is_ascii_digit()
            && letter(b[4])
            && b[5].is_ascii_digit();
        if ok {
            let mut code = [b' '; 7];
            code[..3].copy_from_slice(&b[..3]);
            code[4..].copy_from_slice(&b[3..]);
            Ok(PostalCode(code))
        } else {
            Err(DomainError::invalid("postalCode", "a postal code looks like V8W 1A1"))
        }
    }

    /// The code as `A1A 1A1`.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("a postal code is ASCII")
    }
}

/// A clinical need that raises priority under the configured policy. Needs are
/// what the patient reports at registration; nothing a provider could use to
/// pick easy patients is here. Configuration may name them as written here, in
/// snake case (what `ATTACH_MATCHING__NEED_BONUS_DAYS__RECENT_DISCHARGE` becomes)
/// or as the API does (`RECENT_DISCHARGE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Need {
    /// Currently pregnant.
    #[serde(alias = "pregnancy", alias = "PREGNANCY")]
    Pregnancy,
    /// A baby under 12 months.
    #[serde(alias = "newborn", alias = "NEWBORN")]
    Newborn,
    /// Frailty or reduced mobility.
    #[serde(alias = "frailty", alias = "FRAILTY")]
    Frailty,
    /// Discharged from hospital in the last 30 days.
    #[serde(alias = "recent_discharge", alias = "RECENT_DISCHARGE")]
    RecentDischarge,
    /// Complex chronic conditions needing regular care.
    #[serde(alias = "chronic_complex", alias = "CHRONIC_COMPLEX")]
    ChronicComplex,
    /// Mental health or substance use care.
    #[serde(alias = "mental_health", alias = "MENTAL_HEALTH")]
    MentalHealth,
    /// Palliative or end-of-life care.
    #[serde(alias = "palliative", alias = "PALLIATIVE")]
    Palliative,
}

impl Need {
    /// Every need, in a fixed order.
    pub const ALL: [Need; 7] = [
        Need::Pregnancy,
        Need::Newborn,
        Need::Frailty,
        Need::RecentDischarge,
        Need::ChronicComplex,
        Need::MentalHealth,
        Need::Palliative,
    ];

    /// Needs that make a patient "complex" for a provider's complexity mix.
    pub fn is_complex(self) -> bool {
        matches!(self, Need::Frailty | Need::ChronicComplex | Need::MentalHealth | Need::Palliative)
    }
}

/// The age bands provider preferences speak of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AgeGroup {
    /// Under 18.
    Child,
    /// 18 to 64.
    Adult,
    /// 65 and over.
    Senior,
}

impl AgeGroup {
    /// The band of an age in years.
    pub fn of_age(age: u32) -> Self {
        match age {
            0..=17 => AgeGroup::Child,
            18..=64 => AgeGroup::Adult,
            _ => AgeGroup::Senior,
        }
    }
}

/// A language, as a lower-case ISO 639 code (`en`, `fr`, `pa`, `zh`, ...).
/// Held inline: two or three letters, padded with a zero byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Language([u8; 3]);

/// The ISO 639-1 two-letter language codes, sorted.
const ISO_639_1: [&str; 184] = [
    "aa", "ab", "ae", "af", "ak", "am", "an", "ar", "as", "av", "ay", "az", "ba", "be", "bg", "bi", "bm", "bn", "bo",
    "br", "bs", "ca", "ce", "ch", "co", "cr", "cs", "cu", "cv", "cy", "da", "de", "dv", "dz", "ee", "el", "en", "eo",
    "es", "et", "eu", "fa", "ff", "fi", "fj", "fo", "fr", "fy", "ga", "gd", "gl", "gn", "gu", "gv", "ha", "he", "hi",
    "ho", "hr", "ht", "hu", "hy", "hz", "ia", "id", "ie", "ig", "ii", "ik", "io", "is", "it", "iu", "ja", "jv", "ka",
    "kg", "ki", "kj", "kk", "kl", "km", "kn", "ko", "kr", "ks", "ku", "kv", "kw", "ky", "la", "lb", "lg", "li", "ln",
    "lo", "lt", "lu", "lv", "mg", "mh", "mi", "mk", "ml", "mn", "mr", "ms", "mt", "my", "na", "nb", "nd", "ne", "ng",
    "nl", "nn", "no", "nr", "nv", "ny", "oc", "oj", "om", "or", "os", "pa", "pi", "pl", "ps", "pt", "qu", "rm", "rn",
    "ro", "ru", "rw", "sa", "sc", "sd", "se", "sg", "sh", "si", "sk", "sl", "sm", "sn", "so", "sq", "sr", "ss", "st",
    "su", "sv", "sw", "ta", "te", "tg", "th", "ti", "tk", "tl", "tn", "to", "tr", "ts", "tt", "tw", "ty", "ug", "uk",
    "ur", "uz", "ve", "vi", "vo", "wa", "wo", "xh", "yi", "yo", "za", "zh", "zu",
];

/// The 3-letter codes (ISO 639-3, and ISO 639-2's bibliographic forms such as
/// `fre` and `ger`) of the languages that have a 2-letter code, sorted: such a
/// code is held as its 2-letter form, so `eng` and `en` are one language to
/// matching. From the ISO 639-3 code tables (as published with pycountry).
const ISO_639_3_TO_1: [(&str, &str); 204] = [
    ("aar", "aa"),
    ("abk", "ab"),
    ("afr", "af"),
    ("aka", "ak"),
    ("alb", "sq"),
    ("amh", "am"),
    ("ara", "ar"),
    ("arg", "an"),
    ("arm", "hy"),
    ("asm", "as"),
    ("ava", "av"),
    ("ave", "ae"),
    ("aym", "ay"),
    ("aze", "az"),
    ("bak", "ba"),
    ("bam", "bm"),
    ("baq", "eu"),
    ("bel", "be"),
    ("ben", "bn"),
    ("bis", "bi"),
    ("bod", "bo"),
    ("bos", "bs"),
    ("bre", "br"),
    ("bul", "bg"),
    ("bur", "my"),
    ("cat", "ca"),
    ("ces", "cs"),
    ("cha", "ch"),
    ("che", "ce"),
    ("chi", "zh"),
    ("chu", "cu"),
    ("chv", "cv"),
    ("cor", "kw"),
    ("cos", "co"),
    ("cre", "cr"),
    ("cym", "cy"),
    ("cze", "cs"),
    ("dan", "da"),
    ("deu", "de"),
    ("div", "dv"),
    ("dut", "nl"),
    ("dzo", "dz"),
    ("ell", "el"),
    ("eng", "en"),
    ("epo", "eo"),
    ("est", "et"),
    ("eus", "eu"),
    ("ewe", "ee"),
    ("fao", "fo"),
    ("fas", "fa"),
    ("fij", "fj"),
    ("fin", "fi"),
    ("fra", "fr"),
    ("fre", "fr"),
    ("fry", "fy"),
    ("ful", "ff"),
    ("geo", "ka"),
    ("ger", "de"),
    ("gla", "gd"),
    ("gle", "ga"),
    ("glg", "gl"),
    ("glv", "gv"),
    ("gre", "el"),
    ("grn", "gn"),
    ("guj", "gu"),
    ("hat", "ht"),
    ("hau", "ha"),
    ("hbs", "sh"),
    ("heb", "he"),
    ("her", "hz"),
    ("hin", "hi"),
    ("hmo", "ho"),
    ("hrv", "hr"),
    ("hun", "hu"),
    ("hye", "hy"),
    ("ibo", "ig"),
    ("ice", "is"),
    ("ido", "io"),
    ("iii", "ii"),
    ("iku", "iu"),
    ("ile", "ie"),
    ("ina", "ia"),
    ("ind", "id"),
    ("ipk", "ik"),
    ("isl", "is"),
    ("ita", "it"),
    ("jav", "jv"),
    ("jpn", "ja"),
    ("kal", "kl"),
    ("kan", "kn"),
    ("kas", "ks"),
    ("kat", "ka"),
    ("kau", "kr"),
    ("kaz", "kk"),
    ("khm", "km"),
    ("kik", "ki"),
    ("kin", "rw"),
    ("kir", "ky"),
    ("kom", "kv"),
    ("kon", "kg"),
    ("kor", "ko"),
    ("kua", "kj"),
    ("kur", "ku"),
    ("lao", "lo"),
    ("lat", "la"),
    ("lav", "lv"),
    ("lim", "li"),
    ("lin", "ln"),
    ("lit", "lt"),
    ("ltz", "lb"),
    ("lub", "lu"),
    ("lug", "lg"),
    ("mac", "mk"),
    ("mah", "mh"),
    ("mal", "ml"),
    ("mao", "mi"),
    ("mar", "mr"),
    ("may", "ms"),
    ("mkd", "mk"),
    ("mlg", "mg"),
    ("mlt", "mt"),
    ("mon", "mn"),
    ("mri", "mi"),
    ("msa", "ms"),
    ("mya", "my"),
    ("nau", "na"),
    ("nav", "nv"),
    ("nbl", "nr"),
    ("nde", "nd"),
    ("ndo", "ng"),
    ("nep", "ne"),
    ("nld", "nl"),
    ("nno", "nn"),
    ("nob", "nb"),
    ("nor", "no"),
    ("nya", "ny"),
    ("oci", "oc"),
    ("oji", "oj"),
    ("ori", "or"),
    ("orm", "om"),
    ("oss", "os"),
    ("pan", "pa"),
    ("per", "fa"),
    ("pli", "pi"),
    ("pol", "pl"),
    ("por", "pt"),
    ("pus", "ps"),
    ("que", "qu"),
    ("roh", "rm"),
    ("ron", "ro"),
    ("rum", "ro"),
    ("run", "rn"),
    ("rus", "ru"),
    ("sag", "sg"),
    ("san", "sa"),
    ("sin", "si"),
    ("slk", "sk"),
    ("slo", "sk"),
    ("slv", "sl"),
    ("sme", "se"),
    ("smo", "sm"),
    ("sna", "sn"),
    ("snd", "sd"),
    ("som", "so"),
    ("sot", "st"),
    ("spa", "es"),
    ("sqi", "sq"),
    ("srd", "sc"),
    ("srp", "sr"),
    ("ssw", "ss"),
    ("sun", "su"),
    ("swa", "sw"),
    ("swe", "sv"),
    ("tah", "ty"),
    ("tam", "ta"),
    ("tat", "tt"),
    ("tel", "te"),
    ("tgk", "tg"),
    ("tgl", "tl"),
    ("tha", "th"),
    ("tib", "bo"),
    ("tir", "ti"),
    ("ton", "to"),
    ("tsn", "tn"),
    ("tso", "ts"),
    ("tuk", "tk"),
    ("tur", "tr"),
    ("twi", "tw"),
    ("uig", "ug"),
    ("ukr", "uk"),
    ("urd", "ur"),
    ("uzb", "uz"),
    ("ven", "ve"),
    ("vie", "vi"),
    ("vol", "vo"),
    ("wel", "cy"),
    ("wln", "wa"),
    ("wol", "wo"),
    ("xho", "xh"),
    ("yid", "yi"),
    ("yor", "yo"),
    ("zha", "za"),
    ("zho", "zh"),
    ("zul", "zu"),
];

impl Language {
    /// Parses a 2- or 3-letter code by its shape, as stored records are read
    /// back (a code taken before session 12 checked two-letter codes against
    /// the standard still loads). Input goes through [`Self::parse_input`].
    /// A 3-letter code of a language that has a 2-letter one is held as that
    /// (`eng` is `en`), also when a record stored before session 15 is read.
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        let s = input.trim().to_ascii_lowercase();
        if (2..=3).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase()) {
            let s = match ISO_639_3_TO_1.binary_search_by(|(three, _)| (*three).cmp(s.as_str())) {
                Ok(i) => ISO_639_3_TO_1[i].1,
                Err(_) => s.as_str(),
            };
            let mut code = [0u8; 3];
            code[..s.len()].copy_from_slice(s.as_bytes());
            Ok(Language(code))
        } else {
            Err(DomainError::invalid("language", "a language is a 2- or 3-letter ISO 639 code, e.g. en or pa"))
        }
    }

    /// Parses a code given as input: a 2-letter ISO 639-1 code (one of the
    /// standard's) or a 3-letter ISO 639-2/3 code (by its shape: those are
    /// thousands, among them the Indigenous languages of Canada that have no
    /// 2-letter code).
    pub fn parse_input(input: &str) -> Result<Self, DomainError> {
        let language = Self::parse(input)?;
        if language.as_str().len() == 2 && ISO_639_1.binary_search(&language.as_str()).is_err() {
            return Err(DomainError::invalid(
                "language",
                &format!(
                    "`{}` is not an ISO 639-1 language code; e.g. en, fr, pa, or a 3-letter ISO 639-3 code",
                    language.as_str()
                ),
            ));
        }
        Ok(language)
    }

    /// `languages` with each one kept once, where it first appears.
    pub fn once_each(languages: Vec<Language>) -> Vec<Language> {
        let mut seen = BTreeSet::new();
        languages.into_iter().filter(|l| seen.insert(*l)).collect()
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        let len = if self.0[2] == 0 { 2 } else { 3 };
        std::str::from_utf8(&self.0[..len]).expect("a language code is ASCII")
    }
}

/// One person in a household.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Identity key; unique across the whole registry.
    pub phn: Phn,
    /// Given name.
    pub given_name: PersonName,
    /// Surname.
    pub surname: PersonName,
    /// Date of birth (drives age-group preferences).
    pub date_of_birth: DateOfBirth,
    /// Reported clinical needs.
    pub needs: BTreeSet<Need>,
}

impl Member {
    /// Whether `other` has the same names and date of birth, whatever the PHN
    /// (how a mistyped PHN is corrected).
    pub fn same_identity(&self, other: &Member) -> bool {
        self.given_name.same_as(&other.given_name)
            && self.surname.same_as(&other.surname)
            && self.date_of_birth == other.date_of_birth
    }

    /// Checks the needs against the member's age on `today`: `NEWBORN` is for
    /// a baby under 12 months, and it raises a household's priority. A household
    /// that changes later keeps it for its baby up to `newborn_until` years old
    /// (1: until the second birthday), so that sending the household back as it
    /// was read is not refused because the baby grew. `PREGNANCY`, which raises
    /// a household's priority too, is for a member aged at least
    /// [`Self::PREGNANCY_FROM`] (it was taken for a 6-day-old).
    pub fn check_needs(&self, today: NaiveDate, newborn_until: u32) -> Result<(), DomainError> {
        let age = self.date_of_birth.age_on(today);
        if self.needs.contains(&Need::Newborn) && age > newborn_until {
            let years = if age == 1 { "1 year".to_string() } else { format!("{age} years") };
            let why = format!("NEWBORN is for a baby under 12 months, and this member is {years} old");
            return Err(DomainError::invalid("needs", &why));
        }
        if self.needs.contains(&Need::Pregnancy) && age < Self::PREGNANCY_FROM {
            let why = format!(
                "PREGNANCY is for a member aged {} or more, and this member is {age}: give it to the one who is pregnant",
                Self::PREGNANCY_FROM
            );
            return Err(DomainError::invalid("needs", &why));
        }
        Ok(())
    }

    /// The youngest age `PREGNANCY` is taken for.
    pub const PREGNANCY_FROM: u32 = 10;
}

/// People who register together and are attached to one provider together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Household {
    /// 1 to 8 people with distinct PHNs.
    pub members: Vec<Member>,
    /// Where the household lives.
    pub postal_code: PostalCode,
    /// Languages the household can be cared for in, most preferred first.
    pub languages: Vec<Language>,
}

impl Household {
    /// The most people one registration may hold.
    pub const MAX_MEMBERS: usize = 8;

    /// Checks the household rules: 1 to 8 members, no PHN twice, at most 5
    /// languages (a language named twice, as `eng` and `en`, is kept once, in
    /// the order given).
    pub fn new(members: Vec<Member>, postal_code: PostalCode, languages: Vec<Language>) -> Result<Self, DomainError> {
        let languages = Language::once_each(languages);
        if members.is_empty() || members.len() > Self::MAX_MEMBERS {
            return Err(DomainError::invalid("members", "a household registers 1 to 8 people"));
        }
        let mut seen = BTreeSet::new();
        for (i, m) in members.iter().enumerate() {
            if !seen.insert(m.phn) {
                return Err(DomainError::invalid(
                    &format!("members[{i}].phn"),
                    "the same PHN appears twice in the household",
                ));
            }
        }
        if languages.len() > 5 {
            return Err(DomainError::invalid("languages", "list at most 5 languages"));
        }
        Ok(Household { members, postal_code, languages })
    }

    /// Every need reported by any member.
    pub fn needs(&self) -> BTreeSet<Need> {
        self.members.iter().flat_map(|m| m.needs.iter().copied()).collect()
    }

    /// True when any member has a complex need.
    pub fn is_complex(&self) -> bool {
        self.needs().into_iter().any(Need::is_complex)
    }

    /// The age groups of the members on the day of `at`.
    pub fn age_groups(&self, at: Timestamp) -> BTreeSet<AgeGroup> {
        let day = at.to_utc().date_naive();
        self.members.iter().map(|m| AgeGroup::of_age(m.date_of_birth.age_on(day))).collect()
    }
}

stored_as_text!(PostalCode, Language);

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 24).unwrap()
    }

    #[test]
    fn names() {
        assert_eq!(PersonName::parse("  Anne-Marie ").unwrap().as_str(), "Anne-Marie");
        // One name whichever Unicode form it arrives in: held composed, counted so.
        let (composed, decomposed) = ("Jos\u{e9}", "Jose\u{301}");
        assert_eq!(PersonName::parse(decomposed).unwrap().as_str(), composed);
        assert!(PersonName::parse(&"\u{e9}".repeat(31)).is_ok());
        assert!(PersonName::parse(&"e\u{301}".repeat(31)).is_ok(), "31 characters, not 62");
        let stored = PersonName(decomposed.into()); // as a name stored before was kept
        assert!(stored.same_as(&PersonName::parse(composed).unwrap()));
        assert!(PersonName::parse("ADA").unwrap().same_as(&PersonName::parse("Ada").unwrap()));
        assert!(!PersonName::parse("Ada").unwrap().same_as(&PersonName::parse("Adam").unwrap()));
        assert!(PersonName::parse("O'Brien").is_ok());
        assert!(PersonName::parse("Nguyễn").is_ok());
        assert!(PersonName::parse("").is_err());
        assert!(PersonName::parse("   ").is_err());
        assert!(PersonName::parse("R2D2").is_err());
        // The 7 of a glottal stop, beside a letter (before or after it, or its mark).
        assert!(PersonName::parse("Sk\u{0331}wx\u{0331}wu\u{0301}7mesh").is_ok());
        assert!(PersonName::parse("Skwxwú7mesh").is_ok());
        assert!(PersonName::parse("7ap").is_ok());
        assert!(PersonName::parse("Xa7").is_ok());
        for refused in ["7", "77", "John 7", "7 Smith", "Jo-7", "R2D7", "Ann8"] {
            assert!(PersonName::parse(refused).is_err(), "{refused:?}");
        }
        assert!(PersonName::parse(&"a".repeat(61)).is_err());
        // Accents typed decomposed (e + U+0302 + U+0303), and First Nations orthographies.
        assert!(PersonName::parse("Nguye\u{0302}\u{0303}n").is_ok());
        assert!(PersonName::parse("Zoe\u{0301}").is_ok());
        assert!(PersonName::parse("Sq\u{0313}\u{0259}q\u{0313}ip").is_ok(), "comma above");
        assert!(PersonName::parse("Sk\u{0331}wx\u{0331}wu\u{0301}mesh").is_ok(), "macron below");
        assert!(
            PersonName::parse("\u{0a39}\u{0a30}\u{0a2a}\u{0a4d}\u{0a30}\u{0a40}\u{0a24}").is_ok(),
            "Gurmukhi, virama"
        );
        assert!(PersonName::parse("\u{0301}Zoe").is_err(), "a mark marks a letter");
        assert!(PersonName::parse("Zo -\u{0301}").is_err());
        for punctuation in ["'", "-", "...", " . "] {
            assert!(PersonName::parse(punctuation).is_err(), "{punctuation:?} has no letter");
        }
    }

    #[test]
    fn newborn_is_only_for_a_baby_under_a_year() {
        let member = |dob: &str, needs: &[Need]| Member {
            phn: Phn::parse("9698658215").unwrap(),
            given_name: PersonName::parse("Ada").unwrap(),
            surname: PersonName::parse("Tremblay").unwrap(),
            date_of_birth: DateOfBirth::parse(dob, today()).unwrap(),
            needs: needs.iter().copied().collect(),
        };
        assert!(member("2026-02-01", &[Need::Newborn]).check_needs(today(), 0).is_ok());
        let err = member("2025-11-24", &[Need::Newborn]).check_needs(today(), 0).unwrap_err();
        assert!(err.message.contains("is 1 year old"), "{}", err.message);
        assert!(member("2025-11-24", &[Need::Newborn]).check_needs(today(), 1).is_ok(), "kept on a later change");
        assert!(member("2024-11-24", &[Need::Newborn]).check_needs(today(), 1).is_err());
        assert!(member("1984-03-09", &[Need::Newborn]).check_needs(today(), 0).is_err());
        assert!(member("1984-03-09", &[Need::Pregnancy]).check_needs(today(), 0).is_ok());
        for child in ["2026-11-18", "2020-05-01"] {
            let err = member(child, &[Need::Pregnancy]).check_needs(today(), 0).unwrap_err();
            assert!(err.message.contains("PREGNANCY is for a member aged 10"), "{}", err.message);
        }
    }

    #[test]
    fn dates_of_birth() {
        let dob = DateOfBirth::parse("1990-02-28", today()).unwrap();
        assert_eq!(dob.age_on(today()), 36);
        assert_eq!(dob.age_on(NaiveDate::from_ymd_opt(2026, 2, 27).unwrap()), 35);
        assert!(DateOfBirth::parse("2026-11-25", today()).is_err());
        assert!(DateOfBirth::parse("1899-01-01", today()).is_err());
        assert!(DateOfBirth::parse("1990-02-30", today()).is_err());
        assert!(DateOfBirth::parse("24/11/1990", today()).is_err());
        // Exactly YYYY-MM-DD.
        for loose in ["1990-1-1", "+1990-01-01", "1990-01-1", " 1990-01-01x"] {
            assert!(DateOfBirth::parse(loose, today()).is_err(), "{loose}");
        }
        // At most 125 years ago, to the day (today is 2026-11-24).
        assert!(DateOfBirth::parse("1901-11-24", today()).is_ok());
        assert!(DateOfBirth::parse("1901-11-23", today()).is_err());
        assert!(DateOfBirth::parse("1901-01-01", today()).is_err());
    }

    #[test]
    fn postal_codes() {
        assert_eq!(PostalCode::parse("v8w1a1").unwrap().as_str(), "V8W 1A1");
        assert_eq!(PostalCode::parse("V8W 1A1").unwrap().as_str(), "V8W 1A1");
        for bad in ["V8W1A", "W8W 1A1", "V8W 1O1", "88W 1A1", "V8W 1A1 X"] {
            assert!(PostalCode::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn age_groups_and_languages() {
        assert_eq!(AgeGroup::of_age(0), AgeGroup::Child);
        assert_eq!(AgeGroup::of_age(17), AgeGroup::Child);
        assert_eq!(AgeGroup::of_age(18), AgeGroup::Adult);
        assert_eq!(AgeGroup::of_age(65), AgeGroup::Senior);
        assert_eq!(Language::parse("EN").unwrap().as_str(), "en");
        assert!(Language::parse("english").is_err());
        assert!(ISO_639_1.is_sorted(), "searched by halves");
        assert!(Language::parse_input("zz").unwrap_err().message.contains("ISO 639-1"));
        assert_eq!(Language::parse_input("crk").unwrap().as_str(), "crk", "Plains Cree has no 2-letter code");
        assert_eq!(Language::parse_input("PA").unwrap().as_str(), "pa");
        // One language, one code: the 3-letter forms of 2-letter languages (and
        // ISO 639-2's bibliographic ones) are held as the 2-letter code.
        for (three, two) in [("eng", "en"), ("fra", "fr"), ("fre", "fr"), ("pan", "pa"), ("zho", "zh"), ("ger", "de")] {
            assert_eq!(Language::parse_input(three).unwrap().as_str(), two, "{three}");
        }
        assert!(ISO_639_3_TO_1.is_sorted(), "searched by halves");
        assert!(ISO_639_3_TO_1.iter().all(|(_, two)| ISO_639_1.binary_search(two).is_ok()));
        let stored: Language = postcard::from_bytes(&postcard::to_allocvec("eng").unwrap()).unwrap();
        assert_eq!(stored.as_str(), "en", "a code stored before is read as the same language");
        let listed = ["en", "eng", "pa", "EN"].map(|l| Language::parse_input(l).unwrap());
        assert_eq!(Language::once_each(listed.to_vec()).iter().map(Language::as_str).collect::<Vec<_>>(), ["en", "pa"]);
        // Stored before two-letter codes were checked: still read back.
        let stored: Language = postcard::from_bytes(&postcard::to_allocvec("iw").unwrap()).unwrap();
        assert_eq!(stored.as_str(), "iw");
    }

    fn member(phn: &str) -> Member {
        Member {
            phn: Phn::parse(phn).unwrap(),
            given_name: PersonName::parse("Ada").unwrap(),
            surname: PersonName::parse("Lovelace").unwrap(),
            date_of_birth: DateOfBirth::parse("1990-01-01", today()).unwrap(),
            needs: [Need::Frailty].into(),
        }
    }

    #[test]
    fn household_rules() {
        let pc = PostalCode::parse("V8W 1A1").unwrap();
        assert!(Household::new(vec![], pc, vec![]).is_err());
        let one = Household::new(vec![member("9698658215")], pc, vec![]).unwrap();
        assert!(one.is_complex());
        let twice = Household::new(vec![member("9698658215"), member("9698658215")], pc, vec![]);
        assert_eq!(twice.unwrap_err().field, "members[1].phn");
        let nine: Vec<Member> =
            (0..20).filter_map(Phn::with_body).take(9).map(|p| Member { phn: p, ..member("9698658215") }).collect();
        assert_eq!(nine.len(), 9);
        assert!(Household::new(nine.clone(), pc, vec![]).is_err());
        assert!(Household::new(nine[..8].to_vec(), pc, vec![]).is_ok());
    }
}
