//! Hard limits: each violation is rejected with an error that names the limit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use tocsin_proto::limits::*;
use tocsin_proto::*;

fn err_of(body: AlertBody) -> String {
    let key = fixed_key();
    SignedAlert::sign(body, &key).unwrap_err().to_string()
}

#[test]
fn each_body_limit_is_named() {
    let key = fixed_key();
    let mut b = fixed_body(&key);
    b.title = "x".repeat(MAX_TITLE_BYTES + 1);
    assert!(err_of(b).contains("MAX_TITLE_BYTES"));

    let mut b = fixed_body(&key);
    b.text = "x".repeat(MAX_TEXT_BYTES + 1);
    assert!(err_of(b).contains("MAX_TEXT_BYTES"));

    let mut b = fixed_body(&key);
    b.indicators = vec![Indicator::new(IndicatorType::Other, "x").unwrap(); MAX_INDICATORS + 1];
    assert!(err_of(b).contains("MAX_INDICATORS"));

    let mut b = fixed_body(&key);
    b.tags = vec!["t".into(); MAX_TAGS + 1];
    assert!(err_of(b).contains("MAX_TAGS"));

    let mut b = fixed_body(&key);
    b.tlp = Tlp::Red;
    b.recipients = vec![pk(&key); MAX_RECIPIENTS + 1];
    assert!(err_of(b).contains("MAX_RECIPIENTS"));

    // At the limit is fine.
    let mut b = fixed_body(&key);
    b.title = "x".repeat(MAX_TITLE_BYTES);
    b.text = "y".repeat(MAX_TEXT_BYTES);
    SignedAlert::sign(b, &key).unwrap();
}

#[test]
fn oversized_envelope_rejected_before_decoding() {
    let junk = vec![0xffu8; MAX_ENVELOPE_BYTES + 1];
    let err = SignedAlert::decode(&junk).unwrap_err().to_string();
    assert!(err.contains("MAX_ENVELOPE_BYTES"), "{err}");
}

#[test]
fn oversized_frame_rejected_on_length_prefix() {
    let prefix = ((MAX_FRAME_BYTES + 1) as u32).to_be_bytes();
    let err = wire::frame_len(prefix).unwrap_err().to_string();
    assert!(err.contains("MAX_FRAME_BYTES"), "{err}");
    assert_eq!(wire::frame_len(100u32.to_be_bytes()).unwrap(), 100);
}

#[test]
fn too_many_ids_in_frame_rejected() {
    let ids = vec![AlertId([1; 32]); MAX_IDS_PER_FRAME + 1];
    // In the named form (what /tocsin/gossip/3 wrote) and in the packed form
    // (`Frame::encode` refuses nothing here: the limit is the receiver's).
    let named = codec::encode(&Frame::Announce {
        ids: ids.clone(),
        hops: vec![],
    })
    .unwrap();
    let packed = codec::encode_packed(&Frame::WantPage {
        epoch: 1,
        after: 0,
        next: 9,
        except: ids,
    })
    .unwrap();
    for bytes in [named, packed] {
        let err = Frame::decode(&bytes).unwrap_err().to_string();
        assert!(err.contains("MAX_IDS_PER_FRAME"), "{err}");
    }
}

#[test]
fn semantic_rules() {
    let key = fixed_key();
    let mut b = fixed_body(&key);
    b.tlp = Tlp::Red;
    assert!(err_of(b).contains("recipients"));

    let mut b = fixed_body(&key);
    b.kind = Kind::Cancel;
    assert!(err_of(b).contains("replaces"));

    let mut b = fixed_body(&key);
    b.replaces = Some(AlertId([2; 32]));
    assert!(err_of(b).contains("replaces"));

    let mut b = fixed_body(&key);
    b.origin = pk(&key_n(9));
    assert!(err_of(b).contains("origin"));

    let mut b = fixed_body(&key);
    b.v = 2;
    assert!(err_of(b).contains("version"));
}

#[test]
fn indicators_are_checked_by_type() {
    let ok = [
        "ipv4:198.51.100.7",
        "ipv6:2001:db8::1",
        "cidr:198.51.100.0/24",
        "cidr:2001:db8::/32",
        "domain:evil.example",
        "url:https://evil.example/login?x=1",
        "email:ceo@evil.example",
        "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "sha1:a94a8fe5ccb19ba61c4c0873d391e987982fbbd3",
        "md5:098f6bcd4621d373cade4e832627b4f6",
        "cve:CVE-2024-3094",
        "other:anything at all",
    ];
    for s in ok {
        Indicator::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    let bad = [
        "ipv4:300.1.1.1",
        "ipv4:evil.example",
        "ipv6:1.2.3.4",
        "cidr:198.51.100.0/33",
        "cidr:198.51.100.0",
        "domain:not a domain",
        "domain:localhost",
        "url:/relative/path",
        "email:no-at-sign.example",
        "sha256:abc",
        "sha256:zz86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "sha1:a94a8fe5",
        "md5:xyz",
        "cve:CVE-24-1",
        "cve:CVE-2024-12",
        "other:",
        "nosuchtype:1",
        "no-colon",
    ];
    for s in bad {
        assert!(Indicator::parse(s).is_err(), "{s} should be rejected");
    }
    let err = Indicator::parse("ipv4:300.1.1.1").unwrap_err().to_string();
    assert!(err.contains("indicator") && err.contains("IPv4"), "{err}");
}

#[test]
fn tlp_and_severity_parse() {
    assert_eq!("amber+strict".parse::<Tlp>().unwrap(), Tlp::AmberStrict);
    assert_eq!("TLP:RED".parse::<Tlp>().unwrap(), Tlp::Red);
    assert!("purple".parse::<Tlp>().is_err());
    assert_eq!("Critical".parse::<Severity>().unwrap(), Severity::Critical);
    assert!(Severity::Critical > Severity::Info);
}

#[test]
fn the_verifying_key_cache_is_bounded_and_still_verifies_after_it_fills() {
    let mut keys = VerifyingKeys::default();
    let first = SignedAlert::sign(fixed_body(&fixed_key()), &fixed_key()).unwrap();
    first.clone().verify_cached(&mut keys).unwrap();
    for n in 0..=VerifyingKeys::MAX as u32 {
        let mut secret = [7u8; 32];
        secret[..4].copy_from_slice(&n.to_be_bytes());
        let key = SigningKey::from_bytes(&secret);
        let alert = SignedAlert::sign(fixed_body(&key), &key).unwrap();
        alert.verify_cached(&mut keys).unwrap();
        assert!(keys.len() <= VerifyingKeys::MAX);
    }
    // The first origin's key was dropped with the full cache: it is decompressed again,
    // and a tampered signature is still refused.
    first.clone().verify_cached(&mut keys).unwrap();
    let mut envelope = first.to_envelope();
    let last = envelope.len() - 1;
    envelope[last] ^= 1;
    let tampered = SignedAlert::decode(&envelope).unwrap();
    assert!(tampered.verify_cached(&mut keys).is_err());
}

#[test]
fn a_cancel_keeps_the_audience_and_truncates_its_title_on_a_character_boundary() {
    let key = fixed_key();
    let mut b = fixed_body(&key);
    // "Cancelled: " (11 bytes) + 244 bytes + a 2-byte 'é' straddles the 256-byte limit.
    b.title = format!("{}é", "x".repeat(MAX_TITLE_BYTES - 12));
    b.tlp = Tlp::Red;
    b.recipients = vec![pk(&key)];
    b.expires_at = Some(b.issued_at + 10);
    let id = SignedAlert::sign(b.clone(), &key).unwrap().id();
    // A clock behind the alert: the cancel is still issued after it.
    let c = b.cancel(id, "withdrawn".into(), b.issued_at - 5);
    assert_eq!(c.issued_at, b.issued_at + 1);
    assert_eq!(c.kind, Kind::Cancel);
    assert_eq!(c.replaces, Some(id));
    assert_eq!((c.tlp, &c.recipients), (Tlp::Red, &b.recipients));
    assert_eq!(c.title.len(), MAX_TITLE_BYTES - 1);
    assert!(c.title.starts_with("Cancelled: x") && c.title.ends_with('x'));
    assert_eq!(c.text, "withdrawn");
    assert_eq!(c.expires_at, b.expires_at);
    SignedAlert::sign(c, &key).unwrap();
    // One issued after the alert expired has no expiry of its own.
    let late = b.cancel(id, "late".into(), b.issued_at + 20);
    assert_eq!(late.expires_at, None);
}
