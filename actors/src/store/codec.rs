//! The value codec both backends share: postcard behind a one-byte format
//! version, so a later format can be told apart (and migrated) rather than misread.

use serde::{Serialize, de::DeserializeOwned};

use super::StoreError;

/// The first byte of every versioned value.
const FORMAT_V1: u8 = 1;

/// Encodes a value behind the current format version.
pub(crate) fn encode<T: Serialize>(value: &T, what: &str) -> Result<Vec<u8>, StoreError> {
    // Encoding these plain data types cannot fail in practice; if a future type
    // makes it fail, the caller gets an error rather than a half-written batch.
    postcard::to_extend(value, vec![FORMAT_V1]).map_err(|e| StoreError::Corrupt(format!("cannot encode {what}: {e}")))
}

/// Decodes a versioned value. `what` names the table for the operator; it never
/// holds a key, because keys may contain a PHN.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&FORMAT_V1, body)) => {
            postcard::from_bytes(body).map_err(|e| StoreError::Corrupt(format!("undecodable {what}: {e}")))
        }
        Some((version, _)) => Err(StoreError::Corrupt(format!("{what} has unknown format version {version}"))),
        None => Err(StoreError::Corrupt(format!("empty {what}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_carry_a_version_byte() {
        let bytes = encode(&42u32, "test").unwrap();
        assert_eq!(bytes[0], FORMAT_V1);
        assert_eq!(decode::<u32>(&bytes, "test").unwrap(), 42);
        let mut future = bytes.clone();
        future[0] = 2;
        assert!(matches!(decode::<u32>(&future, "test"), Err(StoreError::Corrupt(_))));
        assert!(matches!(decode::<u32>(&[], "test"), Err(StoreError::Corrupt(_))));
    }
}
