//! Agency identity on a running node: the certificate this node presents, and the checks
//! of the certificates its peers present.
//!
//! A node certificate (`tocsin org certify`, [`tocsin_proto::identity::NodeCert`]) says
//! that the agency's offline org key vouches for a node key until a date. A node sends
//! its certificate in the first frame of every connection (`identity`). A peer that
//! trusts the org key (a trust entry with `org = true`), and not the node key itself,
//! admits the connection once the certificate checks out here; the node then has the
//! org's level. A node key's own trust entry, when it has one, always wins over its
//! org's.

use std::path::Path;

use tocsin_proto::identity::{NodeCert, Signed};
use tocsin_proto::PublicKey;

/// How long an unknown peer has to present a certificate, from its connection.
pub const ADMIT_TIMEOUT_MS: u64 = 5_000;
/// Most peers that connected to this node held at once while they present their
/// certificate. Beyond it, the oldest such hold is closed for the new one (silent hosts
/// cannot keep a certified node out); peers trusted by their node key are never held.
pub const MAX_PENDING_PEERS: usize = 32;

/// Why a certificate presented by a peer was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertRefusal {
    /// The peer sent no certificate.
    #[error("it presented no certificate, and its node key is not in the trust table")]
    Missing,
    /// The bytes are not a well-signed certificate.
    #[error("its certificate is damaged or badly signed: {0}")]
    Invalid(String),
    /// A certificate for another key.
    #[error("its certificate certifies another node key ({0})")]
    OtherNode(String),
    /// Not valid yet.
    #[error("its certificate is not valid before {0} (unix ms)")]
    NotYetValid(u64),
    /// Expired.
    #[error("its certificate expired at {0} (unix ms); its agency must certify it again")]
    Expired(u64),
}

/// Checks the certificate `peer` presented at `now` (unix ms): well signed, for `peer`'s
/// own key, and valid now. Whether its org is trusted is the caller's business.
pub fn check_presented(
    cert: Option<&[u8]>,
    peer: &PublicKey,
    now: u64,
) -> Result<NodeCert, CertRefusal> {
    let bytes = cert.ok_or(CertRefusal::Missing)?;
    let signed = Signed::<NodeCert>::decode_verified(bytes)
        .map_err(|e| CertRefusal::Invalid(e.to_string()))?;
    let body = signed.body().clone();
    if &body.node != peer {
        return Err(CertRefusal::OtherNode(body.node.fmt_short()));
    }
    if now < body.not_before {
        return Err(CertRefusal::NotYetValid(body.not_before));
    }
    if now >= body.not_after {
        return Err(CertRefusal::Expired(body.not_after));
    }
    Ok(body)
}

/// The recipients of a RED alert (`named`) that a receipt from `receiver`, whose
/// certificate was from `org`, answers for: the receiver itself, and its org, when named.
pub fn answers_for(
    named: &[PublicKey],
    receiver: &PublicKey,
    org: Option<&PublicKey>,
) -> Vec<PublicKey> {
    named
        .iter()
        .filter(|k| *k == receiver || Some(*k) == org)
        .copied()
        .collect()
}

/// Loads this node's certificate (`[identity] cert_file`): it must be well signed and
/// certify `me`. An expired or not yet valid certificate is loaded (and the caller warns):
/// the node still serves the peers that trust its node key.
pub fn load_cert(path: &Path, me: &PublicKey) -> anyhow::Result<Signed<NodeCert>> {
    let bytes = std::fs::read(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the node certificate {} (identity.cert_file): {e}",
            path.display()
        )
    })?;
    let signed = Signed::<NodeCert>::decode_verified(&bytes).map_err(|e| {
        anyhow::anyhow!(
            "the node certificate {} (identity.cert_file) is not a valid certificate: {e}",
            path.display()
        )
    })?;
    if &signed.body().node != me {
        anyhow::bail!(
            "the node certificate {} (identity.cert_file) certifies node key {}, not this node's key {}; certify this node's key (`tocsin key show`) with `tocsin org certify`",
            path.display(),
            signed.body().node,
            me
        );
    }
    Ok(signed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tocsin_proto::identity::IDENTITY_VERSION;
    use tocsin_proto::SigningKey;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn pk(k: &SigningKey) -> PublicKey {
        PublicKey(k.verifying_key().to_bytes())
    }

    fn cert(org: &SigningKey, node: &PublicKey, from: u64, to: u64) -> Vec<u8> {
        let body = NodeCert {
            v: IDENTITY_VERSION,
            org: pk(org),
            node: *node,
            agency: "CERT-EX".into(),
            not_before: from,
            not_after: to,
            serial: 1,
        };
        Signed::sign(body, org).map(|s| s.to_bytes()).unwrap()
    }

    #[test]
    fn a_presented_certificate_must_be_signed_for_the_peer_and_current() {
        let (org, node, other) = (key(1), pk(&key(2)), pk(&key(3)));
        let good = cert(&org, &node, 1_000, 2_000);
        assert_eq!(
            check_presented(Some(&good), &node, 1_500).unwrap().org,
            pk(&org)
        );
        assert_eq!(
            check_presented(None, &node, 1_500),
            Err(CertRefusal::Missing)
        );
        assert!(matches!(
            check_presented(Some(&good), &other, 1_500),
            Err(CertRefusal::OtherNode(_))
        ));
        assert_eq!(
            check_presented(Some(&good), &node, 999),
            Err(CertRefusal::NotYetValid(1_000))
        );
        assert_eq!(
            check_presented(Some(&good), &node, 2_000),
            Err(CertRefusal::Expired(2_000))
        );
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(
            check_presented(Some(&bad), &node, 1_500),
            Err(CertRefusal::Invalid(_))
        ));
        assert!(matches!(
            check_presented(Some(b"junk"), &node, 1_500),
            Err(CertRefusal::Invalid(_))
        ));
    }

    #[test]
    fn a_receipt_answers_for_its_receiver_and_its_org_when_named() {
        let (n, o, other) = (PublicKey([1; 32]), PublicKey([2; 32]), PublicKey([3; 32]));
        assert_eq!(answers_for(&[n, o, other], &n, Some(&o)), vec![n, o]);
        assert_eq!(answers_for(&[o], &n, Some(&o)), vec![o]);
        assert!(answers_for(&[o], &n, None).is_empty());
        assert!(answers_for(&[other], &n, Some(&o)).is_empty());
    }

    #[test]
    fn the_node_refuses_a_certificate_of_another_key_or_a_damaged_file() {
        let dir = tempfile::tempdir().unwrap();
        let (org, me, other) = (key(1), pk(&key(2)), pk(&key(3)));
        let path = dir.path().join("node.cert");
        std::fs::write(&path, cert(&org, &other, 1, 2)).unwrap();
        let e = load_cert(&path, &me).unwrap_err().to_string();
        assert!(
            e.contains("certifies node key") && e.contains("identity.cert_file"),
            "{e}"
        );
        std::fs::write(&path, b"junk").unwrap();
        let e = load_cert(&path, &me).unwrap_err().to_string();
        assert!(e.contains("not a valid certificate"), "{e}");
        let e = load_cert(&dir.path().join("none"), &me)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read"), "{e}");
        std::fs::write(&path, cert(&org, &me, 1, 2)).unwrap();
        assert_eq!(load_cert(&path, &me).unwrap().body().node, me);
    }
}
