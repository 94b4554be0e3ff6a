//! The node key file: the 32 secret bytes of the node's ed25519 key as 64 hex
//! characters and a newline, created with mode 0600. As ssh does, a key file that the
//! group or others can read is refused.
//!
//! Both the daemon (which creates and uses the key) and the CLI (`tocsin key show`)
//! read it with [`load_key`], so they agree on the format and the permission check.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;

use crate::ids::PublicKey;

/// The key file's name inside the data directory.
pub const KEY_FILE: &str = "node.key";

/// Why a key file cannot be created or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// `tocsind init` found a key already there.
    #[error("key file {path} already exists; refusing to overwrite an agency's identity")]
    Exists {
        /// The key file.
        path: PathBuf,
    },
    /// The group or others may read the key.
    #[error("key file {path} is readable by group or others (mode {mode:04o}); fix it with: chmod 600 {path}")]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// It cannot be read.
    #[error("cannot read key file {path}: {source}")]
    Read {
        /// The key file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It cannot be written.
    #[error("cannot write key file {path}: {source}")]
    Write {
        /// The key file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Its content is not 64 hex characters.
    #[error("key file {path} is malformed: expected 64 hex characters (32 secret bytes)")]
    Malformed {
        /// The key file.
        path: PathBuf,
    },
}

/// Writes `key` to a new file at `path` with mode 0600 and syncs it. Refuses to
/// overwrite an existing file.
pub fn write_new_key(path: &Path, key: &SigningKey) -> Result<(), KeyError> {
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
    })
}

/// Loads the key at `path`, refusing a file that the group or others can read.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tocsin-keyfile-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let _ = fs::create_dir_all(&dir);
        dir.join(KEY_FILE)
    }

    #[test]
    fn created_0600_and_round_trips() {
        let path = temp_path("roundtrip");
        let key = SigningKey::from_bytes(&[5; 32]);
        write_new_key(&path, &key).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_key(&path).unwrap().to_bytes(), key.to_bytes());
        assert!(matches!(
            write_new_key(&path, &key),
            Err(KeyError::Exists { .. })
        ));
        let _ = fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn world_readable_or_malformed_keys_are_refused() {
        let path = temp_path("perm");
        write_new_key(&path, &SigningKey::from_bytes(&[6; 32])).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_key(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&path, "not hex\n").unwrap();
        assert!(matches!(load_key(&path), Err(KeyError::Malformed { .. })));
        let _ = fs::remove_dir_all(path.parent().unwrap());
    }
}
