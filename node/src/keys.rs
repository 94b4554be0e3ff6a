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

/// The libp2p `PeerId` of a node's public key.
pub fn peer_id(key: &PublicKey) -> Option<libp2p::PeerId> {
    let pk = libp2p::identity::ed25519::PublicKey::try_from_bytes(&key.0).ok()?;
    Some(libp2p::PeerId::from_public_key(
        &libp2p::identity::PublicKey::from(pk),
    ))
}

/// The `PeerId` as a string ("invalid key" if the bytes are not a curve point).
pub fn peer_id_string(key: &PublicKey) -> String {
    peer_id(key).map_or_else(|| "invalid key".to_string(), |p| p.to_string())
}

/// The node key behind a `PeerId`, when it is an ed25519 identity.
pub fn key_of_peer(peer: &libp2p::PeerId) -> Option<PublicKey> {
    // An ed25519 PeerId is the identity multihash of the protobuf-encoded public key.
    let mh = peer.as_ref();
    if mh.code() != 0 {
        return None;
    }
    let pk = libp2p::identity::PublicKey::try_decode_protobuf(mh.digest()).ok()?;
    let ed = pk.try_into_ed25519().ok()?;
    Some(PublicKey(ed.to_bytes()))
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
        assert_eq!(key_of_peer(&kp.public().to_peer_id()), Some(pk));
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
