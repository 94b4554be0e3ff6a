//! Revocations that verified but could not be kept when they came: the node they revoke
//! had not shown this node a certificate of the revoking org (not seen yet, trusted on
//! its own key, or another org's revocation held its slot). Kept in memory, bounded,
//! and judged again when the node shows that org's certificate here, so that a
//! revocation wins whatever the order in which it and the node's certificate arrive.

use tocsin_proto::identity::RevocationProof;
use tocsin_proto::PublicKey;

use crate::engine::Bounded;

/// Most node keys with revocations waiting.
pub const MAX_PENDING_NODES: usize = 1024;
/// Most orgs' revocations waiting per node key.
pub const MAX_PENDING_PER_NODE: usize = 4;

/// See the module documentation: per node key (the oldest forgotten to make room), the
/// revocations of up to [`MAX_PENDING_PER_NODE`] orgs.
#[derive(Debug)]
pub struct Pending(Bounded<Vec<RevocationProof>, PublicKey>);

impl Default for Pending {
    fn default() -> Self {
        Pending(Bounded::new(MAX_PENDING_NODES))
    }
}

impl Pending {
    /// Keeps `proof` (per node and org, the earliest revocation time).
    pub fn keep(&mut self, proof: RevocationProof) {
        let (node, org, at) = {
            let r = proof.revocation();
            (r.node, r.org, r.revoked_at)
        };
        let list = self.0.entry(node);
        match list.iter().position(|p| p.revocation().org == org) {
            Some(i) if at < list[i].revocation().revoked_at => list[i] = proof,
            Some(_) => {}
            None if list.len() < MAX_PENDING_PER_NODE => list.push(proof),
            None => {}
        }
    }

    /// Takes the revocation of `node` by `org`, if one waits.
    pub fn take(&mut self, node: &PublicKey, org: &PublicKey) -> Option<RevocationProof> {
        let list = self.0.get_mut(node)?;
        let i = list.iter().position(|p| p.revocation().org == *org)?;
        let proof = list.swap_remove(i);
        if list.is_empty() {
            self.0.remove(node);
        }
        Some(proof)
    }

    /// How many node keys have revocations waiting.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none waits.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.0.len() == 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tocsin_proto::identity::{NodeCert, Revocation, Signed, IDENTITY_VERSION};
    use tocsin_proto::SigningKey;

    fn proof(org: u8, node: u16, at: u64) -> RevocationProof {
        let org = SigningKey::from_bytes(&[org; 32]);
        let org_pk = PublicKey(org.verifying_key().to_bytes());
        let mut seed = [7u8; 32];
        seed[..2].copy_from_slice(&node.to_be_bytes());
        let node = PublicKey(SigningKey::from_bytes(&seed).verifying_key().to_bytes());
        let cert = NodeCert {
            v: IDENTITY_VERSION,
            org: org_pk,
            node,
            agency: "A".into(),
            not_before: 0,
            not_after: 10,
            serial: 1,
        };
        let rev = Revocation {
            v: IDENTITY_VERSION,
            org: org_pk,
            node,
            revoked_at: at,
            reason: "lost".into(),
        };
        RevocationProof::verify(
            &Signed::sign(rev, &org).unwrap().to_bytes(),
            &Signed::sign(cert, &org).unwrap().to_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn the_earliest_per_org_waits_and_the_oldest_node_makes_room() {
        let mut p = Pending::default();
        p.keep(proof(1, 2, 50));
        p.keep(proof(1, 2, 60));
        p.keep(proof(1, 2, 40));
        p.keep(proof(3, 2, 70));
        let (node, org1, org3) = {
            let a = proof(1, 2, 0);
            let b = proof(3, 2, 0);
            (a.revocation().node, a.revocation().org, b.revocation().org)
        };
        assert_eq!(p.take(&node, &org1).unwrap().revocation().revoked_at, 40);
        assert!(p.take(&node, &org1).is_none());
        assert_eq!(p.take(&node, &org3).unwrap().revocation().revoked_at, 70);
        assert!(p.is_empty());
        for n in 0..=MAX_PENDING_NODES as u16 {
            p.keep(proof(1, n + 10, u64::from(n)));
        }
        assert_eq!(p.len(), MAX_PENDING_NODES);
        // The first node kept made room for the last.
        let first = proof(1, 10, 0).revocation().clone();
        assert!(p.take(&first.node, &first.org).is_none());
        let last = proof(1, MAX_PENDING_NODES as u16 + 10, 0)
            .revocation()
            .clone();
        assert!(p.take(&last.node, &last.org).is_some());
    }
}
