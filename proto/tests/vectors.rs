//! Frozen test vectors. These bytes ARE the v1 wire format: if this test fails, the
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! change is a format change and must bump `FORMAT_VERSION`.

mod common;

use common::*;
use tocsin_proto::*;

const VECTORS: &str = include_str!("vectors/alert-v1.json");

#[test]
fn fixed_alert_matches_committed_vector() {
    let v: serde_json::Value = serde_json::from_str(VECTORS).unwrap();
    let key = fixed_key();
    assert_eq!(
        hex::encode(key.to_bytes()),
        v["secret_key"].as_str().unwrap()
    );
    assert_eq!(pk(&key).to_string(), v["public_key"].as_str().unwrap());

    let alert = SignedAlert::sign(fixed_body(&key), &key).unwrap();
    assert_eq!(
        hex::encode(alert.body_bytes()),
        v["body_hex"].as_str().unwrap()
    );
    assert_eq!(
        hex::encode(alert.signature()),
        v["signature_hex"].as_str().unwrap()
    );
    assert_eq!(alert.id().to_string(), v["id"].as_str().unwrap());
    assert_eq!(
        hex::encode(alert.to_envelope()),
        v["envelope_hex"].as_str().unwrap()
    );

    // And the committed bytes decode and verify on their own, without re-encoding.
    let env = hex::decode(v["envelope_hex"].as_str().unwrap()).unwrap();
    let decoded = SignedAlert::decode_verified(&env).unwrap();
    assert_eq!(decoded.body(), &fixed_body(&key));
    assert_eq!(decoded.id().to_string(), v["id"].as_str().unwrap());
}

#[test]
fn byte_fields_are_cbor_byte_strings() {
    let key = fixed_key();
    let alert = SignedAlert::sign(fixed_body(&key), &key).unwrap();
    let body = alert.body_bytes();
    // "origin" key, then major type 2 (byte string) with a 1-byte length of 32: 0x58 0x20.
    let at = body
        .windows(6)
        .position(|w| w == b"origin")
        .expect("origin key present");
    assert_eq!(&body[at + 6..at + 8], &[0x58, 0x20]);
}

#[test]
fn signature_is_domain_separated() {
    use ed25519_dalek::{Signer, Verifier};
    let key = fixed_key();
    let alert = SignedAlert::sign(fixed_body(&key), &key).unwrap();
    let bare = key.sign(alert.body_bytes());
    assert_ne!(bare.to_bytes(), *alert.signature());
    let sig = ed25519_dalek::Signature::from_bytes(alert.signature());
    assert!(key
        .verifying_key()
        .verify(alert.body_bytes(), &sig)
        .is_err());
}
