//! Property tests: round-trip, tamper detection, and decode never panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use proptest::prelude::*;
use tocsin_proto::*;

fn arb_body() -> impl Strategy<Value = AlertBody> {
    (
        any::<u64>().prop_map(|t| t % 4_000_000_000_000),
        proptest::option::of(1u64..1_000_000_000),
        prop::sample::select(Severity::ALL.to_vec()),
        prop::sample::select(Tlp::ALL.to_vec()),
        "[a-zA-Z0-9 ]{1,64}",
        "\\PC{0,300}",
        prop::collection::vec("[a-z0-9]{1,16}", 0..5),
        prop::collection::vec(any::<[u8; 4]>(), 0..5),
    )
        .prop_map(|(issued, exp, sev, tlp, title, text, tags, ips)| {
            let key = fixed_key();
            let mut b = fixed_body(&key);
            b.issued_at = issued;
            b.expires_at = exp.map(|e| issued + e);
            b.severity = sev;
            b.tlp = tlp;
            b.recipients = if tlp == Tlp::Red {
                vec![pk(&key_n(3))]
            } else {
                vec![]
            };
            b.title = if title.trim().is_empty() {
                "t".into()
            } else {
                title
            };
            b.text = text;
            b.tags = tags;
            b.indicators = ips
                .into_iter()
                .map(|ip| {
                    Indicator::new(
                        IndicatorType::Ipv4,
                        std::net::Ipv4Addr::from(ip).to_string(),
                    )
                    .unwrap()
                })
                .collect();
            b
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn encode_decode_verify_round_trip(body in arb_body()) {
        let key = fixed_key();
        let alert = SignedAlert::sign(body.clone(), &key).unwrap();
        let back = SignedAlert::decode_verified(&alert.to_envelope()).unwrap();
        prop_assert_eq!(back.body(), &body);
        prop_assert_eq!(back.id(), alert.id());
        prop_assert_eq!(back.body_bytes(), alert.body_bytes());
        // The origin read for routing, without a full decode, is the body's.
        prop_assert_eq!(origin_of(&alert.to_envelope()), Some(body.origin));
    }

    #[test]
    fn any_flipped_bit_breaks_verification(body in arb_body(), pick in any::<prop::sample::Index>(), bit in 0u8..8) {
        let key = fixed_key();
        let alert = SignedAlert::sign(body, &key).unwrap();
        let total = alert.body_bytes().len() + 64;
        let at = pick.index(total);
        let mut body_bytes = alert.body_bytes().to_vec();
        let mut sig = alert.signature().to_vec();
        if at < body_bytes.len() {
            body_bytes[at] ^= 1 << bit;
        } else {
            sig[at - body_bytes.len()] ^= 1 << bit;
        }
        #[derive(serde::Serialize)]
        struct Env { #[serde(with = "serde_bytes")] body: Vec<u8>, #[serde(with = "serde_bytes")] sig: Vec<u8> }
        let env = codec::encode(&Env { body: body_bytes, sig }).unwrap();
        // Either it no longer decodes, or it decodes and fails verification.
        if let Ok(decoded) = SignedAlert::decode(&env) {
            prop_assert!(decoded.verify().is_err());
        }
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = origin_of(&bytes);
        let _ = SignedAlert::decode(&bytes);
        let _ = Frame::decode(&bytes);
    }

    #[test]
    fn frames_round_trip(ids in prop::collection::vec(any::<[u8; 32]>(), 0..20), hops in 1u8..16, epoch in any::<u64>()) {
        let ids: Vec<AlertId> = ids.into_iter().map(AlertId).collect();
        for f in [
            Frame::Hello { epoch, head: 7 },
            Frame::Announce { ids: ids.clone(), hops: vec![2; ids.len()] },
            Frame::Want { ids: ids.clone(), graft: true },
            Frame::Alert { hops, envelope: vec![1, 2, 3] },
            Frame::Prune { origin: None },
            Frame::Prune { origin: Some(PublicKey(ids.first().map_or([7; 32], |i| i.0))) },
            Frame::Graft { origin: PublicKey([hops; 32]) },
            Frame::SyncRequest { epoch, after: 3 },
            Frame::SyncPage { epoch, ids: ids.clone(), next: 9, done: false, answers: Some(epoch / 2) },
            Frame::SyncPage { epoch, ids: ids.clone(), next: 9, done: true, answers: None },
            Frame::WantPage { epoch, after: 3, next: 9, except: ids.clone() },
            Frame::Identity { cert: None },
            Frame::Identity { cert: Some(serde_bytes::ByteBuf::from(vec![hops; 40])) },
            Frame::Revoke { revocation: serde_bytes::ByteBuf::from(vec![1; 9]), cert: serde_bytes::ByteBuf::from(vec![2; 9]) },
            Frame::Receipt { receipt: serde_bytes::ByteBuf::from(vec![3; 9]) },
            Frame::Sighting { sighting: serde_bytes::ByteBuf::from(vec![4; 9]) },
        ] {
            prop_assert_eq!(Frame::decode(&f.encode().unwrap()).unwrap(), f);
        }
    }
}
