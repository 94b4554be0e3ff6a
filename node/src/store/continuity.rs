//! Whether the database is the one this node last ran with.
//!
//! Peers read this node's log by sequence number, under its epoch, and keep a cursor
//! of how far they read. A database put back from a backup, or copied from another
//! host, has an older log under the same epoch: the next alerts get sequence numbers
//! that peers already read past, and a peer whose cursor is below the head again by the
//! time it reconnects never reads them. So each start leaves a mark in the database (a
//! random token in `meta`) and in a file beside it (that token, the epoch, and the
//! database file's inode and creation time). A start that finds a database mark that
//! the file does not match gives the log a new epoch: every peer then reads it again
//! from the start, wanting only the alerts it lacks. A database without a mark (a new
//! one, or one from an older build) is taken as it is, unless a mark file is there.
//!
//! What it cannot see: a rollback that puts back both files as they were (a VM or file
//! system snapshot), or a whole data directory copied back over the files in place
//! (same inode and creation time, and the mark that went with the database).

use std::path::{Path, PathBuf};

/// Key of the start mark in `meta`.
pub(super) const META_MARK: &str = "start_mark";

/// The file beside the database `db` that holds the last start's mark.
pub fn mark_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".mark");
    db.with_file_name(name)
}

/// One start's mark: the log epoch, the token written to the database, and which file
/// the database was (inode, creation time in ns; 0 where the file system has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Mark {
    pub epoch: u64,
    pub token: u64,
    pub inode: u64,
    pub born: u128,
}

impl Mark {
    /// The mark for `db` as it is now, with `epoch` and `token`.
    pub fn of(db: &Path, epoch: u64, token: u64) -> Mark {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(db).ok();
        let born = meta
            .as_ref()
            .and_then(|m| m.created().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        Mark {
            epoch,
            token,
            inode: meta.map_or(0, |m| m.ino()),
            born,
        }
    }

    /// The mark the last start left beside `db`, if any is readable.
    pub fn read(db: &Path) -> Option<Mark> {
        let text = std::fs::read_to_string(mark_path(db)).ok()?;
        let mut f = text.split_whitespace();
        if f.next()? != "v1" {
            return None;
        }
        Some(Mark {
            epoch: f.next()?.parse().ok()?,
            token: f.next()?.parse().ok()?,
            inode: f.next()?.parse().ok()?,
            born: f.next()?.parse().ok()?,
        })
    }

    /// Leaves this mark beside `db` (written to a temporary file, synced and renamed
    /// over the old one). A failure is logged: the next start then gives the log a new
    /// epoch, which costs peers one more read of it and loses nothing.
    pub fn write(&self, db: &Path) {
        use std::io::Write;
        let path = mark_path(db);
        let tmp = path.with_extension("mark.tmp");
        let text = format!(
            "v1 {} {} {} {}\n",
            self.epoch, self.token, self.inode, self.born
        );
        let result = std::fs::File::create(&tmp)
            .and_then(|mut f| {
                f.write_all(text.as_bytes())?;
                f.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, &path))
            .and_then(|()| match path.parent() {
                // The rename is durable once the directory is.
                Some(dir) => std::fs::File::open(dir).and_then(|d| d.sync_all()),
                None => Ok(()),
            });
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the database's start mark; the next start will give the log a new epoch (peers read it again)");
        }
    }
}

/// Whether the database at `db`, holding `token` from its last start under `epoch`,
/// is the file that start left its mark beside.
pub(super) fn same_database(db: &Path, epoch: u64, token: Option<u64>) -> bool {
    match token {
        // A new database, or one from a build before marks: the same unless a mark
        // is left (a backup from before this build, put back over a marked one).
        None => Mark::read(db).is_none(),
        Some(token) => Mark::read(db).is_some_and(|m| m == Mark::of(db, epoch, token)),
    }
}
