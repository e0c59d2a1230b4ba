//! Stored values: one format-version byte, then the postcard encoding of the value. Each stored
//! type has its own version (`Stored::VERSION`); a value written by an older version of its type
//! is read through `Stored::decode_old`, and a value with an unknown version is refused instead
//! of misread.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StoreError;

/// A type kept in the store.
pub trait Stored: Serialize + DeserializeOwned {
    /// Version of the encoding written by this build. Raised whenever the type's layout
    /// changes, with `decode_old` taught the previous one (`legacy.rs`).
    const VERSION: u8 = 1;

    /// Reads a value written by an older version; `None`: that version is not one of ours.
    fn decode_old(_version: u8, _bytes: &[u8]) -> Option<Result<Self, postcard::Error>> {
        None
    }
}

pub fn encode<T: Stored>(value: &T) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![T::VERSION];
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
    let mut out = vec![<super::StoredEvent as Stored>::VERSION];
    out.extend_from_slice(&encode_bare(&commit)?);
    out.extend_from_slice(event);
    Ok(out)
}

pub fn decode<T: Stored>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    let corrupt = |e: postcard::Error| StoreError::Corrupt(format!("cannot decode {what}: {e}"));
    match bytes.split_first() {
        Some((&v, rest)) if v == T::VERSION => postcard::from_bytes(rest).map_err(corrupt),
        Some((&v, rest)) => match T::decode_old(v, rest) {
            Some(decoded) => decoded.map_err(corrupt),
            None => Err(StoreError::Corrupt(format!(
                "{what} has value version {v}, this mpayd reads version {} at most",
                T::VERSION
            ))),
        },
        None => Err(StoreError::Corrupt(format!("{what} is empty"))),
    }
}
