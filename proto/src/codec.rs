//! The CBOR codec. Every use of `serde_cbor` in Tocsin goes through this module, so the
//! codec can be swapped in one place.
//!
//! `serde_cbor` writes a struct as a definite-length map with its fields in declaration
//! order; that is stable for a given struct but not canonical CBOR, which is why
//! signatures cover the exact bytes received and nothing is ever re-encoded to verify.

use serde::{Deserialize, Serialize};

use crate::Error;

/// Encodes a value as CBOR.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    serde_cbor::to_vec(value).map_err(|e| Error::Encode(e.to_string()))
}

/// Encodes a value as CBOR in serde_cbor's packed form: struct fields and enum variants
/// are written as their integer index (declaration order) instead of their name. Used
/// for gossip frames, where the names would be bytes on every frame; never for signed
/// objects, whose bytes are frozen by their test vectors. [`decode`] reads both forms.
pub fn encode_packed<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    serde_cbor::ser::to_vec_packed(value).map_err(|e| Error::Encode(e.to_string()))
}

/// Decodes one CBOR value that must span all of `bytes` (trailing bytes are an error).
/// Byte strings may be borrowed from `bytes` (`&[u8]` fields) instead of copied.
pub fn decode<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, Error> {
    serde_cbor::from_slice(bytes).map_err(|e| Error::Decode(e.to_string()))
}
