//! Stored values: one format-version byte, then the postcard encoding of the value. A value with
//! an unknown version is refused instead of misread.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StoreError;

/// Version of the value encoding written by this build.
pub const VALUE_VERSION: u8 = 1;

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![VALUE_VERSION];
    postcard::to_io(value, &mut out)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode a value: {e}")))?;
    Ok(out)
}

/// A value's postcard encoding alone, without the version byte: a part of a larger value.
pub fn encode_bare<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(value)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode a value: {e}")))
}

/// `encode(&StoredEvent { commit, event })` from the event's bare encoding: postcard writes a
/// struct as its fields one after the other, so the commit number goes in front.
pub fn with_commit(commit: u64, event: &[u8]) -> Result<Vec<u8>, StoreError> {
    let mut out = encode(&commit)?;
    out.extend_from_slice(event);
    Ok(out)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&VALUE_VERSION, rest)) => postcard::from_bytes(rest)
            .map_err(|e| StoreError::Corrupt(format!("cannot decode {what}: {e}"))),
        Some((v, _)) => Err(StoreError::Corrupt(format!(
            "{what} has value version {v}, this mpayd reads version {VALUE_VERSION}"
        ))),
        None => Err(StoreError::Corrupt(format!("{what} is empty"))),
    }
}
