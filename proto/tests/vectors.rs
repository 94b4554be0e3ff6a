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

/// The frame examples of `docs/wire-format.md` §8.2, byte for byte (with the length
/// prefix). A change here is a wire-format change: update the document with it.
#[test]
fn documented_frames_have_their_documented_bytes() {
    let v: serde_json::Value = serde_json::from_str(VECTORS).unwrap();
    let id = AlertId::from_hex(v["id"].as_str().unwrap()).unwrap();
    let origin = PublicKey::from_hex(v["public_key"].as_str().unwrap()).unwrap();
    let epoch = 0x5d2f_8a1c_93e4_b607;
    let cases: Vec<(Frame, String)> = vec![
        (
            Frame::Hello { epoch, head: 42 },
            "0000001ea16568656c6c6fa26565706f63681b5d2f8a1c93e4b6076468656164182a".into(),
        ),
        (
            Frame::Prune { origin: None },
            "00000010a1657072756e65a1666f726967696ef6".into(),
        ),
        (
            Frame::Prune {
                origin: Some(origin),
            },
            format!("00000031a1657072756e65a1666f726967696e5820{origin}"),
        ),
        (
            Frame::Graft { origin },
            format!("00000031a1656772616674a1666f726967696e5820{origin}"),
        ),
        (
            Frame::Announce {
                ids: vec![id],
                hops: vec![2],
            },
            format!("00000039a168616e6e6f756e6365a263696473815820{id}64686f70738102"),
        ),
        (
            Frame::Want {
                ids: vec![id],
                graft: true,
            },
            format!("00000035a16477616e74a263696473815820{id}656772616674f5"),
        ),
        (
            Frame::Identity { cert: None },
            "0000000ba1686964656e74697479a0".into(),
        ),
        (
            Frame::Identity {
                cert: Some(serde_bytes::ByteBuf::from(vec![0xab; 3])),
            },
            "00000014a1686964656e74697479a1646365727443ababab".into(),
        ),
    ];
    for (frame, want) in cases {
        let bytes = wire::with_len_prefix(&frame.encode().unwrap());
        assert_eq!(hex::encode(&bytes), want, "{frame:?}");
        assert_eq!(Frame::decode(&bytes[4..]).unwrap(), frame);
    }
}
