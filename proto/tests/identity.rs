//! Identity objects (node certificates, revocations, receipts, sightings): frozen
//! vectors, round trips, every flipped bit refused, domain separation between kinds,
//! and the limits of every field.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::Value;
use tocsin_proto::identity::*;
use tocsin_proto::*;

const VECTORS: &str = include_str!("vectors/identity-v1.json");
const T0: u64 = 1_767_225_600_000;
const DAY: u64 = 24 * 3600 * 1000;

fn org() -> SigningKey {
    fixed_key()
}

fn node() -> SigningKey {
    key_n(7)
}

fn cert() -> NodeCert {
    NodeCert {
        v: IDENTITY_VERSION,
        org: pk(&org()),
        node: pk(&node()),
        agency: "CERT-Example".into(),
        not_before: T0,
        not_after: T0 + 90 * DAY,
        serial: 1,
    }
}

fn revocation() -> Revocation {
    Revocation {
        v: IDENTITY_VERSION,
        org: pk(&org()),
        node: pk(&node()),
        revoked_at: T0 + 10 * DAY,
        reason: "key on a stolen laptop".into(),
    }
}

fn receipt() -> Receipt {
    let alert = SignedAlert::sign(fixed_body(&fixed_key()), &fixed_key()).unwrap();
    Receipt {
        v: IDENTITY_VERSION,
        alert: alert.id(),
        origin: pk(&fixed_key()),
        receiver: pk(&node()),
        received_at: T0 + 1_000,
        acked_at: Some(T0 + 60_000),
        acked_by: Some("duty officer".into()),
    }
}

fn sighting() -> Sighting {
    Sighting {
        v: IDENTITY_VERSION,
        alert: None,
        indicator: Some(Indicator::new(IndicatorType::Ipv4, "192.0.2.44").unwrap()),
        observer: pk(&node()),
        count: 3,
        first_seen: T0,
        last_seen: T0 + 3_600_000,
        note: "mail gateway".into(),
    }
}

/// Checks one kind against its vector: the same bytes are signed today, and the frozen
/// bytes decode and verify on their own.
fn check_vector<T: Signable + PartialEq>(v: &Value, body: T, key: &SigningKey) {
    let signed = Signed::sign(body.clone(), key).unwrap();
    assert_eq!(
        hex::encode(signed.body_bytes()),
        v["body_hex"].as_str().unwrap(),
        "{}",
        T::NAME
    );
    assert_eq!(
        hex::encode(signed.signature()),
        v["signature_hex"].as_str().unwrap(),
        "{}",
        T::NAME
    );
    let bytes = hex::decode(v["envelope_hex"].as_str().unwrap()).unwrap();
    assert_eq!(signed.to_bytes(), bytes, "{}", T::NAME);
    let decoded = Signed::<T>::decode_verified(&bytes).unwrap();
    assert_eq!(decoded.body(), &body);
}

#[test]
fn every_kind_matches_its_frozen_vector() {
    let v: Value = serde_json::from_str(VECTORS).unwrap();
    assert_eq!(
        pk(&org()).to_string(),
        v["org_public_key"].as_str().unwrap()
    );
    assert_eq!(
        pk(&node()).to_string(),
        v["node_public_key"].as_str().unwrap()
    );
    check_vector(&v["node_cert"], cert(), &org());
    check_vector(&v["revocation"], revocation(), &org());
    check_vector(&v["receipt"], receipt(), &node());
    check_vector(&v["sighting"], sighting(), &node());
}

/// Every single-bit flip of an encoded object is refused: it no longer decodes, no
/// longer validates, or no longer verifies.
fn flips_are_refused<T: Signable>(body: T, key: &SigningKey) {
    let bytes = Signed::sign(body, key).unwrap().to_bytes();
    assert!(Signed::<T>::decode_verified(&bytes).is_ok());
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[i] ^= 1 << bit;
            assert!(
                Signed::<T>::decode_verified(&b).is_err(),
                "{}: byte {i} bit {bit} flipped still verifies",
                T::NAME
            );
        }
    }
}

#[test]
fn every_flipped_bit_is_refused() {
    flips_are_refused(cert(), &org());
    flips_are_refused(revocation(), &org());
    flips_are_refused(receipt(), &node());
    flips_are_refused(sighting(), &node());
}

#[test]
fn a_signature_of_one_kind_never_verifies_as_another_or_as_an_alert() {
    // A revocation and a certificate with the same bytes in their bodies cannot be
    // swapped: the contexts differ. Re-wrap a certificate's body and signature as a
    // revocation envelope: it does not even decode (other fields), and the same body
    // bytes under another context fail verification.
    let c = Signed::sign(cert(), &org()).unwrap();
    assert!(Signed::<Revocation>::decode(&c.to_bytes()).is_err());
    use ed25519_dalek::Verifier;
    let sig = ed25519_dalek::Signature::from_bytes(c.signature());
    let vk = org().verifying_key();
    assert!(
        vk.verify(c.body_bytes(), &sig).is_err(),
        "bare bytes verify"
    );
    let mut as_alert = envelope::SIGNING_CONTEXT.to_vec();
    as_alert.extend_from_slice(c.body_bytes());
    assert!(vk.verify(&as_alert, &sig).is_err(), "verifies as an alert");
    // Signed by the wrong key: refused at signing, and a forged signer fails verify.
    assert!(Signed::sign(cert(), &node()).is_err());
    let mut forged = cert();
    forged.org = pk(&key_n(9));
    let wire = Signed::sign(forged.clone(), &key_n(9)).unwrap();
    let mut claimed = Signed::sign(cert(), &org()).unwrap().to_bytes();
    // Splice the other signature into the genuine body: it fails.
    let other_sig = wire.signature();
    let at = claimed
        .windows(64)
        .position(|w| w == Signed::sign(cert(), &org()).unwrap().signature())
        .unwrap();
    claimed[at..at + 64].copy_from_slice(other_sig);
    assert!(Signed::<NodeCert>::decode_verified(&claimed).is_err());
}

#[test]
fn round_trips_and_validity_window() {
    let c = Signed::sign(cert(), &org()).unwrap();
    let back = Signed::<NodeCert>::decode_verified(&c.to_bytes()).unwrap();
    assert_eq!(back, c);
    assert_eq!(back.id(), c.id());
    assert!(!c.is_valid_at(T0 - 1));
    assert!(c.is_valid_at(T0));
    assert!(c.is_valid_at(T0 + 90 * DAY - 1));
    assert!(!c.is_valid_at(T0 + 90 * DAY));
    let r = Signed::sign(receipt(), &node()).unwrap();
    assert_eq!(
        Signed::<Receipt>::decode_verified(&r.to_bytes()).unwrap(),
        r
    );
    let s = Signed::sign(sighting(), &node()).unwrap();
    assert_eq!(
        Signed::<Sighting>::decode_verified(&s.to_bytes()).unwrap(),
        s
    );
}

/// The field named in the error of signing `body`.
fn refused<T: Signable>(body: T, key: &SigningKey) -> String {
    match Signed::sign(body, key) {
        Err(Error::Invalid { field, .. }) => field.to_string(),
        other => panic!("{} accepted or refused otherwise: {other:?}", T::NAME),
    }
}

#[test]
fn limits_and_bad_fields_are_refused_naming_the_field() {
    let mut c = cert();
    c.agency = "x".repeat(MAX_AGENCY_BYTES + 1);
    assert_eq!(refused(c, &org()), "agency");
    let mut c = cert();
    c.agency = " ".into();
    assert_eq!(refused(c, &org()), "agency");
    let mut c = cert();
    c.agency = "CERT\u{202e}".into();
    assert_eq!(refused(c, &org()), "agency");
    let mut c = cert();
    c.not_after = c.not_before;
    assert_eq!(refused(c, &org()), "not_after");
    let mut c = cert();
    c.not_after = c.not_before + MAX_CERT_VALIDITY_MS + 1;
    assert_eq!(refused(c, &org()), "not_after");
    let mut c = cert();
    c.node = c.org;
    assert_eq!(refused(c, &org()), "node");
    let mut c = cert();
    c.v = 2;
    assert_eq!(refused(c, &org()), "v");
    let mut c = cert();
    c.node = PublicKey([0xff; 32]);
    assert_eq!(refused(c, &org()), "node");
    let mut r = revocation();
    r.reason = String::new();
    assert_eq!(refused(r, &org()), "reason");
    let mut r = revocation();
    r.reason = "x".repeat(MAX_NOTE_BYTES + 1);
    assert_eq!(refused(r, &org()), "reason");
    let mut r = receipt();
    r.acked_by = None;
    assert_eq!(refused(r, &node()), "acked_by");
    let mut r = receipt();
    r.acked_at = Some(r.received_at - 1);
    assert_eq!(refused(r, &node()), "acked_at");
    let mut r = receipt();
    r.origin = r.receiver;
    assert_eq!(refused(r, &node()), "receiver");
    let mut s = sighting();
    s.count = 0;
    assert_eq!(refused(s, &node()), "count");
    let mut s = sighting();
    s.count = MAX_SIGHTING_COUNT + 1;
    assert_eq!(refused(s, &node()), "count");
    let mut s = sighting();
    s.indicator = None;
    assert_eq!(refused(s, &node()), "alert");
    let mut s = sighting();
    s.last_seen = s.first_seen - 1;
    assert_eq!(refused(s, &node()), "last_seen");
    // Oversized input is refused before it is decoded.
    let big = vec![0u8; MAX_OBJECT_BYTES + 1];
    assert!(matches!(
        Signed::<NodeCert>::decode(&big),
        Err(Error::Invalid { field: "size", .. })
    ));
    // Unknown fields in a body are refused (a newer format is not half-read).
    #[derive(serde::Serialize)]
    struct Extra<'a> {
        #[serde(flatten)]
        c: &'a NodeCert,
        extra: u8,
    }
    let body = codec::encode(&Extra {
        c: &cert(),
        extra: 1,
    })
    .unwrap();
    #[derive(serde::Serialize)]
    struct W {
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
        #[serde(with = "serde_bytes")]
        sig: Vec<u8>,
    }
    let bytes = codec::encode(&W {
        body,
        sig: vec![0; 64],
    })
    .unwrap();
    assert!(Signed::<NodeCert>::decode(&bytes).is_err());
}

#[test]
fn a_revocation_proves_itself_only_with_the_same_org_s_certificate_of_the_same_node() {
    let rev = Signed::sign(revocation(), &org()).unwrap().to_bytes();
    let good = Signed::sign(cert(), &org()).unwrap().to_bytes();
    let proof = RevocationProof::verify(&rev, &good).unwrap();
    assert_eq!(proof.revocation().node, pk(&node()));
    assert_eq!(proof.cert().agency, "CERT-Example");
    assert_eq!(proof.revocation_bytes(), rev);
    assert_eq!(proof.cert_bytes(), good);
    // A certificate of another node of the same org.
    let mut other_node = cert();
    other_node.node = pk(&key_n(8));
    let other_node = Signed::sign(other_node, &org()).unwrap().to_bytes();
    let e = RevocationProof::verify(&rev, &other_node)
        .unwrap_err()
        .to_string();
    assert!(e.contains("certifies node"), "{e}");
    // The same node certified by another org: that org cannot revoke it here.
    let mut other_org = cert();
    other_org.org = pk(&key_n(9));
    let other_org = Signed::sign(other_org, &key_n(9)).unwrap().to_bytes();
    let e = RevocationProof::verify(&rev, &other_org)
        .unwrap_err()
        .to_string();
    assert!(e.contains("signed by org"), "{e}");
    // The two objects swapped are refused (each kind has its own context).
    assert!(RevocationProof::verify(&good, &rev).is_err());
}

/// Prints the vectors (run with `--ignored --nocapture` to regenerate after a
/// deliberate format change, then bump `IDENTITY_VERSION`).
#[test]
#[ignore]
fn print_vectors() {
    fn one<T: Signable>(body: T, key: &SigningKey) -> Value {
        let s = Signed::sign(body, key).unwrap();
        serde_json::json!({
            "body_hex": hex::encode(s.body_bytes()),
            "signature_hex": hex::encode(s.signature()),
            "envelope_hex": hex::encode(s.to_bytes()),
        })
    }
    let v = serde_json::json!({
        "comment": "Tocsin identity objects v1 test vectors. The org key is bytes 0x01..0x20, the node key 32 bytes of 0x07. Frozen: changing these bytes is a format change.",
        "org_public_key": pk(&org()).to_string(),
        "node_public_key": pk(&node()).to_string(),
        "node_cert": one(cert(), &org()),
        "revocation": one(revocation(), &org()),
        "receipt": one(receipt(), &node()),
        "sighting": one(sighting(), &node()),
    });
    println!("{}", serde_json::to_string_pretty(&v).unwrap());
}
