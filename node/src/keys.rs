//! The node key file.
//!
//! One ed25519 key per node: its public key is the agency's identity, the origin of the
//! alerts it signs, and (through libp2p's ed25519 identity built from the same 32
//! secret bytes) its libp2p `PeerId`. The file holds the 32 secret bytes as 64 hex
//! characters and a newline. It is created with mode 0600, and, as ssh does, a key file
//! that group or others can read is refused.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tocsin_proto::{PublicKey, SigningKey};

/// The key file's name inside the data directory.
pub const KEY_FILE: &str = "node.key";

/// Why a key file cannot be created or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("key file {path} already exists; refusing to overwrite an agency's identity")]
    Exists { path: PathBuf },
    #[error("key file {path} is readable by group or others (mode {mode:04o}); fix it with: chmod 600 {path}")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write key file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file {path} is malformed: expected 64 hex characters (32 secret bytes)")]
    Malformed { path: PathBuf },
}

/// Creates a new random key at `path` with mode 0600. Refuses to overwrite.
pub fn generate_key(path: &Path) -> Result<SigningKey, KeyError> {
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                KeyError::Exists {
                    path: path.to_owned(),
                }
            } else {
                KeyError::Write {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
    let write = |file: &mut fs::File| -> std::io::Result<()> {
        file.write_all(format!("{}\n", hex::encode(key.to_bytes())).as_bytes())?;
        file.sync_all()
    };
    write(&mut file).map_err(|source| KeyError::Write {
        path: path.to_owned(),
        source,
    })?;
    Ok(key)
}

/// Loads the key at `path`, refusing a file that group or others can read.
pub fn load_key(path: &Path) -> Result<SigningKey, KeyError> {
    let meta = fs::metadata(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    let text = fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut secret = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut secret).map_err(|_| KeyError::Malformed {
        path: path.to_owned(),
    })?;
    Ok(SigningKey::from_bytes(&secret))
}

/// The public key (agency identity) of a signing key.
pub fn public_key(key: &SigningKey) -> PublicKey {
    PublicKey(key.verifying_key().to_bytes())
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
