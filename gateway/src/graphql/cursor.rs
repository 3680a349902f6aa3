//! Opaque cursors: clients pass back what they were given, nothing else.

use attach_actors::domain::{CommunityCode, DomainError, ProposalId, RegistrationRef, Timestamp};
use attach_actors::shard::ProposalsFrom;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

fn bad() -> DomainError {
    DomainError { field: "after".into(), message: "the cursor is not one this API gave out".into() }
}

/// A position in `community`'s waitlist: (registration time, reference).
pub fn encode_waitlist(at: Timestamp, reference: &RegistrationRef, community: &CommunityCode) -> String {
    URL_SAFE_NO_PAD.encode(format!("w:{}:{}:{}", at.0, reference, community.as_str()))
}

/// Parses a cursor of `community`'s waitlist. One given out for another
/// community's is refused: read as a time in this one, it would skip or
/// repeat households without a word. Cursors given out before they named
/// their community (session 18) are read as they were.
pub fn decode_waitlist(cursor: &str, community: &CommunityCode) -> Result<(Timestamp, RegistrationRef), DomainError> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?).map_err(|_| bad())?;
    let mut parts = text.splitn(4, ':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("w"), Some(at), Some(r), from) => {
            if from.is_some_and(|from| !from.eq_ignore_ascii_case(community.as_str())) {
                return Err(DomainError {
                    field: "after".into(),
                    message: format!("the cursor is from another community's waitlist, not {}'s", community.as_str()),
                });
            }
            Ok((Timestamp(at.parse().map_err(|_| bad())?), RegistrationRef::parse(r).map_err(|_| bad())?))
        }
        _ => Err(bad()),
    }
}

/// A proposals position: the last proposal read (its time and id).
pub fn encode_proposal(at: Timestamp, id: &ProposalId) -> String {
    URL_SAFE_NO_PAD.encode(format!("p:{}:{id}", at.0))
}

/// Parses a proposals cursor: a position (`encode_proposal`), or an offset
/// (`encode_offset`, as cursors were before session 14).
pub fn decode_proposals(cursor: &str) -> Result<ProposalsFrom, DomainError> {
    if let Ok(offset) = decode_offset(cursor) {
        return Ok(ProposalsFrom::Offset(offset));
    }
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?).map_err(|_| bad())?;
    let mut parts = text.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("p"), Some(at), Some(id)) => Ok(ProposalsFrom::After(
            Timestamp(at.parse().map_err(|_| bad())?),
            ProposalId::parse(id).map_err(|_| bad())?,
        )),
        _ => Err(bad()),
    }
}

/// An audit log position: (time, record id).
pub fn encode_audit(at: Timestamp, id: u64) -> String {
    URL_SAFE_NO_PAD.encode(format!("a:{}:{id}", at.0))
}

/// Parses an audit log cursor.
pub fn decode_audit(cursor: &str) -> Result<(Timestamp, u64), DomainError> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?).map_err(|_| bad())?;
    let mut parts = text.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("a"), Some(at), Some(id)) => {
            Ok((Timestamp(at.parse().map_err(|_| bad())?), id.parse().map_err(|_| bad())?))
        }
        _ => Err(bad()),
    }
}

/// An offset into a list.
pub fn encode_offset(offset: usize) -> String {
    URL_SAFE_NO_PAD.encode(format!("o:{offset}"))
}

/// Parses an offset cursor.
pub fn decode_offset(cursor: &str) -> Result<usize, DomainError> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?).map_err(|_| bad())?;
    text.strip_prefix("o:").and_then(|n| n.parse().ok()).ok_or_else(bad)
}

/// Checks a requested page size against the cap.
pub fn page_size(first: Option<i32>, max: usize) -> Result<usize, DomainError> {
    match first {
        None => Ok(20.min(max)),
        Some(n) if n >= 1 && (n as usize) <= max => Ok(n as usize),
        Some(_) => Err(DomainError { field: "first".into(), message: format!("first must be between 1 and {max}") }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_forgeries() {
        let r = RegistrationRef::generate();
        let (here, there) = (CommunityCode::parse("111").unwrap(), CommunityCode::parse("121").unwrap());
        let c = encode_waitlist(Timestamp(42), &r, &here);
        assert_eq!(decode_waitlist(&c, &here).unwrap(), (Timestamp(42), r));
        let foreign = decode_waitlist(&c, &there).unwrap_err();
        assert_eq!(foreign.field, "after");
        assert!(foreign.message.contains("another community"), "{}", foreign.message);
        let older = URL_SAFE_NO_PAD.encode(format!("w:42:{r}"));
        assert_eq!(
            decode_waitlist(&older, &there).unwrap(),
            (Timestamp(42), r),
            "a cursor given out before session 18"
        );
        assert_eq!(decode_offset(&encode_offset(7)).unwrap(), 7);
        assert!(decode_waitlist(&encode_offset(7), &here).is_err());
        assert!(decode_offset("!!").is_err());
        assert!(decode_waitlist("", &here).is_err());
        assert_eq!(decode_audit(&encode_audit(Timestamp(-3), u64::MAX)).unwrap(), (Timestamp(-3), u64::MAX));
        assert!(decode_audit(&encode_offset(7)).is_err());
        let id = ProposalId::generate();
        assert_eq!(
            decode_proposals(&encode_proposal(Timestamp(9), &id)).unwrap(),
            ProposalsFrom::After(Timestamp(9), id)
        );
        assert_eq!(decode_proposals(&encode_offset(40)).unwrap(), ProposalsFrom::Offset(40), "an older cursor");
        assert!(decode_proposals(&c).is_err(), "a waitlist cursor");
        assert_eq!(page_size(None, 100).unwrap(), 20);
        assert!(page_size(Some(0), 100).is_err());
        assert!(page_size(Some(101), 100).is_err());
    }
}
