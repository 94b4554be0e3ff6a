//! The crate's error type.

use crate::limits::Limit;

/// Everything that can be wrong with an alert, an envelope or a frame.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A hard limit was exceeded; the error names it.
    #[error("{actual} exceeds the limit {limit}")]
    Limit { limit: Limit, actual: usize },
    /// The bytes are not valid CBOR for the expected structure.
    #[error("malformed CBOR: {0}")]
    Decode(String),
    /// The structure could not be encoded.
    #[error("cannot encode: {0}")]
    Encode(String),
    /// A field has an invalid value; `field` names it.
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// The format version is not one this build understands.
    #[error("unsupported alert format version {0} (this build reads version {supported})", supported = crate::alert::FORMAT_VERSION)]
    Version(u8),
    /// The ed25519 signature does not verify for the origin key.
    #[error("bad signature: {0}")]
    Signature(String),
}

impl Error {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field,
            reason: reason.into(),
        }
    }
}
