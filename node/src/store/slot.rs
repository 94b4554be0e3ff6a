//! The open database, shared by every [`super::Store`] clone and the writer, and its
//! recovery after an I/O error.
//!
//! After one failed write (a full disk, usually), redb refuses every later write with
//! "Previous I/O error occurred. Please close and re-open the database" until the file
//! is closed and opened again. So the store is then **degraded**: reads go on from the
//! old handle, writes fail at once with an error that says why, and the writer checks
//! every [`RECOVER_POLL`] whether the file system has room again. When it has, the
//! writer takes the handle out of the slot (readers get [`StoreError::Reopening`] for
//! the moment), waits for the readers still holding it, closes it, opens the file again
//! (redb repairs what the failed commit left), and puts the new handle in.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use redb::Database;

use super::StoreError;

/// How often a degraded writer checks for free space and tries to reopen.
pub const RECOVER_POLL: Duration = Duration::from_secs(1);
/// Free bytes the data directory's file system needs before a reopen is tried: enough
/// for redb's repair and a batch of alerts.
pub const MIN_FREE_BYTES: u64 = 4 * 1024 * 1024;
/// How long a reopen waits for readers to let go of the old handle.
const READERS_TIMEOUT: Duration = Duration::from_secs(2);
/// How many times a reopen is tried, 50 ms apart, before the next poll.
const REOPEN_TRIES: usize = 20;

/// See the module docs.
#[derive(Debug)]
pub struct Slot {
    db: RwLock<Option<Arc<Database>>>,
    /// Why the store cannot write, while it cannot.
    degraded: Mutex<Option<String>>,
    path: PathBuf,
}

impl Slot {
    pub fn new(db: Database, path: &Path) -> Slot {
        Slot {
            db: RwLock::new(Some(Arc::new(db))),
            degraded: Mutex::new(None),
            path: path.to_path_buf(),
        }
    }

    /// The open database, or [`StoreError::Reopening`] while it is being reopened.
    pub fn get(&self) -> Result<Arc<Database>, StoreError> {
        self.db
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| StoreError::Reopening(self.reason().unwrap_or_default()))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Why the store cannot write, if it cannot.
    pub fn reason(&self) -> Option<String> {
        self.degraded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Marks the store degraded after `error`, if it is an I/O error (the only kind
    /// that makes redb refuse later writes). Returns whether it did.
    pub fn degrade_on(&self, error: &StoreError) -> bool {
        if !is_io(error) {
            return false;
        }
        let mut d = self.degraded.lock().unwrap_or_else(PoisonError::into_inner);
        if d.is_none() {
            let free = free_bytes(&self.path)
                .map(|b| format!("{} MiB free", b / (1024 * 1024)))
                .unwrap_or_else(|| "free space unknown".into());
            tracing::error!(error = %error, path = %self.path.display(), free, "store degraded: writes are refused until the database can be reopened; free space on its file system (it is retried every second)");
            *d = Some(format!(
                "a write to {} failed ({error}); writes are refused until there is free space and the database is reopened",
                self.path.display()
            ));
        }
        true
    }

    /// A degraded store tries to reopen, when there is room: true once it is healthy.
    /// Returns the new database's head seq with `Some` when it reopened now.
    pub fn try_recover(&self) -> Result<Option<u64>, StoreError> {
        if self.reason().is_none() {
            return Ok(None);
        }
        if free_bytes(&self.path).is_some_and(|b| b < MIN_FREE_BYTES) {
            return Err(StoreError::Degraded(self.reason().unwrap_or_default()));
        }
        let old = self
            .db
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(old) = old {
            let deadline = Instant::now() + READERS_TIMEOUT;
            while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if Arc::strong_count(&old) > 1 {
                // Still in use: keep serving reads from it, and try again later.
                *self.db.write().unwrap_or_else(PoisonError::into_inner) = Some(old);
                return Err(StoreError::Degraded(self.reason().unwrap_or_default()));
            }
            drop(old);
        }
        // A read transaction that outlives its handle still holds the file for a moment:
        // try again briefly before giving up until the next poll.
        let mut reopened = Err(StoreError::Reopening("not tried".into()));
        for _ in 0..REOPEN_TRIES {
            reopened = super::guard(&self.path, || {
                let db = super::open_db(&self.path).map_err(|error| StoreError::Open {
                    path: self.path.clone(),
                    error: Box::new(error),
                })?;
                let head = super::read::head(&db)?;
                Ok((db, head))
            });
            if reopened.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        match reopened {
            Ok((db, head)) => {
                *self.db.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(db));
                *self.degraded.lock().unwrap_or_else(PoisonError::into_inner) = None;
                tracing::info!(path = %self.path.display(), head, "store recovered: the database was reopened and takes writes again");
                Ok(Some(head))
            }
            Err(e) => {
                tracing::warn!(error = %e, path = %self.path.display(), "store still degraded: cannot reopen the database yet");
                Err(StoreError::Degraded(self.reason().unwrap_or_default()))
            }
        }
    }
}

/// Whether `error` is an I/O failure of the database (after which redb refuses writes).
pub fn is_io(error: &StoreError) -> bool {
    matches!(error, StoreError::Db(e) if matches!(**e, redb::Error::Io(_) | redb::Error::PreviousIo))
}

/// Free bytes for an unprivileged writer on the file system holding `path` (the file
/// itself when it exists, which follows a symbolic link to where it really is).
pub fn free_bytes(path: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(path)
        .or_else(|_| nix::sys::statvfs::statvfs(path.parent().unwrap_or(path)))
        .ok()?;
    Some((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}
