//! Agency identity and acknowledgements, as signed objects: node certificates and
//! revocations (signed by an agency's offline org key), receipts and sightings (signed
//! by the node that sends them).
//!
//! Each is a CBOR body in an envelope `{"body": bytes, "sig": bytes}` like an alert,
//! with its own signing context ([`Signable::CONTEXT`]), so that a signature made for one
//! kind of object (or for an alert, or a Noise handshake) never verifies as another.
//! Verification is strict ed25519 over the exact body bytes received, never re-encoded.
//! `docs/wire-format.md` ("Identity objects") documents the fields, and
//! `proto/tests/vectors/identity-v1.json` freezes their bytes.
//!
//! What uses them: `tocsin org` makes certificates and revocations; a node presents its
//! certificate in the `identity` frame of every connection ([`crate::Frame::Identity`]),
//! and revocations travel with the certificate they take back ([`RevocationProof`],
//! [`crate::Frame::Revoke`]). Receipts and sightings travelling to an alert's origin are
//! the next steps of the identity work.

use ed25519_dalek::{Signature, Signer, SigningKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::alert::Indicator;
use crate::codec;
use crate::ids::{AlertId, PublicKey};
use crate::Error;

/// The version of every identity object body this build writes and reads.
pub const IDENTITY_VERSION: u8 = 1;
/// Most bytes of an encoded identity object (envelope included).
pub const MAX_OBJECT_BYTES: usize = 4096;
/// Longest agency name in a certificate, bytes.
pub const MAX_AGENCY_BYTES: usize = 128;
/// Longest reason (revocation), note (sighting) or acknowledger name, bytes.
pub const MAX_NOTE_BYTES: usize = 1024;
/// Longest a certificate may be valid: two years. Nodes are re-certified well before.
pub const MAX_CERT_VALIDITY_MS: u64 = 2 * 366 * 24 * 3600 * 1000;
/// Most sightings one sighting object may count.
pub const MAX_SIGHTING_COUNT: u32 = 1_000_000;

/// A body that is signed as an identity object.
pub trait Signable: Serialize + DeserializeOwned + Clone + std::fmt::Debug {
    /// The signing context: the signature covers it followed by the body bytes.
    const CONTEXT: &'static [u8];
    /// What the object is, for messages.
    const NAME: &'static str;
    /// The key that must have signed it.
    fn signer(&self) -> &PublicKey;
    /// Checks every field (limits, ranges, version).
    fn validate(&self) -> Result<(), Error>;
}

#[derive(Serialize, Deserialize)]
struct Wire {
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
    #[serde(with = "serde_bytes")]
    sig: Vec<u8>,
}

/// A decoded (and possibly verified) identity object with its exact body bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed<T> {
    body: T,
    body_bytes: Vec<u8>,
    sig: [u8; 64],
}

fn message(context: &[u8], body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(context.len() + body.len());
    m.extend_from_slice(context);
    m.extend_from_slice(body);
    m
}

impl<T: Signable> Signed<T> {
    /// Validates, encodes and signs `body` with `key`, which must be its signer.
    pub fn sign(body: T, key: &SigningKey) -> Result<Self, Error> {
        if body.signer().0 != key.verifying_key().to_bytes() {
            return Err(Error::invalid(
                "signer",
                format!("the {} must be signed by its own signer key", T::NAME),
            ));
        }
        body.validate()?;
        let body_bytes = codec::encode(&body)?;
        let sig = key.sign(&message(T::CONTEXT, &body_bytes)).to_bytes();
        let signed = Signed {
            body,
            body_bytes,
            sig,
        };
        let len = signed.to_bytes().len();
        if len > MAX_OBJECT_BYTES {
            return Err(Error::invalid(
                "size",
                format!(
                    "the {} is {len} bytes, over MAX_OBJECT_BYTES = {MAX_OBJECT_BYTES}",
                    T::NAME
                ),
            ));
        }
        Ok(signed)
    }

    /// Checks the size, decodes and validates. Does not verify the signature.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_OBJECT_BYTES {
            return Err(Error::invalid(
                "size",
                format!(
                    "the {} is {} bytes, over MAX_OBJECT_BYTES = {MAX_OBJECT_BYTES}",
                    T::NAME,
                    bytes.len()
                ),
            ));
        }
        let wire: Wire = codec::decode(bytes)?;
        // One encoding only: an envelope written any other way (a key as a byte
        // string, a longer length form) is refused, so no two byte strings carry the
        // same object.
        if codec::encode(&wire)? != bytes {
            return Err(Error::Decode(format!(
                "the {} envelope is not in its one canonical encoding",
                T::NAME
            )));
        }
        let sig: [u8; 64] = wire.sig.as_slice().try_into().map_err(|_| {
            Error::Signature(format!("signature is {} bytes, not 64", wire.sig.len()))
        })?;
        let body: T = codec::decode(&wire.body)?;
        body.validate()?;
        Ok(Signed {
            body,
            body_bytes: wire.body,
            sig,
        })
    }

    /// Strict ed25519 verification by the body's signer, over its context and the
    /// exact body bytes.
    pub fn verify(&self) -> Result<(), Error> {
        self.body
            .signer()
            .verifying_key()?
            .verify_strict(
                &message(T::CONTEXT, &self.body_bytes),
                &Signature::from_bytes(&self.sig),
            )
            .map_err(|e| Error::Signature(format!("{} signature: {e}", T::NAME)))
    }

    /// Decodes and verifies.
    pub fn decode_verified(bytes: &[u8]) -> Result<Self, Error> {
        let s = Self::decode(bytes)?;
        s.verify()?;
        Ok(s)
    }

    /// The envelope bytes to store and send.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Two byte strings in a two-field map always encode; an empty result would be
        // refused by every decoder, never accepted.
        codec::encode(&Wire {
            body: self.body_bytes.clone(),
            sig: self.sig.to_vec(),
        })
        .unwrap_or_default()
    }

    /// The decoded body.
    pub fn body(&self) -> &T {
        &self.body
    }

    /// The exact signed body bytes.
    pub fn body_bytes(&self) -> &[u8] {
        &self.body_bytes
    }

    /// The signature.
    pub fn signature(&self) -> &[u8; 64] {
        &self.sig
    }

    /// SHA-256 of the body bytes: the object's id (for deduplication).
    pub fn id(&self) -> [u8; 32] {
        Sha256::digest(&self.body_bytes).into()
    }
}

fn check_version(v: u8) -> Result<(), Error> {
    if v == IDENTITY_VERSION {
        Ok(())
    } else {
        Err(Error::invalid(
            "v",
            format!("identity object version {v} is not {IDENTITY_VERSION}"),
        ))
    }
}

fn check_text(field: &'static str, s: &str, max: usize, required: bool) -> Result<(), Error> {
    if required && s.trim().is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if s.len() > max {
        return Err(Error::invalid(
            field,
            format!("is {} bytes, over the limit of {max}", s.len()),
        ));
    }
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if s.chars().any(unsafe_char) {
        return Err(Error::invalid(
            field,
            "must not contain control characters or bidirectional overrides",
        ));
    }
    Ok(())
}

fn check_key(field: &'static str, k: &PublicKey) -> Result<(), Error> {
    if k.is_valid_point() {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            "is not a valid ed25519 public key (a canonical point of large order)",
        ))
    }
}

/// The checks that certificates and revocations share: the version, both keys, and a
/// node key that is not the org key.
fn check_org_and_node(v: u8, org: &PublicKey, node: &PublicKey) -> Result<(), Error> {
    check_version(v)?;
    check_key("org", org)?;
    check_key("node", node)?;
    if org == node {
        return Err(Error::invalid("node", "is the org key itself"));
    }
    Ok(())
}

/// A node certificate: the agency's org key vouches that `node` speaks for `agency`
/// from `not_before` until `not_after` (unix ms).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeCert {
    /// [`IDENTITY_VERSION`].
    pub v: u8,
    /// The org key that signs it.
    pub org: PublicKey,
    /// The node key it certifies.
    pub node: PublicKey,
    /// The agency's name.
    pub agency: String,
    /// Valid from, unix ms.
    pub not_before: u64,
    /// Valid until (exclusive), unix ms.
    pub not_after: u64,
    /// A number the org gives each certificate it signs.
    pub serial: u64,
}

impl Signable for NodeCert {
    const CONTEXT: &'static [u8] = b"tocsin-node-cert-v1\0";
    const NAME: &'static str = "node certificate";
    fn signer(&self) -> &PublicKey {
        &self.org
    }
    fn validate(&self) -> Result<(), Error> {
        check_org_and_node(self.v, &self.org, &self.node)?;
        check_text("agency", &self.agency, MAX_AGENCY_BYTES, true)?;
        if self.not_after <= self.not_before {
            return Err(Error::invalid("not_after", "is not after not_before"));
        }
        if self.not_after - self.not_before > MAX_CERT_VALIDITY_MS {
            return Err(Error::invalid(
                "not_after",
                format!("the validity is over MAX_CERT_VALIDITY_MS = {MAX_CERT_VALIDITY_MS} (two years)"),
            ));
        }
        Ok(())
    }
}

impl Signed<NodeCert> {
    /// Whether the certificate is valid at `now_ms` (its signature checked apart).
    pub fn is_valid_at(&self, now_ms: u64) -> bool {
        (self.body.not_before..self.body.not_after).contains(&now_ms)
    }
}

/// The revocation of a node key by its agency: from `revoked_at` on, that node no longer
/// speaks for the agency. Kept forever, and it wins over any certificate in any order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    /// [`IDENTITY_VERSION`].
    pub v: u8,
    /// The org key that signs it.
    pub org: PublicKey,
    /// The node key revoked.
    pub node: PublicKey,
    /// From when, unix ms: what the node signed before stays valid.
    pub revoked_at: u64,
    /// Why (for operators).
    pub reason: String,
}

impl Signable for Revocation {
    const CONTEXT: &'static [u8] = b"tocsin-revocation-v1\0";
    const NAME: &'static str = "revocation";
    fn signer(&self) -> &PublicKey {
        &self.org
    }
    fn validate(&self) -> Result<(), Error> {
        check_org_and_node(self.v, &self.org, &self.node)?;
        check_text("reason", &self.reason, MAX_NOTE_BYTES, true)
    }
}

/// A revocation with the certificate it takes back: together they prove that the org
/// that revokes `node` is the org that certified it, so that no org can revoke a node
/// key it never vouched for. Only [`RevocationProof::verify`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationProof {
    revocation: Signed<Revocation>,
    cert: Signed<NodeCert>,
}

impl RevocationProof {
    /// Decodes and verifies both objects, and checks that they name the same org and
    /// node.
    pub fn verify(revocation: &[u8], cert: &[u8]) -> Result<RevocationProof, Error> {
        let revocation = Signed::<Revocation>::decode_verified(revocation)?;
        let cert = Signed::<NodeCert>::decode_verified(cert)?;
        let (r, c) = (revocation.body(), cert.body());
        if r.org != c.org {
            return Err(Error::invalid(
                "cert",
                format!(
                    "is signed by org {}, the revocation by {}",
                    c.org.fmt_short(),
                    r.org.fmt_short()
                ),
            ));
        }
        if r.node != c.node {
            return Err(Error::invalid(
                "cert",
                format!(
                    "certifies node {}, the revocation revokes {}",
                    c.node.fmt_short(),
                    r.node.fmt_short()
                ),
            ));
        }
        Ok(RevocationProof { revocation, cert })
    }

    /// The revocation.
    pub fn revocation(&self) -> &Revocation {
        self.revocation.body()
    }

    /// The certificate it takes back.
    pub fn cert(&self) -> &NodeCert {
        self.cert.body()
    }

    /// The revocation's envelope bytes.
    pub fn revocation_bytes(&self) -> Vec<u8> {
        self.revocation.to_bytes()
    }

    /// The certificate's envelope bytes.
    pub fn cert_bytes(&self) -> Vec<u8> {
        self.cert.to_bytes()
    }
}

/// A receipt: `receiver` tells an alert's origin that it stored the alert, and later
/// that an operator acknowledged it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// [`IDENTITY_VERSION`].
    pub v: u8,
    /// The alert.
    pub alert: AlertId,
    /// Its origin, the receipt's only addressee.
    pub origin: PublicKey,
    /// The node that received it and signs this.
    pub receiver: PublicKey,
    /// When it was stored there, unix ms.
    pub received_at: u64,
    /// When an operator acknowledged it, unix ms.
    pub acked_at: Option<u64>,
    /// Who acknowledged it (an operator's name or role).
    pub acked_by: Option<String>,
}

impl Signable for Receipt {
    const CONTEXT: &'static [u8] = b"tocsin-receipt-v1\0";
    const NAME: &'static str = "receipt";
    fn signer(&self) -> &PublicKey {
        &self.receiver
    }
    fn validate(&self) -> Result<(), Error> {
        check_version(self.v)?;
        check_key("origin", &self.origin)?;
        check_key("receiver", &self.receiver)?;
        if self.origin == self.receiver {
            return Err(Error::invalid("receiver", "is the alert's origin"));
        }
        match (&self.acked_at, &self.acked_by) {
            (Some(at), Some(by)) => {
                if *at < self.received_at {
                    return Err(Error::invalid("acked_at", "is before received_at"));
                }
                check_text("acked_by", by, MAX_NOTE_BYTES, true)
            }
            (None, None) => Ok(()),
            _ => Err(Error::invalid(
                "acked_by",
                "acked_at and acked_by come together",
            )),
        }
    }
}

/// A sighting: `observer` saw an alert's indicators (or one indicator) `count` times
/// between `first_seen` and `last_seen`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sighting {
    /// [`IDENTITY_VERSION`].
    pub v: u8,
    /// The alert seen, if the sighting is of an alert.
    pub alert: Option<AlertId>,
    /// The indicator seen, if the sighting is of one indicator.
    pub indicator: Option<Indicator>,
    /// The node that saw it and signs this.
    pub observer: PublicKey,
    /// How many times.
    pub count: u32,
    /// First seen, unix ms.
    pub first_seen: u64,
    /// Last seen, unix ms.
    pub last_seen: u64,
    /// Where or how (for analysts).
    pub note: String,
}

impl Signable for Sighting {
    const CONTEXT: &'static [u8] = b"tocsin-sighting-v1\0";
    const NAME: &'static str = "sighting";
    fn signer(&self) -> &PublicKey {
        &self.observer
    }
    fn validate(&self) -> Result<(), Error> {
        check_version(self.v)?;
        check_key("observer", &self.observer)?;
        if self.alert.is_none() && self.indicator.is_none() {
            return Err(Error::invalid(
                "alert",
                "a sighting names an alert, an indicator, or both",
            ));
        }
        if let Some(ind) = &self.indicator {
            Indicator::new(ind.kind, ind.value.clone())
                .map_err(|e| Error::invalid("indicator", e.to_string()))?;
        }
        if self.count == 0 || self.count > MAX_SIGHTING_COUNT {
            return Err(Error::invalid(
                "count",
                format!("must be 1 to MAX_SIGHTING_COUNT = {MAX_SIGHTING_COUNT}"),
            ));
        }
        if self.last_seen < self.first_seen {
            return Err(Error::invalid("last_seen", "is before first_seen"));
        }
        check_text("note", &self.note, MAX_NOTE_BYTES, false)
    }
}
