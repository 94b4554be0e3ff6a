//! Shared fixtures for proto tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(dead_code)]

use tocsin_proto::*;

/// The fixed test key: secret bytes 0x01..=0x20.
pub fn fixed_key() -> SigningKey {
    let mut secret = [0u8; 32];
    for (i, b) in secret.iter_mut().enumerate() {
        *b = i as u8 + 1;
    }
    SigningKey::from_bytes(&secret)
}

pub fn key_n(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

pub fn pk(k: &SigningKey) -> PublicKey {
    PublicKey(k.verifying_key().to_bytes())
}

/// The fixed alert of the test vectors.
pub fn fixed_body(key: &SigningKey) -> AlertBody {
    AlertBody {
        v: FORMAT_VERSION,
        origin: pk(key),
        issued_at: 1_767_225_600_000,
        expires_at: Some(1_767_312_000_000),
        kind: Kind::New,
        replaces: None,
        severity: Severity::High,
        tlp: Tlp::Green,
        recipients: vec![],
        title: "Credential phishing against payment processors".into(),
        text: "Lures impersonate a clearing house; see indicators.".into(),
        indicators: vec![
            Indicator::new(IndicatorType::Domain, "clearing-house-login.example").unwrap(),
            Indicator::new(IndicatorType::Ipv4, "192.0.2.44").unwrap(),
            Indicator::new(IndicatorType::Cve, "CVE-2025-12345").unwrap(),
        ],
        tags: vec!["phishing".into(), "finance".into()],
        references: vec!["https://cert.example/advisories/2026-001".into()],
    }
}

/// A typical ~600-byte alert, varied by `n`.
pub fn typical_body(key: &SigningKey, n: u64) -> AlertBody {
    let mut b = fixed_body(key);
    b.issued_at += n;
    b.text = format!(
        "{} Observed from multiple sources; block the listed infrastructure and hunt for the \
         listed hashes in mail gateways and proxy logs. Case {n}.",
        b.text
    );
    b.indicators.push(
        Indicator::new(
            IndicatorType::Sha256,
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        )
        .unwrap(),
    );
    b
}
