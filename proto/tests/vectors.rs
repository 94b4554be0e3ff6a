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
    let e = "1b5d2f8a1c93e4b607"; // uint, the epoch
    let cases: Vec<(Frame, String)> = vec![
        (
            Frame::Hello { epoch, head: 42 },
            format!("00000010a100a200{e}01182a"),
        ),
        (Frame::Prune { origin: None }, "00000005a104a100f6".into()),
        (
            Frame::Prune {
                origin: Some(origin),
            },
            format!("00000026a104a1005820{origin}"),
        ),
        (
            Frame::Graft { origin },
            format!("00000026a105a1005820{origin}"),
        ),
        (
            Frame::Announce {
                ids: vec![id],
                hops: vec![2],
            },
            format!("0000002aa102a200815820{id}018102"),
        ),
        (
            Frame::Want {
                ids: vec![id],
                graft: true,
            },
            format!("00000029a103a200815820{id}01f5"),
        ),
        (Frame::Identity { cert: None }, "00000003a106a0".into()),
        (
            Frame::Identity {
                cert: Some(serde_bytes::ByteBuf::from(vec![0xab; 3])),
            },
            "00000008a106a10043ababab".into(),
        ),
        (
            Frame::SyncRequest { epoch, after: 0 },
            format!("0000000fa10aa200{e}0100"),
        ),
        (
            Frame::SyncPage {
                epoch,
                ids: vec![id],
                next: 1,
                done: true,
                answers: Some(0),
            },
            format!("00000037a10ba500{e}01815820{id}020103f50400"),
        ),
        (
            Frame::WantPage {
                epoch,
                after: 0,
                next: 1,
                except: vec![],
            },
            format!("00000013a10ca400{e}010002010380"),
        ),
        (
            Frame::Alert {
                hops: 1,
                envelope: vec![0xee; 527],
            },
            format!("00000218a101a200010159020f{}", "ee".repeat(527)),
        ),
    ];
    for (frame, want) in cases {
        let bytes = wire::with_len_prefix(&frame.encode().unwrap());
        assert_eq!(hex::encode(&bytes), want, "{frame:?}");
        assert_eq!(Frame::decode(&bytes[4..]).unwrap(), frame);
    }
}
