//! # tocsin-proto
//!
//! Everything two Tocsin nodes must agree on, as plain data and pure functions: the
//! alert model, its canonical encoding, signatures and ids, the gossip wire frames, and
//! the trust/TLP policy. No tokio, no libp2p, no redb: this crate is used unchanged by
//! the daemon, the CLI, the simulator and the fuzzer.
//!
//! ```
//! use ed25519_dalek::SigningKey;
//! use tocsin_proto::{AlertBody, Kind, PublicKey, Severity, SignedAlert, Tlp, FORMAT_VERSION};
//!
//! let key = SigningKey::from_bytes(&[7u8; 32]);
//! let body = AlertBody {
//!     v: FORMAT_VERSION,
//!     origin: PublicKey(key.verifying_key().to_bytes()),
//!     issued_at: 1_700_000_000_000,
//!     expires_at: None,
//!     kind: Kind::New,
//!     replaces: None,
//!     severity: Severity::High,
//!     tlp: Tlp::Green,
//!     recipients: vec![],
//!     title: "Phishing wave".into(),
//!     text: String::new(),
//!     indicators: vec![],
//!     tags: vec![],
//!     references: vec![],
//! };
//! let alert = SignedAlert::sign(body, &key)?;
//! let received = SignedAlert::decode(&alert.to_envelope())?.verify()?;
//! assert_eq!(received.id(), alert.id());
//! # Ok::<(), tocsin_proto::Error>(())
//! ```
//!
//! # Layout
//! - [`limits`]: hard limits, named constants checked before any work.
//! - [`ids`]: [`PublicKey`] and [`AlertId`].
//! - [`alert`]: the body, typed indicators and their validation.
//! - [`codec`]: the only module that uses the CBOR library.
//! - [`envelope`]: signing and strict verification over the original bytes.
//! - [`wire`]: gossip frames.
//! - [`policy`]: trust levels and the TLP relay/accept rules as pure functions.
//! - [`verdict`]: why an inbound frame is dropped, and what it costs the sender.
//! - [`api`]: the control API's request and response bodies, shared by daemon and CLI.
//! - [`keyfile`]: the node key file (mode 0600, refused when others can read it).

pub mod alert;
pub mod api;
pub mod cap;
pub mod codec;
pub mod envelope;
mod error;
pub mod identity;
pub mod ids;
pub mod keyfile;
pub mod limits;
pub mod policy;
pub mod stix;
pub mod verdict;
pub mod wire;

pub use alert::{
    AlertBody, AlertSummary, Indicator, IndicatorType, Kind, Severity, Tlp, FORMAT_VERSION,
};
pub use envelope::{
    origin_of, verify_batch, SignedAlert, VerifiedAlert, VerifyingKeys, SIGNING_CONTEXT,
};
pub use error::Error;
pub use ids::{AlertId, PublicKey};
pub use policy::{Scope, TrustLevel};
pub use verdict::Reason;
pub use wire::Frame;

/// Re-exported so that callers sign with the same ed25519 implementation.
pub use ed25519_dalek::SigningKey;
