//! The signed envelope: the exact body bytes and an ed25519 signature over
//! `SIGNING_CONTEXT || body bytes`.

use ed25519_dalek::{Signature, Signer, SigningKey};
use serde::{Deserialize, Serialize};

use crate::alert::{AlertBody, AlertSummary};
use crate::codec;
use crate::ids::{AlertId, PublicKey};
use crate::limits::Limit;
use crate::Error;

/// Domain separation: the node key also authenticates libp2p Noise handshakes, so an
/// alert signature covers this context followed by the body bytes, never bare bytes.
pub const SIGNING_CONTEXT: &[u8] = b"tocsin-alert-v1\0";

#[derive(Serialize, Deserialize)]
struct EnvelopeWire {
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
    #[serde(with = "serde_bytes")]
    sig: Vec<u8>,
}

/// A decoded alert with its original body bytes and signature.
///
/// [`SignedAlert::decode`] checks limits and decodes but does not verify; call
/// [`SignedAlert::verify`] to get a [`VerifiedAlert`] before trusting it (the gossip
/// engine verifies last, after the cheaper checks). [`SignedAlert::sign`] produces an
/// alert that verifies.
#[derive(Clone)]
pub struct SignedAlert {
    id: AlertId,
    body: AlertBody,
    body_bytes: Vec<u8>,
    sig: [u8; 64],
}

impl std::fmt::Debug for SignedAlert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedAlert")
            .field("id", &self.id)
            .field("body", &self.body)
            .finish_non_exhaustive()
    }
}

fn message(body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNING_CONTEXT.len() + body.len());
    m.extend_from_slice(SIGNING_CONTEXT);
    m.extend_from_slice(body);
    m
}

impl SignedAlert {
    /// Validates, encodes and signs a body. The body's origin must be `key`'s public key.
    pub fn sign(body: AlertBody, key: &SigningKey) -> Result<Self, Error> {
        if body.origin.0 != key.verifying_key().to_bytes() {
            return Err(Error::invalid(
                "origin",
                "the origin is not the signing key's public key",
            ));
        }
        body.validate()?;
        let body_bytes = codec::encode(&body)?;
        let sig = key.sign(&message(&body_bytes)).to_bytes();
        let alert = SignedAlert {
            id: AlertId::of_body(&body_bytes),
            body,
            body_bytes,
            sig,
        };
        Limit::EnvelopeBytes.check(alert.envelope_len())?;
        Ok(alert)
    }

    /// Checks the size limit, then decodes the envelope and the body and validates the
    /// body. Does not verify the signature.
    pub fn decode(envelope: &[u8]) -> Result<Self, Error> {
        Limit::EnvelopeBytes.check(envelope.len())?;
        let wire: EnvelopeWire = codec::decode(envelope)?;
        let sig: [u8; 64] = wire.sig.as_slice().try_into().map_err(|_| {
            Error::Signature(format!("signature is {} bytes, not 64", wire.sig.len()))
        })?;
        let body: AlertBody = codec::decode(&wire.body)?;
        body.validate()?;
        Ok(SignedAlert {
            id: AlertId::of_body(&wire.body),
            body,
            body_bytes: wire.body,
            sig,
        })
    }

    /// Strict ed25519 verification of the signature over the original body bytes, by
    /// the origin key. Only this (and [`SignedAlert::verify_cached`]) makes a
    /// [`VerifiedAlert`].
    pub fn verify(self) -> Result<VerifiedAlert, Error> {
        self.check_signature()?;
        Ok(VerifiedAlert(self))
    }

    /// [`SignedAlert::verify`], with the origin key decompressed once per origin across
    /// calls that share `keys` (about a tenth of a verification saved per alert).
    pub fn verify_cached(self, keys: &mut VerifyingKeys) -> Result<VerifiedAlert, Error> {
        let vk = keys.get(&self.body.origin)?;
        self.check_with(&vk)?;
        Ok(VerifiedAlert(self))
    }

    /// The same strict check as [`SignedAlert::verify`], for reports (`"signature":
    /// "valid"`) and audits: it does not make a [`VerifiedAlert`].
    pub fn check_signature(&self) -> Result<(), Error> {
        self.check_with(&self.body.origin.verifying_key()?)
    }

    fn check_with(&self, vk: &ed25519_dalek::VerifyingKey) -> Result<(), Error> {
        vk.verify_strict(
            &message(&self.body_bytes),
            &Signature::from_bytes(&self.sig),
        )
        .map_err(|e| Error::Signature(e.to_string()))
    }

    /// Decodes and verifies.
    pub fn decode_verified(envelope: &[u8]) -> Result<VerifiedAlert, Error> {
        Self::decode(envelope)?.verify()
    }

    /// The envelope bytes to store and forward.
    pub fn to_envelope(&self) -> Vec<u8> {
        // Encoding two byte strings into a two-field map cannot fail; an empty vector
        // would be rejected by every receiver's decode, never accepted.
        codec::encode(&EnvelopeWire {
            body: self.body_bytes.clone(),
            sig: self.sig.to_vec(),
        })
        .unwrap_or_default()
    }

    fn envelope_len(&self) -> usize {
        // map(2) + 2 keys + 2 byte-string headers; at most 32 bytes of framing.
        self.body_bytes.len() + self.sig.len() + 32
    }

    /// The alert's id (SHA-256 of the body bytes).
    pub fn id(&self) -> AlertId {
        self.id
    }

    /// The decoded body.
    pub fn body(&self) -> &AlertBody {
        &self.body
    }

    /// The origin key.
    pub fn origin(&self) -> PublicKey {
        self.body.origin
    }

    /// The alert's [`AlertSummary`].
    pub fn summary(&self) -> AlertSummary {
        let b = &self.body;
        AlertSummary {
            id: self.id,
            origin: b.origin,
            issued_at: b.issued_at,
            tlp: b.tlp,
            recipients: b.recipients.clone(),
            expires_at: b.expires_at,
            kind: b.kind,
            replaces: b.replaces,
        }
    }

    /// The exact body bytes that were signed.
    pub fn body_bytes(&self) -> &[u8] {
        &self.body_bytes
    }

    /// The signature bytes.
    pub fn signature(&self) -> &[u8; 64] {
        &self.sig
    }

    /// The message that is signed, for batch verification.
    pub fn signed_message(&self) -> Vec<u8> {
        message(&self.body_bytes)
    }
}

/// The origin key of an envelope, read without validating, hashing or verifying the
/// alert: for routing an envelope this node already accepted (the fair queues per
/// origin). `None` if the envelope does not decode that far.
pub fn origin_of(envelope: &[u8]) -> Option<PublicKey> {
    // Called for every alert frame sent: the body is borrowed, not copied, and every
    // field but the origin is skipped.
    #[derive(serde::Deserialize)]
    struct BodyOnly<'a> {
        #[serde(borrow)]
        body: &'a [u8],
    }
    #[derive(serde::Deserialize)]
    struct OriginOnly {
        origin: PublicKey,
    }
    let wire: BodyOnly<'_> = codec::decode(envelope).ok()?;
    let body: OriginOnly = codec::decode(wire.body).ok()?;
    Some(body.origin)
}

/// An alert whose signature passed strict verification: the only kind the store, the
/// relay path and the API accept as received. It can only be made by
/// [`SignedAlert::verify`] and [`SignedAlert::verify_cached`]; it reads like the
/// [`SignedAlert`] it wraps.
#[derive(Clone)]
pub struct VerifiedAlert(SignedAlert);

impl VerifiedAlert {
    /// The verified alert.
    pub fn signed(&self) -> &SignedAlert {
        &self.0
    }

    /// Gives up the proof of verification.
    pub fn into_signed(self) -> SignedAlert {
        self.0
    }
}

impl std::ops::Deref for VerifiedAlert {
    type Target = SignedAlert;
    fn deref(&self) -> &SignedAlert {
        &self.0
    }
}

impl std::fmt::Debug for VerifiedAlert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("VerifiedAlert").field(&self.0.id).finish()
    }
}

/// Decompressed origin keys, for [`SignedAlert::verify_cached`] over many alerts. At
/// most [`VerifyingKeys::MAX`] are kept (a full cache starts again empty), so a stream
/// of alerts from ever new origins costs a decompression each, never memory.
#[derive(Debug, Default)]
pub struct VerifyingKeys(std::collections::HashMap<[u8; 32], ed25519_dalek::VerifyingKey>);

impl VerifyingKeys {
    /// Keys kept at most.
    pub const MAX: usize = 4096;

    /// The verifying key of `origin`, decompressed on first use.
    fn get(&mut self, origin: &PublicKey) -> Result<ed25519_dalek::VerifyingKey, Error> {
        if let Some(vk) = self.0.get(&origin.0) {
            return Ok(*vk);
        }
        let vk = origin.verifying_key()?;
        if self.0.len() >= Self::MAX {
            self.0.clear();
        }
        self.0.insert(origin.0, vk);
        Ok(vk)
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Verifies many alerts at once (ed25519 batch verification). Faster per alert, but
/// batch verification is not the strict single verification; the node verifies each
/// alert with [`SignedAlert::verify`], and this exists for bulk audits and benchmarks.
pub fn verify_batch(alerts: &[SignedAlert]) -> Result<(), Error> {
    let messages: Vec<Vec<u8>> = alerts.iter().map(SignedAlert::signed_message).collect();
    let msg_refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    let sigs: Vec<Signature> = alerts
        .iter()
        .map(|a| Signature::from_bytes(a.signature()))
        .collect();
    let keys = alerts
        .iter()
        .map(|a| a.origin().verifying_key())
        .collect::<Result<Vec<_>, _>>()?;
    ed25519_dalek::verify_batch(&msg_refs, &sigs, &keys)
        .map_err(|e| Error::Signature(e.to_string()))
}
