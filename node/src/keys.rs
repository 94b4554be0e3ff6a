//! The node key file.
//!
//! One ed25519 key per node: its public key is the agency's identity, the origin of the
//! alerts it signs, and (through libp2p's ed25519 identity built from the same 32
//! secret bytes) its libp2p `PeerId`. The file holds the 32 secret bytes as 64 hex
//! characters and a newline. It is created with mode 0600, and, as ssh does, a key file
//! that group or others can read is refused.

use std::path::{Path, PathBuf};

pub use tocsin_proto::keyfile::{load_key, public_key, KeyError, KEY_FILE};
use tocsin_proto::{PublicKey, SigningKey};

/// Creates a new random key at `path` with mode 0600. Refuses to overwrite.
pub fn generate_key(path: &Path) -> Result<SigningKey, KeyError> {
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    tocsin_proto::keyfile::write_new_key(path, &key)?;
    Ok(key)
}

/// The libp2p keypair built from the same 32 secret bytes.
pub fn libp2p_keypair(key: &SigningKey) -> Result<libp2p::identity::Keypair, KeyError> {
    let mut secret = key.to_bytes();
    libp2p::identity::Keypair::ed25519_from_bytes(&mut secret).map_err(|_| KeyError::Malformed {
        path: PathBuf::from(KEY_FILE),
    })
}

/// The protobuf encoding of an ed25519 public key (libp2p's `PublicKey`: field 1, key
/// type 1 = Ed25519; field 2, 32 bytes), less the key itself. An ed25519 `PeerId` is
/// the identity multihash (code 0) of this prefix followed by the key.
const ED25519_PROTOBUF_PREFIX: [u8; 4] = [0x08, 0x01, 0x12, 0x20];

/// The libp2p `PeerId` of a node's public key; `None` if the bytes are not a curve point.
pub fn peer_id(key: &PublicKey) -> Option<libp2p::PeerId> {
    libp2p::identity::ed25519::PublicKey::try_from_bytes(&key.0).ok()?;
    peer_id_of_checked(key)
}

/// The libp2p `PeerId` of a key already known to be a curve point (a connected peer's,
/// an alert origin's whose signature was checked), without checking it
/// again: [`peer_id`] decompresses the point (about 10 µs), and the network actor
/// looks up a peer for every frame it sends.
pub fn peer_id_of_checked(key: &PublicKey) -> Option<libp2p::PeerId> {
    // Identity multihash: code 0, then the length of what follows (36 bytes).
    let header = [0x00, (ED25519_PROTOBUF_PREFIX.len() + key.0.len()) as u8];
    libp2p::PeerId::from_bytes(&[&header[..], &ED25519_PROTOBUF_PREFIX, &key.0].concat()).ok()
}

/// The `PeerId` as a string ("invalid key" if the bytes are not a curve point).
pub fn peer_id_string(key: &PublicKey) -> String {
    peer_id(key).map_or_else(|| "invalid key".to_string(), |p| p.to_string())
}

/// The node key behind a `PeerId`, when it is an ed25519 identity.
pub fn key_of_peer(peer: &libp2p::PeerId) -> Option<PublicKey> {
    // An ed25519 PeerId is the identity multihash of the protobuf-encoded public key.
    // Read without decompressing the point: libp2p derived the PeerId from a key it
    // checked (a connection's), or we built it from one (`peer_id`,
    // `peer_id_of_checked`).
    let mh = peer.as_ref();
    if mh.code() != 0 {
        return None;
    }
    let key = mh.digest().strip_prefix(&ED25519_PROTOBUF_PREFIX)?;
    Some(PublicKey(key.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_0600_and_round_trips_to_same_peer_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let key = generate_key(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = load_key(&path).unwrap();
        assert_eq!(loaded.to_bytes(), key.to_bytes());
        let pk = public_key(&key);
        let kp = libp2p_keypair(&key).unwrap();
        assert_eq!(peer_id(&pk), Some(kp.public().to_peer_id()));
        assert_eq!(peer_id_of_checked(&pk), Some(kp.public().to_peer_id()));
        assert_eq!(key_of_peer(&kp.public().to_peer_id()), Some(pk));
        // Not a point: no PeerId from the checking constructor.
        let off_curve = (0u8..=255)
            .map(|y| {
                let mut b = [0u8; 32];
                b[0] = y;
                PublicKey(b)
            })
            .find(|k| k.verifying_key().is_err())
            .unwrap();
        assert_eq!(peer_id(&off_curve), None);
        // Another key type's PeerId (here secp256k1, type 2) is no node key.
        let other = libp2p::PeerId::from_bytes(&[0x00, 0x04, 0x08, 0x02, 0x12, 0x00]).unwrap();
        assert_eq!(key_of_peer(&other), None);
        assert!(matches!(generate_key(&path), Err(KeyError::Exists { .. })));
    }

    #[test]
    fn world_readable_key_is_refused_with_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        generate_key(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_key(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }
}
