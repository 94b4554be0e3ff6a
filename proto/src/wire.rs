//! Gossip frames exchanged on the `/tocsin/gossip/4` protocol.
//!
//! On the stream each frame is a 4-byte big-endian length followed by that many bytes
//! of CBOR. The length is checked against [`MAX_FRAME_BYTES`] before the frame is read.
//! See `docs/wire-format.md` for the byte-level layout.

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::ids::{AlertId, PublicKey};
use crate::limits::{Limit, MAX_FRAME_BYTES};
use crate::Error;

/// The libp2p protocol name for gossip streams.
pub const GOSSIP_PROTOCOL: &str = "/tocsin/gossip/4";

/// One gossip frame. A closed set: anything else fails to decode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Frame {
    /// First frame on a stream: the sender's log epoch (new when its database is
    /// created) and the highest sequence number in its log.
    Hello { epoch: u64, head: u64 },
    /// A full alert: the signed envelope and the hop count at which the receiver gets
    /// it (1 when sent by the origin).
    Alert {
        hops: u8,
        #[serde(with = "serde_bytes")]
        envelope: Vec<u8>,
    },
    /// Lazy push: "I have these alerts", and for each (`hops[i]` for `ids[i]`) the hop
    /// count at which the receiver would get it from the announcer. The receiver uses
    /// the hop counts to move its broadcast tree to shorter paths.
    Announce { ids: Vec<AlertId>, hops: Vec<u8> },
    /// Ask for the bodies of these alerts. With `graft`, also asks the peer to push
    /// future alerts eagerly, by default and for the origins of these alerts
    /// (repairing the broadcast trees).
    Want { ids: Vec<AlertId>, graft: bool },
    /// "Stop pushing full alerts to me eagerly; announce them instead" (a duplicate
    /// arrived on this link). With `origin`, for that origin's alerts only (its
    /// broadcast tree); without, for the link's default.
    Prune { origin: Option<PublicKey> },
    /// "Push `origin`'s alerts to me eagerly": moves that origin's broadcast tree onto
    /// this link (a shorter path from the origin was announced on it).
    Graft { origin: PublicKey },
    /// First frame on every connection, before `hello`: the sender's node certificate
    /// (a [`crate::identity::NodeCert`] envelope), if its agency certified it. A peer that
    /// trusts the sender's org key (not its node key) admits the connection on it.
    Identity {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cert: Option<serde_bytes::ByteBuf>,
    },
    /// A node key revoked by its agency: the revocation and the certificate it takes
    /// back ([`crate::identity::RevocationProof`]), both envelopes. Flooded to every
    /// peer, and sent to each peer when it connects.
    Revoke {
        revocation: serde_bytes::ByteBuf,
        cert: serde_bytes::ByteBuf,
    },
    /// A receipt ([`crate::identity::Receipt`] envelope) for an AMBER or RED alert of
    /// the receiver of this frame, signed by its sender: sent only to the alert's origin,
    /// when the alert is stored and again when it is acknowledged.
    Receipt { receipt: serde_bytes::ByteBuf },
    /// A sighting ([`crate::identity::Sighting`] envelope) of an alert the receiver
    /// holds, signed by its sender, the observer: sent to the alert's origin and, for
    /// CLEAR and GREEN, to the observer's peers that may hold the alert. Never relayed.
    Sighting { sighting: serde_bytes::ByteBuf },
    /// Catch-up: send me the ids in your log after sequence `after`, for epoch `epoch`.
    SyncRequest { epoch: u64, after: u64 },
    /// A page of catch-up: the ids (that the requester may see) in the log from the
    /// requested point up to `next`. `done` when `next` is the log's head.
    SyncPage {
        epoch: u64,
        ids: Vec<AlertId>,
        next: u64,
        done: bool,
        /// The `after` of the `sync_request` this page answers, so that the requester
        /// can tell the answer to its current request from a late one. Absent from
        /// nodes that predate it (the requester then takes the page as the answer).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        answers: Option<u64>,
    },
    /// Catch-up: "send me every alert of the page of your log (epoch `epoch`) after
    /// `after` up to `next` that you listed, except these": the answer to a `SyncPage`
    /// when the requester lacks most of it, so that the ids it lacks do not travel a
    /// second time. Answered with `Alert` frames, filtered as the page was.
    WantPage {
        epoch: u64,
        after: u64,
        next: u64,
        except: Vec<AlertId>,
    },
}

impl Frame {
    /// The `revoke` frame that carries a revocation and the certificate it takes back.
    pub fn revoke(proof: &crate::identity::RevocationProof) -> Frame {
        Frame::Revoke {
            revocation: serde_bytes::ByteBuf::from(proof.revocation_bytes()),
            cert: serde_bytes::ByteBuf::from(proof.cert_bytes()),
        }
    }

    /// Encodes the frame's CBOR (without the length prefix).
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        let bytes = codec::encode_packed(self)?;
        Limit::FrameBytes.check(bytes.len())?;
        Ok(bytes)
    }

    /// Decodes a frame, checking size limits first and id counts after.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        Limit::FrameBytes.check(bytes.len())?;
        let frame: Frame = codec::decode(bytes)?;
        match &frame {
            Frame::Announce { ids, hops } => {
                Limit::IdsPerFrame.check(ids.len())?;
                Limit::IdsPerFrame.check(hops.len())?;
            }
            Frame::Want { ids, .. }
            | Frame::SyncPage { ids, .. }
            | Frame::WantPage { except: ids, .. } => {
                Limit::IdsPerFrame.check(ids.len())?;
            }
            Frame::Alert { envelope, .. } => Limit::EnvelopeBytes.check(envelope.len())?,
            Frame::Identity { cert: Some(cert) } => check_object("cert", cert)?,
            Frame::Receipt { receipt } => check_object("receipt", receipt)?,
            Frame::Sighting { sighting } => check_object("sighting", sighting)?,
            Frame::Revoke { revocation, cert } => {
                check_object("revocation", revocation)?;
                check_object("cert", cert)?;
            }
            Frame::Identity { cert: None }
            | Frame::Hello { .. }
            | Frame::Prune { .. }
            | Frame::Graft { .. }
            | Frame::SyncRequest { .. } => {}
        }
        Ok(frame)
    }

    /// The frame's name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "hello",
            Frame::Identity { .. } => "identity",
            Frame::Revoke { .. } => "revoke",
            Frame::Receipt { .. } => "receipt",
            Frame::Sighting { .. } => "sighting",
            Frame::Alert { .. } => "alert",
            Frame::Announce { .. } => "announce",
            Frame::Want { .. } => "want",
            Frame::Prune { .. } => "prune",
            Frame::Graft { .. } => "graft",
            Frame::SyncRequest { .. } => "sync_request",
            Frame::SyncPage { .. } => "sync_page",
            Frame::WantPage { .. } => "want_page",
        }
    }
}

/// An identity object in a frame is at most [`crate::identity::MAX_OBJECT_BYTES`].
fn check_object(field: &'static str, bytes: &[u8]) -> Result<(), Error> {
    let max = crate::identity::MAX_OBJECT_BYTES;
    if bytes.len() > max {
        return Err(Error::invalid(
            field,
            format!("{} bytes, more than {max}", bytes.len()),
        ));
    }
    Ok(())
}

/// Reads a 4-byte big-endian length prefix and checks it against [`MAX_FRAME_BYTES`].
pub fn frame_len(prefix: [u8; 4]) -> Result<usize, Error> {
    let len = u32::from_be_bytes(prefix) as usize;
    Limit::FrameBytes.check(len)?;
    Ok(len)
}

/// Prefixes encoded frame bytes with their length.
pub fn with_len_prefix(frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(frame.len() + 4);
    // Frames are at most MAX_FRAME_BYTES, far below u32::MAX.
    out.extend_from_slice(&(frame.len().min(MAX_FRAME_BYTES) as u32).to_be_bytes());
    out.extend_from_slice(frame);
    out
}
