//! Node keys and alert ids: 32-byte values encoded as CBOR byte strings and shown as hex.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::Error;

macro_rules! bytes32 {
    ($(#[$meta:meta])* $name:ident, $field:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// The first 8 hex characters, for logs and tables.
            pub fn fmt_short(&self) -> String {
                hex::encode(&self.0[..4])
            }

            /// Parses 64 hex characters.
            pub fn from_hex(s: &str) -> Result<Self, Error> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s.trim(), &mut out)
                    .map_err(|e| Error::invalid($field, format!("expected 64 hex characters: {e}")))?;
                Ok(Self(out))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.fmt_short())
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                Self::from_hex(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_str(&hex::encode(self.0))
                } else {
                    serde_bytes::Bytes::new(&self.0).serialize(s)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = String::deserialize(d)?;
                    Self::from_hex(&s).map_err(serde::de::Error::custom)
                } else {
                    let b = serde_bytes::ByteBuf::deserialize(d)?;
                    let arr: [u8; 32] = b.as_slice().try_into().map_err(|_| {
                        serde::de::Error::invalid_length(b.len(), &"32 bytes")
                    })?;
                    Ok(Self(arr))
                }
            }
        }
    };
}

bytes32!(
    /// An ed25519 public key: a node's (agency's) identity and an alert's origin.
    PublicKey,
    "key"
);

bytes32!(
    /// An alert's id: SHA-256 of its exact body bytes. Same body, same id, everywhere.
    AlertId,
    "alert id"
);

impl AlertId {
    /// The id of the given body bytes.
    pub fn of_body(body: &[u8]) -> Self {
        Self(Sha256::digest(body).into())
    }
}

impl PublicKey {
    /// The ed25519-dalek verifying key, if these bytes are a valid curve point.
    pub fn verifying_key(&self) -> Result<ed25519_dalek::VerifyingKey, Error> {
        ed25519_dalek::VerifyingKey::from_bytes(&self.0)
            .map_err(|e| Error::invalid("key", format!("not an ed25519 public key: {e}")))
    }

    /// Whether these bytes are a key an agency could hold: a point on the curve, in
    /// its canonical encoding, and not of small order (a "weak" key, for which
    /// signatures prove nothing). `ff…ff` decodes, but is not canonical.
    pub fn is_valid_point(&self) -> bool {
        self.verifying_key()
            .is_ok_and(|vk| !vk.is_weak() && vk.to_edwards().compress().to_bytes() == self.0)
    }
}

#[cfg(test)]
mod point_tests {
    use super::PublicKey;

    #[test]
    fn only_canonical_points_of_large_order_are_valid_keys() {
        let real = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]).verifying_key();
        assert!(PublicKey(real.to_bytes()).is_valid_point());
        // Decodes (y = 2^255 - 1 is y = 18 plus p), but is not canonical.
        assert!(!PublicKey([0xff; 32]).is_valid_point());
        // The identity point: small order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(!PublicKey(identity).is_valid_point());
        // All zero: a point of order 4.
        assert!(!PublicKey([0u8; 32]).is_valid_point());
    }
}
